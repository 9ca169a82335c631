"""Masks → counts on the CPU: the NumPy backend (see :class:`segeval.engines.Backend`).

Counting works on flat chunks of at most ``CHUNK`` voxels so that temporaries stay small
whatever the volume size: a label map pair becomes one bincount of
``reference * n + prediction`` per chunk (no one-hot tensors, one pass for any number of
classes).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np

from segeval.core.counts import ChannelCounts, Confusion

BACKGROUND_CHUNK = 1 << 15  # voxels tested at once for being background in both
CHUNK = 1 << 18  # voxels per counting chunk: temporaries stay in cache (measured fastest)
DENSE_BINS = 1 << 22  # largest n*n confusion counted with a dense bincount


class NumpyBackend:
    """CPU counting with NumPy.  Arrays are ``numpy.ndarray``."""

    name = "numpy"
    device = "cpu"

    # --- value interpretation helpers (mirrored by TorchBackend) -----------------------
    def asarray(self, value: Any) -> np.ndarray:
        if type(value).__module__.startswith("torch"):  # a CPU tensor asked to count on CPU
            value = value.detach().cpu()
            if str(value.dtype) == "torch.bfloat16":  # no NumPy dtype for bfloat16
                value = value.float()
            return value.numpy()
        return np.asarray(value)

    def is_float(self, a: np.ndarray) -> bool:
        return bool(np.issubdtype(a.dtype, np.floating))

    def is_bool(self, a: np.ndarray) -> bool:
        return a.dtype == np.bool_

    def all_finite(self, a: np.ndarray) -> bool:
        return bool(np.isfinite(a).all())

    def is_integer_valued(self, a: np.ndarray) -> bool:
        return bool(np.all(np.floor(a) == a))

    def can_be_negative(self, a: np.ndarray) -> bool:
        return not (a.dtype == np.bool_ or np.issubdtype(a.dtype, np.unsignedinteger))

    def unique_labels(self, labels: np.ndarray) -> set[int]:
        return {int(x) for x in np.unique(labels)}

    def is_one_hot0(self, channels: np.ndarray) -> bool:
        return bool((np.count_nonzero(channels, axis=0) == 1).all())

    def stack_complement(self, probability: np.ndarray) -> np.ndarray:
        """[1 − p, p]: a foreground probability map as background/foreground channels."""
        return np.stack([1.0 - probability, probability])

    def min_max(self, a: np.ndarray) -> tuple[float, float]:
        if a.size == 0:
            return 0.0, 0.0
        return a.min().item(), a.max().item()

    def to_labels(self, a: np.ndarray) -> np.ndarray:
        """Bool/float label arrays → an integer array (values already checked)."""
        if a.dtype == np.bool_:
            return a.astype(np.uint8)  # not .view: a bool's byte may be 255 (Pillow mode "1")
        if np.issubdtype(a.dtype, np.integer):
            return a
        return a.astype(np.int64)

    def sigmoid(self, a: np.ndarray) -> np.ndarray:
        a = a.astype(np.float64, copy=False)
        return 0.5 * (1.0 + np.tanh(0.5 * a))  # overflow-free form of 1 / (1 + e^-a)

    def softmax0(self, a: np.ndarray) -> np.ndarray:
        a = a.astype(np.float64, copy=False)
        shifted = np.exp(a - a.max(axis=0, keepdims=True))
        return shifted / shifted.sum(axis=0, keepdims=True)

    def above(self, a: np.ndarray, threshold: float) -> np.ndarray:
        """``a > threshold`` decided exactly, whatever the float width of ``a``."""
        return exactly_above(a, threshold, a.dtype.type(threshold))

    def sweep_counts(self, reference: np.ndarray, probability: np.ndarray,
                     thresholds: np.ndarray, valid: np.ndarray | None) -> np.ndarray:
        """Binary channels [C, ...] and probabilities [C, ...] → int64 [4, m, C]."""
        return np.stack([sweep_channel(reference[c].astype(bool), probability[c], thresholds,
                                       valid) for c in range(reference.shape[0])], axis=-1)

    def moveaxis0(self, a: np.ndarray, axis: int) -> np.ndarray:
        return np.moveaxis(a, axis, 0)

    def permute(self, a: np.ndarray, order: tuple[int, ...]) -> np.ndarray:
        return np.transpose(a, order)

    def scaled(self, a: np.ndarray, scale: int) -> np.ndarray:
        """Integer probabilities → float64 ``v / scale``."""
        return a.astype(np.float64) / scale

    def argmax0(self, a: np.ndarray) -> np.ndarray:
        """Index of the largest channel; ties go to the lowest index."""
        return np.argmax(a, axis=0)

    def one_hot0(self, labels: np.ndarray, n_channels: int) -> np.ndarray:
        return np.stack([labels == c for c in range(n_channels)])

    def zeros(self, shape: tuple[int, ...]) -> np.ndarray:
        return np.zeros(shape, dtype=np.uint8)

    def shape(self, a: np.ndarray) -> tuple[int, ...]:
        return tuple(a.shape)

    # --- counting kernels ----------------------------------------------------------------
    def confusion(self, reference: np.ndarray, prediction: np.ndarray) -> Confusion:
        """Sparse confusion of two non-negative integer label maps of equal shape."""
        ref, pred = flat_pair(reference, prediction)
        if ref.size == 0:
            empty = np.zeros(0, dtype=np.int64)
            return Confusion(empty, empty, empty)
        n = int(max(ref.max(), pred.max())) + 1
        if n * n <= DENSE_BINS:
            return _dense_confusion(ref, pred, n)
        return _sparse_confusion(ref, pred)

    def channel_counts(
        self, reference: np.ndarray, prediction: np.ndarray, valid: np.ndarray | None
    ) -> ChannelCounts:
        """Binary channels [C, ...] of reference and prediction → integer counts per channel."""
        n_channels = reference.shape[0]
        ref = reference.reshape(n_channels, -1)
        pred = prediction.reshape(n_channels, -1)
        mask = None if valid is None else np.ravel(valid)
        tp = np.zeros(n_channels, np.int64)
        n_ref = np.zeros(n_channels, np.int64)
        n_pred = np.zeros(n_channels, np.int64)
        n_valid = 0
        for start in range(0, ref.shape[1], CHUNK):
            r = ref[:, start:start + CHUNK].astype(bool, copy=False)
            p = pred[:, start:start + CHUNK].astype(bool, copy=False)
            if mask is not None:
                m = mask[start:start + CHUNK]
                r, p = r & m, p & m
                n_valid += int(np.count_nonzero(m))
            else:
                n_valid += r.shape[1]
            tp += np.count_nonzero(r & p, axis=1)
            n_ref += np.count_nonzero(r, axis=1)
            n_pred += np.count_nonzero(p, axis=1)
        fp, fn = n_pred - tp, n_ref - tp
        return ChannelCounts(tp, fp, fn, n_valid - tp - fp - fn)

    def soft_counts(
        self, reference: np.ndarray, probability: np.ndarray, valid: np.ndarray | None
    ) -> ChannelCounts:
        """Soft counts: TP = Σ p·g, FP = Σ p·(1−g), FN = Σ (1−p)·g, TN = Σ (1−p)(1−g)."""
        n_channels = reference.shape[0]
        ref = reference.reshape(n_channels, -1)
        prob = probability.reshape(n_channels, -1)
        mask = None if valid is None else np.ravel(valid)
        sums = np.zeros((3, n_channels), np.float64)  # Σpg, Σp, Σg
        n_valid = 0.0
        for start in range(0, ref.shape[1], CHUNK):
            g = ref[:, start:start + CHUNK].astype(np.float64)
            p = prob[:, start:start + CHUNK].astype(np.float64)
            if mask is not None:
                m = mask[start:start + CHUNK]
                g, p = g * m, p * m
                n_valid += float(np.count_nonzero(m))
            else:
                n_valid += g.shape[1]
            sums += ((p * g).sum(axis=1), p.sum(axis=1), g.sum(axis=1))
        tp, fp, fn = sums[0], sums[1] - sums[0], sums[2] - sums[0]
        return ChannelCounts(tp, fp, fn, n_valid - tp - fp - fn, soft=True)


def sweep_channel(reference: np.ndarray, probability: np.ndarray, thresholds: np.ndarray,
                  valid: np.ndarray | None) -> np.ndarray:
    """Counts of one binary channel at every threshold, in one pass: int64 [4, m] (TP, FP,
    FN, TN).  ``b = #{t_j < p}`` per voxel, so ``p > t_j`` exactly when ``j < b``; a
    histogram of ``b`` by reference value and suffix sums give every threshold, each equal
    to thresholding at that value alone.

    ``b`` is computed in the probabilities' own float type against ``edges``, the smallest
    values of that type above each threshold (``p > t`` ⇔ ``p >= edge``), by summing
    comparisons for up to 63 thresholds (uint8, several times faster than a sorted search)
    and by a sorted search beyond.
    """
    m = len(thresholds)
    ref = np.ravel(reference)
    prob = np.ravel(probability)
    if not np.issubdtype(prob.dtype, np.floating):
        prob = prob.astype(np.float64)
    edges = strict_edges(thresholds, prob.dtype)
    mask = None if valid is None else np.ravel(valid)
    small = m <= 63
    hist = np.zeros(2 * (m + 1) + 1, dtype=np.int64)
    for start in range(0, ref.size, CHUNK):
        chunk = prob[start:start + CHUNK]
        if small:
            b = np.zeros(chunk.shape, dtype=np.uint8)
            for edge in edges:
                b += chunk >= edge
            index = ref[start:start + CHUNK].astype(np.uint8) * np.uint8(m + 1) + b
        else:
            above = np.searchsorted(edges, chunk, side="right")
            index = ref[start:start + CHUNK].astype(np.int64) * (m + 1) + above
        if mask is not None:
            index = np.where(mask[start:start + CHUNK], index, 2 * (m + 1))  # a discard bin
        hist += np.bincount(index, minlength=2 * (m + 1) + 1)
    return counts_from_histogram(hist[:-1].reshape(2, m + 1))


def strict_edges(thresholds: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """For each threshold t, the smallest value e of ``dtype`` with e > t, so that for data
    of that type ``p > t`` is exactly ``p >= e``."""
    rounded = np.asarray(thresholds, dtype=np.float64).astype(dtype)
    up = np.nextafter(rounded, np.asarray(np.inf, dtype=dtype))
    return np.where(rounded.astype(np.float64) > thresholds, rounded, up).astype(dtype)


def counts_from_histogram(hist: np.ndarray) -> np.ndarray:
    """[2, m+1] histogram of b by reference (0/1) → int64 [4, m] TP, FP, FN, TN."""
    above = np.cumsum(hist[:, ::-1], axis=1)[:, ::-1][:, 1:]  # voxels with b > j
    tp, fp = above[1], above[0]
    return np.stack([tp, fp, hist[1].sum() - tp, hist[0].sum() - fp])


def exactly_above(a: Any, threshold: float, rounded: Any) -> Any:
    """``a > threshold`` for values of a narrower float type, without widening ``a``.

    Comparing float32 data with a Python float would round the threshold to float32 first
    (NumPy 2, torch), so float32(0.3) = 0.300000012 would not count as above 0.3 although
    it is.  With ``rounded`` the threshold in ``a``'s type: if rounding went up, ``a > t``
    is ``a >= rounded``; otherwise ``a > rounded``.  Exact, and no float64 copy of ``a``.
    """
    return a >= rounded if float(rounded) > threshold else a > rounded


def flat_pair(reference: np.ndarray, prediction: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Both arrays flattened in the same voxel order, without copies when their memory
    layouts agree (two Fortran-ordered NIfTI volumes are read in Fortran order)."""
    if reference.flags.f_contiguous and prediction.flags.f_contiguous:
        return reference.ravel(order="F"), prediction.ravel(order="F")
    return np.ravel(reference), np.ravel(prediction)


