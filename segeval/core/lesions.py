"""Lesion-wise and instance metrics: two boolean masks -> one lesion overlap table -> scores.

Pure: no I/O, no config object.  For one class (or region) of one case:

1. **Lesions** are the connected components of each side under ``connectivity``: ``"face"``
   (4 in 2-D, 6 in 3-D), ``"18"`` (3-D only) or ``"full"`` (8 in 2-D, 26 in 3-D; the
   default), numbered as ``scipy.ndimage.label`` numbers them (connected-components-3d
   computes them in 3-D).  Component ids are stored in the smallest unsigned integer type
   that holds them.
2. Optionally (BraTS 2023) the reference is dilated ``dilation`` times with the structuring
   element ``generate_binary_structure(ndim, 2)`` (18-neighbourhood in 3-D); reference voxels
   that fall in one connected component of the dilated reference form ONE reference lesion,
   and that dilated component is the lesion's *matching region*.  Without dilation the matching
   region is the lesion itself.
3. **One count over the voxels of reference ∪ prediction** of the pair (matching-region id,
   predicted id, inside the undilated reference?) is the whole overlap table: the size of every
   lesion, which predicted lesions touch which matching region, and every overlap |R_i ∩ P_j|.
   Every number below is read from that table.

Definitions (R_i reference lesions, P_j predicted lesions, |.| in voxels)::

    P_j touches R_i    P_j has a voxel in R_i's matching region (R_i itself without dilation)
    lesion_tp / fn     reference lesions touched / not touched by any predicted lesion
    lesion_fp          predicted lesions touching no reference lesion
    lesion_f1          2TP / (2TP + FP + FN)                                  (ISLES'22)
    n_ref_lesions, n_pred_lesions, lesion_count_diff = |n_ref - n_pred|
    lesion_dice        Σ_i Dice(R_i, U_i) / (n_ref + lesion_fp),  U_i = ∪ P_j touching R_i
                       (Dice(R_i, ∅) = 0)                                     (BraTS 2023)
    IoU_ij             |R_i ∩ P_j| / (|R_i| + |P_j| - |R_i ∩ P_j|)
    pq_tp              pairs with IoU_ij > match_iou (>= with match_inclusive, panoptica);
                       match_iou >= 0.5 makes the pairs one-to-one (no matching solver)
    pq_fp = n_pred - pq_tp,   pq_fn = n_ref - pq_tp
    rq = 2pq_tp / (2pq_tp + pq_fp + pq_fn),   sq = Σ_matched IoU / pq_tp,
    sq_dice = Σ_matched Dice / pq_tp,   pq = Σ_matched IoU / (pq_tp + (pq_fp + pq_fn)/2) = sq·rq
    fp_volume_ml       Σ |P_j| over false-positive P_j, times the voxel volume, in ml
    fn_volume_ml       Σ |R_i| over false-negative R_i, times the voxel volume, in ml  (autoPET)
    lesion_hd95        (Σ_i HD95(R_i, U_i) + penalty · lesion_fp) / (n_ref + lesion_fp), with
                       HD95(R_i, ∅) = penalty                                  (BraTS 2023)

Size filter (BraTS): reference lesions of volume <= ``min_ref_volume_mm3`` are *dropped*:
they count nowhere, and a predicted lesion that touches only dropped reference lesions is
*ignored* (neither a false positive nor in n_pred_lesions, pq_fp or fp_volume_ml); a predicted
lesion that also touches a kept lesion counts with it.

Edge rules: a ratio whose denominator is 0 takes the ``empty`` rule (``nan``, ``one`` or
``zero``, as :mod:`segeval.core.metrics`); for lesion_f1, lesion_dice, rq and pq that is exactly
"no lesion on either side"; sq and sq_dice are also undefined when nothing is matched (then
``sq_unmatched`` gives them, when set).
``lesion_hd95`` with no lesion on either side takes ``hd95_both_empty`` (NaN by default; 0 mm
for BraTS).  The volumes are 0 when their side has no lesion.  Counts are Python ints.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, fields, replace
from typing import TYPE_CHECKING, Any, Literal, get_args

import numpy as np

from segeval.config import LESION_COUNTS, LESION_LOWER_IS_BETTER, LESION_PRESETS, EmptyRule
from segeval.core.metrics import EMPTY_VALUES, score

if TYPE_CHECKING:
    from segeval.core.boundary import SurfaceDistances

__all__ = [
    "CONNECTIVITIES", "LESION_COUNTS", "LESION_METRICS", "LESION_PRESETS", "LESION_VALUES",
    "LOWER_IS_BETTER", "POOLED_LESION_METRICS", "Connectivity", "LesionLabels",
    "LesionOptions", "LesionTable", "label_lesions", "lesion_hd95", "lesion_labels",
    "lesion_options", "lesion_rows", "lesion_scores", "lesion_table", "pooled_lesion_scores",
]

Connectivity = Literal["face", "18", "full"]
CONNECTIVITIES: tuple[str, ...] = get_args(Connectivity)

# Integer counts (LESION_COUNTS, from segeval.config): they add over cases (pooled per
# class, like TP/FP/FN).
# Values that do not add: per case x class, averaged over cases, never pooled.
LESION_VALUES: tuple[str, ...] = (
    "lesion_f1", "lesion_dice", "lesion_count_diff", "rq", "sq", "sq_dice", "pq",
    "fp_volume_ml", "fn_volume_ml",
)
LESION_METRICS: tuple[str, ...] = LESION_COUNTS + LESION_VALUES + ("lesion_hd95",)
# The ratios that are functions of counts alone, hence also have a pooled value.
POOLED_LESION_METRICS: dict[str, tuple[str, str, str]] = {
    "lesion_f1": ("lesion_tp", "lesion_fp", "lesion_fn"),
    "rq": ("pq_tp", "pq_fp", "pq_fn"),
}
LOWER_IS_BETTER: frozenset[str] = LESION_LOWER_IS_BETTER


@dataclass(frozen=True)
class LesionOptions:
    """Every choice that changes a lesion number (the defaults are segeval's convention).

    ``connectivity_2d``, when set, replaces ``connectivity`` for 2-D images (panoptica labels
    2-D with scipy's default face connectivity and 3-D with cc3d's 26).  ``hd95_penalty`` is
    the HD95 (mm) of a missed or false-positive lesion; None: the image diagonal.
    ``sq_unmatched`` is sq and sq_dice when lesions exist but none is matched (panoptica: 0);
    None: the empty rule.
    ``surface`` and ``pooled_percentile`` are the boundary metrics' conventions for HD95.
    """

    connectivity: Connectivity = "full"
    connectivity_2d: Connectivity | None = None
    dilation: int = 0
    min_ref_volume_mm3: float = 0.0
    match_iou: float = 0.5
    match_inclusive: bool = False
    empty: EmptyRule = "nan"
    sq_unmatched: float | None = None
    hd95_penalty: float | None = None
    hd95_both_empty: float = math.nan
    surface: Literal["voxel", "surfel"] = "voxel"
    pooled_percentile: bool = False

    def __post_init__(self) -> None:
        for name in ("connectivity", "connectivity_2d"):
            value = getattr(self, name)
            if value is not None and value not in CONNECTIVITIES:
                raise ValueError(f"{name} must be one of {CONNECTIVITIES}, got {value!r}")
        if isinstance(self.dilation, bool) or not isinstance(self.dilation, int) \
                or self.dilation < 0:
            raise ValueError(f"dilation must be an integer >= 0, got {self.dilation!r}")
        if not self.min_ref_volume_mm3 >= 0:
            raise ValueError(f"min_ref_volume_mm3 must be >= 0, got {self.min_ref_volume_mm3!r}")
        if not 0.5 <= self.match_iou < 1:
            raise ValueError(f"match_iou must be in [0.5, 1), got {self.match_iou!r}")
        if self.empty not in EMPTY_VALUES:
            raise ValueError(f"empty must be one of {tuple(EMPTY_VALUES)}, got {self.empty!r}")
        if self.hd95_penalty is not None and not self.hd95_penalty >= 0:
            raise ValueError(f"hd95_penalty must be >= 0 mm, got {self.hd95_penalty!r}")

    def connectivity_for(self, ndim: int) -> Connectivity:
        """The connectivity used for an image of ``ndim`` axes."""
        if ndim == 2 and self.connectivity_2d is not None:
            return self.connectivity_2d
        return self.connectivity


# Presets: named sets of the options above (data, not code), each reproducing one official
# evaluation.  Sources, read for these rules (see docs/lesions.md):
#   BraTS 2023: github.com/rachitsaluja/BraTS-2023-Metrics eval.py
#   ISLES'22:   github.com/ezequieldlrosa/isles22 utils/eval_utils.py
#   autoPET:    github.com/lab-midas/autoPET val_script.py
#   panoptica:  panoptica 2.1.7 (_functionals._connected_components, NaiveThresholdMatching)
# LESION_PRESETS lives in segeval.config (EvalConfig expands a preset into its fields).
# The BraTS 2023 regions (labels 1 NETC, 2 SNFH, 3 ET), for callers that want them with a preset.
BRATS_REGIONS: dict[str, tuple[int, ...]] = {"WT": (1, 2, 3), "TC": (1, 3), "ET": (3,)}


def lesion_options(preset: str | None = None, **overrides: Any) -> LesionOptions:
    """The options of ``preset`` (a key of :data:`LESION_PRESETS`), then ``overrides``."""
    values: dict[str, Any] = {}
    if preset is not None:
        if preset not in LESION_PRESETS:
            raise ValueError(
                f"unknown lesion preset {preset!r}; known: {', '.join(LESION_PRESETS)}")
        values.update(LESION_PRESETS[preset])
    known = {f.name for f in fields(LesionOptions)}
    unknown = sorted(set(overrides) - known)
    if unknown:
        raise ValueError(f"unknown lesion option(s) {unknown}; known: {sorted(known)}")
    values.update(overrides)
    return replace(LesionOptions(), **values)


def _structure(connectivity: Connectivity, ndim: int) -> np.ndarray:
    from scipy.ndimage import generate_binary_structure

    rank = {"face": 1, "18": 2, "full": ndim}[connectivity]
    if connectivity == "18" and ndim != 3:
        raise ValueError(f"18-connectivity is defined for 3-D images; this one has {ndim} axes")
    return generate_binary_structure(ndim, rank)


def smallest_uint(largest: int) -> type[np.unsignedinteger[Any]]:
    """The smallest unsigned NumPy integer type that holds ``0 .. largest``."""
    for kind in (np.uint8, np.uint16, np.uint32):
        if largest <= np.iinfo(kind).max:
            return kind
    return np.uint64


# connected-components-3d's name of each 3-D connectivity (neighbours of a voxel)
_CC3D_NEIGHBOURS: dict[str, Literal[6, 18, 26]] = {"face": 6, "18": 18, "full": 26}


def label_lesions(mask: np.ndarray, connectivity: Connectivity = "full") -> tuple[np.ndarray, int]:
    """Connected components of a boolean mask: (ids, count).

    ``ids`` has the mask's shape, 0 outside the mask and 1..count inside, numbered
    in raster (C) order of each component's first voxel -- ``scipy.ndimage.label``'s
    numbering -- in the smallest unsigned type holding count.

    3-D masks with every axis of 2 voxels or more are labelled by connected-components-3d
    (about 4x faster than scipy on 256x256x160, renumbering included); its numbering is its
    union-find's, so the ids are renumbered here to raster order when they differ.  Other
    masks, any it fails on, and every mask where it is not installed, by
    ``scipy.ndimage.label``: cc3d 4.1.1 mislabels background pixels in 2-D 8-connectivity and
    raises on 3-D images with two axes of length 1.
    """
    mask = np.asarray(mask, dtype=bool)
    if mask.ndim == 0:
        raise ValueError("lesions need at least one axis")
    if connectivity not in CONNECTIVITIES:
        raise ValueError(f"connectivity must be one of {CONNECTIVITIES}, got {connectivity!r}")
    if connectivity == "18" and mask.ndim != 3:  # (scipy.ndimage is imported only if used)
        raise ValueError(
            f"18-connectivity is defined for 3-D images; this one has {mask.ndim} axes")
    cc3d = _cc3d() if mask.ndim == 3 and min(mask.shape) >= 2 else None
    if cc3d is not None:
        mask = np.ascontiguousarray(mask)
        try:
            ids, count = cc3d.connected_components(
                mask, connectivity=_CC3D_NEIGHBOURS[connectivity], return_N=True)
        except RuntimeError:  # its provisional-label estimate ran short: scipy labels it
            pass
        else:
            return _raster_numbered(mask, np.ascontiguousarray(ids), int(count))
    from scipy.ndimage import label

    ids, count = label(mask, structure=_structure(connectivity, mask.ndim), output=np.int32)
    return ids.astype(smallest_uint(int(count)), copy=False), int(count)


def _cc3d() -> Any:
    """The connected-components-3d module, or None where it cannot be imported (a platform
    without its wheels: scipy then labels everything, with the same ids, only slower)."""
    try:
        import cc3d
    except ImportError:
        return None
    return cc3d


def _raster_numbered(mask: np.ndarray, ids: np.ndarray, count: int
                     ) -> tuple[np.ndarray, int]:
    """C-ordered component ids 1..count (nonzero exactly on the C-ordered ``mask``)
    renumbered so that ids rise with each component's first voxel in raster order (a
    permutation of the ids; unchanged when already so)."""
    kind = smallest_uint(count)
    if count > 1:
        where = np.flatnonzero(mask)  # the bool mask: a fraction of the ids' scan
        first = np.full(count + 1, mask.size, dtype=np.intp)
        np.minimum.at(first, ids.reshape(-1)[where], where)
        order = np.argsort(first[1:], kind="stable")  # old id - 1 of each new id - 1
        if np.any(order != np.arange(count)):
            new = np.zeros(count + 1, dtype=kind)
            new[order + 1] = np.arange(1, count + 1, dtype=kind)
            return new[ids], count
    return ids.astype(kind, copy=False), count


@dataclass(frozen=True)
class LesionLabels:
    """The lesion ids of both sides, in the bounding box ``box`` of the case's lesions.

    ``reference`` holds the id (1..n_ref) of the reference lesion of each reference voxel
    (after merging by dilation), ``region`` the id of each voxel's matching region (equal to
    ``reference`` without dilation), ``prediction`` the predicted lesion ids (1..n_pred).
    ``box`` is None when both masks are empty (then the arrays are empty).
    """

    reference: np.ndarray
    region: np.ndarray
    prediction: np.ndarray
    n_ref: int
    n_pred: int
    box: tuple[slice, ...] | None


@dataclass(frozen=True)
class LesionTable:
    """The lesion overlap table of one case and class.

    ``ref_voxels[i]`` / ``pred_voxels[j]``: sizes of reference lesion i+1 / predicted lesion j+1
    (int64).  ``pair_ref``, ``pair_pred`` (0-based lesion indices, intp), ``pair_overlap``
    (|R ∩ P|, int64): one entry per (reference, predicted) pair where the predicted lesion
    touches the reference lesion's matching region, sorted by (reference, predicted).
    ``kept[i]``: reference lesion i survives the size filter.  ``voxel_mm3``: one voxel's volume.
    """

    ref_voxels: np.ndarray
    pred_voxels: np.ndarray
    pair_ref: np.ndarray
    pair_pred: np.ndarray
    pair_overlap: np.ndarray
    kept: np.ndarray
    voxel_mm3: float
    shape: tuple[int, ...]
    spacing: tuple[float, ...]

    @property
    def n_ref(self) -> int:
        return len(self.ref_voxels)

    @property
    def n_pred(self) -> int:
        return len(self.pred_voxels)

    def touched_ref(self) -> np.ndarray:
        """bool [n_ref]: reference lesions touched by some predicted lesion."""
        out = np.zeros(self.n_ref, dtype=bool)
        out[self.pair_ref] = True
        return out

    def pred_status(self) -> tuple[np.ndarray, np.ndarray]:
        """(false_positive, ignored), bool [n_pred]: touching no reference lesion / only dropped
        ones (see the size filter in the module docstring)."""
        touches_kept = np.zeros(self.n_pred, dtype=bool)
        touches_any = np.zeros(self.n_pred, dtype=bool)
        touches_any[self.pair_pred] = True
        touches_kept[self.pair_pred[self.kept[self.pair_ref]]] = True
        return ~touches_any, touches_any & ~touches_kept

    def iou(self) -> np.ndarray:
        """float64 [pairs]: IoU of each pair (0 for pairs that touch without overlapping)."""
        union = self.ref_voxels[self.pair_ref] + self.pred_voxels[self.pair_pred] \
            - self.pair_overlap
        return self.pair_overlap / union.astype(np.float64)

    def matches(self, options: LesionOptions) -> np.ndarray:
        """int [matched pairs]: indices of the pairs with IoU above ``match_iou``.

        One-to-one by construction for ``match_iou >= 0.5``: were a lesion P matched to two
        lesions A and B of the other side, each would hold at least half of P, so A and B would
        split P exactly, touch each other, and be one lesion.
        """
        union = (self.ref_voxels[self.pair_ref] + self.pred_voxels[self.pair_pred]
                 - self.pair_overlap).astype(np.float64)
        limit = options.match_iou * union  # exact for 0.5: half an integer
        above = self.pair_overlap >= limit if options.match_inclusive \
            else self.pair_overlap > limit
        return np.flatnonzero(above)


def _check_pair(
    reference: np.ndarray, prediction: np.ndarray, spacing: Sequence[float] | None
) -> tuple[np.ndarray, np.ndarray, tuple[float, ...]]:
    reference = np.asarray(reference, dtype=bool)
    prediction = np.asarray(prediction, dtype=bool)
    if reference.shape != prediction.shape:
        raise ValueError(
            f"shapes differ: reference {reference.shape}, prediction {prediction.shape}")
    if reference.ndim == 0:
        raise ValueError("lesions need at least one axis")
    sp = tuple(1.0 for _ in reference.shape) if spacing is None \
        else tuple(float(s) for s in spacing)
    if len(sp) != reference.ndim or not all(math.isfinite(s) and s > 0 for s in sp):
        raise ValueError(f"spacing must be {reference.ndim} positive numbers, got {spacing!r}")
    return reference, prediction, sp


def _box(mask: np.ndarray, margin: int) -> tuple[slice, ...] | None:
    """Bounding box of ``mask`` grown by ``margin`` voxels (clipped to the image), or None."""
    box = []
    for axis in range(mask.ndim):
        others = tuple(i for i in range(mask.ndim) if i != axis)
        present = np.flatnonzero(np.any(mask, axis=others))
        if present.size == 0:
            return None
        lo = max(int(present[0]) - margin, 0)
        hi = min(int(present[-1]) + 1 + margin, mask.shape[axis])
        box.append(slice(lo, hi))
    return tuple(box)


def lesion_labels(
    reference: np.ndarray, prediction: np.ndarray, options: LesionOptions = LesionOptions()
) -> LesionLabels:
    """Label the lesions of both sides (and merge reference lesions by dilation)."""
    reference = np.asarray(reference, dtype=bool)
    prediction = np.asarray(prediction, dtype=bool)
    connectivity = options.connectivity_for(reference.ndim)
    # the dilation never reaches the box edge unless that edge is the image's, so labelling
    # inside the box equals labelling the whole image
    box = _box(reference | prediction, options.dilation)
    if box is None:
        empty = np.zeros((0,) * reference.ndim, dtype=np.uint8)
        return LesionLabels(empty, empty, empty, 0, 0, None)
    ref, pred = reference[box], prediction[box]
    pred_ids, n_pred = label_lesions(pred, connectivity)
    if options.dilation == 0:
        ref_ids, n_ref = label_lesions(ref, connectivity)
        return LesionLabels(ref_ids, ref_ids, pred_ids, n_ref, n_pred, box)
    from scipy.ndimage import binary_dilation, generate_binary_structure

    # BraTS's structuring element: generate_binary_structure(3, 2), the 18-neighbourhood
    dilated = binary_dilation(ref, structure=generate_binary_structure(ref.ndim, min(2, ref.ndim)),
                              iterations=options.dilation)
    region_ids, n_ref = label_lesions(dilated, connectivity)
    ref_ids = np.where(ref, region_ids, 0).astype(region_ids.dtype, copy=False)
    return LesionLabels(ref_ids, region_ids, pred_ids, n_ref, n_pred, box)


# dense bincount up to this many table cells; a sparse count (np.unique) above
_DENSE_CELLS = 1 << 22


def lesion_table(
    reference: np.ndarray,
    prediction: np.ndarray,
    spacing: Sequence[float] | None = None,
    options: LesionOptions = LesionOptions(),
    labels: LesionLabels | None = None,
    image_shape: Sequence[int] | None = None,
) -> LesionTable:
    """The lesion overlap table of two boolean masks of the same shape.

    ``spacing`` is the voxel size in mm per axis (default 1).  One count over the voxels of
    reference ∪ prediction of the key (region id, predicted id, in reference) gives every
    entry; the volume of a voxel is the product of the spacing.  ``image_shape`` (default: the
    masks' shape) is the whole image's shape when the masks are a crop of it holding every
    voxel of both: it sets the table's ``shape``, whose diagonal is the default HD95 penalty.
    """
    reference, prediction, sp = _check_pair(reference, prediction, spacing)
    if labels is None:
        labels = lesion_labels(reference, prediction, options)
    voxel_mm3 = float(math.prod(sp))
    n_ref, n_pred = labels.n_ref, labels.n_pred
    shape = reference.shape if image_shape is None else tuple(int(n) for n in image_shape)
    if len(shape) != reference.ndim or any(
            n < m for n, m in zip(shape, reference.shape, strict=True)):
        raise ValueError(f"image shape {shape} cannot hold masks of shape {reference.shape}")
    if labels.box is None:
        none = np.zeros(0, dtype=np.int64)
        return LesionTable(none, none, none.astype(np.intp), none.astype(np.intp), none,
                           np.zeros(0, dtype=bool), voxel_mm3, shape, sp)
    voxels = np.flatnonzero(reference[labels.box] | prediction[labels.box])
    region = labels.region.reshape(-1)[voxels].astype(np.int64)
    pred = labels.prediction.reshape(-1)[voxels].astype(np.int64)
    # reference ids are nonzero exactly on the reference (a read of the box, not a copy)
    inside = labels.reference.reshape(-1)[voxels] != 0
    key = (region * (n_pred + 1) + pred) * 2 + inside
    cells = (n_ref + 1) * (n_pred + 1) * 2
    if cells <= _DENSE_CELLS:
        counts = np.bincount(key, minlength=cells)
        keys = np.flatnonzero(counts)
        counts = counts[keys]
    else:
        keys, counts = np.unique(key, return_counts=True)
    in_ref = (keys & 1).astype(bool)
    ref_of, pred_of = np.divmod(keys >> 1, n_pred + 1)
    ref_voxels = np.bincount(ref_of[in_ref], weights=counts[in_ref], minlength=n_ref + 1)
    pred_voxels = np.bincount(pred_of, weights=counts, minlength=n_pred + 1)
    # (region, predicted) pairs: touching = any voxel of P in the region; overlap = in R too
    both = (ref_of > 0) & (pred_of > 0)
    pair_key = ref_of[both] * (n_pred + 1) + pred_of[both]
    pair_keys = np.unique(pair_key)
    overlap = np.zeros(len(pair_keys), dtype=np.int64)
    np.add.at(overlap, np.searchsorted(pair_keys, pair_key[in_ref[both]]),
              counts[both][in_ref[both]])
    ref_voxels_i = ref_voxels[1:].astype(np.int64)
    kept = ref_voxels_i * voxel_mm3 > options.min_ref_volume_mm3
    return LesionTable(
        ref_voxels_i, pred_voxels[1:].astype(np.int64),
        (pair_keys // (n_pred + 1) - 1).astype(np.intp),
        (pair_keys % (n_pred + 1) - 1).astype(np.intp),
        overlap, kept, voxel_mm3, shape, sp,
    )


def _ratio(numerator: float, denominator: float, empty: EmptyRule) -> float:
    return EMPTY_VALUES[empty] if denominator == 0 else float(numerator / denominator)


def lesion_scores(
    table: LesionTable,
    options: LesionOptions = LesionOptions(),
    metrics: Sequence[str] = LESION_METRICS[:-1],
) -> dict[str, float | int]:
    """The requested lesion metrics (names in :data:`LESION_METRICS`, except ``lesion_hd95``:
    see :func:`lesion_hd95`) of one table, as in the module docstring."""
    unknown = [m for m in metrics if m not in LESION_METRICS or m == "lesion_hd95"]
    if unknown:
        raise ValueError(f"not lesion table metrics: {unknown}; known: {LESION_METRICS[:-1]}")
    kept = table.kept
    touched = table.touched_ref()
    false_positive, ignored = table.pred_status()
    n_ref = int(kept.sum())
    n_pred = int((~ignored).sum())
    tp = int((touched & kept).sum())
    fn = n_ref - tp
    fp = int(false_positive.sum())
    values: dict[str, float | int] = {
        "n_ref_lesions": n_ref, "n_pred_lesions": n_pred,
        "lesion_tp": tp, "lesion_fp": fp, "lesion_fn": fn,
        "lesion_count_diff": abs(n_ref - n_pred),
        "fp_volume_ml": float(table.pred_voxels[false_positive].sum()) * table.voxel_mm3 / 1000,
        "fn_volume_ml": float(table.ref_voxels[kept & ~touched].sum()) * table.voxel_mm3 / 1000,
        "lesion_f1": float(score("dice", tp, fp, fn, empty=options.empty)),
    }
    if "lesion_dice" in metrics:
        dice = _union_dice(table)
        values["lesion_dice"] = _ratio(float(dice[kept].sum()), n_ref + fp, options.empty)
    if {"pq_tp", "pq_fp", "pq_fn", "rq", "sq", "sq_dice", "pq"} & set(metrics):
        values.update(_panoptic(table, options, n_ref, n_pred, ignored))
    return {name: values[name] for name in metrics}


def _union_dice(table: LesionTable) -> np.ndarray:
    """float64 [n_ref]: Dice of each reference lesion with the union of the predicted lesions
    touching it (predicted lesions are disjoint, so the sums are exact)."""
    intersection = np.bincount(table.pair_ref, weights=table.pair_overlap, minlength=table.n_ref)
    union_size = np.bincount(table.pair_ref, weights=table.pred_voxels[table.pair_pred],
                             minlength=table.n_ref)
    return 2 * intersection / (table.ref_voxels + union_size)


def _panoptic(
    table: LesionTable, options: LesionOptions, n_ref: int, n_pred: int, ignored: np.ndarray
) -> dict[str, float | int]:
    # dropped reference lesions and ignored predicted lesions take no part in the matching
    usable = table.kept[table.pair_ref] & ~ignored[table.pair_pred]
    sub = replace(table, pair_ref=table.pair_ref[usable], pair_pred=table.pair_pred[usable],
                  pair_overlap=table.pair_overlap[usable])
    matched = sub.matches(options)
    iou = sub.iou()[matched]
    dice = 2 * iou / (1 + iou)
    tp = len(matched)
    fp, fn = n_pred - tp, n_ref - tp
    sq, sq_dice = _ratio(float(iou.sum()), tp, options.empty), \
        _ratio(float(dice.sum()), tp, options.empty)
    if tp == 0 and n_ref + n_pred > 0 and options.sq_unmatched is not None:
        sq = sq_dice = options.sq_unmatched
    return {
        "pq_tp": tp, "pq_fp": fp, "pq_fn": fn,
        "rq": float(score("dice", tp, fp, fn, empty=options.empty)),
        "sq": sq, "sq_dice": sq_dice,
        "pq": _ratio(float(iou.sum()), tp + (fp + fn) / 2, options.empty),
    }


def pooled_lesion_scores(
    counts: Mapping[str, int], empty: EmptyRule = "nan"
) -> dict[str, float]:
    """lesion_f1 and rq from lesion counts summed over cases (the metrics that pool)."""
    return {
        name: float(score("dice", *(counts[k] for k in keys), empty=empty))
        for name, keys in POOLED_LESION_METRICS.items()
        if all(k in counts for k in keys)
    }


def lesion_hd95(
    labels: LesionLabels,
    table: LesionTable,
    options: LesionOptions = LesionOptions(),
    whole: Callable[[], SurfaceDistances] | None = None,
) -> tuple[float, np.ndarray]:
    """Lesion-wise HD95 (mm) and the HD95 of each reference lesion (float64 [n_ref]).

    HD95(R_i, U_i) from :mod:`segeval.core.boundary` (``surface``, ``pooled_percentile``) on
    the lesion and the union of the predicted lesions touching it; ``hd95_penalty`` (None:
    the image diagonal) for a missed lesion and for each false positive; averaged over
    (kept reference lesions + false positives); ``hd95_both_empty`` when that is 0.

    ``whole``: gives the distance sets (under ``options.surface``) between the boundaries of
    the class's two whole masks, when the caller has them or keeps them for other metrics.
    They are used when the class is one reference lesion touched by every predicted lesion:
    then R_1 is the whole reference mask (with a dilation too: every reference voxel lies in
    the one merged region) and U_1 the whole prediction.
    """
    from segeval.core.boundary import boundary_scores, image_diagonal, surface_distances

    penalty = options.hd95_penalty
    if penalty is None:
        penalty = image_diagonal(table.shape, table.spacing)
    per_lesion = np.full(table.n_ref, penalty, dtype=np.float64)
    if table.n_ref and len(table.pair_ref):
        starts = np.searchsorted(table.pair_ref, np.arange(table.n_ref + 1))
        boxes: tuple[list[Any], list[Any]] | None = None
        for i in range(table.n_ref):
            partners = table.pair_pred[starts[i]:starts[i + 1]] + 1
            if len(partners) == 0:
                continue
            every = len(partners) == table.n_pred  # the union is the whole prediction
            if every and table.n_ref == 1 and whole is not None:
                per_lesion[i] = boundary_scores(
                    whole(), ("hd95",), pooled_percentile=options.pooled_percentile)["hd95"]
                continue
            if every and table.n_ref == 1 and options.dilation == 0:
                # the pair is every voxel of the labels, whose box is then the pair's box
                # (positions are measured from the first voxel of the arrays given)
                lesion, union = labels.reference != 0, labels.prediction != 0
            else:
                if boxes is None:
                    from scipy.ndimage import find_objects

                    boxes = (find_objects(labels.reference, max_label=table.n_ref),
                             find_objects(labels.prediction, max_label=table.n_pred))
                box = _union_of_boxes([boxes[0][i]] + [boxes[1][p - 1] for p in partners])
                lesion = labels.reference[box] == i + 1
                union = labels.prediction[box] != 0 if every \
                    else np.isin(labels.prediction[box], partners)
            distances = surface_distances(lesion, union, table.spacing, options.surface)
            per_lesion[i] = boundary_scores(
                distances, ("hd95",), pooled_percentile=options.pooled_percentile)["hd95"]
    false_positive, _ = table.pred_status()
    n_fp = int(false_positive.sum())
    denominator = int(table.kept.sum()) + n_fp
    if denominator == 0:
        return options.hd95_both_empty, per_lesion
    return float((per_lesion[table.kept].sum() + n_fp * penalty) / denominator), per_lesion


def _union_of_boxes(boxes: Sequence[tuple[slice, ...] | None]) -> tuple[slice, ...]:
    present = [b for b in boxes if b is not None]
    return tuple(
        slice(min(b[axis].start for b in present), max(b[axis].stop for b in present))
        for axis in range(len(present[0]))
    )


def lesion_rows(
    table: LesionTable, options: LesionOptions = LesionOptions()
) -> list[dict[str, Any]]:
    """One record per lesion, for a per-lesion table (``--lesions``).

    Keys: ``side`` (reference / prediction), ``lesion`` (id, 1-based, raster order of the
    lesion's first voxel), ``voxels``, ``volume_mm3``, ``touching`` (ids on the other side
    whose lesions touch it), ``status`` (tp, fn, dropped for reference lesions; tp, fp, ignored
    for predicted ones: a predicted lesion is tp when it touches a kept reference lesion),
    ``dice`` (reference: with the union of the predicted lesions touching it), ``iou`` and
    ``match`` (the PQ partner's IoU and id; None when unmatched).
    """
    touched = table.touched_ref()
    false_positive, ignored = table.pred_status()
    dice = _union_dice(table)
    usable = table.kept[table.pair_ref] & ~ignored[table.pair_pred]
    sub = replace(table, pair_ref=table.pair_ref[usable], pair_pred=table.pair_pred[usable],
                  pair_overlap=table.pair_overlap[usable])
    matched = sub.matches(options)
    iou = sub.iou()
    ref_match = {int(sub.pair_ref[k]): (int(sub.pair_pred[k]), float(iou[k])) for k in matched}
    pred_match = {p: (r, v) for r, (p, v) in ref_match.items()}
    # the lesions each lesion touches, in id order: pairs grouped by side (one sort, not a
    # scan of every pair per lesion, which was quadratic in the number of lesions)
    preds_of = _grouped(table.pair_ref, table.pair_pred, table.n_ref)
    refs_of = _grouped(table.pair_pred, table.pair_ref, table.n_pred)
    rows: list[dict[str, Any]] = []
    for i in range(table.n_ref):
        status = "dropped" if not table.kept[i] else ("tp" if touched[i] else "fn")
        partner = ref_match.get(i)
        rows.append(_row("reference", i, int(table.ref_voxels[i]), table, preds_of[i], status,
                         float(dice[i]), partner))
    for j in range(table.n_pred):
        status = "fp" if false_positive[j] else ("ignored" if ignored[j] else "tp")
        partner = pred_match.get(j)
        rows.append(_row("prediction", j, int(table.pred_voxels[j]), table, refs_of[j], status,
                         None, partner))
    return rows


def _grouped(keys: np.ndarray, values: np.ndarray, n: int) -> list[np.ndarray]:
    """``[values[keys == k] for k in range(n)]`` (each in ascending order of ``values``)."""
    order = np.lexsort((values, keys))
    bounds = np.searchsorted(keys[order], np.arange(n + 1))
    ordered = values[order]
    return [ordered[bounds[k]:bounds[k + 1]] for k in range(n)]


def _row(
    side: str, index: int, voxels: int, table: LesionTable, touching: np.ndarray, status: str,
    dice: float | None, partner: tuple[int, float] | None,
) -> dict[str, Any]:
    return {
        "side": side, "lesion": index + 1, "voxels": voxels,
        "volume_mm3": voxels * table.voxel_mm3,
        "touching": [int(t) + 1 for t in touching], "status": status, "dice": dice,
        "match": None if partner is None else partner[0] + 1,
        "iou": None if partner is None else partner[1],
    }
