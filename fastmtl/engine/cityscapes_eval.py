"""The official Cityscapes evaluation (cityscapesscripts) as plain function calls.

- ``evaluate_pixel_level``: ``evalPixelLevelSemanticLabeling`` on labelIds PNGs
  (IoU per class and their mean over the 19 evaluated classes).
- ``evaluate_instance_level``: ``evalInstanceLevelSemanticLabeling`` on the
  txt + binary-mask PNG format (AP over overlaps 0.5:0.95, and AP at 0.5).
- ``write_semantic`` and ``write_instances`` write predictions in those formats.

The evaluators are scripts driven by a module-level ``args`` object and by
environment variables read at import time. Each call here builds its own args
object (the module's one is never touched), sets ``CITYSCAPES_DATASET`` and
``CITYSCAPES_RESULTS`` only for the duration of the call, and redirects every
file they write (result JSON, the ground-truth instance cache that by default
lands inside the installed package, ``matches.json`` that by default lands in
the working directory) into ``out_dir``.

With numpy >= 2.3 the evaluators break in two places (cityscapesscripts 2.3.0,
numpy 2.4, checked by running them):

1. ``np.in1d`` is gone (both evaluators call it): AttributeError.
2. ``csHelpers.writeDict2JSON`` serialises with ``default=lambda o: o.__dict__``,
   which fails on the numpy integers the instance evaluator stores
   (``np.int64`` has no ``__dict__``) when it writes ``matches.json``.

Both are fixed for the duration of a call by swapping attributes of the
evaluator modules only: their ``np`` name points to a proxy of numpy that adds
``in1d`` (as ``isin`` on the flattened input), and their ``writeDict2JSON``
converts numpy scalars and arrays. numpy itself is never modified, and the
original attributes are restored afterwards. Their ``printError`` (which calls
``sys.exit``) raises ``CityscapesEvalError`` instead.
"""
from __future__ import annotations

import contextlib
import copy
import glob
import json
import os
import threading
import types
from pathlib import Path

import numpy as np
from PIL import Image

THING_LABEL_IDS = (24, 25, 26, 27, 28, 31, 32, 33)  # person ... bicycle, Cityscapes labelIds
_lock = threading.Lock()


class CityscapesEvalError(RuntimeError):
    """An error reported by the official evaluation scripts."""


def _train_to_label_lut() -> np.ndarray:
    from cityscapesscripts.helpers.labels import labels

    lut = np.zeros(256, dtype=np.uint8)  # anything unknown -> 0 (unlabeled)
    for label in labels:
        if 0 <= label.trainId < 255 and label.id >= 0:
            lut[label.trainId] = label.id
    return lut


def train_to_label_ids(train_ids: np.ndarray) -> np.ndarray:
    """Map trainIds (0..18, 255) to Cityscapes labelIds (uint8)."""
    return _train_to_label_lut()[np.asarray(train_ids).astype(np.int64).clip(0, 255)]


def write_semantic(train_ids: np.ndarray, path: str | os.PathLike) -> Path:
    """Save a (H, W) trainId map as a labelIds PNG (the pixel-level evaluator's input)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(train_to_label_ids(train_ids)).save(path)
    return path


def write_instances(instance_ids: np.ndarray, classes: dict[int, int], scores: dict[int, float],
                    out_dir: str | os.PathLike, stem: str) -> Path:
    """Save instances in the instance evaluator's format.

    ``instance_ids`` (H, W) holds 0 for no instance and k > 0 for instance k;
    ``classes[k]`` is its trainId and ``scores[k]`` its confidence. Writes one
    binary mask PNG per instance and ``<stem>_pred.txt`` listing
    ``<mask file> <labelId> <confidence>`` per line (paths relative to the txt).
    """
    out_dir = Path(out_dir)
    (out_dir / "masks").mkdir(parents=True, exist_ok=True)
    lut = _train_to_label_lut()
    lines = []
    for k in sorted(classes):
        mask = (instance_ids == k)
        if not mask.any():
            continue
        name = f"masks/{stem}_{k:04d}.png"
        Image.fromarray(mask.astype(np.uint8) * 255).save(out_dir / name)
        lines.append(f"{name} {int(lut[classes[k]])} {float(scores[k]):.6f}\n")
    txt = out_dir / f"{stem}_pred.txt"
    txt.write_text("".join(lines))
    return txt


# --- running the evaluators -----------------------------------------------------------------

class _NumpyWithIn1d(types.ModuleType):
    """numpy as seen by the evaluators: every attribute of numpy, plus ``in1d``."""

    def __init__(self):
        super().__init__("numpy")

    def __getattr__(self, name):
        return getattr(np, name)

    @staticmethod
    def in1d(ar1, ar2, assume_unique=False, invert=False):
        return np.isin(np.ravel(ar1), ar2, assume_unique=assume_unique, invert=invert)


def _json_default(obj):
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    return obj.__dict__


def _raise(message):
    raise CityscapesEvalError(str(message))


@contextlib.contextmanager
def _scoped(module, out_dir: Path, env: dict[str, str]):
    """Patch ``module``'s np/writeDict2JSON/printError and the env vars; restore on exit."""

    def write_json(data, file_name):
        target = Path(file_name)
        if not target.is_absolute():
            target = out_dir / target
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(json.dumps(data, default=_json_default, sort_keys=True, indent=4))

    patches = {"np": _NumpyWithIn1d(), "writeDict2JSON": write_json, "printError": _raise}
    with _lock:
        saved_attrs = {k: getattr(module, k) for k in patches}
        saved_env = {k: os.environ.get(k) for k in env}
        try:
            for k, v in patches.items():
                setattr(module, k, v)
            os.environ.update(env)
            yield
        finally:
            for k, v in saved_attrs.items():
                setattr(module, k, v)
            for k, v in saved_env.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v


