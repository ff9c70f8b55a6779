"""Data order and augmentation that a resumed run reproduces exactly."""
from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import Dataset, DistributedSampler

class SeededAugmentation(Dataset):
    """Samples of ``base`` augmented with a generator seeded by (seed, epoch, index).

    Set ``epoch`` before creating the epoch's DataLoader: workers copy it.
    Augmentation is then a pure function of the sample and the epoch, so the
    data a step sees does not depend on worker count or on where a run resumed.
    """

    def __init__(self, base: Dataset, augment: str, seed: int, crop_size=None):
        self.base, self.augment, self.seed, self.crop_size, self.epoch = base, augment, seed, crop_size, 0

    def __len__(self):
        return len(self.base)

    def __getitem__(self, index):
        from fastmtl.data import transforms as T

        sample = self.base[index]
        if self.augment == "none":
            return sample
        state = np.random.SeedSequence([self.seed, self.epoch, index]).generate_state(2, np.uint64)
        g = torch.Generator().manual_seed(int(state[0] >> np.uint64(1)))
        if self.augment == "flip":
            return T.RandomHorizontalFlip(generator=g)(sample)
        size = self.crop_size or tuple(sample["image"].shape[-2:])
        return T.train_transform(crop_size=size, scale=(0.5, 2.0), flip=True, generator=g)(sample)


class ResumableSampler(DistributedSampler):
    """DistributedSampler that can start an epoch part-way (after ``start`` samples of this rank)."""

    start = 0

    def __iter__(self):
        return iter(list(super().__iter__())[self.start:])

    def __len__(self):
        return super().__len__() - self.start
