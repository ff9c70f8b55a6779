"""Custom ops around the fused Triton kernels (``backend="triton"``).

``fused_multitask_loss`` computes the three per-task means, their weighted total
and every gradient in one pass over the predictions:

1. ``normaliser_kernel`` reads the targets once and leaves per-program partial
   sums of the normalisers N_k (summed class weights over valid pixels, |m|,
   N_depth) and of out-of-range labels on the device, and the labels as one
   byte each for the fused pass (C <= 255); ``prepare_kernel`` adds
   them in a fixed order and sets each task's gradient scale coef_k / N_k,
   coef_k = c_k exp(-s_k) (log-variances) or w_k (fixed weights).
2. ``fused_loss_kernel`` reads every prediction and target element once,
   writes every gradient element once (already scaled by coef_k / N_k) and
   leaves per-program partial loss sums. Its layout (V pixels per thread with
   all their classes, C in registers or two sweeps over class chunks, tiles
   per program) is chosen here from the shapes and dtypes: docs/kernel.md.
3. ``finalize_kernel`` (one program) adds the partials in a fixed order into
   L_k, the total and d total / d s_k (or d total / d w_k); past 1024
   programs ``partial_sums_kernel`` first adds them by blocks of 1024.

Backward multiplies the saved gradients by the incoming gradient and forms the
log-variances' (or weights') gradient, in one launch of ``output_grad_kernel``. The
scale task k needs is f_k = g_total coef_k + g_L_k (gradient can also flow in through
``losses[k]``); the buffers carry carried_k = coef_k (or 1 where coef_k is 0,
not finite or beyond 2^+-64, so that a factor can always be divided out), and
each program multiplies its share by f_k / carried_k. With
``total.backward()`` that ratio is exactly 1: every program returns after
reading a few scalars, no pass over memory, no host sync. A retained graph
(``retain_graph=True``) gets the rescaled gradients in new buffers and keeps
the saved ones as they are, so every later backward is exact too. Outputs
nobody differentiates get no materialised zero gradients: backward allocates
nothing gradient-sized (except for a retained graph, as said).

Memory traffic per pixel (fp32, C classes, int64 labels, all three tasks):
pre-pass 8 (t) + 1 (m) + 4 (z) bytes read, 1 (t as a byte) written; fused pass
4C (x) + 4C (dx) + 1 (t as a byte) + 25 (o, g, do, m) + 12 (d, z, dd); 14 + 8C
+ 38 bytes in all, about 204 B at C = 19 against the 197 B minimum (which counts
the 8-byte labels once). The finalize kernel touches O(programs) bytes, backward nothing more
unless the incoming gradient differs from d total (a pass over the buffers).

Eager calls on CUDA launch the compiled kernels directly after the first call
with the same shapes, strides, dtypes and alignment, and keep the problem and the
backward's launches with them (``fastmtl.ops.common.launch_for``); from the third
such call the forward's launches are replayed from a recording of the second, device
tensors passed by address (``fastmtl.ops.replay``).

Guarantees: bitwise deterministic (per-program partial sums, fixed-order
reductions, no atomics; the grid depends only on the shapes, not the GPU);
no host synchronisation in forward or backward, the label check included
(``fastmtl.ops.label_check``: on CUDA it is read back by a later call);
registered with ``torch.library.triton_op`` so ``torch.compile(fullgraph=True)``
traces it without graph breaks and CUDA graphs can capture it (an eager call
on real tensors runs the same implementation and autograd formula as a plain
``torch.autograd.Function``, skipping the custom op's dispatch:
``fastmtl.ops.common.eager_or_op``). No gradient is stored when nothing
requires grad.

Limitations: no double backward (the saved gradients are constants); H*W of
one image at most 2**31 - 2**16 (a ValueError beyond; offsets into the tensors
are 64-bit, pixel indices within an image 32-bit). Under
``torch.compile`` backward writes the rescaled gradients into new buffers (as
for a retained graph), so the compiled backward moves the gradients once.
"""
from __future__ import annotations

