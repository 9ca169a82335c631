"""segeval.evaluate on arrays: hand-computed multi-class cases under every rule.

The two 4x4 cases (also written as PNGs by the ``png_folders`` fixture):

    case a  reference   prediction        case b  reference   prediction
            1 1 0 0     1 0 0 0                   1 0 0 0     1 0 0 0
            1 1 0 0     1 1 0 0                   0 0 0 0     0 0 0 0
            0 0 2 2     0 0 2 0                   0 0 0 0     0 0 0 0
            0 0 2 2     0 0 0 0                   0 0 0 0     0 0 0 1

    class 1: a TP 3 FP 0 FN 1 TN 12 (dice 6/7);  b TP 1 FP 1 FN 0 TN 14 (dice 2/3)
    class 2: a TP 1 FP 0 FN 3 TN 12 (dice 2/5);  b empty (TP = FP = FN = 0)
    pooled:  class 1 TP 4 FP 1 FN 1 → 8/10;  class 2 TP 1 FN 3 → 2/5
    micro:   TP 5 FP 1 FN 4 → 10/15
"""

from __future__ import annotations

import math

import numpy as np
import pytest

import segeval
from segeval.errors import UsageError
from tests.conftest import PRED_A, PRED_B, REF_A, REF_B


def run(**options):
    return segeval.evaluate({"a": PRED_A, "b": PRED_B}, {"a": REF_A, "b": REF_B},
                            **options).to_dict()


def counts(block):
    return tuple(block[k] for k in ("tp", "fp", "fn", "tn"))


def test_case_counts_and_scores(validate):
    data = validate(run())
    a, b = data["cases"]
    assert [c["key"] for c in data["classes"]] == ["1", "2"]
    assert counts(a["metrics"]["1"]) == (3, 0, 1, 12)
    assert counts(a["metrics"]["2"]) == (1, 0, 3, 12)
    assert counts(b["metrics"]["1"]) == (1, 1, 0, 14)
    assert counts(b["metrics"]["2"]) == (0, 0, 0, 16)
    assert a["metrics"]["1"]["dice"] == pytest.approx(6 / 7)
    assert a["metrics"]["2"]["iou"] == pytest.approx(1 / 4)
    assert b["metrics"]["1"]["precision"] == pytest.approx(1 / 2)
    assert b["metrics"]["2"]["dice"] is None  # empty under the default rule


def test_reductions(validate):
    data = validate(run())
    one, two = data["per_class"]["1"], data["per_class"]["2"]
    assert counts(one["pooled"]) == (4, 1, 1, 26)
    assert one["pooled"]["dice"] == pytest.approx(0.8)
    assert two["pooled"]["dice"] == pytest.approx(0.4)
    assert one["mean"]["dice"] == pytest.approx((6 / 7 + 2 / 3) / 2)
    assert one["std"]["dice"] == pytest.approx(abs(6 / 7 - 2 / 3) / 2)
    assert two["mean"]["dice"] == pytest.approx(0.4)  # the empty case b is left out...
    assert two["n_used"]["dice"] == 1 and two["n_empty"] == 1  # ...and counted
    summary = data["summary"]
    assert summary["macro"]["dice"] == pytest.approx(0.6)
    assert summary["micro"]["dice"] == pytest.approx(10 / 15)
    assert counts(summary["micro"]) == (5, 1, 4, 26 + 28)
    assert summary["macro_imagewise"]["dice"] == pytest.approx(((6 / 7 + 2 / 3) / 2 + 0.4) / 2)
    assert data["headline"] == {"metric": "dice", "reduction": "macro",
                                "value": pytest.approx(0.6)}


@pytest.mark.parametrize("rule,value", [("one", 1.0), ("zero", 0.0)])
def test_empty_rules_change_case_means_not_pooled(rule, value):
    data = run(empty=rule)
    assert data["cases"][1]["metrics"]["2"]["dice"] == value
    assert data["per_class"]["2"]["mean"]["dice"] == pytest.approx((0.4 + value) / 2)
    assert data["per_class"]["2"]["pooled"]["dice"] == pytest.approx(0.4)
    assert data["config"]["empty"] == rule


