"""Input checks shared by every backend: each bad input gets an error naming it."""
from __future__ import annotations

import functools
import importlib.util
import numbers
import weakref
from collections.abc import Mapping

import torch

from fastmtl.tasks import TASKS, tasks_of

SEMANTIC_TARGET_DTYPES = (torch.int64, torch.int32, torch.uint8)
PREDICTION_DTYPES = (torch.float32, torch.float16, torch.bfloat16, torch.float64)
BACKENDS = ("auto", "reference", "triton")


def _tensor(obj, what: str) -> torch.Tensor:
    if not isinstance(obj, torch.Tensor):
        raise TypeError(f"{what} must be a torch.Tensor, got {type(obj).__name__}")
    return obj


def _floating(t: torch.Tensor, what: str) -> None:
    if not t.is_floating_point():
        raise TypeError(f"{what} must be a floating-point tensor, got {t.dtype}")


def _shape(t: torch.Tensor, expected: tuple, what: str) -> None:
    if tuple(t.shape) != tuple(expected):
        raise ValueError(f"{what} has shape {tuple(t.shape)}, expected {tuple(expected)}")


_validated: dict = {}  # metadata of inputs that passed -> their tasks
_MAX_VALIDATED = 1024


def _metadata(v):
    return (v.dtype, v.get_device(), v.shape) if isinstance(v, torch.Tensor) else type(v)


def _named_metadata(mapping: Mapping) -> tuple:
    return tuple([(k, v.dtype, v.get_device(), v.shape) if isinstance(v, torch.Tensor)
                  else (k, type(v)) for k, v in mapping.items()])


def validate_inputs(predictions: Mapping, targets: Mapping, class_weight=None,
                    upsample: str | None = None) -> tuple[str, ...]:
    """Check shapes, dtypes and devices; return the tasks present in canonical order.

    With ``upsample`` the predictions may be smaller than the targets (see
    ``target_size``); the targets are then checked at their own H x W. Only metadata
    is checked, so inputs with the metadata of inputs that passed pass at once.
    """
    if not (isinstance(predictions, Mapping) and isinstance(targets, Mapping)):
        return _validate_inputs(predictions, targets, class_weight, upsample)
    key = (_named_metadata(predictions), _named_metadata(targets), _metadata(class_weight),
           upsample)
    tasks = _validated.get(key)
    if tasks is None:
        tasks = _validate_inputs(predictions, targets, class_weight, upsample)
        if len(_validated) >= _MAX_VALIDATED:
            _validated.clear()
        _validated[key] = tasks
    return tasks


def _validate_inputs(predictions, targets, class_weight, upsample) -> tuple[str, ...]:
    tasks = tasks_of(predictions)
    if not isinstance(targets, Mapping):
        raise TypeError(f"targets must be a dict, got {type(targets).__name__}")

    preds = {name: _tensor(predictions[name], f"predictions[{name!r}]") for name in tasks}
    first = preds[tasks[0]]
    for name, p in preds.items():
        if p.dim() != 4:
            raise ValueError(
                f"predictions[{name!r}] must be 4-d (B,C,H,W), got shape {tuple(p.shape)}"
            )
        if p.dtype not in PREDICTION_DTYPES:
            raise TypeError(
                f"predictions[{name!r}] has dtype {p.dtype}; expected one of "
                f"{[str(d) for d in PREDICTION_DTYPES]}"
            )
        channels = TASKS[name].channels
        if channels is not None and p.shape[1] != channels:
            raise ValueError(
                f"predictions[{name!r}] has {p.shape[1]} channels, expected {channels} "
                f"(shape {tuple(p.shape)})"
            )
        if (p.shape[0], *p.shape[2:]) != (first.shape[0], *first.shape[2:]):
            raise ValueError(
                f"predictions[{name!r}] has shape {tuple(p.shape)} but "
                f"predictions[{tasks[0]!r}] has {tuple(first.shape)}: batch and H x W must agree"
            )
        if p.device != first.device:
            raise ValueError(
                f"predictions[{name!r}] is on {p.device} but predictions[{tasks[0]!r}] on {first.device}"
            )
    if preds.get("semantic") is not None and preds["semantic"].shape[1] < 1:
        raise ValueError("predictions['semantic'] has no class channel")

    B, H, W = first.shape[0], first.shape[2], first.shape[3]
    for name in tasks:
        for key in TASKS[name].target_keys:
            if key not in targets or targets[key] is None:
                raise ValueError(f"missing target {key!r} for task {name!r}")
            t = _tensor(targets[key], f"targets[{key!r}]")
            if t.device != first.device:
                raise ValueError(
                    f"targets[{key!r}] is on {t.device} but the predictions are on {first.device}"
                )
    if upsample is not None:
        H, W = target_size(predictions, targets, tasks, upsample)

    if "semantic" in tasks:
        t = targets["semantic"]
        if t.dtype not in SEMANTIC_TARGET_DTYPES:
            raise TypeError(
                f"targets['semantic'] must hold integer class labels "
                f"(int64, int32 or uint8), got {t.dtype}"
            )
        _shape(t, (B, H, W), "targets['semantic']")
    if "instance" in tasks:
        g, m = targets["instance"], targets["instance_mask"]
        _floating(g, "targets['instance']")
        _shape(g, (B, 2, H, W), "targets['instance']")
        if m.dtype != torch.bool:
            raise TypeError(f"targets['instance_mask'] must be a bool tensor, got {m.dtype}")
        _shape(m, (B, H, W), "targets['instance_mask']")
    if "depth" in tasks:
        z = targets["depth"]
        _floating(z, "targets['depth']")
        if tuple(z.shape) not in ((B, 1, H, W), (B, H, W)):
            raise ValueError(
                f"targets['depth'] has shape {tuple(z.shape)}, expected {(B, 1, H, W)} or {(B, H, W)}"
            )

    if class_weight is not None:
        if "semantic" not in tasks:
            raise ValueError("class_weight given but there is no semantic prediction")
        w = _tensor(class_weight, "class_weight")
        _floating(w, "class_weight")
        C = preds["semantic"].shape[1]
        _shape(w, (C,), "class_weight")
        if w.device != first.device:
            raise ValueError(f"class_weight is on {w.device} but the predictions are on {first.device}")
    return tasks


