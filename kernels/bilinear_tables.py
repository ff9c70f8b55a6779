"""Bilinear interpolation tables: PyTorch's upsample_bilinear2d weights, per axis.

Per axis (n_in -> n_out, output index o), as PyTorch computes them:

    align_corners=False: src = max(0, (n_in / n_out) * (o + 0.5) - 0.5)
    align_corners=True:  src = ((n_in - 1) / (n_out - 1)) * o        (0 when n_out == 1)
    i0 = min(floor(src), n_in - 1),  i1 = min(i0 + 1, n_in - 1), or i0 where n_in == n_out
    lam = src - i0 (clamped to [0, 1]),  weights (1 - lam) on i0 and lam on i1

in the accumulation dtype (float32, or float64 for float64 inputs). Where i0 = n_in - 1,
and on an axis the upsampling keeps, both taps are the same cell, with PyTorch's weights
(1 - lam, lam): a non-finite value there never meets a zero weight on a neighbour's cell.
The tables hold i0 and lam; the loss kernels form i1 (``upsample_loss.second_tap``).

Ownership: output index o belongs to the input index i0(o) of its first tap. i0 never
decreases along an axis, so the outputs owned by input index a form the run
[start[a], start[a + 1]). ``axis_table_kernel`` writes i0, lam and start for rows and
columns; the loss kernel walks runs of rows and columns from these tables.
"""
import triton
import triton.language as tl

__all__ = ["axis_table_kernel"]


@triton.jit
def _axis_table(index_ptr, lam_ptr, start_ptr, n_in, n_out, search_steps,
                ALIGN_CORNERS: tl.constexpr, ACC_FP64: tl.constexpr, BLOCK: tl.constexpr):
    # Phase 1, o in [0, n_out): i0(o) into index_ptr, lam(o) into lam_ptr (formulas above).
    # Phase 2, a in [0, n_in]: start[a] = first o with i0(o) >= a (binary search of the
    # stored i0, so ownership and weights come from the same rounded src).
    ACC: tl.constexpr = tl.float64 if ACC_FP64 else tl.float32
    lanes = tl.arange(0, BLOCK)
    if ALIGN_CORNERS:
        num = (n_in - 1).to(ACC)
        den = tl.maximum(n_out - 1, 1).to(ACC)
    else:
        num = n_in.to(ACC)
        den = n_out.to(ACC)
    if ACC_FP64:
        scale = num / den  # IEEE division in float64
    else:
        scale = tl.math.div_rn(num, den)  # correctly rounded, as the C++ float division
    if ALIGN_CORNERS:
        scale = tl.where(n_out > 1, scale, 0.0)
    o0 = 0
    while o0 < n_out:
        o = o0 + lanes
        in_axis = o < n_out
        if ALIGN_CORNERS:
            src = scale * o.to(ACC)
        else:
            src = tl.maximum(scale * (o.to(ACC) + 0.5) - 0.5, 0.0)
        i0 = tl.minimum(src.to(tl.int32), n_in - 1)  # src >= 0: truncation is floor
        lam = tl.minimum(tl.maximum(src - i0.to(ACC), 0.0), 1.0)
        tl.store(index_ptr + o, i0, mask=in_axis)
        tl.store(lam_ptr + o, lam, mask=in_axis)
        o0 += BLOCK
    tl.debug_barrier()  # phase 2 reads what phase 1 stored (one program per axis)
    a0 = 0
    while a0 <= n_in:
        a = a0 + lanes
        lo = tl.zeros([BLOCK], tl.int32)
        hi = tl.zeros([BLOCK], tl.int32) + n_out
        step = 0
        while step < search_steps:
            mid = (lo + hi) // 2
            open_range = lo < hi
            at_mid = tl.load(index_ptr + mid, mask=open_range & (mid < n_out), other=n_in)
            right = at_mid >= a
            hi = tl.where(open_range & right, mid, hi)
            lo = tl.where(open_range & (right == 0), mid + 1, lo)
            step += 1
        tl.store(start_ptr + a, lo, mask=a <= n_in)
        a0 += BLOCK


@triton.jit
def axis_table_kernel(index_ptr, lam_ptr, start_ptr, h, H, w, W, steps_y, steps_x,
                      ALIGN_CORNERS: tl.constexpr, ACC_FP64: tl.constexpr, BLOCK: tl.constexpr):
    # Program 0: rows (h -> H), entries [0, H) of index/lam and [0, h + 1) of start.
    # Program 1: columns (w -> W), entries [H, H + W) and [h + 1, h + w + 2).
    if tl.program_id(0) == 0:
        _axis_table(index_ptr, lam_ptr, start_ptr, h, H, steps_y, ALIGN_CORNERS, ACC_FP64, BLOCK)
    else:
        _axis_table(index_ptr + H, lam_ptr + H, start_ptr + h + 1, w, W, steps_x,
                    ALIGN_CORNERS, ACC_FP64, BLOCK)
