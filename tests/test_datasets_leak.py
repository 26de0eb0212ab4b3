"""No unseen-class image, no validation image and no target-domain label ever reaches a training
batch. The real training loop runs on a real image tree (a dataset registered from a config
file) whose every image is a uniform colour encoding its id, so each training image is traced
back to its file from the tensor the algorithm receives."""
import json

import numpy as np
import pytest
import torch

import datatrees as T
import sdgdml.train
from sdgdml.algorithms import DataNeeds, MetricLearning, create_loss
from sdgdml.datasets import create_dataset
from sdgdml.datasets.transforms import IMAGENET_MEAN, IMAGENET_STD

CLASSES = ["c0", "c1", "c2", "c3", "c4", "c5"]
CONFIG = """
datasets:
  Leak6:
    root: leak6
    domains: [src, tgt]
    classes: [c0, c1, c2, c3, c4, c5]
"""
TINY = {"backbone": "digits_cnn", "pretrained": False, "image_size": 16, "embed_dim": 8,
        "batch_size": 5, "freeze_bn": False, "warmup_epochs": 0}


@pytest.fixture
def tree(tmp_path, monkeypatch):
    monkeypatch.setenv("SDGDML_CACHE_DIR", str(tmp_path / "cache"))
    images = T.folder_tree(tmp_path / "leak6", {"src": "src", "tgt": "tgt"}, CLASSES,
                           per_class=6, ext=".png")
    (tmp_path / "sdgdml_datasets.yaml").write_text(CONFIG)
    assert len({i.id for i in images}) == len(images)
    return tmp_path, {i.id: i for i in images}


def _ids(x: torch.Tensor) -> list[int]:
    """The colour id of each (uniform) image of a normalised batch."""
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3)
    std = torch.tensor(IMAGENET_STD).view(1, 3)
    centre = x[:, :, x.shape[2] // 2, x.shape[3] // 2]
    rgb = (centre * std + mean) * 255
    assert torch.allclose(x, x[:, :, :1, :1].expand_as(x), atol=1e-4)     # still uniform
    return [T.id_of(c) for c in rgb.tolist()]


def _run(data, tmp_path, monkeypatch, algorithm_cls=None, *extra):
    batches = []
    create = sdgdml.train.create_algorithm

    def spying_create(name, network, num_classes, hparams, schedule, domain_sizes=None):
        if algorithm_cls is None:
            algorithm = create(name, network, num_classes, hparams, schedule, domain_sizes)
        else:   # the real loss, in a class that declares other data needs
            loss = create_loss(name, num_classes, hparams["embed_dim"], hparams)
            algorithm = algorithm_cls(network, num_classes, hparams, schedule, loss,
                                      domain_sizes)
        update = algorithm.update

        def recording_update(batch):
            batches.append(batch)
            return update(batch)

        algorithm.update = recording_update
        return algorithm

    monkeypatch.setattr(sdgdml.train, "create_algorithm", spying_create)
    if algorithm_cls is not None:
        monkeypatch.setattr(sdgdml.train, "data_needs", lambda name: algorithm_cls.NEEDS)
    sdgdml.train.main(["--split", "Leak6:src->tgt", "--data_dir", str(data), "--output_dir",
                       str(tmp_path / "run"), "--quiet", "--hparams", json.dumps(TINY),
                       "--metrics", "recall@1", "--epochs", "3", "--no_eval_at_start",
                       # in this process: which images a batch holds is the sampler's choice
                       # (made here either way), not the loader workers'
                       "--num_workers", "0", *extra])
    assert batches, "no training step ran"
    return batches


@pytest.mark.parametrize("val_protocol", ["images", "classes"])
def test_supervised_batches_hold_only_source_training_images_with_true_labels(
        tree, tmp_path, monkeypatch, val_protocol):
    data, by_id = tree
    batches = _run(data, tmp_path, monkeypatch, None, "--val_protocol", val_protocol)
    ds = create_dataset("Leak6", data, "src", val_protocol=val_protocol)
    train, val = ds.train_split(), ds.val_split()
    train_files = {train.samples.paths[i] for i in train.indices}
    val_files = {val.samples.paths[i] for i in val.indices}
    remap = {int(c): k for k, c in enumerate(ds.train_classes)}
    seen = []
    for batch in batches:
        assert set(batch) == {"x", "y"}
        for image_id, y in zip(_ids(batch["x"]), batch["y"].tolist()):
            image = by_id[image_id]
            assert image.domain == "src" and image.label in ds.seen_classes
            assert image.path in train_files and image.path not in val_files
            assert remap[image.label] == y                       # the true (remapped) label
            seen.append(image.path)
    assert set(seen) == train_files                              # the check can see them all
    assert len(val_files) == (3 if val_protocol == "images" else 6)


class Transductive(MetricLearning):
    NEEDS = DataNeeds(unlabeled_targets=True)


class LabelFree(MetricLearning):
    NEEDS = DataNeeds(labels=False)

    def update(self, batch):
        self.step += 1
        return {"loss": 0.0}


def test_transductive_batches_get_target_images_without_labels(tree, tmp_path, monkeypatch):
    data, by_id = tree
    batches = _run(data, tmp_path, monkeypatch, Transductive)
    ds = create_dataset("Leak6", data, "src")
    train_files = {ds.train_split().samples.paths[i] for i in ds.train_split().indices}
    target_seen = set()
    for batch in batches:
        assert set(batch) == {"x", "y", "unlabeled"} and set(batch["unlabeled"]) == {"tgt"}
        unlabeled = batch["unlabeled"]["tgt"]
        assert isinstance(unlabeled, torch.Tensor) and unlabeled.dim() == 4   # images only
        assert len(batch["y"]) == len(batch["x"])                # y belongs to x alone
        for image_id in _ids(batch["x"]):
            assert by_id[image_id].path in train_files
        for image_id in _ids(unlabeled):
            assert by_id[image_id].domain == "tgt"
            target_seen.add(by_id[image_id].label)
    assert target_seen & set(ds.unseen_classes.tolist())         # the whole target, unlabeled


def test_label_free_methods_see_only_the_training_images(tree, tmp_path, monkeypatch):
    data, by_id = tree
    batches = _run(data, tmp_path, monkeypatch, LabelFree)
    ds = create_dataset("Leak6", data, "src")
    train_files = {ds.train_split().samples.paths[i] for i in ds.train_split().indices}
    for batch in batches:
        assert set(batch) == {"x"}
        assert all(by_id[i].path in train_files for i in _ids(batch["x"]))
    assert np.isin(ds.train_split().labels, [0, 1, 2]).all()
