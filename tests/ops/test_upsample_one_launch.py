"""Both launches of the loss from low-resolution heads as one (``Config(one_launch=True)``,
``kernels/upsample_both.py``), under the interpreter.

- Its losses and gradients match F.interpolate + the reference (tests/oracle.py) and are
  bitwise those of the two launches with the same one-column regressions' split (each
  program computes what it computes in its own launch), for every task subset with the
  semantic task and both align_corners settings;
- the grid gives every program of both launches exactly one role, the regressions'
  programs spread evenly along it;
- where it does not apply (no regressions, or no semantic task, classes in chunks, fp64,
  inside a torch.compile graph) the op makes the two launches.

The compiled kernel's registers, spills and row loops at the benchmark's shape are held by
tests/ops/test_upsample_tune.py (a candidate of the tuning sweep).
"""
import pytest
import torch
import triton
import triton.language as tl

import fastmtl
from fastmtl.kernels.upsample_both import program_role
from fastmtl.ops import upsample
from fastmtl.ops.upsample_tiles import use
from helpers import launch_recorder, leaf_copies, low_res_inputs, random_class_weight
from oracle import run_both_upsampled, assert_match

TASKS = ("semantic", "instance", "depth")


def _outputs(pred, tgt, align_corners, class_weight, tasks):
    p = leaf_copies(pred)
    log_vars = torch.tensor([0.3, -0.4, 0.8][:len(tasks)], requires_grad=True)
    out = fastmtl.multitask_loss(p, tgt, log_vars=log_vars, backend="triton",
                                 upsample="bilinear", align_corners=align_corners,
                                 class_weight=class_weight)
    out.total.backward()
    return [out.total.detach()] + [out.losses[k].detach() for k in tasks] + [
        p[k].grad for k in tasks] + [log_vars.grad]


@pytest.mark.parametrize("tasks,align_corners", [(TASKS, False), (("semantic", "depth"), True),
                                                  (("semantic", "instance"), False)])
def test_one_launch_is_bitwise_the_two_launches_and_matches_the_reference(tasks, align_corners):
    pred, tgt = low_res_inputs(B=1, C=19, h=5, w=7, H=37, W=45, seed=41, tasks=tasks)
    class_weight = random_class_weight(19)
    with use(one_launch=True):
        joint = _outputs(pred, tgt, align_corners, class_weight, tasks)
        kernel, expected = run_both_upsampled(pred, tgt, align_corners=align_corners,
                                              class_weight=class_weight,
                                              log_vars=torch.tensor([0.1] * len(tasks)))
        assert_match(kernel, expected)
    with use(regression_columns=1):  # the joint launch's regressions take one column
        apart = _outputs(pred, tgt, align_corners, class_weight, tasks)
    for a, b in zip(joint, apart):
        assert torch.equal(a, b)


def _launched(one_launch=True, C=19, dtype=torch.float32, tasks=TASKS):
    pred, tgt = low_res_inputs(B=1, C=C, h=4, w=6, H=32, W=48, seed=42, tasks=tasks)
    pred = {k: v.to(dtype) for k, v in pred.items()}
    get = lambda d, k: d.get(k)  # noqa: E731
    calls = []
    with use(one_launch=one_launch):
        upsample._forward(launch_recorder(calls), get(pred, "semantic"), get(tgt, "semantic"),
                          None, get(pred, "instance"), get(tgt, "instance"),
                          get(tgt, "instance_mask"), get(pred, "depth"), get(tgt, "depth"),
                          torch.zeros(len(tasks), dtype=dtype),
                          [tasks.index(k) if k in tasks else -1 for k in TASKS],
                          [1.0, 0.5, 0.5], [0.5, 0.5, 0.5], True, 255, False, True)
    return [kernel.__name__ for kernel, _, _ in calls if "upsample_" in kernel.__name__
            and kernel.__name__.endswith(("loss_kernel", "regressions_kernel", "both_kernel",
                                          "chunks_kernel"))]


def test_one_launch_where_both_launches_would_run():
    assert _launched() == ["upsample_both_kernel"]
    assert _launched(one_launch=False) == ["upsample_loss_kernel", "upsample_regressions_kernel"]
    assert _launched(tasks=("semantic",)) == ["upsample_loss_kernel"]
    assert _launched(tasks=("instance", "depth")) == ["upsample_regressions_kernel"]
    assert _launched(C=40) == ["upsample_chunks_kernel", "upsample_regressions_kernel"]
    assert _launched(dtype=torch.float64) == ["upsample_loss_kernel",
                                               "upsample_regressions_kernel"]


def test_a_torch_compile_launch_makes_two_launches(monkeypatch):
    """Inside a torch.compile graph (the launch is ``wrap_triton``) no register cap can be
    passed, so the semantic and regressions' launches stay apart."""
    calls = []
    recorder = launch_recorder(calls)
    monkeypatch.setattr(upsample, "wrap_triton", recorder)  # what _forward compares with
    pred, tgt = low_res_inputs(B=1, C=19, h=4, w=6, H=32, W=48, seed=43)
    with use(one_launch=True):
        upsample._forward(recorder, pred["semantic"], tgt["semantic"], None, pred["instance"],
                          tgt["instance"], tgt["instance_mask"], pred["depth"], tgt["depth"],
                          torch.zeros(3), [0, 1, 2], [1.0, 0.5, 0.5], [0.5, 0.5, 0.5], True,
                          255, False, True)
    names = [kernel.__name__ for kernel, _, _ in calls]
    assert "upsample_both_kernel" not in names and "upsample_loss_kernel" in names


@triton.jit
def _roles_kernel(out_ptr, n_sem, n_reg):
    pid = tl.program_id(0)
    regression, k = program_role(pid, n_sem, n_reg)
    tl.store(out_ptr + 2 * pid, regression.to(tl.int32))
    tl.store(out_ptr + 2 * pid + 1, k)


@pytest.mark.parametrize("n_sem,n_reg", [(9, 5), (230, 128), (7, 1), (1, 6), (13, 13)])
def test_program_roles_cover_both_grids_evenly(n_sem, n_reg):
    n = n_sem + n_reg
    out = torch.full((n, 2), -1, dtype=torch.int32)
    _roles_kernel[(n,)](out, n_sem, n_reg)
    regression, k = out[:, 0].bool(), out[:, 1]
    assert sorted(k[regression].tolist()) == list(range(n_reg))
    assert sorted(k[~regression].tolist()) == list(range(n_sem))
    # each kind in grid order, and every prefix of the grid within one program of its share
    assert torch.equal(k[regression], torch.arange(n_reg, dtype=torch.int32))
    prefix = torch.cumsum(regression.long(), 0)
    share = torch.arange(1, n + 1) * n_reg / n
    assert ((prefix - share).abs() <= 1).all()
