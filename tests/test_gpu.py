"""The CUDA code paths (run on a GPU machine: SDGDML_TEST_GPU=1 python -m pytest -m gpu; they
skip elsewhere, and the rest of the suite always runs on the CPU, see conftest.py)."""
import pytest
import torch
import torch.nn.functional as F

from sdgdml.evaluation import knn, retrieval_metrics
from sdgdml.train import build_parser, train

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(),
                                 reason="no CUDA (GPU tests need SDGDML_TEST_GPU=1 and a GPU)")]


def test_knn_and_metrics_on_the_gpu_match_the_cpu():
    g = torch.Generator().manual_seed(0)
    y = torch.randint(0, 20, (3000,), generator=g)
    x = F.normalize(torch.randn(20, 64, generator=g)[y] + torch.randn(3000, 64, generator=g),
                    dim=1)
    _, idx_cpu = knn(x, x, 8, exclude_self=True, device="cpu")
    _, idx_gpu = knn(x, x, 8, exclude_self=True, device="cuda")
    assert (idx_cpu == idx_gpu).float().mean() > 0.999        # float rounding of near-ties
    metrics = ["recall@1", "recall@4", "map@r", "map@all"]
    cpu = retrieval_metrics(x, y, metrics=metrics, device="cpu")
    gpu = retrieval_metrics(x, y, metrics=metrics, device="cuda")
    for k in metrics:
        assert gpu[k] == pytest.approx(cpu[k], abs=1e-3), k


@pytest.mark.parametrize("algorithm", ["ProxyAnchor+SEE", "SoftTriple+SEE+PFML", "CenterPolar",
                                       "ProtoAlign"])
def test_training_on_the_gpu_writes_valid_records(tmp_path, algorithm):
    args = build_parser().parse_args([
        "--output_dir", str(tmp_path), "--quiet", "--device", "cuda", "--algorithm", algorithm,
        "--targets", "uci", "sketch", "--steps", "6", "--checkpoint_freq", "3"])
    records = train(args)
    assert [r["step"] for r in records] == [0, 3, 6]
    last = records[-1]
    assert last["loss"] == last["loss"] and last["mem_gb"] > 0       # finite, CUDA memory
    for key in ("uci_test_recall@1", "sketch_test_map@r"):
        assert 0.0 <= last[key] <= 1.0


def test_uem_trains_on_the_gpu_through_both_stages(tmp_path):
    args = build_parser().parse_args([
        "--output_dir", str(tmp_path), "--quiet", "--device", "cuda", "--algorithm", "UEM",
        "--targets", "uci", "--ucdr", "open", "--open_rule", "detector", "--steps", "6",
        "--checkpoint_freq", "3", "--hparams", '{"uem_cluster_every": 0.05, "uem_idse_fraction": 0.5}'])
    last = train(args)[-1]
    assert {"uem_dal", "uem_spr", "uem_sn2m"} <= set(last) and last["mem_gb"] > 0
    assert 0.0 <= last["mnist->uci_open_detect_acc"] <= 1.0
