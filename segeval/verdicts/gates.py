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

A bar is met when the value is defined and ``value >= threshold``; an undefined (null) value
misses the bar, so a class that vanished can never pass silently.  A reduction name wins
over a class of the same name.

The renderers (:func:`to_markdown`, :func:`to_junit`, :func:`github_annotations`,
:func:`bars_table`) read a report dict and bar results; they never compute a score.
"""

from __future__ import annotations

import math
import os
import re
import sys
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, TextIO, get_args

from segeval.config import HEADLINES, METRICS
from segeval.errors import UsageError

if TYPE_CHECKING:
    from rich.table import Table

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

    @property
    def target(self) -> str:
        """What was measured, in words: ``dice (macro)``, ``dice of class 2 tumour (pooled)``."""
        if self.scope != "class":
            return f"{self.metric} ({self.scope})"
        label = _class_label(self.class_key or "", self.class_name or "")
        return f"{self.metric} of class {label} ({self.statistic})"

    @property
    def verdict(self) -> str:
        """One line: ``dice (macro) = 0.5800 < 0.6`` or ``... is undefined``."""
        if self.value is None:
            return f"{self.target} is undefined (bar {_threshold(self.threshold)})"
        sign = ">=" if self.passed else "<"
        return f"{self.target} = {_fmt(self.value)} {sign} {_threshold(self.threshold)}"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def parse_bar(text: str) -> Bar:
    """Parse one ``--fail-under`` value (forms in the module docstring).

    The threshold must be a number in [0, 1] (every metric is); the metric one of
    :data:`segeval.config.METRICS`.  Classes are resolved later, against a report.
    Raises :class:`UsageError` naming the accepted forms.
    """
    source = text.strip()
    target, sep, number = source.rpartition("=")
    threshold = _parse_threshold(source, number)
    if not sep:
        return Bar(source, threshold)
    metric, _, scope = target.partition(":")
    metric = metric.strip().lower()
    if metric not in METRICS:
        raise _bar_error(source, f"unknown metric {metric!r}",
                         f"metrics: {', '.join(METRICS)}; forms: {BAR_FORMS}")
    scope = scope.strip()
    if not scope:
        if ":" in target:
            raise _bar_error(source, "nothing after ':'", f"forms: {BAR_FORMS}")
        return Bar(source, threshold, metric)
    if scope in HEADLINES:
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


def _result(bar: Bar, metric: str, scope: str, value: Any, **where: Any) -> BarResult:
    defined = value is not None and not (isinstance(value, float) and math.isnan(value))
    number = float(value) if defined else None
    passed = number is not None and number >= bar.threshold
    return BarResult(bar.text, metric, scope, number, bar.threshold, passed, **where)


def resolve_class(report: Mapping[str, Any], reference: str, context: str) -> str:
    """The class key for a key or a unique class name; :class:`UsageError` otherwise."""
    classes = report["classes"]
    if any(spec["key"] == reference for spec in classes):
        return reference
    named = [spec["key"] for spec in classes if spec["name"] == reference]
    if len(named) == 1:
        return str(named[0])
    choices = ", ".join(_class_label(spec["key"], spec["name"]) for spec in classes) or "none"
    problem = (f"class name {reference!r} is used by classes {', '.join(named)}" if named
               else f"no class {reference!r} in the report")
    raise _bar_error(context, problem,
                     f"classes (key name): {choices}; reductions: {', '.join(HEADLINES)}")


def all_passed(results: Iterable[BarResult]) -> bool:
    return all(result.passed for result in results)


# --- renderers -------------------------------------------------------------------------

def bars_table(results: Sequence[BarResult]) -> Table:
    """A rich table: one row per bar with its value, threshold and pass/fail."""
    from rich.markup import escape
    from rich.table import Table

    table = Table(title="Bars (--fail-under)", title_justify="left")
    for name, justify in (("bar", "left"), ("measures", "left"), ("value", "right"),
                          ("bar value", "right"), ("result", "left")):
        table.add_column(name, justify=justify)  # type: ignore[arg-type]
    for result in results:
        table.add_row(escape(result.bar), escape(result.target), _fmt(result.value),
                      _threshold(result.threshold),
                      "[green]pass[/]" if result.passed else "[bold red]FAIL[/]")
    return table


def to_markdown(report: Mapping[str, Any], bar_results: Sequence[BarResult] = ()) -> str:
    """A compact Markdown summary fit for a pull-request comment or a step summary.

    Sections: the headline, a per-class table of the headline metric (pooled and case
    mean ± std, cases used, empty) with macro/macro_imagewise/micro rows, the bars with
    ✅/❌, and the invalid cases.  Every number is a report value rounded to 4 decimals.
    """
    from segeval.outputs.tables import SUMMARY_NOTES

    headline = report["headline"]
    metric, summary = headline["metric"], report["summary"]
    status = ""
    if bar_results:
        missed = sum(not r.passed for r in bar_results)
        status = " · ✅ all bars met" if not missed else f" · ❌ {missed} bar(s) missed"
    lines = [
        f"### segeval: {metric} ({headline['reduction']}) = {_fmt(headline['value'])}{status}",
        "",
        f"{summary['n_cases']} cases ({summary['n_scored']} scored, {summary['n_invalid']} "
        f"invalid, {summary['n_missing']} missing) · "
        f"{SUMMARY_NOTES.get(headline['reduction'], headline['reduction'])}",
        "",
        f"| class | {metric} pooled | {metric} mean ± std | cases used | empty |",
        "|---|---:|---:|---:|---:|",
    ]
    for spec in report["classes"]:
        row = report["per_class"][spec["key"]]
        lines.append(md_row(
            md_cell(_class_label(spec["key"], spec["name"])), _fmt(row["pooled"][metric]),
            f"{_fmt(row['mean'][metric])} ± {_fmt(row['std'][metric])}",
            f"{row['n_used'][metric]}/{row['n_cases']}", str(row["n_empty"])))
    lines.append(md_row("**macro**", _fmt(summary["macro"][metric]), "", "", ""))
    lines.append(md_row("**macro_imagewise**", "", _fmt(summary["macro_imagewise"][metric]),
                         "", ""))
    lines.append(md_row("**micro**", _fmt(summary["micro"][metric]), "", "", ""))
    if bar_results:
        lines += ["", "| bar | measures | value | result |", "|---|---|---:|:---:|"]
        for result in bar_results:
            lines.append(md_row(f"`{md_cell(result.bar)}`", md_cell(result.target),
                                 _fmt(result.value),
                                 "✅" if result.passed else "❌"))
    invalid = invalid_cases(report)
    if invalid:
        lines += ["", f"**{len(invalid)} invalid case(s)**", "",
                  "| case | error | message |", "|---|---|---|"]
        for case in invalid:
            lines.append(md_row(md_cell(case["id"]), f"`{case['error_code']}`",
                                 md_cell(case["message"] or "")))
    return "\n".join(lines) + "\n"


def to_junit(report: Mapping[str, Any], bar_results: Sequence[BarResult] = ()) -> str:
    """JUnit XML: one test case per bar (``<failure>`` when missed) and one per invalid
    case (``<error>``), in one test suite named ``segeval``."""
    tests = [JUnitCase("segeval.bars", result.bar,
                       "passed" if result.passed else "failure", result.verdict)
             for result in bar_results]
    tests += [JUnitCase("segeval.run.cases", case["id"], "error",
                        f"{case['error_code']}: {case['message'] or ''}",
                        error_type=case["error_code"])
              for case in invalid_cases(report)]
    return junit_document("segeval", tests)


def github_annotations(report: Mapping[str, Any],
                       bar_results: Sequence[BarResult] = ()) -> list[str]:
    """GitHub Actions workflow commands: ``::error title=…::…`` per missed bar and
    ``::error file=PATH,title=CODE::…`` per invalid case (escaped per GitHub's rules)."""
    lines = [annotation(f"segeval: bar {result.bar} not met", result.verdict)
             for result in bar_results if not result.passed]
    for case in invalid_cases(report):
        lines.append(annotation(case["error_code"], f"{case['id']}: {case['message'] or ''}",
                                file=_case_file(case)))
    return lines


def write_report_outputs(report: Mapping[str, Any], bar_results: Sequence[BarResult] = (), *,
                         markdown_path: str | None = None, junit_path: str | None = None,
                         github: bool = False, stream: TextIO | None = None) -> None:
    """The ``--markdown``, ``--junit`` and ``--github`` outputs of an evaluation; see
    :func:`write_ci_outputs`."""
    write_ci_outputs(
        (lambda: to_markdown(report, bar_results)), (lambda: to_junit(report, bar_results)),
        (lambda: github_annotations(report, bar_results)), markdown_path=markdown_path,
        junit_path=junit_path, github=github, stream=stream)


def write_ci_outputs(markdown: Callable[[], str], junit: Callable[[], str],
                     annotations: Callable[[], list[str]], *, markdown_path: str | None,
                     junit_path: str | None, github: bool,
                     stream: TextIO | None = None) -> None:
    """Write the Markdown and JUnit files (atomically; each only when asked for) and, with
    ``github``, print the annotations on ``stream`` (stdout by default: GitHub reads
    workflow commands from a step's output) and append the Markdown to
    ``$GITHUB_STEP_SUMMARY`` when it is set.  Raises OSError when a file cannot be written.
    """
    from segeval.results import write_text_atomic

    if markdown_path:
        write_text_atomic(Path(markdown_path), markdown())
    if junit_path:
        write_text_atomic(Path(junit_path), junit())
    if github:
        out = sys.stdout if stream is None else stream
        for line in annotations():
            out.write(line + "\n")
        out.flush()
        append_step_summary(markdown())


def invalid_cases(report: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Cases with an error code (errors, and missing cases under ``--missing error``)."""
    return [case for case in report["cases"] if case.get("error_code")]


def append_step_summary(markdown: str, environ: Mapping[str, str] | None = None) -> Path | None:
    """Append to ``$GITHUB_STEP_SUMMARY`` when it is set; return the file (None if unset)."""
    target = (os.environ if environ is None else environ).get("GITHUB_STEP_SUMMARY")
    if not target:
        return None
    with open(target, "a", encoding="utf-8") as stream:
        stream.write(markdown.rstrip("\n") + "\n\n")
    return Path(target)


# --- shared output helpers (also used by segeval.verdicts.compare) ------------------------------

@dataclass(frozen=True)
class JUnitCase:
    """One ``<testcase>``: ``outcome`` passed, failure (a missed check) or error."""

    classname: str
    name: str
    outcome: Literal["passed", "failure", "error"]
    message: str
    error_type: str | None = None


def junit_document(suite: str, tests: Sequence[JUnitCase]) -> str:
    """A JUnit XML document with one ``<testsuite>`` inside ``<testsuites>``."""
    counts = {
        "tests": str(len(tests)),
        "failures": str(sum(t.outcome == "failure" for t in tests)),
        "errors": str(sum(t.outcome == "error" for t in tests)),
        "skipped": "0",
    }
    root = ET.Element("testsuites", {"name": suite, **counts})
    suite_element = ET.SubElement(root, "testsuite", {"name": suite, **counts})
    for test in tests:
        case = ET.SubElement(suite_element, "testcase",
                             {"classname": test.classname, "name": _xml_text(test.name)})
        message = _xml_text(test.message)
        if test.outcome == "passed":
            ET.SubElement(case, "system-out").text = message
            continue
        kind = test.error_type or ("BarNotMet" if test.outcome == "failure" else "Error")
        detail = ET.SubElement(case, test.outcome, {"message": message, "type": kind})
        detail.text = message
    ET.indent(root)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, "unicode") + "\n"


def annotation(title: str, message: str, *, file: str | None = None,
               level: Literal["error", "warning", "notice"] = "error") -> str:
    """One workflow command line, ``::error file=…,title=…::message``, escaped."""
    properties = ([f"file={escape_property(file)}"] if file else []) + \
        [f"title={escape_property(title)}"]
    return f"::{level} {','.join(properties)}::{escape_data(message)}"


def escape_data(text: str) -> str:
    """GitHub's escaping of a workflow command's message: % CR LF."""
    return text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def escape_property(text: str) -> str:
    """GitHub's escaping of a property value: as the message, and also ``:`` and ``,``."""
    return escape_data(text).replace(":", "%3A").replace(",", "%2C")


def md_cell(text: str) -> str:
    """A Markdown table cell: pipes escaped, line breaks flattened."""
    return text.replace("|", "\\|").replace("\r", " ").replace("\n", " ")


def md_row(*cells: str) -> str:
    """A Markdown table row of cells that are already safe (see :func:`md_cell`)."""
    return "| " + " | ".join(cells) + " |"


def _fmt(value: Any) -> str:
    from segeval.outputs.tables import fmt

    return str(fmt(value))


def _threshold(value: float) -> str:
    return f"{value:g}"


def _class_label(key: str, name: str) -> str:
    return key if name == key else f"{key} {name}"


def _case_file(case: Mapping[str, Any]) -> str:
    """The file a case's message is about: the reference when the message starts with
    it (or there is no prediction), else the prediction."""
    prediction, reference = case.get("prediction"), case.get("reference") or ""
    message = case.get("message") or ""
    if prediction is None or (reference and message.startswith(reference)):
        return str(reference)
    return str(prediction)


_XML_ILLEGAL = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]")


def _xml_text(text: str) -> str:
    """XML 1.0 cannot hold most control characters, even escaped: replace them."""
    return _XML_ILLEGAL.sub("\ufffd", text)


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
