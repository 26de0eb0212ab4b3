"""Label noise (PFML Sec. 4.3 / Table 2: 20% of the training labels randomly corrupted)."""
import numpy as np
import pytest

from sdgdml import train as train_module
from sdgdml.datasets import DATASETS, DigitsDG
from sdgdml.datasets.base import noisy_labels


def test_exactly_the_fraction_is_corrupted_each_to_another_class():
    labels = np.repeat(np.arange(10), 100)
    for fraction in (0.0, 0.05, 0.2, 0.5):
        noisy = noisy_labels(labels, fraction, 10, seed=1)
        flipped = noisy != labels
        assert flipped.sum() == round(fraction * len(labels))
        assert noisy.min() >= 0 and noisy.max() < 10
    assert np.array_equal(noisy_labels(labels, 0.0, 10, seed=1), labels)


def test_new_labels_are_uniform_over_the_other_classes():
    labels = np.zeros(60000, dtype=np.int64)
    noisy = noisy_labels(labels, 0.5, 5, seed=0)
    counts = np.bincount(noisy[noisy != 0], minlength=5)[1:]
    assert counts.sum() == 30000
    assert np.all(np.abs(counts / 30000 - 0.25) < 0.01)          # 4 other classes, 1/4 each


def test_noise_is_seeded():
    labels = np.arange(500) % 5
    a = noisy_labels(labels, 0.2, 5, seed=3)
    assert np.array_equal(a, noisy_labels(labels, 0.2, 5, seed=3))
    assert not np.array_equal(a, noisy_labels(labels, 0.2, 5, seed=4))
    with pytest.raises(ValueError, match="label noise fraction"):
        noisy_labels(labels, 1.0, 5, seed=0)


def test_only_the_training_labels_change():
    clean, noisy = DigitsDG(trial_seed=2), DigitsDG(trial_seed=2, label_noise=0.2)
    tc, tn = clean.train_split(), noisy.train_split()
    assert np.array_equal(tc.indices, tn.indices)                  # the same images
    assert (tc.labels != tn.labels).sum() == round(0.2 * len(tc))
    assert np.array_equal(clean.val_split().labels, noisy.val_split().labels)
    for ec, en in zip(clean.eval_splits(), noisy.eval_splits()):
        for a, b in ((ec.query, en.query), (ec.gallery, en.gallery)):
            if a is not None:
                assert np.array_equal(a.indices, b.indices) and np.array_equal(a.labels, b.labels)


def test_the_cli_flag_reaches_the_training_split(tmp_path, monkeypatch):
    seen = {}

    class Spy(DigitsDG):
        def train_split(self):
            split = super().train_split()
            seen["labels"] = split.labels
            return split

    monkeypatch.setitem(DATASETS, "DigitsDG", Spy)
    train_module.main(["--output_dir", str(tmp_path), "--quiet", "--steps", "1",
                       "--no_eval_at_start", "--targets", "uci", "--label_noise", "0.2",
                       "--trial_seed", "1"])
    expected = DigitsDG(trial_seed=1, label_noise=0.2).train_split().labels
    assert np.array_equal(seen["labels"], expected)
    assert not np.array_equal(seen["labels"], DigitsDG(trial_seed=1).train_split().labels)
