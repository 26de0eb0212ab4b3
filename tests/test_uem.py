"""UEM as published: every equation on hand-made inputs (Eq. 5-6 memory bank and L_INCE,
Eq. 8-9 translate + Hungarian + merge, Eq. 11 SEL, Eq. 13-14 SPDA, Eq. 15-17 SN2M, App. B.1
detector), the stage switch and its frozen copy, the Table 4 switches, that no label (nor the
class count) is ever read, and exact resume in stage 2 of an end-to-end DigitsDG run."""
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import yaml

from sdgdml import hparams_registry
from sdgdml.algorithms import Schedule, algorithm_class
from sdgdml.algorithms import uem_losses as L
from sdgdml.algorithms.uem import CDSM, IDSE, UEM
from sdgdml.clustering import kmeans
from sdgdml.datasets import DATASETS
from sdgdml.networks import create_model
from sdgdml.records import read_records
from sdgdml.train import main
from helpers import PoisonedDigits

TAU = 0.07


def _uem(sizes=None, num_classes=None, **overrides):
    hp = hparams_registry.get_hparams("UEM", "DigitsDG", overrides=overrides)
    torch.manual_seed(0)
    return UEM(create_model(hp), num_classes, hp, Schedule(total_steps=20, steps_per_epoch=5),
               sizes or {"mnist": 30, "uci": 20})


def _unit(*rows):
    return F.normalize(torch.tensor(rows, dtype=torch.float32), dim=1)


# ---------------------------------------------------------------- interface
def test_uem_needs_indices_and_the_retrieval_domain_but_no_labels():
    needs = algorithm_class("UEM").NEEDS
    assert not needs.labels and needs.indices and needs.unlabeled_targets


def test_the_class_count_is_never_used():
    """The network is built with num_classes None: nothing in UEM reads it."""
    alg = _uem(num_classes=None, uem_idse_fraction=0.5)
    x, y = torch.randn(8, 3, 32, 32), torch.randn(8, 3, 32, 32)
    for step in range(20):
        alg.train_step({"x": x, "index": torch.arange(8) + (step % 3) * 8,
                        "unlabeled": {"uci": y}, "unlabeled_index": {"uci": torch.arange(8)}})
    assert alg.stage == CDSM and int(alg.k_a) >= 2


def test_recipe_of_section_4_on_full_size_datasets():
    hp = hparams_registry.default_hparams("UEM", "OfficeHome")
    assert (hp["optimizer"], hp["lr"], hp["lr_schedule"], hp["batch_size"]) == (
        "sgd", 2e-4, "cosine", 64)
    assert (hp["uem_tau"], hp["uem_beta"], hp["uem_init"]) == (0.07, 0.99, "moco_v2")
    assert hp["uem_idse_fraction"] == pytest.approx(100 / 150)
    assert hparams_registry.default_hparams("ProxyAnchor", "OfficeHome")["optimizer"] == "adamw"


def test_two_domains_exactly(tmp_path):
    with pytest.raises(ValueError, match="exactly one target"):
        _uem(sizes={"mnist": 10, "uci": 10, "svhn": 10})
    from sdgdml.train import main                   # refused before anything is created

    with pytest.raises(SystemExit, match="exactly one target \\(got 2: uci, sketch\\)"):
        main(["--algorithm", "UEM", "--targets", "uci", "sketch",
              "--output_dir", str(tmp_path / "run")])
    assert not (tmp_path / "run").exists()


# ---------------------------------------------------------------- Eq. 5-7, 10
def test_memory_update_eq5_by_hand():
    bank = _unit([1, 0], [0, 1], [1, 1])
    L.update_memory(bank, torch.tensor([0, 2]), _unit([0, 1], [1, 0]), beta=0.9)
    assert torch.allclose(bank[0], F.normalize(torch.tensor([0.9, 0.1]), dim=0))
    assert torch.allclose(bank[1], torch.tensor([0.0, 1.0]))                 # untouched
    expected = F.normalize(0.9 * torch.tensor([1.0, 1.0]) / math.sqrt(2)
                           + 0.1 * torch.tensor([1.0, 0.0]), dim=0)
    assert torch.allclose(bank[2], expected)


