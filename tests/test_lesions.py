"""Lesion-wise and instance metrics (segeval.core.lesions): hand-built cases, each preset
against numbers derived from its official definition, and an independent oracle (breadth-first
flood fill and per-lesion loops over Python sets) on random masks."""

from __future__ import annotations

import itertools
import math
from collections import deque
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from segeval.core.lesions import (
    BRATS_REGIONS,
    LESION_PRESETS,
    LesionOptions,
    label_lesions,
    lesion_labels,
    lesion_options,
    lesion_rows,
    lesion_scores,
    lesion_table,
    pooled_lesion_scores,
)


def scores_of(reference, prediction, spacing=None, **options):
    preset = options.pop("preset", None)
    opts = lesion_options(preset, **options)
    return lesion_scores(lesion_table(reference, prediction, spacing, opts), opts)


def same(a: float, b: float) -> bool:
    return (math.isnan(a) and math.isnan(b)) or a == pytest.approx(b, rel=1e-12, abs=1e-12)


def grid(shape, *boxes):
    mask = np.zeros(shape, dtype=bool)
    for box in boxes:
        mask[box] = True
    return mask


# ---------------------------------------------------------------- hand-built cases

def test_lesion_split_in_two_by_the_prediction():
    reference = grid((8, 8), np.s_[1:4, 1:4])                    # one 3x3 lesion, 9 voxels
    prediction = grid((8, 8), np.s_[1:4, 1:2], np.s_[1:4, 3:4])  # its two outer columns
    s = scores_of(reference, prediction)
    assert (s["n_ref_lesions"], s["n_pred_lesions"]) == (1, 2)
    assert (s["lesion_tp"], s["lesion_fp"], s["lesion_fn"]) == (1, 0, 0)
    assert s["lesion_f1"] == 1.0
    assert s["lesion_count_diff"] == 1
    # Dice with the union of both halves: 2·6 / (9 + 6)
    assert s["lesion_dice"] == pytest.approx(12 / 15)
    # each half has IoU 3/9: no panoptic match -> 0 TP, 2 FP, 1 FN
    assert (s["pq_tp"], s["pq_fp"], s["pq_fn"]) == (0, 2, 1)
    assert s["rq"] == 0.0 and s["pq"] == 0.0 and math.isnan(s["sq"])


def test_two_lesions_merged_by_the_prediction():
    reference = grid((6, 9), np.s_[1:3, 1:3], np.s_[1:3, 5:7])  # two 2x2 lesions
    prediction = grid((6, 9), np.s_[1:3, 1:7])                   # one 2x6 bar over both
    s = scores_of(reference, prediction)
    assert (s["lesion_tp"], s["lesion_fp"], s["lesion_fn"]) == (2, 0, 0)
    # each lesion: 2·4 / (4 + 12) = 0.5; mean over 2 lesions + 0 FP
    assert s["lesion_dice"] == pytest.approx(0.5)
    # IoU 4/12 each: no match; the bar is a PQ false positive, both lesions PQ misses
    assert (s["pq_tp"], s["pq_fp"], s["pq_fn"]) == (0, 1, 2)


def test_tiny_false_positive_and_its_volume():
    reference = grid((5, 5, 5), np.s_[0:2, 0:2, 0:2])
    prediction = reference | grid((5, 5, 5), np.s_[4, 4, 4])
    s = scores_of(reference, prediction, spacing=(2.0, 0.5, 3.0))  # 3 mm³ per voxel
    assert (s["lesion_tp"], s["lesion_fp"], s["lesion_fn"]) == (1, 1, 0)
    assert s["lesion_f1"] == pytest.approx(2 / 3)
    assert s["fp_volume_ml"] == pytest.approx(0.003)
    assert s["fn_volume_ml"] == 0.0
    # 1 lesion with Dice 1, plus 1 FP: (1 + 0) / 2
    assert s["lesion_dice"] == pytest.approx(0.5)
    assert (s["pq_tp"], s["pq_fp"], s["pq_fn"]) == (1, 1, 0)
    assert s["sq"] == 1.0 and s["rq"] == pytest.approx(2 / 3) and s["pq"] == pytest.approx(2 / 3)