from typing import Mapping, Optional, Sequence

import torch
from torch import Tensor
from torch.library import triton_op

import fastmtl.kernels as K
from fastmtl.ops.common import (REDUCE_BLOCK, TASK_SLOTS, backward_launch, cdiv, check_device,
                                device_guard, eager_or_op, is_real, launch_for,
                                per_task_losses)
from fastmtl.ops.fused_layout import MAX_BLOCK_C, Problem
from fastmtl.ops.label_check import buffer as label_buffer
from fastmtl.ops.label_check import raise_pending_label_errors
from fastmtl.ops.label_check import record as record_label_check
from fastmtl.ops.replay import Launches

RESCALE_BLOCK = 4096
# Most programs of the rescaling launch, its blocks dealt round-robin: a constant, so that no
# result depends on the GPU's number of multiprocessors.
RESCALE_PROGRAMS = 4096


def _grad_buffer(p: Optional[Tensor], write_grad: bool, like: Tensor) -> Tensor:
    # empty_like keeps a dense layout (channels_last stays channels_last) and gives a
    # contiguous buffer for a non-dense view: the backward kernel walks it as flat memory.
    if p is not None and write_grad:
        return torch.empty_like(p)
    dtype = p.dtype if p is not None else torch.float32
    return torch.empty(0, dtype=dtype, device=like.device)


def _forward(launch, x, t, class_weight, o, g, m, d, z, coef, positions, factors, regulariser,
             use_log_vars, ignore_index, write_grad, max_block_c, cache=None,
             check_labels=False):
    """Allocates the outputs and launches the four forward kernels through ``launch``;
    ``cache`` (``common.call_cache`` of the call) keeps its problem for the next, and its
    launches, made again from the third call with the same key (``replay.Launches``). The
    pre-pass is launched as soon as its own buffers exist, the others allocated while it
    runs, and what only finalize writes after the fused pass's launch: an eager call whose
    host is slower than the device starts each kernel sooner."""
    first = x if x is not None else o if o is not None else d
    device = first.device
    gradients = lambda: tuple(_grad_buffer(p, write_grad, first) for p in (x, o, d))  # noqa: E731
    grads = None
    problem = cache.get("problem") if cache is not None else None
    if problem is None:  # a new launch key: the problem reads the gradients' strides
        grads = gradients()
        problem = Problem(x, t, class_weight, o, g, m, d, z, *grads, ignore_index,
                          max_block_c)
        if cache is not None:
            cache["problem"] = problem
    out_dtype = torch.float64 if problem.acc_fp64 else torch.float32
    tensors = (x, t, class_weight, o, g, m, d, z)
    bad = label_buffer(first, check_labels)  # checked: pinned host memory, passed as it is
    state = torch.empty((K.STATE_ROWS, K.SLOTS), dtype=torch.float64, device=device)
    n_pre = problem.n_pre
    norm_part = torch.empty((3, n_pre), dtype=out_dtype, device=device)
    bad_part = torch.empty((3, n_pre), dtype=torch.int64, device=device)
    compact = problem.compact_buffer(device)
    sources = [bad, *tensors, coef, state, norm_part, bad_part, compact]
    launches = Launches(cache, sources, int(check_labels), device)
    with device_guard(first):
        launches.run(lambda: problem.launch_normalisers(launch, tensors, norm_part, bad_part,
                                                        state, compact))
    gx, go, gd = grads or gradients()
    grid = problem.fused_grid()
    n_fused = grid[0]
    part = torch.empty((3, n_fused), dtype=out_dtype, device=device)
    sources += (gx, go, gd, part)
    coef_arg = coef if coef is not None else state
    f_sem, f_inst, f_dep = factors
    r_sem, r_inst, r_dep = regulariser

    def prepare_and_fused():
        launch(K.prepare_kernel)[(1,)](
            norm_part, bad_part, n_pre, coef_arg, *positions, f_sem, f_inst, f_dep, state, bad,
            HAS_COEF=coef is not None, USE_LOG_VARS=use_log_vars, BLOCK_R=REDUCE_BLOCK)
        problem.launch_fused(launch, tensors, gx, go, gd, state, part, write_grad, state,
                             compact, grid)

    def finalize():
        part_, n_fused_ = part, n_fused
        if sums is not None:  # two fixed-order levels: no program walks them all
            launch(K.partial_sums_kernel)[(n_sums,)](part, n_fused, sums, BLOCK_R=REDUCE_BLOCK)
            part_, n_fused_ = sums, n_sums
        launch(K.finalize_kernel)[(1,)](
            part_, n_fused_, state, coef_arg, *positions, r_sem, r_inst, r_dep, total, losses,
            dcoef, USE_LOG_VARS=use_log_vars, BLOCK_R=REDUCE_BLOCK)

    with device_guard(first):
        launches.run(prepare_and_fused)
        # What only finalize writes, allocated while the fused pass runs.
        n_tasks = len(positions) - positions.count(-1)
        total = torch.empty((), dtype=out_dtype, device=device)
        losses = torch.empty(n_tasks, dtype=out_dtype, device=device)
        dcoef = torch.empty(n_tasks, dtype=out_dtype, device=device)
        n_sums = cdiv(n_fused, REDUCE_BLOCK) if n_fused > REDUCE_BLOCK else 0
        sums = torch.empty((3, n_sums), dtype=torch.float64, device=device) if n_sums else None
        sources += (total, losses, dcoef, sums)
        launches.run(finalize)
    launches.end()
    return total, losses, dcoef, gx, go, gd, state, bad


