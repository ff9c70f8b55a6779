"""The loss launches of the op on low-resolution heads (``fastmtl.ops.upsample``): which
kernels the forward's layout runs, with their arguments and register caps.

- the semantic task: ``upsample_loss_kernel`` (C <= 32, the classes in the thread) or
  ``upsample_chunks_kernel`` (C > 32, the classes in chunks);
- the regressions: ``upsample_regressions_kernel``;
- both as one grid where the layout says so (``Config.one_launch``):
  ``upsample_both_kernel``.

A register cap (``maxnreg``) goes with the launches that can take one: compiled kernels
outside a torch.compile graph, whose launcher takes num_warps and num_stages only.
"""
from __future__ import annotations

from fastmtl.kernels import upsample_both as UB
from fastmtl.kernels import upsample_chunks as UC
from fastmtl.kernels import upsample_loss as U
from fastmtl.kernels import upsample_regressions as V
from fastmtl.ops.common import bchw_strides, bhw_strides, can_cap, interpreted, next_power_of_2

FP64_ROWS = 2  # rows per chunk of the regressions' launch in fp64


def register_cap(plan, acc_fp64: bool, launch) -> dict:
    """The launch option capping ptxas's registers (``maxnreg``), where the plan has one
    and the launch can take it (``can_cap``; not for fp64, whose values take two registers
    each): elsewhere the kernel is compiled with ptxas's own register choice."""
    if plan.max_registers is None or acc_fp64 or not can_cap(launch):
        return {}
    return {"maxnreg": plan.max_registers}


def launch_losses(launch, layout, x, t, class_weight, gx, o, g, m, go, d, z, gd, ignore_index,
                  index, lam, start, part, bad_part, write_grad, filler):
    """Every loss launch of ``layout`` (the op's ``_Layout``) through ``launch``; absent
    tensors are passed as ``filler`` (or ``part``, for the regressions)."""
    if layout.joint:
        _both(launch, layout, x, t, class_weight, gx, o, g, m, go, d, z, gd, ignore_index,
              index, lam, start, part, bad_part, write_grad)
        return
    pick = lambda v: v if v is not None and v.numel() > 0 else filler  # noqa: E731
    h, w, H, W, C, acc_fp64 = layout.h, layout.w, layout.H, layout.W, layout.C, layout.acc_fp64
    n_parts, scale, index32 = layout.n_parts, layout.scale, layout.index32
    for (plan, flags), grid in zip(layout.launches, layout.grids):
        if grid == 0:
            continue
        if not flags["HAS_SEM"]:
            _regressions(launch, grid, plan, flags, o, g, m, go, d, z, gd, index, lam, start,
                         part, n_parts, h, w, H, W, scale, write_grad, acc_fp64)
        elif plan.class_chunks:  # C > 32: the classes in chunks (upsample_chunks.py)
            launch(UC.upsample_chunks_kernel)[(grid,)](
                x, t, pick(class_weight), pick(gx), *bchw_strides(x), *bhw_strides(t),
                *bchw_strides(gx), ignore_index, index, lam, start, part, bad_part,
                n_parts, h, w, H, W, plan.n_bands, plan.n_strips, plan.band_rows,
                plan.strip_cells, scale, C=C, HAS_WEIGHT=class_weight is not None,
                WRITE_GRAD=write_grad, CH=plan.block_c,
                CHT=max(1, next_power_of_2(C % plan.block_c)), ROWS=plan.rows,
                BLOCK_X=plan.block_x, NRUN=plan.nrun, KC=plan.kc, ACC_FP64=acc_fp64,
                FAST_MATH=not acc_fp64 and not interpreted(), COMPILED=not interpreted(),
                INDEX32=index32, KEEP_Y=h == H, KEEP_X=w == W, num_warps=plan.num_warps,
                **register_cap(plan, acc_fp64, launch))
        else:
            launch(U.upsample_loss_kernel)[(grid,)](
                pick(x), pick(t), pick(class_weight), pick(gx), *bchw_strides(x),
                *bhw_strides(t), *bchw_strides(gx), ignore_index,
                pick(o), pick(g), pick(m), pick(go), *bchw_strides(o), *bchw_strides(g),
                *bhw_strides(m), *bchw_strides(go),
                pick(d), pick(z), pick(gd), *bhw_strides(d), *bhw_strides(z), *bhw_strides(gd),
                index, lam, start, part, bad_part, n_parts, h, w, H, W,
                plan.n_bands, plan.n_strips, plan.band_rows, plan.strip_cells, scale,
                C=C, HAS_WEIGHT=class_weight is not None,
                WRITE_GRAD=write_grad, BLOCK_C=plan.block_c, BLOCK_X=plan.block_x,
                NRUN=plan.nrun, KC=plan.kc, ACC_FP64=acc_fp64,
                FAST_MATH=not acc_fp64 and not interpreted(), COMPILED=not interpreted(),
                INDEX32=index32, KEEP_Y=h == H, KEEP_X=w == W, num_warps=plan.num_warps,
                **flags, **register_cap(plan, acc_fp64, launch))