# --- upsampled predictions (multitask_loss(..., upsample="bilinear"), docs/upsample.md) ---
UPSAMPLE_MODES = ("bilinear",)


def target_size(predictions: Mapping, targets: Mapping, tasks, upsample: str) -> tuple[int, int]:
    """Full resolution (H, W), read from the first task's target, for predictions that are
    upsampled to it; they must be no larger than it."""
    if upsample not in UPSAMPLE_MODES:
        raise ValueError(f"unknown upsample mode {upsample!r}; choose from {list(UPSAMPLE_MODES)}")
    key = TASKS[tasks[0]].target_keys[0]
    t = targets[key]
    if t.dim() < 3:
        raise ValueError(f"targets[{key!r}] has shape {tuple(t.shape)}, expected (B,[1,]H,W)")
    H, W = t.shape[-2], t.shape[-1]
    p = predictions[tasks[0]]
    if 0 in (p.shape[2], p.shape[3], H, W):
        raise ValueError(
            f"upsample={upsample!r} needs a non-zero height and width: "
            f"predictions[{tasks[0]!r}] is {p.shape[2]} x {p.shape[3]}, "
            f"targets[{key!r}] is {H} x {W}")
    if p.shape[2] > H or p.shape[3] > W:
        raise ValueError(
            f"upsample={upsample!r} needs predictions no larger than the targets: "
            f"predictions[{tasks[0]!r}] is {p.shape[2]} x {p.shape[3]}, targets are {H} x {W}")
    return H, W


def validate_log_vars(log_vars, tasks: tuple[str, ...], device) -> torch.Tensor:
    log_vars = _tensor(log_vars, "log_vars")
    _floating(log_vars, "log_vars")
    if tuple(log_vars.shape) != (len(tasks),):
        raise ValueError(
            f"log_vars has shape {tuple(log_vars.shape)} but {len(tasks)} task(s) are present "
            f"{list(tasks)}: one log-variance per task, in that order"
        )
    if log_vars.device != device:
        raise ValueError(f"log_vars is on {log_vars.device} but the predictions are on {device}")
    return log_vars


def bad_label_message(label: int, num_classes: int, ignore_index: int) -> str:
    return (
        f"targets['semantic'] has label {label} outside [0, {num_classes}) "
        f"and not ignore_index={ignore_index}"
    )


def label_position(flat: int, shape) -> str:
    """Where the label of row-major index ``flat`` in (B, H, W) labels is, for a message."""
    _, H, W = shape
    b, q = divmod(flat, H * W)
    return f" at targets['semantic'][{b}, {q // W}, {q % W}]"


def check_label_range(target: torch.Tensor, num_classes: int, ignore_index: int) -> None:
    """Raise ValueError naming the first label (in row-major order) outside [0, C) that is
    not ignore_index, and where it is, as the triton backend does.

    Reads one value back from the device, so it synchronises with CUDA.
    """
    bad = (target != ignore_index) & ((target < 0) | (target >= num_classes))
    if bool(bad.any()):
        flat = int(bad.flatten().nonzero()[0])
        raise ValueError(bad_label_message(int(target.flatten()[flat]), num_classes, ignore_index)
                         + label_position(flat, target.shape))


# --- options of the semantic loss: ignore_index and class_weight, as F.cross_entropy ---

