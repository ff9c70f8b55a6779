"""Direct launches of compiled kernels (``fastmtl.ops.common.direct_launcher``).

On a GPU, tests/ops/test_kernel_cuda.py checks that they give the bits of Triton's
own launcher. Here, with a stand-in kernel: what decides a cache hit, and that a
hit hands the compiled kernel every argument in the kernel's own order.
"""
from types import SimpleNamespace

import pytest
import torch

from fastmtl.ops import common


class _Compiled:
    function, packed_metadata = "fn", "meta"

    def __init__(self):
        self.runs = []

    def run(self, *args):
        self.runs.append(args)


class _Kernel:
    """Stands in for a JITFunction with parameters (a, b, n, BLOCK, FLAG)."""

    params = [SimpleNamespace(name=n) for n in ("a", "b", "n", "BLOCK", "FLAG")]

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
    monkeypatch.setattr(common, "_compiled", {})
    return lambda key: common.direct_launcher(key, torch.device("cuda", 0))


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
