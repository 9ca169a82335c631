"""CI gates: ``--fail-under`` bars on a report, and the outputs CI systems read.

A *bar* is a threshold on one number of the JSON report.  Its text forms, as given to
``--fail-under`` (repeatable):

==========================  ===========================================================
``0.85``                    the headline score, ``report["headline"]["value"]``
``dice=0.85``               ``summary[<configured headline reduction>]["dice"]``
``iou:micro=0.7``           ``summary["micro"]["iou"]`` (also ``macro``, ``macro_imagewise``)
``dice:tumour=0.6``         one class, by class key (``2``) or name (``tumour``):
                            ``per_class[key]["pooled"]["dice"]``
``dice:tumour:mean=0.6``    the class's case mean instead, ``per_class[key]["mean"]["dice"]``
==========================  ===========================================================

Value metrics (segeval.config.VALUE_METRICS): a higher-is-better one (``nsd``, ``lesion_f1``,
``pq`` ...) takes the forms above, its summary being ``macro_imagewise`` unless a reduction
that exists for it is named, its class value the case ``mean`` unless ``pooled`` exists (lesion
counts, lesion F1, RQ) and is named; a lower-is-better one (distances, ``fp_volume_ml``,
``lesion_count_diff``, ...) is an upper bound: ``hd95<=5`` (``macro_imagewise``),
``hd95:2<=5`` (class 2's mean), met when ``value <= bound``.

A bar is met when the value is defined and ``value >= threshold``; an undefined (null) value
misses the bar, so a class that vanished can never pass silently.  A reduction name wins
over a class of the same name.

The renderers (:func:`to_markdown`, :func:`to_junit`, :func:`github_annotations`,
:func:`bars_table`) read a report dict and bar results; they never compute a score.
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any, Literal, get_args

from segeval.config import (
    HEADLINES,
    METRICS,
    EvalConfig,
    lower_is_better,
    reduction_exists,
    value_metric,
)
from segeval.errors import UsageError
from segeval.words import class_label, fmt

if TYPE_CHECKING:
    pass

ClassStatistic = Literal["pooled", "mean"]
CLASS_STATISTICS: tuple[str, ...] = get_args(ClassStatistic)
BAR_FORMS = "0.85, dice=0.85, iou:micro=0.7, dice:tumour=0.6 or dice:2:mean=0.6"


@dataclass(frozen=True)
class Bar:
    """One parsed ``--fail-under`` bar; what it points at is resolved against a report.

    ``metric`` None means the report's headline metric; ``reduction`` None (and no
    ``class_ref``) means the report's headline reduction.  ``class_ref`` is a class key or
    name, looked up by :func:`check_bars`; ``statistic`` says which per-class value.
    """

    text: str
    threshold: float
    metric: str | None = None
    reduction: str | None = None
    class_ref: str | None = None
    statistic: ClassStatistic = "pooled"
    at_most: bool = False  # ``metric<=value``: a distance bar (lower is better)


@dataclass(frozen=True)
class BarResult:
    """A bar checked against a report.

    ``scope`` is ``macro``, ``micro``, ``macro_imagewise`` or ``class`` (then
    ``class_key``/``class_name``/``statistic`` say which value of which class).
    ``value`` is None when the report's value is undefined; such a bar is not passed.
    """

    bar: str
    metric: str
    scope: str
    value: float | None
    threshold: float
    passed: bool
    class_key: str | None = None
    class_name: str | None = None
    statistic: str | None = None
    at_most: bool = False

    @property
    def target(self) -> str:
        """What was measured, in words: ``dice (macro)``, ``dice of class 2 tumour (pooled)``."""
        if self.scope != "class":
            return f"{self.metric} ({self.scope})"
        label = class_label(self.class_key or "", self.class_name or "")
        return f"{self.metric} of class {label} ({self.statistic})"

    @property
    def verdict(self) -> str:
        """One line: ``dice (macro) = 0.5800 < 0.6`` or ``... is undefined``."""
        if self.value is None:
            return f"{self.target} is undefined (bar {_threshold(self.threshold)})"
        sign = (">=" if self.passed else "<") if not self.at_most else \
            ("<=" if self.passed else ">")
        return f"{self.target} = {fmt(self.value)} {sign} {_threshold(self.threshold)}"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def parse_bar(text: str) -> Bar:
    """Parse one ``--fail-under`` value (forms in the module docstring).

    The threshold must be a number in [0, 1] (every metric is); the metric one of
    :data:`segeval.config.METRICS`.  Classes are resolved later, against a report.
    Raises :class:`UsageError` naming the accepted forms.
    """
    source = text.strip()
    if "<=" in source:
        return _parse_distance_bar(source)
    target, sep, number = source.rpartition("=")
    threshold = _parse_threshold(source, number)
    if not sep:
        return Bar(source, threshold)
    metric, _, scope = target.partition(":")
    metric = metric.strip().lower()
    facts = value_metric(metric)
    if metric not in METRICS and facts is None:
        raise _bar_error(source, f"unknown metric {metric!r}",
                         f"metrics: {', '.join(METRICS)}, or a higher-is-better value metric "
                         f"(nsd, lesion_f1, pq, ...); forms: {BAR_FORMS}")
    if facts is not None and facts.lower_is_better:
        raise _bar_error(source, f"{metric} is lower-is-better: its bar is an upper bound",
                         f"e.g. {metric}<=5 or {metric}:2<=5")
    scope = scope.strip()
    if not scope:
        if ":" in target:
            raise _bar_error(source, "nothing after ':'", f"forms: {BAR_FORMS}")
        # a value metric's summary is macro_imagewise unless named (mean over classes of the
        # per-class case means: the one that exists for every value metric)
        return Bar(source, threshold, metric,
                   reduction="macro_imagewise" if facts is not None else None)
    if scope in HEADLINES:
        if not reduction_exists(metric, scope):
            raise _bar_error(source, f"{scope} does not exist for {metric} (values of "
                             "different cases do not pool)", f"e.g. {metric}=0.8 "
                             "(macro_imagewise)")
        return Bar(source, threshold, metric, reduction=scope)
    class_ref, statistic = scope, "pooled"
    head, colon, tail = (part.strip() for part in scope.rpartition(":"))
    if colon and head in HEADLINES:
        raise _bar_error(source, f"{tail!r} after the reduction {head!r}",
                         f"a reduction takes no further part; forms: {BAR_FORMS}")
    if colon and tail in CLASS_STATISTICS:
        class_ref, statistic = head, tail
        if not class_ref:
            raise _bar_error(source, f"no class before ':{tail}'", f"forms: {BAR_FORMS}")
    if not reduction_exists(metric, statistic):
        if colon and tail == statistic:
            raise _bar_error(source, f"{statistic} does not exist for {metric}",
                             f"e.g. {metric}:{class_ref}:mean=0.8")
        statistic = "mean"  # a value metric's class value is its mean over cases
    return Bar(source, threshold, metric, class_ref=class_ref,
               statistic="mean" if statistic == "mean" else "pooled")


def parse_bars(texts: Iterable[str]) -> list[Bar]:
    """:func:`parse_bar` for each value of a repeated ``--fail-under``."""
    return [parse_bar(text) for text in texts]


def check_bars(report: Mapping[str, Any], bars: Iterable[Bar | str]) -> list[BarResult]:
    """Check every bar against a report dict (``Report.to_dict()`` or a read JSON report).

    Raises :class:`UsageError` when a bar names a class the report does not have (the
    message lists the class keys and names, and the reductions).
    """
    return [_check_bar(report, parse_bar(bar) if isinstance(bar, str) else bar)
            for bar in bars]


def _check_bar(report: Mapping[str, Any], bar: Bar) -> BarResult:
    headline = report["headline"]
    metric = bar.metric or headline["metric"]
    if bar.metric is None:
        value = headline["value"]
        scope = headline["reduction"]
        return _result(bar, metric, scope, value)
    if bar.class_ref is None:
        scope = bar.reduction or headline["reduction"]
        return _result(bar, metric, scope, report["summary"][scope][metric])
    key = resolve_class(report, bar.class_ref, bar.text)
    row = report["per_class"][key]
    return _result(bar, metric, "class", row[bar.statistic][metric], class_key=key,
                   class_name=row.get("name", key), statistic=bar.statistic)


def _parse_distance_bar(source: str) -> Bar:
    """``hd95<=5`` (macro over classes of the per-class means), ``hd95:2<=5`` (class 2's
    mean over cases): a lower-is-better boundary metric must stay at or under the value."""
    target, _, number = source.partition("<=")
    metric, _, class_ref = (part.strip() for part in target.partition(":"))
    metric = metric.lower()
    if not lower_is_better(metric):
        raise _bar_error(source, f"'<=' needs a lower-is-better metric, not {metric!r}",
                         "e.g. hd95<=5 or hd95:2<=5 (mm), fp_volume_ml<=2; other metrics "
                         "take metric=value")
    try:
        threshold = float(number)
    except ValueError:
        raise _bar_error(source, f"{number.strip()!r} is not a number (of the metric's unit)",
                         "e.g. hd95<=5") from None
    if not (math.isfinite(threshold) and threshold >= 0):
        raise _bar_error(source, "the bar must be a finite number >= 0 (in the metric's unit)",
                         "e.g. hd95<=5")
    if class_ref:
        return Bar(source, threshold, metric, class_ref=class_ref, statistic="mean",
                   at_most=True)
    return Bar(source, threshold, metric, reduction="macro_imagewise", at_most=True)


def _result(bar: Bar, metric: str, scope: str, value: Any, **where: Any) -> BarResult:
    defined = value is not None and not (isinstance(value, float) and math.isnan(value))
    number = float(value) if defined else None
    if bar.at_most:
        passed = number is not None and number <= bar.threshold
    else:
        passed = number is not None and number >= bar.threshold
    return BarResult(bar.text, metric, scope, number, bar.threshold, passed, **where,
                     at_most=bar.at_most)


def resolve_class(report: Mapping[str, Any], reference: str, context: str) -> str:
    """The class key for a key or a unique class name; :class:`UsageError` otherwise."""
    classes = report["classes"]
    if any(spec["key"] == reference for spec in classes):
        return reference
    named = [spec["key"] for spec in classes if spec["name"] == reference]
    if len(named) == 1:
        return str(named[0])
    choices = ", ".join(class_label(spec["key"], spec["name"]) for spec in classes) or "none"
    problem = (f"class name {reference!r} is used by classes {', '.join(named)}" if named
               else f"no class {reference!r} in the report")
    raise _bar_error(context, problem,
                     f"classes (key name): {choices}; reductions: {', '.join(HEADLINES)}")


def check_bar_classes(bars: Iterable[Bar], config: EvalConfig) -> None:
    """Refuse, before any case is read, a bar naming a class the run cannot have.

    A class name must be a ``--label-names`` name or a region; a label must be among
    ``--labels`` when labels were given.  A label when the classes come from the data can
    only be checked against the report (:func:`resolve_class`).
    """
    names = {name for _, name in config.label_names} | {name for name, _ in config.regions}
    for bar in bars:
        ref = bar.class_ref
        if ref is None or ref in names:
            continue
        if ref.isdigit():
            if config.labels is None or int(ref) in config.labels:
                continue
            problem = f"label {ref} is not among --labels {','.join(map(str, config.labels))}"
        else:
            problem = f"no class named {ref!r}"
        close = difflib.get_close_matches(ref, [*names, *HEADLINES], n=1)
        hint = f"did you mean {close[0]!r}? " if close else ""
        known = ", ".join(sorted(names)) or "none (give --label-names or --region)"
        raise _bar_error(bar.text, problem, f"{hint}class names: {known}; reductions: "
                         f"{', '.join(HEADLINES)}")


def all_passed(results: Iterable[BarResult]) -> bool:
    return all(result.passed for result in results)



















# --- shared output helpers (also used by segeval.verdicts.regression) -------------------

















def _threshold(value: float) -> str:
    return f"{value:g}"










def _parse_threshold(source: str, number: str) -> float:
    try:
        value = float(number)
    except ValueError:
        raise _bar_error(source, f"{number.strip()!r} is not a number",
                         f"forms: {BAR_FORMS}") from None
    if not (math.isfinite(value) and 0.0 <= value <= 1.0):
        raise _bar_error(source, f"{number.strip()} is not in [0, 1]",
                         "scores are fractions: 0.85, not 85")
    return value


def _bar_error(source: str, problem: str, hint: str) -> UsageError:
    return UsageError("E_USAGE", f"--fail-under {source!r}: {problem}", hint=hint)
