"""EvalConfig's field tags: every field says what it changes, and the count cache and
``compare`` derive their rules from those tags alone."""

from __future__ import annotations

import dataclasses

import pytest

import segeval
from segeval.config import EvalConfig, fields_that_change
from segeval.run.cache import CountCache
from segeval.verdicts.regression import NotComparable, check_comparable
from tests.test_api import REF_A, REF_B

# A value different from the default for every field, valid on its own.
OTHER_VALUES = {
    "labels": (1, 2), "include_background": True, "ignore_index": 7,
    "regions": (("whole", (1, 2)),), "label_names": ((1, "organ"),), "threshold": 0.3,
    "beta": 2.0, "smooth": 1.0, "empty": "one", "missing": "empty", "soft": True,
    "logits": "sigmoid", "channel_axis": 0, "multilabel": True, "headline_metric": "iou",
    "headline": "micro", "std_ddof": 1, "geometry": "shape", "geometry_tol": 0.1,
    "max_voxels": 1000, "invalid": "empty", "sweep": (0.2, 0.4),
    "binary": True, "map_reference": ((255, 1),), "map_prediction": ((4, 3),),
    "probability_scale": 255, "prediction_axes": "1,0", "prediction_suffix": ".npz",
    "unexpected_labels": "error",
    "boundary_metrics": ("hd95",), "nsd_tolerance": 2.0, "nsd_tolerances": (("1", 3.0),),
    "hd_percentile_mode": "pooled", "surface": "surfel", "empty_distance": "nan",
    "spacing": (1.0, 2.0),
    "lesion_metrics": ("lesion_f1",), "lesion_preset": "isles22", "connectivity": "face",
    "connectivity_2d": "face", "lesion_dilation": 3, "lesion_min_volume": 50.0,
    "lesion_match_iou": 0.6, "lesion_match_inclusive": True, "lesion_empty": "one",
    "lesion_sq_unmatched": 0.0, "lesion_hd95_penalty": 374.0, "lesion_hd95_both_empty": 0.0,
    "lesion_surface": "surfel",
}


def test_every_field_is_tagged_once() -> None:
    tagged = [name for effect in ("counts", "scores", "display")
              for name in fields_that_change(effect)]
    names = [f.name for f in dataclasses.fields(EvalConfig)]
    assert sorted(tagged) == sorted(names), "declare each field with counts/scores/display"
    assert set(OTHER_VALUES) == set(names), "add the new field to OTHER_VALUES"


@pytest.mark.parametrize("name", [f.name for f in dataclasses.fields(EvalConfig)])
def test_cache_key_changes_exactly_with_count_fields(tmp_path, name: str) -> None:
    base = CountCache(tmp_path, EvalConfig()).options_digest
    changed = dataclasses.replace(EvalConfig(), **{name: OTHER_VALUES[name]})
    differs = CountCache(tmp_path, changed).options_digest != base
    assert differs == (name in fields_that_change("counts"))


def _report(**options: object) -> dict:
    return segeval.evaluate({"a": REF_A, "b": REF_B}, {"a": REF_A, "b": REF_B},
                            **options).to_dict()


def test_compare_ignores_display_fields_only() -> None:
    base = _report()
    check_comparable(base, _report(label_names={1: "organ"}, headline="micro",
                                   headline_metric="iou"))
    with pytest.raises(NotComparable, match="config.beta differs"):
        check_comparable(base, _report(beta=2.0))  # a scores field
    with pytest.raises(NotComparable, match="config.threshold differs"):
        check_comparable(base, _report(threshold=0.3))  # a counts field
