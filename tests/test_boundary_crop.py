"""The per-case distance step crops both label maps to the bounding box of their nonzero voxels
before building the class masks.  The values must equal the uncropped computation exactly:
here the independent path builds every class mask on the whole volume with ``np.isin`` (as the
step did before cropping) and calls the core directly."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from segeval.config import EvalConfig
from segeval.core.boundary import boundary_scores, surface_distances
from segeval.engines.distances import case_distances

METRICS = ("hd", "hd95", "assd", "masd", "nsd")


def uncropped(prediction: np.ndarray, reference: np.ndarray, config: EvalConfig,
              spacing: tuple[float, ...], classes: dict[str, tuple[int, ...]]
              ) -> dict[str, dict[str, float]]:
    valid = None if config.ignore_index is None else reference != config.ignore_index
    out = {}
    for key, members in classes.items():
        ref, pred = np.isin(reference, members), np.isin(prediction, members)
        if valid is not None:
            ref, pred = ref & valid, pred & valid
        d = surface_distances(ref, pred, spacing, config.surface)
        out[key] = boundary_scores(d, METRICS, tolerance=config.tolerance_for(key),
                                   empty_distance=config.empty_distance)
    return out


def same(a: dict[str, dict[str, float]], b: dict[str, dict[str, float]]) -> None:
    assert a.keys() == b.keys()
    for key in a:
        for metric in METRICS:
            x, y = a[key][metric], b[key][metric]
            assert (math.isnan(x) and math.isnan(y)) or x == y, (key, metric, x, y)


def volume(seed: int, shape: tuple[int, ...], labels: int, fortran: bool) -> np.ndarray:
    """Random blobs of labels 1..labels inside a sub-box (so the crop is smaller)."""
    rng = np.random.default_rng(seed)
    out = np.zeros(shape, np.uint8)
    inner = tuple(slice(2, n - 3) for n in shape)
    out[inner] = rng.integers(0, labels + 1, size=out[inner].shape) * (
        rng.random(out[inner].shape) < 0.4)
    return np.asfortranarray(out) if fortran else out


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10_000), fortran=st.booleans(),
       surface=st.sampled_from(["voxel", "surfel"]))
def test_crop_equals_whole_volume_per_class(seed: int, fortran: bool, surface: str) -> None:
    reference = volume(seed, (12, 10, 9), 3, fortran)
    prediction = volume(seed + 1, (12, 10, 9), 3, fortran)
    spacing = (0.8, 1.1, 1.5)
    config = EvalConfig.create(boundary_metrics=list(METRICS), surface=surface)
    present = sorted((set(np.unique(reference)) | set(np.unique(prediction))) - {0})
    expected = uncropped(prediction, reference, config, spacing,
                         {str(k): (int(k),) for k in present})
    same(case_distances(prediction, reference, config, spacing), expected)


@pytest.mark.parametrize("options, classes", [
    ({"include_background": True}, {"0": (0,), "1": (1,), "2": (2,)}),
    ({"regions": {"both": [1, 2]}}, {"both": (1, 2)}),
    ({"labels": [1, 2, 5]}, {"1": (1,), "2": (2,)}),
    ({"ignore_index": 2}, {"1": (1,)}),
])
def test_crop_with_background_regions_labels_and_ignore(options: dict, classes: dict) -> None:
    reference = volume(3, (14, 11), 2, False)
    prediction = volume(4, (14, 11), 2, True)
    config = EvalConfig.create(boundary_metrics=list(METRICS), **options)
    same(case_distances(prediction, reference, config, (1.0, 2.0)),
         uncropped(prediction, reference, config, (1.0, 2.0), classes))


def test_one_empty_mask_in_a_crop_still_gets_the_whole_image_diagonal() -> None:
    reference = np.zeros((30, 40), np.uint8)
    reference[5:8, 5:9] = 1
    prediction = np.zeros_like(reference)
    config = EvalConfig.create(boundary_metrics=list(METRICS))
    values = case_distances(prediction, reference, config, (0.5, 2.0))["1"]
    diagonal = math.hypot(30 * 0.5, 40 * 2.0)  # the image's, not the 3x4 crop's
    assert values["hd"] == pytest.approx(diagonal, rel=1e-15)
    assert values["nsd"] == 0.0


def test_image_shape_must_hold_the_masks() -> None:
    with pytest.raises(ValueError, match="cannot hold"):
        surface_distances(np.ones((4, 4), bool), np.ones((4, 4), bool), image_shape=(3, 4))
