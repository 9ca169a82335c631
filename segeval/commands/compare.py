"""``segeval compare BASELINE.json CURRENT.json``: did the current run get worse?

Registered on the main app by ``segeval.commands.app`` (``register(app)``).  Exit codes:

  0  no compared value moved by more than --max-drop in the bad direction
  1  a regression: some value dropped (a distance: rose) by more than --max-drop (or became
     undefined)
  2  the reports are not comparable (classes, number-changing config), a report cannot be
     read, or a bad option
  4  internal error (a bug: please report it)

The table goes to stdout (stderr when ``--json -`` takes stdout); messages to stderr.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TextIO

import typer

from segeval.commands.exits import guarded, stderr
from segeval.config import HEADLINES, METRICS
from segeval.errors import ExitCode

if TYPE_CHECKING:

    from segeval.verdicts.regression import Comparison

COMPARE_EXIT_CODES = (
    "Exit codes: 0 no regression; 1 a value dropped (a distance: rose) by more than "
    "--max-drop (or became "
    "undefined); 2 reports not comparable or unreadable, or a bad option; 4 internal error."
)
COMPARE_HELP = (
    "Compare two JSON reports per class and in the summary (macro, micro, "
    "macro_imagewise), flagging drops beyond --max-drop; optionally a paired per-case "
    "test (--test wilcoxon|bootstrap). "
)

BaselineArg = Annotated[Path, typer.Argument(help="The baseline JSON report.",
                                             show_default=False)]
CurrentArg = Annotated[Path, typer.Argument(help="The current JSON report.",
                                            show_default=False)]


def register(app: typer.Typer) -> None:
    """Add the ``compare`` command to ``app``."""
    app.command("compare", help=COMPARE_HELP + COMPARE_EXIT_CODES,
                short_help="Compare two JSON reports; exit 1 on a regression.")(compare)


def compare(
    baseline: BaselineArg,
    current: CurrentArg,
    metric: Annotated[str, typer.Option(
        help=f"{'|'.join(METRICS)}, or a boundary metric in both reports (hd, hd95, assd, "
        "masd, nsd): the metric compared.")] = "dice",
    max_drop: Annotated[float, typer.Option(
        help="The largest allowed change in the bad direction: a drop for dice & co. and "
        "nsd, a rise in mm for distances (hd95, assd, ...). Beyond it: a regression.")]
    = 0.01,
    reduction: Annotated[str | None, typer.Option(
        help=f"{'|'.join(HEADLINES)}: per-class values are those this reduction averages "
        "(case mean for macro_imagewise, pooled otherwise); default: the baseline's "
        "headline.")] = None,
    test: Annotated[str, typer.Option(
        help="none|wilcoxon|bootstrap: paired test over the cases in both reports "
        "(informative; does not change the exit code).")] = "none",
    seed: Annotated[int, typer.Option(help="Seed of --test bootstrap.")] = 0,
    n_boot: Annotated[int, typer.Option(help="Resamples of --test bootstrap.")] = 10000,
    markdown_path: Annotated[str | None, typer.Option(
        "--markdown", help="Write a Markdown table (for a pull-request comment) here.")] = None,
    junit_path: Annotated[str | None, typer.Option(
        "--junit", help="Write JUnit XML here: one test per compared value.")] = None,
    github: Annotated[bool, typer.Option(
        "--github", help="Emit ::error annotations for regressions and append the Markdown "
        "to $GITHUB_STEP_SUMMARY when it is set.")] = False,
    json_path: Annotated[str | None, typer.Option(
        "--json", help="Write the comparison as JSON here ('-' for stdout).")] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No table.")] = False,
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks.")] = False,
) -> None:
    options = {"metric": metric, "max_drop": max_drop, "reduction": reduction, "test": test,
               "seed": seed, "n_boot": n_boot}
    outputs = {"markdown": markdown_path, "junit": junit_path, "json": json_path}
    code = run_compare(baseline, current, options, outputs, github=github, quiet=quiet,
                       debug=debug)
    raise typer.Exit(int(code))


def run_compare(baseline: Path, current: Path, options: dict[str, Any],
                outputs: dict[str, str | None], *, github: bool, quiet: bool,
                debug: bool) -> ExitCode:
    """Load, compare, write the outputs, print; return the exit code."""
    from rich.console import Console

    err = stderr()
    holder: dict[str, Any] = {}

    def body() -> ExitCode:
        from segeval.verdicts.regression import compare_reports, display_differences, load_report

        old, new = load_report(baseline), load_report(current)
        holder["comparison"] = compare_reports(old, new, **options)
        for note in display_differences(old, new):  # e.g. a class rename: comparable
            err.print(f"segeval compare: {note}", markup=False)
        _write_outputs(holder["comparison"], outputs, github,
                       sys.stderr if stdout_taken else sys.stdout)
        return ExitCode.OK

    stdout_taken = outputs["json"] == "-"
    code = guarded(body, err, debug=debug)
    if code != ExitCode.OK:
        return code
    comparison = holder["comparison"]
    from segeval.outputs.ci import case_notes
    from segeval.outputs.tables import comparison_table

    console = err if stdout_taken else Console(highlight=False)
    if not quiet:
        console.print(comparison_table(comparison))
        for note in case_notes(comparison):
            console.print(note, markup=False, soft_wrap=True)
    (err if quiet or stdout_taken else console).print(
        f"segeval compare: {comparison.verdict}", style="bold red" if comparison.regressed
        else "bold", markup=False, soft_wrap=True)
    # Exit 1 is the "bar not met" code: a regression is a missed bar on the baseline.
    return ExitCode.BAR_NOT_MET if comparison.regressed else ExitCode.OK




def _write_outputs(comparison: Comparison, outputs: dict[str, str | None], github: bool,
                   stream: TextIO) -> None:
    import json

    from segeval.outputs.ci import (
        comparison_annotations,
        comparison_junit,
        comparison_markdown,
        write_ci_outputs,
    )
    from segeval.results import write_text_atomic

    text = json.dumps(comparison.to_dict(), indent=2, allow_nan=False) + "\n"
    if outputs["json"] == "-":
        sys.stdout.write(text)
    elif outputs["json"]:
        write_text_atomic(Path(outputs["json"]), text)
    write_ci_outputs(lambda: comparison_markdown(comparison),
                     lambda: comparison_junit(comparison),
                     lambda: comparison_annotations(comparison),
                     markdown_path=outputs["markdown"], junit_path=outputs["junit"],
                     github=github, stream=stream)