def test_instance_nce_eq6_by_hand():
    bank = _unit([1, 0], [0, 1], [-1, 0])
    z = _unit([1, 1])
    # positive: its own entry (index 2), negatives: the other entries of the same domain
    sims = [float(z[0] @ bank[j]) / TAU for j in range(3)]
    expected = -math.log(math.exp(sims[2]) / sum(math.exp(s) for s in sims))
    assert L.instance_nce(z, torch.tensor([2]), bank, TAU).item() == pytest.approx(expected,
                                                                                    rel=1e-5)


def test_training_step_updates_only_the_batch_entries_and_marks_them_seen():
    alg = _uem(uem_idse_fraction=1.0)
    before = alg.bank_a.clone()
    idx = torch.tensor([3, 7])
    alg.train_step({"x": torch.randn(2, 3, 32, 32), "index": idx,
                    "unlabeled": {"uci": torch.randn(2, 3, 32, 32)},
                    "unlabeled_index": {"uci": torch.tensor([0, 1])}})
    changed = (alg.bank_a != before).any(1)
    assert changed.nonzero().flatten().tolist() == [3, 7]
    assert alg.seen_a.nonzero().flatten().tolist() == [3, 7]
    assert torch.allclose(alg.bank_a.norm(dim=1), torch.ones(30))


def test_alpha_eq10():
    assert L.ipm_alpha(50, 100) == 0.5
    assert L.ipm_alpha(0, 100) == pytest.approx(1 / (1 + math.exp(50)))
    assert L.ipm_alpha(0, 10 ** 6) == pytest.approx(0.0, abs=1e-300)       # no overflow


# ---------------------------------------------------------------- Eq. 8-9
def test_translate_hungarian_merge_eq8_9_by_hand():
    pa = torch.tensor([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]])
    pb = torch.tensor([[1.5, 1.0], [11.0, 1.0], [50.0, 50.0]])
    # translation by mean(M^A) - mean(M^B) = (-1, -1): B -> A = (0.5, 0), (10, 0), (49, 49)
    m = L.translate_merge(pa, pb, torch.tensor([2.0, 3.0]), torch.tensor([3.0, 4.0]))
    # threshold: min(min pairwise A = 10, min pairwise B = 10) = 10: pairs (0,0) d=0.5, (1,1)
    # d=0 merge; (2,2) d=62.6 does not
    assert m.pairs == ((0, 0), (1, 1))
    expected = torch.tensor([[0.0, 10.0],            # A's unmerged prototype 2
                             [49.0, 49.0],           # B's unmerged prototype 2, translated
                             [0.25, 0.0],            # (p^A_0 + p^{B->A}_0) / 2
                             [10.0, 0.0]])           # (p^A_1 + p^{B->A}_1) / 2
    assert torch.allclose(m.prototypes, expected)
    assert m.own.tolist() == [2, 3, 0] and m.other.tolist() == [2, 3, 1]
    assert m.is_merged().tolist() == [False, False, True, True]


def test_hungarian_is_one_to_one_where_nearest_neighbours_collide():
    pa = torch.tensor([[0.0, 0.0], [3.0, 0.0]])
    pb = torch.tensor([[2.0, 0.0], [5.0, 0.0]])      # both A prototypes' nearest: pb[0]
    zero = torch.zeros(2)
    m = L.translate_merge(pa, pb, zero, zero)
    assert m.pairs == ((0, 0), (1, 1))               # total 4 beats (0,1)+(1,0) = 6
    assert torch.allclose(m.prototypes, torch.tensor([[1.0, 0.0], [4.0, 0.0]]))
    m = L.translate_merge(pa, pb * 2, zero, zero)    # B spread wider; d >= limit: no merge
    assert m.pairs == () and len(m.prototypes) == 4


def test_without_merging_the_translated_prototypes_stay_apart():
    pa = torch.tensor([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]])
    pb = torch.tensor([[1.5, 1.0], [11.0, 1.0]])
    m = L.translate_merge(pa, pb, torch.tensor([2.0, 3.0]), torch.tensor([3.0, 4.0]),
                          merge=False)
    assert m.pairs == ()                     # (0,0) and (1,1) would merge with merge=True
    assert torch.allclose(m.prototypes, torch.cat([pa, pb - 1.0]))
    assert m.own.tolist() == [0, 1, 2] and m.other.tolist() == [3, 4]


