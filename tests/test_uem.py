"""UEM as published, the algorithm (its equations alone: tests/test_uem_losses.py): a
training step's bank update, Eq. 14 L_SPR against the frozen copy, the stage switch and its
frozen copy, the Table 4 switches, that no label (nor the
class count) is ever read, and exact resume in stage 2 of an end-to-end DigitsDG run."""
import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
import yaml

from sdgdml import hparams_registry
from sdgdml.algorithms import Schedule, algorithm_class, step_scalars
from sdgdml.algorithms import uem_losses as L
from sdgdml.algorithms.uem import CDSM, IDSE, UEM
from sdgdml.datasets import DATASETS
from sdgdml.networks import create_model
from sdgdml.records import read_records
from sdgdml.train import main
from helpers import PoisonedDigits



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


# ---------------------------------------------------------------- steps of the algorithm
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


# ---------------------------------------------------------------- switches, stages
@pytest.mark.parametrize("switch,gone,added", [
    (None, set(), set()), ("uem_sel", {"uem_sel"}, set()), ("uem_spr", {"uem_spr"}, set()),
    ("uem_merge", set(), set()),
    ("uem_sn2m", {"uem_sn2m"}, {"uem_ucdir"})])
def test_table4_switches(switch, gone, added):
    alg = _uem(uem_idse_fraction=0.5, **({switch: False} if switch else {}))
    seen = set()
    for step in range(20):
        logs = step_scalars(alg.train_step({
            "x": torch.randn(8, 3, 32, 32), "index": torch.arange(8) + (step % 3) * 8,
            "unlabeled": {"uci": torch.randn(8, 3, 32, 32)},
            "unlabeled_index": {"uci": torch.arange(8) + (step % 2) * 8}}))
        seen |= {k for k in logs if k in ("uem_ince", "uem_pnce", "uem_sel", "uem_dal",
                                          "uem_spr", "uem_sn2m", "uem_ucdir")}
        terms = [v for k, v in logs.items() if k in ("uem_ince", "uem_pnce", "uem_sel",
                                                     "uem_dal", "uem_spr", "uem_sn2m",
                                                     "uem_ucdir")]
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
    assert alg.merged["a"].pairs == ()                  # IDSE: nothing merges
    assert logs["uem_merged"] == len(alg.matched["a"].pairs)      # SN2M's sets still merge
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
    """A short UEM run on 16-pixel images; the Elbow estimates (training: k in [1, 5];
    evaluation's detector, ``--open_max_clusters`` 4 in the open-set tests) kept small, as
    their cost grows with the sum of the k tried."""
    out = tmp_path / name
    main(["--algorithm", "UEM", "--dataset", dataset, "--targets", "uci", "--output_dir",
          str(out), "--steps", str(steps), "--checkpoint_freq", str(freq), "--quiet",
          "--save_model", "--no_eval_at_start",
          "--hparams", json.dumps({"uem_cluster_every": 0.07, "uem_idse_fraction": idse,
                                   "uem_elbow_max_k": 5, "batch_size": 32,
                                   "image_size": 16}), *extra])
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
    extra = ["--ucdr", "open", "--open_rule", "detector", "--open_max_clusters", "4"]
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
