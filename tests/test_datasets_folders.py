"""PACS, Office-Home, Office-31 and config-registered datasets on real image trees written in
each dataset's exact layout: class order, seen/unseen split, which images land in which split,
label correctness, layout variants and bad configs."""
from pathlib import Path

import numpy as np
import pytest

import datatrees as T
from sdgdml.datasets.__main__ import main as datasets_main
from sdgdml.datasets import (DATASETS, DatasetError, ImageDataset, Office31, OfficeHome, PACS,
                             create_dataset, parse_split, single_source_splits)
from sdgdml.datasets.samples import UnlabeledSamples
from sdgdml.train import resolve_split
from sdgdml.train_args import build_parser, experiment_identity


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("SDGDML_CACHE_DIR", str(tmp_path / "cache"))


def _by_path(images):
    return {i.path: i for i in images}


def _split_paths(split):
    return [split.samples.paths[i] for i in split.indices]


@pytest.fixture
def pacs(tmp_path):
    images = T.folder_tree(tmp_path / "data" / "PACS", {d: d for d in PACS.DOMAINS},
                           PACS.CLASSES, per_class=5)
    return tmp_path / "data", images


def test_pacs_class_order_and_seen_unseen():
    assert PACS.CLASSES == ("dog", "elephant", "giraffe", "guitar", "horse", "house", "person")
    assert list(PACS.CLASSES) == sorted(PACS.CLASSES)              # ImageFolder / official order
    ds = PACS("unused", "photo")
    assert [PACS.CLASSES[i] for i in ds.seen_classes] == ["dog", "elephant", "giraffe"]
    assert [PACS.CLASSES[i] for i in ds.unseen_classes] == ["guitar", "horse", "house", "person"]


def test_pacs_splits_hold_exactly_the_right_images(pacs):
    data_dir, images = pacs
    truth = _by_path(images)
    ds = create_dataset("PACS", data_dir, "photo", ["sketch", "cartoon"])
    ds.validate()
    train, val = ds.train_split(), ds.val_split()
    # train + val = every photo of the 3 seen classes; 1 of each class's 5 images is held out
    assert sorted(_split_paths(train) + _split_paths(val)) == sorted(
        i.path for i in images if i.domain == "photo" and i.label < 3)
    assert len(val) == 3 and np.bincount(val.labels).tolist() == [1, 1, 1]
    for p, y in zip(_split_paths(train), train.labels):           # remapped = global (0..2)
        assert truth[p].label == y and Path(p).parent.name == PACS.CLASSES[y]
    for ev in ds.eval_splits()[1:]:
        domain = ev.name.split("_test")[0]
        assert sorted(_split_paths(ev.query)) == sorted(
            i.path for i in images if i.domain == domain and i.label >= 3), ev.name
        assert all(truth[p].label == y for p, y in zip(_split_paths(ev.query), ev.query.labels))
    assert [e.name for e in ds.eval_splits()] == ["photo_val", "photo_test", "sketch_test",
                                                  "cartoon_test"]


def test_classes_validation_protocol_holds_out_whole_seen_classes(pacs):
    data_dir, images = pacs
    ds = create_dataset("PACS", data_dir, "photo", val_protocol="classes")
    assert ds.val_classes.tolist() == [2] and ds.train_classes.tolist() == [0, 1]
    assert ds.num_train_classes == 2
    assert set(ds.val_split().labels.tolist()) == {2} and len(ds.val_split()) == 5
    assert set(ds.train_split().labels.tolist()) == {0, 1} and len(ds.train_split()) == 10
    with pytest.raises(DatasetError, match="no official train/test lists"):
        create_dataset("PACS", data_dir, "photo", val_protocol="official").train_split()


def test_loaded_tensors_come_from_the_indexed_file(pacs):
    data_dir, images = pacs
    ds = create_dataset("PACS", data_dir, "art_painting")
    split = ds.test_split("art_painting")
    items = ImageDataset(split, ds.eval_transform(16))
    for k in (0, len(items) - 1):
        x, y = items[k]
        rgb = (x[:, 8, 8].numpy() * 255 * np.array([0.229, 0.224, 0.225])
               + 255 * np.array([0.485, 0.456, 0.406])).tolist()
        source = next(i for i in images if i.path == split.samples.paths[split.indices[k]])
        assert T.id_of(rgb) == source.id and source.label == y
        assert x.shape == (3, 16, 16)


