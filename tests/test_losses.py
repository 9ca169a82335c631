"""segeval.losses: seed numbers, formulas shared with segeval.core.metrics, gradients, agreement
with the evaluation engine at hard (and soft) predictions, MONAI as an optional oracle,
numerical safety, and a short training run."""

from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

import segeval
from segeval.core.metrics import terms
from segeval.errors import UsageError
from segeval.losses import (
    BCEDiceLoss,
    CEDiceLoss,
    DiceLoss,
    FBetaLoss,
    FocalLoss,
    IoULoss,
    TverskyLoss,
    bce_dice_loss,
    ce_dice_loss,
    dice_loss,
    fbeta_loss,
    fbeta_tversky_weights,
    focal_loss,
    iou_loss,
    soft_counts,
    tversky_loss,
    tversky_terms,
)

REDUCTIONS = ("macro", "micro", "macro_imagewise", "none")

# --------------------------------------------------------------------------------------------
# Seed data (values copied from the articles in /work/shared/seeds)

SEED_004_PRED = [0.9, 0.1, 0.8, 0.7]
SEED_004_TARGET = [1, 0, 1, 1]

SEED_000_TRUE = [[1, 0, 1, 0], [0, 1, 0, 1], [1, 1, 0, 0]]  # [batch, class]
SEED_000_PREDICT = [[1, 1, 0, 0], [0, 1, 1, 0], [1, 0, 0, 1]]

SEED_003_INPUT = [
    [[0.2656, 0.4492, 0.3135], [0.8917, 0.2472, 0.4546], [0.3573, 0.1485, 0.3700]],
    [[0.7022, 0.3999, 0.5945], [0.2945, 0.3459, 0.6240], [0.4438, 0.7022, 0.7051]],
]
SEED_003_TARGET = [
    [[1.0, 0.0, 0.0], [0.0, 0.0, 1.0], [1.0, 0.0, 0.0]],
    [[1.0, 0.0, 1.0], [1.0, 1.0, 1.0], [0.0, 1.0, 1.0]],
]


def seed_004() -> tuple[torch.Tensor, torch.Tensor]:
    """(N=1, C=1, V=4) probabilities and a (1, 4) binary label map."""
    return torch.tensor([[SEED_004_PRED]]), torch.tensor([SEED_004_TARGET])


def seed_003() -> tuple[torch.Tensor, torch.Tensor]:
    """Two 3x3 images, one channel: (2, 1, 3, 3) probabilities, (2, 3, 3) labels."""
    return torch.tensor(SEED_003_INPUT).unsqueeze(1), torch.tensor(SEED_003_TARGET)


class TestSeeds:
    def test_seed_004_soft_dice_and_bce_dice(self):
        pred, target = seed_004()
        smooth = {"smooth_num": 1.0, "smooth_den": 1.0}
        assert DiceLoss(**smooth)(pred, target).item() == pytest.approx(0.10769, abs=5e-6)
        assert BCEDiceLoss(**smooth)(pred, target).item() == pytest.approx(0.15266, abs=5e-6)
        # the parts: BCE 0.19763 (nn.BCELoss), weights 0.5/0.5
        bce_only = bce_dice_loss(pred, target, weight_bce=1.0, weight_dice=0.0)
        assert bce_only.item() == pytest.approx(0.19763, abs=5e-6)
        assert bce_only.item() == pytest.approx(
            F.binary_cross_entropy(pred.flatten(), target.float().flatten()).item())

    def test_seed_000_macro_and_micro(self):
        # [batch, class] tensors are (N, C) with no spatial axis; every column is a class.
        predict, true = torch.tensor(SEED_000_PREDICT).float(), torch.tensor(SEED_000_TRUE)
        macro = dice_loss(predict, true, include_background=True, reduction="macro")
        micro = dice_loss(predict, true, include_background=True, reduction="micro")
        assert macro.item() == pytest.approx(0.625)
        assert micro.item() == pytest.approx(0.5)

    @pytest.mark.parametrize(
        ("smooth", "per_image", "imagewise_loss", "pooled_loss"),
        [(1.0, [0.4208, 0.6975], 0.4408, 0.4256), (0.0, [0.3317, 0.6719], None, 1 - 0.5512)],
    )
    def test_seed_003_per_image_versus_pooled(self, smooth, per_image, imagewise_loss,
                                              pooled_loss):
        pred, target = seed_003()
        options = {"smooth_num": smooth, "smooth_den": smooth}
        dice = 1 - dice_loss(pred, target, reduction="none", **options).flatten()
        assert dice.tolist() == pytest.approx(per_image, abs=5e-5)
        imagewise = dice_loss(pred, target, reduction="macro_imagewise", **options).item()
        assert imagewise == pytest.approx(1 - float(np.mean(per_image)), abs=1e-4)
        if imagewise_loss is not None:
            assert imagewise == pytest.approx(imagewise_loss, abs=5e-5)
        pooled = dice_loss(pred, target, reduction="macro", **options).item()
        assert pooled == pytest.approx(pooled_loss, abs=5e-5)
        # flattening the batch into one image (the article's unsqueeze) is the pooled answer
        assert dice_loss(pred.reshape(1, 1, -1), target.reshape(1, -1),
                         reduction="macro_imagewise", **options).item() == pytest.approx(pooled)

    def test_seed_003_doubled_smoothing_bug(self):
        """The article's ``2 * (I + s) / (P + T + s)`` is smooth_num=2s, smooth_den=s.

        It prints 0.3351 for the (2, 3, 3) tensor (per image) and 0.3738 once a batch axis
        is added (pooled); neither is the Dice loss with smoothing 1 (0.4408 / 0.4256).
        """
        pred, target = seed_003()

        def article(input_, target_):  # the seed's DiceLoss.forward, verbatim in substance
            n = target_.size(0)
            input_flat, target_flat = input_.reshape(n, -1), target_.reshape(n, -1)
            intersection = input_flat * target_flat
            loss = 2 * (intersection.sum(1) + 1) / (input_flat.sum(1) + target_flat.sum(1) + 1)
            return 1 - loss.sum() / n

        buggy = {"smooth_num": 2.0, "smooth_den": 1.0}
        per_image = dice_loss(pred, target, reduction="macro_imagewise", **buggy).item()
        pooled = dice_loss(pred, target, reduction="macro", **buggy).item()
        assert per_image == pytest.approx(0.3351, abs=5e-5)
        assert pooled == pytest.approx(0.3738, abs=5e-5)
        assert per_image == pytest.approx(article(pred[:, 0], target).item(), abs=1e-6)
        assert pooled == pytest.approx(article(pred[:, 0][None], target[None]).item(), abs=1e-6)


