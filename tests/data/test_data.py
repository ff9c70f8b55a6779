"""The Cityscapes loader and its augmentation, checked against the files decoded here."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from cityscapesscripts.helpers.labels import id2label
from PIL import Image

from fastmtl.data import Cityscapes, synth, transforms
from fastmtl.data.io import read_png

SIZE = (64, 128)


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    return synth.generate(tmp_path_factory.mktemp("city"), n=4, n_val=1, seed=11, size=SIZE)


def raw_files(image_path):
    """Decode a sample's files with PIL and numpy only."""
    img = Path(image_path)
    split, city = img.parent.parent.name, img.parent.name
    root = img.parents[3]
    stem = img.name[: -len("_leftImg8bit.png")]
    gt = root / "gtFine" / split / city
    label = np.array(Image.open(gt / f"{stem}_gtFine_labelIds.png"))
    inst = np.array(Image.open(gt / f"{stem}_gtFine_instanceIds.png")).astype(np.int64)
    disp = np.array(Image.open(root / "disparity" / split / city / f"{stem}_disparity.png")).astype(np.int64)
    cam = json.loads((root / "camera" / split / city / f"{stem}_camera.json").read_text())
    return label, inst, disp, cam


def train_id(label_id):
    t = id2label[int(label_id)].trainId
    return 255 if t in (-1, 255) else t


