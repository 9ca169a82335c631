"""Pairing predictions with references into cases.

Inputs are two files, two folders, or (from Python) two arrays, two lists of arrays or two
dicts ``{case_id: array}``.  Folders are paired by case id, the file name without its format
suffix, so ``case_01.nii.gz`` pairs with ``case_01.nrrd``.  Folders are read flat (no
recursion); hidden files and files of unknown type are listed in ``ignored_files``.

Rules: a reference without prediction is a *missing* case (handled by ``--missing``); a
prediction without reference is listed in ``unmatched_predictions`` and ignored; two files
in one folder with the same case id make that case invalid (``E_DUPLICATE_CASE``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from segeval import errors
from segeval.errors import UsageError
from segeval.formats import SUFFIXES, case_id, format_suffix


@dataclass(frozen=True)
class CaseSource:
    """Where one case's data comes from: a path or an in-memory array each."""

    id: str
    reference: Any
    prediction: Any | None
    reference_name: str
    prediction_name: str | None
    problem: tuple[str, str] | None = None  # (error_code, message) found while pairing
    in_folder: bool = False  # files found in an evaluated folder: symlinks may not leave it


@dataclass
class Pairing:
    cases: list[CaseSource]
    unmatched_predictions: list[str] = field(default_factory=list)
    ignored_files: list[str] = field(default_factory=list)
    from_files: bool = False
    # unsupported files and folders of the prediction folder: a case without prediction
    # whose id names one of them gets a W_UNPAIRED_LOOKALIKE warning
    skipped_predictions: list[str] = field(default_factory=list)


def is_array_like(value: Any) -> bool:
    return hasattr(value, "shape") and hasattr(value, "dtype")


def pair_inputs(prediction: Any, reference: Any, prediction_suffix: str | None = None
                ) -> Pairing:
    """Pair two paths, two arrays, two sequences of arrays or two mappings."""
    if isinstance(prediction, (str, Path)) and isinstance(reference, (str, Path)):
        return pair_paths(Path(prediction), Path(reference), prediction_suffix)
    if is_array_like(prediction) and is_array_like(reference):
        return _pair_mappings({"case_000": prediction}, {"case_000": reference})
    if isinstance(prediction, Mapping) and isinstance(reference, Mapping):
        return _pair_mappings(prediction, reference)
    if isinstance(prediction, Sequence) and isinstance(reference, Sequence) and not isinstance(
            prediction, (str, bytes)):
        if len(prediction) != len(reference):
            raise UsageError("E_USAGE", f"{len(prediction)} predictions but {len(reference)} "
                             "references", hint="lists are paired by position")
        width = max(3, len(str(len(reference) - 1)))
        ids = [f"case_{i:0{width}d}" for i in range(len(reference))]
        return _pair_mappings(dict(zip(ids, prediction, strict=True)),
                              dict(zip(ids, reference, strict=True)))
    raise UsageError("E_USAGE", f"cannot pair a {type(prediction).__name__} prediction with a "
                     f"{type(reference).__name__} reference",
                     hint="give two paths, two arrays, two lists or two dicts")


def _pair_mappings(prediction: Mapping[str, Any], reference: Mapping[str, Any]) -> Pairing:
    cases = [
        CaseSource(str(key), value, prediction.get(key), f"reference[{key!r}]",
                   f"prediction[{key!r}]" if key in prediction else None)
        for key, value in sorted(reference.items(), key=lambda kv: str(kv[0]))
    ]
    extra = sorted(str(k) for k in prediction if k not in reference)
    return Pairing(cases, unmatched_predictions=extra)


def pair_paths(prediction: Path, reference: Path, prediction_suffix: str | None = None
               ) -> Pairing:
    """Pair two files or two folders.  ``prediction_suffix`` (e.g. ``.npz``) reads only the
    prediction files of that type: nnU-Net writes ``case.nii.gz`` and ``case.npz`` side by
    side, which would otherwise be two predictions of one case (``E_DUPLICATE_CASE``)."""
    prediction_suffix = None if prediction_suffix is None else prediction_suffix.lower()
    if prediction_suffix is not None and prediction_suffix not in SUFFIXES:
        raise UsageError("E_USAGE", f"--prediction-suffix {prediction_suffix!r} is not one "
                         f"of {', '.join(SUFFIXES)}")
    for role, path in (("prediction", prediction), ("reference", reference)):
        if not path.exists():
            raise UsageError("E_USAGE", f"{role} path does not exist", path)
    if prediction.is_file() and reference.is_file():
        return Pairing([CaseSource(case_id(reference.name), reference, prediction,
                                   str(reference), str(prediction))], from_files=True)
    if not (prediction.is_dir() and reference.is_dir()):
        raise UsageError("E_USAGE", "prediction and reference must both be files or both be "
                         f"folders (got {prediction} and {reference})")
    references, ignored_ref, _ = _index_folder(reference)
    predictions, ignored_pred, folders = _index_folder(prediction, prediction_suffix)
    if not references:
        raise UsageError("E_USAGE", "no mask files in the reference folder", reference,
                         f"segeval reads {', '.join(SUFFIXES)}")
    cases = []
    for key in sorted(references):
        ref_paths, pred_paths = references[key], predictions.get(key, [])
        problem = None
        for paths in (ref_paths, pred_paths):
            if len(paths) > 1:
                problem = (errors.E_DUPLICATE_CASE,
                           f"case {key!r} has several files: {', '.join(p.name for p in paths)} "
                           f"in {paths[0].parent}")
        cases.append(CaseSource(
            key, ref_paths[0], pred_paths[0] if pred_paths else None, str(ref_paths[0]),
            str(pred_paths[0]) if pred_paths else None, problem, in_folder=True))
    unmatched = sorted(str(p) for key, paths in predictions.items() if key not in references
                       for p in paths)
    return Pairing(cases, unmatched, sorted(ignored_ref + ignored_pred), from_files=True,
                   skipped_predictions=sorted(ignored_pred + folders))


def _index_folder(folder: Path, only_suffix: str | None = None
                  ) -> tuple[dict[str, list[Path]], list[str], list[str]]:
    """Supported files by case id (only those ending in ``only_suffix`` when given), the
    other files, and sub-folders (not read)."""
    try:
        entries = sorted(folder.iterdir())
    except OSError as exc:
        raise UsageError("E_USAGE", f"cannot list folder: {exc.strerror}", folder) from None
    index: dict[str, list[Path]] = {}
    ignored, folders = [], []
    for entry in entries:
        if entry.name.startswith("."):
            continue
        if entry.is_dir():
            folders.append(str(entry))
            continue
        # FIFOs, devices and dangling links go on to pre-flight, which names them
        suffix = format_suffix(entry.name)
        if suffix is None or (only_suffix is not None and suffix != only_suffix):
            ignored.append(str(entry))
            continue
        index.setdefault(case_id(entry.name), []).append(entry)
    return index, ignored, folders