def test_office_home_real_world_folder_with_a_space(tmp_path):
    root = tmp_path / "OfficeHomeDataset_10072016"
    images = T.folder_tree(root, {"Art": "Art", "Clipart": "Clipart", "Product": "Product",
                                  "Real_World": "Real World"}, OfficeHome.CLASSES, per_class=2)
    name, source, targets = parse_split("OfficeHome:Real_World->Art,Clipart,Product")
    ds = create_dataset(name, tmp_path, source, targets)
    ds.validate()
    real = ds.domain("Real_World")
    assert all("/Real World/" in p for p in real.paths) and len(real) == 65 * 2
    assert sorted(real.paths) == sorted(i.path for i in images if i.domain == "Real_World")
    assert len(ds.seen_classes) == 32 and len(ds.unseen_classes) == 33
    assert OfficeHome.CLASSES.index("TV") < OfficeHome.CLASSES.index("Table")   # Python sort
    # the underscore variant some mirrors use works too
    (root / "Real World").rename(root / "Real_World")
    assert len(create_dataset("OfficeHome", tmp_path, "Real_World").domain("Real_World")) == 130


def test_office31_needs_the_images_subfolder(tmp_path):
    T.folder_tree(tmp_path / "office31", {d: d for d in Office31.DOMAINS}, Office31.CLASSES,
                  per_class=2, images_subdir="images")
    ds = create_dataset("Office31", tmp_path, "amazon", ["dslr", "webcam"])
    ds.validate()
    assert len(ds.domain("webcam")) == 62
    assert all("/webcam/images/" in p for p in ds.domain("webcam").paths)
    assert len(ds.seen_classes) == 15 and ds.CLASSES[15] == "monitor"
    flat = tmp_path / "flat"
    T.folder_tree(flat / "office31", {d: d for d in Office31.DOMAINS}, Office31.CLASSES, 1)
    with pytest.raises(DatasetError) as e:
        create_dataset("Office31", flat, "amazon").validate()
    message = str(e.value)
    assert f"folder not found: {flat / 'office31' / 'dslr' / 'images'}" in message
    assert "expected <domain>/images/<class>/<image>" in message and "MISSING" in message


def test_every_single_source_split_is_enumerable():
    splits = single_source_splits("OfficeHome")
    assert len(splits) == 4 and "OfficeHome:Real_World->Art,Clipart,Product" in splits
    assert len(single_source_splits("DomainNet")) == 6
    for s in splits:
        name, source, targets = parse_split(s)
        assert source not in targets and len(targets) == 3
    with pytest.raises(DatasetError, match="unknown domain 'real'"):
        parse_split("PACS:real->sketch")
    with pytest.raises(DatasetError, match="unknown dataset 'Pacs'"):
        parse_split("Pacs:photo")


def test_unlabeled_view_carries_no_labels(pacs):
    data_dir, _ = pacs
    ds = create_dataset("PACS", data_dir, "photo")
    view = ds.unlabeled_split("sketch")
    assert view.labels is None and isinstance(view.samples, UnlabeledSamples)
    assert len(view) == 35
    with pytest.raises(AttributeError, match="no labels"):
        view.samples.labels
    x = ImageDataset(view, ds.eval_transform(8))[0]
    assert hasattr(x, "shape")                       # an image, not an (image, label) pair
    train = ds.unlabeled(ds.train_split())
    assert train.labels is None and np.array_equal(train.indices, ds.train_split().indices)


CONFIG = """
datasets:
  Toys4:
    root: toys
    domains: {photo: Photos, drawing: "Pencil drawings"}
    classes: [robot, ball, car, kite]
    seen_classes: [ball, car, kite]
    default_source: photo
    protocol: both
"""


