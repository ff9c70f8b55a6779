"""Replayed launches (``fastmtl.ops.replay``): from the third eager CUDA call with
one launch key, the ops make the launches recorded from the second again, with the new
call's tensors.

Here the ops' eager CUDA path runs on CPU tensors with every launch recorded and none
run: a replayed launch must hand Triton's C launch function what the launch built
argument by argument hands it, a device tensor's address in place of the tensor.
On a GPU, tests/ops/test_kernel_cuda.py checks the bits of a replayed call.
"""
import pytest
import torch

import fastmtl
from fastmtl.ops import common, replay
from helpers import LateLabelChecks, low_res_inputs, make_inputs


class _Launcher:
    """Triton 3.6's launcher of one compiled kernel, recording the raw launches."""

    global_scratch_size = profile_scratch_size = 0
    launch_cooperative_grid = launch_pdl = False

    def __init__(self, name, launches):
        self.name, self.launches = name, launches

    def launch(self, *args):
        self.launches.append((self.name, args))

    __call__ = launch


class _Compiled:
    packed_metadata = None

    def __init__(self, name, launches):
        self.function = name
        self.run = _Launcher(name, launches)

    def launch_metadata(self, *args):
        return "metadata"


@pytest.fixture
def launches(monkeypatch):
    """(kernel name, raw launch arguments) of every direct launch; each call's sources."""
    from fastmtl.ops import fused, upsample

    record = {"launches": [], "sources": [], "through_triton": []}

    def through_triton(kernel, grid, args, kwargs):
        record["through_triton"].append(kernel.fn.__name__)
        return _Compiled(kernel.fn.__name__, record["launches"])

    class Launches(replay.Launches):
        __slots__ = ()

        def __init__(self, cache, sources, objects, device):
            record["sources"].append((sources, objects))
            super().__init__(cache, sources, objects, device)

    monkeypatch.setattr(common, "_calls", {})
    monkeypatch.setattr(common, "eager_cuda", common.is_real)
    monkeypatch.setattr(common, "_through_triton", through_triton)
    monkeypatch.setattr(torch._C, "_cuda_getCurrentRawStream", lambda index: 7, raising=False)
    for op in (fused, upsample):
        monkeypatch.setattr(op, "check_device", lambda t: None)
        monkeypatch.setattr(op, "Launches", Launches)
    return record


def _calls(record, step, n):
    """The launches and sources of ``n`` calls of ``step``, each on its own inputs."""
    out = []
    for seed in range(n):
        record["launches"].clear()
        record["sources"].clear()
        step(seed)
        out.append((list(record["launches"]), list(record["sources"])))
    return out


def _fused_step(seed, aliased=False, check_labels=False):
    pred, tgt = make_inputs(B=2, C=5, H=4, W=8, seed=seed)
    pred = {k: v.requires_grad_() for k, v in pred.items()}
    if aliased:  # one tensor as prediction and target: two sources that are one
        tgt["instance"] = pred["instance"]
    log_vars = torch.zeros(3, requires_grad=True)
    out = fastmtl.multitask_loss(pred, tgt, log_vars, backend="triton",
                                 check_labels=check_labels)
    out.total.backward()


def _checked_step(seed):
    """The label check's row from the pinned pool, passed as a tensor, not an address."""
    _fused_step(seed, check_labels=True)


def _subset_step(seed):
    """Two tasks, fixed weights, channels_last logits: other sources absent."""
    pred, tgt = make_inputs(B=2, C=5, H=4, W=8, seed=seed)
    pred = {"semantic": pred["semantic"].to(memory_format=torch.channels_last).requires_grad_(),
            "depth": pred["depth"].requires_grad_()}
    out = fastmtl.multitask_loss(pred, tgt, weights=[1.0, 0.5], backend="triton",
                                 check_labels=False)
    out.total.backward()


def _no_grad_step(seed):
    pred, tgt = make_inputs(B=2, C=5, H=4, W=8, seed=seed)
    with torch.no_grad():
        fastmtl.multitask_loss(pred, tgt, torch.zeros(3), backend="triton", check_labels=False)


def _upsampled_step(seed):
    pred, tgt = low_res_inputs(2, 5, 3, 4, 12, 16, seed=seed)
    pred = {k: v.requires_grad_() for k, v in pred.items()}
    out = fastmtl.multitask_loss(pred, tgt, torch.zeros(3), backend="triton",
                                 check_labels=False, upsample="bilinear")
    out.total.backward()


