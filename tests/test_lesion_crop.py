"""The per-case lesion step crops both label maps once (the nonzero box grown by the dilation)
and copies them into C order; 3-D masks are labelled by connected-components-3d, renumbered
to scipy's raster order.  Every value and every per-lesion record (ids included: raster
order of each lesion's first voxel) must equal the previous computation exactly: here that
computation is rebuilt independently, each class mask on the whole volume with ``np.isin`` and
every mask labelled by ``scipy.ndimage.label``."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.ndimage import generate_binary_structure, label

import segeval.core.lesions as core
from segeval.config import EvalConfig
from segeval.engines.distances import CaseMaps
from segeval.engines.lesions import TABLE_METRICS, lesions_of


def scipy_labels(mask: np.ndarray, connectivity: str = "full") -> tuple[np.ndarray, int]:
    rank = {"face": 1, "18": 2, "full": mask.ndim}[connectivity]
    ids, count = label(mask, structure=generate_binary_structure(mask.ndim, rank))
    return ids.astype(core.smallest_uint(int(count))), int(count)


def whole_volume(prediction: np.ndarray, reference: np.ndarray, config: EvalConfig,
                 spacing: tuple[float, ...], classes: dict[str, tuple[int, ...]]
                 ) -> tuple[dict[str, dict[str, Any]], list[dict[str, Any]]]:
    """The lesion step as it was: whole-volume masks, scipy labels, the core called per class."""
    from segeval.engines.lesions import options_of

    options = options_of(config)
    valid = None if config.ignore_index is None else reference != config.ignore_index
    values: dict[str, dict[str, Any]] = {}
    rows: list[dict[str, Any]] = []
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(core, "label_lesions", scipy_labels)
        for key, members in classes.items():
            ref, pred = np.isin(reference, members), np.isin(prediction, members)
            if valid is not None:
                ref, pred = ref & valid, pred & valid
            labels = core.lesion_labels(ref, pred, options)
            table = core.lesion_table(ref, pred, spacing, options, labels)
            values[key] = dict(core.lesion_scores(table, options, TABLE_METRICS))
            if "lesion_hd95" in config.lesion_metrics:
                values[key]["lesion_hd95"] = core.lesion_hd95(labels, table, options)[0]
            rows.extend({"class": key, **row} for row in core.lesion_rows(table, options))
    return values, rows


def lone(rows: list[dict], key: str) -> bool:
    """Class ``key`` is one reference lesion touched by every predicted lesion."""
    sides = [row for row in rows if row["class"] == key]
    return sum(row["side"] == "reference" for row in sides) == 1 and all(
        row["touching"] for row in sides if row["side"] == "prediction")


def same(got: tuple[dict, list], want: tuple[dict, list]) -> None:
    assert got[0].keys() == want[0].keys()
    for key, metrics in want[0].items():
        assert got[0][key].keys() == metrics.keys()
        for metric, value in metrics.items():
            other = got[0][key][metric]
            if metric == "lesion_hd95" and lone(want[1], key):
                # such a class takes the class's own boundary distances, measured from
                # whole-image positions, not from the lesion's box: the same distances up to
                # rounding in the last bits of the positions
                assert other == pytest.approx(value, rel=1e-12, abs=0), (key, metric)
                continue
            assert (isinstance(value, float) and math.isnan(value) and math.isnan(other)) \
                or (other == value and type(other) is type(value)), (key, metric, other, value)
    assert got[1] == want[1]


def volume(rng: np.random.Generator, shape: tuple[int, ...], labels: int, density: float,
           fortran: bool, margin: int) -> np.ndarray:
    """Random blobs of labels 1..labels; ``margin`` 0 lets them touch the image border."""
    out = np.zeros(shape, np.uint8)
    inner = tuple(slice(margin, n - margin) for n in shape)
    blobs = rng.integers(1, labels + 1, size=out[inner].shape)
    out[inner] = blobs * (rng.random(out[inner].shape) < density)
    return np.asfortranarray(out) if fortran else out


REGIONS = (("WT", (1, 2, 3)), ("TC", (1, 3)), ("ET", (3,)))


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 100_000), fortran=st.booleans(), margin=st.sampled_from([0, 1, 4]),
       preset=st.sampled_from([None, "brats2023-gli", "brats2023-met", "panoptica", "autopet",
                               "isles22"]),
       empty=st.sampled_from([None, "reference", "prediction", "both"]),
       ndim=st.sampled_from([2, 3, 3]))
def test_cropped_step_equals_the_whole_volume(seed: int, fortran: bool, margin: int,
                                              preset: str | None, empty: str | None,
                                              ndim: int) -> None:
    rng = np.random.default_rng(seed)
    shape = (17, 14, 11)[:ndim] if ndim == 3 else (23, 19)
    density = float(rng.uniform(0.05, 0.35))
    reference = volume(rng, shape, 3, density, fortran, margin)
    prediction = volume(rng, shape, 3, density, fortran, margin)
    if empty in ("reference", "both"):
        reference[...] = 0
    if empty in ("prediction", "both"):
        prediction[...] = 0
    spacing = (0.9, 1.3, 2.5)[:ndim]  # anisotropic; brats2023's 50 mm³ filter drops some
    if preset == "autopet" and ndim == 2:
        preset = None  # 18-connectivity is 3-D only
    options: dict[str, Any] = {"lesion_preset": preset} if preset else {}
    config = EvalConfig.create(regions=REGIONS, lesion_metrics=list(core.LESION_METRICS),
                               **options)
    got = lesions_of(CaseMaps.read(prediction, reference, config, spacing), config)
    same(got, whole_volume(prediction, reference, config, spacing, dict(REGIONS)))


@pytest.mark.parametrize("options, classes", [
    ({"regions": {"BG+1": [0, 1], "two": [2]}}, {"BG+1": (0, 1), "two": (2,)}),  # label 0
    ({"include_background": True}, {"0": (0,), "1": (1,), "2": (2,)}),
    ({"labels": [1, 2, 5]}, {"1": (1,), "2": (2,)}),
    ({"ignore_index": 2}, {"1": (1,)}),
    ({"lesion_dilation": 2, "connectivity": "face"}, {"1": (1,), "2": (2,)}),
])
def test_background_labels_ignore_and_dilation(options: dict, classes: dict) -> None:
    rng = np.random.default_rng(7)
    reference = volume(rng, (15, 12, 9), 2, 0.2, True, 2)
    prediction = volume(rng, (15, 12, 9), 2, 0.2, False, 3)
    config = EvalConfig.create(lesion_metrics=list(core.LESION_METRICS), **options)
    spacing = (1.0, 0.5, 3.0)
    same(lesions_of(CaseMaps.read(prediction, reference, config, spacing), config),
         whole_volume(prediction, reference, config, spacing, classes))


def test_dilation_near_the_box_edge_keeps_the_whole_image_numbering() -> None:
    """Two reference lesions whose dilated regions start in one order in the whole image and
    in the other order inside the nonzero box (A's region starts 3 rows above the box, B's
    only 2, but inside the box B's starts at column 0): the crop's dilation margin keeps the
    whole image's ids."""
    reference = np.zeros((12, 12, 12), np.uint8)
    reference[4, 9, 9] = 1  # A
    reference[5, 0, 0] = 1  # B
    prediction = np.zeros_like(reference)
    prediction[5, 1, 1] = 1
    config = EvalConfig.create(lesion_metrics=list(core.LESION_METRICS), lesion_dilation=3)
    spacing = (1.0, 1.0, 1.0)
    got = lesions_of(CaseMaps.read(prediction, reference, config, spacing), config)
    same(got, whole_volume(prediction, reference, config, spacing, {"1": (1,)}))
    lesion_b = [r for r in got[1] if r["side"] == "reference" and r["touching"]]
    assert [r["lesion"] for r in lesion_b] == [2]  # B is second, as in the whole image


@settings(max_examples=200, deadline=None)
@given(seed=st.integers(0, 10**6), ndim=st.sampled_from([1, 2, 3, 3, 3, 4]),
       connectivity=st.sampled_from(["face", "18", "full"]), fortran=st.booleans())
def test_labels_and_their_numbering_equal_scipy(seed: int, ndim: int, connectivity: str,
                                                 fortran: bool) -> None:
    if connectivity == "18" and ndim != 3:
        return
    rng = np.random.default_rng(seed)
    shape = tuple(int(n) for n in rng.integers(1, 13 if ndim < 4 else 5, ndim))
    mask = rng.random(shape) < rng.uniform(0.05, 0.8)
    if fortran:
        mask = np.asfortranarray(mask)
    want, count = scipy_labels(mask, connectivity)
    got, n = core.label_lesions(mask, connectivity)  # type: ignore[arg-type]
    assert n == count and got.dtype == want.dtype and np.array_equal(got, want)


def test_many_lesions_out_of_cc3d_order_are_renumbered() -> None:
    """A 3-D image whose components connected-components-3d numbers out of raster order."""
    rng = np.random.default_rng(0)
    mask = rng.random((40, 30, 20)) < 0.3  # hundreds of components, many merging late
    want, count = scipy_labels(mask, "face")
    got, n = core.label_lesions(mask, "face")
    assert count > 255 and n == count and got.dtype == np.uint16
    assert np.array_equal(got, want)


def test_renumbering_restores_raster_order_from_any_permutation() -> None:
    """connected-components-3d's numbering is its union-find's (in 2-D it differs from raster
    order; in 3-D it has matched in every case tried): whatever order it gives, the ids are
    renumbered to the raster order of each component's first voxel."""
    rng = np.random.default_rng(1)
    mask = rng.random((9, 8, 7)) < 0.3
    want, count = scipy_labels(mask, "face")
    shuffled = np.concatenate([[0], rng.permutation(count) + 1]).astype(np.uint32)[want]
    got, n = core._raster_numbered(mask, shuffled, count)
    assert n == count > 5 and np.array_equal(got, want) and got.dtype == want.dtype


def per_lesion_hd95(labels: core.LesionLabels, table: core.LesionTable,
                    options: core.LesionOptions) -> list[float]:
    """Each reference lesion's HD95 from the lesion and np.isin of its partners, both cut to
    their union box (positions are measured from the box: the pair's own), with no shortcut
    for a lone lesion or an all-touching prediction."""
    from segeval.core.boundary import boundary_scores, image_diagonal, surface_distances, union_box

    penalty = options.hd95_penalty
    if penalty is None:
        penalty = image_diagonal(table.shape, table.spacing)
    out = []
    for i in range(table.n_ref):
        partners = table.pair_pred[table.pair_ref == i] + 1
        if len(partners) == 0:
            out.append(penalty)
            continue
        lesion, union = labels.reference == i + 1, np.isin(labels.prediction, partners)
        box = union_box(lesion, union)
        d = surface_distances(lesion[box], union[box], table.spacing, options.surface)
        out.append(boundary_scores(d, ("hd95",),
                                   pooled_percentile=options.pooled_percentile)["hd95"])
    return out


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 10**6), surface=st.sampled_from(["voxel", "surfel"]),
       dilation=st.sampled_from([0, 0, 1, 3]), density=st.sampled_from([0.03, 0.1, 0.3, 0.6]))
