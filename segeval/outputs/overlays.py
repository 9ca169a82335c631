"""Pictures of failures: the worst cases of each class drawn as TP/FP/FN colours.

A renderer: it reads a report (the dict of :meth:`segeval.results.Report.to_dict`), picks
cases from the numbers already in it, and re-reads only those cases' files to draw them.

Rules (documented in ``docs/report.md``):

* **Which cases.**  For each class, the ``worst`` cases by per-case ``metric``
  (``cases[i].metrics[class][metric]``): the lowest values, or the highest for a metric
  where lower is better (:func:`segeval.config.lower_is_better`: distances, lesion FP/FN
  counts and volumes); undefined (null) values are never picked; ties go to the case id in
  sorting order.
* **What is drawn.**  The class's voxels interpreted as when counting: a label map's labels
  (a class unites its labels), a probability map at ``p > threshold`` (after the sigmoid
  with ``logits: sigmoid``), channel layouts by argmax or, with ``multilabel``, per channel.
  A case scored as an empty prediction (``--missing empty``, ``--invalid empty``) is drawn
  with an empty prediction.  Voxels whose reference is the ignore index are not coloured.
  Soft counts (``--soft``) are drawn at the threshold; the numbers in the picture are
  always the report's.
* **Lesions.**  When the report holds lesion values for the case and class (the run asked
  for a lesion metric), each *missed* reference lesion (``status`` fn of
  :func:`segeval.core.lesions.lesion_rows`) and each *false-positive* predicted lesion
  (``status`` fp) is outlined (:data:`MARK_COLOURS`: the lesion's pixels that have a
  4-neighbour outside it in the picture, drawn opaque over the fill).  The lesions are
  labelled, matched and filtered by the lesion functions themselves
  (:func:`~segeval.core.lesions.lesion_labels`, :func:`~segeval.core.lesions.lesion_table`)
  under the report's ``config`` (:func:`segeval.engines.lesions.options_of`: connectivity,
  dilation for matching, size filter, ...), on the drawn masks and the case's spacing: a
  lesion found only through the dilation is not missed, a dropped (too small) reference
  lesion and an ignored prediction are not outlined.  Before drawing, every lesion value
  the report holds for the case and class (``lesion_fn``, ``lesion_fp``, ``lesion_f1``,
  ...) must be what that table gives; otherwise (the files changed since the evaluation)
  the case is left out with an :class:`OverlayWarning`.  A fourth caption line gives the
  counts: reference lesions, found, missed; predicted lesions, false positives.
* **Which slices** (3-D).  Along each array axis, the slice holding the most error voxels
  (FP + FN of the class); ties go to the lowest index.  When the class has a missed lesion,
  only the slices crossing one compete (else, when it has a false-positive lesion, only
  those crossing one), so that every picture shows one.  Without any error, the slice with
  the most reference-or-prediction voxels; in an empty volume, the middle slice.
* **Orientation.**  Volumes are turned to RAS with their affine (nearest axis permutation
  and flips; none for formats without geometry, whose index order is taken as RAS) and
  drawn in the radiological convention: axial and coronal with the patient's right on the
  picture's left, sagittal with anterior on the left, superior (coronal, sagittal) and
  anterior (axial) at the top.  2-D images are drawn as stored, row 0 at the top.  Pixels
  keep the voxel spacing's aspect ratio.
* **Colours.**  TP green, FP red, FN blue (:data:`COLOURS`), blended with alpha
  :data:`ALPHA` over the image (when ``images_dir`` holds one for the case, windowed to its
  1st-99th percentile) or over a neutral grey (:data:`GREY`); lesion outlines opaque,
  missed yellow, false-positive cyan (:data:`MARK_COLOURS`).
* **Files.**  ``<out_dir>/<case_id>__<class_key>__<view>.png`` with view ``axial``,
  ``coronal``, ``sagittal`` or ``2d``; ids and keys are reduced to ``[A-Za-z0-9._-]``, and a
  name that had to change gets a short hash of the original, so that names never collide.
"""