def _assert_replays(recorded, replayed) -> int:
    """Launch by launch: the same kernel and launch arguments, each tensor of the recorded
    call replaced by the replaying call's source at the same index (its address where the
    source is passed by address). Returns how many addresses were passed."""
    (rec_launches, rec_sources), (rep_launches, rep_sources) = recorded, replayed
    assert [name for name, _ in rep_launches] == [name for name, _ in rec_launches]
    assert len(rec_sources) == len(rep_sources)
    for (rec_src, _), (rep_src, _) in zip(rec_sources, rep_sources):
        assert all((a is None) == (b is None) for a, b in zip(rec_src, rep_src))
    index = {id(t): (call, i) for call, (src, _) in enumerate(rec_sources)
             for i, t in enumerate(src) if t is not None}
    addresses = 0
    for (name, rec_args), (_, rep_args) in zip(rec_launches, rep_launches):
        assert len(rec_args) == len(rep_args), name
        assert rep_args[:13] == rec_args[:13], name  # grid, stream, function, metadata
        for pos, (a, b) in enumerate(zip(rec_args, rep_args)):
            if not isinstance(a, torch.Tensor):
                assert type(b) is type(a) and b == a, (name, pos)
                continue
            if id(a) not in index:  # made by a launch that is not replayed
                assert isinstance(b, torch.Tensor) and (b.shape, b.dtype) == (a.shape, a.dtype)
                continue
            call, i = index[id(a)]
            source, objects = rep_sources[call][0][i], rep_sources[call][1]
            if isinstance(b, torch.Tensor):  # passed as it is (or a launch not replayed)
                assert b is source, (name, pos)
            else:
                assert i >= objects and b == source.data_ptr(), (name, pos)
                addresses += 1
    return addresses


@pytest.mark.parametrize("step", [_fused_step, _checked_step, _subset_step, _no_grad_step,
                                  _upsampled_step],
                         ids=["fused", "label-check", "two-tasks", "no-grad", "upsampled"])
def test_the_third_call_replays_what_the_second_launched(launches, step, monkeypatch):
    if step is _checked_step:
        LateLabelChecks(monkeypatch)
    first, second, third, fourth = _calls(launches, step, 4)
    assert launches["through_triton"] and len(first[0]) < len(second[0])  # compiled first
    assert len(second[0]) == len(third[0]) > 0
    assert any(replay.REPLAY in c for c in common._calls.values())
    assert _assert_replays(second, third) > 0
    assert _assert_replays(second, fourth) > 0


def test_a_call_whose_sources_share_a_tensor_is_not_recorded(launches):
    _calls(launches, lambda seed: _fused_step(seed, aliased=True), 3)
    assert not any(replay.REPLAY in c for c in common._calls.values())
    # The next call with the same key but distinct tensors records (its kernels compiled
    # already), and the one after replays.
    # (The backward's launch, whose sources were distinct, replays already.)
    recording, replaying = ((_forward_only(c), s) for c, s in _calls(launches, _fused_step, 2))
    assert _assert_replays(recording, replaying) > 0


def _forward_only(launched):
    return [(name, args) for name, args in launched if name != "output_grad_kernel"]


def test_a_listening_profiler_gets_launches_through_the_launcher(launches, monkeypatch):
    _calls(launches, _fused_step, 3)
    hook = lambda metadata: None  # noqa: E731
    monkeypatch.setattr(common.knobs.runtime, "launch_enter_hook", hook)
    (launched, _), = _calls(launches, _fused_step, 1)
    # Triton's launcher call: (grid, stream, function, packed metadata, launch metadata,
    # enter hook, exit hook, ...), not the raw launch's (..., None, None, packed, ...)
    assert launched and all(args[6] == "metadata" and args[7] is hook for _, args in launched)


def test_a_kept_recording_keeps_no_tensor_of_its_call(launches):
    import gc
    import weakref

    kept = []

    def step(seed):
        pred, tgt = make_inputs(B=2, C=5, H=4, W=8, seed=seed)
        pred = {k: v.requires_grad_() for k, v in pred.items()}
        out = fastmtl.multitask_loss(pred, tgt, torch.zeros(3), backend="triton",
                                     check_labels=False)
        out.total.backward()
        kept.extend(weakref.ref(v) for v in (*pred.values(), *tgt.values(), out.total))

    _calls(launches, step, 2)  # the second records
    launches["launches"].clear()  # what this test's stand-in launcher saw
    launches["sources"].clear()
    gc.collect()
    assert any(replay.REPLAY in c for c in common._calls.values())
    assert all(ref() is None for ref in kept)
    for cache in common._calls.values():
        recorded = cache.get(replay.REPLAY)
        if recorded is not None:
            assert not any(isinstance(a, torch.Tensor) for s in recorded.steps for a in s[6])


def test_a_call_that_raises_leaves_no_recording_behind(launches, monkeypatch):
    from fastmtl.ops import fused_layout

    def broken(*args, **kwargs):
        raise RuntimeError("a launch that fails")

    _calls(launches, _fused_step, 1)  # compiled: the next call records
    monkeypatch.setattr(fused_layout.Problem, "launch_fused", broken)
    with pytest.raises(RuntimeError, match="a launch that fails"):
        _fused_step(0)
    assert replay.recording() is None
    assert not any(replay.REPLAY in c for c in common._calls.values())