# --------------------------------------------------------------------------------------------
# One set of formulas


class TestSharedFormulas:
    counts = (torch.tensor([3.0, 0.5, 7.0]), torch.tensor([1.0, 2.0, 0.0]),
              torch.tensor([2.0, 0.25, 4.0]))

    @pytest.mark.parametrize("beta", [0.5, 1.0, 2.0, 3.0])
    def test_fbeta_is_tversky_with_derived_weights(self, beta):
        tp, fp, fn = self.counts
        alpha, beta_t = fbeta_tversky_weights(beta)
        assert alpha == pytest.approx(1 / (1 + beta**2))
        assert beta_t == pytest.approx(beta**2 / (1 + beta**2))
        num_t, den_t = tversky_terms(tp, fp, fn, alpha, beta_t)
        num_f, den_f = terms("fbeta", tp, fp, fn, beta=beta)
        torch.testing.assert_close(num_t / den_t, num_f / den_f)
        # scaled by 1 + β², the Tversky terms are the metric's own terms
        torch.testing.assert_close(num_t * (1 + beta**2), num_f)
        torch.testing.assert_close(den_t * (1 + beta**2), den_f)

    def test_tversky_special_cases(self):
        tp, fp, fn = self.counts
        for (alpha, beta), metric in [((0.5, 0.5), "dice"), ((1.0, 1.0), "iou"),
                                      ((1.0, 0.0), "precision"), ((0.0, 1.0), "recall")]:
            num_t, den_t = tversky_terms(tp, fp, fn, alpha, beta)
            num_m, den_m = terms(metric, tp, fp, fn)
            torch.testing.assert_close(num_t / den_t, num_m / den_m)

    def test_loss_pairs_agree(self):
        torch.manual_seed(0)
        logits = torch.randn(3, 4, 5, 5, dtype=torch.float64)
        labels = torch.randint(0, 4, (3, 5, 5))
        for reduction in REDUCTIONS:
            common = {"from_logits": True, "reduction": reduction}
            smooth = {"smooth_num": 0.7, "smooth_den": 0.3}
            dice = dice_loss(logits, labels, **common, **smooth)
            torch.testing.assert_close(fbeta_loss(logits, labels, 1.0, **common, **smooth), dice)
            # Tversky counts smoothing in TP units: α = β = ½ is Dice with doubled smoothing
            torch.testing.assert_close(
                tversky_loss(logits, labels, 0.5, 0.5, **common, **smooth),
                dice_loss(logits, labels, **common, smooth_num=1.4, smooth_den=0.6))
            torch.testing.assert_close(tversky_loss(logits, labels, 1.0, 1.0, **common),
                                       iou_loss(logits, labels, **common))
            alpha, beta_t = fbeta_tversky_weights(2.0)
            torch.testing.assert_close(fbeta_loss(logits, labels, 2.0, **common),
                                       tversky_loss(logits, labels, alpha, beta_t, **common))

    def test_soft_counts_are_integer_counts_on_binary_input(self):
        p = torch.tensor([[1.0, 1.0, 0.0, 0.0, 1.0]])
        g = torch.tensor([[1.0, 0.0, 1.0, 0.0, 1.0]])
        for squared in (False, True):
            tp, fp, fn = soft_counts(p, g, squared_denominator=squared)
            assert (tp.item(), fp.item(), fn.item()) == (2.0, 1.0, 1.0)

    def test_squared_denominator_is_the_vnet_form(self):
        torch.manual_seed(1)
        p = torch.rand(2, 1, 7, dtype=torch.float64)
        g = (torch.rand(2, 1, 7) > 0.5).double()
        expected = 1 - 2 * (p * g).sum() / ((p**2).sum() + (g**2).sum())
        torch.testing.assert_close(dice_loss(p, g, squared_denominator=True), expected)
        expected_iou = 1 - (p * g).sum() / ((p**2).sum() + (g**2).sum() - (p * g).sum())
        torch.testing.assert_close(iou_loss(p, g, squared_denominator=True), expected_iou)

    @settings(max_examples=25, deadline=None)
    @given(st.integers(0, 2**31 - 1))
    def test_dice_iou_identity_and_range(self, seed):
        """Dice = 2·IoU/(1 + IoU) holds for soft counts too; every loss lies in [0, 1]."""
        generator = torch.Generator().manual_seed(seed)
        p = torch.rand(2, 3, 6, generator=generator, dtype=torch.float64)
        g = torch.randint(0, 3, (2, 6), generator=generator)
        dice = 1 - dice_loss(p, g, reduction="none", include_background=True)
        iou = 1 - iou_loss(p, g, reduction="none", include_background=True)
        torch.testing.assert_close(dice, 2 * iou / (1 + iou))
        for loss in (DiceLoss, IoULoss, TverskyLoss, FBetaLoss):
            for reduction in REDUCTIONS:
                value = loss(reduction=reduction)(p, g)
                assert bool(((value >= 0) & (value <= 1 + 1e-12)).all())


