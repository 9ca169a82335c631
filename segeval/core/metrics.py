"""Counts → scores.  Every metric is a pure function of TP, FP, FN, TN.

Definitions (for one class, counts over the evaluated voxels)::

    dice        = 2TP / (2TP + FP + FN)                       (= F1)
    iou         = TP / (TP + FP + FN)                         (Jaccard)
    fbeta       = (1+β²)TP / ((1+β²)TP + β²FN + FP)
    precision   = TP / (TP + FP)
    recall      = TP / (TP + FN)                              (sensitivity)
    specificity = TN / (TN + FP)

Smoothing ``S`` is applied once to numerator and denominator, ``(num + S) / (den + S)``
(not the ``2(I + S)/(P + T + S)`` form of seeds 002/003, which counts it twice).

Zero division: a metric whose denominator is 0 (and ``S = 0``) is decided by the empty rule:
``nan`` (undefined: null in JSON, excluded from means), ``one`` or ``zero``.  For Dice, IoU
and F-beta that is exactly the case TP + FP + FN = 0 (class absent from both reference and
prediction); for precision it is "nothing predicted", for recall "nothing in the reference".

:func:`terms` uses arithmetic only, so it works unchanged on NumPy arrays, Python floats and
torch tensors; ``segeval.losses`` builds its soft losses on it.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from segeval.config import METRICS, EmptyRule

EMPTY_VALUES: dict[str, float] = {"nan": float("nan"), "one": 1.0, "zero": 0.0}


def terms(
    metric: str, tp: Any, fp: Any, fn: Any, tn: Any = 0, beta: float = 1.0
) -> tuple[Any, Any]:
    """Numerator and denominator of ``metric`` (before smoothing), for any array type."""
    if metric == "dice":
        return 2 * tp, 2 * tp + fp + fn
    if metric == "iou":
        return tp, tp + fp + fn
    if metric == "fbeta":
        b2 = beta * beta
        return (1 + b2) * tp, (1 + b2) * tp + b2 * fn + fp
    if metric == "precision":
        return tp, tp + fp
    if metric == "recall":
        return tp, tp + fn
    if metric == "specificity":
        return tn, tn + fp
    raise ValueError(f"unknown metric {metric!r}; known: {', '.join(METRICS)}")


def smoothed_ratio(numerator: Any, denominator: Any, smooth: float = 0.0) -> Any:
    """``(numerator + smooth) / (denominator + smooth)`` for any array type (no zero guard)."""
    return (numerator + smooth) / (denominator + smooth)


def score(
    metric: str,
    tp: Any,
    fp: Any,
    fn: Any,
    tn: Any = 0,
    *,
    beta: float = 1.0,
    smooth: float = 0.0,
    empty: EmptyRule = "nan",
) -> np.ndarray:
    """One metric from counts (scalars or arrays of any shape), as float64.

    Integer counts are converted to float64 only here, after all additions, so counts up to
    2**53 are exact.  Where the smoothed denominator is 0 the empty rule gives the value.
    """
    numerator, denominator = terms(
        metric, np.asarray(tp, dtype=np.float64), np.asarray(fp, dtype=np.float64),
        np.asarray(fn, dtype=np.float64), np.asarray(tn, dtype=np.float64), beta,
    )
    numerator = numerator + smooth
    denominator = denominator + smooth
    undefined = denominator == 0
    with np.errstate(divide="ignore", invalid="ignore"):
        values = numerator / np.where(undefined, 1.0, denominator)
    return np.where(undefined, EMPTY_VALUES[empty], values)


def scores(
    tp: Any, fp: Any, fn: Any, tn: Any, *, beta: float = 1.0, smooth: float = 0.0,
    empty: EmptyRule = "nan", metrics: tuple[str, ...] = METRICS,
) -> dict[str, np.ndarray]:
    """Every metric in ``metrics`` from the same counts."""
    return {
        name: score(name, tp, fp, fn, tn, beta=beta, smooth=smooth, empty=empty)
        for name in metrics
    }


def is_empty(tp: Any, fp: Any, fn: Any) -> np.ndarray:
    """True where the class is absent from both reference and prediction (TP+FP+FN = 0)."""
    return (np.asarray(tp) + np.asarray(fp) + np.asarray(fn)) == 0
