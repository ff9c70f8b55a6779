"""Custom op for the loss on low-resolution predictions, upsampled inside the kernel.

``upsampled_multitask_loss`` gives the same total, losses and gradients as
``F.interpolate(p, size=(H, W), mode="bilinear", align_corners=...)`` of every
prediction followed by ``fastmtl.ops.fused_multitask_loss``, without ever
holding the (B, C, H, W) upsampled logits or their gradient:

1. ``axis_table_kernel`` (2 programs) writes, per full-resolution row and
   column, PyTorch's interpolation taps and weight and, per low-resolution row
   and column, the run of full-resolution pixels it owns (``kernels/bilinear_tables.py``).
2. ``upsample_loss_kernel`` (one launch for the semantic task, one for the
   regressions, each over its grid of image x band of rows x strip of columns)
   reads every target once (plus the row and run of columns a program shares with
   its neighbours), writes each low-resolution gradient cell once, scaled by a
   provisional power of two, and leaves per-program partial sums
   (``kernels/upsample_loss.py``; the split: ``fastmtl/ops/upsample_tiles.py``). The
   regressions' launch is ``upsample_regressions_kernel`` (``kernels/upsample_regressions.py``):
   the same split and run reduction, with the targets read a chunk of rows at a time.
   For C > 32 the semantic launch can be ``upsample_chunks_kernel``
   (``kernels/upsample_chunks.py``: the classes in chunks, two passes; ``class_chunk`` of
   ``upsample_tiles.Config``), same contract and partial sums. With ``one_launch`` an eager
   call makes both launches as one, ``upsample_both_kernel`` (``kernels/upsample_both.py``),
   bitwise the same results.
3. ``reduce_partials_kernel`` and ``upsample_finalize_kernel`` add the partial
   sums in a fixed order, in two levels, into N_k, L_k, the total and
   d total / d coef (``kernels/upsample_reduce.py``).

Backward: ``upsample_grad_scale_kernel`` multiplies the stored gradients by
(g_total coef_k + g_L_k) / (N_k provisional), in place (a copy when the graph is
retained, so a second backward starts again from the stored values), and forms
g_total d total / d coef in the same launch.

Memory: the low-resolution gradients in the prediction dtype, partial sums of
9 values per program and tables of O(H + W). A strip walked in several windows
(heads much narrower than the targets) keeps its gradient in the accumulation
dtype until backward. Bitwise deterministic, no atomics, no host
synchronisation: the label check (count, first flat index and value of the bad
labels, from the loss kernel's own partial sums) is read back as the fused op's
is, by a later call on CUDA (``fastmtl.ops.label_check``).
"""
from __future__ import annotations

from typing import Mapping, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.library import triton_op, wrap_triton

from fastmtl.kernels import bilinear_tables as T
from fastmtl.kernels import upsample_reduce as R
from fastmtl.ops.common import (TASK_SLOTS, backward_launch, cdiv, check_device, device_guard,
                                eager_or_op, is_real, launch_for, per_task_losses,
                                within_int32_per_image)
from fastmtl.ops.fused import fused_multitask_loss
from fastmtl.ops.label_check import buffer as label_buffer
from fastmtl.ops.label_check import raise_pending_label_errors
from fastmtl.ops.label_check import record as record_label_check
from fastmtl.ops.replay import Launches
from fastmtl.ops.upsample_launches import can_cap, launch_losses
from fastmtl.ops.upsample_tiles import current, tiles
from fastmtl.validation import target_size

TABLE_BLOCK = 1024
REDUCE_BLOCK = 1024   # partials per program on each level of the reduction
SCALE_BLOCK = 2048
MAX_SCALE_PROGRAMS = 4096


def provisional_scale(h: int, w: int, H: int, W: int) -> float:
    """The power of two the loss kernel stores the gradient sums times: about one over
    the pixels per cell, so that stored values stay near 1 in any dtype."""
    per_cell = max(1.0, (H * W) / max(1, h * w))
    return 2.0 ** (1 - int(per_cell).bit_length())


