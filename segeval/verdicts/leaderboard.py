"""Grading many submissions against one hidden reference set, with a leaderboard.

``SUBMISSIONS`` holds one entry per team: a folder or an archive (.zip, .tar, .tar.gz,
.tgz).  Every team is evaluated with :func:`segeval.evaluate` under the same options, with
the grading defaults ``missing="empty"`` and ``invalid="empty"`` (a missing or broken case
scores as an empty prediction, so it can never help a team), and the classes fixed by the
reference set (or ``labels``) so that no team can add a class by predicting a stray label.

Rules (documented in the README):

* Team name: the entry's name without its archive suffix.  Two entries with the same team
  name (``a.zip`` and ``a/``) make both invalid.  Hidden entries are ignored; other files
  are listed as ignored.
* An invalid submission (unreadable or hostile archive, no mask file at all) is recorded
  with its reason and ranked after every valid one; all others are graded.
* Ranking: by ``summary[reduction][metric]`` of each team's report (``rank_by``
  ``"metric:reduction"``).  Higher is better, except for lower-is-better value metrics
  (``hd95:macro_imagewise``, distances in mm), which rank ascending; value metrics exist only
  as ``macro_imagewise`` (per class the mean over cases, then the mean over classes) and are
  computed for every team when ranked by, whether or not ``boundary_metrics`` names them.
  Equal scores (exactly equal) share the best of their ranks ("1224" competition ranking);
  a team whose score is undefined is ranked after every defined score.
* Uncertainty (``bootstrap`` > 0): the same resampled case sets for every team (seeded); for
  each resample every team's score is recomputed from its per-case counts and the teams are
  ranked again.  Reported: the 2.5th/97.5th percentiles of the score and the share of
  resamples in which the team keeps its observed rank (rank stability).
"""

from __future__ import annotations

import csv
import io
import json
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from segeval.api import Progress, evaluate
from segeval.config import (
    HEADLINES,
    METRICS,
    EvalConfig,
    is_lesion_metric,
    lower_is_better,
    reduction_exists,
    value_metric,
)
from segeval.core.lesions import POOLED_LESION_METRICS
from segeval.core.reduce import COUNTS, macro_of_values, nanmean, pool_counts, summarise
from segeval.errors import CaseError, SegevalError, UsageError
from segeval.results import Report, write_text_atomic

ARCHIVE_SUFFIXES = (".tar.gz", ".tgz", ".zip", ".tar")
GRADING_DEFAULTS = {"missing": "empty", "invalid": "empty"}


@dataclass
class TeamResult:
    team: str
    source: str
    status: str = "ok"  # "ok" | "invalid"
    reason: str = ""
    report: Report | None = None
    score: float = float("nan")
    rank: int | None = None
    interval: tuple[float, float] | None = None
    rank_stability: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class Leaderboard:
    rank_by: tuple[str, str]
    teams: list[TeamResult]
    ignored: list[str]
    bootstrap: int
    seed: int

    def rows(self) -> list[dict[str, Any]]:
        metric, reduction = self.rank_by
        rows = []
        for team in self.teams:
            report = team.report.to_dict() if team.report is not None else None
            per_class = {}
            if report is not None:
                part = "mean" if reduction == "macro_imagewise" else "pooled"
                per_class = {key: value[part][metric]
                             for key, value in report["per_class"].items()}
            summary = report["summary"] if report is not None else {}
            rows.append({
                "rank": team.rank,
                "team": team.team,
                "score": None if np.isnan(team.score) else team.score,
                "ci_low": None if team.interval is None else team.interval[0],
                "ci_high": None if team.interval is None else team.interval[1],
                "rank_stability": team.rank_stability,
                "per_class": per_class,
                "n_cases": summary.get("n_cases"),
                "n_missing": summary.get("n_missing"),
                "n_failed": (None if report is None else
                             sum(case["status"] == "error" for case in report["cases"])),
                "status": team.status,
                "reason": team.reason,
                "source": team.source,
                # the same run warnings as `segeval evaluate` (core/warnings.py), per team
                "warnings": [] if report is None else report["warnings"],
            })
        return rows

    def to_json(self) -> str:
        data = {
            "rank_by": {"metric": self.rank_by[0], "reduction": self.rank_by[1],
                        "lower_is_better": lower_is_better(self.rank_by[0])},
            "ties": "equal scores share the best of their ranks (1224 competition ranking)",
            "bootstrap": {"resamples": self.bootstrap, "seed": self.seed,
                          "interval": "2.5th-97.5th percentile of the score over case "
                                      "resamples", "rank_stability": "share of resamples in "
                                      "which the team keeps its observed rank"},
            "teams": self.rows(),
            "ignored": self.ignored,
        }
        return json.dumps(data, indent=2, allow_nan=False)

    def to_csv(self) -> str:
        rows = self.rows()
        keys = sorted({key for row in rows for key in row["per_class"]})
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        head = ["rank", "team", "score", "ci_low", "ci_high", "rank_stability"]
        tail = ["n_cases", "n_missing", "n_failed", "status", "reason"]
        writer.writerow(head + [f"{self.rank_by[0]}:{k}" for k in keys] + tail)
        for row in rows:
            writer.writerow([_cell(row[h]) for h in head]
                            + [_cell(row["per_class"].get(k)) for k in keys]
                            + [_cell(row[t]) for t in tail])
        return buffer.getvalue()


