"""Label semantics and common encodings (issue 14): relabelling the confusion table, integer
probabilities, nnU-Net .npz files, axis orders, 3-D channel references and the run-level
warnings computed from counts."""

from __future__ import annotations

import json
import zipfile

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import segeval
from segeval.core.counts import ClassSpec, Confusion
from segeval.core.relabel import LabelMapping, map_labels, parse_mapping, relabel_confusion
from segeval.core.warnings import Declared, PairingFacts, label_facts, run_warnings
from segeval.engines.interpret import integer_cut
from segeval.engines.numpy_backend import NumpyBackend
from segeval.errors import UsageError
from segeval.results import report_schema


def confusion_of(reference: np.ndarray, prediction: np.ndarray) -> Confusion:
    return NumpyBackend().confusion(reference, prediction)


def as_triples(c: Confusion) -> dict[tuple[int, int], int]:
    return {(int(r), int(p)): int(n) for r, p, n in zip(c.reference, c.prediction, c.count,
                                                         strict=True) if n}


# --- relabelling the table equals relabelling the voxels ---------------------------------------
label_maps = st.lists(st.integers(0, 6), min_size=1, max_size=60)
pairs = st.lists(st.tuples(st.integers(0, 6), st.integers(0, 6)), max_size=4,
                 unique_by=lambda p: p[0])


@settings(max_examples=200, deadline=None)
@given(st.data(), pairs, pairs, st.booleans(), st.one_of(st.none(), st.integers(0, 6)))
def test_relabelling_the_table_equals_relabelling_the_voxels(data, ref_pairs, pred_pairs,
                                                             binary, ignore):
    reference = np.asarray(data.draw(label_maps), dtype=np.int64)
    prediction = np.asarray(data.draw(st.lists(st.integers(0, 6), min_size=len(reference),
                                               max_size=len(reference))), dtype=np.int64)
    mapping = LabelMapping(tuple(ref_pairs), tuple(pred_pairs), binary)
    from_table = relabel_confusion(confusion_of(reference, prediction), mapping, ignore)

    # voxels first, with a plain Python loop (an independent implementation)
    def mapped(value: int, table: list[tuple[int, int]]) -> int:
        value = dict(table).get(value, value)
        return int(value != 0) if binary else value

    new_ref = [r if (ignore is not None and r == ignore) else mapped(r, ref_pairs)
               for r in reference.tolist()]
    new_pred = [mapped(p, pred_pairs) for p in prediction.tolist()]
    expected: dict[tuple[int, int], int] = {}
    for r, p in zip(new_ref, new_pred, strict=True):
        expected[(r, p)] = expected.get((r, p), 0) + 1
    assert as_triples(from_table) == expected
    # and so every class count agrees: the scores cannot differ
    classes = [ClassSpec(str(k), str(k), (k,)) for k in range(7)]
    voxels = confusion_of(np.asarray(new_ref), np.asarray(new_pred))
    for a, b in zip(from_table.class_counts(classes, ignore), voxels.class_counts(classes, ignore),
                    strict=True):
        assert a.tolist() == b.tolist()


def test_mapping_is_applied_once_not_chained():
    assert map_labels(np.array([1, 2, 3]), [(1, 2), (2, 3)], False).tolist() == [2, 3, 3]
    assert map_labels(np.array([0, 4, 255]), [(4, 0)], True).tolist() == [0, 0, 1]


@pytest.mark.parametrize("text,expected", [
    ("255=1", ("both", (255, 1))), ("reference:4=3", ("reference", (4, 3))),
    ("pred:2=0", ("prediction", (2, 0)))])
def test_parse_mapping(text, expected):
    assert parse_mapping(text) == expected


@pytest.mark.parametrize("text", ["255", "a=1", "x:1=2", "1=-2"])
def test_parse_mapping_refuses(text):
    with pytest.raises(ValueError, match="FROM=TO"):
        parse_mapping(text)


