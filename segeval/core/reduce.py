"""Count table → every reduction.  Pure functions of the counts; no voxel is read here.

Vocabulary (the same words are JSON keys and CLI choices):

* per case × class: the metric of one case's counts for one class;
* ``pooled`` (per class): counts summed over the scored cases, then the metric
  (seed 000's ``dim=0`` answer);
* ``mean`` / ``std`` (per class): the metric per case, then its mean and standard
  deviation over the cases where it is defined (undefined = null under ``--empty nan``);
* ``macro``: the mean over classes of the per-class ``pooled`` values (seed 000: 0.625);
* ``macro_imagewise``: the mean over classes of the per-class case ``mean`` values
  (nnU-Net's foreground mean);
* ``micro``: counts summed over classes and cases, then the metric (seed 000: 0.5).

Undefined values (NaN) are left out of every mean, and each mean says how many values it
used.  A mean of no values is NaN.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from segeval.config import METRICS, EmptyRule, EvalConfig
from segeval.core.counts import CountTable
from segeval.core.metrics import is_empty, score, scores

COUNTS = ("tp", "fp", "fn", "tn")


@dataclass
class Reductions:
    """Every reduction of one count table (arrays indexed [case, class] or [class])."""

    per_case: dict[str, np.ndarray]  # metric → [n_cases, n_classes]
    pooled_counts: dict[str, np.ndarray]  # tp/fp/fn/tn → [n_classes]
    pooled: dict[str, np.ndarray]  # metric → [n_classes]
    mean: dict[str, np.ndarray]  # metric → [n_classes]
    std: dict[str, np.ndarray]
    n_used: dict[str, np.ndarray]  # metric → [n_classes] number of defined case values
    n_cases: int
    n_empty: np.ndarray  # [n_classes] scored cases with TP+FP+FN = 0
    micro_counts: dict[str, float]
    micro: dict[str, float]
    macro: dict[str, float]
    macro_imagewise: dict[str, float]
    macro_n: dict[str, int]  # classes with a defined pooled value, per metric
    macro_imagewise_n: dict[str, int]


def nanmean(values: np.ndarray, axis: int | None = None) -> np.ndarray:
    """Mean of the defined values; NaN (without a warning) where there are none."""
    defined = ~np.isnan(values)
    total = np.where(defined, values, 0.0).sum(axis=axis)
    count = defined.sum(axis=axis)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(count > 0, total / np.maximum(count, 1), np.nan)


def nanstd(values: np.ndarray, axis: int = 0, ddof: int = 0) -> np.ndarray:
    defined = ~np.isnan(values)
    count = defined.sum(axis=axis)
    mean = nanmean(values, axis=axis)
    with np.errstate(invalid="ignore", divide="ignore"):  # inf - inf: an undefined spread
        squares = np.where(defined, (values - np.expand_dims(mean, axis)) ** 2,
                           0.0).sum(axis=axis)
        return np.where(count > ddof, np.sqrt(squares / np.maximum(count - ddof, 1)), np.nan)


def summarise(reduction: str, metric: str, counts: dict[str, np.ndarray], config: EvalConfig,
              scored: np.ndarray | None = None) -> np.ndarray:
    """The one definition of each summary reduction, on counts shaped ``[..., case, class]``.

    * ``macro``: per class, counts summed over cases, then the score; mean over the classes
      where it is defined;
    * ``micro``: counts summed over cases and classes, then the score;
    * ``macro_imagewise``: the score per case and class; per class the mean over the cases
      where it is defined; then the mean over classes.

    ``scored`` ``[..., case]`` marks the cases that count (others add nothing); leading axes
    are kept, so grading's bootstrap passes every resample at once.  NaN where undefined.
    """
    def value(tp: Any, fp: Any, fn: Any, tn: Any) -> np.ndarray:
        return np.asarray(score(metric, tp, fp, fn, tn, beta=config.beta,
                                smooth=config.smooth, empty=config.empty))

    if scored is not None:
        counts = {name: np.where(scored[..., None], values, 0)
                  for name, values in counts.items()}
    ordered = [counts[name] for name in COUNTS]
    if reduction == "micro":
        return value(*(c.sum(axis=(-2, -1)) for c in ordered))
    if reduction == "macro":
        return nanmean(value(*(c.sum(axis=-2) for c in ordered)), axis=-1)
    if reduction == "macro_imagewise":
        per_case = value(*ordered)
        if scored is not None:
            per_case = np.where(scored[..., None], per_case, np.nan)
        return nanmean(nanmean(per_case, axis=-2), axis=-1)
    raise ValueError(f"unknown reduction {reduction!r}")


def reduce_counts(table: CountTable, config: EvalConfig) -> Reductions:
    """Compute every reduction of ``table`` under ``config`` (beta, smooth, empty, ddof)."""
    def score_all(tp: Any, fp: Any, fn: Any, tn: Any) -> dict[str, np.ndarray]:
        return scores(tp, fp, fn, tn, beta=config.beta, smooth=config.smooth,
                      empty=config.empty)

    rows = table.scored
    counts = {name: getattr(table, name)[rows] for name in COUNTS}
    per_case_scored = score_all(*counts.values())
    per_case = {}
    for name, values in per_case_scored.items():
        full = np.full(table.tp.shape, np.nan)
        full[rows] = values
        per_case[name] = full
    pooled_counts = {name: values.sum(axis=0) for name, values in counts.items()}
    pooled = score_all(*pooled_counts.values())
    mean = {name: nanmean(values, axis=0) for name, values in per_case_scored.items()}
    std = {name: nanstd(values, axis=0, ddof=config.std_ddof)
           for name, values in per_case_scored.items()}
    n_used = {name: (~np.isnan(values)).sum(axis=0) for name, values in per_case_scored.items()}
    micro_counts = {name: values.sum() for name, values in pooled_counts.items()}
    micro = score_all(*micro_counts.values())
    return Reductions(
        per_case=per_case,
        pooled_counts=pooled_counts,
        pooled=pooled,
        mean=mean,
        std=std,
        n_used=n_used,
        n_cases=int(rows.sum()),
        n_empty=is_empty(counts["tp"], counts["fp"], counts["fn"]).sum(axis=0),
        micro_counts={k: v.item() for k, v in micro_counts.items()},
        micro={k: float(v) for k, v in micro.items()},
        macro={k: float(summarise("macro", k, counts, config)) for k in METRICS},
        macro_imagewise={k: float(summarise("macro_imagewise", k, counts, config))
                         for k in METRICS},
        macro_n={k: int((~np.isnan(pooled[k])).sum()) for k in METRICS},
        macro_imagewise_n={k: int((~np.isnan(mean[k])).sum()) for k in METRICS},
    )


@dataclass(frozen=True)
class ValueReductions:
    """Reductions of per case x class values (boundary distances, lesion-wise metrics).

    ``per_case[metric]`` is ``[case, class]`` (NaN where undefined or not scored); per class
    the mean, std, median and number of defined values over cases; ``macro`` the mean over
    classes of the class means (the report's ``macro_imagewise``).  Values that do not add
    (distances, lesion Dice, PQ...) have no pooled or micro value (the report writes null).
    Lesion counts do add: ``pooled[metric]`` ``[class]`` is their sum over cases and
    ``micro[metric]`` over cases and classes; lesion F1 and RQ are computed from those sums
    (``pooled``, ``micro``) and ``pooled_macro`` is the mean over classes of their pooled
    values (the report's ``macro``).  ``counts`` keeps every lesion count ``[case, class]``
    (also those not asked for), from which grading's bootstrap pools resampled cases.
    ``recorded`` holds the per case values computed but not asked for (the other lesion
    table metrics: one overlap table gives them all), written in each case's record so that
    every pooled value is reproducible from the report; they are not reduced.
    """

    per_case: dict[str, np.ndarray]
    mean: dict[str, np.ndarray]
    std: dict[str, np.ndarray]
    median: dict[str, np.ndarray]
    n_used: dict[str, np.ndarray]
    macro: dict[str, float]
    pooled: dict[str, np.ndarray] = field(default_factory=dict)
    micro: dict[str, float] = field(default_factory=dict)
    pooled_macro: dict[str, float] = field(default_factory=dict)
    counts: dict[str, np.ndarray] = field(default_factory=dict)
    recorded: dict[str, np.ndarray] = field(default_factory=dict)


def pool_counts(counts: dict[str, np.ndarray], ratios: dict[str, tuple[str, str, str]],
                empty: EmptyRule, axis: int | tuple[int, ...] = -2) -> dict[str, np.ndarray]:
    """Counts ``[..., case, class]`` summed over ``axis`` (NaN entries, unscored cases, add
    nothing), then each ratio ``2TP / (2TP + FP + FN)`` of its three summed counts (the F1
    form of lesion F1 and RQ) under the ``empty`` rule."""
    summed = {name: np.nansum(values, axis=axis) for name, values in counts.items()}
    for name, (tp, fp, fn) in ratios.items():
        if tp in summed:
            summed[name] = np.asarray(score("dice", summed[tp], summed[fp], summed[fn],
                                            empty=empty), dtype=np.float64)
    return summed


def reduce_values(per_case: dict[str, np.ndarray], ddof: int = 0,
                  counts: dict[str, np.ndarray] | None = None,
                  ratios: dict[str, tuple[str, str, str]] | None = None,
                  empty: EmptyRule = "nan") -> ValueReductions:
    """Mean/std/median over the defined (non-NaN) case values, per class; macro over classes;
    with ``counts`` (lesion counts ``[case, class]``), their pooled and micro sums and the
    pooled ``ratios`` of them (:func:`pool_counts`) for the metrics in ``per_case``.

    An infinite value (``empty_distance="inf"``) is defined: it makes the mean infinite."""
    def median(values: np.ndarray) -> np.ndarray:
        out = np.full(values.shape[1], np.nan)
        for k in range(values.shape[1]):
            defined = values[~np.isnan(values[:, k]), k]
            if defined.size:
                out[k] = np.median(defined)
        return out

    mean = {m: nanmean(v, axis=0) for m, v in per_case.items()}
    pooled: dict[str, np.ndarray] = {}
    micro: dict[str, float] = {}
    pooled_macro: dict[str, float] = {}
    if counts:
        ratios = ratios or {}
        pooled = {m: v for m, v in pool_counts(counts, ratios, empty, axis=0).items()
                  if m in per_case}
        micro = {m: float(v) for m, v in pool_counts(counts, ratios, empty,
                                                     axis=(0, 1)).items() if m in per_case}
        pooled_macro = {m: float(nanmean(pooled[m])) for m in ratios if m in pooled}
    return ValueReductions(
        pooled=pooled, micro=micro, pooled_macro=pooled_macro, counts=dict(counts or {}),
        per_case=per_case,
        mean=mean,
        std={m: nanstd(v, axis=0, ddof=ddof) for m, v in per_case.items()},
        median={m: median(v) for m, v in per_case.items()},
        n_used={m: (~np.isnan(v)).sum(axis=0) for m, v in per_case.items()},
        macro={m: float(macro_of_values(v)) for m, v in per_case.items()},
    )


def macro_of_values(per_case: np.ndarray) -> np.ndarray:
    """``macro_imagewise`` of values shaped ``[..., case, class]``: per class the mean over the
    cases where the value is defined (non-NaN), then the mean over the classes with a mean.
    Leading axes are kept, so grading's bootstrap passes every resample at once."""
    return nanmean(nanmean(per_case, axis=-2), axis=-1)
