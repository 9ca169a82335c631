"""Boundary (surface-distance) metrics: two boolean masks + a voxel spacing -> distances in mm.

Pure: no I/O, no config.  Every value comes from two directed distance sets computed once::

    d(P->G) = for each boundary element of the prediction P, the distance (mm) to the
              nearest boundary element of the reference G;   d(G->P) likewise.

Boundary elements (``surface``):

- ``"voxel"`` (default): the voxels of the mask with at least one face-neighbour (4-connected in
  2-D, 6 in 3-D; 2·ndim in general) outside the mask; outside the image counts as outside.
  Each element has weight 1; distances are between voxel centres.
- ``"surfel"``: DeepMind's surface elements (Nikolov et al. 2021, the ``surface-distance``
  package used for MSD, KiTS21 and FLARE22).  The elements sit on the grid of voxel corners:
  a corner whose 2x2 (2-D) or 2x2x2 (3-D) neighbourhood of voxels is neither all inside nor all
  outside carries the contour length (2-D, marching squares) or surface area (3-D, marching
  cubes) of the isosurface inside that cell, in mm / mm², as its weight.  2-D and 3-D only.

Distances are exact Euclidean distances between element positions scaled by ``spacing``,
in float64.  Elements within a few voxels of the other boundary (most of them, for a
prediction that follows the reference) are found by trying grid offsets in order of length
(:func:`_near_on_grid`); the rest by a k-d tree query (its cost grows with the number of
boundary elements, not with the bounding box, so a few stray voxels far from the object cost
little).

Metrics (``w`` = the weights, 1 for ``voxel``; ``D = d(P->G) ∪ d(G->P)``)::

    hd    = max(D)
    hdNN  = max(q_NN(d(P->G)), q_NN(d(G->P)))     directed (default; MONAI, MetricsReloaded)
          = q_NN(D)                                pooled (MedPy, seg-metrics, panoptica)
            q = linear interpolation (numpy.percentile) for ``voxel``; for ``surfel`` the
            area-weighted step rule of surface-distance (first distance whose cumulative
            area fraction reaches NN/100)
    assd  = Σ w·D / Σ w                             mean over both directed sets together
    masd  = (mean_w d(P->G) + mean_w d(G->P)) / 2   mean of the two directed means
    nsd   = (Σ w[d(P->G) <= τ] + Σ w[d(G->P) <= τ]) / (Σ w_P + Σ w_G)     (τ in mm, inclusive)
            a distance equal to τ in exact arithmetic counts whatever its rounding: the
            comparison is d <= τ·(1 + 1e-9) (3 voxels of 0.1 mm are 0.30000000000000004 mm
            in float64; at τ = 0.3 they are within τ)

Empty masks: both empty -> every metric is NaN (undefined).  Exactly one empty -> the distance
metrics take ``empty_distance`` (``"diagonal"``: the image diagonal in mm, sqrt(Σ (n_i·s_i)²),
larger than any distance inside the image; ``"nan"``; ``"inf"``; or a number of mm), and
``nsd`` is 0 (no element of the non-empty boundary is near the other, absent one).
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np

from segeval.config import (
    BOUNDARY_METRICS,
    SURFACES,
    Surface,
    hd_percentile,
    is_boundary_metric,
)

__all__ = ["BOUNDARY_METRICS", "Boundary", "SurfaceDistances", "boundary_of", "boundary_scores",
           "distances_between", "hd_percentile", "is_boundary_metric", "nsd_terms",
           "surface_distances"]
EmptyDistance = str | float  # "diagonal" | "nan" | "inf" | a number of mm
# rows of the mask handled at a time, so temporaries stay small on large volumes
_SLAB_VOXELS = 1 << 23


@dataclass(frozen=True)
class SurfaceDistances:
    """The two directed distance sets between the boundaries of a prediction and a reference.

    ``pred_to_ref[i]`` is the distance (mm, float64) from the i-th boundary element of the
    prediction to the nearest boundary element of the reference (empty when either boundary
    is empty); ``pred_weights[i]`` is its weight (1.0 for ``voxel``, contour length in mm or
    surface area in mm² for ``surfel``).  ``pred_size``/``ref_size`` count the boundary elements,
    ``diagonal`` is the image diagonal in mm (the default value for one empty mask).
    """

    pred_to_ref: np.ndarray
    ref_to_pred: np.ndarray
    pred_weights: np.ndarray
    ref_weights: np.ndarray
    pred_size: int
    ref_size: int
    diagonal: float
    surface: Surface = "voxel"


def image_diagonal(shape: Sequence[int], spacing: Sequence[float]) -> float:
    """sqrt(Σ (n_i · s_i)²): the diagonal of the image's extent in mm."""
    return math.sqrt(sum((n * s) ** 2 for n, s in zip(shape, spacing, strict=True)))