def test_binary_mode_gives_the_dice_of_the_0_1_files():
    rng = np.random.default_rng(3)
    pred01 = (rng.random((20, 20)) > 0.5).astype(np.uint8)
    ref01 = (rng.random((20, 20)) > 0.4).astype(np.uint8)
    plain = segeval.evaluate(pred01, ref01).headline
    # by hand: Dice of the 0/1 masks
    tp = int((pred01 & ref01).sum())
    assert plain == pytest.approx(2 * tp / (int(pred01.sum()) + int(ref01.sum())))
    ref255 = ref01 * np.uint8(255)
    assert segeval.evaluate(pred01, ref255, binary=True).headline == plain
    assert segeval.evaluate(pred01, ref255, map_reference={255: 1}).headline == plain
    wrong = segeval.evaluate(pred01, ref255).to_dict()
    assert wrong["summary"]["macro"]["dice"] == 0.0
    codes = {w["code"] for w in wrong["warnings"]}
    assert {"W_PREDICTION_ONLY_LABELS", "W_REFERENCE_ONLY_LABELS"} <= codes


def test_binary_with_a_probability_map_and_ignore_index():
    probability = np.array([[0.9, 0.2], [0.7, 0.6]])
    reference = np.array([[255, 0], [255, 128]], dtype=np.uint8)  # 128: ignored border
    report = segeval.evaluate(probability, reference, binary=True, ignore_index=128)
    counts = report.to_dict()["per_class"]["1"]["pooled"]
    assert (counts["tp"], counts["fp"], counts["fn"], counts["tn"]) == (2, 0, 0, 1)


def test_class_equal_to_ignore_index_is_a_usage_error():
    with pytest.raises(UsageError, match="also in --labels"):
        segeval.evaluate(np.zeros((2, 2)), np.zeros((2, 2)), labels=[0, 1, 2], ignore_index=0)
    with pytest.raises(UsageError, match="region"):
        segeval.evaluate(np.zeros((2, 2)), np.zeros((2, 2)), regions={"r": [1, 2]},
                         ignore_index=2)


# --- integer probabilities ------------------------------------------------------------------------
THRESHOLDS = (0.5, 0.3, 1 / 3, 0.2)


@pytest.mark.parametrize("threshold", THRESHOLDS)
@pytest.mark.parametrize("device", ["cpu", "torch-cpu"])
def test_uint8_probabilities_threshold_exactly(threshold, device):
    values = np.arange(256, dtype=np.uint8)
    reference = np.ones(256, dtype=np.uint8)
    if device == "cpu":
        backend = NumpyBackend()
    else:
        pytest.importorskip("torch")
        from segeval.engines.torch_backend import TorchBackend

        backend = TorchBackend("cpu")
    from segeval.config import EvalConfig
    from segeval.engines.interpret import count_case

    config = EvalConfig.create(probability_scale=255, threshold=threshold)
    counts = count_case(values, reference, config, backend)
    predicted = dict(as_triples(counts))
    expected_fg = sum(1 for v in range(256) if v / 255 > threshold)
    assert predicted.get((1, 1), 0) == expected_fg
    assert predicted.get((1, 0), 0) == 256 - expected_fg
    # and value by value
    cut = integer_cut(threshold, 255)
    assert [v > cut for v in range(256)] == [v / 255 > threshold for v in range(256)]


def test_uint16_cut_and_sweep_match_float_division():
    values = np.arange(65536, dtype=np.uint16)
    reference = (values % 3 == 0).astype(np.uint8)
    report = segeval.evaluate(values, reference, probability_scale=65535,
                              sweep=list(THRESHOLDS))
    for threshold in THRESHOLDS:
        assert integer_cut(threshold, 65535) == max(
            v for v in range(65536) if not v / 65535 > threshold)
    sweep = report.to_dict()["sweep"]
    probability = values / 65535
    for j, t in enumerate(sweep["thresholds"]):
        above = probability > t
        tp = int((above & (reference == 1)).sum())
        dice = 2 * tp / (int(above.sum()) + int(reference.sum()))
        assert sweep["summary"]["micro"]["dice"][j] == pytest.approx(dice, abs=0)


def test_integer_probabilities_out_of_range_are_named():
    report = segeval.evaluate(np.array([0, 300], dtype=np.uint16), np.array([0, 1]),
                              probability_scale=255)
    case = report.to_dict()["cases"][0]
    assert case["error_code"] == "E_PROBABILITY_RANGE" and "[0, 255]" in case["message"]


