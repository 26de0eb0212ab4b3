"""MultiSimilarity (Wang et al., CVPR 2019) with its pair miner, on pytorch-metric-learning:
pair-based, no proxies, needs class-balanced batches (``SAMPLER = "m_per_class"``)."""
from __future__ import annotations

from ..search_space import uniform
from .base import MetricLoss
from .registry import register_loss


@register_loss("MultiSimilarity")
class MultiSimilarity(MetricLoss):
    SAMPLER = "m_per_class"
    EAGER_REASON = ("its miner selects a data-dependent number of pairs, whose counts a "
                    "compiled loss would guard on and recompile for")

    @staticmethod
    def declare_hparams(hp, small):
        hp("ms_alpha", 2.0, uniform(1, 4),
           help="positive-pair weight alpha")
        hp("ms_beta", 50.0, uniform(20, 60),
           help="negative-pair weight beta")
        hp("ms_base", 0.5, uniform(0.3, 0.7),
           help="similarity offset lambda")
        hp("ms_epsilon", 0.1, uniform(0.05, 0.2),
           help="pair-mining margin epsilon")

    def __init__(self, num_classes: int, embed_dim: int, hparams: dict):
        super().__init__()
        from pytorch_metric_learning import losses as pml_losses  # scipy.stats: import on use
        from pytorch_metric_learning import miners as pml_miners

        self.pml = pml_losses.MultiSimilarityLoss(alpha=hparams["ms_alpha"],
                                                  beta=hparams["ms_beta"], base=hparams["ms_base"])
        self.miner = pml_miners.MultiSimilarityMiner(epsilon=hparams["ms_epsilon"])

    def forward(self, z, y):
        return self.pml(z, y, self.miner(z, y))
