"""Softmax cross-entropy of a tile of pixels, all classes of a pixel inside one thread.

The logits are NCHW: a class plane of the tile is BLOCK_P contiguous pixels. A
thread owns V adjacent pixels and every class of them, so the max, the sum and
the target gather over classes are register arithmetic: no shuffle, no shared
memory, no barrier. For a valid pixel p (label t_p in [0, C), not
ignore_index) with weight w_p = class_weight[t_p] (or 1) and the task's
gradient scale ``scale``:

    loss_p = w_p * (lse_p - x_p,t_p),         lse_p = log sum_c exp(x_pc)
    dx_pc  = ws_p * (softmax_pc - [c == t_p]), ws_p = scale * w_p

softmax_pc = exp(x_pc - lse_p), and softmax - 1 is formed in the accumulation
dtype before the gradient is rounded to its own. Other pixels have ws_p = 0,
so their gradient is 0 * softmax: 0, or NaN where the logits hold NaN or
+inf, as F.cross_entropy's log-softmax backward gives at an ignored pixel.

Three shapes of the class axis, chosen on the host (``fastmtl.ops``):
- ``planes_*`` (C x V logits fit the thread's register budget, C = 19): the C
  class planes of the tile are loaded once, as a tuple of C vectors (no padding
  of the class axis), and stay in registers; exp is evaluated twice (for the sum,
  then for the gradient) so that only the logits are held.
- ``pairs_*`` (16-bit logits, C up to 150, where the words align): the class planes in
  registers as 32-bit words of two adjacent pixels, twice the bytes in flight per
  register of one pixel per thread (docs/kernel.md, "Two pixels per word").
- ``sweeps_*`` (larger C, ADE20k's 150): chunks of CHUNK classes; a first sweep
  keeps a running max and sum, a second sweep in reverse chunk order (the
  chunks read last are the likeliest still in cache) writes the gradient.
"""
import triton
import triton.language as tl

from .casts import to_element

LOG2E = tl.constexpr(1.4426950408889634)
LN2 = tl.constexpr(0.6931471805599453)


@triton.jit
def labels_and_weights(t, cw_ptr, in_image, C, ignore_index, HAS_WEIGHT: tl.constexpr,
                       ACC: tl.constexpr):
    """(t, w) from the loaded labels: int32 labels, -1 where the pixel is not valid, and
    w_p (0 where not valid). The class-weight gather depends on the labels, so it comes
    after every other load of the tile has been issued."""
    # 64-bit compares only for labels that need them (bytes: the pre-pass's copy)
    t = t.to(tl.int32 if t.dtype.primitive_bitwidth < 32 else tl.int64)
    valid = in_image & (t != ignore_index) & (t >= 0) & (t < C)
    t = tl.where(valid, t, -1).to(tl.int32)  # no class is the target of an ignored pixel
    if HAS_WEIGHT:
        w = tl.load(cw_ptr + t, mask=valid, other=0.0).to(ACC)
    else:
        w = valid.to(ACC)
    return t, w


@triton.jit
def _rows(first, N: tl.constexpr):
    return first + tl.arange(0, N)


@triton.jit
def _exp(v):
    # exp(v) as 2^(v log2 e): in fp32 one multiply and the hardware ex2 (flushing
    # results below 2^-126 to 0); tl.exp adds a denormal fix-up to every call.
    # float64 goes through libdevice's exp2 at full precision.
    return tl.exp2(v * 1.4426950408889634)


@triton.jit
def _asm_load(ptr):
    # One element per thread through inline PTX: ld.global of 4 or 2 bytes, unconditional
    # (the caller points lanes off the image at a valid element: no predicate and no
    # zeroing per load; their values are never used). The compiler's coalescing pass costs
    # time quadratic in the loads and stores of a kernel whose values all depend on each
    # other (minutes at 150 class planes); an asm access is not one of its memory
    # operations. Lanes still read consecutive addresses.
    addr = tl.cast(ptr, tl.int64)
    ty = ptr.dtype.element_ty
    if ty.primitive_bitwidth == 32:
        v = tl.inline_asm_elementwise("ld.global.b32 $0, [$1];", "=r,l", [addr], dtype=tl.int32,
                                      is_pure=True, pack=1)
    else:
        v = tl.inline_asm_elementwise("ld.global.b16 $0, [$1];", "=h,l", [addr], dtype=tl.int16,
                                      is_pure=True, pack=1)
    return v.to(ty, bitcast=True)


@triton.jit
def _asm_store(ptr, value, mask):
    addr = tl.cast(ptr, tl.int64)
    on = mask.to(tl.int32)
    value = to_element(value, ptr)
    if ptr.dtype.element_ty.primitive_bitwidth == 32:
        tl.inline_asm_elementwise(
            "{ .reg .pred p; setp.ne.b32 p, $2, 0; mov.b32 $0, 0; @p st.global.b32 [$1], $3; }",
            "=r,l,r,r", [addr, on, value.to(tl.int32, bitcast=True)], dtype=tl.int32,
            is_pure=False, pack=1)
    else:
        tl.inline_asm_elementwise(
            "{ .reg .pred p; setp.ne.b32 p, $2, 0; mov.b32 $0, 0; @p st.global.b16 [$1], $3; }",
            "=r,l,r,h", [addr, on, value.to(tl.int16, bitcast=True)], dtype=tl.int32,
            is_pure=False, pack=1)


