"""The fast paths give exactly what the simple paths give.

* the ISA-L/zlib NIfTI reader against nibabel's own loader, for every data type, layout,
  scaled images (which must fall back to nibabel), and broken files;
* counting in worker processes against counting in one process.
"""

from __future__ import annotations

import gzip

import nibabel as nib
import numpy as np
import pytest

import segeval
from segeval.errors import CaseError
from segeval.formats import Limits, load_mask
from segeval.formats.nifti import read_with_nibabel

DTYPES = [np.uint8, np.int8, np.uint16, np.int16, np.int32, np.uint32, np.int64, np.float32,
          np.float64]


def write_nii_gz(path, array, affine=None, slope=None, inter=None):
    image = nib.Nifti1Image(array, np.diag([0.7, 0.8, 2.5, 1.0]) if affine is None else affine,
                            dtype=array.dtype)
    image.header.set_data_dtype(array.dtype)
    if slope is not None:
        image.header.set_slope_inter(slope, inter or 0.0)
    nib.save(image, str(path))
    return path


@pytest.mark.parametrize("dtype", DTYPES)
def test_fast_reader_equals_nibabel(tmp_path, dtype):
    rng = np.random.default_rng(1)
    array = rng.integers(0, 7, size=(9, 8, 5)).astype(dtype)
    path = write_nii_gz(tmp_path / "a.nii.gz", array)
    fast, slow = load_mask(path), read_with_nibabel(path)
    assert fast.array.dtype == slow.array.dtype == dtype
    np.testing.assert_array_equal(fast.array, slow.array)
    np.testing.assert_array_equal(fast.array, array)
    assert fast.spacing == pytest.approx((0.7, 0.8, 2.5))
    np.testing.assert_allclose(fast.affine, slow.affine)


@pytest.mark.parametrize("dtype", [">i2", ">u2", ">f4", ">i8"])
def test_fast_reader_reads_big_endian_files(tmp_path, dtype):
    from segeval.formats.nifti import _read_gzip_fast

    array = np.random.default_rng(2).integers(0, 300, size=(6, 5, 4)).astype(dtype)
    image = nib.Nifti1Image(array, np.diag([0.7, 0.8, 2.5, 1.0]),
                            header=nib.Nifti1Header(endianness=">"))
    image.set_data_dtype(dtype)
    path = tmp_path / "big.nii.gz"
    nib.save(image, str(path))
    fast = _read_gzip_fast(path)
    assert fast is not None, "a big-endian header is NIfTI-1 too"
    slow = read_with_nibabel(path)
    assert fast.array.dtype == slow.array.dtype == np.dtype(dtype)
    np.testing.assert_array_equal(fast.array, slow.array)
    np.testing.assert_array_equal(fast.array, array)
    report = segeval.evaluate(str(path), str(path)).to_dict()
    label = int(array.max())
    assert report["per_class"][str(label)]["pooled"]["tp"] == int(
        np.count_nonzero(array == label))


def _nibabel_probe(path):
    """What the header probe gave before it read headers from the first bytes."""
    image = nib.load(str(path))
    shape = tuple(int(s) for s in image.header.get_data_shape())
    while len(shape) > 3 and shape[-1] == 1:
        shape = shape[:-1]
    return (shape, tuple(float(z) for z in image.header.get_zooms()[: len(shape)]),
            np.asarray(image.affine, dtype=float), image.header.get_data_dtype().str)


def _headers():
    rotated = np.array([[0.0, -0.9, 0.0, 10.0], [0.0, 0.0, 1.2, -5.0],
                        [-3.0, 0.0, 0.0, 7.5], [0.0, 0.0, 0.0, 1.0]])
    yield "sform", lambda h: h.set_sform(rotated, code=2)
    yield "qform-only", lambda h: (h.set_qform(rotated, code=1), h.set_sform(None, code=0))
    yield "no-codes", lambda h: (h.set_qform(None, code=0), h.set_sform(None, code=0))
    yield "big-endian", None


