"""Data: the Cityscapes loader, target encodings, augmentation, a synthetic city."""

from . import transforms
from .cityscapes import MEAN, SIZES, STD, Cityscapes, denormalize_image, normalize_image, resolve_size
from .labels import CLASS_NAMES, IGNORE_INDEX, NUM_CLASSES, THING_TRAIN_IDS, TRAIN_COLORS
from .synth import ensure_synthetic_city, generate

__all__ = [
    "CLASS_NAMES",
    "IGNORE_INDEX",
    "MEAN",
    "NUM_CLASSES",
    "SIZES",
    "STD",
    "THING_TRAIN_IDS",
    "TRAIN_COLORS",
    "Cityscapes",
    "denormalize_image",
    "ensure_synthetic_city",
    "generate",
    "normalize_image",
    "resolve_size",
    "transforms",
]