# ---------------------------------------------------------------- Eq. 11
def test_sel_eq11_against_a_direct_sum():
    g = torch.Generator().manual_seed(1)
    z = F.normalize(torch.randn(4, 3, generator=g), dim=1)
    p = torch.randn(5, 3, generator=g)
    total = 0.0
    for i in range(4):
        logits = [float(z[i] @ p[c]) / TAU for c in range(5)]
        norm = sum(math.exp(v) for v in logits)
        total += sum(math.exp(logits[c]) / norm * float((z[i] - p[c]).norm()) for c in range(5))
    assert L.semantic_enhanced_loss(z, p, TAU).item() == pytest.approx(total / 4, rel=1e-5)


# ---------------------------------------------------------------- Eq. 13-14
def test_dal_eq13_labels_a_one_and_b_zero():
    la, lb = torch.tensor([[2.0], [0.0]]), torch.tensor([[-1.0]])
    sig = lambda v: 1 / (1 + math.exp(-v))  # noqa: E731
    expected = -(math.log(sig(2)) + math.log(sig(0)) + math.log(1 - sig(-1))) / 3
    assert L.domain_adversarial_loss(la, lb).item() == pytest.approx(expected, rel=1e-6)
    x = torch.ones(3, requires_grad=True)
    (L.GradReverse.apply(x, 0.5) * torch.tensor([1.0, 2.0, 3.0])).sum().backward()
    assert torch.equal(x.grad, torch.tensor([-0.5, -1.0, -1.5]))


def test_spr_eq14_zero_for_the_unchanged_model_positive_after_a_perturbation():
    alg = _uem(uem_idse_fraction=0.0)
    alg.enter_stage(CDSM)
    x = torch.randn(6, 3, 32, 32)
    with torch.no_grad():
        z = F.normalize(alg.network(x), dim=1)
        zf = F.normalize(alg.frozen_net(x), dim=1)
    assert L.semantic_preserving_loss(z, zf).item() == 0.0
    with torch.no_grad():
        for p in alg.network.parameters():
            p.add_(0.05 * torch.randn_like(p))
        z2 = F.normalize(alg.network(x), dim=1)
    assert L.semantic_preserving_loss(z2, zf).item() > 0.0
    assert not any(p.requires_grad for p in alg.frozen_net.parameters())
    # by hand on two points: cos 0 vs 1 -> (0 - 1)^2; d sqrt(2) vs 0 -> 2; two ordered pairs
    a, b = _unit([1, 0], [0, 1]), _unit([1, 0], [1, 0])
    assert L.semantic_preserving_loss(a, b).item() == pytest.approx(2 * (1 + 2) / 4, rel=1e-5)


# ---------------------------------------------------------------- Eq. 15-17
def test_sn2m_eq15_17_both_switch_branches_by_hand():
    pa = _unit([1, 0, 0], [0, 1, 0])                         # A's own prototypes
    merged_b = L.Merged(prototypes=_unit([1, 0.1, 0], [0, 0.2, 1], [0, 1, 0.1]),
                        own=torch.tensor([0, 1]),            # B's prototypes -> rows 0, 1
                        other=torch.tensor([0, 2]),          # A's prototypes -> rows 0, 2
                        pairs=((0, 0),))
    bank = _unit([1, 0.05, 0], [0, 0.9, 0.5], [0, 0, 1])     # B's memory
    assign = torch.tensor([0, 1, 1])                         # B's own prototype per entry
    z = _unit([1, 0, 0.02], [0.05, 1, 0])
    loss, agree = L.sn2m_loss(z, L.SN2MInputs(pa, merged_b, bank, assign), TAU)
    # query 0: c = 0 -> p~ = row 0; neighbour entry 0, in B's prototype 0 -> row 0: agrees
    # query 1: c = 1 -> p~ = row 2; neighbour entry 1, in B's prototype 1 -> row 1: switches
    assert agree.item() == 0.5
    total = 0.0
    for i, (nn_entry, target, agrees) in enumerate([(0, 0, True), (1, 2, False)]):
        e = lambda v: math.exp(float(z[i] @ v) / TAU)  # noqa: E731
        denom = sum(e(p) for p in merged_b.prototypes) + sum(e(m) for m in bank)
        delta = e(merged_b.prototypes[target]) + (e(bank[nn_entry]) if agrees else 0.0)
        total += -math.log(delta / denom)
    assert loss.item() == pytest.approx(total / 2, rel=1e-5)


