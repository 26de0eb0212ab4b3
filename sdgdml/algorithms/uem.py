"""UEM: semantic feature learning for universal unsupervised cross-domain retrieval, as published
(Wang, Du & Zhu, NeurIPS 2024, with appendix; summarised in docs/methods.md).
Equations: ``uem_losses.py`` (one function each, numbered as in the paper). The former,
slides-based implementation is ``ProtoAlign`` (``protoalign.py``).

Two unlabeled domains: A, the query domain (``batch["x"]``, the run's source) and B, the
retrieval domain (``batch["unlabeled"]``, the run's one target); never a label
(``NEEDS.labels`` False). Features f are the L2-normalised embeddings.

Stage "idse" (Sec. 3.2, Eq. 5-12), steps [0, uem_idse_fraction * total):
  per domain, a memory bank with one entry per training image (indexed by the batch's sample
  indices), filled before the first step with the starting network's features of the whole
  domain (``start``; UCDIR's ``main.py`` at epoch 0), then Eq. 5's momentum update, beta =
  ``uem_beta``; L_INCE (Eq. 6) over the bank; every ``uem_cluster_every`` epochs, the number of
  prototypes of each bank is estimated by the Elbow method (``clustering.elbow_k``, 2 <= k <=
  ``uem_elbow_max_k``, every ``uem_elbow_every`` epochs; ``uem_num_prototypes`` > 0 fixes it
  instead, an oracle when it is the class count) and K-Means gives P^A, P^B; translate +
  Hungarian + merge (Eq. 8-9)
  gives P^{A'}, P^{B'}; L_PNCE (Eq. 7) over the merged set; L_SEL (Eq. 11);
  L = sum_D [L_INCE + alpha L_PNCE + alpha L_SEL] (Eq. 10, 12; alpha over the IDSE epochs).
Stage "cdsm" (Sec. 3.3, Eq. 13-18), the rest of training: entering it copies the network into
  a frozen f' (saved in checkpoints; it runs on the training network's very batch, both domains
  together, so an unchanged network gives L_SPR = 0). L = L_DAL (Eq. 13; 2-FC domain classifier through a
  gradient reversal of coefficient ``uem_grl_coeff``) + L_SPR^A + L_SPR^B (Eq. 14) +
  L_SN2M^A + L_SN2M^B (Eq. 15-17); the stage-1 losses stop (Eq. 18). Banks keep their momentum
  update and prototypes their re-estimation (SN2M searches B's memory, the paper's "all of B's
  instances").

Table 4's ablations (hparams), each removing one part: ``uem_merge`` False = "w/o P.M." (the
paper: no prototype merging *in IDSE*: IDSE's P' holds the own prototypes and the other domain's
translated ones side by side; SN2M in stage 2 keeps the merged sets); ``uem_sel`` False = "w/o
SEL"; ``uem_spr`` False = "w/o SPDA" (plain domain-adversarial learning: L_DAL kept, L_SPR
removed); ``uem_sn2m`` False = "w/o SN2M" (SN2M replaced by UCDIR's cross-domain terms as its
released ``builder.py`` defines them: instance-prototype self-entropy + distance-of-distance,
``uem_losses.ucdir_cross_domain_loss``, weights and temperature ``uem_ucdir_*`` from UCDIR's
``scripts/domainnet.sh``). ``uem_idse_fraction`` 1.0 trains stage 1 only.

What the paper leaves open, and our defaults: the stage switch in steps,
``uem_idse_fraction`` = 2/3 (100 IDSE + 50 CDSM epochs, Sec. 4; 0.8 for DomainNet's 200 + 50);
Elbow candidates k in [2, ``uem_elbow_max_k``] (80: above Office-Home's 65 classes; 20 on
DigitsDG) on a seeded sample of ``uem_elbow_sample`` entries (keeps the cost independent of
the domain's size), re-estimated every epoch (the paper: the estimate improves as training
proceeds); K-Means: k-means++ then ``uem_kmeans_iters`` = 20 Lloyd iterations (faiss's default,
used by PCS/UCDIR); gradient reversal coefficient 1 (Eq. 13 is an unweighted min-max);
domain-classifier hidden width ``uem_disc_hidden`` = 1024; f' runs in the network's mode (an
unchanged model gives L_SPR = 0 exactly). The recipe (Sec. 4): SGD momentum 0.9, lr 2e-4
cosine to 0, batch 64, tau 0.07, beta 0.99, ResNet-50 from MoCo v2 ImageNet weights
(``uem_init``; hence ``pretrained`` false: no hub download), loaded whole as UCDIR loads it
(the query encoder with its MLP projection head, ``networks.create_model``); the feature size,
not given by the paper, is MoCo v2's 128. DigitsDG, not in the paper, trains its small CNN with
the package's small-image recipe, from scratch by default or from ``python -m sdgdml.pretrain``'s
MoCo v2 checkpoint (``uem_init`` moco_v2 with ``--pretrained_file``).
"""
from __future__ import annotations

