"""Reading masks (segeval.formats) and pairing folders (segeval.run.cases), from files written by
the other libraries: nibabel for NIfTI, SimpleITK for NRRD/MetaImage, Pillow for PNG and
NumPy for .npy.  Expected numbers come from the arrays the files were written from, with
one-vs-rest Dice computed here in NumPy, or by hand.
"""

from __future__ import annotations

import gzip
import io
import os
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk
from PIL import Image

import segeval
from segeval import errors
from segeval.errors import CaseError
from segeval.formats import case_id, load_mask

SPACING = (0.8, 0.9, 2.5)
ORIGIN_LPS = (1.0, 2.0, 3.0)
# The RAS affine of an ITK image with identity direction, SPACING and ORIGIN_LPS.
AFFINE_RAS = np.array([
    [-SPACING[0], 0.0, 0.0, -ORIGIN_LPS[0]],
    [0.0, -SPACING[1], 0.0, -ORIGIN_LPS[1]],
    [0.0, 0.0, SPACING[2], ORIGIN_LPS[2]],
    [0.0, 0.0, 0.0, 1.0],
])


# --- writers and an oracle -----------------------------------------------------------------
def labels_volume(seed: int, shape: tuple[int, ...] = (5, 6, 4), n_labels: int = 4
                  ) -> np.ndarray:
    """A label volume in index order (x, y, z) holding every label 0..n_labels-1."""
    rng = np.random.default_rng(seed)
    volume = rng.integers(0, n_labels, size=shape).astype(np.uint8)
    volume.flat[:n_labels] = np.arange(n_labels)
    return volume


def write_nifti(path: Path, array: np.ndarray, slope: float | None = None,
                affine: np.ndarray | None = None) -> Path:
    image = nib.Nifti1Image(array, np.diag([*SPACING, 1.0]) if affine is None else affine)
    if slope is not None:
        image.header.set_slope_inter(slope, 0.0)
    nib.save(image, str(path))
    return path


def write_itk(path: Path, array_xyz: np.ndarray) -> Path:
    image = sitk.GetImageFromArray(np.ascontiguousarray(array_xyz.transpose(2, 1, 0)))
    image.SetSpacing(SPACING)
    image.SetOrigin(ORIGIN_LPS)
    sitk.WriteImage(image, str(path))
    return path


def write_png(path: Path, image: Image.Image) -> Path:
    image.save(path, format="PNG")
    return path


def dice(prediction: np.ndarray, reference: np.ndarray, label: int) -> float | None:
    p, g = prediction == label, reference == label
    denominator = int(p.sum() + g.sum())
    return None if denominator == 0 else 2 * int((p & g).sum()) / denominator


def case_by_id(report: dict) -> dict[str, dict]:
    return {case["id"]: case for case in report["cases"]}


def assert_clean_error(case: dict, code: str) -> None:
    assert case["status"] == "error"
    assert case["error_code"] == code
    assert case["scored"] is False and case["metrics"] == {}
    assert "Traceback" not in case["message"] and "\n" not in case["message"]


# --- NIfTI (nibabel) ----------------------------------------------------------------------
@pytest.mark.parametrize("dtype", [np.uint8, np.int16], ids=["uint8", "int16"])
def test_nifti_round_trip_with_spacing(tmp_path: Path, dtype: type) -> None:
    volume = labels_volume(1).astype(dtype)
    volume[0, 0, 0] = 300 if dtype == np.int16 else 255
    mask = load_mask(write_nifti(tmp_path / "a.nii.gz", volume))
    assert mask.array.dtype == dtype
    np.testing.assert_array_equal(mask.array, volume)
    assert mask.spacing == pytest.approx(SPACING, rel=1e-6)
    np.testing.assert_allclose(mask.affine, np.diag([*SPACING, 1.0]), rtol=1e-6)


def test_nifti_uncompressed_and_4d_singleton_is_squeezed(tmp_path: Path) -> None:
    volume = labels_volume(2)
    path = write_nifti(tmp_path / "four.nii", volume[..., np.newaxis])
    assert nib.load(str(path)).shape == (5, 6, 4, 1)
    mask = load_mask(path)
    assert mask.array.shape == (5, 6, 4)
    np.testing.assert_array_equal(mask.array, volume)
    assert mask.spacing == pytest.approx(SPACING, rel=1e-6)
    # and it pairs with a 3-D reference of the same volume
    write_nifti(tmp_path / "three.nii.gz", volume)
    report = segeval.evaluate(str(path), str(tmp_path / "three.nii.gz"),
                              labels=[1, 2, 3]).to_dict()
    (case,) = report["cases"]
    assert case["status"] == "ok" and case["shape"] == [5, 6, 4]
    assert [case["metrics"][k]["dice"] for k in ("1", "2", "3")] == [1.0, 1.0, 1.0]


