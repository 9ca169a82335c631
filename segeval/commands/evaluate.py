"""``segeval evaluate`` (and ``dice``, ``iou``, ``fbeta``): options → config → evaluate → outputs.

Data goes to stdout, messages and progress to stderr.  Heavy modules (NumPy, nibabel,
SimpleITK) are imported inside the command, so ``segeval --help`` stays fast; torch is never
imported on the CPU path.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import typer

from segeval.commands import options as o
from segeval.commands.exits import EXIT_CODES_HELP, LazyConsole, guarded, stderr
from segeval.config import METRICS
from segeval.errors import ExitCode, UsageError

T = TypeVar("T")

EXAMPLES = (
    "\n\nExamples:\n\n"
    "segeval dice pred/ gt/ --per-class --label-names dataset.json\n\n"
    "segeval evaluate pred/ gt/ --json report.json --fail-under dice=0.85\n\n"
    "segeval dice probs/ gt/ --threshold 0.1:0.9:0.1 --json sweep.json"
)

COMMANDS = (
    ("dice", "dice", "Dice (= F1) per class and globally."),
    ("iou", "iou", "IoU (Jaccard) per class and globally."),
    ("fbeta", "fbeta", "F-beta (--beta, default 1) per class and globally."),
    ("evaluate", None, "Every metric in one pass: dice, iou, fbeta, precision, recall, "
     "specificity."),
)


def register(app: typer.Typer) -> None:
    """Add ``dice``, ``iou``, ``fbeta`` and ``evaluate`` to ``app``."""
    for name, metric, text in COMMANDS:
        app.command(name, help=f"{text} {EXIT_CODES_HELP}{EXAMPLES}",
                    short_help=text)(make_command(metric))


def make_command(headline_metric: str | None) -> Any:
    """One command function per metric; they share every option."""

    def command(
        prediction: o.PredArg,
        reference: o.RefArg,
        per_class: o.PerClass = False,
        per_case: o.PerCase = False,
        json_paths: o.JsonPaths = None,
        csv_paths: o.CsvPaths = None,
        labels: o.Labels = None,
        include_background: o.IncludeBackground = False,
        ignore_index: o.IgnoreIndex = None,
        label_names: o.LabelNames = None,
        region: o.Region = None,
        threshold: o.Threshold = "0.5",
        beta: o.Beta = 1.0,
        smooth: o.Smooth = 0.0,
        empty: o.Empty = "nan",
        missing: o.Missing = "error",
        soft: o.Soft = False,
        logits: o.LogitsOpt = "none",
        channel_axis: o.ChannelAxis = None,
        multilabel: o.Multilabel = False,
        metric: o.Metric = "dice",
        metrics: o.Metrics = None,
        nsd_tolerance: o.NsdTolerance = "1.0",
        surface: o.SurfaceOpt = "voxel",
        hd_percentile_mode: o.HdMode = "directed",
        empty_distance: o.EmptyDistance = "diagonal",
        lesion_preset: o.LesionPreset = None,
        connectivity: o.ConnectivityOpt = None,
        lesion_dilation: o.LesionDilation = None,
        lesion_min_volume: o.LesionMinVolume = None,
        lesions_path: o.LesionsPath = None,
        headline: o.HeadlineOpt = "macro",
        fail_under: o.FailUnder = None,
        html_path: o.HtmlPath = None,
        overlays_dir: o.OverlaysDir = None,
        images_dir: o.ImagesDir = None,
        worst: o.Worst = 5,
        worst_by: o.WorstBy = None,
        export: o.Export = None,
        markdown_path: o.MarkdownPath = None,
        junit_path: o.JunitPath = None,
        github: o.Github = False,
        device: o.Device = "auto",
        geometry: o.Geometry = "strict",
        geometry_tol: o.GeometryTol = 1e-3,
        max_voxels: o.MaxVoxels = 2**31,
        case_timeout: o.CaseTimeout = None,
        invalid: o.Invalid = "exclude",
        on_error: o.OnError = "fail",
        workers: o.Workers = None,
        scheduler: o.Scheduler = None,
        binary: o.Binary = False,
        map_labels: o.MapLabels = None,
        unexpected_labels: o.UnexpectedLabels = "warn",
        probability_scale: o.ProbabilityScale = None,
        prediction_axes: o.PredictionAxes = None,
        prediction_suffix: o.PredictionSuffix = None,
        strict: o.Strict = False,
        quiet: o.Quiet = False,
        debug: o.Debug = False,
    ) -> None:
        err = stderr()
        settings: dict[str, Any] = {}

        def parse() -> ExitCode:
            """Every option checked before any case is read."""
            from segeval.config import EvalConfig
            from segeval.verdicts.gates import check_bar_classes, parse_bars

            main_threshold, sweep = o.parse_threshold(threshold)
            if worst < 0:
                raise UsageError("E_USAGE", f"--worst {worst}: must be >= 0")
            if on_error not in ("fail", "continue"):
                raise UsageError("E_USAGE", f"--on-error {on_error!r} is not one of fail, "
                                 "continue")
            if html_path or overlays_dir:
                from segeval.outputs.plots import require_matplotlib

                require_matplotlib()
            options: dict[str, Any] = {
                **o.class_options(labels, label_names, region, binary, map_labels,
                                  unexpected_labels),
                "probability_scale": probability_scale, "prediction_axes": prediction_axes,
                "prediction_suffix": prediction_suffix,
                "include_background": include_background, "ignore_index": ignore_index,
                "threshold": main_threshold, "sweep": sweep, "beta": beta, "smooth": smooth,
                "empty": empty, "missing": missing, "soft": soft, "logits": logits,
                "channel_axis": channel_axis, "multilabel": multilabel,
                "headline_metric": headline_metric or metric, "headline": headline,
                "geometry": geometry, "geometry_tol": geometry_tol, "max_voxels": max_voxels,
                "invalid": invalid,
            }
            options.update(o.boundary_options(metrics, nsd_tolerance, surface,
                                              hd_percentile_mode, empty_distance))
            options.update(o.lesion_options(metrics, lesion_preset, connectivity,
                                            lesion_dilation, lesion_min_volume))
            if lesions_path and not options.get("lesion_metrics"):
                raise UsageError("E_USAGE", "--lesions: no lesion metric is asked for",
                                 hint="add e.g. --metrics lesion_f1 (or lesions)")
            check_worst_by(worst_by, options)
            bars = parse_bars(fail_under or [])
            check_bar_classes(bars, EvalConfig.create(**options))
            outputs = Outputs(json=json_paths or [], csv=csv_paths or [],
                              exports=o.parse_exports(export or []), lesions=lesions_path)
            settings.update(options=options, bars=bars, outputs=outputs)
            return ExitCode.OK

        code = guarded(parse, err, debug=debug)
        if code != ExitCode.OK:
            raise typer.Exit(int(code))
        run_options = {"device": device, "workers": workers, "case_timeout": case_timeout,
                       "scheduler": scheduler, "regions_from": o.regions_from(label_names)}
        code = run(prediction, reference, settings["options"], run_options,
                   on_error=on_error, strict=strict, outputs=settings["outputs"],
                   per_class=per_class, per_case=per_case, bars=settings["bars"],
                   ci={"markdown_path": markdown_path, "junit_path": junit_path,
                       "github": github},
                   pictures={"html_path": html_path, "overlays_dir": overlays_dir,
                             "images_dir": images_dir, "worst": worst,
                             "worst_by": worst_by},
                   quiet=quiet, debug=debug, all_metrics=headline_metric is None)
        raise typer.Exit(int(code))

    return command


class Outputs:
    """Where the report goes: every ``--json``/``--csv`` target and ``--export``."""

    def __init__(self, json: list[str], csv: list[str],
                 exports: list[tuple[str, str]], lesions: str | None = None) -> None:
        if [*json, *csv, lesions].count("-") > 1:
            raise UsageError("E_USAGE", "only one of --json, --csv and --lesions can write to "
                             "stdout ('-')")
        self.json, self.csv, self.exports, self.lesions = json, csv, exports, lesions

    @property
    def stdout_taken(self) -> bool:
        return "-" in self.json or "-" in self.csv or self.lesions == "-"


def run(prediction: Path, reference: Path, options: dict[str, Any],
        run_options: dict[str, Any], *, on_error: str = "fail", strict: bool = False,
        outputs: Outputs,
        per_class: bool, per_case: bool, bars: list[Any], ci: dict[str, Any],
        pictures: dict[str, Any] | None = None, quiet: bool, debug: bool,
        all_metrics: bool) -> ExitCode:
    """Evaluate, write outputs, print, and return the exit code."""
    err = stderr()
    holder: dict[str, Any] = {}

    def evaluate() -> ExitCode:
        holder["report"] = _evaluate_with_progress(prediction, reference, options,
                                                   run_options, quiet, err)
        return ExitCode.OK

    code = guarded(evaluate, err, debug=debug,
                   interrupted="interrupted before any case was evaluated; nothing written")
    if code != ExitCode.OK:
        return code
    report = holder["report"]
    data = report.to_dict()  # once: the JSON report, and then every output made from it

    def write() -> ExitCode:
        from segeval.outputs.ci import write_report_outputs
        from segeval.verdicts.gates import check_bars

        write_report_files(report, data, outputs)
        if pictures:
            write_pictures(data, report.config.headline_metric, err, **pictures)
        holder["bars"] = check_bars(data, bars)
        write_report_outputs(data, holder["bars"], **ci,
                             stream=sys.stderr if outputs.stdout_taken else sys.stdout)
        return ExitCode.OK

    code = guarded(write, err, debug=debug)
    if code != ExitCode.OK:
        return code
    bar_results = holder["bars"]
    print_messages(report, err, quiet)
    if not quiet:
        from rich.console import Console

        from segeval.outputs.ci import bars_table
        from segeval.outputs.tables import render

        console: Any = err if outputs.stdout_taken else Console(highlight=False)
        metrics = METRICS if all_metrics else (report.config.headline_metric,)
        render(report, console, metrics, per_class, per_case)
        if bar_results:
            console.print(bars_table(bar_results))
    if report.run.get("interrupted"):
        done = sum(case.error_code != "E_INTERRUPTED" for case in report.cases)
        err.print(f"segeval: interrupted after {done} of {len(report.cases)} cases"
                  + ("; the report holds the finished ones"
                     if outputs.json or outputs.csv else ""), markup=False)
        return ExitCode.INTERRUPTED
    return exit_code(report, bar_results, err, on_error, strict)


def write_report_files(report: Any, data: dict[str, Any], outputs: Outputs) -> None:
    """Every --json, --csv and --export target (files atomically; '-' to stdout)."""
    for path in outputs.json:
        if path == "-":
            sys.stdout.write(report.to_json(data=data) + "\n")
        else:
            report.write_json(path, data)
    if outputs.csv:
        from segeval.outputs.tables import to_csv, write_csv

        for path in outputs.csv:
            if path == "-":
                sys.stdout.write(to_csv(report))
            else:
                write_csv(report, path)
    if outputs.lesions:
        from segeval.outputs.tables import lesions_csv

        text = lesions_csv(report)
        if outputs.lesions == "-":
            sys.stdout.write(text)
        else:
            from segeval.results import write_text_atomic

            write_text_atomic(Path(outputs.lesions), text)
    for kind, path in outputs.exports:
        from segeval.outputs.export import write_export

        write_export(data, kind, path)


def print_messages(report: Any, err: Any, quiet: bool) -> None:
    """One line per case error or warning, then the run's warnings."""
    for case in report.cases:
        if case.message and (case.error_code or not quiet):
            err.print(f"segeval: {case.id}: {case.error_code or case.status}: {case.message}",
                      markup=False)
        for warning in case.warnings:
            err.print(f"segeval: {case.id}: warning: {warning}", markup=False)
    print_warnings(report.warnings, err)


