"""Exports: nnU-Net v2's summary.json and Grand Challenge's metrics.json.

The nnU-Net layout is checked against the report and against an oracle that follows
nnU-Net's ``compute_metrics_on_folder`` on the raw arrays (boolean masks per label or
region; Dice/IoU NaN when TP+FP+FN = 0; ``np.nanmean`` over cases; ``np.mean`` over the
non-background keys).
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

import segeval
from segeval.errors import UsageError
from segeval.outputs.export import (
    NNUNET_METRICS,
    to_grand_challenge_metrics,
    to_nnunet_summary,
    write_export,
)
from tests.test_api import PRED_A, PRED_B, REF_A, REF_B
from tests.test_gates import NAMES

PREDS = {"a": PRED_A, "b": PRED_B}
REFS = {"a": REF_A, "b": REF_B}


def nnunet_oracle(preds, refs, labels_or_regions):
    """nnU-Net v2's numbers, computed its way (evaluate_predictions.compute_metrics)."""
    def mask(segmentation, r):
        return np.isin(segmentation, r if isinstance(r, tuple) else (r,))

    per_case = []
    for case in preds:
        metrics = {}
        for r in labels_or_regions:
            ref, pred = mask(refs[case], r), mask(preds[case], r)
            tp, fp = int(np.sum(ref & pred)), int(np.sum(~ref & pred))
            fn, tn = int(np.sum(ref & ~pred)), int(np.sum(~ref & ~pred))
            empty = tp + fp + fn == 0
            metrics[str(r)] = {
                "Dice": np.nan if empty else 2 * tp / (2 * tp + fp + fn),
                "IoU": np.nan if empty else tp / (tp + fp + fn),
                "FP": fp, "TP": tp, "FN": fn, "TN": tn, "n_pred": fp + tp, "n_ref": fn + tp}
        per_case.append(metrics)
    mean = {str(r): {m: float(np.nanmean([c[str(r)][m] for c in per_case]))
                     for m in NNUNET_METRICS} for r in labels_or_regions}
    foreground = {m: float(np.mean([mean[k][m] for k in mean if k != "0"]))
                  for m in NNUNET_METRICS}
    return per_case, mean, foreground


def same(ours, theirs) -> bool:
    if ours is None:
        return math.isnan(theirs)
    return ours == pytest.approx(theirs)


@pytest.fixture(scope="module")
def report() -> dict:
    return segeval.evaluate(PREDS, REFS, label_names=NAMES).to_dict()


def test_nnunet_layout_and_values(report):
    summary = to_nnunet_summary(report)
    assert set(summary) == {"metric_per_case", "mean", "foreground_mean"}
    first = summary["metric_per_case"][0]
    assert set(first) == {"metrics", "prediction_file", "reference_file"}
    assert first["prediction_file"] == report["cases"][0]["prediction"]
    assert first["reference_file"] == report["cases"][0]["reference"]
    assert list(first["metrics"]) == ["1", "2"]
    assert list(first["metrics"]["1"]) == list(NNUNET_METRICS)
    # By hand (test_gates.py): case a class 1 TP 3 FP 0 FN 1 TN 12.
    assert first["metrics"]["1"] == {"Dice": pytest.approx(6 / 7), "IoU": 0.75, "FP": 0,
                                     "TP": 3, "FN": 1, "TN": 12, "n_pred": 3, "n_ref": 4}
    second = summary["metric_per_case"][1]["metrics"]["2"]
    assert second["Dice"] is None and second["IoU"] is None     # empty in case b
    # The report's values: per-case Dice, per-class case mean.
    assert first["metrics"]["2"]["Dice"] == report["cases"][0]["metrics"]["2"]["dice"]
    assert summary["mean"]["1"]["Dice"] == report["per_class"]["1"]["mean"]["dice"]
    assert summary["mean"]["2"]["Dice"] == pytest.approx(0.4)   # nanmean: case a only
    assert summary["mean"]["1"]["TP"] == (3 + 1) / 2
    assert summary["mean"]["2"]["n_ref"] == (4 + 0) / 2
    assert summary["foreground_mean"]["Dice"] == \
        pytest.approx(report["summary"]["macro_imagewise"]["dice"])
    json.dumps(summary, allow_nan=False)


