"""Interpret one case's arrays (label map, probabilities, logits, channels) and count it.

The rules, applied in this order (each violation is a :class:`~segeval.errors.CaseError`
naming the file):

Reference
    A label map of non-negative integers (bool, integer, or float holding only whole
    numbers), or — with ``channel_axis`` and one more axis than a label map — binary
    channels (one-hot, or overlapping with ``multilabel``).
Prediction without ``channel_axis``
    * integer, bool, or float holding only whole numbers: a label map;
    * any other float: a probability map of the foreground (label 1), values in [0, 1]
      (after ``logits="sigmoid"``), foreground where ``p > threshold``; the reference must
      then be binary (labels 0/1, after ``binary``/``map_reference``), since one map
      cannot speak for several classes;
    * integer data with ``probability_scale`` S (255, 65535): probabilities ``v / S``,
      foreground where ``v / S > threshold`` decided exactly on the integers.
``prediction_axes``
    First of all, the prediction's axes are reordered to the reference's (channels first).
Prediction with ``channel_axis``
    Channel ``c`` is label ``c``.  ``multilabel``: each channel is thresholded on its own
    (``p > threshold``; integer channels with ``probability_scale`` as above); otherwise the
    class is the argmax over channels (ties to the lowest index).  ``logits`` applies
    sigmoid or softmax over channels first.
``soft``
    No threshold: probabilities are summed (soft TP = Σ p·g, ...).
NaN or ±Inf anywhere in a prediction or reference is an error.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import numpy as np

from segeval import errors
from segeval.config import EvalConfig
from segeval.core.counts import CaseCounts
from segeval.core.relabel import label_mapping
from segeval.engines import Backend
from segeval.errors import CaseError
from segeval.formats.geometry import check_same_shape


def count_case(
    prediction: Any | None,
    reference: Any,
    config: EvalConfig,
    backend: Backend,
    prediction_name: str = "prediction",
    reference_name: str = "reference",
) -> CaseCounts:
    """Counts of one case.  ``prediction=None`` scores an empty prediction."""
    ref = backend.asarray(reference)
    _check_real(ref, reference_name)
    if prediction is not None:
        _check_real(backend.asarray(prediction), prediction_name)
    if prediction is not None and config.prediction_axes is not None:
        prediction = reorder_axes(backend, backend.asarray(prediction), config.prediction_axes,
                                  prediction_name)
    if config.channel_axis is not None:
        return _count_channels(prediction, ref, config, backend, prediction_name, reference_name)
    ref_labels = label_map(backend, ref, reference_name)
    if prediction is None:
        return backend.confusion(ref_labels, backend.zeros(backend.shape(ref_labels)))
    pred = backend.asarray(prediction)
    check_same_shape(backend.shape(pred), backend.shape(ref), prediction_name, reference_name)
    pred_labels, probability = prediction_labels(backend, pred, ref_labels, config,
                                                 prediction_name, reference_name)
    if probability is None:
        return backend.confusion(ref_labels, pred_labels)
    if config.soft:
        return backend.soft_counts(backend.one_hot0(ref_labels, 2),
                                   backend.stack_complement(probability),
                                   _valid(ref_labels, config))
    counts = backend.confusion(ref_labels, pred_labels)
    if not config.sweep:
        return counts
    valid = _valid(ref_labels, config)
    foreground = backend.sweep_counts(backend.one_hot0(ref_labels, 2)[1:], probability[None],
                                      np.asarray(config.sweep), valid)
    background = foreground[[3, 2, 1, 0]]  # binary: predicted 0 exactly where not 1
    return replace(counts, sweep=np.concatenate([background, foreground], axis=-1))


def prediction_labels(backend: Backend, pred: Any, ref_labels: Any, config: EvalConfig,
                      prediction_name: str, reference_name: str) -> tuple[Any, Any | None]:
    """A prediction without channels as the label map it counts as, and its probabilities
    (None for a label map).  Integers, bools and whole-valued floats are labels — unless
    ``logits="sigmoid"``, which makes any float a logit; other floats are probabilities of
    label 1, foreground where ``p > threshold``, and need a binary reference.  With
    ``probability_scale`` S, integer data are probabilities ``v / S`` (float64 ``v / S`` is
    returned only for ``soft`` or a sweep, which need the values)."""
    scale = _integer_scale(backend, pred, config, prediction_name)
    if scale is not None:  # integer probabilities v / scale, decided on the integers
        _check_binary_reference(backend, ref_labels, config, reference_name)
        probability = backend.scaled(pred, scale) if config.soft or config.sweep else pred
        return backend.to_labels(_above(backend, pred, scale, config.threshold)), probability
    if not backend.is_float(pred):
        return label_map(backend, pred, prediction_name), None
    _check_finite(backend, pred, prediction_name)
    if config.logits == "sigmoid":
        pred = backend.sigmoid(pred)
    elif backend.is_integer_valued(pred):
        return label_map(backend, pred, prediction_name), None
    _check_probability(backend, pred, prediction_name, config)
    _check_binary_reference(backend, ref_labels, config, reference_name)
    return backend.to_labels(backend.above(pred, config.threshold)), pred


def label_maps(prediction: Any | None, reference: Any, config: EvalConfig, backend: Backend,
               prediction_name: str = "prediction", reference_name: str = "reference",
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """The two label maps a case without channels counts as, as NumPy voxels, and the
    evaluated voxels (None: all): the prediction's axes reordered (``prediction_axes``),
    probabilities thresholded (``threshold``, ``probability_scale``, ``logits``), then the
    run's label mapping (``binary``, ``map_*``) applied to the voxels — the rules counting
    applies to its confusion table.  ``ignore_index`` matches the reference as stored.
    Boundary distances, lesions and overlays read their masks from here.
    ``prediction=None`` is an empty prediction."""
    ref_labels = label_map(backend, backend.asarray(reference), reference_name)
    if prediction is None:
        pred_labels = backend.zeros(backend.shape(ref_labels))
    else:
        pred = backend.asarray(prediction)
        if config.prediction_axes is not None:
            pred = reorder_axes(backend, pred, config.prediction_axes, prediction_name)
        check_same_shape(backend.shape(pred), backend.shape(ref_labels), prediction_name,
                         reference_name)
        pred_labels, _ = prediction_labels(backend, pred, ref_labels, config,
                                           prediction_name, reference_name)
    valid = _valid(ref_labels, config)
    ref_host, pred_host = to_host(ref_labels), to_host(pred_labels)
    mapping = label_mapping(config)
    if not mapping.identity:
        ref_host = mapping.apply(ref_host, "reference")
        pred_host = mapping.apply(pred_host, "prediction")
    return ref_host, pred_host, None if valid is None else to_host(valid)


def to_host(array: Any) -> Any:
    """A torch tensor as a NumPy array on the CPU; anything else unchanged."""
    return array.detach().cpu().numpy() if hasattr(array, "detach") else array


def class_voxels(prediction: Any | None, reference: Any, labels: Any, config: EvalConfig,
                 backend: Backend) -> tuple[Any, Any, Any]:
    """Boolean (reference, prediction, evaluated) voxels of one class — a label, or a
    region's labels — under exactly the rules that count the case (overlays draw these).
    ``prediction=None`` is an empty prediction; not for ``soft`` (no voxel is a class)."""
    selected = np.asarray(sorted(labels))
    if config.channel_axis is None:
        ref_labels, pred_labels, valid = label_maps(prediction, reference, config, backend)
        evaluated = np.ones(ref_labels.shape, bool) if valid is None else valid
        return (np.isin(ref_labels, selected) & evaluated,
                np.isin(pred_labels, selected) & evaluated, evaluated)
    ref = backend.asarray(reference)
    if prediction is not None and config.prediction_axes is not None:
        prediction = reorder_axes(backend, backend.asarray(prediction), config.prediction_axes,
                                  "prediction")
    pred = None if prediction is None else _channels_first(
        backend, backend.asarray(prediction), config.channel_axis, "prediction")
    spatial = backend.shape(ref) if pred is None else backend.shape(pred)[1:]
    if len(backend.shape(ref)) == len(spatial) + 1:  # reference channels
        ref_channels = _binary_channels(backend, _channels_first(
            backend, ref, config.channel_axis, "reference"), "reference")
        ref_class = np.logical_or.reduce([ref_channels[c] for c in selected
                                          if c < len(ref_channels)])
        evaluated = np.ones(spatial, bool)
    else:
        ref_labels = label_map(backend, ref, "reference")
        ref_class = np.isin(ref_labels, selected)
        valid = _valid(ref_labels, config)
        evaluated = np.ones(spatial, bool) if valid is None else valid
    if pred is None:
        pred_class = np.zeros(spatial, bool)
    elif config.multilabel:
        if backend.is_float(pred):
            _check_finite(backend, pred, "prediction")
            probability = backend.sigmoid(pred) if config.logits == "sigmoid" else pred
            channels = backend.above(probability, config.threshold)
        else:
            channels = _binary_channels(backend, pred, "prediction")
        pred_class = np.logical_or.reduce([channels[c] for c in selected if c < len(channels)]
                                          or [np.zeros(spatial, bool)])
    else:  # argmax over channels; sigmoid and softmax keep the order of channels
        pred_class = np.isin(backend.argmax0(pred), selected)
    return ref_class & evaluated, pred_class & evaluated, evaluated


def integer_cut(threshold: float, scale: int) -> int:
    """For an integer probability map of full scale ``scale`` (255 for uint8, 65535 for
    uint16): the largest value ``v`` in [0, scale] with ``v / scale <= threshold``, so that
    ``v > cut`` is exactly ``v / scale > threshold`` (the quotient in float64, as NumPy
    computes it) for every ``v``.  Decided on integers, it is the same on every backend
    (a float32 copy on a GPU could round differently).  Float64 division is correctly
    rounded, hence monotone in ``v``, so the values above the threshold form a suffix."""
    values = np.arange(scale + 1, dtype=np.int64)
    return int(np.count_nonzero(~(values / scale > threshold))) - 1


def _integer_scale(backend: Backend, pred: Any, config: EvalConfig, name: str) -> int | None:
    """The full scale when ``pred`` is an integer probability map (``probability_scale``
    declared, integer data), after checking its range; None otherwise."""
    scale = config.probability_scale
    if scale is None or backend.is_float(pred) or backend.is_bool(pred):
        return None
    low, high = backend.min_max(pred)
    if low < 0 or high > scale:
        raise CaseError(errors.E_PROBABILITY_RANGE,
                        f"integer probabilities outside [0, {scale}] (min {low:g}, max "
                        f"{high:g})", name, "check --probability-scale (255 for 8-bit, "
                        "65535 for 16-bit data)")
    return int(scale)


def _above(backend: Backend, pred: Any, scale: int | None, threshold: float) -> Any:
    """Foreground of a probability map: ``p > threshold``, exactly, for float or integer
    (``p = v / scale``) probabilities."""
    if scale is None:
        return backend.above(pred, threshold)
    return pred > integer_cut(threshold, scale)


def _sweep_edges(sweep: tuple[float, ...], scale: int | None) -> np.ndarray:
    """Thresholds for the sweep kernels: as given, or for integer probabilities the cuts
    (``v > cut`` ⇔ ``v / scale > t``; integers compare exactly with these floats)."""
    if scale is None:
        return np.asarray(sweep)
    return np.asarray([integer_cut(t, scale) for t in sweep], dtype=np.float64)


def reorder_axes(backend: Backend, pred: Any, axes: str, name: str) -> Any:
    """Bring a prediction's axes into the reference's order (``prediction_axes``).

    ``axes`` names each axis of the prediction, in order: ``c`` the channels, ``k`` (an
    integer) the reference's axis ``k``, ``_`` a singleton axis to drop.  The result has the
    channels first (when named) and then the reference's axes in order.  nnU-Net v2's
    ``.npz`` probabilities against NIfTI references: ``c,2,1,0``."""
    names = [part.strip() for part in axes.split(",")]
    shape = backend.shape(pred)
    if len(names) != len(shape):
        raise CaseError(errors.E_CHANNELS, f"--prediction-axes {axes} names {len(names)} "
                        f"axes, the prediction has {len(shape)} (shape {shape})", name)
    dropped = [i for i, part in enumerate(names) if part == "_"]
    if any(shape[i] != 1 for i in dropped):
        raise CaseError(errors.E_CHANNELS, f"--prediction-axes {axes}: an axis marked _ is "
                        f"not of size 1 (shape {shape})", name)
    pred = pred[tuple(0 if i in dropped else slice(None) for i in range(len(shape)))]
    kept = [part for part in names if part != "_"]
    order = ([kept.index("c")] if "c" in kept else []) + [
        kept.index(str(k)) for k in range(len(kept) - ("c" in kept))]
    return backend.permute(pred, tuple(order))


def _count_channels(
    prediction: Any | None, ref: Any, config: EvalConfig, backend: Backend,
    prediction_name: str, reference_name: str,
) -> CaseCounts:
    assert config.channel_axis is not None
    ref_shape = backend.shape(ref)
    if prediction is None:
        if config.multilabel and len(ref_shape) > 0:
            pred = backend.zeros(ref_shape)  # empty channels shaped like the reference's
        else:
            return backend.confusion(label_map(backend, ref, reference_name),
                                     backend.zeros(ref_shape))
    else:
        pred = backend.asarray(prediction)
    pred = _channels_first(backend, pred, config.channel_axis, prediction_name)
    n_channels, spatial = backend.shape(pred)[0], backend.shape(pred)[1:]

    ref_labels = None
    if len(ref_shape) == len(spatial) + 1:
        ref_channels = _channels_first(backend, ref, config.channel_axis, reference_name)
        if backend.shape(ref_channels)[0] != n_channels:
            raise CaseError(
                errors.E_CHANNELS,
                f"reference has {backend.shape(ref_channels)[0]} channels, prediction has "
                f"{n_channels}", reference_name)
        ref_channels = _binary_channels(backend, ref_channels, reference_name)
        check_same_shape(spatial, backend.shape(ref_channels)[1:], prediction_name,
                         reference_name)
        if not config.multilabel:
            if not backend.is_one_hot0(ref_channels):
                raise CaseError(errors.E_NOT_ONE_HOT,
                                "reference channels are not one-hot (a voxel has 0 or several "
                                "classes)", reference_name,
                                "pass --multilabel if classes may overlap")
            ref_labels = backend.argmax0(ref_channels)
    elif len(ref_shape) == len(spatial):
        check_same_shape(spatial, ref_shape, prediction_name, reference_name)
        ref_labels = label_map(backend, ref, reference_name)
        ref_channels = None
    else:
        raise CaseError(
            errors.E_CHANNELS,
            f"reference shape {ref_shape} fits neither a label map nor channels for a "
            f"prediction of shape {backend.shape(pred)} (channels moved first)",
            reference_name, "check --channel-axis")

    valid = None if ref_labels is None else _valid(ref_labels, config)
    if ref_channels is None:
        ref_channels = backend.one_hot0(ref_labels, n_channels)

    if backend.is_float(pred):
        _check_finite(backend, pred, prediction_name)
        if config.logits == "sigmoid":
            pred = backend.sigmoid(pred)
        elif config.logits == "softmax":
            pred = backend.softmax0(pred)
        _check_probability(backend, pred, prediction_name, config)
    elif config.logits != "none":
        raise CaseError(errors.E_CHANNELS, "--logits given but the prediction holds integers",
                        prediction_name, "drop --logits for label or one-hot predictions")

    scale = _integer_scale(backend, pred, config, prediction_name) if prediction is not None \
        else None
    if config.soft:
        return backend.soft_counts(ref_channels, pred if scale is None
                                   else backend.scaled(pred, scale), valid)
    if config.multilabel:
        if not backend.is_float(pred) and scale is None:
            return backend.channel_counts(ref_channels,
                                          _binary_channels(backend, pred, prediction_name), valid)
        counts = backend.channel_counts(ref_channels,
                                        _above(backend, pred, scale, config.threshold), valid)
        if not config.sweep:
            return counts
        return replace(counts, sweep=backend.sweep_counts(
            ref_channels, pred, _sweep_edges(config.sweep, scale), valid))
    assert ref_labels is not None
    return backend.confusion(ref_labels, backend.argmax0(pred))


LABEL_LIMIT = 2.0**63  # labels are counted as int64: a whole float this large would wrap


def label_map(backend: Backend, a: Any, name: str) -> Any:
    """Validate a label map (real, finite, whole, non-negative, below 2**63) and return it
    as integers.  A float label of 2**63 or more is refused: ``astype(int64)`` would wrap
    it to a negative number (or INT64_MIN) and count it as another class."""
    _check_real(a, name)
    if backend.is_bool(a):
        return backend.to_labels(a)
    if backend.is_float(a):
        _check_finite(backend, a, name)
        if not backend.is_integer_valued(a):
            raise CaseError(errors.E_NON_INTEGER_LABELS,
                            "label map holds non-integer values", name,
                            "labels must be whole numbers; a prediction of probabilities is "
                            "fine, a reference must be labels")
        low, high = backend.min_max(a)
        if max(abs(low), abs(high)) >= LABEL_LIMIT:
            value = high if abs(high) >= abs(low) else low
            raise CaseError(errors.E_NON_INTEGER_LABELS,
                            f"label map holds {value:g}, beyond the integer labels segeval "
                            "counts (|label| < 2**63)", name,
                            "check the file's scaling (scl_slope/scl_inter) and data type")
    if not backend.can_be_negative(a):
        return backend.to_labels(a)
    low, _ = backend.min_max(a)
    if low < 0:
        raise CaseError(errors.E_NEGATIVE_LABEL, f"label map holds negative label {low:g}",
                        name, "labels must be >= 0")
    return backend.to_labels(a)


def _check_real(a: Any, name: str) -> None:
    """Refuse arrays that are not real numbers (complex, text, bytes, records), NumPy or
    torch, before any comparison with a number is attempted."""
    dtype = getattr(a, "dtype", None)
    kind = getattr(dtype, "kind", None)
    if (kind is not None and kind not in "biuf") or getattr(dtype, "is_complex", False):
        raise CaseError(errors.E_UNSUPPORTED_FORMAT,
                        f"the values are not real numbers ({dtype}), neither labels nor "
                        "probabilities", name,
                        "save masks as integers (labels) or floats (probabilities)")


def _channels_first(backend: Backend, a: Any, axis: int, name: str) -> Any:
    ndim = len(backend.shape(a))
    if not -ndim <= axis < ndim:
        raise CaseError(errors.E_CHANNELS,
                        f"--channel-axis {axis} does not exist in shape {backend.shape(a)}",
                        name)
    return backend.moveaxis0(a, axis)


def _binary_channels(backend: Backend, a: Any, name: str) -> Any:
    if backend.is_float(a):
        _check_finite(backend, a, name)
    low, high = backend.min_max(a)
    if low < 0 or high > 1 or (backend.is_float(a) and not backend.is_integer_valued(a)):
        raise CaseError(errors.E_NOT_ONE_HOT, "channels must hold only 0 and 1", name,
                        "threshold probabilities first, or give them as the prediction")
    return a > 0


def _check_finite(backend: Backend, a: Any, name: str) -> None:
    if not backend.all_finite(a):
        raise CaseError(errors.E_NAN, "holds NaN or infinite values", name,
                        "fix the model output; segeval never guesses a value for NaN")


def _check_probability(backend: Backend, a: Any, name: str, config: EvalConfig) -> None:
    low, high = backend.min_max(a)
    if low < 0 or high > 1:
        hint = ("values look like logits: pass --logits sigmoid (or softmax with "
                "--channel-axis)" if config.logits == "none" else "")
        raise CaseError(errors.E_PROBABILITY_RANGE,
                        f"probabilities outside [0, 1] (min {low:g}, max {high:g})", name, hint)


def _check_binary_reference(backend: Backend, ref_labels: Any, config: EvalConfig,
                            name: str) -> None:
    """A single probability map speaks for label 1: the reference must hold 0 and 1 only,
    after the run's label mapping (``--binary``, ``--map``), which is applied later to the
    confusion table (see :mod:`segeval.core.relabel`)."""
    mapping = label_mapping(config)
    found = backend.unique_labels(ref_labels)
    if config.ignore_index is not None:
        found.discard(config.ignore_index)
    labels = {label for label in found if mapping.label(label, "reference") not in (0, 1)}
    if labels:
        raise CaseError(
            errors.E_CHANNELS,
            f"a single probability map was given but the reference holds labels "
            f"{sorted(labels)} besides 0 and 1", name,
            "give per-class probabilities with --channel-axis, or a label map")


def _valid(ref_labels: Any, config: EvalConfig) -> Any | None:
    return None if config.ignore_index is None else ref_labels != config.ignore_index
