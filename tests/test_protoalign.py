"""ProtoAlign (the slides-based former UEM): the IPM schedule, its losses on hand-made cases, the
ablation switches, that no label is ever read in training, exact resume, an end-to-end run."""
import json
import math

import pytest
import torch
import torch.nn.functional as F

from sdgdml import hparams_registry
from sdgdml.algorithms import Schedule, algorithm_class, step_scalars
from sdgdml.algorithms.protoalign import (ProtoAlign, _GradReverse, ipm_alpha, nt_xent, view_augment)
from sdgdml.datasets import DATASETS
from sdgdml.networks import create_model
from sdgdml.records import read_records
from sdgdml.train import main
from helpers import PoisonedDigits

TRAINING_KEYS = ("loss", "pal_alpha", "pal_ince", "pal_pnce", "pal_sel", "pal_spda", "pal_sn2m",
                 "pal_sn2m_instance_frac")


def _uem(num_classes=4, **overrides):
    hp = hparams_registry.get_hparams("ProtoAlign", "DigitsDG", overrides=overrides)
    torch.manual_seed(0)
    return ProtoAlign(create_model(hp), num_classes, hp, Schedule(total_steps=20, steps_per_epoch=5))


def test_pal_is_unsupervised_and_transductive():
    cls = algorithm_class("ProtoAlign")
    assert cls is ProtoAlign and not cls.NEEDS.labels and cls.NEEDS.unlabeled_targets


def test_bad_choices_are_clear_errors():
    with pytest.raises(ValueError, match="known: switch, instance, prototype"):
        _uem(pal_sn2m_mode="mutual")
    with pytest.raises(ValueError, match="known: torch, sklearn"):
        _uem(pal_kmeans_backend="faiss")


def test_alpha_schedule_values():
    assert ipm_alpha(15, 30) == 0.5                                    # e = E / 2
    assert ipm_alpha(0, 30) == pytest.approx(1 / (1 + math.exp(15)))
    assert ipm_alpha(0, 3000) == pytest.approx(0.0, abs=1e-300)        # no overflow
    assert ipm_alpha(3000, 3000) == 1.0
    assert ipm_alpha(30, 30) == pytest.approx(1 / (1 + math.exp(-15)))
    assert ipm_alpha(10, 10) == pytest.approx(0.9933071490757153)
    values = [ipm_alpha(e, 30) for e in range(31)]
    assert all(a < b for a, b in zip(values, values[1:]))


