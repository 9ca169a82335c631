"""Boundary metrics of one case, per class, under the same mask rules that count it.

The prediction and reference are interpreted once, by :func:`interpret.label_maps` (the
rules counting uses: axis order, thresholds, label mapping, ``ignore_index``);
each class's two boolean masks then go to :mod:`segeval.core.boundary`.  Values are per
case × class and travel beside the counts (they do not add over cases).

Classes computed: the regions, plus every label present in either mask (0 only with
``include_background``; never ``ignore_index``) or listed in ``labels``.  A class absent from
both masks is not computed: the report gives it NaN (undefined), as for both-empty masks.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from segeval.config import EvalConfig, Surface
from segeval.core.boundary import (
    SurfaceDistances,
    boundary_of,
    boundary_scores,
    distances_between,
    image_diagonal,
    union_box,
)
from segeval.engines.interpret import label_maps, to_host
from segeval.engines.numpy_backend import NumpyBackend


def case_distances(
    prediction: Any | None,
    reference: Any,
    config: EvalConfig,
    spacing: Sequence[float] | None,
    prediction_name: str = "prediction",
    reference_name: str = "reference",
) -> dict[str, dict[str, float]]:
    """``{class key: {metric: value in mm (nsd: a fraction)}}`` for ``config.boundary_metrics``.

    ``spacing`` is the reference's voxel size in mm (None: ``config.spacing``, else 1 mm).
    ``prediction=None`` is an empty prediction.
    """
    return distances_of(CaseMaps.read(prediction, reference, config, spacing,
                                      prediction_name, reference_name), config)


class CaseMaps:
    """A case's two label maps under every mask rule (:func:`interpret.label_maps`), its
    evaluated voxels and spacing: read once, then each class's masks for every per-case value
    step (boundary distances, lesions)."""

    def __init__(self, reference: np.ndarray, prediction: np.ndarray, valid: np.ndarray | None,
                 spacing: Sequence[float] | None,
                 image_shape: tuple[int, ...] | None = None) -> None:
        self.reference, self.prediction, self.valid = reference, prediction, valid
        # the whole image's shape when the maps are a crop of it (boundary distances only)
        self.image_shape = reference.shape if image_shape is None else image_shape
        if spacing is not None and len(spacing) != reference.ndim:
            spacing = tuple(spacing)[: reference.ndim]  # a 2-D slice of a file with a 3rd zoom
        self.spacing = None if spacing is None else tuple(float(s) for s in spacing)

    @classmethod
    def read(cls, prediction: Any | None, reference: Any, config: EvalConfig,
             spacing: Sequence[float] | None, prediction_name: str = "prediction",
             reference_name: str = "reference") -> CaseMaps:
        """``spacing``: the reference's voxel size in mm (None: ``config.spacing``, else 1)."""
        # the per-case value steps run on the CPU (tensors are copied): the masks counting uses
        ref_labels, pred_labels, valid = label_maps(
            to_host(prediction), to_host(reference), config, NumpyBackend(), prediction_name,
            reference_name)
        return cls(ref_labels, pred_labels, valid, config.spacing if spacing is None else spacing)

    def classes(self, config: EvalConfig) -> list[tuple[str, tuple[int, ...]]]:
        """The classes present in either map (and the regions): see the module docstring."""
        return _classes(self.reference, self.prediction, config)

    def masks(self, members: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
        """(reference, prediction) boolean masks of a class: its labels, evaluated voxels only.
        A union of up to 8 labels is one comparison per label (6x cheaper than a lookup on a
        3-million-voxel uint8 map); more, a lookup table over the label values (cheaper than
        ``np.isin`` on uint8/uint16 maps)."""
        return self.reference_mask(members), self.prediction_mask(members)

    def reference_mask(self, members: tuple[int, ...]) -> np.ndarray:
        return self._mask(self.reference, members)

    def prediction_mask(self, members: tuple[int, ...]) -> np.ndarray:
        return self._mask(self.prediction, members)

    def _mask(self, labels: np.ndarray, members: tuple[int, ...]) -> np.ndarray:
        if len(members) <= 8:
            mask = labels == members[0]
            for member in members[1:]:
                mask |= labels == member
        elif labels.dtype.kind in "ub" and labels.dtype.itemsize <= 2:
            table = np.zeros(np.iinfo(labels.dtype).max + 1 if labels.dtype.kind == "u"
                             else 2, dtype=bool)
            table[[m for m in members if m < len(table)]] = True
            mask = table[labels]
        else:
            mask = np.isin(labels, members)
        if self.valid is not None:
            mask &= self.valid
        return mask


# reference boundary elements kept per reference file for the next teams (each ~100 bytes
# with its k-d tree: ~400 MB at most per worker); past it a boundary is built per team
SHARED_ELEMENTS = 1 << 22


class ClassDistances:
    """The two directed distance sets between each class's two boundaries in one case,
    computed once per (class, surface) and kept: the boundary metrics and a lone lesion's HD95
    (a class that is one reference lesion touched by every predicted lesion: the same two
    masks) read the same sets.

    Both maps are cropped once to the bounding box of their nonzero voxels (or to the crop the
    lesion step made and offers, :meth:`use_crop`, that box grown by the dilation): every
    class without label 0 lies inside it (outside it is outside every such mask, as outside
    the image), and boundary positions are whole-image positions, so the crop changes no
    value; a class holding label 0 uses the whole image.  The diagonal (one empty mask) stays
    the whole image's.

    ``shared``: a dict kept across the cases that share this case's reference file (grading:
    the same case of every team); each class's reference boundary and its k-d tree are kept
    there and reused, with the same values as computing them again (up to
    :data:`SHARED_ELEMENTS` elements; the rest are built again for each case)."""

    def __init__(self, maps: CaseMaps, shared: dict[Any, Any] | None = None) -> None:
        self.whole, self.shared = maps, shared
        self.spacing = maps.spacing or (1.0,) * maps.reference.ndim
        self.diagonal = image_diagonal(maps.image_shape, self.spacing)
        self._crop: tuple[CaseMaps, tuple[int, ...] | None] | None = None  # on first use
        self._kept: dict[tuple[tuple[int, ...], str], SurfaceDistances] = {}

    def use_crop(self, maps: CaseMaps, origin: tuple[int, ...]) -> None:
        """Take ``maps``, a crop of the case's maps starting at voxel ``origin`` that holds
        every nonzero voxel of both (the lesion step's C-ordered copy), instead of cropping
        the case's maps again (unless it has done so already)."""
        if self._crop is None:
            self._crop = (maps, origin)

    def _cropped(self) -> tuple[CaseMaps, tuple[int, ...] | None]:
        if self._crop is None:
            maps = self.whole
            box = union_box(maps.reference, maps.prediction)
            self._crop = (maps, None) if box is None else (
                CaseMaps(maps.reference[box], maps.prediction[box],
                         None if maps.valid is None else maps.valid[box], maps.spacing,
                         image_shape=maps.image_shape),
                tuple(s.start for s in box))
        return self._crop

    def __call__(self, members: tuple[int, ...], surface: Surface) -> SurfaceDistances:
        """The distance sets of the class made of the labels ``members``."""
        found = self._kept.get((members, surface))
        if found is not None:
            return found
        maps, origin = (self.whole, None) if 0 in members else self._cropped()
        shared = self.shared
        memo_key = ("reference boundary", surface, members)
        reference = None if shared is None else shared.get(memo_key)
        if reference is None:
            reference = boundary_of(maps.reference_mask(members), self.spacing, surface, origin)
            kept = 0 if shared is None else shared.get("boundary elements kept", 0)
            if shared is not None and kept + reference.size <= SHARED_ELEMENTS:
                shared[memo_key] = reference
                shared["boundary elements kept"] = kept + reference.size
        prediction = boundary_of(maps.prediction_mask(members), self.spacing, surface, origin)
        found = distances_between(reference, prediction, self.diagonal, surface)
        self._kept[(members, surface)] = found
        return found


def distances_of(maps: CaseMaps, config: EvalConfig,
                 shared: dict[Any, Any] | None = None,
                 distances: ClassDistances | None = None) -> dict[str, dict[str, float]]:
    """The boundary metrics of every class of one case's maps (see :func:`case_distances`),
    from ``distances`` (default: a new :class:`ClassDistances` of ``maps`` and ``shared``)."""
    if distances is None:
        distances = ClassDistances(maps, shared)
    elif shared is not None:
        raise ValueError("give shared to the ClassDistances, not beside it")
    return {
        key: boundary_scores(
            distances(members, config.surface), config.boundary_metrics,
            tolerance=config.tolerance_for(key),
            pooled_percentile=config.hd_percentile_mode == "pooled",
            empty_distance=config.empty_distance,
        )
        for key, members in maps.classes(config)
    }


def _classes(ref_labels: np.ndarray, pred_labels: np.ndarray,
             config: EvalConfig) -> list[tuple[str, tuple[int, ...]]]:
    if config.regions and config.labels is None:  # regions only: no need to scan labels
        return [(name, members) for name, members in config.regions]
    present = _present(ref_labels, pred_labels)
    if config.labels is not None:
        labels = set(config.labels) | ({0} if config.include_background else set())
    elif config.regions:
        labels = set()
    else:
        labels = present - ({0} if not config.include_background else set())
    labels &= present
    labels.discard(config.ignore_index)  # type: ignore[arg-type]
    classes = [(str(label), (label,)) for label in sorted(labels)]
    return classes + [(name, members) for name, members in config.regions]


def _present(ref_labels: np.ndarray, pred_labels: np.ndarray) -> set[int]:
    """``set(np.unique(ref_labels)) | set(np.unique(pred_labels))``, from the bounding box of
    the nonzero voxels only (plus 0 when the box is smaller than the image), each read in
    memory order: ``np.unique`` of a whole Fortran-ordered NIfTI volume copies it into C
    order first."""
    box = union_box(ref_labels, pred_labels)
    if box is None:
        return {0} if ref_labels.size else set()
    present = {0} if any(s.stop - s.start < n for s, n in zip(box, ref_labels.shape,
                                                                strict=True)) else set()
    for labels in (ref_labels[box], pred_labels[box]):
        present |= set(np.unique(labels.ravel(order="K")).tolist())
    return present