@pytest.mark.parametrize("suffix", [".nii", ".nii.gz"])
@pytest.mark.parametrize("kind,set_header", list(_headers()), ids=[k for k, _ in _headers()])
@pytest.mark.parametrize("shape", [(9, 8, 5), (7, 6), (5, 4, 3, 1), (4, 3, 2, 2)])
def test_header_from_first_bytes_equals_nibabel(tmp_path, suffix, kind, set_header, shape):
    from segeval.formats import check_file
    from segeval.formats.nifti import _header_from_head, probe

    array = np.arange(int(np.prod(shape)), dtype=np.int16).reshape(shape) % 5
    image = nib.Nifti1Image(array, np.diag([0.7, 0.8, 2.5, 1.0]))
    if kind == "big-endian":
        image = nib.Nifti1Image(array.astype(">i2"), np.diag([0.7, 0.8, 2.5, 1.0]),
                                header=nib.Nifti1Header(endianness=">"))
    else:
        set_header(image.header)
    path = tmp_path / f"a{suffix}"
    nib.save(image, str(path))
    head = check_file(path)
    assert _header_from_head(path, head) is not None, "the probe must not reopen the file"
    header = probe(path, head, Limits())
    shape_, zooms, affine, dtype = _nibabel_probe(path)
    assert header.shape == shape_ and header.spacing == zooms and header.dtype == dtype
    np.testing.assert_array_equal(header.affine, affine)


def test_nifti2_header_is_left_to_nibabel(tmp_path):
    from segeval.formats import check_file
    from segeval.formats.nifti import _header_from_head, probe

    path = tmp_path / "two.nii.gz"
    nib.save(nib.Nifti2Image(np.zeros((3, 4, 5), np.uint8), np.eye(4)), str(path))
    head = check_file(path)
    assert _header_from_head(path, head) is None
    assert probe(path, head, Limits()).shape == (3, 4, 5)


def test_fast_reader_keeps_fortran_layout_and_2d(tmp_path):
    array = np.arange(12, dtype=np.uint8).reshape(3, 4)
    path = write_nii_gz(tmp_path / "b.nii.gz", array, affine=np.eye(4))
    mask = load_mask(path)
    np.testing.assert_array_equal(mask.array, array)
    assert mask.array.flags.f_contiguous


def test_scaled_image_falls_back_to_nibabel_scaling(tmp_path):
    raw = np.array([[[0, 1], [2, 3]]], dtype=np.int16)
    path = write_nii_gz(tmp_path / "s.nii.gz", raw, slope=2.0, inter=1.0)
    mask = load_mask(path)
    np.testing.assert_array_equal(mask.array, raw * 2.0 + 1.0)


