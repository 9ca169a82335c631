"""Boundary metrics (segeval.core.boundary): hand-worked cases, a brute-force oracle, and
agreement with MONAI (voxel convention), MedPy (pooled percentile) and DeepMind's
surface-distance (surfel convention)."""

from __future__ import annotations

import itertools
import math
import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

import segeval
from segeval.core import boundary as bd
from segeval.core.boundary import boundary_scores, nsd_terms, surface_distances

ALL = ("hd", "hd95", "assd", "masd", "nsd")


def scores(reference, prediction, spacing=None, surface="voxel", **options):
    distances = surface_distances(reference, prediction, spacing, surface)
    return boundary_scores(distances, ALL, **options)


# ---------------------------------------------------------------- hand-worked, voxel convention

@pytest.mark.parametrize("k", [1, 2, 3])
@pytest.mark.parametrize("column_spacing", [1.0, 0.5, 2.5])
def test_square_shifted_by_k_voxels(k, column_spacing):
    # a 12x12 square shifted k columns: every boundary voxel of one is at most k columns from
    # the other's boundary (rows of the top/bottom edges are >= 5 rows away from mid-edge)
    reference = np.zeros((30, 30), bool)
    reference[5:17, 5:17] = True
    prediction = np.roll(reference, k, axis=1)
    values = scores(reference, prediction, (1.0, column_spacing))
    assert values["hd"] == pytest.approx(k * column_spacing)


def test_band_touching_the_image_border_anisotropic():
    # two-row bands across the whole width W (touching left/right borders), shifted one row:
    # boundaries = every voxel (each has a row neighbour outside); per direction W zeros and
    # W distances of one row (2.0 mm)
    width, s0 = 10, 2.0
    reference = np.zeros((8, width), bool)
    reference[2:4] = True
    prediction = np.zeros_like(reference)
    prediction[3:5] = True
    values = scores(reference, prediction, (s0, 0.3), tolerance=1.9)
    assert values["hd"] == pytest.approx(s0)
    assert values["hd95"] == pytest.approx(s0)  # 95th pct of W zeros and W s0: position 18.05
    assert values["assd"] == pytest.approx(s0 / 2)
    assert values["masd"] == pytest.approx(s0 / 2)
    assert values["nsd"] == pytest.approx(0.5)  # only the shared row is within 1.9 mm
    assert scores(reference, prediction, (s0, 0.3), tolerance=2.0)["nsd"] == 1.0  # inclusive


def test_single_voxels_anisotropic():
    reference = np.zeros((8, 9), bool)
    prediction = np.zeros_like(reference)
    reference[2, 3] = True
    prediction[5, 7] = True
    expected = math.sqrt((3 * 2.0) ** 2 + (4 * 0.5) ** 2)  # sqrt(40)
    values = scores(reference, prediction, (2.0, 0.5), tolerance=6.0)
    for name in ("hd", "hd95", "assd", "masd"):
        assert values[name] == pytest.approx(expected)
    assert values["nsd"] == 0.0
    assert scores(reference, prediction, (2.0, 0.5), tolerance=6.33)["nsd"] == 1.0


def test_hollow_shape_counts_its_inner_boundary():
    # reference: 7x7 square with a one-voxel hole; prediction: the full square.
    # ∂P = outer ring (24); ∂G = outer ring + the 4 face-neighbours of the hole (28), those 4
    # are 2 voxels from the outer ring.
    prediction = np.zeros((11, 11), bool)
    prediction[2:9, 2:9] = True
    reference = prediction.copy()
    reference[5, 5] = False
    values = scores(reference, prediction, tolerance=1.0)
    assert values["hd"] == 2.0
    assert values["hd95"] == 2.0  # G->P: 24 zeros + 4 twos, position 25.65 -> 2
    assert values["assd"] == pytest.approx(8 / 52)
    assert values["masd"] == pytest.approx((0 + 8 / 28) / 2)
    assert values["nsd"] == pytest.approx(48 / 52)
    assert nsd_terms(surface_distances(reference, prediction), 1.0) == (48.0, 52.0)
    pooled = boundary_scores(surface_distances(reference, prediction), ["hd95"],
                             pooled_percentile=True)
    assert pooled["hd95"] == 2.0  # 48 zeros + 4 twos: position 48.45 -> 2


