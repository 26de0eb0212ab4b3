"""ProtoAlign: the former ``UEM`` of this package, built from the 4-page slides of UEM (Wang, Du &
Zhu, NeurIPS 2024; the authors' presentation) before the full paper was available. It
differs from the published method in almost every component (see ``uem.py`` for UEM as
published) and is kept, unchanged in behaviour, under a name that does not say UEM; its hparams
carry the prefix ``pal_`` (``pa_`` is ProxyAnchor's).

Two unlabeled domains A (the source view, ``batch["x"]``) and B (``batch["unlabeled"]``, one or
more targets) whose label spaces may differ. The algorithm never receives a label
(``NEEDS.labels`` is False). What the slides give, and what we chose where they are silent (every
choice an hparam ``pal_*``; the ablation switches reproduce the slides' ablation table):

Intra-domain Semantic-Enhanced Learning (stage 1, from step 0)
- Slides: L_IPM = L_INCE + alpha L_PNCE, alpha = 1 / (1 + exp(0.5 E - e)) (E total epochs,
  e current epoch: here the 0-based index of the current epoch), prototypes from clustering the
  embeddings, "pre-set a unified prototypical structure across domains".
- L_INCE (ours: SimCLR's NT-Xent): two augmented views of each image (``view_augment``, made
  on the batch tensor: random resized crop, optional flip, brightness/contrast), in-batch
  negatives, temperature ``pal_temperature``.
- Prototypes: every ``pal_cluster_every`` epochs, spherical k-means (``sdgdml.clustering``) of
  each domain's memory of recent embeddings (FIFO, one source epoch of samples by default) into
  K = ``pal_num_prototypes`` (0: the dataset's number of classes) clusters.
- L_PNCE (ours: ProtoNCE, Li et al. 2021): cross-entropy of a sample's similarities to its
  domain's prototypes (temperature ``pal_proto_temperature``) toward its nearest prototype.
  ``pal_proto_mix = False`` drops it ("w/o P.M.").
- Unified prototypical structure / semantic-enhanced loss, SEL (ours): K fixed equiangular
  anchors shared by all domains; each domain's prototypes are matched one-to-one to the anchors
  (Hungarian) and every sample is pulled to its prototype's anchor (cross-entropy over anchors),
  so both domains take the same prototype geometry (the remedy to the slides' Theorem 1).
  Weight alpha * ``pal_sel_weight``; ``pal_sel = False`` drops it ("w/o SEL").

Cross-domain Semantic-Matched Learning (stage 2, from ``pal_stage2_start`` of training)
- SPDA, semantic-preserving domain alignment (the abstract: "a modified adversarial training
  mechanism" with "minimal changes for the established prototypical structure"); ours:
  prototype-conditioned adversarial alignment. A discriminator with one source-vs-target
  output per anchor, trained through a gradient-reversal layer; a sample's loss is weighted by
  its (detached) soft assignment to the anchors, so domains are aligned within each prototype
  cell and not across cells; a cell populated by one domain only (a private class) gets weight
  min(m_A, m_B) / max(m_A, m_B) ~ 0 (m: the domains' fractions of memory in that cell).
  Weight ``pal_spda_weight``; ``pal_spda = False`` ("w/o SPDA").
- SN2M, switchable nearest-neighbour match (ours): for a sample of A, its nearest neighbour in
  B's memory is the positive (InfoNCE over B's memory) when that neighbour lies in the B
  prototype that corresponds to the sample's A prototype (same anchor with SEL, else the
  nearest B prototype); otherwise the match switches to that corresponding B prototype
  (cross-entropy over B's prototypes). Matches whose cosine to the positive is below
  ``pal_sn2m_threshold`` are dropped (likely private classes). Both directions A->B, B->A.
  ``pal_sn2m_mode``: switch | instance | prototype; ``pal_sn2m = False`` ("w/o SN2M").
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..clustering import BACKENDS, equiangular_anchors, match_to_anchors, spherical_kmeans
from ..search_space import choice, fixed, log_uniform, uniform
from .base import Algorithm, lr_lambda, make_optimizer
from .registry import DataNeeds, register_algorithm

ANCHOR_SEED = 20240101      # the pre-set structure is a constant of the method
SOURCE = "source"
SN2M_MODES = ("switch", "instance", "prototype")


def ipm_alpha(epoch: float, total_epochs: float) -> float:
    """The IPM weight alpha = 1 / (1 + exp(0.5 E - e)) (slides), computed without overflow
    for any E."""
    x = 0.5 * total_epochs - epoch
    if x > 0:
        return math.exp(-x) / (1.0 + math.exp(-x))
    return 1.0 / (1.0 + math.exp(x))


class _GradReverse(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad):
        return -grad


def nt_xent(z1: torch.Tensor, z2: torch.Tensor, temperature: float) -> torch.Tensor:
    """Instance discrimination (SimCLR's NT-Xent): view i's positive is the other view of i,
    the other 2B - 2 embeddings are negatives."""
    z = torch.cat([z1, z2])
    n = len(z1)
    sims = (z @ z.T) / temperature
    sims = sims.masked_fill(torch.eye(2 * n, dtype=torch.bool, device=z.device), -math.inf)
    target = torch.cat([torch.arange(n, 2 * n), torch.arange(n)]).to(z.device)
    return F.cross_entropy(sims, target)


def view_augment(x: torch.Tensor, crop_scale: float, jitter: float, flip: bool) -> torch.Tensor:
    """A random view of each image of a normalised batch (B, C, H, W): resized crop of area in
    [crop_scale, 1], optional horizontal flip, brightness and contrast jitter."""
    b = x.shape[0]
    dev, dt = x.device, x.dtype
    s = torch.sqrt(torch.empty(b, device=dev, dtype=dt).uniform_(crop_scale, 1.0))
    tx, ty = ((torch.rand(b, device=dev, dtype=dt) * 2 - 1) * (1 - s) for _ in range(2))
    sign = (torch.where(torch.rand(b, device=dev) < 0.5, -1.0, 1.0).to(dt) if flip
            else torch.ones(b, device=dev, dtype=dt))
    theta = torch.zeros(b, 2, 3, device=dev, dtype=dt)
    theta[:, 0, 0], theta[:, 0, 2], theta[:, 1, 1], theta[:, 1, 2] = s * sign, tx, s, ty
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    out = F.grid_sample(x, grid, align_corners=False)
    contrast = 1 + (torch.rand(b, 1, 1, 1, device=dev, dtype=dt) * 2 - 1) * jitter
    bright = (torch.rand(b, 1, 1, 1, device=dev, dtype=dt) * 2 - 1) * jitter
    mean = out.mean(dim=(1, 2, 3), keepdim=True)
    return (out - mean) * contrast + mean + bright


class DomainMemory(nn.Module):
    """One domain's FIFO memory of embeddings and its current prototypes (all buffers, so a run
    resumes exactly)."""

    def __init__(self, size: int, dim: int, k: int):
        super().__init__()
        self.register_buffer("queue", torch.zeros(size, dim))
        self.register_buffer("filled", torch.zeros((), dtype=torch.long))
        self.register_buffer("ptr", torch.zeros((), dtype=torch.long))
        self.register_buffer("centroids", torch.zeros(k, dim))
        self.register_buffer("anchor_of", torch.zeros(k, dtype=torch.long))
        self.register_buffer("mass", torch.zeros(k))          # fraction of memory per anchor cell
        self.n = 0                # host copy of ``filled`` (no device sync on every step)

    @torch.no_grad()
    def push(self, z: torch.Tensor) -> None:
        size = self.queue.shape[0]
        z = z.detach()[-size:]
        idx = (self.ptr + torch.arange(len(z), device=z.device)) % size
        self.queue[idx] = z.to(self.queue.dtype)
        self.ptr.copy_((self.ptr + len(z)) % size)
        self.n = min(self.n + len(z), size)
        self.filled.fill_(self.n)

    def bank(self) -> torch.Tensor:
        return self.queue[: self.n]


@register_algorithm("ProtoAlign")
class ProtoAlign(Algorithm):
    """ProtoAlign (see the module docstring). ``batch["x"]``: domain A images, ``batch["unlabeled"]``:
    {domain: images} of B; no labels."""

    NEEDS = DataNeeds(labels=False, unlabeled_targets=True)
    SINGLE_PROCESS_REASON = "its memory queues fill from this process's batches only"
    EAGER_REASON = ("its weight alpha follows the epoch on the host, its queues are written "
                    "in place and K-Means rebuilds its prototypes")
    LAZY_STATE = ("memories.",)      # one DomainMemory per domain, made when first seen

    @staticmethod
    def declare_hparams(hp, small):
        """The choices where the slides are silent (module docstring); the four switches
        pal_proto_mix / pal_sel / pal_spda / pal_sn2m are the slides' ablations."""
        hp("pal_temperature", 0.1, log_uniform(10 ** -1.5, 10 ** -0.5),
           help="temperature of the instance contrastive loss L_INCE")
        hp("pal_proto_temperature", 0.1, log_uniform(10 ** -1.5, 10 ** -0.5),
           help="temperature of the prototype loss L_PNCE")
        hp("pal_num_prototypes", 0, fixed(),            # 0: the dataset's number of classes
           help="prototypes per domain K; 0: the dataset's class count")
        hp("pal_queue_size", 0, fixed(),                # 0: one source epoch of samples
           help="embeddings kept per domain for clustering; 0: one source epoch")
        hp("pal_cluster_every", 1.0, choice(0.5, 1.0, 2.0),  # epochs between k-means runs
           help="epochs between k-means runs")
        hp("pal_kmeans_iters", 20, fixed(), help="k-means iterations")
        hp("pal_kmeans_backend", "torch", fixed(),      # torch | sklearn
           choices=BACKENDS, help="k-means implementation: torch or sklearn")
        hp("pal_proto_mix", True, fixed(),              # False: "w/o P.M." (no L_PNCE)
           help="prototype loss L_PNCE (False: w/o P.M.)")
        hp("pal_sel", True, fixed(),                    # False: "w/o SEL"
           help="semantic-enhanced loss SEL (False: w/o SEL)")
        hp("pal_sel_weight", 1.0, log_uniform(0.1, 10 ** 0.5), help="weight of SEL")
        hp("pal_spda", True, fixed(),                   # False: "w/o SPDA"
           help="semantic-preserving domain alignment (False: w/o SPDA)")
        hp("pal_spda_weight", 0.1, log_uniform(0.01, 1.0), help="weight of SPDA")
        hp("pal_disc_hidden", 256, fixed(), help="hidden width of the SPDA discriminator")
        hp("pal_disc_lr_mult", 1.0, log_uniform(10 ** -0.5, 10.0),
           help="discriminator learning rate = lr x this")
        hp("pal_sn2m", True, fixed(),                   # False: "w/o SN2M"
           help="switchable nearest-neighbour match (False: w/o SN2M)")
        hp("pal_sn2m_mode", "switch", fixed(),          # switch | instance | prototype
           choices=SN2M_MODES, help="SN2M positives: switch, instance or prototype")
        hp("pal_sn2m_weight", 1.0, log_uniform(0.1, 10 ** 0.5), help="weight of SN2M")
        hp("pal_sn2m_threshold", 0.5, uniform(0.0, 0.8),
           help="SN2M drops matches whose cosine is below this")
        hp("pal_stage2_start", 0.5, uniform(0.2, 0.7),  # fraction of training
           help="fraction of training where stage 2 starts")
        hp("pal_crop_scale", 0.6 if small else 0.2, uniform(0.2, 0.8),
           help="smallest crop fraction of the contrastive views")
        hp("pal_color_jitter", 0.4, uniform(0.0, 0.6),
           help="brightness/contrast jitter of the contrastive views")
        hp("pal_flip", not small, fixed(),              # a flipped digit is another glyph
           help="horizontal flips in the contrastive views")

    def __init__(self, network, num_classes, hparams, schedule, domain_sizes=None):
        super().__init__(network, num_classes, hparams, schedule, domain_sizes)
        h = hparams
        self.k = h["pal_num_prototypes"] or num_classes
        dim = h["embed_dim"]
        if h["pal_sn2m_mode"] not in SN2M_MODES:
            raise ValueError(f"unknown pal_sn2m_mode {h['pal_sn2m_mode']!r}; "
                             f"known: {', '.join(SN2M_MODES)}")
        if h["pal_kmeans_backend"] not in BACKENDS:
            raise ValueError(f"unknown pal_kmeans_backend {h['pal_kmeans_backend']!r}; "
                             f"known: {', '.join(BACKENDS)}")
        self.queue_size = h["pal_queue_size"] or schedule.steps_per_epoch * h["batch_size"]
        self.cluster_steps = max(1, round(h["pal_cluster_every"] * schedule.steps_per_epoch))
        self.register_buffer("anchors", equiangular_anchors(self.k, dim, ANCHOR_SEED))
        self.register_buffer("ready", torch.zeros((), dtype=torch.bool))
        self.is_ready = False     # host copy of ``ready``
        self.memories = nn.ModuleDict()
        self.discriminator = nn.Sequential(nn.Linear(dim, h["pal_disc_hidden"]), nn.ReLU(),
                                           nn.Linear(h["pal_disc_hidden"], self.k))
        lr = h["lr"]
        groups = [
            {"params": list(network.parameters()), "lr": lr, "name": "network"},
            {"params": list(self.discriminator.parameters()), "lr": lr * h["pal_disc_lr_mult"],
             "name": "discriminator"},
        ]
        opt = make_optimizer(h["optimizer"], groups, h["weight_decay"])
        self.optimizers["main"] = opt
        self.schedulers["main"] = torch.optim.lr_scheduler.LambdaLR(
            opt, lr_lambda(schedule, h["lr_schedule"]))

    # ------------------------------------------------------------------ memories, prototypes
    def _memory(self, name: str) -> DomainMemory:
        key = name.replace(".", "_")
        if key not in self.memories:
            self.memories[key] = DomainMemory(self.queue_size, self.anchors.shape[1],
                                              self.k).to(self.anchors.device)
        return self.memories[key]

    def load_state_dict(self, state: dict, strict: bool = True):
        for key in state["modules"]:                      # memories are created lazily
            if key.startswith("memories.") and key.endswith(".queue"):
                self._memory(key.split(".")[1])
        result = super().load_state_dict(state, strict)
        self.is_ready = bool(self.ready)
        for m in self.memories.values():
            m.n = int(m.filled)
        return result

    @torch.no_grad()
    def recluster(self) -> None:
        """k-means of every domain's memory; prototypes matched to the shared anchors."""
        h = self.hparams
        if any(m.n < self.k for m in self.memories.values()):
            return
        for i, m in enumerate(self.memories.values()):
            bank = m.bank()
            cents, _ = spherical_kmeans(bank, self.k, h["pal_kmeans_iters"],
                                        seed=self.step * 1009 + i, backend=h["pal_kmeans_backend"])
            m.centroids.copy_(cents)
            m.anchor_of.copy_(match_to_anchors(cents, self.anchors))
            cells = (bank @ self.anchors.T).argmax(1)
            m.mass.copy_(torch.bincount(cells, minlength=self.k).float() / len(bank))
        self.ready.fill_(True)
        self.is_ready = True

    # ------------------------------------------------------------------ losses
    def _intra(self, z1, z2, mem: DomainMemory, alpha: float) -> dict[str, torch.Tensor]:
        h = self.hparams
        out = {"ince": nt_xent(z1, z2, h["pal_temperature"])}
        if not self.is_ready:
            return out
        z = torch.cat([z1, z2])
        nearest = (z.detach() @ mem.centroids.T).argmax(1)
        phi = h["pal_proto_temperature"]
        if h["pal_proto_mix"]:
            out["pnce"] = alpha * F.cross_entropy(z @ mem.centroids.T / phi, nearest)
        if h["pal_sel"]:
            out["sel"] = alpha * h["pal_sel_weight"] * F.cross_entropy(
                z @ self.anchors.T / phi, mem.anchor_of[nearest])
        return out

    def _spda(self, zs: dict[str, torch.Tensor]) -> torch.Tensor:
        """Prototype-conditioned adversarial alignment of every target with the source."""
        phi = self.hparams["pal_proto_temperature"]
        src_mass = self._memory(SOURCE).mass
        losses = []
        for name, z in zs.items():
            if name == SOURCE:
                continue
            mass = self._memory(name).mass
            cell_w = torch.minimum(src_mass, mass) / torch.maximum(src_mass, mass).clamp(min=1e-12)
            for zz, is_source in ((zs[SOURCE], 1.0), (z, 0.0)):
                p = F.softmax(zz.detach() @ self.anchors.T / phi, dim=1)
                logits = self.discriminator(_GradReverse.apply(zz))
                bce = F.binary_cross_entropy_with_logits(
                    logits, torch.full_like(logits, is_source), reduction="none")
                losses.append((p * cell_w * bce).sum(1).mean())
        return torch.stack(losses).mean()

    def _correspondence(self, a: DomainMemory, b: DomainMemory) -> torch.Tensor:
        """For each prototype of A, the prototype of B holding the same semantics."""
        if self.hparams["pal_sel"]:
            inverse = torch.empty_like(b.anchor_of)
            inverse[b.anchor_of] = torch.arange(self.k, device=b.anchor_of.device)
            return inverse[a.anchor_of]
        return (a.centroids @ b.centroids.T).argmax(1)

    def _sn2m_one_way(self, z, a: DomainMemory, b: DomainMemory):
        """(loss, fraction of instance-level matches) for the samples ``z`` of domain A."""
        h = self.hparams
        bank = b.bank()
        zd = z.detach()
        proto = self._correspondence(a, b)[(zd @ a.centroids.T).argmax(1)]
        nn_idx = (zd @ bank.T).argmax(1)
        nn_proto = (bank[nn_idx] @ b.centroids.T).argmax(1)
        mode = h["pal_sn2m_mode"]
        instance = (nn_proto == proto) if mode == "switch" else torch.full_like(
            proto, mode == "instance", dtype=torch.bool)
        inst_loss = F.cross_entropy(z @ bank.T / h["pal_temperature"], nn_idx, reduction="none")
        proto_loss = F.cross_entropy(z @ b.centroids.T / h["pal_proto_temperature"], proto,
                                     reduction="none")
        positive = torch.where(instance.unsqueeze(1), bank[nn_idx], b.centroids[proto])
        keep = (zd * positive).sum(1) >= h["pal_sn2m_threshold"]
        loss = torch.where(instance, inst_loss, proto_loss)
        loss = (loss * keep).sum() / keep.sum().clamp(min=1)
        return loss, instance.float().mean()

    def _sn2m(self, zs: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        src = self._memory(SOURCE)
        out, fractions = [], []
        for name, z in zs.items():
            if name == SOURCE:
                continue
            tgt = self._memory(name)
            for zz, a, b in ((zs[SOURCE], src, tgt), (z, tgt, src)):
                loss, frac = self._sn2m_one_way(zz, a, b)
                out.append(loss)
                fractions.append(frac)
        return torch.stack(out).mean(), torch.stack(fractions).mean()

    # ------------------------------------------------------------------ training step
    def update(self, batch: dict) -> dict[str, torch.Tensor | float]:
        h = self.hparams
        if self.step > 0 and self.step % self.cluster_steps == 0:
            self.recluster()
        images = {SOURCE: batch["x"], **batch.get("unlabeled", {})}
        self.network.train()
        views = [view_augment(x, h["pal_crop_scale"], h["pal_color_jitter"], h["pal_flip"])
                 for x in images.values() for _ in range(2)]
        with self.autocast():
            z_all = self.network(torch.cat(views))
        z_all = z_all.float().split([len(v) for v in views])
        alpha = ipm_alpha(self.step // self.schedule.steps_per_epoch, self.schedule.total_epochs)
        terms: dict[str, torch.Tensor] = {}
        first_views = {}
        for i, name in enumerate(images):
            z1, z2 = z_all[2 * i], z_all[2 * i + 1]
            first_views[name] = z1
            for key, value in self._intra(z1, z2, self._memory(name), alpha).items():
                terms[key] = terms.get(key, 0) + value
        logs = {"pal_alpha": alpha}
        stage2 = (self.is_ready and len(images) > 1
                  and self.step >= h["pal_stage2_start"] * self.schedule.total_steps)
        if stage2 and h["pal_spda"]:
            terms["spda"] = h["pal_spda_weight"] * self._spda(first_views)
        if stage2 and h["pal_sn2m"]:
            sn2m, logs["pal_sn2m_instance_frac"] = self._sn2m(first_views)
            terms["sn2m"] = h["pal_sn2m_weight"] * sn2m
        loss = sum(terms.values())
        self.backward_step(loss, self.optimizers["main"])
        self.schedulers["main"].step()
        for name, z1 in first_views.items():
            self._memory(name).push(z1)
        self.step += 1
        return {"loss": loss.detach(), **{k: _detached(v) for k, v in logs.items()},
                **{f"pal_{k}": v.detach() for k, v in terms.items()}}


def _detached(v):
    """A logged value as it leaves the step: tensors detached (read later), numbers as they are."""
    return v.detach() if torch.is_tensor(v) else v
