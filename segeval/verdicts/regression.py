"""Compare two JSON reports: what changed per class and in the summary, and is it noise?

:func:`compare_reports` reads two report dicts (a *baseline* and a *current* run over the
same reference set) and returns a :class:`Comparison`:

* per class, the class's value of ``metric`` in each report: ``per_class[key].pooled`` when
  the reduction is ``macro`` or ``micro``, ``per_class[key].mean`` when it is
  ``macro_imagewise`` — the per-class values that reduction averages;
* the three summary values, ``summary.macro``, ``summary.micro``, ``summary.macro_imagewise``;
* ``delta = current - baseline`` on each row, and ``regressed`` when the value moved by
  more than ``max_drop`` in the bad direction: ``delta < -max_drop`` for a higher-is-better
  metric, ``delta > max_drop`` for a lower-is-better one (a distance such as ``hd95``, whose
  ``max_drop`` is then a rise in mm); or when the baseline value is defined and the current
  one is not (a value that vanishes fails safe, as an undefined value misses a
  ``--fail-under`` bar).

Per case x class value metrics (``hd95``, ``nsd``, ...; :data:`segeval.config.VALUE_METRICS`)
have per class the case ``mean`` and, as summary, only ``macro_imagewise``: the reduction
defaults to it, the summary rows that do not exist are left out and named in ``notes``, and
asking for ``macro``/``micro`` or for a metric the reports lack is a usage error that says why.

The run regressed when any row did.  Reports that cannot be compared raise
:class:`NotComparable` (exit 2): different class sets, or any ``config`` field other than
``headline_metric``/``headline`` differing.  Different case sets are allowed and listed.

Optionally a paired test over cases (matched by case id; a case is used when it was scored
in both reports and its value is defined in both) says whether a change is beyond noise.
It is reported beside each class row and for the per-case score (the mean over classes of
the case's values); it does not change ``regressed`` or the exit code, which stay the simple,
deterministic ``max_drop`` rule.

* ``wilcoxon``: the Wilcoxon signed-rank test of the differences (two-sided).  Zero
  differences are dropped (Wilcoxon's rule, SciPy's default ``zero_method="wilcox"``); tied
  ``|d|`` get average ranks.  For n ≤ 25 non-zero differences the p-value is exact: the
  distribution of W+ over all 2^n sign patterns of the observed ranks, counted by dynamic
  programming (exact under ties too, conditionally on the ranks).  Beyond, the normal
  approximation with the tie-corrected variance
  ``n(n+1)(2n+1)/24 - Σ(t³ - t)/48`` and no continuity correction (SciPy's default).
  Differences are rounded to 12 decimals first, so floating-point noise does not break ties.
* ``bootstrap``: resample the cases with replacement ``n_boot`` times (NumPy's PCG64 seeded
  with ``seed``), take the mean difference of each resample, and report the 2.5 % and
  97.5 % percentiles (the 95 % percentile interval).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal, get_args

import numpy as np

from segeval.config import (
    HEADLINES,
    METRICS,
    fields_that_change,
    reduction_exists,
    value_metric,
)
from segeval.errors import UsageError

TestName = Literal["none", "wilcoxon", "bootstrap"]
TESTS: tuple[str, ...] = get_args(TestName)
WilcoxonMethod = Literal["auto", "exact", "approx"]
DISPLAY_ONLY = fields_that_change("display")
EXACT_MAX_N = 25
ALPHA = 0.05
TIE_DECIMALS = 12
# A drop of exactly max_drop is not a regression, whatever the float rounding of the delta.
DELTA_TOLERANCE = 1e-12
# Config fields that only choose what is shown, never a number.


class NotComparable(UsageError):
    """The two reports measure different things; the message names every difference."""


# --- paired tests ----------------------------------------------------------------------

@dataclass(frozen=True)
class PairedTest:
    """A paired test over cases of ``current - baseline``.

    ``n`` pairs used; ``mean_difference`` their mean.  Wilcoxon: ``statistic`` is W+ (sum
    of the ranks of positive differences), ``n_nonzero`` the differences ranked, ``exact``
    whether the p-value is exact.  Bootstrap: ``ci_low``/``ci_high`` the 95 % percentile
    interval of the mean difference.  ``significant``: p < 0.05, or 0 outside the interval.
    """

    method: Literal["wilcoxon", "bootstrap"]
    n: int
    mean_difference: float | None
    p_value: float | None = None
    statistic: float | None = None
    n_nonzero: int | None = None
    exact: bool | None = None
    ci_low: float | None = None
    ci_high: float | None = None
    n_boot: int | None = None
    seed: int | None = None

    @property
    def significant(self) -> bool:
        if self.p_value is not None:
            return self.p_value < ALPHA
        if self.ci_low is not None and self.ci_high is not None:
            return self.ci_low > 0 or self.ci_high < 0
        return False

    def summary(self) -> str:
        """Short text for tables: ``p=0.0413 (exact, n=15)`` or ``[-0.0100, 0.0300] (n=15)``."""
        if self.method == "wilcoxon":
            if self.p_value is None:
                return f"— (n={self.n})"
            kind = "exact" if self.exact else "normal"
            return f"p={self.p_value:.4f} ({kind}, n={self.n})"
        if self.ci_low is None or self.ci_high is None:
            return f"— (n={self.n})"
        return f"[{self.ci_low:+.4f}, {self.ci_high:+.4f}] (n={self.n})"

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "significant": self.significant}


@dataclass(frozen=True)
class WilcoxonResult:
    """W+ and its two-sided p-value; ``n`` counts the non-zero differences ranked."""

    w_plus: float
    w_minus: float
    n: int
    n_zero: int
    p_value: float
    exact: bool
    z: float | None = None


def average_ranks(values: np.ndarray) -> np.ndarray:
    """Ranks 1..n of ``values``; tied values share the mean of their ranks."""
    unique, inverse, counts = np.unique(values, return_inverse=True, return_counts=True)
    last = np.cumsum(counts)
    return (last - (counts - 1) / 2.0)[inverse] if unique.size else np.zeros(0)


def wilcoxon_signed_rank(differences: Sequence[float] | np.ndarray,
                         method: WilcoxonMethod = "auto") -> WilcoxonResult:
    """Two-sided Wilcoxon signed-rank test of paired differences (see the module docstring).

    ``method``: ``exact`` (any n; the DP is O(n · Σranks)), ``approx`` (normal), or ``auto``
    (exact for n ≤ 25 non-zero differences).  No non-zero difference gives p = 1.
    """
    d = np.round(np.asarray(differences, dtype=float), TIE_DECIMALS)
    if not np.all(np.isfinite(d)):
        raise ValueError("differences must be finite")
    nonzero = d[d != 0]
    n = int(nonzero.size)
    ranks = average_ranks(np.abs(nonzero))
    w_plus = float(ranks[nonzero > 0].sum())
    w_minus = float(ranks[nonzero < 0].sum())
    exact = method == "exact" or (method == "auto" and n <= EXACT_MAX_N)
    if exact:
        return WilcoxonResult(w_plus, w_minus, n, int(d.size - n),
                              _exact_signed_rank_p(ranks, w_plus), True)
    mean = n * (n + 1) / 4.0
    _, ties = np.unique(np.abs(nonzero), return_counts=True)
    variance = n * (n + 1) * (2 * n + 1) / 24.0 - float(np.sum(ties**3 - ties)) / 48.0
    if variance <= 0:
        return WilcoxonResult(w_plus, w_minus, n, int(d.size - n), 1.0, False, 0.0)
    z = (w_plus - mean) / math.sqrt(variance)
    return WilcoxonResult(w_plus, w_minus, n, int(d.size - n),
                          min(1.0, math.erfc(abs(z) / math.sqrt(2.0))), False, z)


def _exact_signed_rank_p(ranks: np.ndarray, w_plus: float) -> float:
    """P-value from the exact null distribution of W+: each rank's sign is + or − with
    probability 1/2.  Ranks are doubled so that average (half-integer) ranks are integers;
    ``ways[s]`` counts the sign patterns whose doubled W+ is s."""
    doubled = np.rint(2 * ranks).astype(np.int64)
    ways = np.zeros(int(doubled.sum()) + 1, dtype=np.float64)  # exact up to 2^53 patterns
    ways[0] = 1.0
    for rank in doubled:
        shifted = np.zeros_like(ways)
        shifted[rank:] = ways[: ways.size - rank]
        ways = ways + shifted
    observed = int(round(2 * w_plus))
    total = float(ways.sum())
    lower = float(ways[: observed + 1].sum()) / total
    upper = float(ways[observed:].sum()) / total
    return min(1.0, 2.0 * min(lower, upper))


def paired_bootstrap(differences: Sequence[float] | np.ndarray, *, n_boot: int = 10000,
                     seed: int = 0, confidence: float = 0.95) -> tuple[float, float, float]:
    """``(mean, low, high)``: the mean difference and its percentile interval.

    Resamples the n differences with replacement ``n_boot`` times (``numpy.random.
    default_rng(seed)``, in blocks of at most ~10^6 draws), so the result depends only on
    the differences, ``n_boot`` and ``seed``.
    """
    d = np.asarray(differences, dtype=float)
    if d.size == 0:
        raise ValueError("no differences to resample")
    rng = np.random.default_rng(seed)
    means = np.empty(n_boot)
    block = max(1, 1_000_000 // d.size)
    for start in range(0, n_boot, block):
        rows = min(block, n_boot - start)
        means[start:start + rows] = d[rng.integers(0, d.size, size=(rows, d.size))].mean(axis=1)
    tail = (1.0 - confidence) / 2.0
    low, high = np.quantile(means, [tail, 1.0 - tail])
    return float(d.mean()), float(low), float(high)


def paired_test(differences: Sequence[float] | np.ndarray, test: TestName, *, seed: int = 0,
                n_boot: int = 10000) -> PairedTest | None:
    """Run ``test`` on paired differences (None for ``test="none"``)."""
    if test == "none":
        return None
    d = np.asarray(differences, dtype=float)
    mean = float(d.mean()) if d.size else None
    if test == "wilcoxon":
        if d.size == 0:
            return PairedTest("wilcoxon", 0, None)
        result = wilcoxon_signed_rank(d)
        return PairedTest("wilcoxon", int(d.size), mean, p_value=result.p_value,
                          statistic=result.w_plus, n_nonzero=result.n, exact=result.exact)
    if d.size == 0:
        return PairedTest("bootstrap", 0, None, n_boot=n_boot, seed=seed)
    _, low, high = paired_bootstrap(d, n_boot=n_boot, seed=seed)
    return PairedTest("bootstrap", int(d.size), mean, ci_low=low, ci_high=high,
                      n_boot=n_boot, seed=seed)


# --- comparison ------------------------------------------------------------------------

@dataclass(frozen=True)
class ComparisonRow:
    """One compared value.  ``kind`` is ``class`` (``key`` a class key) or ``summary``
    (``key`` a reduction).  ``delta`` is None when either value is undefined."""

    kind: Literal["class", "summary"]
    key: str
    name: str
    baseline: float | None
    current: float | None
    delta: float | None
    regressed: bool
    test: PairedTest | None = None

    @property
    def label(self) -> str:
        return self.key if self.name == self.key else f"{self.key} {self.name}"

    @property
    def status(self) -> str:
        if self.regressed:
            return "REGRESSED" if self.current is not None else "REGRESSED (undefined)"
        return "ok"

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["test"] = None if self.test is None else self.test.to_dict()
        data["status"] = self.status
        return data


@dataclass(frozen=True)
class Comparison:
    """The result of :func:`compare_reports`; ``regressed`` is what CI gates on."""

    metric: str
    reduction: str
    statistic: Literal["pooled", "mean"]
    max_drop: float
    test: TestName
    classes: list[ComparisonRow]
    summary: list[ComparisonRow]
    case_test: PairedTest | None = None
    n_paired_cases: int = 0
    cases_only_in_baseline: list[str] = field(default_factory=list)
    cases_only_in_current: list[str] = field(default_factory=list)
    lower_is_better: bool = False
    notes: list[str] = field(default_factory=list)

    @property
    def change_words(self) -> tuple[str, str]:
        """("dropped", "max drop") or, for a lower-is-better metric, ("rose", "max rise")."""
        return ("rose", "max rise") if self.lower_is_better else ("dropped", "max drop")

    @property
    def allowed(self) -> str:
        """``max drop 0.01`` or ``max rise 2 mm``."""
        facts = value_metric(self.metric)
        suffix = f" {facts.unit}" if facts is not None and facts.unit != "fraction" else ""
        return f"{self.change_words[1]} {self.max_drop:g}{suffix}"

    @property
    def rows(self) -> list[ComparisonRow]:
        return [*self.classes, *self.summary]

    @property
    def regressions(self) -> list[ComparisonRow]:
        return [row for row in self.rows if row.regressed]

    @property
    def regressed(self) -> bool:
        return bool(self.regressions)

    @property
    def verdict(self) -> str:
        moved = self.change_words[0]
        if not self.regressed:
            return f"ok: no {self.metric} value {moved} by more than {self.max_drop:g}"
        names = ", ".join(row.label for row in self.regressions)
        return (f"REGRESSED: {len(self.regressions)} {self.metric} value(s) {moved} by more "
                f"than {self.max_drop:g}: {names}")

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready (no NaN: undefined values are None)."""
        return {
            "metric": self.metric, "reduction": self.reduction, "statistic": self.statistic,
            "max_drop": self.max_drop, "lower_is_better": self.lower_is_better,
            "test": self.test, "regressed": self.regressed, "notes": self.notes,
            "classes": [row.to_dict() for row in self.classes],
            "summary": [row.to_dict() for row in self.summary],
            "case_test": None if self.case_test is None else self.case_test.to_dict(),
            "n_paired_cases": self.n_paired_cases,
            "cases_only_in_baseline": self.cases_only_in_baseline,
            "cases_only_in_current": self.cases_only_in_current,
        }