def test_8bit_probabilities_read_as_labels_warn_grey_levels():
    rng = np.random.default_rng(0)
    probability = rng.integers(0, 256, (30, 30)).astype(np.uint8)
    reference = (rng.random((30, 30)) > 0.5).astype(np.uint8)
    report = segeval.evaluate(probability, reference).to_dict()
    assert "W_GREY_LEVELS" in {w["code"] for w in report["warnings"]}
    fixed = segeval.evaluate(probability, reference, probability_scale=255)
    expected = probability / 255 > 0.5
    tp = int((expected & (reference == 1)).sum())
    assert fixed.headline == pytest.approx(2 * tp / (int(expected.sum()) + int(reference.sum())))
    assert fixed.warnings == []


# --- nnU-Net v2 .npz ------------------------------------------------------------------------------
def write_like_nnunet(path, probabilities_xyz: np.ndarray) -> None:
    """As nnunetv2.inference.export_prediction does: channels first, spatial axes in the
    SimpleITK/NibabelIO order (z, y, x), float16, np.savez_compressed(probabilities=...)."""
    zyx = probabilities_xyz.transpose(0, 3, 2, 1).astype(np.float16)
    np.savez_compressed(path, probabilities=zyx)


def test_nnunet_npz_equals_its_argmax_saved_as_nifti(tmp_path):
    nib = pytest.importorskip("nibabel")
    rng = np.random.default_rng(5)
    shape = (7, 6, 5)  # x, y, z: all different, so a wrong axis order cannot pass
    logits = rng.normal(size=(3, *shape))
    probabilities = np.exp(logits) / np.exp(logits).sum(axis=0)
    probabilities = probabilities.astype(np.float16).astype(np.float64)
    reference = rng.integers(0, 3, shape).astype(np.uint8)
    (tmp_path / "pred_npz").mkdir()
    (tmp_path / "pred_nii").mkdir()
    (tmp_path / "gt").mkdir()
    affine = np.eye(4)
    nib.save(nib.Nifti1Image(reference, affine), tmp_path / "gt" / "case_1.nii.gz")
    write_like_nnunet(tmp_path / "pred_npz" / "case_1", probabilities)
    (tmp_path / "pred_npz" / "case_1.pkl").write_bytes(b"\x80\x04N.")  # nnU-Net writes one
    argmax = np.argmax(probabilities.astype(np.float16), axis=0).astype(np.uint8)
    nib.save(nib.Nifti1Image(argmax, affine), tmp_path / "pred_nii" / "case_1.nii.gz")

    from_npz = segeval.evaluate(tmp_path / "pred_npz", tmp_path / "gt", channel_axis=0,
                                prediction_axes="c,2,1,0").to_dict()
    from_nii = segeval.evaluate(tmp_path / "pred_nii", tmp_path / "gt").to_dict()
    assert from_npz["cases"][0]["status"] == "ok", from_npz["cases"][0]["message"]
    assert from_npz["per_class"] == from_nii["per_class"]
    assert from_npz["summary"] == from_nii["summary"]
    # the wrong order is refused (shape mismatch), not silently scored
    wrong = segeval.evaluate(tmp_path / "pred_npz", tmp_path / "gt", channel_axis=0).to_dict()
    assert wrong["cases"][0]["status"] == "error"


def test_nnunet_folder_with_both_files_reads_the_chosen_suffix(tmp_path):
    rng = np.random.default_rng(6)
    probabilities = rng.dirichlet([1, 1], size=(4, 5)).transpose(2, 0, 1)  # (C, H, W)
    reference = rng.integers(0, 2, (4, 5)).astype(np.uint8)
    (tmp_path / "pred").mkdir()
    (tmp_path / "gt").mkdir()
    np.save(tmp_path / "gt" / "c.npy", reference)
    np.savez_compressed(tmp_path / "pred" / "c.npz", probabilities=probabilities)
    np.save(tmp_path / "pred" / "c.npy", np.argmax(probabilities, axis=0))
    both = segeval.evaluate(tmp_path / "pred", tmp_path / "gt", channel_axis=0).to_dict()
    assert both["cases"][0]["error_code"] == "E_DUPLICATE_CASE"
    chosen = segeval.evaluate(tmp_path / "pred", tmp_path / "gt", channel_axis=0,
                              prediction_suffix=".npz").to_dict()
    assert chosen["cases"][0]["status"] == "ok"
    assert chosen["cases"][0]["prediction"].endswith("c.npz")


