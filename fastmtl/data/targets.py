"""Cityscapes encodings -> training targets, vectorised with numpy.

Conventions: offsets are centroid minus pixel coordinate, channel 0 = dy
(rows), channel 1 = dx (columns), in pixels, with pixel (i, j) at
coordinate (i, j). Disparity is in pixels; 0 means no measurement.
"""

from __future__ import annotations

import numpy as np

from .labels import LABEL_IS_THING, LABEL_TO_TRAIN

__all__ = ["semantic_target", "instance_target", "decode_disparity", "encode_disparity", "metric_depth"]


def semantic_target(label_ids: np.ndarray) -> np.ndarray:
    """labelIds (uint8) -> trainIds (uint8), 255 where not evaluated."""
    return LABEL_TO_TRAIN[label_ids]


def instance_target(instance_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """instanceIds (uint16, H x W) -> offsets (2, H, W) float32 and mask (H, W) bool.

    A value v >= 1000 is instance v % 1000 of labelId v // 1000; it is a
    target when that class is a thing class (``LABEL_IS_THING``). Values below
    1000 (stuff, or a crowd region of a thing class) get mask False, offset 0.
    Centroids are means of pixel coordinates, from one ``bincount`` per axis
    over the instance pixels (linear time, no sort).
    """
    ids = np.asarray(instance_ids)
    if ids.dtype != np.uint16:
        raise TypeError(f"instanceIds must be uint16, got {ids.dtype}")
    mask = (ids >= 1000) & LABEL_IS_THING[ids // 1000]
    ys, xs = np.nonzero(mask)
    inst = ids[ys, xs].astype(np.intp)
    count = np.maximum(np.bincount(inst, minlength=1 << 16), 1)
    cy = np.bincount(inst, weights=ys, minlength=1 << 16) / count
    cx = np.bincount(inst, weights=xs, minlength=1 << 16) / count
    offsets = np.zeros((2, *ids.shape), np.float32)
    offsets[0, ys, xs] = cy[inst] - ys
    offsets[1, ys, xs] = cx[inst] - xs
    return offsets, mask


def decode_disparity(png: np.ndarray) -> np.ndarray:
    """Cityscapes disparity PNG (uint16 p) -> disparity in pixels: (p - 1) / 256, 0 where p == 0."""
    p = np.asarray(png).astype(np.float32)
    return np.where(p > 0, (p - 1.0) / 256.0, 0.0).astype(np.float32)


def encode_disparity(disparity: np.ndarray) -> np.ndarray:
    """Inverse of :func:`decode_disparity`: round(d * 256) + 1 where d > 0, else 0."""
    d = np.asarray(disparity, dtype=np.float64)
    valid = np.isfinite(d) & (d > 0)
    p = np.where(valid, np.rint(np.clip(d, 0, 255.99) * 256.0) + 1.0, 0.0)
    return p.astype(np.uint16)


def metric_depth(disparity: np.ndarray, fx: float, baseline: float) -> np.ndarray:
    """Depth in metres, baseline * fx / disparity, 0 where the disparity is 0."""
    d = np.asarray(disparity, dtype=np.float32)
    with np.errstate(divide="ignore"):
        z = np.where(d > 0, np.float32(baseline * fx) / d, 0.0)
    return z.astype(np.float32)
