"""``fastmtl predict IMAGE... --checkpoint CKPT --out DIR``: renderings of a model's outputs.

Each output PNG shows, side by side, the input, the semantic classes in the
Cityscapes palette, the instances grouped from the offsets (one colour per
instance, black elsewhere) and the predicted disparity through a colour map
(bright = near), for the tasks the model has.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image

SEPARATOR = 4  # white pixels between panels


def load_image(path, size: tuple[int, int] | None) -> np.ndarray:
    """uint8 (H, W, 3), resized bilinearly to ``size`` (H, W) when given."""
    try:
        with Image.open(path) as im:
            im = im.convert("RGB")
            if size is not None and im.size != (size[1], size[0]):
                im = im.resize((size[1], size[0]), Image.BILINEAR)
            return np.asarray(im).copy()
    except (OSError, SyntaxError) as e:
        raise ValueError(f"cannot read image {path}: {e}") from e


def colour_semantic(labels: np.ndarray) -> np.ndarray:
    from fastmtl.data.labels import TRAIN_COLORS

    palette = np.zeros((256, 3), np.uint8)
    palette[: len(TRAIN_COLORS)] = TRAIN_COLORS
    return palette[labels.astype(np.int64).clip(0, 255)]


def colour_depth(depth: np.ndarray, cmap: str = "magma") -> np.ndarray:
    """Disparity through a colour map, scaled to [0, 99th percentile]."""
    import matplotlib

    top = float(np.percentile(depth, 99)) if depth.size else 1.0
    scaled = np.clip(depth / (top if top > 0 else 1.0), 0, 1)
    return (matplotlib.colormaps[cmap](scaled)[..., :3] * 255 + 0.5).astype(np.uint8)


def render(rgb: np.ndarray, predictions: dict[str, torch.Tensor], grouping: dict | None = None) -> np.ndarray:
    """Input and the rendered predictions (each (1, C, H, W)) side by side."""
    from fastmtl.engine.postprocess import colourise, group_instances

    panels = [rgb]
    semantic = probs = None
    if "semantic" in predictions:
        probs = predictions["semantic"][0].float().softmax(0)
        semantic = probs.argmax(0)
        panels.append(colour_semantic(semantic.cpu().numpy()))
    if "instance" in predictions:
        if semantic is None:
            panels.append(np.zeros_like(rgb))  # grouping needs the classes
        else:
            inst = group_instances(semantic, predictions["instance"][0].float(), probabilities=probs,
                                   **(grouping or {}))
            panels.append(colourise(inst.ids))
    if "depth" in predictions:
        panels.append(colour_depth(predictions["depth"][0, 0].float().cpu().numpy()))
    h = rgb.shape[0]
    gap = np.full((h, SEPARATOR, 3), 255, np.uint8)
    row = [panels[0]]
    for p in panels[1:]:
        row += [gap, p]
    return np.concatenate(row, axis=1)


@torch.no_grad()
def predict_images(images, checkpoint, out_dir, *, size=None, device="cpu", grouping=None) -> list[Path]:
    """Render each image with the model of ``checkpoint``; return the written PNG paths.

    ``size``: (H, W) to resize inputs to; default the size the model was trained at;
    "native" keeps each image's own size.
    """
    from fastmtl.data.cityscapes import normalize_image
    from fastmtl.engine.evaluation import load_model, predict

    model, cfg, trained = load_model(checkpoint, device)
    size = None if size == "native" else (trained if size is None else tuple(size))
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for path in images:
        rgb = load_image(path, size)
        preds = predict(model, normalize_image(rgb)[None].to(device))
        target = out_dir / f"{Path(path).stem}_pred.png"
        Image.fromarray(render(rgb, preds, grouping)).save(target)
        written.append(target)
    return written


def register(subparsers) -> None:
    p = subparsers.add_parser("predict", help="render semantic, instance and depth predictions of images")
    p.add_argument("images", nargs="+", help="input images (PNG, JPEG, ...)")
    p.add_argument("--checkpoint", required=True, help="training checkpoint (checkpoint.pt)")
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--size", default=None,
                   help="HxW to resize inputs to (default: the training size; 'native' keeps them)")
    p.add_argument("--device", default="auto")
    p.add_argument("--grouping", choices=("fast", "optics"), default="fast", help="instance grouping method")
    p.set_defaults(func=_main)


def _main(args) -> int:
    device = ("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device
    size = args.size
    if size not in (None, "native"):
        size = tuple(int(v) for v in size.lower().split("x"))
    for path in predict_images(args.images, args.checkpoint, args.out, size=size, device=device,
                               grouping={"method": args.grouping}):
        print(path)
    return 0
