"""Convolutional networks trained with Lightning, behind the scikit-learn estimator contract."""

from __future__ import annotations

import copy
import logging
import math
from pathlib import Path

import numpy as np
from scipy.special import softmax
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.model_selection import train_test_split

from fer_lab import labels
from fer_lab.models import register, with_tta

log = logging.getLogger(__name__)
VAL_FRACTION = 0.1
CHECKPOINT_FILE = "fit.ckpt"  # in checkpoint_dir
# What a long fit's recipe may change: regularisation and training sides.
LONG_RECIPE_KEYS = frozenset({"dropout", "flip", "shift", "rotate", "scale", "erase",
                              "train_sides"})
# torch and Lightning are imported inside the methods: the registry imports every family,
# and importing them would add ~4 s to every command, the classical families' included.


@register("cnn")
class CNNClassifier(ClassifierMixin, BaseEstimator):
    """A CNN (seed_cnn, vgg or resnet) on raw pixels, trained with augmentation.

    Args:
        arch: a name in ``fer_lab.nets.ARCHITECTURES``.
        width: channels of the first stage; later stages double it.
        dropout: dropout before the classifier.
        epochs: training epochs; the learning-rate schedule spans all of them.
        min_steps: train at least this many optimizer steps, adding epochs on small
            training sets: a net learns from scratch in a few hundred steps, which tiny
            sets (tests, smoke runs) reach only after tens of epochs.
        batch_size: training batch size.
        lr: peak learning rate (one-cycle) or starting one (cosine).
        optimizer: ``sgd`` (Nesterov, momentum 0.9) or ``adamw``.
        schedule: ``onecycle`` or ``cosine``, stepped per batch.
        weight_decay: on conv and linear weights.
        label_smoothing: cross-entropy label smoothing.
        class_weighting: loss weights ``none``, ``balanced`` or ``sqrt`` (of balanced).
        balanced_sampling: sample every class equally often instead; excludes
            ``class_weighting``.
        flip, shift, rotate, scale, erase: augmentation strengths, see
            ``fer_lab.training.Augment``.
        mixed_precision: ``auto`` (the faster of fp32 and, where the hardware runs it
            natively, bf16 autocast, measured on the machine that trains), ``fp32`` or
            ``bf16``. Training only: predictions choose their own setting on the machine
            that serves them (``fer_lab.training.hardware``).
        channels_last: ``auto`` (measured), or true / false: NHWC weights and activations,
            which speed some nets' oneDNN convolutions on CPU and slow others.
        train_sides: training image sides, each for an equal share of the training
            (progressive resizing: e.g. ``[32, 40, 48]`` trains the first third on 32x32
            resamplings, ~2.5x cheaper); predictions always see 48x48. ``seed_cnn``,
            whose dense layer fixes its input, trains at 48x48 throughout.
        tta: test-time augmentation: ``none``, ``flip`` (average with the mirror image),
            ``crops`` (the image and its mirror, each shifted 2 px four ways: 10 views) or
            ``auto``: after training, each is scored on the validation set and the best
            kept (``fit_metrics_`` records the scores; ties go to fewer views).
        patience: stop after this many epochs without a better validation accuracy;
            None never stops early.
        max_minutes: finish training within this wall time: the schedule then runs on
            time (warm-up and annealing complete, fewer epochs) when that is shorter than
            ``epochs``; None for no limit and reproducible training.
        devices: processes to train on (GPUs, or CPU processes).
        strategy: ``auto``, or ``ddp`` (data-parallel over ``devices``; see
            ``fer_lab.training.fit``).
        teacher: a model URI (``models:/fer-ensemble@champion``) to distil from: its
            calibrated probabilities of the training faces (unaugmented, its networks at
            ``flip``) join the labels as targets. It must have been trained on the same
            training rows (checked inside a study, as an ensemble's members are).
        distill: the teacher's share of the loss (0..1); the labels' is the rest.
        ema: keep an exponential moving average of the weights with this decay per step
            (e.g. 0.999: about the last thousand steps once its warm-up ends, at step
            ~9,000; before that about the last ninth of the steps: ``FerModule``), score
            it on validation and keep it as the net; 0 keeps the trained weights.
            ``history_`` then also holds ``val_accuracy_raw``, the trained weights' own
            score each epoch.
        seed: seeds weights, batch order and augmentation.
        long_params, long_epochs: a recipe for long fits (e.g. ``{dropout: 0.18, rotate:
            16.8, erase: 0.05, train_sides: [48]}``; ``LONG_RECIPE_KEYS``: the
            regularisation and the training sides) that replaces these parameters when
            the fit trains at least ``long_epochs`` epochs: ``epochs``, or with
            ``max_minutes`` the epochs (of 48x48 images) that fit in it at the settings
            probe's training rate here, if fewer. How much regularisation pays depends
            on how long the net trains, and under a time cap the machine decides that.
            A time-capped fit needs a probed (``auto``) setting to switch. None for no
            switch; ``fit_settings_["recipe"]`` says which one trained.
        checkpoint_dir: a folder where the fit saves its whole state after every epoch
            (``fit.ckpt``); a fit that finds there the state of an interrupted fit of the
            same parameters and data resumes from it and ends as the uninterrupted fit
            would have. The file is removed when training ends. ``fer-lab tune`` gives its
            refit one, so re-running an interrupted study's command continues the refit.
            One process only: a fit on several (``devices`` > 1, DDP) ignores it, with a
            warning.

    Attributes:
        net_: the trained network (best validation epoch), on the CPU.
        class_names_: the classes it scores, in label order (FER2013's seven by default).
        history_: the metrics of every epoch, as reported.
        best_epoch_: the index of the epoch whose weights ``net_`` holds.
        tta_: the test-time augmentation predictions use.
        fit_metrics_: figures of the fit worth logging beside the scores:
            ``resumed_epochs`` and ``resumed_seconds`` (the epochs and training seconds
            done before this process: 0 unless resumed from ``checkpoint_dir``) and, when
            ``tta="auto"``, ``val_accuracy_tta_crops`` and the like.
        fit_settings_: the values the fit resolved for its ``auto`` parameters
            (``mixed_precision``, ``channels_last``, ``tta``), to log as parameters.
        eval_set_proba_: probabilities for the ``eval_set`` with the chosen test-time
            augmentation, when ``tta="auto"`` scored it (so it is not predicted again).
        eval_set_probas_: the same for every test-time augmentation (``{"none": ...,
            "flip": ..., "crops": ...}``) when ``tta="auto"`` scored them; else empty.
    """

    def __init__(self, arch="vgg", width=32, dropout=0.3, epochs=30, min_steps=0,
                 batch_size=128, lr=2e-3, optimizer="adamw", schedule="onecycle",
                 weight_decay=0.05, label_smoothing=0.1, class_weighting="none",
                 balanced_sampling=False, flip=True, shift=0.1, rotate=10.0, scale=0.1,
                 erase=0.25, mixed_precision="auto", channels_last="auto", tta="flip",
                 patience=None, max_minutes=None, devices=1, strategy="auto", seed=0,
                 train_sides=(48,), teacher=None, distill=0.7, long_params=None,
                 long_epochs=None, checkpoint_dir=None, ema=0.0):
        self.arch = arch
        self.width = width
        self.dropout = dropout
        self.epochs = epochs
        self.min_steps = min_steps
        self.batch_size = batch_size
        self.lr = lr
        self.optimizer = optimizer
        self.schedule = schedule
        self.weight_decay = weight_decay
        self.label_smoothing = label_smoothing
        self.class_weighting = class_weighting
        self.balanced_sampling = balanced_sampling
        self.flip = flip
        self.shift = shift
        self.rotate = rotate
        self.scale = scale
        self.erase = erase
        self.mixed_precision = mixed_precision
        self.channels_last = channels_last
        self.tta = tta
        self.patience = patience
        self.max_minutes = max_minutes
        self.devices = devices
        self.strategy = strategy
        self.seed = seed
        self.train_sides = train_sides
        self.teacher = teacher
        self.distill = distill
        self.long_params = long_params
        self.long_epochs = long_epochs
        self.checkpoint_dir = checkpoint_dir
        self.ema = ema

    def fit(self, X, y, eval_set=None, report=None, class_names=None):
        """Trains on flat ``(N, 2304)`` uint8 pixels and their labels.

        Args:
            X: flat pixels.
            y: labels 0..K-1.
            eval_set: ``(X_val, y_val)`` for per-epoch validation, early stopping and the
                best-epoch choice; without it a stratified 10% of ``X`` is held out.
            report: called after each epoch with ``train_loss``, ``train_accuracy``,
                ``val_loss``, ``val_accuracy``, ``val_macro_f1`` and ``lr``; whatever it
                raises (e.g. ``optuna.TrialPruned``) ends the fit and propagates.
            class_names: the name of every label (``fer_lab.labels``), default FER2013's
                seven: the network gets one output per class. Kept as ``class_names_``.

        Returns:
            self, holding the weights of the best validation epoch.
        """
        import torch
        from lightning.pytorch import seed_everything

        from fer_lab import nets, training
        from fer_lab.training import hardware
        from fer_lab.training.callbacks import saved_fit

        if self.class_weighting != "none" and self.balanced_sampling:
            raise ValueError("balanced_sampling corrects the class imbalance already; "
                             "use it with class_weighting='none'")
        X, y = np.asarray(X, dtype=np.uint8), np.asarray(y, dtype=np.int64)
        names = labels.class_names(y, class_names)
        if eval_set is None:
            X, X_val, y, y_val = self._hold_out(X, y)
        else:
            X_val, y_val = np.asarray(eval_set[0], dtype=np.uint8), np.asarray(eval_set[1])
        if not 0.0 <= self.distill <= 1.0:
            raise ValueError(f"distill must be within 0..1, not {self.distill}")
        soft = teacher_targets(self.teacher, X) if self.teacher else None
        if soft is not None and soft.shape[1] != len(names):
            raise ValueError(f"the teacher {self.teacher} scores {soft.shape[1]} classes, this "
                             f"data has {len(names)} ({', '.join(names)})")
        data = training.ArrayDataModule((X, y), (X_val, y_val), self.batch_size,
                                        self.balanced_sampling, soft_targets=soft)
        checkpoint = self._checkpoint()  # the data is digested only for a checkpoint
        identity = self._identity(X, y, X_val, y_val, soft) if checkpoint else ""
        saved = saved_fit(checkpoint, identity) if checkpoint else None
        if saved and saved["settings"]:
            # A resumed fit keeps what the interrupted one resolved: the machine's speed
            # moves by the day, and a re-probe could switch precision or recipe mid-fit.
            setting = hardware.Setting.parse(saved["settings"]["setting"])
            recipe = saved["settings"]["recipe"]
            p = {**self.get_params(), **(self.long_params if recipe == "long" else {})}
        else:
            setting = hardware.resolve(self.arch, self.width, data.train_batch_size,
                                       self.mixed_precision, self.channels_last)
            recipe, p = self._recipe(len(X), data.train_batch_size)
        self.fit_settings_ = {"mixed_precision": setting.precision,
                              "channels_last": setting.channels_last, "recipe": recipe}
        seed_everything(self.seed, workers=True, verbose=False)
        net = nets.build(self.arch, width=self.width, dropout=p["dropout"],
                         n_classes=len(names))
        net = net.to(memory_format=setting.memory_format)
        sides = (nets.SIDE,) if getattr(net, "fixed_input", False) else tuple(p["train_sides"])
        # Normalisation statistics travel with the estimator, so predict sees the same input.
        self.pixel_mean_, self.pixel_std_ = float(X.mean()), float(X.std()) or 1.0
        module = training.FerModule(
            net, pixel_mean=self.pixel_mean_, pixel_std=self.pixel_std_,
            optimizer=self.optimizer, lr=self.lr, weight_decay=self.weight_decay,
            schedule=self.schedule, label_smoothing=self.label_smoothing,
            loss_weights=training.class_weights(y, self.class_weighting, len(names)),
            augment=training.Augment(p["flip"], p["shift"], p["rotate"], p["scale"], p["erase"]),
            channels_last=setting.channels_last, max_minutes=self.max_minutes,
            train_sides=sides, distill=self.distill if self.teacher else 0.0, ema=self.ema)
        epochs = max(self.epochs, math.ceil(self.min_steps / data.steps_per_epoch))
        best = training.fit(module, data, epochs=epochs, precision=setting.precision,
                            patience=self.patience, devices=self.devices,
                            strategy=self.strategy, report=report, checkpoint=checkpoint,
                            identity=identity,
                            settings={"setting": setting.name, "recipe": recipe})
        self.net_ = net.cpu().eval().to(memory_format=torch.contiguous_format)
        self.history_ = best.history
        self.best_epoch_ = best.best_epoch
        self.class_names_ = names
        self.classes_ = np.arange(len(names))
        self.fit_metrics_ = {"resumed_epochs": best.resumed_epochs,
                             "resumed_seconds": module.resumed_seconds}
        self.eval_set_proba_ = None
        self.eval_set_probas_ = {}
        self.tta_ = self.tta
        if self.tta == "auto":
            self._choose_tta(X_val, y_val)
        if checkpoint is not None:  # kept until here: a kill while choosing resumes the end
            checkpoint.unlink(missing_ok=True)
        return self

    def _recipe(self, n_train: int, batch: int) -> tuple[str, dict]:
        """``("long", params with long_params)`` when the fit trains ``long_epochs``
        epochs or more: its ``epochs``, or fewer when ``max_minutes`` at the probe's rate
        of the setting ``auto`` picks here allows fewer; else ``("default", params)``."""
        from fer_lab.training import hardware

        params = self.get_params()
        if not self.long_params or self.long_epochs is None:
            return "default", params
        if unknown := set(self.long_params) - LONG_RECIPE_KEYS:
            raise ValueError(f"long_params sets only {sorted(LONG_RECIPE_KEYS)}, "
                             f"not {sorted(unknown)}")
        epochs, why = float(self.epochs), f"{self.epochs} planned"
        if self.max_minutes is not None:
            rate = hardware.probed_rate(self.arch, self.width, batch, self.mixed_precision,
                                        self.channels_last)
            if rate is None:  # an explicit setting: no probe, no rate to plan with
                return "default", params
            in_time = 60 * self.max_minutes * rate / max(n_train, 1)
            if in_time < epochs:
                epochs, why = in_time, (f"{in_time:.0f} of {n_train} images in "
                                        f"{self.max_minutes:g} min at the probe's "
                                        f"{rate:.0f} images/s")
        long = epochs >= self.long_epochs
        log.info("epochs: %s; the %s recipe", why, "long" if long else "default")
        return ("long", {**params, **self.long_params}) if long else ("default", params)

    def _checkpoint(self) -> Path | None:
        """The checkpoint file in ``checkpoint_dir``, unless the fit runs in several
        processes (DDP), which does not resume."""
        if self.checkpoint_dir is None:
            return None
        if self.devices > 1 or self.strategy == "ddp":
            log.warning("a fit on %d processes (%s) does not save checkpoints: an "
                        "interrupted one starts again", self.devices, self.strategy)
            return None
        return Path(self.checkpoint_dir) / CHECKPOINT_FILE

    def _identity(self, *arrays) -> str:
        """A digest of what a fit trains: its parameters (but where it checkpoints) and
        its data."""
        import hashlib

        params = {k: v for k, v in self.get_params().items() if k != "checkpoint_dir"}
        if not params.get("ema"):  # as before it existed: those fits' checkpoints resume
            params.pop("ema", None)
        digest = hashlib.blake2b(repr(sorted(params.items())).encode(), digest_size=16)
        for array in arrays:
            if array is not None:
                digest.update(np.ascontiguousarray(array).data)
        return digest.hexdigest()

    def _choose_tta(self, X_val: np.ndarray, y_val: np.ndarray) -> None:
        """Scores every test-time augmentation on the validation set and keeps the best.

        The validation set goes through the network once, in the 10 views of ``crops``;
        ``none`` and ``flip`` average the views they share with it."""
        self.eval_set_probas_ = self.view_probas(X_val)
        best = -1.0
        # Fewest views first: a tie keeps the cheaper mode.
        for mode, proba in self.eval_set_probas_.items():
            accuracy = float(np.mean(self.classes_[proba.argmax(1)] == y_val))
            self.fit_metrics_[f"val_accuracy_tta_{mode}"] = accuracy
            if accuracy > best:
                best, self.tta_, self.eval_set_proba_ = accuracy, mode, proba
        self.fit_settings_["tta"] = self.tta_

    def view_probas(self, X) -> dict[str, np.ndarray]:
        """Probabilities with every test-time augmentation, fewest views first, from one
        pass of the 10 views of ``crops``: ``none`` and ``flip`` average the views they
        share with it."""
        from fer_lab.training import inference

        views = self._logits(X, "crops", per_view=True)
        return {mode: softmax(views[list(inference.CROP_VIEWS[mode])].mean(0)
                              .astype(np.float64), axis=1) for mode in inference.TTA_MODES}

    def _hold_out(self, X: np.ndarray, y: np.ndarray):
        """A seeded 10% validation carve, stratified when the classes allow it."""
        try:
            return train_test_split(X, y, test_size=VAL_FRACTION, random_state=self.seed,
                                    stratify=y)
        except ValueError:  # a class with a single row, or fewer held-out rows than classes
            return train_test_split(X, y, test_size=VAL_FRACTION, random_state=self.seed)

    def write_artifacts(self, folder: Path) -> dict[str, list[float]]:
        """Writes the training curves (``curves.png``) and the best epoch's weights
        (``best.pt``, a state dict of ``fer_lab.nets.build(arch, width, dropout,
        len(class_names_))``) into ``folder``; returns the per-epoch metrics as series, to
        log step by step."""
        import matplotlib.pyplot as plt
        import torch

        folder.mkdir(parents=True, exist_ok=True)
        torch.save(self.net_.state_dict(), folder / "best.pt")
        series = {k: [h[k] for h in self.history_] for k in self.history_[0]} \
            if self.history_ else {}
        fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
        epochs = np.arange(1, len(self.history_) + 1)
        for ax, (title, keys) in zip(axes, [("loss", ("train_loss", "val_loss")),
                                            ("accuracy", ("train_accuracy", "val_accuracy",
                                                          "val_accuracy_raw")),
                                            ("learning rate", ("lr",))]):
            for key in (k for k in keys if k in series):
                ax.plot(epochs, series[key], label=key)
            ax.set_title(title)
            ax.set_xlabel("epoch")
            ax.legend(fontsize=8)
        if self.best_epoch_ is not None:
            axes[1].axvline(self.best_epoch_ + 1, color="grey", linestyle=":", label="best")
        fig.tight_layout()
        fig.savefig(folder / "curves.png", dpi=90)
        plt.close(fig)
        return series

    def uses_torch(self) -> bool:
        return True

    def has_views(self) -> bool:
        return True

    def with_tta(self, tta: str) -> CNNClassifier:
        """A shallow copy predicting with test-time augmentation ``tta``."""
        out = copy.copy(self)
        out.tta = tta  # not set_params: models pickled by older versions lack params
        return out

    def inference_setting(self):
        """How this machine predicts fastest with this net (measured once per machine and
        cached): a fitted model carries weights, not the training machine's setting."""
        from fer_lab.training import hardware

        return hardware.resolve(self.arch, self.width, hardware.INFER_BATCH, mode="infer")

    def _logits(self, X, tta: str, per_view: bool = False) -> np.ndarray:
        from fer_lab.training import inference

        return inference.predict_logits(
            self.net_, np.asarray(X), pixel_mean=self.pixel_mean_, pixel_std=self.pixel_std_,
            setting=self.inference_setting(), tta=tta, per_view=per_view)

    def decision_function(self, X) -> np.ndarray:
        """Logits ``(N, classes)``, averaged over the test-time augmentation's views."""
        return self._logits(X, self.tta_ if self.tta == "auto" else self.tta)

    def predict_proba(self, X) -> np.ndarray:
        """Float64 class probabilities (softmax of the logits) summing to 1 per row."""
        return softmax(self.decision_function(X).astype(np.float64), axis=1)

    def predict(self, X) -> np.ndarray:
        return self.classes_[np.argmax(self.predict_proba(X), axis=1)]


TEACHER_TTA = "flip"  # a teacher's networks label the training faces with 2 views, not 10


def teacher_targets(uri: str, X: np.ndarray) -> np.ndarray:
    """The teacher's calibrated probabilities of ``X`` (float32), its networks (an
    ensemble's too) predicting with ``TEACHER_TTA``."""
    from fer_lab import calibration
    from fer_lab.models.stored import load_member, rows_digest

    key = (uri, rows_digest(X))
    if key not in _TAUGHT:  # a study's trials and refit share one teacher's labels
        teacher, temperature = load_member(uri, TEACHER_TTA)
        proba = calibration.scale(with_tta(teacher, TEACHER_TTA).predict_proba(X), temperature)
        _TAUGHT.clear()
        _TAUGHT[key] = proba.astype(np.float32)
    return _TAUGHT[key]


_TAUGHT: dict[tuple[str, str], np.ndarray] = {}
