"""The one LightningModule that trains any ``fer_lab.nets`` network."""

from __future__ import annotations

import copy
import time

import lightning.pytorch as L
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchmetrics.classification import MulticlassAccuracy, MulticlassF1Score

from fer_lab.nets import SIDE, n_outputs
from fer_lab.training.augment import Augment
from fer_lab.training.inputs import to_input
from fer_lab.training.schedules import SCHEDULES, cosine, one_cycle

OPTIMIZERS = ("sgd", "adamw")
HOST_SYNC_EVERY = 16  # steps between reads of the loss on the host


class FerModule(L.LightningModule):
    """Trains a network: label-smoothed, optionally class-weighted cross-entropy, SGD
    (Nesterov) or AdamW with a per-batch one-cycle or cosine schedule. With soft targets
    in the batches (distillation), the loss is ``(1 - distill)`` times that plus
    ``distill`` times the cross-entropy with the teacher's probabilities.

    The schedule follows ``progress``: the fraction of the planned steps, or of
    ``max_minutes`` when that is reached sooner, so a time-capped run still warms up and
    anneals fully (and ends) within its time. Without ``max_minutes`` it depends on the
    step alone and training is reproducible.

    With ``ema`` (a decay such as 0.999), an exponential moving average of the weights
    (and batch-norm statistics) follows the training, ``averaged``: validation scores it,
    and it is what the fit keeps (``scored_net``). Its decay warms up as ``(1 + step) /
    (10 + step)`` (timm's): the average spans about the last ninth of the steps until that
    reaches ``ema`` (step ~9,000 for 0.999), so short fits average their recent steps, not
    their random start.

    After each validation epoch ``epoch_metrics`` holds the report: ``train_loss``,
    ``train_accuracy`` (on augmented batches), ``val_loss`` (plain cross-entropy, so trials
    with different smoothing compare), ``val_accuracy``, ``val_macro_f1`` and ``lr``; with
    ``ema``, also ``val_accuracy_raw``, the trained weights' own accuracy (what the average
    buys, epoch by epoch).
    Nothing goes to a logger; ``val_accuracy`` is logged only for early stopping and the
    progress bar.
    """

    def __init__(self, net: nn.Module, *, pixel_mean: float, pixel_std: float,
                 optimizer: str = "adamw", lr: float = 2e-3, weight_decay: float = 0.05,
                 schedule: str = "onecycle", label_smoothing: float = 0.1,
                 loss_weights: Tensor | None = None, augment: Augment = Augment(),
                 channels_last: bool = False, max_minutes: float | None = None,
                 train_sides: tuple[int, ...] = (SIDE,), distill: float = 0.0,
                 ema: float = 0.0):
        super().__init__()
        if optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {OPTIMIZERS}, not {optimizer!r}")
        if schedule not in SCHEDULES:
            raise ValueError(f"schedule must be one of {SCHEDULES}, not {schedule!r}")
        if not 0.0 <= ema < 1.0:
            raise ValueError(f"ema must be a decay within [0, 1), not {ema}")
        self.net = net
        self.ema = ema
        # A submodule, so checkpoints carry it and it follows the module's device.
        self.averaged = copy.deepcopy(net).requires_grad_(False) if ema else None
        self.pixel_mean, self.pixel_std = pixel_mean, pixel_std
        self.optimizer_name, self.lr, self.weight_decay = optimizer, lr, weight_decay
        self.schedule = schedule
        self.label_smoothing = label_smoothing
        self.register_buffer("loss_weights", loss_weights)
        self.augment = augment
        self.channels_last = channels_last
        self.max_minutes = max_minutes
        self.train_sides = tuple(train_sides)
        self.distill = distill
        self._started: float | None = None
        self.resumed_seconds = 0.0  # trained by the interrupted fits this one resumes
        self._time_used = 0.0  # fraction of max_minutes, read once per step
        self._planned_steps = 1
        n_classes = n_outputs(net)  # the head's classes: 7 for FER2013, 8 for FER+
        self.val_accuracy = MulticlassAccuracy(n_classes, average="micro")
        self.val_macro_f1 = MulticlassF1Score(n_classes, average="macro")
        self.raw_accuracy = MulticlassAccuracy(n_classes, average="micro") if ema else None
        self.epoch_metrics: dict[str, float] = {}
        self._train_sums = torch.zeros(3)  # loss * n, correct, n of the epoch so far
        self._val_sums = torch.zeros(2)  # loss summed, n

    def forward(self, images: Tensor) -> Tensor:
        return self.scored_net()(self._input(images))

    def _input(self, images: Tensor) -> Tensor:
        return to_input(images, self.pixel_mean, self.pixel_std, self.channels_last)

    def scored_net(self) -> nn.Module:
        """The weights validation scores and the fit keeps: the average with ``ema``."""
        return self.net if self.averaged is None else self.averaged

    @torch.no_grad()
    def _update_average(self, step: int) -> None:
        keep = min(self.ema, (1.0 + step) / (10.0 + step))
        averaged, trained = list(self.averaged.parameters()), list(self.net.parameters())
        torch._foreach_lerp_(averaged, trained, 1.0 - keep)
        for mean, buffer in zip(self.averaged.buffers(), self.net.buffers()):
            if mean.is_floating_point():  # batch-norm statistics
                mean.lerp_(buffer, 1.0 - keep)
            else:  # batches seen
                mean.copy_(buffer)

    def training_step(self, batch: tuple[Tensor, ...], batch_idx: int) -> Tensor:
        images, y, *soft = batch
        step = self.trainer.global_step if self._trainer else batch_idx
        x = self._input(images)
        # Outside Lightning's mixed-precision autocast: under bf16 the affine grid is
        # computed in bf16 (sampling positions off by up to ~0.1 px at 48 px), and on a CPU
        # it is slower too (a batch of 128 at 48 px, AMX kind: 2.7 against 2.3 ms on 2
        # threads, 8 against 4 on one).
        with torch.autocast(x.device.type, enabled=False):
            x = self.augment(x, self.train_side(step))
        logits = self.net(x)
        loss = F.cross_entropy(logits, y, weight=self.loss_weights,
                               label_smoothing=self.label_smoothing)
        if soft:  # distillation: the teacher's probabilities of the unaugmented image
            taught = F.cross_entropy(logits.float(), soft[0])
            loss = (1.0 - self.distill) * loss + self.distill * taught
        # Host syncs (on a GPU) only every few steps: a diverged loss leaves NaN weights for
        # good, so checking now and then (and at the epoch's end) still fails the fit.
        if step % HOST_SYNC_EVERY == 0:
            self._fail_if_diverged(loss, step)
            self.log("loss", loss, prog_bar=True, batch_size=len(y), logger=False)
        with torch.no_grad():
            self._train_sums[0] += loss.detach().float() * len(y)
            self._train_sums[1] += (logits.argmax(1) == y).sum()
            self._train_sums[2] += len(y)
        return loss

    def _fail_if_diverged(self, loss: Tensor, step: int) -> None:
        if not torch.isfinite(loss):  # e.g. too high a learning rate: fail the fit
            raise FloatingPointError(f"training loss is {loss.item()} at step {step}")

    def on_train_epoch_end(self) -> None:
        seen = max(float(self._train_sums[2]), 1.0)
        self._fail_if_diverged(self._train_sums[0] / seen, self.trainer.global_step)

    def validation_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        images, y = batch
        x = self._input(images)
        logits = self.scored_net()(x).float()
        if self.raw_accuracy is not None:
            self.raw_accuracy.update(self.net(x).float(), y)
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
        if self.raw_accuracy is not None:
            self.epoch_metrics["val_accuracy_raw"] = float(self.raw_accuracy.compute())
            self.raw_accuracy.reset()
        self.log("val_accuracy", self.epoch_metrics["val_accuracy"], prog_bar=True, logger=False)

    def on_train_start(self) -> None:
        self._started = time.perf_counter()

    def train_seconds(self) -> float:
        """Wall seconds of training so far, with those of the interrupted fits this one
        resumed."""
        now = 0.0 if self._started is None else time.perf_counter() - self._started
        return self.resumed_seconds + now

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["fer_lab_train_seconds"] = self.train_seconds()

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        self.resumed_seconds = float(checkpoint.get("fer_lab_train_seconds", 0.0))

    def on_train_batch_start(self, batch, batch_idx: int) -> None:
        if self.max_minutes is None or self._started is None:
            return
        used = self.train_seconds() / (60 * self.max_minutes)
        if self.trainer.world_size > 1:
            # DDP ranks must follow one schedule and stop on the same step: rank zero's
            # clock decides for all of them.
            used = float(self.trainer.strategy.broadcast(used, src=0))
        self._time_used = used

    def train_side(self, step: int) -> int:
        """The side of this step's training images: ``train_sides`` take equal shares of
        the progress in turn (progressive resizing: small, cheap images first)."""
        sides = self.train_sides
        return sides[min(int(self.progress(step) * len(sides)), len(sides) - 1)]

    def progress(self, step: int) -> float:
        """Training progress in [0, 1]: the fraction of steps done or, with ``max_minutes``,
        of the time used, whichever is larger."""
        return min(max(step / self._planned_steps, self._time_used), 1.0)

    def on_train_batch_end(self, outputs, batch, batch_idx: int) -> None:
        if self.averaged is not None:  # after the optimizer's step
            self._update_average(self.trainer.global_step)
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
