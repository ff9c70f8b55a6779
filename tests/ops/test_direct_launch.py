"""Direct launches of compiled kernels (``fastmtl.ops.common.launch_for``, ``direct_launcher``).

On a GPU, tests/ops/test_kernel_cuda.py checks that they give the bits of Triton's
own launcher. Here, with a stand-in kernel: what decides a cache hit, and that a
hit hands the compiled kernel every argument in the kernel's own order.
"""
from types import SimpleNamespace

import pytest
import torch

import fastmtl

from fastmtl.ops import common


class _Compiled:
    function, packed_metadata = "fn", "meta"

    def __init__(self):
        self.runs = []

    def run(self, *args):
        self.runs.append(args)


class _Kernel:
    """Stands in for a JITFunction with parameters (a, b, n, BLOCK, FLAG)."""

    arg_names = ["a", "b", "n", "BLOCK", "FLAG"]

    def __init__(self):
        self.compiled, self.launches = _Compiled(), []

    def __getitem__(self, grid):
        def launch(*args, **kwargs):
            self.launches.append((grid, args, kwargs))
            return self.compiled
        return launch


@pytest.fixture
def launch(monkeypatch):
    monkeypatch.setattr(torch._C, "_cuda_getCurrentRawStream", lambda index: 1234, raising=False)
    monkeypatch.setattr(common, "_calls", {})
    return lambda key: common.direct_launcher(common.call_cache(key, 0), torch.device("cuda", 0))


def test_first_launch_through_triton_then_direct_in_the_kernels_order(launch):
    kernel, a, b = _Kernel(), torch.zeros(4), torch.ones(4)
    launch(("k",))(kernel)[(3,)](a, b, 7, FLAG=True, BLOCK=64, num_warps=4)
    assert kernel.launches == [((3,), (a, b, 7), dict(FLAG=True, BLOCK=64, num_warps=4))]
    assert kernel.compiled.runs == []
    launch(("k",))(kernel)[(5, 2)](b, a, 9, FLAG=True, BLOCK=64, num_warps=4)
    assert len(kernel.launches) == 1
    (run,) = kernel.compiled.runs
    assert run[:9] == (5, 2, 1, 1234, "fn", "meta", None, None, None)
    assert run[9:11] == (b, a) and run[11:] == (9, 64, True)


def test_another_key_or_constexpr_goes_through_triton_again(launch):
    kernel = _Kernel()
    for key, block in ((("k",), 64), (("k",), 128), (("other",), 64), (("k",), 64)):
        launch(key)(kernel)[(1,)](torch.zeros(1), torch.zeros(1), 1, BLOCK=block, FLAG=False)
    assert len(kernel.launches) == 3 and len(kernel.compiled.runs) == 1


def test_a_listening_profiler_gets_the_launch_metadata(launch, monkeypatch):
    kernel = _Kernel()
    kernel.compiled.launch_metadata = lambda grid, stream, *args: ("meta", grid, stream, args)
    hook = SimpleNamespace(calls=[print])
    monkeypatch.setattr(common.knobs.runtime, "launch_enter_hook", hook)
    for _ in range(2):
        launch(("k",))(kernel)[(1,)](1, 2, 3, BLOCK=4, FLAG=5)
    (run,) = kernel.compiled.runs
    assert run[6] == ("meta", (1,), 1234, (1, 2, 3, 4, 5)) and run[7] is hook


def test_the_key_sees_what_triton_specialises_on():
    x = torch.zeros(64, 8)
    key = common.launch_key
    assert key((x, [0, 1], 255, 1.0)) == key((torch.ones(64, 8), [0, 1], 255, 1.0))
    misaligned = torch.zeros(64 * 8 + 1)[1:].view(64, 8)  # same shape and strides
    for other in (x.t(), x.double(), x[:, :4], x[1:], misaligned):
        assert key((other, [0, 1], 255, 1.0)) != key((x, [0, 1], 255, 1.0)), other.shape
    assert key((x, [0, 1], 255, 1.0)) != key((x, [0, 1], 1, 1.0))
    assert key((x, [0, 1], 255, 1.0)) != key((x, [1, 0], 255, 1.0))
    assert key((x, None)) != key((None, x))


