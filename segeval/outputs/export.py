"""Exports in layouts other tools already parse; each is a pure function of a report dict.

``to_nnunet_summary`` — nnU-Net v2's ``summary.json``, as written by
``nnunetv2/evaluation/evaluate_predictions.py`` (``compute_metrics_on_folder``)::

    {"metric_per_case": [{"metrics": {KEY: {"Dice", "IoU", "FP", "TP", "FN", "TN",
                                            "n_pred", "n_ref"}},
                          "prediction_file": ..., "reference_file": ...}, ...],
     "mean": {KEY: {same eight names}},
     "foreground_mean": {same eight names}}

Keys and semantics follow nnU-Net: ``KEY`` is ``str(label)`` for a label (``"1"``) and
``str(tuple(labels))`` for a region (``"(1, 2, 3)"``, what nnU-Net's
``key_to_label_or_region`` reads back); ``n_pred = TP + FP``, ``n_ref = TP + FN``;
``mean[KEY][m]`` is the mean over cases of the per-case values, skipping undefined ones
(nnU-Net's ``np.nanmean``: for Dice/IoU our ``per_class[key].mean``; for the counts the
pooled count divided by the number of scored cases, which is the same number);
``foreground_mean[m]`` is the plain mean over the non-background keys (key ``"0"`` left
out) of ``mean[KEY][m]`` — undefined (null) as soon as one class's mean is, like nnU-Net's
``np.mean`` over a NaN.  Where this differs from nnU-Net's own file:

* undefined values are ``null``, never ``NaN`` (nnU-Net writes the non-standard ``NaN``);
* Dice and IoU are the report's values, so they follow the report's ``--empty`` and
  ``--smooth`` (nnU-Net: always NaN for an empty class, never smoothed); with the defaults
  (``--empty nan``, ``--smooth 0``) they are nnU-Net's numbers;
* cases that were not scored (invalid input, or skipped) are left out of every list and
  mean; a missing prediction scored as empty (``--missing empty``) has
  ``prediction_file: null``;
* ``summary.macro_imagewise`` of the report is not ``foreground_mean``: it skips
  undefined class means and includes the background when it is evaluated.

``to_grand_challenge_metrics`` — a Grand Challenge ``metrics.json``: ``case`` (per case,
keyed by case id) and ``aggregates`` (the report's summary and per-class values), whose
keys leaderboard columns address as paths such as ``aggregates.macro.dice``.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from segeval.errors import UsageError

NNUNET_METRICS = ("Dice", "IoU", "FP", "TP", "FN", "TN", "n_pred", "n_ref")


def to_nnunet_summary(report: Mapping[str, Any]) -> dict[str, Any]:
    """nnU-Net v2's ``summary.json`` layout for a report dict (see the module docstring)."""
    keys = _nnunet_keys(report)
    per_case = [
        {
            "metrics": {keys[key]: _nnunet_row(values) for key, values in case["metrics"].items()},
            "prediction_file": case["prediction"],
            "reference_file": case["reference"],
        }
        for case in report["cases"] if case.get("metrics")
    ]
    mean = {keys[spec["key"]]: _nnunet_mean(report["per_class"][spec["key"]])
            for spec in report["classes"]}
    foreground = [row for key, row in mean.items() if key != "0"]
    foreground_mean = {
        name: (None if not foreground or any(row[name] is None for row in foreground)
               else sum(row[name] for row in foreground) / len(foreground))
        for name in NNUNET_METRICS
    }
    return {"metric_per_case": per_case, "mean": mean, "foreground_mean": foreground_mean}


def to_grand_challenge_metrics(report: Mapping[str, Any]) -> dict[str, Any]:
    """A Grand Challenge ``metrics.json``.

    ``case[id]`` holds ``status``, ``error_code`` and ``metrics`` (class key → counts and
    every metric, empty when the case was not scored).  ``aggregates`` holds the headline
    (``headline`` {metric, reduction, value}), ``macro``, ``micro``, ``macro_imagewise``,
    ``per_class`` (key → name, pooled, mean, std, n_used) and the case counts.
    """
    summary = report["summary"]
    return {
        "case": {
            case["id"]: {"status": case["status"], "error_code": case["error_code"],
                         "metrics": case["metrics"]}
            for case in report["cases"]
        },
        "aggregates": {
            "headline": report["headline"],
            **{name: summary[name] for name in ("macro", "micro", "macro_imagewise")},
            "per_class": {
                key: {part: row[part] for part in ("name", "pooled", "mean", "std", "n_used")
                      if part in row}
                for key, row in report["per_class"].items()
            },
            **{name: summary[name] for name in ("n_cases", "n_scored", "n_invalid",
                                                "n_missing")},
        },
    }


EXPORTS: dict[str, Callable[[Mapping[str, Any]], dict[str, Any]]] = {
    "nnunet": to_nnunet_summary,
    "grand-challenge": to_grand_challenge_metrics,
}


def write_export(report: Mapping[str, Any], kind: str, path: str | Path) -> None:
    """Write ``EXPORTS[kind](report)`` as JSON, atomically (``allow_nan=False``)."""
    from segeval.results import write_text_atomic

    if kind not in EXPORTS:
        raise UsageError("E_USAGE", f"--export: {kind!r} is not one of {', '.join(EXPORTS)}")
    text = json.dumps(EXPORTS[kind](report), indent=2, allow_nan=False)
    write_text_atomic(Path(path), text + "\n")


def _nnunet_keys(report: Mapping[str, Any]) -> dict[str, str]:
    """Class key → nnU-Net key: ``"1"`` for a label, ``"(1, 2)"`` for a region."""
    keys: dict[str, str] = {}
    for spec in report["classes"]:
        labels = tuple(int(x) for x in spec["labels"])
        is_label = len(labels) == 1 and spec["key"] == str(labels[0])
        keys[spec["key"]] = str(labels[0]) if is_label else str(labels)
    if len(set(keys.values())) != len(keys):
        clashes = sorted(k for k, v in keys.items() if list(keys.values()).count(v) > 1)
        raise UsageError("E_USAGE", "classes " + ", ".join(clashes) + " have the same labels, "
                         "so nnU-Net's summary.json cannot tell them apart",
                         hint="give each region a distinct set of labels")
    return keys


def _nnunet_row(values: Mapping[str, Any]) -> dict[str, Any]:
    tp, fp, fn, tn = (values[c] for c in ("tp", "fp", "fn", "tn"))
    return {"Dice": _finite(values["dice"]), "IoU": _finite(values["iou"]), "FP": fp, "TP": tp,
            "FN": fn, "TN": tn, "n_pred": tp + fp, "n_ref": tp + fn}


def _nnunet_mean(row: Mapping[str, Any]) -> dict[str, Any]:
    """nnU-Net's per-class mean over cases: Dice/IoU as the case mean; a count's mean is
    the pooled count (its sum over scored cases) divided by the number of scored cases."""
    n = row["n_cases"]
    pooled = _nnunet_row(row["pooled"])
    return {
        "Dice": _finite(row["mean"]["dice"]),
        "IoU": _finite(row["mean"]["iou"]),
        **{name: (pooled[name] / n if n else None)
           for name in ("FP", "TP", "FN", "TN", "n_pred", "n_ref")},
    }


def _finite(value: Any) -> float | None:
    if value is None:
        return None
    number = float(value)
    return number if math.isfinite(number) else None
