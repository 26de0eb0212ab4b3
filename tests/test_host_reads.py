"""A training step the device never waits for (issue 21): no tensor-to-host read of ours inside
``train_step`` of any registered algorithm, and the trainer's monitor reads the queued losses
once per progress interval (``sdgdml.scalars``, ``loggers.RunMonitor``)."""
from __future__ import annotations

import math

import pytest
import torch

from sdgdml.algorithms import Schedule, create_algorithm, data_needs, names
from sdgdml.algorithms.registry import component, components
from sdgdml.hparams_registry import get_hparams
from sdgdml.loggers import RunMonitor
from sdgdml.networks import DigitsCNN, EmbeddingNet
from sdgdml.scalars import count_host_reads, read_scalars


def _every_algorithm() -> list[str]:
    plugins = [f"{component('plugin', p).default_base or 'ProxyAnchor'}+{p}"
               for p in names("plugin")]
    return [*names("loss"), *plugins, *names("algorithm")]


# what a case needs beyond the defaults: a C3E generation inside the measured steps; UEM's
# first stage (steps 2, 3) and second (4, 5), with a small K-Means at step 1
OVERRIDES = {"ProxyAnchor+CenterPolar": {"cp_c3e_every": 3, "cp_c3e_steps": 2},
             "UEM": {"uem_idse_fraction": 0.1, "uem_elbow_max_k": 3, "uem_kmeans_iters": 3}}
CASES = [(a, OVERRIDES.get(a, {})) for a in _every_algorithm()]
SIZES = {"mnist": 48, "uci": 48}
BATCH, CLASSES, SIDE, DIM = 16, 5, 8, 16


def _tiny_net() -> EmbeddingNet:
    return EmbeddingNet(DigitsCNN(width=4), DIM)


def _batch(name: str, step: int) -> dict:
    g = torch.Generator().manual_seed(step)
    needs = data_needs(name)
    batch = {"x": torch.randn(BATCH, 3, SIDE, SIDE, generator=g)}
    if needs.labels:
        batch["y"] = torch.arange(BATCH) % CLASSES
    if needs.indices:
        batch["index"] = (torch.arange(BATCH) + step * BATCH) % SIZES["mnist"]
    if needs.unlabeled_targets:
        batch["unlabeled"] = {"uci": torch.randn(BATCH, 3, SIDE, SIDE, generator=g)}
        batch["unlabeled_index"] = {"uci": (torch.arange(BATCH) + step * 7) % SIZES["uci"]}
    return batch


@pytest.mark.parametrize("name,overrides", CASES, ids=[a for a, _ in CASES])
def test_no_host_read_of_ours_inside_a_training_step(name, overrides):
    """Steps 2-5 of a 40-step run of 20 steps per epoch (the first steps fill UEM's banks and
    cluster them; ProtoAlign and UEM recluster once per epoch, at step 20, outside the
    measured steps: a stated per-epoch read). pytorch-metric-learning's own reads (its
    reducers) are counted apart and not asserted."""
    hp = get_hparams(name, "DigitsDG", overrides={"batch_size": BATCH, "embed_dim": DIM,
                                                        **overrides})
    torch.manual_seed(0)
    alg = create_algorithm(name, _tiny_net(), CLASSES, hp, Schedule(40, 20), SIZES)
    for step in range(2):
        alg.train_step(_batch(name, step))
    with count_host_reads() as reads:
        logs = [alg.train_step(_batch(name, step)) for step in range(2, 6)]
    assert reads["ours"] == 0, (name, dict(reads))
    values = read_scalars(logs)             # what the trainer reads later: finite numbers
    assert all(math.isfinite(v) for row in values for v in row.values()), values


def test_the_monitor_reads_once_per_interval_and_shows_the_mean_loss(tmp_path, capsys):
    losses = [torch.tensor(float(i)) for i in range(1, 7)]
    monitor = RunMonitor([], tmp_path, {}, {}, total=6, interval=1e9)
    monitor.progress.stream = __import__("sys").stdout
    with count_host_reads() as reads:
        read = [monitor.after_step(i + 1, {"loss": t, "n": 2}, 0.1) for i, t in
                enumerate(losses[:3])]
    assert reads["ours"] == 0 and read == [[], [], []]           # nothing due, nothing read
    with count_host_reads() as reads:
        got = monitor.read()                                      # a checkpoint's read
    assert reads["ours"] == 1 and [s for s, _ in got] == [1, 2, 3]
    assert [v["loss"] for _, v in got] == [1.0, 2.0, 3.0] and got[0][1]["n"] == 2.0
    monitor.progress.interval = 0.0                               # the next line is due
    for i, t in enumerate(losses[3:], start=4):
        monitor.after_step(i, {"loss": t}, 0.1)
    # the first line after the checkpoint shows the mean of steps 1-4, the next ones 5, 6
    lines = capsys.readouterr().out.splitlines()
    assert [line.split("loss=")[1].split()[0] for line in lines] == ["2.5", "5", "6"]
    monitor.close()