def test_hollow_cube_3d():
    # 7x7x7 cube with a 1-voxel cavity: the cavity's 6 face-neighbours are boundary, 2 voxels
    # from the outer surface; the outer surface has 7^3 - 5^3 = 218 voxels
    prediction = np.zeros((11, 11, 11), bool)
    prediction[2:9, 2:9, 2:9] = True
    reference = prediction.copy()
    reference[5, 5, 5] = False
    values = scores(reference, prediction, (1.5, 1.5, 1.5), tolerance=1.5)
    assert values["hd"] == pytest.approx(3.0)
    assert values["assd"] == pytest.approx(6 * 3.0 / (218 + 224))
    assert values["masd"] == pytest.approx((0 + 6 * 3.0 / 224) / 2)
    assert values["nsd"] == pytest.approx(436 / 442)


def test_identical_masks_are_perfect():
    mask = np.zeros((6, 7, 5), bool)
    mask[1:4, 2:6, 1:3] = True
    values = scores(mask, mask, (0.8, 1.0, 3.0))
    assert values == {"hd": 0.0, "hd95": 0.0, "assd": 0.0, "masd": 0.0, "nsd": 1.0}


def test_percentile_names():
    assert bd.hd_percentile("hd95") == 95.0
    assert bd.hd_percentile("hd99.5") == 99.5
    assert bd.hd_percentile("hd") is None and bd.hd_percentile("hd100") is None
    assert bd.is_boundary_metric("hd90") and not bd.is_boundary_metric("dice")
    with pytest.raises(ValueError):
        boundary_scores(surface_distances(np.ones((2, 2)), np.ones((2, 2))), ["dice"])


# ---------------------------------------------------------------- empty masks

def test_both_empty_is_undefined_for_every_metric():
    empty = np.zeros((5, 6), bool)
    for surface in ("voxel", "surfel"):
        values = scores(empty, empty, surface=surface)
        assert all(math.isnan(v) for v in values.values())


@pytest.mark.parametrize("surface", ["voxel", "surfel"])
@pytest.mark.parametrize("missing", ["prediction", "reference"])
def test_one_empty_gets_the_image_diagonal_and_nsd_zero(surface, missing):
    mask = np.zeros((4, 6, 5), bool)
    mask[1:3, 2:4, 2] = True
    empty = np.zeros_like(mask)
    pair = (mask, empty) if missing == "prediction" else (empty, mask)
    spacing = (2.0, 0.5, 1.0)
    diagonal = math.sqrt((4 * 2.0) ** 2 + (6 * 0.5) ** 2 + (5 * 1.0) ** 2)
    values = scores(*pair, spacing, surface)
    for name in ("hd", "hd95", "assd", "masd"):
        assert values[name] == pytest.approx(diagonal)
    assert values["nsd"] == 0.0
    assert math.isnan(scores(*pair, spacing, surface, empty_distance="nan")["hd95"])
    assert scores(*pair, spacing, surface, empty_distance="inf")["assd"] == math.inf
    assert scores(*pair, spacing, surface, empty_distance=7.5)["masd"] == 7.5
    assert scores(*pair, spacing, surface, empty_distance="nan")["nsd"] == 0.0


def test_bad_arguments():
    mask = np.ones((3, 3), bool)
    with pytest.raises(ValueError, match="shapes differ"):
        surface_distances(mask, np.ones((3, 4), bool))
    with pytest.raises(ValueError, match="spacing"):
        surface_distances(mask, mask, (1.0, 0.0))
    with pytest.raises(ValueError, match="surfel"):
        surface_distances(np.ones(4, bool), np.ones(4, bool), surface="surfel")
    with pytest.raises(ValueError, match="empty distance"):
        bd.empty_distance_value("worst", 1.0)
    with pytest.raises(ValueError, match="empty distance"):
        bd.empty_distance_value(-1.0, 1.0)


def test_slabs_give_the_same_answer_as_one_piece(monkeypatch):
    rng = np.random.default_rng(3)
    reference = rng.random((23, 9, 7)) > 0.6
    prediction = rng.random((23, 9, 7)) > 0.6
    for surface in ("voxel", "surfel"):
        whole = scores(reference, prediction, (1.0, 0.7, 2.0), surface)
        monkeypatch.setattr(bd, "_SLAB_VOXELS", 50)  # a few rows per slab
        sliced = scores(reference, prediction, (1.0, 0.7, 2.0), surface)
        monkeypatch.undo()
        assert sliced == whole