def test_search_distance_is_one_minus_cos_times_euclidean():
    u, v = torch.tensor([[3.0, 0.0]]), torch.tensor([[0.0, 4.0]])
    assert L.search_distance(u, v).item() == pytest.approx(1.0 * 5.0)


# ---------------------------------------------------------------- App. B.1
def _ring(angles_deg, per, jitter, seed):
    g = torch.Generator().manual_seed(seed)
    a = torch.tensor(angles_deg, dtype=torch.float32).repeat_interleave(per) * math.pi / 180
    a = a + jitter * torch.randn(len(a), generator=g)
    return torch.stack([a.cos(), a.sin()], 1)


def test_detector_rejects_exactly_the_private_cluster():
    fa = _ring([0, 120, 240], 10, 0.05, 0)                 # query domain: class 240 private
    fb = _ring([0, 120], 10, 0.05, 1)
    pa, assign_a, _ = kmeans(fa, 3, seed=0)
    pb, assign_b, _ = kmeans(fb, 2, seed=0)
    margin = L.detector_margin(fa, fb, pa, assign_a, pb, assign_b)
    private = torch.arange(30) >= 20
    assert (margin[private] == -10.0).all()                 # nearest prototype unmerged
    assert (margin[~private] >= 0).all()
    # Eq. 25-27 by hand for query 0: D_c+ over its cluster pair minus its min D to B
    own = assign_a == assign_a[0]
    pair_b = assign_b == assign_b[int(L.search_distance(fa[:1], fb).argmin())]
    d_c = float(L.search_distance(fa[own], fb[pair_b]).max())
    d_i = float(L.search_distance(fa[:1], fb).min())
    assert margin[0].item() == pytest.approx(d_c - d_i, rel=1e-5)


def test_detector_rule_gives_detection_accuracy_for_any_embeddings():
    from sdgdml.evaluation import OpenSetRule, cross_domain_metrics

    fa = _ring([0, 120, 240], 10, 0.05, 0)
    fb = _ring([0, 120], 10, 0.05, 1)
    out = cross_domain_metrics(fa, np.repeat([0, 1, 2], 10), fb, np.repeat([0, 1], 10),
                               open_set=OpenSetRule("detector", max_clusters=6))
    assert out["detect_acc"] == 1.0 and out["open_acc"] == 1.0 and out["shared_accept"] == 1.0


# ---------------------------------------------------------------- switches, stages
@pytest.mark.parametrize("switch,gone,added", [
    (None, set(), set()), ("uem_sel", {"uem_sel"}, set()), ("uem_spr", {"uem_spr"}, set()),
    ("uem_merge", set(), set()),
    ("uem_sn2m", {"uem_sn2m"}, {"uem_nnm"})])
def test_table4_switches(switch, gone, added):
    alg = _uem(uem_idse_fraction=0.5, **({switch: False} if switch else {}))
    seen = set()
    for step in range(20):
        logs = alg.train_step({"x": torch.randn(8, 3, 32, 32),
                               "index": torch.arange(8) + (step % 3) * 8,
                               "unlabeled": {"uci": torch.randn(8, 3, 32, 32)},
                               "unlabeled_index": {"uci": torch.arange(8) + (step % 2) * 8}})
        seen |= {k for k in logs if k in ("uem_ince", "uem_pnce", "uem_sel", "uem_dal",
                                          "uem_spr", "uem_sn2m", "uem_nnm")}
        terms = [v for k, v in logs.items() if k in ("uem_ince", "uem_pnce", "uem_sel",
                                                     "uem_dal", "uem_spr", "uem_sn2m",
                                                     "uem_nnm")]
        assert logs["loss"] == pytest.approx(sum(terms), rel=1e-5)
        if step >= 10:      # stage 2 is L_DAL + L_SPR + L_SN2M only (Eq. 18)
            assert not {"uem_ince", "uem_pnce", "uem_sel"} & set(logs)
    full = {"uem_ince", "uem_pnce", "uem_sel", "uem_dal", "uem_spr", "uem_sn2m"}
    assert seen == (full - gone) | added


