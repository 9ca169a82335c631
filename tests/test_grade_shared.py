"""Grading evaluates the same case of every team in one worker, decoding the reference once
(``segeval.api.evaluate_many``).  Every team's report must equal, number for number, the
report of evaluating that team's folder alone with ``segeval.evaluate``."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

import segeval
from segeval.api import evaluate_many
from segeval.verdicts.leaderboard import grade
from tests.conftest import write_png
from tests.test_grade import make_submissions

FOLDER_TEAMS = ("perfect", "good", "partial", "wrongshape", "corrupt")


def numbers(report: dict) -> dict:
    """Everything of a report but its run facts (times, cache hits, timeout)."""
    return {key: value for key, value in report.items() if key != "run"}


@pytest.mark.parametrize("values", [
    {}, {"boundary_metrics": ["hd95", "nsd"]},
    # the lone lesions' HD95 read the class distances, whose reference side is kept per team
    {"boundary_metrics": ["hd95"], "lesion_metrics": ["lesion_hd95", "lesion_f1"]},
])
def test_every_team_report_equals_evaluating_the_team_alone(tmp_path, values):
    subs, gt = make_submissions(tmp_path)
    grade(subs, gt, tmp_path / "out", workers=2, **values)
    options = {"missing": "empty", "invalid": "empty", "labels": [1], **values}
    for team in FOLDER_TEAMS:
        alone = segeval.evaluate(subs / team, gt, workers=1, **options).to_dict()
        graded = json.loads((tmp_path / "out" / team / "report.json").read_text())
        assert numbers(graded) == json.loads(json.dumps(numbers(alone))), team
        assert alone["cases"]  # the comparison holds cases
    tarred = json.loads((tmp_path / "out" / "tarred" / "report.json").read_text())
    good = json.loads((tmp_path / "out" / "good" / "report.json").read_text())
    assert tarred["summary"] == good["summary"]  # the same files, through an archive


def test_a_crashing_prediction_is_charged_to_its_own_team_only(tmp_path, monkeypatch):
    """A prediction file that kills the worker (a decoder crash) fails its group of cases;
    the group runs again case by case, so the other teams' same case is scored normally."""
    gt, subs = tmp_path / "gt", tmp_path / "subs"
    mask = square()
    for case in ("a", "b"):
        write_png(gt / f"{case}.png", mask)
        write_png(subs / "fine" / f"{case}.png", mask)
        write_png(subs / "bomb" / f"{case}.png", mask)
    (subs / "bomb" / "a.png").write_bytes((subs / "bomb" / "a.png").read_bytes() + b"BOMB")
    _patch_reader(monkeypatch, b"BOMB", lambda: os._exit(9))
    reports = evaluate_many({"fine": subs / "fine", "bomb": subs / "bomb"}, gt, workers=2,
                            missing="empty", invalid="empty", labels=[1])
    fine, bomb = reports["fine"], reports["bomb"]
    assert not isinstance(fine, Exception) and not isinstance(bomb, Exception)
    assert [c.status for c in fine.cases] == ["ok", "ok"]
    assert fine.reductions.macro_imagewise["dice"] == 1.0
    assert [c.error_code for c in bomb.cases] == ["E_WORKER_CRASHED", None]


def test_an_unpairable_folder_maps_to_its_error(tmp_path):
    gt = tmp_path / "gt"
    write_png(gt / "a.png", np.ones((3, 3), np.uint8))
    write_png(tmp_path / "other" / "a.png", np.ones((3, 3), np.uint8))
    reports = evaluate_many({"gone": tmp_path / "gone", "other": tmp_path / "other"}, gt,
                            labels=[1])
    with pytest.raises(segeval.UsageError) as alone:
        segeval.evaluate(tmp_path / "gone", gt, labels=[1])
    assert isinstance(reports["gone"], segeval.UsageError)
    assert reports["gone"].message == alone.value.message
    assert list(reports) == ["gone", "other"]  # in the order asked, the others evaluated
    assert reports["other"].reductions.macro_imagewise["dice"] == 1.0  # type: ignore[union-attr]


