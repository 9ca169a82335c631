"""Report → terminal tables and CSV.  Renderers read a report; they never compute.

Every number printed is a value of the JSON report rounded to 4 decimals ("—" for null).
"""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.console import Console, Group
from rich.table import Table

from segeval.config import METRICS, lower_is_better
from segeval.core.reduce import COUNTS
from segeval.results import Report, write_text_atomic
from segeval.words import SUMMARY_NOTES, class_label, fmt

if TYPE_CHECKING:
    from segeval.verdicts.regression import Comparison


def render(report: Report, console: Console, metrics: tuple[str, ...], per_class: bool,
           per_case: bool) -> None:
    """Print the chosen tables and the headline line."""
    data = report.to_dict()
    console.print(_title(data))
    if per_case:
        console.print(_case_table(data))
    if per_class:
        console.print(_class_table(data, metrics))
    else:
        console.print(_summary_table(data, metrics))
    if value_metrics(data):
        console.print(value_table(data))
    if data.get("sweep"):
        console.print(sweep_table(data))
    headline = data["headline"]
    console.print(
        f"[bold]{headline['metric']} ({headline['reduction']}) = {fmt(headline['value'])}[/]"
        f"  — {SUMMARY_NOTES[headline['reduction']]}")
    warnings = data.get("warnings") or []
    if warnings:
        codes = ", ".join(sorted({w["code"] for w in warnings}))
        console.print(f"[yellow]⚠ {len(warnings)} warning(s): {codes}[/] (messages on stderr "
                      "and in the report's warnings)", markup=True, highlight=False)


def _title(data: dict[str, Any]) -> str:
    summary = data["summary"]
    classes = ", ".join(f"{c['key']} {c['name']}" if c["name"] != c["key"] else c["key"]
                        for c in data["classes"]) or "none"
    extra = ""
    if summary["n_invalid"]:
        extra += f", {summary['n_invalid']} invalid"
    if summary["n_missing"]:
        extra += f", {summary['n_missing']} missing"
    return (f"{summary['n_cases']} cases ({summary['n_scored']} scored{extra}) · "
            f"classes: {classes} · device {data['run']['device']}")


def _summary_table(data: dict[str, Any], metrics: tuple[str, ...]) -> Table:
    table = Table(title="Summary", title_justify="left")
    table.add_column("reduction")
    for metric in metrics:
        table.add_column(metric, justify="right")
    table.add_column("what it is")
    for name in ("macro", "macro_imagewise", "micro"):
        row = data["summary"][name]
        table.add_row(name, *(fmt(row[m]) for m in metrics), SUMMARY_NOTES[name])
    return table


def value_metrics(data: dict[str, Any]) -> list[str]:
    """The per case x class value metrics a report holds (its ``units``), in request order."""
    return list(data.get("units") or {})


def value_table(data: dict[str, Any]) -> Table:
    """Value metrics (boundary distances, lesion-wise metrics), one row each: per class the
    mean ± std and median over cases, and the pooled value where it exists (lesion counts
    summed over cases; lesion F1 and RQ from them); then ``macro_imagewise`` (mean over
    classes of the class means), ``macro`` and ``micro`` where they exist, else "—"
    (``value_reductions`` in the report says which exist)."""
    names = value_metrics(data)
    exists = data.get("value_reductions") or {}
    table = Table(title="Value metrics per class, over cases (mean ± std, median; pooled "
                  "where counts add); — where a reduction does not exist",
                  title_justify="left")
    table.add_column("metric", no_wrap=True)
    for spec in data["classes"]:
        table.add_column(class_label(spec["key"], spec["name"]), justify="right")
    for name in ("macro_imagewise", "macro", "micro"):
        table.add_column(name, justify="right")
    summary = data["summary"]
    for metric in names:
        have = exists.get(metric, ())
        cells = []
        for spec in data["classes"]:
            row = data["per_class"][spec["key"]]
            text = (f"{fmt(row['mean'][metric])} ± {fmt(row['std'][metric])}\n"
                    f"median {fmt(row['median'][metric])}")
            if "pooled" in have:
                text += f"\npooled {fmt(row['pooled'][metric])}"
            text += f"\n{row['n_used'][metric]}/{row['n_cases']} cases"
            cells.append(text)
        table.add_row(f"{metric} ({data['units'][metric]})", *cells,
                      *(fmt(summary[r][metric]) if r == "macro_imagewise" or r in have
                        else "—" for r in ("macro_imagewise", "macro", "micro")))
    return table


