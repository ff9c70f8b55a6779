"""The compiled kernels on a GPU: PyTorch agreement, no host sync, CUDA graphs.

Run with ``TRITON_INTERPRET=0 python -m pytest -m cuda tests/ops/test_kernel_cuda.py``
(the test session otherwise sets the interpreter). Skipped without a GPU.
"""
import pytest
import torch

import fastmtl
from helpers import leaf_copies, low_res_inputs, make_inputs
from oracle import assert_match, oracle, run_both, run_both_upsampled

triton = pytest.importorskip("triton")
from fastmtl.ops import common  # noqa: E402
from fastmtl.ops import label_check  # noqa: E402
from fastmtl.ops import replay  # noqa: E402

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
    pytest.mark.skipif(common.interpreted(), reason="TRITON_INTERPRET=1 is set: run with "
                       "TRITON_INTERPRET=0 to test the compiled kernels"),
]


def _device(pred, tgt):
    return ({k: v.cuda() for k, v in pred.items()}, {k: v.cuda() for k, v in tgt.items()})


@pytest.mark.parametrize("C,dtype,layout", [
    (19, torch.float32, "contiguous"), (19, torch.bfloat16, "contiguous"),
    (19, torch.float32, "channels_last"), (150, torch.float32, "contiguous"),
    (150, torch.bfloat16, "channels_last"), (2, torch.float16, "contiguous"),
    (1, torch.float32, "contiguous"), (19, torch.float64, "contiguous"),
    # H x W a multiple of 16, as in the benchmarks: the specialisations with 8-byte accesses
    (19, torch.float32, "aligned"), (19, torch.bfloat16, "aligned"),
    (150, torch.float32, "aligned"), (150, torch.bfloat16, "aligned"),
])
def test_matches_pytorch_on_gpu(C, dtype, layout):
    H, W = (64, 96) if layout == "aligned" else (67, 131)
    pred, tgt = _device(*make_inputs(B=3, C=C, H=H, W=W, dtype=dtype, seed=C))
    if layout == "channels_last":
        pred = {k: v.contiguous(memory_format=torch.channels_last) for k, v in pred.items()}
    cw = torch.rand(C, device="cuda") + 0.5
    kernel, expected = run_both(pred, tgt, log_vars=torch.tensor([0.3, -0.4, 0.8], device="cuda"),
                                class_weight=cw)
    assert_match(kernel, expected, dtype)


def test_task_gradients_and_zero_weight_on_gpu():
    pred, tgt = _device(*make_inputs(B=2, C=19, H=33, W=65, seed=3))
    step = lambda out: (out[0] + 2 * out[1]["semantic"]).backward()  # noqa: E731
    assert_match(*run_both(pred, tgt, weights=[0.0, 1.0, 0.5], backward=step))


def test_deterministic_on_gpu():
    pred, tgt = _device(*make_inputs(B=4, C=19, H=256, W=512, seed=4))
    lv = torch.tensor([0.1, 0.2, 0.3], device="cuda")
    a, b = (run_both(pred, tgt, log_vars=lv)[0] for _ in range(2))
    assert torch.equal(a[0], b[0])
    assert all(torch.equal(a[2][k], b[2][k]) for k in a[2])


def test_forward_and_backward_never_sync():
    pred, tgt = _device(*make_inputs(B=2, C=19, H=64, W=96, seed=5))
    p = leaf_copies(pred)
    lv = torch.zeros(3, device="cuda", requires_grad=True)
    fastmtl.multitask_loss(p, tgt, log_vars=lv, backend="triton", check_labels=False)  # warm-up
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        out = fastmtl.multitask_loss(p, tgt, log_vars=lv, backend="triton", check_labels=False)
        out.total.backward()
        out = fastmtl.multitask_loss(p, tgt, log_vars=lv, backend="triton", check_labels=False)
        out.losses["depth"].backward()
    finally:
        torch.cuda.set_sync_debug_mode("default")


