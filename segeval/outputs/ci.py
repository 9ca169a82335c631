"""What CI systems read: Markdown summaries, JUnit XML, GitHub annotations, bar tables.

Renderers of a report dict, bar results (:mod:`segeval.verdicts.gates`) and comparisons
(:mod:`segeval.verdicts.regression`); they never compute a score.
"""

from __future__ import annotations

import os
import re
import sys
import xml.etree.ElementTree as ET
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, TextIO

from segeval.words import SUMMARY_NOTES, class_label, fmt, signed

if TYPE_CHECKING:  # types only: a run with no bar or comparison imports neither module
    from rich.table import Table

    from segeval.verdicts.gates import BarResult
    from segeval.verdicts.regression import Comparison, ComparisonRow


def bars_table(results: Sequence[BarResult]) -> Table:
    """A rich table: one row per bar with its value, threshold and pass/fail."""
    from rich.markup import escape
    from rich.table import Table

    table = Table(title="Bars (--fail-under)", title_justify="left")
    for name, justify in (("bar", "left"), ("measures", "left"), ("value", "right"),
                          ("bar value", "right"), ("result", "left")):
        table.add_column(name, justify=justify)  # type: ignore[arg-type]
    for result in results:
        table.add_row(escape(result.bar), escape(result.target), fmt(result.value),
                      f"{result.threshold:g}",
                      "[green]pass[/]" if result.passed else "[bold red]FAIL[/]")
    return table


def to_markdown(report: Mapping[str, Any], bar_results: Sequence[BarResult] = ()) -> str:
    """A compact Markdown summary fit for a pull-request comment or a step summary.

    Sections: the headline, a per-class table of the headline metric (pooled and case
    mean ± std, cases used, empty) with macro/macro_imagewise/micro rows, the bars with
    ✅/❌, and the invalid cases.  Every number is a report value rounded to 4 decimals.
    """
    headline = report["headline"]
    metric, summary = headline["metric"], report["summary"]
    status = ""
    if bar_results:
        missed = sum(not r.passed for r in bar_results)
        status = " · ✅ all bars met" if not missed else f" · ❌ {missed} bar(s) missed"
    lines = [
        f"### segeval: {metric} ({headline['reduction']}) = {fmt(headline['value'])}{status}",
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
            md_cell(class_label(spec["key"], spec["name"])), fmt(row["pooled"][metric]),
            f"{fmt(row['mean'][metric])} ± {fmt(row['std'][metric])}",
            f"{row['n_used'][metric]}/{row['n_cases']}", str(row["n_empty"])))
    lines.append(md_row("**macro**", fmt(summary["macro"][metric]), "", "", ""))
    lines.append(md_row("**macro_imagewise**", "", fmt(summary["macro_imagewise"][metric]),
                         "", ""))
    lines.append(md_row("**micro**", fmt(summary["micro"][metric]), "", "", ""))
    if bar_results:
        lines += ["", "| bar | measures | value | result |", "|---|---|---:|:---:|"]
        for result in bar_results:
            lines.append(md_row(f"`{md_cell(result.bar)}`", md_cell(result.target),
                                 fmt(result.value),
                                 "✅" if result.passed else "❌"))
    invalid = invalid_cases(report)
    if invalid:
        lines += ["", f"**{len(invalid)} invalid case(s)**", "",
                  "| case | error | message |", "|---|---|---|"]
        for case in invalid:
            lines.append(md_row(md_cell(case["id"]), f"`{case['error_code']}`",
                                 md_cell(case["message"] or "")))
    warnings = report.get("warnings") or []
    if warnings:
        lines += ["", f"**⚠️ {len(warnings)} warning(s)**", "", "| warning | message |",
                  "|---|---|"]
        for warning in warnings:
            lines.append(md_row(f"`{warning['code']}`", md_cell(warning["message"])))
    return "\n".join(lines) + "\n"


def to_junit(report: Mapping[str, Any], bar_results: Sequence[BarResult] = ()) -> str:
    """JUnit XML: one test case per bar (``<failure>`` when missed) and one per invalid
    case (``<error>``), in one test suite named ``segeval``."""
    tests = [JUnitCase("segeval.bars", result.bar,
                       "passed" if result.passed else "failure", result.verdict)
             for result in bar_results]
    tests += [JUnitCase("segeval.cases", case["id"], "error",
                        f"{case['error_code']}: {case['message'] or ''}",
                        error_type=case["error_code"])
              for case in invalid_cases(report)]
    return junit_document("segeval", tests)


