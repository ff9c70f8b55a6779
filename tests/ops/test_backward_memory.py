"""Backward allocates and fills nothing the size of a gradient.

The gradients are written by the forward pass; backward only scales them. An
op whose non-differentiable outputs (the gradient buffers among them) got
materialised zero gradients would allocate and fill tensors of the gradients'
sizes in every backward: 2x the gradient memory at peak. Every ATen op that
backward dispatches is recorded; under the Triton interpreter its own copies
of kernel arguments go through ``set_`` and ``copy_`` and are not counted.
"""
import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

import fastmtl
from helpers import leaf_copies, make_inputs

CREATE_OR_FILL = ("zeros", "zeros_like", "ones", "ones_like", "full", "full_like", "empty",
                  "empty_like", "empty_strided", "new_zeros", "new_ones", "new_full",
                  "new_empty", "new_empty_strided", "fill_", "zero_", "clone")


class _Recorder(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.created = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        if func.overloadpacket.__name__ in CREATE_OR_FILL and isinstance(out, torch.Tensor):
            self.created.append((str(func), out.numel()))
        return out


def _created_in_backward(step, upsample):
    # The smallest gradient (depth: 64 values) is larger than any bookkeeping tensor.
    pred, tgt = make_inputs(B=2, C=3, H=8 if upsample else 4, W=16 if upsample else 8, seed=40)
    if upsample:
        pred = {k: v[..., ::2, ::2].contiguous() for k, v in pred.items()}
    p = leaf_copies(pred)
    out = fastmtl.multitask_loss(p, tgt, log_vars=torch.zeros(3, requires_grad=True),
                                 backend="triton", upsample="bilinear" if upsample else None)
    smallest = min(v.numel() for v in p.values())
    with _Recorder() as rec:
        step(out)
    return [(op, n) for op, n in rec.created if n >= smallest], rec.created


STEPS = {"total": lambda out: out.total.backward(),
         "one-loss": lambda out: out.losses["depth"].backward(),
         "total-and-loss": lambda out: (out.total + out.losses["semantic"]).backward()}


@pytest.mark.parametrize("step,upsample", [("total", False), ("one-loss", False),
                                           ("total-and-loss", False), ("total", True)],
                         ids=["total", "one-loss", "total-and-loss", "upsampled"])
def test_backward_creates_nothing_gradient_sized(step, upsample):
    large, everything = _created_in_backward(STEPS[step], upsample)
    assert everything, "the recorder saw no ATen op"
    if upsample:  # its backward writes each gradient once, into a fresh buffer
        large = [(op, n) for op, n in large if op != "aten.empty_like.default"]
    assert large == [], large


class _AllOps(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.ops = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.ops.append(func.overloadpacket.__name__)
        return func(*args, **(kwargs or {}))


# What the interpreter does with kernel arguments (copies to and from its own tensors).
INTERPRETER_COPIES = {"empty", "new_empty", "set_", "copy_"}


@pytest.mark.parametrize("upsample", [False, True], ids=["fused", "upsampled"])
def test_total_backward_is_one_launch_and_no_pytorch_op(upsample):
    """``total.backward()`` runs the op's one kernel launch and no ATen computation: the
    log-variances' gradient is written by that launch (it was a multiplication, and for
    the upsampled op a zero-fill of the task losses' gradient that did not arrive, each a
    dispatch and a CUDA launch per step)."""
    pred, tgt = make_inputs(B=2, C=3, H=8 if upsample else 4, W=16 if upsample else 8, seed=41)
    if upsample:
        pred = {k: v[..., ::2, ::2].contiguous() for k, v in pred.items()}
    p = leaf_copies(pred)
    log_vars = torch.zeros(3, requires_grad=True)
    out = fastmtl.multitask_loss(p, tgt, log_vars=log_vars, backend="triton",
                                 upsample="bilinear" if upsample else None)
    with _AllOps() as rec:
        out.total.backward()
    # the engine's root gradient and leaf accumulation; the log-variances' new gradient
    assert set(rec.ops) - INTERPRETER_COPIES <= {"ones_like", "detach", "empty_like"}, rec.ops
    assert rec.ops.count("empty_like") == 1
    assert log_vars.grad is not None and all(v.grad is not None for v in p.values())