def _class_table(data: dict[str, Any], metrics: tuple[str, ...]) -> Table | Group:
    """Pooled values per class; the case mean of the headline metric beside them (one
    metric) or in a second table (several, to stay within 80 columns)."""
    headline = data["headline"]["metric"]
    pooled = Table(title="Per class, pooled (counts summed over cases, then the score)",
                   title_justify="left")
    pooled.add_column("class", no_wrap=True)
    for metric in metrics:
        pooled.add_column(metric, justify="right")
    spread = pooled if len(metrics) == 1 else Table(
        title=f"Per class, over cases ({headline} per case, then mean ± std)",
        title_justify="left")
    if spread is not pooled:
        spread.add_column("class", no_wrap=True)
    spread.add_column(f"{headline} mean ± std", justify="right")
    spread.add_column("cases used", justify="right")
    spread.add_column("empty", justify="right")
    for spec in data["classes"]:
        row = data["per_class"][spec["key"]]
        label = class_label(spec["key"], spec["name"])
        over_cases = [f"{fmt(row['mean'][headline])} ± {fmt(row['std'][headline])}",
                      f"{row['n_used'][headline]}/{row['n_cases']}", str(row["n_empty"])]
        if spread is pooled:
            pooled.add_row(label, *(fmt(row["pooled"][m]) for m in metrics), *over_cases)
        else:
            pooled.add_row(label, *(fmt(row["pooled"][m]) for m in metrics))
            spread.add_row(label, *over_cases)
    summary = data["summary"]
    blanks = ["", ""] if spread is pooled else []
    pooled.add_section()
    macro_mean = [fmt(summary["macro_imagewise"][headline])] if spread is pooled else []
    pooled.add_row("macro", *(fmt(summary["macro"][m]) for m in metrics), *macro_mean, *blanks)
    pooled.add_row("micro", *(fmt(summary["micro"][m]) for m in metrics),
                   *([""] * len(macro_mean)), *blanks)
    if spread is pooled:
        return pooled
    spread.add_section()
    spread.add_row("macro_imagewise", fmt(summary["macro_imagewise"][headline]), "", "")
    return Group(pooled, spread)


def _case_table(data: dict[str, Any]) -> Table:
    headline = data["headline"]["metric"]
    table = Table(title=f"Per case: {headline}", title_justify="left")
    table.add_column("case")
    table.add_column("status")
    for spec in data["classes"]:
        table.add_column(spec["name"], justify="right")
    for case in data["cases"]:
        values = [fmt(case["metrics"][c["key"]][headline]) if case["metrics"] else ""
                  for c in data["classes"]]
        status = case["status"] if case["error_code"] is None else case["error_code"]
        table.add_row(case["id"], status, *values)
    return table


CSV_FIELDS = ("case", "status", "error_code", "class", "name", *COUNTS, *METRICS)


def to_csv(report: Report) -> str:
    """One row per case × class with counts and metrics, then the requested value metrics
    (columns named by their JSON keys; units in the JSON report's ``units``: mm, fraction);
    unscored cases get one row.  An empty cell is a null (undefined) value."""
    data = report.to_dict()
    values = value_metrics(data)
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow((*CSV_FIELDS, *values))
    for case in data["cases"]:
        if not case["metrics"]:
            writer.writerow([case["id"], case["status"], case["error_code"] or "", "", "",
                             *[""] * (len(COUNTS) + len(METRICS) + len(values))])
            continue
        for spec in data["classes"]:
            row = case["metrics"][spec["key"]]
            writer.writerow([case["id"], case["status"], case["error_code"] or "", spec["key"],
                             spec["name"], *(_csv_value(row[c]) for c in COUNTS),
                             *(_csv_value(row.get(m)) for m in (*METRICS, *values))])
    return buffer.getvalue()


def _csv_value(value: Any) -> str:
    return "" if value is None else repr(value) if isinstance(value, float) else str(value)


LESION_CSV_FIELDS = ("case", "class", "name", "side", "lesion", "voxels", "volume_mm3",
                     "touching", "status", "dice", "match", "iou")