def _fresh_args(module, **overrides):
    args = module.CArgs()
    args.__dict__.update(copy.deepcopy(module.args.__dict__))
    args.__dict__.update(overrides)
    return args


def _ground_truth(cityscapes_root, split: str, suffix: str) -> list[str]:
    pattern = os.path.join(os.fspath(cityscapes_root), "gtFine", split, "*", f"*_gtFine_{suffix}.png")
    files = sorted(glob.glob(pattern))
    if not files:
        raise CityscapesEvalError(f"no ground truth found: {pattern}")
    return files


def evaluate_pixel_level(cityscapes_root, predictions_dir, out_dir, split: str = "val",
                         ground_truth: list[str] | None = None) -> dict:
    """Run ``evalPixelLevelSemanticLabeling`` on labelIds PNGs in ``predictions_dir``.

    Each ground truth ``<city>_<seq>_<frame>_gtFine_labelIds.png`` is matched to
    the single ``<city>_<seq>_<frame>*.png`` under ``predictions_dir``. Returns
    the evaluator's result dict (also written to
    ``out_dir/resultPixelLevelSemanticLabeling.json``); ``averageScoreClasses``
    is the mIoU over the 19 classes.
    """
    from cityscapesscripts.evaluation import evalPixelLevelSemanticLabeling as module

    out_dir = Path(out_dir).absolute()
    out_dir.mkdir(parents=True, exist_ok=True)
    gt = ground_truth or _ground_truth(cityscapes_root, split, "labelIds")
    args = _fresh_args(
        module, cityscapesPath=os.fspath(cityscapes_root),
        exportFile=os.fspath(out_dir / "resultPixelLevelSemanticLabeling.json"),
        groundTruthSearch=os.path.join(os.fspath(cityscapes_root), "gtFine", split, "*", "*_gtFine_labelIds.png"),
        predictionPath=os.path.abspath(predictions_dir), predictionWalk=None,
        quiet=True, colorized=False, bold="", nocol="", JSONOutput=True)
    env = {"CITYSCAPES_DATASET": os.fspath(cityscapes_root), "CITYSCAPES_RESULTS": args.predictionPath}
    with _scoped(module, out_dir, env):
        preds = [module.getPrediction(args, f) for f in gt]
        return module.evaluateImgLists(preds, gt, args)


def evaluate_instance_level(cityscapes_root, predictions_dir, out_dir, split: str = "val",
                            ground_truth: list[str] | None = None) -> dict:
    """Run ``evalInstanceLevelSemanticLabeling`` on ``<city>_<seq>_<frame>*.txt`` predictions.

    Returns the evaluator's result dict (also written to
    ``out_dir/resultInstanceLevelSemanticLabeling.json``); ``averages["allAp"]``
    is AP over overlaps 0.5:0.95 and ``averages["allAp50%"]`` AP at 0.5. The
    official evaluation ignores ground-truth instances under 100 pixels.
    """
    from cityscapesscripts.evaluation import evalInstanceLevelSemanticLabeling as module

    out_dir = Path(out_dir).absolute()
    out_dir.mkdir(parents=True, exist_ok=True)
    cache = out_dir / "gtInstances.json"
    cache.unlink(missing_ok=True)  # never reuse a cache built from other ground truth
    gt = ground_truth or _ground_truth(cityscapes_root, split, "instanceIds")
    args = _fresh_args(
        module, cityscapesPath=os.fspath(cityscapes_root),
        exportFile=os.fspath(out_dir / "resultInstanceLevelSemanticLabeling.json"),
        groundTruthSearch=os.path.join(os.fspath(cityscapes_root), "gtFine", split, "*", "*_gtFine_instanceIds.png"),
        gtInstancesFile=os.fspath(cache), predictionPath=os.path.abspath(predictions_dir),
        predictionWalk=None, quiet=True, colorized=False, JSONOutput=True)
    env = {"CITYSCAPES_DATASET": os.fspath(cityscapes_root), "CITYSCAPES_RESULTS": args.predictionPath}
    with _scoped(module, out_dir, env):
        preds = [module.getPrediction(f, args) for f in gt]
        return module.evaluateImgLists(preds, gt, args)


def summary(pixel: dict | None = None, instance: dict | None = None) -> dict[str, float]:
    """The headline numbers: official mIoU, AP and AP50."""
    out = {}
    if pixel is not None:
        out["official_miou"] = float(pixel["averageScoreClasses"])
    if instance is not None:
        out["official_ap"] = float(instance["averages"]["allAp"])
        out["official_ap50"] = float(instance["averages"]["allAp50%"])
    return out
