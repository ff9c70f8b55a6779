"""The functional entry point: ``fastmtl.multitask_loss``."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping

import torch
import torch.nn.functional as F

from fastmtl import reference
from fastmtl.validation import (BACKENDS, check_label_range, target_size, validate_inputs,
                                validate_log_vars, validate_semantic_options)
from fastmtl.weighting import combine, uncertainty_factors, weights_tensor


@dataclass
class LossOutput:
    """``total`` (0-d tensor) and ``losses[task]``, each task's L_k before weighting."""

    total: torch.Tensor
    losses: dict[str, torch.Tensor] = field(default_factory=dict)

    def detached(self) -> dict[str, float]:
        """Plain floats for logging (synchronises with the device)."""
        out = {"total": float(self.total.detach())}
        out.update({k: float(v.detach()) for k, v in self.losses.items()})
        return out


def resolve_backend(backend: str, device: torch.device) -> str:
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; choose from {list(BACKENDS)}")
    if backend != "auto":
        return backend
    if device.type == "cuda":
        try:
            import fastmtl.ops  # noqa: F401  (needs triton)
        except ImportError:
            return "reference"
        return "triton"
    return "reference"


def _upsampled(predictions, size, align_corners: bool) -> dict:
    """The reference for ``upsample="bilinear"``: every prediction interpolated to ``size``."""
    return {name: F.interpolate(p, size=size, mode="bilinear", align_corners=align_corners)
            for name, p in predictions.items()}


def multitask_loss(predictions: Mapping[str, torch.Tensor], targets: Mapping[str, torch.Tensor],
                   log_vars: torch.Tensor | None = None, weights=None, *, ignore_index: int = 255,
                   class_weight: torch.Tensor | None = None, backend: str = "auto",
                   uncertainty: str = "kendall", check_labels: bool = True,
                   upsample: str | None = None, align_corners: bool = False) -> LossOutput:
    """Semantic cross-entropy, instance-offset L1 and depth L1, weighted into one total.

    Args:
        predictions: any non-empty subset of ``semantic`` (B,C,H,W) logits,
            ``instance`` (B,2,H,W) offsets (dy, dx) and ``depth`` (B,1,H,W).
        targets: ``semantic`` (B,H,W) int64/int32/uint8 labels; ``instance``
            (B,2,H,W) centroid minus pixel (dy, dx) with ``instance_mask``
            (B,H,W) bool; ``depth`` (B,1,H,W) or (B,H,W), valid where finite
            and > 0. Keys for absent tasks are ignored.
        log_vars: (K,) log-variances s_k, one per task present in the order
            semantic, instance, depth. Given, the total is the uncertainty
            weighted sum ``sum c_k exp(-s_k) L_k + r_k s_k`` (see
            ``fastmtl.weighting``); otherwise ``sum w_k L_k``.
        weights: fixed weights (sequence of K or dict by task name; default 1
            each). Not combined with ``log_vars``.
        ignore_index, class_weight: as in ``F.cross_entropy``. ``ignore_index``
            is an int that the label dtype can hold (0..255 for uint8 labels);
            ``class_weight`` is (C,) with finite values >= 0 and a positive sum.
        backend: "reference" (PyTorch ops), "triton" (fused kernel; CPU
            tensors need TRITON_INTERPRET=1) or "auto" (triton on CUDA).
        uncertainty: convention for log_vars: "kendall", "half" or "unit".
        check_labels: raise ValueError on a semantic label outside [0, C)
            that is not ignore_index; with False such labels are treated as
            ignored. The reference backend (and the triton one on CPU) raises
            in the call, reading a flag back from the device. The triton
            backend on CUDA (upsampled or not) never waits: a bad label is
            reported by a later call, once the GPU has finished the one that
            saw it (in a training loop, the next step's), or by
            ``fastmtl.ops.raise_pending_label_errors()``, or at exit), and
            the call that saw it treats it as ignored; no check is made under
            torch.compile or CUDA-graph capture (docs/kernel.md). With True the
            class_weight values (finite, >= 0, positive sum) are also read
            back, once per weight tensor and again after an in-place change.
        upsample, align_corners: with ``upsample="bilinear"`` the predictions
            may be at a lower resolution h x w than the targets (H x W) and are
            scored as ``F.interpolate(p, size=(H, W), mode="bilinear",
            align_corners=align_corners)``; the triton backend interpolates
            inside the kernel and never holds full-resolution predictions or
            gradients (docs/upsample.md), unless a regression target requires
            grad: that gradient is full-resolution, and the predictions are then
            interpolated by ``F.interpolate`` and scored at full resolution.

    Returns:
        LossOutput with ``total`` and ``losses`` (float32, or float64 for
        float64 predictions). A task with no valid pixel has loss 0 and adds
        nothing to the total or the gradients.
    """
    tasks = validate_inputs(predictions, targets, class_weight, upsample=upsample)
    validate_semantic_options(tasks, predictions, targets, ignore_index, class_weight,
                              check_values=check_labels)
    device = predictions[tasks[0]].device
    if log_vars is not None and weights is not None:
        raise ValueError("give either log_vars (uncertainty weighting) or weights (fixed), not both")
    if log_vars is not None:
        log_vars = validate_log_vars(log_vars, tasks, device)
        factors, regulariser = uncertainty_factors(tasks, uncertainty)
    else:
        factors = regulariser = None
        weights = None if weights is None else weights_tensor(weights, tasks, device)

    backend = resolve_backend(backend, device)
    if upsample is not None:  # low-resolution predictions (docs/upsample.md)
        if backend == "triton":
            from fastmtl.ops import upsampled_multitask_loss

            total, losses = upsampled_multitask_loss(
                predictions, targets, tasks, log_vars=log_vars, weights=weights, factors=factors,
                regulariser=regulariser, ignore_index=ignore_index, class_weight=class_weight,
                check_labels=check_labels, align_corners=align_corners)
            return LossOutput(total, losses)
        predictions = _upsampled(predictions, target_size(predictions, targets, tasks, upsample),
                                 align_corners)

    if backend == "triton":
        from fastmtl.ops import fused_multitask_loss

        total, losses = fused_multitask_loss(
            predictions, targets, tasks, log_vars=log_vars, weights=weights, factors=factors,
            regulariser=regulariser, ignore_index=ignore_index, class_weight=class_weight,
            check_labels=check_labels)
        return LossOutput(total, losses)

    if check_labels and "semantic" in tasks:
        check_label_range(targets["semantic"], predictions["semantic"].shape[1], ignore_index)
    losses, normalisers = reference.task_losses(
        predictions, targets, tasks, ignore_index=ignore_index, class_weight=class_weight)
    stacked = torch.stack([losses[t] for t in tasks])
    present = torch.stack([normalisers[t] > 0 for t in tasks])
    total = combine(stacked, present, log_vars=log_vars, weights=weights, factors=factors,
                    regulariser=regulariser)
    return LossOutput(total, losses)