def test_label_check_costs_no_sync_and_is_raised_by_a_later_call():
    pred, tgt = _device(*make_inputs(B=2, C=19, H=64, W=96, seed=8))
    bad = dict(tgt, semantic=tgt["semantic"].clone())
    bad["semantic"][1, 5, 7] = 40
    p = leaf_copies(pred)
    fastmtl.multitask_loss(p, tgt, backend="triton").total.backward()  # warm-up
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:  # the default check_labels=True, bad labels or not: forward and backward never sync
        fastmtl.multitask_loss(p, tgt, backend="triton").total.backward()
        fastmtl.multitask_loss(p, bad, backend="triton").total.backward()
    finally:
        torch.cuda.set_sync_debug_mode("default")
    torch.cuda.synchronize()  # the copies have finished: the next call reads them
    with pytest.raises(ValueError, match=r"label 40 .* at targets\['semantic'\]\[1, 5, 7\]"):
        fastmtl.multitask_loss(p, tgt, backend="triton")
    fastmtl.multitask_loss(p, tgt, backend="triton")  # reported once
    label_check.raise_pending_label_errors()


def test_cuda_graph_capture_of_forward_and_backward():
    pred, tgt = _device(*make_inputs(B=2, C=19, H=64, W=96, seed=6))
    static = leaf_copies(pred)
    lv = torch.zeros(3, device="cuda", requires_grad=True)
    inputs = [*static.values(), lv]

    def step():
        # check_labels=True (the default) is capturable: the check is skipped while capturing.
        out = fastmtl.multitask_loss(static, tgt, log_vars=lv, backend="triton")
        return (out.total, *torch.autograd.grad(out.total, inputs))

    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(2):
            step()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        captured = step()

    new_pred, _ = _device(*make_inputs(B=2, C=19, H=64, W=96, seed=7))
    with torch.no_grad():
        for k in static:
            static[k].copy_(new_pred[k])
        lv.copy_(torch.tensor([0.2, -0.1, 0.4]))
    graph.replay()
    torch.cuda.synchronize()
    q = leaf_copies(new_pred)
    lv_ref = lv.detach().clone().requires_grad_(True)
    total, _ = oracle(q, tgt, lv_ref)
    expected = (total, *torch.autograd.grad(total, [*q.values(), lv_ref]))
    for got, want in zip(captured, expected):
        torch.testing.assert_close(got, want, rtol=2e-5, atol=1e-6)


def test_direct_launches_match_tritons_launcher():
    # The first call of a problem goes through Triton's launcher and keeps the compiled
    # kernels; the next launches them directly (common.direct_launcher) and records its
    # launches; the one after replays them, device tensors by address (fastmtl.ops.replay).
    # Same bits, also for inputs at other addresses.
    pred, tgt = _device(*make_inputs(B=2, C=19, H=64, W=96, seed=9))
    lv = torch.tensor([0.3, -0.4, 0.8], device="cuda")
    common.clear_call_caches()
    first = run_both(pred, tgt, log_vars=lv)[0]
    kept = common.compiled_launches()
    assert kept >= 5  # normaliser, prepare, fused, finalize, output grad
    second = run_both(pred, tgt, log_vars=lv)[0]
    assert common.compiled_launches() == kept
    assert any(replay.REPLAY in cache for cache in common._calls.values())
    moved = ({k: v.clone() for k, v in pred.items()}, {k: v.clone() for k, v in tgt.items()})
    for got in (run_both(pred, tgt, log_vars=lv)[0], run_both(*moved, log_vars=lv.clone())[0]):
        assert torch.equal(first[0], got[0])
        assert all(torch.equal(first[1][k], got[1][k]) for k in first[1])
        assert all(torch.equal(first[2][k], got[2][k]) for k in first[2])
    assert torch.equal(first[0], second[0])
    assert all(torch.equal(first[2][k], second[2][k]) for k in first[2])
    # Targets 4 bytes off 16-byte alignment are another specialisation: a new key.
    shifted = {k: torch.empty(v.numel() + 1, dtype=v.dtype, device="cuda")[1:].view_as(v)
               for k, v in tgt.items() if k in ("instance", "depth")}
    for k in shifted:
        shifted[k].copy_(tgt[k])
    third = run_both(pred, dict(tgt, **shifted), log_vars=lv)
    assert common.compiled_launches() > kept
    assert_match(*third)
    torch.testing.assert_close(third[0][0], first[0], rtol=1e-6, atol=0)


