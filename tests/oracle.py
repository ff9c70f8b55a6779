"""An independent statement of the loss contract, from PyTorch's own ops.

Written directly from DESIGN.md with F.cross_entropy and F.l1_loss on the
selected valid pixels, so it shares no code with fastmtl.reference.
"""
import torch
import torch.nn.functional as F

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
