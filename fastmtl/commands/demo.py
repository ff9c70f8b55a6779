"""``fastmtl demo``: a few seconds' look at the loss, learning the log-variances of three
tasks of fixed difficulty (no network, no data)."""
import torch

import fastmtl


def main(steps: int = 300) -> None:
    torch.manual_seed(0)
    B, C, H, W = 2, 19, 64, 128
    predictions = {
        "semantic": torch.randn(B, C, H, W),
        "instance": torch.randn(B, 2, H, W) * 4,
        "depth": torch.rand(B, 1, H, W) * 10,
    }
    targets = {
        "semantic": torch.randint(0, C, (B, H, W)),
        "instance": torch.randn(B, 2, H, W) * 4,
        "instance_mask": torch.rand(B, H, W) < 0.3,
        "depth": torch.rand(B, 1, H, W) * 10,
    }
    criterion = fastmtl.MultiTaskLoss()
    optimizer = torch.optim.SGD(criterion.parameters(), lr=0.1)
    for step in range(steps + 1):
        out = criterion(predictions, targets)
        optimizer.zero_grad()
        out.total.backward()
        optimizer.step()
        if step % 100 == 0:
            sig = criterion.weighting.sigmas()
            print(f"step {step:4d} total {out.total.item():7.4f}  "
                  + "  ".join(f"{k} L={out.losses[k].item():.3f} sigma={sig[k]:.3f}" for k in sig))
    print("At the optimum c_k exp(-s_k) = 1 / (2 L_k): harder tasks get smaller weights.")
    for k, w in criterion.weighting.effective_weights().items():
        print(f"  {k:8s} weight {w:.4f}   1/(2L) {1 / (2 * out.losses[k].item()):.4f}")


def register(subparsers) -> None:
    p = subparsers.add_parser("demo", help="learn the log-variances of three fixed tasks (seconds)")
    p.add_argument("--steps", type=int, default=300, help="optimiser steps (default %(default)s)")
    p.set_defaults(func=lambda args: main(args.steps))


if __name__ == "__main__":
    main()
