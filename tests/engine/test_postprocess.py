"""Instance grouping from offsets: recover known instances from synthetic votes."""
import numpy as np
import pytest
import torch

from fastmtl.engine.postprocess import colourise, group_instances

adjusted_rand_score = pytest.importorskip("sklearn.metrics").adjusted_rand_score

# (top, bottom, left, right, trainId): two cars side by side, two touching persons,
# a truck, a one-pixel-wide rider; everything else is road (0) or sky (10).
BOXES = [(4, 14, 4, 20, 13), (4, 14, 20, 40, 13), (18, 30, 6, 12, 11), (18, 30, 12, 18, 11),
         (16, 28, 44, 60, 14), (2, 12, 52, 53, 12)]


def _scene(H=32, W=64):
    semantic = torch.zeros(H, W, dtype=torch.long)
    semantic[: H // 8] = 10
    truth = torch.zeros(H, W, dtype=torch.long)
    for k, (y0, y1, x0, x1, c) in enumerate(BOXES, 1):
        semantic[y0:y1, x0:x1] = c
        truth[y0:y1, x0:x1] = k
    ys, xs = torch.meshgrid(torch.arange(H, dtype=torch.float32), torch.arange(W, dtype=torch.float32), indexing="ij")
    offsets = torch.zeros(2, H, W)
    for k in range(1, len(BOXES) + 1):
        m = truth == k
        offsets[0][m] = ys[m].mean() - ys[m]
        offsets[1][m] = xs[m].mean() - xs[m]
    return semantic, offsets, truth


def _same_partition(truth, ids):
    """Every true instance maps to exactly one predicted id and vice versa (ARI == 1)."""
    thing = truth > 0
    return adjusted_rand_score(truth[thing].numpy(), ids[thing].numpy()) == pytest.approx(1.0)


@pytest.mark.parametrize("noise", [0.0, 0.7])
def test_fast_grouping_recovers_instances(noise):
    semantic, offsets, truth = _scene()
    offsets = offsets + noise * torch.randn(offsets.shape, generator=torch.Generator().manual_seed(0))
    inst = group_instances(semantic, offsets, threshold=1.0, nms_kernel=5)
    assert len(inst) == len(BOXES)
    assert _same_partition(truth, inst.ids)
    assert bool((inst.ids[truth == 0] == 0).all())  # stuff stays unassigned
    for k, (*_, c) in enumerate(BOXES, 1):  # each instance keeps its class
        got = inst.ids[truth == k][0]
        assert int(inst.classes[got - 1]) == c
    assert inst.centres.shape == (len(BOXES), 2)


def test_fast_grouping_device_agnostic_shapes_and_scores():
    semantic, offsets, truth = _scene()
    probs = torch.full((19, *semantic.shape), 0.01)
    probs.scatter_(0, semantic[None], 0.82)
    inst = group_instances(semantic, offsets, probabilities=probs, threshold=1.0, nms_kernel=5)
    assert inst.ids.dtype == torch.int64 and inst.ids.shape == semantic.shape
    assert torch.allclose(inst.scores, torch.full_like(inst.scores, 0.82))
    classes, scores = inst.as_dicts()
    assert set(classes) == set(range(1, len(BOXES) + 1))
    rgb = colourise(inst.ids)
    assert rgb.shape == (*semantic.shape, 3) and rgb.dtype == np.uint8
    assert (rgb[truth.numpy() == 0] == 0).all()


def test_no_things_no_instances():
    semantic = torch.zeros(8, 8, dtype=torch.long)
    inst = group_instances(semantic, torch.zeros(2, 8, 8))
    assert len(inst) == 0 and int(inst.ids.max()) == 0
    inst = group_instances(semantic, torch.zeros(2, 8, 8), method="optics")
    assert len(inst) == 0


def test_min_pixels_drops_small_instances():
    semantic, offsets, truth = _scene()
    inst = group_instances(semantic, offsets, threshold=1.0, nms_kernel=5, min_pixels=20)
    assert len(inst) == len(BOXES) - 1  # the 10-pixel rider is gone
    assert bool((inst.ids[truth == 6] == 0).all())


def test_optics_grouping_recovers_instances():
    semantic, offsets, truth = _scene()
    noisy = offsets + 0.3 * torch.randn(offsets.shape, generator=torch.Generator().manual_seed(1))
    inst = group_instances(semantic, noisy, method="optics", eps=1.5, min_samples=5)
    assert len(inst) == len(BOXES)
    assert _same_partition(truth, inst.ids)


def test_optics_subsampled_votes_join_nearest_cluster():
    semantic, offsets, truth = _scene()
    inst = group_instances(semantic, offsets, method="optics", eps=1.5, min_samples=3, max_points=40)
    big = truth.clone()
    big[truth == 6] = 0  # the 10-pixel rider may be missed by a 40-vote subsample
    assert adjusted_rand_score(big[big > 0].numpy(), inst.ids[big > 0].numpy()) == pytest.approx(1.0)


def test_rejects_bad_arguments():
    with pytest.raises(ValueError, match="method"):
        group_instances(torch.zeros(4, 4, dtype=torch.long), torch.zeros(2, 4, 4), method="kmeans")
    with pytest.raises(ValueError, match="offsets"):
        group_instances(torch.zeros(4, 4, dtype=torch.long), torch.zeros(2, 4, 5))
