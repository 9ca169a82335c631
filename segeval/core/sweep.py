"""Threshold sweeps: every reduction at every threshold, from per-case sweep counts.

Each case counted with ``sweep`` thresholds carries TP/FP/FN/TN per threshold and channel
(one pass over its voxels; see ``engine.sweep_channel``).  A case whose prediction is a
label map has the same counts at every threshold (its values are 0 or 1, and ``p > t``
does not depend on ``t`` in [0, 1) for them).  For each threshold the per-case counts form
a count table that :func:`segeval.core.reduce.reduce_counts` reduces exactly like the main
results, so every number in the ``sweep`` block means what the same key means elsewhere.

The best threshold maximises the headline metric of the chosen summary (or of a class's
pooled value); ties go to the lowest threshold; undefined values never win.  It is
reported, never applied: choosing a threshold on the data being evaluated inflates the
score, so the main results stay at ``--threshold``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from segeval.config import METRICS, EvalConfig
from segeval.core.counts import ClassSpec, CountTable
from segeval.core.reduce import reduce_counts

SUMMARIES = ("macro", "micro", "macro_imagewise")


def sweep_block(counts: list[Any], classes: list[ClassSpec],
                config: EvalConfig) -> dict[str, Any] | None:
    """The report's ``sweep`` block, or None without ``config.sweep``."""
    if not config.sweep:
        return None
    swept = [c for c in classes if len(c.labels) == 1]  # regions have no single channel
    m = len(config.sweep)
    tables = [np.zeros((m, len(counts), len(swept)), dtype=np.int64) for _ in range(4)]
    scored = np.array([c is not None for c in counts], dtype=bool)
    for i, case in enumerate(counts):
        if case is None:
            continue
        if case.sweep is not None:
            for k, spec in enumerate(swept):
                (channel,) = spec.labels
                if channel < case.sweep.shape[2]:
                    for q in range(4):
                        tables[q][:, i, k] = case.sweep[q, :, channel]
                else:  # a class this case's channels do not have: all true negatives
                    tables[3][:, i, k] = case.sweep[:, :, 0].sum(axis=0)
        else:
            hard = case.class_counts(swept, config.ignore_index)
            for q in range(4):
                tables[q][:, i, :] = hard[q]
    per_threshold = [
        reduce_counts(CountTable(swept, tables[0][j], tables[1][j], tables[2][j],
                                 tables[3][j], scored), config)
        for j in range(m)
    ]
    metric = config.headline_metric
    block: dict[str, Any] = {
        "thresholds": list(config.sweep),
        "rule": f"p > t for each threshold t; best = highest {metric}, ties to the lowest "
                "threshold; reported, not applied",
        "summary": {},
        "per_class": {},
    }
    for name in SUMMARIES:
        curves = {m_: [_num(getattr(r, name)[m_]) for r in per_threshold] for m_ in METRICS}
        block["summary"][name] = {**curves, "best": best(config.sweep, curves[metric])}
    for k, spec in enumerate(swept):
        pooled = {m_: [_num(r.pooled[m_][k]) for r in per_threshold] for m_ in METRICS}
        mean = {m_: [_num(r.mean[m_][k]) for r in per_threshold] for m_ in METRICS}
        block["per_class"][spec.key] = {"pooled": pooled, "mean": mean,
                                        "best": best(config.sweep, pooled[metric])}
    return block


def best(thresholds: tuple[float, ...], values: list[float | None]) -> dict[str, Any]:
    """The threshold with the highest defined value (ties: the lowest threshold)."""
    defined = [(v, -i) for i, v in enumerate(values) if v is not None]
    if not defined:
        return {"threshold": None, "value": None}
    value, negative_index = max(defined)
    return {"threshold": thresholds[-negative_index], "value": value}


def _num(value: Any) -> float | None:
    value = float(value)
    return None if np.isnan(value) else value
