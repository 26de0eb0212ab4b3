"""How loss compositions train: :class:`MetricLearning` (network + a metric loss, possibly with
plug-ins), the algorithm behind every ``Base+Plugin`` name."""
from __future__ import annotations

import torch
import torch.nn as nn

from .. import evaluation
from ..search_space import fixed, log_uniform
from .base import Algorithm, EvalContext, MetricLoss, frozen, lr_lambda, make_optimizer
from .registry import UnknownAlgorithmError, components


class MetricLearning(Algorithm):
    """Supervised DML: network + a metric loss (possibly with plug-ins).

    Optimiser groups: backbone and embedding head at ``lr``; the loss's parameters (proxies) at
    ``lr * proxy_lr_mult`` (x100 in ProxyAnchor / ProxyNCA / SoftTriple / PFML recipes).
    Warm-up (ProxyAnchor's recipe): for the first ``warmup_epochs`` the backbone is frozen and
    only the embedding head and the proxies train (the network's ``fixed_parameters``, e.g.
    frozen BatchNorm affine weights, never train). ``grad_clip_value`` > 0 clips every gradient
    to [-v, v] before the step (ProxyAnchor's official code: 10, on network and proxies);
    ``lr_schedule`` "step": x ``lr_step_gamma`` every ``lr_step_epochs`` epochs. A plug-in's
    extra images (``MetricLoss.expand_inputs``) join the batch of the step that made them.
    """

    MULTI_PROCESS = True

    def __init__(self, network, num_classes, hparams, schedule, loss: MetricLoss,
                 domain_sizes=None):
        super().__init__(network, num_classes, hparams, schedule, domain_sizes)
        self.loss = loss
        lr = hparams["lr"]
        groups = [
            {"params": list(network.backbone.parameters()), "lr": lr, "name": "backbone"},
            {"params": list(network.embedding.parameters()), "lr": lr, "name": "embedding"},
        ]
        loss_params = list(loss.parameters())
        if loss_params:
            groups.append({"params": loss_params, "lr": lr * hparams["proxy_lr_mult"],
                           "name": "proxies"})
        opt = make_optimizer(hparams["optimizer"], groups, hparams["weight_decay"])
        self.optimizers["main"] = opt
        self.schedulers["main"] = torch.optim.lr_scheduler.LambdaLR(
            opt, lr_lambda(schedule, hparams["lr_schedule"], hparams["lr_step_epochs"],
                           hparams["lr_step_gamma"]))
        self.warmup_steps = round(hparams["warmup_epochs"] * schedule.steps_per_epoch)
        self.clip = float(hparams["grad_clip_value"])
        fixed = getattr(network, "fixed_parameters", list)()
        self._fixed = {id(p) for p in fixed}

    @classmethod
    def declare_training_hparams(cls, hp, small: bool, base: type) -> None:
        hp("warmup_epochs", 0 if small else 1, fixed(),
           help="epochs at the start with the backbone frozen (head and proxies train)")
        hp("grad_clip_value", 0.0, fixed(),         # 0: off; ProxyAnchor's official code: 10
           help="clip every gradient element to [-v, v]; 0: off")
        hp("lr_step_epochs", 0.0, fixed(),          # lr_schedule "step" only
           help="lr_schedule step: epochs between lr decays")
        hp("lr_step_gamma", 0.5, fixed(), help="lr_schedule step: lr factor at each decay")
        if base.HAS_PROXIES:        # the loss's own parameters (proxies) train faster
            hp("proxy_lr_mult", 100.0, log_uniform(10.0, 1000.0),
               help="learning rate of the loss's proxies = lr x this")

    def _freeze_backbone(self, frozen_: bool) -> None:
        for p in self.network.backbone.parameters():
            p.requires_grad_(not frozen_ and id(p) not in self._fixed)

    def _with_expanded(self, x: torch.Tensor, y: torch.Tensor):
        """The batch plus the images a plug-in makes from it (``MetricLoss.expand_inputs``)."""
        with frozen(self.network) as net:
            extra = self.loss.expand_inputs(x, y, net)
        if extra is None:
            return x, y
        x_extra, y_extra = extra
        return torch.cat([x, x_extra.detach()]), torch.cat([y, y_extra])

    def update(self, batch: dict) -> dict[str, torch.Tensor | float]:
        self._freeze_backbone(self.step < self.warmup_steps)
        self.loss.set_progress(self.epoch, self.schedule.total_epochs)
        x, y = self._with_expanded(batch["x"], batch["y"])
        self.network.train()
        with self.autocast():
            z = self.network(x)
        loss = self.loss(*self.gather(z.float(), y))
        self.backward_step(loss, self.optimizers["main"], self.clip)
        self.schedulers["main"].step()
        self.step += 1
        return {"loss": loss.detach(), **self.loss.raw_terms}

    def compile_parts(self) -> tuple[list[nn.Module], dict[str, str]]:
        """The network and the outermost part of the loss composition in which no component
        has an ``EAGER_REASON``; the components around it run eager."""
        chain = [self.loss]
        while chain[-1] is not chain[-1].bare():
            chain.append(chain[-1].base)
        eager = {}
        for i, part in enumerate(chain):
            if not any(c.EAGER_REASON for c in chain[i:]):
                return [self.network, part], eager
            eager[type(part).__name__] = part.EAGER_REASON or (
                f"it wraps {type(chain[i + 1]).__name__}, which runs eager")
        return [self.network], eager

    @classmethod
    def check_options(cls, options, hparams: dict) -> None:
        for c in components(options.algorithm):
            c.cls.check_hparams(hparams)
        if getattr(options, "proxy_alignment", False) and \
                not components(options.algorithm)[0].cls.HAS_PROXIES:
            raise UnknownAlgorithmError(f"--proxy_alignment needs an algorithm with proxies; "
                                        f"{options.algorithm} has none")

    def extra_metrics(self, ctx: EvalContext) -> dict[str, float]:
        """``--proxy_alignment``: PFML Sec. 4.4, the proxies vs the training split's
        embeddings (eval transform), as ``<train split>_proxy_w2``."""
        if not getattr(ctx.options, "proxy_alignment", False):
            return {}
        emb = ctx.embed_split(ctx.train_split)
        with torch.no_grad():
            proxies, proxy_labels = self.loss.proxies()
        w2 = evaluation.proxy_alignment(proxies.cpu(), proxy_labels.cpu(), emb,
                                        ctx.train_split.labels)
        return {f"{ctx.train_split.name}_proxy_w2": w2}
