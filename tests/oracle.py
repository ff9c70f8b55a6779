"""An independent statement of the loss contract, from PyTorch's own ops, and the
checks that hold the kernels to it.

Written directly from the contract with F.cross_entropy, F.l1_loss and
F.interpolate on the selected valid pixels, differentiated by autograd, so it
shares no code with fastmtl.reference or the kernels. ``oracle_losses`` and
``oracle_total`` state the contract; ``oracle`` also takes out-of-range labels as
ignored (as the kernels do with ``check_labels=False``); ``run_both`` and
``run_both_upsampled`` run a kernel and the oracle side by side and
``assert_match`` compares them at the tolerance of the dtype.
"""
import torch
import torch.nn.functional as F

import fastmtl
from helpers import leaf_copies

ALL = ("semantic", "instance", "depth")
KENDALL = {"semantic": (1.0, 0.5), "instance": (0.5, 0.5), "depth": (0.5, 0.5)}

FACTORS = {"semantic": 1.0, "instance": 0.5, "depth": 0.5}


def oracle_losses(pred, tgt, ignore_index=255, class_weight=None):
    """Per-task losses, or None for a task with no valid pixel."""
    out = {}
    if "semantic" in pred:
        x = pred["semantic"]
        acc = torch.float64 if x.dtype == torch.float64 else torch.float32
        t = tgt["semantic"].long()
        valid = t != ignore_index
        w = None if class_weight is None else class_weight.to(acc)
        denom = valid.sum() if w is None else w[t[valid]].sum()
        out["semantic"] = (F.cross_entropy(x.to(acc), torch.where(valid, t, -100), weight=w,
                                           ignore_index=-100) if denom > 0 else None)
    if "instance" in pred:
        o, g, m = pred["instance"], tgt["instance"], tgt["instance_mask"]
        acc = torch.float64 if o.dtype == torch.float64 else torch.float32
        sel_o = o.to(acc).permute(0, 2, 3, 1)[m]
        sel_g = g.to(acc).permute(0, 2, 3, 1)[m]
        out["instance"] = (F.l1_loss(sel_o, sel_g, reduction="sum") / m.sum()
                           if m.any() else None)
    if "depth" in pred:
        d, z = pred["depth"], tgt["depth"]
        acc = torch.float64 if d.dtype == torch.float64 else torch.float32
        z = z.reshape(d.shape).to(acc)
        valid = torch.isfinite(z) & (z > 0)
        out["depth"] = F.l1_loss(d.to(acc)[valid], z[valid]) if valid.any() else None
    return out


def oracle_total(losses, log_vars=None, weights=None):
    """Kendall et al. eq. 7/10 with s = log sigma^2, or a fixed weighted sum."""
    total = 0.0
    for k, (name, loss) in enumerate(losses.items()):
        if loss is None:
            continue
        if log_vars is not None:
            s = log_vars[k]
            total = total + FACTORS[name] * torch.exp(-s) * loss + s / 2
        else:
            total = total + (1.0 if weights is None else weights[k]) * loss
    return total


def oracle(pred, tgt, log_vars=None, weights=None, ignore_index=255, class_weight=None):
    """(total, {task: L_k}) from PyTorch ops; out-of-range labels count as ignored."""
    tasks = [t for t in ALL if t in pred]
    acc = lambda v: v.to(torch.float64 if v.dtype == torch.float64 else torch.float32)  # noqa: E731
    losses, present = {}, {}
    if "semantic" in pred:
        x = acc(pred["semantic"])
        t = tgt["semantic"].long()
        valid = (t != ignore_index) & (t >= 0) & (t < x.shape[1])
        present["semantic"] = bool(valid.any())
        w = None if class_weight is None else class_weight.to(x.dtype)
        losses["semantic"] = (F.cross_entropy(x, torch.where(valid, t, -100), weight=w,
                                              ignore_index=-100)
                              if present["semantic"] else x.sum() * 0)
    if "instance" in pred:
        o, g, m = acc(pred["instance"]), tgt["instance"], tgt["instance_mask"]
        present["instance"] = bool(m.any())
        pixels = lambda v: v.permute(0, 2, 3, 1)[m]  # noqa: E731  (pixels in the mask, 2 channels)
        losses["instance"] = (F.l1_loss(pixels(o), pixels(g.to(o.dtype)), reduction="sum") / m.sum()
                              if present["instance"] else o.sum() * 0)
    if "depth" in pred:
        d = acc(pred["depth"])
        z = tgt["depth"].reshape(d.shape).to(d.dtype)
        valid = torch.isfinite(z) & (z > 0)
        present["depth"] = bool(valid.any())
        losses["depth"] = F.l1_loss(d[valid], z[valid]) if present["depth"] else d.sum() * 0
    total = 0.0
    for k, name in enumerate(tasks):
        if not present[name]:
            continue
        if log_vars is not None:
            c, r = KENDALL[name]
            # exp(-s) in the loss's precision, as the contract (and both backends) compute it:
            # float32 log_vars with float64 predictions are not rounded through float32 here.
            s = log_vars[k].to(losses[name].dtype)
            total = total + c * torch.exp(-s) * losses[name] + r * s
        else:
            # multitask_loss holds fixed weights as float32
            w = 1.0 if weights is None else torch.tensor(weights, dtype=torch.float32)[k].item()
            total = total + w * losses[name]
    return total, losses


