"""The run directory: which files belong to a run, and how a new run treats an old one.

A run directory (``fastmtl train --out DIR``) holds what the trainer writes
(``RUN_FILES``) and, listed in ``outputs.txt``, what ``fastmtl eval`` and
``fastmtl predict`` wrote inside it for that run's checkpoint. A new run never
silently replaces an old one: ``check`` refuses a directory that holds a run
unless it is resumed or explicitly overwritten, and ``start`` (``--overwrite``)
removes exactly those files (and folders they leave empty), nothing the user put
there, once the new run's settings have passed every check.
"""
from __future__ import annotations

import contextlib
import os
from pathlib import Path

import torch

from fastmtl.engine import checkpoint

CHECKPOINT = "checkpoint.pt"
LOG = "log.jsonl"
OUTPUTS = "outputs.txt"
RUN_FILES = (CHECKPOINT, LOG, "config.json", "losses.png", "sigmas.png", "metrics.png", "log.tmp")


class RunExistsError(FileExistsError):
    """``--out`` holds a run and neither --resume nor --overwrite was given."""


def holds_run(out: Path) -> bool:
    return any((out / name).exists() for name in (CHECKPOINT, LOG, "config.json"))


def check(out: str | os.PathLike, *, resume: bool, overwrite: bool) -> None:
    """Refuse ``out`` if it holds a run that is neither resumed nor overwritten, or if its
    checkpoint path is a directory. Every process checks, so all refuse together."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise NotADirectoryError(f"--out {out} is a file, not a directory")
    ckpt = out / CHECKPOINT
    if ckpt.exists() and not ckpt.is_file():
        raise checkpoint.CheckpointError(f"{ckpt} is a directory, not a checkpoint file: "
                                         "move or remove it, or pick another --out")
    if holds_run(out) and not (resume or overwrite):
        raise RunExistsError(
            f"{out} already holds a run ({_describe(out)}): pass --resume to continue it, or "
            f"--overwrite to start afresh (this removes its checkpoint, log, plots and the eval "
            f"and predict outputs recorded in {OUTPUTS}); or choose another --out")


def start(out: str | os.PathLike, *, overwrite: bool) -> None:
    """Once the new run is set up (so a mistake in its settings loses nothing): with
    ``overwrite`` remove the old run's files; always remove stale temporary files."""
    out = Path(out)
    if overwrite:
        clear(out)
    checkpoint.remove_stale_temp(out / CHECKPOINT)


def _describe(out: Path) -> str:
    ckpt = out / CHECKPOINT
    if ckpt.is_file():
        with contextlib.suppress(Exception):  # mmap: reads the step, not the weights
            state = torch.load(ckpt, map_location="cpu", weights_only=True, mmap=True)
            return f"a checkpoint at step {state['step']}"
        return "an unreadable checkpoint"
    return "a log" if (out / LOG).exists() else "a config.json"


def clear(out: Path) -> list[Path]:
    """Remove the run's own files, the recorded eval/predict outputs and stale temporary files."""
    removed = []
    for rel in recorded_outputs(out) + [OUTPUTS, *RUN_FILES]:
        path = out / rel
        if path.is_file() or path.is_symlink():
            path.unlink()
            removed.append(path)
    removed += checkpoint.remove_stale_temp(out / CHECKPOINT)
    for folder in sorted({p.parent for p in removed}, key=lambda p: len(p.parts), reverse=True):
        _remove_empty_folders(folder, stop=out)
    return removed


def _remove_empty_folders(folder: Path, stop: Path) -> None:
    while folder != stop and stop in folder.parents:
        try:
            folder.rmdir()  # only when empty
        except OSError:
            return
        folder = folder.parent


def recorded_outputs(out: Path) -> list[str]:
    """Paths (relative to ``out``) that eval and predict recorded; none outside ``out``."""
    listing = out / OUTPUTS
    if not listing.is_file():
        return []
    root = out.resolve()
    kept = []
    for line in listing.read_text(encoding="utf-8").splitlines():
        rel = line.strip()
        if rel and root in (root / rel).resolve().parents:
            kept.append(rel)
    return kept


def run_of(checkpoint_path: str | os.PathLike) -> Path:
    """The run directory of a checkpoint: its folder."""
    return Path(checkpoint_path).resolve().parent


@contextlib.contextmanager
def recording(run: Path, folder: str | os.PathLike):
    """Record in ``run/outputs.txt`` the files that the block creates or rewrites under
    ``folder``, when ``folder`` lies inside ``run`` and ``run`` is a run directory."""
    run, folder = Path(run).resolve(), Path(folder).resolve()
    inside = (folder == run or run in folder.parents) and holds_run(run)
    before = _snapshot(folder) if inside else {}
    try:
        yield
    finally:
        if inside:
            after = _snapshot(folder)
            written = sorted(str(p.relative_to(run)) for p, stamp in after.items() if before.get(p) != stamp)
            written = [w for w in written if w not in RUN_FILES and w != OUTPUTS]
            if written:
                known = set(recorded_outputs(run))
                with open(run / OUTPUTS, "a", encoding="utf-8") as f:
                    f.writelines(w + "\n" for w in written if w not in known)


def _snapshot(folder: Path) -> dict[Path, tuple[int, int]]:
    if not folder.is_dir():
        return {}
    out = {}
    for p in folder.rglob("*"):
        with contextlib.suppress(OSError):
            if p.is_file():
                st = p.stat()
                out[p] = (st.st_mtime_ns, st.st_size)
    return out