def test_npz_refuses_pickles_and_names_members(tmp_path):
    pickled = tmp_path / "p.npz"
    np.savez(pickled, probabilities=np.array([{"a": 1}], dtype=object))
    several = tmp_path / "s.npz"
    np.savez(several, a=np.zeros((2, 2)), b=np.zeros((2, 2)))
    from segeval.formats import open_header

    with pytest.raises(segeval.CaseError, match="Python objects"):
        open_header(pickled)
    with pytest.raises(segeval.CaseError, match="a, b"):
        open_header(several)
    bomb = tmp_path / "b.npz"
    with zipfile.ZipFile(bomb, "w") as archive:
        with archive.open("probabilities.npy", "w") as member:
            np.lib.format.write_array_header_1_0(
                member, {"descr": "<f4", "fortran_order": False, "shape": (1000, 1000)})
    with pytest.raises(segeval.CaseError, match="truncated"):
        open_header(bomb)


# --- 3-D channel references -----------------------------------------------------------------------
def test_3d_one_hot_reference_with_channel_axis(tmp_path):
    nib = pytest.importorskip("nibabel")
    rng = np.random.default_rng(8)
    labels_ref = rng.integers(0, 3, (5, 4, 3))
    labels_pred = rng.integers(0, 3, (5, 4, 3))
    one_hot = np.stack([labels_ref == c for c in range(3)], axis=-1).astype(np.uint8)
    probabilities = np.stack([labels_pred == c for c in range(3)], axis=-1).astype(np.float32)
    nib.save(nib.Nifti1Image(one_hot, np.eye(4)), tmp_path / "gt.nii.gz")
    nib.save(nib.Nifti1Image(probabilities, np.eye(4)), tmp_path / "pred.nii.gz")
    data = segeval.evaluate(tmp_path / "pred.nii.gz", tmp_path / "gt.nii.gz",
                            channel_axis=-1).to_dict()
    assert data["cases"][0]["status"] == "ok", data["cases"][0]["message"]
    for c in (1, 2):
        tp = int(((labels_pred == c) & (labels_ref == c)).sum())
        size = int((labels_pred == c).sum() + (labels_ref == c).sum())
        assert data["per_class"][str(c)]["pooled"]["dice"] == pytest.approx(2 * tp / size)


# --- axis orders ----------------------------------------------------------------------------------
def test_prediction_axes_reorder_and_drop_singletons():
    rng = np.random.default_rng(9)
    reference = rng.integers(0, 2, (4, 6)).astype(np.uint8)
    probability = rng.random((2, 4, 6))
    stored = probability.transpose(0, 2, 1)[:, None]  # (C, 1, W, H): channels, _, axis 1, 0
    plain = segeval.evaluate(probability, reference, channel_axis=0).to_dict()
    reordered = segeval.evaluate(stored, reference, prediction_axes="c,_,1,0").to_dict()
    assert reordered["config"]["channel_axis"] == 0
    assert reordered["per_class"] == plain["per_class"]


@pytest.mark.parametrize("axes", ["c,c,0", "0,0", "c,1", "x,0"])
def test_prediction_axes_are_validated(axes):
    with pytest.raises(UsageError, match="prediction-axes"):
        segeval.evaluate(np.zeros((2, 2)), np.zeros((2, 2)), prediction_axes=axes)


# --- warnings from the counts ---------------------------------------------------------------------
def facts_of(cases: dict[str, tuple[list[int], list[int]]], ignore=None):
    return label_facts(((k, confusion_of(np.asarray(r), np.asarray(p)))
                        for k, (r, p) in cases.items()), ignore)


def test_one_sided_labels_name_both_sets():
    facts = facts_of({"a": ([0, 255, 255], [0, 1, 1]), "b": ([0, 255], [0, 0])})
    classes = [ClassSpec("1", "1", (1,)), ClassSpec("255", "255", (255,))]
    warnings = {w.code: w for w in run_warnings(facts, Declared(), classes)}
    assert warnings["W_PREDICTION_ONLY_LABELS"].labels == (1,)
    assert warnings["W_PREDICTION_ONLY_LABELS"].cases == ("a",)
    assert warnings["W_REFERENCE_ONLY_LABELS"].cases == ("a", "b")
    message = warnings["W_REFERENCE_ONLY_LABELS"].message
    assert "{0, 1}" in message and "{0, 255}" in message and "--binary" in message


