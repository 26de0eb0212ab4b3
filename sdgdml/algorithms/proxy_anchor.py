"""ProxyAnchor (Kim et al., CVPR 2020, Eq. 4) on pytorch-metric-learning: margin ``delta``
(``pa_margin``), scale ``alpha`` (``pa_alpha``); defaults are the paper's (0.1, 32)."""
from __future__ import annotations

from ..search_space import log_uniform, uniform
from .pml_proxy import PMLProxyLoss
from .registry import register_loss


@register_loss("ProxyAnchor")
class ProxyAnchor(PMLProxyLoss):
    @staticmethod
    def declare_hparams(hp, small):
        hp("pa_margin", 0.1, uniform(0.0, 0.3), help="margin delta (Proxy Anchor Eq. 4)")
        hp("pa_alpha", 32.0, log_uniform(8.0, 64.0),
           help="scaling factor alpha (Proxy Anchor Eq. 4)")

    def make(self, num_classes, embed_dim, hparams):
        from pytorch_metric_learning import losses as pml_losses  # scipy.stats: import on use

        return pml_losses.ProxyAnchorLoss(num_classes, embed_dim, margin=hparams["pa_margin"],
                                          alpha=hparams["pa_alpha"])
