"""Lesion-wise metrics through the whole pipeline: CLI, presets, --lesions CSV, bars, compare,
grade, schema, cache.

The files are hand-built NIfTI volumes, shape (16, 16, 4), spacing (1, 1, 2) mm: one voxel is
2 mm³.  Case ``a``, label 1 (numbers derived by hand below):

    R1 [1:4, 1:4, 0:2]   18 voxels   P1 = R1 exactly                  IoU 1
    R2 [8:12, 8:12, 0:2] 32 voxels   P2 = [8:12, 8:10, 0:2], 16 voxels IoU 16/32 = 0.5 exactly
    R3 [1:3, 12:14, 2:3]  4 voxels   missed
                                     P3 [13:15, 1:3, 3:4], 4 voxels, a false positive

lesion TP 2 (R1, R2), FN 1 (R3), FP 1 (P3): lesion F1 = 2·2 / (2·2 + 1 + 1) = 2/3;
lesion Dice = (1 + 2·16/48 + 0) / (3 + 1) = (5/3) / 4 = 5/12;
PQ (IoU > 0.5): TP 1, FP 2, FN 2: RQ = 2/6 = 1/3, SQ = 1, PQ = 1 / (1 + 2) = 1/3;
panoptica (IoU >= 0.5): TP 2, FP 1, FN 1: RQ = 4/6, SQ = (1 + 0.5)/2 = 0.75, PQ = 1.5/3 = 0.5;
FP volume = FN volume = 4 voxels · 2 mm³ = 0.008 ml.
Label 2 is absent from case ``a``; case ``b`` holds one label-2 lesion predicted exactly and
no label 1 (so label 1 is "both empty" there).
"""

from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from segeval.commands.app import app

runner = CliRunner(env={"NO_COLOR": "1", "COLUMNS": "160"})
AFFINE = np.diag([1.0, 1.0, 2.0, 1.0])
SHAPE = (16, 16, 4)


def case_a() -> tuple[np.ndarray, np.ndarray]:
    reference = np.zeros(SHAPE, np.uint8)
    prediction = np.zeros(SHAPE, np.uint8)
    reference[1:4, 1:4, 0:2] = 1
    reference[8:12, 8:12, 0:2] = 1
    reference[1:3, 12:14, 2:3] = 1
    prediction[1:4, 1:4, 0:2] = 1
    prediction[8:12, 8:10, 0:2] = 1
    prediction[13:15, 1:3, 3:4] = 1
    return prediction, reference


def case_b() -> tuple[np.ndarray, np.ndarray]:
    reference = np.zeros(SHAPE, np.uint8)
    reference[5:8, 5:8, 1:3] = 2
    return reference.copy(), reference


def write_folders(root: Path, cases: dict[str, tuple[np.ndarray, np.ndarray]]
                  ) -> tuple[Path, Path]:
    import nibabel as nib

    pred, gt = root / "pred", root / "gt"
    pred.mkdir(parents=True)
    gt.mkdir(parents=True)
    for name, (p, r) in cases.items():
        nib.save(nib.Nifti1Image(p, AFFINE), pred / f"{name}.nii.gz")
        nib.save(nib.Nifti1Image(r, AFFINE), gt / f"{name}.nii.gz")
    return pred, gt


@pytest.fixture
def folders(tmp_path: Path) -> tuple[Path, Path]:
    return write_folders(tmp_path, {"a": case_a(), "b": case_b()})


def evaluate_cli(folders, tmp_path, *extra: str, name: str = "r.json") -> dict:
    pred, gt = folders
    out = tmp_path / name
    result = runner.invoke(app, ["evaluate", str(pred), str(gt), "--labels", "1,2",
                                 "--json", str(out), "-q", *extra])
    assert result.exit_code == 0, result.output
    return json.loads(out.read_text())