# --------------------------------------------------------------------------------------------
# Gradients

LOSS_FACTORIES = {
    "dice": lambda **o: DiceLoss(**o),
    "iou": lambda **o: IoULoss(**o),
    "tversky": lambda **o: TverskyLoss(alpha=0.3, beta=0.7, **o),
    "fbeta": lambda **o: FBetaLoss(beta=2.0, **o),
}


class TestGradients:
    @pytest.mark.parametrize("name", sorted(LOSS_FACTORIES))
    @pytest.mark.parametrize("reduction", REDUCTIONS)
    @pytest.mark.parametrize("variant", ["probabilities", "softmax", "sigmoid", "squared"])
    def test_gradcheck_overlap(self, name, reduction, variant):
        torch.manual_seed(2)
        options = {"reduction": reduction, "smooth_num": 0.1, "smooth_den": 0.2,
                   "class_weight": (0.5, 1.0, 2.0)}
        if variant == "probabilities":
            x = torch.rand(2, 3, 4, 3, dtype=torch.float64) * 0.9 + 0.05
            target = torch.randint(0, 3, (2, 4, 3))
        elif variant == "softmax":
            x = torch.randn(2, 3, 4, 3, dtype=torch.float64)
            target = torch.randint(0, 3, (2, 4, 3))
            target[0, 0, 0] = 255
            options.update(from_logits=True, ignore_index=255, include_background=True)
        elif variant == "sigmoid":
            x = torch.randn(2, 3, 4, 3, dtype=torch.float64)
            target = (torch.rand(2, 3, 4, 3) > 0.5).double()
            options.update(from_logits=True, multilabel=True)
        else:
            x = torch.rand(2, 3, 4, 3, dtype=torch.float64)
            target = torch.randint(0, 3, (2, 4, 3))
            options.update(squared_denominator=True, smooth_num=0.0, smooth_den=0.0)
        loss = LOSS_FACTORIES[name](**options)
        x.requires_grad_(True)
        assert torch.autograd.gradcheck(lambda t: loss(t, target), (x,))

    @pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
    @pytest.mark.parametrize("mode", ["binary", "multilabel", "softmax"])
    @pytest.mark.parametrize("from_logits", [True, False])
    def test_gradcheck_focal(self, reduction, mode, from_logits):
        torch.manual_seed(3)
        if mode == "softmax":
            x = torch.randn(2, 3, 5, dtype=torch.float64)
            target = torch.randint(0, 3, (2, 5))
            options = {"alpha": (0.2, 0.3, 0.5)}
        else:
            channels = 1 if mode == "binary" else 3
            x = torch.randn(2, channels, 5, dtype=torch.float64)
            target = (torch.rand(2, channels, 5) > 0.5).double()
            options = {"alpha": 0.25, "multilabel": mode == "multilabel"}
        if not from_logits:
            x = torch.sigmoid(x) if mode != "softmax" else torch.softmax(x, 1)
        x = x.detach().requires_grad_(True)
        loss = FocalLoss(gamma=2.0, from_logits=from_logits, reduction=reduction, **options)
        assert torch.autograd.gradcheck(lambda t: loss(t, target), (x,))

    @pytest.mark.parametrize("compound", ["bce", "ce"])
    def test_gradcheck_compound(self, compound):
        torch.manual_seed(4)
        if compound == "bce":
            x = torch.randn(2, 1, 6, dtype=torch.float64, requires_grad=True)
            target = torch.randint(0, 2, (2, 6))
            loss = BCEDiceLoss(from_logits=True, smooth_num=1.0, smooth_den=1.0)
        else:
            x = torch.randn(2, 3, 6, dtype=torch.float64, requires_grad=True)
            target = torch.randint(0, 3, (2, 6))
            loss = CEDiceLoss(from_logits=True, class_weight=(1.0, 2.0, 3.0))
        assert torch.autograd.gradcheck(lambda t: loss(t, target), (x,))

    @pytest.mark.parametrize("seed", [0, 1, 2])
    def test_dice_gradient_closed_form(self, seed):
        """d/dp_i of 2Σpg/(Σp+Σg) is 2g_i/(Σp+Σg) − 2Σpg/(Σp+Σg)²; the loss is its negative."""
        generator = torch.Generator().manual_seed(seed)
        p = torch.rand(1, 1, 9, generator=generator, dtype=torch.float64, requires_grad=True)
        g = (torch.rand(1, 1, 9, generator=generator) > 0.4).double()
        dice_loss(p, g).backward()
        total, intersection = p.sum() + g.sum(), (p * g).sum()
        expected = -(2 * g / total - 2 * intersection / total**2)
        torch.testing.assert_close(p.grad, expected.detach())


# --------------------------------------------------------------------------------------------
# Agreement with the evaluation engine


def engine_values(report: dict, metric: str, reduction: str, keys: list[str],
                  n_cases: int) -> np.ndarray:
    """1 − the report's score, shaped like the loss under ``reduction``."""
    if reduction == "none":
        rows = [[report["cases"][i]["metrics"][k][metric] for k in keys] for i in range(n_cases)]
        return 1 - np.array(rows, dtype=float)  # null → nan
    return np.array(1 - report["summary"][reduction][metric])


def assert_matches_engine(loss_value: torch.Tensor, expected: np.ndarray) -> None:
    np.testing.assert_allclose(loss_value.detach().double().numpy(), expected, rtol=1e-6,
                               atol=1e-6, equal_nan=True)


def random_label_maps(rng: np.random.Generator, n: int, classes: int, shape=(6, 5)):
    """Reference and prediction label maps with a class missing from some images (both
    sides, so its per-image Dice is undefined) and the last class missing everywhere."""
    reference = rng.integers(0, classes - 1, size=(n, *shape))
    prediction = np.where(rng.random((n, *shape)) < 0.6, reference,
                          rng.integers(0, classes - 1, size=(n, *shape)))
    for maps in (reference, prediction):
        maps[0][maps[0] == 2] = 1
    return reference, prediction