def compare_reports(baseline: Mapping[str, Any], current: Mapping[str, Any],
                    metric: str = "dice", max_drop: float = 0.01, reduction: str | None = None,
                    test: TestName = "none", seed: int = 0, n_boot: int = 10000) -> Comparison:
    """Compare ``current`` with ``baseline`` (both report dicts); see the module docstring.

    ``reduction`` (``macro``, ``micro``, ``macro_imagewise``; default: the baseline's
    headline reduction) picks the per-class values: ``mean`` for ``macro_imagewise``,
    ``pooled`` otherwise.  Raises :class:`UsageError` for a bad option and
    :class:`NotComparable` when the reports measure different things.
    """
    _check_options(metric, max_drop, reduction, test, n_boot)
    check_comparable(baseline, current)
    facts = value_metric(metric)
    if facts is not None:
        _check_value_metric(baseline, current, metric, reduction)
    chosen = reduction or ("macro_imagewise" if facts is not None
                           else str(baseline["headline"]["reduction"]))
    statistic: Literal["pooled", "mean"] = "mean" if chosen == "macro_imagewise" else "pooled"
    worse = 1.0 if facts is not None and facts.lower_is_better else -1.0
    base_cases, cur_cases = _case_metrics(baseline), _case_metrics(current)
    paired_ids = [case_id for case_id in base_cases if case_id in cur_cases]

    def row(kind: Literal["class", "summary"], key: str, name: str, old: Any, new: Any,
            pairs: list[tuple[float, float]] | None = None) -> ComparisonRow:
        old_value, new_value = _value(old), _value(new)
        delta = None if old_value is None or new_value is None else new_value - old_value
        regressed = (old_value is not None and new_value is None) or \
            (delta is not None and worse * delta > max_drop + DELTA_TOLERANCE)
        tested = None if pairs is None else paired_test(
            [b - a for a, b in pairs], test, seed=seed, n_boot=n_boot)
        return ComparisonRow(kind, key, name, old_value, new_value, delta, regressed, tested)

    def pairs(value_of: Callable[[Mapping[str, Any]], float | None]
              ) -> list[tuple[float, float]]:
        """(baseline, current) for each case in both reports, where both are defined."""
        both = ((value_of(base_cases[i]), value_of(cur_cases[i])) for i in paired_ids)
        return [(old, new) for old, new in both if old is not None and new is not None]

    classes = [
        row("class", spec["key"], spec["name"],
            baseline["per_class"][spec["key"]][statistic][metric],
            current["per_class"][spec["key"]][statistic][metric],
            pairs(_class_value(spec["key"], metric)))
        for spec in current["classes"]
    ]
    summaries = [name for name in HEADLINES if reduction_exists(metric, name)]
    summary = [row("summary", name, name, baseline["summary"][name][metric],
                   current["summary"][name][metric]) for name in summaries]
    notes = [] if facts is None else [
        f"{metric} is a per case x class value ({facts.unit}; "
        f"{'lower' if facts.lower_is_better else 'higher'} is better): per class the mean "
        f"over cases; {', '.join(n for n in HEADLINES if n not in summaries)} do not exist "
        "(values of different cases do not pool) and are not compared"]
    case_pairs = pairs(lambda case: _case_score(case, metric))
    return Comparison(
        metric=metric, reduction=chosen, statistic=statistic, max_drop=max_drop,
        test=test, classes=classes, summary=summary,
        case_test=paired_test([b - a for a, b in case_pairs], test, seed=seed, n_boot=n_boot),
        n_paired_cases=len(paired_ids),
        cases_only_in_baseline=sorted(set(base_cases) - set(cur_cases)),
        cases_only_in_current=sorted(set(cur_cases) - set(base_cases)),
        lower_is_better=facts is not None and facts.lower_is_better, notes=notes,
    )


