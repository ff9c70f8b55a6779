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


def launcher(traced: bool):
    """kernel -> launchable: a wrap_triton node in a traced graph, the kernel itself in eager."""
    return wrap_triton if traced else (lambda kernel: kernel)
