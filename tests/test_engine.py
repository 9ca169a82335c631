"""Counting kernels (segeval.engines: NumPy and torch backends) and the whole pipeline's numbers.

Every expected value is either worked out by hand in the test or computed by an oracle
written differently from the engine: ``collections.Counter`` over voxel pairs, plain Python
loops over voxels, or ``(p == c) & (g == c)`` sums per class.  Soft counts use dyadic
probabilities (multiples of 1/8) so that every sum is exact in float64, whatever its order.
"""

from __future__ import annotations

import math
import subprocess
import sys
import textwrap
import zlib
from collections import Counter
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import segeval
from segeval.config import METRICS, EvalConfig
from segeval.core.counts import ChannelCounts, ClassSpec, Confusion
from segeval.engines import numpy_backend as engine
from segeval.engines.interpret import count_case
from segeval.engines.numpy_backend import NumpyBackend

FAST = settings(max_examples=25, deadline=None)
NUMPY = NumpyBackend()


# --- oracles ---------------------------------------------------------------------------------
def oracle_confusion(reference: np.ndarray, prediction: np.ndarray) -> dict[tuple[int, int], int]:
    """(reference label, predicted label) → voxel count, by counting zipped voxel pairs."""
    pairs = zip(np.asarray(reference).ravel().tolist(), np.asarray(prediction).ravel().tolist(),
                strict=True)
    return dict(Counter((int(r), int(p)) for r, p in pairs))


def as_dict(confusion: Confusion) -> dict[tuple[int, int], int]:
    """A Confusion as a dict, after checking the invariants its docstring promises."""
    n = len(confusion.count)
    assert len(confusion.reference) == len(confusion.prediction) == n
    for array in (confusion.reference, confusion.prediction, confusion.count):
        assert array.dtype == np.int64
    assert (confusion.count > 0).all(), "a pair with count 0 is noise"
    pairs = list(zip(confusion.reference.tolist(), confusion.prediction.tolist(), strict=True))
    assert len(set(pairs)) == n, "pairs must be unique"
    return dict(zip(pairs, confusion.count.tolist(), strict=True))


def oracle_channel_counts(reference: np.ndarray, prediction: np.ndarray,
                          valid: np.ndarray | None) -> list[tuple[int, int, int, int]]:
    """(TP, FP, FN, TN) per channel by looping over every voxel."""
    n_channels = reference.shape[0]
    ref = reference.reshape(n_channels, -1).tolist()
    pred = prediction.reshape(n_channels, -1).tolist()
    keep = None if valid is None else valid.ravel().tolist()
    out = []
    for c in range(n_channels):
        tp = fp = fn = tn = 0
        for i, (r, p) in enumerate(zip(ref[c], pred[c], strict=True)):
            if keep is not None and not keep[i]:
                continue
            if r and p:
                tp += 1
            elif p:
                fp += 1
            elif r:
                fn += 1
            else:
                tn += 1
        out.append((tp, fp, fn, tn))
    return out


def oracle_soft_counts(reference: np.ndarray, probability: np.ndarray,
                       valid: np.ndarray | None) -> list[tuple[float, float, float, float]]:
    """Σpg, Σp(1−g), Σ(1−p)g, Σ(1−p)(1−g) per channel, voxel by voxel."""
    n_channels = reference.shape[0]
    ref = reference.reshape(n_channels, -1).tolist()
    prob = probability.reshape(n_channels, -1).tolist()
    keep = None if valid is None else valid.ravel().tolist()
    out = []
    for c in range(n_channels):
        terms: list[list[float]] = [[], [], [], []]
        for i, (g, p) in enumerate(zip(ref[c], prob[c], strict=True)):
            if keep is not None and not keep[i]:
                continue
            g = float(g)
            terms[0].append(p * g)
            terms[1].append(p * (1 - g))
            terms[2].append((1 - p) * g)
            terms[3].append((1 - p) * (1 - g))
        out.append(tuple(math.fsum(t) for t in terms))
    return out


def channel_rows(counts: ChannelCounts) -> list[tuple[float, ...]]:
    return list(zip(counts.tp.tolist(), counts.fp.tolist(), counts.fn.tolist(),
                    counts.tn.tolist(), strict=True))


def random_labels(rng: np.random.Generator, shape: tuple[int, ...], dtype: type,
                  values: list[int] | None = None) -> np.ndarray:
    if dtype is bool:
        return rng.integers(0, 2, size=shape).astype(bool)
    values = values if values is not None else [0, 1, 2, 3, 7]
    return rng.choice(np.array(values, dtype=np.int64), size=shape).astype(dtype)


# --- NumpyBackend.confusion against Counter ------------------------------------------------
DTYPES = [np.uint8, np.uint16, np.int16, np.int32, np.int64, bool]
SHAPES = [(), (1,), (17,), (7, 13), (5, 6, 7), (0,), (3, 0, 4)]


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_confusion_matches_counter_for_dtypes_and_shapes(dtype: type,
                                                         shape: tuple[int, ...]) -> None:
    rng = np.random.default_rng(zlib.crc32(f"{np.dtype(dtype).name}{shape}".encode()))
    reference = random_labels(rng, shape, dtype)
    prediction = random_labels(rng, shape, dtype)
    expected = oracle_confusion(reference, prediction)
    assert sum(expected.values()) == reference.size
    assert as_dict(NUMPY.confusion(reference, prediction)) == expected


def test_confusion_of_empty_arrays_is_empty() -> None:
    empty = np.zeros((4, 0), dtype=np.uint8)
    assert as_dict(NUMPY.confusion(empty, empty)) == {}


def test_confusion_hand_worked() -> None:
    reference = np.array([[0, 1, 1], [2, 2, 0]], dtype=np.uint8)
    prediction = np.array([[0, 1, 2], [2, 1, 0]], dtype=np.uint8)
    assert as_dict(NUMPY.confusion(reference, prediction)) == {
        (0, 0): 2, (1, 1): 1, (1, 2): 1, (2, 2): 1, (2, 1): 1}