def test_touching_lesions_are_one_lesion():
    # two squares sharing an edge: one component under every connectivity
    reference = grid((6, 6), np.s_[0:2, 0:2], np.s_[0:2, 2:4])
    for connectivity in ("face", "full"):
        assert lesion_table(reference, reference,
                            options=LesionOptions(connectivity=connectivity)).n_ref == 1


@pytest.mark.parametrize("connectivity,expected", [("face", 2), ("full", 1)])
def test_diagonal_contact_in_2d(connectivity, expected):
    mask = grid((4, 4), np.s_[0:2, 0:2], np.s_[2:4, 2:4])  # corners touch at (1,1)-(2,2)
    assert label_lesions(mask, connectivity)[1] == expected


@pytest.mark.parametrize("connectivity,edge,corner", [
    ("face", 2, 2), ("18", 1, 2), ("full", 1, 1),
])
def test_diagonal_contact_in_3d(connectivity, edge, corner):
    edge_contact = grid((3, 3, 3), np.s_[0, 0, 0], np.s_[1, 1, 0])    # share an edge
    corner_contact = grid((3, 3, 3), np.s_[0, 0, 0], np.s_[1, 1, 1])  # share a corner only
    assert label_lesions(edge_contact, connectivity)[1] == edge
    assert label_lesions(corner_contact, connectivity)[1] == corner


def test_18_connectivity_needs_3d():
    with pytest.raises(ValueError, match="3-D"):
        label_lesions(np.ones((2, 2), dtype=bool), "18")


def test_iou_of_exactly_one_half():
    reference = grid((4, 4), np.s_[0:2, 0:2])   # 4 voxels
    prediction = grid((4, 4), np.s_[0:2, 0])    # 2 of them: IoU 2/4
    strict = scores_of(reference, prediction)
    assert (strict["pq_tp"], strict["pq_fp"], strict["pq_fn"]) == (0, 1, 1)
    assert strict["pq"] == 0.0
    inclusive = scores_of(reference, prediction, match_inclusive=True)
    assert (inclusive["pq_tp"], inclusive["pq_fp"], inclusive["pq_fn"]) == (1, 0, 0)
    assert inclusive["pq"] == 0.5 and inclusive["sq"] == 0.5
    assert inclusive["sq_dice"] == pytest.approx(2 / 3)


def test_a_threshold_below_one_half_is_refused():
    # below 0.5 a lesion could match two others and a matching solver would be needed
    with pytest.raises(ValueError, match="match_iou"):
        LesionOptions(match_iou=0.3)


@pytest.mark.parametrize("rule,expected", [("nan", math.nan), ("one", 1.0), ("zero", 0.0)])
def test_both_empty(rule, expected):
    empty = np.zeros((4, 5), dtype=bool)
    s = scores_of(empty, empty, empty=rule)
    for name in ("n_ref_lesions", "n_pred_lesions", "lesion_tp", "lesion_fp", "lesion_fn",
                 "pq_tp", "pq_fp", "pq_fn", "lesion_count_diff"):
        assert s[name] == 0
    assert s["fp_volume_ml"] == 0.0 and s["fn_volume_ml"] == 0.0
    for name in ("lesion_f1", "lesion_dice", "rq", "sq", "sq_dice", "pq"):
        assert same(s[name], expected), name


def test_empty_reference_with_false_positives():
    reference = np.zeros((5, 5), dtype=bool)
    prediction = grid((5, 5), np.s_[0, 0], np.s_[3:5, 3:5])
    s = scores_of(reference, prediction, empty="one")
    assert (s["lesion_tp"], s["lesion_fp"], s["lesion_fn"]) == (0, 2, 0)
    assert s["lesion_f1"] == 0.0 and s["lesion_dice"] == 0.0
    assert s["rq"] == 0.0 and s["pq"] == 0.0
    assert s["sq"] == 1.0  # nothing matched: the empty rule, here "one"
    assert s["fp_volume_ml"] == pytest.approx(0.005) and s["fn_volume_ml"] == 0.0
    assert s["lesion_count_diff"] == 2


