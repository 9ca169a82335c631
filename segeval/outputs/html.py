"""The HTML report: one self-contained file with the tables and plots of a report.

A renderer: it reads the report's JSON form (:meth:`segeval.results.Report.to_dict`), the
leaderboard's (``leaderboard.json`` of :func:`segeval.verdicts.leaderboard.grade`) and the
pictures of :func:`segeval.outputs.overlays.write_overlays`, and computes nothing but the
layout.

The file opens from disk with no network: CSS is inline, plots are inline SVG written by
matplotlib (text kept as text, ``svg.fonttype = "none"``, so that it can be searched and
copied), pictures are PNG ``data:`` URIs, and there is no JavaScript.  A Content Security
Policy (``default-src 'none'``) makes the browser refuse any other resource or script.
Every string that comes from a report (class names, case ids, team names, messages,
paths) is HTML-escaped; in plots it is drawn as plain text (no mathtext).

Sections: for grading, the leaderboard with bootstrap intervals and rank stability; then
the headline, summary (macro, macro_imagewise and micro for every metric), per class (the
headline metric's pooled value, mean ± std, cases used and empty cases, then every
metric), per-class distributions of the per-case scores (box and strip plot; each point's
tooltip names its case), the threshold sweep when the report has one, invalid and missing
cases, the configuration (every ``config`` key, and the run), the worst cases with their
pictures, and every case.
"""

from __future__ import annotations

import base64
import html
import io
import json
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from segeval.config import METRICS
from segeval.errors import UsageError
from segeval.outputs.plots import require_matplotlib
from segeval.results import write_text_atomic
from segeval.words import SUMMARY_NOTES, class_label, fmt

Overlays = Mapping[str, Sequence[tuple[str, str]]]
SVG_METADATA = {"Creator": None, "Date": None, "Format": None, "Type": None}
POINT = "#1f4e99"
ACCENT = "#c0392b"

CSS = """
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", "DejaVu Sans", sans-serif;
       color: #1b1b1b; margin: 0 auto; max-width: 1180px; padding: 0 20px 40px; }
header { border-bottom: 2px solid #1f4e99; margin-bottom: 8px; }
h1 { font-size: 24px; margin: 18px 0 4px; }
h2 { font-size: 19px; margin: 30px 0 8px; border-bottom: 1px solid #ccd; padding-bottom: 3px; }
h3 { font-size: 15px; margin: 18px 0 6px; }
nav a { margin-right: 12px; }
.headline { font-size: 18px; margin: 6px 0 10px; }
.note { color: #555; font-size: 13px; }
table { border-collapse: collapse; margin: 6px 0 12px; font-size: 13px; }
th, td { border: 1px solid #d4d7de; padding: 3px 8px; text-align: left; vertical-align: top; }
th { background: #eef1f6; }
td.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
tr.headline-row td { font-weight: bold; }
.code { font-family: "DejaVu Sans Mono", monospace; white-space: pre-wrap;
          word-break: break-all; }
figure { margin: 8px 0 16px; }
.columns { display: flex; flex-wrap: wrap; gap: 0 18px; align-items: flex-start; }
figure.plot svg { max-width: 100%; height: auto; }
.pictures { display: flex; flex-wrap: wrap; gap: 10px; }
.pictures figure { margin: 0; max-width: 440px; }
.pictures img { max-width: 100%; height: auto; image-rendering: pixelated;
                border: 1px solid #ccd; }
figcaption { font-size: 12px; color: #444; }
details summary { cursor: pointer; margin: 6px 0; }
"""
CSP = ("default-src 'none'; img-src data:; style-src 'unsafe-inline'; "
       "base-uri 'none'; form-action 'none'")




def write_html(path: str | Path, report: Mapping[str, Any] | None, *,
               overlays: Overlays | None = None,
               leaderboard: Mapping[str, Any] | None = None) -> None:
    """:func:`render_html`, written atomically (a temporary file, then a rename)."""
    text = render_html(report, overlays=overlays, leaderboard=leaderboard)
    write_text_atomic(Path(path), text)


