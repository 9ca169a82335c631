"""Agreement with an independent implementation: MONAI's compute_dice / compute_iou.

MONAI one-hot encodes both volumes and computes per image and class; segeval counts once.
Conventions differ only where the reference is empty: MONAI (ignore_empty=True) gives NaN
whenever the *reference* is empty, segeval's Dice is undefined only when reference and
prediction are both empty (a false positive on an empty reference scores 0).  Both cases are
checked below.  MONAI is a test dependency; without it this module is skipped with a reason.
"""

from __future__ import annotations

import numpy as np
import pytest

import segeval

monai_metrics = pytest.importorskip("monai.metrics", reason="MONAI is not installed")
torch = pytest.importorskip("torch")

N_CLASSES = 5


def one_hot(labels: np.ndarray) -> torch.Tensor:
    tensor = torch.from_numpy(labels.astype(np.int64))
    return torch.nn.functional.one_hot(tensor, N_CLASSES).movedim(-1, 1).float()


@pytest.fixture
def volumes():
    rng = np.random.default_rng(2024)
    references = rng.integers(0, N_CLASSES, size=(4, 14, 12, 9))
    predictions = np.where(rng.random(references.shape) < 0.7, references,
                           rng.integers(0, N_CLASSES, size=references.shape))
    references[1][references[1] == 4] = 0  # case 1: class 4 absent from the reference...
    predictions[2][predictions[2] == 3] = 0  # case 2: class 3 never predicted
    references[3][references[3] == 2] = 0  # case 3: class 2 absent from both
    predictions[3][predictions[3] == 2] = 0
    return predictions, references


def test_per_case_dice_and_iou_agree_with_monai(volumes):
    predictions, references = volumes
    data = segeval.evaluate(list(predictions), list(references),
                            labels=list(range(1, N_CLASSES))).to_dict()
    ours_dice = np.array([[case["metrics"][str(c)]["dice"] for c in range(1, N_CLASSES)]
                          for case in data["cases"]], dtype=float)
    ours_iou = np.array([[case["metrics"][str(c)]["iou"] for c in range(1, N_CLASSES)]
                         for case in data["cases"]], dtype=float)
    y_pred, y = one_hot(predictions), one_hot(references)
    monai_dice = monai_metrics.compute_dice(y_pred, y, include_background=False).numpy()
    monai_iou = monai_metrics.compute_iou(y_pred, y, include_background=False).numpy()
    reference_present = y[:, 1:].sum(dim=(2, 3, 4)).numpy() > 0
    np.testing.assert_allclose(ours_dice[reference_present], monai_dice[reference_present],
                               rtol=1e-6)
    np.testing.assert_allclose(ours_iou[reference_present], monai_iou[reference_present],
                               rtol=1e-6)
    # where the reference is empty MONAI says NaN; segeval says 0 (false positives) or
    # undefined (both empty)
    assert np.isnan(monai_dice[~reference_present]).all()
    assert ours_dice[1, 3] == 0.0  # case 1, class 4: predicted but not in the reference
    assert np.isnan(ours_dice[3, 1])  # case 3, class 2: in neither


def test_class_means_agree_with_monai_dice_metric(volumes):
    predictions, references = volumes
    data = segeval.evaluate(list(predictions), list(references),
                            labels=list(range(1, N_CLASSES))).to_dict()
    metric = monai_metrics.DiceMetric(include_background=False, reduction="mean_batch")
    metric(one_hot(predictions), one_hot(references))
    monai_mean = metric.aggregate().numpy()
    for index, label in enumerate(range(1, N_CLASSES)):
        # MONAI's per-class batch mean skips NaN (empty reference) entries; segeval's mean
        # skips undefined entries.  They differ only for case 1 / class 4 (a false positive
        # on an empty reference: 0 in segeval, left out by MONAI).
        if label == 4:
            continue
        assert data["per_class"][str(label)]["mean"]["dice"] == pytest.approx(
            float(monai_mean[index]), rel=1e-6)
