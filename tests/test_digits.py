"""The embedded DigitsDG benchmark: real data, fixed construction, SDG-DML splits."""
import numpy as np
import pytest
import torch

from sdgdml.datasets import DatasetError, DigitsDG, GlyphsDG, ImageDataset, get_dataset_class
from sdgdml.datasets.digits import STYLE_DOMAINS, build_domains
from sdgdml.evaluation import eval_batches


def test_domains_sizes_and_classes():
    doms = build_domains()
    assert set(doms) == set(DigitsDG.DOMAINS)
    assert len(doms["mnist"][0]) == 2000 and len(doms["uci"][0]) == 1797
    for d in STYLE_DOMAINS:
        assert np.bincount(doms[d][1]).tolist() == [75] * 10
    for images, labels in doms.values():
        assert images.shape[1:] == (32, 32, 3) and images.dtype == np.uint8
        assert set(labels.tolist()) == set(range(10))


def test_style_domains_come_from_held_out_images():
    """No MNIST image of the source appears (as is) in any other domain, and the style domains
    differ from their sources in the stated way."""
    doms = build_domains()
    src = {im.tobytes() for im in doms["mnist"][0]}
    for d in STYLE_DOMAINS + ("uci",):
        assert not src & {im.tobytes() for im in doms[d][0]}, d
    neg = doms["negative"][0]
    assert neg[:, 0, 0].mean() > 250           # white background (inverted)
    assert doms["sketch"][0][:, 0, 0].mean() > 250
    colour = doms["colour"][0].astype(int)
    assert (np.abs(colour[..., 0] - colour[..., 1]).mean()) > 10   # not grey


def test_seen_unseen_and_validation_splits(digits):
    train, val = digits.train_split(), digits.val_split()
    assert set(digits.seen_classes) == {0, 1, 2, 3, 4}
    assert set(digits.unseen_classes) == {5, 6, 7, 8, 9}
    assert not set(train.indices) & set(val.indices)
    assert len(train) == 800 and len(val) == 200                 # 20% of 5 x 200 held out
    assert set(train.labels.tolist()) == set(range(5))
    assert np.bincount(val.labels).tolist() == [40] * 5
    for ev in digits.eval_splits():
        if ev.name.endswith("_test"):
            assert set(ev.query.labels.tolist()) == {5, 6, 7, 8, 9}, ev.name
    names = [e.name for e in digits.eval_splits()]
    assert names == ["mnist_val", "mnist_test", "uci_test", "sketch_test", "negative_test",
                     "colour_test", "rotate_test"]


def test_trial_seed_changes_only_the_validation_draw():
    a, b = DigitsDG(trial_seed=0), DigitsDG(trial_seed=1)
    assert not np.array_equal(a.val_split().indices, b.val_split().indices)
    assert np.array_equal(a.test_split("uci").indices, b.test_split("uci").indices)


def test_cross_protocol_queries_target_against_source_gallery():
    ds = DigitsDG(targets=["sketch"], protocol="cross")
    ev = ds.eval_splits()[-1]
    assert ev.name == "sketch->mnist_test"
    assert ev.query.samples.domain == "sketch" and ev.gallery.samples.domain == "mnist"
    assert set(ev.gallery.labels.tolist()) == {5, 6, 7, 8, 9}


def test_label_noise_is_exact_seeded_and_train_only():
    clean = DigitsDG().train_split().labels
    noisy = DigitsDG(label_noise=0.2).train_split().labels
    assert (clean != noisy).sum() == round(0.2 * len(clean))
    assert np.array_equal(noisy, DigitsDG(label_noise=0.2).train_split().labels)
    assert not np.array_equal(noisy, DigitsDG(label_noise=0.2, trial_seed=3).train_split().labels)
    assert np.array_equal(DigitsDG(label_noise=0.2).val_split().labels, DigitsDG().val_split().labels)


def test_unlabeled_view_yields_images_only(digits):
    ds = ImageDataset(digits.unlabeled_split("sketch"), digits.eval_transform(32))
    x = ds[0]
    assert x.shape == (3, 32, 32)