from __future__ import annotations

import hashlib
import math
import re
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from segeval.config import EvalConfig, lower_is_better
from segeval.engines.interpret import class_voxels
from segeval.engines.numpy_backend import NumpyBackend
from segeval.errors import CaseError, UsageError
from segeval.formats import case_id, format_suffix, read_mask
from segeval.words import fmt

COLOURS: dict[str, tuple[float, float, float]] = {
    "TP": (0.0, 0.8, 0.0),  # green: reference and prediction
    "FP": (1.0, 0.1, 0.1),  # red: prediction only
    "FN": (0.1, 0.4, 1.0),  # blue: reference only
}
# lesion outlines (opaque): colours none of the fills use
MARK_COLOURS: dict[str, tuple[float, float, float]] = {
    "missed": (1.0, 0.85, 0.0),  # yellow: a reference lesion no predicted lesion touches
    "false_positive": (0.0, 0.9, 1.0),  # cyan: a predicted lesion touching no reference lesion
}
MARK_LABELS: dict[str, str] = {"missed": "missed lesion", "false_positive": "FP lesion"}
ALPHA = 0.6
GREY = 0.3  # the neutral background without an image
VIEWS_3D = (("axial", 2), ("coronal", 1), ("sagittal", 0))  # view, RAS axis held fixed
DPI = 100
HEADER_PX = 62  # three lines of text above the image
LINE_PX = 19  # each further line (the lesion counts)
FOOTER_PX = 30  # the legend below it
LEGEND_ROW_PX = 18  # each further row of the legend (the lesion outlines)
MIN_WIDTH_PX = 420
TARGET_PX = (320, 640)  # the image's long side is zoomed into this range when possible
IMAGE_CHANNEL_SUFFIX = "_0000"  # nnU-Net's first input channel


class OverlayWarning(UserWarning):
    """A case could not be drawn (its files changed or cannot be read); the others are."""


@dataclass(frozen=True)
class Plane:
    """One 2-D picture's data, oriented for display (row 0 at the top)."""

    view: str
    index: int | None  # the slice index along ``axis`` of the file's array (3-D only)
    axis: int | None
    reference: np.ndarray  # bool [rows, cols]
    prediction: np.ndarray  # bool [rows, cols]
    evaluated: np.ndarray  # bool [rows, cols]
    background: np.ndarray | None  # float [rows, cols] or [rows, cols, 3] in [0, 1]
    spacing: tuple[float, float]  # (row, column) pixel size
    # lesions to outline, {MARK_COLOURS key: bool [rows, cols]}; None: no lesion values
    marks: Mapping[str, np.ndarray] | None = None


@dataclass(frozen=True)
class Layout:
    """Pixel geometry of one written PNG: figure size and where the image sits in it."""

    width: int
    height: int
    left: int
    top: int
    image_width: int
    image_height: int

    def pixel(self, row: float, col: float, shape: tuple[int, int]) -> tuple[int, int]:
        """The PNG pixel (y, x) at the centre of image pixel (row, col)."""
        y = self.top + (row + 0.5) * self.image_height / shape[0]
        x = self.left + (col + 0.5) * self.image_width / shape[1]
        return int(y), int(x)


# ----------------------------------------------------------------------------- selection

def worst_cases(report: Mapping[str, Any], class_key: str, metric: str = "dice",
                worst: int = 5) -> list[Mapping[str, Any]]:
    """The ``worst`` scored cases by the defined per-case ``metric`` of a class: the lowest
    values, the highest where lower is better (:func:`segeval.config.lower_is_better`);
    ties: case id order."""
    sign = -1.0 if lower_is_better(metric) else 1.0
    scored = [(sign * value, case["id"], case) for case in report["cases"]
              if (value := _case_value(case, class_key, metric)) is not None]
    scored.sort(key=lambda item: item[:2])
    return [case for _, _, case in scored[:max(worst, 0)]]


