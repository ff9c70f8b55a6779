"""Delta-m, the no-image floor and the head-resolution ceiling against hand computations."""
import json
import math

import numpy as np
import pytest
import torch

from fastmtl.engine.baselines import head_ceiling, prior_baselines
from fastmtl.engine.metrics import delta_m


def test_delta_m_by_hand():
    reference = {"miou": 0.5, "instance_error": 2.0, "depth_error": 0.25}
    metrics = {"miou": 0.55, "instance_error": 2.5, "depth_error": 0.2, "pixel_accuracy": 0.9}
    # (+10%) for mIoU, -(+25%) for the instance error, -(-20%) for depth: mean (10 - 25 + 20) / 3.
    assert delta_m(metrics, reference) == pytest.approx((0.10 - 0.25 + 0.20) / 3)
    # Only the metrics both hold count (a two-task row).
    assert delta_m({"miou": 0.4, "depth_error": 0.25}, reference) == pytest.approx(-0.2 / 2)
    assert delta_m(reference, reference) == 0
    with pytest.raises(ValueError, match="no metric"):
        delta_m({"miou": 0.4}, {"depth_error": 0.3})
    assert delta_m({"miou": 0.4, "depth_error": math.nan}, reference) == pytest.approx(-0.2)


def _sample(semantic, depth, offsets=None, mask=None):
    h, w = semantic.shape
    return {"semantic": torch.as_tensor(semantic, dtype=torch.int64),
            "depth": torch.as_tensor(depth, dtype=torch.float32)[None],
            "instance": torch.zeros(2, h, w) if offsets is None else torch.as_tensor(offsets, dtype=torch.float32),
            "instance_mask": torch.zeros(h, w, dtype=torch.bool) if mask is None else torch.as_tensor(mask)}


def test_prior_baselines_by_hand():
    # Three training images of 1x2 pixels; the priors are the per-pixel mode and median.
    train = [_sample(np.array([[1, 2]]), np.array([[1.0, 0.0]])),
             _sample(np.array([[1, 3]]), np.array([[3.0, 5.0]])),
             _sample(np.array([[4, 3]]), np.array([[2.0, 7.0]]))]
    # Prior prediction: classes (1, 3), disparity (median 2 of 1, 3, 2; median of 5, 7 over the valid ones: 6).
    offsets = np.zeros((2, 1, 2))
    offsets[:, 0, 1] = (3.0, -4.0)
    test = [_sample(np.array([[1, 2]]), np.array([[4.0, 6.5]]), offsets, np.array([[False, True]]))]
    got = prior_baselines(train, test, num_classes=5)
    # Confusion: class 1 right; class 2 predicted as 3. IoU: class 1 = 1, class 2 = 0, class 3 = 0.
    assert got["miou"] == pytest.approx(1 / 3)
    assert got["depth_error"] == pytest.approx((2.0 + 0.5) / 2)
    assert got["instance_error"] == pytest.approx(5.0)  # |(3, -4)|: the zero offset misses by the whole vector


def test_ceiling_is_exact_for_classes_constant_over_columns_of_cells_and_not_otherwise():
    # Classes that change only from one column of head cells to the next: bilinear upsampling of the
    # cell means gives each pixel more than half of its own cell's one-hot, so the argmax is exact.
    cells = np.array([[0, 3, 1, 3]]).repeat(2, 0)
    semantic = np.kron(cells, np.ones((8, 8), dtype=np.int64))
    depth = np.kron(np.array([[1.0, 2.0, 2.0, 2.0]]).repeat(2, 0), np.ones((8, 8)))
    got = head_ceiling([_sample(semantic, depth)], stride=8, num_classes=4)
    assert got["miou"] == 1.0 and got["pixel_accuracy"] == 1.0
    # Disparity blurs linearly between the centres of cells 0 and 1 (pixels 3.5 and 11.5): pixels 4..7
    # read 1 + (x + 0.5) / 8 - 0.5 against 1, pixels 8..11 the same against 2; the errors of each row
    # add up to 1 + 1 over 32 pixels.
    assert got["depth_error"] == pytest.approx(2.0 / 32)
    stripes = _sample(np.tile([0, 1], (16, 12)), np.ones((16, 24)))
    coarse = head_ceiling([stripes], stride=8, num_classes=2)
    assert coarse["pixel_accuracy"] < 0.75  # one-pixel stripes cannot survive 8x8 cells
    fine = head_ceiling([stripes], stride=1, num_classes=2)
    assert fine["miou"] == 1.0 and fine["depth_error"] == 0.0


def test_eval_reports_delta_m_against_single_task_references(tmp_path, capsys):
    from fastmtl.commands.cli import main
    from fastmtl.data.synth import generate
    from fastmtl.engine import TrainConfig, Trainer

    tree = generate(tmp_path / "city", n=2, n_val=2, size=(32, 64))
    cfg = TrainConfig(out=str(tmp_path / "run"), data=str(tree), size="native", model="tiny", width=4, steps=1,
                      batch_size=2, checkpoint_every=0, eval_every=-1, progress=False, augment="none")
    Trainer(cfg).run()
    (tmp_path / "sem.json").write_text(json.dumps({"miou": 0.5, "pixel_accuracy": 0.9}))
    (tmp_path / "rest.json").write_text(json.dumps({"instance_error": 3.0, "depth_error": 0.4}))
    out = tmp_path / "eval"
    assert main(["eval", "--checkpoint", str(tmp_path / "run" / "checkpoint.pt"), "--out", str(out),
                 "--reference", str(tmp_path / "sem.json"), str(tmp_path / "rest.json")]) == 0
    m = json.loads((out / "eval.json").read_text())
    expected = ((m["miou"] - 0.5) / 0.5 - (m["instance_error"] - 3.0) / 3.0 - (m["depth_error"] - 0.4) / 0.4) / 3
    assert m["delta_m"] == pytest.approx(expected)
    (tmp_path / "clash.json").write_text(json.dumps({"miou": 0.6}))
    capsys.readouterr()
    assert main(["eval", "--checkpoint", str(tmp_path / "run" / "checkpoint.pt"), "--out", str(out),
                 "--reference", str(tmp_path / "sem.json"), str(tmp_path / "clash.json")]) == 1
    assert "miou given twice" in capsys.readouterr().err
    assert main(["eval", "--checkpoint", str(tmp_path / "run" / "checkpoint.pt"),
                 "--reference", str(tmp_path / "missing.json")]) == 1
    assert "missing.json" in capsys.readouterr().err
