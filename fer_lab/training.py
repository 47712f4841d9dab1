"""Training any ``fer_lab.nets`` network with Lightning, and inference with the same input path.

Images stay uint8 in memory (a ``TensorDataset``) and whole batches are indexed at once;
conversion to float, normalisation and augmentation happen on the batch, on the device,
inside the module, so no per-sample Python runs in the training loop.
"""

from __future__ import annotations

import copy
import math
import tempfile
import time
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import lightning.pytorch as L
import numpy as np
import torch
import torch.nn.functional as F
from lightning.pytorch.callbacks import Callback, EarlyStopping
from torch import Tensor, nn
from torch.utils.data import (BatchSampler, DataLoader, DistributedSampler, RandomSampler,
                              SequentialSampler, TensorDataset, WeightedRandomSampler)
from torchmetrics.classification import MulticlassAccuracy, MulticlassF1Score

from fer_lab.nets import N_CLASSES, SIDE

OPTIMIZERS = ("sgd", "adamw")
SCHEDULES = ("onecycle", "cosine")
CLASS_WEIGHTINGS = ("none", "balanced", "sqrt")
PRECISIONS = {"fp32": "32-true", "bf16": "bf16-mixed"}
EVAL_BATCH = 512
MIN_STEPS_PER_EPOCH = 8


def to_images(X: np.ndarray) -> Tensor:
    """Flat ``(N, 2304)`` uint8 pixels as a ``(N, 1, 48, 48)`` uint8 tensor, sharing memory
    with ``X`` when it is already contiguous uint8."""
    return torch.from_numpy(np.ascontiguousarray(X, dtype=np.uint8)).view(-1, 1, SIDE, SIDE)


def to_input(images: Tensor, mean: float, std: float, channels_last: bool) -> Tensor:
    """A uint8 batch as the normalised float input the networks take."""
    x = (images.float() - mean) / std
    return x.contiguous(memory_format=torch.channels_last) if channels_last else x


def class_weights(y: np.ndarray, how: str) -> Tensor | None:
    """Loss weights per class: ``balanced`` is n / (k * n_c), ``sqrt`` its square root (a
    milder correction); classes absent from ``y`` get 0."""
    if how not in CLASS_WEIGHTINGS:
        raise ValueError(f"class_weighting must be one of {CLASS_WEIGHTINGS}, not {how!r}")
    if how == "none":
        return None
    counts = np.bincount(y, minlength=N_CLASSES).astype(np.float64)
    weights = np.divide(len(y), N_CLASSES * counts, out=np.zeros(N_CLASSES), where=counts > 0)
    return torch.tensor(np.sqrt(weights) if how == "sqrt" else weights, dtype=torch.float32)


@dataclass(frozen=True)
class Augment:
    """Batched augmentation strengths; zero (or False) switches a transform off.

    Attributes:
        flip: mirror half of the images left-right (faces are near-symmetric).
        shift: largest translation, as a fraction of the side (0.1 = 4.8 px).
        rotate: largest rotation in degrees.
        scale: largest zoom in or out, as a fraction (0.1 = 0.9..1.1).
        erase: probability of blanking one random rectangle (2-25% of the image) to the
            mean grey, which makes the net use more than one facial region.
    """

    flip: bool = True
    shift: float = 0.1
    rotate: float = 10.0
    scale: float = 0.1
    erase: float = 0.25

    def __call__(self, x: Tensor) -> Tensor:
        if self.flip or self.shift or self.rotate or self.scale:
            x = self._affine(x)
        if self.erase:
            x = self._erase(x)
        return x

    def _affine(self, x: Tensor) -> Tensor:
        """Flip, rotation, zoom and shift as one ``grid_sample`` per batch; reflection
        padding fills the borders like the reflect-pad crop it generalises."""
        b = x.shape[0]
        u = lambda: torch.rand(b, device=x.device) * 2 - 1  # noqa: E731  uniform in [-1, 1]
        angle = u() * math.radians(self.rotate)
        zoom = 1 + u() * self.scale
        mirror = torch.where(torch.rand(b, device=x.device) < 0.5, -1.0, 1.0) if self.flip else 1.0
        cos, sin = torch.cos(angle) / zoom, torch.sin(angle) / zoom
        # theta maps output to input coordinates in [-1, 1]; the mirror negates input x.
        theta = torch.stack([torch.stack([cos * mirror, -sin * mirror, u() * 2 * self.shift], 1),
                             torch.stack([sin, cos, u() * 2 * self.shift], 1)], 1)
        grid = F.affine_grid(theta, list(x.shape), align_corners=False)
        return F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection",
                             align_corners=False)

    def _erase(self, x: Tensor) -> Tensor:
        b, _, h, w = x.shape
        rand = lambda: torch.rand(b, 1, 1, device=x.device)  # noqa: E731
        area = 0.02 + rand() * 0.23
        aspect = torch.exp((rand() * 2 - 1) * math.log(3.0))
        eh = (area * aspect).sqrt().clamp(max=1.0) * h
        ew = (area / aspect).sqrt().clamp(max=1.0) * w
        top, left = rand() * (h - eh), rand() * (w - ew)
        rows = torch.arange(h, device=x.device).view(1, h, 1)
        cols = torch.arange(w, device=x.device).view(1, 1, w)
        box = (rows >= top) & (rows < top + eh) & (cols >= left) & (cols < left + ew)
        hit = (rand() < self.erase) & box
        return x.masked_fill(hit.unsqueeze(1), 0.0)  # 0 is the mean after normalisation


