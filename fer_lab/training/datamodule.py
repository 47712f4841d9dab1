"""In-memory arrays as Lightning data: whole batches indexed at once, no per-sample collate."""

from __future__ import annotations

import lightning.pytorch as L
import torch
import numpy as np
from torch.utils.data import (BatchSampler, DataLoader, DistributedSampler, RandomSampler,
                              SequentialSampler, TensorDataset, WeightedRandomSampler)

from fer_lab.training.inputs import EVAL_BATCH, to_images

MIN_STEPS_PER_EPOCH = 8


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
        soft_targets: ``(N, classes)`` probabilities per training image (a teacher's, for
            distillation); training batches are then ``(images, labels, soft targets)``.
    """

    def __init__(self, train: tuple[np.ndarray, np.ndarray], val: tuple[np.ndarray, np.ndarray],
                 batch_size: int, balanced_sampling: bool = False,
                 soft_targets: np.ndarray | None = None):
        super().__init__()
        tensors = [to_images(train[0]), torch.as_tensor(train[1]).long()]
        if soft_targets is not None:
            if len(soft_targets) != len(train[1]):
                raise ValueError(f"{len(soft_targets)} soft targets for {len(train[1])} images")
            tensors.append(torch.as_tensor(np.asarray(soft_targets), dtype=torch.float32))
        self.train_set = TensorDataset(*tensors)
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
            per_class = torch.bincount(labels).float()  # every label drawn has a count
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
