"""Evaluation of a trained network (``fastmtl eval`` on the command line).

- ``evaluate``: the paper's metrics (``fastmtl.engine.metrics``: mIoU, instance mean
  error, inverse-depth mean error) over a dataset; sharded across processes
  under torchrun and all-reduced.
- ``evaluate_official``: predictions written in the Cityscapes formats at the
  ground truth's resolution (semantic labelIds PNGs; instances grouped from the
  offsets, ``fastmtl.engine.postprocess``, as txt + mask PNGs) and scored by the
  official scripts (``fastmtl.engine.cityscapes_eval``). Runs in one process.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Subset

from fastmtl.engine import checkpoint
from fastmtl.engine.config import TrainConfig, model_from_config
from fastmtl.engine.metrics import MetricAccumulator
from fastmtl.engine.objective import autocast

TARGET_KEYS = ("semantic", "instance", "instance_mask", "depth")


@torch.no_grad()
def predict(model, images: torch.Tensor, amp: str = "none") -> dict[str, torch.Tensor]:
    """Model outputs in float32 (eval mode is the caller's business)."""
    with autocast(amp, images.device.type):
        out = model(images)
    return {k: v.float() for k, v in out.items()}


def _subset(dataset, limit, rank=0, world_size=1):
    n = len(dataset) if limit is None else min(limit, len(dataset))
    return Subset(dataset, list(range(n))[rank::world_size])


@torch.no_grad()
def evaluate(model, dataset, *, batch_size: int = 4, device=None, amp: str = "none", limit: int | None = None,
             ctx=None, progress: bool = False) -> dict[str, float]:
    """The paper's metrics of ``model`` on ``dataset`` (first ``limit`` samples).

    Under torchrun (``ctx`` with world_size > 1) each rank takes every
    world_size-th sample (no padding, no duplicates) and the sums are
    all-reduced, so every rank returns the metrics of the whole set.
    """
    device = torch.device(device) if device is not None else next(model.parameters()).device
    rank, world = (ctx.rank, ctx.world_size) if ctx is not None else (0, 1)
    loader = DataLoader(_subset(dataset, limit, rank, world), batch_size=batch_size, shuffle=False)
    acc = MetricAccumulator(device=device)
    was_training = model.training
    model.eval()
    try:
        batches = loader
        if progress and rank == 0:
            from tqdm.auto import tqdm

            batches = tqdm(loader, desc="eval", dynamic_ncols=True)
        for batch in batches:
            preds = predict(model, batch["image"].to(device), amp)
            targets = {k: batch[k].to(device) for k in TARGET_KEYS if k in batch}
            acc.update(preds, targets)
    finally:
        model.train(was_training)
    return acc.reduce_().compute()


def _resize_predictions(preds: dict, size: tuple[int, int]) -> dict:
    """Bilinear resize to ``size``; offsets (pixels) are scaled with the image."""
    h, w = preds[next(iter(preds))].shape[-2:]
    if (h, w) == tuple(size):
        return preds
    out = {k: F.interpolate(v, size=size, mode="bilinear", align_corners=False) for k, v in preds.items()}
    if "instance" in out:
        out["instance"] = out["instance"] * torch.tensor([size[0] / h, size[1] / w], device=out["instance"].device).view(1, 2, 1, 1)
    return out


@torch.no_grad()
def evaluate_official(model, dataset, out_dir, *, device=None, amp: str = "none", limit: int | None = None,
                      grouping: dict | None = None, predict_fn=None) -> dict[str, float]:
    """Write Cityscapes-format predictions under ``out_dir`` and score them with the official scripts.

    ``dataset`` is a ``fastmtl.data.Cityscapes``; predictions are resized to
    the size of its ground-truth files. Semantic PNGs go to
    ``out_dir/semantic``, instance txt + masks to ``out_dir/instance``
    (separate trees: the pixel-level script matches every
    ``<city>_<seq>_<frame>*.png``). ``grouping`` holds keyword arguments of
    ``fastmtl.engine.postprocess.group_instances``. ``predict_fn(sample) -> dict`` may
    replace the model (e.g. an oracle in tests). Returns official mIoU, AP and
    AP50 (those the model's tasks allow).
    """
    from fastmtl.engine import cityscapes_eval as ce
    from fastmtl.data.io import png_header
    from fastmtl.engine.postprocess import group_instances

    out_dir = Path(out_dir)
    device = torch.device(device) if device is not None else (
        next(model.parameters()).device if model is not None else torch.device("cpu"))
    if model is not None:
        was_training = model.training
        model.eval()
    n = len(dataset) if limit is None else min(limit, len(dataset))
    label_gt, instance_gt = [], []
    try:
        for i in range(n):
            sample = dataset[i]
            files = dataset.files[i]
            stem = files["image"].name[: -len("_leftImg8bit.png")]
            gt_dir = dataset.root / "gtFine" / dataset.split / files["image"].parent.name
            w, h = png_header(files["image"])[:2]
            if predict_fn is not None:
                preds = predict_fn(sample)
            else:
                preds = predict(model, sample["image"][None].to(device), amp)
            preds = _resize_predictions({k: v.to(device) for k, v in preds.items()}, (h, w))
            if "semantic" not in preds:
                continue
            probs = preds["semantic"][0].softmax(0)
            sem = probs.argmax(0)
            ce.write_semantic(sem.cpu().numpy(), out_dir / "semantic" / f"{stem}_pred.png")
            label_gt.append(str(gt_dir / f"{stem}_gtFine_labelIds.png"))
            if "instance" in preds:
                inst = group_instances(sem, preds["instance"][0], probabilities=probs, **(grouping or {}))
                classes, scores = inst.as_dicts()
                ce.write_instances(inst.ids.cpu().numpy(), classes, scores, out_dir / "instance", stem)
                instance_gt.append(str(gt_dir / f"{stem}_gtFine_instanceIds.png"))
    finally:
        if model is not None:
            model.train(was_training)
    pixel = instance = None
    if label_gt:
        pixel = ce.evaluate_pixel_level(dataset.root, out_dir / "semantic", out_dir, dataset.split, label_gt)
    if instance_gt:
        instance = ce.evaluate_instance_level(dataset.root, out_dir / "instance", out_dir, dataset.split,
                                              instance_gt)
    return ce.summary(pixel, instance)


def load_model(path, device="cpu"):
    """(model, TrainConfig, (H, W)) from a training checkpoint, in eval mode."""
    state = checkpoint.require(checkpoint.load(path, map_location=device), ("config", "size", "model"), path)
    cfg = TrainConfig.from_dict(state["config"])
    size = tuple(state["size"])
    model = model_from_config(dataclasses.replace(cfg, backbone=None), size)  # weights come from the checkpoint
    model.load_state_dict(state["model"])
    return model.to(device).eval(), cfg, size


def headline(metrics: dict) -> dict:
    """Metrics without the per-class IoUs."""
    return {k: v for k, v in metrics.items() if not k.startswith("iou_")}
