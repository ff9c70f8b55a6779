"""Metrics against independent computations, and the official Cityscapes evaluation end to end."""
import math
import os

import numpy as np
import pytest
import torch
from PIL import Image

from fastmtl.engine import cityscapes_eval as ce
from fastmtl.engine.metrics import MetricAccumulator, confusion_matrix

sklearn_metrics = pytest.importorskip("sklearn.metrics")


def _random_semantic(seed, B=2, H=7, W=9, C=19):
    g = torch.Generator().manual_seed(seed)
    target = torch.randint(0, C, (B, H, W), generator=g)
    target[torch.rand(B, H, W, generator=g) < 0.2] = 255
    target[target == 5] = 6  # class 5 never in the target
    pred = torch.where(torch.rand(B, H, W, generator=g) < 0.6, target.clamp(max=C - 1),
                       torch.randint(0, C, (B, H, W), generator=g))
    pred[pred == 7] = 8
    pred[target == 255] = 3
    return pred, target


def test_confusion_matrix_matches_sklearn():
    pred, target = _random_semantic(0)
    valid = target != 255
    expected = sklearn_metrics.confusion_matrix(target[valid].numpy(), pred[valid].numpy(), labels=list(range(19)))
    assert np.array_equal(confusion_matrix(pred, target).numpy(), expected)
    logits = torch.nn.functional.one_hot(pred, 19).permute(0, 3, 1, 2).float()
    assert np.array_equal(confusion_matrix(logits, target).numpy(), expected)


def test_miou_matches_per_class_pixel_sets():
    pred, target = _random_semantic(1)
    acc = MetricAccumulator()
    for b in range(pred.shape[0]):  # batch by batch gives the same as all at once
        acc.update({"semantic": pred[b:b + 1]}, {"semantic": target[b:b + 1]})
    got = acc.compute()
    p, t = pred.flatten().tolist(), target.flatten().tolist()
    ious = []
    for c in range(19):
        gt_px = {i for i, v in enumerate(t) if v == c}
        pred_px = {i for i, v in enumerate(p) if v == c and t[i] != 255}
        union = gt_px | pred_px
        ious.append(len(gt_px & pred_px) / len(union) if union else math.nan)
        assert (math.isnan(got[f"iou_{c}"]) and math.isnan(ious[-1])) or got[f"iou_{c}"] == pytest.approx(ious[-1])
    assert got["miou"] == pytest.approx(np.nanmean(ious))


def test_instance_and_depth_errors_match_numpy():
    g = torch.Generator().manual_seed(2)
    B, H, W = 2, 5, 6
    o, t = torch.randn(B, 2, H, W, generator=g) * 3, torch.randn(B, 2, H, W, generator=g) * 3
    m = torch.rand(B, H, W, generator=g) < 0.5
    d, z = torch.rand(B, 1, H, W, generator=g) * 10, torch.rand(B, 1, H, W, generator=g) * 10
    z[torch.rand(B, 1, H, W, generator=g) < 0.3] = 0
    z[0, 0, 0, 0] = float("nan")
    acc = MetricAccumulator()
    acc.update({"instance": o, "depth": d}, {"instance": t, "instance_mask": m, "depth": z})
    got = acc.compute()

    on, tn, mn, dn, zn = o.numpy(), t.numpy(), m.numpy(), d.numpy(), z.numpy()
    l2, l1 = [], []
    for b, y, x in zip(*np.nonzero(mn)):
        e = on[b, :, y, x] - tn[b, :, y, x]
        l2.append(math.hypot(e[0], e[1]))
        l1.append(abs(e[0]) + abs(e[1]))
    valid = np.isfinite(zn) & (zn > 0)
    assert got["instance_error"] == pytest.approx(np.mean(l2))
    assert got["instance_error_l1"] == pytest.approx(np.mean(l1))
    assert got["depth_error"] == pytest.approx(np.abs(dn[valid] - zn[valid]).mean())
    assert "miou" not in got


# --- official evaluation on a small synthetic tree ---------------------------------------------

@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    from fastmtl.data.synth import generate

    return generate(tmp_path_factory.mktemp("city"), n=1, n_val=3, size=(64, 128))


def _gt_files(tree):
    from pathlib import Path

    return sorted(Path(tree, "gtFine", "val").glob("*/*_gtFine_labelIds.png"))


def _stem(label_file):
    return label_file.name[: -len("_gtFine_labelIds.png")]