def test_a_user_dataset_from_a_config_file(tmp_path, capsys):
    T.folder_tree(tmp_path / "toys", {"photo": "Photos", "drawing": "Pencil drawings"},
                  ["robot", "ball", "car", "kite"], per_class=5, ext=".png")
    (tmp_path / "sdgdml_datasets.yaml").write_text(CONFIG)       # found in --data_dir
    ds = create_dataset("Toys4", tmp_path)
    assert "Toys4" in DATASETS and ds.CLASSES == ("robot", "ball", "car", "kite")
    assert ds.seen_classes.tolist() == [1, 2, 3] and ds.unseen_classes.tolist() == [0]
    assert ds.source == "photo" and ds.targets == ["drawing"]
    train = ds.train_split()
    assert {Path(ds.domain("photo").paths[i]).parent.name for i in train.indices} == {
        "ball", "car", "kite"}
    assert sorted(set(train.labels.tolist())) == [0, 1, 2]       # remapped seen classes
    datasets_main(["list", "--data_dir", str(tmp_path)])
    assert next(line for line in capsys.readouterr().out.splitlines()
                if line.startswith("Toys4")).split()[4] == "3/1"     # seen/unseen
    names = [e.name for e in ds.eval_splits()]
    assert names == ["photo_val", "photo_test", "drawing_test", "drawing->photo_test"]
    assert all("Pencil drawings" in p for p in ds.domain("drawing").paths)


def test_a_user_datasets_definition_is_part_of_the_run_identity(tmp_path):
    T.folder_tree(tmp_path / "toys", {"photo": "Photos", "drawing": "Pencil drawings"},
                  ["robot", "ball", "car", "kite"], per_class=2, ext=".png")
    identities = []
    for config in (CONFIG, CONFIG, CONFIG.replace("[ball, car, kite]", "[ball, kite]"),
                   CONFIG.replace("root: toys", "root: toys_moved")):
        (tmp_path / "sdgdml_datasets.yaml").write_text(config)
        args = build_parser().parse_args(["--dataset", "Toys4", "--data_dir", str(tmp_path),
                                          "--output_dir", "x"])
        resolve_split(args)
        identities.append(experiment_identity(args))
    same, again, other_split, moved = identities
    assert same == again == moved and same != other_split     # where the files are: no part
    assert set(same) == {"dataset", "source", "targets", "dataset_definition"}


@pytest.mark.parametrize("body, message", [
    ("datasets: {X: {domains: [a], classes: [c, d], colour: red}}", "unknown keys"),
    ("datasets: {X: {domains: [a]}}", "needs 'classes'"),
    ("datasets: {X: {domains: [a], classes: [c, d], seen_classes: [e]}}", "proper subset"),
    ("datasets: {PACS: {domains: [a], classes: [c, d]}}", "built-in dataset"),
    ("datasets: {X: {domains: ['a->b'], classes: [c, d]}}", "domain names"),
    ("paths: {Nope: {root: x}}", "unknown datasets"),
    ("datasets: [1, 2", "cannot read"),
    ("datasets: {X: {domains: [a], classes: [c, d], val_fraction: abc}}",
     "'val_fraction' must be a number between 0 and 1, got 'abc'"),
    ("datasets: {X: {domains: [a], classes: [c, d], epochs: 0}}", "'epochs' must be a number > 0"),
    ("datasets: {X: {domains: [photo], classes: [c, d], expected_images: {photo: many}}}",
     "'expected_images' of 'photo' must be an image count"),
    ("datasets: {X: {domains: [a], classes: [c, d], expected_images: {b: 3}}}",
     "'expected_images' names 'b', not a domain"),
])
def test_bad_configs_are_named(tmp_path, body, message):
    config = tmp_path / "c.yaml"
    config.write_text(body)
    with pytest.raises(DatasetError, match=message):
        create_dataset("DigitsDG", config_file=config)


def test_paths_move_a_builtin_dataset(tmp_path):
    T.folder_tree(tmp_path / "elsewhere", {d: d for d in PACS.DOMAINS}, PACS.CLASSES, 1)
    config = tmp_path / "c.yaml"
    config.write_text(f"paths: {{PACS: {{root: {tmp_path / 'elsewhere'}}}}}\n")
    ds = create_dataset("PACS", tmp_path / "nothing_here", "photo", config_file=config)
    assert ds.root == tmp_path / "elsewhere" and len(ds.domain("photo")) == 7
