"""The counting results that every later step is built on.

A case is reduced, in one pass over its voxels, to one of two forms:

* :class:`Confusion` for label maps: the sparse confusion matrix, i.e. for each
  (reference label, predicted label) pair that occurs, how many voxels have it.  Any set of
  labels (a class, a region, background) gets its TP/FP/FN/TN from it without the voxels.
* :class:`ChannelCounts` for channel layouts (multi-label masks, soft probabilities): TP, FP,
  FN, TN per channel, where channel ``c`` stands for label ``c``.

Both turn into the per-class rows of a :class:`CountTable` once the classes are known.
Integer counts are int64 and exact; soft counts are float64 sums.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class ClassSpec:
    """One evaluated class: its report key, display name and the labels it unites."""

    key: str
    name: str
    labels: tuple[int, ...]


@dataclass(frozen=True)
class Confusion:
    """Sparse confusion of one case: ``count[i]`` voxels have reference label
    ``reference[i]`` and predicted label ``prediction[i]``.  Pairs are unique."""

    reference: np.ndarray  # int64 [P]
    prediction: np.ndarray  # int64 [P]
    count: np.ndarray  # int64 [P]
    sweep: np.ndarray | None = None  # int64 [4, m, C]: TP/FP/FN/TN per threshold, channel

    @property
    def labels(self) -> set[int]:
        """Every label that occurs in the reference or the prediction."""
        return {int(x) for x in np.union1d(self.reference, self.prediction)}

    def evaluated_labels(self, ignore_index: int | None) -> set[int]:
        """Labels occurring on evaluated voxels (reference != ignore_index)."""
        if ignore_index is None:
            return self.labels
        kept = self.reference != ignore_index
        return {int(x) for x in np.union1d(self.reference[kept], self.prediction[kept])}

    def class_counts(
        self, classes: list[ClassSpec], ignore_index: int | None
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """TP, FP, FN, TN (int64 [K]) for each class; reference == ignore_index is skipped."""
        count = self.count
        if ignore_index is not None:
            count = np.where(self.reference == ignore_index, 0, count)
        # membership of each distinct label in each class, then looked up per pair: two
        # searches instead of 2·K np.isin passes (14 ms -> 0.1 ms per case at K = 117)
        labels = np.union1d(self.reference, self.prediction)
        position = {value: i for i, value in enumerate(labels.tolist())}
        member = np.zeros((len(classes), len(labels)), dtype=bool)
        for row, spec in enumerate(classes):
            member[row, [position[v] for v in spec.labels if v in position]] = True
        in_ref = member[:, np.searchsorted(labels, self.reference)]
        in_pred = member[:, np.searchsorted(labels, self.prediction)]
        tp = (count * (in_ref & in_pred)).sum(axis=1)
        fp = (count * (~in_ref & in_pred)).sum(axis=1)
        fn = (count * (in_ref & ~in_pred)).sum(axis=1)
        tn = count.sum() - tp - fp - fn
        return tp.astype(np.int64), fp.astype(np.int64), fn.astype(np.int64), tn.astype(np.int64)

    def to_dict(self) -> dict[str, list[int]]:
        return {
            "reference": self.reference.tolist(),
            "prediction": self.prediction.tolist(),
            "count": self.count.tolist(),
        }


@dataclass(frozen=True)
class ChannelCounts:
    """Per-channel counts of one case; channel ``c`` is label ``c``.

    ``soft`` counts are float sums of probabilities; otherwise int64 voxel counts.
    """

    tp: np.ndarray
    fp: np.ndarray
    fn: np.ndarray
    tn: np.ndarray
    soft: bool = False
    sweep: np.ndarray | None = None  # int64 [4, m, C]: TP/FP/FN/TN per threshold, channel

    @property
    def labels(self) -> set[int]:
        """Every channel is a class of the layout, present in this case or not."""
        return set(range(self.n_channels))

    def evaluated_labels(self, ignore_index: int | None) -> set[int]:
        return self.labels

    @property
    def n_channels(self) -> int:
        return int(self.tp.shape[0])

    def class_counts(
        self, classes: list[ClassSpec], ignore_index: int | None = None
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Counts of each class's single channel (a label beyond the channels counts as an
        absent class: all its evaluated voxels are true negatives)."""
        del ignore_index  # already applied while counting channels
        total = self.tp[0] + self.fp[0] + self.fn[0] + self.tn[0] if self.n_channels else 0
        dtype = np.float64 if self.soft else np.int64
        out = np.zeros((4, len(classes)), dtype=dtype)
        for k, spec in enumerate(classes):
            (channel,) = spec.labels
            if channel < self.n_channels:
                out[:, k] = (self.tp[channel], self.fp[channel], self.fn[channel],
                             self.tn[channel])
            else:
                out[3, k] = total
        return out[0], out[1], out[2], out[3]

    def to_dict(self) -> dict[str, list[float]]:
        return {"tp": self.tp.tolist(), "fp": self.fp.tolist(), "fn": self.fn.tolist(),
                "tn": self.tn.tolist()}


CaseCounts = Confusion | ChannelCounts


@dataclass
class CountTable:
    """Counts of every case × class: arrays of shape [n_cases, n_classes].

    ``scored[i]`` is False for cases that take no part in the reductions (errors, missing
    predictions that were skipped); their rows are zero.
    """

    classes: list[ClassSpec]
    tp: np.ndarray
    fp: np.ndarray
    fn: np.ndarray
    tn: np.ndarray
    scored: np.ndarray  # bool [n_cases]

    @classmethod
    def build(
        cls, per_case: list[CaseCounts | None], classes: list[ClassSpec],
        ignore_index: int | None, soft: bool,
    ) -> CountTable:
        dtype = np.float64 if soft else np.int64
        shape = (len(per_case), len(classes))
        table = [np.zeros(shape, dtype=dtype) for _ in range(4)]
        scored = np.zeros(len(per_case), dtype=bool)
        for i, counts in enumerate(per_case):
            if counts is None:
                continue
            scored[i] = True
            if classes:
                values = counts.class_counts(classes, ignore_index)
                for column, column_values in zip(table, values, strict=True):
                    column[i] = column_values
        tp, fp, fn, tn = table
        return cls(classes, tp, fp, fn, tn, scored)