def _cell(value: Any) -> str:
    return "" if value is None else repr(value) if isinstance(value, float) else str(value)


def parse_rank_by(text: str) -> tuple[str, str]:
    """``METRIC:REDUCTION``; the reduction defaults to ``macro`` (``macro_imagewise`` for a
    value metric such as ``hd95``, the only one it has)."""
    metric, _, reduction = text.partition(":")
    value = value_metric(metric) is not None
    reduction = reduction or ("macro_imagewise" if value else "macro")
    if (metric not in METRICS and not value) or reduction not in HEADLINES:
        raise UsageError("E_USAGE", f"--rank-by {text!r}: expected METRIC:REDUCTION with a "
                         f"metric in {', '.join(METRICS)} (or hd, hdNN, assd, masd, nsd) and "
                         f"a reduction in {', '.join(HEADLINES)}")
    if not reduction_exists(metric, reduction):
        raise UsageError("E_USAGE", f"--rank-by {text!r}: {reduction} does not exist for "
                         f"{metric} (a per case x class value: values of different cases do "
                         "not pool; lesion counts, lesion_f1 and rq do)",
                         hint=f"use --rank-by {metric}:macro_imagewise")
    return metric, reduction


def grade(submissions: str | Path, reference: str | Path, out: str | Path, *,
          rank_by: str = "dice:macro_imagewise", bootstrap: int = 0, seed: int = 0,
          workers: int | None = None, case_timeout: float | None = None,
          scheduler: str | None = None, progress: Progress | None = None,
          **options: Any) -> Leaderboard:
    """Grade every submission; write ``out/<team>/report.json`` and the leaderboard files.
    ``progress(done, total, label)``: called as cases finish (see
    :func:`segeval.api.evaluate_many`; with a ``scheduler``, per team: the label names it)."""
    submissions, reference, out = Path(submissions), Path(reference), Path(out)
    metric, reduction = parse_rank_by(rank_by)
    if bootstrap < 0:
        raise UsageError("E_USAGE", f"--bootstrap {bootstrap}: must be >= 0")
    if not submissions.is_dir():
        raise UsageError("E_USAGE", "not a folder of submissions", submissions)
    options = {**GRADING_DEFAULTS, **options}
    family = "lesion_metrics" if is_lesion_metric(metric) else "boundary_metrics"
    if value_metric(metric) is not None and metric not in options.get(family, ()):
        options[family] = [*options.get(family, ()), metric]
    EvalConfig.create(**options)  # validate once, before any work
    if options.get("labels") is None and not options.get("regions"):
        options["labels"] = reference_labels(reference, options)
    entries, ignored = list_submissions(submissions)
    out.mkdir(parents=True, exist_ok=True)
    if scheduler is None:
        teams = grade_teams(entries, reference, out, workers, case_timeout, options, progress)
    else:
        from segeval.run.runner import check_scheduler

        check_scheduler(scheduler)  # a cluster that cannot be reached is not every team's fault
        teams = [grade_team(team, paths, reference, out, workers, case_timeout, options,
                            scheduler, progress) for team, paths in sorted(entries.items())]
    rank_teams(teams, metric, reduction)
    if bootstrap:
        bootstrap_ranks(teams, metric, reduction, bootstrap, seed)
    teams.sort(key=lambda t: (t.rank is None, t.rank or 0, t.team))
    board = Leaderboard((metric, reduction), teams, ignored, bootstrap, seed)
    write_text_atomic(out / "leaderboard.json", board.to_json() + "\n")
    write_text_atomic(out / "leaderboard.csv", board.to_csv())
    return board