def _grad_buffer(p: Optional[Tensor], write_grad: bool, acc: torch.dtype, accumulates: bool,
                 like: Tensor) -> Tensor:
    """The stored gradient: the prediction's dtype and layout, or the accumulation dtype
    where its cells accumulate more than once (``Tiles.accumulates``)."""
    if p is None or not write_grad:
        return torch.empty(0, dtype=acc, device=like.device)
    return torch.empty_like(p, dtype=acc if accumulates else p.dtype)


class _Layout:
    """The forward's launch geometry, from shapes, strides and dtypes alone (no tensor is
    kept): the launches' splits and grids, the partial sums, the provisional scale, whether
    the logits' taps are addressed in 32 bits within an image. ``capped``: the launches take
    a register cap (``common.can_cap``); ``eager``: they are made outside a
    torch.compile graph, where ``Config.one_launch`` may join them. An eager call keeps it in
    its call cache (``common.call_cache``) for the next call with the same key."""

    def __init__(self, x, t, o, m, d, z, align_corners, capped, eager):
        first = x if x is not None else o if o is not None else d
        B, h, w = self.B, self.h, self.w = first.shape[0], first.shape[2], first.shape[3]
        H, W = self.H, self.W = (t if t is not None else m if m is not None else z).shape[-2:]
        self.acc_fp64 = any(p is not None and p.dtype == torch.float64 for p in (x, o, d))
        self.acc = torch.float64 if self.acc_fp64 else torch.float32
        C = self.C = x.shape[1] if x is not None else 1
        self.index32 = x is not None and within_int32_per_image(x)
        # The semantic task and the regressions share no data, so they are two launches:
        # fewer values live per thread, no extra traffic. Each has its own split.
        launches = []
        if x is not None:
            launches.append((tiles(B, C, h, w, H, W, align_corners, True),
                             dict(HAS_SEM=True, HAS_INST=False, HAS_DEP=False)))
        if o is not None or d is not None:
            launches.append((tiles(B, 1, h, w, H, W, align_corners, False,
                                   capped=capped and not self.acc_fp64),
                             dict(HAS_SEM=False, HAS_INST=o is not None, HAS_DEP=d is not None)))
        # Config.one_launch: both launches as one (kernels/upsample_both.py), the regressions
        # in their one-column form under the semantic launch's register cap.
        self.joint = False
        if current().one_launch and eager and len(launches) == 2 and not self.acc_fp64:
            semantic, regressions = launches[0][0], tiles(B, 1, h, w, H, W, align_corners, False,
                                                          capped=True)
            if (not semantic.class_chunks and semantic.max_registers is not None
                    and regressions.max_registers is not None
                    and regressions.num_warps == semantic.num_warps):
                launches[1] = (regressions, launches[1][1])
                self.joint = True
        self.launches = launches
        self.grids = [B * plan.n_bands * plan.n_strips for plan, _ in launches]
        self.n_sem = self.grids[0] if x is not None else 0
        self.n_reg = self.grids[-1] if o is not None or d is not None else 0
        self.n_parts = max(self.grids)
        self.n_sums = cdiv(self.n_parts, REDUCE_BLOCK)
        self.scale = provisional_scale(h, w, H, W)
        # Whether each gradient (x, o, d) is kept in the accumulation dtype until backward.
        wide = max(plan.windows for plan, _ in launches) > 1
        self.accumulates = (wide or (x is not None and launches[0][0].accumulates), wide, wide)