def _blobs(seed: int, shape: tuple[int, ...]) -> np.ndarray:
    """Labels 1..3 in random boxes placed differently per seed (so each team's crop differs)."""
    rng = np.random.default_rng(seed)
    out = np.zeros(shape, np.uint8)
    for label in (1, 2, 3):
        for _ in range(2):
            lo = [int(rng.integers(0, n - 3)) for n in shape]
            size = [int(rng.integers(1, 5)) for _ in shape]
            out[tuple(slice(a, a + s) for a, s in zip(lo, size, strict=True))] = label
    return out


@pytest.mark.parametrize("surface", ["voxel", "surfel"])
def test_a_shared_reference_boundary_gives_the_values_of_computing_it_again(surface,
                                                                            monkeypatch):
    """The per-case value step keeps each class's reference boundary (and its k-d tree) in the
    group's dict: later teams reuse it, and their values equal computing the pair alone, bit
    for bit, although each team's crop (the nonzero box of its pair) starts elsewhere."""
    from segeval.config import EvalConfig
    from segeval.engines import distances

    config = EvalConfig.create(boundary_metrics=["hd", "hd95", "assd", "masd", "nsd"],
                               surface=surface, labels=[1, 2, 3],
                               regions=[("WT", (1, 2, 3)), ("TC", (1, 3))])
    reference = _blobs(0, (14, 12, 9))
    spacing = (0.7, 1.1, 2.5)
    calls = []
    real = distances.boundary_of

    def counting(mask, *args, **kwargs):
        calls.append(int(mask.sum()))
        return real(mask, *args, **kwargs)

    monkeypatch.setattr(distances, "boundary_of", counting)
    shared: dict = {}
    for seed in (1, 2, 3):
        prediction = _blobs(seed, (14, 12, 9))
        maps = distances.CaseMaps(reference, prediction, None, spacing)
        alone = distances.distances_of(maps, config)
        together = distances.distances_of(maps, config, shared)
        assert together == alone  # exact, NaN-free here
        assert set(alone) == {"1", "2", "3", "WT", "TC"}
    # 5 classes: alone 2 boundaries each time (3 x 10); shared: 5 reference boundaries once,
    # then the prediction's (3 x 5)
    assert len(calls) == 3 * 10 + 5 + 3 * 5
    assert len([key for key in shared if isinstance(key, tuple)]) == 5
    # past the memory budget nothing more is kept, and the values stay the same
    monkeypatch.setattr(distances, "SHARED_ELEMENTS", 0)
    calls.clear()
    small: dict = {}
    maps = distances.CaseMaps(reference, _blobs(4, (14, 12, 9)), None, spacing)
    assert distances.distances_of(maps, config, small) == distances.distances_of(maps, config)
    assert not [key for key in small if isinstance(key, tuple)]
    assert len(calls) == 20


def test_grading_3d_boundary_metrics_equals_each_team_alone(tmp_path):
    """Whole grade runs on 3-D NIfTI teams (voxel and surfel conventions, regions): every
    team's report equals evaluating its folder alone."""
    import nibabel as nib

    gt, subs = tmp_path / "gt", tmp_path / "subs"
    affine = np.diag([0.8, 0.9, 2.0, 1.0])
    gt.mkdir()
    for case in range(3):
        nib.save(nib.Nifti1Image(_blobs(case, (16, 13, 7)), affine), gt / f"c{case}.nii.gz")
        for team in range(3):
            (subs / f"t{team}").mkdir(parents=True, exist_ok=True)
            nib.save(nib.Nifti1Image(_blobs(10 * team + case + 100, (16, 13, 7)), affine),
                     subs / f"t{team}" / f"c{case}.nii.gz")
    for surface in ("voxel", "surfel"):
        options = {"boundary_metrics": ["hd", "hd95", "assd", "masd", "nsd"],
                   "surface": surface, "labels": [1, 2, 3], "regions": [("WT", (1, 2, 3))]}
        out = tmp_path / f"out-{surface}"
        grade(subs, gt, out, workers=2, **options)
        for team in ("t0", "t1", "t2"):
            alone = segeval.evaluate(subs / team, gt, workers=1, missing="empty",
                                     invalid="empty", **options).to_dict()
            graded = json.loads((out / team / "report.json").read_text())
            assert numbers(graded) == json.loads(json.dumps(numbers(alone))), (surface, team)
            hd = graded["cases"][0]["metrics"]["WT"]["hd"]
            assert isinstance(hd, float) and hd > 0