# ---------------------------------------------------------------- hand-worked, surfel convention

def test_surfel_single_voxel_area_is_the_octahedron():
    # the 8 corner cells each hold one triangle joining three face midpoints: an octahedron with
    # half-axes a/2, b/2, c/2, each face of area |(bc, ac, ab)| / 8
    a, b, c = 0.7, 1.3, 2.9
    mask = np.zeros((3, 3, 3), bool)
    mask[1, 1, 1] = True
    distances = surface_distances(mask, mask, (a, b, c), "surfel")
    assert distances.ref_size == 8
    assert distances.ref_weights.sum() == pytest.approx(math.sqrt((b * c) ** 2 + (a * c) ** 2
                                                                  + (a * b) ** 2))
    assert boundary_scores(distances, ALL)["nsd"] == 1.0


def test_surfel_single_pixel_shifted_2d():
    # a pixel's contour is a diamond through its 4 corner cells (4 half-diagonals); shifted k
    # rows, each direction has two corners (k-1)·s0 away and two k·s0 away, equal lengths
    s0, s1, k = 1.5, 0.4, 3
    reference = np.zeros((9, 4), bool)
    reference[1, 1] = True
    prediction = np.roll(reference, k, axis=0)
    distances = surface_distances(reference, prediction, (s0, s1), "surfel")
    assert distances.ref_weights.sum() == pytest.approx(2 * math.hypot(s0, s1))
    values = boundary_scores(distances, ALL, tolerance=(k - 1) * s0)
    assert values["hd"] == pytest.approx(k * s0)
    assert values["hd95"] == pytest.approx(k * s0)  # cumulative weights .25 .5 .75 1 -> 4th
    assert values["assd"] == pytest.approx((k - 0.5) * s0)
    assert values["masd"] == pytest.approx((k - 0.5) * s0)
    assert values["nsd"] == pytest.approx(0.5)


def test_surfel_straight_edge_2d():
    # a band across the image: its top contour is a straight line of length W·s1 (cells with
    # two inside corners along axis 0 each contribute s1), plus the half-cells at the borders
    reference = np.zeros((6, 5), bool)
    reference[2:4] = True
    distances = surface_distances(reference, reference, (2.0, 0.5), "surfel")
    # 2 straight edges of 4 interior cells (0.5 each) + 4 end cells (1 inside corner:
    # half diagonal) + the two vertical ends (cells with 2 inside corners along axis 0: 2.0)
    half_diagonal = 0.5 * math.hypot(2.0, 0.5)
    assert distances.ref_weights.sum() == pytest.approx(2 * 4 * 0.5 + 4 * half_diagonal
                                                        + 2 * 2.0)


# ---------------------------------------------------------------- brute-force oracle

def oracle(reference, prediction, spacing, tolerance, q):
    """All-pairs distances between boundary voxels found by explicit neighbour loops."""
    def boundary(mask):
        points = []
        for index in itertools.product(*(range(n) for n in mask.shape)):
            if not mask[index]:
                continue
            for axis, step in itertools.product(range(mask.ndim), (-1, 1)):
                neighbour = list(index)
                neighbour[axis] += step
                if not 0 <= neighbour[axis] < mask.shape[axis] or not mask[tuple(neighbour)]:
                    points.append(index)
                    break
        return np.array(points, dtype=float).reshape(-1, mask.ndim) * np.array(spacing)

    p, g = boundary(prediction), boundary(reference)
    pairwise = np.sqrt(((p[:, None, :] - g[None, :, :]) ** 2).sum(-1))
    p_to_g, g_to_p = pairwise.min(1), pairwise.min(0)
    both = np.concatenate([p_to_g, g_to_p])
    return {
        "hd": both.max(),
        "hd95": max(np.quantile(p_to_g, q / 100), np.quantile(g_to_p, q / 100)),
        "assd": both.mean(),
        "masd": (p_to_g.mean() + g_to_p.mean()) / 2,
        "nsd": ((p_to_g <= tolerance).sum() + (g_to_p <= tolerance).sum()) / both.size,
        "pooled": np.quantile(both, q / 100),
    }


