"""The implementations compared, as a registry: adding one is one ``register`` call.

An implementation builds, for one problem on one device, a function
``loss(predictions, targets, log_vars) -> total`` (a 0-d tensor): the full
uncertainty-weighted three-task loss. The benchmark then times it alone under
``torch.no_grad`` ("fwd") or followed by ``torch.autograd.grad`` of the total
with respect to the three predictions and ``log_vars`` ("fwd+bwd"), so every
implementation does the same work.

``unavailable(device)`` returns why it cannot run there (missing package, no
CUDA), or None. An implementation that needs other inputs than the common
full-resolution ones (e.g. a fused-upsampling loss on low-resolution logits)
passes its own ``inputs`` factory with the signature of
``benchmarks.problem.make_inputs``.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass, replace
from typing import Callable

import torch
import torch.nn.functional as F

import fastmtl
from fastmtl import reference
from fastmtl.weighting import combine, uncertainty_factors

from benchmarks.problem import IGNORE_INDEX, make_inputs

LossFn = Callable[[dict, dict, torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class Implementation:
    name: str
    description: str
    build: Callable[..., LossFn]  # build(check_labels=bool) -> loss function
    unavailable: Callable[[torch.device], str | None] = lambda device: None
    slow_on_cpu: bool = False  # left out of CPU runs unless named explicitly
    inputs: Callable = make_inputs


IMPLEMENTATIONS: dict[str, Implementation] = {}


def register(impl: Implementation) -> Implementation:
    if impl.name in IMPLEMENTATIONS:
        raise ValueError(f"implementation {impl.name!r} is registered twice")
    IMPLEMENTATIONS[impl.name] = impl
    return impl


def _fastmtl(backend: str, check_labels: bool) -> LossFn:
    def loss(predictions, targets, log_vars):
        return fastmtl.multitask_loss(predictions, targets, log_vars, ignore_index=IGNORE_INDEX,
                                      backend=backend, check_labels=check_labels).total
    return loss


def _needs_cuda(device: torch.device) -> str | None:
    return None if device.type == "cuda" else "needs CUDA"


def _missing(module: str, hint: str) -> str | None:
    try:
        importlib.import_module(module)
    except Exception as exc:  # ImportError, or a broken install
        return f"{module} not importable ({type(exc).__name__}: {exc}); {hint}"
    return None


def _compiled(mode: str):
    def build(check_labels: bool = False) -> LossFn:
        # A fresh cache per case: shapes never share (or exhaust) compiled graphs.
        torch._dynamo.reset()
        return torch.compile(_fastmtl("reference", check_labels), mode=mode, dynamic=False)
    return build


def _liger(check_labels: bool = False) -> LossFn:
    """Liger-Kernel's cross entropy on (N, C) rows, eager L1s, the same weighting."""
    from liger_kernel.transformers.functional import liger_cross_entropy

    factors, regulariser = uncertainty_factors(fastmtl.TASK_ORDER, "kendall")

    def loss(predictions, targets, log_vars):
        x, t = predictions["semantic"], targets["semantic"]
        rows = x.permute(0, 2, 3, 1).reshape(-1, x.shape[1])  # the copy Liger needs
        labels = t.reshape(-1).long()
        sem = liger_cross_entropy(rows, labels, ignore_index=IGNORE_INDEX)
        n_sem = (labels != IGNORE_INDEX).sum()
        inst, n_inst = reference.instance_loss(predictions["instance"], targets["instance"],
                                               targets["instance_mask"])
        dep, n_dep = reference.depth_loss(predictions["depth"], targets["depth"])
        losses = torch.stack([sem.float(), inst.float(), dep.float()])
        present = torch.stack([n_sem > 0, n_inst > 0, n_dep > 0])
        return combine(losses, present, log_vars=log_vars, factors=factors, regulariser=regulariser)
    return loss


def _triton_unavailable(device: torch.device) -> str | None:
    if device.type != "cuda":
        return "needs CUDA (the Triton interpreter is far too slow to time)"
    return _missing("fastmtl.ops", "the fused Triton backend is not built")