def non_contiguous_pairs() -> list[tuple[str, np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(7)
    base = random_labels(rng, (13, 7), np.int32)
    wide = random_labels(rng, (14, 40), np.uint8)
    fortran = np.asfortranarray(random_labels(rng, (7, 13), np.int16))
    cube = random_labels(rng, (6, 5, 8), np.uint16)
    fortran_cube = np.asfortranarray(random_labels(rng, (6, 5, 8), np.uint8))
    return [
        ("fortran-vs-c", fortran, random_labels(rng, (7, 13), np.int64)),
        ("c-vs-fortran", random_labels(rng, (7, 13), np.uint8), fortran),
        ("both-fortran-3d", fortran_cube, np.asfortranarray(cube)),
        ("fortran-vs-reversed-view", fortran_cube, cube[:, :, ::-1]),
        ("transposed-vs-strided", base.T, wide[::2, 1::3]),
        ("fortran-vs-transposed", fortran, base.T),
        ("strided-vs-fortran", wide[1::2, 1::3], fortran),
        ("3d-axes-permuted", cube.transpose(2, 0, 1), cube[::-1].transpose(2, 0, 1)),
        ("negative-stride", base[::-1, ::-1], base),
    ]


@pytest.mark.parametrize("name,reference,prediction", non_contiguous_pairs(),
                         ids=[p[0] for p in non_contiguous_pairs()])
def test_confusion_of_non_contiguous_inputs(name: str, reference: np.ndarray,
                                            prediction: np.ndarray) -> None:
    assert reference.shape == prediction.shape
    assert not (reference.flags.c_contiguous and prediction.flags.c_contiguous)
    expected = oracle_confusion(reference, prediction)
    assert as_dict(NUMPY.confusion(reference, prediction)) == expected


@pytest.mark.parametrize("dtype,values", [
    (np.uint8, [0, 1, 15]),                 # n = 16: the uint8 index just fits (255)
    (np.int32, [0, 1, 16]),                 # n = 17: n² > 2**8, uint16 index
    (np.uint8, [0, 1, 254, 255]),           # n = 256: the uint16 index just fits (65535)
    (np.uint16, [0, 255, 256]),             # n = 257: n² > 2**16, int64 index
    (np.int16, [0, 255, 256, 300]),
    (np.int32, [0, 1, 2047]),               # n = 2048: n² = DENSE_BINS, still dense
    (np.int32, [0, 1, 2048]),               # n = 2049: first sparse size
    (np.int32, [0, 5, 70000]),              # sparse
    (np.int64, [0, 3, 2**40, 2**40 + 1]),   # sparse, beyond 32 bits
    (np.uint16, [0, 65535]),
], ids=["u8-15", "i32-16", "u8-255", "u16-256", "i16-300", "i32-2047", "i32-2048",
        "i32-70000", "i64-2^40", "u16-65535"])
def test_confusion_at_label_size_boundaries(dtype: type, values: list[int]) -> None:
    rng = np.random.default_rng(len(values) * 1000 + values[-1] % 997)
    reference = random_labels(rng, (9, 11), dtype, values)
    prediction = random_labels(rng, (9, 11), dtype, values)
    prediction[0, 0] = values[-1]  # make sure the largest label occurs
    assert as_dict(NUMPY.confusion(reference, prediction)) == oracle_confusion(
        reference, prediction)


@pytest.mark.parametrize("values", [[0, 1, 2, 3], [0, 1, 17], [0, 1, 255, 256],
                                    [0, 9, 70000, 2**40]],
                         ids=["uint8-index", "uint16-index", "int64-index", "sparse"])
@pytest.mark.parametrize("size", [999, 1000, 1001, 2500, 3000])
def test_confusion_across_chunk_boundaries(monkeypatch: pytest.MonkeyPatch, values: list[int],
                                           size: int) -> None:
    monkeypatch.setattr(engine, "CHUNK", 1000)
    monkeypatch.setattr(engine, "BACKGROUND_CHUNK", 1000)
    rng = np.random.default_rng(size)
    reference = random_labels(rng, (size,), np.int64, values)
    prediction = random_labels(rng, (size,), np.int64, values)
    assert as_dict(NUMPY.confusion(reference, prediction)) == oracle_confusion(
        reference, prediction)


@pytest.mark.parametrize("dtype,n", [(dtype, n) for dtype in (np.uint8, np.int16, np.int64)
                                     for n in (1, 2, 3, 5, 11, 16)] + [(bool, 1), (bool, 2)])
def test_byte_pair_kernel_odd_chunks(monkeypatch: pytest.MonkeyPatch, n: int,
                                     dtype: type) -> None:
    """n·n ≤ 256 counts two uint8 indices as one uint16: odd chunk lengths leave one
    index over per chunk, which is counted on its own."""
    monkeypatch.setattr(engine, "BACKGROUND_CHUNK", 999)  # odd: a lone index per chunk
    rng = np.random.default_rng(n)
    reference = rng.integers(0, n, 4001).astype(dtype)  # 5 chunks, the last one of 5
    prediction = rng.integers(0, n, 4001).astype(dtype)
    assert as_dict(NUMPY.confusion(reference, prediction)) == oracle_confusion(
        reference, prediction)


@pytest.mark.parametrize("labels", [4, 20], ids=["uint8-index", "uint16-index"])
@pytest.mark.parametrize("pattern", ["both-zero", "reference-only", "prediction-only",
                                     "one-voxel", "all-zero"])
def test_background_runs_are_counted_not_skipped(monkeypatch: pytest.MonkeyPatch,
                                                 pattern: str, labels: int) -> None:
    """Runs of voxels that are 0 in both arrays add to pair (0, 0) without being indexed;
    a run with a label on either side only must still be counted voxel by voxel."""
    monkeypatch.setattr(engine, "BACKGROUND_CHUNK", 100)
    rng = np.random.default_rng(len(pattern))
    reference = rng.integers(0, labels, 1050).astype(np.uint8)
    prediction = rng.integers(0, labels, 1050).astype(np.uint8)
    reference[7] = prediction[7] = labels - 1  # the widest index occurs
    quiet = slice(200, 500)  # chunks 2-4 entirely
    if pattern == "both-zero":
        reference[quiet] = prediction[quiet] = 0
    elif pattern == "reference-only":
        prediction[quiet] = 0
    elif pattern == "prediction-only":
        reference[quiet] = 0
    elif pattern == "one-voxel":
        reference[quiet] = prediction[quiet] = 0
        prediction[350] = 3  # one label in an otherwise background chunk
    else:
        reference[:] = prediction[:] = 0
    expected = oracle_confusion(reference, prediction)
    assert as_dict(NUMPY.confusion(reference, prediction)) == expected
    if pattern == "all-zero":
        assert expected == {(0, 0): 1050}


def test_confusion_chunk_boundary_in_3d_volume(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(engine, "CHUNK", 1000)
    monkeypatch.setattr(engine, "BACKGROUND_CHUNK", 1000)
    rng = np.random.default_rng(3)
    reference = random_labels(rng, (13, 17, 11), np.uint8)  # 2431 voxels: 3 chunks
    prediction = random_labels(rng, (11, 17, 13), np.uint8).transpose(2, 1, 0)
    assert as_dict(NUMPY.confusion(reference, prediction)) == oracle_confusion(
        reference, prediction)
    both_fortran = np.asfortranarray(reference), prediction  # read in Fortran order
    assert both_fortran[0].flags.f_contiguous and both_fortran[1].flags.f_contiguous
    assert as_dict(NUMPY.confusion(*both_fortran)) == oracle_confusion(reference, prediction)


@FAST
@given(data=st.data(), dtype=st.sampled_from([np.uint8, np.uint16, np.int16, np.int32,
                                                np.int64]))
def test_confusion_matches_counter_property(data: st.DataObject, dtype: type) -> None:
    shape = data.draw(hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=6))
    high = min(data.draw(st.sampled_from([1, 3, 255, 256, 70000])), np.iinfo(dtype).max)
    elements = st.integers(0, high)
    reference = data.draw(hnp.arrays(dtype, shape, elements=elements))
    prediction = data.draw(hnp.arrays(dtype, shape, elements=elements))
    assert as_dict(NUMPY.confusion(reference, prediction)) == oracle_confusion(
        reference, prediction)


# --- Confusion.class_counts ----------------------------------------------------------------
# A 3x3 example with labels {0, 1, 2} and one ignored voxel (255):
#     reference      prediction     voxel pairs (reference, prediction)
#     0   1   1      0  1  2        (0,0) (1,1) (1,2)
#     2   2   0      2  1  0        (2,2) (2,1) (0,0)
#     1 255   2      0  1  1        (1,0) (255,1) (2,1)
HAND_REFERENCE = np.array([[0, 1, 1], [2, 2, 0], [1, 255, 2]], dtype=np.uint8)
HAND_PREDICTION = np.array([[0, 1, 2], [2, 1, 0], [0, 1, 1]], dtype=np.uint8)
HAND_CLASSES = [ClassSpec("1", "one", (1,)), ClassSpec("2", "two", (2,)),
                ClassSpec("fg", "fg", (1, 2)), ClassSpec("7", "absent", (7,))]


def test_class_counts_hand_worked_with_ignore_index() -> None:
    confusion = NUMPY.confusion(HAND_REFERENCE, HAND_PREDICTION)
    tp, fp, fn, tn = confusion.class_counts(HAND_CLASSES, ignore_index=255)
    # class 1: TP (1,1); FP (2,1)(2,1); FN (1,2)(1,0); TN (0,0)(2,2)(0,0)
    # class 2: TP (2,2); FP (1,2); FN (2,1)(2,1); TN (0,0)(1,1)(0,0)(1,0)
    # region 1∪2: TP (1,1)(1,2)(2,2)(2,1)(2,1); FP none; FN (1,0); TN (0,0)(0,0)
    # class 7 occurs nowhere: every evaluated voxel is a true negative
    assert tp.tolist() == [1, 1, 5, 0]
    assert fp.tolist() == [2, 1, 0, 0]
    assert fn.tolist() == [2, 2, 1, 0]
    assert tn.tolist() == [3, 4, 2, 8]
    assert (tp + fp + fn + tn).tolist() == [8] * 4  # 9 voxels, one ignored


def test_class_counts_hand_worked_without_ignore_index() -> None:
    confusion = NUMPY.confusion(HAND_REFERENCE, HAND_PREDICTION)
    tp, fp, fn, tn = confusion.class_counts(HAND_CLASSES, ignore_index=None)
    # the (255, 1) voxel is now a false positive of class 1 and of the region
    assert tp.tolist() == [1, 1, 5, 0]
    assert fp.tolist() == [3, 1, 1, 0]
    assert fn.tolist() == [2, 2, 1, 0]
    assert tn.tolist() == [3, 5, 2, 9]
    assert (tp + fp + fn + tn).tolist() == [9] * 4


@FAST
@given(data=st.data())
def test_class_counts_sum_to_evaluated_voxels(data: st.DataObject) -> None:
    shape = data.draw(hnp.array_shapes(min_dims=1, max_dims=3, min_side=1, max_side=6))
    elements = st.sampled_from([0, 1, 2, 3, 9])
    reference = data.draw(hnp.arrays(np.uint8, shape, elements=elements))
    prediction = data.draw(hnp.arrays(np.uint8, shape, elements=elements))
    ignore = data.draw(st.sampled_from([None, 9, 0]))
    classes = [ClassSpec("1", "1", (1,)), ClassSpec("2", "2", (2,)),
               ClassSpec("r", "r", (2, 3))]
    tp, fp, fn, tn = NUMPY.confusion(reference, prediction).class_counts(classes, ignore)
    evaluated = reference.size if ignore is None else int((reference != ignore).sum())
    assert (tp + fp + fn + tn).tolist() == [evaluated] * len(classes)
    keep = np.ones(shape, bool) if ignore is None else reference != ignore
    for k, spec in enumerate(classes):
        in_ref = np.isin(reference, spec.labels) & keep
        in_pred = np.isin(prediction, spec.labels) & keep
        assert tp[k] == int((in_ref & in_pred).sum())
        assert fp[k] == int((~in_ref & in_pred).sum())
        assert fn[k] == int((in_ref & ~in_pred).sum())


# --- channel_counts and soft_counts --------------------------------------------------------
def channel_inputs(rng: np.random.Generator, shape: tuple[int, ...], n_channels: int = 3
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    reference = rng.integers(0, 2, size=(n_channels, *shape)).astype(np.uint8)
    prediction = rng.integers(0, 2, size=(n_channels, *shape)).astype(bool)
    probability = rng.integers(0, 9, size=(n_channels, *shape)) / 8.0  # dyadic: exact sums
    valid = rng.random(shape) < 0.7
    return reference, prediction, probability, valid


@pytest.mark.parametrize("use_valid", [False, True], ids=["all", "valid-mask"])
@pytest.mark.parametrize("shape", [(7, 13), (5, 6, 7), (1,)], ids=str)
def test_channel_counts_match_voxel_loop(shape: tuple[int, ...], use_valid: bool) -> None:
    rng = np.random.default_rng(sum(shape) + use_valid)
    reference, prediction, _, valid = channel_inputs(rng, shape)
    mask = valid if use_valid else None
    counts = NUMPY.channel_counts(reference, prediction, mask)
    assert not counts.soft and counts.tp.dtype == np.int64
    assert channel_rows(counts) == oracle_channel_counts(reference, prediction, mask)


def test_channel_counts_hand_worked() -> None:
    reference = np.array([[1, 1, 0, 0], [0, 0, 1, 1]], dtype=np.uint8)
    prediction = np.array([[1, 0, 1, 0], [0, 0, 1, 1]], dtype=np.uint8)
    valid = np.array([True, True, True, False])
    counts = NUMPY.channel_counts(reference, prediction, valid)
    assert channel_rows(counts) == [(1, 1, 1, 0), (1, 0, 0, 2)]
    counts = NUMPY.channel_counts(reference, prediction, None)
    assert channel_rows(counts) == [(1, 1, 1, 1), (2, 0, 0, 2)]


@pytest.mark.parametrize("use_valid", [False, True], ids=["all", "valid-mask"])
@pytest.mark.parametrize("shape", [(7, 13), (5, 6, 7), (1,)], ids=str)
def test_soft_counts_match_voxel_loop(shape: tuple[int, ...], use_valid: bool) -> None:
    rng = np.random.default_rng(100 + sum(shape) + use_valid)
    reference, _, probability, valid = channel_inputs(rng, shape)
    mask = valid if use_valid else None
    counts = NUMPY.soft_counts(reference, probability, mask)
    assert counts.soft
    assert channel_rows(counts) == oracle_soft_counts(reference, probability, mask)


def test_soft_counts_seed_004_example() -> None:
    # 004_1c6ec471f2d81c94.txt: pred [0.9, 0.1, 0.8, 0.7], target [1, 0, 1, 1]
    reference = np.array([[1, 0, 1, 1]])
    probability = np.array([[0.9, 0.1, 0.8, 0.7]])
    counts = NUMPY.soft_counts(reference, probability, None)
    assert counts.tp[0] == pytest.approx(2.4, abs=1e-12)
    assert counts.fp[0] == pytest.approx(0.1, abs=1e-12)
    assert counts.fn[0] == pytest.approx(0.6, abs=1e-12)
    assert counts.tn[0] == pytest.approx(0.9, abs=1e-12)
    soft_dice_loss = 1 - (2 * counts.tp[0] + 1) / (2 * counts.tp[0] + counts.fp[0]
                                                   + counts.fn[0] + 1)
    assert soft_dice_loss == pytest.approx(0.10769, abs=5e-6)


@FAST
@given(data=st.data())
def test_soft_counts_property_arbitrary_probabilities(data: st.DataObject) -> None:
    shape = data.draw(hnp.array_shapes(min_dims=1, max_dims=3, min_side=1, max_side=5))
    n_channels = data.draw(st.integers(1, 3))
    reference = data.draw(hnp.arrays(np.uint8, (n_channels, *shape), elements=st.integers(0, 1)))
    probability = data.draw(hnp.arrays(np.float64, (n_channels, *shape),
                                       elements=st.floats(0, 1)))
    valid = data.draw(st.none() | hnp.arrays(np.bool_, shape))
    counts = NUMPY.soft_counts(reference, probability, valid)
    for got, want in zip(channel_rows(counts), oracle_soft_counts(reference, probability, valid),
                         strict=True):
        assert got == pytest.approx(want, rel=1e-12, abs=1e-12)


@pytest.mark.parametrize("use_valid", [False, True], ids=["all", "valid-mask"])
def test_channel_and_soft_counts_across_chunks(monkeypatch: pytest.MonkeyPatch,
                                               use_valid: bool) -> None:
    monkeypatch.setattr(engine, "CHUNK", 1000)
    rng = np.random.default_rng(11)
    reference, prediction, probability, valid = channel_inputs(rng, (13, 17, 11))  # 2431
    mask = valid if use_valid else None
    assert channel_rows(NUMPY.channel_counts(reference, prediction, mask)) == \
        oracle_channel_counts(reference, prediction, mask)
    assert channel_rows(NUMPY.soft_counts(reference, probability, mask)) == \
        oracle_soft_counts(reference, probability, mask)


# --- TorchBackend("cpu") gives the NumpyBackend's counts ------------------------------------
@pytest.fixture(scope="module")
def torch_backend() -> Any:
    """torch is an optional dependency: imported here, for these tests only."""
    pytest.importorskip("torch")
    from segeval.engines.torch_backend import TorchBackend

    return TorchBackend("cpu")


def same_counts(left: Confusion | ChannelCounts, right: Confusion | ChannelCounts) -> None:
    assert type(left) is type(right)
    if isinstance(left, Confusion):
        assert as_dict(left) == as_dict(right)  # type: ignore[arg-type]
    else:
        assert left.soft == right.soft  # type: ignore[union-attr]
        assert channel_rows(left) == channel_rows(right)  # type: ignore[arg-type]


@FAST
@given(data=st.data(), dtype=st.sampled_from([np.uint8, np.uint16, np.int16, np.int32,
                                                np.int64]))
def test_torch_confusion_equals_numpy(torch_backend: Any, data: st.DataObject,
                                      dtype: type) -> None:
    shape = data.draw(hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=6))
    high = min(data.draw(st.sampled_from([1, 4, 255, 256, 70000])), np.iinfo(dtype).max)
    reference = data.draw(hnp.arrays(dtype, shape, elements=st.integers(0, high)))
    prediction = data.draw(hnp.arrays(dtype, shape, elements=st.integers(0, high)))
    got = torch_backend.confusion(torch_backend.asarray(reference),
                                  torch_backend.asarray(prediction))
    same_counts(got, NUMPY.confusion(reference, prediction))
    assert as_dict(got) == oracle_confusion(reference, prediction)


@pytest.mark.parametrize("n,index_dtype", [(2, "uint8"), (16, "uint8"), (17, "int16"),
                                           (181, "int16"), (182, "int32"), (2048, "int32")])
def test_torch_index_type_boundaries(torch_backend: Any, monkeypatch: pytest.MonkeyPatch,
                                     n: int, index_dtype: str) -> None:
    """The pair index lives in the smallest type holding n·n values; at each boundary, and
    across chunk boundaries, the counts are NumPy's."""
    import torch

    from segeval.engines import torch_backend as engine_torch

    assert torch_backend._index_dtype(n * n) == getattr(torch, index_dtype)
    monkeypatch.setattr(engine_torch, "GPU_CHUNK", 1001)
    rng = np.random.default_rng(n)
    reference = rng.integers(0, n, 5000).astype(np.int32)
    prediction = rng.integers(0, n, 5000).astype(np.int32)
    reference[0] = prediction[0] = n - 1  # the largest index, n·n − 1, occurs
    got = torch_backend.confusion(torch_backend.asarray(reference),
                                  torch_backend.asarray(prediction))
    assert as_dict(got) == oracle_confusion(reference, prediction)


@FAST
@given(data=st.data())
def test_torch_channel_and_soft_counts_equal_numpy(torch_backend: Any,
                                                   data: st.DataObject) -> None:
    shape = data.draw(hnp.array_shapes(min_dims=1, max_dims=3, min_side=1, max_side=5))
    n_channels = data.draw(st.integers(1, 3))
    full = (n_channels, *shape)
    reference = data.draw(hnp.arrays(np.uint8, full, elements=st.integers(0, 1)))
    prediction = data.draw(hnp.arrays(np.bool_, full))
    probability = data.draw(hnp.arrays(np.float64, full, elements=st.integers(0, 8))) / 8.0
    valid = data.draw(st.none() | hnp.arrays(np.bool_, shape))
    t = torch_backend.asarray
    t_valid = None if valid is None else t(valid)
    same_counts(torch_backend.channel_counts(t(reference), t(prediction), t_valid),
                NUMPY.channel_counts(reference, prediction, valid))
    same_counts(torch_backend.soft_counts(t(reference), t(probability), t_valid),
                NUMPY.soft_counts(reference, probability, valid))
    assert channel_rows(NUMPY.channel_counts(reference, prediction, valid)) == \
        oracle_channel_counts(reference, prediction, valid)


# Configurations of count_case, each with a generator of (prediction, reference) for a shape.
def _label_case(data: st.DataObject, shape: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
    dtype = data.draw(st.sampled_from([np.uint8, np.uint16, np.int16, np.int32, np.int64,
                                       np.bool_, np.float32]))
    elements = st.booleans() if dtype is np.bool_ else st.integers(0, 3)
    return (data.draw(hnp.arrays(dtype, shape, elements=elements)),
            data.draw(hnp.arrays(dtype, shape, elements=elements)))


def _probability_case(data: st.DataObject, shape: tuple[int, ...]
                      ) -> tuple[np.ndarray, np.ndarray]:
    dtype = data.draw(st.sampled_from([np.float32, np.float64, np.float16]))
    # values k/8 never sit on a threshold's rounding boundary; 0.5 is tested as a tie
    probability = data.draw(hnp.arrays(np.float64, shape, elements=st.integers(0, 8))) / 8.0
    probability = probability.astype(dtype)
    probability.flat[0] = 0.375  # at least one non-whole value: a probability map
    reference = data.draw(hnp.arrays(np.uint8, shape, elements=st.integers(0, 1)))
    return probability, reference


def _channel_case(data: st.DataObject, shape: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
    n_channels = data.draw(st.integers(2, 4))
    probability = data.draw(hnp.arrays(np.float64, (*shape, n_channels),
                                       elements=st.integers(0, 8))) / 8.0
    reference = data.draw(hnp.arrays(np.uint8, shape, elements=st.integers(0, n_channels - 1)))
    return probability.astype(data.draw(st.sampled_from([np.float32, np.float64]))), reference


def _logit_case(data: st.DataObject, shape: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
    n_channels = data.draw(st.integers(2, 4))
    logits = data.draw(hnp.arrays(np.float32, (*shape, n_channels),
                                  elements=st.integers(-4, 4)))
    reference = data.draw(hnp.arrays(np.int64, shape, elements=st.integers(0, n_channels - 1)))
    return logits, reference


CONFIGS = {
    "labels": ({}, _label_case),
    "labels-ignore": ({"ignore_index": 3}, _label_case),
    "threshold": ({"threshold": 0.3}, _probability_case),
    "threshold-tie": ({"threshold": 0.5}, _probability_case),
    "soft-binary": ({"soft": True}, _probability_case),
    "argmax": ({"channel_axis": -1}, _channel_case),
    "argmax-ignore": ({"channel_axis": -1, "ignore_index": 0}, _channel_case),
    "multilabel": ({"channel_axis": -1, "multilabel": True, "threshold": 0.25}, _channel_case),
    "soft-channels": ({"channel_axis": -1, "soft": True}, _channel_case),
    "soft-channels-ignore": ({"channel_axis": -1, "soft": True, "ignore_index": 1},
                             _channel_case),
    "softmax": ({"channel_axis": -1, "logits": "softmax"}, _logit_case),
    "sigmoid-multilabel": ({"channel_axis": -1, "logits": "sigmoid", "multilabel": True},
                           _logit_case),
}


@FAST
@given(data=st.data(), name=st.sampled_from(sorted(CONFIGS)))
def test_count_case_torch_equals_numpy(torch_backend: Any, data: st.DataObject,
                                       name: str) -> None:
    options, make_case = CONFIGS[name]
    config = EvalConfig.create(**options)
    shape = data.draw(hnp.array_shapes(min_dims=1, max_dims=3, min_side=1, max_side=5))
    prediction, reference = make_case(data, shape)
    if name == "sigmoid-multilabel":  # multi-label needs channel references
        reference = (np.arange(prediction.shape[-1]) == reference[..., None]).astype(np.uint8)
    expected = count_case(prediction, reference, config, NUMPY)
    same_counts(count_case(prediction, reference, config, torch_backend), expected)
    oracle = oracle_count_case(name, options, prediction, reference)
    if oracle is not None:
        assert as_dict(expected) == oracle


def oracle_count_case(name: str, options: dict, prediction: np.ndarray,
                      reference: np.ndarray) -> dict[tuple[int, int], int] | None:
    """The confusion that thresholding or argmax should give, voxel by voxel in Python."""
    if name.startswith("threshold"):
        threshold = options["threshold"]
        decided = [int(float(p) > threshold) for p in prediction.ravel().tolist()]
        return oracle_confusion(reference, np.array(decided))
    if name == "argmax":
        rows = prediction.reshape(-1, prediction.shape[-1]).tolist()
        decided = [row.index(max(row)) for row in rows]  # first of equal maxima
        return oracle_confusion(reference, np.array(decided))
    return None


def test_count_case_threshold_hand_worked() -> None:
    probability = np.array([0.9, 0.5, 0.3, 0.25, 0.0, 1.0], dtype=np.float32)
    reference = np.array([1, 1, 0, 1, 0, 0], dtype=np.uint8)
    counts = count_case(probability, reference, EvalConfig.create(threshold=0.25), NUMPY)
    # foreground where p > 0.25: [1, 1, 1, 0, 0, 1]
    assert as_dict(counts) == {(1, 1): 2, (0, 1): 2, (1, 0): 1, (0, 0): 1}
    counts = count_case(probability, reference, EvalConfig.create(threshold=0.5), NUMPY)
    # 0.5 is not above 0.5: foreground [1, 0, 0, 0, 0, 1]
    assert as_dict(counts) == {(1, 1): 1, (1, 0): 2, (0, 0): 2, (0, 1): 1}


@pytest.mark.parametrize("backend_name", ["numpy", "torch"])
@pytest.mark.parametrize("threshold", [0.1, 0.3])
def test_threshold_decision_does_not_depend_on_float_width(request: pytest.FixtureRequest,
                                                           backend_name: str,
                                                           threshold: float) -> None:
    """The same probability value must give the same decision in float32 and float64.

    float32(0.3) = 0.30000001192… is above 0.3, so "foreground where p > threshold" makes it
    foreground.  Comparing a float32 array with the Python float rounds the threshold to
    float32 as well (0.30000001192… > 0.30000001192… is false) and the voxel is lost.
    """
    backend = NUMPY if backend_name == "numpy" else request.getfixturevalue("torch_backend")
    value = np.float32(threshold)
    assert float(value) > threshold  # the premise: this float32 value lies above threshold
    reference = np.array([1, 0], dtype=np.uint8)
    config = EvalConfig.create(threshold=threshold)
    wide = count_case(np.array([value, 0.0], dtype=np.float64), reference, config, backend)
    narrow = count_case(np.array([value, 0.0], dtype=np.float32), reference, config, backend)
    assert as_dict(wide) == {(1, 1): 1, (0, 0): 1}
    assert as_dict(narrow) == as_dict(wide)


@pytest.mark.parametrize("backend_name", ["numpy", "torch"])
def test_count_case_reads_bool_by_truth_not_by_byte(request: pytest.FixtureRequest,
                                                   backend_name: str) -> None:
    """A NumPy bool may hold any non-zero byte for True: np.array(PIL mode-"1" image) holds
    255.  It is still True, i.e. label 1, never label 255."""
    backend = NUMPY if backend_name == "numpy" else request.getfixturevalue("torch_backend")
    mask = np.array([255, 0, 255, 1], dtype=np.uint8).view(np.bool_)
    assert mask.tolist() == [True, False, True, True]
    reference = np.array([1, 0, 1, 0], dtype=np.uint8)
    config = EvalConfig.create()
    assert as_dict(count_case(mask, reference, config, backend)) == {
        (1, 1): 2, (0, 0): 1, (0, 1): 1}
    assert as_dict(count_case(reference, mask, config, backend)) == {
        (1, 1): 2, (0, 0): 1, (1, 0): 1}
    assert as_dict(backend.confusion(backend.asarray(mask), backend.asarray(reference))) == {
        (1, 1): 2, (0, 0): 1, (1, 0): 1}


@pytest.mark.parametrize("byte_order", [">", "<"], ids=["big-endian", "little-endian"])
def test_count_case_torch_accepts_either_byte_order(torch_backend: Any, byte_order: str) -> None:
    """nibabel returns big-endian NIfTI data as big-endian arrays (dtype '>i2'); both
    backends must count them like native ones."""
    reference = np.array([[0, 1, 2], [2, 2, 0]], dtype=f"{byte_order}i2")
    prediction = np.array([[0, 1, 1], [2, 0, 0]], dtype=f"{byte_order}u2")
    want = {(0, 0): 2, (1, 1): 1, (2, 1): 1, (2, 2): 1, (2, 0): 1}
    config = EvalConfig.create()
    assert as_dict(count_case(prediction, reference, config, NUMPY)) == want
    assert as_dict(count_case(prediction, reference, config, torch_backend)) == want


# --- properties of whole reports ----------------------------------------------------------
LABELS = [1, 2, 3]


@st.composite
def case_lists(draw: st.DrawFn) -> tuple[list[np.ndarray], list[np.ndarray]]:
    n_cases = draw(st.integers(1, 4))
    predictions, references = [], []
    for _ in range(n_cases):
        shape = draw(hnp.array_shapes(min_dims=1, max_dims=3, min_side=1, max_side=5))
        values = st.integers(0, 3)
        predictions.append(draw(hnp.arrays(np.uint8, shape, elements=values)))
        references.append(draw(hnp.arrays(np.uint8, shape, elements=values)))
    return predictions, references


def metric_values(report: dict) -> list[tuple[str, float | None]]:
    """Every metric value of a report (per case, pooled, mean, micro, macro), labelled."""
    out = []
    for case in report["cases"]:
        for key, row in case["metrics"].items():
            out += [(f"{case['id']}/{key}/{m}", row[m]) for m in METRICS]
    for key, row in report["per_class"].items():
        out += [(f"pooled/{key}/{m}", row["pooled"][m]) for m in METRICS]
        out += [(f"mean/{key}/{m}", row["mean"][m]) for m in METRICS]
    for name in ("micro", "macro", "macro_imagewise"):
        out += [(f"{name}/{m}", report["summary"][name][m]) for m in METRICS]
    return out


@FAST
@given(cases=case_lists())
def test_pooled_and_micro_counts_are_sums(cases: tuple[list, list]) -> None:
    predictions, references = cases
    report = segeval.evaluate(predictions, references, labels=LABELS).to_dict()
    assert [c["status"] for c in report["cases"]] == ["ok"] * len(predictions)
    for key in map(str, LABELS):
        pooled = report["per_class"][key]["pooled"]
        for count in ("tp", "fp", "fn", "tn"):
            assert pooled[count] == sum(c["metrics"][key][count] for c in report["cases"])
    micro = report["summary"]["micro"]
    for count in ("tp", "fp", "fn", "tn"):
        assert micro[count] == sum(report["per_class"][k]["pooled"][count]
                                   for k in map(str, LABELS))
    # and the counts themselves are the voxels of each case, counted independently
    for case, prediction, reference in zip(report["cases"], predictions, references,
                                           strict=True):
        for label in LABELS:
            row = case["metrics"][str(label)]
            assert row["tp"] == int(((prediction == label) & (reference == label)).sum())
            assert row["tp"] + row["fp"] + row["fn"] + row["tn"] == reference.size


@FAST
@given(cases=case_lists(), data=st.data())
def test_case_order_changes_no_class_or_summary_value(cases: tuple[list, list],
                                                      data: st.DataObject) -> None:
    predictions, references = cases
    order = data.draw(st.permutations(range(len(predictions))))
    first = segeval.evaluate(predictions, references, labels=LABELS).to_dict()
    second = segeval.evaluate([predictions[i] for i in order], [references[i] for i in order],
                              labels=LABELS).to_dict()
    assert first["summary"]["micro"] == second["summary"]["micro"]
    assert first["summary"]["macro"] == second["summary"]["macro"]
    for key in map(str, LABELS):
        a, b = first["per_class"][key], second["per_class"][key]
        assert a["pooled"] == b["pooled"]
        assert a["n_used"] == b["n_used"] and a["n_empty"] == b["n_empty"]
        for reduction in ("mean", "std"):  # a mean may differ in the last bit with order
            assert_close_or_both_none(a[reduction], b[reduction])
    assert_close_or_both_none(
        {m: first["summary"]["macro_imagewise"][m] for m in METRICS},
        {m: second["summary"]["macro_imagewise"][m] for m in METRICS})
    # per-case rows move with their case
    for new_index, old_index in enumerate(order):
        assert second["cases"][new_index]["metrics"] == first["cases"][old_index]["metrics"]


def assert_close_or_both_none(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for key in a:
        if a[key] is None or b[key] is None:
            assert a[key] is b[key] is None, key
        else:
            assert a[key] == pytest.approx(b[key], rel=1e-12, abs=1e-15), key


@FAST
@given(cases=case_lists())
def test_metric_identities_and_range(cases: tuple[list, list]) -> None:
    predictions, references = cases
    report = segeval.evaluate(predictions, references, labels=LABELS).to_dict()
    rows = [c["metrics"][k] for c in report["cases"] for k in c["metrics"]]
    rows += [report["per_class"][k]["pooled"] for k in report["per_class"]]
    rows.append(report["summary"]["micro"])
    defined = 0
    for row in rows:
        if row["dice"] is None:
            assert row["iou"] is None and row["fbeta"] is None
            assert row["tp"] + row["fp"] + row["fn"] == 0
            continue
        defined += 1
        assert row["dice"] == pytest.approx(2 * row["iou"] / (1 + row["iou"]), rel=1e-12,
                                            abs=1e-15)
        assert row["fbeta"] == pytest.approx(row["dice"], rel=1e-12, abs=1e-15)
        assert row["dice"] == pytest.approx(
            2 * row["tp"] / (2 * row["tp"] + row["fp"] + row["fn"]), rel=1e-12, abs=1e-15)
    for name, value in metric_values(report):
        assert value is None or 0.0 <= value <= 1.0, (name, value)
    assert defined > 0 or all(r["tp"] + r["fp"] + r["fn"] == 0 for r in rows)


@FAST
@given(cases=case_lists())
def test_dice_and_iou_symmetric_in_prediction_and_reference(cases: tuple[list, list]) -> None:
    predictions, references = cases
    forward = segeval.evaluate(predictions, references, labels=LABELS).to_dict()
    backward = segeval.evaluate(references, predictions, labels=LABELS).to_dict()
    for metric in ("dice", "iou"):
        for case_f, case_b in zip(forward["cases"], backward["cases"], strict=True):
            for key in map(str, LABELS):
                assert case_f["metrics"][key][metric] == case_b["metrics"][key][metric]
        for key in map(str, LABELS):
            assert forward["per_class"][key]["pooled"][metric] == \
                backward["per_class"][key]["pooled"][metric]
        assert forward["summary"]["micro"][metric] == backward["summary"]["micro"][metric]
        assert forward["summary"]["macro"][metric] == backward["summary"]["macro"][metric]
    # precision and recall trade places
    for key in map(str, LABELS):
        assert forward["per_class"][key]["pooled"]["precision"] == \
            backward["per_class"][key]["pooled"]["recall"]


# --- an independent oracle of the whole pipeline ------------------------------------------
def oracle_report(predictions: list[np.ndarray], references: list[np.ndarray],
                  classes: list[int]) -> dict:
    """Dice and IoU, one-vs-rest with NumPy, every reduction written out longhand."""
    def dice(tp: int, fp: int, fn: int) -> float:
        return float("nan") if tp + fp + fn == 0 else 2 * tp / (2 * tp + fp + fn)

    def iou(tp: int, fp: int, fn: int) -> float:
        return float("nan") if tp + fp + fn == 0 else tp / (tp + fp + fn)

    def mean(values: list[float]) -> float:
        kept = [v for v in values if not math.isnan(v)]
        return sum(kept) / len(kept) if kept else float("nan")

    per_case = {}  # (case, class) → (tp, fp, fn)
    for i, (p, g) in enumerate(zip(predictions, references, strict=True)):
        for c in classes:
            tp = int(((p == c) & (g == c)).sum())
            fp = int(((p == c) & (g != c)).sum())
            fn = int(((p != c) & (g == c)).sum())
            per_case[i, c] = (tp, fp, fn)
    out: dict = {"case": {}, "pooled": {}, "mean": {}}
    for metric, f in (("dice", dice), ("iou", iou)):
        for (i, c), counts in per_case.items():
            out["case"][i, c, metric] = f(*counts)
        pooled_counts = {c: [sum(per_case[i, c][j] for i in range(len(predictions)))
                             for j in range(3)] for c in classes}
        for c in classes:
            out["pooled"][c, metric] = f(*pooled_counts[c])
            out["mean"][c, metric] = mean([out["case"][i, c, metric]
                                           for i in range(len(predictions))])
        out["macro", metric] = mean([out["pooled"][c, metric] for c in classes])
        out["macro_imagewise", metric] = mean([out["mean"][c, metric] for c in classes])
        out["micro", metric] = f(*[sum(pooled_counts[c][j] for c in classes) for j in range(3)])
    return out


def assert_number(got: float | None, want: float) -> None:
    if math.isnan(want):
        assert got is None
    else:
        assert got is not None and abs(got - want) <= 1e-12, (got, want)


def test_pipeline_matches_one_vs_rest_oracle() -> None:
    rng = np.random.default_rng(2024)
    classes = [1, 2, 3, 4]
    predictions, references = [], []
    for shape in [(6, 7, 5), (4, 9, 3), (8, 5, 6), (3, 3, 3)]:
        reference = rng.choice(5, size=shape, p=[0.4, 0.3, 0.15, 0.1, 0.05])
        prediction = np.where(rng.random(shape) < 0.7, reference, rng.integers(0, 5, shape))
        predictions.append(prediction.astype(np.int16))
        references.append(reference.astype(np.uint8))
    # case 3 has no class 4 anywhere (Dice undefined there), case 2 has no 3 in the reference
    predictions[3][predictions[3] == 4] = 0
    references[3][references[3] == 4] = 0
    references[2][references[2] == 3] = 1
    want = oracle_report(predictions, references, classes)
    assert math.isnan(want["case"][3, 4, "dice"]) and want["case"][2, 3, "dice"] == 0.0

    report = segeval.evaluate(predictions, references, labels=classes).to_dict()
    assert [c["key"] for c in report["classes"]] == ["1", "2", "3", "4"]
    for metric in ("dice", "iou"):
        for i, case in enumerate(report["cases"]):
            for c in classes:
                assert_number(case["metrics"][str(c)][metric], want["case"][i, c, metric])
        for c in classes:
            assert_number(report["per_class"][str(c)]["pooled"][metric],
                          want["pooled"][c, metric])
            assert_number(report["per_class"][str(c)]["mean"][metric], want["mean"][c, metric])
        for reduction in ("macro", "micro", "macro_imagewise"):
            assert_number(report["summary"][reduction][metric], want[reduction, metric])
    assert report["per_class"]["4"]["n_used"]["dice"] == 3
    assert report["per_class"]["4"]["n_empty"] == 1


def test_seed_000_macro_and_micro() -> None:
    # 000_7e10b580f4227f61.txt: rows are cases, columns classes 0..3 as binary masks
    true = np.array([[1, 0, 1, 0], [0, 1, 0, 1], [1, 1, 0, 0]])
    predict = np.array([[1, 1, 0, 0], [0, 1, 1, 0], [1, 0, 0, 1]])
    report = segeval.evaluate(predict, true, channel_axis=1, multilabel=True).to_dict()
    pooled = [report["per_class"][k]["pooled"]["dice"] for k in ("0", "1", "2", "3")]
    assert pooled == [1.0, 0.5, 0.0, 0.0]
    assert 1 - report["summary"]["macro"]["dice"] == pytest.approx(0.625, abs=1e-15)
    assert 1 - report["summary"]["micro"]["dice"] == pytest.approx(0.5, abs=1e-15)


# --- importing segeval for NumPy work does not import torch ------------------------------
def test_numpy_evaluation_does_not_import_torch() -> None:
    code = textwrap.dedent("""
        import sys
        import numpy as np
        import segeval
        prediction = np.array([[0, 1], [1, 1]], dtype=np.uint8)
        reference = np.array([[0, 1], [0, 1]], dtype=np.uint8)
        report = segeval.evaluate(prediction, reference)
        probability = segeval.evaluate(np.array([[0.2, 0.9], [0.7, 0.6]]), reference)
        report.to_json()
        print(report.to_dict()["per_class"]["1"]["pooled"]["tp"],
              report.to_dict()["per_class"]["1"]["pooled"]["fp"],
              probability.to_dict()["per_class"]["1"]["pooled"]["fp"],
              "torch" in sys.modules)
    """)
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=120, check=False)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["2", "1", "1", "False"]
