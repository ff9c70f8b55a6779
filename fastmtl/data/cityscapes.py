"""The Cityscapes data set read from its own directory layout.

    root/leftImg8bit/{split}/{city}/{city}_{seq}_{frame}_leftImg8bit.png   8-bit RGB
    root/gtFine/{split}/{city}/..._gtFine_labelIds.png                    8-bit labelIds
    root/gtFine/{split}/{city}/..._gtFine_instanceIds.png                 16-bit instanceIds
    root/disparity/{split}/{city}/..._disparity.png                       16-bit, (p - 1) / 256
    root/camera/{split}/{city}/..._camera.json                            baseline, fx, ...
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from .io import read_camera, read_png
from .labels import CLASS_NAMES, IGNORE_INDEX, NUM_CLASSES, THING_TRAIN_IDS
from .targets import decode_disparity, instance_target, metric_depth, semantic_target
from .transforms import nearest_index

__all__ = ["Cityscapes", "SIZES", "MEAN", "STD", "normalize_image", "denormalize_image", "resolve_size"]

TASKS = ("semantic", "instance", "depth")
# Presets: "tiny" is the paper's Tiny Cityscapes.
SIZES = {"tiny": (128, 256), "half": (512, 1024), "full": (1024, 2048)}
# ImageNet statistics, matching torchvision-format ResNet weights.
MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)


def normalize_image(rgb: np.ndarray) -> torch.Tensor:
    """uint8 (H, W, 3) -> float32 (3, H, W), ImageNet mean and std."""
    x = torch.from_numpy(np.ascontiguousarray(rgb)).permute(2, 0, 1).float().div_(255.0)
    return x.sub_(torch.tensor(MEAN).view(3, 1, 1)).div_(torch.tensor(STD).view(3, 1, 1))


def denormalize_image(x: torch.Tensor) -> np.ndarray:
    """float (3, H, W) normalised -> uint8 (H, W, 3), for display."""
    x = x.detach().cpu().float() * torch.tensor(STD).view(3, 1, 1) + torch.tensor(MEAN).view(3, 1, 1)
    return (x.clamp(0, 1) * 255 + 0.5).byte().permute(1, 2, 0).numpy()


def resolve_size(size) -> tuple[int, int] | None:
    """A preset name ("tiny", "half", "full"), an (H, W) pair, "HxW", or None (native)."""
    if size is None or size == "native":
        return None
    if isinstance(size, str):
        if size in SIZES:
            return SIZES[size]
        try:
            h, w = (int(v) for v in size.lower().split("x"))
        except ValueError:
            raise ValueError(f"size must be one of {sorted(SIZES)}, 'HxW' or (H, W), got {size!r}") from None
        return h, w
    h, w = size
    return int(h), int(w)


def _nearest(arr: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    if arr.shape[:2] == size:
        return arr
    return arr[nearest_index(arr.shape[0], size[0])[:, None], nearest_index(arr.shape[1], size[1])[None, :]]


class Cityscapes(torch.utils.data.Dataset):
    """Cityscapes (or a tree in its layout) as multi-task samples.

    Args:
        root: directory holding leftImg8bit/, gtFine/, disparity/, camera/.
        split: "train", "val", ... (a directory name under leftImg8bit/).
        size: "tiny" (128x256), "half" (512x1024), "full" (1024x2048), (H, W),
            or None for the files' own size. Images are resized bilinearly,
            labels nearest, disparity nearest and multiplied by the width factor.
        tasks: targets to load; only their files are read and required.
        depth: "disparity" (pixels, at the output size) or "metric" (metres,
            baseline * fx / disparity; needs camera/).
        transform: callable on the sample dict, e.g. ``transforms.train_transform``.

    A sample is a dict:
        "image" (3, H, W) float32, ImageNet-normalised;
        "semantic" (H, W) int64 trainIds, 255 = ignore;
        "instance" (2, H, W) float32, centroid minus pixel (dy, dx) in pixels;
        "instance_mask" (H, W) bool, pixels of instances of thing classes;
        "depth" (1, H, W) float32, 0 = no measurement;
        "image_path" str; "fx" (pixels, at the output size) and "baseline"
        (metres) floats when the split has camera files.
    Values are computed after resizing, so offsets are exact at the output size.
    """

    num_classes = NUM_CLASSES
    ignore_index = IGNORE_INDEX
    class_names = CLASS_NAMES
    thing_train_ids = THING_TRAIN_IDS

    def __init__(
        self,
        root: str | os.PathLike,
        split: str = "train",
        size="tiny",
        tasks: Sequence[str] = TASKS,
        depth: str = "disparity",
        transform: Callable[[dict], dict] | None = None,
    ):
        self.root = Path(root)
        self.split = split
        self.size = resolve_size(size)
        self.tasks = tuple(t for t in TASKS if t in tasks)
        if set(tasks) - set(TASKS):
            raise ValueError(f"tasks must be a subset of {TASKS}, got {tuple(tasks)}")
        if depth not in ("disparity", "metric"):
            raise ValueError(f"depth must be 'disparity' or 'metric', got {depth!r}")
        self.depth = depth
        self.transform = transform
        image_dir = self.root / "leftImg8bit" / split
        if not image_dir.is_dir():
            raise FileNotFoundError(f"no Cityscapes split {split!r}: directory not found: {image_dir}")
        images = sorted(image_dir.glob("*/*_leftImg8bit.png"))
        if not images:
            raise ValueError(f"empty split: no {{city}}/*_leftImg8bit.png under {image_dir}")
        self.use_camera = depth == "metric" or (self.root / "camera" / split).is_dir()
        self.files = [self._files_of(p) for p in images]
        missing = [str(p) for f in self.files for p in f.values() if not p.is_file()]
        if missing:
            raise FileNotFoundError(
                f"{len(missing)} file(s) missing from {self.root} ({split}), e.g. " + ", ".join(missing[:3])
            )

    def _files_of(self, image: Path) -> dict[str, Path]:
        city, stem = image.parent.name, image.name[: -len("_leftImg8bit.png")]
        gt = self.root / "gtFine" / self.split / city
        files = {"image": image}
        if "semantic" in self.tasks:
            files["label_ids"] = gt / f"{stem}_gtFine_labelIds.png"
        if "instance" in self.tasks:
            files["instance_ids"] = gt / f"{stem}_gtFine_instanceIds.png"
        if "depth" in self.tasks:
            files["disparity"] = self.root / "disparity" / self.split / city / f"{stem}_disparity.png"
        if self.use_camera:
            files["camera"] = self.root / "camera" / self.split / city / f"{stem}_camera.json"
        return files

    def __len__(self) -> int:
        return len(self.files)

    def __repr__(self) -> str:
        size = "native" if self.size is None else f"{self.size[0]}x{self.size[1]}"
        return f"Cityscapes(root={str(self.root)!r}, split={self.split!r}, n={len(self)}, size={size}, tasks={self.tasks})"

    def __getitem__(self, index: int) -> dict:
        files = self.files[index]
        rgb = read_png(files["image"], "rgb8")
        raw = {}
        for key, kind in (("label_ids", "gray8"), ("instance_ids", "gray16"), ("disparity", "gray16")):
            if key in files:
                raw[key] = read_png(files[key], kind)
                if raw[key].shape != rgb.shape[:2]:
                    raise ValueError(
                        f"size mismatch: {files[key]} is {raw[key].shape[1]}x{raw[key].shape[0]} (WxH), "
                        f"{files['image']} is {rgb.shape[1]}x{rgb.shape[0]}"
                    )
        h, w = rgb.shape[:2]
        size = self.size or (h, w)
        sx = size[1] / w
        if size != (h, w):
            rgb = np.array(Image.fromarray(rgb).resize((size[1], size[0]), Image.BILINEAR))
            raw = {k: _nearest(v, size) for k, v in raw.items()}

        sample = {"image": normalize_image(rgb)}
        if "label_ids" in raw:
            sample["semantic"] = torch.from_numpy(semantic_target(raw["label_ids"]).astype(np.int64))
        if "instance_ids" in raw:
            offsets, mask = instance_target(raw["instance_ids"])
            sample["instance"] = torch.from_numpy(offsets)
            sample["instance_mask"] = torch.from_numpy(mask)
        if self.use_camera:
            cam = read_camera(files["camera"])
            sample["fx"] = cam["fx"] * sx
            sample["baseline"] = cam["baseline"]
        if "disparity" in raw:
            disp = decode_disparity(raw["disparity"]) * np.float32(sx)
            if self.depth == "metric":
                disp = metric_depth(disp, sample["fx"], sample["baseline"])
            sample["depth"] = torch.from_numpy(disp)[None]
        sample["image_path"] = str(files["image"])
        if self.transform is not None:
            sample = self.transform(sample)
        return sample
