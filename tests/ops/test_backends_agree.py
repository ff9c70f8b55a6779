"""The triton backend (through the interpreter) against the reference backend on seeded
inputs that test_random_problems.py does not draw, at full resolution and from
low-resolution heads (``upsample="bilinear"``): targets broadcast over the batch
(stride 0), logits and regressions far from 1 (at full resolution up to 1e30 in fp32 and
fp64, 6e4 in 16 bits; heads in fp32 or fp64, up to 300x), depth targets NaN, +inf or negative, class weights with zeros, each uncertainty
convention, fixed weights as a list or a dict (zeros among them), (B, H, W) depth
targets, regression targets that require grad, and one out-of-range label with and
without the label check. Each tensor takes its own memory layout. Both backends must
give the same losses, the same gradients and NaN in the same places, or raise the same
error with the same message.
"""
import random

import pytest
import torch

import fastmtl
from helpers import make_inputs

CASES = 24
TASKS = ("semantic", "instance", "depth")


def _laid_out(t: torch.Tensor, rng: random.Random) -> torch.Tensor:
    """The same values read through other strides (a batch broadcast where they allow)."""
    kind = rng.choice(["contiguous", "channels_last", "transposed", "sliced", "broadcast"])
    if kind == "channels_last" and t.dim() == 4:
        return t.contiguous(memory_format=torch.channels_last)
    if kind == "transposed" and t.dim() >= 2:
        return t.transpose(-1, -2).contiguous().transpose(-1, -2)
    if kind == "sliced":
        wide = torch.zeros(*t.shape[:-1], t.shape[-1] + 3, dtype=t.dtype)
        wide[..., 1:1 + t.shape[-1]] = t
        return wide[..., 1:1 + t.shape[-1]]
    if kind == "broadcast" and t.shape[0] > 1:
        return t[:1].expand(t.shape)
    return t


def _far_from_one(pred: dict, tgt: dict, dtype, rng, g) -> None:
    """A fifth of every prediction scaled far out; depth targets NaN, +inf or negative."""
    big = 1e30 if dtype in (torch.float32, torch.float64) else 6e4
    for name, v in pred.items():
        scale = rng.choice([1e3, 3e4, big])
        v = v.double()
        pred[name] = torch.where(torch.rand(v.shape, generator=g) < 0.2, v * scale, v).to(dtype)
    if "depth" in tgt:
        z = tgt["depth"]
        r = torch.rand(z.shape, generator=g)
        z = torch.where(r < 0.1, float("nan"), z)
        z = torch.where((r >= 0.1) & (r < 0.2), float("inf"), z)
        tgt["depth"] = torch.where((r >= 0.2) & (r < 0.3), -z, z)


def _problem(seed: int, semantic: bool = False):
    rng, g = random.Random(seed), torch.Generator().manual_seed(seed)
    tasks = tuple(t for t in TASKS if rng.random() < 0.6) or (rng.choice(TASKS),)
    if semantic and "semantic" not in tasks:
        tasks = ("semantic", *tasks)
    labels = rng.choice([torch.int64, torch.int32, torch.uint8])
    ignore_index = rng.choice([255, 0] if labels == torch.uint8 else [255, 0, -100, -1])
    B, H, W, C = rng.randint(1, 3), rng.randint(1, 9), rng.randint(1, 9), rng.choice(
        [1, 2, 19, 40, 70])
    dtype = rng.choice([torch.float32, torch.float64, torch.bfloat16, torch.float16])
    pred, tgt = make_inputs(B=B, C=C, H=H, W=W, dtype=dtype, target_dtype=labels,
                            tasks=tasks, ignore_index=ignore_index,
                            ignore_frac=rng.choice([0, 0.3, 1]),
                            mask_frac=rng.choice([0, 0.5, 1]),
                            depth_invalid_frac=rng.choice([0, 0.3, 1]), seed=seed)
    if rng.random() < 0.4:
        _far_from_one(pred, tgt, dtype, rng, g)
    if "depth" in tasks and rng.random() < 0.3:
        tgt["depth"] = tgt["depth"].reshape(B, H, W)
    pred = {k: _laid_out(v, rng) for k, v in pred.items()}
    tgt = {k: _laid_out(v, rng) for k, v in tgt.items()}
    kwargs = dict(ignore_index=ignore_index,
                  uncertainty=rng.choice(["kendall", "half", "unit"]))
    if "semantic" in tasks and rng.random() < 0.5:
        weight = torch.rand(C, generator=g, dtype=torch.float64) + 0.1
        if rng.random() < 0.5:
            weight[torch.rand(C, generator=g) < 0.5] = 0.0
            if weight.sum() == 0:
                weight[0] = 1.0  # a positive sum
        kwargs["class_weight"] = weight.to(torch.float64 if dtype == torch.float64
                                           else torch.float32)
    draw = rng.random()
    if draw < 0.5:
        kwargs["log_vars"] = (torch.rand(len(tasks), generator=g) - 0.5).to(
            torch.float64 if dtype == torch.float64 else torch.float32)
    elif draw < 0.8:
        weights = [rng.choice([0.0, 0.5, 1.0, 2.0]) for _ in tasks]
        kwargs["weights"] = dict(zip(tasks, weights)) if rng.random() < 0.5 else weights
    grad_targets = rng.random() < 0.3
    return pred, tgt, kwargs, grad_targets, dtype