def _fused_impl(x: Optional[Tensor], t: Optional[Tensor], class_weight: Optional[Tensor],
                o: Optional[Tensor], g: Optional[Tensor], m: Optional[Tensor],
                d: Optional[Tensor], z: Optional[Tensor], coef: Optional[Tensor],
                positions: list[int], factors: list[float], regulariser: list[float],
                use_log_vars: bool, ignore_index: int, write_grad: bool, max_block_c: int,
                check_labels: bool
                ) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]:
    """Returns (total, losses (K,), dtotal/dcoef (K,), dx, do, dd, state, bad labels)."""
    first = x if x is not None else o if o is not None else d
    check_device(first)
    launch, cache = launch_for(first, (x, t, class_weight, o, g, m, d, z, coef, positions,
                                       factors, regulariser, use_log_vars, ignore_index,
                                       write_grad, max_block_c))
    return _forward(launch, x, t, class_weight, o, g, m, d, z, coef, positions, factors,
                    regulariser, use_log_vars, ignore_index, write_grad, max_block_c, cache,
                    check_labels)


def _setup_context(ctx, inputs, output):
    (x, t, cw, o, g, m, d, z, coef, positions, _f, _r, _u, ignore_index, write_grad,
     max_block_c, _check) = inputs
    total, losses, dcoef, gx, go, gd, state, bad = output
    ctx.mark_non_differentiable(dcoef, gx, go, gd, state, bad)
    # Gradients of the outputs nobody differentiates arrive as None, not as
    # gradient-sized zero tensors that autograd would allocate and fill.
    ctx.set_materialize_grads(False)
    ctx.save_for_backward(coef, dcoef, gx, go, gd, state)
    ctx.config = (list(positions), write_grad)
    ctx.targets = [(v.shape, v.dtype) if v is not None else None for v in (g, z)]