def test_overlapped_average_starts_every_bucket_during_backward(tmp_path):
    """``distributed.OverlappedAverage`` with tiny buckets, on a one-process gloo group (the
    2-process equality with one process: tests/test_distributed.py): every bucket's
    all-reduce starts inside backward, also with a frozen part, and the gradients stay what
    backward computed (the mean over one process)."""
    import torch.distributed as dist

    from sdgdml.distributed import OverlappedAverage

    dist.init_process_group("gloo", init_method=f"file://{tmp_path}/store", rank=0,
                            world_size=1)
    try:
        net = _tiny_net()
        average = OverlappedAverage(net, bucket_mb=1e-4)          # ~100 bytes: many buckets
        assert len(average.buckets) > 3
        for frozen in (False, True):
            for p in net.backbone.features[0].parameters():
                p.requires_grad_(not frozen)
            net.zero_grad(set_to_none=True)
            net(torch.randn(4, 3, SIDE, SIDE)).sum().backward()
            assert average.started == len(average.buckets)        # all started in backward
            grads = {n: p.grad.clone() for n, p in net.named_parameters() if p.grad is not None}
            average(net)
            assert all(torch.equal(p.grad, grads[n]) for n, p in net.named_parameters()
                       if p.grad is not None)
            assert (net.backbone.features[0].weight.grad is None) == frozen
            assert average.started == 0 and not average.works
    finally:
        dist.destroy_process_group()


@pytest.fixture(scope="module")
def dynamo():
    """Dynamo's counters and caches, reset once for this module's compiled cases (the tiny
    network's graph is then traced once and reused by every algorithm's copy of it)."""
    from torch import _dynamo
    from torch._dynamo.utils import counters

    _dynamo.reset()
    yield counters["stats"]
    _dynamo.reset()


def _compiled(name: str, overrides: dict, schedule: Schedule):
    from sdgdml import speed

    hp = get_hparams(name, "DigitsDG", overrides={"batch_size": BATCH, "embed_dim": DIM,
                                                        **overrides})
    torch.manual_seed(0)
    alg = create_algorithm(name, _tiny_net(), CLASSES, hp, schedule, SIZES)
    assert speed.configure(alg, "fp32", False, "eager", torch.device("cpu"))   # Dynamo only
    return alg


@pytest.mark.parametrize("name,overrides", CASES, ids=[a for a, _ in CASES])
def test_compiled_step_does_not_recompile_after_warm_up(name, overrides, dynamo):
    """``--compile`` (``speed.configure``, backend "eager": Dynamo's capture, whose guards
    decide recompiles, without code generation): steps 6-8 of a 40-step run add no graph to
    those of steps 0-5 (UEM's second stage, CenterPolar's second generation, the first
    reclustering all inside the warm-up). What runs eager is exactly the components that say
    why (``EAGER_REASON``); the rest is compiled."""
    alg = _compiled(name, overrides, Schedule(40, 20))
    modules, eager = alg.compile_parts()
    assert set(eager) == {c.cls.__name__ for c in components(name) if c.cls.EAGER_REASON}
    assert all(m._compiled_call_impl is not None for m in modules)
    assert all(reason and "\n" not in reason for reason in eager.values())
    for step in range(6):
        alg.train_step(_batch(name, step))
    graphs = dynamo["unique_graphs"]
    for step in range(6, 9):
        alg.train_step(_batch(name, step))
    assert dynamo["unique_graphs"] == graphs, name


def test_the_compiled_base_loss_does_not_recompile_after_warm_up(dynamo):
    """The base loss under SEE's curriculum, which changes the synthetic batch (k = 0, 0, 0,
    1, 2, 2, 3, 4 samples x 8 at epochs 0-7 of 12): after the warm-up (both batch sizes seen,
    the dimension then dynamic) no new graph."""
    name = "ProxyAnchor+SEE"
    alg = _compiled(name, {}, Schedule(12, 1))
    ks = []
    for step in range(8):
        if step == 5:
            graphs = dynamo["unique_graphs"]
        alg.train_step(_batch(name, step))
        ks.append(alg.loss.num_expanded(BATCH))
    assert ks == [0, 0, 0, 1, 2, 2, 3, 4]
    assert dynamo["unique_graphs"] == graphs


def test_a_plugin_around_an_eager_one_runs_eager_and_says_why():
    """A stack compiles its largest part without an ``EAGER_REASON``: in SoftTriple+SEE+PFML
    the base only; PFML, compilable alone, runs eager around SEE."""
    from sdgdml.algorithms.see import SEE

    name = "SoftTriple+SEE+PFML"
    hp = get_hparams(name, "DigitsDG", overrides={"batch_size": BATCH, "embed_dim": DIM})
    alg = create_algorithm(name, _tiny_net(), CLASSES, hp, Schedule(40, 20), SIZES)
    modules, eager = alg.compile_parts()
    assert modules == [alg.network, alg.loss.base.base]
    assert eager == {"PFMLPlugin": "it wraps SEE, which runs eager", "SEE": SEE.EAGER_REASON}