def test_lesion_hd95_equals_whole_array_masks(seed: int, surface: str, dilation: int,
                                              density: float) -> None:
    rng = np.random.default_rng(seed)
    reference = rng.random((13, 11, 9)) < density  # dense: one lesion touched by all
    prediction = np.roll(reference, 1, axis=int(rng.integers(3))) \
        | (rng.random(reference.shape) < density / 4)
    # away from the border, so the dilation margin moves the labels' box off the pair's box
    reference, prediction = np.pad(reference, 4), np.pad(prediction, 4)
    options = core.lesion_options(surface=surface, dilation=dilation)
    labels = core.lesion_labels(reference, prediction, options)
    table = core.lesion_table(reference, prediction, (0.7, 1.1, 0.3), options, labels)
    _, per_lesion = core.lesion_hd95(labels, table, options)
    assert per_lesion.tolist() == per_lesion_hd95(labels, table, options)


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.int32, np.int64, bool])
@pytest.mark.parametrize("fortran", [True, False])
def test_c_order_copy_equals_numpy(dtype: type, fortran: bool) -> None:
    from segeval.engines.lesions import _c_order

    rng = np.random.default_rng(0)
    whole = rng.integers(0, 5, (23, 19, 37)).astype(dtype)
    whole = np.asfortranarray(whole) if fortran else whole
    for view in (whole, whole[2:21, 3:17, 1:36], whole[::2, :, 5:6], whole[:, 4], whole[3, 2]):
        copy = _c_order(view)
        assert copy.flags.c_contiguous and copy.dtype == view.dtype
        assert np.array_equal(copy, view)


