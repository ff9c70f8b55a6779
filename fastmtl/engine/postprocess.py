"""Instances from the predicted offsets at test time.

Every pixel of a "thing" class votes for its instance centre at
``pixel + offset`` (offset channel 0 = dy, rows; 1 = dx, columns). Two ways
to turn the votes into instances, each within one semantic class:

- ``method="fast"`` (default; any device, no loop over pixels): a vote
  histogram per thing class (``scatter_add``), smoothed with a 3x3 binomial
  kernel; centres are its local maxima (max-pool NMS over ``nms_kernel``) of
  at least ``threshold`` smoothed votes; each pixel joins the nearest centre of
  its class, measured from its vote.
- ``method="optics"``: the paper's clustering of the votes with scikit-learn's
  OPTICS (DBSCAN-style extraction at ``eps`` pixels), on the CPU.

Both return an ``Instances``: an id map (0 = no instance, k = instance k) with
the trainId, confidence and centre of each instance.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

THING_TRAIN_IDS = (11, 12, 13, 14, 15, 16, 17, 18)  # person, rider, car, truck, bus, train, motorcycle, bicycle
METHODS = ("fast", "optics")


@dataclass
class Instances:
    """``ids`` (H, W) int64 with 0 = none; per instance k (row k - 1): ``classes`` (trainId),
    ``scores`` and ``centres`` (y, x) in pixels."""

    ids: torch.Tensor
    classes: torch.Tensor
    scores: torch.Tensor
    centres: torch.Tensor

    def __len__(self) -> int:
        return int(self.classes.numel())

    def as_dicts(self):
        """(classes, scores) as {id: trainId} and {id: score} for ``cityscapes_eval.write_instances``."""
        classes = {k + 1: int(c) for k, c in enumerate(self.classes.tolist())}
        scores = {k + 1: float(s) for k, s in enumerate(self.scores.tolist())}
        return classes, scores


def group_instances(semantic: torch.Tensor, offsets: torch.Tensor, *, method: str = "fast",
                    thing_classes=THING_TRAIN_IDS, probabilities: torch.Tensor | None = None,
                    threshold: float = 2.0, nms_kernel: int = 7, min_pixels: int = 1,
                    eps: float = 2.0, min_samples: int = 10, max_points: int = 20000,
                    chunk: int = 65536) -> Instances:
    """Group the thing pixels of one image into instances.

    Args:
        semantic: (H, W) integer trainIds.
        offsets: (2, H, W) predicted (dy, dx) from each pixel to its centre.
        probabilities: optional (C, H, W) softmax; an instance's score is the mean
            probability of its class over its pixels (1.0 without it).
        threshold: fast: least smoothed vote count at a centre.
        nms_kernel: fast: window (pixels, odd) within which only one centre survives.
        min_pixels: instances with fewer pixels are dropped.
        eps, min_samples, max_points: optics: cluster radius in pixels, OPTICS
            ``min_samples``, and the most votes per class clustered (a seeded
            random subset; the other votes join the nearest cluster centre
            within ``eps``).
        chunk: fast: pixels per block of the nearest-centre search (bounds memory).
    """
    if method not in METHODS:
        raise ValueError(f"unknown grouping method {method!r}; choose from {list(METHODS)}")
    if semantic.dim() != 2 or offsets.shape != (2, *semantic.shape):
        raise ValueError(f"expected semantic (H, W) and offsets (2, H, W), got "
                         f"{tuple(semantic.shape)} and {tuple(offsets.shape)}")
    H, W = semantic.shape
    device = semantic.device
    things = torch.as_tensor(thing_classes, device=device, dtype=torch.long)
    sem = semantic.long()
    pix = torch.nonzero(torch.isin(sem, things).reshape(-1)).squeeze(1)  # thing pixel indices
    cls = sem.reshape(-1)[pix]
    py = torch.div(pix, W, rounding_mode="floor")
    vy = py.to(torch.float32) + offsets[0].reshape(-1)[pix].float()
    vx = (pix % W).to(torch.float32) + offsets[1].reshape(-1)[pix].float()

    if method == "fast":
        centres, centre_cls = _vote_centres(cls, vy, vx, things, H, W, threshold, nms_kernel)
        label = _nearest_centre(cls, vy, vx, centres, centre_cls, chunk)
    else:
        label, centres, centre_cls = _optics(cls, vy, vx, things, eps, min_samples, max_points)

    return _finish(label, pix, centres, centre_cls, H, W, probabilities, min_pixels)


def _vote_centres(cls, vy, vx, things, H, W, threshold, nms_kernel):
    """Centres (K, 2) and their classes (K,) from per-class vote histograms."""
    device = vy.device
    T = things.numel()
    lut = torch.full((int(things.max()) + 1,), -1, dtype=torch.long, device=device)
    lut[things] = torch.arange(T, device=device)
    iy, ix = vy.round().long(), vx.round().long()
    inside = (iy >= 0) & (iy < H) & (ix >= 0) & (ix < W)
    flat = (lut[cls] * H + iy) * W + ix
    heat = torch.zeros(T * H * W, device=device, dtype=torch.float32)
    heat.scatter_add_(0, flat[inside], torch.ones_like(flat[inside], dtype=torch.float32))
    heat = heat.view(T, 1, H, W)
    k = torch.tensor([1.0, 2.0, 1.0], device=device)
    heat = F.conv2d(heat, (torch.outer(k, k) / 4).view(1, 1, 3, 3), padding=1)  # sums votes with weights 1/4..1
    pad = nms_kernel // 2
    peak = (heat == F.max_pool2d(heat, nms_kernel, stride=1, padding=pad)) & (heat >= threshold)
    # A plateau of equal maxima gives several candidates: keep the one with the largest index.
    index = torch.arange(H * W, device=device, dtype=torch.float32).view(1, 1, H, W).expand_as(heat)
    cand = torch.where(peak, index, torch.full_like(index, -1.0))
    peak &= cand == F.max_pool2d(cand, nms_kernel, stride=1, padding=pad)
    t, _, y, x = torch.nonzero(peak, as_tuple=True)
    return torch.stack([y, x], 1).float(), things[t]


def _nearest_centre(cls, vy, vx, centres, centre_cls, chunk):
    """Index into centres (or -1) of the nearest same-class centre for each vote."""
    label = torch.full_like(cls, -1)
    if centres.numel() == 0:
        return label
    for s in range(0, cls.numel(), chunk):
        e = s + chunk
        d2 = (vy[s:e, None] - centres[None, :, 0]) ** 2 + (vx[s:e, None] - centres[None, :, 1]) ** 2
        d2 = d2.masked_fill(cls[s:e, None] != centre_cls[None, :], float("inf"))
        best, idx = d2.min(1)
        label[s:e] = torch.where(torch.isfinite(best), idx, -1)
    return label


def _optics(cls, vy, vx, things, eps, min_samples, max_points):
    """OPTICS on the votes of each thing class; labels index the returned centres."""
    import numpy as np
    from sklearn.cluster import OPTICS

    device = cls.device
    votes = torch.stack([vy, vx], 1).cpu().numpy()
    cls_np = cls.cpu().numpy()
    label = np.full(cls_np.shape, -1, dtype=np.int64)
    centres, centre_cls = [], []
    rng = np.random.default_rng(0)
    for c in things.tolist():
        where = np.flatnonzero(cls_np == c)
        if where.size < min_samples:
            continue
        fit = where if where.size <= max_points else np.sort(rng.choice(where, max_points, replace=False))
        found = OPTICS(min_samples=min_samples, max_eps=4 * eps, cluster_method="dbscan",
                       eps=eps).fit_predict(votes[fit])
        ids = np.unique(found[found >= 0])
        if ids.size == 0:
            continue
        means = np.stack([votes[fit][found == i].mean(0) for i in ids])
        if fit is where:
            local = np.searchsorted(ids, found)
            local[found < 0] = -1
        else:  # votes left out of the fit join the nearest cluster centre within eps
            d2 = ((votes[where, None, :] - means[None]) ** 2).sum(-1)
            local = np.where(d2.min(1) <= eps ** 2, d2.argmin(1), -1)
        label[where] = np.where(local >= 0, local + len(centres), -1)
        centres.extend(means.tolist())
        centre_cls.extend([c] * len(ids))
    centres_t = torch.tensor(centres, dtype=torch.float32, device=device).reshape(-1, 2)
    return (torch.from_numpy(label).to(device), centres_t,
            torch.tensor(centre_cls, dtype=torch.long, device=device))


def _finish(label, pix, centres, centre_cls, H, W, probabilities, min_pixels):
    """Compact the labels to ids 1..K (dropping small or empty instances) and score them."""
    device = pix.device
    K = centres.shape[0]
    keep = label >= 0
    sizes = torch.bincount(label[keep], minlength=K) if K else torch.zeros(0, dtype=torch.long, device=device)
    kept = sizes >= max(min_pixels, 1)
    new_id = torch.cumsum(kept.long(), 0) * kept.long()  # 1..K' for kept centres, 0 otherwise
    ids = torch.zeros(H * W, dtype=torch.long, device=device)
    if K:
        ids[pix[keep]] = new_id[label[keep]]
    classes, centres = centre_cls[kept], centres[kept]
    n = int(kept.sum())
    if probabilities is None or n == 0:
        scores = torch.ones(n, device=device)
    else:
        flat = ids > 0
        p = probabilities.reshape(probabilities.shape[0], -1)
        cls_of_pixel = classes[ids[flat] - 1]
        prob = p[:, flat].gather(0, cls_of_pixel[None]).squeeze(0).float()
        total = torch.zeros(n, device=device).index_add_(0, ids[flat] - 1, prob)
        scores = total / torch.bincount(ids[flat] - 1, minlength=n).clamp_min(1)
    return Instances(ids.view(H, W), classes, scores, centres)


def colourise(ids: torch.Tensor, seed: int = 0):
    """(H, W) instance ids -> (H, W, 3) uint8 numpy image, black for 0, fixed colour per id."""
    import numpy as np

    ids = ids.cpu().numpy()
    rng = np.random.default_rng(seed)
    palette = rng.integers(60, 256, size=(int(ids.max()) + 1, 3), dtype=np.uint8)
    palette[0] = 0
    return palette[ids]
