"""Worst-case overlays outline missed and false-positive lesions, by the report's lesion rules.

The 3-D case (x, y, z) = 12 x 10 x 8, spacing 1 mm, identity affine, label 1:

    A  reference x 1..3, y 1..3, z 1..3 (27 voxels); predicted in z 2..3 only (18): found
    B  reference x 7..9, y 6..8, z 5..6 (18 voxels), no prediction: missed
    C  predicted x 8..9, y 1..2, z 1..2 (8 voxels), no reference: false positive

Error voxels per slice: along z, z=1 → 9 (A) + 4 (C) = 13, z=2 → 4, z=5, 6 → 9 (B): the plain
rule takes z = 1; with the lesion marks only z = 5, 6 (crossing B) compete → z = 5.  Along x,
x = 1..3 → 3 (A), x = 7 → 6, x = 8, 9 → 6 + 4 = 10 → x = 8 either way.  Along y, y = 1, 2 →
3 + 4 = 7, y = 3 → 3, y = 6, 7, 8 → 6 each: the plain rule takes y = 1, the marks y = 6.
Lesion counts: 2 reference, 1 found, 1 missed; 2 predicted, 1 false positive.
"""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from PIL import Image

import segeval
from segeval.config import LESION_METRIC_NAMES
from segeval.outputs.overlays import (
    MARK_COLOURS,
    OverlayWarning,
    class_masks,
    error_slices,
    layout,
    lesion_marks,
    outline,
    overlay_rgb,
    pixel_scale,
    worst_cases,
    write_overlays,
)
from tests.test_overlays import blend

pytest.importorskip("matplotlib")

SHAPE = (12, 10, 8)
YELLOW = np.round(np.array(MARK_COLOURS["missed"]) * 255).astype(int)
CYAN = np.round(np.array(MARK_COLOURS["false_positive"]) * 255).astype(int)


def lesion_case() -> tuple[np.ndarray, np.ndarray]:
    reference = np.zeros(SHAPE, np.uint8)
    prediction = np.zeros(SHAPE, np.uint8)
    reference[1:4, 1:4, 1:4] = 1  # A
    prediction[1:4, 1:4, 2:4] = 1  # A found, its z = 1 layer missed
    reference[7:10, 6:9, 5:7] = 1  # B missed
    prediction[8:10, 1:3, 1:3] = 1  # C false positive
    return reference, prediction


def write_case(root: Path, reference: np.ndarray, prediction: np.ndarray) -> tuple[Path, Path]:
    for side, array in (("gt", reference), ("pred", prediction)):
        (root / side).mkdir(parents=True, exist_ok=True)
        nib.save(nib.Nifti1Image(array, np.eye(4)), root / side / "vol.nii.gz")
    return root / "pred", root / "gt"


def colour_at(png: np.ndarray, box, row: int, col: int, shape: tuple[int, int]) -> np.ndarray:
    return png[box.pixel(row, col, shape)].astype(int)


def test_marks_are_the_lesions_with_status_fn_and_fp():
    reference, prediction = lesion_case()
    marks = lesion_marks(reference == 1, prediction == 1, (1.0, 1.0, 1.0), {})
    expected_missed = np.zeros(SHAPE, bool)
    expected_missed[7:10, 6:9, 5:7] = True
    expected_fp = np.zeros(SHAPE, bool)
    expected_fp[8:10, 1:3, 1:3] = True
    assert (marks.missed == expected_missed).all()
    assert (marks.false_positive == expected_fp).all()
    assert {k: marks.values[k] for k in ("n_ref_lesions", "lesion_tp", "lesion_fn",
                                         "n_pred_lesions", "lesion_fp")} == \
        {"n_ref_lesions": 2, "lesion_tp": 1, "lesion_fn": 1, "n_pred_lesions": 2,
         "lesion_fp": 1}
    assert marks.values["lesion_f1"] == 2 * 1 / (2 * 1 + 1 + 1)
    # a report that says otherwise is refused, naming the value
    with pytest.raises(ValueError, match="lesion_fn is 0 in the report but 1"):
        lesion_marks(reference == 1, prediction == 1, None, {}, {"lesion_fn": 0})


