"""``fastmtl predict IMAGE... --checkpoint CKPT --out DIR``: pictures of a model's outputs.

Each output PNG shows, side by side and titled, the input, the semantic classes
in the Cityscapes palette with a legend of the classes present, the instances
grouped from the offsets (one colour per instance, black elsewhere) and the
predicted disparity through a colour map with its colour bar in pixels (bright =
near), for the tasks the model has. Small images are enlarged (nearest
neighbour) so each panel is at least ``PANEL_INCHES`` wide.

Output names keep the inputs' folders below their common folder:
``predict a/x.png b/x.png --out P`` writes ``P/a/x_pred.png`` and
``P/b/x_pred.png``; inputs from one folder land directly in ``P``.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from PIL import Image

PANEL_INCHES = 4.0
DPI = 100


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


def panels(rgb: np.ndarray, predictions: dict[str, torch.Tensor], grouping: dict | None = None) -> list[dict]:
    """The pictures to show: dicts with "title" and "image" (H, W, 3 uint8) or "disparity" (H, W)."""
    from fastmtl.engine.postprocess import colourise, group_instances

    out = [{"title": "input", "image": rgb}]
    semantic = probs = None
    if "semantic" in predictions:
        probs = predictions["semantic"][0].float().softmax(0)
        semantic = probs.argmax(0)
        labels = semantic.cpu().numpy()
        out.append({"title": "semantic classes", "image": colour_semantic(labels),
                    "classes": sorted(int(c) for c in np.unique(labels))})
    if "instance" in predictions:
        if semantic is None:
            out.append({"title": "instances (need semantic classes)", "image": np.zeros_like(rgb)})
        else:
            inst = group_instances(semantic, predictions["instance"][0].float(), probabilities=probs,
                                   **(grouping or {}))
            n = int(inst.ids.max()) if inst.ids.numel() else 0
            out.append({"title": f"instances ({n} found)", "image": colourise(inst.ids)})
    if "depth" in predictions:
        out.append({"title": "disparity [px] (bright = near)",
                    "disparity": predictions["depth"][0, 0].float().cpu().numpy()})
    return out


def render(rgb: np.ndarray, predictions: dict[str, torch.Tensor], grouping: dict | None = None) -> np.ndarray:
    """The titled picture as an (H, W, 3) uint8 array."""
    from matplotlib.figure import Figure
    from matplotlib.patches import Patch

    from fastmtl.data.labels import CLASS_NAMES, TRAIN_COLORS

    shown = panels(rgb, predictions, grouping)
    h, w = rgb.shape[:2]
    panel_h = PANEL_INCHES * h / w
    fig = Figure(figsize=(PANEL_INCHES * len(shown), panel_h + 1.4), dpi=DPI, layout="constrained")
    axes = fig.subplots(1, len(shown), squeeze=False)[0]
    classes = []
    for ax, panel in zip(axes, shown):
        ax.set_title(panel["title"], fontsize=10)
        ax.set_xticks([])
        ax.set_yticks([])
        if "disparity" in panel:
            d = panel["disparity"]
            top = float(np.percentile(d, 99)) if d.size else 1.0
            im = ax.imshow(d, cmap="magma", vmin=0.0, vmax=top if top > 0 else 1.0, interpolation="nearest")
            fig.colorbar(im, ax=ax, fraction=0.046, pad=0.02, label="disparity [px]")
        else:
            ax.imshow(panel["image"], interpolation="nearest")
        classes = panel.get("classes", classes)
    if classes:
        handles = [Patch(facecolor=TRAIN_COLORS[c] / 255.0, edgecolor="black", linewidth=0.5,
                         label=CLASS_NAMES[c]) for c in classes if c < len(CLASS_NAMES)]
        fig.legend(handles=handles, loc="outside lower center", ncol=min(len(handles), 2 * len(shown) + 1),
                   fontsize=8, frameon=False, title="semantic classes present", title_fontsize=8)
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    return np.asarray(canvas.buffer_rgba())[..., :3].copy()


def output_paths(images, out_dir) -> list[Path]:
    """``<out>/<folder below the inputs' common folder>/<stem>_pred.png`` for each input."""
    resolved = [Path(p).resolve() for p in images]
    common = Path(os.path.commonpath([p.parent for p in resolved])) if resolved else Path(".")
    return [Path(out_dir) / p.parent.relative_to(common) / f"{p.stem}_pred.png" for p in resolved]


@torch.no_grad()
def predict_images(images, checkpoint, out_dir, *, size=None, device="cpu", grouping=None) -> list[Path]:
    """Render each image with the model of ``checkpoint``; return the written PNG paths.

    ``size``: (H, W) to resize inputs to; default the size the model was trained at;
    "native" keeps each image's own size.
    """
    from fastmtl.data.cityscapes import normalize_image
    from fastmtl.engine import rundir
    from fastmtl.engine.evaluation import load_model, predict

    model, cfg, trained = load_model(checkpoint, device)
    size = None if size == "native" else (trained if size is None else tuple(size))
    out_dir = Path(out_dir)
    written = []
    with rundir.recording(rundir.run_of(checkpoint), out_dir):  # --overwrite of the run removes them
        for path, target in zip(images, output_paths(images, out_dir)):
            rgb = load_image(path, size)
            preds = predict(model, normalize_image(rgb)[None].to(device))
            target.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(render(rgb, preds, grouping)).save(target)
            written.append(target)
    return written


def register(subparsers) -> None:
    from fastmtl.commands.options import size_or_native

    p = subparsers.add_parser("predict", help="render semantic, instance and depth predictions of images",
                              description="Writes one titled PNG per image (input, classes with a legend, "
                                          "instances, disparity with a colour bar); output paths keep the "
                                          "inputs' folders below their common folder.")
    p.add_argument("images", nargs="+", help="input images (PNG, JPEG, ...)")
    p.add_argument("--checkpoint", required=True, help="training checkpoint (checkpoint.pt)")
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--size", type=size_or_native, default=None,
                   help="HxW to resize inputs to (default: the training size; 'native' keeps them)")
    p.add_argument("--device", default="auto")
    p.add_argument("--grouping", choices=("fast", "optics"), default="fast", help="instance grouping method")
    p.set_defaults(func=_main)


def _main(args) -> int:
    from fastmtl.engine.distributed import resolve_device

    device = str(resolve_device(("cuda" if torch.cuda.is_available() else "cpu")
                                if args.device == "auto" else args.device))
    for path in predict_images(args.images, args.checkpoint, args.out, size=args.size, device=device,
                               grouping={"method": args.grouping}):
        print(path)
    return 0
