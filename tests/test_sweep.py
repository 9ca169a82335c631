"""Threshold sweeps: one pass per case must equal evaluating at each threshold alone."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

import segeval
from segeval.commands.app import app
from segeval.commands.options import parse_threshold as _parse_threshold
from segeval.engines.numpy_backend import NumpyBackend
from segeval.engines.torch_backend import TorchBackend

THRESHOLDS = [0.1, 0.25, 0.3, 0.5, 0.7, 0.9]


def separately(predictions, references, thresholds, **options):
    """The oracle: one full evaluation per threshold."""
    return [segeval.evaluate(predictions, references, threshold=t, **options).to_dict()
            for t in thresholds]


def assert_sweep_matches(sweep, oracle, metric="dice"):
    for j, data in enumerate(oracle):
        for name in ("macro", "micro", "macro_imagewise"):
            assert sweep["summary"][name][metric][j] == pytest.approx(
                data["summary"][name][metric], nan_ok=True, rel=1e-12)
        for key, block in sweep["per_class"].items():
            assert block["pooled"][metric][j] == pytest.approx(
                data["per_class"][key]["pooled"][metric], nan_ok=True, rel=1e-12)
            assert block["mean"][metric][j] == pytest.approx(
                data["per_class"][key]["mean"][metric], nan_ok=True, rel=1e-12)


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
def test_binary_sweep_equals_each_threshold_alone(dtype, validate):
    rng = np.random.default_rng(3)
    references = [(rng.random((9, 7)) < 0.4).astype(np.uint8) for _ in range(4)]
    predictions = [rng.random((9, 7)).astype(dtype) for _ in range(4)]
    # adversarial: values exactly at (the float's rounding of) each threshold, and 0 / ~1
    for t in THRESHOLDS:
        predictions[0].flat[int(t * 60)] = dtype(t)
    predictions[1][0, :3] = [0.0, 0.999, dtype(0.3)]
    data = validate(segeval.evaluate(predictions, references, sweep=THRESHOLDS,
                                     include_background=True).to_dict())
    oracle = separately(predictions, references, THRESHOLDS, include_background=True)
    assert data["sweep"]["thresholds"] == THRESHOLDS
    for metric in ("dice", "iou", "precision", "recall", "specificity"):
        assert_sweep_matches(data["sweep"], oracle, metric)


@settings(max_examples=40, deadline=None)
@given(st.lists(st.floats(0, 1, width=32), min_size=1, max_size=30),
       st.lists(st.sampled_from([0.0, 0.1, 0.2, 0.5, 0.75, 0.99]), min_size=1, max_size=6))
def test_sweep_property(values, thresholds):
    probability = np.array(values, dtype=np.float32)
    reference = (np.arange(len(values)) % 3 == 0).astype(np.uint8)
    thresholds = sorted(set(thresholds))
    sweep = NumpyBackend().sweep_counts(reference[None].astype(bool), probability[None],
                                        np.asarray(thresholds), None)
    for j, t in enumerate(thresholds):
        above = probability.astype(np.float64) > t
        g = reference.astype(bool)
        expected = [(above & g).sum(), (above & ~g).sum(), (~above & g).sum(),
                    (~above & ~g).sum()]
        assert sweep[:, j, 0].tolist() == expected


def test_multilabel_channels_sweep_and_torch_agree():
    rng = np.random.default_rng(5)
    references = [(rng.random((3, 6, 5)) < 0.3).astype(np.uint8) for _ in range(3)]
    predictions = [rng.random((3, 6, 5)).astype(np.float32) for _ in range(3)]
    options = {"channel_axis": 0, "multilabel": True}
    data = segeval.evaluate(predictions, references, sweep=THRESHOLDS, **options).to_dict()
    assert_sweep_matches(data["sweep"], separately(predictions, references, THRESHOLDS,
                                                   **options))
    ref = references[0].astype(bool)
    numpy_counts = NumpyBackend().sweep_counts(ref, predictions[0], np.asarray(THRESHOLDS), None)
    torch_counts = TorchBackend("cpu").sweep_counts(
        TorchBackend("cpu").asarray(ref), TorchBackend("cpu").asarray(predictions[0]),
        np.asarray(THRESHOLDS), None)
    assert (numpy_counts == torch_counts).all()


def test_label_map_predictions_give_flat_curves_and_ignore_index_is_respected():
    reference = np.array([[0, 1, 1, 2], [0, 0, 1, 2]])  # 2 = ignored
    labels = np.array([[0, 1, 0, 1], [1, 0, 1, 0]])
    probability = np.array([[0.2, 0.8, 0.4, 0.9], [0.6, 0.1, 0.55, 0.3]])
    data = segeval.evaluate({"a": labels, "b": probability}, {"a": reference, "b": reference},
                            sweep=[0.3, 0.5], ignore_index=2).to_dict()
    a_only = segeval.evaluate(labels, reference, ignore_index=2).to_dict()
    # case a (labels): TP 2 (0,1),(1,2); FP 1 (1,0); FN 1 (0,2); (0,3) is ignored
    assert [a_only["per_class"]["1"]["pooled"][k] for k in ("tp", "fp", "fn")] == [2, 1, 1]
    # case b at t=0.5: p > 0.5 at 0.8, 0.6, 0.55 (0.9 sits on an ignored voxel):
    # TP 2, FP 1, FN 1 → pooled with a: 2·4 / (2·4 + 2 + 2)
    assert data["sweep"]["per_class"]["1"]["pooled"]["dice"][1] == pytest.approx(8 / 12)
    assert data["per_class"]["1"]["pooled"]["dice"] == pytest.approx(8 / 12)
    # at t=0.3 case b also predicts 0.4 (TP) and 0.55: TP 3 FP 1 FN 0; a is unchanged
    assert data["sweep"]["per_class"]["1"]["pooled"]["dice"][0] == pytest.approx(10 / 13)


def test_best_threshold_on_a_hand_built_case():
    # foreground voxels have p = 0.6, 0.7; background 0.2, 0.4, 0.65
    probability = np.array([0.6, 0.7, 0.2, 0.4, 0.65])
    reference = np.array([1, 1, 0, 0, 0])
    data = segeval.evaluate(probability, reference, sweep=[0.3, 0.5, 0.62, 0.66]).to_dict()
    curve = data["sweep"]["per_class"]["1"]["pooled"]["dice"]
    # t=0.3: TP2 FP2 → 4/6; t=0.5: TP2 FP1 → 4/5; t=0.62: TP1 FP1 FN1 → 2/4; t=0.66: TP1 FN1
    assert curve == pytest.approx([4 / 6, 4 / 5, 2 / 4, 2 / 3])
    assert data["sweep"]["per_class"]["1"]["best"] == {"threshold": 0.5,
                                                       "value": pytest.approx(0.8)}
    tie = segeval.evaluate(probability, reference, sweep=[0.45, 0.5]).to_dict()
    assert tie["sweep"]["summary"]["macro"]["best"]["threshold"] == 0.45  # ties: lowest


def test_threshold_option_parsing_and_cli():
    assert _parse_threshold("0.3") == (0.3, [])
    assert _parse_threshold("0.3,0.5,0.7") == (0.5, [0.3, 0.5, 0.7])
    assert _parse_threshold("0.1:0.3:0.1") == (0.5, [0.1, 0.2, 0.3])
    assert len(_parse_threshold("0.1:0.9:0.05")[1]) == 17


def test_cli_sweep_table(tmp_path):
    rng = np.random.default_rng(9)
    gt, pred = tmp_path / "gt", tmp_path / "pred"
    gt.mkdir(), pred.mkdir()
    np.save(gt / "a.npy", (rng.random((8, 8)) < 0.5).astype(np.uint8))
    np.save(pred / "a.npy", rng.random((8, 8)).astype(np.float32))
    result = CliRunner(env={"NO_COLOR": "1", "COLUMNS": "120"}).invoke(
        app, ["dice", str(pred), str(gt), "--threshold", "0.2:0.8:0.2"])
    assert result.exit_code == 0, result.stderr
    assert "Threshold sweep" in result.stdout and "best threshold" in result.stdout
    result = CliRunner().invoke(app, ["dice", str(pred), str(gt), "--threshold", "0.2:x"])
    assert result.exit_code == 2