def render_html(report: Mapping[str, Any] | None, *, overlays: Overlays | None = None,
                leaderboard: Mapping[str, Any] | None = None) -> str:
    """One self-contained HTML page for a report, a leaderboard, or both.

    ``report`` is a report dict (``Report.to_dict()`` or its JSON read back); ``overlays``
    maps case ids to ``(caption, png_path)`` pairs (as :func:`write_overlays` returns);
    ``leaderboard`` is the parsed ``leaderboard.json``.  Raises :class:`UsageError` when
    matplotlib is missing or when neither a report nor a leaderboard is given.
    """
    if report is None and leaderboard is None:
        raise UsageError("E_USAGE", "the HTML report needs a report or a leaderboard")
    require_matplotlib()
    sections: list[tuple[str, str, str]] = []  # (anchor, title, body)
    if leaderboard is not None:
        sections.append(("leaderboard", "Leaderboard", leaderboard_section(leaderboard)))
    if report is not None:
        sections += report_sections(report, overlays or {})
    title = "segeval report" if report is not None else "segeval leaderboard"
    head = [f"<h1>{title}</h1>"]
    if report is not None:
        head.append(headline_html(report))
    nav = " ".join(f'<a href="#{anchor}">{_e(name)}</a>' for anchor, name, _ in sections)
    body = "\n".join(f'<section id="{anchor}">\n<h2>{_e(name)}</h2>\n{content}\n</section>'
                     for anchor, name, content in sections)
    return (
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
        f'<meta http-equiv="Content-Security-Policy" content="{CSP}">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>{title}</title>\n<style>{CSS}</style>\n</head>\n<body>\n"
        f"<header>\n{''.join(head)}\n<nav>{nav}</nav>\n</header>\n{body}\n</body>\n</html>\n"
    )


# ----------------------------------------------------------------------------- report

def report_sections(report: Mapping[str, Any], overlays: Overlays) -> list[tuple[str, str, str]]:
    metric = report["headline"]["metric"]
    sections = [("warnings", "Warnings", warnings_section(report))] \
        if report.get("warnings") else []
    sections += [
        ("summary", "Summary", summary_section(report)),
        ("per-class", "Per class", per_class_section(report)),
        ("distributions", f"Distributions of per-case {metric}",
         distribution_section(report, metric)),
    ]
    sections += [(f"distributions-{name}", f"Distributions of per-case {name} ({unit})",
                  distribution_section(report, name, unit))
                 for name, unit in (report.get("units") or {}).items()]
    if report.get("sweep"):
        sections.append(("sweep", "Threshold sweep", sweep_section(report)))
    sections.append(("invalid", "Invalid and missing cases", invalid_section(report)))
    sections.append(("configuration", "Configuration", config_section(report)))
    if overlays:
        sections.append(("worst-cases", "Worst cases", overlay_section(report, overlays)))
    sections.append(("cases", "Every case", cases_section(report)))
    return sections


def headline_html(report: Mapping[str, Any]) -> str:
    head, summary = report["headline"], report["summary"]
    tool = report.get("tool", {})
    return (
        f'<p class="headline"><strong>{_e(head["metric"])} ({_e(head["reduction"])}) = '
        f'<span id="headline-value">{_num(head["value"])}</span></strong></p>'
        f'<p class="note">{summary["n_cases"]} cases: {summary["n_scored"]} scored, '
        f'{summary["n_invalid"]} invalid, {summary["n_missing"]} missing · classes: '
        f'{_e(", ".join(class_label(c["key"], c.get("name")) for c in report["classes"]))} · '
        f'{_e(tool.get("name", "segeval"))} {_e(tool.get("version", ""))}</p>'
    )


