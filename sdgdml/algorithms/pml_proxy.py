"""Adapter from pytorch-metric-learning's proxy losses to :class:`MetricLoss`: a uniform
``proxies()`` whether pml stores proxies as rows (ProxyAnchor, ProxyNCA) or as columns
``W`` (d, C) / ``fc`` (d, C*K) (the softmax family). A new pml proxy loss is one file: subclass
:class:`PMLProxyLoss`, set ``PROXY_ATTR`` / ``PROXIES_AS_COLUMNS``, write ``make`` and
``declare_hparams``, decorate with ``@register_loss``."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .base import MetricLoss


class PMLProxyLoss(MetricLoss):
    """A pml proxy loss. Subclasses set ``PROXY_ATTR``, ``PROXIES_AS_COLUMNS`` and ``make``."""

    HAS_PROXIES = True
    PROXY_ATTR = "proxies"
    PROXIES_AS_COLUMNS = False

    def __init__(self, num_classes: int, embed_dim: int, hparams: dict):
        super().__init__()
        self.num_classes = num_classes
        self.pml = self.make(num_classes, embed_dim, hparams)

    def make(self, num_classes: int, embed_dim: int, hparams: dict):
        raise NotImplementedError

    def forward(self, z, y):
        return self.pml(z, y)

    def raw_proxies(self) -> torch.Tensor:
        w = getattr(self.pml, self.PROXY_ATTR)
        return w.T if self.PROXIES_AS_COLUMNS else w

    def proxy_labels(self) -> torch.Tensor:
        n = self.raw_proxies().shape[0]
        return torch.arange(n, device=self.raw_proxies().device) * self.num_classes // n

    def proxies(self):
        return F.normalize(self.raw_proxies(), dim=1), self.proxy_labels()
