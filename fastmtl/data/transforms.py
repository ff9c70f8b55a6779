"""Geometric augmentation of a whole sample, keeping the targets consistent.

A sample is the dict a dataset returns: "image" (3, H, W) float, "semantic"
(H, W) int64, "instance" (2, H, W) offsets (dy, dx) in pixels,
"instance_mask" (H, W) bool, "depth" (1, H, W), optionally "fx" (focal length
in pixels); other keys pass through. Any target may be absent.

- flipping left-right negates dx (the centroid flips with the pixel);
- resizing by (sy, sx) multiplies dy by sy and dx by sx, and disparity (a
  horizontal distance in pixels) and fx by sx; metric depth is unchanged;
- cropping keeps each pixel's offset, so it still points at the centroid of
  the whole instance, which may lie outside the crop.
Label maps are resampled nearest (pixel centres: source index
floor((i + 0.5) * n_in / n_out), torch's "nearest-exact"), images bilinearly.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

__all__ = [
    "nearest_index",
    "hflip",
    "resize",
    "crop",
    "Compose",
    "RandomHorizontalFlip",
    "RandomScale",
    "RandomCrop",
    "train_transform",
]

# Value written where a crop extends past the image.
FILL = {"image": 0.0, "semantic": 255, "instance": 0.0, "instance_mask": False, "depth": 0.0}


def nearest_index(n_in: int, n_out: int) -> np.ndarray:
    """Source index of each of ``n_out`` output pixels, pixel-centre aligned."""
    idx = np.floor((np.arange(n_out) + 0.5) * (n_in / n_out)).astype(np.int64)
    return np.minimum(idx, n_in - 1)


def _size(sample) -> tuple[int, int]:
    for key in FILL:
        if key in sample:
            return tuple(sample[key].shape[-2:])
    raise ValueError(f"sample has none of the spatial keys {tuple(FILL)}")


def hflip(sample: dict) -> dict:
    out = dict(sample)
    for key in FILL:
        if key in out:
            out[key] = out[key].flip(-1)
    if "instance" in out:
        out["instance"] = out["instance"] * torch.tensor([1.0, -1.0]).view(2, 1, 1)
    return out


def resize(sample: dict, size: Sequence[int], disparity: bool = True) -> dict:
    """Resize every spatial entry to ``size`` (H, W); ``disparity=False`` for metric depth."""
    h, w = _size(sample)
    nh, nw = int(size[0]), int(size[1])
    if (nh, nw) == (h, w):
        return dict(sample)
    sy, sx = nh / h, nw / w
    rows = torch.from_numpy(nearest_index(h, nh))
    cols = torch.from_numpy(nearest_index(w, nw))
    out = dict(sample)
    for key in ("semantic", "instance", "instance_mask", "depth"):
        if key in out:
            out[key] = out[key][..., rows[:, None], cols[None, :]]
    if "image" in out:
        out["image"] = F.interpolate(
            out["image"][None], size=(nh, nw), mode="bilinear", align_corners=False, antialias=nh < h or nw < w
        )[0]
    if "instance" in out:
        out["instance"] = out["instance"] * torch.tensor([sy, sx], dtype=out["instance"].dtype).view(2, 1, 1)
    if "depth" in out and disparity:
        out["depth"] = out["depth"] * sx
    if "fx" in out:
        out["fx"] = out["fx"] * sx
    return out


def crop(sample: dict, top: int, left: int, height: int, width: int) -> dict:
    """Window [top, top + height) x [left, left + width); outside the image is FILL."""
    h, w = _size(sample)
    out = dict(sample)
    for key, fill in FILL.items():
        if key not in out:
            continue
        src = out[key]
        dst = torch.full((*src.shape[:-2], height, width), fill, dtype=src.dtype)
        y0, y1 = max(top, 0), min(top + height, h)
        x0, x1 = max(left, 0), min(left + width, w)
        if y1 > y0 and x1 > x0:
            dst[..., y0 - top : y1 - top, x0 - left : x1 - left] = src[..., y0:y1, x0:x1]
        out[key] = dst
    return out


class Compose:
    def __init__(self, transforms: Sequence[Callable[[dict], dict]]):
        self.transforms = list(transforms)

    def __call__(self, sample: dict) -> dict:
        for t in self.transforms:
            sample = t(sample)
        return sample


class RandomHorizontalFlip:
    def __init__(self, p: float = 0.5, generator: torch.Generator | None = None):
        self.p, self.generator = p, generator

    def __call__(self, sample: dict) -> dict:
        return hflip(sample) if torch.rand((), generator=self.generator) < self.p else sample


class RandomScale:
    """Resize by a factor drawn uniformly from [min_scale, max_scale]."""

    def __init__(self, min_scale=0.5, max_scale=2.0, disparity: bool = True, generator: torch.Generator | None = None):
        self.min_scale, self.max_scale = min_scale, max_scale
        self.disparity, self.generator = disparity, generator

    def __call__(self, sample: dict) -> dict:
        s = self.min_scale + (self.max_scale - self.min_scale) * float(torch.rand((), generator=self.generator))
        h, w = _size(sample)
        return resize(sample, (max(1, round(h * s)), max(1, round(w * s))), self.disparity)


class RandomCrop:
    """Crop ``size`` (H, W) at a uniform position, padding with FILL if the image is smaller."""

    def __init__(self, size: Sequence[int], generator: torch.Generator | None = None):
        self.size, self.generator = (int(size[0]), int(size[1])), generator

    def __call__(self, sample: dict) -> dict:
        h, w = _size(sample)
        ch, cw = self.size
        top = int(torch.randint(0, max(h - ch, 0) + 1, (), generator=self.generator))
        left = int(torch.randint(0, max(w - cw, 0) + 1, (), generator=self.generator))
        return crop(sample, top, left, ch, cw)


def train_transform(
    crop_size: Sequence[int] | None = None,
    scale: tuple[float, float] | None = (0.5, 2.0),
    flip: bool = True,
    disparity: bool = True,
    generator: torch.Generator | None = None,
) -> Compose:
    """The usual training augmentation: random scale, random crop, random flip."""
    steps = []
    if scale is not None:
        steps.append(RandomScale(*scale, disparity=disparity, generator=generator))
    if crop_size is not None:
        steps.append(RandomCrop(crop_size, generator=generator))
    if flip:
        steps.append(RandomHorizontalFlip(generator=generator))
    return Compose(steps)
