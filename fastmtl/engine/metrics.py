"""The paper's metrics (Kendall, Gal and Cipolla, CVPR 2018, Table 1), accumulated over a dataset.

- Segmentation: IoU per class from a confusion matrix accumulated with
  ``torch.bincount`` over pixels whose target is not ``ignore_index``; mIoU is
  the mean over the classes with a non-empty union (target or prediction), as
  the Cityscapes evaluation does (a class absent from both counts as NaN and
  is skipped).
- Instance: mean error in pixels over instance pixels (``instance_mask``): the
  Euclidean (L2) length of the error of the offset vector, |o - g|_2. The L1
  version (|dy error| + |dx error|, what the loss minimises) is reported too as
  ``instance_error_l1``.
- Depth: inverse-depth (disparity) mean absolute error in pixels over valid
  pixels (target finite and > 0).

- Delta-m (``delta_m``): the multi-task summary the field reports, the mean
  relative change of each metric against single-task models, sign-corrected
  so that positive means better.

Sums are kept in float64 and counts in int64 on the accumulating device;
``reduce_`` all-reduces them across processes so every rank gets the metrics of
the whole dataset.
"""
from __future__ import annotations

import math
from typing import Mapping

import torch

NUM_CLASSES = 19
# The paper's three headline metrics and whether higher is better (for delta_m).
HIGHER_IS_BETTER = {"miou": True, "instance_error": False, "depth_error": False}


class MetricAccumulator:
    """Running sums for the three tasks; ``update`` per batch, ``compute`` at the end."""

    def __init__(self, num_classes: int = NUM_CLASSES, ignore_index: int = 255, device="cpu"):
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.confusion = torch.zeros(num_classes, num_classes, dtype=torch.int64, device=device)
        # instance L2 sum, instance L1 sum, depth abs sum
        self.sums = torch.zeros(3, dtype=torch.float64, device=device)
        # instance pixels, depth pixels
        self.counts = torch.zeros(2, dtype=torch.int64, device=device)
        self.seen = set()

    @torch.no_grad()
    def update(self, predictions: Mapping[str, torch.Tensor], targets: Mapping[str, torch.Tensor]) -> None:
        """Add a batch. ``predictions["semantic"]`` may be logits (B,C,H,W) or labels (B,H,W)."""
        if "semantic" in predictions:
            self.seen.add("semantic")
            self.confusion += confusion_matrix(predictions["semantic"], targets["semantic"],
                                               self.num_classes, self.ignore_index).to(self.confusion.device)
        if "instance" in predictions:
            self.seen.add("instance")
            mask = targets["instance_mask"].bool().unsqueeze(1)
            err = (predictions["instance"].double() - targets["instance"].double()) * mask
            self.sums[0] += err.square().sum(1).sqrt().sum().to(self.sums.device)
            self.sums[1] += err.abs().sum().to(self.sums.device)
            self.counts[0] += mask.sum().to(self.counts.device)
        if "depth" in predictions:
            self.seen.add("depth")
            d = predictions["depth"].double()
            z = targets["depth"].reshape(d.shape).double()
            valid = torch.isfinite(z) & (z > 0)
            self.sums[2] += torch.where(valid, d - torch.where(valid, z, 0.0), 0.0).abs().sum().to(self.sums.device)
            self.counts[1] += valid.sum().to(self.counts.device)

    def reduce_(self) -> "MetricAccumulator":
        """Sum the accumulators over all processes (no-op without torch.distributed)."""
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            for t in (self.confusion, self.sums, self.counts):
                dist.all_reduce(t)
        return self

    def compute(self) -> dict[str, float]:
        out: dict[str, float] = {}
        if "semantic" in self.seen:
            iou = iou_from_confusion(self.confusion)
            out["miou"] = nanmean(iou)
            out["pixel_accuracy"] = _ratio(float(self.confusion.diagonal().sum()), float(self.confusion.sum()))
            out.update({f"iou_{c}": v for c, v in enumerate(iou)})
        if "instance" in self.seen:
            n = int(self.counts[0])
            out["instance_error"] = _ratio(float(self.sums[0]), n)
            out["instance_error_l1"] = _ratio(float(self.sums[1]), n)
        if "depth" in self.seen:
            out["depth_error"] = _ratio(float(self.sums[2]), int(self.counts[1]))
        return out


def confusion_matrix(pred: torch.Tensor, target: torch.Tensor, num_classes: int = NUM_CLASSES,
                     ignore_index: int = 255) -> torch.Tensor:
    """(C, C) int64 counts, rows = target class, columns = predicted class.

    ``pred`` is (B,C,H,W) logits (argmax over C) or (B,H,W) labels. Pixels whose
    target is ``ignore_index`` or outside [0, C) are skipped; predicted labels
    outside [0, C) raise.
    """
    if pred.dim() == target.dim() + 1:
        pred = pred.argmax(1)
    if pred.shape != target.shape:
        raise ValueError(f"prediction shape {tuple(pred.shape)} != target shape {tuple(target.shape)}")
    t = target.reshape(-1).long()
    p = pred.reshape(-1).long()
    valid = (t != ignore_index) & (t >= 0) & (t < num_classes)
    t, p = t[valid], p[valid]
    if p.numel() and (int(p.min()) < 0 or int(p.max()) >= num_classes):
        raise ValueError(f"predicted labels must lie in [0, {num_classes})")
    return torch.bincount(t * num_classes + p, minlength=num_classes * num_classes).reshape(num_classes, num_classes)


def iou_from_confusion(confusion: torch.Tensor) -> list[float]:
    """IoU per class = TP / (TP + FP + FN); NaN for a class with an empty union."""
    c = confusion.double()
    tp = c.diagonal()
    union = c.sum(0) + c.sum(1) - tp
    return [float(a / b) if b > 0 else math.nan for a, b in zip(tp.tolist(), union.tolist())]


def nanmean(values) -> float:
    vals = [v for v in values if not math.isnan(v)]
    return sum(vals) / len(vals) if vals else math.nan


def _ratio(a: float, b: float) -> float:
    return a / b if b else math.nan


def delta_m(metrics: Mapping[str, float], reference: Mapping[str, float],
            higher_is_better: Mapping[str, bool] = HIGHER_IS_BETTER) -> float:
    """Delta-m (Maninis et al., CVPR 2019; Vandenhende et al., TPAMI 2021), as a fraction::

        delta_m = (1 / T) sum_k (-1)^l_k (M_k - R_k) / R_k,   l_k = 1 where lower is better

    over the T metrics of ``higher_is_better`` that both ``metrics`` and the
    single-task ``reference`` hold (finite, reference non-zero). +0.05 means
    5% better than the single-task models on average.
    """
    terms = []
    for key, higher in higher_is_better.items():
        m, r = metrics.get(key), reference.get(key)
        if m is None or r is None or not (math.isfinite(m) and math.isfinite(r)) or r == 0:
            continue
        change = (m - r) / r
        terms.append(change if higher else -change)
    if not terms:
        raise ValueError(f"delta_m: no metric of {sorted(higher_is_better)} in both the metrics "
                         f"({sorted(metrics)}) and the reference ({sorted(reference)})")
    return sum(terms) / len(terms)