def is_thing(inst_id):
    if inst_id < 1000:
        return False
    lab = id2label[int(inst_id) // 1000]
    return lab.hasInstances and lab.trainId not in (-1, 255)


def centroid(ids, inst_id):
    ys, xs = np.nonzero(ids == inst_id)
    return ys.mean(), xs.mean()


def check_offsets(sample, ids):
    """Every thing pixel points at the centroid of its instance in ``ids``; others are 0."""
    offsets = sample["instance"].numpy().astype(np.float64)
    things = [v for v in np.unique(ids) if is_thing(v)]
    assert things, "scene without instances"
    mask = np.isin(ids, things)
    np.testing.assert_array_equal(sample["instance_mask"].numpy(), mask)
    assert not offsets[:, ~mask].any()
    for v in things:
        ys, xs = np.nonzero(ids == v)
        cy, cx = ys.mean(), xs.mean()
        np.testing.assert_allclose(offsets[0, ys, xs], cy - ys, atol=1e-4)
        np.testing.assert_allclose(offsets[1, ys, xs], cx - xs, atol=1e-4)


def test_sample_matches_independent_decoding(tree):
    ds = Cityscapes(tree, "train", size=None)
    assert len(ds) == 4
    for i in range(len(ds)):
        s = ds[i]
        label, inst, disp, cam = raw_files(s["image_path"])
        assert s["image"].shape == (3, *SIZE) and s["image"].dtype == torch.float32
        lut = {v: train_id(v) for v in np.unique(label)}
        expected = np.vectorize(lut.get)(label)
        assert s["semantic"].dtype == torch.int64
        np.testing.assert_array_equal(s["semantic"].numpy(), expected)
        check_offsets(s, inst)
        d = np.where(disp > 0, (disp - 1) / 256.0, 0.0)
        np.testing.assert_allclose(s["depth"][0].numpy(), d, rtol=1e-6)
        assert (s["depth"] == 0).any() and (s["depth"] > 0).any()
        assert s["fx"] == pytest.approx(cam["intrinsic"]["fx"])
        assert s["baseline"] == pytest.approx(cam["extrinsic"]["baseline"])

    metric = Cityscapes(tree, "train", size=None, depth="metric")[0]
    label, inst, disp, cam = raw_files(metric["image_path"])
    d = np.where(disp > 0, (disp - 1) / 256.0, 0.0)
    z = np.where(d > 0, cam["extrinsic"]["baseline"] * cam["intrinsic"]["fx"] / np.where(d > 0, d, 1), 0)
    np.testing.assert_allclose(metric["depth"][0].numpy(), z, rtol=1e-5)


def test_tasks_select_files_and_keys(tree):
    s = Cityscapes(tree, "val", size=None, tasks=("semantic",))[0]
    assert {"image", "semantic", "image_path"} <= set(s)
    assert not {"instance", "instance_mask", "depth"} & set(s)


def test_preset_resize(tree):
    s = Cityscapes(tree, "train", size=(32, 64))[1]
    label, inst, disp, _ = raw_files(s["image_path"])
    # Nearest with pixel centres: output pixel i reads input pixel floor((i + 0.5) * 2) = 2i + 1.
    sub = np.s_[1::2, 1::2]
    np.testing.assert_array_equal(s["semantic"].numpy(), np.vectorize(train_id)(label[sub]))
    check_offsets(s, inst[sub])
    d = np.where(disp[sub] > 0, (disp[sub] - 1) / 256.0, 0.0) * 0.5  # disparity scales with the width
    np.testing.assert_allclose(s["depth"][0].numpy(), d, rtol=1e-6)
    assert s["image"].shape == (3, 32, 64)


def test_flip_keeps_offsets_pointing_at_flipped_centroids(tree):
    ds = Cityscapes(tree, "train", size=None)
    s = ds[2]
    label, inst, disp, _ = raw_files(s["image_path"])
    f = transforms.hflip(s)
    check_offsets(f, inst[:, ::-1])
    np.testing.assert_array_equal(f["semantic"].numpy(), np.vectorize(train_id)(label[:, ::-1]))
    np.testing.assert_array_equal(f["depth"].numpy(), s["depth"].numpy()[..., ::-1])
    np.testing.assert_array_equal(f["image"].numpy(), s["image"].numpy()[..., ::-1])


def test_scale_changes_offsets_and_disparity_by_the_factor(tree):
    s = Cityscapes(tree, "train", size=None)[3]
    label, inst, disp, _ = raw_files(s["image_path"])
    up = transforms.resize(s, (SIZE[0] * 2, SIZE[1] * 2))
    big = inst.repeat(2, 0).repeat(2, 1)  # the instance map at twice the size
    offsets = up["instance"].numpy()
    for v in [v for v in np.unique(big) if is_thing(v)]:
        ys, xs = np.nonzero(big == v)
        cy, cx = ys.mean(), xs.mean()
        # each source pixel becomes a 2x2 block: its offset is exact to half a pixel
        assert np.abs(offsets[0, ys, xs] - (cy - ys)).max() <= 0.5 + 1e-4
        assert np.abs(offsets[1, ys, xs] - (cx - xs)).max() <= 0.5 + 1e-4
    d = np.where(disp > 0, (disp - 1) / 256.0, 0.0).repeat(2, 0).repeat(2, 1)
    np.testing.assert_allclose(up["depth"][0].numpy(), 2 * d, rtol=1e-6)
    assert up["fx"] == pytest.approx(2 * s["fx"])
    np.testing.assert_array_equal(up["instance_mask"].numpy(), np.vectorize(is_thing)(big))

    metric = transforms.resize(s, (SIZE[0] * 2, SIZE[1] * 2), disparity=False)
    np.testing.assert_allclose(metric["depth"][0].numpy(), d, rtol=1e-6)


def test_crop_pads_with_ignore_and_keeps_values(tree):
    s = Cityscapes(tree, "train", size=None)[0]
    c = transforms.crop(s, top=-3, left=100, height=20, width=40)
    assert c["image"].shape == (3, 20, 40)
    inside = np.s_[3:20, 0:28]
    np.testing.assert_array_equal(c["semantic"][inside].numpy(), s["semantic"][0:17, 100:128].numpy())
    np.testing.assert_array_equal(c["instance"][(slice(None),) + inside].numpy(), s["instance"][:, 0:17, 100:128].numpy())
    assert (c["semantic"][:3] == 255).all() and (c["semantic"][:, 28:] == 255).all()
    assert not c["instance_mask"][:, 28:].any() and not c["depth"][..., 28:].any()
    assert (c["image"][:, :3] == 0).all()


def test_train_transform_and_collate(tree):
    g = torch.Generator().manual_seed(0)
    ds = Cityscapes(tree, "train", size=None, transform=transforms.train_transform((48, 80), generator=g))
    batch = torch.utils.data.default_collate([ds[0], ds[1]])
    assert batch["image"].shape == (2, 3, 48, 80)
    assert batch["semantic"].shape == (2, 48, 80) and batch["semantic"].dtype == torch.int64
    assert batch["instance"].shape == (2, 2, 48, 80) and batch["instance_mask"].dtype == torch.bool
    assert batch["depth"].shape == (2, 1, 48, 80) and batch["fx"].shape == (2,)
    assert len(batch["image_path"]) == 2


def test_sixteen_bit_values_survive(tmp_path):
    values = np.array([[0, 1, 255, 256], [1000, 26001, 33007, 65535]], dtype=np.uint16)
    Image.fromarray(values).save(tmp_path / "a.png")
    got = read_png(tmp_path / "a.png", "gray16")
    assert got.dtype == np.uint16
    np.testing.assert_array_equal(got, values)


# A hand-made tree: written with PIL here, independent of the generator.

def write_tree(root, h=12, w=20, city="ulm", stem="ulm_000000_000019", split="train"):
    rng = np.random.default_rng(0)
    paths = {
        "image": root / "leftImg8bit" / split / city / f"{stem}_leftImg8bit.png",
        "label": root / "gtFine" / split / city / f"{stem}_gtFine_labelIds.png",
        "inst": root / "gtFine" / split / city / f"{stem}_gtFine_instanceIds.png",
        "disp": root / "disparity" / split / city / f"{stem}_disparity.png",
        "camera": root / "camera" / split / city / f"{stem}_camera.json",
    }
    for p in paths.values():
        p.parent.mkdir(parents=True, exist_ok=True)
    label = np.full((h, w), 7, np.uint8)  # road
    label[2:6, 3:9] = 26  # a car instance
    label[2:6, 12:16] = 26  # a crowd of cars
    label[7:10, 2:6] = 29  # a caravan: has instances, but trainId 255
    inst = label.astype(np.uint16)
    inst[2:6, 3:9] = 26003
    inst[7:10, 2:6] = 29000
    disp = rng.integers(0, 3000, (h, w)).astype(np.uint16)
    Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(paths["image"])
    Image.fromarray(label).save(paths["label"])
    Image.fromarray(inst).save(paths["inst"])
    Image.fromarray(disp).save(paths["disp"])
    paths["camera"].write_text(json.dumps({"extrinsic": {"baseline": 0.2}, "intrinsic": {"fx": 100.0, "fy": 100.0, "u0": 10, "v0": 6}}))
    return paths


def test_crowd_and_unevaluated_instances_get_no_offsets(tmp_path):
    write_tree(tmp_path)
    s = Cityscapes(tmp_path, "train", size=None)[0]
    mask = np.zeros((12, 20), bool)
    mask[2:6, 3:9] = True
    np.testing.assert_array_equal(s["instance_mask"].numpy(), mask)
    ys, xs = np.mgrid[2:6, 3:9]  # the car's centroid is (3.5, 5.5)
    np.testing.assert_allclose(s["instance"][0, 2:6, 3:9].numpy(), 3.5 - ys)
    np.testing.assert_allclose(s["instance"][1, 2:6, 3:9].numpy(), 5.5 - xs)
    assert (s["semantic"][2:6, 12:16] == 13).all() and (s["semantic"][7:10, 2:6] == 255).all()


def _check_error(exc, path, tmp_path, match=None, getitem=True):
    with pytest.raises(exc) as e:
        ds = Cityscapes(tmp_path, "train", size=None)
        if getitem:
            ds[0]
    assert str(path) in str(e.value)
    if match:
        assert match in str(e.value)


def test_missing_file(tmp_path):
    paths = write_tree(tmp_path)
    paths["inst"].unlink()
    _check_error(FileNotFoundError, paths["inst"], tmp_path, getitem=False)


def test_truncated_png(tmp_path):
    paths = write_tree(tmp_path)
    data = paths["disp"].read_bytes()
    paths["disp"].write_bytes(data[: len(data) // 2])
    _check_error(ValueError, paths["disp"], tmp_path)


def test_wrong_bit_depths(tmp_path):
    paths = write_tree(tmp_path)
    Image.fromarray(np.zeros((12, 20), np.uint16)).save(paths["label"])  # labelIds must be 8-bit
    _check_error(ValueError, paths["label"], tmp_path, match="8-bit")
    paths = write_tree(tmp_path)
    Image.fromarray(np.zeros((12, 20), np.uint8)).save(paths["inst"])  # instanceIds must be 16-bit
    _check_error(ValueError, paths["inst"], tmp_path, match="16-bit")
    paths = write_tree(tmp_path)
    Image.fromarray(np.zeros((12, 20), np.uint8)).save(paths["image"])  # images must be RGB
    _check_error(ValueError, paths["image"], tmp_path, match="RGB")


def test_not_a_png_and_size_mismatch(tmp_path):
    paths = write_tree(tmp_path)
    paths["label"].write_text("not an image")
    _check_error(ValueError, paths["label"], tmp_path)
    paths = write_tree(tmp_path)
    Image.fromarray(np.zeros((10, 20), np.uint16)).save(paths["disp"])
    _check_error(ValueError, paths["disp"], tmp_path, match="size mismatch")


def test_bad_camera_and_empty_split(tmp_path):
    paths = write_tree(tmp_path)
    paths["camera"].write_text("{}")
    with pytest.raises(ValueError, match=str(paths["camera"])):
        Cityscapes(tmp_path, "train", size=None, depth="metric")[0]
    (tmp_path / "leftImg8bit" / "test").mkdir()
    with pytest.raises(ValueError, match="empty split"):
        Cityscapes(tmp_path, "test")
    with pytest.raises(FileNotFoundError, match=str(tmp_path / "leftImg8bit" / "nope")):
        Cityscapes(tmp_path, "nope")