def test_nifti_scaled_whole_numbers_are_labels(tmp_path: Path) -> None:
    raw_prediction = labels_volume(3, n_labels=3).astype(np.int16)   # 0, 1, 2
    raw_reference = labels_volume(4, n_labels=3)
    write_nifti(tmp_path / "pred.nii.gz", raw_prediction, slope=2.0)  # holds 0, 2, 4
    write_nifti(tmp_path / "ref.nii.gz", 2 * raw_reference)
    assert nib.load(str(tmp_path / "pred.nii.gz")).dataobj.slope == 2.0  # really scaled
    mask = load_mask(tmp_path / "pred.nii.gz")
    np.testing.assert_array_equal(mask.array, 2 * raw_prediction)
    report = segeval.evaluate(str(tmp_path / "pred.nii.gz"), str(tmp_path / "ref.nii.gz"),
                              labels=[2, 4]).to_dict()
    (case,) = report["cases"]
    assert case["status"] == "ok" and case["labels_found"] == [0, 2, 4]
    for label in (2, 4):
        want = dice(2 * raw_prediction, 2 * raw_reference, label)
        assert case["metrics"][str(label)]["dice"] == pytest.approx(want, abs=1e-12)
        assert case["metrics"][str(label)]["tp"] == int(
            ((raw_prediction == label // 2) & (raw_reference == label // 2)).sum())


def test_nifti_scaled_to_fractions_is_non_integer_labels(tmp_path: Path) -> None:
    reference_dir, prediction_dir = tmp_path / "ref", tmp_path / "pred"
    reference_dir.mkdir()
    prediction_dir.mkdir()
    volume = labels_volume(5, n_labels=3).astype(np.int16)
    write_nifti(reference_dir / "half.nii.gz", volume, slope=0.5)  # 0, 0.5, 1.0
    write_nifti(prediction_dir / "half.nii.gz", volume)
    write_nifti(reference_dir / "good.nii.gz", volume)
    write_nifti(prediction_dir / "good.nii.gz", volume)
    report = segeval.evaluate(str(prediction_dir), str(reference_dir), labels=[1, 2]).to_dict()
    cases = case_by_id(report)
    assert_clean_error(cases["half"], errors.E_NON_INTEGER_LABELS)
    assert str(reference_dir / "half.nii.gz") in cases["half"]["message"]
    assert cases["good"]["status"] == "ok"
    assert [cases["good"]["metrics"][k]["dice"] for k in ("1", "2")] == [1.0, 1.0]
    assert report["summary"]["n_invalid"] == 1 and report["summary"]["n_scored"] == 1


NIFTI_DTYPES = [np.uint8, np.int8, np.uint16, np.int16, np.int32, np.uint32, np.int64,
                np.float32, np.float64]


@pytest.mark.parametrize("dtype", NIFTI_DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("layout", ["3d", "4d-singleton", "big-endian", "nifti2"])
def test_nifti_gz_reads_what_nibabel_reads(tmp_path: Path, dtype: type, layout: str) -> None:
    """segeval's own .nii.gz reader and nibabel agree on array, spacing and affine."""
    volume = labels_volume(10, (6, 5, 7), n_labels=9).astype(dtype)
    affine = AFFINE_RAS.copy()
    if layout == "4d-singleton":
        image = nib.Nifti1Image(volume[..., np.newaxis], affine, dtype=dtype)
    elif layout == "big-endian":
        header = nib.Nifti1Header(endianness=">")
        header.set_data_dtype(dtype)
        image = nib.Nifti1Image(volume, affine, header=header)
    elif layout == "nifti2":
        image = nib.Nifti2Image(volume, affine, dtype=dtype)
    else:
        image = nib.Nifti1Image(volume, affine, dtype=dtype)
    path = tmp_path / "v.nii.gz"
    nib.save(image, str(path))
    written = nib.load(str(path))
    assert written.get_data_dtype().newbyteorder("=") == np.dtype(dtype)
    assert layout != "big-endian" or written.header.endianness == ">"
    mask = load_mask(path)
    np.testing.assert_array_equal(mask.array, np.asanyarray(written.dataobj).reshape(6, 5, 7))
    np.testing.assert_array_equal(mask.array, volume)
    assert mask.array.dtype.newbyteorder("=") == np.dtype(dtype)  # the stored type, no cast
    assert mask.spacing == pytest.approx(written.header.get_zooms()[:3], rel=1e-7)
    np.testing.assert_allclose(mask.affine, written.affine, atol=1e-6)


def test_nifti_gz_in_two_gzip_members(tmp_path: Path) -> None:
    """A .nii.gz is a gzip file; gzip allows several members (pgzip, bgzip, appending writers
    produce them) and ``gzip -d``, Python's gzip and nibabel read them as one stream."""
    volume = labels_volume(11, (6, 5, 7))
    nib.save(nib.Nifti1Image(volume, np.diag([*SPACING, 1.0])), str(tmp_path / "v.nii"))
    raw = (tmp_path / "v.nii").read_bytes()
    path = tmp_path / "members.nii.gz"
    path.write_bytes(gzip.compress(raw[:352]) + gzip.compress(raw[352:]))
    assert gzip.decompress(path.read_bytes()) == raw  # a valid gzip file
    np.testing.assert_array_equal(np.asanyarray(nib.load(str(path)).dataobj), volume)
    np.testing.assert_array_equal(load_mask(path).array, volume)


@pytest.mark.parametrize("keep", [0.3, 0.6, 0.95])
def test_nifti_gz_truncated_is_unreadable(tmp_path: Path, keep: float) -> None:
    volume = np.random.default_rng(12).integers(0, 200, size=(20, 20, 20)).astype(np.uint8)
    full = write_nifti(tmp_path / "full.nii.gz", volume)
    data = full.read_bytes()
    path = tmp_path / "cut.nii.gz"
    path.write_bytes(data[: int(len(data) * keep)])
    with pytest.raises(CaseError) as raised:
        load_mask(path)
    assert raised.value.code == errors.E_UNREADABLE
    report = segeval.evaluate(str(path), str(full)).to_dict()
    assert_clean_error(report["cases"][0], errors.E_UNREADABLE)


# --- NRRD / MetaImage (SimpleITK) ---------------------------------------------------------
@pytest.mark.parametrize("suffix", [".nrrd", ".mha"])
def test_itk_file_loads_in_index_order(tmp_path: Path, suffix: str) -> None:
    volume = labels_volume(6)  # (x, y, z) = (5, 6, 4): no two axes alike
    path = write_itk(tmp_path / f"vol{suffix}", volume)
    assert sitk.ReadImage(str(path)).GetSize() == (5, 6, 4)
    mask = load_mask(path)
    assert mask.array.shape == (5, 6, 4)
    np.testing.assert_array_equal(mask.array, volume)
    assert mask.spacing == pytest.approx(SPACING, rel=1e-9)
    np.testing.assert_allclose(mask.affine, AFFINE_RAS, atol=1e-9)


def test_nrrd_prediction_pairs_with_nifti_reference(tmp_path: Path) -> None:
    reference_dir, prediction_dir = tmp_path / "gt", tmp_path / "pred"
    reference_dir.mkdir()
    prediction_dir.mkdir()
    volume = labels_volume(7)
    for name in ("same", "flipped"):
        write_nifti(reference_dir / f"{name}.nii.gz", volume, affine=AFFINE_RAS)
    write_itk(prediction_dir / "same.nrrd", volume)
    flipped = volume[:, ::-1, :]
    write_itk(prediction_dir / "flipped.nrrd", flipped)
    nifti, nrrd = load_mask(reference_dir / "same.nii.gz"), load_mask(prediction_dir / "same.nrrd")
    np.testing.assert_allclose(nrrd.affine, nifti.affine, atol=1e-6)  # one RAS frame

    report = segeval.evaluate(str(prediction_dir), str(reference_dir), labels=[1, 2, 3])
    cases = case_by_id(report.to_dict())
    assert cases["same"]["status"] == "ok" and cases["same"]["warnings"] == []
    assert [cases["same"]["metrics"][k]["dice"] for k in ("1", "2", "3")] == [1.0] * 3
    flipped_dice = [cases["flipped"]["metrics"][str(k)]["dice"] for k in (1, 2, 3)]
    assert flipped_dice == pytest.approx([dice(flipped, volume, k) for k in (1, 2, 3)],
                                         abs=1e-12)
    assert min(flipped_dice) < 1.0


# --- PNG (Pillow) -------------------------------------------------------------------------
def test_png_mode_l(tmp_path: Path) -> None:
    labels = np.array([[0, 1, 2, 255], [7, 0, 200, 1]], dtype=np.uint8)
    image = Image.fromarray(labels)
    assert image.mode == "L"
    mask = load_mask(write_png(tmp_path / "l.png", image))
    assert mask.array.dtype == np.uint8 and mask.spacing == (1.0, 1.0)
    np.testing.assert_array_equal(mask.array, labels)


def test_png_mode_p_indices_are_labels_whatever_the_colours(tmp_path: Path) -> None:
    labels = np.array([[0, 1, 2], [3, 2, 1], [0, 0, 3]], dtype=np.uint8)
    image = Image.fromarray(labels)
    # arbitrary colours, deliberately not ordered like the indices (index 0 is white)
    image.putpalette([255, 255, 255, 12, 34, 56, 0, 0, 0, 250, 10, 128])
    assert image.mode == "P"
    path = write_png(tmp_path / "p.png", image)
    assert Image.open(path).mode == "P"
    np.testing.assert_array_equal(load_mask(path).array, labels)
    reference = write_png(tmp_path / "ref.png", Image.fromarray(labels))
    report = segeval.evaluate(str(path), str(reference), labels=[1, 2, 3]).to_dict()
    assert [report["cases"][0]["metrics"][k]["dice"] for k in ("1", "2", "3")] == [1.0] * 3


def test_png_mode_i16_keeps_labels_above_255(tmp_path: Path) -> None:
    reference = np.array([[0, 300, 300], [1000, 1000, 65535]], dtype=np.uint16)
    prediction = np.array([[300, 300, 0], [1000, 0, 65535]], dtype=np.uint16)
    image = Image.fromarray(prediction)
    assert image.mode == "I;16"
    path = write_png(tmp_path / "pred.png", image)
    np.testing.assert_array_equal(load_mask(path).array, prediction)
    reference_path = write_png(tmp_path / "ref.png", Image.fromarray(reference))
    report = segeval.evaluate(str(path), str(reference_path),
                              labels=[300, 1000, 65535]).to_dict()
    metrics = report["cases"][0]["metrics"]
    # 300: TP 1, FP 1, FN 1 → 2/4;  1000: TP 1, FN 1 → 2/3;  65535: TP 1 → 1
    assert (metrics["300"]["tp"], metrics["300"]["fp"], metrics["300"]["fn"]) == (1, 1, 1)
    assert [metrics[k]["dice"] for k in ("300", "1000", "65535")] == pytest.approx(
        [0.5, 2 / 3, 1.0], abs=1e-12)


def test_png_mode_1_is_binary(tmp_path: Path) -> None:
    bits = np.array([[True, False, True], [False, False, True]])
    image = Image.fromarray(bits)
    assert image.mode == "1"
    mask = load_mask(write_png(tmp_path / "bit.png", image))
    np.testing.assert_array_equal(mask.array, bits.astype(np.uint8))
    assert set(np.unique(mask.array).tolist()) == {0, 1}


def test_png_mode_1_scores_like_the_same_mask_in_mode_l(tmp_path: Path) -> None:
    bits = np.array([[True, False, True, True], [False, False, True, False]])
    prediction = write_png(tmp_path / "bit.png", Image.fromarray(bits))
    reference = write_png(tmp_path / "gray.png", Image.fromarray(bits.astype(np.uint8)))
    report = segeval.evaluate(str(prediction), str(reference)).to_dict()
    (case,) = report["cases"]
    assert case["status"] == "ok"
    assert case["labels_found"] == [0, 1]
    assert case["metrics"]["1"]["tp"] == 4 and case["metrics"]["1"]["dice"] == 1.0


@pytest.mark.parametrize("mode", ["RGB", "RGBA"])
def test_png_colour_is_refused_with_the_fix(tmp_path: Path, mode: str) -> None:
    labels = np.array([[0, 1], [2, 0]], dtype=np.uint8)
    colour = write_png(tmp_path / "colour.png", Image.fromarray(labels).convert(mode))
    reference = write_png(tmp_path / "ref.png", Image.fromarray(labels))
    with pytest.raises(CaseError) as raised:
        load_mask(colour)
    assert raised.value.code == errors.E_RGB_MASK
    report = segeval.evaluate(str(colour), str(reference)).to_dict()
    (case,) = report["cases"]
    assert_clean_error(case, errors.E_RGB_MASK)
    assert mode in case["message"]
    assert "grayscale or palette" in case["message"]  # names the fix
    assert "Image.fromarray" in case["message"]


@pytest.mark.parametrize("damage", ["truncated", "garbage"])
def test_png_unreadable_is_a_case_error(tmp_path: Path, damage: str) -> None:
    labels = np.random.default_rng(8).integers(0, 255, size=(64, 64)).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(labels).save(buffer, format="PNG")
    data = buffer.getvalue()
    broken = data[: len(data) // 2] if damage == "truncated" else b"\x89PNG not really" * 8
    (tmp_path / "bad.png").write_bytes(broken)
    reference = write_png(tmp_path / "ref.png", Image.fromarray(labels))
    # garbage lacks the full PNG signature, so pre-flight names it before decoding
    expected = errors.E_UNREADABLE if damage == "truncated" else errors.E_FORMAT_MISMATCH
    with pytest.raises(CaseError) as raised:
        load_mask(tmp_path / "bad.png")
    assert raised.value.code == expected
    report = segeval.evaluate(str(tmp_path / "bad.png"), str(reference)).to_dict()
    (case,) = report["cases"]
    assert_clean_error(case, expected)
    assert "bad.png" in case["message"]


# --- PNG fast path (libpng through imagecodecs) against Pillow --------------------------
def _mask_like(rng: np.random.Generator, shape: tuple[int, int], high: int,
               dtype: type) -> np.ndarray:
    """Blocky labels with some noise, so that every PNG row filter gets used."""
    blocks = rng.integers(0, high, size=(max(1, shape[0] // 4 + 1), max(1, shape[1] // 4 + 1)))
    array = np.kron(blocks, np.ones((4, 4), dtype=np.int64))[: shape[0], : shape[1]]
    noise = rng.random(shape) < 0.05
    array[noise] = rng.integers(0, high, size=int(noise.sum()))
    return array.astype(dtype)


def _pillow_png(array: np.ndarray, **options: object) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG", **options)
    return buffer.getvalue()


PNG_WRITERS = {
    "pillow": lambda a: _pillow_png(a),
    "pillow-level0": lambda a: _pillow_png(a, compress_level=0),
    "pillow-optimize": lambda a: _pillow_png(a, optimize=True),
    "libpng": lambda a: __import__("imagecodecs").png_encode(a),
    "libpng-level9": lambda a: __import__("imagecodecs").png_encode(a, level=9),
}


@pytest.mark.parametrize("writer", sorted(PNG_WRITERS))
@pytest.mark.parametrize("dtype,high", [(np.uint8, 5), (np.uint8, 256), (np.uint16, 300),
                                        (np.uint16, 65536)])
def test_png_fast_path_equals_pillow(tmp_path: Path, writer: str, dtype: type,
                                     high: int) -> None:
    from segeval.formats import png

    rng = np.random.default_rng(high + len(writer))
    for index, shape in enumerate([(1, 1), (1, 7), (7, 1), (3, 5), (64, 64), (97, 130),
                                   (257, 31)]):
        array = _mask_like(rng, shape, high, dtype)
        path = tmp_path / f"{index}.png"
        path.write_bytes(PNG_WRITERS[writer](array))
        fast = png._read_fast(path)
        assert fast is not None, "the fast path must take 8/16-bit grayscale"
        with Image.open(path) as image:
            pillow = np.array(image)
        assert fast.dtype == pillow.dtype == dtype and fast.shape == shape
        np.testing.assert_array_equal(fast, pillow)
        np.testing.assert_array_equal(load_mask(path).array, array)


def test_png_fast_path_leaves_other_kinds_to_pillow(tmp_path: Path) -> None:
    from segeval.formats import png

    labels = np.array([[0, 1, 2], [3, 2, 1]], dtype=np.uint8)
    transparent = tmp_path / "trns.png"  # libpng would add an alpha channel for tRNS
    transparent.write_bytes(_pillow_png(labels, transparency=3))
    palette = tmp_path / "p.png"
    image = Image.fromarray(labels)
    image.putpalette([0, 0, 0, 9, 9, 9, 99, 99, 99, 200, 0, 0])
    image.save(palette)
    bits = tmp_path / "bits.png"
    Image.fromarray(labels.astype(bool)).save(bits)
    data = bytearray(_pillow_png(labels))
    data[28] = 1  # IHDR says Adam7 interlaced (the CRC is not fixed: only the IHDR is read)
    interlaced = tmp_path / "interlaced.png"
    interlaced.write_bytes(bytes(data))
    for path in (transparent, palette, bits, interlaced):
        assert png._read_fast(path) is None, path.name
    np.testing.assert_array_equal(load_mask(transparent).array, labels)
    np.testing.assert_array_equal(load_mask(palette).array, labels)
    np.testing.assert_array_equal(load_mask(bits).array, labels.astype(bool).astype(np.uint8))


def test_png_without_imagecodecs_reads_the_same(tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    from segeval.formats import png

    array = _mask_like(np.random.default_rng(4), (40, 50), 7, np.uint8)
    path = tmp_path / "m.png"
    path.write_bytes(_pillow_png(array))
    assert png._read_fast(path) is not None
    monkeypatch.setattr(png, "_png_decode", None)
    assert png._read_fast(path) is None
    np.testing.assert_array_equal(load_mask(path).array, array)


def _with_chunk(png: bytes, kind: bytes, body: bytes, crc: int | None = None) -> bytes:
    """``png`` with one more chunk right after IHDR (which ends at byte 33)."""
    import struct
    import zlib

    crc = zlib.crc32(kind + body) if crc is None else crc
    return png[:33] + struct.pack(">I", len(body)) + kind + body + struct.pack(">I", crc) \
        + png[33:]


def test_png_libpng_warning_sends_the_file_to_pillow_silently(tmp_path: Path,
                                                              capfd: pytest.CaptureFixture[str]
                                                              ) -> None:
    """A grayscale file with a broken ICC profile: libpng decodes it with a warning, Pillow
    without one.  Pillow's reading is used and nothing is printed."""
    import zlib

    from segeval.formats import png

    labels = _mask_like(np.random.default_rng(6), (16, 20), 4, np.uint8)
    profile = b"ICC Profile\0\0" + zlib.compress(b"not a colour profile" * 10)
    path = tmp_path / "icc.png"
    path.write_bytes(_with_chunk(_pillow_png(labels), b"iCCP", profile))
    assert png._read_fast(path) is None
    np.testing.assert_array_equal(load_mask(path).array, labels)
    assert capfd.readouterr().err == ""


def test_png_bad_ancillary_crc_is_refused_by_both_decoders(tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch
                                                           ) -> None:
    """libpng only warns about a tEXt chunk with a bad CRC; Pillow refuses the file.  The
    file must be refused whichever decoder is installed."""
    from segeval.formats import png

    labels = _mask_like(np.random.default_rng(7), (16, 20), 4, np.uint8)
    path = tmp_path / "crc.png"
    path.write_bytes(_with_chunk(_pillow_png(labels), b"tEXt", b"Comment\0hello", crc=1))
    codes = []
    for decoder in (png._png_decode, None):
        monkeypatch.setattr(png, "_png_decode", decoder)
        with pytest.raises(CaseError) as raised:
            load_mask(path)
        codes.append(raised.value.code)
    assert codes == [errors.E_UNREADABLE, errors.E_UNREADABLE]


def test_other_imagecodecs_warnings_are_handled_as_before(caplog: pytest.LogCaptureFixture
                                                          ) -> None:
    """Outside segeval's own decoding the handler changes nothing: with logging configured
    the record reaches the configured handlers; without, Python prints it to stderr."""
    import logging
    import subprocess
    import sys

    import segeval.formats.png  # noqa: F401  (installs the handler)

    with caplog.at_level(logging.WARNING, logger="imagecodecs"):
        logging.getLogger("imagecodecs").warning("a warning from elsewhere")
    assert "a warning from elsewhere" in caplog.text
    done = subprocess.run(
        [sys.executable, "-c", "import logging, segeval.formats.png; "
         "logging.getLogger('imagecodecs').warning('unconfigured warning')"],
        capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and done.stderr.strip() == "unconfigured warning"


def test_png_fast_path_refused_file_is_worded_by_pillow(tmp_path: Path) -> None:
    """A damaged grayscale PNG that libpng refuses goes to Pillow, whose error it gets."""
    from segeval.formats import png

    data = bytearray(_pillow_png(_mask_like(np.random.default_rng(5), (64, 64), 200,
                                            np.uint8)))
    data[60:80] = b"\xff" * 20  # inside the IDAT chunk: its CRC no longer matches
    path = tmp_path / "bad.png"
    path.write_bytes(bytes(data))
    assert png._read_fast(path) is None
    with pytest.raises(CaseError) as raised:
        load_mask(path)
    assert raised.value.code == errors.E_UNREADABLE and "bad.png" in str(raised.value)


# --- .npy ---------------------------------------------------------------------------------
def test_npy_plain_array(tmp_path: Path) -> None:
    volume = labels_volume(9).astype(np.int32)
    np.save(tmp_path / "v.npy", volume)
    mask = load_mask(tmp_path / "v.npy")
    assert mask.array.dtype == np.int32 and mask.spacing == (1.0, 1.0, 1.0)
    np.testing.assert_array_equal(mask.array, volume)


class _MakesDirectoryWhenUnpickled:
    """Unpickling this object calls os.mkdir(path): proof that a pickle was executed."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self) -> tuple:
        return (os.mkdir, (self.path,))


def test_npy_object_array_is_refused_and_never_unpickled(tmp_path: Path) -> None:
    sentinel = tmp_path / "unpickled"
    payload = np.empty((2, 2), dtype=object)
    payload[0, 0] = _MakesDirectoryWhenUnpickled(str(sentinel))
    np.save(tmp_path / "evil.npy", payload, allow_pickle=True)
    np.save(tmp_path / "ref.npy", np.zeros((2, 2), dtype=np.uint8))

    with pytest.raises(CaseError) as raised:
        load_mask(tmp_path / "evil.npy")
    assert raised.value.code == errors.E_UNREADABLE
    report = segeval.evaluate(str(tmp_path / "evil.npy"), str(tmp_path / "ref.npy")).to_dict()
    assert_clean_error(report["cases"][0], errors.E_UNREADABLE)
    assert not sentinel.exists()
    # the trap works: loading the same file with pickles allowed does run it
    np.load(tmp_path / "evil.npy", allow_pickle=True)
    assert sentinel.is_dir()


# --- case ids -----------------------------------------------------------------------------
@pytest.mark.parametrize("name,expected", [
    ("a.nii.gz", "a"), ("b.NRRD", "b"), ("c.png", "c"), ("d.mhd", "d"), ("x.y.nii.gz", "x.y"),
    ("e.nii", "e"), ("f.NII.GZ", "f"), ("g.mha", "g"), ("h.npy", "h"), ("case_01.nhdr", "case_01"),
    ("notes.txt", "notes.txt"),
])
def test_case_id(name: str, expected: str) -> None:
    assert case_id(name) == expected


# --- folder pairing -----------------------------------------------------------------------
SHAPE = (4, 5, 3)


@pytest.fixture
def folders(tmp_path: Path) -> dict:
    """gt/ and pred/ with: ok1, ok2 (scored), gone (no prediction), twice (two prediction
    files), an unmatched prediction, and text files that are not masks."""
    reference_dir, prediction_dir = tmp_path / "gt", tmp_path / "pred"
    reference_dir.mkdir()
    prediction_dir.mkdir()
    volumes = {}
    for seed, name in enumerate(("ok1", "ok2", "twice")):
        reference = labels_volume(20 + seed, SHAPE)
        prediction = np.where(np.arange(reference.size).reshape(SHAPE) % (3 + seed) == 0,
                              (reference + 1) % 4, reference).astype(np.uint8)
        write_nifti(reference_dir / f"{name}.nii.gz", reference)
        write_nifti(prediction_dir / f"{name}.nii.gz", prediction)
        volumes[name] = (prediction, reference)
    write_itk(prediction_dir / "twice.nrrd", volumes["twice"][0])
    # "gone": 3 voxels of label 1, 2 of label 2, no label 3
    gone = np.zeros(SHAPE, dtype=np.uint8)
    gone[0, 0, :] = 1
    gone[1, 1, :2] = 2
    write_nifti(reference_dir / "gone.nii.gz", gone)
    write_nifti(prediction_dir / "extra.nii.gz", gone)
    (reference_dir / "notes.txt").write_text("not a mask\n")
    (prediction_dir / "README.md").write_text("not a mask either\n")
    return {"gt": reference_dir, "pred": prediction_dir, "volumes": volumes}


def evaluate_folders(folders: dict, missing: str) -> dict:
    return segeval.evaluate(str(folders["pred"]), str(folders["gt"]), labels=[1, 2, 3],
                            missing=missing).to_dict()


def assert_scored_cases_correct(report: dict, folders: dict) -> None:
    cases = case_by_id(report)
    for name in ("ok1", "ok2"):
        prediction, reference = folders["volumes"][name]
        case = cases[name]
        assert case["status"] == "ok" and case["error_code"] is None
        assert case["shape"] == list(SHAPE)
        assert case["spacing"] == pytest.approx(SPACING, rel=1e-6)
        for label in (1, 2, 3):
            row = case["metrics"][str(label)]
            assert row["dice"] == pytest.approx(dice(prediction, reference, label), abs=1e-12)
            assert row["tp"] == int(((prediction == label) & (reference == label)).sum())
            assert row["fp"] == int(((prediction == label) & (reference != label)).sum())
            assert row["fn"] == int(((prediction != label) & (reference == label)).sum())


@pytest.mark.parametrize("missing", ["error", "empty", "skip"])
def test_folder_pairing(folders: dict, missing: str) -> None:
    report = evaluate_folders(folders, missing)
    cases = case_by_id(report)
    assert sorted(cases) == ["gone", "ok1", "ok2", "twice"]
    assert report["unmatched_predictions"] == [str(folders["pred"] / "extra.nii.gz")]
    assert report["ignored_files"] == sorted([str(folders["gt"] / "notes.txt"),
                                              str(folders["pred"] / "README.md")])

    twice = cases["twice"]
    assert_clean_error(twice, errors.E_DUPLICATE_CASE)
    assert "twice.nii.gz" in twice["message"] and "twice.nrrd" in twice["message"]

    gone = cases["gone"]
    assert gone["status"] == "missing" and gone["prediction"] is None
    if missing == "error":
        assert gone["error_code"] == errors.E_MISSING_PREDICTION
        assert gone["scored"] is False and gone["metrics"] == {}
    elif missing == "skip":
        assert gone["error_code"] is None
        assert gone["scored"] is False and gone["metrics"] == {}
    else:  # scored as an empty prediction: nothing found, everything missed
        assert gone["error_code"] is None and gone["scored"] is True
        one, two, three = (gone["metrics"][k] for k in ("1", "2", "3"))
        assert (one["tp"], one["fp"], one["fn"], one["tn"]) == (0, 0, 3, 57)
        assert (two["tp"], two["fp"], two["fn"], two["tn"]) == (0, 0, 2, 58)
        assert (one["dice"], two["dice"], one["recall"]) == (0.0, 0.0, 0.0)
        assert three["dice"] is None and (three["fn"], three["tn"]) == (0, 60)

    assert_scored_cases_correct(report, folders)
    scored = ["ok1", "ok2"] + (["gone"] if missing == "empty" else [])
    summary = report["summary"]
    assert summary["n_cases"] == 4 and summary["n_missing"] == 1
    assert summary["n_scored"] == len(scored)
    assert summary["n_invalid"] == (2 if missing == "error" else 1)
    for label in ("1", "2", "3"):
        pooled = report["per_class"][label]["pooled"]
        for count in ("tp", "fp", "fn", "tn"):
            assert pooled[count] == sum(cases[c]["metrics"][label][count] for c in scored)
    # the pooled false negatives of class 1 include the missing case's 3 voxels under "empty"
    ok_fn = sum(cases[c]["metrics"]["1"]["fn"] for c in ("ok1", "ok2"))
    assert report["per_class"]["1"]["pooled"]["fn"] == ok_fn + (3 if missing == "empty" else 0)


def test_folder_results_do_not_depend_on_workers(folders: dict) -> None:
    def without_run(workers: int) -> dict:
        report = segeval.evaluate(str(folders["pred"]), str(folders["gt"]), labels=[1, 2, 3],
                                  missing="empty", workers=workers).to_dict()
        assert report["run"]["workers"] == workers
        del report["run"]
        return report

    serial = without_run(1)
    assert without_run(2) == serial
    assert_scored_cases_correct(serial, folders)
