"""The dataset CLI (list, splits, scaffold), ``--split`` in training, and the transforms."""
import numpy as np
import pytest
from PIL import Image

import datatrees as T
from sdgdml.datasets import DATASETS, DatasetError, create_dataset
from sdgdml.datasets import transforms as TF
from sdgdml.datasets.__main__ import main as datasets_main
from sdgdml.train import resolve_split
from sdgdml.train_args import build_parser, experiment_identity


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("SDGDML_CACHE_DIR", str(tmp_path / "cache"))


def test_list_and_splits(capsys):
    assert datasets_main(["list"]) == 0
    out = capsys.readouterr().out
    for name in ("DomainNet", "PACS", "OfficeHome", "Office31", "CUB200Ext", "Cars196Ext"):
        assert name in out
    assert "172/173" in out and "official" in out
    assert datasets_main(["splits", "CUB200Ext"]) == 0
    assert capsys.readouterr().out.split() == [
        "CUB200Ext:real->oil_painting,watercolor", "CUB200Ext:oil_painting->real,watercolor",
        "CUB200Ext:watercolor->real,oil_painting"]
    assert datasets_main(["splits", "Nope"]) == 2
    assert "unknown dataset 'Nope'" in capsys.readouterr().err


def test_scaffold_writes_a_config_that_registers_the_tree(tmp_path, capsys):
    T.folder_tree(tmp_path / "flowers", {"photo": "photo", "paint": "paint"},
                  ["rose", "daisy", "tulip", "iris"], per_class=3)
    assert datasets_main(["scaffold", "--root", str(tmp_path / "flowers"), "--name",
                          "Flowers4"]) == 0
    (tmp_path / "flowers.yaml").write_text(capsys.readouterr().out)
    ds = create_dataset("Flowers4", tmp_path, "photo", config_file=tmp_path / "flowers.yaml")
    assert ds.CLASSES == ("daisy", "iris", "rose", "tulip") and ds.DOMAINS == ("paint", "photo")
    ds.validate()
    assert len(ds.domain("paint")) == 12 and "Flowers4" in DATASETS


def test_split_string_is_one_identity_with_the_spelled_out_flags():
    base = ["--output_dir", "x"]
    a = build_parser().parse_args(base + ["--split", "OfficeHome:Real_World->Art,Product"])
    resolve_split(a)
    b = build_parser().parse_args(base + ["--dataset", "OfficeHome", "--source", "Real_World",
                                          "--targets", "Art", "Product"])
    assert experiment_identity(a) == experiment_identity(b)
    c = build_parser().parse_args(base + ["--split", "PACS:photo", "--source", "sketch"])
    with pytest.raises(DatasetError, match="drop --dataset/--source/--targets"):
        resolve_split(c)
    # defaults made explicit: one identity, and records that name the source, however spelled
    others = ["art_painting", "cartoon", "sketch"]
    identities = []
    for spelling in (["--split", "PACS"], ["--split", "PACS:photo"], ["--dataset", "PACS"],
                     ["--dataset", "PACS", "--source", "photo"],
                     ["--dataset", "PACS", "--targets", *others]):
        d = build_parser().parse_args(base + spelling)
        resolve_split(d)
        assert (d.dataset, d.source, d.targets, d.split) == ("PACS", "photo", others, None)
        identities.append(experiment_identity(d))
    assert identities == [{"dataset": "PACS", "source": "photo", "targets": others}] * 5


def test_standard_transforms():
    image = Image.fromarray(np.random.default_rng(0).integers(0, 255, (300, 400, 3),
                                                              dtype=np.uint8))
    evaluate = TF.standard_eval(224)
    assert evaluate.transforms[0].size == 256                     # resize 256, crop 224
    x = evaluate(image)
    assert x.shape == (3, 224, 224) and (evaluate(image) == x).all()
    train = TF.standard_train(224)
    assert [type(t).__name__ for t in train.transforms] == [
        "RandomResizedCrop", "RandomHorizontalFlip", "ToTensor", "Normalize"]
    assert train(image).shape == (3, 224, 224)
    assert TF.standard_eval(32)(image).shape == (3, 32, 32)       # image_size is configurable


def test_backbone_timm_data_config():
    assert TF.data_config({"backbone": "resnet50.tv_in1k"}) is None        # default: ImageNet
    vit = TF.data_config({"backbone": "vit_s", "normalization": "timm"})
    assert vit == {"mean": (0.5, 0.5, 0.5), "std": (0.5, 0.5, 0.5), "crop_pct": 0.9,
                   "interpolation": "bicubic"}
    evaluate = TF.standard_eval(224, **vit)
    assert evaluate.transforms[0].size == 249 and evaluate.transforms[-1].mean == (0.5,) * 3
    assert TF.data_config({"backbone": "digits_cnn", "normalization": "timm"}) == {}
    with pytest.raises(ValueError, match="unknown normalization"):
        TF.data_config({"backbone": "resnet18", "normalization": "clip"})
