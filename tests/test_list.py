"""``python -m sdgdml.list``: every subject is read from the registries, so toy components
registered here (a loss, a plug-in shorthand, a dataset, a recipe) are listed without touching
the lister; unknown names get a did-you-mean; --help texts name the registered algorithms."""
from __future__ import annotations

import json

import pytest

from sdgdml import list as lister
from sdgdml.algorithms import MetricLoss, Plugin, register_loss, register_plugin
from sdgdml.algorithms.registry import names, unregister
from sdgdml.datasets import DATASETS, DigitsDG
from sdgdml.recipes import RECIPES, Recipe
from sdgdml.search_space import choice, log_uniform
from sdgdml.train_args import build_parser


class ToyListedLoss(MetricLoss):
    """A toy loss registered by the test: listed without editing the lister."""

    HAS_PROXIES = True

    @staticmethod
    def declare_hparams(hp, small):
        hp("toylist_scale", 2.5, log_uniform(0.1, 10.0), help="a toy scale")
        hp("toylist_mode", "a", choice("a", "b"), choices=("a", "b"))


class ToyListedPlugin(Plugin):
    """A toy plug-in with a default base."""


class ToyDigits(DigitsDG):
    NAME = "ToyDigitsList"
    DOMAINS = ("mnist", "uci")


@pytest.fixture
def toys(monkeypatch):
    register_loss("ToyListedLoss")(ToyListedLoss)
    register_plugin("ToyListedPlugin", default_base="ProxyAnchor")(ToyListedPlugin)
    monkeypatch.setitem(DATASETS, ToyDigits.NAME, ToyDigits)
    monkeypatch.setitem(RECIPES, "toy_recipe", Recipe(
        "toy_recipe", "Toy paper, Sec. 9", {"lr": 0.5, "batch_size": 7}, epochs=3,
        per_dataset={"DigitsDG": {"lr": 0.25}}, unknown="everything else"))
    yield
    unregister("loss", "ToyListedLoss")
    unregister("plugin", "ToyListedPlugin")


def test_algorithms_lists_every_registered_name_and_a_new_one(toys):
    rows = {r["name"]: r for r in lister.algorithms()}
    assert set(names("loss")) | set(names("algorithm")) <= set(rows)
    assert rows["ToyListedLoss"]["kind"] == "base loss"
    assert rows["ToyListedLoss"]["description"].startswith("A toy loss registered by the test")
    assert rows["ToyListedPlugin"]["kind"] == "= ProxyAnchor+ToyListedPlugin"
    assert "UEM" in rows and rows["UEM"]["kind"] == "standalone"
    assert {r["name"] for r in lister.losses()} == set(names("loss"))
    assert {r["name"] for r in lister.plugins()} == set(names("plugin"))


def test_hparams_show_default_range_and_the_plugins_own(toys):
    rows = {r["hparam"]: r for r in lister.hparams("ToyListedLoss+SEE", "DigitsDG")}
    assert rows["toylist_scale"]["default"] == 2.5
    assert rows["toylist_scale"]["random search"] == "log_uniform(0.1, 10)"
    assert rows["toylist_scale"]["meaning"] == "a toy scale"
    assert rows["toylist_mode"]["random search"] == "choice('a', 'b')"
    assert rows["toylist_mode"]["choices"] == "a, b"
    assert "see_lambda" in rows and "lr" in rows
    assert rows["backbone"]["random search"] == "— (fixed)"
    # the same names as the registry's defaults
    from sdgdml.hparams_registry import default_hparams
    defaults = default_hparams("ProxyAnchor+SEE", "PACS")
    listed = lister.hparams("ProxyAnchor+SEE", "PACS")
    assert {r["hparam"]: r["default"] for r in listed} == defaults


def test_datasets_and_their_splits(toys):
    rows = {r["dataset"]: r for r in lister.datasets()}
    assert set(rows) == set(DATASETS)
    assert rows["ToyDigitsList"]["domains"] == "mnist, uci"
    assert rows["DigitsDG"]["needs --data_dir"].startswith("no")
    splits = lister.datasets("PACS")
    assert len(splits) == 4
    assert [r["split"] for r in splits if r["default"]] == ["PACS:photo->art_painting,cartoon,sketch"]


def test_recipes_list_every_value_with_its_source(toys):
    rows = lister.recipes("toy_recipe")
    got = {(r["dataset"], r["setting"]): r["value"] for r in rows}
    assert got == {("all", "lr"): 0.5, ("all", "batch_size"): 7, ("DigitsDG", "lr"): 0.25,
                   ("all", "epochs (run length)"): 3}
    assert {r["source"] for r in rows} == {"Toy paper, Sec. 9"}
    text = lister.render("recipes", "toy_recipe")
    assert "not in the source: everything else" in text
    assert {r["recipe"] for r in lister.recipes()} == set(RECIPES)


def test_launchers_and_metrics_come_from_their_definitions():
    from sdgdml.launchers import LAUNCHERS
    assert [r["launcher"] for r in lister.launchers()] == list(LAUNCHERS)
    metric_rows = {r["metric"]: r["meaning"] for r in lister.metrics()}
    for name in ("recall@K", "map@r", "map@all", "precision@K", "nmi", "detect_acc"):
        assert metric_rows[name]


def test_markdown_and_json_output(capsys, toys):
    lister.main(["hparams", "ToyListedLoss"])
    text = capsys.readouterr().out
    assert text.startswith("## hparams: ToyListedLoss on DigitsDG")
    assert "| toylist_scale " in text and "|---" in text
    lister.main(["--json", "datasets"])
    rows = json.loads(capsys.readouterr().out)
    assert {r["dataset"] for r in rows} == set(DATASETS)


@pytest.mark.parametrize("argv, hint", [
    (["hparams", "ProxyAnchr"], "did you mean 'ProxyAnchor'"),
    (["hparams", "proxyanchor"], "did you mean 'ProxyAnchor'"),
    (["datasets", "pacs"], "did you mean 'PACS'"),
    (["algoritms"], "did you mean 'algorithms'"),
    (["hparams", "ProxyAnchor", "--dataset", "officehome"], "did you mean 'OfficeHome'"),
])
def test_unknown_names_get_a_did_you_mean(argv, hint):
    with pytest.raises(SystemExit) as e:
        lister.main(argv)
    assert str(e.value).startswith("error: ") and hint in str(e.value)


def test_unknown_hparam_name_suggests_the_abbreviation():
    from sdgdml.hparams_registry import UnknownHparamError, get_hparams
    with pytest.raises(UnknownHparamError, match="did you mean 'lr'"):
        get_hparams("ProxyAnchor", "DigitsDG", overrides={"learning_rate": 1e-3})


def test_train_help_names_every_registered_algorithm(toys):
    text = build_parser().format_help().replace("\n", " ")
    text = " ".join(text.split())
    for name in [*names("loss"), *names("plugin"), *names("algorithm")]:
        assert name in text
    assert "python -m sdgdml.list" in text
