"""ProxyAnchor (Kim et al., "Proxy Anchor Loss for Deep Metric Learning", CVPR 2020, Eq. 4):
margin ``delta`` (``pa_margin``), scale ``alpha`` (``pa_alpha``); defaults are the paper's
(0.1, 32). The proxies are pytorch-metric-learning's ``ProxyAnchorLoss`` parameter (its
initialisation, its state-dict key); the loss is computed here (:func:`proxy_anchor_loss`),
equal to pml's value and gradients (``tests/test_losses.py``) without its two host reads per
call and in fewer operators."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ..search_space import log_uniform, uniform
from .pml_proxy import PMLProxyLoss
from .registry import register_loss


def proxy_anchor_loss(z: torch.Tensor, y: torch.Tensor, proxies: torch.Tensor, margin: float,
                      alpha: float, split: int | None = None) -> torch.Tensor:
    """Eq. 4 on embeddings z (B, d), labels y (B,) and proxies (C, d), cosines of the
    L2-normalised rows s(x, p):

        1/|P+| sum_{p in P+} log(1 + sum_{x in X_p+} exp(-alpha (s(x, p) - delta)))
      + 1/|P|  sum_{p in P}  log(1 + sum_{x in X_p-} exp( alpha (s(x, p) + delta)))

    P+: the proxies with a positive in the batch. Both terms in one masked (2, B + 1, C)
    log-sum-exp, the 1 as an appended row of zeros, an empty sum set to 0: pml's operations
    in pml's order, so values and gradients equal its bit for bit on the CPU (its host reads,
    for the divisor and a NaN check, are not needed). With ``split``: the losses (2,) of the
    rows before and from ``split`` as two batches, in the same one pass (SEE's L_ML and L_SEE)."""
    cos = F.normalize(z, dim=1) @ F.normalize(proxies, dim=1).T            # (B, C)
    pos = F.one_hot(y, len(proxies)).bool()                                # X_p+ by column
    masks = torch.stack([pos, ~pos]) if split is None else _split_masks(pos, split)
    exps = alpha * torch.where(pos, margin - cos, cos + margin)
    kept = torch.where(masks, exps, torch.finfo(cos.dtype).min)
    lse = torch.cat([kept, kept.new_zeros(len(masks), 1, len(proxies))], dim=1).logsumexp(1)
    terms = lse.masked_fill(~masks.any(1), 0.0)                 # (2, C); split: (4, C)
    if split is None:
        return terms[0].sum() / pos.any(0).sum() + terms[1].sum() / len(proxies)
    return terms[:2].sum(1) / masks[:2].any(1).sum(1) + terms[2:].sum(1) / len(proxies)


def _split_masks(pos: torch.Tensor, split: int) -> torch.Tensor:
    """(4, B, C): positives of the rows before ``split``, of the rows from it, then their
    negatives."""
    first = (torch.arange(len(pos), device=pos.device) < split).unsqueeze(1)
    masks = torch.stack([pos, pos, ~pos, ~pos])
    return masks & torch.stack([first, ~first, first, ~first])


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

    SPLITS = True       # forward(z, y, split): two batches' losses in one pass (MetricLoss)

    def forward(self, z, y, split: int | None = None):
        return proxy_anchor_loss(z, y, self.pml.proxies, self.pml.margin, self.pml.alpha, split)