def _run(backend, pred, tgt, kwargs, grad_targets):
    """('raised', type, message) or (total, losses, grads of every leaf)."""
    p = {k: v.detach().clone().requires_grad_(True) for k, v in pred.items()}
    t = {k: (v.detach().clone().requires_grad_(True)
             if grad_targets and k in ("instance", "depth") else v) for k, v in tgt.items()}
    kwargs = dict(kwargs)
    if "log_vars" in kwargs:
        kwargs["log_vars"] = kwargs["log_vars"].clone().requires_grad_(True)
    try:
        out = fastmtl.multitask_loss(p, t, backend=backend, **kwargs)
    except (ValueError, TypeError, RuntimeError) as error:
        return ("raised", type(error).__name__, str(error))
    out.total.backward()
    leaves = {**p, **{"target " + k: v for k, v in t.items() if v.requires_grad}}
    if "log_vars" in kwargs:
        leaves["log_vars"] = kwargs["log_vars"]
    return out.total.detach(), {k: v.detach() for k, v in out.losses.items()}, {
        k: v.grad for k, v in leaves.items()}


def _assert_same(got, expected, dtype, what):
    if got is None or expected is None:  # no gradient on one side: none or zeros on the other
        assert not any(v is not None and v.any() for v in (got, expected)), what
        return
    assert (got.dtype, got.shape) == (expected.dtype, expected.shape), what
    got, expected = got.double(), expected.double()
    assert torch.equal(got.isnan(), expected.isnan()), f"{what}: NaN in other places"
    rtol, atol = {torch.float64: (1e-9, 1e-12), torch.float32: (2e-5, 1e-6)}.get(
        dtype, (1e-2, 1e-2))
    finite = expected[expected.isfinite()]
    if dtype in (torch.bfloat16, torch.float16) and finite.numel():
        atol *= max(finite.abs().max().item(), 1.0)  # rounded once to 8 or 11 bits
    torch.testing.assert_close(got, expected, rtol=rtol, atol=atol, equal_nan=True,
                               msg=lambda m: f"{what}: {m}")


def _assert_backends_agree(pred, tgt, kwargs, grad_targets, dtype):
    got = _run("triton", pred, tgt, kwargs, grad_targets)
    expected = _run("reference", pred, tgt, kwargs, grad_targets)
    if got[0] == "raised" or expected[0] == "raised":
        assert got == expected
        return
    _assert_same(got[0], expected[0], dtype, "total")
    assert got[1].keys() == expected[1].keys() and got[2].keys() == expected[2].keys()
    for name in got[1]:
        _assert_same(got[1][name], expected[1][name], dtype, name)
    for name in got[2]:
        _assert_same(got[2][name], expected[2][name], dtype, "gradient of " + name)


@pytest.mark.parametrize("seed", range(CASES))
def test_both_backends_agree_on_an_unusual_problem(seed):
    pred, tgt, kwargs, grad_targets, dtype = _problem(seed)
    _assert_backends_agree(pred, tgt, kwargs, grad_targets, dtype)


@pytest.mark.parametrize("seed", range(CASES))
def test_both_backends_agree_on_an_unusual_problem_from_low_resolution_heads(seed):
    pred, tgt, kwargs, grad_targets, dtype = _problem(seed)
    # 16-bit heads: the reference rounds F.interpolate's values to 16 bits and the kernel
    # does not (docs/upsample.md), which can flip an L1 gradient's sign; the oracle tests
    # (test_upsample_loss.py) compare those against an interpolation in fp32.
    dtype = torch.float64 if dtype == torch.float64 else torch.float32
    rng, g = random.Random(seed + 1), torch.Generator().manual_seed(seed + 1)
    B, _, H, W = next(iter(pred.values())).shape
    h, w = rng.randint(1, H), rng.randint(1, W)
    heads = {}
    for name, p in pred.items():
        v = torch.randn(B, p.shape[1], h, w, generator=g, dtype=torch.float64)
        if rng.random() < 0.3:
            v = torch.where(torch.rand(v.shape, generator=g) < 0.2, v * rng.choice([30, 300]), v)
        heads[name] = _laid_out(v.to(dtype), rng)
    kwargs = dict(kwargs, upsample="bilinear", align_corners=rng.random() < 0.5)
    _assert_backends_agree(heads, tgt, kwargs, grad_targets, dtype)


@pytest.mark.parametrize("seed", range(CASES))
@pytest.mark.parametrize("check_labels", [True, False])
def test_both_backends_agree_on_one_label_outside_the_classes(seed, check_labels):
    pred, tgt, kwargs, grad_targets, dtype = _problem(seed, semantic=True)
    rng, labels = random.Random(seed), tgt["semantic"]
    C = pred["semantic"].shape[1]
    choices = [C, C + 1, 1000, -2, -1000] if labels.dtype != torch.uint8 else [C, C + 1, 255]
    bad = rng.choice([v for v in choices if v != kwargs["ignore_index"]])
    flat = labels.reshape(-1).clone()
    flat[rng.randrange(flat.numel())] = bad
    tgt = dict(tgt, semantic=flat.reshape(labels.shape))
    _assert_backends_agree(pred, tgt, dict(kwargs, check_labels=check_labels), grad_targets,
                           dtype)
