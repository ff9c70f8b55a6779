"""16-bit logits moved as 32-bit words of two pixels (``fused_layout.RESIDENT_PAIRS``).

Under the interpreter the words are ordinary int32 loads and stores: these tests check the
pairing itself (which pixel sits in which half, the pairs at image ends, the unpacking and
the rounding of the packed gradient) against PyTorch, and that the layout is taken only
where every word is aligned and no pair straddles two images. The compiled form (inline
PTX loads, packed max, cvt of both gradients) is checked statically in
test_tune_configs.py, as one of the tuning candidates.
"""
import pytest
import torch

import fastmtl

from helpers import make_inputs
from oracle import assert_match, run_both

from fastmtl.ops import fused as ops
from fastmtl.ops import fused_layout


@pytest.fixture
def pairs_on(monkeypatch, problems):
    """The library's own choice with the pixel pairs switched on; yields the problems built."""
    monkeypatch.setattr(fused_layout, "RESIDENT_PAIRS", True)
    return problems


# B x H x W with an even H * W: tiles of 256 pixels end inside an image and the last
# program's tile runs past the batch; one row of 2 pixels; one column.
@pytest.mark.parametrize("shape", [(3, 14, 21), (2, 1, 2), (2, 6, 1)], ids=str)
@pytest.mark.parametrize("dtype,kept", [(torch.bfloat16, False), (torch.bfloat16, True),
                                        (torch.float16, False)],
                         ids=["bfloat16", "bfloat16-kept", "float16"])
@pytest.mark.parametrize("split", [False, True], ids=["", "split"])
def test_pixel_pairs_match_pytorch(pairs_on, dtype, kept, split, shape, monkeypatch):
    """Also with the exponentials kept as float16 pairs (``fused_layout.KEPT_PAIRS``), and
    with each pair's planes split between two threads (``fused_layout.SPLIT_PAIRS``: tiles
    of 128 pixels, so more tiles end inside an image)."""
    monkeypatch.setattr(fused_layout, "KEPT_PAIRS", kept)
    monkeypatch.setattr(fused_layout, "SPLIT_PAIRS", split)
    monkeypatch.setattr(fused_layout, "SPLIT_CLASSES", 2)  # the split at any even C
    B, H, W = shape
    C = 150 if H * W > 100 else 38 if split else 37
    pred, tgt = make_inputs(B=B, C=C, H=H, W=W, dtype=dtype, seed=H * W)
    pred["semantic"] = pred["semantic"] * 4  # softmax far from uniform
    cw = torch.rand(C, generator=torch.Generator().manual_seed(1)) + 0.5
    kernel, expected = run_both(pred, tgt, log_vars=torch.tensor([0.3, -0.4, 0.8]),
                                class_weight=cw)
    assert_match(kernel, expected, dtype)
    assert pairs_on and all(p.pairs and p.split == split and p.vector == (1 if split else 2)
                            and p.kept == kept for p in pairs_on)


def test_gradients_of_each_pixel_land_in_its_own_half(pairs_on):
    """One valid pixel per pair (the other ignored): its gradient, and only its, is nonzero."""
    C, H, W = 40, 4, 8
    for first in (0, 1):
        x = torch.randn(1, C, H, W, generator=torch.Generator().manual_seed(first)) * 3
        x = x.to(torch.bfloat16).requires_grad_(True)
        t = torch.full((1, H, W), 255)
        t.view(-1)[first::2] = torch.arange(first, H * W, 2) % C
        loss = fastmtl.multitask_loss({"semantic": x}, {"semantic": t}, backend="triton").total
        loss.backward()
        ref_x = x.detach().float().requires_grad_(True)
        torch.nn.functional.cross_entropy(ref_x, t, ignore_index=255).backward()
        torch.testing.assert_close(x.grad.float(), ref_x.grad, rtol=1e-2, atol=1e-4)
        assert (x.grad.view(C, -1)[:, 1 - first::2] == 0).all()
    assert all(p.pairs for p in pairs_on)


def _problem(x, gx=None):
    t = torch.zeros(x.shape[0], *x.shape[2:], dtype=torch.int64)
    gx = torch.empty_like(x) if gx is None else gx
    empty = torch.empty(0)
    return ops.Problem(x, t, None, None, None, None, None, None, gx, empty, empty, 255,
                       fused_layout.MAX_BLOCK_C)


def test_pairs_only_where_every_word_is_aligned(monkeypatch):
    monkeypatch.setattr(fused_layout, "RESIDENT_PAIRS", True)
    bf16 = lambda *s: torch.randn(*s).to(torch.bfloat16)  # noqa: E731
    assert _problem(bf16(2, 150, 4, 6)).pairs
    assert _problem(bf16(2, 150, 4, 6).half()).pairs
    not_paired = {
        "odd pixels per image": bf16(2, 150, 3, 5),
        "float32": torch.randn(2, 150, 4, 6),
        "channels_last": bf16(2, 150, 4, 6).contiguous(memory_format=torch.channels_last),
        "storage 2 bytes off alignment": bf16(2 * 150 * 24 + 1)[1:].view(2, 150, 4, 6),
        "rows apart (not one pixel axis)": bf16(2, 150, 4, 7)[..., :6],
        "odd image stride": bf16(2, 150 * 24 + 1)[:, :150 * 24].view(2, 150, 4, 6),
        "few classes (planes in registers)": bf16(2, 19, 4, 6),
    }
    for why, x in not_paired.items():
        p = _problem(x)
        assert not p.pairs, why
        assert p.block_p == p.vector * 32 * p.warps, why
    # A float64 task beside bf16 logits: float64 arithmetic, no pairs.
    x = bf16(2, 150, 4, 6)
    t = torch.zeros(2, 4, 6, dtype=torch.int64)
    d = torch.rand(2, 1, 4, 6, dtype=torch.float64)
    empty = torch.empty(0)
    p = ops.Problem(x, t, None, None, None, None, d, d[:, 0], torch.empty_like(x), empty,
                    torch.empty_like(d), 255, fused_layout.MAX_BLOCK_C)
    assert p.acc_fp64 and not p.pairs


