"""Checkpoints that survive a kill at any moment, and the RNG state they carry.

``save`` writes to a temporary file in the target's directory, flushes and
fsyncs it, renames it over the target with ``os.replace`` (atomic on POSIX) and
fsyncs the directory, so the path always holds either the previous complete
checkpoint or the new one. A process killed mid-write (SIGKILL, power loss) leaves
its ``.<name>.*.tmp`` file behind; the next ``save`` to that path removes such
files first (one writer per path, as the trainer's rank 0), and
``remove_stale_temp`` does it at the start of a run. ``load`` uses ``torch.load(weights_only=True)``: a
checkpoint holds only tensors and plain Python values, so loading one from
elsewhere cannot run code. That is why the RNG states below are stored as
tensors, ints and tuples rather than as pickled objects.
"""
from __future__ import annotations

import os
import random
import tempfile
from pathlib import Path

import numpy as np
import torch


class CheckpointError(RuntimeError):
    """A checkpoint that is missing, truncated or not a fastmtl checkpoint (its path is named)."""


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:  # some platforms cannot open a directory; the rename is still atomic
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _temp_prefix(path: Path) -> str:
    return f".{path.name}."


def remove_stale_temp(path: str | os.PathLike) -> list[Path]:
    """Remove the temporary files that killed writes of ``path`` left; return them."""
    path = Path(path)
    if not path.parent.is_dir():
        return []
    stale = [p for p in path.parent.glob(f"{_temp_prefix(path)}*.tmp") if p.is_file()]
    for p in stale:
        p.unlink(missing_ok=True)
    return stale


def save(state: dict, path: str | os.PathLike) -> Path:
    """Write ``state`` to ``path`` atomically (temp file, fsync, os.replace, fsync dir)."""
    path = Path(path)
    if path.exists() and not path.is_file():
        raise CheckpointError(f"cannot write checkpoint {path}: it is a directory, not a file")
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temp(path)
    fd, tmp = tempfile.mkstemp(prefix=_temp_prefix(path), suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(state, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    _fsync_dir(path.parent)
    return path


def load(path: str | os.PathLike, map_location="cpu") -> dict:
    """Load a checkpoint with ``weights_only=True``; errors name the path."""
    path = Path(path)
    if path.is_dir():
        raise CheckpointError(f"{path} is a directory, not a checkpoint file")
    if not path.is_file():
        raise CheckpointError(f"no checkpoint at {path}")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # truncated, not a torch file, or holds non-plain objects
        raise CheckpointError(f"cannot load checkpoint {path}: {exc}") from exc
    if not isinstance(state, dict):
        raise CheckpointError(f"{path} holds a {type(state).__name__}, not a checkpoint dict")
    return state


def require(state: dict, keys, path) -> dict:
    """``state`` if it holds every key of a fastmtl training checkpoint, else CheckpointError naming ``path``."""
    if state.get("format") != "fastmtl-train":
        raise CheckpointError(f"{path} is not a fastmtl training checkpoint (no 'format': 'fastmtl-train')")
    missing = [k for k in keys if k not in state]
    if missing:
        raise CheckpointError(f"{path} is an incomplete fastmtl training checkpoint: it has no {missing}")
    return state


def rng_state() -> dict:
    """Python, NumPy and torch (CPU and CUDA) generator states as tensors and plain values."""
    version, mt, gauss = random.getstate()
    name, keys, pos, has_gauss, cached = np.random.get_state()
    state = {
        "python": {"version": version, "state": torch.tensor(mt, dtype=torch.int64), "gauss": gauss},
        "numpy": {"name": name, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached_gaussian": float(cached)},
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    """Restore what ``rng_state`` returned."""
    py = state["python"]
    random.setstate((py["version"], tuple(int(v) for v in py["state"].tolist()), py["gauss"]))
    npy = state["numpy"]
    np.random.set_state((npy["name"], npy["keys"].cpu().numpy().astype(np.uint32), npy["pos"],
                         npy["has_gauss"], npy["cached_gaussian"]))
    torch.set_rng_state(state["torch"].cpu())
    if "cuda" in state and torch.cuda.is_available():
        cuda = [s.cpu() for s in state["cuda"]]
        if len(cuda) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(cuda)


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (all devices)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
