"""DomainNet, CUB-200-2011 Ext. and Cars196 Ext. on real image trees with the official list and
annotation files (DomainNet's <domain>_train/_test.txt, CUB's images.txt & co, Cars196's
cars_annos.mat written with scipy.io.savemat or the devkit): class order, seen/unseen split,
which images land in which split, label correctness, and the problems the index reports."""
import re
import shutil
from pathlib import Path

import numpy as np
import pytest

import datatrees as T
from sdgdml.datasets import (CUB200Ext, Cars196Ext, DatasetError, DomainNet, create_dataset,
                             parse_split)


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("SDGDML_CACHE_DIR", str(tmp_path / "cache"))


def _paths(split):
    return sorted(split.samples.paths[i] for i in split.indices)


def _labels_match(split, truth):
    return all(truth[split.samples.paths[i]].label == y
               for i, y in zip(split.indices, split.labels))


@pytest.fixture(scope="module")
def domainnet(tmp_path_factory):
    data = tmp_path_factory.mktemp("dn")
    images = T.domainnet(data / "domain_net", ["real", "sketch"], DomainNet.CLASSES,
                         n_train=2, n_test=1)
    return data, images


def test_domainnet_class_order_is_the_official_label_order():
    assert len(DomainNet.CLASSES) == 345 and len(set(DomainNet.CLASSES)) == 345
    key = [c.lower().replace("_", "").replace("-", "") for c in DomainNet.CLASSES]
    assert key == sorted(key)             # alphabetical ignoring case, '_' and '-' (as listed)
    assert DomainNet.CLASSES[:3] == ("aircraft_carrier", "airplane", "alarm_clock")
    assert DomainNet.CLASSES.index("cello") + 1 == DomainNet.CLASSES.index("cell_phone")
    assert DomainNet.CLASSES[-1] == "zigzag"
    ds = DomainNet("unused", "real")
    assert len(ds.seen_classes) == 172 and ds.unseen_classes[0] == 172


def test_domainnet_official_lists_define_every_split(domainnet):
    data, images = domainnet
    truth = {i.path: i for i in images}
    ds = create_dataset(*parse_split("DomainNet:real->sketch")[:1], data, "real", ["sketch"])
    ds.validate()
    real = [i for i in images if i.domain == "real"]
    train, val = ds.train_split(), ds.val_split()
    assert _paths(train) == sorted(i.path for i in real if i.label < 172 and not i.test)
    assert _paths(val) == sorted(i.path for i in real if i.label < 172 and i.test)
    for domain in ("real", "sketch"):
        test = ds.test_split(domain)
        assert _paths(test) == sorted(i.path for i in images if i.domain == domain
                                      and i.label >= 172 and i.test)
        assert _labels_match(test, truth) and len(test) == 173
    assert _labels_match(val, truth) and np.array_equal(train.labels, ds.domain(
        "real").labels[train.indices])                             # seen ids map to themselves
    # images protocol: the validation images come out of the train list only
    ds2 = create_dataset("DomainNet", data, "real", ["sketch"], val_protocol="images")
    assert sorted(_paths(ds2.train_split()) + _paths(ds2.val_split())) == _paths(train)


def test_domainnet_list_problems_are_reported_precisely(tmp_path):
    root = tmp_path / "domain_net"
    images = T.domainnet(root, ["real"], DomainNet.CLASSES, n_train=1, n_test=1)
    lines = (root / "real_train.txt").read_text().splitlines()
    lines[1] = lines[1].rsplit(" ", 1)[0] + " 7"                   # airplane labelled 7
    (root / "real_train.txt").write_text("\n".join(lines) + "\n")
    gone = Path(images[-1].path)
    gone.unlink()
    T.write_image(root / "real" / "zebra" / "not_listed.jpg")
    ds = create_dataset("DomainNet", tmp_path, "real", ["sketch"])
    ok, report = ds.check(["real", "sketch"], verify=False)
    assert not ok
    assert "line 2: label 7 for class folder 'airplane' (whose label is 1)" in report
    assert f"1 of the 689 images in the official lists are missing under {root}: " \
           f"real/zigzag/{gone.name}" in report
    assert "1 image files under" in report and "in neither official list" in report
    assert f"sketch: official list file not found: {root / 'sketch_train.txt'}" in report
    assert f"sketch: domain folder not found: {root / 'sketch'}" in report
    with pytest.raises(DatasetError, match="bad lines"):
        ds.validate()


@pytest.fixture(scope="module")
def cub(tmp_path_factory):
    data = tmp_path_factory.mktemp("cub")
    real = T.cub(data / "CUB_200_2011", CUB200Ext.CLASSES, per_class=2)
    oil = T.ext_domains(data / "CUB200Ext", ["oil_painting"], CUB200Ext.CLASSES)
    numbers = [f"{i + 1:03d}" if i % 10 else None for i in range(200)]   # every 10th missing
    water = T.ext_domains(data / "CUB200Ext", ["watercolor"], numbers, per_class=2)
    return data, real + oil + water


def test_cub_real_domain_from_the_official_files(cub):
    data, images = cub
    truth = {i.path: i for i in images}
    ds = create_dataset(*parse_split("CUB200Ext:real->oil_painting,watercolor")[:1], data,
                        "real", ["oil_painting", "watercolor"])
    ds.validate()
    real = ds.domain("real")
    assert len(real) == 400 and real.labels.tolist() == sorted(real.labels.tolist())
    assert all(truth[p].label == y for p, y in zip(real.paths, real.labels))
    assert real.official_test.tolist() == [truth[p].test for p in real.paths]
    assert ds.seen_classes.tolist() == list(range(100))
    test = ds.test_split("real")
    assert len(test) == 200 and set(test.labels.tolist()) == set(range(100, 200))
    assert len(ds.train_split()) + len(ds.val_split()) == 200      # every seen image is used
    official = create_dataset("CUB200Ext", data, "real", val_protocol="official")
    assert _paths(official.val_split()) == sorted(i.path for i in images if i.domain == "real"
                                                  and i.label < 100 and i.test)