def _liger_unavailable(device: torch.device) -> str | None:
    return _missing("liger_kernel.transformers.functional", "pip install liger-kernel") \
        or _needs_cuda(device)


register(Implementation(
    "reference", "eager PyTorch reference (backend='reference')",
    lambda check_labels=False: _fastmtl("reference", check_labels)))
register(Implementation(
    "compile", "torch.compile of the reference, mode 'default'",
    _compiled("default"), slow_on_cpu=True))
register(Implementation(
    "compile-max-autotune", "torch.compile of the reference, mode 'max-autotune-no-cudagraphs'",
    _compiled("max-autotune-no-cudagraphs"), slow_on_cpu=True))
register(Implementation(
    "liger", "Liger-Kernel cross entropy over permuted (N, C) rows + eager L1s",
    _liger, _liger_unavailable))
register(Implementation(
    "triton", "fastmtl fused Triton kernel (backend='triton')",
    lambda check_labels=False: _fastmtl("triton", check_labels), _triton_unavailable))
register(Implementation(
    "triton-check-labels", "the fused Triton kernel with the default label check "
    "(check_labels=True: counted on the device, read back by a later call)",
    lambda check_labels=True: _fastmtl("triton", True), _triton_unavailable))


# --- heads at 1/8 resolution, bilinear upsampling to the targets (docs/upsample.md) ---
# Rows are labelled with the targets' size. Their GB/s and % copy use the full-resolution
# cost model of the other rows (the loss is taken on the same H x W pixels); the bytes these
# implementations must move are far fewer (low-resolution predictions and gradients).
UPSAMPLE_FACTOR = 8


def make_low_res_inputs(problem, device: torch.device, seed: int = 0):
    """``make_inputs`` with the predictions at 1/UPSAMPLE_FACTOR of the targets' H x W."""
    low = replace(problem, height=-(-problem.height // UPSAMPLE_FACTOR),
                  width=-(-problem.width // UPSAMPLE_FACTOR))
    predictions, _, log_vars = make_inputs(low, device, seed)
    _, targets, _ = make_inputs(problem, device, seed)
    return predictions, targets, log_vars


def _upsampled(backend: str, fused: bool):
    def build(check_labels: bool = False) -> LossFn:
        def loss(predictions, targets, log_vars):
            if fused:
                return fastmtl.multitask_loss(predictions, targets, log_vars, backend=backend,
                                              ignore_index=IGNORE_INDEX, check_labels=check_labels,
                                              upsample="bilinear").total
            size = targets["semantic"].shape[-2:]
            full = {k: F.interpolate(v, size=size, mode="bilinear") for k, v in predictions.items()}
            return fastmtl.multitask_loss(full, targets, log_vars, backend=backend,
                                          ignore_index=IGNORE_INDEX,
                                          check_labels=check_labels).total
        return loss
    return build


register(Implementation(
    "upsample-fused", "1/8-resolution heads, bilinear upsampling inside the Triton kernel "
    "(upsample='bilinear')", _upsampled("triton", True), _triton_unavailable,
    inputs=make_low_res_inputs))
register(Implementation(
    "upsample-interp-triton", "1/8-resolution heads, F.interpolate then the fused Triton kernel",
    _upsampled("triton", False), _triton_unavailable, inputs=make_low_res_inputs))
register(Implementation(
    "upsample-interp-eager", "1/8-resolution heads, F.interpolate then the eager reference",
    _upsampled("reference", False), inputs=make_low_res_inputs))


def step(loss: LossFn, predictions: dict, targets: dict, log_vars: torch.Tensor, backward: bool):
    """One timed unit of work; returns its outputs so callers can keep them alive."""
    if not backward:
        with torch.no_grad():
            return loss(predictions, targets, log_vars)
    total = loss(predictions, targets, log_vars)
    wrt = [predictions["semantic"], predictions["instance"], predictions["depth"], log_vars]
    return total, torch.autograd.grad(total, wrt)
