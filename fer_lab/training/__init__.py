"""Training any ``fer_lab.nets`` network with Lightning, and inference with the same input path.

Images stay uint8 in memory (a ``TensorDataset``) and whole batches are indexed at once;
conversion to float, normalisation and augmentation happen on the batch, on the device,
inside the module, so no per-sample Python runs in the training loop.

The stages, one module each: ``inputs`` (pixels to network input, class weights),
``augment``, ``schedules`` (learning-rate shapes), ``module`` (the LightningModule),
``datamodule``, ``callbacks`` (best epoch), ``trainer`` (``fit``), ``inference``
(batched prediction, test-time augmentation) and ``hardware`` (precision and memory
layout chosen by measurement on the machine that runs).
"""

from fer_lab.training.augment import Augment
from fer_lab.training.callbacks import BestEpoch
from fer_lab.training.datamodule import ArrayDataModule
from fer_lab.training.inference import CROP_VIEWS, TTA_MODES, predict_logits, tta_views
from fer_lab.training.inputs import class_weights, to_images, to_input
from fer_lab.training.module import FerModule
from fer_lab.training.schedules import cosine, one_cycle
from fer_lab.training.trainer import fit

__all__ = ["Augment", "ArrayDataModule", "BestEpoch", "CROP_VIEWS", "FerModule", "TTA_MODES",
           "class_weights", "cosine", "fit", "one_cycle", "predict_logits", "to_images", "to_input", "tta_views"]
