"""The semantic launch and the regressions' launch of the loss from low-resolution heads as
one launch (``upsample_tiles.Config.one_launch``).

The two launches share no data and are bound by different things: the semantic one by
instruction issue and the latency of its dependent arithmetic, the regressions' one by
the latency of its target loads and of its run reduction's barriers. Launched one after
the other, each waits for its own latencies with only its own programs on the SM, and
each ends in a partly filled wave. Here one grid holds both sets of programs, their
order interleaved so that every stretch of the grid (and so every SM, as programs are
dispatched in order) holds both kinds in proportion: program ``pid`` is the regressions'
program k = floor(pid n_reg / N) where that floor steps between pid and pid + 1
(N = n_sem + n_reg), else the semantic program pid - k. Each program computes exactly
what it computes in its own launch (``semantic_program``, ``regressions_program``), so
the losses, gradients and partial sums are bitwise those of the two launches.
"""
import triton
import triton.language as tl

from .upsample_loss import semantic_program
from .upsample_regressions import regressions_program

__all__ = ["upsample_both_kernel"]


@triton.jit
def program_role(pid, n_sem, n_reg):
    """(whether program pid of the joint grid is a regressions' program, its index among
    its kind's): the regressions' programs spread evenly over the grid."""
    n = n_sem + n_reg
    before = (pid.to(tl.int64) * n_reg // n).to(tl.int32)
    regression = ((pid + 1).to(tl.int64) * n_reg // n).to(tl.int32) > before
    return regression, tl.where(regression, before, pid - before)


@triton.jit(do_not_specialize=["x_sc", "gx_sc", "o_sc", "g_sc", "go_sc", "g_sh", "m_sh",
                               "z_sh"])
def upsample_both_kernel(
    x_ptr, t_ptr, cw_ptr, gx_ptr, x_sb, x_sc, x_sh, x_sw, t_sb, t_sh, t_sw,
    gx_sb, gx_sc, gx_sh, gx_sw, ignore_index,
    o_ptr, g_ptr, m_ptr, go_ptr, o_sb, o_sc, o_sh, o_sw, g_sb, g_sc, g_sh, g_sw,
    m_sb, m_sh, m_sw, go_sb, go_sc, go_sh, go_sw,
    d_ptr, z_ptr, gd_ptr, d_sb, d_sh, d_sw, z_sb, z_sh, z_sw, gd_sb, gd_sh, gd_sw,
    index_ptr, lam_ptr, start_ptr, part_ptr, bad_ptr, n_parts, h, w, H, W, grad_scale,
    n_sem, n_bands, n_strips, band_rows, strip_cells,
    n_reg, r_n_bands, r_n_strips, r_band_rows, r_strip_cells,
    C: tl.constexpr, HAS_WEIGHT: tl.constexpr, HAS_INST: tl.constexpr, HAS_DEP: tl.constexpr,
    WRITE_GRAD: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_X: tl.constexpr,
    NRUN: tl.constexpr, KC: tl.constexpr, R_BLOCK_X: tl.constexpr, R_ROWS: tl.constexpr,
    R_NRUN: tl.constexpr, R_KC: tl.constexpr, FAST_MATH: tl.constexpr,
    COMPILED: tl.constexpr, INDEX32: tl.constexpr = False, KEEP_Y: tl.constexpr = False,
    KEEP_X: tl.constexpr = False,
):
    regression, k = program_role(tl.program_id(0), n_sem, n_reg)
    if regression:
        regressions_program(
            k, o_ptr, g_ptr, m_ptr, go_ptr, o_sb, o_sc, o_sh, o_sw, g_sb, g_sc, g_sh, g_sw,
            m_sb, m_sh, m_sw, go_sb, go_sc, go_sh, go_sw, d_ptr, z_ptr, gd_ptr, d_sb, d_sh,
            d_sw, z_sb, z_sh, z_sw, gd_sb, gd_sh, gd_sw, index_ptr, lam_ptr, start_ptr,
            part_ptr, n_parts, h, w, H, W, r_n_bands, r_n_strips, r_band_rows, r_strip_cells,
            grad_scale, HAS_INST, HAS_DEP, WRITE_GRAD, R_BLOCK_X, R_ROWS, R_NRUN, R_KC, False,
            COMPILED, KEEP_Y, KEEP_X)
    else:
        semantic_program(
            k, x_ptr, t_ptr, cw_ptr, gx_ptr, x_sb, x_sc, x_sh, x_sw, t_sb, t_sh, t_sw, gx_sb,
            gx_sc, gx_sh, gx_sw, ignore_index, o_ptr, g_ptr, m_ptr, go_ptr, o_sb, o_sc, o_sh,
            o_sw, g_sb, g_sc, g_sh, g_sw, m_sb, m_sh, m_sw, go_sb, go_sc, go_sh, go_sw, d_ptr,
            z_ptr, gd_ptr, d_sb, d_sh, d_sw, z_sb, z_sh, z_sw, gd_sb, gd_sh, gd_sw, index_ptr,
            lam_ptr, start_ptr, part_ptr, bad_ptr, n_parts, h, w, H, W, n_bands, n_strips,
            band_rows, strip_cells, grad_scale, C, True, HAS_WEIGHT, False, False, WRITE_GRAD,
            BLOCK_C, BLOCK_X, NRUN, KC, False, FAST_MATH, COMPILED, INDEX32, KEEP_Y, KEEP_X)
