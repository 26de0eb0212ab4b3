"""One resolution path for hyperparameters (``hparams_registry.resolve_hparams``): each source
overrides the one before it and the recorded origin says which; declarations carry choices
and help; a choice outside its set is refused with a did-you-mean before anything exists."""
from __future__ import annotations

import json

import pytest

from sdgdml import hparams_registry as H
from sdgdml import recipes
from sdgdml import train as T
from sdgdml.algorithms import Algorithm, names, register_algorithm
from sdgdml.algorithms.registry import unregister
from sdgdml.train_args import build_parser
from sdgdml.validation import InvalidValueError
from helpers import TINY_TRAIN


@register_algorithm("ToyRecipeAlgorithm")
class ToyRecipeAlgorithm(Algorithm):
    """Only its hparam declarations are used here."""

    @classmethod
    def recipe(cls, small):
        return {"lr": 2.0, "optimizer": "sgd"}


TOY_RECIPE = recipes.Recipe("toy_recipe", "a test", {"lr": 3.0, "not_an_hparam_here": 1})


@pytest.fixture(autouse=True)
def toy_recipe(monkeypatch):
    monkeypatch.setitem(recipes.RECIPES, "toy_recipe", TOY_RECIPE)
    yield


def teardown_module():
    unregister("algorithm", "ToyRecipeAlgorithm")


# (keyword of resolve_hparams, its value, lr after it, lr's origin after it)
SOURCES = [
    (None, None, 1e-4, "default"),
    ("algorithm", None, 2.0, "ToyRecipeAlgorithm.recipe"),
    ("recipe", "toy_recipe", 3.0, "--recipe toy_recipe"),
    ("sweep", {"lr": 4.0}, 4.0, "sweep"),
    ("overrides", {"lr": 5.0}, 5.0, "--hparams"),
    ("lr_scale", 2, 10.0, "--hparams, x2 for several processes"),
]


@pytest.mark.parametrize("upto", range(len(SOURCES)))
def test_each_source_overrides_the_one_before_and_its_origin_is_recorded(upto):
    given = {k: v for k, v, _, _ in SOURCES[1:upto + 1] if k != "algorithm"}
    algorithm = "ToyRecipeAlgorithm" if upto >= 1 else "ProxyAnchor"
    values, origins = H.resolve_hparams(algorithm, "PACS", **given)
    _, _, lr, origin = SOURCES[upto]
    assert values["lr"] == lr and origins["lr"] == origin
    assert origins["weight_decay"] == "default"        # untouched names keep their origin


def test_search_draws_what_no_later_source_sets_and_fixed_recipe_values_stay():
    res = H.resolve_hparams("ToyRecipeAlgorithm", "PACS", hparams_seed=3, overrides={"lr": 5.0})
    assert res.origins["weight_decay"] == "search (hparams_seed 3)"
    assert res.values["weight_decay"] == H.random_hparams("ToyRecipeAlgorithm", "PACS", 3)[
        "weight_decay"] != H.default_hparams("ProxyAnchor", "PACS")["weight_decay"]
    assert res.origins["optimizer"] == "ToyRecipeAlgorithm.recipe"     # not searched
    assert res.by_origin()["--hparams"] == ["lr"]


def test_a_recipe_key_for_no_hparam_is_reported_not_applied():
    res = H.resolve_hparams("ProxyAnchor", "PACS", recipe="toy_recipe")
    assert res.ignored == {"not_an_hparam_here": 1} and "not_an_hparam_here" not in res.values


def test_unknown_names_and_choices_are_refused_with_a_suggestion():
    with pytest.raises(H.UnknownHparamError, match=r"'lr_schedul' \(sweep\).*did you mean "
                                                   r"'lr_schedule'"):
        H.resolve_hparams("ProxyAnchor", "PACS", sweep={"lr_schedul": "step"})
    with pytest.raises(InvalidValueError, match="optimizer=\"adamm\" is not one of its choices "
                                                r"\(did you mean 'adam', 'adamw'"):
        H.resolve_hparams("ProxyAnchor", "PACS", overrides={"optimizer": "adamm"})
    with pytest.raises(InvalidValueError, match=r"did you mean 'resnet50'"):
        H.resolve_hparams("ProxyAnchor", "PACS", overrides={"backbone": "resnet5"})
    H.resolve_hparams("ProxyAnchor", "PACS", overrides={"backbone": "resnet18",
                                                        "sampler": "m_per_class"})


def test_every_registered_hparam_has_help_and_every_text_hparam_its_choices():
    algorithms = names("loss") + [n for n in names("algorithm") if n != "ToyRecipeAlgorithm"]
    algorithms += [f"ProxyAnchor+{p}" for p in names("plugin")]
    for name in algorithms:
        for dataset in ("DigitsDG", "PACS"):
            for spec in H.hparam_specs(name, dataset).values():
                assert spec.help and "\n" not in spec.help, (name, spec.name)
                assert spec.sampler != "custom", (name, spec.name)
                if isinstance(spec.default, str):
                    assert spec.default in spec.choices, (name, spec.name)


def test_a_run_records_and_logs_its_origins(tmp_path):
    out = tmp_path / "run"
    args = build_parser().parse_args(TINY_TRAIN + [
        "--algorithm", "ProxyAnchor", "--steps", "1", "--no_eval_at_start", "--output_dir",
        str(out), "--recipe", "toy_recipe", "--sweep_hparams", '{"pa_margin": 0.2}',
        "--hparams", '{"lr": 0.01}'])
    records = T.train(args)
    origins = json.loads((out / "hparam_origins.json").read_text())
    assert origins["lr"] == "--hparams" and origins["pa_margin"] == "sweep"
    assert origins["embed_dim"] == "default" and records[-1]["hparam_origins"] == origins
    log = (out / "out.txt").read_text()
    assert "hparams from sweep: pa_margin" in log and "hparams from --hparams: lr" in log
    assert "--recipe toy_recipe: not_an_hparam_here apply to none" in log
