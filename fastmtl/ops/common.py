"""What every op needs to describe and launch a problem: strides, devices, launchers."""
from __future__ import annotations

import contextlib
from typing import Optional

import torch
from torch import Tensor
from torch.library import wrap_triton

import fastmtl.kernels as K

TASK_SLOTS = ("semantic", "instance", "depth")  # the kernels' slot order
REDUCE_BLOCK = 1024  # partial sums a reduction program reads per step


def cdiv(a: int, b: int) -> int:
    """ceil(a / b) of Python ints (``triton.cdiv`` wraps its arguments as constexprs: a
    measurable share of a call's host time when used on the host)."""
    return -(-a // b)


def next_power_of_2(n: int) -> int:
    """The least power of two >= n of a Python int (0 for 0, as ``triton.next_power_of_2``)."""
    return 0 if n <= 0 else 1 << (n - 1).bit_length()


def interpreted() -> bool:
    """True when the kernels run under the Triton interpreter (TRITON_INTERPRET=1)."""
    try:
        from triton.runtime.interpreter import InterpretedFunction
    except ImportError:  # pragma: no cover
        return False
    return isinstance(K.fused_loss_kernel, InterpretedFunction)


def is_real(t: Tensor) -> bool:
    """A plain tensor with data (not a fake or functional tensor of a tracer)."""
    return type(t) is torch.Tensor or type(t) is torch.nn.Parameter


def check_device(t: Tensor) -> None:
    if is_real(t) and t.device.type != "cuda" and not interpreted():
        raise RuntimeError(
            f"backend='triton' got tensors on {t.device}: the Triton kernels run on CUDA, or on "
            "CPU under the Triton interpreter (set TRITON_INTERPRET=1 before importing fastmtl); "
            "use backend='reference' for CPU tensors")


def device_guard(t: Tensor):
    if is_real(t) and t.device.type == "cuda":
        return torch.cuda.device(t.device)
    return contextlib.nullcontext()


def bchw_strides(t: Optional[Tensor]) -> tuple[int, int, int, int]:
    """(batch, channel, row, column) strides of a (B,C,H,W) tensor; zeros when absent."""
    return tuple(t.stride()) if t is not None and t.dim() == 4 else (0, 0, 0, 0)


def bhw_strides(t: Optional[Tensor]) -> tuple[int, int, int]:
    """(batch, row, column) strides of a (B,H,W) or (B,1,H,W) tensor; zeros when absent."""
    if t is None or t.dim() < 3:
        return (0, 0, 0)
    return (t.stride(0), t.stride(-2), t.stride(-1))


def eager_or_op(op, impl, setup_context, backward):
    """``op(*args)``, a ``triton_op`` made of ``impl`` with autograd ``(setup_context,
    backward)``, or the same three as a plain ``torch.autograd.Function`` for real tensors
    outside torch.compile: same outputs and gradients, without the custom op's dispatch
    (the dispatcher, default filling, output-aliasing checks, the torch.compile guard
    around the launches), which cost an eager call about as much host time as three of
    its kernel launches on an H100 machine (``python -m benchmarks.host_time``)."""

    class Eager(torch.autograd.Function):
        @staticmethod
        def forward(ctx, *args):
            output = impl(*args)
            setup_context(ctx, args, output)
            return output

        @staticmethod
        def backward(ctx, *grads):
            return backward(ctx, *grads)

    Eager.__name__ = Eager.__qualname__ = f"{impl.__name__}_eager"

    def call(*args):
        first = next(a for a in args if isinstance(a, Tensor))
        if is_real(first) and not torch.compiler.is_compiling():
            return Eager.apply(*args)
        return op(*args)

    return call


def launcher(traced: bool):
    """kernel -> launchable: a wrap_triton node in a traced graph, the kernel itself in eager."""
    return wrap_triton if traced else (lambda kernel: kernel)