def test_nnunet_matches_nnunets_own_computation(report):
    summary = to_nnunet_summary(report)
    per_case, mean, foreground = nnunet_oracle(PREDS, REFS, [1, 2])
    for ours, theirs in zip(summary["metric_per_case"], per_case, strict=True):
        for key in theirs:
            assert all(same(ours["metrics"][key][m], theirs[key][m]) for m in NNUNET_METRICS)
    for key in mean:
        assert all(same(summary["mean"][key][m], mean[key][m]) for m in NNUNET_METRICS)
    assert all(same(summary["foreground_mean"][m], foreground[m]) for m in NNUNET_METRICS)


def test_nnunet_region_keys_and_background():
    data = segeval.evaluate(PREDS, REFS, labels=[0, 1, 2], include_background=True,
                            regions={"whole": [1, 2]}).to_dict()
    summary = to_nnunet_summary(data)
    assert list(summary["mean"]) == ["0", "1", "2", "(1, 2)"]
    per_case, mean, foreground = nnunet_oracle(PREDS, REFS, [0, 1, 2, (1, 2)])
    assert str((1, 2)) == "(1, 2)"
    for key in mean:
        assert all(same(summary["mean"][key][m], mean[key][m]) for m in NNUNET_METRICS)
    # foreground_mean leaves key "0" out, as nnU-Net does
    assert all(same(summary["foreground_mean"][m], foreground[m]) for m in NNUNET_METRICS)
    # region (1, 2) in case a: reference 8 pixels, prediction 4, all inside: Dice 8/12
    assert summary["metric_per_case"][0]["metrics"]["(1, 2)"]["Dice"] == pytest.approx(8 / 12)


def test_nnunet_foreground_mean_undefined_when_a_class_mean_is():
    data = segeval.evaluate(PREDS, REFS, labels=[1, 2, 3]).to_dict()   # 3: in no mask
    summary = to_nnunet_summary(data)
    assert summary["mean"]["3"]["Dice"] is None
    assert summary["foreground_mean"]["Dice"] is None                 # np.mean over a NaN
    assert summary["foreground_mean"]["TP"] == pytest.approx((2 + 0.5 + 0) / 3)
    json.dumps(summary, allow_nan=False)


def test_nnunet_leaves_out_unscored_cases():
    data = segeval.evaluate({**PREDS, "c": np.ones((3, 3), int)}, {**REFS, "c": REF_A}) \
        .to_dict()
    summary = to_nnunet_summary(data)
    assert [c["reference_file"] for c in summary["metric_per_case"]] == \
        ["reference['a']", "reference['b']"]


def test_nnunet_refuses_indistinguishable_regions():
    data = segeval.evaluate(PREDS, REFS, regions={"x": [1, 2], "y": [1, 2]}).to_dict()
    with pytest.raises(UsageError, match="x, y have the same labels"):
        to_nnunet_summary(data)


def test_grand_challenge(report):
    metrics = to_grand_challenge_metrics(report)
    assert set(metrics) == {"case", "aggregates"}
    assert list(metrics["case"]) == ["a", "b"]
    assert metrics["case"]["a"]["metrics"]["1"]["dice"] == pytest.approx(6 / 7)
    assert metrics["case"]["b"]["status"] == "ok"
    aggregates = metrics["aggregates"]
    assert aggregates["macro"]["dice"] == pytest.approx(0.6)
    assert aggregates["micro"]["dice"] == pytest.approx(2 / 3)
    assert aggregates["macro_imagewise"] == report["summary"]["macro_imagewise"]
    assert aggregates["headline"] == {"metric": "dice", "reduction": "macro",
                                      "value": pytest.approx(0.6)}
    assert aggregates["per_class"]["2"]["name"] == "tumour"
    assert aggregates["per_class"]["2"]["pooled"]["dice"] == pytest.approx(0.4)
    assert (aggregates["n_cases"], aggregates["n_scored"], aggregates["n_invalid"]) == (2, 2, 0)
    json.dumps(metrics, allow_nan=False)


def test_write_export(tmp_path, report):
    write_export(report, "nnunet", tmp_path / "summary.json")
    write_export(report, "grand-challenge", tmp_path / "metrics.json")
    assert json.loads((tmp_path / "summary.json").read_text()) == \
        json.loads(json.dumps(to_nnunet_summary(report)))
    assert "aggregates" in json.loads((tmp_path / "metrics.json").read_text())
    with pytest.raises(UsageError, match="nnunet, grand-challenge"):
        write_export(report, "csv", tmp_path / "x.json")