def _case_value(case: Mapping[str, Any], class_key: str, metric: str) -> float | None:
    value = (case.get("metrics") or {}).get(class_key, {}).get(metric)
    return None if value is None or (isinstance(value, float) and math.isnan(value)) \
        else float(value)


# ----------------------------------------------------------------------------- masks

def class_masks(prediction: np.ndarray | None, reference: np.ndarray,
                labels: Sequence[int], config: Mapping[str, Any]
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Boolean (reference, prediction, evaluated) voxels of one class, by the counting rules
    themselves (:func:`segeval.engines.interpret.class_voxels`) under the report's
    ``config``.  ``prediction=None`` is an empty prediction."""
    return class_voxels(prediction, reference, labels, EvalConfig.from_dict(config),
                        NumpyBackend())


@dataclass(frozen=True)
class LesionMarks:
    """The lesions outlined in the pictures of one case and class, and the caption's counts.

    ``missed`` / ``false_positive``: bool, the masks' shape, the voxels of the reference
    lesions with status fn / the predicted lesions with status fp
    (:func:`segeval.core.lesions.lesion_rows`); ``values``: every lesion table value of the
    case and class (:data:`segeval.engines.lesions.TABLE_METRICS`), with ``lesion_fn`` and
    ``lesion_fp`` the numbers of lesions in those two sets.
    """

    missed: np.ndarray
    false_positive: np.ndarray
    values: Mapping[str, float]

    def masks(self) -> dict[str, np.ndarray]:
        """``{MARK_COLOURS key: bool volume}``."""
        return {"missed": self.missed, "false_positive": self.false_positive}


def lesion_marks(reference: np.ndarray, prediction: np.ndarray,
                 spacing: Sequence[float] | None, config: Mapping[str, Any],
                 reported: Mapping[str, Any] | None = None) -> LesionMarks:
    """The missed and false-positive lesions of one class's (reference, prediction) masks
    (as :func:`class_masks` gives them) under the lesion rules of the report's ``config``,
    by the lesion functions the evaluation uses (labels, one overlap table, per-lesion
    statuses); ``spacing``: the case's voxel size in mm (the size filter).

    ``reported``: the case's ``cases[i].metrics[class]``; each lesion table value in it must
    equal the table's (null = NaN; counts exactly, other values to 1e-9), else ValueError
    (the files are no longer what was evaluated).
    """
    from segeval.core.lesions import lesion_labels, lesion_rows, lesion_scores, lesion_table
    from segeval.engines.lesions import TABLE_METRICS, options_of

    options = options_of(EvalConfig.from_dict(config))
    labels = lesion_labels(reference, prediction, options)
    table = lesion_table(reference, prediction, spacing, options, labels)
    rows = lesion_rows(table, options)
    missed_ids = [r["lesion"] for r in rows if r["side"] == "reference" and r["status"] == "fn"]
    fp_ids = [r["lesion"] for r in rows if r["side"] == "prediction" and r["status"] == "fp"]
    missed = np.zeros(reference.shape, bool)
    false_positive = np.zeros(reference.shape, bool)
    if labels.box is not None:  # the ids live in the box of the case's lesions
        missed[labels.box] = np.isin(labels.reference, missed_ids)
        false_positive[labels.box] = np.isin(labels.prediction, fp_ids)
    values = {**lesion_scores(table, options, TABLE_METRICS),
              "lesion_fn": len(missed_ids), "lesion_fp": len(fp_ids)}
    for name, value in (reported or {}).items():
        if name in values and not _same_value(value, values[name]):
            raise ValueError(f"{name} is {fmt(value)} in the report but "
                             f"{fmt(values[name])} from the files now")
    return LesionMarks(missed, false_positive, values)


def _same_value(reported: Any, drawn: float) -> bool:
    if reported is None or (isinstance(reported, float) and math.isnan(reported)):
        return math.isnan(drawn)
    return math.isclose(float(reported), float(drawn), rel_tol=1e-9, abs_tol=1e-12)


def lesion_caption(marks: LesionMarks, reported: Mapping[str, Any]) -> str:
    """``lesions: 3 ref, 2 found, 1 missed · 4 pred, 2 FP``: the report's counts where it
    holds them (the run asked for them), else the table's, equal to every value it holds."""
    def count(name: str) -> int:
        value = reported.get(name)
        return int(marks.values[name] if value is None else value)

    return (f"lesions: {count('n_ref_lesions')} ref, {count('lesion_tp')} found, "
            f"{count('lesion_fn')} missed · {count('n_pred_lesions')} pred, "
            f"{count('lesion_fp')} FP")


# ----------------------------------------------------------------------------- slices

def error_slices(reference: np.ndarray, prediction: np.ndarray,
                 prefer: Sequence[np.ndarray] = ()) -> tuple[int, ...]:
    """For each axis, the slice index with the most error voxels (FP + FN).

    Ties go to the lowest index.  ``prefer``: bool volumes in order of preference (missed
    lesions, false-positive lesions): only the slices crossing the first non-empty one
    compete.  Without any error voxel, the slice with the most voxels in the reference or
    the prediction; in an empty volume, the middle slice.
    """
    error = reference != prediction
    either = reference | prediction
    wanted = next((mask for mask in prefer if mask.any()), None)
    chosen = []
    for axis in range(reference.ndim):
        others = tuple(a for a in range(reference.ndim) if a != axis)
        if wanted is not None:  # -1: never a slice that misses every wanted voxel
            per_slice = np.where(wanted.any(axis=others), error.sum(axis=others), -1)
            chosen.append(int(np.argmax(per_slice)))
            continue
        for weights in (error, either):
            per_slice = weights.sum(axis=others)
            if per_slice.any():
                chosen.append(int(np.argmax(per_slice)))  # argmax: first of the maxima
                break
        else:
            chosen.append(reference.shape[axis] // 2)
    return tuple(chosen)


def ras_axes(affine: np.ndarray | None) -> tuple[tuple[int, ...], tuple[bool, ...]]:
    """For each RAS world axis, the array axis nearest to it and whether it runs backwards.

    Identity (``(0, 1, 2), (False,)*3``) when there is no affine or it is degenerate.
    """
    identity = ((0, 1, 2), (False, False, False))
    if affine is None:
        return identity
    rotation = np.asarray(affine, dtype=np.float64)[:3, :3]
    world_of = np.argmax(np.abs(rotation), axis=0)  # world axis of each array axis
    if sorted(world_of.tolist()) != [0, 1, 2]:
        return identity
    array_of = tuple(int(a) for a in np.argsort(world_of))
    flipped = tuple(bool(rotation[w, array_of[w]] < 0) for w in range(3))
    return array_of, flipped


def volume_planes(reference: np.ndarray, prediction: np.ndarray, evaluated: np.ndarray,
                  background: np.ndarray | None, spacing: Sequence[float],
                  affine: np.ndarray | None,
                  marks: Mapping[str, np.ndarray] | None = None) -> list[Plane]:
    """The axial, coronal and sagittal planes through the slices of :func:`error_slices`
    (preferring the ``marks`` in their order), oriented in the radiological convention
    (module docstring); ``marks`` (bool volumes) are cut like the masks."""
    slices = error_slices(reference, prediction, tuple((marks or {}).values()))
    array_of, flipped = ras_axes(affine)
    planes = []
    for view, world in VIEWS_3D:
        axis = array_of[world]
        col_world, row_world = (w for w in range(3) if w != world)  # RAS order

        def cut(volume: np.ndarray, axis: int = axis, col_world: int = col_world,
                row_world: int = row_world) -> np.ndarray:
            plane = np.take(volume, slices[axis], axis=axis)
            rest = [a for a in range(3) if a != axis]  # the array axes left in ``plane``
            plane = np.moveaxis(plane, [rest.index(array_of[row_world]),
                                        rest.index(array_of[col_world])], [0, 1])
            # RAS → display: row 0 the most superior (anterior), column 0 the most right
            # (anterior): flip an axis whose index runs towards +world
            flips = tuple(d for d, w in ((0, row_world), (1, col_world)) if not flipped[w])
            return np.flip(plane, flips) if flips else plane

        planes.append(Plane(
            view=view, index=slices[axis], axis=axis,
            reference=cut(reference), prediction=cut(prediction), evaluated=cut(evaluated),
            background=None if background is None else cut(background),
            spacing=(float(spacing[array_of[row_world]]), float(spacing[array_of[col_world]])),
            marks=None if marks is None else {k: cut(v) for k, v in marks.items()},
        ))
    return planes


def image_planes(reference: np.ndarray, prediction: np.ndarray, evaluated: np.ndarray,
                 background: np.ndarray | None, spacing: Sequence[float],
                 affine: np.ndarray | None,
                 marks: Mapping[str, np.ndarray] | None = None) -> list[Plane]:
    """The planes to draw for one case: one for a 2-D image, three for a volume."""
    if reference.ndim == 3:
        return volume_planes(reference, prediction, evaluated, background, spacing, affine,
                             marks)
    return [Plane("2d", None, None, reference, prediction, evaluated, background,
                  (float(spacing[0]), float(spacing[1])), marks)]


# ----------------------------------------------------------------------------- drawing

def overlay_rgb(reference: np.ndarray, prediction: np.ndarray,
                background: np.ndarray | None = None,
                evaluated: np.ndarray | None = None,
                marks: Mapping[str, np.ndarray] | None = None) -> np.ndarray:
    """The picture's pixels, uint8 [rows, cols, 3]: TP/FP/FN colours blended with
    :data:`ALPHA` over ``background`` (grey [rows, cols] or RGB [rows, cols, 3] in [0, 1];
    :data:`GREY` when None).  Pixels outside ``evaluated`` keep the background.  ``marks``
    (``{MARK_COLOURS key: bool [rows, cols]}``): each region's outline, its pixels with a
    4-neighbour outside it (the image's edge is outside), opaque in its colour."""
    shape = reference.shape
    if background is None:
        base = np.full((*shape, 3), GREY)
    elif background.ndim == 2:
        base = np.repeat(background[..., None], 3, axis=2).astype(np.float64)
    else:
        base = background[..., :3].astype(np.float64)
    out = base.copy()
    inside = np.ones(shape, bool) if evaluated is None else evaluated
    for name, where in (("TP", reference & prediction), ("FP", ~reference & prediction),
                        ("FN", reference & ~prediction)):
        where = where & inside
        out[where] = (1 - ALPHA) * base[where] + ALPHA * np.asarray(COLOURS[name])
    for name, region in (marks or {}).items():
        out[outline(region)] = MARK_COLOURS[name]
    return np.round(np.clip(out, 0, 1) * 255).astype(np.uint8)


def outline(region: np.ndarray) -> np.ndarray:
    """bool [rows, cols]: the pixels of ``region`` with a 4-neighbour outside it (outside the
    image counts as outside), i.e. ``region`` minus its erosion by the 4-neighbourhood."""
    from scipy.ndimage import binary_erosion

    region = np.asarray(region, dtype=bool)
    return region & ~binary_erosion(region, border_value=0)


def legend_colour(name: str) -> tuple[float, float, float]:
    """A class colour as it appears over the grey background (for the legend)."""
    r, g, b = ((1 - ALPHA) * GREY + ALPHA * c for c in COLOURS[name])
    return r, g, b


def pixel_scale(shape: Sequence[int], spacing: Sequence[float]) -> float:
    """Display pixels per unit of spacing (mm) for every picture of a case, so that its
    views share one scale: the smallest voxel side is one pixel, zoomed (by a whole factor
    when enlarging) until the case's longest extent falls into :data:`TARGET_PX`."""
    unit = min(spacing)
    long_side = max(n * s for n, s in zip(shape, spacing, strict=True)) / unit
    zoom = 1.0
    if long_side < TARGET_PX[0]:
        zoom = float(math.floor(TARGET_PX[0] / long_side)) or 1.0
    elif long_side > TARGET_PX[1]:
        zoom = TARGET_PX[1] / long_side
    return zoom / unit


def layout(shape: tuple[int, int], spacing: tuple[float, float], scale: float,
           lines: int = 3, legend_rows: int = 1) -> Layout:
    """Figure and image size in pixels: the image is ``scale`` pixels per unit of spacing
    in both directions, so it keeps the voxels' aspect ratio; room above it for ``lines``
    lines of text (at least three) and below it for ``legend_rows`` rows of legend."""
    rows, cols = shape
    image_height = max(1, round(rows * spacing[0] * scale))
    image_width = max(1, round(cols * spacing[1] * scale))
    fig_width = max(image_width, MIN_WIDTH_PX)
    header = HEADER_PX + LINE_PX * max(lines - 3, 0)
    footer = FOOTER_PX + LEGEND_ROW_PX * max(legend_rows - 1, 0)
    return Layout(width=fig_width, height=header + image_height + footer,
                  left=(fig_width - image_width) // 2, top=header,
                  image_width=image_width, image_height=image_height)


def draw_plane(plane: Plane, lines: Sequence[str], path: Path, scale: float) -> Layout:
    """Write one PNG: up to four ``lines`` of text on top (the first in bold), the
    picture, the legend below (with the lesion outlines when ``plane.marks`` is given).
    Returns where the picture lies in the PNG."""
    from segeval.outputs.plots import require_matplotlib

    require_matplotlib("drawing overlays")
    from matplotlib.figure import Figure
    from matplotlib.patches import Patch

    lines = list(lines[:4])
    rgb = overlay_rgb(plane.reference, plane.prediction, plane.background, plane.evaluated,
                      plane.marks)
    box = layout(plane.reference.shape, plane.spacing, scale, len(lines),
                 1 if plane.marks is None else 2)
    footer = box.height - box.top - box.image_height
    figure = Figure(figsize=(box.width / DPI, box.height / DPI), dpi=DPI, facecolor="white")
    axes = figure.add_axes((box.left / box.width, footer / box.height,
                            box.image_width / box.width, box.image_height / box.height))
    axes.imshow(rgb, interpolation="nearest", resample=False, aspect="auto",
                origin="upper")
    axes.set_axis_off()
    text: dict[str, Any] = {"parse_math": False, "ha": "center", "va": "top", "fontsize": 9}
    for number, line in enumerate(lines):
        figure.text(0.5, 1 - (4 + 19 * number) / box.height, line,
                    fontweight="bold" if number == 0 else "normal", **text)
    handles = [Patch(facecolor=legend_colour(name), edgecolor="none", label=label)
               for name, label in (("TP", "TP (both)"), ("FP", "FP (prediction only)"),
                                   ("FN", "FN (reference only)"))]
    if plane.marks is not None:  # a second row; the legend fills its columns first
        missed, false_positive = (Patch(facecolor="none", edgecolor=MARK_COLOURS[name],
                                        linewidth=2, label=MARK_LABELS[name])
                                  for name in ("missed", "false_positive"))
        handles = [handles[0], missed, handles[1], false_positive, handles[2]]
    figure.legend(handles=handles, loc="lower center", ncol=3, frameon=False, fontsize=8,
                  handlelength=1.2, borderaxespad=0.2)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=DPI, format="png", metadata={"Software": None})
    return box


# ----------------------------------------------------------------------------- files

def safe_name(text: str) -> str:
    """``text`` reduced to ``[A-Za-z0-9._-]`` (no leading dot); a changed name gets the
    first 8 hex digits of the original's SHA-1 so that two names never collide."""
    cleaned = re.sub(r"[^A-Za-z0-9._-]", "_", text).lstrip(".") or "_"
    if cleaned != text:
        cleaned = f"{cleaned[:80]}-{hashlib.sha1(text.encode()).hexdigest()[:8]}"
    return cleaned


def find_image(images_dir: Path, case: str) -> Path | None:
    """The image of a case: a file whose case id is ``case`` or ``case_0000``."""
    wanted = {case, case + IMAGE_CHANNEL_SUFFIX}
    matches = sorted(p for p in images_dir.iterdir()
                     if not p.name.startswith(".") and p.is_file()
                     and format_suffix(p.name) and case_id(p.name) in wanted)
    matches.sort(key=lambda p: case_id(p.name) != case)  # the exact id first
    return matches[0] if matches else None


def read_image(path: Path, shape: tuple[int, ...]) -> np.ndarray | None:
    """An image scaled to [0, 1], grey [*shape] (windowed to its 1st-99th percentile) or
    RGB [*shape, 3] (a colour PNG, /255); None, with an :class:`OverlayWarning`, when it
    cannot be read or its grid is not the mask's."""
    try:
        if path.name.lower().endswith(".png"):
            from PIL import Image

            with Image.open(path) as picture:
                if picture.mode in ("RGB", "RGBA", "P"):
                    rgb = np.asarray(picture.convert("RGB"), dtype=np.float64) / 255
                    if rgb.shape[:2] == tuple(shape):
                        return rgb
                    _warn_other_grid(path, shape)
                    return None
                array = np.asarray(picture.convert("F"), dtype=np.float64)
        else:
            array = np.asarray(read_mask(path).array, dtype=np.float64)
            if array.ndim == len(shape) + 1:
                array = array[..., 0]  # a trailing channel axis: the first channel
    except (CaseError, OSError, ValueError) as exc:
        problem = exc.message if isinstance(exc, CaseError) else f"{path}: {exc}"
        warnings.warn(f"image not used: {problem}", OverlayWarning, stacklevel=2)
        return None
    if array.shape != tuple(shape):
        _warn_other_grid(path, shape)
        return None
    finite = array[np.isfinite(array)]
    if finite.size == 0:
        return None
    low, high = np.percentile(finite, [1, 99])
    scale = high - low if high > low else 1.0
    return np.clip((np.nan_to_num(array, nan=low) - low) / scale, 0, 1)


def _warn_other_grid(path: Path, shape: tuple[int, ...]) -> None:
    warnings.warn(f"image not used: {path} is not on the mask's grid {tuple(shape)}",
                  OverlayWarning, stacklevel=3)


def write_overlays(report: Mapping[str, Any], out_dir: Path, *, images_dir: Path | None = None,
                   worst: int = 5, metric: str = "dice") -> dict[str, list[tuple[str, str]]]:
    """Draw the ``worst`` cases of every class by per-case ``metric``.

    Returns ``{case_id: [(caption, png_path), ...]}`` in class order, then from the worst
    case up (the order :func:`segeval.outputs.html.render_html` shows them in).  Each selected case
    is read once (its prediction and reference with :func:`segeval.formats.read_mask`, and its
    image from ``images_dir``).  A case whose files can no longer be read is left out with
    an :class:`OverlayWarning`.  Raises :class:`~segeval.errors.UsageError` when matplotlib
    is missing or ``images_dir`` is not a folder.
    """
    from segeval.outputs.plots import require_matplotlib

    require_matplotlib("drawing overlays")
    if images_dir is not None and not Path(images_dir).is_dir():
        raise UsageError("E_USAGE", "not a folder of images", images_dir,
                         "--images names the folder holding one image per case id")
    out_dir = Path(out_dir)
    classes = {c["key"]: c for c in report["classes"]}
    chosen: dict[str, list[str]] = {}  # case id → class keys, in selection order
    cases_by_id = {case["id"]: case for case in report["cases"]}
    for key in classes:
        for case in worst_cases(report, key, metric, worst):
            chosen.setdefault(case["id"], []).append(key)
    drawn: dict[tuple[str, str], list[tuple[str, str]]] = {}
    for case_name, keys in chosen.items():
        case = cases_by_id[case_name]
        try:
            pictures = _draw_case(case, [classes[k] for k in keys], report["config"], out_dir,
                                  images_dir, metric)
        except (CaseError, ValueError) as exc:  # files changed since the evaluation
            problem = exc.message if isinstance(exc, CaseError) else str(exc)
            warnings.warn(f"no overlay for case {case_name!r}: {problem}", OverlayWarning,
                          stacklevel=2)
            continue
        for key, items in pictures.items():
            drawn[(case_name, key)] = items
    result: dict[str, list[tuple[str, str]]] = {}
    for key in classes:  # class order, worst first
        for case in worst_cases(report, key, metric, worst):
            if (case["id"], key) in drawn:
                result.setdefault(case["id"], []).extend(drawn[(case["id"], key)])
    return result


def _draw_case(case: Mapping[str, Any], classes: list[Mapping[str, Any]],
               config: Mapping[str, Any], out_dir: Path, images_dir: Path | None,
               metric: str) -> dict[str, list[tuple[str, str]]]:
    reference = read_mask(case["reference"])
    empty_prediction = case["status"] != "ok" or case.get("prediction") is None
    prediction = None if empty_prediction else read_mask(case["prediction"]).array
    image_path = None if images_dir is None else find_image(Path(images_dir), case["id"])
    pictures: dict[str, list[tuple[str, str]]] = {}
    backgrounds: dict[tuple[int, ...], np.ndarray | None] = {}  # read once per case
    for spec in classes:
        ref, pred, evaluated = class_masks(prediction, reference.array, spec["labels"], config)
        if image_path is not None and ref.shape not in backgrounds:
            backgrounds[ref.shape] = read_image(image_path, ref.shape)
        background = backgrounds.get(ref.shape)
        title = f"case {case['id']} · class {spec['key']}"
        if spec["name"] != spec["key"]:
            title += f" {spec['name']}"
        values = case["metrics"][spec["key"]]
        scores = case_scores(values, metric)
        if empty_prediction:
            scores += " · scored as an empty prediction"
        marks, lesions = None, ""
        if any(name in values for name in config.get("lesion_metrics") or ()):
            spacing = case.get("spacing") or reference.spacing  # what the run measured with
            try:
                found = lesion_marks(ref, pred, tuple(spacing)[:ref.ndim], config, values)
            except ValueError as exc:
                raise ValueError(f"class {spec['key']}: {exc}") from None
            marks, lesions = found.masks(), lesion_caption(found, values)
        items = []
        scale = pixel_scale(ref.shape, reference.spacing[:ref.ndim])
        for plane in image_planes(ref, pred, evaluated, background, reference.spacing,
                                  reference.affine, marks):
            where = plane.view if plane.index is None else \
                f"{plane.view}: slice {plane.index} of array axis {plane.axis}"
            path = out_dir / (f"{safe_name(case['id'])}__{safe_name(spec['key'])}__"
                              f"{plane.view}.png")
            lines = (title, scores, lesions, where) if lesions else (title, scores, where)
            draw_plane(plane, lines, path, scale)
            items.append((" · ".join((title, where, scores, *([lesions] if lesions else []))),
                          str(path)))
        pictures[spec["key"]] = items
    return pictures


def case_scores(values: Mapping[str, Any], metric: str) -> str:
    """``dice 0.7500 · TP 3 · FP 1 · FN 1`` from one ``cases[i].metrics[class]`` entry."""
    value = values.get(metric)
    text = f"{metric} {fmt(value)}"
    for name in ("tp", "fp", "fn"):
        count = values[name]
        text += f" · {name.upper()} {count:.2f}" if isinstance(count, float) and \
            not count.is_integer() else f" · {name.upper()} {int(count)}"
    return text
