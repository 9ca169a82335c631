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


@pytest.mark.parametrize("metrics", [[], ["hd95", "nsd"]])
def test_every_team_report_equals_evaluating_the_team_alone(tmp_path, metrics):
    subs, gt = make_submissions(tmp_path)
    grade(subs, gt, tmp_path / "out", workers=2, boundary_metrics=metrics)
    options = {"missing": "empty", "invalid": "empty", "labels": [1],
               "boundary_metrics": metrics}
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
    mask = np.zeros((6, 6), np.uint8)
    mask[1:4, 1:4] = 1
    for case in ("a", "b"):
        write_png(gt / f"{case}.png", mask)
        write_png(subs / "fine" / f"{case}.png", mask)
        write_png(subs / "bomb" / f"{case}.png", mask)
    (subs / "bomb" / "a.png").write_bytes((subs / "bomb" / "a.png").read_bytes() + b"BOMB")

    from segeval.run import runner

    real = runner.read_mask

    def read_mask(path, *args, **kwargs):  # workers are forked: they inherit this
        if Path(path).read_bytes().endswith(b"BOMB"):
            os._exit(9)
        return real(path, *args, **kwargs)

    monkeypatch.setattr(runner, "read_mask", read_mask)
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
