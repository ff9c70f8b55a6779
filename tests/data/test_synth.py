"""The synthetic city: Cityscapes layout and encodings, geometry, determinism, the CLI."""

import json
import re
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from cityscapesscripts.helpers.labels import id2label
from PIL import Image

from fastmtl.commands.cli import main
from fastmtl.data import synth

SIZE = (48, 96)


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    return synth.generate(tmp_path_factory.mktemp("city"), n=6, n_val=2, seed=3, size=SIZE)


def files(root):
    return sorted(p for p in root.rglob("*") if p.is_file())


def ihdr(path):
    """(width, height, bit depth, colour type) read straight from the PNG bytes."""
    head = path.read_bytes()[:29]
    assert head[:8] == b"\x89PNG\r\n\x1a\n" and head[12:16] == b"IHDR", path
    return struct.unpack(">IIBB", head[16:26])


def scenes(root, split="train"):
    for img in sorted((root / "leftImg8bit" / split).glob("*/*_leftImg8bit.png")):
        city, stem = img.parent.name, img.name[: -len("_leftImg8bit.png")]
        gt = root / "gtFine" / split / city
        yield {
            "image": img,
            "label": gt / f"{stem}_gtFine_labelIds.png",
            "inst": gt / f"{stem}_gtFine_instanceIds.png",
            "disp": root / "disparity" / split / city / f"{stem}_disparity.png",
            "camera": root / "camera" / split / city / f"{stem}_camera.json",
        }


def test_layout_and_names(tree):
    for split, n in (("train", 6), ("val", 2)):
        found = list(scenes(tree, split))
        assert len(found) == n
        for s in found:
            city = s["image"].parent.name
            assert city in synth.CITIES[split]
            assert re.fullmatch(rf"{city}_\d{{6}}_\d{{6}}_leftImg8bit\.png", s["image"].name)
            assert all(p.is_file() for p in s.values()), s
    assert len(files(tree)) == 5 * 8


def test_encodings(tree):
    h, w = SIZE
    for s in scenes(tree):
        assert ihdr(s["image"]) == (w, h, 8, 2)  # 8-bit RGB
        assert ihdr(s["label"]) == (w, h, 8, 0)  # 8-bit greyscale
        assert ihdr(s["inst"]) == (w, h, 16, 0)  # 16-bit greyscale
        assert ihdr(s["disp"]) == (w, h, 16, 0)
        rgb = np.asarray(Image.open(s["image"]))
        assert rgb.dtype == np.uint8 and rgb.shape == (h, w, 3)
        inst = np.asarray(Image.open(s["inst"]))
        disp = np.asarray(Image.open(s["disp"]))
        assert inst.dtype == np.uint16 and disp.dtype == np.uint16
        assert inst.max() >= 1000 and disp.max() > 255
        cam = json.loads(s["camera"].read_text())
        for key in ("baseline",):
            assert isinstance(cam["extrinsic"][key], float)
        for key in ("fx", "fy", "u0", "v0"):
            assert isinstance(cam["intrinsic"][key], float)
        assert cam["intrinsic"]["fx"] == pytest.approx(2262.52 * w / 2048, rel=0.05)
        assert cam["extrinsic"]["baseline"] == pytest.approx(0.209313, rel=0.01)