def test_cub_painted_domains_in_the_default_layout(cub):
    data, images = cub
    truth = {i.path: i for i in images}
    ds = create_dataset("CUB200Ext", data, "real")
    oil, water = ds.domain("oil_painting"), ds.domain("watercolor")
    assert len(oil) == 200 and len(water) == 2 * 180
    assert all(truth[p].label == y for p, y in zip(water.paths, water.labels))
    assert "/CUB200Ext/watercolor/150/" in water.paths[int(np.argmax(water.labels == 149))]
    ok, report = ds.check(verify=False)
    assert ok, report
    assert "watercolor: 20 class folders missing" in report      # a note, not a problem
    assert "001.Black_footed_Albatross, 011.Rusty_Blackbird" in report
    assert re.search(r"\nwatercolor +360 +\? +180/200 +180 +180 +- +ok\n", report), report


def test_ext_folders_that_name_no_class_are_errors_not_guesses(tmp_path):
    T.ext_domains(tmp_path / "CUB200Ext", ["oil_painting"],
                  ["001.Black_footed_Albatross", "002.Some_Other_Name", "misc"]
                  + ["150.Sage_Thrasher"])
    ds = create_dataset("CUB200Ext", tmp_path, "real", ["oil_painting"])
    index = ds.index("oil_painting")
    assert index.problems == [
        f"1 folders in {tmp_path / 'CUB200Ext' / 'oil_painting'} name no class of the dataset "
        f"(cannot label them): misc"]
    assert "002.Some_Other_Name" in index.warnings[-1]          # labelled by its number
    assert sorted(set(index.labels)) == [0, 1, 149]


def test_cub_inconsistent_annotations_are_named(tmp_path):
    root = tmp_path / "CUB_200_2011"
    T.cub(root, CUB200Ext.CLASSES, per_class=1)
    labels = (root / "image_class_labels.txt").read_text().splitlines()
    labels[0] = "1 2"
    (root / "image_class_labels.txt").write_text("\n".join(labels) + "\n")
    (root / "train_test_split.txt").unlink()
    index = create_dataset("CUB200Ext", tmp_path, "real").index("real")
    assert index.problems == [f"official file not found: {root / 'train_test_split.txt'}"]
    (root / "train_test_split.txt").write_text("".join(f"{i} 1\n" for i in range(1, 201)))
    index = create_dataset("CUB200Ext", tmp_path, "real").index("real")
    assert index.problems == ["1 images with inconsistent annotations: image 1 "
                              "(001.Black_footed_Albatross/Black_footed_Albatross_0000_1.jpg): "
                              "labelled class 2"]


@pytest.mark.parametrize("distribution", ["cars_annos", "devkit"])
def test_cars196_real_domain_from_either_distribution(tmp_path, distribution):
    write = T.cars_annos if distribution == "cars_annos" else T.cars_devkit
    images = write(tmp_path / "cars196", per_class=2)
    folders = [f"{i + 1:03d}" for i in range(196)]
    images += T.ext_domains(tmp_path / "Cars196Ext", ["oil_painting", "watercolor"], folders)
    truth = {i.path: i for i in images}
    ds = create_dataset(*parse_split("Cars196Ext:real->oil_painting,watercolor")[:1],
                        tmp_path, "real", ["oil_painting", "watercolor"])
    ds.validate()
    real = ds.domain("real")
    assert len(real) == 392
    assert all(truth[p].label == y for p, y in zip(real.paths, real.labels))
    assert real.official_test.tolist() == [truth[p].test for p in real.paths]
    assert Cars196Ext.CLASSES[:2] == ("001", "002") and len(Cars196Ext.CLASSES) == 196
    assert ds.seen_classes.tolist() == list(range(98))
    assert set(ds.test_split("watercolor").labels.tolist()) == set(range(98, 196))
    assert len(ds.train_split()) + len(ds.val_split()) == 196


def test_cars196_missing_annotations_name_both_layouts(tmp_path):
    (tmp_path / "cars196" / "car_ims").mkdir(parents=True)
    index = create_dataset("Cars196Ext", tmp_path, "real").index("real")
    assert index.problems == [f"no annotations in {tmp_path / 'cars196'}: neither "
                              f"cars_annos.mat nor the devkit (devkit/cars_train_annos.mat and "
                              f"cars_test_annos_withlabels.mat)"]
    (tmp_path / "cars196" / "cars_annos.mat").write_bytes(b"not a mat file")
    index = create_dataset("Cars196Ext", tmp_path, "real").index("real")
    assert index.problems[0].startswith(f"cannot read {tmp_path / 'cars196' / 'cars_annos.mat'}")


def test_painted_domains_can_live_anywhere(tmp_path, cub):
    data, _ = cub
    elsewhere = tmp_path / "my_oil"
    shutil.copytree(data / "CUB200Ext" / "oil_painting", elsewhere)
    config = tmp_path / "c.yaml"
    config.write_text(f"paths: {{CUB200Ext: {{oil_painting: {elsewhere}}}}}\n")
    ds = create_dataset("CUB200Ext", data, "real", ["oil_painting"], config_file=config)
    assert all(p.startswith(str(elsewhere)) for p in ds.domain("oil_painting").paths)
