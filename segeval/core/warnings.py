"""Run-level warnings: inputs that give a legal but probably wrong score.

Every rule here reads facts that the counts already hold (which labels occur on which side
of which case, from the sparse confusion tables) plus the options and the pairing; none
reads a voxel again.  Each warning has a stable code, one line that names the cases or
labels involved, and the option that fixes it.  They are listed in the report's
``warnings`` block, printed once per run, and ``--strict`` turns any of them into a failure.

Codes
-----
``W_PREDICTION_ONLY_LABELS``  labels that occur in predictions and in no reference.
``W_REFERENCE_ONLY_LABELS``   labels that occur in references and in no prediction.
``W_GREY_LEVELS``             a side holds ``GREY_LEVEL_MIN_COUNT`` or more undeclared
                              non-zero values, the largest >= ``GREY_LEVEL_MIN_VALUE``: the
                              look of a resized/anti-aliased mask or an 8-bit probability
                              map read as labels.
``W_DECLARED_LABEL_ABSENT``   a label named by ``labels``, ``label_names`` or a region that
                              occurs in no file of the run.
``W_UNEVALUATED_LABELS``      labels found in the data that no evaluated class covers (they
                              count as negatives for every class).
``W_UNPAIRED_LOOKALIKE``      a case without prediction while the prediction folder holds a
                              file of an unsupported type, or a folder, with that case id.
``W_UNMATCHED_PREDICTIONS``   prediction files without a reference.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from segeval.core.counts import CaseCounts, ChannelCounts, ClassSpec

# 0/255 masks hold one non-zero value, 0/128/255 two; class maps rarely use values >= 128
# with several classes.  Three or more undeclared values with one >= 128 is the signature
# of grey levels (anti-aliasing: 9, 39, 48, 168, 207, 255) or of 8-bit probabilities.
GREY_LEVEL_MIN_COUNT = 3
GREY_LEVEL_MIN_VALUE = 128
SHOWN = 8  # labels or cases named in one line; the JSON lists all

CODES: tuple[str, ...] = (
    "W_PREDICTION_ONLY_LABELS", "W_REFERENCE_ONLY_LABELS", "W_GREY_LEVELS",
    "W_DECLARED_LABEL_ABSENT", "W_UNEVALUATED_LABELS", "W_UNPAIRED_LOOKALIKE",
    "W_UNMATCHED_PREDICTIONS",
)


@dataclass(frozen=True)
class RunWarning:
    """One warning of a run: ``code`` (one of :data:`CODES`), a one-line ``message`` that
    includes the fix, and the ``labels``/``cases``/``files`` it is about (complete)."""

    code: str
    message: str
    labels: tuple[int, ...] = ()
    cases: tuple[str, ...] = ()
    files: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {"code": self.code, "message": self.message, "labels": list(self.labels),
                "cases": list(self.cases), "files": list(self.files)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RunWarning:
        return cls(str(data["code"]), str(data["message"]),
                   tuple(int(x) for x in data.get("labels", ())),
                   tuple(str(x) for x in data.get("cases", ())),
                   tuple(str(x) for x in data.get("files", ())))


@dataclass
class LabelFacts:
    """Where each label occurs, per side: label → case ids (evaluated voxels only)."""

    reference: dict[int, list[str]] = field(default_factory=dict)
    prediction: dict[int, list[str]] = field(default_factory=dict)

    @property
    def found(self) -> set[int]:
        return set(self.reference) | set(self.prediction)


def label_facts(cases: Iterable[tuple[str, CaseCounts | None]],
                ignore_index: int | None) -> LabelFacts:
    """Collect :class:`LabelFacts` from each case's counts (``None``: not scored).

    A confusion table gives the labels of each side on voxels whose reference is not
    ``ignore_index``; channel counts give channel ``c`` on the reference side when
    TP + FN > 0 and on the prediction side when TP + FP > 0."""
    facts = LabelFacts()
    for case_id, counts in cases:
        if counts is None:
            continue
        if isinstance(counts, ChannelCounts):
            sides = (np.flatnonzero(counts.tp + counts.fn > 0),
                     np.flatnonzero(counts.tp + counts.fp > 0))
        else:
            kept = counts.count > 0
            if ignore_index is not None:
                kept &= counts.reference != ignore_index
            sides = (np.unique(counts.reference[kept]), np.unique(counts.prediction[kept]))
        for store, labels in zip((facts.reference, facts.prediction), sides, strict=True):
            for label in labels.tolist():
                store.setdefault(int(label), []).append(case_id)
    return facts


@dataclass(frozen=True)
class Declared:
    """What the options say the labels are (all label values, before any class is built)."""

    labels: tuple[int, ...] | None = None  # --labels
    names: tuple[int, ...] = ()  # --label-names / dataset.json
    regions: tuple[tuple[str, tuple[int, ...]], ...] = ()
    ignore_index: int | None = None
    regions_from: str = "--region"  # how regions were given, for messages

    @property
    def all(self) -> set[int]:
        out = set(self.labels or ()) | set(self.names)
        out |= {label for _, members in self.regions for label in members}
        return out


@dataclass(frozen=True)
class PairingFacts:
    """What pairing saw: cases without prediction, entries of the prediction folder that
    were skipped (unsupported files, folders) and predictions without reference."""

    missing_cases: tuple[str, ...] = ()
    skipped_prediction_entries: tuple[str, ...] = ()
    unmatched_predictions: tuple[str, ...] = ()


def run_warnings(facts: LabelFacts, declared: Declared, classes: Sequence[ClassSpec],
                 pairing: PairingFacts = PairingFacts()) -> list[RunWarning]:
    """Every warning of a run, in the order of :data:`CODES`."""
    warnings = _one_sided(facts, declared)
    warnings += _grey_levels(facts, declared)
    warnings += _declared_absent(facts, declared)
    warnings += _unevaluated(facts, declared, classes)
    warnings += _lookalikes(pairing)
    if pairing.unmatched_predictions:
        files = pairing.unmatched_predictions
        warnings.append(RunWarning(
            "W_UNMATCHED_PREDICTIONS",
            f"{len(files)} prediction file(s) have no reference and were not evaluated: "
            f"{_names(files)}; check the file names (case ids must match)", files=files))
    return warnings


def _one_sided(facts: LabelFacts, declared: Declared) -> list[RunWarning]:
    skip = {0} | ({declared.ignore_index} if declared.ignore_index is not None else set())
    pred_only = sorted(set(facts.prediction) - set(facts.reference) - skip)
    ref_only = sorted(set(facts.reference) - set(facts.prediction) - skip)
    if not (pred_only or ref_only):
        return []
    sets = (f"predictions hold labels {_labels(sorted(facts.prediction))}, references "
            f"{_labels(sorted(facts.reference))}")
    if pred_only and ref_only:
        fix = (f"if both sides are masks saved with different values use --binary (every "
               f"non-zero label is foreground) or map them, e.g. --map "
               f"{ref_only[-1]}={pred_only[0]}")
    else:
        fix = ("a class the model never predicts, or never present: check the label "
               "values, or map them with --map FROM=TO")
    out = []
    for code, labels, side, store in (
            ("W_PREDICTION_ONLY_LABELS", pred_only, "predictions", facts.prediction),
            ("W_REFERENCE_ONLY_LABELS", ref_only, "references", facts.reference)):
        if labels:
            cases = sorted({c for label in labels for c in store[label]})
            out.append(RunWarning(code, f"label(s) {_labels(labels)} occur only in {side} "
                                  f"({len(cases)} case(s): {_names(cases)}); {sets}; {fix}",
                                  tuple(labels), tuple(cases)))
    return out


def _grey_levels(facts: LabelFacts, declared: Declared) -> list[RunWarning]:
    known = declared.all | {0} | ({declared.ignore_index} if declared.ignore_index is not None
                                  else set())
    out = []
    for side, store in (("prediction", facts.prediction), ("reference", facts.reference)):
        values = sorted(set(store) - known)
        if len(values) >= GREY_LEVEL_MIN_COUNT and values[-1] >= GREY_LEVEL_MIN_VALUE:
            cases = sorted({c for v in values for c in store[v]})
            fix = ("8-bit probabilities: --probability-scale 255" if side == "prediction"
                   else "re-threshold the mask, or resample it with nearest neighbour")
            out.append(RunWarning(
                "W_GREY_LEVELS",
                f"the {side}s hold {len(values)} undeclared label values up to {values[-1]} "
                f"({_labels(values)}; {len(cases)} case(s): {_names(cases)}): grey levels "
                f"of a resized or anti-aliased mask, or a probability map read as labels "
                f"(rule: >= {GREY_LEVEL_MIN_COUNT} undeclared values, one >= "
                f"{GREY_LEVEL_MIN_VALUE}); {fix}; if they are real classes declare them with "
                "--labels or --label-names", tuple(values), tuple(cases)))
    return out


def _declared_absent(facts: LabelFacts, declared: Declared) -> list[RunWarning]:
    absent = sorted(declared.all - facts.found - {0} - {declared.ignore_index})
    if not absent:
        return []
    sources = [name for name, labels in (
        ("--labels", set(declared.labels or ())), ("--label-names", set(declared.names)),
        (declared.regions_from, {x for _, m in declared.regions for x in m}))
        if labels & set(absent)]
    return [RunWarning(
        "W_DECLARED_LABEL_ABSENT",
        f"declared label(s) {_labels(absent)} ({', '.join(sources)}) occur in no file of the "
        f"run; found labels are {_labels(sorted(facts.found))}; their classes are empty "
        "(scores undefined, shown as —): check the label numbering", tuple(absent))]


def _unevaluated(facts: LabelFacts, declared: Declared,
                 classes: Sequence[ClassSpec]) -> list[RunWarning]:
    covered = {label for spec in classes for label in spec.labels} | {0}
    if declared.ignore_index is not None:
        covered.add(declared.ignore_index)
    outside = sorted(facts.found - covered)
    if not outside:
        return []
    cases = sorted({c for label in outside for store in (facts.reference, facts.prediction)
                    for c in store.get(label, ())})
    how = "--labels" if declared.labels is not None else declared.regions_from
    return [RunWarning(
        "W_UNEVALUATED_LABELS",
        f"label(s) {_labels(outside)} occur in {len(cases)} case(s) ({_names(cases)}) but no "
        f"evaluated class covers them (classes from {how}); they count as negatives for "
        "every class.  Add them to --labels or a --region, map them with --map FROM=TO, "
        "or pass --unexpected-labels error to refuse such cases", tuple(outside),
        tuple(cases))]


def _lookalikes(pairing: PairingFacts) -> list[RunWarning]:
    out = []
    for case in pairing.missing_cases:
        near = [entry for entry in pairing.skipped_prediction_entries
                if Path(entry).name == case or Path(entry).name.startswith(case + ".")]
        if near:
            kind = ("a folder" if Path(near[0]).name == case
                    else "a file of a type segeval does not read")
            out.append(RunWarning(
                "W_UNPAIRED_LOOKALIKE",
                f"case {case!r} has no prediction, but the prediction folder holds "
                f"{_names(near)} ({kind}): "
                "rename or convert it (segeval reads .nii.gz, .nii, .nrrd, .nhdr, .mha, .mhd, "
                ".png, .npy, .npz, .tif)", cases=(case,), files=tuple(near)))
    return out


def _labels(values: Sequence[int]) -> str:
    text = ", ".join(str(v) for v in values[:SHOWN])
    return "{" + text + (f", … {len(values) - SHOWN} more" if len(values) > SHOWN else "") + "}"


def _names(items: Sequence[str]) -> str:
    text = ", ".join(items[:SHOWN])
    return text + (f" … ({len(items) - SHOWN} more)" if len(items) > SHOWN else "")