def _check_value_metric(baseline: Mapping[str, Any], current: Mapping[str, Any],
                        metric: str, reduction: str | None) -> None:
    """A value metric must be in both reports, and the reduction must exist for it."""
    for side, report in (("baseline", baseline), ("current", current)):
        if metric not in (report.get("units") or {}):
            raise UsageError("E_USAGE", f"--metric {metric}: the {side} report has no "
                             f"{metric} values", hint=f"evaluate both runs with --metrics "
                             f"{metric}")
    if reduction is not None and not reduction_exists(metric, reduction):
        raise UsageError("E_USAGE", f"--reduction {reduction}: does not exist for {metric} "
                         "(a per case x class value: values of different cases do not pool)",
                         hint="use --reduction macro_imagewise (the mean over classes of the "
                         "per-class means over cases)")


def check_comparable(baseline: Mapping[str, Any], current: Mapping[str, Any]) -> None:
    """Raise :class:`NotComparable` naming every difference that changes numbers."""
    problems = []
    if baseline.get("schema_version") != current.get("schema_version"):
        problems.append(f"schema_version differs (baseline {baseline.get('schema_version')}, "
                        f"current {current.get('schema_version')})")
    old_keys = [spec["key"] for spec in baseline["classes"]]
    new_keys = [spec["key"] for spec in current["classes"]]
    if set(old_keys) != set(new_keys):
        only_old = [k for k in old_keys if k not in new_keys]
        only_new = [k for k in new_keys if k not in old_keys]
        problems.append("classes differ (only in baseline: " + (", ".join(only_old) or "none")
                        + "; only in current: " + (", ".join(only_new) or "none") + ")")
    old_config, new_config = baseline.get("config", {}), current.get("config", {})
    for name in sorted(set(old_config) | set(new_config)):
        if name in DISPLAY_ONLY:  # names and the headline choice change no number
            continue
        old = old_config.get(name, "absent")
        new = new_config.get(name, "absent")
        if old != new:
            problems.append(f"config.{name} differs (baseline {json.dumps(old)}, "
                            f"current {json.dumps(new)})")
    if problems:
        raise NotComparable("E_NOT_COMPARABLE",
                            "the reports are not comparable: " + "; ".join(problems),
                            hint="evaluate both runs with the same classes and options")


