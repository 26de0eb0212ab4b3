"""Did-you-mean ranking (sdgdml.suggest): case, typos, abbreviations, nothing for unrelated."""
from sdgdml.suggest import close_matches, did_you_mean


def test_case_insensitive_exact_match_ranks_first():
    assert close_matches("proxyanchor", ["ProxyNCA", "ProxyAnchor"])[0] == "ProxyAnchor"


def test_typo_is_ranked_by_similarity():
    assert close_matches("ProxyAnchr", ["SoftTriple", "ProxyNCA", "ProxyAnchor"])[0] == "ProxyAnchor"


def test_spelt_out_name_suggests_its_abbreviation():
    assert close_matches("learning_rate", ["weight_decay", "lr", "batch_size"]) == ["lr"]


def test_unrelated_name_gets_no_hint():
    assert did_you_mean("zzz", ["ProxyAnchor", "SEE"]) == ""
    assert did_you_mean("SEEE", ["ProxyAnchor", "SEE"]) == " (did you mean 'SEE'?)"