def test_class_absent_everywhere_is_null_and_left_out_of_macro():
    data = run(labels=[1, 2, 3])
    assert data["per_class"]["3"]["pooled"]["dice"] is None
    assert data["per_class"]["3"]["n_empty"] == 2
    assert data["summary"]["macro"]["dice"] == pytest.approx(0.6)
    assert data["summary"]["macro"]["n_classes"]["dice"] == 2


def test_include_background():
    data = run(include_background=True)
    assert [c["key"] for c in data["classes"]] == ["0", "1", "2"]
    # case a, label 0: reference 8 voxels all predicted 0; 4 more voxels predicted 0
    assert counts(data["cases"][0]["metrics"]["0"]) == (8, 4, 0, 4)
    assert data["cases"][0]["metrics"]["0"]["dice"] == pytest.approx(16 / 20)


def test_ignore_index_removes_voxels():
    data = run(ignore_index=2)
    assert [c["key"] for c in data["classes"]] == ["1"]
    # the 4 voxels with reference 2 in case a are not evaluated at all
    assert counts(data["cases"][0]["metrics"]["1"]) == (3, 0, 1, 8)
    assert counts(data["cases"][1]["metrics"]["1"]) == (1, 1, 0, 14)


def test_region_is_union_of_labels():
    data = run(regions={"any": [1, 2]})
    assert [c["key"] for c in data["classes"]] == ["any"]
    assert data["classes"][0]["labels"] == [1, 2]
    assert counts(data["cases"][0]["metrics"]["any"]) == (4, 0, 4, 8)
    assert data["cases"][0]["metrics"]["any"]["dice"] == pytest.approx(8 / 12)


def test_regions_with_labels():
    data = run(labels=[1, 2], regions={"any": [1, 2]}, label_names={1: "liver"})
    assert [(c["key"], c["name"]) for c in data["classes"]] == [
        ("1", "liver"), ("2", "2"), ("any", "any")]


def test_labels_select_classes_like_scikit_learn():
    """--labels 1 on data holding 1 and 2: label 2 counts as a negative for class 1 (as
    scikit-learn's labels=), every case is scored, and a warning names label 2."""
    report = segeval.evaluate({"a": PRED_A, "b": PRED_B}, {"a": REF_A, "b": REF_B}, labels=[1])
    data = report.to_dict()
    assert [c["status"] for c in data["cases"]] == ["ok", "ok"]
    (warning,) = [w for w in data["warnings"] if w["code"] == "W_UNEVALUATED_LABELS"]
    assert warning["labels"] == [2]
    # independent count on the arrays: class 1 is (label == 1) on each side
    tp = sum(int(((p == 1) & (g == 1)).sum()) for p, g in ((PRED_A, REF_A), (PRED_B, REF_B)))
    fp = sum(int(((p == 1) & (g != 1)).sum()) for p, g in ((PRED_A, REF_A), (PRED_B, REF_B)))
    fn = sum(int(((p != 1) & (g == 1)).sum()) for p, g in ((PRED_A, REF_A), (PRED_B, REF_B)))
    assert data["per_class"]["1"]["pooled"]["dice"] == pytest.approx(2 * tp / (2 * tp + fp + fn))


def test_unexpected_label_invalidates_only_that_case():
    report = segeval.evaluate({"a": PRED_A, "b": PRED_B}, {"a": REF_A, "b": REF_B}, labels=[1],
                              unexpected_labels="error")
    a, b = report.to_dict()["cases"]
    assert a["status"] == "error" and a["error_code"] == "E_UNEXPECTED_LABEL"
    assert "[2]" in a["message"]
    assert b["status"] == "ok" and b["metrics"]["1"]["dice"] == pytest.approx(2 / 3)
    assert report.to_dict()["per_class"]["1"]["pooled"]["dice"] == pytest.approx(2 / 3)


def test_declared_names_allow_a_subset_of_labels():
    data = run(labels=[1], label_names={1: "liver", 2: "tumour"})
    assert [c["status"] for c in data["cases"]] == ["ok", "ok"]
    assert data["per_class"]["1"]["pooled"]["dice"] == pytest.approx(0.8)