def test_grey_levels_rule_and_declared_values():
    facts = facts_of({"a": ([0, 9, 39, 48, 168, 207, 255], [0, 255, 255, 255, 255, 255, 255])})
    codes = [w.code for w in run_warnings(facts, Declared(), [])]
    assert "W_GREY_LEVELS" in codes
    # TotalSegmentator-like: many labels, all below 128: not grey levels
    many = facts_of({"a": (list(range(118)), list(range(118)))})
    assert "W_GREY_LEVELS" not in [w.code for w in run_warnings(many, Declared(), [])]
    # declared values are classes, not grey levels
    declared = Declared(names=(9, 39, 48, 168, 207, 255))
    assert "W_GREY_LEVELS" not in [w.code for w in run_warnings(facts, declared, [])]


def test_declared_absent_and_unevaluated_brats_regions():
    facts = facts_of({"a": ([0, 1, 2, 4], [0, 1, 2, 4])})
    regions = (("whole_tumour", (1, 2, 3)), ("tumour_core", (2, 3)))
    classes = [ClassSpec(n, n, m) for n, m in regions]
    warnings = {w.code: w for w in run_warnings(
        facts, Declared(regions=regions, regions_from="dataset.json"), classes)}
    assert warnings["W_DECLARED_LABEL_ABSENT"].labels == (3,)
    assert warnings["W_UNEVALUATED_LABELS"].labels == (4,)
    assert "dataset.json" in warnings["W_UNEVALUATED_LABELS"].message


def test_lookalike_names_the_file_or_folder():
    pairing = PairingFacts(missing_cases=("case_1", "case_2"),
                           skipped_prediction_entries=("/p/case_1.npz.part", "/p/case_2",
                                                       "/p/case_10.mat"))
    warnings = run_warnings(facts_of({}), Declared(), [], pairing)
    assert [(w.code, w.files) for w in warnings] == [
        ("W_UNPAIRED_LOOKALIKE", ("/p/case_1.npz.part",)),
        ("W_UNPAIRED_LOOKALIKE", ("/p/case_2",))]
    assert "a folder" in warnings[1].message


def test_channel_counts_give_label_facts():
    probability = np.array([[[0.9, 0.1]], [[0.1, 0.9]], [[0.0, 0.0]]])  # 3 channels, 1x2
    reference = np.array([[0, 2]])
    report = segeval.evaluate(probability, reference, channel_axis=0, multilabel=True)
    codes = {w.code: w for w in report.warnings}
    assert codes["W_PREDICTION_ONLY_LABELS"].labels == (1,)
    assert codes["W_REFERENCE_ONLY_LABELS"].labels == (2,)


def test_warnings_block_validates_against_the_schema():
    jsonschema = pytest.importorskip("jsonschema")
    pred = np.array([[0, 1], [1, 1]], dtype=np.uint8)
    ref = np.array([[0, 255], [255, 4]], dtype=np.uint8)
    data = json.loads(segeval.evaluate(pred, ref, labels=[1, 3]).to_json())
    codes = {w["code"] for w in data["warnings"]}
    assert {"W_DECLARED_LABEL_ABSENT", "W_UNEVALUATED_LABELS"} <= codes
    jsonschema.validate(data, report_schema())
    data["warnings"][0]["code"] = "W_MADE_UP"
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(data, report_schema())


def test_losses_accept_monai_style_n1_integer_targets():
    torch = pytest.importorskip("torch")
    from segeval.losses import dice_loss

    logits = torch.randn(2, 3, 4, 5)
    labels = torch.randint(0, 3, (2, 4, 5))
    expected = dice_loss(logits, labels, from_logits=True)
    assert torch.equal(dice_loss(logits, labels[:, None], from_logits=True), expected)
    # the same labels given as one-hot channels go through the channel path: same loss
    one_hot = torch.nn.functional.one_hot(labels, 3).permute(0, 3, 1, 2)
    assert float(dice_loss(logits, one_hot, from_logits=True)) == pytest.approx(
        float(expected), rel=1e-6)
    # a (N, 1, *spatial) float target with C > 1 is not a label map: refused, not guessed
    with pytest.raises(segeval.UsageError):
        dice_loss(logits, labels[:, None].float(), from_logits=True)
