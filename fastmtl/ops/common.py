"""What every op needs to describe and launch a problem: strides, devices, launchers."""
from __future__ import annotations

import contextlib
import functools
import threading
from typing import Optional

import torch
from torch import Tensor
from torch.library import wrap_triton
import triton
from triton import knobs

import fastmtl.kernels as K
from fastmtl.ops.replay import hooked, recording as current_recording

TASK_SLOTS = ("semantic", "instance", "depth")  # the kernels' slot order
REDUCE_BLOCK = 1024  # partial sums a reduction program reads per step


def cdiv(a: int, b: int) -> int:
    """ceil(a / b) of Python ints (``triton.cdiv`` wraps its arguments as constexprs: a
    measurable share of a call's host time when used on the host)."""
    return -(-a // b)


def next_power_of_2(n: int) -> int:
    """The least power of two >= n of a Python int (0 for 0, as ``triton.next_power_of_2``)."""
    return 0 if n <= 0 else 1 << (n - 1).bit_length()


@functools.cache
def interpreted() -> bool:
    """True when the kernels run under the Triton interpreter (TRITON_INTERPRET=1 when
    fastmtl was imported: the kernels are made once, at import)."""
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


_NO_GUARD = contextlib.nullcontext()


def device_guard(t: Tensor):
    """Make ``t``'s CUDA device the current one for the launches in the block (a no-op
    where it already is, as in the usual single-GPU loop)."""
    if is_real(t) and t.is_cuda and t.get_device() != torch._C._cuda_getDevice():
        return torch.cuda.device(t.device)
    return _NO_GUARD


def per_task_losses(tasks, losses: Tensor, predictions) -> dict:
    """{task: L_k} from the ops' (K,) losses, each in its prediction's accumulation dtype as
    the reference gives it: float64 exactly for a float64 prediction (the losses are then
    float64), float32 otherwise."""
    per_task = dict(zip(tasks, losses.unbind()))
    if losses.dtype == torch.float64:
        per_task = {name: v if predictions[name].dtype == torch.float64 else v.float()
                    for name, v in per_task.items()}
    return per_task


def bchw_strides(t: Optional[Tensor]) -> tuple[int, int, int, int]:
    """(batch, channel, row, column) strides of a (B,C,H,W) tensor; zeros when absent."""
    return tuple(t.stride()) if t is not None and t.dim() == 4 else (0, 0, 0, 0)


def within_int32_per_image(t: Tensor) -> bool:
    """True when every offset inside one image of ``t`` (dimensions after the first: the
    image's start is kept in 64 bits) is below 2**31 elements, so a kernel may form those
    offsets in 32-bit arithmetic."""
    span = sum(max(n - 1, 0) * abs(s) for n, s in zip(t.shape[1:], t.stride()[1:]))
    return span < 2 ** 31


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
            _forward_calls.cache = None
            output = impl(*args)
            ctx.call_cache = forward_call_cache()  # for backward_launch
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


def can_cap(launch) -> bool:
    """Whether launches through ``launch`` take a register cap (``maxnreg``): compiled
    kernels outside a torch.compile graph, whose launcher takes num_warps and num_stages
    only."""
    return not interpreted() and launch is not wrap_triton


def launch_key(args) -> tuple:
    """What decides how Triton specialises every launch of one op call: the dtypes, shapes,
    strides, 16-byte alignment and device of its tensor arguments (a replayed launch passes
    device tensors by address: ``Recording``) and the values of the others. The launches'
    integer arguments are functions of these; the op's own buffers are fresh allocations,
    aligned by the caching allocator."""
    key = []
    for a in args:
        if isinstance(a, Tensor):
            key.append((a.dtype, a.shape, a.stride(), a.data_ptr() & 15 == 0, a.get_device()))
        else:
            key.append(tuple(a) if type(a) is list else a)
    return tuple(key)


# (launch key, device index) -> the cache of the calls with that key: the compiled launches
# under (id(kernel), constexprs), what the op keeps under names of its own (a str), and
# the caches of their backward calls under ("backward", key of what else those depend on).
_calls: dict = {}
_MAX_CALLS = 1024
_forward_calls = threading.local()  # .cache: the cache of this thread's latest eager call


def call_cache(key: tuple, device_index) -> dict:
    """The cache of the eager calls with launch key ``key`` on a device (see ``_calls``)."""
    cache = _calls.get((key, device_index))
    if cache is None:
        if len(_calls) >= _MAX_CALLS:
            _calls.clear()
        cache = _calls[(key, device_index)] = {}
    return cache


def clear_call_caches() -> None:
    """Forget every kept call: compiled launches and what the ops keep (e.g. after changing
    how they configure a problem)."""
    _calls.clear()


def compiled_launches() -> int:
    """How many compiled launches are kept for direct launching, over all calls."""
    def count(cache):
        return sum(count(v) if isinstance(k, tuple) and k[0] == "backward" else 1
                   for k, v in cache.items() if not isinstance(k, str))
    return sum(count(cache) for cache in _calls.values())


def _through_triton(kernel, grid, args, kwargs):
    """Launch through Triton's launcher (compiling on first use); the compiled kernel."""
    compiled = kernel[grid](*args, **kwargs)
    return compiled.result() if hasattr(compiled, "result") else compiled


# The launcher protocol _raw_launch follows is Triton 3.6's (checked against its
# CudaLauncher.__call__ by tests/ops/test_direct_launch.py); other versions take __call__.
_RAW_LAUNCH_TRITON = triton.__version__.split(".")[:2] == ["3", "6"]


def _raw_launch(launcher):
    """(launch, cooperative, pdl): the C function behind Triton's ``CudaLauncher`` and the
    two arguments its Python ``__call__`` adds, where it adds nothing else (no global or
    profile scratch memory to allocate per launch); None otherwise."""
    if not _RAW_LAUNCH_TRITON:
        return None
    try:
        if launcher.global_scratch_size or launcher.profile_scratch_size:
            return None
        return launcher.launch, launcher.launch_cooperative_grid, launcher.launch_pdl
    except AttributeError:
        return None


class _DirectLaunch:
    __slots__ = ("kernel", "table", "stream", "grid")

    def __init__(self, kernel, table, stream):
        self.kernel, self.table, self.stream = kernel, table, stream

    def __getitem__(self, grid):
        self.grid = grid
        return self.run

    def run(self, *args, **kwargs):
        key = (id(self.kernel), tuple(kwargs.items()))  # a JITFunction hashes in Python
        entry = self.table.get(key)
        grid = self.grid
        if entry is None:
            compiled = _through_triton(self.kernel, grid, args, kwargs)
            recording = current_recording()
            if recording is not None:  # a launch through Triton's launcher: not replayable
                recording.steps = None
            names = self.kernel.arg_names[len(args):]
            if compiled is not None and all(n in kwargs for n in names):
                launcher = compiled.run
                self.table[key] = (compiled, launcher, _raw_launch(launcher),
                                   tuple(kwargs[n] for n in names))
            return
        compiled, launcher, raw, rest = entry
        x, y, z = grid[0], grid[1] if len(grid) > 1 else 1, grid[2] if len(grid) > 2 else 1
        recording = current_recording()
        if recording is not None:
            recording.add(compiled, raw, (x, y, z), (*args, *rest))
        enter, leave = knobs.runtime.launch_enter_hook, knobs.runtime.launch_exit_hook
        if hooked(enter) or hooked(leave):  # a profiler listens: as Triton's launcher
            meta = compiled.launch_metadata(grid, self.stream, *args, *rest)
            launcher(x, y, z, self.stream, compiled.function, compiled.packed_metadata, meta,
                     enter, leave, *args, *rest)
        elif raw is not None:  # what CudaLauncher.__call__ passes on, without its frame
            launch, cooperative, pdl = raw
            launch(x, y, z, self.stream, compiled.function, cooperative, pdl, None, None,
                   compiled.packed_metadata, None, None, None, *args, *rest)
        else:
            launcher(x, y, z, self.stream, compiled.function, compiled.packed_metadata, None,
                     None, None, *args, *rest)


def eager_cuda(t: Tensor) -> bool:
    """An eager call on real CUDA tensors: the case ``launch_for`` launches directly."""
    return is_real(t) and t.is_cuda and not torch.compiler.is_compiling()


def launch_for(t: Tensor, key_args: tuple):
    """(launch, cache) for an op call on ``t``'s device: for an eager CUDA call, direct
    launches through ``call_cache(launch_key(key_args))``, and that cache; otherwise
    Triton's launcher, or a ``wrap_triton`` node when traced, and None."""
    if eager_cuda(t):
        cache = call_cache(launch_key(key_args), t.device.index)
        _forward_calls.cache = cache
        return direct_launcher(cache, t.device), cache
    return launcher(not is_real(t)), None


def backward_launch(ctx, t: Tensor, saved_args: tuple, own_args: tuple):
    """The launch of an op's backward on ``t``'s device. After an eager CUDA forward its
    launches are cached under that call's cache (``Eager`` keeps it as ``ctx.call_cache``),
    whose key decides the metadata of every tensor the forward saved (``saved_args``), and
    under ``launch_key(own_args)``, what else they depend on; otherwise as ``launch_for``
    over both. Returns (launch, cache), as ``launch_for``."""
    parent = getattr(ctx, "call_cache", None)
    if parent is None or not eager_cuda(t):
        return launch_for(t, (*saved_args, *own_args))
    own = ("backward", launch_key(own_args))
    cache = parent.get(own)
    if cache is None:
        cache = parent[own] = {}
    return direct_launcher(cache, t.device), cache


def forward_call_cache() -> Optional[dict]:
    """The cache of this thread's latest eager CUDA ``launch_for`` (None after reading it):
    taken right after an op's forward, for its backward (``backward_launch``)."""
    cache = getattr(_forward_calls, "cache", None)
    _forward_calls.cache = None
    return cache


def direct_launcher(cache: dict, device: torch.device):
    """kernel -> launchable for an eager call on CUDA tensors of ``device`` (the current
    device: launch under ``device_guard``) whose launches are all decided by the key of
    ``cache`` (``call_cache``). The first launch of a kernel with given constexprs goes
    through Triton's launcher (compilation, specialisation of every argument); later ones
    launch the compiled kernel directly, which skips the per-argument specialisation and
    cache-key hashing that dominate a small launch's host time."""
    stream = torch._C._cuda_getCurrentRawStream(device.index)
    return lambda kernel: _DirectLaunch(kernel, cache, stream)