def test_alpha_in_training_uses_the_current_epoch_index():
    alg = _uem()
    x = torch.randn(4, 3, 32, 32)
    for step in (0, 7, 12):
        alg.step = step
        logs = alg.update({"x": x, "unlabeled": {"t": x}})
        assert logs["pal_alpha"] == ipm_alpha(step // 5, 4.0)


def test_nt_xent_matches_a_brute_force_sum():
    g = torch.Generator().manual_seed(0)
    z1, z2 = (F.normalize(torch.randn(3, 5, generator=g), dim=1) for _ in range(2))
    z = torch.cat([z1, z2])
    total = 0.0
    for i in range(6):
        pos = (i + 3) % 6
        denom = sum(math.exp(float(z[i] @ z[j]) / 0.2) for j in range(6) if j != i)
        total += -math.log(math.exp(float(z[i] @ z[pos]) / 0.2) / denom)
    assert nt_xent(z1, z2, 0.2).item() == pytest.approx(total / 6, rel=1e-5)


def test_view_augment_without_augmentation_is_the_identity():
    x = torch.randn(4, 3, 16, 16)
    assert torch.allclose(view_augment(x, 1.0, 0.0, False), x, atol=1e-5)
    assert not torch.allclose(view_augment(x, 0.5, 0.4, True), x, atol=1e-2)


def test_gradient_reversal():
    x = torch.randn(5, requires_grad=True)
    (_GradReverse.apply(x) * torch.arange(5.0)).sum().backward()
    assert torch.equal(x.grad, -torch.arange(5.0))


def _set_memory(alg, name, centroids, bank):
    m = alg._memory(name)
    m.centroids.copy_(centroids)
    m.anchor_of.copy_(torch.arange(len(centroids)))
    m.push(bank)
    return m


def test_sn2m_switches_from_the_neighbour_to_the_prototype_on_a_hand_made_case():
    alg = _uem(num_classes=4, embed_dim=8)
    alg.anchors.copy_(torch.eye(8)[:4])
    axes = torch.eye(8)[:4]
    a = _set_memory(alg, "source", axes, axes)
    # B's memory holds images of classes 0 and 1 only
    b = _set_memory(alg, "t", axes, F.normalize(torch.eye(8)[[0, 0, 1, 1]] + 0.05, dim=1))
    q = torch.stack([axes[0], F.normalize(axes[2] + 0.3 * axes[1], dim=0)])
    # query 0: neighbour in B's prototype 0 = its own -> instance match
    # query 1: prototype 2, but its nearest B image is in prototype 1 -> switch to B's prototype 2
    loss, frac = alg._sn2m_one_way(q, a, b)
    assert frac.item() == 0.5
    bank = b.bank()
    nn0 = int((q[0] @ bank.T).argmax())
    expected = (F.cross_entropy((q[0] @ bank.T / 0.1).unsqueeze(0), torch.tensor([nn0]))
                + F.cross_entropy((q[1] @ b.centroids.T / 0.1).unsqueeze(0), torch.tensor([2])))
    assert loss.item() == pytest.approx(expected.item() / 2, rel=1e-5)
    alg.hparams["pal_sn2m_mode"] = "instance"
    assert alg._sn2m_one_way(q, a, b)[1].item() == 1.0
    alg.hparams["pal_sn2m_mode"] = "prototype"
    assert alg._sn2m_one_way(q, a, b)[1].item() == 0.0
    alg.hparams["pal_sn2m_mode"] = "switch"
    alg.hparams["pal_sn2m_threshold"] = 1.5                            # every match dropped
    assert alg._sn2m_one_way(q, a, b)[0].item() == 0.0


def test_spda_ignores_prototype_cells_held_by_one_domain_only():
    alg = _uem(num_classes=4, embed_dim=8)
    zs = {"source": F.normalize(torch.randn(6, 8), dim=1),
          "t": F.normalize(torch.randn(6, 8), dim=1)}
    alg._memory("source").mass.copy_(torch.tensor([0.5, 0.5, 0.0, 0.0]))
    alg._memory("t").mass.copy_(torch.tensor([0.0, 0.0, 0.5, 0.5]))
    assert alg._spda(zs).item() == 0.0                                 # no shared cell
    alg._memory("t").mass.copy_(torch.tensor([0.5, 0.5, 0.0, 0.0]))
    assert alg._spda(zs).item() > 0.0


def _ready_uem(**overrides):
    alg = _uem(pal_stage2_start=0.0, **overrides)
    for name in ("source", "t"):
        alg._memory(name).push(F.normalize(torch.randn(40, 64), dim=1))
    alg.recluster()
    assert bool(alg.ready) and alg.is_ready
    alg.step = 1
    return alg


@pytest.mark.parametrize("switch,term", [(None, None), ("pal_proto_mix", "pal_pnce"),
                                         ("pal_sel", "pal_sel"), ("pal_spda", "pal_spda"),
                                         ("pal_sn2m", "pal_sn2m")])
def test_each_ablation_switch_removes_exactly_its_term(switch, term):
    alg = _ready_uem(**({switch: False} if switch else {}))
    x = torch.randn(8, 3, 32, 32)
    logs = step_scalars(alg.update({"x": x, "unlabeled": {"t": x.flip(0)}}))
    full = {"pal_ince", "pal_pnce", "pal_sel", "pal_spda", "pal_sn2m"}
    assert {k for k in logs if k in full} == full - {term}
    assert logs["loss"] == pytest.approx(sum(logs[k] for k in full - {term}), rel=1e-5)


def test_ablation_sweep_file_switches_one_component_per_variant():
    from pathlib import Path

    import yaml

    path = Path(__file__).parents[1] / "sweeps" / "protoalign_ablation.yaml"
    spec = yaml.safe_load(path.read_text())
    assert spec["train_args"]["ucdr"] == "open"
    switches = []
    for entry in spec["algorithms"]:
        overrides = entry.get("hparams", {}) if isinstance(entry, dict) else {}
        hparams_registry.get_hparams("ProtoAlign", "DigitsDG", overrides=overrides)     # valid names
        switches.append(tuple(sorted(overrides.items())))
    assert sorted(switches) == sorted([(), (("pal_proto_mix", False),), (("pal_sel", False),),
                                       (("pal_spda", False),), (("pal_sn2m", False),)])


def _run(tmp_path, name, dataset, extra=(), freq=3):
    out = tmp_path / name
    main(["--algorithm", "ProtoAlign", "--dataset", dataset, "--targets", "uci", "--output_dir",
          str(out), "--steps", "6", "--checkpoint_freq", str(freq), "--no_eval_at_start",
          "--quiet", "--save_model",
          "--hparams", json.dumps({"pal_cluster_every": 0.1, "pal_stage2_start": 0.3,
                                   "image_size": 16}),
          *extra])
    return read_records(out / "results.jsonl"), torch.load(out / "model.pt")


def test_labels_are_never_read_in_training(tmp_path, monkeypatch):
    monkeypatch.setitem(DATASETS, "PoisonedDigits", PoisonedDigits)
    monkeypatch.setattr(hparams_registry, "SMALL_IMAGE_DATASETS",
                        hparams_registry.SMALL_IMAGE_DATASETS | {"PoisonedDigits"})
    # the same 6 steps (both stages, every term) as the resume test; one evaluation, at the end
    rec, model = _run(tmp_path, "clean", "DigitsDG", ["--ucdr", "closed"], freq=6)
    rec_p, model_p = _run(tmp_path, "poisoned", "PoisonedDigits", ["--ucdr", "closed"], freq=6)
    assert all(torch.equal(model[k], model_p[k]) for k in model)          # bit-identical
    assert [r["step"] for r in rec] == [r["step"] for r in rec_p] == [6]
    assert all(k in rec[-1] for k in TRAINING_KEYS)                  # every term was active
    for r, rp in zip(rec, rec_p):
        assert all(r.get(k) == rp.get(k) for k in TRAINING_KEYS)
    # the poison is real: the label-based evaluation differs
    assert rec[-1]["mnist->uci_closed_map@all"] != rec_p[-1]["mnist->uci_closed_map@all"]


def test_trains_end_to_end_on_an_open_set_split_and_resumes_exactly(tmp_path, monkeypatch):
    rec, model = _run(tmp_path, "full", "DigitsDG", ["--ucdr", "open"])
    last = rec[-1]
    for key in ("map@all", "precision@1", "precision@5", "precision@15", "open_acc",
                "shared_accept", "open_hmean", "open_auroc"):
        assert 0.0 <= last[f"mnist->uci_open_{key}"] <= 1.0
    assert all(k in last for k in TRAINING_KEYS)                     # every term was active
    # interrupt after the step-3 checkpoint, then resume: identical to the uninterrupted run
    original = ProtoAlign.update

    def crash_at_4(self, batch):
        if self.step == 4:
            raise KeyboardInterrupt
        return original(self, batch)

    monkeypatch.setattr(ProtoAlign, "update", crash_at_4)
    with pytest.raises(KeyboardInterrupt):
        _run(tmp_path, "resumed", "DigitsDG", ["--ucdr", "open"])
    monkeypatch.setattr(ProtoAlign, "update", original)
    rec_r, model_r = _run(tmp_path, "resumed", "DigitsDG", ["--ucdr", "open"])
    assert all(torch.equal(model[k], model_r[k]) for k in model)
    metric_keys = [k for k in last if k.startswith("mnist->uci") or k in TRAINING_KEYS]
    assert [r["step"] for r in rec_r] == [r["step"] for r in rec]
    assert all(rec_r[-1][k] == last[k] for k in metric_keys)
