"""Pictures of failures: slice choice, orientation, colours at known pixels, N-worst.

The 3-D volume (x, y, z) = 12 x 10 x 8, spacing (1, 1, 2) mm, label 1 in the block
x 2..7, y 2..7, z 2..5.  The prediction adds a false-positive slab x 8..10, y 3..6 in
z = 5 (12 voxels) and misses x 2..3, y 2..3 in z = 2 (4 voxels).  Error voxels per slice:

    along z: z=5 → 12, z=2 → 4                        → axial slice z = 5
    along x: x=8, 9, 10 → 4 each (tie), x=2, 3 → 2    → sagittal slice x = 8 (lowest)
    along y: y=3 → 3 FP + 2 FN = 5, y=4..6 → 3, y=2 → 2 → coronal slice y = 3
"""

from __future__ import annotations

import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from PIL import Image

import segeval
from segeval.errors import UsageError
from segeval.outputs.overlays import (
    ALPHA,
    COLOURS,
    GREY,
    OverlayWarning,
    class_masks,
    error_slices,
    layout,
    overlay_rgb,
    pixel_scale,
    read_image,
    safe_name,
    volume_planes,
    worst_cases,
    write_overlays,
)
from tests.conftest import write_png

pytest.importorskip("matplotlib")

SPACING = (1.0, 1.0, 2.0)


def blend(name: str | None, background: float = GREY) -> np.ndarray:
    """The expected uint8 colour of a TP/FP/FN pixel (None: background only)."""
    base = np.full(3, background)
    value = base if name is None else (1 - ALPHA) * base + ALPHA * np.array(COLOURS[name])
    return np.round(value * 255).astype(np.uint8)


def volumes() -> tuple[np.ndarray, np.ndarray]:
    reference = np.zeros((12, 10, 8), np.uint8)
    reference[2:8, 2:8, 2:6] = 1
    prediction = reference.copy()
    prediction[8:11, 3:7, 5] = 1
    prediction[2:4, 2:4, 2] = 0
    return reference, prediction


def write_nifti(path: Path, array: np.ndarray, affine: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(array, affine), path)
    return path


def test_error_slices_pick_the_known_slices():
    reference, prediction = volumes()
    assert error_slices(reference == 1, prediction == 1) == (8, 3, 5)
    # no error at all: the slice with most voxels; an empty volume: the middle slice
    assert error_slices(reference == 1, reference == 1) == (2, 2, 2)
    empty = np.zeros((4, 6, 8), bool)
    assert error_slices(empty, empty) == (2, 3, 4)


@pytest.mark.parametrize("flip_x", [False, True])
def test_volume_planes_orientation_aspect_and_colours(flip_x):
    reference, prediction = volumes()
    affine = np.diag([-1.0 if flip_x else 1.0, 1.0, 2.0, 1.0])
    ref, pred, evaluated = class_masks(prediction, reference, [1], {})
    planes = {p.view: p for p in volume_planes(ref, pred, evaluated, None, SPACING, affine)}
    axial, coronal, sagittal = planes["axial"], planes["coronal"], planes["sagittal"]
    assert (axial.index, axial.axis) == (5, 2)
    assert (coronal.index, coronal.axis) == (3, 1)
    assert (sagittal.index, sagittal.axis) == (8, 0)
    # axial: rows = y (anterior, high y, at the top), columns = x with the patient's right
    # (high x in RAS) on the left; a flipped x axis in the affine reverses the columns
    assert axial.reference.shape == (10, 12)
    column = (lambda x: x) if flip_x else (lambda x: 11 - x)
    rgb = overlay_rgb(axial.reference, axial.prediction, None, axial.evaluated)
    assert (rgb[9 - 4, column(9)] == blend("FP")).all()  # x=9, y=4: false positive
    assert (rgb[9 - 5, column(5)] == blend("TP")).all()  # x=5, y=5: inside both
    assert (rgb[9 - 0, column(0)] == blend(None)).all()  # x=0, y=0: background
    # coronal through y=3: rows = z (superior at the top), z spacing 2 → pixels twice as tall
    assert coronal.reference.shape == (8, 12) and coronal.spacing == (2.0, 1.0)
    rgb = overlay_rgb(coronal.reference, coronal.prediction)
    assert (rgb[7 - 2, column(2)] == blend("FN")).all()  # x=2, y=3, z=2: missed
    box = layout(coronal.reference.shape, coronal.spacing, 5.0)
    assert (box.image_height, box.image_width) == (8 * 2 * 5, 12 * 5)