def test_beta_and_smooth_are_applied_and_recorded():
    data = run(beta=2.0, smooth=1.0)
    # class 1 pooled TP 4 FP 1 FN 1: (5·4 + 1) / (5·4 + 4·1 + 1 + 1)
    assert data["per_class"]["1"]["pooled"]["fbeta"] == pytest.approx(21 / 26)
    assert data["per_class"]["1"]["pooled"]["dice"] == pytest.approx(9 / 11)
    assert data["config"]["beta"] == 2.0 and data["config"]["smooth"] == 1.0


def test_probability_map_threshold_is_strict():
    reference = np.array([0, 1, 1, 0])
    probability = np.array([0.5, 0.5, 0.7, 0.2])  # 0.5 is not > 0.5
    data = segeval.evaluate(probability, reference).to_dict()
    assert counts(data["cases"][0]["metrics"]["1"]) == (1, 0, 1, 2)
    data = segeval.evaluate(probability, reference, threshold=0.4).to_dict()
    assert counts(data["cases"][0]["metrics"]["1"]) == (2, 1, 0, 1)


def test_integer_valued_float_prediction_is_a_label_map():
    data = segeval.evaluate(PRED_A.astype(np.float32), REF_A).to_dict()
    assert counts(data["cases"][0]["metrics"]["2"]) == (1, 0, 3, 12)


def test_logits_sigmoid():
    reference = np.array([0, 1, 1, 0])
    logits = np.array([-3.0, 2.0, -0.1, 0.2])  # sigmoid > 0.5 exactly where logit > 0
    data = segeval.evaluate(logits, reference, logits="sigmoid").to_dict()
    assert counts(data["cases"][0]["metrics"]["1"]) == (1, 1, 1, 1)


def test_softmax_channels_argmax():
    # 3 channels over 4 voxels; argmax per voxel = [0, 1, 2, 2]
    logits = np.array([[5.0, 0, 0, 0], [0, 5, 0, 1], [0, 0, 5, 2]])
    reference = np.array([0, 1, 2, 1])
    data = segeval.evaluate(logits, reference, channel_axis=0, logits="softmax").to_dict()
    assert counts(data["cases"][0]["metrics"]["1"]) == (1, 0, 1, 2)
    assert counts(data["cases"][0]["metrics"]["2"]) == (1, 1, 0, 2)


def test_one_hot_reference_channels():
    prediction = np.array([[1, 0, 0], [0, 1, 1]])  # argmax: [0, 1, 1]
    reference = np.array([[1, 1, 0], [0, 0, 1]])  # labels: [0, 0, 1]
    data = segeval.evaluate(prediction, reference, channel_axis=0).to_dict()
    assert counts(data["cases"][0]["metrics"]["1"]) == (1, 1, 0, 1)


def test_overlapping_reference_needs_multilabel():
    reference = np.array([[1, 1], [1, 0]])
    report = segeval.evaluate(reference.copy(), reference, channel_axis=0)
    assert report.to_dict()["cases"][0]["error_code"] == "E_NOT_ONE_HOT"
    data = segeval.evaluate(reference.copy(), reference, channel_axis=0,
                            multilabel=True).to_dict()
    assert data["summary"]["micro"]["dice"] == 1.0


@pytest.mark.parametrize("bad,code", [
    (np.array([0.2, np.nan, 0.1, 0.0]), "E_NAN"),
    (np.array([0.2, 1.5, 0.1, 0.0]), "E_PROBABILITY_RANGE"),
    (np.array([0, -1, 1, 0]), "E_NEGATIVE_LABEL"),
    (np.array([0, 1, 1]), "E_SHAPE_MISMATCH"),
])
def test_bad_prediction_is_a_case_error_and_other_cases_survive(bad, code):
    good = np.array([0, 1, 1, 0])
    report = segeval.evaluate({"bad": bad, "good": good}, {"bad": good, "good": good})
    bad_case, good_case = report.to_dict()["cases"]
    assert bad_case["status"] == "error" and bad_case["error_code"] == code
    assert bad_case["message"]
    assert good_case["metrics"]["1"]["dice"] == 1.0
    assert [c.id for c in report.invalid_cases] == ["bad"]


def test_non_integer_reference_is_refused():
    report = segeval.evaluate(np.array([0, 1]), np.array([0.0, 0.5]))
    assert report.to_dict()["cases"][0]["error_code"] == "E_NON_INTEGER_LABELS"


