"""The fused Triton kernels against PyTorch's own ops, on CPU through the interpreter.

The oracle below is written from the loss contract with F.cross_entropy and
F.l1_loss and differentiated by autograd; it shares no code with fastmtl.
"""
import math

import pytest
import torch

import fastmtl
from fastmtl.ops import fused as ops
from fastmtl.ops import fused_layout as layout
from fastmtl.validation import bad_label_message
from helpers import leaf_copies, make_inputs
from oracle import assert_match, oracle, run_both

ALL = ("semantic", "instance", "depth")


GRID = [
    # C, B, H, W, dtype, target dtype, ignored fraction, class weights, weighting
    (1, 1, 5, 7, torch.float32, torch.int64, 0.2, False, "log_vars"),
    (2, 2, 6, 5, torch.float32, torch.int32, 0.0, True, "weights"),
    (19, 3, 7, 9, torch.float32, torch.uint8, 0.3, False, "log_vars"),
    (19, 2, 9, 11, torch.float64, torch.int64, 0.2, True, "none"),
    (19, 1, 3, 4, torch.float64, torch.int64, 0.2, True, "log_vars"),  # float32 log_vars
    (19, 1, 5, 5, torch.float32, torch.int64, 1.0, False, "log_vars"),
    (150, 1, 5, 6, torch.float32, torch.int64, 0.5, False, "log_vars"),
    (150, 2, 4, 5, torch.float64, torch.int32, 0.1, True, "weights"),
    (19, 2, 6, 7, torch.bfloat16, torch.int64, 0.2, False, "log_vars"),
    (150, 1, 4, 5, torch.bfloat16, torch.uint8, 0.2, True, "log_vars"),
    (2, 3, 5, 5, torch.float16, torch.int64, 0.2, False, "weights"),
]


@pytest.mark.parametrize("C,B,H,W,dtype,tdtype,ignored,weighted,weighting", GRID)
def test_matches_pytorch(C, B, H, W, dtype, tdtype, ignored, weighted, weighting):
    pred, tgt = make_inputs(B=B, C=C, H=H, W=W, dtype=dtype, target_dtype=tdtype,
                            ignore_frac=ignored, seed=C + B)
    cw = torch.rand(C, generator=torch.Generator().manual_seed(1)) + 0.5 if weighted else None
    log_vars = torch.tensor([0.3, -0.4, 0.8]) if weighting == "log_vars" else None
    weights = [0.2, 1.5, 0.7] if weighting == "weights" else None
    kernel, expected = run_both(pred, tgt, log_vars=log_vars, weights=weights, class_weight=cw)
    assert kernel[0].dtype == (torch.float64 if dtype == torch.float64 else torch.float32)
    for k, g in kernel[2].items():
        if k in pred:
            assert g.dtype == dtype and g.shape == pred[k].shape
    assert_match(kernel, expected, dtype)


SUBSETS = [s for n in (1, 2, 3) for s in __import__("itertools").combinations(ALL, n)]


@pytest.mark.parametrize("tasks", SUBSETS, ids=["+".join(s) for s in SUBSETS])
def test_every_task_subset(tasks):
    # Each subset is its own kernel specialisation; the two weightings differ only in the
    # one-program kernels, so they alternate: log-variances for 1 and 3 tasks, weights for 2.
    pred, tgt = make_inputs(B=2, C=5, H=5, W=6, tasks=tasks, seed=len(tasks))
    if len(tasks) % 2:
        assert_match(*run_both(pred, tgt, log_vars=torch.linspace(-0.5, 0.5, len(tasks))))
    else:
        assert_match(*run_both(pred, tgt, weights=[0.5] * len(tasks)))


def test_empty_tasks_add_nothing():
    pred, tgt = make_inputs(B=2, C=4, H=4, W=5, seed=3)
    tgt["semantic"][:] = 255
    tgt["instance_mask"][:] = False
    z = tgt["depth"]
    z[:, :, 0] = float("nan")
    z[:, :, 1] = float("inf")
    z[:, :, 2] = -1.0
    z[:, :, 3] = 0.0
    kernel, expected = run_both(pred, tgt, log_vars=torch.tensor([0.2, 0.1, -0.3]))
    assert kernel[0] == 0
    assert all(v == 0 for v in kernel[1].values())
    for g in kernel[2].values():
        assert torch.equal(g, torch.zeros_like(g))
    assert_match(kernel, expected)