class Boundary:
    """The boundary elements of one mask: positions in mm from the image's first voxel
    (``origin`` voxels of a crop added), their weights, their whole-image grid indices and the
    spacing, and a k-d tree over the positions, built on first use and kept (grading queries
    one reference boundary for every team).

    The positions do not depend on which crop of the image the mask came from, as long as the
    crop holds every inside voxel: so a boundary can be computed once and measured against
    many others, with the same values as computing the pair together."""

    __slots__ = ("points", "weights", "index", "spacing", "_tree")

    def __init__(self, points: np.ndarray, weights: np.ndarray,
                 index: np.ndarray | None = None, spacing: np.ndarray | None = None) -> None:
        self.points, self.weights = points, weights
        self.index, self.spacing = index, spacing
        self._tree: Any = None

    @property
    def size(self) -> int:
        return len(self.points)

    def nearest(self, points: np.ndarray) -> np.ndarray:
        """Exact Euclidean distance (mm) from each of ``points`` to its nearest element."""
        if self._tree is None:
            from scipy.spatial import cKDTree

            self._tree = cKDTree(self.points, leafsize=32, balanced_tree=False)
        distances, _ = self._tree.query(points, k=1)
        return np.asarray(distances, dtype=np.float64)

    def distances_from(self, source: Boundary) -> np.ndarray:
        """Exact Euclidean distance (mm) from each element of ``source`` (a boundary of the
        same image and spacing) to the nearest element of this one.

        Most elements of two boundaries of one object lie within a few voxels of each other:
        those are found by looking at the grid offsets around each source element in order of
        length (:func:`_near_on_grid`), and only the rest are queried in the k-d tree.  Both
        give the exact distance; an offset's length is computed from the index difference, so
        it can differ from the tree's (a difference of two positions) in the last bit only."""
        found = None
        if (source.size >= _GRID_MIN_ELEMENTS and self.index is not None
                and source.index is not None and self.spacing is not None
                and source.spacing is not None and np.array_equal(self.spacing, source.spacing)):
            found = _near_on_grid(source.index, self.index, self.spacing)
        if found is None:
            return self.nearest(source.points)
        distances, rest = found
        if len(rest):
            distances[rest] = self.nearest(source.points[rest])
        return distances


# the grid search below: at most this many cells in the target's padded bounding box
# (one byte each), and this many of the smallest spacing as the search radius
_GRID_CELLS = 1 << 26
_GRID_RADIUS = 4
# below this many source elements the k-d tree alone is as quick (a 90-element sphere: equal
# times; 354 elements: the grid 2.3x quicker), and a case of many small lesions, each one
# grid, was 20% slower with the grid (2,239 2-D lesions, lesion HD95: 0.58 -> 0.70 s)
_GRID_MIN_ELEMENTS = 128
# ... and at most this many cells per element of both boundaries: a few stray predicted voxels
# span a large box in which nearly every source element is "near" and none is found (one
# scan per offset for nothing: 10x slower than the tree alone in review)
_GRID_CELLS_PER_ELEMENT = 64
# after the offsets up to this many of the smallest spacing, the search stops when fewer than
# this fraction of the source points were found: boundaries a few voxels apart (nothing
# within reach) go to the tree after ~27 scans instead of ~500 (1.8x slower in review)
_GRID_FIRST_SHELL, _GRID_FIRST_FOUND = 1.75, 0.25


