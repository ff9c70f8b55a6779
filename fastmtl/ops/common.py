"""What every op needs to describe and launch a problem: strides, devices, launchers."""
from __future__ import annotations

import contextlib
from typing import Optional

import torch
from torch import Tensor
from torch.library import wrap_triton
from triton import knobs

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


def _metadata(t: Tensor):
    return (t.dtype, t.get_device(), t.shape, t.stride(), t.data_ptr() & 15 == 0)


def launch_key(args) -> tuple:
    """What decides how Triton specialises every launch of one op call: the dtypes, shapes,
    strides, devices and 16-byte alignment of its tensor arguments and the values of the
    others. The launches' integer arguments are functions of these; the op's own
    buffers are fresh allocations, aligned by the caching allocator."""
    return tuple(_metadata(a) if isinstance(a, Tensor) else
                 tuple(a) if isinstance(a, list) else a for a in args)


_compiled: dict = {}  # (kernel, op key, constexprs) -> (CompiledKernel, names of the rest)
_MAX_COMPILED = 4096


def _hooked(hook) -> bool:
    return hook is not None and getattr(hook, "calls", True) != []


class _DirectLaunch:
    __slots__ = ("kernel", "key", "stream")

    def __init__(self, kernel, key, stream):
        self.kernel, self.key, self.stream = kernel, key, stream

    def __getitem__(self, grid):
        def run(*args, **kwargs):
            key = (self.kernel, self.key, tuple(kwargs.items()))
            entry = _compiled.get(key)
            if entry is None:
                compiled = self.kernel[grid](*args, **kwargs)
                compiled = compiled.result() if hasattr(compiled, "result") else compiled
                names = [p.name for p in self.kernel.params[len(args):]]
                if compiled is not None and all(n in kwargs for n in names):
                    if len(_compiled) >= _MAX_COMPILED:
                        _compiled.clear()
                    _compiled[key] = (compiled, names)
                return
            compiled, names = entry
            rest = [kwargs[n] for n in names]
            enter, leave = knobs.runtime.launch_enter_hook, knobs.runtime.launch_exit_hook
            if _hooked(enter) or _hooked(leave):  # a profiler listens: as Triton's launcher
                meta = compiled.launch_metadata(grid, self.stream, *args, *rest)
            else:
                meta = enter = leave = None
            compiled.run(grid[0], grid[1] if len(grid) > 1 else 1,
                         grid[2] if len(grid) > 2 else 1, self.stream, compiled.function,
                         compiled.packed_metadata, meta, enter, leave, *args, *rest)
        return run


def eager_cuda(t: Tensor) -> bool:
    """An eager call on real CUDA tensors: the case ``direct_launcher`` serves."""
    return is_real(t) and t.is_cuda and not torch.compiler.is_compiling()


def launch_for(t: Tensor, key_args: tuple):
    """(launch, key) for an op call on ``t``'s device: direct launches under
    ``launch_key(key_args)`` for an eager CUDA call, otherwise Triton's launcher, or a
    ``wrap_triton`` node when traced (key None)."""
    if eager_cuda(t):
        key = launch_key(key_args)
        return direct_launcher(key, t.device), key
    return launcher(not is_real(t)), None


def direct_launcher(key: tuple, device: torch.device):
    """kernel -> launchable for an eager call on CUDA tensors of ``device`` (the current
    device: launch under ``device_guard``) whose launches are all decided by ``key``
    (``launch_key`` of the op's arguments). The first launch of a kernel with given
    constexprs goes through Triton's launcher (compilation, specialisation of every
    argument); later ones with the same key launch the compiled kernel directly, which
    skips the per-argument specialisation and cache-key hashing that dominate a small
    launch's host time."""
    stream = torch._C._cuda_getCurrentRawStream(device.index)
    return lambda kernel: _DirectLaunch(kernel, key, stream)