def validate_ignore_index(ignore_index, label_dtype: torch.dtype | None = None) -> int:
    """An int (bool, float and None are refused, as F.cross_entropy does) that labels of
    ``label_dtype`` can hold: a uint8 label can never equal -100 or 256, and comparing it
    with one would wrap the value instead of ignoring anything."""
    if type(ignore_index) is not int:  # a plain int passes straight on (not a bool)
        if ignore_index is None:
            raise TypeError("ignore_index must be an int, got None; to ignore no label pass a "
                            "value no label takes, e.g. -100 (F.cross_entropy's default) with "
                            "int64 labels")
        if isinstance(ignore_index, bool) or not isinstance(ignore_index, numbers.Integral):
            raise TypeError(f"ignore_index must be an int, got {type(ignore_index).__name__} "
                            f"{ignore_index!r}")
        ignore_index = int(ignore_index)
    if label_dtype is not None:
        low, high = _label_range(label_dtype)
        if not low <= ignore_index <= high:
            raise ValueError(
                f"ignore_index={ignore_index} cannot occur in {label_dtype} labels, whose values "
                f"lie in [{low}, {high}]; pick an ignore_index in that range "
                f"(Cityscapes uses 255) or wider labels")
    return ignore_index


@functools.lru_cache(maxsize=None)
def _label_range(dtype: torch.dtype) -> tuple[int, int]:
    """(least, largest) value of an integer label dtype."""
    info = torch.iinfo(dtype)
    return info.min, info.max


# Class-weight tensors whose values passed, as id -> (weak reference, in-place version then):
# a loss called every step with the same weights reads them back once, not once per call.
_CHECKED_WEIGHTS: dict[int, tuple[weakref.ref, int]] = {}


def _already_checked(w: torch.Tensor) -> bool:
    ref, version = _CHECKED_WEIGHTS.get(id(w), (None, None))
    return ref is not None and ref() is w and version == w._version


def _remember_checked(w: torch.Tensor) -> None:
    if len(_CHECKED_WEIGHTS) > 256:  # forget tensors that no longer exist
        for key in [k for k, (ref, _) in _CHECKED_WEIGHTS.items() if ref() is None]:
            del _CHECKED_WEIGHTS[key]
    _CHECKED_WEIGHTS[id(w)] = (weakref.ref(w), w._version)


def validate_class_weight(class_weight, num_classes: int | None = None, check_values: bool = True):
    """A floating (C,) tensor whose values are finite and >= 0 with a positive sum.

    A NaN weight would make the semantic loss NaN, and weights summing to <= 0 have no
    meaningful weighted mean. Checking the values reads them back from the device (one
    synchronisation on CUDA) the first time a tensor is seen and after each in-place
    change to it; tensors of a tracer (torch.compile) are not read.
    """
    w = _tensor(class_weight, "class_weight")
    _floating(w, "class_weight")
    if w.dim() != 1 or (num_classes is not None and w.shape[0] != num_classes):
        expected = "(C,)" if num_classes is None else str((num_classes,))
        raise ValueError(f"class_weight has shape {tuple(w.shape)}, expected {expected}")
    if not check_values or type(w) not in (torch.Tensor, torch.nn.Parameter):
        return w
    if _already_checked(w):
        return w
    values = w.detach().to("cpu", torch.float64)
    bad = ~torch.isfinite(values)
    if bool(bad.any()):
        k = int(bad.nonzero()[0])
        raise ValueError(f"class_weight must be finite, got {values[k].item()} for class {k}")
    if bool((values < 0).any()):
        k = int((values < 0).nonzero()[0])
        raise ValueError(f"class_weight must be >= 0, got {values[k].item()} for class {k}")
    if not values.sum() > 0:
        raise ValueError("class_weight must have a positive sum, got all zeros")
    _remember_checked(w)
    return w


def validate_semantic_options(tasks, predictions: Mapping, targets: Mapping, ignore_index,
                              class_weight, check_values: bool) -> None:
    """ignore_index and class_weight against the semantic prediction and target present."""
    has_semantic = "semantic" in tasks
    validate_ignore_index(ignore_index, targets["semantic"].dtype if has_semantic else None)
    if class_weight is not None and has_semantic:
        validate_class_weight(class_weight, predictions["semantic"].shape[1], check_values)


# --- constructor arguments of MultiTaskLoss, checked once when it is built ---

def validate_backend(backend) -> str:
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; choose from {list(BACKENDS)}")
    if backend == "triton" and importlib.util.find_spec("triton") is None:
        raise ValueError("backend='triton' needs the triton package (pip install triton); "
                         "use backend='reference' or 'auto' without it")
    return backend


def validate_upsample(upsample) -> None:
    if upsample is not None and upsample not in UPSAMPLE_MODES:
        raise ValueError(f"unknown upsample mode {upsample!r}; choose None or one of {list(UPSAMPLE_MODES)}")


def validate_flag(value, name: str) -> bool:
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be True or False, got {value!r}")
    return value