def github_annotations(report: Mapping[str, Any],
                       bar_results: Sequence[BarResult] = ()) -> list[str]:
    """GitHub Actions workflow commands: ``::error title=…::…`` per missed bar,
    ``::error file=PATH,title=CODE::…`` per invalid case and ``::warning title=W_…::…`` per
    run warning (escaped per GitHub's rules)."""
    lines = [annotation(f"segeval: bar {result.bar} not met", result.verdict)
             for result in bar_results if not result.passed]
    for case in invalid_cases(report):
        lines.append(annotation(case["error_code"], f"{case['id']}: {case['message'] or ''}",
                                file=_case_file(case)))
    for warning in report.get("warnings") or []:
        files = warning.get("files") or []
        lines.append(annotation(warning["code"], warning["message"],
                                file=files[0] if files else None, level="warning"))
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


def comparison_markdown(comparison: Comparison) -> str:
    """A Markdown table of the comparison (for a PR comment or the step summary)."""
    c = comparison
    icon = "❌" if c.regressed else "✅"
    lines = [f"### segeval compare: {icon} {md_cell(c.verdict)}", "",
             f"{c.metric}; per class: {c.statistic} (reduction {c.reduction}); "
             f"{c.allowed}; {c.n_paired_cases} cases in both reports", ""]
    test_header = " | test" if c.test != "none" else ""
    lines += [f"| | baseline | current | delta{test_header} | |",
              "|---|---:|---:|---:|" + ("---|" if test_header else "") + ":---:|"]
    for item in c.rows:
        label = md_cell(item.label) if item.kind == "class" else f"**{item.key}**"
        cells = [label, fmt(item.baseline), fmt(item.current), signed(item.delta)]
        if test_header:
            cells.append(item.test.summary() if item.test else "")
        cells.append("❌" if item.regressed else "✅")
        lines.append(md_row(*cells))
    notes = case_notes(c)
    lines += ["", *notes] if notes else []
    return "\n".join(lines) + "\n"


def comparison_junit(comparison: Comparison) -> str:
    """JUnit XML: one test case per compared row, a ``<failure>`` when it regressed."""
    tests = [JUnitCase(f"segeval.compare.{item.kind}", f"{comparison.metric}:{item.key}",
                       "failure" if item.regressed else "passed", row_text(comparison, item),
                       error_type="Regression" if item.regressed else None)
             for item in comparison.rows]
    return junit_document("segeval.compare", tests)


def comparison_annotations(comparison: Comparison) -> list[str]:
    """``::error`` workflow commands, one per regressed row."""
    return [annotation(f"segeval: {comparison.metric} {item.label} regressed",
                       row_text(comparison, item))
            for item in comparison.regressions]


def row_text(comparison: Comparison, item: ComparisonRow) -> str:
    """One line: ``dice 2 tumour (pooled): 0.8000 → 0.7000 (-0.1000; max drop 0.01)``."""
    where = f"({comparison.statistic})" if item.kind == "class" else "(summary)"
    text = (f"{comparison.metric} {item.label} {where}: {fmt(item.baseline)} → "
            f"{fmt(item.current)} ({signed(item.delta)}; {comparison.allowed})")
    return text + (f"; {item.test.summary()}" if item.test else "")


def case_notes(comparison: Comparison) -> list[str]:
    """The lines under the table: the per-case test and case-set differences."""
    c, notes = comparison, list(comparison.notes)
    if c.case_test is not None:
        notes.append(f"Paired {c.case_test.method} over cases (per-case mean over classes of "
                     f"{c.metric}): {c.case_test.summary()}")
    for side, ids in (("baseline", c.cases_only_in_baseline),
                      ("current", c.cases_only_in_current)):
        if ids:
            shown = ", ".join(ids[:10]) + (" …" if len(ids) > 10 else "")
            notes.append(f"{len(ids)} case(s) only in the {side} report: {shown}")
    return notes
