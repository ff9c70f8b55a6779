"""The pre-pass leaves the labels as one byte each for the fused pass
(``fused_layout.COMPACT_LABELS``): what it writes, against PyTorch, and that the loss is the
same with and without the copy on the inputs where the encoding could go wrong."""
import pytest
import torch

from helpers import make_inputs
from oracle import assert_match, run_both

import fastmtl.kernels as K
from fastmtl.ops import fused as ops
from fastmtl.ops import fused_layout


def _recording_launch(recorded):
    def launch(kernel):
        class Grid:
            def __getitem__(self, grid):
                def run(*args, **kwargs):
                    if kernel is K.normaliser_kernel:
                        recorded.append((args[4], kwargs["COMPACT"]))
                    return kernel[grid](*args, **kwargs)
                return run
        return Grid()
    return launch


@pytest.mark.parametrize("C,ignore_index", [(19, 255), (255, -100), (40, 7)])
def test_pre_pass_writes_the_labels_as_bytes(C, ignore_index):
    B, H, W = 2, 9, 13
    g = torch.Generator().manual_seed(C)
    t = torch.randint(-3, C + 3, (B, H, W), generator=g)  # bad labels on both sides
    t[torch.rand(B, H, W, generator=g) < 0.2] = ignore_index
    x = torch.randn(B, C, H, W, generator=g)
    recorded = []
    ops._forward(_recording_launch(recorded), x, t, None, None, None, None, None, None, None,
                 [0, -1, -1], [1.0, 1.0, 1.0], [0.0, 0.0, 0.0], False, ignore_index, True,
                 fused_layout.MAX_BLOCK_C)
    ((labels, compact),) = recorded
    assert compact and labels.dtype == torch.uint8 and labels.shape == (B, H, W)
    assert torch.equal(labels, fused_layout.compact_labels(t, C, ignore_index))


def test_compact_only_for_wide_labels_and_few_classes(monkeypatch):
    def problem(C, label_dtype):
        x = torch.randn(1, C, 2, 4)
        t = torch.zeros(1, 2, 4, dtype=label_dtype)
        e = torch.empty(0)
        return ops.Problem(x, t, None, None, None, None, None, None, torch.empty_like(x), e, e,
                           255, fused_layout.MAX_BLOCK_C)

    assert problem(19, torch.int64).compact and problem(255, torch.int32).compact
    assert not problem(19, torch.uint8).compact  # already one byte: nothing to save
    assert not problem(256, torch.int64).compact  # class 255 would read as "not a class"
    monkeypatch.setattr(fused_layout, "COMPACT_LABELS", False)
    assert not problem(19, torch.int64).compact


@pytest.mark.parametrize("compact", [True, False], ids=["bytes", "as-given"])
@pytest.mark.parametrize("layout", ["contiguous", "transposed"])
def test_loss_is_the_same_either_way(monkeypatch, compact, layout):
    """Against the oracle, with the copy and without: ignore_index = -100 (not a byte),
    class weights, targets whose pixels are not one flat axis."""
    monkeypatch.setattr(fused_layout, "COMPACT_LABELS", compact)
    pred, tgt = make_inputs(B=2, C=37, H=7, W=10, ignore_index=-100, seed=3)
    if layout == "transposed":
        tgt = {k: v.transpose(-1, -2).contiguous().transpose(-1, -2) for k, v in tgt.items()}
    cw = torch.rand(37, generator=torch.Generator().manual_seed(2)) + 0.5
    kernel, expected = run_both(pred, tgt, log_vars=torch.tensor([0.3, -0.4, 0.8]),
                                class_weight=cw, ignore_index=-100)
    assert_match(kernel, expected)