def test_cli_writes_every_lesion_metric_per_case_and_class(folders, tmp_path, validate):
    data = validate(evaluate_cli(folders, tmp_path, "--metrics", "lesion_dice,lesion_f1,pq",
                                 name="small.json"))
    a = data["cases"][0]["metrics"]["1"]
    assert a["lesion_f1"] == pytest.approx(2 / 3)
    assert a["lesion_dice"] == pytest.approx(5 / 12)
    assert a["pq"] == pytest.approx(1 / 3)
    # the "done when": asked for three, the record holds every table metric (one
    # overlap table gives them all), so the pooled values are reproducible from the cases
    assert {k: a[k] for k in ("lesion_tp", "lesion_fp", "lesion_fn", "pq_tp", "pq_fp",
                              "pq_fn", "n_ref_lesions", "n_pred_lesions")} == {
        "lesion_tp": 2, "lesion_fp": 1, "lesion_fn": 1, "pq_tp": 1, "pq_fp": 2, "pq_fn": 2,
        "n_ref_lesions": 3, "n_pred_lesions": 3}
    assert a["rq"] == pytest.approx(1 / 3) and a["fp_volume_ml"] == pytest.approx(0.008)
    for key in ("1", "2"):
        tp, fp, fn = (sum(case["metrics"][key][m] for case in data["cases"])
                      for m in ("lesion_tp", "lesion_fp", "lesion_fn"))
        assert data["per_class"][key]["pooled"]["lesion_f1"] == pytest.approx(
            2 * tp / (2 * tp + fp + fn))
    assert set(data["value_reductions"]) == {"lesion_dice", "lesion_f1", "pq"}  # reduced
    data = validate(evaluate_cli(folders, tmp_path, "--metrics", "lesions"))
    a = data["cases"][0]["metrics"]["1"]
    assert {k: a[k] for k in ("n_ref_lesions", "n_pred_lesions", "lesion_tp", "lesion_fp",
                              "lesion_fn", "pq_tp", "pq_fp", "pq_fn", "lesion_count_diff")} == {
        "n_ref_lesions": 3, "n_pred_lesions": 3, "lesion_tp": 2, "lesion_fp": 1,
        "lesion_fn": 1, "pq_tp": 1, "pq_fp": 2, "pq_fn": 2, "lesion_count_diff": 0}
    assert a["rq"] == pytest.approx(1 / 3) and a["sq"] == 1.0 and a["sq_dice"] == 1.0
    assert a["fp_volume_ml"] == pytest.approx(0.008)
    assert a["fn_volume_ml"] == pytest.approx(0.008)
    # lesion HD95 (default: voxel boundaries, the image diagonal as penalty): R1 exact -> 0;
    # R2 vs its left half: the half's far face is 2 voxels from R2's far face -> HD95 2 mm;
    # R3 missed and P3 false positive -> the diagonal each, over 3 + 1 lesions
    diagonal = math.sqrt(16 ** 2 + 16 ** 2 + 8 ** 2)
    assert a["lesion_hd95"] == pytest.approx((0 + 2 + 2 * diagonal) / 4)
    assert isinstance(a["lesion_tp"], int)
    # label 1 in case b: no lesion on either side -> counts 0, ratios undefined (--empty nan)
    b1 = data["cases"][1]["metrics"]["1"]
    assert b1["n_ref_lesions"] == 0 and b1["lesion_f1"] is None and b1["fp_volume_ml"] == 0
    assert data["cases"][1]["metrics"]["2"]["lesion_f1"] == 1.0
    # counts add over cases: pooled F1 and RQ from them; lesion Dice has no pooled value
    pooled = data["per_class"]["1"]["pooled"]
    assert pooled["lesion_tp"] == 2 and pooled["lesion_fp"] == 1 and pooled["lesion_fn"] == 1
    assert pooled["lesion_f1"] == pytest.approx(2 / 3) and pooled["lesion_dice"] is None
    assert data["per_class"]["1"]["mean"]["lesion_f1"] == pytest.approx(2 / 3)  # b undefined
    assert data["summary"]["macro"]["lesion_f1"] == pytest.approx((2 / 3 + 1) / 2)
    assert data["summary"]["micro"]["lesion_tp"] == 3  # 2 (class 1) + 1 (class 2, case b)
    assert data["summary"]["micro"]["pq"] is None
    assert data["value_reductions"]["lesion_f1"] == [
        "mean", "std", "median", "macro_imagewise", "pooled", "micro", "macro"]
    assert data["units"]["fp_volume_ml"] == "ml" and data["units"]["lesion_hd95"] == "mm"


def test_presets_through_the_cli(folders, tmp_path, validate):
    data = validate(evaluate_cli(folders, tmp_path, "--metrics", "pq,rq,sq,sq_dice,lesion_f1",
                                 "--lesion-preset", "panoptica"))
    a = data["cases"][0]["metrics"]["1"]
    assert a["rq"] == pytest.approx(2 / 3) and a["sq"] == pytest.approx(0.75)
    assert a["pq"] == pytest.approx(0.5) and a["sq_dice"] == pytest.approx((1 + 2 / 3) / 2)
    assert data["config"]["lesion_preset"] == "panoptica"
    assert data["config"]["lesion_match_inclusive"] is True
    # isles22: both-empty lesion F1 is 1 (case b, label 1): mean (2/3 + 1) / 2
    data = evaluate_cli(folders, tmp_path, "--metrics", "lesion_f1", "--lesion-preset",
                        "isles22", name="isles.json")
    assert data["cases"][1]["metrics"]["1"]["lesion_f1"] == 1.0
    assert data["per_class"]["1"]["mean"]["lesion_f1"] == pytest.approx(5 / 6)
    # brats2023-met: 1 dilation (18-neighbourhood) does not merge the lesions of case a (the
    # closest pair, R1 and R3, are 8 columns apart); reference lesions <= 2 mm³ dropped: none
    # (R3 is 8 mm³).  An explicit option wins over the preset's.
    data = evaluate_cli(folders, tmp_path, "--metrics", "lesion_f1,n_ref_lesions",
                        "--lesion-preset", "brats2023-met", "--lesion-min-volume", "10",
                        name="brats.json")
    a = data["cases"][0]["metrics"]["1"]
    # R3 (8 mm³) now dropped: TP 2, FN 0, FP 1 -> F1 4/5
    assert a["n_ref_lesions"] == 2 and a["lesion_f1"] == pytest.approx(4 / 5)
    assert data["config"]["lesion_dilation"] == 1 and data["config"]["lesion_min_volume"] == 10
    assert data["config"]["lesion_hd95_penalty"] == 374.0


