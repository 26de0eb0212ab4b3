"""Tensor helpers shared by the losses and plug-ins."""
from __future__ import annotations

import math

import torch


def nearest_class_proxy(z: torch.Tensor, y: torch.Tensor, proxies: torch.Tensor,
                        proxy_labels: torch.Tensor) -> torch.Tensor:
    """For each sample, the most similar proxy of its own class (B, d) (one proxy per class:
    simply w_y; several per class, e.g. SoftTriple: the closest centre)."""
    sims = z @ proxies.T
    own = proxy_labels.unsqueeze(0) == y.unsqueeze(1)
    idx = sims.masked_fill(~own, -math.inf).argmax(dim=1)
    return proxies[idx]


class _UnitRows(torch.autograd.Function):
    """u = x / max(|x|, 1e-12) by rows, with the backward in closed form (the gradient's part
    orthogonal to u, over |x|): 5 operators where autograd through ``F.normalize`` runs ~10."""

    @staticmethod
    def forward(ctx, x):
        norm = x.norm(dim=1, keepdim=True).clamp_min(1e-12)
        u = x / norm
        ctx.save_for_backward(u, norm)
        return u

    @staticmethod
    def backward(ctx, grad):
        u, norm = ctx.saved_tensors
        return (grad - u * (grad * u).sum(1, keepdim=True)) / norm


def as_dtype(t: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """t in ``dtype``; no operator when it already is (``Tensor.to`` still dispatches one)."""
    return t if t.dtype == dtype else t.to(dtype)


def unit_rows(x: torch.Tensor) -> torch.Tensor:
    """``F.normalize(x, dim=1)`` (the same values) with fewer operators in the backward; a row
    shorter than 1e-12 gets the projected gradient instead of F.normalize's grad / 1e-12."""
    return _UnitRows.apply(x)