def one_hot(labels: np.ndarray, classes: int) -> torch.Tensor:
    """(N, *spatial) labels → (N, C, *spatial) float64 one-hot (hard probabilities)."""
    return F.one_hot(torch.as_tensor(labels), classes).movedim(-1, 1).double()


OVERLAP_AS_METRIC = [
    ("dice", lambda **o: DiceLoss(**o), {}),
    ("iou", lambda **o: IoULoss(**o), {}),
    ("fbeta", lambda **o: FBetaLoss(beta=2.0, **o), {"beta": 2.0}),
    ("fbeta", lambda **o: FBetaLoss(beta=0.5, **o), {"beta": 0.5}),
]
TVERSKY_AS_METRIC = [
    ("dice", (0.5, 0.5), {}), ("iou", (1.0, 1.0), {}),
    ("fbeta", fbeta_tversky_weights(2.0), {"beta": 2.0}),
    ("precision", (1.0, 0.0), {}), ("recall", (0.0, 1.0), {}),
]


class TestMatchesEngine:
    classes = 5  # labels 0..4; label 4 never occurs

    @pytest.mark.parametrize("include_background", [False, True])
    @pytest.mark.parametrize("smooth", [0.0, 1.0])
    @pytest.mark.parametrize("empty", ["nan", "one", "zero"])
    def test_label_maps_every_reduction(self, include_background, smooth, empty):
        rng = np.random.default_rng(5)
        reference, prediction = random_label_maps(rng, 4, self.classes)
        pred = one_hot(prediction, self.classes)
        target = torch.as_tensor(reference)
        keys = [str(c) for c in range(0 if include_background else 1, self.classes)]
        options = {"include_background": include_background, "empty": empty,
                   "smooth_num": smooth, "smooth_den": smooth}
        for metric, factory, metric_options in OVERLAP_AS_METRIC:
            report = segeval.evaluate(
                list(prediction), list(reference), labels=list(range(1, self.classes)),
                include_background=include_background, smooth=smooth, empty=empty,
                **metric_options).to_dict()
            for reduction in REDUCTIONS:
                value = factory(reduction=reduction, **options)(pred, target)
                expected = engine_values(report, metric, reduction, keys, len(reference))
                if empty == "nan" and reduction != "none" and np.isnan(expected):
                    continue  # the engine's NaN (nothing defined) is the loss's 0
                assert_matches_engine(value, expected)

    def test_tversky_special_cases_every_reduction(self):
        rng = np.random.default_rng(6)
        reference, prediction = random_label_maps(rng, 3, self.classes)
        pred, target = one_hot(prediction, self.classes), torch.as_tensor(reference)
        keys = [str(c) for c in range(1, self.classes)]
        for metric, (alpha, beta), metric_options in TVERSKY_AS_METRIC:
            report = segeval.evaluate(list(prediction), list(reference),
                                      labels=list(range(1, self.classes)),
                                      **metric_options).to_dict()
            for reduction in REDUCTIONS:
                value = tversky_loss(pred, target, alpha, beta, reduction=reduction)
                assert_matches_engine(value, engine_values(report, metric, reduction, keys, 3))

    def test_multilabel_channels(self):
        rng = np.random.default_rng(7)
        reference = rng.random((3, 4, 5, 6)) < 0.3
        prediction = np.where(rng.random((3, 4, 5, 6)) < 0.7, reference,
                              rng.random((3, 4, 5, 6)) < 0.3)
        reference[1, 2], prediction[1, 2] = False, False  # class 2 absent from image 1
        pred, target = torch.as_tensor(prediction).double(), torch.as_tensor(reference)
        keys = [str(c) for c in range(4)]
        report = segeval.evaluate([p.astype(np.uint8) for p in prediction],
                                  [r.astype(np.uint8) for r in reference], channel_axis=0,
                                  multilabel=True, labels=list(range(4))).to_dict()
        for metric, factory, _ in OVERLAP_AS_METRIC[:2]:
            for reduction in REDUCTIONS:
                value = factory(reduction=reduction, multilabel=True)(pred, target)
                assert_matches_engine(value, engine_values(report, metric, reduction, keys, 3))

    def test_ignore_index(self):
        rng = np.random.default_rng(8)
        reference, prediction = random_label_maps(rng, 3, 4)
        reference[:, 0, :] = 255
        pred, target = one_hot(prediction, 4), torch.as_tensor(reference)
        report = segeval.evaluate(list(prediction), list(reference), labels=[1, 2, 3],
                                  ignore_index=255).to_dict()
        for reduction in REDUCTIONS:
            value = dice_loss(pred, target, reduction=reduction, ignore_index=255)
            expected = engine_values(report, "dice", reduction, ["1", "2", "3"], 3)
            assert_matches_engine(value, expected)

    @pytest.mark.parametrize("reduction", REDUCTIONS)
    def test_soft_probabilities(self, reduction):
        """Soft losses are 1 − the engine's soft scores (``soft=True``), not only at 0/1."""
        torch.manual_seed(9)
        probability = torch.softmax(torch.randn(3, 4, 5, 6, dtype=torch.float64), dim=1)
        labels = torch.randint(0, 4, (3, 5, 6))
        report = segeval.evaluate(list(probability.numpy()), list(labels.numpy()), soft=True,
                                  channel_axis=0, labels=[1, 2, 3]).to_dict()
        for metric, factory, _ in OVERLAP_AS_METRIC[:2]:
            value = factory(reduction=reduction)(probability, labels)
            assert_matches_engine(value, engine_values(report, metric, reduction,
                                                       ["1", "2", "3"], 3))


# --------------------------------------------------------------------------------------------
# Independent implementations