def _near_on_grid(source: np.ndarray, target: np.ndarray, spacing: np.ndarray
                  ) -> tuple[np.ndarray, np.ndarray] | None:
    """Exact distances from grid points ``source`` [n, ndim] to the nearest of ``target``
    [m, ndim] (whole-image indices, ``spacing`` mm per axis) for every source point whose
    nearest target point is closer than the search limit; ``(distances, rest)``: ``rest`` are
    the indices of the source points not resolved (their distances are left unset).  None when
    the target's bounding box is too large for a grid of one byte per cell (absolutely, or for
    the number of elements).

    The search also stops early (the rest left to the tree) when the first offsets, up to
    1.75 · min spacing, find fewer than a quarter of the source points.

    Offsets up to R_a = floor(4 · min spacing / s_a) voxels along each axis are tried in order
    of their length |o · s|; a source point takes the length of the first offset that lands on
    a target point.  Every offset outside that box is at least L = min_a (R_a + 1) · s_a long,
    so only offsets shorter than L are tried: a point resolved by one of them has no closer
    target point anywhere, and a point with none has its nearest at ≥ L (resolved by the
    caller's k-d tree)."""
    radius = np.floor(_GRID_RADIUS * spacing.min() / spacing + 1e-9).astype(np.int64)
    lo = target.min(axis=0) - 2 * radius
    dims = target.max(axis=0) + 2 * radius + 1 - lo
    cells_in_box = math.prod(dims.tolist())
    if cells_in_box > min(_GRID_CELLS, _GRID_CELLS_PER_ELEMENT * (len(source) + len(target))):
        return None
    grid = np.zeros(dims.tolist(), dtype=bool)
    grid[tuple((target - lo).T)] = True
    strides = np.array([math.prod(dims[a + 1:].tolist()) for a in range(len(dims))],
                       dtype=np.int64)
    offsets, lengths = _offsets(tuple(radius.tolist()), tuple(spacing.tolist()))
    steps = offsets @ strides
    relative = source - lo
    # a source point more than R_a outside the target's box along an axis has no target point
    # within the offsets; the others stay inside the grid (it is padded by 2 R) for every one
    near = np.all((relative >= radius) & (relative < dims - radius), axis=1)
    distances = np.empty(len(source), dtype=np.float64)
    pending = np.flatnonzero(near)
    cells = relative[pending] @ strides
    flat = grid.reshape(-1)
    first_shell = int(np.searchsorted(lengths, _GRID_FIRST_SHELL * float(spacing.min()),
                                      side="right"))
    for k, (step, length) in enumerate(zip(steps.tolist(), lengths.tolist(), strict=True)):
        if k == first_shell and len(pending) > (1 - _GRID_FIRST_FOUND) * near.sum():
            break  # little within reach: the tree is quicker for these
        hit = flat[cells + step]
        if hit.any():
            distances[pending[hit]] = length
            missed = ~hit
            pending, cells = pending[missed], cells[missed]
            if not len(pending):
                break
    return distances, np.concatenate([np.flatnonzero(~near), pending])


