"""Differentiable segmentation losses built on the same definitions as segeval's metrics.

Every overlap loss is ``1 − ratio`` of *soft* counts, per image ``n`` and class ``c``::

    TP = Σ_v p·g        FP = Σ_v p − TP        FN = Σ_v g − TP

(``p`` the predicted probability, ``g`` the reference, ``v`` the voxels; with
``squared_denominator`` the sums of ``p`` and ``g`` become sums of ``p²`` and ``g²``, the
V-Net form ``2Σpg / (Σp² + Σg²)``).  The ratio is the metric's own numerator and denominator
from :func:`segeval.core.metrics.terms` (Dice, IoU) or :func:`tversky_terms` (Tversky, F-beta), so
at hard 0/1 predictions each loss is exactly ``1 −`` the score ``segeval.evaluate`` reports::

    loss = 1 − (numerator + smooth_num) / (denominator + smooth_den)

Reductions use the vocabulary of the evaluation report (``summary`` keys):

* ``"macro"`` (default): counts summed over the batch and voxels for each class, the ratio
  per class, then the (class-weighted) mean over classes — seed 000's ``dim=0`` answer, 0.625;
* ``"micro"``: counts summed over batch, voxels *and* classes, then one ratio — seed 000's
  ``dim=(0, 1)`` answer, 0.5;
* ``"macro_imagewise"``: the ratio per image and class, its mean over images per class, then
  the mean over classes — seed 003's per-image Dice;
* ``"none"``: the loss per image and class, shape ``(N, K)``.

Inputs: ``prediction`` is ``(N, C, *spatial)`` (``*spatial`` may be empty: ``(N, C)``), holding
probabilities, or logits with ``from_logits=True`` (sigmoid when ``C == 1`` or ``multilabel``,
softmax over ``C`` otherwise).  ``reference`` is a label map ``(N, *spatial)`` of integers in
``[0, C)`` (0/1 when ``C == 1``; ``ignore_index`` allowed) or channels shaped like
``prediction`` (one-hot, multi-label or soft).  Half-precision inputs are computed in
float32 (float64 stays float64), with autocast switched off inside the loss.

torch is imported at the top of this module, and ``import segeval`` never imports this module.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields
from functools import partial
from typing import Any, Literal, get_args

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from segeval import errors
from segeval.config import EMPTY_RULES, EmptyRule, Headline
from segeval.core.metrics import EMPTY_VALUES, terms
from segeval.errors import UsageError

__all__ = [
    "BCEDiceLoss", "CEDiceLoss", "DiceLoss", "FBetaLoss", "FocalLoss", "IoULoss",
    "OverlapOptions", "TverskyLoss", "bce_dice_loss", "ce_dice_loss", "dice_loss",
    "fbeta_loss", "fbeta_tversky_weights", "focal_loss", "iou_loss", "overlap_loss",
    "soft_counts", "tversky_loss", "tversky_terms",
]

Reduction = Literal[Headline, "none"]
VoxelReduction = Literal["mean", "sum", "none"]
REDUCTIONS: tuple[str, ...] = get_args(Reduction)
VOXEL_REDUCTIONS: tuple[str, ...] = get_args(VoxelReduction)
RatioTerms = Callable[[Tensor, Tensor, Tensor], tuple[Tensor, Tensor]]

# log p of a probability input is taken of max(p, floor): finite, with a gradient (1/floor)
# that float32 can hold; logits need no floor (log-sigmoid / log-softmax are exact).
_PROBABILITY_FLOOR = 1e-12


def _bad_option(option: str, problem: str, hint: str = "") -> UsageError:
    return UsageError("E_USAGE", f"{option}: {problem}", hint=hint)


def _check_non_negative(option: str, value: float) -> None:
    if not (math.isfinite(value) and value >= 0):
        raise _bad_option(option, f"{value} must be a finite number >= 0")


# --------------------------------------------------------------------------------------------
# Options


@dataclass(frozen=True)
class OverlapOptions:
    """Every option of the overlap losses (Dice, IoU, Tversky, F-beta), validated on creation.

    Fields (defaults and their reasons are in ``docs/losses.md``)
    ------
    reduction: ``"macro"`` | ``"micro"`` | ``"macro_imagewise"`` | ``"none"`` (see the module
        docstring).  Default ``"macro"``: the report's headline reduction, so the loss is
        ``1 −`` the number a user reads in ``summary.macro``; per class before averaging, so a
        small class weighs as much as a large one; and pooled over the batch, so an image
        that lacks a class adds no undefined ratio.
    from_logits: apply sigmoid (``C == 1`` or ``multilabel``) or softmax (over ``C``) first.
    multilabel: channels are independent binary classes (sigmoid; classes may overlap).
    include_background: keep channel 0 when the channels are mutually exclusive classes
        (``C > 1`` and not ``multilabel``), as ``segeval.evaluate`` does with label 0.  A single
        channel is the foreground and multi-label channels are all classes, so neither drops
        a channel.
    ignore_index: voxels whose label-map reference equals this value count nowhere.
    squared_denominator: ``Σp² + Σg²`` instead of ``Σp + Σg`` (V-Net, Keras, TensorLayer).
    smooth_num, smooth_den: added to the numerator and the denominator of the ratio.
        Seeds 002/003's ``2(I + s)/(P + T + s)`` is ``smooth_num=2s, smooth_den=s``: a bug.
    empty: the ratio where the smoothed denominator is exactly 0 (class absent from reference
        and prediction): ``"nan"`` leaves the term out of every mean (``NaN`` with
        ``reduction="none"``; a loss with no defined term is 0), ``"one"`` gives loss 0,
        ``"zero"`` loss 1.  The same words and default as the metrics.
    class_weight: one weight per prediction channel (background included, even when it is
        dropped), >= 0.  Weighted mean over classes for ``macro``/``macro_imagewise``;
        each class's counts are scaled before pooling for ``micro``; unused by ``none``.
    """

    reduction: Reduction = "macro"
    from_logits: bool = False
    multilabel: bool = False
    include_background: bool = False
    ignore_index: int | None = None
    squared_denominator: bool = False
    smooth_num: float = 0.0
    smooth_den: float = 0.0
    empty: EmptyRule = "nan"
    class_weight: tuple[float, ...] | None = None

    def __post_init__(self) -> None:
        if self.reduction not in REDUCTIONS:
            raise _bad_option("reduction", f"{self.reduction!r} is not one of "
                              f"{', '.join(REDUCTIONS)}")
        if self.empty not in EMPTY_RULES:
            raise _bad_option("empty", f"{self.empty!r} is not one of {', '.join(EMPTY_RULES)}")
        _check_non_negative("smooth_num", self.smooth_num)
        _check_non_negative("smooth_den", self.smooth_den)
        if self.class_weight is not None:
            weights = tuple(float(w) for w in self.class_weight)
            for w in weights:
                _check_non_negative("class_weight", w)
            object.__setattr__(self, "class_weight", weights)


def _overlap_options(options: dict[str, Any]) -> OverlapOptions:
    known = {f.name for f in fields(OverlapOptions)}
    unknown = set(options) - known
    if unknown:
        raise _bad_option(", ".join(sorted(unknown)), "unknown option",
                          f"valid options: {', '.join(sorted(known))}")
    return OverlapOptions(**options)


# --------------------------------------------------------------------------------------------
# Inputs


@dataclass(frozen=True)
class _Batch:
    """A prediction and its reference, flattened to ``(N, C, V)`` in the compute dtype."""

    logits: Tensor | None  # the raw input when from_logits, for exact log-likelihoods
    probability: Tensor  # (N, C, V), after sigmoid/softmax
    reference: Tensor  # (N, C, V), 0/1 (or soft) per channel, 0 at ignored voxels
    valid: Tensor | None  # (N, 1, V), 1.0 where evaluated (ignore_index), else None
    independent: bool  # sigmoid channels (binary or multi-label) rather than softmax classes

    @property
    def num_channels(self) -> int:
        return self.probability.shape[1]


def _compute_dtype(prediction: Tensor) -> torch.dtype:
    if not prediction.is_floating_point():
        raise UsageError("E_USAGE", f"prediction has dtype {prediction.dtype}",
                         hint="give probabilities or logits as a floating-point tensor")
    return torch.promote_types(prediction.dtype, torch.float32)


def _prepare(prediction: Tensor, reference: Tensor, *, from_logits: bool, multilabel: bool,
             ignore_index: int | None) -> _Batch:
    """Validate shapes, build the channel reference and the activation (inside no autocast)."""
    if prediction.ndim < 2:
        raise UsageError(errors.E_BAD_DIMENSIONS,
                         f"prediction of shape {tuple(prediction.shape)}",
                         hint="give (N, C, *spatial); a single binary map is (N, 1, *spatial)")
    dtype = _compute_dtype(prediction)
    n, c = prediction.shape[:2]
    independent = multilabel or c == 1
    x = prediction.to(dtype).reshape(n, c, -1)
    valid = None
    if (reference.ndim == prediction.ndim and c > 1 and reference.shape[1] == 1
            and not reference.is_floating_point() and not multilabel):
        reference = reference[:, 0]  # MONAI's (N, 1, *spatial) integer label map
    if reference.ndim == prediction.ndim - 1:
        if tuple(reference.shape) != (n, *prediction.shape[2:]):
            raise _shape_error(prediction, reference)
        if multilabel:
            raise UsageError(errors.E_CHANNELS, "a multi-label loss needs channels as reference",
                             hint="give the reference as (N, C, *spatial) 0/1 channels")
        labels = reference.reshape(n, 1, -1)
        if ignore_index is not None:
            is_valid = labels != ignore_index
            valid = is_valid.to(dtype)
            labels = torch.where(is_valid, labels, torch.zeros_like(labels))
        _check_labels(labels, c)
        if c == 1:  # the foreground itself: 0/1, or soft values in [0, 1]
            target = labels.to(dtype)
        else:  # one-hot straight into the compute dtype: no int64 (N, C, V) tensor
            target = torch.zeros_like(x).scatter_(1, labels.long(), 1.0)
    elif reference.shape == prediction.shape:
        if ignore_index is not None:
            raise UsageError("E_USAGE", "ignore_index needs a label-map reference",
                             hint="with channel references, zero the ignored voxels in both")
        target = reference.to(dtype).reshape(n, c, -1)
    else:
        raise _shape_error(prediction, reference)
    if from_logits:
        probability = torch.sigmoid(x) if independent else torch.softmax(x, dim=1)
    else:
        probability = x
    if valid is not None:
        probability, target = probability * valid, target * valid
    return _Batch(x if from_logits else None, probability, target, valid, independent)


def _check_labels(labels: Tensor, num_channels: int) -> None:
    """A label map holds whole numbers in ``[0, C)``; for one channel, values in ``[0, 1]``."""
    if labels.numel() == 0:
        return
    low, high = float(labels.min()), float(labels.max())
    if num_channels == 1:
        if low < 0 or high > 1:
            raise UsageError(errors.E_UNEXPECTED_LABEL,
                             f"reference values span [{low:g}, {high:g}], outside [0, 1]",
                             hint="a one-channel prediction needs a 0/1 (or soft) foreground")
        return
    if labels.is_floating_point() and not bool((labels == labels.round()).all()):
        raise UsageError(errors.E_NON_INTEGER_LABELS, "label map holds non-integer values",
                         hint="give soft references as (N, C, *spatial) channels")
    if low < 0 or high >= num_channels:
        raise UsageError(errors.E_UNEXPECTED_LABEL,
                         f"reference labels span [{low:g}, {high:g}], outside "
                         f"[0, {num_channels - 1}]",
                         hint=f"the prediction has {num_channels} channels; "
                              "use ignore_index for unlabelled voxels")


def _shape_error(prediction: Tensor, reference: Tensor) -> UsageError:
    return UsageError(
        errors.E_SHAPE_MISMATCH,
        f"reference shape {tuple(reference.shape)} fits neither a label map (N, *spatial) nor "
        f"channels (N, C, *spatial) for a prediction of shape {tuple(prediction.shape)}")


def _class_weight(weights: tuple[float, ...] | None, batch: _Batch) -> Tensor:
    """Per-channel weights as a tensor; all ones when none are given."""
    like = batch.probability
    if weights is None:
        return torch.ones(batch.num_channels, dtype=like.dtype, device=like.device)
    if len(weights) != batch.num_channels:
        raise _bad_option("class_weight", f"{len(weights)} weights for "
                          f"{batch.num_channels} prediction channels",
                          "give one weight per channel, background included")
    return torch.tensor(weights, dtype=like.dtype, device=like.device)


def _no_autocast(prediction: Tensor) -> torch.autocast:
    return torch.autocast(device_type=prediction.device.type, enabled=False)


# --------------------------------------------------------------------------------------------
# Counts and ratios


def soft_counts(probability: Tensor, reference: Tensor, *, squared_denominator: bool = False,
                dim: int | tuple[int, ...] = -1) -> tuple[Tensor, Tensor, Tensor]:
    """Soft TP, FP, FN summed over ``dim``: ``TP = Σ p·g, FP = Σ p − TP, FN = Σ g − TP``.

    With ``squared_denominator`` ``FP = Σ p² − TP`` and ``FN = Σ g² − TP``, so that
    ``2TP + FP + FN = Σp² + Σg²`` (V-Net).  For 0/1 tensors these are the integer counts.
    ``probability`` and ``reference`` broadcast together; any float dtype.
    """
    tp = (probability * reference).sum(dim)
    power = 2 if squared_denominator else 1
    predicted = (probability**power).sum(dim)
    actual = (reference**power).sum(dim)
    return tp, predicted - tp, actual - tp


def tversky_terms(tp: Any, fp: Any, fn: Any, alpha: float, beta: float) -> tuple[Any, Any]:
    """Numerator and denominator of the Tversky index ``TP / (TP + α·FP + β·FN)``.

    ``α = β = ½`` is Dice, ``α = β = 1`` IoU, and ``α = 1/(1+β_F²), β = β_F²/(1+β_F²)`` is
    F-beta (:func:`fbeta_tversky_weights`).  Arithmetic only, like
    :func:`segeval.core.metrics.terms`.
    """
    return tp, tp + alpha * fp + beta * fn


def fbeta_tversky_weights(beta: float) -> tuple[float, float]:
    """The Tversky ``(α, β)`` whose index is F-beta: ``(1/(1+β²), β²/(1+β²))``."""
    b2 = beta * beta
    return 1.0 / (1.0 + b2), b2 / (1.0 + b2)


def _dice_terms(tp: Tensor, fp: Tensor, fn: Tensor) -> tuple[Tensor, Tensor]:
    return terms("dice", tp, fp, fn)


def _iou_terms(tp: Tensor, fp: Tensor, fn: Tensor) -> tuple[Tensor, Tensor]:
    return terms("iou", tp, fp, fn)


def _fbeta_terms(tp: Tensor, fp: Tensor, fn: Tensor, beta: float) -> tuple[Tensor, Tensor]:
    # The Tversky ratio scaled by 1 + β² = 1/α: the same ratio, written as segeval.core.metrics
    # (and seed 001) write F-beta, so smoothing acts as it does on the metric and
    # FBetaLoss(beta=1) is DiceLoss for every smooth_num/smooth_den.
    alpha, beta_t = fbeta_tversky_weights(beta)
    numerator, denominator = tversky_terms(tp, fp, fn, alpha, beta_t)
    return numerator / alpha, denominator / alpha


def _check_tversky(alpha: float, beta: float) -> None:
    _check_non_negative("alpha", alpha)
    _check_non_negative("beta", beta)
    if alpha + beta == 0:
        raise _bad_option("alpha, beta", "both are 0: the index would ignore every error")


def _check_fbeta(beta: float) -> None:
    if not (math.isfinite(beta) and beta > 0):
        raise _bad_option("beta", f"{beta} must be a positive number")


def _loss_and_defined(tp: Tensor, fp: Tensor, fn: Tensor, ratio_terms: RatioTerms,
                      options: OverlapOptions) -> tuple[Tensor, Tensor]:
    """``1 − ratio`` and where it is defined (smoothed denominator ≠ 0), same shape as tp.

    The division never sees a 0 denominator, so no NaN/Inf reaches the gradient; undefined
    terms carry the ``empty`` rule's value (a placeholder 0 loss under ``"nan"``).
    """
    numerator, denominator = ratio_terms(tp, fp, fn)
    numerator = numerator + options.smooth_num
    denominator = denominator + options.smooth_den
    undefined = denominator == 0
    ratio = numerator / torch.where(undefined, torch.ones_like(denominator), denominator)
    if options.empty == "nan":
        return torch.where(undefined, torch.zeros_like(ratio), 1 - ratio), ~undefined
    fill = torch.full_like(ratio, EMPTY_VALUES[options.empty])
    return 1 - torch.where(undefined, fill, ratio), torch.ones_like(undefined)


def _weighted_mean(values: Tensor, weight: Tensor, dim: int = -1) -> tuple[Tensor, Tensor]:
    """Σ w·x / Σ w over ``dim`` and whether any weight was positive (else the mean is 0)."""
    total = weight.sum(dim)
    mean = (values * weight).sum(dim) / torch.where(total > 0, total, torch.ones_like(total))
    return mean, total > 0


def _reduce_overlap(tp: Tensor, fp: Tensor, fn: Tensor, ratio_terms: RatioTerms,
                    class_weight: Tensor, options: OverlapOptions) -> Tensor:
    """Counts ``(N, K)`` → the loss under ``options.reduction``."""
    if options.reduction == "micro":
        tp, fp, fn = ((x * class_weight).sum() for x in (tp, fp, fn))
        loss, _ = _loss_and_defined(tp, fp, fn, ratio_terms, options)
        return loss  # undefined under "nan": nothing was evaluated, loss 0
    if options.reduction == "macro":
        loss, defined = _loss_and_defined(tp.sum(0), fp.sum(0), fn.sum(0), ratio_terms, options)
        return _weighted_mean(loss, class_weight * defined)[0]
    loss, defined = _loss_and_defined(tp, fp, fn, ratio_terms, options)
    if options.reduction == "none":
        return torch.where(defined, loss, torch.full_like(loss, math.nan))
    per_class, class_defined = _weighted_mean(loss, defined.to(loss.dtype), dim=0)
    return _weighted_mean(per_class, class_weight * class_defined)[0]


def _overlap_from_batch(batch: _Batch, ratio_terms: RatioTerms,
                        options: OverlapOptions) -> Tensor:
    weight = _class_weight(options.class_weight, batch)
    probability, reference = batch.probability, batch.reference
    if not options.include_background and batch.num_channels > 1 and not batch.independent:
        probability, reference, weight = probability[:, 1:], reference[:, 1:], weight[1:]
    tp, fp, fn = soft_counts(probability, reference,
                             squared_denominator=options.squared_denominator)
    return _reduce_overlap(tp, fp, fn, ratio_terms, weight, options)


def overlap_loss(prediction: Tensor, reference: Tensor, ratio_terms: RatioTerms,
                 options: OverlapOptions) -> Tensor:
    """``1 − (num + smooth_num)/(den + smooth_den)`` of soft counts, reduced.

    ``ratio_terms(tp, fp, fn) -> (numerator, denominator)`` defines the overlap, e.g.
    ``lambda tp, fp, fn: segeval.core.metrics.terms("dice", tp, fp, fn)``.  Returns a 0-d tensor
    (``(N, K)`` for ``reduction="none"``) in float32, or float64 for float64 input.
    """
    with _no_autocast(prediction):
        batch = _prepare(prediction, reference, from_logits=options.from_logits,
                         multilabel=options.multilabel, ignore_index=options.ignore_index)
        return _overlap_from_batch(batch, ratio_terms, options)


def dice_loss(prediction: Tensor, reference: Tensor, **options: Any) -> Tensor:
    """Soft Dice loss ``1 − (2TP + s_n)/(2TP + FP + FN + s_d)`` = ``1 − 2Σpg/(Σp + Σg)``.

    ``options``: the fields of :class:`OverlapOptions`.  See :class:`DiceLoss`.
    """
    return overlap_loss(prediction, reference, _dice_terms, _overlap_options(options))


def iou_loss(prediction: Tensor, reference: Tensor, **options: Any) -> Tensor:
    """Soft Jaccard loss ``1 − (TP + s_n)/(TP + FP + FN + s_d)`` = ``1 − Σpg/(Σp + Σg − Σpg)``.

    ``options``: the fields of :class:`OverlapOptions`.  See :class:`IoULoss`.
    """
    return overlap_loss(prediction, reference, _iou_terms, _overlap_options(options))


def tversky_loss(prediction: Tensor, reference: Tensor, alpha: float = 0.5, beta: float = 0.5,
                 **options: Any) -> Tensor:
    """Tversky loss ``1 − (TP + s_n)/(TP + α·FP + β·FN + s_d)`` (α weighs FP, β weighs FN).

    ``options``: the fields of :class:`OverlapOptions`.  See :class:`TverskyLoss`.
    """
    _check_tversky(alpha, beta)
    return overlap_loss(prediction, reference, partial(tversky_terms, alpha=alpha, beta=beta),
                        _overlap_options(options))


def fbeta_loss(prediction: Tensor, reference: Tensor, beta: float = 1.0,
               **options: Any) -> Tensor:
    """F-beta loss ``1 − ((1+β²)TP + s_n)/((1+β²)TP + β²FN + FP + s_d)``.

    The Tversky loss with ``α = 1/(1+β²), β_T = β²/(1+β²)``, ratio scaled by ``1+β²``
    (which changes only how smoothing enters).  ``options``: see :class:`OverlapOptions`.
    """
    _check_fbeta(beta)
    return overlap_loss(prediction, reference, partial(_fbeta_terms, beta=beta),
                        _overlap_options(options))


# --------------------------------------------------------------------------------------------
# Voxel-wise losses: cross-entropy and focal


def _log_probabilities(batch: _Batch) -> tuple[Tensor, Tensor | None]:
    """``log p`` and, for sigmoid channels, ``log(1 − p)``: exact from logits, else floored."""
    if batch.logits is not None:
        if batch.independent:
            return F.logsigmoid(batch.logits), F.logsigmoid(-batch.logits)
        return F.log_softmax(batch.logits, dim=1), None
    p = batch.probability
    log_p = p.clamp_min(_PROBABILITY_FLOOR).log()
    return log_p, ((1 - p).clamp_min(_PROBABILITY_FLOOR).log() if batch.independent else None)


def _voxel_mean(loss: Tensor, weight: Tensor, reduction: VoxelReduction) -> Tensor:
    """Reduce a voxel loss ``(N, C or 1, V)`` with its weights (validity × class weight)."""
    if reduction == "none":
        return loss
    if reduction == "sum":
        return loss.sum()
    return _weighted_mean(loss.flatten(), weight.expand_as(loss).flatten())[0]


def _cross_entropy(batch: _Batch, class_weight: Tensor) -> Tensor:
    """Binary CE per channel (sigmoid) or CE over classes (softmax), as a weighted mean.

    Sigmoid: ``Σ w_c·[−g log p − (1−g) log(1−p)] / Σ w_c`` over evaluated voxels and channels.
    Softmax: ``Σ w_c g_c·(−log p_c) / Σ w_c g_c``, which for one-hot references is torch's
    ``F.cross_entropy(weight=..., ignore_index=...)``.
    """
    log_p, log_not_p = _log_probabilities(batch)
    g, w = batch.reference, class_weight.view(1, -1, 1)
    valid = batch.valid if batch.valid is not None else torch.ones_like(g[:, :1])
    if batch.independent:
        assert log_not_p is not None
        return _voxel_mean(-(g * log_p + (1 - g) * log_not_p), w * valid, "mean")
    return _voxel_mean(-log_p, g * w * valid, "mean")


def _focal(batch: _Batch, gamma: float, alpha: float | tuple[float, ...] | None,
           reduction: VoxelReduction) -> Tensor:
    log_p, log_not_p = _log_probabilities(batch)
    g = batch.reference
    valid = batch.valid if batch.valid is not None else torch.ones_like(g[:, :1])
    alpha_c = _focal_alpha(alpha, batch)
    if batch.independent:
        assert log_not_p is not None
        bce = -(g * log_p + (1 - g) * log_not_p)
        p_t = torch.exp(-bce)  # p where g = 1, 1 − p where g = 0
        loss = _modulating(p_t, gamma) * bce
        if alpha_c is not None:
            loss = (alpha_c * g + (1 - alpha_c) * (1 - g)) * loss
        return _voxel_mean(loss * valid, valid, reduction)
    per_class = -_modulating(log_p.exp(), gamma) * g * log_p
    if alpha_c is not None:
        per_class = alpha_c * per_class
    loss = per_class.sum(1, keepdim=True) * valid
    return _voxel_mean(loss if reduction != "none" else loss[:, 0], valid, reduction)


def _modulating(p_t: Tensor, gamma: float) -> Tensor:
    # (1 − p_t)^γ; the floor keeps d/dp of x^γ finite at x = 0 for γ < 1.
    return (1 - p_t).clamp_min(torch.finfo(p_t.dtype).tiny) ** gamma


def _focal_alpha(alpha: float | tuple[float, ...] | None, batch: _Batch) -> Tensor | None:
    """α per channel, shaped (1, C, 1); a scalar is [1−α, α, …, α] for softmax classes."""
    if alpha is None:
        return None
    like = batch.probability
    c = batch.num_channels
    if isinstance(alpha, tuple):
        if len(alpha) != c:
            raise _bad_option("alpha", f"{len(alpha)} values for {c} prediction channels")
        values = list(alpha)
    elif batch.independent:
        values = [alpha] * c
    else:
        values = [1 - alpha] + [alpha] * (c - 1)
    return torch.tensor(values, dtype=like.dtype, device=like.device).view(1, c, 1)


def _normalise_alpha(alpha: float | Sequence[float] | None) -> float | tuple[float, ...] | None:
    if alpha is None:
        return None
    values = (alpha,) if isinstance(alpha, (int, float)) else tuple(alpha)
    for a in values:
        if not (math.isfinite(a) and 0 <= a <= 1):
            raise _bad_option("alpha", f"{a} is not in [0, 1]")
    return float(alpha) if isinstance(alpha, (int, float)) else tuple(float(a) for a in values)


def focal_loss(prediction: Tensor, reference: Tensor, *, gamma: float = 2.0,
               alpha: float | Sequence[float] | None = None, from_logits: bool = False,
               multilabel: bool = False, ignore_index: int | None = None,
               reduction: VoxelReduction = "mean") -> Tensor:
    """Focal loss ``FL = −α_t (1 − p_t)^γ log p_t`` (Lin et al. 2017; seed 003).

    Sigmoid channels (``C == 1`` or ``multilabel``): per voxel and channel, ``p_t = p`` where
    ``g = 1`` and ``1 − p`` where ``g = 0``; a scalar or per-channel ``α`` weighs positives
    by ``α`` and negatives by ``1 − α``.  Softmax classes: ``−Σ_c α_c g_c (1 − p_c)^γ log p_c``
    per voxel (``p_t`` of the reference class); ``α`` per class (seed 003's ``alpha.gather``),
    or a scalar meaning ``[1 − α, α, …, α]`` (background ``1 − α``).  ``γ = 0, α = None`` is
    (binary) cross-entropy.

    ``reduction``: ``"mean"`` over evaluated voxels (× channels for sigmoid), ``"sum"``, or
    ``"none"``: ``(N, C, V)`` for sigmoid, ``(N, V)`` for softmax (spatial axes flattened;
    ignored voxels 0).  Logits give exact ``log p`` (log-sigmoid/log-softmax); probabilities
    are floored at 1e-12 before the log.
    """
    if not (math.isfinite(gamma) and gamma >= 0):
        raise _bad_option("gamma", f"{gamma} must be a finite number >= 0")
    if reduction not in VOXEL_REDUCTIONS:
        raise _bad_option("reduction", f"{reduction!r} is not one of {', '.join(VOXEL_REDUCTIONS)}")
    alpha_values = _normalise_alpha(alpha)
    with _no_autocast(prediction):
        batch = _prepare(prediction, reference, from_logits=from_logits, multilabel=multilabel,
                         ignore_index=ignore_index)
        return _focal(batch, gamma, alpha_values, reduction)


# --------------------------------------------------------------------------------------------
# Compound losses


def _check_compound_weights(first: str, a: float, b: float) -> None:
    _check_non_negative(first, a)
    _check_non_negative("weight_dice", b)


def _compound(prediction: Tensor, reference: Tensor, weight_ce: float, weight_dice: float,
              options: OverlapOptions, *, binary: bool) -> Tensor:
    """``weight_ce · (B)CE + weight_dice · DiceLoss`` on one prepared batch."""
    with _no_autocast(prediction):
        batch = _prepare(prediction, reference, from_logits=options.from_logits,
                         multilabel=options.multilabel, ignore_index=options.ignore_index)
        if binary and not batch.independent:
            raise UsageError("E_USAGE", f"BCE needs sigmoid channels; the prediction has "
                             f"{batch.num_channels} mutually exclusive classes",
                             hint="use CEDiceLoss, or multilabel=True for independent channels")
        if not binary and batch.independent:
            raise UsageError("E_USAGE", "cross-entropy over classes needs C > 1 mutually "
                             "exclusive classes",
                             hint="use BCEDiceLoss for binary or multi-label channels")
        ce = _cross_entropy(batch, _class_weight(options.class_weight, batch))
        return weight_ce * ce + weight_dice * _overlap_from_batch(batch, _dice_terms, options)


def bce_dice_loss(prediction: Tensor, reference: Tensor, weight_bce: float = 0.5,
                  weight_dice: float = 0.5, **options: Any) -> Tensor:
    """``weight_bce · BCE + weight_dice · DiceLoss`` for binary or multi-label channels (seed 004).

    BCE is ``−w_c[g log p + (1−g) log(1−p)]`` averaged over evaluated voxels and every channel
    (background included: per voxel, background voxels are the negatives), divided by the
    mean ``class_weight``.  ``options``: :class:`OverlapOptions` for the Dice part;
    ``from_logits``, ``multilabel``, ``ignore_index`` and ``class_weight`` apply to both parts.
    """
    _check_compound_weights("weight_bce", weight_bce, weight_dice)
    return _compound(prediction, reference, weight_bce, weight_dice, _overlap_options(options),
                     binary=True)


def ce_dice_loss(prediction: Tensor, reference: Tensor, weight_ce: float = 0.5,
                 weight_dice: float = 0.5, **options: Any) -> Tensor:
    """``weight_ce · CE + weight_dice · DiceLoss`` for mutually exclusive classes (softmax).

    CE is ``−Σ_c w_c g_c log p_c`` averaged over evaluated voxels with torch's weighted mean
    (as ``F.cross_entropy(weight=class_weight, ignore_index=...)`` for label maps); it covers
    every class, background included.  ``options``: as in :func:`bce_dice_loss`.
    """
    _check_compound_weights("weight_ce", weight_ce, weight_dice)
    return _compound(prediction, reference, weight_ce, weight_dice, _overlap_options(options),
                     binary=False)


# --------------------------------------------------------------------------------------------
# Modules


class _OverlapLoss(nn.Module):
    """Shared module: holds validated :class:`OverlapOptions` and the ratio's terms."""

    def __init__(self, ratio_terms: RatioTerms, options: dict[str, Any]) -> None:
        super().__init__()
        self.ratio_terms = ratio_terms
        self.options = _overlap_options(options)

    def forward(self, prediction: Tensor, reference: Tensor) -> Tensor:
        return overlap_loss(prediction, reference, self.ratio_terms, self.options)

    def extra_repr(self) -> str:
        defaults = OverlapOptions()
        changed = [f"{f.name}={getattr(self.options, f.name)!r}" for f in fields(OverlapOptions)
                   if getattr(self.options, f.name) != getattr(defaults, f.name)]
        return ", ".join(changed)


class DiceLoss(_OverlapLoss):
    """Soft Dice loss: ``1 − (2TP + s_n)/(2TP + FP + FN + s_d)``, i.e. ``1 − 2Σpg/(Σp + Σg)``.

    Keyword options: :class:`OverlapOptions` (defaults: probabilities, ``reduction="macro"``,
    background channel dropped, no smoothing, undefined classes left out).

    >>> loss = DiceLoss(smooth_num=1, smooth_den=1)  # seed 004
    >>> round(loss(torch.tensor([[[.9, .1, .8, .7]]]), torch.tensor([[1, 0, 1, 1]])).item(), 5)
    0.10769
    """

    def __init__(self, **options: Any) -> None:
        super().__init__(_dice_terms, options)


class IoULoss(_OverlapLoss):
    """Soft Jaccard loss: ``1 − (TP + s_n)/(TP + FP + FN + s_d)``, i.e. ``1 − Σpg/(Σp+Σg−Σpg)``.

    With ``squared_denominator``: ``1 − Σpg/(Σp² + Σg² − Σpg)``.  Options: :class:`OverlapOptions`.
    """

    def __init__(self, **options: Any) -> None:
        super().__init__(_iou_terms, options)


class TverskyLoss(_OverlapLoss):
    """Tversky loss ``1 − (TP + s_n)/(TP + α·FP + β·FN + s_d)``; α weighs FP, β weighs FN.

    ``α = β = 0.5`` (default) is Dice (smoothing counted in TP units, i.e. DiceLoss with
    doubled ``smooth_*``), ``α = β = 1`` IoU, ``α + β = 1`` an F-beta (see :class:`FBetaLoss`).
    Options: :class:`OverlapOptions`.
    """

    def __init__(self, alpha: float = 0.5, beta: float = 0.5, **options: Any) -> None:
        _check_tversky(alpha, beta)
        self.alpha, self.beta = float(alpha), float(beta)
        super().__init__(partial(tversky_terms, alpha=self.alpha, beta=self.beta), options)


class FBetaLoss(_OverlapLoss):
    """F-beta loss ``1 − ((1+β²)TP + s_n)/((1+β²)TP + β²FN + FP + s_d)``; β > 1 favours recall.

    The Tversky loss with ``α = 1/(1+β²)`` and ``β_T = β²/(1+β²)``
    (:func:`fbeta_tversky_weights`), written with segeval's F-beta scale so smoothing matches
    the metric: ``FBetaLoss(beta=1)`` equals :class:`DiceLoss` for any smoothing.
    Options: :class:`OverlapOptions`.
    """

    def __init__(self, beta: float = 1.0, **options: Any) -> None:
        _check_fbeta(beta)
        self.beta = float(beta)
        self.alpha_tversky, self.beta_tversky = fbeta_tversky_weights(self.beta)
        super().__init__(partial(_fbeta_terms, beta=self.beta), options)


class FocalLoss(nn.Module):
    """Focal loss ``−α_t (1 − p_t)^γ log p_t`` for binary, multi-label or multi-class input.

    Defaults ``gamma=2`` (Lin et al.), ``alpha=None`` (no class balancing), probabilities in,
    ``reduction="mean"`` over evaluated voxels.  See :func:`focal_loss`.
    """

    def __init__(self, gamma: float = 2.0, alpha: float | Sequence[float] | None = None, *,
                 from_logits: bool = False, multilabel: bool = False,
                 ignore_index: int | None = None, reduction: VoxelReduction = "mean") -> None:
        super().__init__()
        if not (math.isfinite(gamma) and gamma >= 0):
            raise _bad_option("gamma", f"{gamma} must be a finite number >= 0")
        if reduction not in VOXEL_REDUCTIONS:
            raise _bad_option("reduction", f"{reduction!r} is not one of "
                              f"{', '.join(VOXEL_REDUCTIONS)}")
        self.gamma, self.alpha = float(gamma), _normalise_alpha(alpha)
        self.from_logits, self.multilabel = from_logits, multilabel
        self.ignore_index, self.reduction = ignore_index, reduction

    def forward(self, prediction: Tensor, reference: Tensor) -> Tensor:
        return focal_loss(prediction, reference, gamma=self.gamma, alpha=self.alpha,
                          from_logits=self.from_logits, multilabel=self.multilabel,
                          ignore_index=self.ignore_index, reduction=self.reduction)


class BCEDiceLoss(nn.Module):
    """``weight_bce · BCE + weight_dice · Dice loss`` (seed 004: 0.5 each); sigmoid channels.

    Options: :class:`OverlapOptions` (see :func:`bce_dice_loss`).
    """

    def __init__(self, weight_bce: float = 0.5, weight_dice: float = 0.5,
                 **options: Any) -> None:
        super().__init__()
        _check_compound_weights("weight_bce", weight_bce, weight_dice)
        self.weight_bce, self.weight_dice = float(weight_bce), float(weight_dice)
        self.options = _overlap_options(options)

    def forward(self, prediction: Tensor, reference: Tensor) -> Tensor:
        return _compound(prediction, reference, self.weight_bce, self.weight_dice,
                         self.options, binary=True)


class CEDiceLoss(nn.Module):
    """``weight_ce · CE + weight_dice · Dice loss`` (0.5 each) for softmax classes.

    Options: :class:`OverlapOptions` (see :func:`ce_dice_loss`).
    """

    def __init__(self, weight_ce: float = 0.5, weight_dice: float = 0.5,
                 **options: Any) -> None:
        super().__init__()
        _check_compound_weights("weight_ce", weight_ce, weight_dice)
        self.weight_ce, self.weight_dice = float(weight_ce), float(weight_dice)
        self.options = _overlap_options(options)

    def forward(self, prediction: Tensor, reference: Tensor) -> Tensor:
        return _compound(prediction, reference, self.weight_ce, self.weight_dice,
                         self.options, binary=False)