class TestHandDerived:
    def test_class_weights(self):
        torch.manual_seed(10)
        p = torch.rand(2, 3, 8, dtype=torch.float64)
        g = torch.randint(0, 3, (2, 8))
        w = (0.0, 1.0, 3.0)
        per_class = 1 - dice_loss(p, g, reduction="none", include_background=True)
        pooled = [dice_loss(p[:, c:c + 1], (g == c).long(), reduction="macro") for c in range(3)]
        expected_macro = sum(wc * lc for wc, lc in zip(w, pooled, strict=True)) / sum(w)
        torch.testing.assert_close(
            dice_loss(p, g, include_background=True, class_weight=w), expected_macro)
        expected_imagewise = ((1 - per_class).mean(0) * torch.tensor(w)).sum() / sum(w)
        torch.testing.assert_close(
            dice_loss(p, g, include_background=True, class_weight=w,
                      reduction="macro_imagewise"), expected_imagewise)
        onehot = F.one_hot(g, 3).movedim(-1, 1).double()
        wt = torch.tensor(w, dtype=torch.float64).view(1, 3, 1)
        expected_micro = 1 - 2 * (wt * p * onehot).sum() / ((wt * p).sum() + (wt * onehot).sum())
        torch.testing.assert_close(
            dice_loss(p, g, include_background=True, class_weight=w, reduction="micro"),
            expected_micro)
        # background dropped: its weight is given (one per channel) and unused
        torch.testing.assert_close(dice_loss(p, g, class_weight=(100.0, 1.0, 3.0)),
                                   (pooled[1] + 3 * pooled[2]) / 4)

    def test_ignore_index_equals_dropping_the_voxels(self):
        torch.manual_seed(11)
        logits = torch.randn(1, 3, 10, dtype=torch.float64)
        labels = torch.randint(0, 3, (1, 10))
        labels[0, :3] = -1
        kept = slice(3, None)
        for fn in (dice_loss, iou_loss):
            torch.testing.assert_close(
                fn(logits, labels, from_logits=True, ignore_index=-1),
                fn(logits[..., kept], labels[..., kept], from_logits=True))
        torch.testing.assert_close(
            focal_loss(logits, labels, from_logits=True, ignore_index=-1),
            focal_loss(logits[..., kept], labels[..., kept], from_logits=True))

    def test_cross_entropy_parts_match_torch(self):
        torch.manual_seed(12)
        logits = torch.randn(2, 3, 4, 4, dtype=torch.float64)
        labels = torch.randint(0, 3, (2, 4, 4))
        labels[0, 0] = 7
        weight = (0.2, 1.0, 3.0)
        ce = ce_dice_loss(logits, labels, weight_ce=1.0, weight_dice=0.0, from_logits=True,
                          ignore_index=7, class_weight=weight)
        torch.testing.assert_close(ce, F.cross_entropy(
            logits, labels, weight=torch.tensor(weight, dtype=torch.float64), ignore_index=7))
        binary = torch.randn(2, 1, 4, 4, dtype=torch.float64)
        masks = torch.randint(0, 2, (2, 4, 4))
        torch.testing.assert_close(
            bce_dice_loss(binary, masks, weight_bce=1.0, weight_dice=0.0, from_logits=True),
            F.binary_cross_entropy_with_logits(binary[:, 0], masks.double()))

    def test_focal_softmax_matches_seed_003_implementation(self):
        """Seed 003's FocalLoss (clcarwin): log_softmax, gather the target, α gathered."""
        torch.manual_seed(13)
        logits = torch.rand(2, 10, 3, 4, dtype=torch.float64) * 5
        labels = (torch.rand(2, 3, 4) * 10).long()
        alpha = torch.rand(10, dtype=torch.float64)

        def seed_focal(input_, target, gamma, alpha_):
            input_ = input_.reshape(input_.size(0), input_.size(1), -1).transpose(1, 2)
            input_ = input_.reshape(-1, input_.size(2))
            target = target.reshape(-1, 1)
            logpt = F.log_softmax(input_, dim=1).gather(1, target).view(-1)
            pt = logpt.exp()
            if alpha_ is not None:
                logpt = logpt * alpha_.gather(0, target.view(-1))
            return (-1 * (1 - pt) ** gamma * logpt).mean()

        ours = focal_loss(logits, labels, gamma=2.0, alpha=alpha.tolist(), from_logits=True)
        torch.testing.assert_close(ours, seed_focal(logits, labels, 2.0, alpha))
        torch.testing.assert_close(focal_loss(logits, labels, gamma=0.0, from_logits=True),
                                   F.cross_entropy(logits, labels))
        # from probabilities, the same numbers
        torch.testing.assert_close(
            focal_loss(torch.softmax(logits, 1), labels, gamma=2.0, alpha=alpha.tolist()), ours)

    def test_focal_sigmoid_per_element_loop(self):
        """Binary focal with per-channel α, against a plain Python loop over elements."""
        torch.manual_seed(14)
        logits = torch.randn(2, 2, 5, dtype=torch.float64)
        target = (torch.rand(2, 2, 5) > 0.5).double()
        alpha, gamma = (0.25, 0.6), 1.5
        total = 0.0
        for n in range(2):
            for c in range(2):
                for v in range(5):
                    p = 1 / (1 + math.exp(-logits[n, c, v].item()))
                    y = target[n, c, v].item()
                    p_t = p if y == 1 else 1 - p
                    a_t = alpha[c] if y == 1 else 1 - alpha[c]
                    total += -a_t * (1 - p_t) ** gamma * math.log(p_t)
        ours = focal_loss(logits, target, gamma=gamma, alpha=alpha, from_logits=True,
                          multilabel=True)
        assert ours.item() == pytest.approx(total / 20, rel=1e-10)
        torch.testing.assert_close(
            focal_loss(logits, target, gamma=0.0, from_logits=True, multilabel=True),
            F.binary_cross_entropy_with_logits(logits, target))