def _forward(launch, x, t, class_weight, o, g, m, d, z, coef, positions, factors, regulariser,
             use_log_vars, ignore_index, align_corners, write_grad, cache=None,
             check_labels=False):
    """Allocates the outputs and launches the forward kernels through ``launch``;
    ``cache`` (``common.call_cache`` of the call) keeps its layout for the next, and its
    launches, made again from the third call with the same key (``replay.Launches``). The
    axis tables are launched as soon as their buffers exist, and what only the reductions
    use is allocated after the loss launches: an eager call whose host is slower than the
    device starts each kernel sooner."""
    first = x if x is not None else o if o is not None else d
    device = first.device
    layout = cache.get("layout") if cache is not None else None
    if layout is None:
        layout = _Layout(x, t, o, m, d, z, align_corners, can_cap(launch),
                         launch is not wrap_triton)
        if cache is not None:
            cache["layout"] = layout
    h, w, H, W, acc_fp64, acc = layout.h, layout.w, layout.H, layout.W, layout.acc_fp64, layout.acc
    n_sem, n_reg, n_parts, n_sums = layout.n_sem, layout.n_reg, layout.n_parts, layout.n_sums

    bad = label_buffer(first, check_labels)  # checked: pinned host memory, passed as it is
    index = torch.empty(H + W, dtype=torch.int32, device=device)
    lam = torch.empty(H + W, dtype=acc, device=device)
    start = torch.empty(h + w + 2, dtype=torch.int32, device=device)
    sources = [bad, x, t, class_weight, o, g, m, d, z, coef, index, lam, start]
    launches = Launches(cache, sources, int(check_labels), device)
    with device_guard(first):
        launches.run(lambda: launch(T.axis_table_kernel)[(2,)](
            index, lam, start, h, H, w, W, H.bit_length() + 1, W.bit_length() + 1,
            ALIGN_CORNERS=align_corners, ACC_FP64=acc_fp64, BLOCK=TABLE_BLOCK))
    gx, go, gd = (_grad_buffer(p, write_grad, acc, kept, first)
                  for p, kept in zip((x, o, d), layout.accumulates))
    part = torch.empty((R.PART_ROWS, n_parts), dtype=acc, device=device)
    bad_part = torch.empty((3, n_parts), dtype=torch.int64, device=device)
    state = torch.empty((R.STATE_ROWS, R.SLOTS), dtype=torch.float64, device=device)
    sources += (gx, go, gd, part, bad_part, state)
    f_sem, f_inst, f_dep = factors
    r_sem, r_inst, r_dep = regulariser

    def reductions():
        if n_sums > 0:
            launch(R.reduce_partials_kernel)[(n_sums,)](
                part, bad_part, n_parts, n_sem, n_reg, sums, bad_sums, n_sums,
                BLOCK=REDUCE_BLOCK)
        launch(R.upsample_finalize_kernel)[(1,)](
            sums, bad_sums, n_sums, coef if coef is not None else state, *positions,
            f_sem, f_inst, f_dep, r_sem, r_inst, r_dep, total, losses, dcoef, state, bad,
            HAS_COEF=coef is not None, USE_LOG_VARS=use_log_vars, BLOCK=REDUCE_BLOCK)

    with device_guard(first):
        launches.run(lambda: launch_losses(
            launch, layout, x, t, class_weight, gx, o, g, m, go, d, z, gd, ignore_index, index,
            lam, start, part, bad_part, write_grad, state))
        sums = torch.empty((R.PART_ROWS, n_sums), dtype=torch.float64, device=device)
        bad_sums = torch.empty((3, n_sums), dtype=torch.int64, device=device)
        n_tasks = len(positions) - positions.count(-1)
        total = torch.empty((), dtype=acc, device=device)
        losses = torch.empty(n_tasks, dtype=acc, device=device)
        dcoef = torch.empty(n_tasks, dtype=acc, device=device)
        sources += (sums, bad_sums, total, losses, dcoef)
        launches.run(reductions)
    launches.end()
    return total, losses, dcoef, gx, go, gd, state, bad