def _dense_confusion(ref: np.ndarray, pred: np.ndarray, n: int) -> Confusion:
    """One bincount per chunk over ``ref * n + pred`` in the smallest index type
    (``np.bincount`` is several times faster on uint8 than on wider input)."""
    if n * n <= 1 << 8:
        bins = _byte_pair_bincount(ref, pred, n)
    elif n * n <= 1 << 16:
        bins = _short_bincount(ref, pred, n)
    else:
        bins = np.zeros(n * n, dtype=np.int64)
        for start in range(0, ref.size, CHUNK):
            index = ref[start:start + CHUNK].astype(np.int64) * n
            index += pred[start:start + CHUNK].astype(np.int64, copy=False)
            bins += np.bincount(index, minlength=n * n)[: n * n]
    (nonzero,) = np.nonzero(bins)
    return Confusion(nonzero // n, nonzero % n, bins[nonzero])


def _foreground_runs(ref: np.ndarray, pred: np.ndarray,
                     bins: np.ndarray) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """The runs of ``BACKGROUND_CHUNK`` voxels to count; a run that is 0 in both arrays is
    added to ``bins[0]`` (the pair (0, 0)) instead of being yielded."""
    step = BACKGROUND_CHUNK
    for start in range(0, ref.size, step):
        r, p = ref[start:start + step], pred[start:start + step]
        if r.any() or p.any():
            yield r, p
        else:
            bins[0] += r.size


def _byte_pair_bincount(ref: np.ndarray, pred: np.ndarray, n: int) -> np.ndarray:
    """``bincount(ref * n + pred)`` for n·n ≤ 256, counting two uint8 indices at a time.

    Adjacent index bytes are read as one uint16 ``first + 256·second`` (both < n·n), so
    bincount sees half the elements; the table it fills has only ``256·n·n`` bins (no
    65536-bin table per chunk, which cost more than the counting itself on a 512×512
    image), and each byte of a pair is counted back by one of the table's two marginals.
    Runs of ``BACKGROUND_CHUNK`` voxels that are 0 in both arrays are only counted (medical
    volumes are mostly background: half the time on the benchmark's CT-like volumes).
    """
    k = n * n
    table = np.zeros(k * 256, dtype=np.int64)  # [second byte, first byte] of each pair
    bins = np.zeros(k, dtype=np.int64)
    for r, p in _foreground_runs(ref, pred, bins):
        index = np.multiply(r, np.uint8(n), dtype=np.uint8, casting="unsafe")
        index += p.astype(np.uint8, copy=False)
        even = index.size - index.size % 2
        if even:
            counted = np.bincount(index[:even].view(np.uint16))
            table[: counted.size] += counted
        if even < index.size:
            bins += np.bincount(index[even:], minlength=k)
    pairs = table.reshape(k, 256)
    return bins + pairs.sum(axis=0)[:k] + pairs.sum(axis=1)


def _short_bincount(ref: np.ndarray, pred: np.ndarray, n: int) -> np.ndarray:
    """``bincount(ref * n + pred)`` for 256 < n·n ≤ 65536, on a uint16 index.  Runs of
    ``BACKGROUND_CHUNK`` voxels are counted at a time (bincount's own int64 copy of them
    stays in cache: 34 → 17 ms for a 256×256×160 pair with 117 labels), background-in-both
    runs only added to pair (0, 0)."""
    bins = np.zeros(n * n, dtype=np.int64)
    for r, p in _foreground_runs(ref, pred, bins):
        index = np.multiply(r, np.uint16(n), dtype=np.uint16, casting="unsafe")
        np.add(index, p, out=index, casting="unsafe")
        counted = np.bincount(index)
        bins[: counted.size] += counted
    return bins


def _sparse_confusion(ref: np.ndarray, pred: np.ndarray) -> Confusion:
    """For label values too large for a dense table: unique (ref, pred) pairs."""
    totals: dict[tuple[int, int], int] = {}
    for start in range(0, ref.size, CHUNK):
        r = ref[start:start + CHUNK].astype(np.int64)
        p = pred[start:start + CHUNK].astype(np.int64)
        pairs, counts = np.unique(np.stack([r, p]), axis=1, return_counts=True)
        for (a, b), c in zip(pairs.T.tolist(), counts.tolist(), strict=True):
            totals[(a, b)] = totals.get((a, b), 0) + c
    keys = sorted(totals)
    return Confusion(
        np.array([k[0] for k in keys], dtype=np.int64),
        np.array([k[1] for k in keys], dtype=np.int64),
        np.array([totals[k] for k in keys], dtype=np.int64),
    )