class TestMonai:
    """MONAI 1.x as an oracle.  Parameters that mean the same thing are set equal; where the
    conventions differ the test states the conversion (see docs/losses.md)."""

    @pytest.fixture(autouse=True)
    def monai_losses(self):
        return pytest.importorskip("monai.losses", reason="MONAI is an optional test oracle")

    def data(self, channels=4):
        torch.manual_seed(15)
        logits = torch.randn(3, channels, 6, 5, dtype=torch.float64)
        labels = torch.randint(0, channels, (3, 1, 6, 5))
        return logits, labels

    @pytest.mark.parametrize("include_background", [True, False])
    @pytest.mark.parametrize("squared", [False, True])
    @pytest.mark.parametrize(("reduction", "batch"), [("macro", True),
                                                      ("macro_imagewise", False)])
    def test_dice(self, monai_losses, include_background, squared, reduction, batch):
        logits, labels = self.data()
        theirs = monai_losses.DiceLoss(
            include_background=include_background, to_onehot_y=True, softmax=True,
            squared_pred=squared, batch=batch, smooth_nr=1e-5, smooth_dr=1e-5)(logits, labels)
        ours = dice_loss(logits, labels[:, 0], from_logits=True, reduction=reduction,
                         include_background=include_background, squared_denominator=squared,
                         smooth_num=1e-5, smooth_den=1e-5)
        torch.testing.assert_close(ours, theirs)

    def test_dice_sigmoid_and_class_weight(self, monai_losses):
        logits, _ = self.data()
        target = (torch.rand(3, 4, 6, 5) > 0.6).double()
        w = [0.5, 1.0, 2.0, 4.0]
        theirs = monai_losses.DiceLoss(sigmoid=True, batch=True, weight=w)(logits, target)
        ours = dice_loss(logits, target, from_logits=True, multilabel=True, smooth_num=1e-5,
                         smooth_den=1e-5, class_weight=w)
        # MONAI multiplies by the weights and takes the plain mean; segeval normalises by Σw
        torch.testing.assert_close(ours, theirs * len(w) / sum(w))

    def test_jaccard(self, monai_losses):
        logits, labels = self.data()
        s = 1e-3
        theirs = monai_losses.DiceLoss(to_onehot_y=True, softmax=True, jaccard=True, batch=True,
                                       smooth_nr=s, smooth_dr=s)(logits, labels)
        # MONAI writes IoU as (2TP + s)/(2(TP+FP+FN) + s): segeval's smoothing s/2
        ours = iou_loss(logits, labels[:, 0], from_logits=True, include_background=True,
                        smooth_num=s / 2, smooth_den=s / 2)
        torch.testing.assert_close(ours, theirs)

    @pytest.mark.parametrize(("alpha", "beta"), [(0.3, 0.7), (0.7, 0.3), (1.0, 1.0)])
    @pytest.mark.parametrize(("reduction", "batch"), [("macro", True),
                                                      ("macro_imagewise", False)])
    def test_tversky(self, monai_losses, alpha, beta, reduction, batch):
        logits, labels = self.data()
        theirs = monai_losses.TverskyLoss(to_onehot_y=True, softmax=True, alpha=alpha,
                                          beta=beta, batch=batch, include_background=False,
                                          smooth_nr=1e-5, smooth_dr=1e-5)(logits, labels)
        ours = tversky_loss(logits, labels[:, 0], alpha, beta, from_logits=True,
                            reduction=reduction, smooth_num=1e-5, smooth_den=1e-5)
        torch.testing.assert_close(ours, theirs)

    def test_fbeta_via_tversky(self, monai_losses):
        logits, labels = self.data()
        alpha, beta_t = fbeta_tversky_weights(2.0)
        theirs = monai_losses.TverskyLoss(to_onehot_y=True, softmax=True, alpha=alpha,
                                          beta=beta_t, batch=True, smooth_nr=0.0,
                                          smooth_dr=0.0)(logits, labels)
        ours = fbeta_loss(logits, labels[:, 0], 2.0, from_logits=True, include_background=True)
        torch.testing.assert_close(ours, theirs)

    def test_focal_sigmoid(self, monai_losses):
        logits = self.data()[0].float()  # MONAI's focal loss computes in float32
        target = (torch.rand(3, 4, 6, 5) > 0.6).double()
        theirs = monai_losses.FocalLoss(gamma=2.0, alpha=0.25)(logits, target)
        ours = focal_loss(logits, target, gamma=2.0, alpha=0.25, from_logits=True,
                          multilabel=True)
        torch.testing.assert_close(ours, theirs)

    def test_focal_softmax(self, monai_losses):
        logits, labels = self.data()
        logits = logits.float()
        alpha = [0.1, 0.2, 0.3, 0.4]
        theirs = monai_losses.FocalLoss(gamma=2.0, alpha=alpha, use_softmax=True,
                                        to_onehot_y=True)(logits, labels)
        ours = focal_loss(logits, labels[:, 0], gamma=2.0, alpha=alpha, from_logits=True)
        # MONAI's mean runs over N·C·V entries, of which one per voxel is non-zero;
        # segeval's over the N·V voxels
        torch.testing.assert_close(ours, theirs * 4)

    def test_dice_ce(self, monai_losses):
        logits, labels = self.data()
        theirs = monai_losses.DiceCELoss(to_onehot_y=True, softmax=True)(logits, labels)
        # MONAI: λ_dice = λ_ce = 1, per-image Dice with background, smoothing 1e-5
        ours = ce_dice_loss(logits, labels[:, 0], 1.0, 1.0, from_logits=True,
                            reduction="macro_imagewise", include_background=True,
                            smooth_num=1e-5, smooth_den=1e-5)
        torch.testing.assert_close(ours, theirs)