def display_differences(baseline: Mapping[str, Any], current: Mapping[str, Any]) -> list[str]:
    """Notes for differences that change no number (a class renamed through
    ``label_names``, another headline choice): comparable, but worth saying."""
    old_names = {c["key"]: c["name"] for c in baseline.get("classes", [])}
    notes = []
    for spec in current.get("classes", []):
        key, name = spec["key"], spec["name"]
        if key in old_names and old_names[key] != name:
            notes.append(f"note: class {key} is named {old_names[key]!r} in the baseline and "
                         f"{name!r} now (label_names differ; the numbers are comparable)")
    return notes


def load_report(path: str | Path) -> dict[str, Any]:
    """Read a segeval JSON report; :class:`UsageError` when it cannot be read or is not one."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise UsageError("E_USAGE", f"cannot read the report: {exc.strerror or exc}",
                         path) from None
    except ValueError as exc:  # UnicodeDecodeError and JSONDecodeError
        raise UsageError("E_USAGE", f"not a JSON report: {exc}", path) from None
    required = ("schema_version", "config", "headline", "classes", "cases", "per_class",
                "summary")
    if not isinstance(data, dict) or any(key not in data for key in required):
        raise UsageError("E_USAGE", "not a segeval JSON report", path,
                         hint="write one with segeval evaluate ... --json PATH")
    if data["schema_version"] != 1:
        raise UsageError("E_USAGE", f"unsupported schema_version {data['schema_version']!r}",
                         path, hint="this segeval reads schema_version 1")
    return data


def _check_options(metric: str, max_drop: float, reduction: str | None, test: str,
                   n_boot: int) -> None:
    def bad(option: str, problem: str) -> UsageError:
        return UsageError("E_USAGE", f"--{option}: {problem}")

    if metric not in METRICS and value_metric(metric) is None:
        raise bad("metric", f"{metric!r} is not one of {', '.join(METRICS)} or a value metric "
                  "(hd, hdNN, assd, masd, nsd)")
    if not (math.isfinite(max_drop) and max_drop >= 0):
        raise bad("max-drop", f"{max_drop} must be a number >= 0")
    if reduction is not None and reduction not in HEADLINES:
        raise bad("reduction", f"{reduction!r} is not one of {', '.join(HEADLINES)}")
    if test not in TESTS:
        raise bad("test", f"{test!r} is not one of {', '.join(TESTS)}")
    if n_boot < 1:
        raise bad("n-boot", f"{n_boot} must be >= 1")


def _value(value: Any) -> float | None:
    if value is None:
        return None
    number = float(value)
    return None if math.isnan(number) else number


def _case_metrics(report: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """``{case id: case["metrics"]}`` for the cases that were scored."""
    return {case["id"]: case["metrics"] for case in report["cases"] if case.get("metrics")}


def _class_value(key: str, metric: str) -> Callable[[Mapping[str, Any]], float | None]:
    """Reads one class's value of ``metric`` from a case's metrics."""
    return lambda case: _value(case.get(key, {}).get(metric))


def _case_score(metrics: Mapping[str, Any], metric: str) -> float | None:
    """One case's score: the mean over classes of its defined values (None if none)."""
    values = [v for v in (_value(row.get(metric)) for row in metrics.values()) if v is not None]
    return sum(values) / len(values) if values else None