def test_without_merging_the_model_still_trains_both_stages():
    alg = _uem(uem_merge=False, uem_idse_fraction=0.5)
    for step in range(20):
        logs = alg.train_step({"x": torch.randn(8, 3, 32, 32),
                               "index": torch.arange(8) + (step % 3) * 8,
                               "unlabeled": {"uci": torch.randn(8, 3, 32, 32)},
                               "unlabeled_index": {"uci": torch.arange(8) + (step % 2) * 8}})
    assert alg.merged["a"].pairs == () and logs["uem_merged"] == 0.0
    assert len(alg.merged["a"].prototypes) == int(alg.k_a) + int(alg.k_b)
    assert "uem_sn2m" in logs


def test_stage_switch_and_frozen_copy_in_the_checkpoint():
    alg = _uem(uem_idse_fraction=0.5)
    assert [alg.stage_at(s) for s in (0, 9, 10, 19)] == [IDSE, IDSE, CDSM, CDSM]
    alg.stage = CDSM
    alg.enter_stage(CDSM)
    state = alg.state_dict()
    assert any(k.startswith("frozen_net.") for k in state["modules"])
    fresh = _uem(uem_idse_fraction=0.5)
    fresh.load_state_dict(state)
    assert fresh.stage == CDSM and fresh.frozen_net is not None


def test_table4_sweep_file():
    spec = yaml.safe_load((Path(__file__).parents[1] / "sweeps" / "uem_table4.yaml").read_text())
    assert spec["train_args"]["ucdr"] == "open"
    assert spec["train_args"]["open_rule"] == "detector"
    assert spec.get("trial_seeds", spec.get("seeds")) in (None, [2024, 2025, 2026])
    switches = []
    for entry in spec["algorithms"]:
        overrides = entry.get("hparams", {}) if isinstance(entry, dict) else {}
        hparams_registry.get_hparams("UEM", "OfficeHome", overrides=overrides)
        switches.append(tuple(sorted(overrides.items())))
    assert sorted(switches) == sorted([(), (("uem_merge", False),), (("uem_sel", False),),
                                       (("uem_spr", False),), (("uem_sn2m", False),)])


# ---------------------------------------------------------------- end to end
def _run(tmp_path, name, dataset, extra=(), steps=8, freq=4, idse=0.5):
    out = tmp_path / name
    main(["--algorithm", "UEM", "--dataset", dataset, "--targets", "uci", "--output_dir",
          str(out), "--steps", str(steps), "--checkpoint_freq", str(freq), "--quiet",
          "--save_model", "--no_eval_at_start",
          "--hparams", json.dumps({"uem_cluster_every": 0.07, "uem_idse_fraction": idse,
                                   "uem_elbow_max_k": 8}), *extra])
    return read_records(out / "results.jsonl"), torch.load(out / "model.pt")


TRAINING_KEYS = ("loss", "uem_ince", "uem_pnce", "uem_sel", "uem_dal", "uem_spr", "uem_sn2m",
                 "uem_k_a", "uem_k_b", "uem_merged")


def test_labels_are_never_read_in_training(tmp_path, monkeypatch):
    monkeypatch.setitem(DATASETS, "PoisonedDigits", PoisonedDigits)
    monkeypatch.setattr(hparams_registry, "SMALL_IMAGE_DATASETS",
                        hparams_registry.SMALL_IMAGE_DATASETS | {"PoisonedDigits"})
    rec, model = _run(tmp_path, "clean", "DigitsDG", ["--ucdr", "closed"], 6, 6)
    rec_p, model_p = _run(tmp_path, "poisoned", "PoisonedDigits", ["--ucdr", "closed"], 6, 6)
    assert all(torch.equal(model[k], model_p[k]) for k in model)          # bit-identical
    assert {"uem_dal", "uem_spr", "uem_sn2m"} <= set(rec[-1])            # both stages ran
    for r, rp in zip(rec, rec_p):
        assert all(r.get(k) == rp.get(k) for k in TRAINING_KEYS)
    assert rec[-1]["mnist->uci_closed_map@all"] != rec_p[-1]["mnist->uci_closed_map@all"]