def test_replayed_upsampled_calls_match_the_first():
    # The 1/8-resolution op: through Triton, then direct, then replayed (fastmtl.ops.replay),
    # each call on predictions at new addresses. Same bits as the first, and the oracle's.
    pred, tgt = _device(*low_res_inputs(2, 19, 16, 24, 128, 192, seed=11))
    lv = torch.tensor([0.2, -0.1, 0.5], device="cuda")
    common.clear_call_caches()
    calls = [run_both_upsampled(pred, tgt, log_vars=lv) for _ in range(4)]
    assert any(replay.REPLAY in cache for cache in common._calls.values())
    assert_match(*calls[0])
    first = calls[0][0]
    for got, _ in calls[1:]:
        assert torch.equal(first[0], got[0])
        assert all(torch.equal(first[2][k], got[2][k]) for k in first[2])


def test_label_checks_reuse_their_pinned_slots():
    pred, tgt = _device(*make_inputs(B=2, C=19, H=16, W=32, seed=10))
    label_check.raise_pending_label_errors()
    for _ in range(3):
        fastmtl.multitask_loss(pred, tgt, backend="triton")
    label_check.raise_pending_label_errors()
    free = label_check._free_slots[torch.cuda.current_device()]
    assert len(free) == label_check.SLOTS_PER_CHUNK  # every slot handed back, none added
    assert all(slot.row.is_pinned() for slot in free)
    # the three rows just read went to the back of the pool, each with the GPU's count of 0
    assert [slot.host[0] for slot in list(free)[-3:]] == [0, 0, 0]


def test_a_pending_bad_label_is_raised_after_a_cuda_graph_capture_not_inside():
    pred, tgt = _device(*make_inputs(B=2, C=19, H=16, W=32, seed=11))
    bad = dict(tgt, semantic=tgt["semantic"].clone())
    bad["semantic"][0, 3, 4] = 25
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(3):
            fastmtl.multitask_loss(pred, tgt, backend="triton")  # compiled and recorded
    torch.cuda.current_stream().wait_stream(side)
    label_check.raise_pending_label_errors()
    fastmtl.multitask_loss(pred, bad, backend="triton")
    torch.cuda.synchronize()  # its check is written: a call now would raise
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):  # reads no check that needs a wait, raises nothing
        fastmtl.multitask_loss(pred, tgt, backend="triton")
    with pytest.raises(ValueError, match=r"label 25 .* at targets\['semantic'\]\[0, 3, 4\]"):
        fastmtl.multitask_loss(pred, tgt, backend="triton")
    label_check.raise_pending_label_errors()


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
def test_class_planes_through_inline_ptx_match_pytorch(dtype, layout, monkeypatch):
    """The one-read layout for large C (benchmarks.tune RESIDENT: every class plane in
    registers, loads and stores through inline PTX), which the interpreter cannot run."""
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
    from benchmarks import tune
    from fastmtl.ops import fused as ops

    config = tune.Config(1, 4, 1, 16384, tune.RESIDENT)

    class Configured(ops.Problem):
        def __init__(self, *a, **kw):
            super().__init__(*a, **kw)
            tune.configure(self, config)
            assert self.asm_planes

    monkeypatch.setattr(ops, "Problem", Configured)
    common.clear_call_caches()
    pred, tgt = _device(*make_inputs(B=3, C=150, H=67, W=131, dtype=dtype, seed=5))
    if layout == "channels_last":
        pred = {k: v.contiguous(memory_format=torch.channels_last) for k, v in pred.items()}
    cw = torch.rand(150, device="cuda") + 0.5
    kernel, expected = run_both(pred, tgt, log_vars=torch.tensor([0.3, -0.4, 0.8], device="cuda"),
                                class_weight=cw)
    assert_match(kernel, expected, dtype)
    common.clear_call_caches()


