"""Cityscapes label tables derived from ``cityscapesscripts.helpers.labels``."""

from __future__ import annotations

import numpy as np
from cityscapesscripts.helpers.labels import labels as _LABELS

__all__ = [
    "IGNORE_INDEX",
    "NUM_CLASSES",
    "CLASS_NAMES",
    "TRAIN_COLORS",
    "THING_TRAIN_IDS",
    "LABEL_TO_TRAIN",
    "LABEL_IS_THING",
]

IGNORE_INDEX = 255
NUM_CLASSES = 19

_train = sorted((l.trainId, l) for l in _LABELS if 0 <= l.trainId < NUM_CLASSES)
CLASS_NAMES = tuple(l.name for _, l in _train)
TRAIN_COLORS = np.array([l.color for _, l in _train], dtype=np.uint8)

# labelId (0..255) -> trainId, 255 for every label not evaluated.
LABEL_TO_TRAIN = np.full(256, IGNORE_INDEX, dtype=np.uint8)
# labelId -> whether instanceIds >= 1000 of this class become instance targets:
# classes with instances that are also among the 19 trained classes. Caravan
# and trailer have instances but trainId 255; keeping them out makes the
# instance mask a subset of the pixels with a thing trainId.
LABEL_IS_THING = np.zeros(256, dtype=bool)
for _l in _LABELS:
    if _l.id >= 0 and 0 <= _l.trainId < NUM_CLASSES:
        LABEL_TO_TRAIN[_l.id] = _l.trainId
        LABEL_IS_THING[_l.id] = _l.hasInstances

THING_TRAIN_IDS = tuple(int(LABEL_TO_TRAIN[i]) for i in np.flatnonzero(LABEL_IS_THING))