def test_the_raw_launch_passes_what_tritons_launcher_passes(launch):
    """Hits call the C launch function behind Triton's CudaLauncher directly; its
    ``__call__`` (run here as Triton ships it, on a launcher that records instead of
    launching) must hand that function the same arguments."""
    from triton.backends.nvidia.driver import CudaLauncher

    def recording_launcher(calls):
        launcher = object.__new__(CudaLauncher)
        launcher.launch = lambda *args: calls.append(args)
        launcher.num_ctas, launcher.launch_cooperative_grid, launcher.launch_pdl = 1, False, True
        launcher.global_scratch_size = launcher.profile_scratch_size = 0
        launcher.global_scratch_align = launcher.profile_scratch_align = 1
        return launcher

    direct, through_triton = [], []
    kernel = _Kernel()
    kernel.compiled.run = recording_launcher(direct)
    a, b = torch.zeros(4), torch.ones(4)
    for _ in range(2):
        launch(("k",))(kernel)[(6,)](a, b, 7, BLOCK=64, FLAG=True)
    recording_launcher(through_triton)(6, 1, 1, 1234, "fn", "meta", None, None, None,
                                       a, b, 7, 64, True)
    assert len(direct) == 1 and direct == through_triton


def test_a_launcher_with_scratch_memory_is_called_as_triton_calls_it(launch):
    from triton.backends.nvidia.driver import CudaLauncher

    calls = []
    launcher = object.__new__(CudaLauncher)
    launcher.global_scratch_size = 128  # needs an allocation per launch: not bypassed
    launcher.__class__ = type("Recording", (CudaLauncher,), {
        "__call__": lambda self, *args: calls.append(args)})
    kernel = _Kernel()
    kernel.compiled.run = launcher
    for _ in range(2):
        launch(("k",))(kernel)[(2,)](1, 2, 3, BLOCK=4, FLAG=5)
    assert calls == [(2, 1, 1, 1234, "fn", "meta", None, None, None, 1, 2, 3, 4, 5)]


@pytest.fixture
def recorded_launches(monkeypatch):
    """The ops' eager CUDA path on CPU tensors, each launch recorded, none run: a list of
    (kernel name, through Triton's launcher)."""
    from fastmtl.ops import fused

    launches = []

    class NoRun:
        function = packed_metadata = None

        def run(self, *args):
            launches.append((None, False))

    def through_triton(kernel, grid, args, kwargs):
        launches.append((kernel.fn.__name__, True))
        return NoRun()

    monkeypatch.setattr(common, "_calls", {})
    monkeypatch.setattr(common, "eager_cuda", common.is_real)
    monkeypatch.setattr(common, "_through_triton", through_triton)
    monkeypatch.setattr(torch._C, "_cuda_getCurrentRawStream", lambda index: 0, raising=False)
    monkeypatch.setattr(fused, "check_device", lambda t: None)
    return launches


def test_backward_launches_are_cached_under_the_forwards_call(recorded_launches):
    from helpers import make_inputs

    pred, tgt = make_inputs(B=1, C=5, H=4, W=8, seed=0)
    pred = {k: v.requires_grad_() for k, v in pred.items()}
    log_vars = torch.zeros(3, requires_grad=True)

    def step(retain=False, gradient=None):
        recorded_launches.clear()
        out = fastmtl.multitask_loss(pred, tgt, log_vars, backend="triton", check_labels=False)
        n_forward = len(recorded_launches)
        out.total.backward(gradient, retain_graph=retain)
        return recorded_launches[:n_forward], recorded_launches[n_forward:]

    forward, backward = step()
    assert all(through for _, through in forward + backward)
    assert [name for name, _ in backward] == ["output_grad_kernel"]
    forward, backward = step()  # same metadata: every launch direct
    assert not any(through for _, through in forward + backward)
    forward, backward = step(retain=True)  # the backward copies: another specialisation
    assert not any(through for _, through in forward)
    assert backward == [("output_grad_kernel", True)]
    # An incoming gradient off 16-byte alignment: Triton specialises on that, so must we.
    forward, backward = step(gradient=torch.ones(5)[1])
    assert not any(through for _, through in forward)
    assert backward == [("output_grad_kernel", True)]
    assert common.compiled_launches() == len(forward) + 3
    common.clear_call_caches()
    assert common.compiled_launches() == 0


def test_other_tritons_launch_through_the_launchers_own_call(launch, monkeypatch):
    calls = []

    class Launcher:
        global_scratch_size = profile_scratch_size = 0
        launch_cooperative_grid = launch_pdl = False

        def launch(self, *args):
            calls.append(("raw", args))

        def __call__(self, *args):
            calls.append(("call", args))

    kernel = _Kernel()
    kernel.compiled.run = Launcher()
    monkeypatch.setattr(common, "_RAW_LAUNCH_TRITON", False)
    for _ in range(2):
        launch(("k",))(kernel)[(2,)](1, 2, 3, BLOCK=4, FLAG=5)
    assert [how for how, _ in calls] == ["call"]
