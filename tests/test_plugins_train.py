"""End-to-end runs of the SEE / PFML compositions on DigitsDG through the real CLI code path,
and the proxy-alignment evaluation option (PFML Sec. 4.4)."""
import math

import pytest

from sdgdml.records import read_records
from sdgdml.train import build_parser, main, train

SPLITS = ["mnist_val", "mnist_test", "sketch_test"]


def _run(tmp_path, *extra):
    args = build_parser().parse_args(["--output_dir", str(tmp_path), "--quiet",
                                      "--targets", "sketch", "--no_eval_at_start", *extra])
    return train(args)


@pytest.mark.parametrize("algorithm,terms", [
    ("ProxyAnchor+SEE", ["loss_ml", "loss_see", "see_expanded"]),
    ("NormSoftmax+SEE", ["loss_ml", "loss_see", "see_expanded"]),
    ("ProxyNCA+PFML", ["loss_base", "pfml_energy"]),
    ("SoftTriple+SEE+PFML", ["loss_base", "pfml_energy", "loss_see"]),
    ("PFML", ["pfml_energy"]),
])
def test_composition_writes_valid_records(tmp_path, algorithm, terms):
    records = _run(tmp_path, "--algorithm", algorithm, "--steps", "2", "--checkpoint_freq", "2")
    assert [r["step"] for r in records] == [2]
    for r in records:
        assert r["args"]["algorithm"] == algorithm
        for split in SPLITS:
            assert 0.0 <= r[f"{split}_recall@1"] <= 1.0
    last = records[-1]
    for t in terms:
        assert math.isfinite(last[t]), t
    assert math.isfinite(last["loss"])
    assert read_records(tmp_path / "results.jsonl")[-1]["step"] == 2
    assert (tmp_path / "done").exists()


def test_proxy_alignment_is_recorded_at_every_checkpoint(tmp_path):
    records = _run(tmp_path, "--algorithm", "PFML", "--steps", "2", "--checkpoint_freq", "1",
                   "--proxy_alignment", "--hparams", '{"pfml_m": 3}')
    values = [r["mnist_train_proxy_w2"] for r in records]
    assert len(values) == 2 and all(0.0 <= v <= 2.0 for v in values)
    assert values[0] != values[-1]                      # proxies and network moved


def test_proxy_alignment_without_proxies_is_a_clear_error(tmp_path):
    with pytest.raises(SystemExit, match="--proxy_alignment needs an algorithm with proxies"):
        main(["--output_dir", str(tmp_path), "--algorithm", "MultiSimilarity", "--steps", "1",
              "--proxy_alignment", "--quiet"])


def test_see_on_a_proxy_free_base_is_a_clear_error(tmp_path):
    with pytest.raises(SystemExit, match="MultiSimilarity has no proxies"):
        main(["--output_dir", str(tmp_path), "--algorithm", "MultiSimilarity+SEE",
              "--steps", "1", "--quiet"])
