"""Adapter from pytorch-metric-learning's proxy losses to :class:`MetricLoss`: a uniform
``proxies()`` whether pml stores proxies as rows (ProxyAnchor, ProxyNCA) or as columns
``W`` (d, C) / ``fc`` (d, C*K) (the softmax family). A new pml proxy loss is one file: subclass
:class:`PMLProxyLoss`, set ``PROXY_ATTR`` / ``PROXIES_AS_COLUMNS``, write ``make`` and
``declare_hparams``, decorate with ``@register_loss``."""
from __future__ import annotations

import torch

from .base import MetricLoss
from .tensor_ops import unit_rows


class PMLProxyLoss(MetricLoss):
    """A pml proxy loss. Subclasses set ``PROXY_ATTR``, ``PROXIES_AS_COLUMNS`` and ``make``."""

    HAS_PROXIES = True
    PROXY_ATTR = "proxies"
    PROXIES_AS_COLUMNS = False

    def __init__(self, num_classes: int, embed_dim: int, hparams: dict):
        super().__init__()
        self.num_classes = num_classes
        self.pml = self.make(num_classes, embed_dim, hparams)
        n = self.raw_proxies().shape[0]         # proxy i belongs to class i * C // n
        self.register_buffer("_proxy_labels", torch.arange(n) * num_classes // n,
                             persistent=False)  # made once: no operators per step

    def make(self, num_classes: int, embed_dim: int, hparams: dict):
        raise NotImplementedError

    def forward(self, z, y):
        return self.pml(z, y)

    def raw_proxies(self) -> torch.Tensor:
        w = getattr(self.pml, self.PROXY_ATTR)
        return w.T if self.PROXIES_AS_COLUMNS else w

    def proxy_labels(self) -> torch.Tensor:
        return self._proxy_labels

    def proxies(self):
        return unit_rows(self.raw_proxies()), self.proxy_labels()