def test_pairs_are_the_default_where_the_sweeps_were():
    x = torch.randn(2, 150, 4, 6).to(torch.bfloat16)
    p = _problem(x)  # an even C: each pair split between two threads
    assert p.pairs_fit and p.pairs and p.split and p.classes == (150, 1, 0) and p.vector == 1
    p = _problem(torch.randn(2, 149, 4, 6).to(torch.bfloat16))  # odd: a pair per thread
    assert p.pairs and not p.split and p.classes == (149, 1, 0) and p.vector == 2
    C = fused_layout.SPLIT_CLASSES  # where a pair per thread leaves two programs per SM
    assert _problem(torch.randn(2, C, 4, 6).to(torch.bfloat16)).split
    p = _problem(torch.randn(2, C - 2, 4, 6).to(torch.bfloat16))  # three or more: whole pairs
    assert p.pairs and not p.split and p.vector == 2
    p = _problem(x[:, :, :3, :5])  # an odd number of pixels per image: the sweeps
    assert not p.pairs_fit and not p.pairs and p.classes[0] == 0


def test_traced_tensors_are_aligned_by_their_storage_offset():
    """A tensor of a torch.compile trace has no address: its alignment is its offset in its
    storage (the caching allocator's blocks start on 512 bytes)."""
    from torch._subclasses.fake_tensor import FakeTensorMode

    real = torch.empty(64, dtype=torch.bfloat16)
    assert fused_layout.aligned(real[8:]) and not fused_layout.aligned(real[1:])
    with FakeTensorMode():
        fake = torch.empty(64, dtype=torch.bfloat16)
        assert fused_layout.aligned(fake) and fused_layout.aligned(fake[8:])
        assert not fused_layout.aligned(fake[1:]) and not fused_layout.aligned(fake[4:])


def test_kept_split_pairs_are_capped_and_take_them_again_in_a_graph(monkeypatch):
    """The split pairs keep their exponentials under a register cap where the launch takes
    one; a torch.compile graph's launcher (``wrap_triton``) cannot, so there they take them
    again; the interpreter needs no cap; the pairs in one thread need none anywhere."""
    from torch.library import wrap_triton

    from fastmtl.ops import common

    monkeypatch.setattr(fused_layout, "KEPT_PAIRS", True)
    x = torch.randn(2, 150, 4, 6).to(torch.bfloat16)
    direct = lambda kernel: kernel  # noqa: E731
    for split in (True, False):
        monkeypatch.setattr(fused_layout, "SPLIT_PAIRS", split)
        p = _problem(x)
        assert p.split == split and p.kept
        cap = {"maxnreg": fused_layout.SPLIT_KEPT_REGISTERS} if split else {}
        for interpreting in (False, True):
            monkeypatch.setattr(common, "interpreted", lambda: interpreting)
            monkeypatch.setattr(fused_layout, "interpreted", lambda: interpreting)
            assert p.kept_launch(direct) == (True, {} if interpreting else cap)
            assert p.kept_launch(wrap_triton) == (interpreting or not split, {})


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("dtype,kept", [(torch.bfloat16, False), (torch.bfloat16, True),
                                        (torch.float16, False)],
                         ids=["bfloat16", "bfloat16-kept", "float16"])
@pytest.mark.parametrize("split", [False, True], ids=["", "split"])
def test_compiled_pairs_match_pytorch_on_gpu(pairs_on, dtype, kept, split, monkeypatch):
    """The inline PTX of the compiled pairs (packed max, byte permutes, packed cvt, loads
    of lanes off the image; the kept exponentials' float16 words and their fences) against
    PyTorch: tiles past an image's end and the batch's. Split between two lanes: their
    shuffles, and the target's gradient stored by the lane that wrote its plane (the other
    lane's store, unordered with that plane's, would race with it)."""
    monkeypatch.setattr(fused_layout, "KEPT_PAIRS", kept)
    monkeypatch.setattr(fused_layout, "SPLIT_PAIRS", split)
    pred, tgt = make_inputs(B=3, C=150, H=30, W=66, dtype=dtype, seed=7, device="cuda")
    pred["semantic"] = pred["semantic"] * 4
    cw = torch.rand(150, device="cuda") + 0.5
    kernel, expected = run_both(pred, tgt, log_vars=torch.tensor([0.3, -0.4, 0.8], device="cuda"),
                                class_weight=cw)
    assert_match(kernel, expected, dtype)
    assert pairs_on and all(p.pairs and p.asm_planes and p.kept == kept and p.split == split
                            for p in pairs_on)


