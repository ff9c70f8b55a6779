"""Random multi-task inputs for tests."""
import torch


def make_inputs(B=2, C=5, H=4, W=6, dtype=torch.float32, target_dtype=torch.int64,
                tasks=("semantic", "instance", "depth"), ignore_frac=0.2, mask_frac=0.5,
                depth_invalid_frac=0.3, ignore_index=255, seed=0, device="cpu"):
    g = torch.Generator().manual_seed(seed)
    pred, tgt = {}, {}
    if "semantic" in tasks:
        pred["semantic"] = torch.randn(B, C, H, W, generator=g).to(dtype)
        t = torch.randint(0, C, (B, H, W), generator=g)
        t[torch.rand(B, H, W, generator=g) < ignore_frac] = ignore_index
        tgt["semantic"] = t.to(target_dtype)
    if "instance" in tasks:
        pred["instance"] = (3 * torch.randn(B, 2, H, W, generator=g)).to(dtype)
        tgt["instance"] = 3 * torch.randn(B, 2, H, W, generator=g)
        tgt["instance_mask"] = torch.rand(B, H, W, generator=g) < mask_frac
    if "depth" in tasks:
        pred["depth"] = torch.rand(B, 1, H, W, generator=g).to(dtype)
        z = torch.rand(B, 1, H, W, generator=g) + 0.1
        z[torch.rand(B, 1, H, W, generator=g) < depth_invalid_frac] = 0.0
        tgt["depth"] = z
    to = lambda d: {k: v.to(device) for k, v in d.items()}
    return to(pred), to(tgt)


def leaf_copies(pred):
    return {k: v.detach().clone().requires_grad_(True) for k, v in pred.items()}


def run_compiled(script, mode: str, timeout: int = 500) -> dict:
    """Run ``python script mode`` without TRITON_INTERPRET (so Triton compiles for real)
    and return the JSON object its last line prints."""
    import json
    import os
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["PYTHONPATH"] = os.pathsep.join([str(root), str(root / "tests"), env.get("PYTHONPATH", "")])
    proc = subprocess.run([sys.executable, str(script), mode], cwd=root, env=env, timeout=timeout,
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def low_res_inputs(B, C, h, w, H, W, dtype=torch.float32, tasks=("semantic", "instance", "depth"), seed=0, **target_kw):
    """Predictions at h x w, targets at H x W."""
    pred, _ = make_inputs(B=B, C=C, H=h, W=w, dtype=dtype, tasks=tasks, seed=seed)
    _, tgt = make_inputs(B=B, C=C, H=H, W=W, tasks=tasks, seed=seed + 1, **target_kw)
    return pred, tgt


def random_class_weight(C, seed=1):
    return torch.rand(C, generator=torch.Generator().manual_seed(seed)) + 0.5


def launch_recorder(calls):
    """Stands in for ``launch``: keeps (kernel, args, kwargs) instead of running the kernel."""
    def launch(kernel):
        class Grid:
            def __getitem__(self, grid):
                return lambda *args, **kwargs: calls.append((kernel, args, kwargs))
        return Grid()
    return launch


class LateLabelChecks:
    """The CUDA path of the label check on CPU tensors: the kernel writes its check into a
    row of ordinary memory instead of pinned memory, and a later call reads it.
    ``synchronize`` stands in for the GPU's: it finishes the writes queued in ``later``
    and counts the waits."""

    def __init__(self, monkeypatch):
        from fastmtl.ops import label_check

        self.waits, self.later = 0, []
        monkeypatch.setattr(label_check, "_zero_copy", lambda like: True)
        monkeypatch.setattr(label_check, "_pinned_rows",
                            lambda n: torch.empty((n, label_check.ROW), dtype=torch.int64))
        monkeypatch.setattr(label_check, "_synchronize", self.synchronize)
        monkeypatch.setattr(label_check, "_free_slots", {})
        monkeypatch.setattr(label_check, "_taken", {})
        monkeypatch.setattr(label_check, "_pending", [])

    def synchronize(self, device):
        self.waits += 1
        for row, values in self.later:
            row[:3] = torch.tensor(values)
        self.later.clear()