@triton.jit
def _store(ptr, value, mask, ASM: tl.constexpr):
    # value at ptr where mask, in ptr's dtype: through inline PTX when ASM
    if ASM:
        _asm_store(ptr, value, mask)
    else:
        tl.store(ptr, to_element(value, ptr), mask=mask)


@triton.jit
def planes_load(x_ptr, x_off, x_sc, in_image, CLASSES: tl.constexpr, ASM: tl.constexpr = False):
    """The tile's logits as a tuple of CLASSES class planes of BLOCK_P pixels: no
    padding of the class axis, every load a V-element access along the pixels.
    ASM (compiled, one pixel per thread): the loads go through inline PTX, lanes off the
    image reading the tensor's first elements instead."""
    xs = ()
    if ASM:
        x_off = tl.where(in_image, x_off, 0)
    # tl.cast, not .to(): a stride of 1 arrives as a Python int (Triton specialises it).
    for c in tl.static_range(CLASSES):
        p = x_ptr + x_off + c * tl.cast(x_sc, tl.int64)
        if ASM:
            xs = xs + (_asm_load(p),)
        else:
            xs = xs + (tl.load(p, mask=in_image, other=0.0),)
    return xs


@triton.jit
def _max(xs, CLASSES: tl.constexpr, ACC: tl.constexpr):
    m = xs[0].to(ACC)
    for c in tl.static_range(1, CLASSES):
        m = tl.maximum(m, xs[c].to(ACC))
    return m


@triton.jit
def _log_sum_exp(xs, t, m, CLASSES: tl.constexpr, ACC: tl.constexpr):
    """(lse_p, x_p,t_p) over the CLASSES planes ``xs`` whose max is m."""
    x_t = tl.zeros_like(m)
    s = tl.zeros_like(m)
    for c in tl.static_range(CLASSES):
        f = xs[c].to(ACC)
        x_t += tl.where(t == c, f, 0.0)
        s += _exp(f - m)
    return tl.log(s) + m, x_t


@triton.jit
def _softmax_grad(f, c, t, lse, ws):
    # softmax = exp(x - lse) is evaluated again rather than kept from the sum:
    # registers then hold the logits of the tile, not the logits and their exps.
    p = _exp(f - lse)
    return tl.where(t == c, p - 1.0, p) * ws


@triton.jit
def planes_step(xs, t, w, scale, gx_ptr, g_off, gx_sc, in_image, CLASSES: tl.constexpr,
                WRITE_GRAD: tl.constexpr, ACC: tl.constexpr, ASM: tl.constexpr = False):
    """Per-pixel w_p * loss_p of the tile loaded by ``planes_load``; stores dx."""
    lse, x_t = _log_sum_exp(xs, t, _max(xs, CLASSES, ACC), CLASSES, ACC)
    if WRITE_GRAD:
        ws = w * scale
        for c in tl.static_range(CLASSES):
            g = _softmax_grad(xs[c].to(ACC), c, t, lse, ws)
            _store(gx_ptr + g_off + c * tl.cast(gx_sc, tl.int64), g, in_image, ASM)
    return tl.where(t >= 0, w * (lse - x_t), 0.0)


# More classes than this held in registers (the one-read layout of large C): the target
# class is picked out after the class loops (``resident_step``), not inside them.
TARGET_LAST = tl.constexpr(64)