def _gradients(launch, g_total, g_losses, predictions, stored, state, positions, scale,
               wanted, in_place, coef, dcoef, coef_grad):
    """Gradients of x, o, d from the stored ones, each times (g_total coef_k + g_L_k) /
    (N_k scale), None where not wanted; and with ``coef_grad`` the log-variances' (or
    weights') gradient g_total * dtotal/dcoef, in the same launch (else None). g_total
    and g_losses may be None: a gradient that did not arrive."""
    grads, args = [], []
    for p, s, want in zip(predictions, stored, wanted):
        if p is None or not want:
            grads.append(None)
            args += [state, state, 0]
            continue
        out = s if in_place and s.dtype == p.dtype else torch.empty_like(p)
        grads.append(out)  # zero-size for an empty batch, as autograd gives
        args += [s, out, s.numel()] if s.numel() > 0 else [state, state, 0]
    n = max(args[2::3])
    grad_coef = torch.empty_like(coef) if coef_grad else None
    if n > 0 or coef_grad:
        with device_guard(state):
            launch(R.upsample_grad_scale_kernel)[(max(1, min(cdiv(n, SCALE_BLOCK),
                                                              MAX_SCALE_PROGRAMS)),)](
                *args, state, g_total if g_total is not None else state,
                g_losses if g_losses is not None else state, *positions, scale, dcoef,
                grad_coef if coef_grad else state, dcoef.numel(), BLOCK=SCALE_BLOCK,
                ACC_FP64=dcoef.dtype == torch.float64, HAS_G_TOTAL=g_total is not None,
                HAS_G_LOSSES=g_losses is not None, HAS_GRAD_COEF=coef_grad)
    return grads, grad_coef


def _upsampled_impl(x: Optional[Tensor], t: Optional[Tensor], class_weight: Optional[Tensor],
                    o: Optional[Tensor], g: Optional[Tensor], m: Optional[Tensor],
                    d: Optional[Tensor], z: Optional[Tensor], coef: Optional[Tensor],
                    positions: list[int], factors: list[float], regulariser: list[float],
                    use_log_vars: bool, ignore_index: int, align_corners: bool, write_grad: bool,
                    check_labels: bool
                    ) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]:
    """(total, losses (K,), dtotal/dcoef (K,), stored gradients of x, o, d, state, bad labels)."""
    first = x if x is not None else o if o is not None else d
    check_device(first)
    # The tiling configuration decides launch arguments too: part of the key.
    launch, cache = launch_for(first, (x, t, class_weight, o, g, m, d, z, coef, positions,
                                       factors, regulariser, use_log_vars, ignore_index,
                                       align_corners, write_grad, current()))
    return _forward(launch, x, t, class_weight, o, g, m, d, z, coef, positions, factors,
                    regulariser, use_log_vars, ignore_index, align_corners, write_grad,
                    cache, check_labels)


def _setup_context(ctx, inputs, output):
    x, t, _cw, o, _g, m, d, z, coef, positions, *_rest, write_grad, _check = inputs
    total, losses, dcoef, gx, go, gd, state, bad = output
    ctx.set_materialize_grads(False)
    ctx.mark_non_differentiable(dcoef, gx, go, gd, state, bad)
    ctx.save_for_backward(x, o, d, coef, dcoef, gx, go, gd, state)
    first = next(p for p in (x, o, d) if p is not None)
    target = next(v for v in (t, m, z) if v is not None)
    ctx.config = (list(positions), write_grad,
                  provisional_scale(first.shape[2], first.shape[3], *target.shape[-2:]))


def _backward(ctx, g_total, g_losses, *_unused):
    if torch.is_grad_enabled() and any(is_real(v) for v in (g_total, g_losses) if v is not None):
        raise RuntimeError("the fused multi-task loss is differentiable once: backward with "
                           "create_graph=True needs backend='reference'")
    x, o, d, coef, dcoef, gx, go, gd, state = ctx.saved_tensors
    positions, write_grad, scale = ctx.config
    need = ctx.needs_input_grad
    if g_losses is not None:
        g_losses = g_losses.contiguous()  # a summed loss hands in an expanded gradient
    # Only total depends on the coefficients (as in the fused op and the reference).
    coef_grad = coef is not None and need[8] and g_total is not None
    gx_out = go_out = gd_out = grad_coef = None
    if write_grad or coef_grad:
        # Scaled in place, unless the graph is kept for another backward.
        in_place = not (is_real(state)
                        and torch._C._autograd._get_current_graph_task_keep_graph())
        wanted = (need[0], need[3], need[6]) if write_grad else (False, False, False)
        launch, _ = backward_launch(ctx, state, (x, o, d, coef, dcoef, gx, go, gd, state,
                                                 positions, scale),
                                    (g_total, g_losses, wanted, in_place, coef_grad))
        (gx_out, go_out, gd_out), grad_coef = _gradients(
            launch, g_total, g_losses, (x, o, d), (gx, go, gd), state, positions, scale, wanted,
            in_place, coef, dcoef, coef_grad)
    return (gx_out, None, None, go_out, None, None, gd_out, None, grad_coef,
            None, None, None, None, None, None, None, None)


