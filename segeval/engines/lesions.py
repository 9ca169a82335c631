"""Lesion-wise metrics of one case, per class or region, under the same mask rules that
count it.

The case's label maps come from :class:`segeval.engines.distances.CaseMaps` (one call to
:func:`interpret.label_maps`, shared with the boundary metrics); each class's two boolean
masks go to :mod:`segeval.core.lesions` (label both sides once, one overlap table, every
metric read from it).  Values travel beside the counts, per case x class; the per-lesion
records travel with them for ``--lesions``.

A class absent from both masks of a case is not computed here: :func:`both_empty_values`
gives its values (no lesion on either side), filled in when the report is built.
"""

from __future__ import annotations

from functools import partial
from typing import Any

import numpy as np

from segeval.config import EvalConfig
from segeval.core.boundary import union_box
from segeval.core.lesions import (
    LesionOptions,
    lesion_hd95,
    lesion_labels,
    lesion_options,
    lesion_rows,
    lesion_scores,
    lesion_table,
)
from segeval.engines.distances import CaseMaps, ClassDistances
from segeval.errors import E_BAD_DIMENSIONS, CaseError

# table metrics: everything lesion_scores gives (all of them are computed together, so the
# counts behind the pooled lesion F1 and RQ are always there)
TABLE_METRICS: tuple[str, ...] = (
    "n_ref_lesions", "n_pred_lesions", "lesion_tp", "lesion_fp", "lesion_fn", "pq_tp",
    "pq_fp", "pq_fn", "lesion_f1", "lesion_dice", "lesion_count_diff", "rq", "sq",
    "sq_dice", "pq", "fp_volume_ml", "fn_volume_ml",
)


def options_of(config: EvalConfig) -> LesionOptions:
    """The :class:`LesionOptions` of a config's lesion fields (a preset is already expanded
    into them by :meth:`EvalConfig.create`)."""
    both_empty = config.lesion_hd95_both_empty
    return lesion_options(
        connectivity=config.connectivity, connectivity_2d=config.connectivity_2d,
        dilation=config.lesion_dilation, min_ref_volume_mm3=config.lesion_min_volume,
        match_iou=config.lesion_match_iou, match_inclusive=config.lesion_match_inclusive,
        empty=config.lesion_empty or config.empty, sq_unmatched=config.lesion_sq_unmatched,
        hd95_penalty=config.lesion_hd95_penalty,
        hd95_both_empty=float("nan") if both_empty is None else both_empty,
        surface=config.lesion_surface,
        pooled_percentile=config.hd_percentile_mode == "pooled",
    )


def lesions_of(maps: CaseMaps, config: EvalConfig, distances: ClassDistances | None = None,
               ) -> tuple[dict[str, dict[str, float]], list[dict[str, Any]]]:
    """``({class key: {metric: value}}, per-lesion records)`` of one case.

    Every table metric is computed (cheap once the table exists); ``lesion_hd95`` only when
    asked for, the HD95 of a class that is one lesion per side (every predicted lesion touching
    the one reference lesion) from ``distances`` (default: a new :class:`ClassDistances` of
    ``maps``), which the boundary metrics of the same case then read instead of computing the
    same two boundaries and queries again.  Each record is
    :func:`segeval.core.lesions.lesion_rows`' with ``class``.
    """
    options = options_of(config)
    if options.connectivity_for(maps.reference.ndim) == "18" and maps.reference.ndim != 3:
        raise CaseError(E_BAD_DIMENSIONS, f"--connectivity 18 is defined for 3-D images; this "
                        f"case has {maps.reference.ndim} axes",
                        hint="use --connectivity face or full")
    with_hd95 = "lesion_hd95" in config.lesion_metrics
    if with_hd95 and distances is None:
        distances = ClassDistances(maps)
    classes = maps.classes(config)
    image_shape = maps.reference.shape
    maps, origin = _cropped(maps, options.dilation,
                            any(0 in members for _, members in classes))
    if distances is not None and origin is not None:
        distances.use_crop(maps, origin)
    values: dict[str, dict[str, float]] = {}
    rows: list[dict[str, Any]] = []
    for key, members in classes:
        reference, prediction = maps.masks(members)
        labels = lesion_labels(reference, prediction, options)
        table = lesion_table(reference, prediction, maps.spacing, options, labels,
                             image_shape=image_shape)
        scores: dict[str, Any] = lesion_scores(table, options, TABLE_METRICS)
        if with_hd95:
            assert distances is not None
            whole = partial(distances, members, options.surface)
            scores["lesion_hd95"] = lesion_hd95(labels, table, options, whole)[0]
        values[key] = scores
        rows.extend({"class": key, **row} for row in lesion_rows(table, options))
    return values, rows


def _cropped(maps: CaseMaps, margin: int, whole: bool
             ) -> tuple[CaseMaps, tuple[int, ...] | None]:
    """The case's maps in the bounding box of their nonzero voxels grown by ``margin`` voxels
    (clipped to the image), copied into C order (``whole``: the whole image, copied), and the
    box's first voxel (None for the whole image).

    Every class without label 0 lies inside that box, and :func:`lesion_labels` crops each
    class to its own box grown by the same margin (the dilation), which lies inside this one:
    the same arrays are labelled, so ids, their raster numbering and every value are those of
    the whole image (the image's shape is kept apart for the HD95 penalty's diagonal).  The
    C-order copy, made once per side, replaces the per-class copies and strided scans that
    Fortran-ordered NIfTI arrays cost in every mask, label and table step."""
    found = None if whole else union_box(maps.reference, maps.prediction)
    if found is not None:
        box = tuple(slice(max(s.start - margin, 0), min(s.stop + margin, n))
                    for s, n in zip(found, maps.reference.shape, strict=True))
    else:
        box = tuple(slice(None) for _ in maps.reference.shape)
    valid = None if maps.valid is None else _c_order(maps.valid[box])
    cropped = CaseMaps(_c_order(maps.reference[box]), _c_order(maps.prediction[box]), valid,
                       maps.spacing, image_shape=maps.image_shape)
    return cropped, None if found is None else tuple(s.start for s in box)


def _c_order(array: np.ndarray) -> np.ndarray:
    """A C-contiguous copy of ``array`` (itself when it is one already).

    A Fortran-ordered volume is copied a few last-axis planes at a time: numpy's one-pass
    transposing copy strides through memory and takes 14 ms on a 141x200x118 uint8 crop,
    these slabs 3 ms (slab widths measured for 1-, 2-, 4- and 8-byte items)."""
    if array.flags.c_contiguous:
        return array
    if array.ndim < 2 or array.strides[0] >= array.strides[-1]:  # not Fortran-like
        return np.ascontiguousarray(array)
    out = np.empty(array.shape, dtype=array.dtype)
    step = 16 if array.itemsize <= 2 else 8
    for start in range(0, array.shape[-1], step):
        out[..., start:start + step] = array[..., start:start + step]
    return out


def both_empty_values(config: EvalConfig, ndim: int = 3) -> dict[str, float]:
    """The values of a class with no lesion on either side (every count 0, the ratios by the
    empty rule, the volumes 0, ``lesion_hd95`` by ``lesion_hd95_both_empty``)."""
    options = options_of(config)
    empty = np.zeros((1,) * ndim, dtype=bool)
    labels = lesion_labels(empty, empty, options)
    table = lesion_table(empty, empty, None, options, labels)
    values: dict[str, Any] = lesion_scores(table, options, TABLE_METRICS)
    if "lesion_hd95" in config.lesion_metrics:
        values["lesion_hd95"] = lesion_hd95(labels, table, options)[0]
    return values