def test_missed_lesion_volume_with_anisotropic_spacing():
    reference = grid((4, 6, 6), np.s_[0:2, 0:3, 0:3], np.s_[3, 5, 5])
    prediction = grid((4, 6, 6), np.s_[3, 5, 5])
    s = scores_of(reference, prediction, spacing=(2.5, 1.0, 0.8))  # 2 mm³ per voxel
    assert (s["lesion_tp"], s["lesion_fn"]) == (1, 1)
    assert s["fn_volume_ml"] == pytest.approx(18 * 2 / 1000)
    # the size filter reads mm³: the lesions are 36 and 2 mm³; at 36 both are dropped and the
    # prediction, touching only a dropped lesion, is ignored (no false positive)
    dropped = scores_of(reference, prediction, spacing=(2.5, 1.0, 0.8), min_ref_volume_mm3=36.0)
    assert [dropped[k] for k in ("n_ref_lesions", "n_pred_lesions", "lesion_fp", "lesion_fn")] \
        == [0, 0, 0, 0]
    kept = scores_of(reference, prediction, spacing=(2.5, 1.0, 0.8), min_ref_volume_mm3=35.9)
    assert [kept[k] for k in ("n_ref_lesions", "n_pred_lesions", "lesion_tp", "lesion_fn")] \
        == [1, 0, 0, 1]
    assert kept["fn_volume_ml"] == pytest.approx(0.036)


def test_component_ids_use_the_smallest_type():
    few = np.zeros((1, 600), dtype=bool)
    few[0, :10:2] = True
    ids, count = label_lesions(few)
    assert count == 5 and ids.dtype == np.uint8
    many = np.zeros((1, 600), dtype=bool)
    many[0, ::2] = True
    ids, count = label_lesions(many)
    assert count == 300 and ids.dtype == np.uint16 and int(ids.max()) == 300


def test_dilation_merges_reference_lesions_and_widens_matching():
    # two single-voxel lesions 3 apart along x: one dilation (18-neighbourhood) each fills the
    # voxels between them -> one lesion; the prediction 1 voxel beside a lesion touches it
    reference = grid((3, 3, 9), np.s_[1, 1, 2], np.s_[1, 1, 5])
    prediction = grid((3, 3, 9), np.s_[1, 1, 8])
    plain = scores_of(reference, prediction)
    assert (plain["n_ref_lesions"], plain["lesion_tp"], plain["lesion_fp"]) == (2, 0, 1)
    merged = scores_of(reference, prediction, dilation=1)
    # dilated lesions: x 1..3 and 4..6 touch -> one lesion of 2 voxels; x=8 is 2 from x=6
    assert (merged["n_ref_lesions"], merged["lesion_tp"], merged["lesion_fp"]) == (1, 0, 1)
    wider = scores_of(reference, prediction, dilation=2)
    # now x 0..7 is the matching region: the prediction at x=8 is still outside
    assert wider["lesion_tp"] == 0
    widest = scores_of(reference, prediction, dilation=3)
    assert (widest["lesion_tp"], widest["lesion_fp"]) == (1, 0)
    # Dice of the 2-voxel lesion with the touching, non-overlapping prediction: 0
    assert widest["lesion_dice"] == 0.0


def test_brats_regions_from_a_label_map():
    labels = np.zeros((4, 10, 10), dtype=np.uint8)
    labels[:, 1:5, 1:5] = 2          # oedema
    labels[1:3, 2:4, 2:4] = 1        # necrosis inside
    labels[1:3, 2:4, 4] = 3          # enhancing rim
    labels[:, 8, 8] = 3              # a separate enhancing spot (4 voxels)
    prediction = labels.copy()
    prediction[:, 8, 8] = 0          # missed
    prediction[0, 0, 9] = 1          # a necrosis false positive (in WT and TC)
    got = {}
    for name, members in BRATS_REGIONS.items():
        ref = np.isin(labels, members)
        pred = np.isin(prediction, members)
        got[name] = scores_of(ref, pred)
    # WT: tumour (found, Dice 1) + spot (missed) ; FP voxel
    assert (got["WT"]["lesion_tp"], got["WT"]["lesion_fn"], got["WT"]["lesion_fp"]) == (1, 1, 1)
    assert got["WT"]["lesion_dice"] == pytest.approx(1 / 3)
    assert got["WT"]["fn_volume_ml"] == pytest.approx(0.004)
    # TC (1, 3): core 2x2x3 block found exactly, spot missed, FP
    assert (got["TC"]["lesion_tp"], got["TC"]["lesion_fn"], got["TC"]["lesion_fp"]) == (1, 1, 1)
    # ET (3): rim found, spot missed, no FP (the FP voxel is label 1)
    assert (got["ET"]["lesion_tp"], got["ET"]["lesion_fn"], got["ET"]["lesion_fp"]) == (1, 1, 0)
    assert got["ET"]["lesion_dice"] == pytest.approx(0.5)
    assert got["ET"]["lesion_f1"] == pytest.approx(2 / 3)