def test_truncated_gzip_is_a_case_error(tmp_path):
    path = write_nii_gz(tmp_path / "t.nii.gz", np.ones((20, 20, 20), np.uint8))
    data = gzip.decompress(path.read_bytes())
    path.write_bytes(gzip.compress(data[: len(data) // 2]))
    with pytest.raises(CaseError) as info:
        load_mask(path)
    assert info.value.code == "E_UNREADABLE" and "truncated" in info.value.problem


def test_data_beyond_the_header_size_is_refused_without_inflating_it(tmp_path):
    path = write_nii_gz(tmp_path / "bomb.nii.gz", np.ones((4, 4, 4), np.uint8))
    data = gzip.decompress(path.read_bytes())
    path.write_bytes(gzip.compress(data + bytes(50_000_000), compresslevel=9))
    assert path.stat().st_size < 200_000
    with pytest.raises(CaseError) as info:
        load_mask(path)
    assert info.value.code == "E_UNREADABLE" and "more than" in info.value.problem


def test_garbage_gz_is_unreadable_not_a_crash(tmp_path):
    path = tmp_path / "g.nii.gz"
    path.write_bytes(b"\x1f\x8b" + bytes(range(200)))
    with pytest.raises(CaseError) as info:
        load_mask(path)
    assert info.value.code == "E_UNREADABLE"


def test_workers_do_not_change_any_number(tmp_path):
    rng = np.random.default_rng(7)
    for folder in ("gt", "pred"):
        (tmp_path / folder).mkdir()
    for index in range(6):
        reference = rng.integers(0, 4, size=(12, 10, 8)).astype(np.uint8)
        prediction = np.where(rng.random(reference.shape) < 0.8, reference,
                              rng.integers(0, 4, size=reference.shape)).astype(np.uint8)
        write_nii_gz(tmp_path / "gt" / f"c{index}.nii.gz", reference)
        write_nii_gz(tmp_path / "pred" / f"c{index}.nii.gz", prediction)
    (tmp_path / "pred" / "c3.nii.gz").write_bytes(b"broken")
    one = segeval.evaluate(tmp_path / "pred", tmp_path / "gt", workers=1).to_dict()
    two = segeval.evaluate(tmp_path / "pred", tmp_path / "gt", workers=2).to_dict()
    for data in (one, two):
        data.pop("run")
    assert one == two
    assert [c["status"] for c in one["cases"]] == ["ok", "ok", "ok", "error", "ok", "ok"]


def test_small_trailing_padding_is_tolerated(tmp_path):
    array = np.arange(64, dtype=np.uint8).reshape(4, 4, 4)
    path = write_nii_gz(tmp_path / "pad.nii.gz", array)
    data = gzip.decompress(path.read_bytes())
    path.write_bytes(gzip.compress(data + bytes(100)))
    np.testing.assert_array_equal(load_mask(path).array, array)


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
@pytest.mark.parametrize("threshold", [0.1, 0.3, 0.5, 0.7])
def test_threshold_is_exact_for_every_float_width(dtype, threshold):
    # values just around the threshold in this dtype: the decision must be p > t exactly
    centre = dtype(threshold)
    values = np.array([np.nextafter(centre, dtype(0)), centre, np.nextafter(centre, dtype(1))],
                      dtype=dtype)
    report = segeval.evaluate(values, np.ones(3, np.uint8), threshold=threshold).to_dict()
    expected_tp = sum(float(v) > threshold for v in values)
    assert report["cases"][0]["metrics"]["1"]["tp"] == expected_tp


def test_count_cache_serves_identical_numbers_and_never_stale(tmp_path):
    rng = np.random.default_rng(11)
    for folder in ("gt", "pred"):
        (tmp_path / folder).mkdir()
    for index in range(3):
        reference = rng.integers(0, 3, size=(8, 7, 6)).astype(np.uint8)
        write_nii_gz(tmp_path / "gt" / f"c{index}.nii.gz", reference)
        write_nii_gz(tmp_path / "pred" / f"c{index}.nii.gz", np.roll(reference, index, axis=0))
    cache = tmp_path / "cache"
    first = segeval.evaluate(tmp_path / "pred", tmp_path / "gt", cache=cache, workers=1)
    assert first.run["cache_hits"] == 0 and len(list(cache.glob("*.json"))) == 3
    second = segeval.evaluate(tmp_path / "pred", tmp_path / "gt", cache=cache, workers=1)
    assert second.run["cache_hits"] == 3
    one, two = first.to_dict(), second.to_dict()
    one.pop("run"), two.pop("run")
    assert one == two
    # new bytes in one prediction: that case only is evaluated again, with its new numbers
    write_nii_gz(tmp_path / "pred" / "c2.nii.gz", np.zeros((8, 7, 6), np.uint8))
    third = segeval.evaluate(tmp_path / "pred", tmp_path / "gt", cache=cache, workers=1)
    assert third.run["cache_hits"] == 2
    assert third.to_dict()["cases"][2]["metrics"]["1"]["tp"] == 0
    # an option that changes counts misses the cache
    fourth = segeval.evaluate(tmp_path / "pred", tmp_path / "gt", cache=cache, workers=1,
                              threshold=0.7)
    assert fourth.run["cache_hits"] == 0
