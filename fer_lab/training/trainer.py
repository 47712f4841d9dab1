"""``fit``: a Lightning ``Trainer`` run of a ``FerModule`` on an ``ArrayDataModule``."""

from __future__ import annotations

import logging
import os
import tempfile
import warnings
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import lightning.pytorch as L
from lightning.pytorch.callbacks import Callback, EarlyStopping, TQDMProgressBar

from fer_lab.training.callbacks import BestEpoch, EpochCheckpoint
from fer_lab.training.datamodule import ArrayDataModule
from fer_lab.training.module import HOST_SYNC_EVERY, FerModule

log = logging.getLogger(__name__)

PRECISIONS = {"fp32": "32-true", "bf16": "bf16-mixed"}


STRATEGIES = ("auto", "ddp")


def fit(module: FerModule, data: ArrayDataModule, *, epochs: int, precision: str = "fp32",
        patience: int | None = None, devices: int = 1, strategy: str = "auto",
        report: Callable[[Mapping[str, float]], None] | None = None,
        checkpoint: str | os.PathLike | None = None, identity: str = "",
        settings: Mapping[str, Any] | None = None) -> BestEpoch:
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
            pruning waits for its end. The module's ``max_minutes`` holds too: rank
            zero's clock sets every rank's schedule and stop.
        report: called with the epoch's metrics after each validation.
        checkpoint: a file to save the training state to after every epoch
            (``EpochCheckpoint``); when it holds the state of an interrupted fit with the
            same ``identity``, training resumes from it. Left for the caller to remove
            once it has what it needs of the fit (a kill before that resumes the fit's
            end, not a new fit).
            Not with DDP.
        identity: what this fit trains (a digest of its parameters and data): a
            checkpoint with another identity is not resumed from but overwritten.
        settings: what the fit resolved on this machine (precision, layout, recipe),
            saved with the checkpoint for a resumed fit to keep (``saved_fit``).

    Returns:
        The callback holding the per-epoch history and the best epoch; its
        ``resumed_epochs`` are the epochs the checkpoint had done (0 for a fresh fit).
    """
    if precision not in PRECISIONS:
        raise ValueError(f"mixed_precision must be one of {list(PRECISIONS)}, not {precision!r}")
    if strategy not in STRATEGIES:
        raise ValueError(f"strategy must be one of {STRATEGIES}, not {strategy!r}")
    distributed = devices > 1 or strategy == "ddp"
    if distributed and checkpoint is not None:
        raise ValueError("a resumable fit (checkpoint) trains in one process, not with DDP")
    with tempfile.TemporaryDirectory() as tmp:
        best = BestEpoch(None if distributed else report,
                         str(Path(tmp) / "best.pt") if distributed else None)
        # The bar redraws as often as the loss is read, not on every step.
        callbacks: list[Callback] = [best, TQDMProgressBar(refresh_rate=HOST_SYNC_EVERY)]
        resume_from = None
        if patience is not None:  # before the saver: it saves the count with this epoch's
            callbacks.append(EarlyStopping("val_accuracy", patience=patience, mode="max",
                                           check_on_train_epoch_end=False))
        if checkpoint is not None:
            saver = EpochCheckpoint(checkpoint, identity, settings)
            callbacks.append(saver)  # after BestEpoch: it saves the epoch just recorded
            best.resumed_epochs = saver.saved_epochs() or 0
            if best.resumed_epochs:
                resume_from = str(saver.path)
                log.warning("resuming the fit from %s: %d epoch(s) done", saver.path,
                            best.resumed_epochs)
            elif saver.path.exists():
                log.warning("%s holds another fit's state: starting afresh", saver.path)
        strategy_used = "auto"
        if distributed:
            from lightning.pytorch.strategies import DDPStrategy

            strategy_used = DDPStrategy(start_method="spawn")
        trainer = L.Trainer(
            accelerator="auto", devices=devices, strategy=strategy_used,
            precision=PRECISIONS[precision], max_epochs=epochs, logger=False,
            enable_checkpointing=False, enable_model_summary=False, enable_progress_bar=True,
            num_sanity_val_steps=0, callbacks=callbacks, use_distributed_sampler=False)
        with warnings.catch_warnings():
            # Batches are tensor slices of in-memory arrays: loader workers would only add IPC.
            warnings.filterwarnings("ignore", ".*does not have many workers.*")
            # Our own file (it holds the random generators' states, not only tensors).
            trainer.fit(module, datamodule=data, ckpt_path=resume_from, weights_only=False)
        if distributed:
            best.take_handoff()
            for metrics in best.history if report is not None else ():
                report(metrics)
    if best.best_state is not None:
        module.net.load_state_dict(best.best_state)
    return best