def config_section(report: Mapping[str, Any]) -> str:
    items = [[_e(key), _code(value)] for key, value in report["config"].items()]
    third = -(-len(items) // 3)
    tables = [_table(["option", "value"], items[i:i + third])
              for i in range(0, len(items), third)]
    run = [[_e(key), _code(value)] for key, value in (report.get("run") or {}).items()]
    if run:
        tables.append(_table(["run", "value"], run))
    return ('<p class="note">Every option that can change a number, and how the run went.'
            f'</p>\n<div class="columns">{"".join(tables)}</div>')


def summary_section(report: Mapping[str, Any]) -> str:
    summary, head = report["summary"], report["headline"]
    rows = []
    for name, meaning in SUMMARY_NOTES.items():
        cells = [f"<strong>{name}</strong>", _e(meaning)]
        cells += [_num(summary[name].get(m)) for m in METRICS]
        rows.append(("headline-row" if name == head["reduction"] else "", cells))
    micro = summary["micro"]
    counts = " · ".join(f"{c.upper()} {_num(micro.get(c))}" for c in ("tp", "fp", "fn", "tn"))
    return (_table(["reduction", "meaning", *METRICS], rows, numeric_from=2)
            + f'\n<p class="note">micro counts: {counts}</p>')


def per_class_section(report: Mapping[str, Any]) -> str:
    metric = report["headline"]["metric"]
    rows, pooled_rows, mean_rows = [], [], []
    for key, block in report["per_class"].items():
        label = [_e(key), _e(block["name"])]
        rows.append(label + [
            _num(block["pooled"][metric]), _mean_std(block, metric),
            f'{block["n_used"][metric]}/{block["n_cases"]}', str(block["n_empty"]),
            *(_num(block["pooled"][c]) for c in ("tp", "fp", "fn")),
        ])
        pooled_rows.append(label + [_num(block["pooled"][m]) for m in METRICS])
        mean_rows.append(label + [_mean_std(block, m) for m in METRICS])
    return (
        f"<h3>{_e(metric)}</h3>\n"
        '<p class="note"><i>pooled</i>: counts summed over cases, then the score; '
        "<i>mean ± std</i>: the score per case, averaged over the cases where it is defined "
        "(<i>cases used</i>); <i>empty</i>: cases where it is undefined.</p>\n"
        + _table(["class", "name", "pooled", "mean ± std", "cases used", "empty",
                  "TP", "FP", "FN"], rows, numeric_from=2)
        + "\n<h3>Every metric, pooled</h3>\n"
        + _table(["class", "name", *METRICS], pooled_rows, numeric_from=2)
        + "\n<h3>Every metric, mean ± std over cases</h3>\n"
        + _table(["class", "name", *METRICS], mean_rows, numeric_from=2)
    )


def distribution_section(report: Mapping[str, Any], metric: str,
                         unit: str = "fraction") -> str:
    """Per-class box and strip plot of ``metric``'s per-case values (an overlap metric, or a
    value metric such as ``hd95`` in ``unit``; infinite distances are not drawn)."""
    series = []
    for spec in report["classes"]:
        points = [(case["id"], float(value)) for case in report["cases"]
                  if isinstance(value := (case.get("metrics") or {}).get(spec["key"], {})
                                .get(metric), (int, float)) and math.isfinite(value)]
        series.append((class_label(spec["key"], spec.get("name")), points))
    if not any(points for _, points in series):
        return '<p class="note">No case has a defined score.</p>'
    return ('<p class="note">One point per case (hover a point for its case id); the box '
            "spans the quartiles, the line is the median. Undefined (empty) scores are not "
            "drawn.</p>\n" + _figure(distribution_svg(series, metric, unit),
                                      "distribution plot"))


def sweep_section(report: Mapping[str, Any]) -> str:
    sweep, metric = report["sweep"], report["headline"]["metric"]
    names = {c["key"]: class_label(c["key"], c.get("name")) for c in report["classes"]}
    def best(label: str, block: Mapping[str, Any]) -> list[str]:
        threshold = block["best"]["threshold"]
        return [label, "—" if threshold is None else f"{threshold:g}",
                _num(block["best"]["value"])]

    rows = [best(f"<strong>{_e(name)}</strong>", block)
            for name, block in sweep["summary"].items()]
    rows += [best(_e(names.get(key, key)), block) for key, block in sweep["per_class"].items()]
    return (f'<p class="note">{_e(sweep.get("rule", ""))}. A star marks the best threshold '
            "of each curve (hover it for the value).</p>\n"
            + _figure(sweep_svg(sweep, metric, names), "sweep curves")
            + "\n<h3>Best threshold</h3>\n"
            + _table(["", "best threshold", f"{metric} at best"], rows, numeric_from=1))


def warnings_section(report: Mapping[str, Any]) -> str:
    """The run's warnings (segeval.core.warnings), first on the page: each one says why a
    score may be wrong and which option fixes it."""
    rows = [[_code(w["code"]), _e(w["message"])] for w in report.get("warnings") or []]
    return _table(["warning", "message"], rows)


def invalid_section(report: Mapping[str, Any]) -> str:
    rows = [[_e(case["id"]), _e(case["status"]), _code(case.get("error_code")),
             _e(case.get("message") or "")]
            for case in report["cases"]
            if case["status"] != "ok" or case.get("error_code") is not None]
    text = (_table(["case", "status", "error_code", "message"], rows) if rows
            else '<p class="note">None: every case was scored.</p>')
    for key, title in (("unmatched_predictions", "Predictions without a reference"),
                       ("ignored_files", "Ignored files")):
        if report.get(key):
            items = "".join(f"<li>{_e(name)}</li>" for name in report[key])
            text += f"\n<h3>{title}</h3>\n<ul>{items}</ul>"
    return text


def overlay_section(report: Mapping[str, Any], overlays: Overlays) -> str:
    by_id = {case["id"]: case for case in report["cases"]}
    metric = report["headline"]["metric"]
    parts = ['<p class="note">TP green (reference and prediction), FP red (prediction '
             "only), FN blue (reference only); see docs/report.md for the slice choice and "
             "orientation.</p>"]
    for case_name, pictures in overlays.items():
        case = by_id.get(case_name, {})
        scores = " · ".join(
            f"{_e(key)}: {_e(metric)} {_num(values.get(metric))}"
            for key, values in (case.get("metrics") or {}).items())
        figures = "".join(_picture(caption, path) for caption, path in pictures)
        parts.append(f"<h3>case {_e(case_name)}</h3>\n<p class=\"note\">{scores}</p>\n"
                     f'<div class="pictures">{figures}</div>')
    return "\n".join(parts)


def cases_section(report: Mapping[str, Any]) -> str:
    metric = report["headline"]["metric"]
    keys = [c["key"] for c in report["classes"]]
    rows = []
    for case in report["cases"]:
        metrics = case.get("metrics") or {}
        rows.append([_e(case["id"]), _e(case["status"]),
                     *(_num(metrics.get(k, {}).get(metric)) for k in keys),
                     _e(case.get("prediction") or "—"), _e(case.get("reference") or "—")])
    table = _table(["case", "status", *(f"{metric} {k}" for k in keys), "prediction",
                    "reference"], rows, numeric_from=2, numeric_to=2 + len(keys))
    return (f"<details>\n<summary>{len(rows)} cases: {_e(metric)} per class, and their "
            f"files</summary>\n{table}\n</details>")


# ----------------------------------------------------------------------------- grading

def leaderboard_section(board: Mapping[str, Any]) -> str:
    rank_by = board.get("rank_by", {})
    boot = board.get("bootstrap", {})
    teams = board.get("teams", [])
    keys = sorted({key for team in teams for key in team.get("per_class") or {}})
    rows = []
    for team in teams:
        interval = ("—" if team.get("ci_low") is None else
                    f'{_num(team["ci_low"])} – {_num(team["ci_high"])}')
        rows.append([_num(team.get("rank")), _e(team["team"]), _num(team.get("score")),
                     interval, _num(team.get("rank_stability")),
                     *(_num((team.get("per_class") or {}).get(k)) for k in keys),
                     _num(team.get("n_cases")), _num(team.get("n_missing")),
                     _num(team.get("n_failed")), _e(team.get("status", "")),
                     _e(team.get("reason") or "")])
    metric = rank_by.get("metric", "score")
    table = _table(["rank", "team", f"{metric} ({rank_by.get('reduction', '')})",
                    "95% interval", "rank stability", *(f"{metric} {k}" for k in keys),
                    "cases", "missing", "failed", "status", "reason"], rows,
                   numeric_from=0, numeric_to=5 + len(keys), text_columns=(1,))
    note = (f'<p class="note">Ranked by {_e(metric)} ({_e(rank_by.get("reduction", ""))}); '
            f'{_e(board.get("ties", ""))}.</p>')
    if not boot.get("resamples"):
        return note + "\n" + table + ('\n<p class="note">No bootstrap was run '
                                      "(--bootstrap 0): no intervals.</p>")
    plotted = [t for t in teams if t.get("score") is not None]
    plots = ""
    if plotted:
        plots = (f'<h3>Score with bootstrap interval</h3>\n<p class="note">'
                 f'{_e(boot.get("interval", ""))}; {boot["resamples"]} resamples, seed '
                 f'{_e(boot.get("seed"))}.</p>\n'
                 + _figure(interval_svg(plotted, metric), "interval plot")
                 + f'\n<h3>Rank stability</h3>\n<p class="note">'
                 f'{_e(boot.get("rank_stability", ""))}.</p>\n'
                 + _figure(stability_svg(plotted), "rank stability plot"))
    return note + "\n" + table + "\n" + plots


# ----------------------------------------------------------------------------- plots

def distribution_svg(series: Sequence[tuple[str, Sequence[tuple[str, float]]]],
                     metric: str, unit: str = "fraction") -> str:
    """Box and strip plot, one column per class; point ``i`` of class ``k`` has the SVG
    id ``dist-k-i`` and a ``<title>`` naming its case."""
    figure, axes = _axes(min(14.0, 2.0 + 1.3 * len(series)), 3.6)
    titles: dict[str, str] = {}
    for k, (_, points) in enumerate(series):
        values = [v for _, v in points]
        if not values:
            continue
        axes.boxplot(values, positions=[k], widths=0.5, showfliers=False,
                     medianprops={"color": ACCENT}, boxprops={"color": "#888"},
                     whiskerprops={"color": "#888"}, capprops={"color": "#888"})
        for i, (name, value) in enumerate(points):
            gid = f"dist-{k}-{i}"
            axes.plot([k + _jitter(i)], [value], "o", ms=4.5, color=POINT, alpha=0.75,
                      mec="white", mew=0.5, gid=gid)
            titles[gid] = f"{name}: {metric} {value:.4f}"
    axes.set_xticks(range(len(series)),
                    labels=[f"{label}\n(n={len(points)})" for label, points in series],
                    parse_math=False)
    axes.set_xlim(-0.6, len(series) - 0.4)
    low = min((v for _, points in series for _, v in points), default=0.0)
    high = 1.0 if unit == "fraction" else max(
        (v for _, points in series for _, v in points), default=1.0) or 1.0
    pad = 0.02 * high
    axes.set_ylim(min(0.0, low) - pad, high + pad)
    axes.set_ylabel(metric if unit == "fraction" else f"{metric} ({unit})")
    axes.grid(axis="y", color="#e4e4e4")
    return _svg(figure, "distribution", titles)


def sweep_svg(sweep: Mapping[str, Any], metric: str, names: Mapping[str, str]) -> str:
    """The metric against the threshold: per class (pooled) and for the summaries, the
    best threshold of each curve marked with a star."""
    thresholds = sweep["thresholds"]
    figure = _figure_object(11.0, 3.8)
    titles: dict[str, str] = {}
    panels = (("per class (pooled)", [(names.get(k, k), b["pooled"][metric], b["best"])
                                      for k, b in sweep["per_class"].items()]),
              ("summaries", [(name, b[metric], b["best"])
                             for name, b in sweep["summary"].items()]))
    for p, (title, curves) in enumerate(panels):
        axes = figure.add_subplot(1, 2, p + 1)
        for c, (label, values, best) in enumerate(curves):
            xs = [t for t, v in zip(thresholds, values, strict=True) if v is not None]
            ys = [v for v in values if v is not None]
            (line,) = axes.plot(xs, ys, "-o", ms=3, label=f" {label}")
            if best.get("threshold") is not None:
                gid = f"sweep-best-{p}-{c}"
                axes.plot([best["threshold"]], [best["value"]], "*", ms=13,
                          color=line.get_color(), mec="black", mew=0.6, gid=gid)
                titles[gid] = (f"{label}: best threshold {best['threshold']:g}, "
                               f"{metric} {best['value']:.4f}")
        axes.set_title(title, fontsize=10)
        axes.set_xlabel("threshold (foreground where p > t)")
        axes.set_ylabel(metric)
        axes.grid(color="#e4e4e4")
        if curves:
            legend = axes.legend(fontsize=8, frameon=False, loc="best")
            for text in legend.get_texts():
                text.set_parse_math(False)
    figure.tight_layout()
    return _svg(figure, "sweep", titles)


def interval_svg(teams: Sequence[Mapping[str, Any]], metric: str) -> str:
    """Each team's score (dot) and bootstrap interval (bar), rank 1 at the top."""
    figure, axes = _axes(8.0, 0.9 + 0.35 * len(teams))
    titles: dict[str, str] = {}
    for i, team in enumerate(teams):
        y = len(teams) - 1 - i
        if team.get("ci_low") is not None and team.get("ci_high") is not None:
            axes.plot([team["ci_low"], team["ci_high"]], [y, y], "-", color="#7a8fb5", lw=3,
                      solid_capstyle="butt")
        gid = f"interval-{i}"
        axes.plot([team["score"]], [y], "o", color=POINT, ms=6, gid=gid)
        titles[gid] = (f"{team['team']}: {metric} {team['score']:.4f}, interval "
                       f"{_num(team.get('ci_low'))} – {_num(team.get('ci_high'))}")
    _team_ticks(axes, teams)
    axes.set_xlabel(metric)
    axes.grid(axis="x", color="#e4e4e4")
    return _svg(figure, "interval", titles)


def stability_svg(teams: Sequence[Mapping[str, Any]]) -> str:
    """The share of bootstrap resamples in which each team keeps its rank."""
    figure, axes = _axes(8.0, 0.9 + 0.35 * len(teams))
    titles: dict[str, str] = {}
    for i, team in enumerate(teams):
        value = team.get("rank_stability")
        if value is None:
            continue
        gid = f"stability-{i}"
        axes.barh([len(teams) - 1 - i], [value], color=POINT, height=0.6, gid=gid)
        titles[gid] = f"{team['team']}: keeps rank {_num(team.get('rank'))} in {value:.1%}"
    _team_ticks(axes, teams)
    axes.set_xlim(0, 1)
    axes.set_xlabel("share of resamples keeping the observed rank")
    axes.grid(axis="x", color="#e4e4e4")
    return _svg(figure, "stability", titles)


def _team_ticks(axes: Any, teams: Sequence[Mapping[str, Any]]) -> None:
    axes.set_yticks([len(teams) - 1 - i for i in range(len(teams))],
                    labels=[f"{_num(t.get('rank'))}. {t['team']}" for t in teams],
                    parse_math=False)
    axes.set_ylim(-0.7, len(teams) - 0.3)


def _figure_object(width: float, height: float) -> Any:
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), dpi=100)