masks = st.one_of(
    arrays(bool, st.tuples(st.integers(1, 7), st.integers(1, 7))),
    arrays(bool, st.tuples(st.integers(1, 5), st.integers(1, 5), st.integers(1, 4))),
)


@settings(max_examples=60, deadline=None)
@given(masks, st.data())
def test_agrees_with_brute_force_oracle(reference, data):
    prediction = data.draw(arrays(bool, reference.shape))
    spacing = data.draw(st.lists(st.sampled_from([0.5, 1.0, 1.7, 3.0]),
                                 min_size=reference.ndim, max_size=reference.ndim))
    if not reference.any() or not prediction.any():
        return  # the empty rules are tested by hand above
    tolerance = data.draw(st.sampled_from([0.0, 1.0, 2.2]))
    expected = oracle(reference, prediction, spacing, tolerance, 90)
    distances = surface_distances(reference, prediction, spacing)
    got = boundary_scores(distances, ("hd", "hd90", "assd", "masd", "nsd"), tolerance=tolerance)
    got["hd95"] = got.pop("hd90")
    for name in ALL:
        assert got[name] == pytest.approx(expected[name], rel=1e-12, abs=1e-12), name
    pooled = boundary_scores(distances, ["hd90"], pooled_percentile=True)["hd90"]
    assert pooled == pytest.approx(expected["pooled"], rel=1e-12, abs=1e-12)


@pytest.mark.parametrize("surface", ["voxel", "surfel"])
@pytest.mark.parametrize("shape, spacing", [((40, 36), (0.9, 1.6)), ((24, 20, 16), (1.2, 0.7, 2.5)),
                                            ((20, 20, 20), (1.0, 1.0, 1.0))])
