"""The report: one object that holds every number of a run, and its JSON form.

Renderers (table, CSV) read a :class:`Report` and never compute.  The JSON follows the
schema shipped in ``segeval/schema/report.schema.json`` (``schema_version`` 1): NaN is
written as null, never as ``NaN``; keys of per-class maps are class keys (the label as a
string, or a region name).
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from segeval.config import LESION_COUNTS, METRICS, EvalConfig, value_metric
from segeval.core.counts import CaseCounts, ClassSpec, CountTable
from segeval.core.reduce import COUNTS, Reductions, ValueReductions
from segeval.core.warnings import RunWarning
from segeval.version import __version__

SCHEMA_VERSION = 1
CaseStatus = Literal["ok", "missing", "error"]


@dataclass
class CaseResult:
    """One case: where it came from, what happened, and its counts when it was scored."""

    id: str
    prediction: str | None
    reference: str
    status: CaseStatus = "ok"
    error_code: str | None = None
    message: str | None = None
    counts: CaseCounts | None = None
    shape: tuple[int, ...] | None = None
    spacing: tuple[float, ...] | None = None
    warnings: list[str] = field(default_factory=list)
    # boundary metrics: {class key: {metric: value}}, classes absent from both masks left out
    distances: dict[str, dict[str, float]] | None = None
    # lesion-wise metrics, the same way (every table metric, see segeval.engines.lesions),
    # and one record per lesion (segeval.core.lesions.lesion_rows, with its class key)
    lesions: dict[str, dict[str, float]] | None = None
    lesion_rows: list[dict[str, Any]] | None = None

    @property
    def scored(self) -> bool:
        return self.counts is not None

    @property
    def invalid(self) -> bool:
        """Counts against the exit code: an error, or a missing case with --missing error."""
        return self.error_code is not None


@dataclass
class Report:
    config: EvalConfig
    classes: list[ClassSpec]
    cases: list[CaseResult]
    table: CountTable
    reductions: Reductions
    run: dict[str, Any] = field(default_factory=dict)
    unmatched_predictions: list[str] = field(default_factory=list)
    ignored_files: list[str] = field(default_factory=list)
    sweep: dict[str, Any] | None = None
    warnings: list[RunWarning] = field(default_factory=list)
    # per case x class value metrics (boundary and lesion-wise), reduced
    values: ValueReductions | None = None

    @property
    def headline(self) -> float:
        """``summary[config.headline][config.headline_metric]`` (NaN when undefined)."""
        summary = getattr(self.reductions, self.config.headline)
        return float(summary[self.config.headline_metric])

    @property
    def invalid_cases(self) -> list[CaseResult]:
        return [case for case in self.cases if case.invalid]

    @property
    def internal_errors(self) -> list[CaseResult]:
        return [case for case in self.cases if case.error_code == "E_INTERNAL"]

    def to_dict(self) -> dict[str, Any]:
        red = self.reductions
        keys = [c.key for c in self.classes]
        data: dict[str, Any] = {
            "schema_version": SCHEMA_VERSION,
            "tool": {"name": "segeval", "version": __version__},
            "config": self.config.to_dict(),
            "run": self.run,
            "headline": {
                "metric": self.config.headline_metric,
                "reduction": self.config.headline,
                "value": _number(self.headline),
            },
            "classes": [{"key": c.key, "name": c.name, "labels": list(c.labels)}
                        for c in self.classes],
            "cases": self._case_dicts(keys),
            "per_class": {
                key: {
                    "name": self.classes[k].name,
                    "pooled": {**{c: _number(red.pooled_counts[c][k]) for c in COUNTS},
                               **{m: _number(red.pooled[m][k]) for m in METRICS}},
                    "mean": {m: _number(red.mean[m][k]) for m in METRICS},
                    "std": {m: _number(red.std[m][k]) for m in METRICS},
                    "n_used": {m: int(red.n_used[m][k]) for m in METRICS},
                    "n_cases": red.n_cases,
                    "n_empty": int(red.n_empty[k]),
                }
                for k, key in enumerate(keys)
            },
            "summary": {
                "micro": {**{c: _number(red.micro_counts[c]) for c in COUNTS},
                          **{m: _number(red.micro[m]) for m in METRICS}},
                "macro": {**{m: _number(red.macro[m]) for m in METRICS},
                          "n_classes": red.macro_n},
                "macro_imagewise": {**{m: _number(red.macro_imagewise[m]) for m in METRICS},
                                    "n_classes": red.macro_imagewise_n},
                "n_cases": len(self.cases),
                "n_scored": red.n_cases,
                "n_invalid": len(self.invalid_cases),
                "n_missing": sum(case.status == "missing" for case in self.cases),
            },
            "unmatched_predictions": self.unmatched_predictions,
            "ignored_files": self.ignored_files,
            "warnings": [warning.to_dict() for warning in self.warnings],
        }
        if self.sweep is not None:
            data["sweep"] = self.sweep
        if self.values is not None:
            self._add_values(data, keys, self.values)
        return data

    @staticmethod
    def _add_values(data: dict[str, Any], keys: list[str], red: ValueReductions) -> None:
        """Value metrics (boundary, lesion-wise) beside the overlap metrics: per case, per
        class mean/std/median, macro over classes (in ``macro_imagewise``); ``pooled``,
        ``micro`` and ``macro`` where they exist (lesion counts and lesion F1 / RQ:
        ``ValueMetric.reductions``), null elsewhere.  ``reductions`` lists, per value metric,
        those that exist.  JSON has no infinity: an infinite distance
        (``--empty-distance inf``) is written as the string "inf"."""
        names = list(red.per_case)
        written = names + list(red.recorded)  # in each case's record (recorded: not reduced)
        data["units"] = {m: _unit(m) for m in written}
        data["value_reductions"] = {m: _reductions(m) for m in names}
        values = {m: red.per_case[m].tolist() for m in names}
        values.update({m: red.recorded[m].tolist() for m in red.recorded})
        counted = [m for m in names if m in LESION_COUNTS]  # whole numbers: JSON integers
        counted_here = [m for m in written if m in LESION_COUNTS]
        for index, case in enumerate(data["cases"]):
            for k, key in enumerate(keys):
                if key in case["metrics"]:
                    row = case["metrics"][key]
                    row.update({m: _value_number(values[m][index][k]) for m in written})
                    row.update({m: _whole(row[m]) for m in counted_here})
        for k, key in enumerate(keys):
            entry = data["per_class"][key]
            entry["pooled"].update({m: _value_number(red.pooled[m][k]) if m in red.pooled
                                    else None for m in names})
            entry["pooled"].update({m: _whole(entry["pooled"][m]) for m in counted})
            entry["mean"].update({m: _value_number(red.mean[m][k]) for m in names})
            entry["std"].update({m: _value_number(red.std[m][k]) for m in names})
            entry["median"] = {m: _value_number(red.median[m][k]) for m in names}
            entry["n_used"].update({m: int(red.n_used[m][k]) for m in names})
        summary = data["summary"]
        summary["micro"].update({m: _value_number(red.micro[m]) if m in red.micro else None
                                 for m in names})
        summary["micro"].update({m: _whole(summary["micro"][m]) for m in counted})
        summary["macro"].update({m: _value_number(red.pooled_macro[m])
                                 if m in red.pooled_macro else None for m in names})
        summary["macro_imagewise"].update({m: _value_number(red.macro[m]) for m in names})

    def _case_dicts(self, keys: list[str]) -> list[dict[str, Any]]:
        # Python lists first: indexing NumPy arrays scalar by scalar cost ~40 ms for 400
        # cases × 10 numbers × K classes
        counts = {c: getattr(self.table, c).tolist() for c in COUNTS}
        values = {m: self.reductions.per_case[m].tolist() for m in METRICS}
        return [self._case_dict(i, case, keys, counts, values)
                for i, case in enumerate(self.cases)]

    @staticmethod
    def _case_dict(index: int, case: CaseResult, keys: list[str],
                   counts: dict[str, list[list[Any]]],
                   values: dict[str, list[list[Any]]]) -> dict[str, Any]:
        metrics: dict[str, Any] = {}
        if case.scored:
            for k, key in enumerate(keys):
                metrics[key] = {
                    **{c: _number(counts[c][index][k]) for c in COUNTS},
                    **{m: _number(values[m][index][k]) for m in METRICS},
                }
        return {
            "id": case.id,
            "prediction": case.prediction,
            "reference": case.reference,
            "status": case.status,
            "scored": case.scored,
            "error_code": case.error_code,
            "message": case.message,
            "shape": None if case.shape is None else list(case.shape),
            "spacing": None if case.spacing is None else list(case.spacing),
            "warnings": case.warnings,
            "labels_found": None if case.counts is None else sorted(case.counts.labels),
            "metrics": metrics,
        }

    def to_json(self, indent: int | None = None, data: dict[str, Any] | None = None) -> str:
        """Valid JSON (``allow_nan=False``: undefined values are null) of ``data``, which
        must be this report's :meth:`to_dict` (built here when not given).

        By default one top-level key per line and one case per line: readable, diffable,
        and written by the C encoder (``indent`` selects the slower pure-Python one, which
        took 0.23 s for 400 cases).
        """
        data = self.to_dict() if data is None else data
        if indent is not None:
            return json.dumps(data, indent=indent, allow_nan=False)
        lines = []
        for key, value in data.items():
            if key == "cases" and value:
                inner = ",\n    ".join(json.dumps(case, allow_nan=False) for case in value)
                lines.append(f'  "cases": [\n    {inner}\n  ]')
            else:
                lines.append(f"  {json.dumps(key)}: {json.dumps(value, allow_nan=False)}")
        return "{\n" + ",\n".join(lines) + "\n}"

    def write_json(self, path: str | Path, data: dict[str, Any] | None = None) -> None:
        """Write atomically: a temporary file in the same folder, then a rename."""
        write_text_atomic(Path(path), self.to_json(data=data) + "\n")


def _value_number(value: Any) -> float | str | None:
    """A value metric as JSON: NaN → None, ±infinity → "inf"/"-inf", else a float."""
    number = float(value)
    if math.isnan(number):
        return None
    if math.isinf(number):
        return "inf" if number > 0 else "-inf"
    return number


def _unit(metric: str) -> str:
    found = value_metric(metric)
    assert found is not None, metric  # the reductions hold value metrics only
    return found.unit


def _whole(value: Any) -> Any:
    """A lesion count as a JSON integer (null stays null)."""
    return value if value is None else int(value)


def _reductions(metric: str) -> list[str]:
    found = value_metric(metric)
    assert found is not None, metric
    return list(found.reductions)


def _number(value: Any) -> int | float | None:
    """JSON-safe number: NaN → None, NumPy scalars → Python numbers."""
    if isinstance(value, (np.integer, int)) and not isinstance(value, bool):
        return int(value)
    value = float(value)
    return None if math.isnan(value) else value


def write_text_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "w", encoding="utf-8", newline="") as stream:
            stream.write(text)
        os.chmod(temporary, 0o666 & ~_umask())  # mkstemp's 0600 is for the temporary only
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def report_schema() -> dict[str, Any]:
    """The JSON Schema of the report, shipped in the package."""
    from importlib.resources import files

    text = files("segeval").joinpath("schema/report.schema.json").read_text(encoding="utf-8")
    return dict(json.loads(text))
