"""ProxyNCA (Movshovitz-Attias et al., ICCV 2017) on pytorch-metric-learning: softmax over
-scale * ||z - p||^2 of normalised z, p; scale 9 is ProxyNCA++'s temperature 1/9 (Teh et al.,
ECCV 2020)."""
from __future__ import annotations

from ..search_space import log_uniform
from .pml_proxy import PMLProxyLoss
from .registry import register_loss


@register_loss("ProxyNCA")
class ProxyNCA(PMLProxyLoss):
    @staticmethod
    def declare_hparams(hp, small):
        hp("pnca_scale", 9.0, log_uniform(1.0, 10 ** 1.5),
           help="scale of the proxy-distance softmax (ProxyNCA, pml's softmax_scale)")

    def make(self, num_classes, embed_dim, hparams):
        from pytorch_metric_learning import losses as pml_losses  # scipy.stats: import on use

        return pml_losses.ProxyNCALoss(num_classes, embed_dim,
                                       softmax_scale=hparams["pnca_scale"])