def lesions_csv(report: Report) -> str:
    """One row per lesion of every scored case (``--lesions``), from each case's records
    (:func:`segeval.core.lesions.lesion_rows`): ``side`` reference or prediction, ``lesion`` its
    id (1-based, raster order of its first voxel, per case, class and side), ``voxels`` and
    ``volume_mm3``, ``touching`` the ids of the other side's lesions touching it (``;``
    separated), ``status`` (reference: tp, fn, dropped; prediction: tp, fp, ignored),
    ``dice`` (reference: with the union of the predicted lesions touching it), ``match`` and
    ``iou`` (its PQ partner; empty when unmatched).  Classes absent from both masks have no
    lesion and no row."""
    names = {spec.key: spec.name for spec in report.classes}
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(LESION_CSV_FIELDS)
    for case in report.cases:
        for row in case.lesion_rows or ():
            if row["class"] not in names:
                continue
            writer.writerow([case.id, row["class"], names[row["class"]], row["side"],
                             row["lesion"], row["voxels"], _csv_value(row["volume_mm3"]),
                             ";".join(str(t) for t in row["touching"]), row["status"],
                             _csv_value(row["dice"]), _csv_value(row["match"]),
                             _csv_value(row["iou"])])
    return buffer.getvalue()


def write_csv(report: Report, path: str | Path) -> None:
    write_text_atomic(Path(path), to_csv(report))


def render_leaderboard(board: Any, console: Console) -> None:
    """The leaderboard as a table (from :class:`segeval.verdicts.leaderboard.Leaderboard` rows)."""
    metric, reduction = board.rank_by
    rows = board.rows()
    with_ci = board.bootstrap > 0
    better = "lower" if lower_is_better(metric) else "higher"
    table = Table(title=f"Leaderboard: {metric} ({reduction}), {better} is better",
                  title_justify="left")
    for name in ("rank", "team", metric):
        table.add_column(name, justify="right" if name != "team" else "left")
    if with_ci:
        table.add_column("95% interval", justify="right")
        table.add_column("rank stability", justify="right")
    for name in ("missing", "failed", "status"):
        table.add_column(name, justify="right" if name != "status" else "left")
    for row in rows:
        interval = (f"[{fmt(row['ci_low'])}, {fmt(row['ci_high'])}]",
                    fmt(row["rank_stability"])) if with_ci else ()
        table.add_row("—" if row["rank"] is None else str(row["rank"]), row["team"],
                      fmt(row["score"]), *interval, fmt(row["n_missing"]),
                      fmt(row["n_failed"]), row["status"])
    console.print(table)


SPARK = "▁▂▃▄▅▆▇█"


def sparkline(values: list[float | None]) -> str:
    """A compact curve: one block per threshold, scaled to [0, 1]; a space when undefined."""
    return "".join(" " if v is None else SPARK[min(int(v * len(SPARK)), len(SPARK) - 1)]
                   for v in values)


def sweep_table(data: dict[str, Any]) -> Table:
    sweep = data["sweep"]
    metric = data["headline"]["metric"]
    thresholds = sweep["thresholds"]
    table = Table(title=f"Threshold sweep: {metric} at {len(thresholds)} thresholds "
                  f"{thresholds[0]:g}…{thresholds[-1]:g} (main results at "
                  f"{data['config']['threshold']:g}; best is reported, not applied)",
                  title_justify="left")
    for name in ("class", "best threshold", f"best {metric}", "curve"):
        table.add_column(name, justify="left" if name in ("class", "curve") else "right")
    names = {c["key"]: c["name"] for c in data["classes"]}
    rows = [(names.get(key, key) if names.get(key, key) == key else f"{key} {names[key]}",
             block["best"], block["pooled"][metric])
            for key, block in sweep["per_class"].items()]
    rows += [(name, block["best"], block[metric]) for name, block in sweep["summary"].items()]
    for label, best, curve in rows:
        threshold = "—" if best["threshold"] is None else f"{best['threshold']:g}"
        table.add_row(label, threshold, fmt(best["value"]), sparkline(curve))
    return table


def comparison_table(comparison: Comparison) -> Table:
    """A rich table: a row per class and per summary reduction, with the change."""
    from rich.markup import escape
    from rich.table import Table

    c = comparison
    table = Table(title=f"{c.metric}: baseline → current (per class {c.statistic}, "
                  f"reduction {c.reduction}; {c.allowed})", title_justify="left")
    table.add_column("class / reduction", no_wrap=True)
    for name in ("baseline", "current", "delta"):
        table.add_column(name, justify="right")
    if c.test != "none":
        table.add_column("p-value" if c.test == "wilcoxon" else "95% CI of Δ (bootstrap)",
                         justify="right")
    table.add_column("")
    for index, row in enumerate(c.rows):
        if index == len(c.classes):
            table.add_section()
        cells = [escape(row.label), fmt(row.baseline), fmt(row.current),
                 "—" if row.delta is None else f"{row.delta:+.4f}"]
        if c.test != "none":
            cells.append(escape(row.test.summary()) if row.test else "")
        cells.append(f"[bold red]{row.status}[/]" if row.regressed else "[green]✓[/]")
        table.add_row(*cells)
    return table
