"""CosFace (Wang et al., CVPR 2018) on pytorch-metric-learning: additive cosine margin 0.35
and scale s = 64 (the paper's)."""
from __future__ import annotations

from ..search_space import uniform
from .pml_proxy import PMLProxyLoss
from .registry import register_loss


@register_loss("CosFace")
class CosFace(PMLProxyLoss):
    PROXY_ATTR, PROXIES_AS_COLUMNS = "W", True

    @staticmethod
    def declare_hparams(hp, small):
        hp("cos_margin", 0.35, uniform(0.1, 0.5), help="additive cosine margin m (CosFace)")
        hp("cos_scale", 64.0, uniform(16, 64), help="logit scale s (CosFace)")

    def make(self, num_classes, embed_dim, hparams):
        from pytorch_metric_learning import losses as pml_losses  # scipy.stats: import on use

        return pml_losses.CosFaceLoss(num_classes, embed_dim, margin=hparams["cos_margin"],
                                      scale=hparams["cos_scale"])
