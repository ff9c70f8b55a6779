"""The loss contract in plain PyTorch.

This is the CPU path and the oracle every kernel is tested against. Each task
loss returns ``(loss, normaliser)``: the mean over valid pixels and the
normaliser it divided by (summed class weights for the semantic task, pixel
counts for the others). A task whose normaliser is 0 has loss 0 and zero
gradients, never NaN.

Half-precision inputs are computed in float32; float64 stays float64.
"""
from __future__ import annotations

from typing import Mapping

import torch
import torch.nn.functional as F


def accumulation_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


def _mean(total: torch.Tensor, normaliser: torch.Tensor) -> torch.Tensor:
    # Dividing by a placeholder 1 keeps the empty case at 0/1 = 0 with finite gradients.
    return total / torch.where(normaliser > 0, normaliser, torch.ones_like(normaliser))


def semantic_loss(x, t, *, ignore_index: int = 255, class_weight=None):
    """sum_valid w[t] CE(x, t) / sum_valid w[t], as F.cross_entropy(reduction="mean").

    Labels outside [0, C) count as ignored here; callers check them first.
    """
    acc = accumulation_dtype(x.dtype)
    num_classes = x.shape[1]
    t = t.long()
    valid = (t != ignore_index) & (t >= 0) & (t < num_classes)
    label = torch.where(valid, t, torch.zeros_like(t))
    w = None if class_weight is None else class_weight.to(acc)
    per_pixel = F.cross_entropy(x.to(acc), label, weight=w, reduction="none")
    per_pixel = torch.where(valid, per_pixel, torch.zeros_like(per_pixel))
    pixel_weight = valid.to(acc) if w is None else torch.where(valid, w[label], 0.0)
    normaliser = pixel_weight.sum()
    return _mean(per_pixel.sum(), normaliser), normaliser


def instance_loss(o, g, m):
    """sum_{p in m} |o_p - g_p|_1 / |m| over the two offset channels."""
    acc = accumulation_dtype(o.dtype)
    mask = m.unsqueeze(1)
    diff = torch.where(mask, o.to(acc) - g.to(acc), 0.0)
    normaliser = m.sum().to(acc)
    return _mean(diff.abs().sum(), normaliser), normaliser


def depth_loss(d, z):
    """sum_valid |d - z| / N, valid where z is finite and > 0."""
    acc = accumulation_dtype(d.dtype)
    z = z.reshape(d.shape).to(acc)
    valid = torch.isfinite(z) & (z > 0)
    diff = torch.where(valid, d.to(acc) - torch.where(valid, z, 0.0), 0.0)
    normaliser = valid.sum().to(acc)
    return _mean(diff.abs().sum(), normaliser), normaliser


def task_losses(predictions: Mapping, targets: Mapping, tasks, *, ignore_index: int = 255,
                class_weight=None):
    """Per-task losses and normalisers for the (validated) tasks present."""
    losses, normalisers = {}, {}
    for name in tasks:
        if name == "semantic":
            loss, n = semantic_loss(predictions[name], targets["semantic"],
                                    ignore_index=ignore_index, class_weight=class_weight)
        elif name == "instance":
            loss, n = instance_loss(predictions[name], targets["instance"], targets["instance_mask"])
        elif name == "depth":
            loss, n = depth_loss(predictions[name], targets["depth"])
        else:  # pragma: no cover - tasks are validated against fastmtl.tasks.TASKS
            raise ValueError(f"no reference loss for task {name!r}")
        losses[name], normalisers[name] = loss, n
    return losses, normalisers