@lru_cache(maxsize=64)
def _offsets(radius: tuple[int, ...], spacing: tuple[float, ...]
             ) -> tuple[np.ndarray, np.ndarray]:
    """The grid offsets within ``radius`` voxels per axis shorter than the box's limit
    min_a (R_a + 1) · s_a, sorted by length, and their lengths in mm."""
    axes = np.meshgrid(*(np.arange(-r, r + 1) for r in radius), indexing="ij")
    offsets = np.stack([a.reshape(-1) for a in axes], axis=1).astype(np.int64)
    lengths = np.sqrt(((offsets * np.array(spacing)) ** 2).sum(axis=1))
    limit = min((r + 1) * s for r, s in zip(radius, spacing, strict=True))
    keep = lengths < limit * (1 - 1e-12)
    order = np.argsort(lengths[keep], kind="stable")
    return offsets[keep][order], lengths[keep][order]


def boundary_of(
    mask: np.ndarray,
    spacing: Sequence[float] | None = None,
    surface: Surface = "voxel",
    origin: Sequence[int] | None = None,
) -> Boundary:
    """The :class:`Boundary` of a boolean mask (``spacing`` in mm per axis, default 1;
    ``origin``: the index in the whole image of the mask's first voxel when it is a crop)."""
    mask = np.asarray(mask, dtype=bool)
    sp = _spacing(mask.ndim, spacing, surface)
    box = union_box(mask)
    if box is None:
        return Boundary(np.zeros((0, mask.ndim)), np.zeros(0),
                        np.zeros((0, mask.ndim), dtype=np.int32), sp)
    offset = np.array([s.start for s in box], dtype=np.int64)
    if origin is not None:
        offset += np.asarray(origin, dtype=np.int64)
    return Boundary(*_boundary_elements(mask, box, sp, surface, offset), sp)


def surface_distances(
    reference: np.ndarray,
    prediction: np.ndarray,
    spacing: Sequence[float] | None = None,
    surface: Surface = "voxel",
    image_shape: Sequence[int] | None = None,
) -> SurfaceDistances:
    """Boundaries of two boolean masks of the same shape, and the distances between them.

    ``spacing`` is the voxel size in mm along each axis (default 1.0).  Only each mask's
    bounding box is scanned, in slabs, so memory stays a small multiple of the masks.
    ``image_shape`` (default: the masks' shape) is the shape of the whole image when the masks
    are a crop of it holding every inside voxel of both (the crop changes no distance, and
    outside the crop is outside, as outside the image): it sets ``diagonal``.
    """
    reference = np.asarray(reference, dtype=bool)
    prediction = np.asarray(prediction, dtype=bool)
    if reference.shape != prediction.shape:
        raise ValueError(
            f"shapes differ: reference {reference.shape}, prediction {prediction.shape}")
    sp = _spacing(reference.ndim, spacing, surface)
    values = sp.tolist()
    return distances_between(boundary_of(reference, values, surface),
                             boundary_of(prediction, values, surface),
                             image_diagonal(_image_shape(reference.shape, image_shape),
                                            values), surface)


def distances_between(reference: Boundary, prediction: Boundary, diagonal: float,
                      surface: Surface = "voxel") -> SurfaceDistances:
    """The two directed distance sets between two boundaries of one image (``diagonal``:
    the image's, in mm, for the one-empty rule)."""
    empty = np.zeros(0)
    if prediction.size == 0 or reference.size == 0:
        return SurfaceDistances(empty, empty, prediction.weights, reference.weights,
                                prediction.size, reference.size, diagonal, surface)
    return SurfaceDistances(
        reference.distances_from(prediction), prediction.distances_from(reference),
        prediction.weights, reference.weights, prediction.size, reference.size, diagonal,
        surface,
    )


def _spacing(ndim: int, spacing: Sequence[float] | None, surface: Surface) -> np.ndarray:
    """The checked spacing (float64 [ndim]) of a mask with ``ndim`` axes."""
    if ndim == 0:
        raise ValueError("boundary metrics need at least one axis")
    sp = np.ones(ndim) if spacing is None else np.asarray(spacing, dtype=np.float64)
    if sp.shape != (ndim,) or not np.all(np.isfinite(sp)) or np.any(sp <= 0):
        raise ValueError(f"spacing must be {ndim} positive numbers, got {spacing!r}")
    if surface not in SURFACES:
        raise ValueError(f"surface must be one of {SURFACES}, got {surface!r}")
    if surface == "surfel" and ndim not in (2, 3):
        raise ValueError("the surfel convention is defined for 2-D and 3-D masks only")
    return sp


