"""The one-read fp32 layout keeps the sum's exponentials for the gradient
(``fused_layout.KEPT_EXPS``): the gradient of every class but the target's is its kept
exponential times one factor per chunk of classes, and must be as close to float64
PyTorch as the exponentials taken again; the target's, ws * (softmax - 1), is taken again
from its logit either way.

The bf16 pixel pairs keep theirs as float16 pairs (``fused_layout.KEPT_PAIRS``): 11 bits,
so that the gradient, rounded once to bf16, is at most an eighth of a unit further off than
from exponentials taken again, wherever the term is at least 2^-29 of the pixel's largest
(float16's normal range under its bias of 2^15); below, off by at most 2^-40 ws.
"""
import pytest
import torch

import fastmtl

from fastmtl.ops import fused_layout


def _inputs(device):
    C, H, W = 150, 8, 16
    g = torch.Generator().manual_seed(11)
    x = torch.randn(1, C, H, W, generator=g) * 4
    t = torch.randint(0, C, (1, H, W), generator=g)
    # half the pixels labelled with their largest logit, a few of them far above the rest
    top = x.argmax(1)
    t.view(-1)[::2] = top.view(-1)[::2]
    x.view(C, -1)[top.view(-1)[::4], torch.arange(0, H * W, 4)] += 12
    return x.to(device), t.to(device)


def _grad(x, t, kept, monkeypatch, problems, built=None):
    monkeypatch.setattr(fused_layout, "KEPT_EXPS", kept)
    monkeypatch.setattr(fused_layout, "KEPT_PAIRS", kept)
    leaf = x.clone().requires_grad_(True)
    fastmtl.multitask_loss({"semantic": leaf}, {"semantic": t}, backend="triton").total.backward()
    assert problems and all(p.one_read and p.kept == kept for p in problems)
    if built is not None:
        built += problems
    problems.clear()
    return leaf.grad


def _ulps(got, want):
    # |got - want| in float32 units in the last place of want (normal numbers here)
    ulp = torch.ldexp(torch.ones_like(want), torch.frexp(want)[1] - 24)
    return (got.double() - want).abs() / ulp


def _lse_units(sum_chunk: int) -> int:
    """float32 units of error in the softmax from the log-sum-exp, either way: an lse2 near
    32 carries 2^-19 of absolute rounding, up to 16 units, a chunk's factor a few more (128).
    A running sum over steps of 16 planes rescales its sum at each of its 10 steps by an
    approximate exponential and rounds the step's own sum, a few units a step: up to twice
    that (167 units measured on an H200, exponentials taken again)."""
    return 128 if sum_chunk >= 150 else 256


def check(device, sum_chunk, monkeypatch, problems):
    monkeypatch.setattr(fused_layout, "SUM_CHUNK", sum_chunk)
    x, t = _inputs(device)
    ref = x.double().requires_grad_(True)
    torch.nn.functional.cross_entropy(ref, t).backward()
    want = ref.grad
    others = torch.ones_like(want, dtype=torch.bool).scatter_(1, t[:, None], False)
    grads = {kept: _grad(x, t, kept, monkeypatch, problems) for kept in (False, True)}
    off, kept = (_ulps(grads[k], want)[others] for k in (False, True))
    assert kept.max() <= 2 * off.max() and kept.mean() <= 1.5 * off.mean()
    assert off.max() <= _lse_units(sum_chunk)
    torch.testing.assert_close(grads[True][~others], grads[False][~others], rtol=1e-6, atol=0)


@pytest.mark.parametrize("sum_chunk", [256, 16])
def test_kept_exponentials_are_as_close_as_taken_again(sum_chunk, monkeypatch, problems):
    check("cpu", sum_chunk, monkeypatch, problems)


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("sum_chunk", [256, 16])
def test_kept_exponentials_are_as_close_as_taken_again_on_gpu(sum_chunk, monkeypatch, problems):
    check("cuda", sum_chunk, monkeypatch, problems)


def _bf16_ulps(got, want):
    # |got - want| in bf16 units in the last place of want, and where want is normal
    ulp = torch.ldexp(torch.ones_like(want), torch.frexp(want)[1] - 8)
    return (got.double() - want).abs() / ulp


def check_pairs(device, sum_chunk, split, monkeypatch, problems):
    """The bf16 pairs' kept exponentials against float64 PyTorch, each pair's planes in one
    thread or ``split`` between two. Compiled, the bf16 gradient rounds to nearest (half a
    unit); the interpreter's conversion truncates (a unit). float16 adds at most 2^-11
    relative, an eighth of a bf16 unit."""
    monkeypatch.setattr(fused_layout, "SUM_CHUNK", sum_chunk)
    monkeypatch.setattr(fused_layout, "SPLIT_PAIRS", split)
    x, t = _inputs(device)
    x = x.to(torch.bfloat16)
    ref = x.double().requires_grad_(True)
    torch.nn.functional.cross_entropy(ref, t).backward()
    want = ref.grad
    others = torch.ones_like(want, dtype=torch.bool).scatter_(1, t[:, None], False)
    built = []
    grads = {}
    for k in (False, True):
        grads[k] = _grad(x, t, k, monkeypatch, problems, built).double()
    assert {p.split for p in built} == {split}
    # the terms from 2^-29 of each pixel's largest exponential: float16 normal numbers
    softmax = ref.detach().softmax(1)
    normal = others & (softmax >= 2.0 ** -29 * softmax.amax(1, keepdim=True))
    assert (others & ~normal).sum() >= 100  # both ranges are tested
    unit = 1.0 if device == "cpu" else 0.5
    off, kept = (_bf16_ulps(grads[k], want)[normal] for k in (False, True))
    assert off.max() <= unit + 0.01
    assert kept.max() <= unit + 0.125 + 0.01
    ws = 1.0 / t.numel()
    tiny = (grads[True] - want).abs()[others & ~normal]
    assert tiny.max() <= 2.0 ** -40 * ws + (want.abs()[others & ~normal] * 2.0 ** -7).max()
    # The target's, ws * (softmax - 1), from its logit either way: within a unit of bf16 and
    # float32's cancellation where the softmax is near 1 (``_lse_units``; a biased sum's log,
    # 2^-20 more)
    slack = unit * 1.02 * want.abs() * 2.0 ** -7 + _lse_units(sum_chunk) * 2.0 ** -24 * ws
    for g in grads.values():
        assert ((g - want).abs() <= slack)[~others].all()


# the split pairs take one max, then one sum (fused_layout: the running sum keeps them whole)
PAIRS_LAYOUTS = [(256, True), (256, False), (16, False)]


@pytest.mark.parametrize("sum_chunk,split", PAIRS_LAYOUTS)
def test_pairs_kept_exponentials_stay_within_an_eighth_of_a_unit(sum_chunk, split, monkeypatch,
                                                                 problems):
    check_pairs("cpu", sum_chunk, split, monkeypatch, problems)


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("sum_chunk,split", PAIRS_LAYOUTS)
def test_pairs_kept_exponentials_stay_within_an_eighth_of_a_unit_on_gpu(sum_chunk, split,
                                                                        monkeypatch, problems):
    check_pairs("cuda", sum_chunk, split, monkeypatch, problems)