# --------------------------------------------------------------------------------------------
# Numerical safety

ALL_LOSSES = {
    **LOSS_FACTORIES,
    # focal loss has no overlap options (reduction, empty): keep the ones it shares
    "focal": lambda **o: FocalLoss(from_logits=o.get("from_logits", False),
                                   multilabel=o.get("multilabel", False)),
    "bce_dice": lambda **o: BCEDiceLoss(**o),
}


def finite_loss_and_gradient(loss, x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    x = x.detach().requires_grad_(True)
    value = loss(x, target)
    assert torch.isfinite(value).all(), value
    value.sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all(), x.grad
    return value


class TestNumericalSafety:
    @pytest.mark.parametrize("name", sorted(ALL_LOSSES))
    @pytest.mark.parametrize("reduction", ["macro", "micro", "macro_imagewise"])
    @pytest.mark.parametrize("empty", ["nan", "one", "zero"])
    def test_empty_target_and_zero_prediction(self, name, reduction, empty):
        target = torch.zeros(2, 3, 4, 4)
        loss = ALL_LOSSES[name](reduction=reduction, empty=empty, multilabel=True)
        zero = finite_loss_and_gradient(loss, torch.zeros(2, 3, 4, 4), target)
        if name in LOSS_FACTORIES:  # perfect empty prediction: undefined ratio, by the rule
            assert zero.item() == {"nan": 0.0, "one": 0.0, "zero": 1.0}[empty]
        finite_loss_and_gradient(loss, torch.rand(2, 3, 4, 4), target)
        one_empty = target.clone()
        one_empty[0, 1, :2] = 1.0
        finite_loss_and_gradient(loss, torch.zeros(2, 3, 4, 4), one_empty)

    @pytest.mark.parametrize("name", sorted(ALL_LOSSES))
    def test_saturated_logits(self, name):
        x = torch.full((2, 1, 4, 4), -1e4)
        x[0, 0, :2] = 1e4
        target = torch.zeros(2, 4, 4, dtype=torch.long)
        target[0, 2:] = 1
        loss = ALL_LOSSES[name](from_logits=True)
        finite_loss_and_gradient(loss, x, target)

    def test_saturated_softmax_logits(self):
        x = torch.zeros(2, 3, 4, 4)
        x[:, 0] = 1e4
        target = torch.randint(0, 3, (2, 4, 4))
        for loss in (CEDiceLoss(from_logits=True), DiceLoss(from_logits=True),
                     FocalLoss(from_logits=True, alpha=(0.2, 0.4, 0.4))):
            finite_loss_and_gradient(loss, x, target)

    def test_tiny_probabilities(self):
        target = torch.zeros(1, 1, 8)
        target[0, 0, 0] = 1e-30  # soft reference, as small as the prediction
        for p in (torch.full((1, 1, 8), 1e-30), torch.full((1, 1, 8), 1e-38)):
            for loss in (DiceLoss(), IoULoss(squared_denominator=True), TverskyLoss(0.0, 1.0),
                         FocalLoss(gamma=0.5)):
                finite_loss_and_gradient(loss, p, target)

    @pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
    @pytest.mark.parametrize("name", sorted(ALL_LOSSES))
    def test_half_precision_is_computed_in_float32(self, dtype, name):
        torch.manual_seed(16)
        logits = torch.randn(2, 1, 16, 16) * 4
        target = (torch.rand(2, 16, 16) > 0.7).long()
        loss = ALL_LOSSES[name](from_logits=True)
        half = logits.to(dtype).requires_grad_(True)
        value = loss(half, target)
        assert value.dtype == torch.float32
        value.backward()
        assert half.grad is not None and half.grad.dtype == dtype
        assert torch.isfinite(half.grad.float()).all()
        reference = loss(half.detach().float(), target)
        torch.testing.assert_close(value, reference, rtol=1e-6, atol=1e-6)

    def test_autocast_is_switched_off_inside(self):
        torch.manual_seed(17)
        logits = torch.randn(2, 3, 8, 8)
        labels = torch.randint(0, 3, (2, 8, 8))
        with torch.autocast("cpu", dtype=torch.bfloat16):
            value = ce_dice_loss(logits, labels, from_logits=True)
        assert value.dtype == torch.float32
        torch.testing.assert_close(value, ce_dice_loss(logits, labels, from_logits=True))

    def test_large_volume(self):
        """2.4 M voxels in float16: float32 sums stay within 1e-5 of a float64 computation."""
        torch.manual_seed(18)
        logits = (torch.randn(1, 2, 96, 128, 96) * 3).half().requires_grad_(True)
        labels = (torch.rand(1, 96, 128, 96) > 0.8).long()
        options = {"from_logits": True, "include_background": True}
        value = dice_loss(logits, labels, **options)
        value.backward()
        assert logits.grad is not None and torch.isfinite(logits.grad.float()).all()
        exact = dice_loss(logits.detach().double(), labels, **options)
        assert value.item() == pytest.approx(exact.item(), abs=1e-5)


# --------------------------------------------------------------------------------------------
# Options and errors


class TestOptions:
    def test_defaults(self):
        loss = DiceLoss()
        assert loss.options.reduction == "macro"
        assert loss.options.include_background is False
        assert (loss.options.smooth_num, loss.options.smooth_den) == (0.0, 0.0)
        assert loss.options.empty == "nan" and loss.options.from_logits is False
        assert repr(DiceLoss(reduction="micro")) == "DiceLoss(reduction='micro')"

    def test_background_is_a_class_only_among_exclusive_channels(self):
        torch.manual_seed(19)
        p = torch.rand(2, 3, 5, dtype=torch.float64)
        g = (torch.rand(2, 3, 5) > 0.5).double()
        kept = dice_loss(p, g, include_background=True)
        assert dice_loss(p, g).item() != pytest.approx(kept.item())
        torch.testing.assert_close(dice_loss(p, g, multilabel=True), kept)
        one = dice_loss(p[:, :1], g[:, :1])  # a single channel is the foreground
        torch.testing.assert_close(one, dice_loss(p[:, :1], g[:, :1], include_background=True))

    def test_one_channel_reference_may_be_soft(self):
        torch.manual_seed(21)
        p = torch.rand(2, 1, 6, dtype=torch.float64)
        soft = torch.rand(2, 6, dtype=torch.float64)
        expected = 1 - 2 * (p[:, 0] * soft).sum() / (p.sum() + soft.sum())
        torch.testing.assert_close(dice_loss(p, soft), expected)
        torch.testing.assert_close(dice_loss(p, soft), dice_loss(p, soft[:, None]))

    @pytest.mark.parametrize(
        ("call", "message"),
        [
            (lambda: DiceLoss(reduction="mean"), "reduction"),
            (lambda: DiceLoss(smooth_num=-1.0), "smooth_num"),
            (lambda: DiceLoss(empty="ignore"), "empty"),
            (lambda: DiceLoss(smoth=1.0), "unknown option"),
            (lambda: DiceLoss(class_weight=(1.0, -2.0)), "class_weight"),
            (lambda: TverskyLoss(alpha=0.0, beta=0.0), "alpha"),
            (lambda: FBetaLoss(beta=0.0), "beta"),
            (lambda: FocalLoss(alpha=1.5), "alpha"),
            (lambda: FocalLoss(reduction="macro"), "reduction"),
            (lambda: BCEDiceLoss(weight_bce=-1.0), "weight_bce"),
            (lambda: dice_loss(torch.rand(2, 3, 4), torch.zeros(2, 5, dtype=torch.long)),
             "fits neither"),
            (lambda: dice_loss(torch.rand(2, 3, 4), torch.full((2, 4), 3)), "outside"),
            (lambda: dice_loss(torch.rand(2, 1, 4), torch.full((2, 4), 2)), "outside"),
            (lambda: dice_loss(torch.rand(2, 3, 4), torch.full((2, 4), 0.5)), "non-integer"),
            (lambda: dice_loss(torch.rand(2, 3, 4), torch.rand(2, 3, 4), ignore_index=255),
             "ignore_index"),
            (lambda: dice_loss(torch.rand(2, 3, 4), torch.zeros(2, 4, dtype=torch.long),
                               class_weight=(1.0, 1.0)), "class_weight"),
            (lambda: dice_loss(torch.rand(2, 3, 4), torch.zeros(2, 4, dtype=torch.long),
                               multilabel=True), "multi-label"),
            (lambda: dice_loss(torch.rand(4), torch.zeros(4)), "(N, C"),
            (lambda: dice_loss(torch.zeros(2, 1, 4, dtype=torch.long), torch.zeros(2, 4)),
             "floating-point"),
            (lambda: bce_dice_loss(torch.rand(2, 3, 4), torch.zeros(2, 4, dtype=torch.long)),
             "CEDiceLoss"),
            (lambda: ce_dice_loss(torch.rand(2, 1, 4), torch.zeros(2, 4, dtype=torch.long)),
             "BCEDiceLoss"),
        ],
    )
    def test_errors_name_the_problem(self, call, message):
        with pytest.raises(UsageError, match=message.replace("(", r"\(")):
            call()


# --------------------------------------------------------------------------------------------
# Training


def test_training_lowers_the_loss_and_raises_the_evaluated_dice():
    """A 3-class softmax head (one 3x3 convolution) learns noisy intensity bands by plain
    gradient descent on CE + Dice: the loss falls and segeval's evaluated Dice rises.

    About 0.3 s on one CPU core (no wall-clock assert: shared CI machines vary too much).
    """
    torch.manual_seed(20)
    image = torch.randn(8, 1, 24, 24)
    smoothed = F.avg_pool2d(image, 3, stride=1, padding=1)
    labels = torch.bucketize(smoothed[:, 0], torch.tensor([-0.2, 0.2]))  # 0, 1, 2
    weight = torch.zeros(3, 1, 3, 3, requires_grad=True)
    bias = torch.zeros(3, requires_grad=True)
    loss_fn = CEDiceLoss(from_logits=True)

    def logits() -> torch.Tensor:
        return F.conv2d(image, weight, bias, padding=1)

    def evaluated_dice() -> float:
        with torch.no_grad():
            predicted = logits().argmax(1).numpy()
        report = segeval.evaluate(list(predicted), list(labels.numpy()), labels=[1, 2])
        return report.to_dict()["summary"]["macro"]["dice"]

    dice_before = evaluated_dice()
    losses = []
    for _ in range(100):
        loss = loss_fn(logits(), labels)
        losses.append(loss.item())
        grad_weight, grad_bias = torch.autograd.grad(loss, (weight, bias))
        with torch.no_grad():
            weight -= 2.0 * grad_weight
            bias -= 2.0 * grad_bias
    dice_after = evaluated_dice()
    assert losses[-1] < 0.5 * losses[0]
    assert all(later <= earlier + 1e-3
               for earlier, later in zip(losses[:-10], losses[10:], strict=True))
    assert dice_before < 0.5 and dice_after > 0.9


DOCS = Path(__file__).resolve().parents[1] / "docs" / "losses.md"


@pytest.mark.parametrize("index", range(len(re.findall(r"```python\n", DOCS.read_text()))))
def test_docs_examples_run(index):
    """Every Python example in docs/losses.md runs, and its asserts (the seed numbers) hold."""
    block = re.findall(r"```python\n(.*?)```", DOCS.read_text(), flags=re.DOTALL)[index]
    torch.manual_seed(22)
    exec(compile(block, f"{DOCS.name} example {index}", "exec"), {})
