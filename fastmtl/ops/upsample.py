"""Custom op for the loss on low-resolution predictions, upsampled inside the kernel.

``upsampled_multitask_loss`` gives the same total, losses and gradients as
``F.interpolate(p, size=(H, W), mode="bilinear", align_corners=...)`` of every
prediction followed by ``fastmtl.ops.fused_multitask_loss``, without ever
holding the (B, C, H, W) upsampled logits or their gradient:

1. ``axis_table_kernel`` (2 programs) writes, per full-resolution row and
   column, PyTorch's interpolation weight and, per low-resolution row and
   column, the range of full-resolution pixels it owns (``kernels/upsample_loss.py``).
2. ``upsample_loss_kernel`` (one launch for the semantic task, one for the
   regressions, over the same grid) visits every full-resolution pixel once,
   from the program of the low-resolution cell that owns it: per-program partial sums
   of the losses, normalisers and bad labels, and the gradient with respect to
   the interpolated values gathered into four low-resolution buffers, one per
   bilinear tap.
3. ``prepare_kernel`` and ``finalize_kernel`` (as in ``fastmtl.ops.fused``) add the partial
   sums in a fixed order into N_k, L_k, the total and d total / d coef.

Backward: ``backward_prepare_kernel`` (as in ``fastmtl.ops.fused``) turns the incoming
gradient into a scale per task, (g_total coef_k + g_L_k) / N_k, and
``upsample_grad_kernel`` adds the four tap buffers of each low-resolution cell
in a fixed order and writes the gradient in the prediction's dtype.

Memory: besides the gradients (low resolution), the four tap buffers hold
4 x B x (C + 3) x h x w values in the accumulation dtype, saved from forward
to backward; tables hold O(H + W). Bitwise deterministic, no atomics, no host
synchronisation unless ``check_labels=True`` (one read of 8 bytes).
"""
from __future__ import annotations

from typing import Mapping, Optional, Sequence

import torch
import triton
from torch import Tensor
from torch.library import triton_op

import fastmtl.kernels as K
from fastmtl.kernels import upsample_loss as U
from fastmtl.ops.common import (REDUCE_BLOCK, TASK_SLOTS, bchw_strides, bhw_strides, check_device,
                                device_guard, is_real, launcher)
from fastmtl.validation import check_label_range

# Tile of the loss kernel: BLOCK_N owner columns x BLOCK_K owned pixels of one row per step,
# all classes. At most 16 pixels and 8 owner columns (with the kernel's 4 warps and 128
# registers) keep C = 19 (BLOCK_C = 32) free of register spills on sm_80 and sm_90 at every
# scale factor (tests/ops/test_upsample_loss.py checks it with ptxas).
TILE_ELEMENTS = 512   # most BLOCK_C * BLOCK_N * BLOCK_K in float32 (half that in float64)
MAX_PIXELS = 16       # most BLOCK_N * BLOCK_K
MAX_BLOCK_N = 8       # owner columns per program (more adds (classes, BLOCK_N) accumulators)
TABLE_BLOCK = 1024
GRAD_BLOCK = 1024
SLOTS = (U.SLOT_SEMANTIC, U.SLOT_INSTANCE, U.SLOT_DEPTH)  # kernel slots of x, o, d


