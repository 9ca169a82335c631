"""Boundary (value) metrics through the shells: tables, CSV, compare, grade, schema, HTML.

The values are hand-computed: a square shifted by k voxels along one axis has HD = k·spacing
(every boundary voxel of the moved edge is k voxels from the nearest reference edge).
"""

from __future__ import annotations

import csv
import io
import math

import numpy as np
import pytest
from rich.console import Console

from segeval.api import evaluate


def square_pair(shift1: int, shift2: int | None) -> tuple[np.ndarray, np.ndarray]:
    """Class 1: a 10x10 square shifted by ``shift1`` columns; class 2: a 6x6 square shifted
    by ``shift2`` columns (None: class 2 absent from both masks)."""
    reference = np.zeros((40, 40), np.uint8)
    reference[2:12, 2:12] = 1
    prediction = np.zeros_like(reference)
    prediction[2:12, 2 + shift1:12 + shift1] = 1
    if shift2 is not None:
        reference[20:26, 20:26] = 2
        prediction[20:26, 20 + shift2:26 + shift2] = 2
    return prediction, reference


def two_case_report(shifts=((1, 4), (3, None)), **options):
    """Case 0: class 1 HD 1, class 2 HD 4; case 1: class 1 HD 3, class 2 undefined."""
    pairs = [square_pair(*s) for s in shifts]
    return evaluate([p for p, _ in pairs], [r for _, r in pairs],
                    boundary_metrics=options.pop("boundary_metrics", ["hd", "nsd"]),
                    labels=[1, 2], spacing=(1.0, 1.0), **options)


def test_value_table_shows_mean_std_median_and_macro_over_classes():
    from segeval.outputs.tables import render

    console = Console(record=True, width=200, file=io.StringIO())
    render(two_case_report(), console, ("dice",), per_class=False, per_case=False)
    text = console.export_text()
    assert "hd (mm)" in text and "nsd (fraction)" in text
    # class 1: HD 1 and 3 -> mean 2, std 1 (ddof 0), median 2; both cases used
    assert "2.0000 ± 1.0000" in text and "median 2.0000" in text and "2/2" in text
    # class 2: only case 0 defined -> 4 ± 0, median 4, used 1/2
    assert "4.0000 ± 0.0000" in text and "median 4.0000" in text and "1/2" in text
    hd_line = next(line for line in text.splitlines() if "hd (mm)" in line)
    # columns: class 1, class 2, macro_imagewise = (2 + 4) / 2, macro and micro do not exist
    assert [c.strip() for c in hd_line.split("│")[-4:-1]] == ["3.0000", "—", "—"]


def test_overlap_only_run_has_no_value_table():
    from segeval.outputs.tables import render

    pairs = [square_pair(1, 4)]
    console = Console(record=True, width=200, file=io.StringIO())
    render(evaluate(pairs[0][0], pairs[0][1]), console, ("dice",), per_class=True,
           per_case=False)
    assert "(mm)" not in console.export_text()


def test_csv_has_the_requested_value_columns():
    from segeval.outputs.tables import to_csv

    rows = list(csv.DictReader(io.StringIO(to_csv(two_case_report()))))
    by = {(r["case"], r["class"]): r for r in rows}
    assert float(by["case_000", "1"]["hd"]) == 1.0
    assert float(by["case_000", "2"]["hd"]) == 4.0
    assert float(by["case_001", "1"]["hd"]) == 3.0
    assert by["case_001", "2"]["hd"] == ""  # absent from both masks: undefined
    assert "masd" not in rows[0]  # only what was requested
    assert 0.0 <= float(by["case_000", "1"]["nsd"]) <= 1.0
    assert math.isclose(float(by["case_000", "1"]["dice"]), 2 * 90 / 200)
    overlap_only = to_csv(evaluate(*square_pair(1, 4)))
    assert overlap_only.splitlines()[0].endswith("specificity")


# ---------------------------------------------------------------- compare

