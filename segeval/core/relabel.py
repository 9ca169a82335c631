"""Label mappings applied to the sparse confusion table, never to the voxels.

A case's :class:`~segeval.core.counts.Confusion` says how many voxels carry each (reference
label, predicted label) pair.  Mapping labels (``255 → 1``, ``4 → 3``, or "every non-zero
label is foreground") before scoring only renames the rows of that table and merges rows
that now name the same pair: the counts of the merged table are exactly the counts of the
relabelled voxels (tests/test_relabel.py checks this with hypothesis).  So a mapping costs
microseconds per case, needs no second pass over the data, and the per-case cache keeps the
raw counts.

Rules
-----
* ``binary``: every non-zero label becomes 1 on both sides (applied after the explicit
  mappings, so ``4=0`` with ``binary`` drops label 4 to background first).
* ``reference`` / ``prediction``: ``(from, to)`` pairs for that side; a label not listed
  keeps its value.  Mappings are applied once (``1=2, 2=3`` sends 1 to 2, not to 3).
* ``ignore_index``: reference voxels holding it *as stored* stay ignored whatever the
  mapping says, so ``--binary --ignore-index 255`` keeps VOC-style borders out of the counts.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np

from segeval.config import EvalConfig
from segeval.core.counts import Confusion

Pairs = Sequence[tuple[int, int]]


@dataclass(frozen=True)
class LabelMapping:
    """The label mapping of a run; empty (``identity``) when nothing is mapped."""

    reference: tuple[tuple[int, int], ...] = ()
    prediction: tuple[tuple[int, int], ...] = ()
    binary: bool = False

    @property
    def identity(self) -> bool:
        return not (self.reference or self.prediction or self.binary)

    def apply(self, labels: np.ndarray, side: str) -> np.ndarray:
        """Map an int64 array of labels of one side (``"reference"`` or ``"prediction"``)."""
        return map_labels(labels, self.reference if side == "reference" else self.prediction,
                          self.binary)

    def label(self, value: int, side: str) -> int:
        """The mapped value of one label."""
        return int(self.apply(np.asarray([value], dtype=np.int64), side)[0])


def label_mapping(config: EvalConfig) -> LabelMapping:
    """The mapping a config asks for (``binary``, ``map_reference``, ``map_prediction``)."""
    return LabelMapping(config.map_reference, config.map_prediction, config.binary)


def map_labels(labels: np.ndarray, pairs: Pairs, binary: bool) -> np.ndarray:
    """``labels`` with each ``from`` replaced by its ``to`` (one pass, no chaining), then,
    with ``binary``, every non-zero value replaced by 1.  int64 in, int64 out, same shape."""
    out = np.asarray(labels, dtype=np.int64)
    if pairs:
        sources = np.asarray([a for a, _ in pairs], dtype=np.int64)
        targets = np.asarray([b for _, b in pairs], dtype=np.int64)
        order = np.argsort(sources)
        sources, targets = sources[order], targets[order]
        where = np.clip(np.searchsorted(sources, out), 0, len(sources) - 1)
        out = np.where(sources[where] == out, targets[where], out)
    if binary:
        out = (out != 0).astype(np.int64)
    return out


def relabel_confusion(counts: Confusion, mapping: LabelMapping,
                      ignore_index: int | None = None) -> Confusion:
    """The confusion table of the relabelled voxels, computed from the table alone.

    Each (reference, prediction, count) row is renamed by ``mapping``; rows naming the same
    pair afterwards are summed.  Reference rows equal to ``ignore_index`` before mapping
    keep that value, so they stay ignored.  A threshold sweep (per-channel counts of a
    probability map, not labels) cannot be renamed and is refused by the config instead.
    """
    if mapping.identity:
        return counts
    reference = mapping.apply(counts.reference, "reference")
    if ignore_index is not None:
        reference = np.where(counts.reference == ignore_index, ignore_index, reference)
    prediction = mapping.apply(counts.prediction, "prediction")
    pairs = np.stack([reference, prediction])
    unique, inverse = np.unique(pairs, axis=1, return_inverse=True)
    summed = np.zeros(unique.shape[1], dtype=np.int64)
    np.add.at(summed, inverse.ravel(), counts.count)  # int64 throughout: exact
    return replace(counts, reference=unique[0].astype(np.int64),
                   prediction=unique[1].astype(np.int64), count=summed)


def parse_mapping(text: str) -> tuple[str, tuple[int, int]]:
    """``255=1`` (both sides), ``reference:255=1`` or ``prediction:4=3`` →
    (side, (from, to)) with side ``both``, ``reference`` or ``prediction``.

    Raises ``ValueError`` with a message naming the accepted forms."""
    side, _, rest = text.rpartition(":")
    side = {"": "both", "ref": "reference", "reference": "reference", "pred": "prediction",
            "prediction": "prediction"}.get(side.strip().lower(), "?")
    source, sep, target = rest.partition("=")
    if side == "?" or not sep or not source.strip().isdigit() or not target.strip().isdigit():
        raise ValueError(f"{text!r} is not FROM=TO, reference:FROM=TO or prediction:FROM=TO "
                         "(labels >= 0), e.g. 255=1")
    return side, (int(source), int(target))
