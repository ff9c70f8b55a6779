"""Seeded random problems against the oracle (tests/oracle.py), through the interpreter.

Each case draws everything at once: batch and image size, classes (C = 40 takes the
classes in chunks with 1/8 heads; C = 70 at full resolution reads fp32 logits once and
sums them over chunks of classes), the prediction dtype, the label dtype and
ignore_index, the task subset, class weights, log-variances or fixed weights, how many
labels are ignored and how many offsets and depths are valid, the memory layout of every
tensor, and full-resolution predictions or low-resolution heads (any h x w up to the
targets', both align_corners settings). The hand-written tests name the cases that
matter one by one; these check the combinations nobody named.
"""
import random

import pytest
import torch

from helpers import make_inputs
from oracle import assert_match, run_both, run_both_upsampled

CASES = 24
TASKS = ("semantic", "instance", "depth")


def _laid_out(t: torch.Tensor, layout: str) -> torch.Tensor:
    """The same values in another memory layout, read through their strides."""
    if layout == "channels_last" and t.dim() == 4:
        return t.contiguous(memory_format=torch.channels_last)
    if layout == "transposed":
        return t.transpose(-1, -2).contiguous().transpose(-1, -2)
    if layout == "sliced":  # a view into a wider tensor
        wide = torch.zeros(*t.shape[:-1], t.shape[-1] + 3, dtype=t.dtype)
        wide[..., 2:2 + t.shape[-1]] = t
        return wide[..., 2:2 + t.shape[-1]]
    return t


def _problem(seed: int) -> dict:
    rng = random.Random(seed)
    tasks = tuple(t for t in TASKS if rng.random() < 0.6) or (rng.choice(TASKS),)
    target_dtype = rng.choice([torch.int64, torch.int32, torch.uint8])
    ignore_index = rng.choice([255, 0] if target_dtype == torch.uint8 else [255, 0, -100])
    B, H, W = rng.randint(1, 2), rng.randint(1, 16), rng.randint(1, 16)
    upsample = rng.random() < 0.5
    h, w = (rng.randint(1, H), rng.randint(1, W)) if upsample else (H, W)
    C = rng.choice([1, 3, 19, 40, 70])
    dtype = rng.choice([torch.float32, torch.float32, torch.float64, torch.bfloat16,
                        torch.float16])
    draw = dict(B=B, C=C, tasks=tasks, target_dtype=target_dtype, ignore_index=ignore_index,
                ignore_frac=rng.choice([0.0, 0.3, 1.0]), mask_frac=rng.choice([0.0, 0.5, 1.0]),
                depth_invalid_frac=rng.choice([0.0, 0.3, 1.0]))
    pred, _ = make_inputs(H=h, W=w, dtype=dtype, seed=2 * seed, **draw)
    _, tgt = make_inputs(H=H, W=W, seed=2 * seed + 1, **draw)
    layout = rng.choice(["contiguous", "channels_last", "transposed", "sliced"])
    pred = {k: _laid_out(v, layout) for k, v in pred.items()}
    tgt = {k: _laid_out(v, layout) for k, v in tgt.items()}
    kwargs = dict(ignore_index=ignore_index)
    if "semantic" in tasks and rng.random() < 0.4:
        kwargs["class_weight"] = torch.rand(C, generator=torch.Generator().manual_seed(seed)) + 0.1
    if rng.random() < 0.6:
        kwargs["log_vars"] = torch.linspace(-0.5, 0.5, len(tasks), dtype=torch.float64
                                            if dtype == torch.float64 else torch.float32)
    elif rng.random() < 0.5:
        kwargs["weights"] = [rng.choice([0.5, 1.0, 2.0]) for _ in tasks]
    if upsample:
        kwargs["align_corners"] = rng.random() < 0.5
    return dict(pred=pred, tgt=tgt, kwargs=kwargs, dtype=dtype, upsample=upsample,
                about=dict(B=B, C=C, H=H, W=W, h=h, w=w, dtype=dtype, tasks=tasks,
                           labels=target_dtype, layout=layout, **kwargs))


@pytest.mark.parametrize("seed", range(CASES))
def test_a_random_problem_matches_the_oracle(seed):
    case = _problem(seed)
    run = run_both_upsampled if case["upsample"] else run_both
    kernel, expected = run(case["pred"], case["tgt"], **case["kwargs"])
    try:
        assert_match(kernel, expected, case["dtype"])
    except AssertionError as error:
        raise AssertionError(f"seed {seed}: {case['about']}") from error


def test_the_draws_cover_what_they_are_for():
    """The seeds used reach both paths, every dtype and every layout."""
    cases = [_problem(seed) for seed in range(CASES)]
    assert {c["upsample"] for c in cases} == {True, False}
    assert {c["dtype"] for c in cases} == {torch.float32, torch.float64, torch.bfloat16,
                                           torch.float16}
    assert {c["about"]["layout"] for c in cases} == {"contiguous", "channels_last",
                                                     "transposed", "sliced"}
    assert any(c["upsample"] and c["about"]["C"] == 40 for c in cases)  # classes in chunks
    assert any(not c["upsample"] and c["about"]["C"] == 70 and c["dtype"] == torch.float32
               and "semantic" in c["about"]["tasks"] for c in cases)  # one read of the logits