def _two_teams(tmp_path: Path, marker: bytes) -> tuple[Path, Path]:
    """gt a, b (a 3x3 square each); team ``fine`` has no case a and b perfect; team ``bad``
    has b perfect and an a whose bytes end with ``marker`` (the patched reader acts on it)."""
    gt, subs = tmp_path / "gt", tmp_path / "subs"
    mask = square()
    for case in ("a", "b"):
        write_png(gt / f"{case}.png", mask)
        write_png(subs / "bad" / f"{case}.png", mask)
    write_png(subs / "fine" / "b.png", mask)
    (subs / "bad" / "a.png").write_bytes((subs / "bad" / "a.png").read_bytes() + marker)
    return gt, subs


def square() -> np.ndarray:
    """A 6x6 uint8 mask holding a 3x3 square of label 1 (a fresh array each call)."""
    mask = np.zeros((6, 6), np.uint8)
    mask[1:4, 1:4] = 1
    return mask


def _patch_reader(monkeypatch, marker: bytes, action) -> None:
    from segeval.run import runner

    real = runner.read_mask

    def read_mask(path, *args, **kwargs):  # workers are forked: they inherit this
        if Path(path).read_bytes().endswith(marker):
            action()
        return real(path, *args, **kwargs)

    monkeypatch.setattr(runner, "read_mask", read_mask)


@pytest.mark.parametrize("grouped", [True, False])
def test_a_prediction_that_kills_its_worker_scores_as_empty_not_as_absent(tmp_path, monkeypatch,
                                                                          grouped):
    """--invalid empty: a case whose decoder crashes keeps E_WORKER_CRASHED and is scored as an
    empty prediction (Dice 0 here), exactly like a missing case: breaking a hard case must not
    lift a team above one that left it out (before: the case dropped out of the mean, 1.0)."""
    gt, subs = _two_teams(tmp_path, b"BOMB")
    _patch_reader(monkeypatch, b"BOMB", lambda: os._exit(9))
    options = {"missing": "empty", "invalid": "empty", "labels": [1]}
    if grouped:
        reports = evaluate_many({"fine": subs / "fine", "bad": subs / "bad"}, gt, workers=2,
                                **options)
    else:
        reports = {team: segeval.evaluate(subs / team, gt, workers=2, **options)
                   for team in ("fine", "bad")}
    fine, bad = reports["fine"], reports["bad"]
    assert not isinstance(fine, Exception) and not isinstance(bad, Exception)
    assert fine.reductions.macro_imagewise["dice"] == 0.5  # (0 + 1) / 2 cases
    assert bad.reductions.macro_imagewise["dice"] == 0.5
    crashed = bad.cases[0]
    assert (crashed.status, crashed.error_code) == ("error", "E_WORKER_CRASHED")
    assert crashed.message.endswith("scored as an empty prediction (--invalid empty)")
    assert crashed.counts is not None


