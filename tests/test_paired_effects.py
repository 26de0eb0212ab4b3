"""benchmarks/paired_effects.py: plug-in minus base, paired by trial seed."""
import importlib.util
from pathlib import Path

import pandas as pd

_spec = importlib.util.spec_from_file_location(
    "paired_effects", Path(__file__).resolve().parents[1] / "benchmarks" / "paired_effects.py")
paired_effects = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(paired_effects)


def _frame(values: dict[int, float]) -> pd.DataFrame:
    return pd.DataFrame({"t": values}).rename_axis("trial_seed")


def test_differences_are_paired_by_trial_seed_and_bases_are_found():
    # trial effects 0.30 / 0.10 / 0.20 shared by both runs; the plug-in adds 1, 2, 3 points
    base = _frame({0: 0.30, 1: 0.10, 2: 0.20})
    plug = _frame({2: 0.23, 0: 0.31, 1: 0.12})
    cp = _frame({0: 0.29, 1: 0.09})
    rows = paired_effects.paired_rows({"ProxyAnchor": base, "ProxyAnchor+SEE": plug,
                                       "CenterPolar": cp, "NormSoftmax": base}, ["t"])
    assert rows == [["CenterPolar - ProxyAnchor", 2, "-1.0 ± 0.0"],
                    ["ProxyAnchor+SEE - ProxyAnchor", 3, "+2.0 ± 0.6"]]
    assert paired_effects._base("SoftTriple+SEE+PFML") == "SoftTriple+SEE"
    assert paired_effects._base("no such method") is None