def _axes(width: float, height: float) -> tuple[Any, Any]:
    figure = _figure_object(width, height)
    return figure, figure.add_subplot()


def _svg(figure: Any, name: str, titles: Mapping[str, str]) -> str:
    """The figure as inline SVG: ids salted with ``name`` (unique in the page, the same on
    every run), no XML prologue, namespaces or metadata, and a ``<title>`` (a tooltip)
    in each group whose id is in ``titles``."""
    import matplotlib

    buffer = io.StringIO()
    with matplotlib.rc_context({"svg.fonttype": "none", "svg.hashsalt": name,
                                "font.family": "DejaVu Sans"}):
        figure.savefig(buffer, format="svg", bbox_inches="tight", metadata=SVG_METADATA)
    text = buffer.getvalue()
    text = text[text.index("<svg"):]  # drop the XML declaration and DOCTYPE
    text = re.sub(r'\s+xmlns(:\w+)?="[^"]*"', "", text, count=3)
    text = re.sub(r"<metadata>.*?</metadata>\s*", "", text, flags=re.S)
    for gid, title in titles.items():
        text = text.replace(f'<g id="{gid}">', f'<g id="{gid}">\n<title>{_e(title)}</title>', 1)
    return text


def _jitter(i: int) -> float:
    """A deterministic horizontal offset in [-0.2, 0.2) (golden-ratio sequence)."""
    return ((i * 0.6180339887498949) % 1.0 - 0.5) * 0.4