def test_one_empty_task_among_others():
    pred, tgt = make_inputs(B=2, C=4, H=4, W=5, seed=4)
    tgt["instance_mask"][:] = False
    kernel, expected = run_both(pred, tgt, log_vars=torch.tensor([0.2, 0.7, -0.3]))
    assert kernel[2]["log_vars"][1] == 0 and not kernel[2]["instance"].any()
    assert_match(kernel, expected)


def _strided(v, kind):
    if kind == "channels_last" and v.dim() == 4:
        return v.contiguous(memory_format=torch.channels_last)
    if kind == "transposed" and v.dim() >= 3:  # stride_h < stride_w: pixels are not one flat axis
        return v.transpose(-1, -2).contiguous().transpose(-1, -2)
    if kind == "sliced":  # a view into a larger buffer: channel, row and column slices
        shape = list(v.shape)
        big = torch.zeros([shape[0]] + [s + 2 for s in shape[1:-1]] + [2 * shape[-1] + 1],
                          dtype=v.dtype)
        index = [slice(None)] + [slice(1, 1 + s) for s in shape[1:-1]] + [slice(1, None, 2)]
        view = big[tuple(index)]
        view.copy_(v)
        return view
    return v


@pytest.mark.parametrize("kind", ["channels_last", "transposed", "sliced"])
def test_any_strides(kind):
    pred, tgt = make_inputs(B=2, C=6, H=5, W=7, seed=5)
    tgt["depth"] = tgt["depth"][:, 0]  # (B,H,W) targets are accepted too
    pred = {k: _strided(v, kind) for k, v in pred.items()}
    tgt = {k: _strided(v, kind) for k, v in tgt.items()}
    assert not pred["semantic"].is_contiguous()
    kernel, expected = run_both(pred, tgt, log_vars=torch.tensor([0.1, 0.2, 0.3]))
    assert_match(kernel, expected)