def _image_shape(shape: tuple[int, ...], image_shape: Sequence[int] | None
                 ) -> tuple[int, ...]:
    if image_shape is None:
        return shape
    if len(image_shape) != len(shape) or any(
            n < m for n, m in zip(image_shape, shape, strict=True)):
        raise ValueError(f"image shape {tuple(image_shape)} cannot hold masks of shape {shape}")
    return tuple(image_shape)


def boundary_scores(
    distances: SurfaceDistances,
    metrics: Sequence[str] = BOUNDARY_METRICS,
    *,
    tolerance: float = 1.0,
    pooled_percentile: bool = False,
    empty_distance: EmptyDistance = "diagonal",
) -> dict[str, float]:
    """The requested boundary metrics (names as in :func:`is_boundary_metric`) as floats.

    ``tolerance`` is NSD's τ in mm; ``pooled_percentile`` takes ``hdNN`` over both directed
    sets together (MedPy) instead of the max of the two directed percentiles.  Edge rules as
    in the module docstring.
    """
    for name in metrics:
        if not is_boundary_metric(name):
            raise ValueError(f"{name!r} is not a boundary metric")
    if distances.pred_size == 0 and distances.ref_size == 0:
        return {name: math.nan for name in metrics}
    if distances.pred_size == 0 or distances.ref_size == 0:
        worst = empty_distance_value(empty_distance, distances.diagonal)
        return {name: 0.0 if name == "nsd" else worst for name in metrics}
    return {
        name: _score(name, distances, tolerance, pooled_percentile) for name in metrics
    }


# NSD's relative slack on τ: far above float64 rounding (~1e-16 relative a step), far below
# any real difference between two grid distances near τ
NSD_SLACK = 1e-9


def nsd_terms(distances: SurfaceDistances, tolerance: float) -> tuple[float, float]:
    """NSD's numerator and denominator: (Σ w of elements within τ, Σ w of all elements).

    Counts for ``voxel`` (so they add over cases, like TP/FP/FN), areas for ``surfel``.
    Within τ is ``d <= τ·(1 + NSD_SLACK)``: a distance equal to τ in exact arithmetic is
    within τ, however the float64 rounding of its length went.
    """
    total = float(distances.pred_weights.sum() + distances.ref_weights.sum())
    if distances.pred_size == 0 or distances.ref_size == 0:
        return 0.0, total
    within = tolerance * (1 + NSD_SLACK)
    near = float(
        distances.pred_weights[distances.pred_to_ref <= within].sum()
        + distances.ref_weights[distances.ref_to_pred <= within].sum()
    )
    return near, total


def empty_distance_value(rule: EmptyDistance, diagonal: float) -> float:
    """The distance given when exactly one mask is empty, by rule."""
    if rule == "diagonal":
        return diagonal
    if rule == "nan":
        return math.nan
    if rule == "inf":
        return math.inf
    if isinstance(rule, str):
        raise ValueError(f"empty distance must be diagonal, nan, inf or a number; got {rule!r}")
    value = float(rule)
    if not value >= 0:
        raise ValueError(f"empty distance must be >= 0 mm, got {rule!r}")
    return value


