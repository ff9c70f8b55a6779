"""Launch geometry of the fused pass, from shapes, strides and dtypes alone.

A ``Problem`` holds what the fused op's launches need besides the tensors: the
pixels per thread (V), the class layout (all classes in registers, or two sweeps
over chunks), the grid and each tensor's strides. No tensor data is read and no
tensor is kept, so one problem serves every call with the same launch key
(``fastmtl.ops.common.launch_key``). docs/kernel.md explains the choices.
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

import fastmtl.kernels as K
from fastmtl.ops.common import (bchw_strides, bhw_strides, can_cap, cdiv, interpreted,
                                is_real, next_power_of_2)

MAX_BLOCK_C = 256       # most classes held in registers per pixel; more take two sweeps
REGISTER_LOGITS = 80    # most registers of logits per thread (C x V, fp64 counts twice)
RESIDENT_CLASSES = 150  # most classes of the one-read layout (fp32, one pixel per thread)
COMPACT_LABELS = True   # the pre-pass leaves one-byte labels for the fused pass (C <= 255)
RESIDENT_PAIRS = True   # 16-bit logits read once too, as words of two pixels (C > 80)
SUM_CHUNK = 256         # planes per step of the one-read layouts' max and sum: one max over
                        # every plane, then one sum (measured on an H200: the pixel pairs 10%
                        # faster than steps of 16; fp32 2.3% faster with its kept exponentials)
KEPT_EXPS = True        # the one-read fp32 layout keeps the sum's exponentials for the
                        # gradient: half the exponentials
KEPT_PAIRS = True       # and the bf16 pixel pairs, as float16 pairs (measured on an H200
                        # at C = 150: the pairs 5% faster than taking them again; split,
                        # under SPLIT_KEPT_REGISTERS, 0.704 ms against 0.728)
SPLIT_PAIRS = True      # each pixel pair's planes split between two threads, half the
                        # registers per thread, 4 programs per SM (even C; measured on an
                        # H200 at C = 150: 0.728 ms against 0.855 ms for the pairs)
SPLIT_CLASSES = 138     # the split from this C on: a pair per thread keeps two programs per
                        # SM from here (sm_90a, exponentials kept: 182 registers at C = 138,
                        # 168 and three programs at 136); below, the split's per-pixel work,
                        # done by both threads, costs instructions for fewer programs gained
SPLIT_PLANES = False    # the one-read fp32 layout with each pixel's planes split between two
                        # threads, the tile's pixels in two rounds (even C; not yet timed)
SPLIT_KEPT_REGISTERS = 128  # register cap of the split pairs keeping their exponentials
                        # (138 uncapped, 3 programs per SM; capped, 4 and no spills, sm_90a)
SWEEP_CHUNK = 16        # classes per chunk of the two sweeps
SWEEP_VECTOR = 2        # most pixels per thread of the sweeps (bf16: 4-byte accesses)
ACCESS_BYTES = 8        # bytes a thread moves per plane and tile: V = 8 / element size
FUSED_WARPS = 4
FUSED_PROGRAMS = 16384  # most programs of the fused pass: small tail wave, 2-4 tiles each
ONE_TILE = True         # the one-read layouts: one program per tile at any size, no tile
                        # loop (C = 150 fp32: 1696 instructions per tile against 2064;
                        # measured on an H200: 1.396 ms against 1.472 ms with two tiles)
PREPASS_VECTOR = 4       # pixels per thread of the pre-pass
PREPASS_WARPS = 4        # its warps per program (tiles of V x 32 x warps pixels)
PREPASS_PROGRAMS = 4752  # its most programs, tiles dealt round-robin: 3 whole waves of 12
                         # programs per SM on the 132 SMs of an H100 or H200 (4096 left
                         # the third wave 59% full); a constant, so the grid and the partial
                         # sums depend on the shapes only


def merge_pixels(strides: list[list[int]], H: int, W: int) -> bool:
    """True when every tensor has stride_h == W * stride_w: pixels are then one flat
    axis (q * stride_w, no division in the kernel); stride_w is rewritten in place."""
    mergeable = all(H == 1 or W == 1 or s[-2] == W * s[-1] for s in strides)
    if mergeable:
        for s in strides:
            s[-1] = s[-1] if W > 1 else s[-2]
    return mergeable


def vector(p: Tensor) -> int:
    """V, pixels per thread of the fused pass: ACCESS_BYTES per plane and thread."""
    return max(1, ACCESS_BYTES // p.element_size())


def class_layout(C: int, has_semantic: bool, V: int, words: int,
                  max_block_c: int) -> tuple[int, int, int]:
    """(CLASSES, CHUNK, NUM_CHUNKS) of the fused kernel's class axis.

    CLASSES = C: every class plane of the tile in registers, when the C x V logits of a
    thread (``words`` registers each) fit its budget. Otherwise CLASSES = 0 and two
    sweeps over NUM_CHUNKS chunks of CHUNK classes.
    """
    if not has_semantic:
        return 1, 1, 0
    if C <= max_block_c and C * V * words <= REGISTER_LOGITS:
        return C, 1, 0
    chunk = min(SWEEP_CHUNK, max_block_c)
    return 0, chunk, cdiv(C, chunk)


def resident(C: int, dtype: torch.dtype, max_block_c: int) -> bool:
    """True for the one-read layout of large C: every class plane of the tile in registers at
    one pixel per thread (255 registers at C = 150), loads and stores through inline PTX when
    compiled. Measured at C = 150 (python -m benchmarks.tune, H200): 81% of copy against 66%
    for the two sweeps in fp32; slower in bf16 (54% against 60%: half the bytes in flight per
    register), so 16-bit logits take the pixel pairs instead (``RESIDENT_PAIRS``), or the
    sweeps where the pairs do not fit."""
    return dtype == torch.float32 and C <= min(max_block_c, RESIDENT_CLASSES)


def pairs_fit(x: Tensor, gx: Optional[Tensor], x_strides, gx_strides, flat: bool, HW: int) -> bool:
    """True when 16-bit logits and their gradient can move as 32-bit words of two adjacent
    pixels: one flat pixel axis at unit stride, an even number of pixels per image, even
    class and image strides and 16-byte aligned storage (part of the launch key), so that
    every word is aligned and no pair straddles two images."""
    tensors = [(x, x_strides)] + ([(gx, gx_strides)] if gx is not None and gx.numel() else [])
    return (x.element_size() == 2 and flat and HW % 2 == 0
            and all(s[-1] == 1 and s[0] % 2 == 0 and s[1] % 2 == 0 and aligned(v)
                    for v, s in tensors))


def aligned(v: Tensor) -> bool:
    """Whether v's data start on 16 bytes: its address, or for a tensor of a torch.compile
    trace (which has none) its offset in its storage, whose blocks the caching allocator
    aligns to 512 bytes."""
    if is_real(v):
        return v.data_ptr() % 16 == 0
    return v.storage_offset() * v.element_size() % 16 == 0


def compact_labels(t: Tensor, C: int, ignore_index: int) -> Tensor:
    """What the pre-pass writes for the fused pass (``COMPACT_LABELS``), in PyTorch: the
    label where it is a class, else 255, one byte each, contiguous."""
    valid = (t != ignore_index) & (t >= 0) & (t < C)
    return torch.where(valid, t, 255).to(torch.uint8).contiguous()


# Most pixels per image: the kernels index an image's pixels in 32 bits, up to the end of
# the tile past its last pixel.
MAX_PIXELS = 2 ** 31 - 2 ** 16


def tile_grid(B: int, HW: int, block_p: int, max_programs: int) -> tuple[int, int, int, int]:
    """(programs, tiles per program, tiles per image, tiles) for tiles of block_p pixels.

    Depends on the shapes only, never on the GPU (so results are bitwise the same on any
    card): at most max_programs programs, each taking a power-of-two number of tiles (a
    constexpr of the fused kernel: few distinct specialisations)."""
    tiles_per_image = max(1, cdiv(HW, block_p))  # an empty image: one masked tile
    n_tiles = B * tiles_per_image
    per_program = next_power_of_2(max(1, cdiv(n_tiles, max_programs)))  # 1 for no tile
    return max(1, cdiv(n_tiles, per_program)), per_program, tiles_per_image, n_tiles


class Problem:
    """Shapes, strides and launch configuration of one call (no tensor data is read, and
    no tensor is kept: a problem is reused by every call with the same ``launch_key``)."""

    def __init__(self, x, t, cw, o, g, m, d, z, gx, go, gd, ignore_index, max_block_c):
        first = next(p for p in (x, o, d) if p is not None)
        self.B, self.H, self.W = first.shape[0], first.shape[-2], first.shape[-1]
        self.HW = self.H * self.W
        if self.HW > MAX_PIXELS:
            raise ValueError(
                f"backend='triton' takes images of at most 2**31 - 2**16 pixels, got {self.H} "
                f"x {self.W} = {self.HW}; use backend='reference' or smaller images")
        self.C = x.shape[1] if x is not None else 1
        self.x_dtype = x.dtype if x is not None else None
        self.flags = dict(HAS_SEM=x is not None, HAS_WEIGHT=cw is not None,
                          HAS_INST=o is not None, HAS_DEP=d is not None)
        self.ignore_index = ignore_index
        # Labels wider than a byte are read once, by the pre-pass, which leaves them as
        # bytes for the fused pass: 7 of the 8 bytes per pixel of int64 labels saved.
        self.compact = (COMPACT_LABELS and x is not None and self.C <= 255
                        and t.element_size() > 1)
        self.acc_fp64 = any(p is not None and p.dtype == torch.float64 for p in (x, o, d))
        # Launch configuration of the fused pass (a tuning sweep may set these on an instance).
        self.vector = vector(first if x is None else x)
        self.warps = FUSED_WARPS
        self.stages = 1
        self.max_programs = FUSED_PROGRAMS
        self.asm_planes = False  # class planes moved through inline PTX (compiled, large C)
        self.pairs = False  # 16-bit class planes moved as words of two pixels (V = 2)
        self.split = False  # and each pair's planes split between two threads (V = 1)
        self.one_read = False  # every class plane of a tile in registers at large C
        self.sum_chunk = SUM_CHUNK
        self.kept = False  # the sum's exponentials kept in registers for the gradient
        self.classes = class_layout(self.C, x is not None, self.vector,
                                   2 if self.acc_fp64 else 1, max_block_c)
        # No pixel: no one-read layout, whose lanes off the image load the tensor's first
        # element unconditionally (inline PTX), which an empty tensor does not have.
        empty = self.B * self.HW == 0
        if self.classes[0] == 0 and x is not None:
            if resident(self.C, x.dtype, max_block_c) and not empty:
                self.vector = 1
                self.use_resident()
            else:
                # Measured at C = 150 (python -m benchmarks.tune, H200): chunks of 16 classes
                # at two pixels per thread beat 8-byte bf16 accesses (V = 4 with chunks of 16
                # spills, with chunks of 8 it is 5% slower).
                self.vector = min(self.vector, SWEEP_VECTOR)
        self.block_p = self.vector * 32 * self.warps
        # Strides; absent tensors (and gradients not written) contribute zeros.
        bchw = [list(bchw_strides(v)) for v in (x, gx, o, go, g)]
        bhw = [list(bhw_strides(v)) for v in (t, m, d, gd, z)]
        present = [s for s, v in zip(bchw + bhw, (x, gx, o, go, g, t, m, d, gd, z))
                   if v is not None and v.numel() > 0]
        self.compact_strides = [self.HW, self.W, 1]
        self.flat = merge_pixels(present + [self.compact_strides], self.H, self.W)
        self.bchw, self.bhw = bchw, bhw
        self.pairs_fit = (x is not None and not self.acc_fp64 and not empty
                          and pairs_fit(x, gx, bchw[0], bchw[1], self.flat, self.HW))
        if (RESIDENT_PAIRS and self.pairs_fit and self.classes[0] == 0
                and self.C <= min(max_block_c, RESIDENT_CLASSES)):
            # split: one max then one sum over each lane's half (no running sum)
            self.use_pairs(split=SPLIT_PAIRS and self.C % 2 == 0 and self.C >= SPLIT_CLASSES
                           and SUM_CHUNK >= self.C // 2)
        if (SPLIT_PLANES and self.one_read and not self.pairs and self.flat
                and self.C % 2 == 0 and SUM_CHUNK >= self.C // 2):
            self.split = True  # one max then one sum over each lane's half
        if ONE_TILE and self.one_read:
            self.max_programs = max(1, self.B * cdiv(self.HW, self.block_p))
        self.configure_prepass(PREPASS_VECTOR, PREPASS_WARPS, PREPASS_PROGRAMS)

    def configure_prepass(self, vector: int, warps: int, max_programs: int) -> None:
        """The pre-pass's pixels per thread, warps per program and program cap. Its tile loop
        has a run-time bound, so any number of programs takes the tiles round-robin (no
        power-of-two tiles per program, as the fused pass's constexpr loop needs)."""
        self.pre_vector, self.pre_warps = vector, warps
        tiles_per_image = max(1, cdiv(self.HW, vector * 32 * warps))
        n_tiles = self.B * tiles_per_image
        programs = max(1, min(n_tiles, max_programs))
        self.pre_grid = (programs, cdiv(n_tiles, programs), tiles_per_image, n_tiles)
        self.n_pre = programs

    def use_resident(self) -> None:
        """Every class plane of the tile in registers, one read of the logits (large C)."""
        self.classes = (self.C, 1, 0)
        self.asm_planes = not interpreted()
        self.one_read = True
        self.kept = KEPT_EXPS and self.x_dtype == torch.float32

    def use_pairs(self, split: bool = False) -> None:
        """Every class plane in registers as words of pixel pairs (needs ``pairs_fit``);
        ``split`` (even C): each pair's planes shared by two threads, half each, one pixel
        per thread for the other tasks."""
        assert self.pairs_fit, "the logits cannot move as pixel pairs"
        assert not split or self.C % 2 == 0, "split pairs take an even number of classes"
        self.vector = 1 if split else 2
        self.block_p = self.vector * 32 * self.warps
        self.use_resident()
        self.pairs, self.split = True, split
        # float16 holds the exponentials with 3 bits to spare over a bf16 gradient, not an
        # fp16 one's (docs/kernel.md, "Exponentials kept in 16 bits")
        self.kept = KEPT_PAIRS and self.x_dtype == torch.bfloat16

    def kept_launch(self, launch) -> tuple[bool, dict]:
        """(KEPT, launch options) of the fused pass through ``launch``. The split pairs keep
        their exponentials in four programs per SM only under a register cap
        (``SPLIT_KEPT_REGISTERS``), which a torch.compile graph's launcher cannot pass:
        there they take them again (``common.can_cap``). The interpreter needs no cap."""
        if not (self.split and self.kept) or interpreted():
            return self.kept, {}
        if can_cap(launch):
            return True, {"maxnreg": SPLIT_KEPT_REGISTERS}
        return False, {}

    def grid(self, block_p: int, max_programs: int) -> tuple[int, int, int, int]:
        return tile_grid(self.B, self.HW, block_p, max_programs)

    def fused_grid(self) -> tuple[int, int, int, int]:
        return self.grid(self.block_p, self.max_programs)

    def compact_buffer(self, device) -> Optional[Tensor]:
        """The one-byte labels the pre-pass writes, or None."""
        if not self.compact:
            return None
        return torch.empty((self.B, self.H, self.W), dtype=torch.uint8, device=device)

    def launch_normalisers(self, launch, tensors, norm_part, bad_part, dummy, compact=None):
        x, t, cw, o, g, m, d, z = tensors
        nprog, _, tiles_per_image, n_tiles = self.pre_grid
        t_s, m_s, _, _, z_s = self.bhw
        launch(K.normaliser_kernel)[(nprog,)](
            t if t is not None else dummy, cw if cw is not None else dummy,
            m if m is not None else dummy, z if z is not None else dummy,
            compact if self.compact else dummy,
            *t_s, *m_s, *z_s, self.C, self.ignore_index,
            norm_part, bad_part, self.HW, self.W, tiles_per_image, n_tiles,
            FLAT=self.flat, V=self.pre_vector, BLOCK_P=self.pre_vector * 32 * self.pre_warps,
            ACC_FP64=self.acc_fp64, COMPACT=self.compact, **self.flags, num_warps=self.pre_warps)

    def launch_fused(self, launch, tensors, gx, go, gd, state, part, write_grad, dummy,
                     compact=None, grid=None):
        """``compact``: the pre-pass's one-byte labels, read in place of t when
        ``self.compact``; ``grid``: ``fused_grid()``, where the caller has it."""
        x, t, cw, o, g, m, d, z = tensors
        nprog, per_program, tiles_per_image, n_tiles = grid or self.fused_grid()
        classes, chunk, num_chunks = self.classes
        x_s, gx_s, o_s, go_s, g_s = self.bchw
        t_s, m_s, d_s, gd_s, z_s = self.bhw
        ignore_index = self.ignore_index
        if self.compact:
            assert compact is not None, "the fused pass reads the pre-pass's one-byte labels"
            t, t_s, ignore_index = compact, self.compact_strides, 255
        pick = lambda v: v if v is not None and v.numel() > 0 else dummy  # noqa: E731
        kept, cap = self.kept_launch(launch)
        launch(K.fused_loss_kernel)[(nprog,)](
            pick(x), pick(gx), pick(t), pick(cw), *x_s, *gx_s, *t_s, self.C, ignore_index,
            pick(o), pick(go), pick(g), pick(m), *o_s, *go_s, *g_s, *m_s,
            pick(d), pick(gd), pick(z), *d_s, *gd_s, *z_s,
            state, part, self.HW, self.W, tiles_per_image, n_tiles,
            WRITE_GRAD=write_grad, FLAT=self.flat, CLASSES=classes,
            CHUNK=chunk, NUM_CHUNKS=num_chunks, V=self.vector, BLOCK_P=self.block_p,
            TILES_PER_PROGRAM=per_program, ACC_FP64=self.acc_fp64,
            SWEEP_STAGES=self.stages if classes == 0 else 1, ASM_PLANES=self.asm_planes,
            PAIRS=self.pairs, SPLIT=self.split, TILE_STAGES=self.stages,
            SUM_CHUNK=self.sum_chunk, KEPT=kept,
            **self.flags, **cap,
            num_warps=self.warps, num_stages=self.stages)
        return nprog