# ----------------------------------------------------------------------------- html bits

def _table(head: Sequence[str], rows: Iterable[Sequence[str] | tuple[str, Sequence[str]]],
           numeric_from: int | None = None, numeric_to: int | None = None,
           text_columns: Sequence[int] = ()) -> str:
    """A table from already-escaped cells; a row may be ``(css_class, cells)``.  Columns
    ``numeric_from`` to ``numeric_to`` (exclusive) are right-aligned numbers."""
    def is_number(column: int) -> bool:
        return (numeric_from is not None and column >= numeric_from
                and (numeric_to is None or column < numeric_to)
                and column not in text_columns)

    lines = ["<table>", "<thead><tr>" + "".join(f"<th>{_e(h)}</th>" for h in head)
             + "</tr></thead>", "<tbody>"]
    for row in rows:
        css, cells = row if isinstance(row, tuple) else ("", row)
        attr = f' class="{css}"' if css else ""
        lines.append(f"<tr{attr}>" + "".join(
            f'<td class="num">{cell}</td>' if is_number(c) else f"<td>{cell}</td>"
            for c, cell in enumerate(cells)) + "</tr>")
    lines += ["</tbody>", "</table>"]
    return "\n".join(lines)


def _figure(svg: str, label: str) -> str:
    return f'<figure class="plot" aria-label="{_e(label)}">\n{svg}\n</figure>'


def _picture(caption: str, path: str) -> str:
    try:
        data = base64.b64encode(Path(path).read_bytes()).decode("ascii")
    except OSError:
        return f"<figure><figcaption>{_e(caption)} (picture missing: {_e(path)})</figcaption>" \
               "</figure>"
    return (f'<figure><img alt="{_e(caption)}" title="{_e(caption)}" '
            f'src="data:image/png;base64,{data}"></figure>')




def _mean_std(block: Mapping[str, Any], metric: str) -> str:
    mean, std = block["mean"].get(metric), block["std"].get(metric)
    return "—" if mean is None else f"{_num(mean)} ± {_num(std)}"


def _num(value: Any) -> str:
    """A report value as :func:`segeval.words.fmt` writes it, escaped for HTML."""
    return _e(fmt(value))



def _code(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
    return f'<span class="code">{_e(text)}</span>'


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)