def test_slices_prefer_a_missed_lesion_then_a_false_positive_one():
    reference, prediction = lesion_case()
    ref, pred = reference == 1, prediction == 1
    marks = lesion_marks(ref, pred, None, {})
    assert error_slices(ref, pred) == (8, 1, 1)  # the plain rule: z = 1, y = 1 (3 + 4)
    assert error_slices(ref, pred, (marks.missed, marks.false_positive)) == (8, 6, 5)
    no_missed = np.zeros(SHAPE, bool)
    # no missed lesion: only slices crossing C compete; x = 8 (tie with 9), y = 1, z = 1
    assert error_slices(ref, pred, (no_missed, marks.false_positive)) == (8, 1, 1)


def test_outline_is_the_region_minus_its_4_neighbour_erosion():
    region = np.zeros((5, 6), bool)
    region[1:4, 1:5] = True
    region[0, 5] = True  # a lone pixel at the image's edge: all outline
    expected = region.copy()
    expected[2, 2:4] = False  # the only pixels with all four neighbours inside
    assert (outline(region) == expected).all()
    rgb = overlay_rgb(region, np.zeros_like(region), marks={"missed": region})
    assert (rgb[1, 1] == YELLOW).all() and (rgb[2, 2] == blend("FN")).all()


@pytest.mark.parametrize("metrics", [list(LESION_METRIC_NAMES), ["lesion_f1"]])
def test_written_pngs_outline_the_missed_and_false_positive_lesions(tmp_path, metrics):
    reference, prediction = lesion_case()
    pred_dir, gt_dir = write_case(tmp_path, reference, prediction)
    report = segeval.evaluate(pred_dir, gt_dir, lesion_metrics=metrics, workers=1).to_dict()
    values = report["cases"][0]["metrics"]["1"]
    if "lesion_fn" in metrics:
        assert (values["lesion_fn"], values["lesion_fp"], values["lesion_tp"]) == (1, 1, 1)
    out = write_overlays(report, tmp_path / "overlays", worst=1)
    (axial_caption, axial), (coronal_caption, _), (sagittal_caption, sagittal) = out["vol"]
    assert "axial: slice 5 of array axis 2" in axial_caption
    assert "coronal: slice 6 of array axis 1" in coronal_caption
    assert "sagittal: slice 8 of array axis 0" in sagittal_caption
    assert axial_caption.endswith("lesions: 2 ref, 1 found, 1 missed · 2 pred, 1 FP")
    scale = pixel_scale(SHAPE, (1.0, 1.0, 1.0))
    # axial z=5: rows = y (row 9 - y), columns = x (column 11 - x); B is 3 x 3 there: its
    # rim yellow, its centre (x=8, y=7) the FN fill
    png = np.asarray(Image.open(axial).convert("RGB"))
    box = layout((10, 12), (1.0, 1.0), scale, lines=4, legend_rows=2)
    assert png.shape[:2] == (box.height, box.width)
    assert (colour_at(png, box, 9 - 6, 11 - 7, (10, 12)) == YELLOW).all()
    assert np.abs(colour_at(png, box, 9 - 7, 11 - 8, (10, 12)) - blend("FN")).max() <= 1
    # sagittal x=8: rows = z (row 7 - z), columns = y with anterior left (column 9 - y)
    png = np.asarray(Image.open(sagittal).convert("RGB"))
    box = layout((8, 10), (1.0, 1.0), scale, lines=4, legend_rows=2)
    assert (colour_at(png, box, 7 - 5, 9 - 7, (8, 10)) == YELLOW).all()  # B: y=7, z=5
    assert (colour_at(png, box, 7 - 1, 9 - 2, (8, 10)) == CYAN).all()  # C: y=2, z=1
    assert np.abs(colour_at(png, box, 7 - 0, 9 - 5, (8, 10)) - blend(None)).max() <= 1


