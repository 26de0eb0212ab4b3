"""NormSoftmax (Zhai & Wu, BMVC 2019) on pytorch-metric-learning: cross-entropy over
cos / temperature (0.05, the paper's)."""
from __future__ import annotations

from ..search_space import log_uniform
from .pml_proxy import PMLProxyLoss
from .registry import register_loss


@register_loss("NormSoftmax")
class NormSoftmax(PMLProxyLoss):
    PROXY_ATTR, PROXIES_AS_COLUMNS = "W", True

    @staticmethod
    def declare_hparams(hp, small):
        hp("nsm_temperature", 0.05, log_uniform(0.01, 10 ** -0.5),
           help="softmax temperature of the normalised proxies (NormSoftmax)")

    def make(self, num_classes, embed_dim, hparams):
        from pytorch_metric_learning import losses as pml_losses  # scipy.stats: import on use

        return pml_losses.NormalizedSoftmaxLoss(num_classes, embed_dim,
                                                temperature=hparams["nsm_temperature"])
