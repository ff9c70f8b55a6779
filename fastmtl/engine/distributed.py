"""Process-group plumbing for torchrun + DistributedDataParallel.

``torchrun --nproc_per_node=N -m fastmtl train ...`` sets RANK, WORLD_SIZE,
LOCAL_RANK, MASTER_ADDR and MASTER_PORT; ``init`` reads them, joins the group
(NCCL on CUDA, gloo on CPU) and picks this process's device. Without those
variables everything runs as a single process and every helper is a no-op.

Loss normalisation across ranks: each rank computes every task loss as a mean
over its own valid pixels (the loss contract, unchanged) and DDP averages the
gradients, so the optimised objective is the mean over ranks of the per-rank
losses. The normalisers (valid pixel counts, summed class weights) are not
all-reduced: that would add a collective before every loss and differs from
the global pixel mean only when ranks hold very different numbers of valid
pixels for a task. A task with no valid pixel on some rank contributes zero
there (loss, gradient and its s_k / 2 term), so its gradient is averaged over
all ranks including those zeros. The log-variances live in the same DDP
module as the network, so their gradients are averaged the same way and they
stay identical on every rank.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass
class Context:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init(device: str = "auto", backend: str | None = None) -> Context:
    """Join the process group described by the torchrun environment variables, if any.

    ``device``: "auto" (CUDA if available, else CPU), "cpu", "cuda" or "cuda:N".
    Under torchrun with CUDA each process uses ``cuda:LOCAL_RANK``.
    """
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    dev = resolve_device(device)
    if dev.type == "cuda" and dev.index is None:
        dev = torch.device("cuda", local_rank if world_size > 1 else torch.cuda.current_device())
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    if world_size > 1 and not dist.is_initialized():
        dist.init_process_group(backend or ("nccl" if dev.type == "cuda" else "gloo"),
                                rank=rank, world_size=world_size)
    return Context(rank, world_size, local_rank, dev)


def resolve_device(device: str) -> torch.device:
    """``torch.device(device)``, refusing one this machine does not have with a clear message."""
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise ValueError(f"unknown device {device!r}; use auto, cpu, cuda or cuda:N") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device {device!r} asked for, but CUDA is not available here "
                             "(torch.cuda.is_available() is False); use --device cpu or auto")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ValueError(f"device {device!r} asked for, but this machine has "
                             f"{torch.cuda.device_count()} CUDA device(s)")
    return dev


def barrier(ctx: Context) -> None:
    if ctx.distributed:
        dist.barrier()


def all_gather_objects(ctx: Context, obj) -> list:
    """Every rank's ``obj`` (a list of one element without a process group)."""
    if not ctx.distributed:
        return [obj]
    out = [None] * ctx.world_size
    dist.all_gather_object(out, obj)
    return out


def broadcast_buffers(ctx: Context, module: torch.nn.Module) -> None:
    """Copy rank 0's buffers (BatchNorm running statistics) to every rank.

    Parameters stay identical under DDP, but each rank updates its running
    statistics from its own batches; evaluating after this uses rank 0's model,
    the one its checkpoint holds.
    """
    if ctx.distributed:
        for buf in module.buffers():
            dist.broadcast(buf, src=0)


def shutdown(ctx: Context) -> None:
    if ctx.distributed and dist.is_initialized():
        dist.destroy_process_group()