class _FailingCC3D:
    """A stand-in for connected-components-3d that fails as 4.1.1 does on some shapes."""

    calls = 0

    @classmethod
    def connected_components(cls, *args: Any, **kwargs: Any) -> Any:
        cls.calls += 1
        raise RuntimeError("maximum length exception")


@pytest.mark.parametrize("module", [None, _FailingCC3D])
def test_without_cc3d_or_when_it_fails_scipy_labels(monkeypatch: pytest.MonkeyPatch,
                                                    module: Any) -> None:
    monkeypatch.setattr(core, "_cc3d", lambda: module)
    mask = np.random.default_rng(2).random((9, 8, 7)) < 0.4
    calls = _FailingCC3D.calls
    got, n = core.label_lesions(mask, "18")
    want, count = scipy_labels(mask, "18")
    assert n == count and np.array_equal(got, want) and got.dtype == want.dtype
    assert _FailingCC3D.calls == calls + (module is not None)


def test_grouped_pairs_equal_a_scan_per_lesion():
    """lesion_rows' 'touching' lists come from one sort of the pairs (it scanned every pair
    once per lesion, quadratic: 20 s for 256k lesions); the lists equal that scan."""
    from segeval.core.lesions import _grouped

    rng = np.random.default_rng(5)
    pairs = np.unique(rng.integers(0, 40, size=(300, 2)), axis=0)  # sorted by (ref, pred)
    ref, pred = pairs[:, 0], pairs[:, 1]
    for keys, values, n in ((ref, pred, 45), (pred, ref, 45)):
        got = _grouped(keys, values, n)
        assert len(got) == n
        for k in range(n):
            assert got[k].tolist() == sorted(values[keys == k].tolist())
