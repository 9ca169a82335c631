"""Metric formulas from counts: hand-worked values, smoothing and the empty rules."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from segeval.core.metrics import score, scores


def test_hand_worked_counts():
    # TP=6, FP=2, FN=4, TN=88
    values = scores(6, 2, 4, 88)
    assert values["dice"] == pytest.approx(12 / 18)
    assert values["iou"] == pytest.approx(6 / 12)
    assert values["precision"] == pytest.approx(6 / 8)
    assert values["recall"] == pytest.approx(6 / 10)
    assert values["specificity"] == pytest.approx(88 / 90)
    assert values["fbeta"] == pytest.approx(values["dice"])


def test_fbeta_weighs_recall_for_beta_above_one():
    # β=2: (5·6) / (5·6 + 4·4 + 2) = 30/48
    assert score("fbeta", 6, 2, 4, beta=2.0) == pytest.approx(30 / 48)
    # β=0.5: (1.25·6) / (1.25·6 + 0.25·4 + 2) = 7.5/10.5
    assert score("fbeta", 6, 2, 4, beta=0.5) == pytest.approx(7.5 / 10.5)


def test_smoothing_is_added_once():
    # (2·2 + 1) / (2·2 + 1 + 3 + 1) = 5/9, not the doubled 2(2+1)/(...) form of seed 003
    assert score("dice", 2, 1, 3, smooth=1.0) == pytest.approx(5 / 9)
    assert score("iou", 2, 1, 3, smooth=1.0) == pytest.approx(3 / 7)


@pytest.mark.parametrize("rule,expected", [("nan", math.nan), ("one", 1.0), ("zero", 0.0)])
def test_empty_rule_for_zero_denominators(rule, expected):
    for metric in ("dice", "iou", "fbeta"):
        value = float(score(metric, 0, 0, 0, 10, empty=rule))
        assert (math.isnan(value) and math.isnan(expected)) or value == expected
    # precision undefined when nothing is predicted, recall when nothing is in the reference
    value = float(score("precision", 0, 0, 5, empty=rule))
    assert (math.isnan(value) and math.isnan(expected)) or value == expected
    assert float(score("recall", 0, 0, 5, empty=rule)) == 0.0  # defined: 0/5


def test_smoothing_defines_the_empty_case():
    assert float(score("dice", 0, 0, 0, smooth=1e-5, empty="nan")) == 1.0


def test_vectorised_over_arrays():
    tp = np.array([[1, 0], [2, 0]])
    fp = np.array([[1, 0], [0, 1]])
    fn = np.array([[0, 0], [2, 0]])
    dice = score("dice", tp, fp, fn)
    assert dice.shape == (2, 2)
    np.testing.assert_allclose(dice, [[2 / 3, np.nan], [4 / 6, 0.0]])


def test_counts_beyond_float32_are_exact():
    big = 2**40
    assert score("dice", big, 1, 1) == pytest.approx(2 * big / (2 * big + 2), rel=1e-15)


counts = st.integers(min_value=0, max_value=10**9)


@given(counts, counts, counts, counts)
def test_identities(tp, fp, fn, tn):
    values = scores(tp, fp, fn, tn)
    dice, iou = float(values["dice"]), float(values["iou"])
    if tp + fp + fn == 0:
        assert math.isnan(dice) and math.isnan(iou)
        return
    assert 0.0 <= iou <= dice <= 1.0
    assert dice == pytest.approx(2 * iou / (1 + iou), rel=1e-12)
    assert float(values["fbeta"]) == pytest.approx(dice, rel=1e-12)
    # Dice and IoU are symmetric in prediction and reference (FP ↔ FN)
    assert float(score("dice", tp, fn, fp)) == pytest.approx(dice, rel=1e-12)
    if tp + fp and tp + fn:  # Dice is the harmonic mean of precision and recall
        p, r = float(values["precision"]), float(values["recall"])
        if p + r:
            assert dice == pytest.approx(2 * p * r / (p + r), rel=1e-9)