def test_pooled_f1_and_rq_add_counts_not_scores():
    cases = [scores_of(grid((4, 4), np.s_[0, 0]), grid((4, 4), np.s_[0, 0])),
             scores_of(grid((4, 4), np.s_[0, 0], np.s_[3, 3]), np.zeros((4, 4), bool))]
    counts = {k: sum(int(c[k]) for c in cases) for k in
              ("lesion_tp", "lesion_fp", "lesion_fn", "pq_tp", "pq_fp", "pq_fn")}
    pooled = pooled_lesion_scores(counts)
    # TP 1, FN 2: 2/(2+2) = 0.5 (the mean of the two cases' F1 would be (1 + 0)/2 too; check
    # a case where they differ by adding a third case)
    assert pooled["lesion_f1"] == pytest.approx(0.5) and pooled["rq"] == pytest.approx(0.5)
    counts["lesion_tp"] += 3
    assert pooled_lesion_scores(counts)["lesion_f1"] == pytest.approx(8 / 10)


def test_per_lesion_rows():
    reference = grid((8, 8), np.s_[1:4, 1:4], np.s_[6, 0])
    prediction = grid((8, 8), np.s_[1:4, 1:4], np.s_[7, 7])
    rows = lesion_rows(lesion_table(reference, prediction))
    by = {(r["side"], r["lesion"]): r for r in rows}
    assert by[("reference", 1)]["status"] == "tp" and by[("reference", 1)]["match"] == 1
    assert by[("reference", 1)]["iou"] == 1.0 and by[("reference", 1)]["dice"] == 1.0
    assert by[("reference", 2)]["status"] == "fn" and by[("reference", 2)]["touching"] == []
    assert by[("prediction", 2)]["status"] == "fp" and by[("prediction", 2)]["voxels"] == 1
    assert by[("reference", 1)]["volume_mm3"] == 9.0


def test_bad_options_and_inputs():
    with pytest.raises(ValueError, match="preset"):
        lesion_options("brats2099")
    with pytest.raises(ValueError, match="unknown lesion option"):
        lesion_options(conectivity="full")
    with pytest.raises(ValueError, match="connectivity"):
        LesionOptions(connectivity="26")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="shapes differ"):
        lesion_table(np.zeros((2, 2), bool), np.zeros((2, 3), bool))
    with pytest.raises(ValueError, match="spacing"):
        lesion_table(np.zeros((2, 2), bool), np.zeros((2, 2), bool), spacing=(1.0, 0.0))


# ---------------------------------------------------------------- presets vs official rules

def test_isles22_preset():
    # ISLES'22 eval_utils.compute_lesion_f1_score: 26-connectivity, F1 = tp / (tp + (fp+fn)/2),
    # both empty -> 1; compute_absolute_lesion_difference = |#GT clusters - #pred clusters|
    reference = grid((4, 6, 6), np.s_[0, 0, 0], np.s_[1, 1, 1], np.s_[3, 5, 5])  # 2 lesions
    prediction = grid((4, 6, 6), np.s_[0, 0, 0], np.s_[2, 4, 0], np.s_[3, 0, 5])
    s = scores_of(reference, prediction, preset="isles22")
    assert (s["lesion_tp"], s["lesion_fp"], s["lesion_fn"]) == (1, 2, 1)
    assert s["lesion_f1"] == pytest.approx(1 / (1 + 3 / 2))
    assert s["lesion_count_diff"] == 1
    empty = np.zeros((3, 3, 3), bool)
    assert scores_of(empty, empty, preset="isles22")["lesion_f1"] == 1.0


def test_autopet_preset_18_connectivity():
    # autoPET val_script.py: cc3d 18-connectivity; FN volume = voxels of GT components with no
    # predicted voxel, times pixdim product / 1000.  A 6x6x6 block touching the found lesion
    # at one corner only is a separate, missed lesion under 18 (0.216 ml) but not under 26.
    reference = grid((12, 12, 12), np.s_[0:6, 0:6, 0:6], np.s_[6:12, 6:12, 6:12])
    prediction = grid((12, 12, 12), np.s_[0:6, 0:6, 0:6], np.s_[11, 0, 0])
    s = scores_of(reference, prediction, preset="autopet")
    assert s["fn_volume_ml"] == pytest.approx(0.216)
    assert s["fp_volume_ml"] == pytest.approx(0.001)
    assert scores_of(reference, prediction)["fn_volume_ml"] == 0.0  # full (26) connectivity
    empty = np.zeros((3, 3, 3), bool)
    both = scores_of(empty, empty, preset="autopet")
    assert both["fp_volume_ml"] == 0.0 and both["fn_volume_ml"] == 0.0