def test_compare_flags_a_rise_of_a_distance_beyond_max_drop():
    from segeval.verdicts.regression import compare_reports

    baseline = two_case_report().to_dict()  # hd: class 1 mean 2, class 2 mean 4; macro 3
    worse = two_case_report(((1, 4), (5, None))).to_dict()  # class 1: (1 + 5) / 2 = 3
    result = compare_reports(baseline, worse, metric="hd", max_drop=0.5)
    assert result.reduction == "macro_imagewise" and result.statistic == "mean"
    rows = {row.key: row for row in result.rows}
    assert rows["1"].delta == pytest.approx(1.0) and rows["1"].regressed
    assert rows["2"].delta == 0.0 and not rows["2"].regressed
    assert rows["macro_imagewise"].delta == pytest.approx(0.5)  # (3 + 4)/2 - 3
    assert not rows["macro_imagewise"].regressed  # exactly max_drop is allowed
    assert "macro" not in rows and "micro" not in rows
    assert "do not exist" in result.notes[0] and "rose" in result.verdict
    assert result.allowed == "max rise 0.5 mm"
    # the same change the other way is an improvement, not a regression
    assert not compare_reports(worse, baseline, metric="hd", max_drop=0.5).regressed
    # nsd is higher-is-better: it fell for class 1 (shift 5 leaves fewer voxels within 1 mm)
    nsd = compare_reports(baseline, worse, metric="nsd", max_drop=0.01)
    assert {r.key for r in nsd.regressions} >= {"1"} and "dropped" in nsd.verdict


def test_compare_explains_missing_values_and_reductions():
    from segeval.errors import UsageError
    from segeval.verdicts.regression import compare_reports

    baseline = two_case_report().to_dict()
    with pytest.raises(UsageError, match="does not exist for hd"):
        compare_reports(baseline, baseline, metric="hd", reduction="macro")
    with pytest.raises(UsageError, match="has no hd95 values"):
        compare_reports(baseline, baseline, metric="hd95")
    with pytest.raises(UsageError, match="not one of"):
        compare_reports(baseline, baseline, metric="hdx")


def test_compare_cli_exit_codes_for_hd(tmp_path):
    from typer.testing import CliRunner

    from segeval.commands.app import app

    old, new = tmp_path / "old.json", tmp_path / "new.json"
    two_case_report().write_json(old)
    two_case_report(((1, 4), (5, None))).write_json(new)
    runner = CliRunner()
    regressed = runner.invoke(app, ["compare", str(old), str(new), "--metric", "hd",
                                    "--max-drop", "0.5"])
    assert regressed.exit_code == 1, regressed.output
    assert "max rise 0.5 mm" in regressed.output and "do not exist" in regressed.output
    assert runner.invoke(app, ["compare", str(old), str(new), "--metric", "hd",
                               "--max-drop", "1"]).exit_code == 0
    bad = runner.invoke(app, ["compare", str(old), str(new), "--metric", "hd",
                              "--reduction", "micro"])
    assert bad.exit_code == 2 and "does not exist" in bad.output


# ---------------------------------------------------------------- grade

def _dot_pair(offsets: list[int]) -> tuple[np.ndarray, np.ndarray]:
    """One voxel per class on each side, class c's predicted voxel ``offsets[c-1]`` columns
    away: each side's boundary is that one voxel, so every directed distance, and hence HD95,
    is the offset (in mm at 1 mm spacing)."""
    reference = np.zeros((12, 40, 3), np.uint8)
    prediction = np.zeros_like(reference)
    for c, offset in enumerate(offsets, start=1):
        reference[2 + 4 * c, 5, 1] = c
        prediction[2 + 4 * c, 5 + offset, 1] = c
    return prediction, reference