@pytest.mark.parametrize("C,max_block_c", [(19, 8), (150, 64), (3, 2)])
def test_two_sweeps_over_class_chunks(C, max_block_c, monkeypatch, problems):
    pred, tgt = make_inputs(B=2, C=C, H=4, W=6, seed=C)
    pred["semantic"] = pred["semantic"] * 8  # large logits: the running max matters
    cw = torch.rand(C, generator=torch.Generator().manual_seed(2)) + 0.1
    real = ops.fused_multitask_loss

    def chunked(*args, **kwargs):
        return real(*args, **kwargs, max_block_c=max_block_c)

    # the name the functional form imports at each call
    monkeypatch.setattr(fastmtl.ops, "fused_multitask_loss", chunked)
    assert_match(*run_both(pred, tgt, log_vars=torch.tensor([0.5, 0.0, 0.0]), class_weight=cw))
    classes, chunk, num_chunks = problems[0].classes
    assert classes == 0 and num_chunks == -(-C // chunk) > 1, problems[0].classes


def test_many_tiles_per_program(monkeypatch):
    # 5 tiles of 256 pixels (fp32: 2 per thread, 4 warps) on 2 programs of 4 tiles each:
    # round-robin tiles, a masked tail, partial sums across tiles; the pre-pass deals its
    # 3 tiles to 2 programs; with 1-partial blocks, two levels of fixed-order reduction.
    monkeypatch.setattr(layout, "FUSED_PROGRAMS", 2)
    monkeypatch.setattr(layout, "PREPASS_PROGRAMS", 2)
    monkeypatch.setattr(ops, "REDUCE_BLOCK", 1)
    pred, tgt = make_inputs(B=1, C=19, H=33, W=33, seed=6)
    problem = layout.Problem(pred["semantic"], tgt["semantic"], None, None, None, None, None,
                             None, pred["semantic"], None, None, 255, ops.MAX_BLOCK_C)
    assert problem.grid(problem.block_p, layout.FUSED_PROGRAMS) == (2, 4, 5, 5)
    assert_match(*run_both(pred, tgt, log_vars=torch.tensor([0.1, 0.2, 0.3])))


@pytest.mark.parametrize("dtype,split,block_p", [(torch.float32, False, 128),
                                                 (torch.bfloat16, True, 128),
                                                 (torch.bfloat16, False, 256)], ids=str)
def test_one_tile_per_program(dtype, split, block_p, monkeypatch, problems):
    # The one-read layouts with ``layout.ONE_TILE`` (fp32: 128-pixel tiles; bf16: pixel
    # pairs split between two threads, 128, or whole, 256): as many programs as tiles,
    # whatever the cap, against PyTorch.
    monkeypatch.setattr(layout, "FUSED_PROGRAMS", 2)
    monkeypatch.setattr(layout, "ONE_TILE", True)
    monkeypatch.setattr(layout, "SPLIT_PAIRS", split)
    pred, tgt = make_inputs(B=2, C=150, H=9, W=34, dtype=dtype, seed=12)
    assert_match(*run_both(pred, tgt, log_vars=torch.tensor([0.1, 0.2, 0.3])), dtype)
    tiles = 2 * -(-9 * 34 // block_p)
    assert problems and all(p.one_read and p.fused_grid()[:2] == (tiles, 1) for p in problems)


def test_deterministic(monkeypatch):
    monkeypatch.setattr(layout, "FUSED_PROGRAMS", 3)
    monkeypatch.setattr(layout, "PREPASS_PROGRAMS", 3)
    pred, tgt = make_inputs(B=2, C=19, H=9, W=17, seed=7)
    first, second = (run_both(pred, tgt, log_vars=torch.tensor([0.1, 0.2, 0.3]))[0]
                     for _ in range(2))
    assert torch.equal(first[0], second[0])
    for k in first[1]:
        assert torch.equal(first[1][k], second[1][k])
    for k in first[2]:
        assert torch.equal(first[2][k], second[2][k])


def test_grad_output_is_applied():
    pred, tgt = make_inputs(B=2, C=5, H=4, W=5, seed=8)
    lv = torch.tensor([0.3, -0.2, 0.1])
    for g in (2.5, 0.0, -1.0):
        step = lambda out, g=g: out[0].backward(torch.tensor(g))  # noqa: E731
        assert_match(*run_both(pred, tgt, log_vars=lv, backward=step))


def test_gradient_through_task_losses():
    pred, tgt = make_inputs(B=2, C=5, H=4, W=5, seed=9)
    lv = torch.tensor([0.3, -0.2, 0.1])
    for step in (lambda out: out[1]["depth"].backward(),
                 lambda out: (2 * out[0] + 3 * out[1]["semantic"] - out[1]["instance"]).backward()):
        kernel, expected = run_both(pred, tgt, log_vars=lv, backward=step)
        assert_match(kernel, expected)
        # only the total depends on the log-variances: no gradient without it, as the oracle
        assert (kernel[2]["log_vars"] is None) == (expected[2]["log_vars"] is None)


def test_zero_fixed_weight_still_gives_task_gradient():
    # coef = 0: the buffers carry 1 instead (a zero could not be divided out), so a
    # gradient through the task's own loss still reaches the prediction.
    pred, tgt = make_inputs(B=2, C=5, H=4, W=5, seed=10)
    weights = [0.0, 1.0, 2.0]
    for step in (lambda out: out[1]["semantic"].backward(),
                 lambda out: (out[0] + out[1]["semantic"]).backward(),
                 lambda out: out[0].backward()):
        kernel, expected = run_both(pred, tgt, weights=weights, backward=step)
        assert_match(kernel, expected)


def test_repeated_backward_with_retain_graph():
    # One task at a time, then the total (per-task gradients, as PCGrad takes them).
    pred, tgt = make_inputs(B=2, C=5, H=4, W=5, seed=11)
    lv = torch.tensor([0.3, -0.2, 0.1])
    outs = {}
    for use_kernel in (True, False):
        p = leaf_copies(pred)
        if use_kernel:
            out = fastmtl.multitask_loss(p, tgt, log_vars=lv, backend="triton")
            total, losses = out.total, out.losses
        else:
            total, losses = oracle(p, tgt, lv)
        seq = []
        for target in (losses["semantic"], losses["instance"], 3 * losses["depth"], total,
                       losses["semantic"], total):
            grads = torch.autograd.grad(target, list(p.values()), retain_graph=True,
                                        allow_unused=True, materialize_grads=True)
            seq.append(grads)
        outs[use_kernel] = seq
    for got, want in zip(outs[True], outs[False]):
        for g, r in zip(got, want):
            torch.testing.assert_close(g, r, rtol=2e-5, atol=1e-6)


def test_gradcheck_fp64():
    pred, tgt = make_inputs(B=1, C=3, H=2, W=3, dtype=torch.float64, ignore_frac=0.2,
                            mask_frac=0.6, depth_invalid_frac=0.3, seed=12)
    names = list(pred)
    inputs = [pred[k].clone().requires_grad_(True) for k in names]
    inputs.append(torch.tensor([0.3, -0.2, 0.1], dtype=torch.float64, requires_grad=True))

    def f(*args):
        out = fastmtl.multitask_loss(dict(zip(names, args[:3])), tgt, log_vars=args[3],
                                     backend="triton")
        return (out.total, *out.losses.values())

    assert torch.autograd.gradcheck(f, inputs, eps=1e-6, atol=1e-7, fast_mode=True)

    def g(*args):
        out = fastmtl.multitask_loss(dict(zip(names, args)), tgt, weights=[0.0, 0.5, 2.0],
                                     backend="triton")
        return (out.total, *out.losses.values())

    assert torch.autograd.gradcheck(g, inputs[:3], eps=1e-6, atol=1e-7, fast_mode=True)


def test_only_log_vars_require_grad():
    pred, tgt = make_inputs(B=2, C=5, H=4, W=5, seed=13)
    lv = torch.tensor([0.3, -0.2, 0.1], requires_grad=True)
    out = fastmtl.multitask_loss(pred, tgt, log_vars=lv, backend="triton")
    out.total.backward()
    lv_ref = lv.detach().clone().requires_grad_(True)
    oracle(pred, tgt, lv_ref)[0].backward()
    torch.testing.assert_close(lv.grad, lv_ref.grad, rtol=2e-5, atol=1e-6)


def test_gradient_of_fixed_weights():
    pred, tgt = make_inputs(B=2, C=5, H=4, W=5, seed=17)
    w = torch.tensor([0.5, 0.0, 2.0], requires_grad=True)
    out = fastmtl.multitask_loss(pred, tgt, weights=w, backend="triton")
    out.total.backward()
    _, expected = oracle(pred, tgt)
    torch.testing.assert_close(w.grad, torch.stack([expected[k] for k in ALL]),
                               rtol=2e-5, atol=1e-6)


def test_double_backward_is_refused():
    pred, tgt = make_inputs(B=1, C=3, H=2, W=3, seed=18)
    p = leaf_copies(pred)
    out = fastmtl.multitask_loss(p, tgt, backend="triton")
    with pytest.raises(RuntimeError, match="create_graph"):
        torch.autograd.grad(out.total, list(p.values()), create_graph=True)


def test_plain_backward_hands_over_the_forward_buffers():
    # total.backward(): the ratio is exactly 1, nothing is rescaled, and
    # the gradient buffer written by the forward pass becomes x.grad without a copy.
    rows = ops.K.normalisers
    pred, tgt = make_inputs(B=2, C=5, H=4, W=5, seed=20)
    p = leaf_copies(pred)
    outs = ops._fused_op(p["semantic"], tgt["semantic"], None, p["instance"], tgt["instance"],
                         tgt["instance_mask"], p["depth"], tgt["depth"], None, [0, 1, 2],
                         [0.0] * 3, [0.0] * 3, False, 255, True, ops.MAX_BLOCK_C, True)
    total, state, buffers = outs[0], outs[6], [outs[i].data_ptr() for i in (3, 4, 5)]
    del outs
    total.backward()
    # The buffers carry coef_k (1 without weights): the ratio f_k / carried_k is exactly 1.
    assert torch.equal(state[int(rows.ROW_CARRIED), :3], torch.ones(3, dtype=torch.float64))
    assert torch.equal(state[int(rows.ROW_COEF), :3], torch.ones(3, dtype=torch.float64))
    assert [p[k].grad.data_ptr() for k in ALL] == buffers


@pytest.mark.parametrize("which", ["fused", "upsampled"])
def test_eager_calls_match_the_registered_op(which):
    # Eager calls on real tensors skip the custom op's dispatch (ops.common.eager_or_op);
    # the op itself (what torch.compile traces) must give the same outputs and gradients,
    # also when gradient flows in through a task loss and with retain_graph.
    from fastmtl.ops import upsample

    pred, tgt = make_inputs(B=2, C=5, H=6, W=8, seed=21)
    if which == "upsampled":
        pred = {k: v[..., ::2, ::2].contiguous() for k, v in pred.items()}
    run = {"fused": (ops._fused, ops._fused_op), "upsampled": (upsample._upsampled, upsample._upsampled_op)}
    results = []
    for call in run[which]:
        p, lv = leaf_copies(pred), torch.tensor([0.2, -0.3, 0.5], requires_grad=True)
        args = [p["semantic"], tgt["semantic"], None, p["instance"], tgt["instance"],
                tgt["instance_mask"], p["depth"], tgt["depth"], lv, [0, 1, 2], [1.0, 0.5, 0.5],
                [0.5, 0.5, 0.5], True, 255]
        args += [True, ops.MAX_BLOCK_C, True] if which == "fused" else [False, True, True]
        outs = call(*args)
        (outs[0] + 0.7 * outs[1][2]).backward(retain_graph=True)
        outs[0].backward()
        results.append([outs[0].detach(), outs[1].detach(), lv.grad, *(p[k].grad for k in ALL)])
    for eager, op in zip(*results):
        assert torch.equal(eager, op)


def test_host_integer_helpers_match_triton():
    import triton

    from fastmtl.ops.common import cdiv, next_power_of_2

    assert all(cdiv(a, b) == triton.cdiv(a, b) for a in range(2100) for b in (1, 3, 8, 1024, 16384))
    assert all(next_power_of_2(n) == triton.next_power_of_2(n) for n in range(70000))


def test_no_gradient_stores_without_grad():
    pred, tgt = make_inputs(B=2, C=5, H=4, W=5, seed=14)
    p = leaf_copies(pred)
    args = (p["semantic"], tgt["semantic"], None, p["instance"], tgt["instance"],
            tgt["instance_mask"], p["depth"], tgt["depth"], None, [0, 1, 2], [0.0] * 3,
            [0.0] * 3, False, 255, False, ops.MAX_BLOCK_C, True)
    outs = ops._fused_op(*args)
    assert all(g.numel() == 0 for g in outs[3:6])
    with torch.no_grad():
        out = fastmtl.multitask_loss(p, tgt, backend="triton")
    assert not out.total.requires_grad
    _, expected = oracle(pred, tgt)
    for k, v in out.losses.items():
        torch.testing.assert_close(v, expected[k], rtol=2e-5, atol=1e-6)
        torch.testing.assert_close(outs[1][list(out.losses).index(k)], expected[k],
                                   rtol=2e-5, atol=1e-6)


@pytest.mark.parametrize("tdtype,bad_value", [(torch.uint8, 200), (torch.int32, -3),
                                               (torch.int64, 19)])
def test_bad_label(tdtype, bad_value):
    pred, tgt = make_inputs(B=2, C=19, H=5, W=6, target_dtype=torch.int64, seed=15)
    t = tgt["semantic"]
    t[1, 2, 3] = bad_value
    t[1, 4, 0] = 250 if tdtype == torch.uint8 else 10**3  # a later bad label
    tgt["semantic"] = t.to(tdtype)
    messages = []
    for backend in ("reference", "triton"):  # CPU tensors: both raise in the call itself
        with pytest.raises(ValueError) as err:
            fastmtl.multitask_loss(pred, tgt, backend=backend)
        messages.append(str(err.value))
    # the same message, naming the first bad label and where it is
    assert messages[0] == messages[1] == (bad_label_message(bad_value, 19, 255)
                                          + " at targets['semantic'][1, 2, 3]")
    # Without the check, bad labels are ignored, never read out of bounds.
    kernel, expected = run_both(pred, tgt, log_vars=torch.zeros(3), check_labels=False)
    assert_match(kernel, expected)


@pytest.mark.parametrize("layout", ["contiguous", "transposed"])
def test_first_bad_label_among_many_programs(layout):
    """The pre-pass's programs each keep their first bad label's index and read its value
    again at the end; the check names the first in (image, row, column) order, also when
    the labels' rows are not contiguous (the index is turned back into strided offsets)."""
    pred, tgt = make_inputs(B=2, C=19, H=40, W=50, target_dtype=torch.int64, seed=16)
    t = tgt["semantic"]
    for (b, h, w), value in {(1, 39, 49): 23, (1, 7, 3): -4, (1, 30, 0): 40,
                             (0, 31, 17): 19}.items():
        t[b, h, w] = value
    if layout == "transposed":  # stride_h = 1: pixels are not one flat axis
        t = t.transpose(-1, -2).contiguous().transpose(-1, -2)
    tgt["semantic"] = t
    with pytest.raises(ValueError) as err:
        fastmtl.multitask_loss(pred, tgt, backend="triton")
    assert str(err.value).startswith(bad_label_message(19, 19, 255))
    assert str(err.value).endswith(" at targets['semantic'][0, 31, 17]")


def test_other_ignore_index():
    pred, tgt = make_inputs(B=2, C=7, H=4, W=5, target_dtype=torch.int32, ignore_index=-100,
                            seed=19)
    assert (tgt["semantic"] == -100).any()
    assert_match(*run_both(pred, tgt, log_vars=torch.zeros(3), ignore_index=-100))


def test_no_host_sync_needed_for_results():
    # The outputs are plain tensors on the inputs' device; a NaN logit propagates.
    pred, tgt = make_inputs(B=1, C=4, H=3, W=3, ignore_frac=0.0, seed=16)
    pred["semantic"][0, 1, 1, 1] = float("nan")
    out = fastmtl.multitask_loss(pred, tgt, backend="triton", check_labels=False)
    assert math.isnan(out.losses["semantic"].item()) and math.isnan(out.total.item())