def test_panoptica_preset():
    # panoptica: scipy's default (face) labelling in 2-D, cc3d 26 in 3-D; a pair matches when
    # IoU >= 0.5 (NaiveThresholdMatching, score_beats_threshold); rq = tp/(tp + (fp+fn)/2)
    reference = grid((4, 4), np.s_[0:2, 0:2], np.s_[2:4, 2:4])  # diagonal contact
    s = scores_of(reference, reference, preset="panoptica")
    assert s["n_ref_lesions"] == 2 and s["pq_tp"] == 2 and s["pq"] == 1.0
    cube = grid((4, 4, 4), np.s_[0:2, 0:2, 0:2], np.s_[2:4, 2:4, 2:4])
    assert scores_of(cube, cube, preset="panoptica")["n_ref_lesions"] == 1
    half = scores_of(grid((4, 4), np.s_[0:2, 0:2]), grid((4, 4), np.s_[0:2, 0]),
                     preset="panoptica")
    assert (half["pq_tp"], half["pq"], half["rq"]) == (1, 0.5, 1.0)
    # no match but lesions present: panoptica's edge-case handler gives sq 0 (default
    # EdgeCaseResult.ZERO for IOU and DSC); no lesion at all: NaN
    apart = scores_of(grid((4, 4), np.s_[0, 0]), grid((4, 4), np.s_[3, 3]), preset="panoptica")
    assert (apart["sq"], apart["sq_dice"], apart["pq"], apart["rq"]) == (0.0, 0.0, 0.0, 0.0)
    empty = scores_of(np.zeros((4, 4), bool), np.zeros((4, 4), bool), preset="panoptica")
    assert math.isnan(empty["sq"]) and math.isnan(empty["pq"]) and math.isnan(empty["rq"])


def brats_case():
    """A 1 mm³ case: a 4x4x4 lesion (64 mm³) half found, a 3x3x3 lesion (27 mm³) touched by a
    prediction 2 voxels away, and a far false positive."""
    reference = grid((20, 20, 20), np.s_[2:6, 2:6, 2:6], np.s_[12:15, 12:15, 12:15])
    prediction = grid((20, 20, 20), np.s_[2:6, 2:6, 2:4],   # half of the big lesion
                      np.s_[12:15, 12:15, 17],              # 2 voxels beyond the small one
                      np.s_[18:20, 0:2, 18:20])             # far away: false positive
    return reference, prediction


def test_brats2023_gli_preset_counts_and_dice():
    # BraTS-2023-Metrics eval.py (BraTS-GLI): dilation 3 (structure (3,2)) to match, GT lesions
    # <= 50 mm³ dropped (and predictions matched to them are not FP), lesion-wise Dice =
    # Σ Dice of kept lesions / (kept + FP), nan -> 1
    reference, prediction = brats_case()
    s = scores_of(reference, prediction, preset="brats2023-gli")
    assert (s["n_ref_lesions"], s["lesion_tp"], s["lesion_fn"], s["lesion_fp"]) == (1, 1, 0, 1)
    # big lesion: 2·32 / (64 + 32); one FP
    assert s["lesion_dice"] == pytest.approx((64 / 96) / 2)
    # without the dilation the bar beyond the small lesion would be a false positive
    assert scores_of(reference, prediction, connectivity="full")["lesion_fp"] == 2
    # MET: 1 dilation cannot reach 2 voxels away, the 27 mm³ lesion is kept and missed
    m = scores_of(reference, prediction, preset="brats2023-met")
    assert (m["n_ref_lesions"], m["lesion_tp"], m["lesion_fn"], m["lesion_fp"]) == (2, 1, 1, 2)
    assert m["lesion_dice"] == pytest.approx((64 / 96) / 4)
    # both empty and "only dropped lesions, no FP" give 1 (0/0 -> nan -> 1)
    empty = np.zeros((8, 8, 8), bool)
    assert scores_of(empty, empty, preset="brats2023-gli")["lesion_dice"] == 1.0
    tiny = grid((8, 8, 8), np.s_[0:2, 0:2, 0:2])
    assert scores_of(tiny, empty, preset="brats2023-gli")["lesion_dice"] == 1.0