def test_official_evaluation_of_perfect_predictions(tree, tmp_path, monkeypatch):
    from cityscapesscripts.evaluation import evalInstanceLevelSemanticLabeling as inst_module
    from cityscapesscripts.evaluation import evalPixelLevelSemanticLabeling as pixel_module

    from fastmtl.data.labels import LABEL_TO_TRAIN

    work = tmp_path / "cwd"
    work.mkdir()
    monkeypatch.chdir(work)  # the evaluators' relative outputs must not land here
    monkeypatch.delenv("CITYSCAPES_DATASET", raising=False)
    monkeypatch.delenv("CITYSCAPES_RESULTS", raising=False)
    attrs = {m: (m.np, m.writeDict2JSON, m.printError, dict(m.args.__dict__)) for m in (pixel_module, inst_module)}
    n_instances = 0
    for label_file in _gt_files(tree):
        label_ids = np.array(Image.open(label_file))
        instance_ids = np.array(Image.open(str(label_file).replace("labelIds", "instanceIds")))
        ce.write_semantic(LABEL_TO_TRAIN[label_ids], tmp_path / "sem" / f"{_stem(label_file)}_pred.png")
        ids = np.zeros(instance_ids.shape, np.int64)
        classes = {}
        for k, value in enumerate(np.unique(instance_ids[instance_ids >= 1000]), 1):
            if LABEL_TO_TRAIN[value // 1000] != 255:
                ids[instance_ids == value] = k
                classes[k] = int(LABEL_TO_TRAIN[value // 1000])
        n_instances += sum(int((ids == k).sum()) >= 100 for k in classes)  # the evaluator skips smaller ones
        ce.write_instances(ids, classes, {k: 1.0 for k in classes}, tmp_path / "inst", _stem(label_file))
    assert n_instances > 0

    pixel = ce.evaluate_pixel_level(tree, tmp_path / "sem", tmp_path / "out")
    instance = ce.evaluate_instance_level(tree, tmp_path / "inst", tmp_path / "out")
    s = ce.summary(pixel, instance)
    assert s == {"official_miou": 1.0, "official_ap": 1.0, "official_ap50": 1.0}
    assert all(v == 1.0 for v in pixel["classScores"].values() if not math.isnan(v))

    # Nothing leaked: numpy, the evaluator modules, environment, working directory.
    assert not hasattr(np, "in1d")
    for m, (np_attr, writer, err, args) in attrs.items():
        assert m.np is np_attr and m.writeDict2JSON is writer and m.printError is err
        assert set(m.args.__dict__) == set(args) and m.args.predictionPath == args["predictionPath"]
    assert "CITYSCAPES_DATASET" not in os.environ and "CITYSCAPES_RESULTS" not in os.environ
    assert list(work.iterdir()) == []
    assert {"matches.json", "gtInstances.json"} <= {p.name for p in (tmp_path / "out").iterdir()}


def test_official_miou_equals_ours(tree, tmp_path):
    """The official pixel-level script and MetricAccumulator agree on imperfect predictions."""
    from fastmtl.data.labels import LABEL_TO_TRAIN

    rng = np.random.default_rng(0)
    acc = MetricAccumulator()
    for label_file in _gt_files(tree):
        target = LABEL_TO_TRAIN[np.array(Image.open(label_file))].astype(np.int64)
        pred = np.where(target == 255, 0, target)
        noisy = rng.random(pred.shape) < 0.3
        pred[noisy] = rng.integers(0, 19, int(noisy.sum()))
        ce.write_semantic(pred, tmp_path / "sem" / f"{_stem(label_file)}_pred.png")
        acc.update({"semantic": torch.from_numpy(pred)[None]}, {"semantic": torch.from_numpy(target)[None]})
    official = ce.evaluate_pixel_level(tree, tmp_path / "sem", tmp_path / "out")
    ours = acc.compute()
    assert official["averageScoreClasses"] == pytest.approx(ours["miou"], abs=1e-12)
    from fastmtl.data.labels import CLASS_NAMES

    for c, name in enumerate(CLASS_NAMES):
        a, b = official["classScores"][name], ours[f"iou_{c}"]
        assert (math.isnan(a) and math.isnan(b)) or a == pytest.approx(b, abs=1e-12)


def test_evaluate_official_pipeline_with_oracle(tree, tmp_path):
    """Predictions from the ground truth, through resizing, grouping and both writers."""
    from fastmtl.data.cityscapes import Cityscapes
    from fastmtl.engine import evaluate_official

    def oracle(sample):
        sem = sample["semantic"].clone()
        sem[sem == 255] = 0
        logits = torch.nn.functional.one_hot(sem, 19).permute(2, 0, 1)[None].float() * 10
        return {"semantic": logits, "instance": sample["instance"][None]}

    dataset = Cityscapes(tree, "val", size=None)
    result = evaluate_official(None, dataset, tmp_path, predict_fn=oracle)
    assert result == {"official_miou": 1.0, "official_ap": 1.0, "official_ap50": 1.0}


def test_evaluator_errors_raise(tree, tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(ce.CityscapesEvalError, match="Found no prediction"):
        ce.evaluate_pixel_level(tree, tmp_path / "empty", tmp_path / "out")
