"""SoftTriple (Qian et al., ICCV 2019, Eq. 8-10) on pytorch-metric-learning: K centres per
class (``st_centers``), lambda, gamma and margin at the paper's values."""
from __future__ import annotations

from ..search_space import choice, log_uniform, uniform
from .pml_proxy import PMLProxyLoss
from .registry import register_loss


@register_loss("SoftTriple")
class SoftTriple(PMLProxyLoss):
    """K centres per class: pml's column j belongs to class j // K."""

    PROXY_ATTR, PROXIES_AS_COLUMNS = "fc", True

    @staticmethod
    def declare_hparams(hp, small):
        hp("st_centers", 10, choice(2, 5, 10), help="centres per class K (SoftTriple)")
        hp("st_lambda", 20.0, uniform(5, 30),
           help="scale lambda of the class similarities (SoftTriple Eq. 8-10)")
        hp("st_gamma", 0.1, log_uniform(0.01, 10 ** -0.5),
           help="temperature gamma over a class's centres (SoftTriple Eq. 8-10)")
        hp("st_margin", 0.01, uniform(0.0, 0.1), help="margin delta (SoftTriple Eq. 8-10)")

    def make(self, num_classes, embed_dim, hparams):
        from pytorch_metric_learning import losses as pml_losses  # scipy.stats: import on use

        return pml_losses.SoftTripleLoss(
            num_classes, embed_dim, centers_per_class=hparams["st_centers"],
            la=hparams["st_lambda"], gamma=hparams["st_gamma"], margin=hparams["st_margin"])
