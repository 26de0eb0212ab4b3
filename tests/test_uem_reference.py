"""UEM against its paper and UCDIR's released code (github conghuihu/UCDIR, UEM's base), through
the algorithm's real training step where a difference lived there: L_SPR (Eq. 14) is 0 for an
unchanged network, memory banks (Eq. 5) start from the whole domain, each Table 4 switch removes
one part ("w/o SN2M" = UCDIR's own cross-domain terms), MoCo v2 loads whole, SN2M never reads a
K-Means label of -1, the Elbow never returns K = 1; and the MoCo v2 pre-training command."""
import json

import pytest
import torch
import torch.nn.functional as F

from sdgdml import hparams_registry
from sdgdml.algorithms import Schedule
from sdgdml.algorithms import uem_losses as L
from sdgdml.algorithms.uem import CDSM, UEM
from sdgdml.clustering import elbow_k, elbow_point
from sdgdml.networks import create_model, is_moco_checkpoint


def _uem(**overrides):
    hp = hparams_registry.get_hparams("UEM", "DigitsDG", overrides=overrides)
    torch.manual_seed(0)
    return UEM(create_model(hp), None, hp, Schedule(total_steps=12, steps_per_epoch=4),
               {"mnist": 24, "uci": 16})


def _batch(step, n=8):
    gen = torch.Generator().manual_seed(step)
    return {"x": torch.randn(n, 3, 32, 32, generator=gen), "index": (torch.arange(n) + step * n) % 24,
            "unlabeled": {"uci": torch.randn(n, 3, 32, 32, generator=gen) + 1.0},
            "unlabeled_index": {"uci": (torch.arange(n) + step * n) % 16}}


def _started(alg):
    """``start`` as the trainer calls it: every image of both domains embedded first."""
    gen = torch.Generator().manual_seed(99)
    feats = {"mnist": torch.randn(24, alg.hparams["embed_dim"], generator=gen),
             "uci": torch.randn(16, alg.hparams["embed_dim"], generator=gen)}
    alg.start(lambda: feats)
    return feats


# ---------------------------------------------------------------- Eq. 14 through the step
def test_spr_is_zero_for_an_unchanged_network_through_the_training_step():
    """lr 1e-300 (0 in float32; lr must be > 0): the network never moves, so f = f' and
    L_SPR (Eq. 14) is exactly 0 at every stage-2 step; the frozen copy must see the training
    network's batch statistics (both domains in one forward), which a per-domain forward of f'
    does not."""
    alg = _uem(lr=1e-300, uem_idse_fraction=0.5, uem_num_prototypes=3)
    _started(alg)
    sprs = [alg.train_step(_batch(s)).get("uem_spr") for s in range(8)]
    assert alg.stage == CDSM and sprs[:6] == [None] * 6 and sprs[6:] == [0.0, 0.0]
    x = _batch(0)
    with torch.no_grad():           # the bug this guards against: BatchNorm per domain
        alone = F.normalize(alg.frozen_net(x["x"]), dim=1)
        together = alg._frozen_features({"a": x["x"], "b": x["unlabeled"]["uci"]})["a"]
    assert L.semantic_preserving_loss(together, alone).item() > 1e-4


# ---------------------------------------------------------------- Eq. 5 initialisation
def test_banks_start_from_the_whole_domain_before_the_first_step():
    alg = _uem(uem_idse_fraction=1.0, uem_num_prototypes=3)
    feats = _started(alg)
    assert torch.equal(alg.bank_a, F.normalize(feats["mnist"], dim=1))
    assert torch.equal(alg.bank_b, F.normalize(feats["uci"], dim=1))
    assert bool(alg.seen_a.all() and alg.seen_b.all())
    alg.train_step(_batch(0))       # first K-Means runs on the whole bank, every entry labelled
    assert bool((alg.assign_a >= 0).all() and (alg.assign_b >= 0).all())


