"""What a result was measured on: device, driver, versions, commit, date.

``host_record()`` needs only the standard library (the device check records the
machine with it even when torch cannot be imported); ``environment(device)``
adds what torch reports about the device and is stored with every result.
"""
from __future__ import annotations

import datetime
import hashlib
import importlib.metadata
import importlib.util
import os
import platform
import re
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
# Packages whose versions a result records (distribution names); None when not installed.
PACKAGES = ("torch", "triton", "numpy", "matplotlib", "pytest", "pytest-benchmark", "scikit-learn",
            "tqdm", "liger-kernel", "cityscapesScripts")
SOURCE_DIRS = ("fastmtl", "kernels", "benchmarks")


def command(cmd: list[str], timeout: float = 30) -> str | None:
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=True)
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def version(package: str) -> str | None:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def commit() -> str | None:
    """``FASTMTL_COMMIT`` if set (a copied checkout has no .git), else ``git describe``."""
    return os.environ.get("FASTMTL_COMMIT") or command(
        ["git", "-C", str(REPO), "describe", "--always", "--dirty"])


def source_digest() -> str:
    """sha256 over the paths and bytes of the .py files of fastmtl/, kernels/ and benchmarks/:
    names the code that ran even where no git metadata came along."""
    h = hashlib.sha256()
    for top in SOURCE_DIRS:
        for path in sorted((REPO / top).rglob("*.py")):
            h.update(str(path.relative_to(REPO)).encode() + b"\0" + path.read_bytes() + b"\0")
    return h.hexdigest()[:16]


def torch_cuda_build() -> str | None:
    """The CUDA version torch was built with, read from torch/version.py without importing torch."""
    spec = importlib.util.find_spec("torch")
    if spec is None or not spec.submodule_search_locations:
        return None
    try:
        text = (Path(spec.submodule_search_locations[0]) / "version.py").read_text()
    except OSError:
        return None
    match = re.search(r"^cuda\s*(?::\s*[^=]+)?=\s*['\"]([^'\"]+)['\"]", text, re.M)
    return match.group(1) if match else None


def gpus() -> list[dict]:
    """nvidia-smi's view of the GPUs (empty without nvidia-smi)."""
    out = command(["nvidia-smi", "--query-gpu=name,driver_version,memory.total",
                   "--format=csv,noheader,nounits"])
    found = []
    for line in (out or "").splitlines():
        parts = [p.strip() for p in line.split(",")]
        if len(parts) == 3:
            found.append({"name": parts[0], "driver": parts[1], "memory_mib": parts[2]})
    return found


def driver_cuda() -> str | None:
    """The CUDA version of the driver, from nvidia-smi's banner."""
    match = re.search(r"CUDA Version:\s*([\d.]+)", command(["nvidia-smi"]) or "")
    return match.group(1) if match else None


def host_record() -> dict:
    """Machine, GPUs, driver, package versions, commit and date; standard library only."""
    return {
        "date": datetime.date.today().isoformat(),
        "time_utc": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "commit": commit(),
        "source_digest": source_digest(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu": cpu_name(),
        "cpu_count": os.cpu_count(),
        "gpus": gpus(),
        "driver_cuda": driver_cuda(),
        "torch_cuda_build": torch_cuda_build(),
        "packages": {name: version(name) for name in PACKAGES},
        "env": {k: os.environ[k] for k in ("TRITON_INTERPRET", "CUDA_VISIBLE_DEVICES")
                if k in os.environ},
    }


def environment(device) -> dict:
    """Versions and device description recorded with every benchmark result."""
    import torch

    import fastmtl

    versions = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "triton": version("triton"),
        "liger_kernel": version("liger-kernel"),
        "fastmtl": fastmtl.__version__,
        "fastmtl_git": commit(),
        "platform": platform.platform(),
    }
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        driver = command(["nvidia-smi", f"--id={device.index or 0}",
                          "--query-gpu=driver_version", "--format=csv,noheader"])
        versions.update({"cuda_runtime": torch.version.cuda,
                         "driver": driver or "unknown (nvidia-smi unavailable)"})
        dev = {"type": "cuda", "name": props.name, "slug": slug(props.name),
               "memory_bytes": props.total_memory, "multiprocessors": props.multi_processor_count,
               "capability": f"{props.major}.{props.minor}"}
    else:
        name = cpu_name()
        versions["driver"] = None
        dev = {"type": "cpu", "name": name, "slug": "cpu-" + slug(name),
               "cores": os.cpu_count(), "torch_threads": torch.get_num_threads()}
    return {"versions": versions, "device": dev}
