"""What a data set allows without an image, and what the head resolution allows with a perfect one.

- ``prior_baselines``: predictions that never look at the image, fitted on
  one split and scored on another: the per-position majority class, the
  per-position median disparity (over the training images with a
  measurement there) and a zero offset. A network that does not beat them
  has learned the layout of the scenes, not the scenes.
- ``head_ceiling``: the ground truth itself, averaged over the cells of the
  heads' grid (``ceil(H / stride) x ceil(W / stride)``; one-hot classes,
  offsets over instance pixels, disparity over pixels with a measurement),
  then upsampled bilinearly to the image as the network's outputs are. It
  shows how much the coarse heads cost; it is not a strict bound (logits
  with large margins can place a boundary inside a cell).

Both return the metrics of ``fastmtl.engine.metrics`` (mIoU, instance and
depth mean errors) for the tasks the data sets load.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from fastmtl.engine.metrics import NUM_CLASSES, MetricAccumulator

_KEYS = ("semantic", "instance", "instance_mask", "depth")


def _batches(dataset, batch_size=16):
    collate = lambda samples: {k: torch.stack([s[k] for s in samples]) for k in _KEYS if k in samples[0]}  # noqa: E731
    return DataLoader(dataset, batch_size=batch_size, shuffle=False, collate_fn=collate)


@torch.no_grad()
def fit_priors(train, num_classes: int = NUM_CLASSES, ignore_index: int = 255) -> dict[str, torch.Tensor]:
    """Per-position majority class (H, W) and median disparity (1, H, W) over ``train``."""
    counts, disparities = None, []
    for batch in _batches(train):
        if "semantic" in batch:
            t = batch["semantic"]
            valid = t != ignore_index
            onehot = F.one_hot(torch.where(valid, t, 0), num_classes).permute(0, 3, 1, 2) * valid[:, None]
            counts = onehot.sum(0) if counts is None else counts + onehot.sum(0)
        if "depth" in batch:
            disparities.append(batch["depth"])
    priors = {}
    if counts is not None:
        priors["semantic"] = counts.argmax(0)
    if disparities:
        priors["depth"] = _median_of_valid(torch.cat(disparities))
    return priors


def _median_of_valid(d: torch.Tensor) -> torch.Tensor:
    """Median over dim 0 of the values that are finite and > 0 (mean of the two middle ones for an
    even count); 0 where there is none."""
    valid = torch.isfinite(d) & (d > 0)
    ordered = torch.where(valid, d, math.inf).sort(0).values
    n = valid.sum(0, keepdim=True)
    lo = ordered.gather(0, ((n - 1) // 2).clamp_min(0))
    hi = ordered.gather(0, (n // 2).clamp_max(d.shape[0] - 1))
    return torch.where(n > 0, (lo + hi) / 2, torch.zeros_like(lo))[0]


@torch.no_grad()
def prior_baselines(train, evaluate_on, num_classes: int = NUM_CLASSES) -> dict[str, float]:
    """Metrics on ``evaluate_on`` of the priors fitted on ``train`` (zero offsets for instances)."""
    priors = fit_priors(train, num_classes)
    acc = MetricAccumulator(num_classes)
    for batch in _batches(evaluate_on):
        b = next(iter(batch.values())).shape[0]
        preds = {}
        if "semantic" in batch:
            preds["semantic"] = priors["semantic"].expand(b, -1, -1)
        if "instance" in batch:
            preds["instance"] = torch.zeros_like(batch["instance"])
        if "depth" in batch:
            preds["depth"] = priors["depth"].expand(b, -1, -1, -1)
        acc.update(preds, batch)
    return acc.compute()


def _pooled(x: torch.Tensor, weight: torch.Tensor, head: tuple[int, int]) -> torch.Tensor:
    """Weighted mean of x over each head cell, upsampled back bilinearly (as the network's heads)."""
    num = F.adaptive_avg_pool2d(x * weight, head)
    den = F.adaptive_avg_pool2d(weight, head)
    cell = torch.where(den > 0, num / den.clamp_min(1e-12), torch.zeros_like(num))
    return F.interpolate(cell, size=x.shape[-2:], mode="bilinear", align_corners=False)


@torch.no_grad()
def head_ceiling(dataset, stride: int = 8, num_classes: int = NUM_CLASSES, ignore_index: int = 255) -> dict[str, float]:
    """Metrics of the ground truth averaged over the head cells and upsampled back."""
    acc = MetricAccumulator(num_classes)
    for batch in _batches(dataset):
        h, w = next(v for k, v in batch.items() if k != "instance_mask").shape[-2:]
        head = (math.ceil(h / stride), math.ceil(w / stride))
        preds = {}
        if "semantic" in batch:
            t = batch["semantic"]
            valid = (t != ignore_index)[:, None].float()
            onehot = F.one_hot(torch.where(t != ignore_index, t, 0), num_classes).permute(0, 3, 1, 2).float()
            preds["semantic"] = _pooled(onehot, valid, head)
        if "instance" in batch:
            preds["instance"] = _pooled(batch["instance"], batch["instance_mask"][:, None].float(), head)
        if "depth" in batch:
            d = batch["depth"]
            valid = (torch.isfinite(d) & (d > 0)).float()
            preds["depth"] = _pooled(torch.nan_to_num(d), valid, head)
        acc.update(preds, batch)
    return acc.compute()
