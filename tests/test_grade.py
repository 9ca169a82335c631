"""Grading: a generated set of submissions with hand-computed scores and ranks.

Reference: two 4x4 cases, label 1 in a 2x2 square (c1 top-left, c2 bottom-right).

    team        c1                      c2                     mean Dice (macro_imagewise)
    perfect     exact                   exact                  1
    good        3 of 4 voxels (6/7)     exact                  (6/7 + 1) / 2 = 13/14
    partial     exact                   missing → empty (0)    1/2
    wrongshape  exact                   5x5 → broken → 0       1/2   (ties with partial)
    corrupt     garbage bytes → 0       3 of 4 (6/7)           3/7
    hostile     a zip with ../evil.png                          invalid
    dup         dup/ and dup.zip                                invalid (both)
"""

from __future__ import annotations

import json
import tarfile
import zipfile
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

import segeval
from segeval.commands.app import app
from segeval.verdicts.leaderboard import competition_ranks, grade
from tests.conftest import write_png

C1 = np.zeros((4, 4), np.uint8)
C1[:2, :2] = 1
C2 = np.zeros((4, 4), np.uint8)
C2[2:, 2:] = 1
C1_PARTIAL = C1.copy()
C1_PARTIAL[0, 0] = 0
C2_PARTIAL = C2.copy()
C2_PARTIAL[3, 3] = 0


def make_submissions(root: Path) -> tuple[Path, Path]:
    gt, subs = root / "gt", root / "subs"
    write_png(gt / "c1.png", C1)
    write_png(gt / "c2.png", C2)
    write_png(subs / "perfect" / "c1.png", C1)
    write_png(subs / "perfect" / "c2.png", C2)
    write_png(subs / "good" / "c1.png", C1_PARTIAL)
    write_png(subs / "good" / "c2.png", C2)
    write_png(subs / "partial" / "c1.png", C1)
    write_png(subs / "wrongshape" / "c1.png", C1)
    write_png(subs / "wrongshape" / "c2.png", np.zeros((5, 5), np.uint8))
    (subs / "corrupt").mkdir()
    (subs / "corrupt" / "c1.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 10)
    write_png(subs / "corrupt" / "c2.png", C2_PARTIAL)
    with zipfile.ZipFile(subs / "hostile.zip", "w") as archive:
        archive.writestr("../evil.png", (gt / "c1.png").read_bytes())
        archive.writestr("c2.png", (gt / "c2.png").read_bytes())
    write_png(subs / "dup" / "c1.png", C1)
    with zipfile.ZipFile(subs / "dup.zip", "w") as archive:
        archive.writestr("c1.png", (gt / "c1.png").read_bytes())
    with tarfile.open(subs / "tarred.tar.gz", "w:gz") as archive:  # one top folder, stripped
        archive.add(subs / "good" / "c1.png", arcname="tarred/c1.png")
        archive.add(subs / "good" / "c2.png", arcname="tarred/c2.png")
    (subs / "notes.txt").write_text("not a submission")
    return subs, gt


def snapshot(folder: Path) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.rglob("*")}


def test_ranks_scores_and_invalid_submissions(tmp_path):
    subs, gt = make_submissions(tmp_path)
    before = snapshot(tmp_path)
    board = grade(subs, gt, tmp_path / "out", workers=1)
    rows = {row["team"]: row for row in board.rows()}
    assert rows["perfect"]["score"] == pytest.approx(1.0)
    assert rows["good"]["score"] == pytest.approx(13 / 14)
    assert rows["partial"]["score"] == pytest.approx(0.5)
    assert rows["wrongshape"]["score"] == pytest.approx(0.5)
    assert rows["corrupt"]["score"] == pytest.approx(3 / 7)
    assert rows["tarred"]["score"] == pytest.approx(13 / 14)  # same files as "good"
    ranks = {team: row["rank"] for team, row in rows.items()}
    assert ranks == {"perfect": 1, "good": 2, "tarred": 2, "partial": 4, "wrongshape": 4,
                     "corrupt": 6, "hostile": None, "dup": None}
    assert [row["team"] for row in board.rows()][:6] == [
        "perfect", "good", "tarred", "partial", "wrongshape", "corrupt"]
    assert (rows["partial"]["n_missing"], rows["partial"]["n_failed"]) == (1, 0)
    assert rows["wrongshape"]["n_failed"] == 1 and rows["corrupt"]["n_failed"] == 1
    assert rows["hostile"]["status"] == "invalid" and ".." in rows["hostile"]["reason"]
    assert rows["dup"]["status"] == "invalid" and "several" in rows["dup"]["reason"]
    assert board.ignored == ["notes.txt"]
    # nothing written outside --out, and no member escaped
    after = snapshot(tmp_path)
    assert {p for p in after - before if not p.startswith("out")} == set()
    assert not list(tmp_path.rglob("evil.png"))
    # outputs
    data = json.loads((tmp_path / "out" / "leaderboard.json").read_text())
    assert data["teams"][0]["team"] == "perfect"
    assert (tmp_path / "out" / "leaderboard.csv").read_text().splitlines()[1].startswith(
        "1,perfect,1.0")
    team_report = json.loads((tmp_path / "out" / "good" / "report.json").read_text())
    assert team_report["per_class"]["1"]["mean"]["dice"] == pytest.approx(13 / 14)
    assert team_report["config"]["missing"] == "empty"