@pytest.mark.parametrize("idse,crash", [(0.25, 6), (0.75, 5)], ids=["stage2", "stage1"])
def test_open_set_end_to_end_and_resume_in_either_stage_is_exact(tmp_path, monkeypatch, idse,
                                                                   crash):
    """Killed at step ``crash``, resumed from the step-4 checkpoint: in stage 2 (it starts at
    step 2: the frozen copy comes from the checkpoint) or in stage 1 (the switch at step 6
    happens after the resume); records and model equal the uninterrupted run's."""
    extra = ["--ucdr", "open", "--open_rule", "detector", "--open_max_clusters", "6"]
    rec, model = _run(tmp_path, "full", "DigitsDG", extra, idse=idse)
    last = rec[-1]
    for key in ("map@all", "detect_acc", "open_acc", "shared_accept", "open_auroc",
                "thr_open_auroc", "thr_detect_acc"):
        assert 0.0 <= last[f"mnist->uci_open_{key}"] <= 1.0
    assert {"uem_dal", "uem_spr", "uem_sn2m"} <= set(last)            # stage 2 reached
    original = UEM.update

    def crash_at(self, batch):
        if self.step == crash:
            raise KeyboardInterrupt
        return original(self, batch)

    monkeypatch.setattr(UEM, "update", crash_at)
    with pytest.raises(KeyboardInterrupt):
        _run(tmp_path, "resumed", "DigitsDG", extra, idse=idse)
    monkeypatch.setattr(UEM, "update", original)
    rec_r, model_r = _run(tmp_path, "resumed", "DigitsDG", extra, idse=idse)
    assert all(torch.equal(model[k], model_r[k]) for k in model)
    assert [r["step"] for r in rec_r] == [r["step"] for r in rec] == [4, 8]
    for r, r_r in zip(rec, rec_r):
        keys = [k for k in r if k.startswith("mnist->uci") or k in TRAINING_KEYS]
        assert all(r_r[k] == r[k] for k in keys)


# ---------------------------------------------------------------- backbone weights
def test_moco_checkpoint_layout_loads_and_uem_refuses_to_start_without_it(tmp_path):
    import argparse

    import timm

    from sdgdml.algorithms import UnknownAlgorithmError
    from sdgdml.networks import create_backbone, is_moco_checkpoint

    src = timm.create_model("resnet18", pretrained=False, num_classes=0)
    state = {f"module.encoder_q.{k}": v for k, v in src.state_dict().items()}
    state["module.encoder_q.fc.0.weight"] = torch.zeros(4, 512)     # MoCo v2's MLP head
    state["module.encoder_k.conv1.weight"] = torch.zeros(1)         # the key encoder
    path = tmp_path / "moco_v2.pth.tar"
    torch.save({"epoch": 800, "arch": "resnet18", "state_dict": state}, path)
    plain = tmp_path / "plain.pth"
    torch.save(src.state_dict(), plain)
    assert is_moco_checkpoint(path) and not is_moco_checkpoint(plain)
    loaded = create_backbone("resnet18", pretrained_file=str(path))
    assert all(torch.equal(v, loaded.state_dict()[k]) for k, v in src.state_dict().items())

    def check(file, **overrides):
        hp = hparams_registry.get_hparams("UEM", "DigitsDG", overrides=overrides)
        UEM.check_options(argparse.Namespace(pretrained_file=file, targets=["uci"]), hp)

    with pytest.raises(UnknownAlgorithmError, match="MoCo v2"):
        check(None, uem_init="moco_v2")
    with pytest.raises(UnknownAlgorithmError, match="MoCo v2"):
        check(str(plain), uem_init="moco_v2")
    check(str(path), uem_init="moco_v2")                                      # accepted
    with pytest.raises(UnknownAlgorithmError, match="pretrained true"):
        check(None, uem_init="supervised", pretrained=False)
    with pytest.raises(UnknownAlgorithmError, match="MoCo checkpoint"):
        check(str(path), uem_init="supervised", pretrained=False)