def test_presets_are_data():
    assert set(LESION_PRESETS) == {"brats2023-gli", "brats2023-met", "isles22", "autopet",
                                   "panoptica"}
    gli = lesion_options("brats2023-gli")
    assert (gli.dilation, gli.min_ref_volume_mm3, gli.hd95_penalty) == (3, 50.0, 374.0)
    assert lesion_options("brats2023-met").dilation == 1
    assert lesion_options("autopet").connectivity == "18"
    assert lesion_options("brats2023-gli", dilation=5).dilation == 5


# ---------------------------------------------------------------- lesion-wise HD95

def test_lesion_hd95_with_penalties():
    from segeval.core.lesions import lesion_hd95

    reference = grid((9, 9), np.s_[2, 2], np.s_[6:8, 6:8])
    prediction = grid((9, 9), np.s_[2, 3], np.s_[0, 8])
    opts = lesion_options("brats2023-met", surface="voxel")  # 1 dilation: (2,3) touches (2,2)
    labels = lesion_labels(reference, prediction, opts)
    table = lesion_table(reference, prediction, options=opts, labels=labels)
    value, per_lesion = lesion_hd95(labels, table, opts)
    # lesion 1 (1 voxel, 1 mm²) is <= 2 mm² and dropped; lesion 2 (4 voxels) is missed: 374;
    # (2,3) touches only a dropped lesion (ignored), (0,8) is a FP: (374 + 374) / 2
    assert value == pytest.approx(374.0)
    assert per_lesion[1] == 374.0
    # single voxels one apart: HD95 = 1 mm
    assert per_lesion[0] == pytest.approx(1.0)
    kept = lesion_options("brats2023-met", surface="voxel", min_ref_volume_mm3=0.0)
    labels = lesion_labels(reference, prediction, kept)
    table = lesion_table(reference, prediction, options=kept, labels=labels)
    assert lesion_hd95(labels, table, kept)[0] == pytest.approx((1.0 + 374 + 374) / 3)
    empty = np.zeros((4, 4), bool)
    labels = lesion_labels(empty, empty, kept)
    assert lesion_hd95(labels, lesion_table(empty, empty, options=kept, labels=labels),
                       kept)[0] == 0.0


# ---------------------------------------------------------------- independent oracle

def offsets(ndim: int, connectivity: str) -> list[tuple[int, ...]]:
    limit = {"face": 1, "18": 2, "full": ndim}[connectivity]
    return [d for d in itertools.product((-1, 0, 1), repeat=ndim)
            if 0 < sum(map(abs, d)) <= limit]


def flood_fill(voxels: set, shape, steps) -> list[set]:
    """Components of a set of voxel tuples, breadth first, in raster order of first voxel."""
    seen: set = set()
    components = []
    for start in sorted(voxels):
        if start in seen:
            continue
        seen.add(start)
        queue, component = deque([start]), set()
        while queue:
            voxel = queue.popleft()
            component.add(voxel)
            for d in steps:
                n = tuple(a + b for a, b in zip(voxel, d, strict=True))
                if n in voxels and n not in seen:
                    seen.add(n)
                    queue.append(n)
        components.append(component)
    return components


def dilate(voxels: set, shape, times: int) -> set:
    steps = [d for d in itertools.product((-1, 0, 1), repeat=len(shape))
             if sum(map(abs, d)) <= min(2, len(shape))]
    for _ in range(times):
        grown = set()
        for v in voxels:
            for d in steps:
                n = tuple(a + b for a, b in zip(v, d, strict=True))
                if all(0 <= x < s for x, s in zip(n, shape, strict=True)):
                    grown.add(n)
        voxels = grown
    return voxels


