"""DomainNet-7, the class set of UEM's / UCDIR's DomainNet protocol: one fixed set for every
domain pair, chosen from the official *training* lists of the six domains, printed with each
domain's counts by ``python -m sdgdml.datasets check``; a UCDR domain on DomainNet is its
training-list images."""
from pathlib import Path

import numpy as np
import pytest

import datatrees as T
from sdgdml.datasets import DomainNet, create_dataset
from sdgdml.datasets.__main__ import main as datasets_main
from sdgdml.datasets.ucdr import frequent_classes, make_protocol, train_views

DOMAINS = DomainNet.DOMAINS


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("SDGDML_CACHE_DIR", str(tmp_path / "cache"))


def write_lists(root: Path, counts, images: bool = False) -> dict:
    """DomainNet's ``<domain>_train.txt`` / ``_test.txt``; ``counts[domain][label] = (n_train,
    n_test)``; with ``images`` the listed files too. Returns {domain: {path: is_test}}."""
    listed = {}
    root.mkdir(parents=True, exist_ok=True)
    for d in DOMAINS:
        lines, listed[d] = {"train": [], "test": []}, {}
        for label, (n_train, n_test) in counts[d].items():
            c = DomainNet.CLASSES[label]
            for k in range(n_train + n_test):
                part = "train" if k < n_train else "test"
                rel = f"{d}/{c}/{d}_{label:03d}_{k:06d}.jpg"
                lines[part].append(f"{rel} {label}")
                listed[d][str(root / rel)] = part == "test"
                if images:
                    T.write_image(root / rel)
        for part, ls in lines.items():
            (root / f"{d}_{part}.txt").write_text("\n".join(ls) + "\n")
    return listed


def _counts():
    """Training images: classes 0-6 have 210-216 in every domain; class 7 has 300 except 150 in
    infograph (a clipart/sketch pair alone would take it); class 8 has 190 training + 100 test
    images (train + test lists would take it); class 9 has 205 (eligible, but 8th)."""
    out = {}
    for d in DOMAINS:
        out[d] = {c: (210 + c + (DOMAINS.index(d) == c), 5) for c in range(7)}
        out[d][7] = (150 if d == "infograph" else 300, 5)
        out[d][8] = (190, 100)
        out[d][9] = (205, 5)
    return out


@pytest.fixture(scope="module")
def lists_only(tmp_path_factory):
    data = tmp_path_factory.mktemp("dn7")
    write_lists(data / "domain_net", _counts())
    return data


def test_one_fixed_set_from_the_training_lists_for_every_pair(lists_only):
    for source, target in (("clipart", "sketch"), ("quickdraw", "real"),
                           ("painting", "infograph")):
        ds = create_dataset("DomainNet", lists_only, source, [target])
        assert frequent_classes(ds, 200, 7) == tuple(range(7)), (source, target)
    ds = create_dataset("DomainNet", lists_only, "clipart", ["sketch"])
    assert ds.training_class_counts("infograph")[7] == 150          # from the list file
    assert ds.training_class_counts("clipart")[8] == 190            # test list not counted
    assert frequent_classes(ds, 200, 8) == tuple(range(7)) + (9,)


def test_check_prints_the_set_with_each_domains_training_images(lists_only, capsys):
    assert datasets_main(["check", "--data_dir", str(lists_only), "--dataset", "DomainNet",
                          "--no_verify"]) == 1                       # no image files: not ready
    out = capsys.readouterr().out
    table = out[out.index("DomainNet-7 (--ucdr_min_images 200"):].splitlines()
    header = next(i for i, line in enumerate(table) if line.startswith("class "))
    assert table[header].split() == ["class", *DOMAINS]
    rows = {" ".join(line.split()[:2]): line.split()[2:] for line in table[header + 2:]}
    counts = _counts()
    for c in range(7):
        assert rows[f"{c} {DomainNet.CLASSES[c]}"] == [str(counts[d][c][0]) for d in DOMAINS]
    totals = table[[line.split()[:1] for line in table].index(["total"])].split()[1:]
    assert totals == [str(sum(counts[d][c][0] for c in range(7))) for d in DOMAINS]
    reference = next(line for line in table if line.startswith("reference")).split()[1:]
    assert reference == ["1959", "-", "-", "-", "-", "2091"]          # UCDIR's script
    assert DomainNet.CLASSES[7] not in out[out.index("DomainNet-7"):]


def test_without_all_six_lists_the_set_is_unavailable_and_said_so(tmp_path, capsys):
    write_lists(tmp_path / "domain_net", _counts())
    (tmp_path / "domain_net" / "quickdraw_train.txt").unlink()
    datasets_main(["check", "--data_dir", str(tmp_path), "--dataset", "DomainNet",
                   "--domains", "clipart", "--no_verify"])
    out = capsys.readouterr().out
    assert "DomainNet-7 (--ucdr_min_images 200" in out and "not available" in out
    assert "quickdraw_train.txt" in out[out.index("DomainNet-7"):]


def test_ucdr_views_on_domainnet_hold_the_training_images_of_the_set(tmp_path):
    # training images per class c: c + 1 in every domain (and 1 test image each)
    counts = {d: {c: (c + 1, 1) for c in range(4)} for d in DOMAINS}
    listed = write_lists(tmp_path / "domain_net", counts, images=True)
    ds = create_dataset("DomainNet", tmp_path, "clipart", ["sketch"])
    proto = make_protocol(ds, "closed", min_images=1, num_classes=2)
    assert proto.query_classes == proto.gallery_classes == (2, 3)
    views = train_views(ds, proto)
    for d in ("clipart", "sketch"):
        view = views[d]
        paths = [view.samples.describe(i) for i in view.indices]
        assert len(paths) == 3 + 4 and not any(listed[d][p] for p in paths)
        labels = ds.domain(d).labels[view.indices]
        assert sorted(np.bincount(labels, minlength=4)[2:]) == [3, 4]