def _assert_batched_equal(split, transform, batch_size=100):
    """The batched path gives the per-image path's batches (a DataLoader over the PIL
    transform) and leaves torch's RNG as that path does."""
    torch.manual_seed(0)
    batched = list(eval_batches(split, transform, batch_size))
    rng = torch.get_rng_state()
    torch.manual_seed(0)
    want = list(eval_batches(split, transform.per_image, batch_size))
    assert len(batched) == len(want) and all(map(torch.equal, batched, want)), split.name
    assert torch.equal(rng, torch.get_rng_state()), split.name


def test_batched_evaluation_equals_the_per_image_transform(digits):
    """Evaluation takes the in-memory images a batch at a time, without PIL: the same tensors,
    bit for bit, as the per-image eval transform, on every evaluation split and on an
    unlabeled view; images of another size go through the per-image path (the resize)."""
    tf = digits.eval_transform(32)
    for split in [e.query for e in digits.eval_splits()] + [digits.unlabeled_split("sketch")]:
        _assert_batched_equal(split, tf)
    val = digits.val_split()
    assert tf.batch(val.samples.arrays(val.indices)) is not None
    assert digits.eval_transform(24).batch(val.samples.arrays(val.indices)) is None
    _assert_batched_equal(val, digits.eval_transform(24))


def test_batched_evaluation_of_glyphs_equals_the_per_image_transform():
    """GlyphsDG (the same eval transform on its own arrays): the source's validation split."""
    ds = GlyphsDG(targets=["serif"])
    _assert_batched_equal(ds.val_split(), ds.eval_transform(32))


def test_seeded_augmentation_is_reproducible(digits):
    ds = ImageDataset(digits.train_split(), digits.train_transform(32))
    assert (ds[(3, 42)][0] == ds[(3, 42)][0]).all()
    assert not (ds[(3, 42)][0] == ds[(3, 43)][0]).all()


def test_bad_names_are_clear_errors():
    with pytest.raises(DatasetError, match="known: mnist, uci"):
        DigitsDG(source="svhn")
    with pytest.raises(DatasetError, match="is the source"):
        DigitsDG(targets=["mnist"])
    with pytest.raises(DatasetError, match="known: .*DigitsDG"):
        get_dataset_class("MNISTM")


def test_the_cached_arrays_equal_freshly_generated_ones():
    """What build_domains returns (from the disk cache when one exists) is what the generator
    makes from the package data now."""
    from sdgdml.datasets.digits import generate_domains

    cached, fresh = build_domains(), generate_domains()
    assert cached.keys() == fresh.keys()
    for d in fresh:
        assert np.array_equal(cached[d][0], fresh[d][0]) and np.array_equal(cached[d][1],
                                                                            fresh[d][1]), d


def test_the_array_cache_keys_by_provenance_and_survives_a_bad_file(tmp_path, monkeypatch):
    from sdgdml.datasets import array_cache

    monkeypatch.setenv("SDGDML_CACHE_DIR", str(tmp_path))
    calls = []

    def make():
        calls.append(1)
        return {"x": np.arange(6).reshape(2, 3)}

    meta = {"version": 1}
    path = array_cache.cache_folder("Toy", meta) / "a.npz"
    assert path.parent.parent == tmp_path / "Toy"
    assert path.parent != array_cache.cache_folder("Toy", {"version": 2})
    first = array_cache.cached_arrays(path, make, "meta.json", meta, "Toy")
    second = array_cache.cached_arrays(path, make, "meta.json", meta, "Toy")
    assert len(calls) == 1 and np.array_equal(first["x"], second["x"])
    assert (path.parent / "meta.json").read_text().strip().startswith("{")
    path.write_bytes(b"not an npz")                 # unreadable: generated and written again
    third = array_cache.cached_arrays(path, make, "meta.json", meta, "Toy")
    assert len(calls) == 2 and np.array_equal(third["x"], first["x"])
    assert np.array_equal(np.load(path)["x"], first["x"])