def oracle(reference, prediction, spacing, opts: LesionOptions) -> dict:
    shape = reference.shape
    steps = offsets(reference.ndim, opts.connectivity_for(reference.ndim))
    ref_set = {tuple(v) for v in np.argwhere(reference)}
    pred_set = {tuple(v) for v in np.argwhere(prediction)}
    regions = flood_fill(dilate(ref_set, shape, opts.dilation), shape, steps)
    refs = [(region & ref_set, region) for region in regions]
    preds = flood_fill(pred_set, shape, steps)
    voxel = Fraction(1)
    for s in spacing:
        voxel *= Fraction(s)
    kept = [len(r) * float(voxel) > opts.min_ref_volume_mm3 for r, _ in refs]
    touch = [[bool(p & region) for p in preds] for _, region in refs]
    ignored = [any(touch[i][j] for i in range(len(refs)))
               and not any(touch[i][j] and kept[i] for i in range(len(refs)))
               for j in range(len(preds))]
    fp_lesions = [j for j in range(len(preds)) if not any(t[j] for t in touch)]
    n_ref, n_pred = sum(kept), len(preds) - sum(ignored)
    tp = sum(1 for i in range(len(refs)) if kept[i] and any(touch[i]))
    fn, fp = n_ref - tp, len(fp_lesions)
    empty = {"nan": math.nan, "one": 1.0, "zero": 0.0}[opts.empty]

    def ratio(a, b):
        return empty if b == 0 else float(Fraction(a) / Fraction(b))

    dice_sum = Fraction(0)
    for i, (r, _) in enumerate(refs):
        if kept[i]:
            union = set().union(*(preds[j] for j in range(len(preds)) if touch[i][j]))
            dice_sum += Fraction(2 * len(r & union), len(r) + len(union))
    iou_sum, dice_pairs, matched = Fraction(0), Fraction(0), 0
    for i, (r, _) in enumerate(refs):
        for j, p in enumerate(preds):
            if kept[i] and not ignored[j]:
                overlap = len(r & p)
                union = len(r) + len(p) - overlap
                if 2 * overlap > union:
                    matched += 1
                    iou_sum += Fraction(overlap, union)
                    dice_pairs += Fraction(2 * overlap, len(r) + len(p))
    pq_fp, pq_fn = n_pred - matched, n_ref - matched
    return {
        "n_ref_lesions": n_ref, "n_pred_lesions": n_pred,
        "lesion_tp": tp, "lesion_fp": fp, "lesion_fn": fn,
        "lesion_count_diff": abs(n_ref - n_pred),
        "lesion_f1": ratio(2 * tp, 2 * tp + fp + fn),
        "lesion_dice": ratio(dice_sum, n_ref + fp),
        "pq_tp": matched, "pq_fp": pq_fp, "pq_fn": pq_fn,
        "rq": ratio(2 * matched, 2 * matched + pq_fp + pq_fn),
        "sq": ratio(iou_sum, matched), "sq_dice": ratio(dice_pairs, matched),
        "pq": ratio(iou_sum, matched + Fraction(pq_fp + pq_fn, 2)),
        "fp_volume_ml": float(sum(len(preds[j]) for j in fp_lesions) * voxel / 1000),
        "fn_volume_ml": float(sum(len(r) for i, (r, _) in enumerate(refs)
                                  if kept[i] and not any(touch[i])) * voxel / 1000),
    }


shapes = st.sampled_from([(7, 7), (5, 9), (4, 4, 4), (3, 5, 4)])


@st.composite
def cases(draw):
    shape = draw(shapes)
    reference = draw(arrays(bool, shape))
    prediction = draw(arrays(bool, shape))
    choices = ["face", "full"] + (["18"] if len(shape) == 3 else [])
    opts = LesionOptions(
        connectivity=draw(st.sampled_from(choices)),
        dilation=draw(st.integers(0, 2)),
        min_ref_volume_mm3=draw(st.sampled_from([0.0, 1.0, 3.0])),
        empty=draw(st.sampled_from(["nan", "one", "zero"])),
    )
    spacing = draw(st.sampled_from([(1.0,) * len(shape), (0.5, 2.0, 1.5)[:len(shape)]]))
    return reference, prediction, spacing, opts


@settings(max_examples=60, deadline=None)
@given(cases())
def test_equals_an_independent_oracle(case):
    reference, prediction, spacing, opts = case
    got = lesion_scores(lesion_table(reference, prediction, spacing, opts), opts)
    want = oracle(reference, prediction, spacing, opts)
    assert set(got) == set(want)
    for name, value in want.items():
        assert same(float(got[name]), float(value)), (name, got[name], value)