def reference_labels(reference: Path, options: dict[str, Any]) -> list[int]:
    """The labels of the reference set (background and ignore index excluded): every team is
    graded on the same classes."""
    report = evaluate(reference, reference, **{k: v for k, v in options.items()
                                               if k in ("ignore_index", "max_voxels")})
    labels = sorted({int(label) for case in report.cases if case.counts is not None
                     for label in case.counts.labels} - {0, options.get("ignore_index")})
    if not labels:
        raise UsageError("E_USAGE", "the reference set holds no foreground label", reference,
                         "pass --labels")
    return labels


def list_submissions(folder: Path) -> tuple[dict[str, list[Path]], list[str]]:
    entries: dict[str, list[Path]] = {}
    ignored = []
    for entry in sorted(folder.iterdir()):
        if entry.name.startswith("."):
            continue
        suffix = next((s for s in ARCHIVE_SUFFIXES if entry.name.lower().endswith(s)), None)
        if entry.is_dir() and not entry.is_symlink():
            entries.setdefault(entry.name, []).append(entry)
        elif suffix and entry.is_file() and not entry.is_symlink():
            entries.setdefault(entry.name[: -len(suffix)], []).append(entry)
        else:
            ignored.append(entry.name)
    return entries, ignored


def grade_teams(entries: dict[str, list[Path]], reference: Path, out: Path,
                workers: int | None, case_timeout: float | None,
                options: dict[str, Any], progress: Progress | None = None
                ) -> list[TeamResult]:
    """Every team at once (:func:`segeval.api.evaluate_many`: each reference case decoded once
    for all teams, not once per team); the same reports as :func:`grade_team` one by one.
    Archives are all extracted first, each into its own scratch folder, removed at the end."""
    from segeval.api import evaluate_many

    results: dict[str, TeamResult] = {}
    folders: dict[str, Path] = {}
    scratch = Path(tempfile.mkdtemp(prefix="segeval-grade-"))
    try:
        for index, (team, paths) in enumerate(sorted(entries.items())):
            result = results[team] = TeamResult(team, ", ".join(p.name for p in paths))
            try:
                folders[team] = _submission_folder(team, paths, scratch / str(index))
            except CaseError as exc:  # the submission's fault (a UsageError, e.g. a full
                result.status, result.reason = "invalid", exc.message  # disk, stops the run)
        reports = evaluate_many(folders, reference, workers=workers, case_timeout=case_timeout,
                                cache=out / ".cache", progress=progress, **options)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    if any(isinstance(r, Report) and r.run.get("interrupted") for r in reports.values()):
        raise KeyboardInterrupt  # Ctrl-C: no leaderboard of half-graded teams (exit 130)
    for team, report in reports.items():
        result = results[team]
        if isinstance(report, SegevalError):
            result.status, result.reason = "invalid", report.message
        else:
            result.report = report
            report.write_json(out / team / "report.json")
    return [results[team] for team in sorted(results)]


def _submission_folder(team: str, paths: list[Path], scratch: Path) -> Path:
    """The folder of one team's masks: its folder, or its archive extracted under
    ``scratch``.  The submission's own faults are a :class:`CaseError` (several entries of
    one team name, an archive refused); a failure of this machine (the scratch disk full)
    is a :class:`UsageError` that stops the grading."""
    if len(paths) > 1:
        raise CaseError("E_USAGE", f"several submissions named {team!r}: "
                        f"{', '.join(p.name for p in paths)}")
    (path,) = paths
    if path.is_dir():
        return path
    from segeval.formats.archive import extract_submission

    scratch.mkdir(parents=True)
    return extract_submission(path, scratch).root


def grade_team(team: str, paths: list[Path], reference: Path, out: Path,
               workers: int | None, case_timeout: float | None,
               options: dict[str, Any], scheduler: str | None = None,
               progress: Progress | None = None) -> TeamResult:
    """One team alone (the ``--scheduler`` path: teams one after the other, each case sent to
    the cluster); ``progress`` counts this team's cases, its label is ``team: case``."""
    result = TeamResult(team, ", ".join(p.name for p in paths))
    scratch = Path(tempfile.mkdtemp(prefix="segeval-grade-"))
    try:
        try:
            folder = _submission_folder(team, paths, scratch / "0")
        except CaseError as exc:
            result.status, result.reason = "invalid", exc.message
            return result
        def team_progress(done: int, total: int, case: str) -> None:
            if progress is not None:
                progress(done, total, f"{team}: {case}")

        report = evaluate(folder, reference, workers=workers, case_timeout=case_timeout,
                          cache=out / ".cache", scheduler=scheduler, progress=team_progress,
                          **options)
    except SegevalError as exc:  # pairing: the folder holds no mask file, ...
        result.status, result.reason = "invalid", exc.message
        return result
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    result.report = report
    report.write_json(out / team / "report.json")
    return result


