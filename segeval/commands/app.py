"""The ``segeval`` command: options → config → :func:`segeval.evaluate` → render.

Exit codes (the only place they are decided):

  0  success
  1  a --fail-under bar on the headline score was not met (or the score is undefined)
  2  usage or configuration error (bad option, unreadable folder); nothing evaluated
  3  one or more cases had invalid input; the report still holds every case
  4  internal error (a bug: please report it)
130  interrupted (Ctrl-C); the report holds the cases finished so far

Data goes to stdout, messages and progress to stderr.  Heavy modules (NumPy, nibabel,
SimpleITK) are imported inside the command, so ``segeval --help`` stays fast; torch is never
imported on the CPU path.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from segeval.commands.compare import register as register_compare
from segeval.config import (
    EMPTY_RULES,
    GEOMETRY_RULES,
    HEADLINES,
    INVALID_RULES,
    LOGITS,
    METRICS,
    MISSING_RULES,
)
from segeval.errors import ExitCode, SegevalError, UsageError

EXIT_CODES_HELP = (
    "Exit codes: 0 success; 1 a --fail-under bar not met; 2 usage or configuration error; "
    "3 one or more cases had invalid input (the report still holds every case); "
    "4 internal error; 130 interrupted."
)

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="Exact, explicit evaluation of image segmentation (Dice, IoU, F-beta, ...). "
    + EXIT_CODES_HELP,
    context_settings={"help_option_names": ["-h", "--help"]},
    pretty_exceptions_enable=False,
)

PredArg = Annotated[Path, typer.Argument(help="Prediction file or folder.", show_default=False)]
RefArg = Annotated[Path, typer.Argument(help="Reference (ground-truth) file or folder.",
                                        show_default=False)]


def _choice(values: tuple[str, ...]) -> str:
    return "|".join(values)


def _make_command(headline_metric: str | None) -> Any:
    """One command function per metric; they share every option."""

    def command(
        prediction: PredArg,
        reference: RefArg,
        per_class: Annotated[bool, typer.Option("--per-class", help="Show a row per class.")]
        = False,
        per_case: Annotated[bool, typer.Option("--per-case", help="Show a row per case.")]
        = False,
        json_path: Annotated[str | None, typer.Option(
            "--json", help="Write the JSON report here ('-' for stdout).")] = None,
        csv_path: Annotated[str | None, typer.Option(
            "--csv", help="Write one row per case × class ('-' for stdout).")] = None,
        labels: Annotated[str | None, typer.Option(
            help="Labels to evaluate, e.g. 1,2,3 (default: every label found except 0).")]
        = None,
        include_background: Annotated[bool, typer.Option(
            "--include-background", help="Evaluate label 0 as a class too.")] = False,
        ignore_index: Annotated[int | None, typer.Option(
            help="Voxels whose reference has this value are not evaluated.")] = None,
        label_names: Annotated[str | None, typer.Option(
            help="1=liver,2=tumour or a JSON file ({\"1\": \"liver\"} or nnU-Net "
            "dataset.json).")] = None,
        region: Annotated[list[str] | None, typer.Option(
            help="NAME=1,2,3: evaluate the union of labels as one class (repeatable).")]
        = None,
        threshold: Annotated[str, typer.Option(
            help="Probability maps: foreground where p > threshold. A list (0.3,0.5,0.7) or "
            "range (0.1:0.9:0.05) adds a sweep: every reduction at every threshold, in one "
            "pass; the main results stay at 0.5.")] = "0.5",
        beta: Annotated[float, typer.Option(help="β of F-beta.")] = 1.0,
        smooth: Annotated[float, typer.Option(
            help="Add S to numerator and denominator: (num+S)/(den+S).")] = 0.0,
        empty: Annotated[str, typer.Option(
            help=f"{_choice(EMPTY_RULES)}: value when a metric's denominator is 0 (class "
            "absent from reference and prediction).")] = "nan",
        missing: Annotated[str, typer.Option(
            help=f"{_choice(MISSING_RULES)}: a reference without prediction.")] = "error",
        soft: Annotated[bool, typer.Option(
            "--soft", help="Sum probabilities instead of thresholding.")] = False,
        logits: Annotated[str, typer.Option(
            help=f"{_choice(LOGITS)}: apply sigmoid/softmax to predictions first.")] = "none",
        channel_axis: Annotated[int | None, typer.Option(
            help="Axis of the prediction that holds classes (one-hot, probabilities).")]
        = None,
        multilabel: Annotated[bool, typer.Option(
            "--multilabel", help="With --channel-axis: channels are independent classes.")]
        = False,
        metric: Annotated[str, typer.Option(
            help=f"{_choice(METRICS)}: the headline metric (evaluate only).")] = "dice",
        headline: Annotated[str, typer.Option(
            help=f"{_choice(HEADLINES)}: the reduction of the headline score.")] = "macro",
        fail_under: Annotated[list[str] | None, typer.Option(
            help="A bar, repeatable; exit 1 when any is missed: 0.85 (the headline score), "
            "dice=0.85, iou:micro=0.7, dice:tumour=0.6 (a class, pooled), "
            "dice:2:mean=0.6 (a class, case mean).")] = None,
        html_path: Annotated[str | None, typer.Option(
            "--html", help="Write a self-contained HTML report here (needs segeval[report]).")]
        = None,
        overlays_dir: Annotated[Path | None, typer.Option(
            "--overlays", help="Write PNGs of the worst cases per class here.")] = None,
        images_dir: Annotated[Path | None, typer.Option(
            "--images", help="Images to draw under the overlays, paired by case id.")] = None,
        worst: Annotated[int, typer.Option(help="Cases per class for --overlays.")] = 5,
        export: Annotated[tuple[str, str] | None, typer.Option(
            help="KIND PATH: also write the results as nnU-Net's summary.json (nnunet) or a "
            "Grand Challenge metrics.json (grand-challenge).", show_default=False)] = None,
        markdown_path: Annotated[str | None, typer.Option(
            "--markdown", help="Write a Markdown summary (for a pull-request comment) here.")]
        = None,
        junit_path: Annotated[str | None, typer.Option(
            "--junit", help="Write JUnit XML here: one test per bar and per invalid case.")]
        = None,
        github: Annotated[bool, typer.Option(
            "--github", help="Emit ::error annotations for missed bars and invalid cases; "
            "append the Markdown to $GITHUB_STEP_SUMMARY when it is set.")] = False,
        device: Annotated[str, typer.Option(
            help="auto|cpu|cuda|cuda:N|mps (auto: where the data is; CPU for files).")]
        = "auto",
        geometry: Annotated[str, typer.Option(
            help=f"{_choice(GEOMETRY_RULES)}: strict = shape, spacing, orientation and "
            "origin must agree; shape = voxel grids only.")] = "strict",
        geometry_tol: Annotated[float, typer.Option(
            help="Tolerance: relative for spacing, absolute for direction cosines, in voxels "
            "for the origin.")] = 1e-3,
        max_voxels: Annotated[int, typer.Option(
            help="Refuse files announcing more voxels than this (before reading them).")]
        = 2**31,
        case_timeout: Annotated[float | None, typer.Option(
            help="Seconds one case may take; past it the case is E_TIMEOUT.")] = None,
        invalid: Annotated[str, typer.Option(
            help=f"{_choice(INVALID_RULES)}: a case whose prediction is invalid is excluded "
            "from the means, or scored as an empty prediction.")] = "exclude",
        on_error: Annotated[str, typer.Option(
            help="fail|continue: with invalid cases, exit 3 (fail) or 0 (continue); the "
            "report holds every case either way.")] = "fail",
        workers: Annotated[int | None, typer.Option(
            help="Parallel workers (default: usable cores, at most 8); results do not "
            "depend on it.")] = None,
        scheduler: Annotated[str | None, typer.Option(
            help="Address of a Dask distributed scheduler to count cases on (needs "
            "segeval[dask] and paths the workers can read); results are identical.")] = None,
        quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress, no table.")]
        = False,
        debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks.")] = False,
    ) -> None:
        try:
            parsed_labels = _parse_labels(labels)
            main_threshold, sweep = _parse_threshold(threshold)
            if worst < 0:
                raise UsageError("E_USAGE", f"--worst {worst}: must be >= 0")
            if html_path or overlays_dir:
                from segeval.outputs.html import require_matplotlib

                require_matplotlib()  # before any case is read
            names, file_regions = _parse_label_names(label_names)
            regions = {**file_regions, **_parse_regions(region or [])}
            from segeval.verdicts.gates import parse_bars

            bars = parse_bars(fail_under or [])
        except UsageError as exc:
            _stderr().print(f"segeval: error: {exc.message}", markup=False)
            raise typer.Exit(int(exc.exit_code)) from None
        options: dict[str, Any] = {
            "labels": parsed_labels,
            "include_background": include_background,
            "ignore_index": ignore_index,
            "threshold": main_threshold,
            "sweep": sweep,
            "beta": beta,
            "smooth": smooth,
            "empty": empty,
            "missing": missing,
            "soft": soft,
            "logits": logits,
            "channel_axis": channel_axis,
            "multilabel": multilabel,
            "headline_metric": headline_metric or metric,
            "headline": headline,
            "label_names": names,
            "regions": regions,
            "geometry": geometry,
            "geometry_tol": geometry_tol,
            "max_voxels": max_voxels,
            "invalid": invalid,
        }
        if on_error not in ("fail", "continue"):
            _stderr().print(f"segeval: error: --on-error {on_error!r} is not one of fail, "
                            "continue", markup=False)
            raise typer.Exit(int(ExitCode.USAGE))
        run_options = {"device": device, "workers": workers, "case_timeout": case_timeout,
                       "scheduler": scheduler}
        code = run(prediction, reference, options, run_options, on_error=on_error,
                   json_path=json_path,
                   csv_path=csv_path, per_class=per_class, per_case=per_case,
                   bars=bars, ci={"markdown_path": markdown_path, "junit_path": junit_path,
                                  "github": github}, export=export,
                   pictures={"html_path": html_path, "overlays_dir": overlays_dir,
                             "images_dir": images_dir, "worst": worst},
                   quiet=quiet, debug=debug,
                   all_metrics=headline_metric is None)
        raise typer.Exit(int(code))

    return command


for _name, _metric, _help in (
    ("dice", "dice", "Dice (= F1) per class and globally."),
    ("iou", "iou", "IoU (Jaccard) per class and globally."),
    ("fbeta", "fbeta", "F-beta (--beta, default 1) per class and globally."),
    ("evaluate", None, "Every metric in one pass: dice, iou, fbeta, precision, recall, "
     "specificity."),
):
    app.command(_name, help=f"{_help} {EXIT_CODES_HELP}", short_help=_help)(
        _make_command(_metric))

register_compare(app)


@app.command("grade", short_help="Grade many submissions against one reference set.",
             help="Grade every submission (a folder or .zip/.tar/.tar.gz per team) in "
             "SUBMISSIONS against the reference folder, write OUT/leaderboard.csv, "
             "OUT/leaderboard.json and OUT/<team>/report.json, and print the leaderboard. "
             "Missing and broken cases score as empty predictions; invalid submissions are "
             "listed with their reason. " + EXIT_CODES_HELP
             + " An invalid submission is a result, not a failure: exit 0 unless --strict.")
def grade_command(
    submissions: Annotated[Path, typer.Argument(help="Folder with one entry per team.",
                                                show_default=False)],
    reference: RefArg,
    out: Annotated[Path, typer.Option("--out", help="Output folder (also holds the cache).")],
    rank_by: Annotated[str, typer.Option(
        help="METRIC:REDUCTION to rank by, e.g. dice:macro_imagewise or iou:micro.")]
    = "dice:macro_imagewise",
    bootstrap: Annotated[int, typer.Option(
        help="Case resamples for 95% intervals and rank stability (0 = off).")] = 0,
    seed: Annotated[int, typer.Option(help="Seed of the bootstrap.")] = 0,
    labels: Annotated[str | None, typer.Option(
        help="Labels to grade (default: every label of the reference set).")] = None,
    label_names: Annotated[str | None, typer.Option(
        help="1=liver,2=tumour or a JSON file (dataset.json).")] = None,
    region: Annotated[list[str] | None, typer.Option(
        help="NAME=1,2,3: a class that is a union of labels (repeatable).")] = None,
    ignore_index: Annotated[int | None, typer.Option(
        help="Reference value whose voxels are not evaluated.")] = None,
    threshold: Annotated[float, typer.Option(help="Probability threshold (p > t).")] = 0.5,
    beta: Annotated[float, typer.Option(help="β of F-beta.")] = 1.0,
    missing: Annotated[str, typer.Option(
        help=f"{_choice(MISSING_RULES)}: a reference without prediction.")] = "empty",
    invalid: Annotated[str, typer.Option(
        help=f"{_choice(INVALID_RULES)}: a broken prediction file.")] = "empty",
    geometry: Annotated[str, typer.Option(help=f"{_choice(GEOMETRY_RULES)}.")] = "strict",
    max_voxels: Annotated[int, typer.Option(help="Refuse larger files.")] = 2**31,
    case_timeout: Annotated[float | None, typer.Option(
        help="Seconds one case may take.")] = None,
    workers: Annotated[int | None, typer.Option(help="Parallel workers.")] = None,
    scheduler: Annotated[str | None, typer.Option(
        help="Address of a Dask distributed scheduler (segeval[dask]).")] = None,
    strict: Annotated[bool, typer.Option(
        "--strict", help="Exit 3 when any submission or case was invalid.")] = False,
    html_path: Annotated[Path | None, typer.Option(
        "--html", help="Write the leaderboard as a self-contained HTML page (needs "
        "segeval[report]).")] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No table.")] = False,
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks.")] = False,
) -> None:
    err = _stderr()
    try:
        names, file_regions = _parse_label_names(label_names)
        options = {
            "labels": _parse_labels(labels), "label_names": names,
            "regions": {**file_regions, **_parse_regions(region or [])},
            "ignore_index": ignore_index, "threshold": threshold, "beta": beta,
            "missing": missing, "invalid": invalid, "geometry": geometry,
            "max_voxels": max_voxels,
        }
        from segeval.verdicts.grade import grade

        if html_path is not None:
            from segeval.outputs.html import require_matplotlib

            require_matplotlib()
        board = grade(submissions, reference, out, rank_by=rank_by, bootstrap=bootstrap,
                      seed=seed, workers=workers, case_timeout=case_timeout,
                      scheduler=scheduler, **options)
    except SegevalError as exc:
        err.print(f"segeval: error: {exc.message}", markup=False)
        raise typer.Exit(int(exc.exit_code)) from None
    except KeyboardInterrupt:
        err.print("segeval: interrupted; the cache in --out keeps finished cases",
                  markup=False)
        raise typer.Exit(int(ExitCode.INTERRUPTED)) from None
    except Exception as exc:  # noqa: BLE001 - the last line of defence, see --debug
        if debug:
            raise
        err.print(f"segeval: internal error: {type(exc).__name__}: {exc} "
                  "(run with --debug for the traceback and please report it)", markup=False)
        raise typer.Exit(int(ExitCode.INTERNAL)) from None
    if html_path is not None:
        from segeval.outputs.html import write_html

        write_html(html_path, None, leaderboard=json.loads(board.to_json()))
    if not quiet:
        from rich.console import Console

        from segeval.outputs.tables import render_leaderboard

        render_leaderboard(board, Console(highlight=False))
    for team in board.teams:
        if team.status != "ok":
            err.print(f"segeval: {team.team}: invalid submission: {team.reason}", markup=False)
    any_invalid = any(t.status != "ok" or (t.report is not None and t.report.invalid_cases)
                      for t in board.teams)
    raise typer.Exit(int(ExitCode.INVALID_INPUT if strict and any_invalid else ExitCode.OK))


def run(prediction: Path, reference: Path, options: dict[str, Any],
        run_options: dict[str, Any], *, on_error: str = "fail", json_path: str | None,
        csv_path: str | None, per_class: bool, per_case: bool,
        bars: list[Any], ci: dict[str, Any], export: tuple[str, str] | None = None,
        pictures: dict[str, Any] | None = None,
        quiet: bool, debug: bool,
        all_metrics: bool) -> ExitCode:
    """Evaluate, write outputs, print, and return the exit code."""
    err = _stderr()
    try:
        report = _evaluate_with_progress(prediction, reference, options, run_options, quiet,
                                         err)
    except SegevalError as exc:
        err.print(f"segeval: error: {exc.message}", markup=False)
        return exc.exit_code
    except KeyboardInterrupt:  # before any case finished (pairing, start-up)
        err.print("segeval: interrupted before any case was evaluated; nothing written",
                  markup=False)
        return ExitCode.INTERRUPTED
    except Exception as exc:  # noqa: BLE001 - the last line of defence, see --debug
        if debug:
            raise
        err.print(f"segeval: internal error: {type(exc).__name__}: {exc} "
                  "(run with --debug for the traceback and please report it)", markup=False)
        return ExitCode.INTERNAL

    stdout_taken = json_path == "-" or csv_path == "-"
    data = report.to_dict()  # once: the JSON report, and then every output made from it
    try:
        if json_path == "-":
            sys.stdout.write(report.to_json(data=data) + "\n")
        elif json_path:
            report.write_json(json_path, data)
        if csv_path:
            from segeval.outputs.tables import to_csv, write_csv

            if csv_path == "-":
                sys.stdout.write(to_csv(report))
            else:
                write_csv(report, csv_path)
    except OSError as exc:
        err.print(f"segeval: error: cannot write output: {exc}", markup=False)
        return ExitCode.USAGE

    from segeval.outputs.ci import bars_table, write_report_outputs
    from segeval.verdicts.gates import check_bars

    try:
        if export is not None:
            from segeval.outputs.export import write_export

            write_export(data, export[0], export[1])
        if pictures:
            write_pictures(data, report.config.headline_metric, err, **pictures)
        bar_results = check_bars(data, bars)
        write_report_outputs(data, bar_results, **ci,
                             stream=sys.stderr if stdout_taken else sys.stdout)
    except SegevalError as exc:  # a bar naming a class the report does not have
        err.print(f"segeval: error: {exc.message}", markup=False)
        return exc.exit_code
    except OSError as exc:
        err.print(f"segeval: error: cannot write output: {exc}", markup=False)
        return ExitCode.USAGE

    for case in report.cases:
        if case.message and (case.error_code or not quiet):
            err.print(f"segeval: {case.id}: {case.error_code or case.status}: {case.message}",
                      markup=False)
        for warning in case.warnings:
            err.print(f"segeval: {case.id}: warning: {warning}", markup=False)
    if report.unmatched_predictions and not quiet:
        err.print(f"segeval: warning: {len(report.unmatched_predictions)} prediction(s) without "
                  f"a reference, ignored: {', '.join(report.unmatched_predictions[:5])}"
                  + (" ..." if len(report.unmatched_predictions) > 5 else ""), markup=False)
    if not quiet:
        from rich.console import Console

        from segeval.outputs.tables import render

        console = err if stdout_taken else Console(highlight=False)
        metrics = METRICS if all_metrics else (report.config.headline_metric,)
        render(report, console, metrics, per_class, per_case)
        if bar_results:
            console.print(bars_table(bar_results))
    if report.run.get("interrupted"):
        done = sum(case.error_code != "E_INTERRUPTED" for case in report.cases)
        err.print(f"segeval: interrupted after {done} of {len(report.cases)} cases"
                  + ("; the report holds the finished ones" if json_path or csv_path else ""),
                  markup=False)
        return ExitCode.INTERRUPTED
    return exit_code(report, bar_results, err, on_error)


def _evaluate_with_progress(prediction: Path, reference: Path, options: dict[str, Any],
                            run_options: dict[str, Any], quiet: bool, err: Any) -> Any:
    from segeval.api import evaluate

    if quiet or not err.is_terminal:
        return evaluate(prediction, reference, **run_options, **options)
    from rich.progress import Progress

    with Progress(console=err.real() if isinstance(err, _LazyConsole) else err,
                  transient=True) as bar:
        task = bar.add_task("evaluating", total=None)

        def advance(done: int, total: int, case: str) -> None:
            bar.update(task, completed=done, total=total, description=case)

        return evaluate(prediction, reference, progress=advance, **run_options, **options)


def exit_code(report: Any, bar_results: list[Any], err: Any,
              on_error: str = "fail") -> ExitCode:
    """Internal errors beat invalid input, which beats a missed bar."""
    if report.internal_errors:
        return ExitCode.INTERNAL
    if report.invalid_cases and on_error == "fail":
        err.print(f"segeval: {len(report.invalid_cases)} case(s) had invalid input "
                  "(exit 3); see the messages above and the report's cases", markup=False)
        return ExitCode.INVALID_INPUT
    missed = [result for result in bar_results if not result.passed]
    for result in missed:
        err.print(f"segeval: FAIL: {result.verdict} (--fail-under {result.bar})", markup=False)
    return ExitCode.BAR_NOT_MET if missed else ExitCode.OK


def write_pictures(data: dict[str, Any], metric: str, err: Any, *, html_path: str | None,
                   overlays_dir: Path | None, images_dir: Path | None, worst: int) -> None:
    """--overlays (PNG pictures of the worst cases) and --html (which embeds them)."""
    import warnings

    pictures = None
    if overlays_dir is not None:
        from segeval.outputs.overlays import write_overlays

        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            pictures = write_overlays(data, overlays_dir, images_dir=images_dir, worst=worst,
                                      metric=metric)
        for warning in caught:
            err.print(f"segeval: warning: {warning.message}", markup=False)
    if html_path:
        from segeval.outputs.html import write_html

        write_html(html_path, data, overlays=pictures)


def _stderr() -> Any:
    return _LazyConsole()


class _LazyConsole:
    """rich's stderr Console, made on first use: a quiet run with nothing to say never
    imports rich.console (~11 ms of start-up).  Attributes are forwarded; what needs the
    Console itself (rich's Progress enters it as a context manager) takes :meth:`real`."""

    def __init__(self, **options: Any) -> None:
        self._options = {"stderr": True, "highlight": False,
                         "soft_wrap": True, **options}  # soft wrap: one line per message
        self._console: Any = None

    def real(self) -> Any:
        if self._console is None:
            from rich.console import Console

            self._console = Console(**self._options)
        return self._console

    def __getattr__(self, name: str) -> Any:
        return getattr(self.real(), name)


def _parse_labels(text: str | None) -> list[int] | None:
    if text is None:
        return None
    try:
        return [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise UsageError("E_USAGE", f"--labels {text!r}: expected integers such as 1,2,3") \
            from None


def _parse_threshold(text: str) -> tuple[float, list[float]]:
    """``0.5`` → (0.5, []); ``0.3,0.5`` or ``0.1:0.9:0.05`` → (0.5, the sweep)."""
    try:
        if ":" in text:
            start, stop, step = (float(x) for x in text.split(":"))
            if not step > 0:
                raise ValueError
            count = math.floor((stop - start) / step + 1e-9) + 1
            values = [round(start + i * step, 12) for i in range(max(count, 0))]
        elif "," in text:
            values = [float(x) for x in text.split(",") if x.strip()]
        else:
            return float(text), []
    except ValueError:
        raise UsageError("E_USAGE", f"--threshold {text!r}: expected a number, a list "
                         "such as 0.3,0.5,0.7 or a range START:STOP:STEP") from None
    if not values:
        raise UsageError("E_USAGE", f"--threshold {text!r}: the sweep is empty")
    return 0.5, values


def _parse_regions(items: list[str]) -> dict[str, list[int]]:
    regions = {}
    for item in items:
        name, _, members = item.partition("=")
        try:
            regions[name.strip()] = [int(x) for x in members.split(",") if x.strip()]
        except ValueError:
            raise UsageError("E_USAGE", f"--region {item!r}: expected NAME=1,2,3") from None
        if not name.strip() or not regions[name.strip()]:
            raise UsageError("E_USAGE", f"--region {item!r}: expected NAME=1,2,3")
    return regions


def _parse_label_names(text: str | None) -> tuple[dict[int, str], dict[str, list[int]]]:
    """``1=liver,2=tumour``, or a JSON file: ``{"1": "liver"}`` or a dataset.json whose
    ``labels`` maps names to labels (nnU-Net; a list value is a region)."""
    if text is None:
        return {}, {}
    if not Path(text).is_file():
        names = {}
        for item in text.split(","):
            key, sep, name = item.partition("=")
            if not sep or not key.strip().isdigit() or not name.strip():
                raise UsageError("E_USAGE", f"--label-names: {item!r} is not LABEL=NAME",
                                 hint="e.g. 1=liver,2=tumour, or a JSON file")
            names[int(key)] = name.strip()
        return names, {}
    try:
        data = json.loads(Path(text).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise UsageError("E_USAGE", f"cannot read label names: {exc}", text) from None
    if isinstance(data, dict) and isinstance(data.get("labels"), dict):
        data = data["labels"]
    if not isinstance(data, dict):
        raise UsageError("E_USAGE", "label names file must hold a JSON object", text)
    names, regions = {}, {}
    for key, value in data.items():
        if str(key).isdigit():
            names[int(key)] = str(value)
        elif isinstance(value, int) and not isinstance(value, bool):
            if value != 0:
                names[value] = str(key)
        elif isinstance(value, list) and all(isinstance(v, int) for v in value):
            regions[str(key)] = value
        else:
            raise UsageError("E_USAGE", f"label names: cannot read entry {key!r}: {value!r}",
                             text)
    return names, regions


def main() -> None:
    """Console-script entry point; usage errors from Typer itself exit 2 as well."""
    app_for(sys.argv[1:])()


def app_for(args: list[str]) -> typer.Typer:
    """The app to run for these arguments: when the first one names a command, an app
    holding only that command.  Typer inspects every command's signature at start-up (about
    5 ms each, ~28 ms in all, on every run); the single command parses, helps and fails
    exactly as in the full app (tests/test_cli.py compares them)."""
    if not args or args[0].startswith("-"):
        return app
    chosen = [info for info in app.registered_commands if info.name == args[0]]
    if len(chosen) != 1:
        return app  # unknown: the full app names the commands there are
    single = typer.Typer(add_completion=False, help=app.info.help,
                         context_settings=app.info.context_settings,
                         pretty_exceptions_enable=False)
    single.registered_commands = chosen
    single.callback()(_group)  # a group, so that the command is named as a subcommand
    return single


def _group() -> None:
    """The group callback of a single-command app: nothing to do."""


if __name__ == "__main__":
    main()