def test_labels_and_instances_agree(tree):
    seen = set()
    for s in scenes(tree):
        label = np.asarray(Image.open(s["label"])).astype(np.int64)
        inst = np.asarray(Image.open(s["inst"])).astype(np.int64)
        assert all(v in id2label for v in np.unique(label))
        stuff = inst < 1000
        np.testing.assert_array_equal(inst[stuff], label[stuff])
        np.testing.assert_array_equal(inst[~stuff] // 1000, label[~stuff])
        assert all(id2label[v].hasInstances for v in np.unique(inst[~stuff]) // 1000)
        seen |= {id2label[v].name for v in np.unique(label)}
    assert {"road", "sidewalk", "building", "vegetation", "sky", "car", "person", "ego vehicle"} <= seen


def rays(cam, shape):
    """World directions (x right, y up, z forward) of every pixel, from the camera file alone:
    roll about the optical axis, then pitch about the x axis (positive looks up)."""
    h, w = shape
    i = cam["intrinsic"]
    pitch, roll = cam["extrinsic"]["pitch"], cam["extrinsic"]["roll"]
    v, u = np.mgrid[0:h, 0:w].astype(np.float64)
    x, y, z = (u - i["u0"]) / i["fx"], -(v - i["v0"]) / i["fy"], np.ones_like(u)
    x, y = x * np.cos(roll) - y * np.sin(roll), x * np.sin(roll) + y * np.cos(roll)
    y, z = y * np.cos(pitch) + z * np.sin(pitch), -y * np.sin(pitch) + z * np.cos(pitch)
    return x, y, z


def decoded(s):
    label = np.asarray(Image.open(s["label"]))
    inst = np.asarray(Image.open(s["inst"])).astype(np.int64)
    p = np.asarray(Image.open(s["disp"])).astype(np.float64)
    return label, inst, np.where(p > 0, (p - 1) / 256, 0), json.loads(s["camera"].read_text())


def test_disparity_follows_the_camera_and_the_scene(tree):
    for s in scenes(tree):
        label, inst, d, cam = decoded(s)
        names = np.vectorize(lambda v: id2label[v].name)(label)
        no_depth = np.isin(names, ["sky", "ego vehicle"])
        assert (d[no_depth] == 0).all() and (d[~no_depth] > 0).all()
        fb = cam["intrinsic"]["fx"] * cam["extrinsic"]["baseline"]
        _, ry, rz = rays(cam, d.shape)
        # Flat ground y = -height: depth t = height / -ry along the optical axis, disparity f B / t.
        # The road stays flat for at least 12 m before a hill may start.
        flat = np.where(ry < 0, fb * -ry / cam["extrinsic"]["z"], 0)
        ground = np.isin(names, ["road", "sidewalk", "terrain"])
        near = ground & (flat > fb / 11.5)
        assert near.sum() > 100  # the check below covers a good part of every scene
        np.testing.assert_allclose(d[near], flat[near], atol=1 / 256 + 1e-6)
        # Things are upright planes z = const in the world: depth along the optical axis is z / rz,
        # so disparity / rz is one value per instance.
        for v in np.unique(inst[inst >= 1000]):
            m = inst == v
            ratio = d[m] / rz[m]
            assert np.ptp(ratio) <= 2 / 256 / rz[m].min(), v


def test_depth_is_not_a_function_of_the_row(tree):
    horizons, counts = [], []
    for s in scenes(tree):
        label, inst, d, cam = decoded(s)
        _, ry, _ = rays(cam, d.shape)
        centre = ry[:, d.shape[1] // 2]
        horizons.append(np.argmin(np.abs(centre)))  # where the flat ground would meet the sky
        counts.append(len(np.unique(inst[inst >= 1000])))
        assert abs(cam["extrinsic"]["roll"]) < np.radians(4.01) and abs(cam["extrinsic"]["pitch"]) < np.radians(4.51)
        # Within one row the disparity takes many values (objects, facades, ground, sky).
        row = d[int(0.6 * d.shape[0])]
        assert len(np.unique(np.round(row, 2))) > 5
    assert np.ptp(horizons) >= 3  # the camera pitches: the horizon moves between scenes
    assert len(set(counts)) > 1  # scenes hold different numbers of instances

def test_same_seed_same_bytes_and_prefix_stable(tmp_path, tree):
    again = synth.generate(tmp_path / "again", n=6, n_val=2, seed=3, size=SIZE)
    a, b = files(tree), files(again)
    assert [p.relative_to(tree) for p in a] == [p.relative_to(again) for p in b]
    assert all(x.read_bytes() == y.read_bytes() for x, y in zip(a, b))

    fewer = synth.generate(tmp_path / "fewer", n=2, n_val=1, seed=3, size=SIZE)
    for p in files(fewer):
        assert p.read_bytes() == (tree / p.relative_to(fewer)).read_bytes()  # scene i depends on (seed, split, i)

    other = synth.generate(tmp_path / "other", n=2, n_val=1, seed=4, size=SIZE)
    rel = "leftImg8bit/train/aachen/aachen_000000_000019_leftImg8bit.png"
    assert (other / rel).read_bytes() != (tree / rel).read_bytes()


def test_ensure_synthetic_city_caches(tmp_path, monkeypatch):
    monkeypatch.setenv("FASTMTL_CACHE", str(tmp_path / "cache"))
    root = synth.ensure_synthetic_city(n=2, seed=7, size=(32, 64), n_val=1)
    assert root.parent == tmp_path / "cache" and root.name.startswith("synth-7-2")
    stamp = {p: p.stat().st_mtime_ns for p in files(root)}
    assert synth.ensure_synthetic_city(n=2, seed=7, size=(32, 64), n_val=1) == root
    assert {p: p.stat().st_mtime_ns for p in files(root)} == stamp
    assert [p.name for p in root.parent.iterdir()] == [root.name]  # no temporary left behind
    with pytest.raises(ValueError, match=str(root)):
        synth.ensure_synthetic_city(root, n=3, seed=7, size=(32, 64))
    (tmp_path / "stray").mkdir()
    with pytest.raises(ValueError, match="stray"):
        synth.ensure_synthetic_city(tmp_path / "stray")


def test_cli_synth(tmp_path, capsys):
    out = tmp_path / "cli"
    assert main(["data", "synth", "--out", str(out), "--n", "2", "--n-val", "1", "--seed", "1", "--size", "32x64"]) == 0
    assert str(out) in capsys.readouterr().out
    imgs = sorted(out.glob("leftImg8bit/*/*/*.png"))
    assert len(imgs) == 3 and all(Image.open(p).size == (64, 32) for p in imgs)
    assert main(["data", "check", str(out), "--split", "val"]) == 0
    assert main(["data", "synth", "--out", str(out), "--n", "1"]) == 1  # never mixes with an older tree
    assert "not empty" in capsys.readouterr().err
    assert main(["data", "check", str(tmp_path / "missing")]) == 1
    assert "missing" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["data", "synth", "--size", "big"])


def test_python_dash_m():
    repo = Path(__file__).resolve().parents[2]
    r = subprocess.run([sys.executable, "-m", "fastmtl", "data", "synth", "--help"], capture_output=True, text=True, cwd=repo)
    assert r.returncode == 0 and "--seed" in r.stdout