def test_single_probability_map_needs_binary_reference():
    report = segeval.evaluate(np.array([0.1, 0.9, 0.2]), np.array([0, 1, 2]))
    case = report.to_dict()["cases"][0]
    assert case["error_code"] == "E_CHANNELS" and "--channel-axis" in case["message"]


def test_missing_prediction_rules():
    references = {"a": REF_A, "b": REF_B}
    report = segeval.evaluate({"b": PRED_B}, references)
    a = report.to_dict()["cases"][0]
    assert (a["status"], a["error_code"], a["metrics"]) == ("missing", "E_MISSING_PREDICTION", {})
    assert report.to_dict()["per_class"]["1"]["pooled"]["dice"] == pytest.approx(2 / 3)

    data = segeval.evaluate({"b": PRED_B}, references, missing="empty").to_dict()
    a = data["cases"][0]
    assert a["status"] == "missing" and a["error_code"] is None
    assert counts(a["metrics"]["1"]) == (0, 0, 4, 12)
    # class 1 pooled: a adds FN 4 to b's TP 1 FP 1 → 2/(2+1+4)
    assert data["per_class"]["1"]["pooled"]["dice"] == pytest.approx(2 / 7)

    data = segeval.evaluate({"b": PRED_B}, references, missing="skip").to_dict()
    assert data["cases"][0]["error_code"] is None and data["cases"][0]["metrics"] == {}
    assert data["summary"]["n_scored"] == 1


def test_prediction_without_reference_is_listed():
    report = segeval.evaluate({"a": PRED_A, "z": PRED_A}, {"a": REF_A})
    assert report.unmatched_predictions == ["z"]
    assert len(report.cases) == 1


@pytest.mark.parametrize("options", [
    {"empty": "maybe"}, {"threshold": 1.5}, {"beta": 0}, {"smooth": -1}, {"labels": []},
    {"multilabel": True}, {"regions": {"1": [1]}}, {"nonsense": 1},
])
def test_bad_options_raise_usage_error(options):
    with pytest.raises(UsageError):
        segeval.evaluate(PRED_A, REF_A, **options)


def test_bad_device_is_usage_error():
    with pytest.raises(UsageError):
        segeval.evaluate(PRED_A, REF_A, device="tpu")


def test_json_is_strict(validate):
    text = segeval.evaluate({"a": PRED_A, "b": PRED_B}, {"a": REF_A, "b": REF_B}).to_json()
    assert "NaN" not in text
    validate(text)


def test_headline_choice():
    report = segeval.evaluate({"a": PRED_A, "b": PRED_B}, {"a": REF_A, "b": REF_B},
                              headline="micro", headline_metric="iou")
    assert report.headline == pytest.approx(5 / 10)
    assert math.isfinite(report.headline)


def test_invalid_prediction_scored_as_empty_when_asked():
    bad = np.array([[0.2, np.nan, 0.1, 0.0]] * 4)
    report = segeval.evaluate({"a": bad, "b": PRED_B}, {"a": REF_A, "b": REF_B},
                              invalid="empty")
    a, b = report.to_dict()["cases"]
    assert a["status"] == "error" and a["error_code"] == "E_NAN"
    assert "scored as an empty prediction" in a["message"]
    assert counts(a["metrics"]["1"]) == (0, 0, 4, 12)  # every reference voxel missed
    assert counts(a["metrics"]["2"]) == (0, 0, 4, 12)
    # pooled class 1: a adds FN 4 to b's TP 1 FP 1
    assert report.to_dict()["per_class"]["1"]["pooled"]["dice"] == pytest.approx(2 / 7)
    assert [c.id for c in report.invalid_cases] == ["a"]  # still reported as invalid


def test_invalid_prediction_file_scored_as_empty(png_folders):
    from tests.conftest import write_png

    pred, gt = png_folders
    write_png(pred / "a.png", np.zeros((5, 5)))  # wrong shape
    data = segeval.evaluate(pred, gt, invalid="empty").to_dict()
    a = data["cases"][0]
    assert a["error_code"] == "E_SHAPE_MISMATCH" and a["scored"]
    assert counts(a["metrics"]["1"]) == (0, 0, 4, 12)
    data = segeval.evaluate(pred, gt).to_dict()  # default: excluded
    assert not data["cases"][0]["scored"] and data["summary"]["n_scored"] == 1