def print_warnings(warnings: list[Any], err: Any, prefix: str = "") -> None:
    """Each run warning once (not per case), even with --quiet: ``segeval: warning: W_CODE:
    message`` (the unmatched predictions are one of them, W_UNMATCHED_PREDICTIONS)."""
    for warning in warnings:
        err.print(f"segeval: {prefix}warning: {warning.code}: {warning.message}", markup=False)


def _evaluate_with_progress(prediction: Path, reference: Path, options: dict[str, Any],
                            run_options: dict[str, Any], quiet: bool, err: Any) -> Any:
    from segeval.api import evaluate

    return with_progress(err, quiet, lambda progress: evaluate(
        prediction, reference, progress=progress, **run_options, **options))


def with_progress(err: Any, quiet: bool, call: Callable[[Any], T]) -> T:
    """``call(progress)``: with a transient progress bar on stderr fed by
    ``progress(done, total, label)`` when stderr is a terminal and not ``quiet``; else
    ``call(None)``."""
    if quiet or not err.is_terminal:
        return call(None)
    from rich.progress import Progress

    with Progress(console=err.real() if isinstance(err, LazyConsole) else err,
                  transient=True) as bar:
        task = bar.add_task("evaluating", total=None)

        def advance(done: int, total: int, label: str) -> None:
            bar.update(task, completed=done, total=total, description=label)

        return call(advance)