# ---------------------------------------------------------------- Table 4 switches
def _clustered(alg, seed=0):
    """Banks of 4 tight clusters per domain around the same centres (every pair merges), then
    K-Means."""
    gen = torch.Generator().manual_seed(seed)
    dim = alg.hparams["embed_dim"]
    centres = F.normalize(torch.randn(4, dim, generator=gen), dim=1)
    feats = {d: centres.repeat(n // 4, 1) + 0.005 * torch.randn(n, dim, generator=gen)
             for d, n in (("mnist", 24), ("uci", 16))}
    alg.start(lambda: feats)
    alg.recluster(elbow=True)


def test_without_merging_only_idse_loses_the_merge_and_sn2m_keeps_its_positives():
    full, ablated = _uem(uem_num_prototypes=4), _uem(uem_num_prototypes=4, uem_merge=False)
    _clustered(full)
    _clustered(ablated)
    assert len(full.merged["a"].pairs) == 4 and ablated.merged["a"].pairs == ()
    assert len(ablated.merged["a"].prototypes) == 8           # side by side in IDSE
    z = F.normalize(full.bank_a[:8] + 0.01, dim=1)
    for role in ("a", "b"):
        ours = L.sn2m_loss(z, ablated._sn2m_inputs(role), 0.07)
        ref = L.sn2m_loss(z, full._sn2m_inputs(role), 0.07)
        assert torch.equal(ours[0], ref[0]) and ours[1] == ref[1]
    assert L.sn2m_loss(z, ablated._sn2m_inputs("a"), 0.07)[1] == 1.0      # positives kept


def test_without_sn2m_is_ucdirs_cross_domain_terms_by_their_definition():
    """UCDIR's builder.py on fixed inputs, written out term by term: self-entropy of
    softmax(f.p/0.1) for the four (features, prototypes) domain pairs, mean, x0.5;
    distance-of-distance with softmax temperature 0.01, mean over both domains' features, x0.1."""
    gen = torch.Generator().manual_seed(3)
    za, zb = (F.normalize(torch.randn(5, 6, generator=gen), dim=1) for _ in range(2))
    pa, pb = torch.randn(3, 6, generator=gen), torch.randn(4, 6, generator=gen)
    npa, npb = F.normalize(pa, dim=1), F.normalize(pb, dim=1)

    def entropy(z, p):
        out = 0.0
        for f in z:
            s = torch.softmax(f @ p.T / 0.1, 0)
            out += -(s * s.log()).sum() / len(z)
        return out

    def dist_of_dist(z):
        def d(p):
            s = [torch.softmax(f @ p.T / 0.01, 0) for f in z]
            return torch.tensor([[1 - float(F.cosine_similarity(u, v, 0)) for v in s]
                                 for u in s])
        return ((d(npa) - d(npb)) ** 2).sum(1).mean()

    se = sum(entropy(z, p) for z in (za, zb) for p in (npa, npb)) / 4
    dd = (dist_of_dist(za) + dist_of_dist(zb)) / 2
    got = L.ucdir_cross_domain_loss(za, zb, pa, pb, 0.1, 0.5, 0.1)
    assert got.item() == pytest.approx(float(0.5 * se + 0.1 * dd), rel=1e-4)
    alg = _uem(uem_sn2m=False, uem_idse_fraction=0.5, uem_num_prototypes=3)
    _started(alg)
    logs = [alg.train_step(_batch(s)) for s in range(8)]
    assert "uem_ucdir" in logs[-1] and not any("uem_sn2m" in g for g in logs)


# ---------------------------------------------------------------- SN2M's labels
def test_sn2m_never_reads_the_label_minus_one_as_the_last_prototype():
    alg = _uem(uem_num_prototypes=4)
    _clustered(alg)
    alg.assign_b[:4] = -1                       # entries without a K-Means label
    inputs = alg._sn2m_inputs("a")
    assert len(inputs.other_bank) == 12 and bool((inputs.other_assign >= 0).all())
    assert torch.equal(inputs.other_bank, alg.bank_b[4:])


# ---------------------------------------------------------------- Elbow
def test_elbow_never_returns_one_cluster():
    """A curve without a knee (log W above its chord: W = 100, 99, 95, 50) scored 0 at both
    ends and the tie went to k = 1, the curve's first point; features without structure give
    such curves."""
    assert elbow_point({1: 100.0, 2: 99.0, 3: 95.0, 4: 50.0}, k_min=2) >= 2
    assert elbow_point({1: 100.0, 2: 99.0, 3: 95.0, 4: 50.0}) == 1     # the old reading
    x = torch.rand(300, 8, generator=torch.Generator().manual_seed(0))
    assert all(elbow_k(x, 10, seed=s) >= 2 for s in range(3))


# ---------------------------------------------------------------- MoCo v2 start
def test_moco_v2_loads_whole_as_ucdir_loads_it(tmp_path):
    """The query encoder including its MLP head when the head's output is embed_dim; with
    another embed_dim only the backbone."""
    from sdgdml.pretrain import MoCo

    hp = hparams_registry.get_hparams("UEM", "DigitsDG")
    torch.manual_seed(1)
    moco = MoCo(hp, queue=16, momentum=0.99, temperature=0.2)
    path = tmp_path / "moco.pth.tar"
    torch.save(moco.checkpoint(1, hp["backbone"]), path)
    assert is_moco_checkpoint(path)
    net = create_model(hp, str(path)).eval()
    moco.encoder_q.eval()
    x = torch.randn(4, 3, 32, 32)
    assert torch.equal(net(x), moco.encoder_q(x))
    other = create_model({**hp, "embed_dim": 32}, str(path)).eval()
    assert isinstance(other.embedding, torch.nn.Linear)
    assert torch.equal(other.backbone(x), moco.encoder_q.backbone(x))


def test_pretrain_command_writes_a_file_uem_starts_from(tmp_path, monkeypatch):
    """... and the trainer embeds every training image of both domains once, before the
    first step, for the banks (``start``)."""
    from sdgdml.pretrain import main as pretrain
    from sdgdml.train import main as train

    out = tmp_path / "moco.pth.tar"
    with pytest.raises(SystemExit, match="no domain 'ucl'.*did you mean 'uci'"):
        pretrain(["--domains", "mnist", "ucl", "--output", str(out)])
    assert not out.exists()
    pretrain(["--domains", "mnist", "uci", "--steps", "2", "--batch_size", "8", "--queue",
              "16", "--num_workers", "0", "--output", str(out)])
    assert is_moco_checkpoint(out)
    calls = []
    original_start, original_update = UEM.start, UEM.update

    def start(self, embed):
        feats = embed()
        calls.append(("start", {d: len(f) for d, f in feats.items()}))
        return original_start(self, lambda: feats)

    def update(self, batch):
        calls.append(("update", self.step))
        return original_update(self, batch)

    monkeypatch.setattr(UEM, "start", start)
    monkeypatch.setattr(UEM, "update", update)
    train(["--algorithm", "UEM", "--targets", "uci", "--ucdr", "open", "--steps", "2",
           "--quiet", "--no_eval_at_start", "--pretrained_file", str(out), "--output_dir",
           str(tmp_path / "run"), "--hparams", json.dumps({"uem_init": "moco_v2",
                                                           "uem_num_prototypes": 3})])
    assert (tmp_path / "run" / "done").exists()
    assert [c[0] for c in calls] == ["start", "update", "update"]
    sizes = calls[0][1]             # open-set: uci holds half of mnist's classes
    assert set(sizes) == {"mnist", "uci"} and sizes["uci"] < sizes["mnist"]