def test_without_lesion_metrics_the_pictures_are_as_before(tmp_path):
    reference, prediction = lesion_case()
    pred_dir, gt_dir = write_case(tmp_path, reference, prediction)
    report = segeval.evaluate(pred_dir, gt_dir, workers=1).to_dict()
    out = write_overlays(report, tmp_path / "overlays", worst=1)
    (caption, axial), _, _ = out["vol"]
    assert "axial: slice 1 of array axis 2" in caption and "lesions" not in caption
    png = np.asarray(Image.open(axial).convert("RGB")).astype(int)
    box = layout((10, 12), (1.0, 1.0), pixel_scale(SHAPE, (1.0, 1.0, 1.0)))
    assert png.shape[:2] == (box.height, box.width)  # three text lines, one legend row
    for colour in (YELLOW, CYAN):
        assert not (np.abs(png - colour).max(axis=2) <= 8).any()
    # the same case with lesion metrics but nothing missed or false: the same picture
    prediction[7:10, 6:9, 5:7] = 1
    prediction[8:10, 1:3, 1:3] = 0
    plain = tmp_path / "plain"
    pred_dir, gt_dir = write_case(plain, reference, prediction)
    drawn = {}
    for name, options in (("without", {}), ("with", {"lesion_metrics": ["lesion_f1"]})):
        report = segeval.evaluate(pred_dir, gt_dir, workers=1, **options).to_dict()
        (_, path), _, _ = write_overlays(report, plain / name, worst=1)["vol"]
        png = np.asarray(Image.open(path).convert("RGB"))
        box = layout((10, 12), (1.0, 1.0), pixel_scale(SHAPE, (1.0, 1.0, 1.0)),
                     lines=4 if options else 3, legend_rows=2 if options else 1)
        drawn[name] = png[box.top:box.top + box.image_height, box.left:box.left + box.image_width]
    assert (drawn["with"] == drawn["without"]).all()


def test_a_lesion_found_through_the_dilation_is_not_missed(tmp_path):
    """brats2023-met: 1 dilation, reference lesions <= 2 mm³ dropped.  R (8 voxels) is not
    overlapped by P, which lies against it (x = 4): found through the dilation, P is no false
    positive.  The 1-voxel reference lesion D is dropped, not missed.  Under the default
    rules R and D are missed and P is a false positive."""
    reference = np.zeros(SHAPE, np.uint8)
    prediction = np.zeros(SHAPE, np.uint8)
    reference[2:4, 2:4, 2:4] = 1  # R
    prediction[4, 2:4, 2:4] = 1  # P, touching R's face
    reference[9, 8, 6] = 1  # D
    pred_dir, gt_dir = write_case(tmp_path, reference, prediction)
    brats = segeval.evaluate(pred_dir, gt_dir, workers=1, lesion_preset="brats2023-met",
                             lesion_metrics=list(LESION_METRIC_NAMES)).to_dict()
    values = brats["cases"][0]["metrics"]["1"]
    assert (values["n_ref_lesions"], values["lesion_tp"], values["lesion_fn"],
            values["lesion_fp"]) == (1, 1, 0, 0)
    marks = lesion_marks(reference == 1, prediction == 1, (1.0, 1.0, 1.0), brats["config"],
                         values)
    assert not marks.missed.any() and not marks.false_positive.any()
    (caption, axial), _, _ = write_overlays(brats, tmp_path / "brats", worst=1)["vol"]
    assert caption.endswith("lesions: 1 ref, 1 found, 0 missed · 1 pred, 0 FP")
    png = np.asarray(Image.open(axial).convert("RGB")).astype(int)
    box = layout((10, 12), (1.0, 1.0), pixel_scale(SHAPE, (1.0, 1.0, 1.0)), lines=4,
                 legend_rows=2)
    image = png[box.top:box.top + box.image_height, box.left:box.left + box.image_width]
    assert not (np.abs(image - YELLOW).max(axis=2) <= 8).any()  # the legend has some
    assert np.abs(colour_at(png, box, 9 - 2, 11 - 2, (10, 12)) - blend("FN")).max() <= 1
    plain = segeval.evaluate(pred_dir, gt_dir, workers=1,
                             lesion_metrics=list(LESION_METRIC_NAMES)).to_dict()
    values = plain["cases"][0]["metrics"]["1"]
    assert (values["lesion_fn"], values["lesion_fp"]) == (2, 1)
    marks = lesion_marks(reference == 1, prediction == 1, None, plain["config"], values)
    assert marks.missed.sum() == 9 and marks.false_positive.sum() == 4


