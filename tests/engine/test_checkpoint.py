"""Atomic checkpoint writes, weights_only loading and RNG state round trips."""
import os
import random

import numpy as np
import pytest
import torch

from fastmtl.engine import checkpoint


def _state(value):
    return {"step": value, "weights": torch.full((3,), float(value)), "rng": checkpoint.rng_state(),
            "config": {"tasks": ["semantic", "depth"], "weights": None}}


def test_round_trip_with_weights_only(tmp_path):
    path = checkpoint.save(_state(7), tmp_path / "ckpt.pt")
    loaded = checkpoint.load(path)
    assert loaded["step"] == 7
    assert torch.equal(loaded["weights"], torch.full((3,), 7.0))
    # The file is loadable by torch itself with weights_only=True: nothing but tensors and plain values.
    torch.load(path, weights_only=True)
    assert os.listdir(tmp_path) == ["ckpt.pt"]


def test_failed_write_keeps_previous_checkpoint(tmp_path, monkeypatch):
    path = tmp_path / "ckpt.pt"
    checkpoint.save(_state(1), path)
    real_save = torch.save

    def crash_mid_write(obj, f):
        real_save(obj, f)
        f.truncate(10)  # half-written file, then the process "dies"
        raise OSError("disk full")

    monkeypatch.setattr(checkpoint.torch, "save", crash_mid_write)
    with pytest.raises(OSError, match="disk full"):
        checkpoint.save(_state(2), path)
    assert checkpoint.load(path)["step"] == 1
    assert os.listdir(tmp_path) == ["ckpt.pt"]  # the temporary file is gone

    monkeypatch.setattr(checkpoint.torch, "save", real_save)
    monkeypatch.setattr(checkpoint.os, "replace", lambda *a: (_ for _ in ()).throw(KeyboardInterrupt()))
    with pytest.raises(KeyboardInterrupt):
        checkpoint.save(_state(3), path)
    assert checkpoint.load(path)["step"] == 1
    assert os.listdir(tmp_path) == ["ckpt.pt"]


class Payload:
    def __reduce__(self):
        return (print, ("this would run at load time",))


def test_refuses_code_and_names_bad_files(tmp_path):
    evil = tmp_path / "evil.pt"
    torch.save({"step": 1, "x": Payload()}, evil)
    with pytest.raises(checkpoint.CheckpointError, match="evil.pt"):
        checkpoint.load(evil)

    truncated = tmp_path / "truncated.pt"
    checkpoint.save(_state(1), truncated)
    truncated.write_bytes(truncated.read_bytes()[:100])
    with pytest.raises(checkpoint.CheckpointError, match="truncated.pt"):
        checkpoint.load(truncated)

    with pytest.raises(checkpoint.CheckpointError, match="missing.pt"):
        checkpoint.load(tmp_path / "missing.pt")


def _draws():
    return (random.random(), random.gauss(0, 1), np.random.rand(), np.random.randn(), torch.rand(2).tolist())


def test_rng_state_round_trip(tmp_path):
    random.gauss(0, 1)  # leaves a cached gaussian in Python's generator
    np.random.randn()
    state = checkpoint.load(checkpoint.save({"rng": checkpoint.rng_state()}, tmp_path / "r.pt"))["rng"]
    expected = _draws()
    checkpoint.seed_everything(123)
    assert _draws() != expected
    checkpoint.set_rng_state(state)
    assert _draws() == expected