class FerModule(L.LightningModule):
    """Trains a network: label-smoothed, optionally class-weighted cross-entropy, SGD
    (Nesterov) or AdamW with a per-batch one-cycle or cosine schedule.

    The schedule follows ``progress``: the fraction of the planned steps, or of
    ``max_minutes`` when that is reached sooner, so a time-capped run still warms up and
    anneals fully (and ends) within its time. Without ``max_minutes`` it depends on the
    step alone and training is reproducible.

    After each validation epoch ``epoch_metrics`` holds the report: ``train_loss``,
    ``train_accuracy`` (on augmented batches), ``val_loss`` (plain cross-entropy, so trials
    with different smoothing compare), ``val_accuracy``, ``val_macro_f1`` and ``lr``.
    Nothing goes to a logger; ``val_accuracy`` is logged only for early stopping and the
    progress bar.
    """

    def __init__(self, net: nn.Module, *, pixel_mean: float, pixel_std: float,
                 optimizer: str = "adamw", lr: float = 2e-3, weight_decay: float = 0.05,
                 schedule: str = "onecycle", label_smoothing: float = 0.1,
                 loss_weights: Tensor | None = None, augment: Augment = Augment(),
                 channels_last: bool = False, max_minutes: float | None = None):
        super().__init__()
        if optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {OPTIMIZERS}, not {optimizer!r}")
        if schedule not in SCHEDULES:
            raise ValueError(f"schedule must be one of {SCHEDULES}, not {schedule!r}")
        self.net = net
        self.pixel_mean, self.pixel_std = pixel_mean, pixel_std
        self.optimizer_name, self.lr, self.weight_decay = optimizer, lr, weight_decay
        self.schedule = schedule
        self.label_smoothing = label_smoothing
        self.register_buffer("loss_weights", loss_weights)
        self.augment = augment
        self.channels_last = channels_last
        self.max_minutes = max_minutes
        self._started: float | None = None
        self._planned_steps = 1
        self.val_accuracy = MulticlassAccuracy(N_CLASSES, average="micro")
        self.val_macro_f1 = MulticlassF1Score(N_CLASSES, average="macro")
        self.epoch_metrics: dict[str, float] = {}
        self._train_sums = torch.zeros(3)  # loss * n, correct, n of the epoch so far
        self._val_sums = torch.zeros(2)  # loss summed, n

    def forward(self, images: Tensor) -> Tensor:
        return self.net(to_input(images, self.pixel_mean, self.pixel_std, self.channels_last))

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        images, y = batch
        x = self.augment(to_input(images, self.pixel_mean, self.pixel_std, self.channels_last))
        logits = self.net(x)
        loss = F.cross_entropy(logits, y, weight=self.loss_weights,
                               label_smoothing=self.label_smoothing)
        if not torch.isfinite(loss):  # diverged (e.g. too high a learning rate): fail the fit
            raise FloatingPointError(f"training loss is {loss.item()} at step "
                                     f"{self.trainer.global_step if self._trainer else batch_idx}")
        with torch.no_grad():
            n = len(y)
            self._train_sums += torch.stack([loss.detach().float() * n,
                                             (logits.argmax(1) == y).sum().float(),
                                             torch.tensor(float(n), device=y.device)])
        self.log("loss", loss, prog_bar=True, batch_size=len(y), logger=False)
        return loss

    def validation_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        images, y = batch
        logits = self(images).float()
        self._val_sums += torch.stack([F.cross_entropy(logits, y, reduction="sum"),
                                       torch.tensor(float(len(y)), device=y.device)])
        self.val_accuracy.update(logits, y)
        self.val_macro_f1.update(logits, y)

    def on_train_epoch_start(self) -> None:
        self._train_sums = torch.zeros(3, device=self.device)

    def on_validation_epoch_start(self) -> None:
        self._val_sums = torch.zeros(2, device=self.device)

    def on_validation_epoch_end(self) -> None:
        train_loss, correct, seen = self._train_sums.tolist()
        val_loss, val_n = self._val_sums.tolist()
        self.epoch_metrics = {
            "train_loss": train_loss / max(seen, 1), "train_accuracy": correct / max(seen, 1),
            "val_loss": val_loss / max(val_n, 1),
            "val_accuracy": float(self.val_accuracy.compute()),
            "val_macro_f1": float(self.val_macro_f1.compute()),
            "lr": self.trainer.optimizers[0].param_groups[0]["lr"],
        }
        self.val_accuracy.reset()
        self.val_macro_f1.reset()
        self.log("val_accuracy", self.epoch_metrics["val_accuracy"], prog_bar=True, logger=False)

    def on_train_start(self) -> None:
        self._started = time.perf_counter()

    def progress(self, step: int) -> float:
        """Training progress in [0, 1]: the fraction of steps done or, with ``max_minutes``,
        of the time used, whichever is larger."""
        fraction = step / self._planned_steps
        if self.max_minutes is not None and self._started is not None:
            used = (time.perf_counter() - self._started) / (60 * self.max_minutes)
            fraction = max(fraction, used)
        return min(fraction, 1.0)

    def on_train_batch_end(self, outputs, batch, batch_idx: int) -> None:
        if self.progress(self.trainer.global_step) >= 1.0:
            self.trainer.should_stop = True  # Lightning still validates this last state

    def configure_optimizers(self):
        # Weight decay on conv and linear weights only: decaying BN scales and biases
        # just fights the normalisation.
        self._planned_steps = max(int(self.trainer.estimated_stepping_batches), 1)
        params = [p for p in self.net.parameters() if p.requires_grad]
        groups = [{"params": [p for p in params if p.ndim > 1], "weight_decay": self.weight_decay},
                  {"params": [p for p in params if p.ndim <= 1], "weight_decay": 0.0}]
        if self.optimizer_name == "sgd":
            optimizer = torch.optim.SGD(groups, lr=self.lr, momentum=0.9, nesterov=True)
        else:
            optimizer = torch.optim.AdamW(groups, lr=self.lr)
        shape = one_cycle if self.schedule == "onecycle" else cosine
        scheduler = torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda step: shape(self.progress(step)))
        return {"optimizer": optimizer,
                "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}


def one_cycle(progress: float, warmup: float = 0.25, start: float = 1 / 25) -> float:
    """The one-cycle learning-rate factor: a cosine rise from ``start`` to 1 over the
    warm-up, then a cosine fall to 0 (OneCycleLR's shape, as a function of progress)."""
    if progress < warmup:
        return start + (1 - start) * (1 - math.cos(math.pi * progress / warmup)) / 2
    return (1 + math.cos(math.pi * (progress - warmup) / (1 - warmup))) / 2


def cosine(progress: float) -> float:
    """The cosine-annealing learning-rate factor, from 1 to 0."""
    return (1 + math.cos(math.pi * progress)) / 2


class _Batches(BatchSampler):
    """A batch sampler that passes Lightning's ``set_epoch`` on to its sampler, so a
    ``DistributedSampler`` reshuffles every epoch."""

    def set_epoch(self, epoch: int) -> None:
        if hasattr(self.sampler, "set_epoch"):
            self.sampler.set_epoch(epoch)


class ArrayDataModule(L.LightningDataModule):
    """In-memory uint8 arrays; every batch is one tensor index, never a per-sample collate.

    Args:
        train: ``(X, y)`` flat pixels and labels to train on.
        val: ``(X, y)`` to validate on after every epoch.
        batch_size: training batch; capped at an eighth of the training set, so that a
            tiny set (tests, smoke runs) still takes several steps per epoch. Real data
            (thousands of images) never meets the cap.
        balanced_sampling: draw every class equally often (with replacement), an
            alternative to loss weights for the rare classes.
    """

    def __init__(self, train: tuple[np.ndarray, np.ndarray], val: tuple[np.ndarray, np.ndarray],
                 batch_size: int, balanced_sampling: bool = False):
        super().__init__()
        self.train_set = TensorDataset(to_images(train[0]), torch.as_tensor(train[1]).long())
        self.val_set = TensorDataset(to_images(val[0]), torch.as_tensor(val[1]).long())
        self.batch_size = batch_size
        self.balanced_sampling = balanced_sampling

    @property
    def train_batch_size(self) -> int:
        n = len(self.train_set)
        cap = max(n // MIN_STEPS_PER_EPOCH, 2)  # batch norm needs two images
        return min(self.batch_size, cap, n)

    @property
    def steps_per_epoch(self) -> int:
        return len(self.train_set) // self.train_batch_size

    def train_dataloader(self) -> DataLoader:
        labels = self.train_set.tensors[1]
        if self.balanced_sampling:
            per_class = torch.bincount(labels, minlength=N_CLASSES).float()
            sampler = WeightedRandomSampler(1.0 / per_class[labels], len(labels))
        elif self.trainer is not None and self.trainer.world_size > 1:  # DDP: a shard per rank
            sampler = DistributedSampler(self.train_set, self.trainer.world_size,
                                         self.trainer.global_rank, shuffle=True)
        else:
            sampler = RandomSampler(self.train_set)
        # Full batches only: a last batch of one or two images would upset batch norm.
        batches = _Batches(sampler, self.train_batch_size, drop_last=True)
        return DataLoader(self.train_set, sampler=batches, batch_size=None)

    def val_dataloader(self) -> DataLoader:
        batches = BatchSampler(SequentialSampler(self.val_set), EVAL_BATCH, drop_last=False)
        return DataLoader(self.val_set, sampler=batches, batch_size=None)


class BestEpoch(Callback):
    """After each validation: records the metrics, keeps a copy of the best epoch's
    weights (by validation accuracy) and calls ``report`` with the metrics.

    ``report`` may raise (``optuna.TrialPruned``); Lightning re-raises it out of ``fit``.
    Under DDP the callback lives in the rank processes: rank zero hands its record to the
    main process through the file ``handoff`` when the fit ends.
    """

    def __init__(self, report: Callable[[Mapping[str, float]], None] | None = None,
                 handoff: str | None = None):
        self.report = report
        self.handoff = handoff
        self.history: list[dict[str, float]] = []
        self.best_epoch: int | None = None
        self.best_state: dict[str, Tensor] | None = None

    def on_validation_end(self, trainer: L.Trainer, module: FerModule) -> None:
        metrics = dict(module.epoch_metrics)
        if self.best_epoch is None or \
                metrics["val_accuracy"] > self.history[self.best_epoch]["val_accuracy"]:
            self.best_epoch = len(self.history)
            self.best_state = copy.deepcopy(module.net.state_dict())
        self.history.append(metrics)
        if self.report is not None:
            self.report(metrics)

    def on_fit_end(self, trainer: L.Trainer, module: FerModule) -> None:
        if self.handoff and trainer.is_global_zero:
            torch.save({"history": self.history, "best_epoch": self.best_epoch,
                        "best_state": self.best_state}, self.handoff)

    def take_handoff(self) -> None:
        record = torch.load(self.handoff, weights_only=False)
        self.history, self.best_epoch = record["history"], record["best_epoch"]
        self.best_state = record["best_state"]


STRATEGIES = ("auto", "ddp")


def fit(module: FerModule, data: ArrayDataModule, *, epochs: int, precision: str = "fp32",
        patience: int | None = None, devices: int = 1, strategy: str = "auto",
        report: Callable[[Mapping[str, float]], None] | None = None) -> BestEpoch:
    """Trains ``module.net`` in place and leaves it holding the best epoch's weights.

    Args:
        module: the module wrapping the network.
        data: training and validation arrays.
        epochs: the most training epochs; the module's ``max_minutes`` may end it sooner.
        precision: ``fp32`` or ``bf16`` (autocast; weights stay fp32).
        patience: stop after this many epochs without a better validation accuracy;
            None never stops early.
        devices: processes (GPUs, or CPU processes) to train on.
        strategy: ``auto``, or ``ddp`` (data-parallel; the default when ``devices`` > 1).
            DDP ranks are spawned processes that each train on a shard of every epoch;
            only this process logs, and ``report`` gets the epochs after the fit, so
            pruning waits for its end. Ranks must stop on the same step, so the module's
            ``max_minutes`` does not apply under DDP.
        report: called with the epoch's metrics after each validation.

    Returns:
        The callback holding the per-epoch history and the best epoch.
    """
    if precision not in PRECISIONS:
        raise ValueError(f"mixed_precision must be one of {list(PRECISIONS)}, not {precision!r}")
    if strategy not in STRATEGIES:
        raise ValueError(f"strategy must be one of {STRATEGIES}, not {strategy!r}")
    distributed = devices > 1 or strategy == "ddp"
    with tempfile.TemporaryDirectory() as tmp:
        best = BestEpoch(None if distributed else report,
                         str(Path(tmp) / "best.pt") if distributed else None)
        callbacks: list[Callback] = [best]
        if patience is not None:
            callbacks.append(EarlyStopping("val_accuracy", patience=patience, mode="max",
                                           check_on_train_epoch_end=False))
        strategy_used = "auto"
        if distributed:
            from lightning.pytorch.strategies import DDPStrategy

            module.max_minutes = None
            strategy_used = DDPStrategy(start_method="spawn")
        trainer = L.Trainer(
            accelerator="auto", devices=devices, strategy=strategy_used,
            precision=PRECISIONS[precision], max_epochs=epochs, logger=False,
            enable_checkpointing=False, enable_model_summary=False, enable_progress_bar=True,
            num_sanity_val_steps=0, callbacks=callbacks, use_distributed_sampler=False)
        with warnings.catch_warnings():
            # Batches are tensor slices of in-memory arrays: loader workers would only add IPC.
            warnings.filterwarnings("ignore", ".*does not have many workers.*")
            trainer.fit(module, datamodule=data)
        if distributed:
            best.take_handoff()
            for metrics in best.history if report is not None else ():
                report(metrics)
    if best.best_state is not None:
        module.net.load_state_dict(best.best_state)
    return best


TTA_MODES = ("none", "flip", "crops")
# "crops": the image and its mirror, each also shifted 2 px up, down, left and right
# (reflect-padded, like the training shifts): 10 views.
CROP_SHIFTS = ((0, 0), (2, 0), (-2, 0), (0, 2), (0, -2))


def tta_views(x: Tensor, mode: str) -> list[Tensor]:
    """The views of a batch whose logits are averaged for test-time augmentation."""
    if mode not in TTA_MODES:
        raise ValueError(f"tta must be one of {TTA_MODES}, not {mode!r}")
    if mode == "none":
        return [x]
    if mode == "flip":
        return [x, x.flip(3)]
    pad = max(max(abs(dy), abs(dx)) for dy, dx in CROP_SHIFTS)
    padded = F.pad(x, (pad, pad, pad, pad), mode="reflect")
    h, w = x.shape[-2:]
    views = [padded[..., pad + dy:pad + dy + h, pad + dx:pad + dx + w] for dy, dx in CROP_SHIFTS]
    return views + [v.flip(3) for v in views]


@torch.inference_mode()
def predict_logits(net: nn.Module, X: np.ndarray, *, pixel_mean: float, pixel_std: float,
                   precision: str = "fp32", channels_last: bool = False,
                   tta: str = "none") -> np.ndarray:
    """Float32 logits for flat uint8 pixels, in batches, with the training input path.

    Args:
        tta: ``none``, ``flip`` (average with the mirror image) or ``crops`` (average over
            ``tta_views``).
    """
    net.eval()
    images = to_images(X)
    out = []
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
        for start in range(0, len(images), EVAL_BATCH):
            x = to_input(images[start:start + EVAL_BATCH], pixel_mean, pixel_std, False)
            views = tta_views(x, tta)
            fmt = torch.channels_last if channels_last else torch.contiguous_format
            logits = sum(net(v.contiguous(memory_format=fmt)).float() for v in views)
            out.append(logits / len(views))
    return torch.cat(out).numpy() if out else np.empty((0, N_CLASSES), np.float32)