def test_a_report_the_files_no_longer_match_leaves_the_case_out(tmp_path):
    reference, prediction = lesion_case()
    pred_dir, gt_dir = write_case(tmp_path, reference, prediction)
    report = segeval.evaluate(pred_dir, gt_dir, workers=1,
                              lesion_metrics=["lesion_f1"]).to_dict()
    report["cases"][0]["metrics"]["1"]["lesion_f1"] = 1.0
    with pytest.warns(OverlayWarning, match="class 1: lesion_f1 is 1.0000 in the report"):
        assert write_overlays(report, tmp_path / "overlays", worst=1) == {}


def test_worst_cases_by_a_lower_is_better_metric_take_the_highest():
    rows = {"a": (0.5, 0.9, 3.0), "b": (2.0, 0.2, 7.5), "c": (None, None, None),
            "d": (2.0, 0.4, 1.0)}
    report = {"cases": [{"id": name, "metrics": {"k": dict(zip(
        ("fp_volume_ml", "lesion_f1", "hd95"), values, strict=True))}}
        for name, values in rows.items()]}
    assert [c["id"] for c in worst_cases(report, "k", "fp_volume_ml", 2)] == ["b", "d"]
    assert [c["id"] for c in worst_cases(report, "k", "lesion_f1", 3)] == ["b", "d", "a"]
    assert [c["id"] for c in worst_cases(report, "k", "hd95", 1)] == ["b"]


def test_class_masks_are_the_masks_the_lesions_were_measured_on():
    """The overlay's class masks, with an ignore index, give the report's lesion values."""
    reference, prediction = lesion_case()
    reference[9, 9, 7] = 255  # ignored
    prediction[9, 9, 7] = 1  # would be a false positive if evaluated
    report = segeval.evaluate([prediction], [reference], workers=1, ignore_index=255,
                              lesion_metrics=list(LESION_METRIC_NAMES)).to_dict()
    ref, pred, _ = class_masks(prediction, reference, [1], report["config"])
    values = report["cases"][0]["metrics"]["1"]
    marks = lesion_marks(ref, pred, None, report["config"], values)  # checks every value
    assert marks.values["lesion_fp"] == values["lesion_fp"] == 1


def test_cli_worst_by_a_lesion_metric(tmp_path):
    """Two cases: ``lesions`` (dice 0.507, lesion F1 0.5) and ``shifted`` (one lesion, found:
    lesion F1 1; dice 2·90 / (240 + 150) = 0.46).  --worst 1 picks ``shifted`` by dice,
    ``lesions`` with --worst-by lesion_f1."""
    from typer.testing import CliRunner

    from segeval.commands.app import app

    reference, prediction = lesion_case()
    shifted_ref = np.zeros(SHAPE, np.uint8)
    shifted_ref[2:10, 2:8, 2:7] = 1
    shifted_pred = np.zeros(SHAPE, np.uint8)
    shifted_pred[7:12, 2:8, 2:7] = 1
    for side, arrays in (("gt", (reference, shifted_ref)), ("pred", (prediction, shifted_pred))):
        (tmp_path / side).mkdir()
        for name, array in zip(("lesions", "shifted"), arrays, strict=True):
            nib.save(nib.Nifti1Image(array, np.eye(4)), tmp_path / side / f"{name}.nii.gz")
    args = ["evaluate", str(tmp_path / "pred"), str(tmp_path / "gt"), "--worst", "1", "--quiet"]
    for extra, drawn in (([], "shifted"), (["--worst-by", "lesion_f1"], "lesions")):
        out = tmp_path / f"out{len(extra)}"
        result = CliRunner().invoke(app, [*args, "--metrics", "lesion_f1", "--overlays",
                                          str(out), *extra])
        assert result.exit_code == 0, result.output
        assert sorted(p.name for p in out.iterdir()) == \
            [f"{drawn}__1__{view}.png" for view in ("axial", "coronal", "sagittal")]
    bad = CliRunner().invoke(app, [*args, "--overlays", str(tmp_path / "bad"),
                                   "--worst-by", "lesion_f1"])
    assert bad.exit_code == 2 and "--worst-by lesion_f1: not a metric this run computes" \
        in bad.output
    assert not (tmp_path / "bad").exists()