def test_written_png_has_the_colours_at_known_pixels(tmp_path):
    reference, prediction = volumes()
    affine = np.diag([*SPACING, 1.0])
    gt = write_nifti(tmp_path / "gt" / "vol.nii.gz", reference, affine)
    write_nifti(tmp_path / "pred" / "vol.nii.gz", prediction, affine)
    report = segeval.evaluate(tmp_path / "pred", gt.parent, workers=1).to_dict()
    out = write_overlays(report, tmp_path / "overlays", worst=3)
    assert list(out) == ["vol"]
    names = [Path(path).name for _, path in out["vol"]]
    assert names == ["vol__1__axial.png", "vol__1__coronal.png", "vol__1__sagittal.png"]
    captions = [caption for caption, _ in out["vol"]]
    assert "axial: slice 5 of array axis 2" in captions[0]
    assert "coronal: slice 3 of array axis 1" in captions[1]
    assert "sagittal: slice 8 of array axis 0" in captions[2]
    assert "TP 140 · FP 12 · FN 4" in captions[0]
    # the picture in the PNG: map voxel (row, col) of the axial plane to its pixel
    png = np.asarray(Image.open(out["vol"][0][1]).convert("RGB"))
    box = layout((10, 12), (1.0, 1.0), pixel_scale(reference.shape, SPACING))
    assert png.shape[:2] == (box.height, box.width)
    for (row, col), name in (((5, 2), "FP"), ((4, 6), "TP"), ((9, 11), None)):
        assert np.abs(png[box.pixel(row, col, (10, 12))].astype(int)
                      - blend(name).astype(int)).max() <= 1
    coronal = np.asarray(Image.open(out["vol"][1][1]).convert("RGB"))
    box = layout((8, 12), (2.0, 1.0), pixel_scale(reference.shape, SPACING))
    assert np.abs(coronal[box.pixel(5, 9, (8, 12))].astype(int)
                  - blend("FN").astype(int)).max() <= 1  # x=2 → column 9, z=2 → row 5


def test_drawn_counts_match_the_report(tmp_path):
    reference, prediction = volumes()
    ref, pred, evaluated = class_masks(prediction, reference, [1], {})
    assert (int((ref & pred).sum()), int((~ref & pred).sum()), int((ref & ~pred).sum())) \
        == (140, 12, 4)
    probability = np.where(prediction == 1, 0.8, 0.2).astype(np.float32)
    _, pred_p, _ = class_masks(probability, reference, [1], {"threshold": 0.5})
    assert (pred_p == pred).all()
    _, pred_none, _ = class_masks(None, reference, [1], {})
    assert not pred_none.any()
    ignored = reference.copy()
    ignored[0, 0, 0] = 255
    _, _, inside = class_masks(prediction, ignored, [1], {"ignore_index": 255})
    assert not inside[0, 0, 0] and inside.sum() == inside.size - 1


def test_2d_case_over_an_image_and_the_worst_selection(tmp_path):
    gt, pred, images = tmp_path / "gt", tmp_path / "pred", tmp_path / "images"
    reference = np.zeros((6, 8), np.uint8)
    reference[1:5, 1:5] = 1
    predictions = {}  # dice of label 1: exact 1.0, one FP 0.9697, a shifted square lower
    predictions["exact"] = reference.copy()
    predictions["one_fp"] = reference.copy()
    predictions["one_fp"][0, 7] = 1
    predictions["shifted"] = np.roll(reference, 2, axis=1)
    for name, array in predictions.items():
        write_png(gt / f"{name}.png", reference)
        write_png(pred / f"{name}.png", array)
    write_png(gt / "missing.png", reference)  # no prediction: scored as empty, dice 0
    ramp = np.tile(np.linspace(0, 250, 8).astype(np.uint8), (6, 1))
    write_png(images / "shifted_0000.png", ramp)  # nnU-Net channel suffix
    report = segeval.evaluate(pred, gt, missing="empty", workers=1).to_dict()
    worst = [case["id"] for case in worst_cases(report, "1", "dice", 2)]
    assert worst == ["missing", "shifted"]
    assert [c["id"] for c in worst_cases(report, "1", "dice", 10)] == \
        ["missing", "shifted", "one_fp", "exact"]

    out = write_overlays(report, tmp_path / "out", images_dir=images, worst=2)
    assert list(out) == ["missing", "shifted"]
    (caption, path), = out["shifted"]
    assert Path(path).name == "shifted__1__2d.png" and "dice 0.5000" in caption
    assert "scored as an empty prediction" in out["missing"][0][0]
    background = read_image(images / "shifted_0000.png", (6, 8))
    assert background is not None
    ref, pred_mask = reference == 1, predictions["shifted"] == 1
    expected = overlay_rgb(ref, pred_mask, background)
    png = np.asarray(Image.open(path).convert("RGB"))
    box = layout((6, 8), (1.0, 1.0), pixel_scale((6, 8), (1.0, 1.0)))
    for row, col in ((1, 1), (1, 3), (1, 5), (0, 0), (5, 7)):  # FN, TP, FP, image, image
        assert np.abs(png[box.pixel(row, col, (6, 8))].astype(int)
                      - expected[row, col].astype(int)).max() <= 1
    assert (expected[0, 0] != expected[0, 7]).any()  # the image is drawn, not grey
    missing = np.asarray(Image.open(out["missing"][0][1]).convert("RGB"))
    assert np.abs(missing[box.pixel(2, 2, (6, 8))].astype(int)
                  - blend("FN").astype(int)).max() <= 1