def run_both(pred, tgt, *, log_vars=None, weights=None, class_weight=None, ignore_index=255,
             backward=lambda out: out[0].backward(), scored=lambda p: p, **kwargs):
    """Kernel and oracle on separate leaf copies; returns both (total, losses, grads).

    ``scored(predictions)`` is what the oracle scores (the predictions themselves, or
    their upsampled copies); ``kwargs`` go to the kernel's ``multitask_loss``.
    """
    results = []
    for use_kernel in (True, False):
        p = leaf_copies(pred)
        lv = None if log_vars is None else log_vars.detach().clone().requires_grad_(True)
        if use_kernel:
            out = fastmtl.multitask_loss(p, tgt, log_vars=lv, weights=weights, backend="triton",
                                         class_weight=class_weight, ignore_index=ignore_index,
                                         **kwargs)
            total, losses = out.total, out.losses
        else:
            total, losses = oracle(scored(dict(p)), tgt, lv, weights, ignore_index, class_weight)
            if not torch.is_tensor(total):
                total = torch.zeros((), requires_grad=True) + total
        backward((total, losses))
        grads = {k: v.grad for k, v in p.items()}
        if lv is not None:
            grads["log_vars"] = lv.grad
        results.append((total.detach(), {k: v.detach() for k, v in losses.items()}, grads))
    return results


def assert_match(kernel, expected, dtype=torch.float32):
    (total, losses, grads), (r_total, r_losses, r_grads) = kernel, expected
    tol = {torch.float64: dict(rtol=1e-9, atol=1e-12), torch.float32: dict(rtol=2e-5, atol=1e-6),
           torch.bfloat16: dict(rtol=1e-4, atol=1e-5), torch.float16: dict(rtol=1e-4, atol=1e-5)}
    torch.testing.assert_close(total, r_total.to(total.dtype), **tol[dtype])
    assert losses.keys() == r_losses.keys()
    for k in losses:
        torch.testing.assert_close(losses[k], r_losses[k].to(losses[k].dtype), **tol[dtype])
    for k, g in grads.items():
        r = r_grads[k]
        if r is None:
            assert g is None or not g.any(), k
            continue
        assert g is not None and g.dtype == r.dtype if k == "log_vars" else g is not None, k
        assert torch.isfinite(g).all(), k
        if g.dtype in (torch.bfloat16, torch.float16):
            # Stored in 8 (11) mantissa bits: compare to the fp32 oracle rounded once.
            scale = r.float().abs().max().item() or 1.0
            torch.testing.assert_close(g.float(), r.float(), rtol=1e-2, atol=1e-2 * scale)
        else:
            key = g.dtype if k != "log_vars" else dtype
            torch.testing.assert_close(g, r.to(g.dtype), **tol[key])


def run_both_upsampled(pred, tgt, *, align_corners=False, **kwargs):
    """(total, losses, grads) of the fused kernel and of F.interpolate + the oracle.

    Half-precision predictions are interpolated in float32 for the oracle: the kernel
    never rounds the interpolated values to the prediction dtype.
    """
    key = "semantic" if "semantic" in pred else "instance_mask" if "instance" in pred else "depth"
    size = tuple(tgt[key].shape[-2:])
    acc = lambda v: v if v.dtype == torch.float64 else v.float()  # noqa: E731
    upsampled = lambda p: {k: F.interpolate(acc(v), size=size, mode="bilinear",  # noqa: E731
                                            align_corners=align_corners) for k, v in p.items()}
    return run_both(pred, tgt, upsample="bilinear", align_corners=align_corners,
                    scored=upsampled, **kwargs)


def check_upsampled(pred, tgt, dtype=torch.float32, **kwargs):
    kernel, expected = run_both_upsampled(pred, tgt, **kwargs)
    for k, g in kernel[2].items():
        if k in pred:  # gradients come back at low resolution, in the prediction dtype
            assert g.shape == pred[k].shape and g.dtype == pred[k].dtype, k
    assert_match(kernel, expected, dtype)
    return kernel
