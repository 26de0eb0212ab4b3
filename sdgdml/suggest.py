"""Did-you-mean hints for unknown names (algorithms, hparams, datasets, flags, choices).

One ranking everywhere: case-insensitive similarity (``difflib``'s ratio on lower-cased
names), an exact case-insensitive match first, so ``proxyanchor`` suggests ``ProxyAnchor``, and a
spelt-out name its abbreviation (``learning_rate`` suggests ``lr``).
"""
from __future__ import annotations

import difflib
import re
from typing import Iterable


def _initials(name: str) -> str:
    """``learning_rate`` -> ``lr``: a spelt-out name's abbreviation."""
    words = [w for w in re.split(r"[_\-\s]+", name) if w]
    return "".join(w[0] for w in words) if len(words) > 1 else ""


def close_matches(name: str, known: Iterable[str], n: int = 3, cutoff: float = 0.5) -> list[str]:
    """Up to ``n`` names of ``known`` most similar to ``name``, best first."""
    known = list(dict.fromkeys(str(k) for k in known))
    low = str(name).lower()
    exact = [k for k in known if k != name and (k.lower() == low or _initials(low) == k.lower()
                                                or _initials(k.lower()) == low)]
    scored = sorted(((difflib.SequenceMatcher(None, low, k.lower()).ratio(), k) for k in known
                     if k not in exact and k != name), key=lambda t: (-t[0], t[1]))
    ranked = exact + [k for score, k in scored if score >= cutoff]
    if not ranked:   # substring hits ("rate" in "learning_rate" ~ "lr" is not one; "anchor" is)
        ranked = [k for k in known if low and (low in k.lower() or k.lower() in low)]
    return ranked[:n]


def did_you_mean(name: str, known: Iterable[str], n: int = 3) -> str:
    """`` (did you mean 'A', 'B'?)`` or an empty string, to append to an error message."""
    hits = close_matches(name, known, n)
    return f" (did you mean {', '.join(repr(h) for h in hits)}?)" if hits else ""