def test_worst_cases_ignores_null_and_breaks_ties_by_id():
    def case(name, value):
        return {"id": name, "metrics": {"k": {"dice": value}} if value != "error" else {}}

    report = {"cases": [case("d", 0.5), case("a", None), case("c", 0.2), case("b", 0.5),
                        case("e", "error")]}
    assert [c["id"] for c in worst_cases(report, "k", "dice", 3)] == ["c", "b", "d"]
    assert worst_cases(report, "k", "dice", 0) == []


def test_safe_names_never_collide():
    assert safe_name("case_01") == "case_01"
    assert safe_name("a/b") != safe_name("a_b") and safe_name("a/b").startswith("a_b-")
    assert not safe_name("../x").startswith(".")


def test_images_are_windowed_and_must_share_the_grid(tmp_path):
    volume = np.arange(12 * 10 * 8, dtype=np.float32).reshape(12, 10, 8) - 500
    path = write_nifti(tmp_path / "img" / "vol_0000.nii.gz", volume, np.diag([*SPACING, 1.0]))
    image = read_image(path, (12, 10, 8))
    assert image is not None and image.shape == (12, 10, 8)
    assert image.min() == 0.0 and image.max() == 1.0  # 1st-99th percentile window, clipped
    with pytest.warns(OverlayWarning, match="not on the mask's grid"):
        assert read_image(path, (12, 10, 7)) is None  # another grid: drawn over grey
    colour = tmp_path / "img" / "photo.png"
    Image.fromarray(np.full((3, 4, 3), (255, 0, 51), np.uint8)).save(colour)
    assert np.allclose(read_image(colour, (3, 4))[0, 0], (1.0, 0.0, 0.2))
    broken = tmp_path / "img" / "broken.png"
    broken.write_bytes(b"not a png")
    with pytest.warns(OverlayWarning, match="image not used"):
        assert read_image(broken, (3, 4)) is None


def test_unreadable_cases_warn_and_matplotlib_is_required(tmp_path, monkeypatch):
    reference = np.zeros((4, 4), np.uint8)
    reference[1:3, 1:3] = 1
    report = segeval.evaluate([reference], [np.roll(reference, 1, 0)], workers=1).to_dict()
    with pytest.warns(OverlayWarning, match="case_000"):  # arrays have no files to re-read
        assert write_overlays(report, tmp_path / "out") == {}
    with pytest.raises(UsageError, match="not a folder of images"):
        write_overlays(report, tmp_path / "out", images_dir=tmp_path / "nowhere")
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    with pytest.raises(UsageError, match="drawing overlays needs matplotlib"):
        write_overlays(report, tmp_path / "out")


@pytest.mark.parametrize("layout_options", [
    {},  # label maps, with a region
    {"logits": "sigmoid"},  # probability map from logits
    {"logits": "sigmoid", "whole": True},  # whole-valued float logits: still logits
    {"channel_axis": 0, "ignore_index": 2},  # channels over a label map with an ignore index
    {"binary": True},  # 0/255 reference, 0/1/2 prediction: the run's label mapping
    {"channel_axis": 0},  # per-class probabilities: argmax
    {"channel_axis": 0, "multilabel": True},  # independent channels
])
def test_drawn_voxels_count_what_the_report_counts(layout_options):
    rng = np.random.default_rng(4)
    reference = rng.integers(0, 3, size=(6, 5, 4)).astype(np.uint8)
    if not layout_options:
        prediction = rng.integers(0, 3, size=(6, 5, 4)).astype(np.uint8)
        options = {"regions": {"both": [1, 2]}, "labels": [1, 2]}
    elif layout_options.get("binary"):
        prediction = rng.integers(0, 3, size=(6, 5, 4)).astype(np.uint8)
        reference = (reference > 0).astype(np.uint8) * 255
        options = dict(layout_options)
    elif "logits" in layout_options:
        reference = (reference > 1).astype(np.uint8)
        prediction = rng.normal(size=(6, 5, 4)).astype(np.float32)
        if layout_options.get("whole"):  # issue 12: the overlay read these as labels
            prediction = np.round(prediction * 2)
        options = {"logits": "sigmoid"}
    else:
        prediction = rng.random((3, 6, 5, 4)).astype(np.float32)
        if layout_options.get("multilabel"):
            reference = (rng.random((3, 6, 5, 4)) < 0.4).astype(np.uint8)
        options = dict(layout_options)
    report = segeval.evaluate([prediction], [reference], workers=1, **options).to_dict()
    for spec in report["classes"]:
        ref, pred, _ = class_masks(prediction, reference, spec["labels"], report["config"])
        counts = report["cases"][0]["metrics"][spec["key"]]
        assert (int((ref & pred).sum()), int((~ref & pred).sum()), int((ref & ~pred).sum())) \
            == (counts["tp"], counts["fp"], counts["fn"]), spec["key"]