def test_connectivity_option_changes_lesion_count(tmp_path):
    reference = np.zeros(SHAPE, np.uint8)
    reference[0:2, 0:2, 0] = 1
    reference[2:4, 2:4, 0] = 1  # touches the first block along an edge only
    folders = write_folders(tmp_path, {"d": (reference.copy(), reference)})
    full = evaluate_cli(folders, tmp_path, "--labels", "1", "--metrics", "n_ref_lesions")
    face = evaluate_cli(folders, tmp_path, "--labels", "1", "--metrics", "n_ref_lesions",
                        "--connectivity", "face", name="face.json")
    assert full["cases"][0]["metrics"]["1"]["n_ref_lesions"] == 1
    assert face["cases"][0]["metrics"]["1"]["n_ref_lesions"] == 2
    assert face["config"]["connectivity"] == "face"


def test_lesions_csv_lists_every_lesion(folders, tmp_path):
    pred, gt = folders
    out = tmp_path / "lesions.csv"
    result = runner.invoke(app, ["evaluate", str(pred), str(gt), "--metrics", "lesion_f1",
                                 "--lesions", str(out), "-q"])
    assert result.exit_code == 0, result.output
    rows = list(csv.DictReader(io.StringIO(out.read_text())))
    table = {(r["case"], r["class"], r["side"], r["lesion"]): r for r in rows}
    assert len(rows) == 3 + 3 + 2  # case a: 3 + 3 lesions; case b: 1 + 1
    r2 = table[("a", "1", "reference", "2")]  # raster order: R1 (x=1), R3 (x=1, later y)...
    # ids in raster order of the first voxel: R1 starts at (1,1,0), R3 at (1,12,2), R2 at (8,8,0)
    assert r2["voxels"] == "4" and r2["status"] == "fn" and r2["volume_mm3"] == "8.0"
    r3 = table[("a", "1", "reference", "3")]
    assert r3["voxels"] == "32" and r3["touching"] == "2" and r3["status"] == "tp"
    assert float(r3["dice"]) == pytest.approx(2 / 3) and r3["match"] == ""  # IoU 0.5: no match
    p1 = table[("a", "1", "prediction", "1")]
    assert p1["match"] == "1" and float(p1["iou"]) == 1.0
    assert table[("a", "1", "prediction", "3")]["status"] == "fp"


def test_usage_errors(folders, tmp_path):
    pred, gt = folders
    for args, says in ((["--lesions", "x.csv"], "no lesion metric"),
                       (["--connectivity", "face"], "no lesion metric"),
                       (["--metrics", "lesion_f1", "--lesion-preset", "brats"], "not known"),
                       (["--metrics", "lesion_f1", "--connectivity", "6"], "face, 18, full"),
                       (["--metrics", "lesion_f2"], "not known")):
        result = runner.invoke(app, ["evaluate", str(pred), str(gt), *args])
        assert result.exit_code == 2, (args, result.output)
        assert says in result.output, (args, result.output)


def test_bars_follow_direction(folders, tmp_path):
    pred, gt = folders
    base = ["evaluate", str(pred), str(gt), "--labels", "1,2", "--metrics",
            "lesion_f1,fp_volume_ml", "-q"]
    # lesion F1 macro_imagewise (default for a value metric): (2/3 + 1) / 2 = 0.8333
    assert runner.invoke(app, [*base, "--fail-under", "lesion_f1=0.83"]).exit_code == 0
    assert runner.invoke(app, [*base, "--fail-under", "lesion_f1=0.84"]).exit_code == 1
    # pooled per class 1: 2/3
    assert runner.invoke(app, [*base, "--fail-under", "lesion_f1:1:pooled=0.66"]).exit_code == 0
    assert runner.invoke(app, [*base, "--fail-under", "lesion_f1:1:pooled=0.67"]).exit_code == 1
    # fp volume, lower is better: class 1 mean over cases (0.008 + 0) / 2 = 0.004 ml
    assert runner.invoke(app, [*base, "--fail-under", "fp_volume_ml:1<=0.004"]).exit_code == 0
    assert runner.invoke(app, [*base, "--fail-under", "fp_volume_ml:1<=0.003"]).exit_code == 1
    wrong = runner.invoke(app, [*base, "--fail-under", "fp_volume_ml=0.5"])
    assert wrong.exit_code == 2 and "upper bound" in wrong.output