def team_score(report: Report, metric: str, reduction: str) -> float:
    """The report's ``summary[reduction][metric]`` (value metrics: ``macro_imagewise``)."""
    if value_metric(metric) is not None:
        assert report.values is not None
        if reduction == "macro":  # lesion F1 / RQ: mean over classes of the pooled values
            return float(report.values.pooled_macro[metric])
        if reduction == "micro":
            return float(report.values.micro[metric])
        return float(report.values.macro[metric])
    return float(getattr(report.reductions, reduction)[metric])


def rank_teams(teams: list[TeamResult], metric: str, reduction: str) -> None:
    """Competition ranking ("1224") of the valid teams by score, best first."""
    for team in teams:
        if team.report is not None:
            team.score = team_score(team.report, metric, reduction)
    ranks = competition_ranks([t.score for t in teams if t.report is not None],
                              ascending=lower_is_better(metric))
    for team, rank in zip([t for t in teams if t.report is not None], ranks, strict=True):
        team.rank = rank


def competition_ranks(scores: list[float], ascending: bool = False) -> list[int]:
    """Rank 1 for the highest score (the lowest with ``ascending``, for distances); equal
    scores share the best rank; NaN ranks last."""
    sign = 1.0 if ascending else -1.0
    keyed = [(sign * s if not np.isnan(s) else float("inf")) for s in scores]
    return [1 + sum(other < key for other in keyed) for key in keyed]


def bootstrap_ranks(teams: list[TeamResult], metric: str, reduction: str, resamples: int,
                    seed: int) -> None:
    """Resample cases with replacement (the same resamples for every team)."""
    valid = [t for t in teams if t.report is not None]
    if not valid:
        return
    n_cases = len(valid[0].report.cases)  # type: ignore[union-attr]
    rng = np.random.default_rng(seed)
    samples = rng.integers(0, n_cases, size=(resamples, n_cases))
    scores = np.stack([resampled_scores(t.report, metric, reduction, samples)
                       for t in valid if t.report is not None])  # [teams, resamples]
    for index, team in enumerate(valid):
        low, high = np.nanpercentile(scores[index], [2.5, 97.5]) if not np.isnan(
            scores[index]).all() else (np.nan, np.nan)
        team.interval = (float(low), float(high))
    kept = np.zeros(len(valid))
    for column in scores.T:
        ranks = competition_ranks(list(column), ascending=lower_is_better(metric))
        kept += [rank == team.rank for rank, team in zip(ranks, valid, strict=True)]
    for index, team in enumerate(valid):
        team.rank_stability = float(kept[index] / resamples)


def resampled_scores(report: Report, metric: str, reduction: str,
                     samples: np.ndarray) -> np.ndarray:
    """The team's score on each resample of cases (rows of ``samples``), from counts, by
    the same definition of the reduction as the report (:func:`segeval.core.reduce.summarise`);
    for a value metric from its per case x class values (NaN for unscored cases), by
    :func:`segeval.core.reduce.macro_of_values` as the report's ``macro_imagewise``."""
    if value_metric(metric) is not None:
        values = report.values
        assert values is not None
        if reduction == "macro_imagewise":
            return macro_of_values(values.per_case[metric][samples])
        # lesion F1 / RQ (or a lesion count, micro): the resampled cases' counts pooled
        empty = report.config.lesion_empty or report.config.empty
        counts = {name: table[samples] for name, table in values.counts.items()}
        if reduction == "micro":
            return pool_counts(counts, POOLED_LESION_METRICS, empty, axis=(-2, -1))[metric]
        return nanmean(pool_counts(counts, POOLED_LESION_METRICS, empty)[metric], axis=-1)
    table = report.table
    counts = {name: getattr(table, name)[samples] for name in COUNTS}  # [resample, case, class]
    return summarise(reduction, metric, counts, report.config, scored=table.scored[samples])