@pytest.mark.parametrize("grouped", [True, False])
def test_case_timeout_holds_for_each_case_of_a_group(tmp_path, monkeypatch, grouped):
    """A case that takes 3 s under --case-timeout 2 is E_TIMEOUT whether it is evaluated in a
    group with the other teams' same case or alone (before: the group's budget was the sum of
    its cases' timeouts, so it passed), and is scored as an empty prediction."""
    import time

    gt, subs = _two_teams(tmp_path, b"SLOW")
    _patch_reader(monkeypatch, b"SLOW", lambda: time.sleep(3))
    options = {"missing": "empty", "invalid": "empty", "labels": [1]}
    if grouped:
        bad = evaluate_many({"fine": subs / "fine", "bad": subs / "bad"}, gt, workers=2,
                            case_timeout=2, **options)["bad"]
    else:
        bad = segeval.evaluate(subs / "bad", gt, workers=2, case_timeout=2, **options)
    assert not isinstance(bad, Exception)
    assert [c.error_code for c in bad.cases] == ["E_TIMEOUT", None]
    assert bad.reductions.macro_imagewise["dice"] == 0.5


def test_finished_groups_reach_the_cache_before_an_interrupt(tmp_path):
    """Each group's results are handed over (to the cache) as soon as they are final; Ctrl-C
    after the first group keeps it and records the others as E_INTERRUPTED."""
    from segeval.config import EvalConfig
    from segeval.run.cases import pair_inputs
    from segeval.run.runner import evaluate_groups

    gt, subs = _two_teams(tmp_path, b"")
    cases = pair_inputs(subs / "bad", gt).cases
    seen = []

    def done(g, results):
        seen.append((g, [r.status for r in results]))
        raise KeyboardInterrupt  # as if Ctrl-C came right after the first group

    out = evaluate_groups([[cases[0]], [cases[1]]], EvalConfig.create(labels=[1]), 1,
                          [[None], [None]], done)
    assert seen == [(0, ["ok"])]
    assert [r.status for r in out[0]] == ["ok"]
    assert [r.error_code for r in out[1]] == ["E_INTERRUPTED"]


def test_a_scratch_disk_failure_stops_grading_instead_of_invalidating_teams(tmp_path,
                                                                             monkeypatch):
    """Extracting a submission can fail for the machine's reasons (the scratch disk full):
    that is a usage error for the whole run, not a reason to list the team as invalid."""
    import zipfile

    from segeval.formats import archive

    subs, gt = make_submissions(tmp_path)
    with zipfile.ZipFile(subs / "zipped.zip", "w") as bundle:
        for png in sorted((subs / "good").glob("*.png")):
            bundle.write(png, png.name)

    def full(path, exc):
        return segeval.UsageError("E_USAGE", "cannot write an extracted file: No space left "
                                  "on device", path)

    real = archive._Extraction.__init__

    def failing(self, *args, **kwargs):
        real(self, *args, **kwargs)
        raise full(args[0], None)

    monkeypatch.setattr(archive._Extraction, "__init__", failing)
    with pytest.raises(segeval.UsageError, match="No space left"):
        grade(subs, gt, tmp_path / "out", workers=1)


def test_an_interrupted_grading_writes_no_leaderboard(tmp_path, monkeypatch):
    """Ctrl-C during the grouped evaluation: the cases finished are cached (see above), the
    others E_INTERRUPTED, and grade raises KeyboardInterrupt (the CLI: exit 130) instead of
    ranking half-graded teams."""
    from segeval import api

    subs, gt = make_submissions(tmp_path)
    real = api.evaluate_many

    def interrupted(*args, **kwargs):
        reports = real(*args, **kwargs)
        for report in reports.values():
            if not isinstance(report, Exception):
                report.run["interrupted"] = True
        return reports

    monkeypatch.setattr(api, "evaluate_many", interrupted)
    with pytest.raises(KeyboardInterrupt):
        grade(subs, gt, tmp_path / "out", workers=1)
    assert not (tmp_path / "out" / "leaderboard.json").exists()
    assert any((tmp_path / "out" / ".cache").iterdir())  # the finished cases are kept