import copy

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..clustering import elbow_k, kmeans
from ..search_space import fixed, uniform
from . import uem_losses as L
from .base import Algorithm, EvalContext, lr_lambda, make_optimizer
from .registry import DataNeeds, UnknownAlgorithmError, register_algorithm

IDSE, CDSM = "idse", "cdsm"
ROLES = ("a", "b")          # a: the query domain (source), b: the retrieval domain (target)
INITS = ("moco_v2", "supervised", "scratch")


def _other(role: str) -> str:
    return "b" if role == "a" else "a"


@register_algorithm("UEM")
class UEM(Algorithm):
    """UEM as published (module docstring). Needs per-sample indices (memory banks) and the
    unlabeled retrieval domain; no labels."""

    NEEDS = DataNeeds(labels=False, indices=True, unlabeled_targets=True)
    SINGLE_PROCESS_REASON = ("its memory banks are indexed by this process's images and its "
                             "K-Means prototypes are built from them; gathering them across "
                             "processes is not implemented")
    EAGER_REASON = ("its losses change with the stage and the prototype sets K-Means rebuilds "
                    "on the host, and it writes its memory banks in place")
    # prototype sets resize with the Elbow's K; the frozen stage-1 copy exists from stage 2 on
    LAZY_STATE = ("protos_a", "protos_b", "frozen_net.")

    @classmethod
    def recipe(cls, small: bool) -> dict:
        """Sec. 4's training recipe, over the package's common defaults (not on the small-image
        benchmark, whose CNN trains from scratch)."""
        if small:
            return {}
        return {"optimizer": "sgd", "lr": 2e-4, "lr_schedule": "cosine", "batch_size": 64,
                "embed_dim": 128, "pretrained": False}

    @staticmethod
    def declare_hparams(hp, small):
        """The paper's values, the open choices (module docstring) and Table 4's switches."""
        hp("uem_tau", 0.07, fixed(), help="temperature tau of the contrastive losses (UEM Eq. 6-7)")
        hp("uem_beta", 0.99, fixed(), help="memory-bank momentum beta (UEM Eq. 5)")
        hp("uem_idse_fraction", 2 / 3, uniform(0.5, 0.85),
           help="fraction of training in stage 1 (IDSE); 1.0: stage 1 only")
        hp("uem_cluster_every", 1.0, fixed(),          # epochs between K-Means
           help="epochs between K-Means re-estimations of the prototypes")
        hp("uem_elbow_every", 1.0, fixed(),            # epochs between Elbow estimates
           help="epochs between Elbow estimates of the prototype count")
        hp("uem_num_prototypes", 0, fixed(),
           help="prototypes per domain: 0 = the Elbow estimate (the paper); k > 0 = k (an oracle "
                "when it is the class count)")
        hp("uem_elbow_max_k", 20 if small else 80, fixed(),
           help="largest prototype count the Elbow method considers")
        hp("uem_elbow_sample", 5000, fixed(), help="bank entries sampled for the Elbow estimate")
        hp("uem_kmeans_iters", 20, fixed(), help="Lloyd iterations after k-means++")
        hp("uem_grl_coeff", 1.0, fixed(),
           help="gradient-reversal coefficient of the domain classifier (Eq. 13)")
        hp("uem_disc_hidden", 1024, fixed(), help="hidden width of the domain classifier")
        hp("uem_init", "scratch" if small else "moco_v2", fixed(),
           choices=INITS, help="backbone start: moco_v2 (--pretrained_file), supervised or scratch")
        hp("uem_merge", True, fixed(),                 # False: "w/o P.M."
           help="merge translated prototypes (False: Table 4's w/o P.M.)")
        hp("uem_sel", True, fixed(),                   # False: "w/o SEL"
           help="semantic-enhanced loss L_SEL (False: w/o SEL)")
        hp("uem_spr", True, fixed(),                   # False: "w/o SPDA" (plain DANN)
           help="semantic-preserving term L_SPR (False: w/o SPDA, plain DANN)")
        hp("uem_sn2m", True, fixed(),                  # False: "w/o SN2M" (UCDIR's terms)
           help="switchable nearest-neighbour match (False: w/o SN2M, UCDIR's cross-domain terms)")
        hp("uem_ucdir_se_temp", 0.1, fixed(),          # UCDIR scripts/domainnet.sh
           help="w/o SN2M: temperature of UCDIR's self-entropy (scripts/domainnet.sh)")
        hp("uem_ucdir_se_weight", 0.5, fixed(),
           help="w/o SN2M: weight of UCDIR's self-entropy (scripts/domainnet.sh)")
        hp("uem_ucdir_dd_weight", 0.1, fixed(),
           help="w/o SN2M: weight of UCDIR's distance-of-distance loss (scripts/domainnet.sh)")

    def __init__(self, network, num_classes, hparams, schedule, domain_sizes=None):
        super().__init__(network, num_classes, hparams, schedule, domain_sizes)
        h = hparams
        if len(self.domain_sizes) != 2:
            raise UnknownAlgorithmError(
                f"UEM retrieves between two domains: give exactly one target (got domains "
                f"{list(self.domain_sizes)})")
        if h["uem_init"] not in INITS:
            raise ValueError(f"unknown uem_init {h['uem_init']!r}; known: {', '.join(INITS)}")
        self.domains = dict(zip(ROLES, self.domain_sizes))      # role -> domain name
        dim = h["embed_dim"]
        gen = torch.Generator().manual_seed(0)
        for role, n in zip(ROLES, self.domain_sizes.values()):
            self.register_buffer(f"bank_{role}", F.normalize(torch.randn(n, dim, generator=gen),
                                                             dim=1))
            self.register_buffer(f"seen_{role}", torch.zeros(n, dtype=torch.bool))
            self.register_buffer(f"assign_{role}", torch.full((n,), -1, dtype=torch.long))
            self.register_buffer(f"protos_{role}", torch.zeros(0, dim))
            self.register_buffer(f"center_{role}", torch.zeros(dim))    # bank mean at K-Means
            self.register_buffer(f"k_{role}", torch.zeros((), dtype=torch.long))
        self.merged: dict[str, L.Merged] = {}       # IDSE's P' (Eq. 9, per uem_merge)
        self.matched: dict[str, L.Merged] = {}      # SN2M's P' (Eq. 9, always merged)
        self.banks_ready = False        # both banks hold >= 2 entries (known on the host)
        self.classifier = nn.Sequential(nn.Linear(dim, h["uem_disc_hidden"]), nn.ReLU(),
                                        nn.Linear(h["uem_disc_hidden"], 1))     # Eq. 13's g
        self.frozen_net: nn.Module | None = None
        spe = schedule.steps_per_epoch
        self.idse_steps = round(h["uem_idse_fraction"] * schedule.total_steps)
        self.cluster_steps = max(1, round(h["uem_cluster_every"] * spe))
        self.elbow_steps = max(1, round(h["uem_elbow_every"] * spe))
        groups = [{"params": list(network.parameters()), "lr": h["lr"], "name": "network"},
                  {"params": list(self.classifier.parameters()), "lr": h["lr"],
                   "name": "classifier"}]
        opt = make_optimizer(h["optimizer"], groups, h["weight_decay"])
        self.optimizers["main"] = opt
        self.schedulers["main"] = torch.optim.lr_scheduler.LambdaLR(
            opt, lr_lambda(schedule, h["lr_schedule"]))

    # ------------------------------------------------------------------ stages, state
    def stage_at(self, step: int) -> str:
        return IDSE if step < self.idse_steps else CDSM

    def enter_stage(self, stage: str) -> None:
        """CDSM starts from a frozen copy f' of the stage-1 network (Eq. 14)."""
        if stage == CDSM and self.frozen_net is None:
            self.frozen_net = copy.deepcopy(self.network).requires_grad_(False)

    def load_state_dict(self, state: dict, strict: bool = True):
        modules = state["modules"]
        for role in ROLES:                    # prototype sets change size with the Elbow
            key = f"protos_{role}"
            setattr(self, key, torch.zeros_like(modules[key]).to(self.bank_a.device))
        if any(k.startswith("frozen_net.") for k in modules) and self.frozen_net is None:
            self.enter_stage(CDSM)
        result = super().load_state_dict(state, strict)
        self._rebuild_merged()
        return result

    @classmethod
    def check_options(cls, options, hparams: dict) -> None:
        """One target (UEM retrieves between two domains); and ``uem_init`` says which weights
        the backbone starts from, which the run must supply: moco_v2 needs
        ``--pretrained_file`` holding a MoCo checkpoint; supervised needs ``pretrained`` true
        (or a supervised ``--pretrained_file``)."""
        from ..networks import is_moco_checkpoint

        targets = getattr(options, "targets", None) or []
        if len(targets) != 1:
            raise UnknownAlgorithmError(f"UEM retrieves between two domains: give exactly one "
                                        f"target (got {len(targets)}: {', '.join(targets)})")
        init, file = hparams["uem_init"], getattr(options, "pretrained_file", None)
        if init == "moco_v2" and not (file and is_moco_checkpoint(file)):
            raise UnknownAlgorithmError(
                "UEM starts from MoCo v2 ImageNet weights: pass --pretrained_file "
                "moco_v2_800ep_pretrain.pth.tar (github.com/facebookresearch/moco, 'Models'), "
                "or set uem_init to supervised (with pretrained true) in --hparams")
        if init == "supervised" and not (hparams["pretrained"] or file):
            raise UnknownAlgorithmError("uem_init supervised needs pretrained true in --hparams")
        if init == "supervised" and file and is_moco_checkpoint(file):
            raise UnknownAlgorithmError("uem_init supervised, but --pretrained_file is a MoCo "
                                        "checkpoint: set uem_init to moco_v2")

    @torch.no_grad()
    def start(self, embed_training_images) -> None:
        """Eq. 5's initialisation: every memory entry is the starting network's feature of its
        image, over the whole domain, before the first step (UCDIR's ``main.py`` at epoch 0:
        eval mode, evaluation transform)."""
        feats = embed_training_images()
        for role, domain in self.domains.items():
            self._bank(role).copy_(F.normalize(feats[domain].float(), dim=1))
            self._seen(role).fill_(True)

    # ------------------------------------------------------------------ prototypes
    def _bank(self, role: str) -> torch.Tensor:
        return getattr(self, f"bank_{role}")

    def _seen(self, role: str) -> torch.Tensor:
        return getattr(self, f"seen_{role}")

    def has_prototypes(self) -> bool:
        return bool(self.merged)

    @torch.no_grad()
    def recluster(self, elbow: bool) -> None:
        """Elbow estimate (when ``elbow`` or none yet) and K-Means of every bank's seen
        entries, then Eq. 8-9."""
        h = self.hparams
        for i, role in enumerate(ROLES):
            seen = self._seen(role)
            entries = self._bank(role)[seen]
            k = int(getattr(self, f"k_{role}"))
            if h["uem_num_prototypes"]:
                k = h["uem_num_prototypes"]
            elif elbow or k == 0:
                k = elbow_k(entries, h["uem_elbow_max_k"], iters=h["uem_kmeans_iters"],
                            seed=self.step * 2 + i, sample=h["uem_elbow_sample"])
            k = min(k, len(entries))
            centres, assign, _ = kmeans(entries, k, h["uem_kmeans_iters"], self.step * 2 + i)
            full = torch.full_like(getattr(self, f"assign_{role}"), -1)
            full[seen] = assign
            setattr(self, f"protos_{role}", centres)
            getattr(self, f"assign_{role}").copy_(full)
            getattr(self, f"center_{role}").copy_(entries.mean(0))
            getattr(self, f"k_{role}").fill_(k)
        self._rebuild_merged()

    def _rebuild_merged(self) -> None:
        """P^{A'} and P^{B'} (Eq. 8-9) from the prototypes and bank means of the last K-Means:
        ``merged``, IDSE's sets (Eq. 7, 11; unmerged under "w/o P.M."), and ``matched``,
        SN2M's (Eq. 15-17; always merged: the ablation removes merging from IDSE only)."""
        if len(self.protos_a) == 0:
            self.merged, self.matched = {}, {}
            return
        self.matched = self._translate_merge(True)
        self.merged = (self.matched if self.hparams["uem_merge"]
                       else self._translate_merge(False))

    def _translate_merge(self, merge: bool) -> dict[str, L.Merged]:
        return {"a": L.translate_merge(self.protos_a, self.protos_b, self.center_a,
                                       self.center_b, merge),
                "b": L.translate_merge(self.protos_b, self.protos_a, self.center_b,
                                       self.center_a, merge)}

    def _cluster_due(self) -> bool:
        # banks only fill up: read their counts until both hold two entries (the first steps)
        self.banks_ready = self.banks_ready or all(int(self._seen(r).sum()) >= 2 for r in ROLES)
        return self.banks_ready and (self.step % self.cluster_steps == 0
                                     or not self.has_prototypes())

    # ------------------------------------------------------------------ losses
    def _idse(self, role: str, z: torch.Tensor, index: torch.Tensor, alpha: float
              ) -> dict[str, torch.Tensor]:
        """Eq. 6, 7, 11 of one domain (alpha already applied to L_PNCE and L_SEL)."""
        tau = self.hparams["uem_tau"]
        bank, seen = self._bank(role), self._seen(role)
        logits = (z @ bank.T / tau).masked_fill(~seen, float("-inf"))
        out = {"ince": F.cross_entropy(logits, index)}
        if not self.has_prototypes():
            return out
        merged = self.merged[role]
        own = getattr(self, f"assign_{role}")[index]
        # the samples with a prototype, as a mask (not a selection: the host never reads it)
        known = (own >= 0).to(z.dtype)
        target = merged.own.to(z.device)[own.clamp(min=0)]
        out["pnce"] = alpha * (L.proto_nce(z, merged.prototypes.to(z), target, tau, "none")
                               * known).sum() / known.sum().clamp(min=1)
        if self.hparams["uem_sel"]:
            out["sel"] = alpha * L.semantic_enhanced_loss(z, merged.prototypes.to(z), tau)
        return out

    def _sn2m_inputs(self, role: str) -> L.SN2MInputs:
        """SN2M's search space in the other domain: the memory entries that have a K-Means
        label (-1, an entry first seen after the last clustering, is no prototype)."""
        other = _other(role)
        assign = getattr(self, f"assign_{other}")
        labelled = assign >= 0
        return L.SN2MInputs(getattr(self, f"protos_{role}"), self.matched[other],
                            self._bank(other)[labelled], assign[labelled])

    def _frozen_features(self, x: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """f'(x) (Eq. 14) computed exactly as the training network computes f(x): one forward
        of both domains' images together, in the network's mode and precision (so BatchNorm
        sees the same batch statistics, and an unchanged network gives L_SPR = 0)."""
        self.frozen_net.train(self.network.training)
        with torch.no_grad(), self.autocast():
            feats = self.frozen_net(torch.cat([x["a"], x["b"]]))
        return dict(zip(ROLES, F.normalize(feats.float(), dim=1).split(
            [len(x["a"]), len(x["b"])])))

    def _cdsm(self, x: dict[str, torch.Tensor], z: dict[str, torch.Tensor]
              ) -> tuple[dict[str, torch.Tensor], dict[str, float]]:
        """Eq. 13-18 (or, "w/o SN2M", UCDIR's cross-domain terms in place of Eq. 15-17)."""
        h, tau = self.hparams, self.hparams["uem_tau"]
        logits = {r: self.classifier(L.GradReverse.apply(z[r], h["uem_grl_coeff"]))
                  for r in ROLES}
        terms = {"dal": L.domain_adversarial_loss(logits["a"], logits["b"])}
        with torch.no_grad():       # the domain classifier's accuracy (1 = domains apart)
            right = torch.cat([logits["a"] > 0, logits["b"] <= 0]).float().mean()
        logs: dict[str, torch.Tensor] = {"uem_dal_acc": right}
        if h["uem_spr"]:
            frozen = self._frozen_features(x)
            terms["spr"] = sum(L.semantic_preserving_loss(z[r], frozen[r]) for r in ROLES)
        if not self.has_prototypes():
            return terms, logs
        if h["uem_sn2m"]:
            parts = [L.sn2m_loss(z[r], self._sn2m_inputs(r), tau) for r in ROLES]
            terms["sn2m"] = sum(p[0] for p in parts)
            logs["uem_sn2m_agree"] = (sum(p[1] for p in parts) / 2).detach()
        else:
            terms["ucdir"] = L.ucdir_cross_domain_loss(
                z["a"], z["b"], self.protos_a, self.protos_b, h["uem_ucdir_se_temp"],
                h["uem_ucdir_se_weight"], h["uem_ucdir_dd_weight"])
        return terms, logs

    # ------------------------------------------------------------------ training step
    def _batch(self, batch: dict) -> tuple[dict, dict]:
        target = self.domains["b"]
        return ({"a": batch["x"], "b": batch["unlabeled"][target]},
                {"a": batch["index"], "b": batch["unlabeled_index"][target]})

    @torch.no_grad()
    def _first_sight(self, z: dict, index: dict) -> None:
        """Entries ``start`` did not fill (an algorithm driven without the trainer) take their
        image's feature the first time the image is seen."""
        for r in ROLES:
            new = ~self._seen(r)[index[r]]
            bank = self._bank(r)
            bank[index[r]] = torch.where(new.unsqueeze(1), z[r].detach().to(bank.dtype),
                                         bank[index[r]])
            self._seen(r)[index[r]] = True

    def update(self, batch: dict) -> dict[str, torch.Tensor | float]:
        h = self.hparams
        x, index = self._batch(batch)
        if self._cluster_due():
            self.recluster(elbow=self.step % self.elbow_steps == 0)
        self.network.train()
        with self.autocast():
            feats = self.network(torch.cat([x["a"], x["b"]]))
        z = dict(zip(ROLES, F.normalize(feats.float(), dim=1).split([len(x["a"]), len(x["b"])])))
        self._first_sight(z, index)
        logs: dict[str, float] = {}
        if self.stage == IDSE:
            alpha = L.ipm_alpha(self.step // self.schedule.steps_per_epoch,
                                self.idse_steps / self.schedule.steps_per_epoch)
            logs["uem_alpha"] = alpha
            terms: dict[str, torch.Tensor] = {}
            for r in ROLES:
                for k, v in self._idse(r, z[r], index[r], alpha).items():
                    terms[k] = terms.get(k, 0) + v
        else:
            terms, logs = self._cdsm(x, z)
        loss = sum(terms.values())
        self.backward_step(loss, self.optimizers["main"])
        self.schedulers["main"].step()
        for r in ROLES:
            L.update_memory(self._bank(r), index[r], z[r], h["uem_beta"])
        self.step += 1
        return {"loss": loss.detach(), **logs, **{f"uem_{k}": v.detach() for k, v in terms.items()},
                "uem_k_a": self.k_a.float(), "uem_k_b": self.k_b.float(),
                "uem_merged": float(len(self.matched["a"].pairs) if self.matched else 0)}

    def extra_metrics(self, ctx: EvalContext) -> dict[str, float]:
        """The current Elbow estimates and merged pairs (the App. B.1 detector is the open-set
        rule ``--open_rule detector``, which every method gets, as in App. B.2)."""
        return {"uem_k_a": float(self.k_a), "uem_k_b": float(self.k_b),
                "uem_merged": float(len(self.matched["a"].pairs) if self.matched else 0)}