def test_resume_evaluates_only_the_new_submission(tmp_path):
    subs, gt = make_submissions(tmp_path)
    first = grade(subs, gt, tmp_path / "out", workers=1)
    late_c1, late_c2 = C1.copy(), C2.copy()
    late_c1[1, 1] = 0  # bytes no other team sent: 3 of 4 voxels each
    late_c2[2, 2] = 0
    write_png(subs / "late" / "c1.png", late_c1)
    write_png(subs / "late" / "c2.png", late_c2)
    second = grade(subs, gt, tmp_path / "out", workers=1)
    hits = {t.team: t.report.run["cache_hits"] for t in second.teams if t.report is not None}
    assert all(hits[team] == 2 for team in ("perfect", "good", "tarred", "partial",
                                            "wrongshape", "corrupt"))
    assert hits["late"] == 0  # both of its files are new bytes
    old = {row["team"]: row["score"] for row in first.rows()}
    new = {row["team"]: row["score"] for row in second.rows()}
    assert {team: new[team] for team in old} == old
    assert new["late"] == pytest.approx(6 / 7)


def test_bootstrap_is_seeded_and_brackets_the_estimate(tmp_path):
    subs, gt = make_submissions(tmp_path)
    one = grade(subs, gt, tmp_path / "a", bootstrap=300, seed=5, workers=1).rows()
    two = grade(subs, gt, tmp_path / "b", bootstrap=300, seed=5, workers=1).rows()
    assert one == [{**row, "source": row["source"]} for row in two]
    rows = {row["team"]: row for row in one}
    assert rows["perfect"]["rank_stability"] == 1.0  # never beaten, ties keep rank 1
    assert rows["perfect"]["ci_low"] == rows["perfect"]["ci_high"] == 1.0
    for team in ("good", "partial", "corrupt"):
        assert rows[team]["ci_low"] <= rows[team]["score"] <= rows[team]["ci_high"]
    assert 0.0 < rows["good"]["rank_stability"] < 1.0  # c2-only resamples tie it with first


def test_competition_ranking_ties_and_nan():
    assert competition_ranks([0.9, 0.5, 0.9, float("nan"), 0.1]) == [1, 3, 1, 5, 4]


def test_cli_exit_codes(tmp_path):
    subs, gt = make_submissions(tmp_path)
    runner = CliRunner(env={"NO_COLOR": "1", "COLUMNS": "120"})
    result = runner.invoke(app, ["grade", str(subs), str(gt), "--out", str(tmp_path / "o"),
                                 "--workers", "1"])
    assert result.exit_code == 0, result.stderr
    assert "perfect" in result.stdout and "invalid submission" in result.stderr
    result = runner.invoke(app, ["grade", str(subs), str(gt), "--out", str(tmp_path / "o"),
                                 "--workers", "1", "--strict", "-q"])
    assert result.exit_code == 3
    result = runner.invoke(app, ["grade", str(subs), str(gt), "--out", str(tmp_path / "o"),
                                 "--rank-by", "dice:nowhere"])
    assert result.exit_code == 2 and "rank-by" in result.stderr


@pytest.mark.parametrize("reduction", ["macro", "micro", "macro_imagewise"])
def test_bootstrap_uses_the_reports_own_reductions(reduction):
    """An identity resample and a resample that repeats one case give exactly the report's
    summary for those cases: grading and the report share one definition."""
    from segeval.verdicts.leaderboard import resampled_scores
    from tests.test_api import PRED_A, PRED_B, REF_A, REF_B

    report = segeval.evaluate({"a": PRED_A, "b": PRED_B}, {"a": REF_A, "b": REF_B})
    only_b = segeval.evaluate({"b": PRED_B}, {"b": REF_B})
    samples = np.array([[0, 1], [1, 1]])
    for metric in ("dice", "iou", "precision"):
        values = resampled_scores(report, metric, reduction, samples)
        assert values[0] == pytest.approx(report.to_dict()["summary"][reduction][metric])
        assert values[1] == pytest.approx(only_b.to_dict()["summary"][reduction][metric])
