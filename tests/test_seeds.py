"""The worked numbers of ../shared/CONTEXT.md, reproduced through segeval.evaluate."""

from __future__ import annotations

import numpy as np
import pytest

import segeval

# seed 000_7e10b580f4227f61.txt: [batch, num_class] multi-label rows
SEED000_TRUE = np.array([[1, 0, 1, 0], [0, 1, 0, 1], [1, 1, 0, 0]])
SEED000_PRED = np.array([[1, 1, 0, 0], [0, 1, 1, 0], [1, 0, 0, 1]])

# seed 003_881c4b5b842dfd13.txt: a 2x3x3 batch of probabilities and binary targets
SEED003_INPUT = np.array([
    [[0.2656, 0.4492, 0.3135], [0.8917, 0.2472, 0.4546], [0.3573, 0.1485, 0.3700]],
    [[0.7022, 0.3999, 0.5945], [0.2945, 0.3459, 0.6240], [0.4438, 0.7022, 0.7051]],
])
SEED003_TARGET = np.array([
    [[1, 0, 0], [0, 0, 1], [1, 0, 0]],
    [[1, 0, 1], [1, 1, 1], [0, 1, 1]],
])


def test_seed000_per_class_then_macro_is_0625_and_global_is_05(validate):
    # each row is one case whose 4 "voxels" are the 4 classes as channels
    data = validate(segeval.evaluate(list(SEED000_PRED), list(SEED000_TRUE), channel_axis=0,
                                     multilabel=True).to_dict())
    per_class = [data["per_class"][str(c)]["pooled"]["dice"] for c in range(4)]
    assert per_class == pytest.approx([1.0, 0.5, 0.0, 0.0])
    assert 1 - data["summary"]["macro"]["dice"] == pytest.approx(0.625)  # dim=0 answer
    assert 1 - data["summary"]["micro"]["dice"] == pytest.approx(0.5)  # dim=(0,1) answer
    assert data["summary"]["micro"]["tp"] == 3
    assert data["summary"]["micro"]["tp"] * 2 + data["summary"]["micro"]["fp"] \
        + data["summary"]["micro"]["fn"] == 12


def test_seed003_per_image_versus_pooled_with_smoothing_1():
    data = segeval.evaluate(list(SEED003_INPUT), list(SEED003_TARGET), soft=True,
                            smooth=1.0).to_dict()
    per_image = [case["metrics"]["1"]["dice"] for case in data["cases"]]
    assert per_image == pytest.approx([0.4208, 0.6975], abs=5e-5)
    assert 1 - data["per_class"]["1"]["mean"]["dice"] == pytest.approx(0.4408, abs=5e-5)
    assert 1 - data["per_class"]["1"]["pooled"]["dice"] == pytest.approx(0.4256, abs=5e-5)


def test_seed003_without_smoothing():
    data = segeval.evaluate(list(SEED003_INPUT), list(SEED003_TARGET), soft=True).to_dict()
    per_image = [case["metrics"]["1"]["dice"] for case in data["cases"]]
    assert per_image == pytest.approx([0.3317, 0.6719], abs=5e-5)
    assert data["per_class"]["1"]["pooled"]["dice"] == pytest.approx(0.5512, abs=5e-5)


def test_seed003_soft_counts_by_hand():
    # image 1: Σp·g = 0.2656 + 0.4546 + 0.3573, Σp over all 9, Σg = 3
    data = segeval.evaluate(list(SEED003_INPUT), list(SEED003_TARGET), soft=True).to_dict()
    case = data["cases"][0]["metrics"]["1"]
    intersection = 0.2656 + 0.4546 + 0.3573
    assert case["tp"] == pytest.approx(intersection)
    assert case["fp"] == pytest.approx(SEED003_INPUT[0].sum() - intersection)
    assert case["fn"] == pytest.approx(3 - intersection)


def test_seed004_soft_dice_loss():
    data = segeval.evaluate(np.array([0.9, 0.1, 0.8, 0.7]), np.array([1, 0, 1, 1]),
                            soft=True, smooth=1.0).to_dict()
    assert 1 - data["summary"]["macro"]["dice"] == pytest.approx(0.10769, abs=5e-6)


def test_seed001_softmax_then_per_channel_threshold():
    # seed 001: logits (N, C, H, W) → softmax over C → p > 0.5 per channel → TP/FP/FN per
    # class over batch and pixels.  Two 1x2 images, 3 channels, reference as labels.
    logits = np.array([
        [[[2.0, 0.1]], [[0.5, 0.2]], [[0.1, 3.0]]],
        [[[0.0, 0.0]], [[4.0, 0.0]], [[0.0, 0.1]]],
    ])
    reference = np.array([[[0, 2]], [[1, 0]]])
    probabilities = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    expected = {}
    for c in range(3):
        p = probabilities[:, c] > 0.5
        g = reference == c
        expected[c] = (int((p & g).sum()), int((p & ~g).sum()), int((~p & g).sum()))
    data = segeval.evaluate(list(logits), list(reference), channel_axis=0, logits="softmax",
                            multilabel=True).to_dict()
    for c in range(3):
        block = data["per_class"][str(c)]["pooled"]
        assert (block["tp"], block["fp"], block["fn"]) == expected[c]
