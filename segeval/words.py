"""The project's shared words: how a number, a class and a reduction are written.

One home for the wording every output uses (terminal tables, Markdown, HTML, JUnit, CI
messages, bar verdicts), so the same value reads the same everywhere.
"""

from __future__ import annotations

import math
from typing import Any

# What each summary reduction means, in the words of README and the JSON keys.
SUMMARY_NOTES = {
    "macro": "mean over classes of the per-class value pooled over cases",
    "macro_imagewise": "mean over classes of the per-class mean over cases",
    "micro": "counts pooled over all classes and cases, then the score",
}


def fmt(value: Any) -> str:
    """A report value as text: 4 decimals for a fraction, a whole number as is (counts,
    millimetres that happen to be whole are fractions and keep their decimals), "—" for
    null or NaN."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return str(value)
    if isinstance(value, int):
        return str(value)
    return f"{value:.4f}"


def signed(value: float | None) -> str:
    """A difference with its sign: ``+0.0100``; "—" for null."""
    return "—" if value is None else f"{value:+.4f}"


def class_label(key: Any, name: Any = "") -> str:
    """``2 tumour`` for a named label, ``2`` when the name is the key or missing."""
    key, name = str(key), str(name or "")
    return key if not name or name == key else f"{key} {name}"
