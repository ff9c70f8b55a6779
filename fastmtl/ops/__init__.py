"""Custom ops over the Triton kernels of ``kernels/`` (installed as ``fastmtl.kernels``).

One module per op: ``fused`` (the loss at the predictions' resolution) and
``upsample`` (the loss from low-resolution heads, interpolated inside the
kernel); ``common`` holds what both need to describe and launch a problem;
``label_check`` reads the fused op's label check back without a host wait.
Importing this package needs triton; ``backend="reference"`` never imports it.
"""
import importlib.util
import sys
from pathlib import Path

try:
    import triton  # noqa: F401
    from torch.library import triton_op  # noqa: F401
except ImportError as exc:  # pragma: no cover - depends on the installation
    raise ImportError(
        "backend='triton' needs the triton package (pip install triton) and torch >= 2.6; "
        "use backend='reference' without it") from exc


def _register_source_kernels() -> None:
    """Make ``kernels/`` importable as ``fastmtl.kernels`` in a checkout that is not installed."""
    if importlib.util.find_spec("fastmtl.kernels") is not None:
        return
    root = Path(__file__).resolve().parents[2] / "kernels"
    spec = importlib.util.spec_from_file_location(
        "fastmtl.kernels", root / "__init__.py", submodule_search_locations=[str(root)])
    module = importlib.util.module_from_spec(spec)
    sys.modules["fastmtl.kernels"] = module
    spec.loader.exec_module(module)
    sys.modules["fastmtl"].kernels = module


_register_source_kernels()

from fastmtl.ops.fused import fused_multitask_loss  # noqa: E402
from fastmtl.ops.label_check import raise_pending_label_errors  # noqa: E402
from fastmtl.ops.upsample import upsampled_multitask_loss  # noqa: E402

__all__ = ["fused_multitask_loss", "raise_pending_label_errors", "upsampled_multitask_loss"]
