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

from segeval.config import EvalConfig
from segeval.core.boundary import boundary_scores, surface_distances
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
                 spacing: Sequence[float] | None) -> None:
        self.reference, self.prediction, self.valid = reference, prediction, valid
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
        One label is one comparison; a union of labels is a lookup table over the label
        values (cheaper than ``np.isin`` on uint8/uint16 maps)."""
        return self._mask(self.reference, members), self._mask(self.prediction, members)

    def _mask(self, labels: np.ndarray, members: tuple[int, ...]) -> np.ndarray:
        if len(members) == 1:
            mask = labels == members[0]
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


def distances_of(maps: CaseMaps, config: EvalConfig) -> dict[str, dict[str, float]]:
    """The boundary metrics of every class of one case's maps (see :func:`case_distances`)."""
    values: dict[str, dict[str, float]] = {}
    for key, members in maps.classes(config):
        reference_mask, prediction_mask = maps.masks(members)
        distances = surface_distances(reference_mask, prediction_mask, maps.spacing,
                                      config.surface)
        values[key] = boundary_scores(
            distances, config.boundary_metrics, tolerance=config.tolerance_for(key),
            pooled_percentile=config.hd_percentile_mode == "pooled",
            empty_distance=config.empty_distance,
        )
    return values


def _classes(ref_labels: np.ndarray, pred_labels: np.ndarray,
             config: EvalConfig) -> list[tuple[str, tuple[int, ...]]]:
    if config.regions and config.labels is None:  # regions only: no need to scan labels
        return [(name, members) for name, members in config.regions]
    present = set(np.unique(ref_labels).tolist()) | set(np.unique(pred_labels).tolist())
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