def _tile(C: int, has_semantic: bool, w: int, W: int, fp64: bool) -> tuple[int, int, int]:
    """(BLOCK_C, BLOCK_N, BLOCK_K): classes, owner columns, owned columns per step."""
    block_c = triton.next_power_of_2(C) if has_semantic else 1
    pixels = max(1, min(MAX_PIXELS, TILE_ELEMENTS // (2 if fp64 else 1) // block_c))
    block_k = min(triton.next_power_of_2(triton.cdiv(W, w)), pixels)
    block_n = max(1, min(pixels // block_k, MAX_BLOCK_N, triton.next_power_of_2(w)))
    return block_c, block_n, block_k


def _forward(launch, x, t, class_weight, o, g, m, d, z, coef, positions, factors, regulariser,
             use_log_vars, ignore_index, align_corners, write_grad):
    """Allocates the outputs and launches the forward kernels through ``launch``."""
    first = next(p for p in (x, o, d) if p is not None)
    device = first.device
    B, h, w = first.shape[0], first.shape[2], first.shape[3]
    H, W = next(v for v in (t, m, z) if v is not None).shape[-2:]
    acc_fp64 = any(p is not None and p.dtype == torch.float64 for p in (x, o, d))
    acc = torch.float64 if acc_fp64 else torch.float32
    C = x.shape[1] if x is not None else 1
    block_c, block_n, block_k = _tile(C, x is not None, w, W, acc_fp64)
    nprog = B * h * triton.cdiv(w, block_n)

    def taps_buffer(p):
        if p is None or not write_grad:
            return torch.empty(0, dtype=acc, device=device)
        return torch.empty((4, B, p.shape[1], h, w), dtype=acc, device=device)

    px, po, pd = taps_buffer(x), taps_buffer(o), taps_buffer(d)
    index = torch.empty(H + W, dtype=torch.int32, device=device)
    lam = torch.empty(H + W, dtype=acc, device=device)
    start = torch.empty(h + w + 2, dtype=torch.int32, device=device)
    part = torch.empty((3, nprog), dtype=acc, device=device)
    norm_part = torch.empty((3, nprog), dtype=acc, device=device)
    # Written by the semantic launch; zeros (no bad label) when there is none.
    bad_part = (torch.empty if x is not None else torch.zeros)((3, nprog), dtype=torch.int64,
                                                              device=device)
    state = torch.empty((K.STATE_ROWS, K.SLOTS), dtype=torch.float64, device=device)
    bad = torch.empty(3, dtype=torch.int64, device=device)
    n_tasks = sum(1 for p in positions if p >= 0)
    total = torch.empty((), dtype=acc, device=device)
    losses = torch.empty(n_tasks, dtype=acc, device=device)
    dcoef = torch.empty(n_tasks, dtype=acc, device=device)
    coef_arg = coef if coef is not None else state
    pick = lambda v: v if v is not None and v.numel() > 0 else state  # noqa: E731
    f_sem, f_inst, f_dep = factors
    r_sem, r_inst, r_dep = regulariser

    with device_guard(first):
        launch(U.axis_table_kernel)[(2,)](
            index, lam, start, h, H, w, W, H.bit_length() + 1, W.bit_length() + 1,
            ALIGN_CORNERS=align_corners, ACC_FP64=acc_fp64, BLOCK=TABLE_BLOCK)
        # The semantic task and the regressions share no data, so they are two launches of
        # the kernel over the same grid: fewer values live per thread, no extra traffic.
        groups = [dict(HAS_SEM=True, HAS_INST=False, HAS_DEP=False)] if x is not None else []
        if o is not None or d is not None:
            groups.append(dict(HAS_SEM=False, HAS_INST=o is not None, HAS_DEP=d is not None))
        for flags in groups:
            launch(U.upsample_loss_kernel)[(nprog,)](
                pick(x), pick(t), pick(class_weight), pick(px), *bchw_strides(x), *bhw_strides(t), C,
                ignore_index, pick(o), pick(g), pick(m), pick(po), *bchw_strides(o), *bchw_strides(g), *bhw_strides(m),
                pick(d), pick(z), pick(pd), *bhw_strides(d), *bhw_strides(z),
                lam, start, part, norm_part, bad_part, B, h, w, H,
                HAS_WEIGHT=flags["HAS_SEM"] and class_weight is not None, WRITE_GRAD=write_grad,
                BLOCK_C=block_c if flags["HAS_SEM"] else 1, BLOCK_N=block_n, BLOCK_K=block_k,
                ACC_FP64=acc_fp64, **flags)
        launch(K.prepare_kernel)[(1,)](
            norm_part, bad_part, nprog, coef_arg, *positions, f_sem, f_inst, f_dep, state, bad,
            HAS_COEF=coef is not None, USE_LOG_VARS=use_log_vars, BLOCK_R=REDUCE_BLOCK)
        launch(K.finalize_kernel)[(1,)](
            part, nprog, state, coef_arg, *positions, r_sem, r_inst, r_dep, total, losses, dcoef,
            USE_LOG_VARS=use_log_vars, BLOCK_R=REDUCE_BLOCK)
    return total, losses, dcoef, px, po, pd, state, bad


def _gradients(launch, g_total, g_losses, predictions, taps, state, positions, wanted):
    """Low-resolution gradients of x, o, d from their tap buffers, each scaled by
    (g_total coef_k + g_L_k) / N_k (``backward_prepare_kernel``); None where not wanted."""
    scales = state.clone()  # the saved state stays as forward left it
    grads = []
    with device_guard(state):
        launch(K.backward_prepare_kernel)[(1,)](scales, g_total, g_losses, *positions)
        for p, buf, slot, want in zip(predictions, taps, SLOTS, wanted):
            if p is None or buf.numel() == 0 or not want:
                grads.append(None)
                continue
            B, CH, h, w = p.shape
            du = torch.empty_like(p)
            n_cells = B * CH * h * w
            launch(U.upsample_grad_kernel)[(triton.cdiv(n_cells, GRAD_BLOCK),)](
                buf, scales, du, n_cells, CH, h, w, *du.stride(), SLOT=slot, BLOCK=GRAD_BLOCK,
                ACC_FP64=buf.dtype == torch.float64)
            grads.append(du)
    return grads


@triton_op("fastmtl::upsampled_multitask_loss", mutates_args=())
def _upsampled_op(x: Optional[Tensor], t: Optional[Tensor], class_weight: Optional[Tensor],
                  o: Optional[Tensor], g: Optional[Tensor], m: Optional[Tensor],
                  d: Optional[Tensor], z: Optional[Tensor], coef: Optional[Tensor],
                  positions: list[int], factors: list[float], regulariser: list[float],
                  use_log_vars: bool, ignore_index: int, align_corners: bool, write_grad: bool
                  ) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]:
    """(total, losses (K,), dtotal/dcoef (K,), tap buffers of x, o, d, state, bad labels)."""
    first = next(p for p in (x, o, d) if p is not None)
    check_device(first)
    return _forward(launcher(not is_real(first)), x, t, class_weight, o, g, m, d, z, coef,
                    positions, factors, regulariser, use_log_vars, ignore_index, align_corners,
                    write_grad)


def _setup_context(ctx, inputs, output):
    x, _t, _cw, o, _g, _m, d, _z, coef, positions, *_rest, write_grad = inputs
    total, losses, dcoef, px, po, pd, state, bad = output
    ctx.mark_non_differentiable(dcoef, px, po, pd, state, bad)
    ctx.save_for_backward(x, o, d, coef, dcoef, px, po, pd, state)
    ctx.config = (list(positions), write_grad)


def _backward(ctx, g_total, g_losses, *_unused):
    x, o, d, coef, dcoef, px, po, pd, state = ctx.saved_tensors
    positions, write_grad = ctx.config
    need = ctx.needs_input_grad
    if g_total is None:
        g_total = torch.zeros((), dtype=dcoef.dtype, device=dcoef.device)
    if g_losses is None:
        g_losses = torch.zeros_like(dcoef)
    gx = go = gd = None
    if write_grad:
        gx, go, gd = _gradients(launcher(not is_real(state)), g_total, g_losses, (x, o, d),
                                (px, po, pd), state, positions, (need[0], need[3], need[6]))
    grad_coef = (g_total * dcoef).to(coef.dtype) if coef is not None and need[8] else None
    return (gx, None, None, go, None, None, gd, None, grad_coef,
            None, None, None, None, None, None, None)


_upsampled_op.register_autograd(_backward, setup_context=_setup_context)


def upsampled_multitask_loss(predictions: Mapping[str, Tensor], targets: Mapping[str, Tensor],
                             tasks: Sequence[str], *, log_vars: Optional[Tensor] = None,
                             weights: Optional[Tensor] = None,
                             factors: Optional[Sequence[float]] = None,
                             regulariser: Optional[Sequence[float]] = None,
                             ignore_index: int = 255, class_weight: Optional[Tensor] = None,
                             check_labels: bool = True, align_corners: bool = False
                             ) -> tuple[Tensor, dict[str, Tensor]]:
    """``fastmtl.ops.fused_multitask_loss`` of the bilinearly upsampled predictions.

    Predictions are (B, *, h, w), targets (B, [*,] H, W) with h <= H, w <= W
    (validated by the caller); the result equals upsampling every prediction
    with ``F.interpolate(size=(H, W), mode="bilinear", align_corners=...)`` and
    taking the loss there, and gradients come back at h x w. Arguments,
    results and ``check_labels`` as in ``fused_multitask_loss``.
    """
    tasks = tuple(tasks)
    x, o, d = (predictions[name] if name in tasks else None for name in TASK_SLOTS)
    positions = [tasks.index(name) if name in tasks else -1 for name in TASK_SLOTS]
    use_log_vars = log_vars is not None
    per_slot = lambda seq: [float(seq[p]) if p >= 0 and use_log_vars else 0.0  # noqa: E731
                            for p in positions]
    write_grad = torch.is_grad_enabled() and any(
        p is not None and p.requires_grad for p in (x, o, d))
    outs = _upsampled_op(
        x, targets["semantic"] if x is not None else None,
        class_weight if x is not None else None,
        o, targets["instance"] if o is not None else None,
        targets["instance_mask"] if o is not None else None,
        d, targets["depth"] if d is not None else None,
        log_vars if use_log_vars else weights, positions, per_slot(factors),
        per_slot(regulariser), use_log_vars, int(ignore_index), bool(align_corners), write_grad)
    total, losses, bad = outs[0], outs[1], outs[7]
    if check_labels and x is not None:
        if bad[0].item():  # the one host synchronisation
            check_label_range(targets["semantic"], x.shape[1], ignore_index)  # names the value
    return total, {name: losses[i] for i, name in enumerate(tasks)}
