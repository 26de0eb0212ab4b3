"""The proxy baselines and one pair-based loss, on pytorch-metric-learning's implementations.

Each class adapts a pml loss to :class:`MetricLoss`: hyperparameters from the hparams registry
and a uniform ``proxies()`` (pml stores proxies as rows for ProxyAnchor / ProxyNCA and as
columns ``W`` (d, C) or ``fc`` (d, C*K) for the softmax family).

- ProxyAnchor (Kim et al., CVPR 2020, Eq. 4): margin ``delta``, scale ``alpha``.
- ProxyNCA (Movshovitz-Attias et al., ICCV 2017): softmax over -scale * ||z - p||^2 of
  normalised z, p; scale 9 is ProxyNCA++'s temperature 1/9 (Teh et al., ECCV 2020).
- NormSoftmax (Zhai & Wu, BMVC 2019): cross-entropy over cos / temperature.
- SoftTriple (Qian et al., ICCV 2019, Eq. 8-10): K centres per class.
- ArcFace (Deng et al., CVPR 2019) / CosFace (Wang et al., CVPR 2018): additive angular /
  cosine margins with scale s.
- MultiSimilarity (Wang et al., CVPR 2019), with its pair miner; pair-based, no proxies.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from pytorch_metric_learning import losses as pml_losses
from pytorch_metric_learning import miners as pml_miners

from .base import MetricLoss


class PMLProxyLoss(MetricLoss):
    """A pml proxy loss. Subclasses set ``PROXY_ATTR``, ``PROXIES_AS_COLUMNS`` and ``make``."""

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


class ProxyAnchor(PMLProxyLoss):
    def make(self, num_classes, embed_dim, hparams):
        return pml_losses.ProxyAnchorLoss(num_classes, embed_dim, margin=hparams["pa_margin"],
                                          alpha=hparams["pa_alpha"])


class ProxyNCA(PMLProxyLoss):
    def make(self, num_classes, embed_dim, hparams):
        return pml_losses.ProxyNCALoss(num_classes, embed_dim,
                                       softmax_scale=hparams["pnca_scale"])


class NormSoftmax(PMLProxyLoss):
    PROXY_ATTR, PROXIES_AS_COLUMNS = "W", True

    def make(self, num_classes, embed_dim, hparams):
        return pml_losses.NormalizedSoftmaxLoss(num_classes, embed_dim,
                                                temperature=hparams["nsm_temperature"])


class SoftTriple(PMLProxyLoss):
    """K centres per class: pml's column j belongs to class j // K."""

    PROXY_ATTR, PROXIES_AS_COLUMNS = "fc", True

    def make(self, num_classes, embed_dim, hparams):
        return pml_losses.SoftTripleLoss(
            num_classes, embed_dim, centers_per_class=hparams["st_centers"],
            la=hparams["st_lambda"], gamma=hparams["st_gamma"], margin=hparams["st_margin"])


class ArcFace(PMLProxyLoss):
    PROXY_ATTR, PROXIES_AS_COLUMNS = "W", True

    def make(self, num_classes, embed_dim, hparams):
        return pml_losses.ArcFaceLoss(num_classes, embed_dim, margin=hparams["arc_margin_deg"],
                                      scale=hparams["arc_scale"])


class CosFace(PMLProxyLoss):
    PROXY_ATTR, PROXIES_AS_COLUMNS = "W", True

    def make(self, num_classes, embed_dim, hparams):
        return pml_losses.CosFaceLoss(num_classes, embed_dim, margin=hparams["cos_margin"],
                                      scale=hparams["cos_scale"])


class MultiSimilarity(MetricLoss):
    """Pair-based: needs class-balanced batches (``sampler = m_per_class``); no proxies."""

    def __init__(self, num_classes: int, embed_dim: int, hparams: dict):
        super().__init__()
        self.pml = pml_losses.MultiSimilarityLoss(alpha=hparams["ms_alpha"],
                                                  beta=hparams["ms_beta"], base=hparams["ms_base"])
        self.miner = pml_miners.MultiSimilarityMiner(epsilon=hparams["ms_epsilon"])

    def forward(self, z, y):
        return self.pml(z, y, self.miner(z, y))


BASE_LOSSES: dict[str, type[MetricLoss]] = {
    "ProxyAnchor": ProxyAnchor,
    "ProxyNCA": ProxyNCA,
    "NormSoftmax": NormSoftmax,
    "SoftTriple": SoftTriple,
    "ArcFace": ArcFace,
    "CosFace": CosFace,
    "MultiSimilarity": MultiSimilarity,
}