@triton.jit
def resident_step(xs, t, w, scale, x_ptr, x_off, x_sc, gx_ptr, g_off, gx_sc, in_image,
                  CLASSES: tl.constexpr, WRITE_GRAD: tl.constexpr, ACC: tl.constexpr,
                  SUM_CHUNK: tl.constexpr, ASM: tl.constexpr = False,
                  KEPT: tl.constexpr = False, half=0, SPLIT: tl.constexpr = False):
    """``planes_step`` for CLASSES > TARGET_LAST (one pixel per thread at C = 150), and the
    last value it computed (SPLIT: what the next round's loads wait for): no class
    compares its index with the label. The sum is a running one over chunks of planes
    (``_lse2``), each exponent one FMA in base 2; the target's logit is loaded again after the
    sum (from cache: the plane was just read) and its gradient ws * (softmax - 1) stored after
    the class loop, over the ws * softmax that loop wrote there (same thread, same address).
    KEPT (float32 logits): the sum's exponentials replace the logits in registers and the
    gradient is each one times its chunk's factor (``_kept_factors``): one multiply per class
    where it was an FMA and an exponential. SPLIT (``tile_split_pixels``): two neighbouring
    lanes share each pixel, lane ``half`` holding and writing planes half * CLASSES onwards
    (``xs``; x_off and g_off are the pixel's plane 0); the lse is both lanes', the target's
    gradient stored by the lane that wrote its plane, the loss counted by the first."""
    lse2, es, shifts = _lse2(xs, CLASSES, ACC, SUM_CHUNK, SPLIT)
    valid = in_image & (t >= 0)
    target = tl.where(valid, t, 0).to(tl.int64)
    if ASM:  # unconditional load: where not valid, plane 0 (clamped as ``planes_load``)
        x_t = _asm_load(x_ptr + tl.where(in_image, x_off, 0) + target * tl.cast(x_sc, tl.int64))
    else:
        x_t = tl.load(x_ptr + x_off + target * tl.cast(x_sc, tl.int64), mask=valid, other=0.0)
    x_t = tl.where(valid, x_t.to(ACC), 0.0)
    if WRITE_GRAD:
        ws = w * scale
        if KEPT:
            factors = _kept_factors(shifts, lse2, ws, (CLASSES + SUM_CHUNK - 1) // SUM_CHUNK)
        planes = g_off
        owner = valid
        if SPLIT:  # this lane's first plane; the target's written by the lane that wrote it
            planes = g_off + half.to(tl.int64) * CLASSES * tl.cast(gx_sc, tl.int64)
            owner = valid & ((t >= CLASSES) == (half == 1))
        for c in tl.static_range(CLASSES):
            if KEPT:
                g = es[c] * factors[c // SUM_CHUNK]
            else:
                g = tl.exp2(xs[c].to(ACC) * LOG2E - lse2) * ws
            _store(gx_ptr + planes + c * tl.cast(gx_sc, tl.int64), g, in_image, ASM)
        g = (tl.exp2(x_t * LOG2E - lse2) - 1.0) * ws
        _store(gx_ptr + g_off + target * tl.cast(gx_sc, tl.int64), g, owner, ASM)
    losses = tl.where(t >= 0, w * (lse2 * LN2 - x_t), 0.0)
    if SPLIT:
        losses = tl.where(half == 0, losses, 0.0)
    # and the last value stored (or the lse), for a next round's loads to wait for
    return losses, (g if WRITE_GRAD else lse2)


@triton.jit
def tile_pairs(tile, tiles_per_image, HW, BLOCK_P: tl.constexpr):
    """The first pixels q (even) of the BLOCK_P // 2 pixel pairs (q, q + 1) of a tile, one
    pair per thread, and whether the pair is in the image (HW is even: ``pairs_*``)."""
    image = tile // tiles_per_image
    q = (tile - image * tiles_per_image) * BLOCK_P + 2 * tl.arange(0, BLOCK_P // 2)
    return q.to(tl.int64), q < HW


@triton.jit
def tile_split_pairs(tile, tiles_per_image, HW, BLOCK_P: tl.constexpr):
    """``tile_pairs`` for pairs split between two adjacent threads (``pairs_step``, SPLIT):
    the BLOCK_P // 2 pairs of a tile of BLOCK_P pixels, thread i taking pair i // 2 and the
    class half i % 2 (returned as ``half``); lanes of one pair are neighbours in a warp."""
    image = tile // tiles_per_image
    i = tl.arange(0, BLOCK_P)
    q = (tile - image * tiles_per_image) * BLOCK_P + 2 * (i // 2)
    return q.to(tl.int64), q < HW, i % 2


@triton.jit
def tile_split_pixels(tile, tiles_per_image, HW, BLOCK_P: tl.constexpr, ROUND: tl.constexpr):
    """Pixels of a tile of BLOCK_P split between two adjacent threads (``resident_step``,
    SPLIT), half of them per round: thread i takes pixel ROUND * BLOCK_P / 2 + i // 2 of the
    tile and the class half i % 2 (returned as ``half``)."""
    image = tile // tiles_per_image
    i = tl.arange(0, BLOCK_P)
    q = (tile - image * tiles_per_image) * BLOCK_P + ROUND * (BLOCK_P // 2) + i // 2
    return q.to(tl.int64), q < HW, i % 2


@triton.jit
def _partner(v, MAX: tl.constexpr):
    # the max (MAX) or the sum of v over the two lanes of a split pair: one SHFL.BFLY each
    N: tl.constexpr = v.shape[0]
    pairs = tl.reshape(v, [N // 2, 2])
    both = tl.max(pairs, 1) if MAX else tl.sum(pairs, 1)
    return tl.reshape(tl.broadcast_to(both[:, None], [N // 2, 2]), [N])


@triton.jit
def _words(ptr):
    return ptr.to(tl.pointer_type(tl.int32), bitcast=True)


@triton.jit
def pairs_words(x_ptr, x_off, x_sc, in_pair, CLASSES: tl.constexpr, ASM: tl.constexpr = False):
    """16-bit logits, two pixels per thread in one 32-bit word: ``planes_load`` on the
    logits seen as int32 (x_off and x_sc are even, pixels adjacent), each plane a 4-byte
    access. Twice the bytes in flight per register of one pixel per thread."""
    return planes_load(_words(x_ptr), x_off >> 1, x_sc >> 1, in_pair, CLASSES, ASM)


@triton.jit
def _half(x, HALF: tl.constexpr, TY: tl.constexpr):
    """The float32 value of the low (HALF 1) or high (HALF 2) 16 bits, of type TY, of the
    32-bit word x of a pixel pair (bf16 widens by a shift)."""
    if TY == tl.bfloat16:
        return (x << 16 if HALF == 1 else x & -65536).to(tl.float32, bitcast=True)
    else:
        bits = x & 0xFFFF if HALF == 1 else x >> 16
        return bits.to(tl.int16).to(TY, bitcast=True).to(tl.float32)


@triton.jit
def _bits(g, TY: tl.constexpr):
    # g rounded to TY, as the low 16 bits of an int32
    return g.to(TY).to(tl.int16, bitcast=True).to(tl.int32) & 0xFFFF


@triton.jit
def _pack(lo, hi, TY: tl.constexpr, ASM: tl.constexpr):
    # The word of two float32 gradients rounded to TY (round to nearest even, as .to(TY)):
    # one cvt of both when compiled.
    if ASM:
        op: tl.constexpr = "cvt.rn.bf16x2.f32" if TY == tl.bfloat16 else "cvt.rn.f16x2.f32"
        return tl.inline_asm_elementwise(op + " $0, $2, $1;", "=r,f,f", [lo, hi],
                                         dtype=tl.int32, is_pure=True, pack=1)
    else:
        return _bits(lo, TY) | (_bits(hi, TY) << 16)


@triton.jit
def _pair_max(a, b, TY: tl.constexpr):
    # Both pixels' maxima at once, on the 16-bit values themselves (exact; a NaN loses to a
    # number, as tl.maximum's). No unpacked logit is formed, so none stays live until the sum.
    op: tl.constexpr = "max.bf16x2" if TY == tl.bfloat16 else "max.f16x2"
    return tl.inline_asm_elementwise(op + " $0, $1, $2;", "=r,r,r", [a, b], dtype=tl.int32,
                                     is_pure=True, pack=1)


@triton.jit
def _half_again(x, HALF: tl.constexpr, TY: tl.constexpr):
    # ``_half`` for the gradient, by a byte permute the compiler cannot merge with the
    # sum's shift: merged, the 2 x CLASSES unpacked logits would stay live from the sum to
    # the gradient (twice the registers of the words, spilled).
    if TY == tl.bfloat16:
        sel: tl.constexpr = "0x1044" if HALF == 1 else "0x3244"  # bytes 0-1 or 2-3 high
        bits = tl.inline_asm_elementwise("prmt.b32 $0, $1, 0, " + sel + ";", "=r,r", [x],
                                         dtype=tl.int32, is_pure=True, pack=1)
        return bits.to(tl.float32, bitcast=True)
    else:
        sel: tl.constexpr = "0x4410" if HALF == 1 else "0x4432"  # bytes 0-1 or 2-3 low
        bits = tl.inline_asm_elementwise("prmt.b32 $0, $1, 0, " + sel + ";", "=r,r", [x],
                                         dtype=tl.int32, is_pure=True, pack=1)
        return bits.to(tl.int16).to(TY, bitcast=True).to(tl.float32)


# Classes per step of the one-read layouts' running max and sum (the kernel's SUM_CHUNK
# default; the library passes fused_layout.SUM_CHUNK): each step's exponentials wait only
# for the loads of its planes (and those sharing their scoreboards), so the sum proceeds
# while the later planes arrive (docs/kernel.md, "The sum as the planes arrive").
# SUM_CHUNK >= CLASSES: one max over every plane, then one sum (the library's choice).
ONLINE_CHUNK = 16


@triton.jit
def _plane(x, HALF: tl.constexpr, TY: tl.constexpr, ACC: tl.constexpr):
    # a class plane's values in ACC: the plane itself (HALF 0), or one pixel of each pair
    if HALF == 0:
        return x.to(ACC)
    else:
        return _half(x, HALF, TY)


@triton.jit
def _chunk_max(xs, first: tl.constexpr, CLASSES: tl.constexpr, HALF: tl.constexpr,
               TY: tl.constexpr, ACC: tl.constexpr, SUM_CHUNK: tl.constexpr):
    last: tl.constexpr = min(CLASSES, first + SUM_CHUNK)
    m = _plane(xs[first], HALF, TY, ACC)
    for c in tl.static_range(first + 1, last):
        m = tl.maximum(m, _plane(xs[c], HALF, TY, ACC))
    return m


@triton.jit
def _packed_chunk_max(words, first: tl.constexpr, CLASSES: tl.constexpr, TY: tl.constexpr,
                      SUM_CHUNK: tl.constexpr):
    # both pixels' maxima on the packed words (``_pair_max``), unpacked once
    last: tl.constexpr = min(CLASSES, first + SUM_CHUNK)
    m = words[first]
    for c in tl.static_range(first + 1, last):
        m = _pair_max(m, words[c], TY)
    return _half(m, 1, TY), _half(m, 2, TY)


@triton.jit
def _shift(m):
    # the base-2 exponent shift for a running max m: m log2(e); 0 while every logit so far
    # is -inf, so that their exponentials are 0, not NaN
    return tl.where(m > float("-inf"), m * LOG2E, 0.0)


@triton.jit
def _rescale(s, m, chunk_max, BIAS: tl.constexpr):
    """(s, m, shift) for the next chunk of a running max and sum: m the max with the chunk's,
    the sum s so far moved to its shift, and shift = _shift(m) - BIAS, the shift of the
    chunk's terms (each then at most 2^BIAS, and s 2^BIAS times the sum at _shift(m))."""
    m_new = tl.maximum(m, chunk_max)
    shift = _shift(m_new)
    # the sum so far at the new shift: m log2 e is the old shift (0 where s is 0: m = -inf)
    s = s * tl.exp2(m * LOG2E - shift)
    if BIAS != 0:
        shift = shift - BIAS
    return s, m_new, shift


@triton.jit
def _lse2(xs, CLASSES: tl.constexpr, ACC: tl.constexpr, SUM_CHUNK: tl.constexpr,
          SPLIT: tl.constexpr = False):
    """(lse2, es, shifts): lse_p / ln 2 over the CLASSES planes ``xs``, by a running max and
    sum over chunks of SUM_CHUNK planes. The exponent of a logit is one FMA, x log2(e) -
    shift, and the shift comes back in the lse: the gradient's softmax does not see its
    rounding. es[c] = 2^(x_c log2 e - shifts[k]) for plane c of chunk k (at most 1: a
    chunk's shift is the running max after it), what the sum added, for a gradient that
    keeps them (``_kept_factors``). SPLIT: ``xs`` are one half of each pixel's planes, the
    other half in the neighbouring lane; one max over both lanes, then each lane's sum,
    added to its neighbour's."""
    tl.static_assert(not SPLIT or SUM_CHUNK >= CLASSES)
    m = tl.full(xs[0].shape, float("-inf"), ACC)
    s = tl.zeros_like(m)
    es = ()
    shifts = ()
    for k in tl.static_range((CLASSES + SUM_CHUNK - 1) // SUM_CHUNK):
        chunk_max = _chunk_max(xs, k * SUM_CHUNK, CLASSES, 0, ACC, ACC, SUM_CHUNK)
        if SPLIT:
            chunk_max = _partner(chunk_max, True)
        s, m, shift = _rescale(s, m, chunk_max, 0)
        for c in tl.static_range(k * SUM_CHUNK, min(CLASSES, (k + 1) * SUM_CHUNK)):
            e = tl.exp2(xs[c].to(ACC) * LOG2E - shift)
            s += e
            es = es + (e,)  # dead code where the gradient does not keep them
        shifts = shifts + (shift,)
    if SPLIT:
        s = _partner(s, False)
    return tl.log2(s) + _shift(m), es, shifts


@triton.jit
def _kept_factors(shifts, lse2, ws, CHUNKS: tl.constexpr):
    # ws * softmax = es[c] * 2^(shift_k - lse2) * ws: one factor per chunk, at most ws (the
    # sum is at least 1), 0 where the chunk's max lies far below the final one. A chunk of
    # -inf only kept 0s under the shift 0 (``_shift``): its factor is ws, not 2^(0 - lse2),
    # which overflows where every max is far below 0; an lse2 of -inf (no finite logit) or
    # NaN keeps 2^(inf) or NaN, so that 0 * factor is NaN there, as the exponentials were.
    factors = ()
    for k in tl.static_range(CHUNKS):
        d = shifts[k] - lse2
        d = tl.where((d > 0.0) & (lse2 > float("-inf")), 0.0, d)
        factors = factors + (tl.exp2(d) * ws,)
    return factors


# The pairs' kept exponentials are float16, two to a word, each 2^KEPT_BIAS times the
# float32 term: at most 2^15 (float16 reaches 65504), normal down to terms of 2^-29 (11 bits,
# 2^-11 relative: an eighth of a unit of the bf16 gradient it is multiplied into) and 0
# below 2^-40 (an absolute error of at most 2^-40 ws where the softmax is that small).
KEPT_BIAS = tl.constexpr(15)


@triton.jit
def _pair_lse2(words, TY: tl.constexpr, CLASSES: tl.constexpr, ASM: tl.constexpr,
               SUM_CHUNK: tl.constexpr, KEPT: tl.constexpr = False, zero=0,
               SPLIT: tl.constexpr = False):
    """``_lse2`` of both pixels of each pair: (lse_lo, lse_hi, es, shifts_lo, shifts_hi).
    ASM (compiled): each chunk's max on the packed words, so that no unpacked logit is
    formed before the sum. KEPT: es[c] holds the two terms of word c as float16 (low pixel
    in the low half), biased by KEPT_BIAS (the shifts are too), packed as soon as they are
    taken, so that each replaces its word in registers. SPLIT: ``words`` are one half of
    each pair's classes, the other half in the neighbouring lane; one max (SUM_CHUNK >=
    CLASSES), taken over both lanes, then each lane's sum, added to its neighbour's."""
    tl.static_assert(not SPLIT or SUM_CHUNK >= CLASSES)
    BIAS: tl.constexpr = KEPT_BIAS if KEPT else 0
    m_lo = tl.full(words[0].shape, float("-inf"), tl.float32)
    m_hi = m_lo
    s_lo = tl.zeros_like(m_lo)
    s_hi = s_lo
    es = ()
    shifts_lo = ()
    shifts_hi = ()
    for k in tl.static_range((CLASSES + SUM_CHUNK - 1) // SUM_CHUNK):
        if ASM:
            cm_lo, cm_hi = _packed_chunk_max(words, k * SUM_CHUNK, CLASSES, TY, SUM_CHUNK)
        else:
            cm_lo = _chunk_max(words, k * SUM_CHUNK, CLASSES, 1, TY, tl.float32, SUM_CHUNK)
            cm_hi = _chunk_max(words, k * SUM_CHUNK, CLASSES, 2, TY, tl.float32, SUM_CHUNK)
        if SPLIT:
            cm_lo = _partner(cm_lo, True)
            cm_hi = _partner(cm_hi, True)
        s_lo, m_lo, shift_lo = _rescale(s_lo, m_lo, cm_lo, BIAS)
        s_hi, m_hi, shift_hi = _rescale(s_hi, m_hi, cm_hi, BIAS)
        for c in tl.static_range(k * SUM_CHUNK, min(CLASSES, (k + 1) * SUM_CHUNK)):
            e_lo = tl.exp2(_half(words[c], 1, TY) * LOG2E - shift_lo)
            e_hi = tl.exp2(_half(words[c], 2, TY) * LOG2E - shift_hi)
            if KEPT:
                es = es + (_pack(e_lo, e_hi, tl.float16, ASM),)
                if ASM:  # packed here, not where the gradient needs it (300 float32 live)
                    e_lo = _after(e_lo, es[c], zero)
            s_lo += e_lo
            s_hi += e_hi
        shifts_lo = shifts_lo + (shift_lo,)
        shifts_hi = shifts_hi + (shift_hi,)
    if SPLIT:
        s_lo = _partner(s_lo, False)
        s_hi = _partner(s_hi, False)
    return (tl.log2(s_lo) + (_shift(m_lo) - BIAS), tl.log2(s_hi) + (_shift(m_hi) - BIAS), es,
            shifts_lo, shifts_hi)


@triton.jit
def _after(x, y, zero):
    # x, but only once y is formed: x | (y & zero), one LOP3, zero a runtime 0. ptxas
    # schedules by data dependence alone; this is how the kept words keep their order.
    bits = tl.inline_asm_elementwise("lop3.b32 $0, $1, $2, $3, 0xF8;", "=r,r,r,r",
                                     [x.to(tl.int32, bitcast=True), y, zero], dtype=tl.int32,
                                     is_pure=True, pack=1)
    return bits.to(x.dtype, bitcast=True)


# Every KEPT_FENCE-th kept word of the gradient waits for the gradient word before it
# (``_after``): left free, ptxas unpacks dozens of words ahead, grouping the multiplies by
# each pixel's factor, and spills (sm_90a, C = 150: 384 bytes; with the fence none).
KEPT_FENCE = tl.constexpr(16)


@triton.jit
def _kept_half(word, HALF: tl.constexpr, ASM: tl.constexpr):
    # the float32 value of one float16 half of a kept word: one HADD2.F32 when compiled
    if ASM:
        half: tl.constexpr = "l" if HALF == 1 else "h"
        return tl.inline_asm_elementwise(
            "{ .reg .b16 l, h; mov.b32 {l, h}, $1; cvt.f32.f16 $0, " + half + "; }", "=f,r",
            [word], dtype=tl.float32, is_pure=True, pack=1)
    return _half(word, HALF, tl.float16)


@triton.jit
def _pair_grad(f, lse2, ws):
    # ws * softmax, the gradient of every class but the target (``_pair_target``)
    return tl.exp2(f * LOG2E - lse2) * ws


@triton.jit
def _target_half(words, stride, t, valid, HALF: tl.constexpr, TY: tl.constexpr):
    # The 16-bit element of plane t in the pair's words (words: its plane-0 word), as a
    # pointer; plane 0 where not ``valid``. From the same base as the planes' words, so that
    # their addresses stay one multiply-add each.
    word = words + tl.where(valid, t, 0).to(tl.int64) * stride
    return word.to(tl.pointer_type(TY), bitcast=True) + (HALF - 1)


@triton.jit
def _pair_target(words, stride, t, in_pair, HALF: tl.constexpr, TY: tl.constexpr,
                 ASM: tl.constexpr):
    """x_p,t_p of one pixel of each pair, by one 2-byte load where the label is a class: the
    plane was just read, so it comes from cache. With the target found this way no class
    of the loops compares its index with the label (two compares and two selects per class
    and pixel fewer)."""
    valid = in_pair & (t >= 0)
    ptr = _target_half(words, stride, t, valid, HALF, TY)
    if ASM:  # unconditional: where not valid it reads plane 0 (of the tensor's first pair
        # for a pair off the image, as ``planes_load``)
        return tl.where(valid, _asm_load(ptr).to(tl.float32), 0.0)
    return tl.load(ptr, mask=valid, other=0.0).to(tl.float32)


@triton.jit
def _store_target_grad(words, stride, t, x_t, lse2, ws, owner, HALF: tl.constexpr,
                       TY: tl.constexpr, ASM: tl.constexpr):
    # ws * (softmax - 1) at the target class, over the ws * softmax the plane's word store
    # wrote there before (same thread, same address: program order), as one 2-byte store;
    # the other classes' arithmetic, then one FMA. ``owner``: the pairs of this thread
    # whose target plane it wrote.
    valid = owner & (t >= 0)
    g = tl.exp2(x_t * LOG2E - lse2) * ws - ws
    _store(_target_half(words, stride, t, valid, HALF, TY), g, valid, ASM)


@triton.jit
def pairs_step(words, t_lo, w_lo, t_hi, w_hi, scale, x_ptr, x_off, x_sc, gx_ptr, g_off, gx_sc,
               in_pair, CLASSES: tl.constexpr, WRITE_GRAD: tl.constexpr, TY: tl.constexpr,
               SUM_CHUNK: tl.constexpr, ASM: tl.constexpr = False, KEPT: tl.constexpr = False,
               half=0, SPLIT: tl.constexpr = False):
    """``planes_step`` for the pixel pairs of ``pairs_words`` (float32 arithmetic): per
    pair, the sum of its two pixels' w_p * loss_p; stores dx two pixels to a 32-bit word.
    The low and high pixels' sums over classes are independent chains: a thread has twice
    the work to interleave. ASM (compiled): the max on packed values, the gradient's
    unpacking and packing through inline PTX, so that registers hold the CLASSES words and
    little else. The target class is not picked out inside the class loops: its logit is
    loaded again (``_pair_target``) and its gradient stored again after them
    (``_store_target_grad``). KEPT (bf16 logits): the sum's exponentials, as float16 pairs
    (``_pair_lse2``), replace the words, and each gradient is one of them times its chunk's
    factor (``_kept_factors``), rounded once to bf16: half the MUFU.EX2 of the tile.
    SPLIT (CLASSES even): two neighbouring lanes share each pair (``tile_split_pairs``),
    lane ``half`` holding and writing planes half * CLASSES / 2 onwards (``words``; x_off is
    the pair's plane 0, g_off the lane's first plane); the lse is both lanes', and the first
    lane counts the pair's loss."""
    WORDS: tl.constexpr = CLASSES // 2 if SPLIT else CLASSES
    zero = (tl.cast(x_sc, tl.int64) >> 62).to(tl.int32)  # no class stride reaches 2^62
    lse_lo, lse_hi, es, shifts_lo, shifts_hi = _pair_lse2(words, TY, WORDS, ASM, SUM_CHUNK,
                                                          KEPT, zero, SPLIT)
    x_words = _words(x_ptr) + (tl.where(in_pair, x_off >> 1, 0) if ASM else x_off >> 1)
    x_stride = tl.cast(x_sc, tl.int64) >> 1
    x_t_lo = _pair_target(x_words, x_stride, t_lo, in_pair, 1, TY, ASM)
    x_t_hi = _pair_target(x_words, x_stride, t_hi, in_pair, 2, TY, ASM)
    if WRITE_GRAD:
        ws_lo = w_lo * scale
        ws_hi = w_hi * scale
        base = _words(gx_ptr) + (g_off >> 1)
        stride = tl.cast(gx_sc, tl.int64) >> 1
        planes = base
        if SPLIT:  # g_off: this lane's first plane; base: the pair's plane 0, for the target
            stride = tl.cast(gx_sc >> 1, tl.int64)  # 32 bits: one IMAD.WIDE per plane
            base = planes - half * WORDS * stride
        if KEPT:
            chunks: tl.constexpr = (WORDS + SUM_CHUNK - 1) // SUM_CHUNK
            factors_lo = _kept_factors(shifts_lo, lse_lo, ws_lo, chunks)
            factors_hi = _kept_factors(shifts_hi, lse_hi, ws_hi, chunks)
        prev = zero
        for c in tl.static_range(WORDS):
            if KEPT:
                e = es[c]
                if ASM and c % KEPT_FENCE == 0 and c > 0:
                    e = _after(e, prev, zero)
                g_lo = _kept_half(e, 1, ASM) * factors_lo[c // SUM_CHUNK]
                g_hi = _kept_half(e, 2, ASM) * factors_hi[c // SUM_CHUNK]
            else:
                if ASM:
                    f_lo = _half_again(words[c], 1, TY)
                    f_hi = _half_again(words[c], 2, TY)
                else:
                    f_lo = _half(words[c], 1, TY)
                    f_hi = _half(words[c], 2, TY)
                g_lo = _pair_grad(f_lo, lse_lo, ws_lo)
                g_hi = _pair_grad(f_hi, lse_hi, ws_hi)
            prev = _pack(g_lo, g_hi, TY, ASM)
            _store(planes + c * stride, prev, in_pair, ASM)
        owner_lo, owner_hi = in_pair, in_pair
        if SPLIT:  # the lane that wrote the target's plane
            owner_lo = in_pair & ((t_lo >= WORDS) == (half == 1))
            owner_hi = in_pair & ((t_hi >= WORDS) == (half == 1))
        _store_target_grad(base, stride, t_lo, x_t_lo, lse_lo, ws_lo, owner_lo, 1, TY, ASM)
        _store_target_grad(base, stride, t_hi, x_t_hi, lse_hi, ws_hi, owner_hi, 2, TY, ASM)
    losses = (tl.where(t_lo >= 0, w_lo * (lse_lo * LN2 - x_t_lo), 0.0)
              + tl.where(t_hi >= 0, w_hi * (lse_hi * LN2 - x_t_hi), 0.0))
    return tl.where(half == 0, losses, 0.0) if SPLIT else losses


@triton.jit
def target_logit(x_ptr, x_off, x_sc, t, in_image):
    """x_p,t_p by one direct load per valid pixel (large C: no select over all classes)."""
    return tl.load(x_ptr + x_off + t.to(tl.int64) * x_sc, mask=in_image & (t >= 0), other=0.0)


@triton.jit
def _chunk_load(x_ptr, x_off, x_sc, first, in_image, C, CHUNK: tl.constexpr):
    """Class planes first .. first + CHUNK - 1 of the tile as a tuple of CHUNK vectors
    (rows past C masked off): issued together, every load a V-element access."""
    xs = ()
    for c in tl.static_range(CHUNK):
        row = first + c
        xs = xs + (tl.load(x_ptr + x_off + row.to(tl.int64) * x_sc, mask=in_image & (row < C),
                           other=0.0),)
    return xs


@triton.jit
def sweeps_step(x_ptr, x_off, x_sc, x_t, t, w, scale, gx_ptr, g_off, gx_sc, in_image, C,
                CHUNK: tl.constexpr, NUM_CHUNKS: tl.constexpr, BLOCK_P: tl.constexpr,
                WRITE_GRAD: tl.constexpr, ACC: tl.constexpr, STAGES: tl.constexpr = 1):
    """Per-pixel w_p * loss_p over NUM_CHUNKS chunks of CHUNK classes; stores dx.

    A chunk is a tuple of CHUNK class planes of the tile, as in ``planes_*``, not a
    [CHUNK, BLOCK_P] block: the running max and sum are elementwise over the planes, so
    the layout is the pixels' own (V per thread) for any V. (A 2-D block at V = 1 has
    no contiguous axis and the compiler may spread the classes over lanes: shuffles,
    shared memory, uncoalesced loads.)

    STAGES > 1 software-pipelines both chunk loops (each its own ``num_stages``: the
    kernel's num_stages does not reach loops nested in the tile loop): the next chunks'
    planes are copied to shared memory asynchronously (cp.async) while this one is
    reduced, more bytes in flight per thread for more registers and shared memory."""
    m = tl.full([BLOCK_P], float("-inf"), ACC)
    s = tl.zeros([BLOCK_P], ACC)
    for k in tl.range(NUM_CHUNKS, num_stages=STAGES):
        first = k * CHUNK
        xs = _chunk_load(x_ptr, x_off, x_sc, first, in_image, C, CHUNK)
        m_new = m
        for c in tl.static_range(CHUNK):
            # classes past C add nothing
            m_new = tl.maximum(m_new, tl.where(first + c < C, xs[c].to(ACC), float("-inf")))
        # the shift is 0 while every logit so far is -inf (their exponentials are then 0,
        # not NaN); the sum so far is rescaled by exp(m - shift), 0 where m = -inf (s = 0)
        shift = tl.where(m_new > float("-inf"), m_new, 0.0)
        s = s * _exp(m - shift)
        for c in tl.static_range(CHUNK):
            s += _exp(tl.where(first + c < C, xs[c].to(ACC), float("-inf")) - shift)
        m = m_new
    lse = tl.log(s) + tl.where(m > float("-inf"), m, 0.0)
    if WRITE_GRAD:
        ws = w * scale
        for j in tl.range(NUM_CHUNKS, num_stages=STAGES):
            first = (NUM_CHUNKS - 1 - j) * CHUNK
            xs = _chunk_load(x_ptr, x_off, x_sc, first, in_image, C, CHUNK)
            for c in tl.static_range(CHUNK):
                row = first + c
                p = _exp(xs[c].to(ACC) - lse)
                g = tl.where(t == row, p - 1.0, p) * ws
                tl.store(gx_ptr + g_off + row.to(tl.int64) * gx_sc, to_element(g, gx_ptr),
                         mask=in_image & (row < C))
    return tl.where(t >= 0, w * (lse - x_t.to(ACC)), 0.0)