def _apply_output_grad(launch, cache, g_total, g_losses, saved, positions, copy, write_grad,
                       coef_grad):
    """The gradients the incoming gradient asks for (see the module docstring): of the
    predictions from the saved buffers when ``write_grad``, in place, or into new buffers
    when ``copy`` (a retained graph); and of the log-variances or weights when
    ``coef_grad`` (g_total * dtotal/dcoef, in the same launch). One launch in all, replayed
    as the forward's where ``cache`` (``common.backward_launch``) has it recorded."""
    coef, dcoef, gx, go, gd, state = saved
    copies = [None, None, None]  # in place: the saved buffers (a source appears once)
    if copy and write_grad:
        copies = [torch.empty_like(gx), torch.empty_like(go), torch.empty_like(gd)]
    out_x, out_o, out_d = (c if c is not None else v for c, v in zip(copies, (gx, go, gd)))
    grad_coef = torch.empty_like(coef) if coef_grad else None
    launches = Launches(cache, [gx, go, gd, *copies, state, g_total, g_losses, dcoef,
                                grad_coef], 0, state.device)

    def output_grad():
        sizes = [gx.numel(), go.numel(), gd.numel()] if write_grad else [0, 0, 0]
        acc_fp64 = state.dtype == torch.float64 and any(
            v.dtype == torch.float64 for v, n in zip((gx, go, gd), sizes) if n > 0)
        launch(K.output_grad_kernel)[(max(1, min(cdiv(max(sizes), RESCALE_BLOCK),
                                                 RESCALE_PROGRAMS)),)](
            gx, out_x, sizes[0], go, out_o, sizes[1], gd, out_d, sizes[2], state,
            g_total if g_total is not None else state,
            g_losses if g_losses is not None else state, *positions, dcoef,
            grad_coef if coef_grad else state, dcoef.numel(),
            HAS_SEM=sizes[0] > 0, HAS_INST=sizes[1] > 0, HAS_DEP=sizes[2] > 0,
            HAS_G_TOTAL=g_total is not None, HAS_G_LOSSES=g_losses is not None, COPY=copy,
            BLOCK=RESCALE_BLOCK, ACC_FP64=acc_fp64, HAS_GRAD_COEF=coef_grad)

    with device_guard(state):
        launches.run(output_grad)
    launches.end()
    return [out_x, out_o, out_d], grad_coef


def _backward(ctx, g_total, g_losses, *_unused):
    if torch.is_grad_enabled() and is_real(g_total if g_total is not None else g_losses):
        raise RuntimeError("the fused multi-task loss is differentiable once: backward with "
                           "create_graph=True needs backend='reference'")
    saved = ctx.saved_tensors
    coef, dcoef, gx, go, gd, state = saved
    positions, write_grad = ctx.config
    if g_losses is not None:
        g_losses = g_losses.contiguous()  # a summed loss hands in an expanded gradient
    need = ctx.needs_input_grad
    coef_grad = coef is not None and need[8] and g_total is not None
    grad_coef = None
    if write_grad or coef_grad:
        # A retained graph keeps the buffers for its next backward: leave them as they are.
        copy = write_grad and (not is_real(dcoef)
                               or torch._C._autograd._get_current_graph_task_keep_graph())
        launch, cache = backward_launch(ctx, state, (coef, dcoef, gx, go, gd, state,
                                                     positions, write_grad),
                                        (g_total, g_losses, copy, coef_grad))
        (gx, go, gd), grad_coef = _apply_output_grad(launch, cache, g_total, g_losses, saved,
                                                     positions, copy, write_grad, coef_grad)
    # L1 against a target that requires grad (as F.l1_loss): d/dtarget = -d/dprediction.
    (g_shape, g_dtype), (z_shape, z_dtype) = (v or (None, None) for v in ctx.targets)
    grad_g = (-go).reshape(g_shape).to(g_dtype) if write_grad and need[4] else None
    grad_z = (-gd).reshape(z_shape).to(z_dtype) if write_grad and need[7] else None
    return (gx if write_grad and need[0] else None, None, None,
            go if write_grad and need[3] else None, grad_g, None,
            gd if write_grad and need[6] else None, grad_z,
            grad_coef, None, None, None, None, None, None, None, None)


_fused_op = triton_op("fastmtl::fused_multitask_loss", mutates_args=())(_fused_impl)
_fused_op.register_autograd(_backward, setup_context=_setup_context)
_fused = eager_or_op(_fused_op, _fused_impl, _setup_context, _backward)