def _score(name: str, d: SurfaceDistances, tolerance: float, pooled: bool) -> float:
    if name == "hd":
        return float(max(d.pred_to_ref.max(), d.ref_to_pred.max()))
    if name == "assd":
        total = _weighted_sum(d.pred_to_ref, d.pred_weights) + _weighted_sum(
            d.ref_to_pred, d.ref_weights)
        return total / float(d.pred_weights.sum() + d.ref_weights.sum())
    if name == "masd":
        return 0.5 * (
            _weighted_sum(d.pred_to_ref, d.pred_weights) / float(d.pred_weights.sum())
            + _weighted_sum(d.ref_to_pred, d.ref_weights) / float(d.ref_weights.sum())
        )
    if name == "nsd":
        near, total = nsd_terms(d, tolerance)
        return near / total
    q = hd_percentile(name)
    assert q is not None
    if pooled:
        return _percentile(
            np.concatenate([d.pred_to_ref, d.ref_to_pred]),
            np.concatenate([d.pred_weights, d.ref_weights]), q, d.surface,
        )
    return max(
        _percentile(d.pred_to_ref, d.pred_weights, q, d.surface),
        _percentile(d.ref_to_pred, d.ref_weights, q, d.surface),
    )


def _weighted_sum(values: np.ndarray, weights: np.ndarray) -> float:
    # not values @ weights: BLAS threads cost more than they save on these short vectors
    return float(np.sum(values * weights))


def _percentile(values: np.ndarray, weights: np.ndarray, q: float, surface: Surface) -> float:
    if surface == "voxel":
        return float(np.percentile(values, q))
    order = np.argsort(values, kind="stable")
    cumulative = np.cumsum(weights[order]) / weights.sum()
    index = int(np.searchsorted(cumulative, q / 100.0))
    return float(values[order[min(index, len(values) - 1)]])


def union_box(a: np.ndarray, b: np.ndarray | None = None) -> tuple[slice, ...] | None:
    """The bounding box of ``a | b`` (nonzero voxels of two arrays of one shape; of ``a``
    alone without ``b``), one slice per axis, or None when both are empty."""
    box = []
    for axis in range(a.ndim):
        others = tuple(i for i in range(a.ndim) if i != axis)
        seen = np.any(a, axis=others)
        present = np.flatnonzero(seen if b is None else seen | np.any(b, axis=others))
        if present.size == 0:
            return None
        box.append(slice(int(present[0]), int(present[-1]) + 1))
    return tuple(box)


