"""Callbacks of the fit: the best epoch's weights and the per-epoch report."""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping

import lightning.pytorch as L
import torch
from lightning.pytorch.callbacks import Callback
from torch import Tensor

from fer_lab.training.module import FerModule


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
