"""ArcFace (Deng et al., CVPR 2019) on pytorch-metric-learning: additive angular margin
(degrees, 28.6 = 0.5 rad, the paper's) and scale s = 64."""
from __future__ import annotations

from ..search_space import uniform
from .pml_proxy import PMLProxyLoss
from .registry import register_loss


@register_loss("ArcFace")
class ArcFace(PMLProxyLoss):
    PROXY_ATTR, PROXIES_AS_COLUMNS = "W", True

    @staticmethod
    def declare_hparams(hp, small):
        hp("arc_margin_deg", 28.6, uniform(10, 40),
           help="additive angular margin m in degrees (ArcFace)")
        hp("arc_scale", 64.0, uniform(16, 64), help="logit scale s (ArcFace)")

    def make(self, num_classes, embed_dim, hparams):
        from pytorch_metric_learning import losses as pml_losses  # scipy.stats: import on use

        return pml_losses.ArcFaceLoss(num_classes, embed_dim, margin=hparams["arc_margin_deg"],
                                      scale=hparams["arc_scale"])