def test_grid_search_and_tree_give_the_all_pairs_distances(surface, shape, spacing, monkeypatch):
    """Boundary.distances_from: near elements by the grid offsets, far ones (a blob moved far
    off, stray voxels) by the k-d tree; every distance equals the all-pairs minimum, and so
    does the tree alone (the grid's cell budget set to 0)."""
    from segeval.core import boundary as module
    from segeval.core.boundary import boundary_of

    monkeypatch.setattr(module, "_GRID_MIN_ELEMENTS", 0)  # small boundaries take the grid too
    rng = np.random.default_rng(sum(shape))
    reference = np.zeros(shape, bool)
    reference[tuple(slice(2, n // 2) for n in shape)] = True
    prediction = np.roll(reference, 1, axis=0)
    prediction[tuple(slice(n - 4, n - 1) for n in shape)] = True  # far from the reference
    stray = rng.random(shape) < 0.01
    stray[shape[0] // 2:] = False  # stray voxels, none near the far block
    reference |= stray
    ref, pred = (boundary_of(m, spacing, surface) for m in (reference, prediction))
    want = np.sqrt(((pred.points[:, None, :] - ref.points[None, :, :]) ** 2).sum(-1)).min(1)
    found = module._near_on_grid(pred.index, ref.index, ref.spacing)
    assert found is not None
    near, rest = found
    assert 0 < len(rest) < len(pred.points) // 2  # both ways are taken
    got = ref.distances_from(pred)
    assert got == pytest.approx(want, rel=1e-12, abs=0)
    monkeypatch.setattr(module, "_GRID_CELLS", 0)
    assert module._near_on_grid(pred.index, ref.index, ref.spacing) is None
    assert ref.distances_from(pred) == pytest.approx(want, rel=1e-12, abs=0)


@pytest.mark.parametrize("spacing, targets, want", [
    # radius 3 voxels: (3, 3, 0) is in the searched box but 4.24 mm away; the nearest, (4, 0, 0)
    # at 4 mm, is outside it: the grid must leave the point to the tree, not answer 4.24
    ((1.0, 1.0, 1.0), [(14, 10, 10), (13, 13, 10)], 4.0),
    # radius (1, 1, 3) voxels, limit min(2·1, 2·1, 4·0.5) = 2 mm: (1, 1, 3) is in the box but
    # sqrt(1 + 1 + 2.25) = 2.06 mm away; the nearest, (2, 0, 0), is 2 mm away outside it
    ((1.0, 1.0, 0.5), [(11, 11, 13), (12, 10, 10)], 2.0),
    # the same box: (1, 0, 2) is sqrt(1 + 1) = 1.41 mm away, nearer than anything outside it
    ((1.0, 1.0, 0.5), [(11, 10, 12), (12, 10, 10)], math.sqrt(2.0)),
])
def test_grid_search_never_answers_past_its_box(spacing, targets, want, monkeypatch):
    from segeval.core import boundary as module
    from segeval.core.boundary import Boundary

    monkeypatch.setattr(module, "_GRID_MIN_ELEMENTS", 0)  # one element takes the grid too
    monkeypatch.setattr(module, "_GRID_RADIUS", 3)  # the radius the cases are drawn for
    monkeypatch.setattr(module, "_GRID_CELLS_PER_ELEMENT", 1 << 20)  # a grid for 3 elements
    monkeypatch.setattr(module, "_GRID_FIRST_FOUND", 0.0)  # every offset is tried
    sp = np.array(spacing)
    source = np.array([[10, 10, 10]], dtype=np.int32)
    target = np.array(targets, dtype=np.int32)
    boundaries = [Boundary(index * sp, np.ones(len(index)), index, sp)
                  for index in (source, target)]
    found = module._near_on_grid(source, target, sp)
    assert found is not None
    on_grid = len(found[1]) == 0
    assert on_grid == (want < 2.0)  # the last case is found on the grid, the others are not
    assert boundaries[1].distances_from(boundaries[0]).tolist() == [pytest.approx(want, rel=1e-15)]


@pytest.mark.parametrize("spacing, tolerance", [(0.1, 0.3), (0.7, 2.1), (0.6, 1.8)])
@pytest.mark.parametrize("origin", [0, 37])
def test_nsd_counts_an_element_at_exactly_tau(spacing, tolerance, origin, monkeypatch):
    """A square moved 3 voxels: every element is at most 3 voxels = τ from the other boundary
    (the moved side exactly 3), so NSD = 1 by hand, although 3 · 0.1 = 0.30000000000000004 in
    float64; the same from the grid search, the k-d tree alone and any crop origin."""
    from segeval.core import boundary as module
    from segeval.core.boundary import boundary_of, distances_between

    reference = np.zeros((30, 20), bool)
    reference[5:15, 5:15] = True
    prediction = np.roll(reference, 3, axis=0)
    for cells in (module._GRID_CELLS, 0):
        monkeypatch.setattr(module, "_GRID_CELLS", cells)
        ref, pred = (boundary_of(m, (spacing, spacing), origin=(origin, origin))
                     for m in (reference, prediction))
        distances = distances_between(ref, pred, 100.0)
        assert distances.pred_to_ref.max() == pytest.approx(3 * spacing, rel=1e-12)
        assert boundary_scores(distances, ["nsd"], tolerance=tolerance)["nsd"] == 1.0
        # a hair under τ, the elements at exactly 3 voxels are out.  Prediction to reference:
        # its far row (10) and the 4 middle voxels of its near row (nearest: the reference's
        # first row, 3 away; its sides are 4 or more away); the other way the mirror image:
        # 2 · 14 of 72 elements
        below = boundary_scores(distances, ["nsd"], tolerance=tolerance * (1 - 1e-6))["nsd"]
        assert below == pytest.approx((72 - 28) / 72)


def test_grid_search_leaves_hopeless_work_to_the_tree():
    """No grid for a few stray voxels spanning a large box (every source element would be
    scanned by every offset for nothing); the search stops after the first offsets when they
    find under a quarter of the points (two boundaries 6 voxels apart); the distances stay
    the all-pairs minimum either way."""
    from segeval.core import boundary as module
    from segeval.core.boundary import boundary_of

    spacing = (1.0, 1.0, 1.0)
    block = np.zeros((120, 120, 120), bool)
    block[50:70, 50:70, 50:70] = True  # 2,168 boundary voxels
    strays = np.zeros_like(block)
    strays[0, 0, 0] = strays[119, 119, 119] = True  # 2 elements spanning a 2.5 M-cell box
    inner = np.zeros_like(block)
    inner[56:64, 56:64, 56:64] = True  # 296 boundary voxels, 6 inside the block's all round
    ref, stray, core = (boundary_of(m, spacing) for m in (block, strays, inner))
    assert module._near_on_grid(ref.index, stray.index, stray.spacing) is None
    found = module._near_on_grid(core.index, ref.index, ref.spacing)
    assert found is not None and len(found[1]) == core.size  # stopped: all left to the tree
    for target, source in ((stray, ref), (ref, core)):
        want = np.sqrt(((source.points[:, None, :] - target.points[None, :, :]) ** 2)
                       .sum(-1)).min(1)
        assert target.distances_from(source) == pytest.approx(want, rel=1e-12, abs=0)


# ---------------------------------------------------------------- independent implementations

def blobs(seed, shape):
    """Two smooth random masks that stay off the image border."""
    from scipy import ndimage

    rng = np.random.default_rng(seed)
    pair = []
    for _ in range(2):
        mask = ndimage.gaussian_filter(rng.random(shape), 2.5) > 0.5
        keep = np.zeros(shape, bool)
        keep[tuple(slice(1, -1) for _ in shape)] = True
        pair.append(mask & keep)
    return pair


CASES = [(0, (34, 30, 26), (1.2, 0.7, 2.5)), (1, (48, 40), (0.9, 1.6)),
         (2, (30, 32, 20), (1.0, 1.0, 1.0))]


@pytest.mark.parametrize("seed,shape,spacing", CASES)
def test_agrees_with_monai(seed, shape, spacing):
    import torch
    from monai.metrics import (
        compute_average_surface_distance,
        compute_hausdorff_distance,
        compute_surface_dice,
    )

    reference, prediction = blobs(seed, shape)
    assert reference.any() and prediction.any()
    p = torch.tensor(prediction)[None, None].float()
    g = torch.tensor(reference)[None, None].float()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        expected = {
            "hd": compute_hausdorff_distance(p, g, spacing=spacing).item(),
            "hd95": compute_hausdorff_distance(p, g, percentile=95, spacing=spacing).item(),
            "assd": compute_average_surface_distance(p, g, symmetric=True,
                                                     spacing=spacing).item(),
            "masd": (compute_average_surface_distance(p, g, spacing=spacing).item()
                     + compute_average_surface_distance(g, p, spacing=spacing).item()) / 2,
            "nsd": compute_surface_dice(p, g, [1.5], spacing=spacing,
                                        include_background=True).item(),
        }
    got = scores(reference, prediction, spacing, tolerance=1.5)
    for name in ALL:  # MONAI computes in float32 (distances and torch.quantile)
        assert got[name] == pytest.approx(expected[name], rel=1e-5), name


@pytest.mark.parametrize("seed,shape,spacing", CASES)
def test_pooled_percentile_agrees_with_medpy(seed, shape, spacing):
    from medpy.metric import binary

    reference, prediction = blobs(seed, shape)
    distances = surface_distances(reference, prediction, spacing)
    got = boundary_scores(distances, ["hd95", "assd"], pooled_percentile=True)
    assert got["hd95"] == pytest.approx(binary.hd95(prediction, reference, spacing), rel=1e-12)
    assert got["assd"] == pytest.approx(binary.assd(prediction, reference, spacing), rel=1e-12)


@pytest.mark.parametrize("seed,shape,spacing", CASES)
def test_surfel_agrees_with_deepmind(seed, shape, spacing):
    import surface_distance as deepmind

    reference, prediction = blobs(seed, shape)
    theirs = deepmind.compute_surface_distances(reference, prediction, spacing)
    distances = surface_distances(reference, prediction, spacing, "surfel")
    got = boundary_scores(distances, ["hd", "hd95", "masd", "nsd"], tolerance=1.5)
    assert got["hd"] == pytest.approx(deepmind.compute_robust_hausdorff(theirs, 100), rel=1e-12)
    assert got["hd95"] == pytest.approx(deepmind.compute_robust_hausdorff(theirs, 95), rel=1e-12)
    assert got["masd"] == pytest.approx(
        np.mean(deepmind.compute_average_surface_distance(theirs)), rel=1e-12)
    assert got["nsd"] == pytest.approx(
        deepmind.compute_surface_dice_at_tolerance(theirs, 1.5), rel=1e-12)


# ---------------------------------------------------------------- integration

def test_api_reports_boundary_metrics_beside_counts():
    from segeval.api import evaluate

    reference = np.zeros((30, 30), np.uint8)
    reference[5:17, 5:17] = 1
    reference[20:25, 20:25] = 2
    prediction = np.roll(reference, 2, axis=1)
    prediction[prediction == 2] = 0  # class 2 missed
    report = evaluate(prediction, reference, boundary_metrics=list(ALL), spacing=(1.0, 0.5),
                      nsd_tolerance=1.0)
    data = report.to_dict()
    one, two = data["cases"][0]["metrics"]["1"], data["cases"][0]["metrics"]["2"]
    assert one["hd"] == 1.0 and one["tp"] == 120  # 2 columns x 0.5 mm, beside the counts
    assert two["hd"] == pytest.approx(math.hypot(30 * 1.0, 30 * 0.5)) and two["nsd"] == 0.0
    assert data["units"]["hd95"] == "mm"
    assert data["per_class"]["1"]["pooled"]["hd95"] is None  # distances never pool
    assert data["summary"]["micro"]["assd"] is None and data["summary"]["macro"]["nsd"] is None
    assert data["summary"]["macro_imagewise"]["hd"] == pytest.approx((1.0 + two["hd"]) / 2)
    assert data["per_class"]["1"]["median"]["hd"] == 1.0
    assert data["config"]["boundary_metrics"] == list(ALL)


def test_boundary_options_key_the_cache_and_comparability():
    from segeval.config import fields_that_change

    tagged = set(fields_that_change("counts"))
    assert {"boundary_metrics", "nsd_tolerance", "nsd_tolerances", "hd_percentile_mode",
            "surface", "empty_distance", "spacing"} <= tagged


def test_cli_metrics_and_distance_bar(tmp_path):
    import json

    import nibabel as nib
    from typer.testing import CliRunner

    from segeval.commands.app import app

    reference = np.zeros((20, 20, 6), np.uint8)
    reference[4:12, 4:12, 1:5] = 1
    prediction = np.roll(reference, 3, axis=0)
    for folder, array in (("gt", reference), ("pred", prediction)):
        (tmp_path / folder).mkdir()
        nib.save(nib.Nifti1Image(array, np.diag([2.0, 1.0, 1.0, 1.0])),
                 tmp_path / folder / "a.nii.gz")
    out = tmp_path / "r.json"
    args = ["evaluate", str(tmp_path / "pred"), str(tmp_path / "gt"), "--metrics",
            "dice,hd,hd95,assd,nsd", "--nsd-tolerance", "1.5", "--json", str(out), "--quiet"]
    result = CliRunner().invoke(app, [*args, "--fail-under", "hd<=6"])
    assert result.exit_code == 0, result.output
    values = json.loads(out.read_text())["cases"][0]["metrics"]["1"]
    assert values["hd"] == 6.0  # 3 rows of 2 mm, from the reference header
    assert set(values) >= {"dice", "hd", "hd95", "assd", "nsd"}
    failed = CliRunner().invoke(app, [*args, "--fail-under", "hd<=5.9"])
    assert failed.exit_code == 1
    bad = CliRunner().invoke(app, [*args, "--metrics", "hd97x"])
    assert bad.exit_code == 2 and "hd97x" in bad.output


def test_distances_use_the_runs_mask_rules():
    """Boundary metrics see the masks counting sees: a 0/1 prediction against a 0/255
    reference with ``binary``, or a transposed prediction with ``prediction_axes``, scores
    exactly as the plain 0/1 pair (a distance step that read raw labels gave the image
    diagonal here: the reference held no label 1)."""
    reference = np.zeros((12, 10), np.uint8)
    reference[2:8, 3:7] = 1
    prediction = np.roll(reference, 2, axis=0)
    metrics = ("hd", "hd95", "assd", "masd", "nsd")
    plain = segeval.evaluate([prediction], [reference], boundary_metrics=metrics).to_dict()
    encoded = segeval.evaluate([prediction], [reference * 255], binary=True,
                               boundary_metrics=metrics).to_dict()
    transposed = segeval.evaluate([prediction.T.copy()], [reference], prediction_axes="1,0",
                                  boundary_metrics=metrics).to_dict()
    expected = plain["cases"][0]["metrics"]["1"]
    assert expected["hd"] == 2.0  # shifted by two rows
    for report in (encoded, transposed):
        got = report["cases"][0]["metrics"]["1"]
        assert {m: got[m] for m in metrics} == {m: expected[m] for m in metrics}
