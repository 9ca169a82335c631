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
    # the distance step runs on the CPU (tensors are copied): the masks counting uses
    ref_labels, pred_labels, valid = label_maps(to_host(prediction), to_host(reference), config,
                                                NumpyBackend(), prediction_name, reference_name)
    if spacing is None:
        spacing = config.spacing
    if spacing is not None and len(spacing) != ref_labels.ndim:
        spacing = tuple(spacing)[: ref_labels.ndim]  # a 2-D slice of a file with a 3rd zoom
    values: dict[str, dict[str, float]] = {}
    for key, members in _classes(ref_labels, pred_labels, config):
        reference_mask = np.isin(ref_labels, members)
        prediction_mask = np.isin(pred_labels, members)
        if valid is not None:
            reference_mask &= valid
            prediction_mask &= valid
        distances = surface_distances(reference_mask, prediction_mask, spacing, config.surface)
        values[key] = boundary_scores(
            distances, config.boundary_metrics, tolerance=config.tolerance_for(key),
            pooled_percentile=config.hd_percentile_mode == "pooled",
            empty_distance=config.empty_distance,
        )
    return values


def _classes(ref_labels: np.ndarray, pred_labels: np.ndarray,
             config: EvalConfig) -> list[tuple[str, tuple[int, ...]]]:
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