def _regressions(launch, grid, plan, flags, o, g, m, go, d, z, gd, index, lam, start, part,
                 n_parts, h, w, H, W, scale, write_grad, acc_fp64):
    """The regressions' launch (instance offsets, depth): ``upsample_regressions_kernel``,
    which reads the targets of ``plan.rows`` full-resolution rows at a time (fp64, whose
    values take two registers each: FP64_ROWS, so that its row loop does not spill)."""
    rows = min(plan.rows, FP64_ROWS) if acc_fp64 else plan.rows
    state = part  # any tensor, for the arguments of an absent task
    pick = lambda v: v if v is not None and v.numel() > 0 else state  # noqa: E731
    launch(V.upsample_regressions_kernel)[(grid,)](
        pick(o), pick(g), pick(m), pick(go), *bchw_strides(o), *bchw_strides(g),
        *bhw_strides(m), *bchw_strides(go),
        pick(d), pick(z), pick(gd), *bhw_strides(d), *bhw_strides(z), *bhw_strides(gd),
        index, lam, start, part, n_parts, h, w, H, W,
        plan.n_bands, plan.n_strips, plan.band_rows, plan.strip_cells, scale,
        HAS_INST=flags["HAS_INST"], HAS_DEP=flags["HAS_DEP"], WRITE_GRAD=write_grad,
        BLOCK_X=plan.block_x, ROWS=rows, NRUN=plan.nrun, KC=plan.kc, ACC_FP64=acc_fp64,
        COMPILED=not interpreted(), KEEP_Y=h == H, KEEP_X=w == W, num_warps=plan.num_warps,
        **register_cap(plan, acc_fp64, launch))


def _both(launch, layout, x, t, class_weight, gx, o, g, m, go, d, z, gd, ignore_index, index,
          lam, start, part, bad_part, write_grad):
    """Both launches as one (``Config.one_launch``): ``upsample_both_kernel`` over the
    semantic and the regressions' grids together, capped as the semantic launch."""
    (plan, _), (r_plan, flags) = layout.launches
    n_sem, n_reg = layout.grids
    h, w, H, W = layout.h, layout.w, layout.H, layout.W
    pick = lambda v: v if v is not None and v.numel() > 0 else part  # noqa: E731
    launch(UB.upsample_both_kernel)[(n_sem + n_reg,)](
        x, t, pick(class_weight), pick(gx), *bchw_strides(x), *bhw_strides(t),
        *bchw_strides(gx), ignore_index,
        pick(o), pick(g), pick(m), pick(go), *bchw_strides(o), *bchw_strides(g),
        *bhw_strides(m), *bchw_strides(go),
        pick(d), pick(z), pick(gd), *bhw_strides(d), *bhw_strides(z), *bhw_strides(gd),
        index, lam, start, part, bad_part, layout.n_parts, h, w, H, W, layout.scale,
        n_sem, plan.n_bands, plan.n_strips, plan.band_rows, plan.strip_cells,
        n_reg, r_plan.n_bands, r_plan.n_strips, r_plan.band_rows, r_plan.strip_cells,
        C=layout.C, HAS_WEIGHT=class_weight is not None, HAS_INST=flags["HAS_INST"],
        HAS_DEP=flags["HAS_DEP"], WRITE_GRAD=write_grad, BLOCK_C=plan.block_c,
        BLOCK_X=plan.block_x, NRUN=plan.nrun, KC=plan.kc, R_BLOCK_X=r_plan.block_x,
        R_ROWS=r_plan.rows, R_NRUN=r_plan.nrun, R_KC=r_plan.kc,
        FAST_MATH=not interpreted(), COMPILED=not interpreted(), INDEX32=layout.index32,
        KEEP_Y=h == H, KEEP_X=w == W, num_warps=plan.num_warps,
        **register_cap(plan, False, launch))