def test_grade_ranks_hd95_ascending_with_ties_and_value_bootstrap(tmp_path):
    import json

    import nibabel as nib

    from segeval.verdicts.leaderboard import grade

    teams = {  # per case [class 1, class 2] offsets -> hd95 in mm
        "alpha": [[1, 3], [1, 3]],  # class means 1, 3 -> macro 2
        "bravo": [[4, 4], [2, 2]],  # 3, 3 -> 3
        "charlie": [[3, 1], [1, 3]],  # 2, 2 -> 2 (ties with alpha)
        "delta": [[0, 0], [0, 0]],  # perfect -> 0
    }
    affine = np.eye(4)
    for case in range(2):
        (tmp_path / "gt").mkdir(exist_ok=True)
        nib.save(nib.Nifti1Image(_dot_pair([1, 1])[1], affine), tmp_path / "gt" / f"c{case}.nii.gz")
        for team, offsets in teams.items():
            (tmp_path / "subs" / team).mkdir(parents=True, exist_ok=True)
            nib.save(nib.Nifti1Image(_dot_pair(offsets[case])[0], affine),
                     tmp_path / "subs" / team / f"c{case}.nii.gz")
    board = grade(tmp_path / "subs", tmp_path / "gt", tmp_path / "out",
                  rank_by="hd95:macro_imagewise", bootstrap=200, seed=1)
    rows = {row["team"]: row for row in board.rows()}
    assert {t: (rows[t]["rank"], rows[t]["score"]) for t in teams} == {
        "delta": (1, 0.0), "alpha": (2, 2.0), "charlie": (2, 2.0), "bravo": (4, 3.0)}
    assert rows["bravo"]["per_class"] == {"1": 3.0, "2": 3.0}
    # resampling 2 cases: bravo's case macros are 4 and 2, so every resample lies in [2, 4]
    assert 2.0 <= rows["bravo"]["ci_low"] <= rows["bravo"]["ci_high"] <= 4.0
    assert rows["delta"]["ci_low"] == rows["delta"]["ci_high"] == 0.0
    assert rows["delta"]["rank_stability"] == 1.0
    saved = json.loads((tmp_path / "out" / "leaderboard.json").read_text())
    assert saved["rank_by"]["lower_is_better"] is True
    from typer.testing import CliRunner

    from segeval.commands.app import app

    cli = CliRunner().invoke(app, ["grade", str(tmp_path / "subs"), str(tmp_path / "gt"),
                                   "--out", str(tmp_path / "cli"), "--rank-by", "hd95",
                                   "--metrics", "nsd"])
    assert cli.exit_code == 0, cli.output
    assert "lower is better" in cli.output
    ranks = json.loads((tmp_path / "cli" / "leaderboard.json").read_text())["teams"]
    assert [t["team"] for t in ranks] == ["delta", "alpha", "charlie", "bravo"]
    team_report = json.loads((tmp_path / "cli" / "delta" / "report.json").read_text())
    assert team_report["config"]["boundary_metrics"] == ["nsd", "hd95"]


def test_resampled_value_scores_mean_per_class_then_macro():
    from segeval.verdicts.leaderboard import resampled_scores

    # case 0: class 1 HD 1, class 2 HD 4; case 1: class 1 HD 3, class 2 absent (undefined)
    report = two_case_report(boundary_metrics=["hd"])
    samples = np.array([[0, 0], [0, 1], [1, 1]])
    # [0,0]: (1 + 4)/2 = 2.5; [0,1]: class 1 (1+3)/2 = 2, class 2 4 -> 3; [1,1]: only class 1: 3
    assert resampled_scores(report, "hd", "macro_imagewise", samples).tolist() == [2.5, 3.0, 3.0]


def test_rank_by_a_reduction_that_does_not_exist_is_explained():
    from segeval.errors import UsageError
    from segeval.verdicts.leaderboard import parse_rank_by

    assert parse_rank_by("hd95") == ("hd95", "macro_imagewise")
    with pytest.raises(UsageError, match="macro does not exist for hd95"):
        parse_rank_by("hd95:macro")


# ---------------------------------------------------------------- schema, JSON, HTML

def test_report_with_boundary_values_matches_the_schema(validate, schema):
    data = validate(two_case_report(boundary_metrics=["hd", "hd95", "assd", "masd", "nsd"])
                    .to_json())
    assert data["units"] == {"hd": "mm", "hd95": "mm", "assd": "mm", "masd": "mm",
                             "nsd": "fraction"}
    assert "units" in schema["properties"]
    data["cases"][0]["metrics"]["1"]["hd95"] = -1.0  # a negative distance is not valid
    import jsonschema

    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(data, schema)


def test_infinite_empty_distance_is_valid_json(validate):
    reference = np.zeros((10, 10), np.uint8)
    reference[2:5, 2:5] = 1
    report = evaluate(np.zeros_like(reference), reference, boundary_metrics=["hd"],
                      empty_distance="inf")
    data = validate(report.to_json())  # JSON has no infinity: the string "inf"
    assert data["cases"][0]["metrics"]["1"]["hd"] == "inf"
    assert data["summary"]["macro_imagewise"]["hd"] == "inf"


def test_html_draws_the_boundary_distributions(tmp_path):
    pytest.importorskip("matplotlib")
    from segeval.outputs.html import render_html

    page = render_html(two_case_report().to_dict())
    assert "Distributions of per-case hd (mm)" in page
    assert "case_000: hd 4.0000" in page and "case_001: hd 3.0000" in page
    assert "Distributions of per-case nsd (fraction)" in page