def test_compare_a_rise_of_fp_volume_is_a_regression(tmp_path):
    old_pred, old_gt = write_folders(tmp_path / "old", {"a": case_a()})
    prediction, reference = case_a()
    prediction[13:15, 5:7, 3:4] = 1  # a second false positive: 4 more voxels, +0.008 ml
    new_pred, new_gt = write_folders(tmp_path / "new", {"a": (prediction, reference)})
    reports = []
    for pred, gt, name in ((old_pred, old_gt, "old"), (new_pred, new_gt, "new")):
        out = tmp_path / f"{name}.json"
        result = runner.invoke(app, ["evaluate", str(pred), str(gt), "--metrics",
                                     "fp_volume_ml,lesion_f1", "--json", str(out), "-q"])
        assert result.exit_code == 0, result.output
        reports.append(str(out))
    rose = runner.invoke(app, ["compare", *reports, "--metric", "fp_volume_ml",
                               "--max-drop", "0.005"])
    assert rose.exit_code == 1, rose.output
    assert "rose" in rose.output
    assert runner.invoke(app, ["compare", *reports, "--metric", "fp_volume_ml",
                               "--max-drop", "0.01"]).exit_code == 0
    # lesion F1 fell from 2/3 to 4/7 (FP 2): a drop; its pooled value exists (macro)
    fell = runner.invoke(app, ["compare", *reports, "--metric", "lesion_f1", "--reduction",
                               "macro", "--max-drop", "0.05"])
    assert fell.exit_code == 1, fell.output


def test_grade_ranks_by_pooled_lesion_f1(tmp_path):
    import nibabel as nib

    from segeval.verdicts.leaderboard import grade

    prediction, reference = case_a()
    perfect = reference.copy()
    worse = prediction.copy()
    worse[13:15, 5:7, 3:4] = 1  # one more false positive: F1 4/7
    (tmp_path / "gt").mkdir()
    nib.save(nib.Nifti1Image(reference, AFFINE), tmp_path / "gt" / "a.nii.gz")
    for team, mask in (("one", prediction), ("two", perfect), ("three", worse)):
        (tmp_path / "subs" / team).mkdir(parents=True)
        nib.save(nib.Nifti1Image(mask, AFFINE), tmp_path / "subs" / team / "a.nii.gz")
    board = grade(tmp_path / "subs", tmp_path / "gt", tmp_path / "out",
                  rank_by="lesion_f1:macro", bootstrap=20)
    rows = {row["team"]: (row["rank"], row["score"]) for row in board.rows()}
    assert rows == {"two": (1, 1.0), "one": (2, pytest.approx(2 / 3)),
                    "three": (3, pytest.approx(4 / 7))}
    board = grade(tmp_path / "subs", tmp_path / "gt", tmp_path / "out2",
                  rank_by="fp_volume_ml")
    assert [row["team"] for row in board.rows()] == ["two", "one", "three"]  # ascending


def test_cache_serves_lesions_and_keys_on_lesion_options(folders, tmp_path):
    import segeval

    pred, gt = folders
    first = segeval.evaluate(pred, gt, cache=tmp_path / "cache", lesion_metrics=["lesion_f1"],
                             labels=[1, 2], workers=1)
    again = segeval.evaluate(pred, gt, cache=tmp_path / "cache", lesion_metrics=["lesion_f1"],
                             labels=[1, 2], workers=1)
    assert again.run["cache_hits"] == 2
    assert again.to_dict()["cases"] == first.to_dict()["cases"]
    assert again.cases[0].lesion_rows == first.cases[0].lesion_rows
    panoptica = segeval.evaluate(pred, gt, cache=tmp_path / "cache", labels=[1, 2], workers=1,
                                 lesion_metrics=["pq"], lesion_preset="panoptica")
    assert panoptica.run["cache_hits"] == 0
    assert panoptica.to_dict()["cases"][0]["metrics"]["1"]["pq"] == pytest.approx(0.5)


def test_html_draws_lesion_distributions(folders, tmp_path):
    pytest.importorskip("matplotlib")
    pred, gt = folders
    out = tmp_path / "r.html"
    result = runner.invoke(app, ["evaluate", str(pred), str(gt), "--metrics", "lesion_f1",
                                 "--html", str(out), "-q"])
    assert result.exit_code == 0, result.output
    assert "lesion_f1" in out.read_text()