@pytest.mark.parametrize("dtype,kept_pairs", [(torch.float32, False), (torch.bfloat16, False),
                                              (torch.bfloat16, True)],
                         ids=["float32", "bfloat16", "bfloat16-kept"])
def test_target_class_last_on_gpu(dtype, kept_pairs, monkeypatch):
    """C = 150 (one pixel per thread in fp32, pixel pairs in bf16, their exponentials taken
    again or kept as float16): the target's gradient is stored over its plane's after the
    class loops (inline PTX stores of 4 and 2 bytes). Labels outside the classes (check off)
    and ignored ones get no target term, and rows with NaN or +inf are NaN, as
    F.cross_entropy gives."""
    from fastmtl.ops import fused_layout

    monkeypatch.setattr(fused_layout, "KEPT_PAIRS", kept_pairs)
    common.clear_call_caches()
    C, H, W = 150, 32, 48  # an even H * W: the pairs apply
    g = torch.Generator().manual_seed(11)
    x = (torch.randn(2, C, H, W, generator=g) * 3).to(dtype)
    t = torch.randint(0, C, (2, H, W), generator=g)
    flat = t.view(-1)
    flat[::7] = torch.tensor([C, 300, -5, 255]).repeat(flat[::7].numel())[: flat[::7].numel()]
    x[0, 3, 1, 1] = float("nan")
    x[1, 0, 2, 5] = float("inf")
    ignored = torch.where((t >= 0) & (t < C), t, 255)
    leaf = x.cuda().requires_grad_(True)
    out = fastmtl.multitask_loss({"semantic": leaf}, {"semantic": t.cuda()}, backend="triton",
                                 check_labels=False)
    out.losses["semantic"].backward()
    ref_x = x.float().cuda().requires_grad_(True)
    ref = torch.nn.functional.cross_entropy(ref_x, ignored.cuda(), ignore_index=255,
                                            reduction="none")
    valid = ignored.cuda() != 255
    (ref.sum() / valid.sum()).backward()
    nan_rows = ref_x.grad.isnan().any(1, keepdim=True).expand_as(ref_x.grad)
    assert torch.equal(leaf.grad.isnan(), ref_x.grad.isnan())
    tol = dict(rtol=1e-2, atol=1e-4) if dtype == torch.bfloat16 else dict(rtol=2e-5, atol=1e-7)
    torch.testing.assert_close(leaf.grad.float()[~nan_rows], ref_x.grad[~nan_rows], **tol)
    assert out.losses["semantic"].isnan()  # a labelled row holds NaN
    common.clear_call_caches()  # the problem kept for this key has this test's layout


