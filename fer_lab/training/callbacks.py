"""Callbacks of the fit: the best epoch's weights, the per-epoch report, and the training
state saved after every epoch so an interrupted fit resumes."""

from __future__ import annotations

import copy
import os
import random
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import lightning.pytorch as L
import numpy as np
import torch
from lightning.pytorch.callbacks import Callback
from torch import Tensor

from fer_lab.training.module import FerModule


class BestEpoch(Callback):
    """After each validation: records the metrics, keeps a copy of the best epoch's
    weights (by validation accuracy; the averaged ones when the module averages) and calls
    ``report`` with the metrics.

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
        self.resumed_epochs = 0  # set by a fit that resumes from a checkpoint

    def on_validation_end(self, trainer: L.Trainer, module: FerModule) -> None:
        metrics = dict(module.epoch_metrics)
        if self.best_epoch is None or \
                metrics["val_accuracy"] > self.history[self.best_epoch]["val_accuracy"]:
            self.best_epoch = len(self.history)
            self.best_state = copy.deepcopy(module.scored_net().state_dict())
        self.history.append(metrics)
        if self.report is not None:
            self.report(metrics)

    def on_fit_end(self, trainer: L.Trainer, module: FerModule) -> None:
        if self.handoff and trainer.is_global_zero:
            torch.save(self.state_dict(), self.handoff)

    def state_dict(self) -> dict[str, Any]:  # the handoff, and a resumable fit's checkpoint
        return {"history": self.history, "best_epoch": self.best_epoch,
                "best_state": self.best_state}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.history = list(state_dict["history"])
        self.best_epoch, self.best_state = state_dict["best_epoch"], state_dict["best_state"]

    def take_handoff(self) -> None:
        self.load_state_dict(torch.load(self.handoff, weights_only=False))


CHECKPOINT_KEY = "fer_lab"


class EpochCheckpoint(Callback):
    """After every validation, saves the whole training state to ``path``: weights,
    optimizer, schedule, Lightning's loops, the other callbacks' records (``BestEpoch``'s
    history and best weights), the module's training time and the random generators'
    states, so a fit resumed from it continues as the uninterrupted one would have.

    The file is replaced atomically (a kill while saving leaves the previous epoch's) and
    carries ``identity``, what the fit trains (parameters and data): ``saved_epochs``
    tells whether a file found on disk belongs to this fit.
    """

    def __init__(self, path: str | os.PathLike, identity: str,
                 settings: Mapping[str, Any] | None = None):
        self.path = Path(path)
        self.identity = identity
        self.settings = dict(settings or {})  # what the fit resolved: a resume keeps it
        self._generators: dict[str, Any] | None = None  # loaded, set when training restarts

    def on_validation_end(self, trainer: L.Trainer, module: FerModule) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        partial = self.path.with_name(self.path.name + ".partial")
        trainer.save_checkpoint(partial)
        os.replace(partial, self.path)

    def on_save_checkpoint(self, trainer: L.Trainer, module: FerModule,
                           checkpoint: dict[str, Any]) -> None:
        checkpoint[CHECKPOINT_KEY] = {
            "identity": self.identity, "settings": self.settings,
            "torch_rng": torch.get_rng_state(),
            "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else None,
            "numpy_rng": np.random.get_state(), "python_rng": random.getstate()}

    def on_load_checkpoint(self, trainer: L.Trainer, module: FerModule,
                           checkpoint: dict[str, Any]) -> None:
        # Not set here: between this restore and the next epoch Lightning closes the saved
        # epoch and makes data loaders, which draw from the generators (the uninterrupted
        # fit draws nothing between its save and that epoch's start).
        self._generators = checkpoint[CHECKPOINT_KEY]

    def on_train_epoch_start(self, trainer: L.Trainer, module: FerModule) -> None:
        saved, self._generators = self._generators, None
        if saved is None:
            return
        torch.set_rng_state(saved["torch_rng"])
        cuda = saved.get("cuda_rng")
        if cuda is not None and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(cuda)
        np.random.set_state(saved["numpy_rng"])
        random.setstate(saved["python_rng"])

    def saved_epochs(self) -> int | None:
        """The epochs completed by the checkpoint at ``path`` when it is this fit's (same
        identity); None when there is none, or another fit's, or an unreadable one."""
        saved = saved_fit(self.path, self.identity)
        return None if saved is None else saved["epochs"]


def saved_fit(path: str | os.PathLike, identity: str) -> dict[str, Any] | None:
    """What the checkpoint at ``path`` holds of the fit ``identity`` names: ``epochs``
    completed and the ``settings`` it resolved (precision, layout, recipe); None when there
    is none, or another fit's, or an unreadable one."""
    path = Path(path)
    if not path.is_file():
        return None
    try:
        saved = torch.load(path, map_location="cpu", weights_only=False)
    except Exception:  # noqa: BLE001 - unreadable: nothing to resume from
        return None
    own = saved.get(CHECKPOINT_KEY, {})
    if own.get("identity") != identity:
        return None
    [record] = [state for key, state in saved["callbacks"].items()
                if key.startswith(BestEpoch.__name__)]
    return {"epochs": len(record["history"]), "settings": own.get("settings") or {}}
