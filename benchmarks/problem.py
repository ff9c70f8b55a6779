"""What is measured: problem sizes, synthetic inputs and the minimal-bytes cost model."""
from __future__ import annotations

import re
from dataclasses import dataclass

import torch

# Cityscapes-shaped problems, batch 8. ``small_batch`` divides the batch by 4
# for cards whose memory cannot hold the batch-8 peers.
SIZES = {
    "tiny": (8, 128, 256),
    "half": (8, 512, 1024),
    "full": (8, 1024, 2048),
}
SMALL_BATCH_DIVISOR = 4

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
TARGET_DTYPES = {"int64": torch.int64, "int32": torch.int32, "uint8": torch.uint8}
IGNORE_INDEX = 255


def parse_size(spec: str, small_batch: bool = False) -> tuple[str, tuple[int, int, int]]:
    """A named size ("tiny", "half", "full") or "BxHxW" (label "custom") -> (label, (B, H, W))."""
    if spec in SIZES:
        b, h, w = SIZES[spec]
        if small_batch:
            b //= SMALL_BATCH_DIVISOR
        return spec, (b, h, w)
    match = re.fullmatch(r"(\d+)x(\d+)x(\d+)", spec)
    if not match:
        raise ValueError(f"size {spec!r} is neither one of {list(SIZES)} nor BxHxW")
    return "custom", tuple(int(v) for v in match.groups())


@dataclass(frozen=True)
class Problem:
    """One benchmark case: the three-task loss on B x H x W pixels and C classes."""

    size: str
    batch: int
    height: int
    width: int
    classes: int
    dtype: str  # key of DTYPES: predictions and regression targets
    target_dtype: str = "int64"  # key of TARGET_DTYPES: semantic labels

    @property
    def pixels(self) -> int:
        return self.batch * self.height * self.width

    @property
    def shape(self) -> str:
        return f"{self.batch}x{self.height}x{self.width}"

    def minimal_bytes(self, backward: bool) -> int:
        return self.pixels * minimal_bytes_per_pixel(
            self.classes, DTYPES[self.dtype], TARGET_DTYPES[self.target_dtype], backward)


def minimal_bytes_per_pixel(classes: int, dtype: torch.dtype, target_dtype: torch.dtype = torch.int64,
                            backward: bool = True) -> int:
    """Least bytes one pixel must move: each input read once, each gradient written once.

    With e the prediction element size (regression targets share it) and e_t
    the semantic label size, per pixel:

        semantic   C*e (x read)  + e_t (t)             + C*e (dx written)
        instance   2e (o) + 2e (g) + 1 (bool mask)     + 2e (do written)
        depth      e (d) + e (z)                       + e (dd written)

    that is ``(2C + 9) e + e_t + 1`` with gradients and ``(C + 6) e + e_t + 1``
    for the forward alone. At fp32, C=19, int64 labels: 197 B per pixel
    (docs/benchmarks.md, "bytes/px"), 3.3 GB for 8 x 1024 x 2048. The (K,)
    log-variances are negligible and not counted.
    """
    e = torch.empty((), dtype=dtype).element_size()
    e_t = torch.empty((), dtype=target_dtype).element_size()
    grad = 2 if backward else 1
    semantic = grad * classes * e + e_t
    instance = (grad + 1) * 2 * e + 1
    depth = (grad + 1) * e
    return semantic + instance + depth


def gradient_bytes(problem: Problem) -> int:
    """Bytes of the gradient buffers dx, do, dd (plus the tiny ds): the floor for peak memory."""
    e = torch.empty((), dtype=DTYPES[problem.dtype]).element_size()
    return problem.pixels * (problem.classes + 3) * e + 3 * 4


def make_targets(problem: Problem, device: torch.device, gen: torch.Generator) -> dict:
    """Synthetic targets as a data loader gives them: ~10% of labels ``ignore_index``, half the
    pixels inside an instance, ~10% of depth targets missing (0). Regression targets take the
    problem's dtype."""
    B, H, W, C = problem.batch, problem.height, problem.width, problem.classes
    dtype = DTYPES[problem.dtype]

    def rand(*shape, scale=1.0, normal=False):
        f = torch.randn if normal else torch.rand
        return (f(*shape, generator=gen, device=device, dtype=torch.float32) * scale).to(dtype)

    labels = torch.randint(0, C, (B, H, W), generator=gen, device=device)
    labels[torch.rand(B, H, W, generator=gen, device=device) < 0.1] = IGNORE_INDEX
    depth_target = rand(B, 1, H, W, scale=80.0)
    depth_target[torch.rand(B, 1, H, W, generator=gen, device=device) < 0.1] = 0
    return {
        "semantic": labels.to(TARGET_DTYPES[problem.target_dtype]),
        "instance": rand(B, 2, H, W, scale=10.0, normal=True),
        "instance_mask": torch.rand(B, H, W, generator=gen, device=device) < 0.5,
        "depth": depth_target,
    }


def make_inputs(problem: Problem, device: torch.device, seed: int = 0):
    """Synthetic predictions, targets (``make_targets``) and log-variances, as a training step
    would see them. Predictions and ``log_vars`` are leaves that require grad."""
    gen = torch.Generator(device=device).manual_seed(seed)
    B, H, W, C = problem.batch, problem.height, problem.width, problem.classes
    dtype = DTYPES[problem.dtype]
    predictions = {
        "semantic": torch.randn(B, C, H, W, generator=gen, device=device, dtype=dtype),
        "instance": (torch.randn(B, 2, H, W, generator=gen, device=device) * 10.0).to(dtype),
        "depth": (torch.rand(B, 1, H, W, generator=gen, device=device) * 80.0).to(dtype),
    }
    for p in predictions.values():
        p.requires_grad_(True)
    targets = make_targets(problem, device, gen)
    log_vars = torch.zeros(3, device=device, requires_grad=True)
    return predictions, targets, log_vars