@pytest.mark.parametrize("shape", [(3, 30, 66), (2, 9, 34)], ids=str)
def test_split_pixels_match_pytorch_on_gpu(shape, monkeypatch):
    """C = 150 fp32 with each pixel's planes split between two threads
    (``fused_layout.SPLIT_PLANES``, off by default): two rounds a tile, the second's loads
    held after the first's last store, the kept exponentials under the register cap."""
    from fastmtl.ops import fused_layout

    monkeypatch.setattr(fused_layout, "SPLIT_PLANES", True)
    common.clear_call_caches()
    B, H, W = shape
    pred, tgt = _device(*make_inputs(B=B, C=150, H=H, W=W, seed=H * W))
    pred["semantic"] = pred["semantic"] * 4
    cw = torch.rand(150, device="cuda") + 0.5
    kernel, expected = run_both(pred, tgt, log_vars=torch.tensor([0.3, -0.4, 0.8], device="cuda"),
                                class_weight=cw)
    assert_match(kernel, expected)
    (problem,) = [v["problem"] for v in common._calls.values() if "problem" in v]
    assert problem.split and not problem.pairs and problem.kept_launch(lambda k: k)[1]
    common.clear_call_caches()


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
def test_torch_compile_matches_pytorch_on_gpu(dtype, monkeypatch):
    """The op inside a torch.compile graph at C = 150, launched through ``wrap_triton``
    nodes, which take no register cap: the split pairs (bf16) take their exponentials again
    there (``Problem.kept_launch``), the eager call keeps them under the cap. Both against
    PyTorch."""
    import types

    from torch.library import wrap_triton

    from fastmtl.ops import fused_layout

    kept_launches = []
    kept_launch = fused_layout.Problem.kept_launch

    def spy(self, launch):
        kept, cap = kept_launch(self, launch)
        kept_launches.append((launch is wrap_triton, self.split, kept, cap))
        return kept, cap

    monkeypatch.setattr(fused_layout.Problem, "kept_launch", spy)
    common.clear_call_caches()
    pred, tgt = _device(*make_inputs(B=2, C=150, H=64, W=96, dtype=dtype, seed=23))
    log_vars = torch.tensor([0.3, -0.4, 0.8], device="cuda")
    expected = run_both(pred, tgt, log_vars=log_vars)
    eager = [k for k in kept_launches if not k[0]]
    original = fastmtl.multitask_loss
    graph = torch.compile(lambda p, t, **kw: (lambda o: (o.total, o.losses))(original(p, t, **kw)),
                          fullgraph=True)

    def compiled(p, t, **kw):
        total, losses = graph(p, t, **kw)
        return types.SimpleNamespace(total=total, losses=losses)

    monkeypatch.setattr(fastmtl, "multitask_loss", compiled)
    kernel, reference = run_both(pred, tgt, log_vars=log_vars)
    assert_match(kernel, reference, dtype)
    assert_match(expected[0], expected[1], dtype)
    traced = [k for k in kept_launches if k[0]]
    split = dtype == torch.bfloat16
    # fp32 keeps its exponentials in both (255 registers, no cap)
    assert traced and all(k[1] == split and k[2] != split and not k[3] for k in traced), traced
    assert eager and all(k[2] and bool(k[3]) == split for k in eager), eager
    torch._dynamo.reset()
    common.clear_call_caches()


@pytest.mark.parametrize("shape", [(0, 64, 96), (2, 64, 0)], ids=str)
@pytest.mark.parametrize("C,dtype", [(19, torch.float32), (150, torch.float32),
                                     (150, torch.bfloat16)])
def test_no_pixel_on_gpu(shape, C, dtype):
    """Fresh empty tensors (a null address) through every kernel, eagerly three times (the
    third replayed): zero losses, zero-size gradients, no fault when the GPU has run."""
    B, H, W = shape
    empty = lambda v: torch.empty((B, *v.shape[1:-2], H, W), dtype=v.dtype, device="cuda")  # noqa: E731
    pred, tgt = make_inputs(B=1, C=C, H=1, W=1, dtype=dtype, seed=5)
    pred = {k: empty(v) for k, v in pred.items()}
    tgt = {k: empty(v) for k, v in tgt.items()}
    for _ in range(3):
        p = leaf_copies(pred)
        out = fastmtl.multitask_loss(p, tgt, log_vars=torch.zeros(3, device="cuda"),
                                     backend="triton")
        out.total.backward()
        torch.cuda.synchronize()
        assert out.total.item() == 0 and all(v.grad.shape == v.shape for v in p.values())


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
def test_non_finite_regressions_get_l1_loss_gradient_on_gpu(dtype):
    pred, tgt = _device(*make_inputs(B=2, C=19, H=33, W=65, dtype=dtype, mask_frac=1.0,
                                     depth_invalid_frac=0.0, seed=6))
    pred["instance"][0, 0, 1, 2], pred["instance"][1, 1, 3, 4] = float("nan"), float("-inf")
    pred["depth"][0, 0, 5, 6], pred["depth"][1, 0, 7, 8] = float("nan"), float("inf")
    weights = [1.0, 0.0, 2.0]  # a zero weight times a NaN sign would be NaN
    expected, got = leaf_copies(pred), leaf_copies(pred)
    oracle(expected, tgt, weights=weights)[0].backward()
    fastmtl.multitask_loss(got, tgt, weights=weights, backend="triton").total.backward()
    for k in ("instance", "depth"):
        assert not got[k].grad.isnan().any(), k
        torch.testing.assert_close(got[k].grad.float(), expected[k].grad.float(), rtol=1e-2,
                                   atol=1e-4)