_upsampled_op = triton_op("fastmtl::upsampled_multitask_loss", mutates_args=())(_upsampled_impl)
_upsampled_op.register_autograd(_backward, setup_context=_setup_context)
_upsampled = eager_or_op(_upsampled_op, _upsampled_impl, _setup_context, _backward)


def upsampled_multitask_loss(predictions: Mapping[str, Tensor], targets: Mapping[str, Tensor],
                             tasks: Sequence[str], *, log_vars: Optional[Tensor] = None,
                             weights: Optional[Tensor] = None,
                             factors: Optional[Sequence[float]] = None,
                             regulariser: Optional[Sequence[float]] = None,
                             ignore_index: int = 255, class_weight: Optional[Tensor] = None,
                             check_labels: bool = True, align_corners: bool = False
                             ) -> tuple[Tensor, dict[str, Tensor]]:
    """``fastmtl.ops.fused_multitask_loss`` of the bilinearly upsampled predictions.

    Predictions are (B, *, h, w), targets (B, [*,] H, W) with 0 < h <= H, 0 < w <= W
    (validated by the caller); the result equals upsampling every prediction
    with ``F.interpolate(size=(H, W), mode="bilinear", align_corners=...)`` and
    taking the loss there, and gradients come back at h x w. Arguments,
    results and ``check_labels`` as in ``fused_multitask_loss``: a label outside
    [0, C) that is not ``ignore_index`` raises a ValueError naming it and where it
    is, in the call for CPU tensors and from a later call on CUDA (this call then
    treats it as ignored); no check under torch.compile or CUDA-graph capture.
    Regression targets that require grad (their gradient is full-resolution) make it
    exactly that: ``F.interpolate``, then ``fused_multitask_loss``.
    """
    tasks = tuple(tasks)
    x, o, d = (predictions[name] if name in tasks else None for name in TASK_SLOTS)
    if torch.is_grad_enabled() and any(p is not None and targets[key].requires_grad
                                       for p, key in ((o, "instance"), (d, "depth"))):
        # Their gradient is full-resolution: the fused op gives it, on interpolated heads.
        size = target_size(predictions, targets, tasks, "bilinear")
        upsampled = {name: F.interpolate(predictions[name], size=size, mode="bilinear",
                                         align_corners=align_corners) for name in tasks}
        return fused_multitask_loss(upsampled, targets, tasks, log_vars=log_vars,
                                    weights=weights, factors=factors, regulariser=regulariser,
                                    ignore_index=ignore_index, class_weight=class_weight,
                                    check_labels=check_labels)
    positions = [tasks.index(name) if name in tasks else -1 for name in TASK_SLOTS]
    use_log_vars = log_vars is not None
    per_slot = lambda seq: [float(seq[p]) if p >= 0 and use_log_vars else 0.0  # noqa: E731
                            for p in positions]
    write_grad = torch.is_grad_enabled() and any(
        p is not None and p.requires_grad for p in (x, o, d))
    if is_real(next(p for p in (x, o, d) if p is not None)):
        raise_pending_label_errors(wait=False)  # earlier calls' finished checks (label_check)
    t = targets["semantic"] if x is not None else None
    check = bool(check_labels and x is not None)
    outs = _upsampled(
        x, t, class_weight if x is not None else None,
        o, targets["instance"] if o is not None else None,
        targets["instance_mask"] if o is not None else None,
        d, targets["depth"] if d is not None else None,
        log_vars if use_log_vars else weights, positions, per_slot(factors),
        per_slot(regulariser), use_log_vars, int(ignore_index), bool(align_corners), write_grad,
        check)
    total, losses, bad = outs[0], outs[1], outs[7]
    if check and is_real(bad):
        record_label_check(bad, x.shape[1], int(ignore_index), t.shape)
    return total, per_task_losses(tasks, losses, predictions)