def test_grading_reports_progress_per_reference_case_cached_ones_done_first(tmp_path):
    """evaluate_many calls progress(done, total, case) as each reference case's group ends:
    3 cases x 2 teams = 6; a second call with a third team and the same cache has 6 of 9
    done before it starts, and its 3 groups (one case each) bring it to 9."""
    gt, subs = tmp_path / "gt", tmp_path / "subs"
    mask = square()
    other = mask.copy()
    other[1, 1] = 0  # team three's files differ (the cache is keyed by file contents)
    for case in ("a", "b", "c"):
        write_png(gt / f"{case}.png", mask)
        for team in ("one", "two"):
            write_png(subs / team / f"{case}.png", mask)
        write_png(subs / "three" / f"{case}.png", other)
    calls: list[tuple[int, int, str]] = []
    options = {"labels": [1], "workers": 2, "cache": tmp_path / "cache"}
    evaluate_many({t: subs / t for t in ("one", "two")}, gt, progress=lambda *a: calls.append(a),
                  **options)
    assert [(done, total) for done, total, _ in calls] == [(2, 6), (4, 6), (6, 6)]
    assert sorted(c[2] for c in calls) == ["a.png", "b.png", "c.png"]
    calls.clear()
    evaluate_many({t: subs / t for t in ("one", "two", "three")}, gt,
                  progress=lambda *a: calls.append(a), **options)
    assert [(done, total) for done, total, _ in calls] == [(7, 9), (8, 9), (9, 9)]


def test_grade_command_progress_bar_on_a_terminal_only():
    """with_progress: a terminal gets a bar fed by the callback; quiet or a pipe gets None."""
    import io

    from rich.console import Console

    from segeval.commands.evaluate import with_progress

    screen = io.StringIO()
    terminal = Console(file=screen, force_terminal=True, width=80)

    def run(progress):
        assert progress is not None
        progress(1, 2, "case_007.nii.gz")
        return "graded"

    assert with_progress(terminal, False, run) == "graded"
    assert "case_007.nii.gz" in screen.getvalue()
    pipe = Console(file=io.StringIO(), force_terminal=False)
    assert with_progress(pipe, False, lambda progress: progress) is None
    assert with_progress(terminal, True, lambda progress: progress) is None


def test_an_interrupt_in_the_progress_callback_keeps_the_finished_groups_cached(tmp_path):
    """Ctrl-C during the bar update of the 2nd group: groups a and b are final, so a second
    run computes only c (its progress starts at 4 of 6 done)."""
    gt, subs = tmp_path / "gt", tmp_path / "subs"
    mask = square()
    for k, case in enumerate(("a", "b", "c")):
        mask = mask.copy()
        mask[5, k] = 1  # each case's files differ (the cache is keyed by contents)
        for folder in (gt, subs / "one", subs / "two"):
            write_png(folder / f"{case}.png", mask)
    calls: list[tuple[int, int, str]] = []

    def interrupting(*call):
        calls.append(call)
        if len(calls) == 2:
            raise KeyboardInterrupt

    options = {"labels": [1], "workers": 1, "cache": tmp_path / "cache"}
    teams = {t: subs / t for t in ("one", "two")}
    evaluate_many(teams, gt, progress=interrupting, **options)
    assert [call[:2] for call in calls] == [(2, 6), (4, 6)]
    calls.clear()
    reports = evaluate_many(teams, gt, progress=lambda *call: calls.append(call), **options)
    assert calls == [(6, 6, "c.png")]
    assert all(c.status == "ok" for r in reports.values() for c in r.cases)  # type: ignore[union-attr]


def test_distances_of_refuses_shared_beside_its_own_class_distances():
    from segeval.config import EvalConfig
    from segeval.engines import distances

    mask = square()
    maps = distances.CaseMaps(mask, mask, None, None)
    config = EvalConfig.create(boundary_metrics=["hd95"])
    with pytest.raises(ValueError, match="shared"):
        distances.distances_of(maps, config, {}, distances.ClassDistances(maps))
    assert distances.distances_of(maps, config, distances=distances.ClassDistances(maps)) == {
        "1": {"hd95": 0.0}}