def fused_multitask_loss(predictions: Mapping[str, Tensor], targets: Mapping[str, Tensor],
                         tasks: Sequence[str], *, log_vars: Optional[Tensor] = None,
                         weights: Optional[Tensor] = None,
                         factors: Optional[Sequence[float]] = None,
                         regulariser: Optional[Sequence[float]] = None,
                         ignore_index: int = 255, class_weight: Optional[Tensor] = None,
                         check_labels: bool = True, max_block_c: int = MAX_BLOCK_C
                         ) -> tuple[Tensor, dict[str, Tensor]]:
    """The loss contract of ``fastmtl.multitask_loss`` through the fused Triton kernels.

    Inputs are validated by the caller. ``tasks`` is the canonical-ordered subset
    of ("semantic", "instance", "depth") present. With ``log_vars`` (K,):
    total = sum_k present_k (factors[k] exp(-s_k) L_k + regulariser[k] s_k);
    otherwise total = sum_k weights[k] L_k (weights default to 1). present_k is
    N_k > 0: a task with no valid pixel has loss 0, gradient 0, no s_k term.

    Returns ``(total, {task: L_k})``, 0-d tensors: L_k in float64 for a float64
    prediction, else float32, and the total in float64 when any prediction is.
    Gradients reach the predictions, ``log_vars`` and ``weights`` through
    ``total`` and through each ``losses[task]``.

    ``check_labels=True`` raises ValueError for a semantic label outside [0, C)
    that is not ``ignore_index``, naming its value and where it is, without a host
    synchronisation: CPU tensors raise in this call; on CUDA the error is raised by
    a later call once the GPU has finished this one (in a training loop, the next
    step's), or by ``raise_pending_label_errors()``, or at exit; this call
    treats such labels as ignored (``fastmtl.ops.label_check``). No check is made
    under torch.compile or CUDA-graph capture, nor with ``check_labels=False``.
    Out-of-range labels never cause an out-of-bounds access either way.
    Regression targets that require grad get L1's gradient (minus the
    prediction's); class weights that require grad raise RuntimeError, as in
    ``F.cross_entropy``. ``max_block_c`` (power of two) is the most classes kept in
    registers per pixel; more (or more than the register budget) take two sweeps.
    """
    if max_block_c < 1 or max_block_c & (max_block_c - 1):
        raise ValueError(f"max_block_c must be a power of two, got {max_block_c}")
    tasks = tuple(tasks)
    preds = [predictions[name] if name in tasks else None for name in TASK_SLOTS]
    x, o, d = preds
    positions = [tasks.index(name) if name in tasks else -1 for name in TASK_SLOTS]
    per_slot = lambda seq: [float(seq[p]) if p >= 0 and seq is not None else 0.0  # noqa: E731
                            for p in positions]
    use_log_vars = log_vars is not None
    coef = log_vars if use_log_vars else weights
    g = targets["instance"] if o is not None else None
    z = targets["depth"] if d is not None else None
    grad_mode = torch.is_grad_enabled()
    if grad_mode and x is not None and class_weight is not None and class_weight.requires_grad:
        raise RuntimeError(  # as F.cross_entropy (nll_loss) refuses it
            "class_weight requires grad, but the cross-entropy is not differentiable with "
            "respect to its class weights, as in F.cross_entropy; pass class_weight.detach()")
    write_grad = grad_mode and any(v is not None and v.requires_grad for v in (x, o, d, g, z))
    if is_real(next(p for p in preds if p is not None)):
        raise_pending_label_errors(wait=False)  # earlier calls' finished checks (label_check)
    check = bool(check_labels and x is not None)
    outs = _fused(
        x, targets["semantic"] if x is not None else None,
        class_weight if x is not None else None,
        o, g, targets["instance_mask"] if o is not None else None, d, z,
        coef, positions, per_slot(factors if use_log_vars else None),
        per_slot(regulariser if use_log_vars else None), use_log_vars, int(ignore_index),
        write_grad, int(max_block_c), check)
    total, losses, bad = outs[0], outs[1], outs[7]
    if check and is_real(bad):
        record_label_check(bad, x.shape[1], int(ignore_index), targets["semantic"].shape)
    return total, per_task_losses(tasks, losses, predictions)
