"""Triton kernels of fastmtl (installed as ``fastmtl.kernels``).

``normaliser_kernel`` and ``prepare_kernel`` read the targets and produce the
per-task normalisers and gradient scales on the device; ``fused_loss_kernel``
makes the one pass over the predictions (losses, partial sums, gradients);
``partial_sums_kernel`` (many programs) and ``finalize_kernel`` (one) reduce the
partial sums in a fixed order into per-task means, the weighted
total and its derivative with respect to the log-variances or weights;
``output_grad_kernel`` applies the incoming gradient.
The ops that launch them are in ``fastmtl.ops`` (``fused``, ``upsample``).
"""
from .fused_loss import (finalize_kernel, fused_loss_kernel, output_grad_kernel,
                         partial_sums_kernel)
from .normalisers import STATE_ROWS, normaliser_kernel, prepare_kernel

SLOTS = 4

__all__ = ["SLOTS", "STATE_ROWS", "finalize_kernel", "fused_loss_kernel",
           "normaliser_kernel", "output_grad_kernel", "partial_sums_kernel", "prepare_kernel"]
