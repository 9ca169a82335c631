"""``segeval grade SUBMISSIONS GT --out DIR``: many teams' submissions against one reference set."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from segeval.commands import options as o
from segeval.commands.evaluate import print_warnings, with_progress
from segeval.commands.exits import EXIT_CODES_HELP, guarded, stderr
from segeval.errors import ExitCode

HELP = (
    "Grade every submission (a folder or .zip/.tar/.tar.gz per team) in SUBMISSIONS against "
    "the reference folder, write OUT/leaderboard.csv, OUT/leaderboard.json and "
    "OUT/<team>/report.json, and print the leaderboard. Missing and broken cases score as "
    "empty predictions; invalid submissions are listed with their reason. " + EXIT_CODES_HELP
    + " An invalid submission is a result, not a failure: exit 0 unless --strict."
    "\n\nExample:\n\nsegeval grade submissions/ hidden_gt/ --out results/ --bootstrap 1000"
)


def register(app: typer.Typer) -> None:
    app.command("grade", help=HELP,
                short_help="Grade many submissions against one reference set.")(grade_command)


def grade_command(
    submissions: Annotated[Path, typer.Argument(help="Folder with one entry per team.",
                                                show_default=False)],
    reference: o.RefArg,
    out: Annotated[Path, typer.Option("--out", help="Output folder (also holds the cache).",
                                      rich_help_panel=o.OUTPUTS)],
    rank_by: Annotated[str, typer.Option(
        help="METRIC:REDUCTION to rank by, e.g. dice:macro_imagewise, iou:micro or "
        "hd95:macro_imagewise, lesion_f1:macro (distances and other lower-is-better values "
        "rank ascending; computed when ranked by).",
        rich_help_panel=o.SCORES)] = "dice:macro_imagewise",
    bootstrap: Annotated[int, typer.Option(
        help="Case resamples for 95% intervals and rank stability (0 = off).",
        rich_help_panel=o.SCORES)] = 0,
    seed: Annotated[int, typer.Option(help="Seed of the bootstrap.",
                                      rich_help_panel=o.SCORES)] = 0,
    labels: o.Labels = None,
    label_names: o.LabelNames = None,
    region: o.Region = None,
    ignore_index: o.IgnoreIndex = None,
    threshold: o.Threshold = "0.5",
    beta: o.Beta = 1.0,
    missing: o.Missing = "empty",
    invalid: o.Invalid = "empty",
    geometry: o.Geometry = "strict",
    max_voxels: o.MaxVoxels = 2**31,
    case_timeout: o.CaseTimeout = None,
    workers: o.Workers = None,
    scheduler: o.Scheduler = None,
    binary: o.Binary = False,
    map_labels: o.MapLabels = None,
    probability_scale: o.ProbabilityScale = None,
    prediction_axes: o.PredictionAxes = None,
    prediction_suffix: o.PredictionSuffix = None,
    metrics: o.Metrics = None,
    nsd_tolerance: o.NsdTolerance = "1.0",
    surface: o.SurfaceOpt = "voxel",
    hd_percentile_mode: o.HdMode = "directed",
    empty_distance: o.EmptyDistance = "diagonal",
    lesion_preset: o.LesionPreset = None,
    connectivity: o.ConnectivityOpt = None,
    lesion_dilation: o.LesionDilation = None,
    lesion_min_volume: o.LesionMinVolume = None,
    strict: Annotated[bool, typer.Option(
        "--strict", help="Exit 3 when any submission or case was invalid, or any team's run "
        "had a warning (W_...).", rich_help_panel=o.CI)] = False,
    html_path: o.HtmlPath = None,
    quiet: o.Quiet = False,
    debug: o.Debug = False,
) -> None:
    err = stderr()
    holder: dict[str, Any] = {}

    def body() -> ExitCode:
        from segeval.verdicts.leaderboard import grade

        main_threshold, sweep = o.parse_threshold(threshold)
        options = {
            **o.class_options(labels, label_names, region, binary, map_labels),
            "ignore_index": ignore_index,
            "threshold": main_threshold, "sweep": sweep, "beta": beta, "missing": missing,
            "invalid": invalid, "geometry": geometry, "max_voxels": max_voxels,
            "probability_scale": probability_scale, "prediction_axes": prediction_axes,
            "prediction_suffix": prediction_suffix,
            **o.boundary_options(metrics, nsd_tolerance, surface, hd_percentile_mode,
                                 empty_distance, also=o.boundary_rank_metric(rank_by)),
            **o.lesion_options(metrics, lesion_preset, connectivity, lesion_dilation,
                               lesion_min_volume, also=o.boundary_rank_metric(rank_by)),
        }
        if html_path is not None:
            from segeval.outputs.plots import require_matplotlib

            require_matplotlib()
        holder["board"] = with_progress(err, quiet, lambda progress: grade(
            submissions, reference, out, rank_by=rank_by, bootstrap=bootstrap, seed=seed,
            workers=workers, case_timeout=case_timeout, scheduler=scheduler,
            progress=progress, **options))
        return ExitCode.OK

    code = guarded(body, err, debug=debug,
                   interrupted="interrupted; the cache in --out keeps finished cases")
    if code != ExitCode.OK:
        raise typer.Exit(int(code))
    board = holder["board"]
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
        if team.report is not None:  # the same run warnings as evaluate, once per team
            print_warnings(team.report.warnings, err, prefix=f"{team.team}: ")
    any_invalid = any(t.status != "ok" or (t.report is not None and (
        t.report.invalid_cases or t.report.warnings)) for t in board.teams)
    raise typer.Exit(int(ExitCode.INVALID_INPUT if strict and any_invalid else ExitCode.OK))