def _boundary_elements(
    mask: np.ndarray, box: tuple[slice, ...], spacing: np.ndarray, surface: Surface,
    offset: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Positions, weights and whole-image indices (int32) of the mask's boundary elements.
    A position is the element's whole-image index (its index in the box + ``offset``) times
    the spacing, so it does not depend on the box."""
    points: list[np.ndarray] = []
    weights: list[np.ndarray] = []
    indices: list[np.ndarray] = []
    # surfel corners run one further than voxels along every axis (corner c joins voxels c-1, c)
    extra = 1 if surface == "surfel" else 0
    for start, padded in _slabs(mask, box, extra):
        if surface == "voxel":
            found = _voxel_boundary(padded)
            weight = None
        else:
            codes = _neighbour_codes(padded)
            found = (codes != 0) & (codes != (1 << (1 << mask.ndim)) - 1)
            weight = _code_measure(tuple(spacing.tolist()))[codes[found]]
        index = np.argwhere(found)
        if index.size:
            index[:, 0] += start
            index += offset
            points.append(index * spacing)
            weights.append(np.ones(len(index)) if weight is None else weight)
            # int32 halves what a kept reference boundary holds; indices past it stay int64
            indices.append(index.astype(np.int32) if index.max() < 1 << 31 else index)
    if not points:
        return np.zeros((0, mask.ndim)), np.zeros(0), np.zeros((0, mask.ndim), dtype=np.int32)
    return np.concatenate(points), np.concatenate(weights), np.concatenate(indices)


def _slabs(
    mask: np.ndarray, box: tuple[slice, ...], extra: int
) -> Iterator[tuple[int, np.ndarray]]:
    """Zero-padded pieces of ``mask[box]`` along axis 0, each with one voxel of context.

    Yields (first output row, padded slab): the slab holds box rows ``start - 1 ..
    start + rows + extra - 1`` (zeros outside the box, which is outside both masks) and is
    padded by one zero on both sides of every other axis.
    """
    extent = [s.stop - s.start for s in box]
    per_row = max(1, math.prod(e + 2 for e in extent[1:]))
    rows = max(1, _SLAB_VOXELS // per_row)
    total = extent[0] + extra
    inner = tuple(slice(1, 1 + e) for e in extent[1:])
    for start in range(0, total, rows):
        stop = min(total, start + rows)
        slab = np.zeros((stop - start + 2 - extra, *(e + 2 for e in extent[1:])), dtype=bool)
        lo, hi = max(start - 1, 0), min(stop + 1 - extra, extent[0])
        if hi > lo:
            rows_in = (slice(box[0].start + lo, box[0].start + hi),)
            rows_out = (slice(lo - (start - 1), hi - (start - 1)),)
            slab[rows_out + inner] = mask[rows_in + tuple(box[1:])]
        yield start, slab


def _voxel_boundary(padded: np.ndarray) -> np.ndarray:
    """Inside voxels of ``padded[1:-1, ...]`` with a face-neighbour outside."""
    core = tuple(slice(1, -1) for _ in range(padded.ndim))
    inside = padded[core]
    interior = inside.copy()
    for axis in range(padded.ndim):
        for shift in (slice(None, -2), slice(2, None)):
            neighbour = list(core)
            neighbour[axis] = shift
            interior &= padded[tuple(neighbour)]
    return inside & ~interior


def _neighbour_codes(padded: np.ndarray) -> np.ndarray:
    """The 2^ndim-bit code of every corner cell: bit 2^(K-1-b) set when corner b is inside,
    b = the corner's offsets read as a binary number (first axis most significant)."""
    ndim = padded.ndim
    corners = 1 << ndim
    shape = tuple(n - 1 for n in padded.shape)
    codes = np.zeros(shape, dtype=np.uint8)
    for b in range(corners):
        offsets = [(b >> (ndim - 1 - axis)) & 1 for axis in range(ndim)]
        view = padded[tuple(slice(o, o + n) for o, n in zip(offsets, shape, strict=True))]
        codes |= view.astype(np.uint8) << np.uint8(corners - 1 - b)
    return codes


@lru_cache(maxsize=64)
def _code_measure(spacing: tuple[float, ...]) -> np.ndarray:
    """Contour length (2-D, mm) or surface area (3-D, mm²) of each neighbourhood code."""
    if len(spacing) == 2:
        return _contour_lengths(spacing)
    from segeval.core._surfel_table import AREA_VECTORS_X8

    s0, s1, s2 = spacing
    # an area vector (n0, n1, n2) at unit spacing becomes (n0·s1·s2, n1·s0·s2, n2·s0·s1)
    scale = np.array([s1 * s2, s0 * s2, s0 * s1]) / 8.0
    return np.array([
        sum(float(np.linalg.norm(np.array(v) * scale)) for v in vectors)
        for vectors in AREA_VECTORS_X8
    ])


def _contour_lengths(spacing: tuple[float, ...]) -> np.ndarray:
    """Marching squares with edge midpoints: one inside corner (or one outside) -> a segment
    joining two adjacent edge midpoints, half the cell diagonal; two inside corners along axis
    a -> a segment across the cell, length s_a; two diagonal corners -> two half-diagonals."""
    half_diagonal = 0.5 * math.hypot(*spacing)
    lengths = np.zeros(16)
    for code in range(16):
        inside = [b for b in range(4) if code & (1 << (3 - b))]
        if len(inside) in (1, 3):
            lengths[code] = half_diagonal
        elif len(inside) == 2:
            (i0, j0), (i1, j1) = ((b >> 1, b & 1) for b in inside)
            if i0 != i1 and j0 != j1:
                lengths[code] = 2 * half_diagonal
            else:
                lengths[code] = spacing[0] if i0 != i1 else spacing[1]
    return lengths