def exit_code(report: Any, bar_results: list[Any], err: Any,
              on_error: str = "fail", strict: bool = False) -> ExitCode:
    """Internal errors beat invalid input (with --strict, a run warning counts as invalid
    input: exit 3), which beats a missed bar."""
    if report.internal_errors:
        return ExitCode.INTERNAL
    if report.invalid_cases and on_error == "fail":
        err.print(f"segeval: {len(report.invalid_cases)} case(s) had invalid input "
                  "(exit 3); see the messages above and the report's cases", markup=False)
        return ExitCode.INVALID_INPUT
    if strict and report.warnings:
        codes = ", ".join(sorted({w.code for w in report.warnings}))
        err.print(f"segeval: --strict: {len(report.warnings)} warning(s) ({codes}): exit 3",
                  markup=False)
        return ExitCode.INVALID_INPUT
    missed = [result for result in bar_results if not result.passed]
    for result in missed:
        err.print(f"segeval: FAIL: {result.verdict} (--fail-under {result.bar})", markup=False)
    return ExitCode.BAR_NOT_MET if missed else ExitCode.OK


def check_worst_by(worst_by: str | None, options: dict[str, Any]) -> None:
    """--worst-by names a metric this run computes: an overlap metric, or a boundary or
    lesion metric asked for with --metrics."""
    computed = (*METRICS, *options.get("boundary_metrics", ()),
                *options.get("lesion_metrics", ()))
    if worst_by is not None and worst_by not in computed:
        raise UsageError("E_USAGE", f"--worst-by {worst_by}: not a metric this run computes",
                         hint=f"one of {', '.join(computed)}; add it to --metrics")


def write_pictures(data: dict[str, Any], metric: str, err: Any, *, html_path: str | None,
                   overlays_dir: Path | None, images_dir: Path | None, worst: int,
                   worst_by: str | None = None) -> None:
    """--overlays (PNG pictures of the worst cases by ``worst_by``, else the headline
    ``metric``) and --html (which embeds them)."""
    import warnings

    pictures = None
    if overlays_dir is not None:
        from segeval.outputs.overlays import write_overlays

        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            pictures = write_overlays(data, overlays_dir, images_dir=images_dir, worst=worst,
                                      metric=worst_by or metric)
        for warning in caught:
            err.print(f"segeval: warning: {warning.message}", markup=False)
    if html_path:
        from segeval.outputs.html import write_html

        write_html(html_path, data, overlays=pictures)
