"""Issue 14's table, row by row, end to end through the CLI with real files: each row ends
in a named warning/error (exit status asserted) or, with the option that fixes it, in the
number computed by hand."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from segeval.commands.app import app

runner = CliRunner()
RNG = np.random.default_rng(14)
PRED01 = (RNG.random((16, 16)) > 0.5).astype(np.uint8)
REF01 = (RNG.random((16, 16)) > 0.4).astype(np.uint8)


def dice(pred: np.ndarray, ref: np.ndarray) -> float:
    return 2 * int((pred & ref).sum()) / (int(pred.sum()) + int(ref.sum()))


def run(*args: object) -> tuple[int, dict, str]:
    result = runner.invoke(app, [str(a) for a in args] + ["--json", "-", "-q"])
    data = json.loads(result.stdout) if result.stdout.strip() else {}
    return result.exit_code, data, result.stderr


def codes(data: dict) -> set[str]:
    return {w["code"] for w in data["warnings"]}


def png(path, array) -> None:
    Image.fromarray(array).save(path)


@pytest.fixture
def folders(tmp_path):
    (tmp_path / "pred").mkdir()
    (tmp_path / "gt").mkdir()
    return tmp_path / "pred", tmp_path / "gt"


def test_row1_binary_png_0_1_vs_0_255(folders):
    pred, gt = folders
    png(pred / "a.png", PRED01)
    png(gt / "a.png", REF01 * 255)
    code, data, err = run("dice", pred, gt)
    assert code == 0 and {"W_PREDICTION_ONLY_LABELS", "W_REFERENCE_ONLY_LABELS"} <= codes(data)
    assert err.count("W_REFERENCE_ONLY_LABELS") == 1  # once, not per case
    code, data, _ = run("dice", pred, gt, "--strict")
    assert code == 3
    code, data, _ = run("dice", pred, gt, "--binary")
    assert code == 0 and data["warnings"] == []
    assert data["headline"]["value"] == pytest.approx(dice(PRED01, REF01))
    code, data, _ = run("dice", pred, gt, "--map", "reference:255=1")
    assert data["headline"]["value"] == pytest.approx(dice(PRED01, REF01))


def test_row2_8bit_probability_png(folders):
    pred, gt = folders
    probability = RNG.integers(0, 256, (16, 16)).astype(np.uint8)
    png(pred / "a.png", probability)
    png(gt / "a.png", REF01)
    code, data, _ = run("dice", pred, gt)
    assert code == 0 and "W_GREY_LEVELS" in codes(data)
    code, data, _ = run("dice", pred, gt, "--probability-scale", "255")
    expected = (probability / 255 > 0.5).astype(np.uint8)
    assert code == 0 and data["headline"]["value"] == pytest.approx(dice(expected, REF01))


def test_row3_anti_aliased_reference(folders):
    pred, gt = folders
    ref = REF01 * 255
    ref[0, :6] = [9, 39, 48, 168, 207, 9]
    png(pred / "a.png", REF01 * 255)
    png(gt / "a.png", ref)
    code, data, _ = run("dice", pred, gt)
    assert code == 0 and "W_GREY_LEVELS" in codes(data)
    assert run("dice", pred, gt, "--strict")[0] == 3


def test_row4_dataset_json_regions_not_matching_the_data(folders, tmp_path):
    pred, gt = folders
    brats = np.zeros((8, 8), dtype=np.uint8)
    brats[1:4, 1:4], brats[4:6, 4:6], brats[6:8, 0:3] = 1, 2, 4
    png(pred / "a.png", brats)
    png(gt / "a.png", brats)
    dataset = tmp_path / "dataset.json"
    dataset.write_text(json.dumps({"labels": {"background": 0, "whole_tumour": [1, 2, 3],
                                              "tumour_core": [2, 3]}}))
    code, data, err = run("dice", pred, gt, "--label-names", dataset)
    assert code == 0
    assert {"W_UNEVALUATED_LABELS", "W_DECLARED_LABEL_ABSENT"} <= codes(data)
    (uneval,) = [w for w in data["warnings"] if w["code"] == "W_UNEVALUATED_LABELS"]
    assert uneval["labels"] == [4] and "dataset.json" in uneval["message"]
    assert run("dice", pred, gt, "--label-names", dataset, "--strict")[0] == 3


def test_row5_declared_labels_absent(folders):
    pred, gt = folders
    png(pred / "a.png", PRED01)
    png(gt / "a.png", REF01)
    code, data, _ = run("dice", pred, gt, "--labels", "1,2,3")
    (absent,) = [w for w in data["warnings"] if w["code"] == "W_DECLARED_LABEL_ABSENT"]
    assert code == 0 and absent["labels"] == [2, 3]
    code, data, _ = run("dice", pred, gt, "--label-names", "1=organ,7=lesion")
    (absent,) = [w for w in data["warnings"] if w["code"] == "W_DECLARED_LABEL_ABSENT"]
    assert absent["labels"] == [7] and "--label-names" in absent["message"]


def test_row6_labels_subset_like_scikit_learn(folders):
    pred, gt = folders
    p = RNG.integers(0, 4, (16, 16)).astype(np.uint8)
    g = RNG.integers(0, 4, (16, 16)).astype(np.uint8)
    png(pred / "a.png", p)
    png(gt / "a.png", g)
    code, data, _ = run("dice", pred, gt, "--labels", "1,3")
    assert code == 0 and [c["key"] for c in data["classes"]] == ["1", "3"]
    for label in (1, 3):  # other labels are negatives for the selected ones
        assert data["per_class"][str(label)]["pooled"]["dice"] == pytest.approx(
            dice((p == label).astype(np.uint8), (g == label).astype(np.uint8)))
    assert "W_UNEVALUATED_LABELS" in codes(data)
    assert run("dice", pred, gt, "--labels", "1,3", "--unexpected-labels", "error")[0] == 3


def test_row7_class_equal_to_ignore_index_is_a_usage_error(folders):
    pred, gt = folders
    png(pred / "a.png", PRED01)
    png(gt / "a.png", REF01)
    result = runner.invoke(app, ["dice", str(pred), str(gt), "--labels", "0,1,2",
                                 "--ignore-index", "0"])
    assert result.exit_code == 2 and "also in --labels" in result.stderr


def test_row8_nnunet_npz_next_to_references(folders):
    nib = pytest.importorskip("nibabel")
    pred, gt = folders
    shape = (5, 4, 3)
    reference = RNG.integers(0, 3, shape).astype(np.uint8)
    probabilities = RNG.dirichlet([1, 1, 1], size=shape).transpose(3, 0, 1, 2)
    nib.save(nib.Nifti1Image(reference, np.eye(4)), gt / "c1.nii.gz")
    # as nnU-Net v2 writes it: (C, z, y, x) float16, with its .nii.gz and .pkl beside it
    np.savez_compressed(pred / "c1.npz",
                        probabilities=probabilities.transpose(0, 3, 2, 1).astype(np.float16))
    argmax = np.argmax(probabilities.astype(np.float16), axis=0).astype(np.uint8)
    nib.save(nib.Nifti1Image(argmax, np.eye(4)), pred / "c1.nii.gz")
    (pred / "c1.pkl").write_bytes(b"not read")
    _, from_nii, _ = run("evaluate", pred, gt, "--prediction-suffix", ".nii.gz")
    code, from_npz, _ = run("evaluate", pred, gt, "--prediction-suffix", ".npz",
                            "--prediction-axes", "c,2,1,0")
    assert code == 0 and from_npz["per_class"] == from_nii["per_class"]
    # a case whose only prediction is of an unsupported type is named, not just "missing"
    nib.save(nib.Nifti1Image(reference, np.eye(4)), gt / "c2.nii.gz")
    (pred / "c2.nii.gz.part").write_bytes(b"x")
    code, data, _ = run("evaluate", pred, gt, "--prediction-suffix", ".nii.gz",
                        "--missing", "skip")
    (near,) = [w for w in data["warnings"] if w["code"] == "W_UNPAIRED_LOOKALIKE"]
    assert near["files"] == [str(pred / "c2.nii.gz.part")] and code == 0


def test_row9_3d_channel_reference_with_channel_axis(tmp_path):
    nib = pytest.importorskip("nibabel")
    ref_labels = RNG.integers(0, 3, (5, 4, 3))
    pred_labels = RNG.integers(0, 3, (5, 4, 3))
    one_hot = np.stack([ref_labels == c for c in range(3)], axis=-1).astype(np.uint8)
    nib.save(nib.Nifti1Image(one_hot, np.eye(4)), tmp_path / "gt.nii.gz")
    probabilities = np.stack([pred_labels == c for c in range(3)], -1).astype(np.float32)
    nib.save(nib.Nifti1Image(probabilities, np.eye(4)), tmp_path / "pred.nii.gz")
    code, data, err = run("dice", tmp_path / "pred.nii.gz", tmp_path / "gt.nii.gz",
                          "--channel-axis", "-1", "--per-class")
    assert code == 0, err
    for c in (1, 2):
        assert data["per_class"][str(c)]["pooled"]["dice"] == pytest.approx(
            dice((pred_labels == c).astype(np.uint8), (ref_labels == c).astype(np.uint8)))


def test_warnings_reach_markdown_and_github_annotations(folders, tmp_path):
    pred, gt = folders
    png(pred / "a.png", PRED01)
    png(gt / "a.png", REF01 * 255)
    md = tmp_path / "summary.md"
    result = runner.invoke(app, ["dice", str(pred), str(gt), "--markdown", str(md),
                                 "--github", "-q"])
    assert "::warning title=W_REFERENCE_ONLY_LABELS::" in result.stdout
    assert "`W_PREDICTION_ONLY_LABELS`" in md.read_text()


def test_compare_treats_a_class_rename_as_comparable_with_a_note(folders, tmp_path):
    pred, gt = folders
    png(pred / "a.png", PRED01)
    png(gt / "a.png", REF01)
    old, new = tmp_path / "old.json", tmp_path / "new.json"
    runner.invoke(app, ["dice", str(pred), str(gt), "--label-names", "1=liver", "--json",
                        str(old), "-q"])
    runner.invoke(app, ["dice", str(pred), str(gt), "--label-names", "1=hepar", "--json",
                        str(new), "-q"])
    result = runner.invoke(app, ["compare", str(old), str(new)])
    assert result.exit_code == 0, result.stderr
    assert "class 1 is named 'liver' in the baseline and 'hepar' now" in result.stderr


def test_grade_takes_probability_scale_and_nnunet_npz(tmp_path):
    """grade: a team of 8-bit probability PNGs with --probability-scale, and a team of nnU-Net
    .npz probabilities with --prediction-suffix/--prediction-axes, ranked by Dice computed by
    hand (before: these options existed for evaluate only)."""
    nib = pytest.importorskip("nibabel")
    subs, gt = tmp_path / "subs", tmp_path / "gt"
    for folder in (subs / "png_team", gt):
        folder.mkdir(parents=True)
    probability = RNG.integers(0, 256, (16, 16)).astype(np.uint8)
    png(subs / "png_team" / "a.png", probability)
    png(gt / "a.png", REF01)
    result = runner.invoke(app, ["grade", str(subs), str(gt), "--out", str(tmp_path / "o1"),
                                 "--probability-scale", "255", "-q"])
    assert result.exit_code == 0, result.stderr
    board = json.loads((tmp_path / "o1" / "leaderboard.json").read_text())
    expected = dice((probability / 255 > 0.5).astype(np.uint8), REF01)
    assert board["teams"][0]["score"] == pytest.approx(expected)

    subs, gt = tmp_path / "subs3d", tmp_path / "gt3d"
    for folder in (subs / "npz_team", gt):
        folder.mkdir(parents=True)
    reference = RNG.integers(0, 3, (5, 4, 3)).astype(np.uint8)
    probabilities = RNG.dirichlet([1, 1, 1], size=(5, 4, 3)).transpose(3, 0, 1, 2)
    nib.save(nib.Nifti1Image(reference, np.eye(4)), gt / "c1.nii.gz")
    np.savez_compressed(subs / "npz_team" / "c1.npz",
                        probabilities=probabilities.transpose(0, 3, 2, 1).astype(np.float16))
    argmax = np.argmax(probabilities.astype(np.float16), axis=0)
    result = runner.invoke(app, ["grade", str(subs), str(gt), "--out", str(tmp_path / "o2"),
                                 "--prediction-suffix", ".npz", "--prediction-axes", "c,2,1,0",
                                 "-q"])
    assert result.exit_code == 0, result.stderr
    board = json.loads((tmp_path / "o2" / "leaderboard.json").read_text())
    labels = sorted(set(np.unique(reference)) - {0})
    expected = np.mean([dice(argmax == k, reference == k) for k in labels])
    assert board["teams"][0]["score"] == pytest.approx(expected)
