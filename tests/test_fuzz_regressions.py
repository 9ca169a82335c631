"""Minimal reproducers of the kinds of input the fuzz run of issue 13 found, one test each.

Every hostile header here points at a decoy file outside the evaluated folder; a
:class:`~tests.corpus.DecoyWatch` (inotify) asserts that no process ever opened it.  The
decoy holds valid voxels, so a header that reached it would otherwise load and score.
"""

from __future__ import annotations

import gzip
import resource
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

import segeval
from segeval import errors
from segeval.errors import CaseError
from segeval.formats import Limits, load_mask
from tests.corpus import (
    DecoyWatch,
    itk_write,
    labels,
    nifti_bytes,
    npy_bytes,
    png_bytes,
    png_chunk,
)

NRRD_TOP = "NRRD0004\ntype: uint8\ndimension: 3\nsizes: 6 5 4\nencoding: raw\n"
SMALL = (6, 5, 4)
META_TOP = "ObjectType = Image\nNDims = 3\nDimSize = 6 5 4\nElementType = MET_UCHAR\n"
PADDING = "# " + "x" * 70_000 + "\n"  # pushes a line past the first 64 KiB
META_PADDING = "".join(f"Comment{i} = {'x' * 900}\n" for i in range(80))


@pytest.fixture
def decoy(tmp_path):
    """(folder, decoy path, watch): a folder to evaluate, a decoy next to it."""
    folder, outside = tmp_path / "pred", tmp_path / "outside"
    folder.mkdir()
    outside.mkdir()
    secret = outside / "secret.raw"
    secret.write_bytes(labels(29, SMALL).tobytes("F"))
    watch = DecoyWatch(secret)
    yield folder, secret, watch
    watch.close()


def test_the_decoy_watch_sees_an_open(decoy):
    """The harness itself: a read of the decoy is seen, and only once."""
    _, secret, watch = decoy
    assert not watch.opened()
    secret.read_bytes()
    assert watch.opened()
    assert not watch.opened()


def hostile_headers(secret: Path) -> dict[str, str]:
    """Header text → file name; each names the decoy in a way some check once missed."""
    absolute, parent = str(secret), "../outside/secret.raw"
    headers = {}
    for ref, where in ((absolute, "abs"), (parent, "parent")):
        for suffix in (".nrrd", ".nhdr"):
            headers[f"far_{where}{suffix}"] = NRRD_TOP + PADDING + f"data file: {ref}\n\n"
            headers[f"cr_{where}{suffix}"] = (NRRD_TOP + f"data file: {ref}\n\n").replace(
                "\n", "\r")
            headers[f"upper_{where}{suffix}"] = NRRD_TOP + f"DATAFILE: {ref}\n\n"
            headers[f"space_{where}{suffix}"] = NRRD_TOP + f" data file: {ref}\n\n"
            headers[f"list_{where}{suffix}"] = NRRD_TOP + f"data file: LIST\n{ref}\n"
            headers[f"twice_{where}{suffix}"] = (NRRD_TOP + "data file: ok.raw\n"
                                                 + f"data file: {ref}\n\n")
        for suffix in (".mha", ".mhd"):
            headers[f"space_{where}{suffix}"] = META_TOP + f" ElementDataFile = {ref}\n"
            headers[f"tab_{where}{suffix}"] = META_TOP + f"\tElementDataFile = {ref}\n"
            headers[f"colon_{where}{suffix}"] = META_TOP + f"ElementDataFile : {ref}\n"
            headers[f"far_{where}{suffix}"] = META_TOP + META_PADDING + \
                f"ElementDataFile = {ref}\n"
            headers[f"cr_{where}{suffix}"] = (META_TOP + f"ElementDataFile = {ref}\n"
                                              ).replace("\n", "\r")
            headers[f"list_{where}{suffix}"] = META_TOP + f"ElementDataFile = LIST\n{ref}\n"
            # found by the release fuzz run: a line without '=' joins the next line's key
            # in MetaIO, so the first ElementDataFile line is not MetaIO's
            headers[f"joined_{where}{suffix}"] = (META_TOP + "junk\nElementDataFile = ok.raw\n"
                                                  + f"ElementDataFile = {ref}\n")
    return headers


def test_no_header_reaches_a_data_file_outside_the_folder(decoy):
    """Issue 13 item 1: past 64 KiB, after leading white space, with CR-only line endings,
    in another key spelling, as a LIST, or given twice: never read, always refused."""
    folder, secret, watch = decoy
    (folder / "ok.raw").write_bytes(labels(29, SMALL).tobytes("F"))
    outcomes = {}
    for name, text in hostile_headers(secret).items():
        path = folder / name
        path.write_bytes(text.encode())
        try:
            load_mask(path, root=folder)
            outcomes[name] = "loaded"
        except CaseError as error:
            outcomes[name] = error.code
        assert not watch.opened(), f"{name}: the decoy outside the folder was opened"
    wrong = {name: code for name, code in outcomes.items()
             if code not in (errors.E_UNSAFE_PATH, errors.E_UNREADABLE)}
    assert not wrong, wrong
    # the ones that are not merely unreadable are named as unsafe
    assert outcomes["far_abs.nhdr"] == outcomes["space_abs.mha"] == errors.E_UNSAFE_PATH
    assert outcomes["cr_abs.nrrd"] == errors.E_UNREADABLE


@pytest.mark.parametrize("header,suffix", [
    (NRRD_TOP + "data file: data.raw\n", ".nhdr"),
    (NRRD_TOP + "datafile: data.raw\n\n", ".nrrd"),
    (NRRD_TOP.replace("\n", "\r\n") + "data file: data.raw\r\n", ".nhdr"),
    (META_TOP + "ElementDataFile = data.raw\n", ".mhd"),
    (META_TOP + "  ElementDataFile = data.raw\n", ".mha"),
])
def test_a_plain_data_file_next_to_the_header_is_read(tmp_path, header, suffix):
    """The control: the accepted forms still load, with the voxels of the data file."""
    volume = labels(29, SMALL)
    (tmp_path / "data.raw").write_bytes(volume.tobytes("F"))
    path = tmp_path / f"case{suffix}"
    path.write_bytes(header.encode())
    mask = load_mask(path, root=tmp_path)
    assert mask.array.shape == SMALL
    assert np.array_equal(mask.array, volume)


# --- item 2: silent wrong numbers ------------------------------------------------------------
def evaluate_pair(tmp_path: Path, prediction: bytes, reference: bytes, suffix: str,
                  **options) -> dict:
    """One case (``case{suffix}``) evaluated through the API; its report entry."""
    pred, gt = tmp_path / "pred", tmp_path / "gt"
    pred.mkdir(parents=True, exist_ok=True)
    gt.mkdir(parents=True, exist_ok=True)
    (pred / f"case{suffix}").write_bytes(prediction)
    (gt / f"case{suffix}").write_bytes(reference)
    report = segeval.evaluate(pred, gt, workers=1, **options).to_dict()
    (case,) = report["cases"]
    return case


@pytest.mark.parametrize("labels_option", [None, [1]])
def test_whole_floats_past_int64_are_refused_not_wrapped(tmp_path, labels_option):
    """Item 2a: ``scl_inter = 1e30`` makes every voxel a whole float beyond int64;
    ``astype(int64)`` wrapped them to INT64_MIN, counted as background.  And a float32
    voxel of 1.7e38 in a .npy."""
    volume = labels(3, SMALL)
    scaled = nib.Nifti1Image(volume, np.eye(4))
    scaled.header.set_slope_inter(1.0, 1e30)
    options = {} if labels_option is None else {"labels": labels_option}
    case = evaluate_pair(tmp_path, gzip.compress(scaled.to_bytes()),
                         nifti_bytes(volume, np.eye(4)), ".nii.gz", **options)
    assert case["error_code"] == errors.E_NON_INTEGER_LABELS, case
    assert "1e+30" in case["message"]
    huge = volume.astype(np.float32)
    huge[0, 0, 0] = 1.7e38
    case = evaluate_pair(tmp_path / "npy", npy_bytes(volume), npy_bytes(huge), ".npy",
                         **options)
    assert case["error_code"] == errors.E_NON_INTEGER_LABELS, case


def test_whole_floats_below_int64_are_still_labels(tmp_path):
    """The control: 2**62 as a float is a whole label and is counted as itself."""
    big = np.zeros(SMALL, np.float64)
    big[0, 0, :2] = 2.0**62
    case = evaluate_pair(tmp_path, npy_bytes(big), npy_bytes(big), ".npy")
    assert case["status"] == "ok", case
    assert case["labels_found"] == [0, 2**62]


def compressed_mha(volume: np.ndarray, path: Path) -> tuple[bytes, int]:
    """A zlib-compressed .mha written by SimpleITK, and where its payload starts."""
    data = itk_write(path, volume, compress=True).read_bytes()
    start = data.index(b"ElementDataFile = LOCAL\n") + len(b"ElementDataFile = LOCAL\n")
    return data, start


def test_truncated_or_corrupt_zlib_metaimage_is_refused(tmp_path):
    """Item 2b: SimpleITK returns a truncated or corrupt zlib payload filled from
    uninitialised memory, without an error: five reads, five arrays."""
    volume = labels(4, (20, 18, 16))
    data, start = compressed_mha(volume, tmp_path / "whole.mha")
    assert np.array_equal(load_mask(tmp_path / "whole.mha").array, volume)  # the control
    truncated = data[: start + (len(data) - start) // 2]
    corrupt = bytearray(data)
    corrupt[start + (len(data) - start) // 2] ^= 0xFF
    for name, content in (("truncated.mha", truncated), ("corrupt.mha", bytes(corrupt))):
        (tmp_path / name).write_bytes(content)
        with pytest.raises(CaseError) as raised:
            load_mask(tmp_path / name)
        assert raised.value.code == errors.E_UNREADABLE, name


def test_compressed_flag_spelled_oddly_still_checks_the_payload(tmp_path):
    """Found by the release fuzz run: ``CompressedData = True`` followed by a stray byte is
    still compressed data to MetaIO; the payload check must not be skipped."""
    volume = labels(4, (20, 18, 16))
    data, start = compressed_mha(volume, tmp_path / "whole.mha")
    odd = data.replace(b"CompressedData = True\n", b"CompressedData = True\xff", 1)
    (tmp_path / "odd.mha").write_bytes(odd)  # CompressedDataSize is now part of the value
    try:
        mask = load_mask(tmp_path / "odd.mha")
    except CaseError as error:
        assert error.code == errors.E_UNREADABLE
    else:
        assert np.array_equal(mask.array, volume)


def test_corrupt_zlib_in_a_detached_metaimage_is_refused(tmp_path):
    volume = labels(5, (20, 18, 16))
    compressed = zlib.compress(np.ascontiguousarray(volume.T).tobytes())
    (tmp_path / "case.zraw").write_bytes(compressed[: len(compressed) // 2])
    (tmp_path / "case.mhd").write_text(
        "ObjectType = Image\nNDims = 3\nDimSize = 20 18 16\nElementType = MET_UCHAR\n"
        "CompressedData = True\nElementDataFile = case.zraw\n")
    with pytest.raises(CaseError) as raised:
        load_mask(tmp_path / "case.mhd")
    assert raised.value.code == errors.E_UNREADABLE


@pytest.mark.parametrize("depth", [2, 4])
def test_two_and_four_bit_grayscale_png_keep_their_values(tmp_path, depth):
    """Item 2c: Pillow stretches 2/4-bit grayscale (label 1 → 85 or 17)."""
    values = (np.arange(7 * 9).reshape(7, 9) % (2**depth)).astype(np.uint8)
    rows = b"".join(b"\0" + np.packbits(np.unpackbits(row[:, None], axis=1)[:, 8 - depth:]
                                        ).tobytes() for row in values)
    ihdr = struct.pack(">IIBBBBB", 9, 7, depth, 0, 0, 0, 0)
    path = tmp_path / f"gray{depth}.png"
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr)
                     + png_chunk(b"IDAT", zlib.compress(rows)) + png_chunk(b"IEND", b""))
    assert np.array_equal(load_mask(path).array, values)


def test_nifti_fast_path_and_nibabel_agree_on_a_broken_extension(tmp_path):
    """Item 2d: a .nii.gz whose extension header is broken was accepted by the fast path
    and refused by nibabel.  Both now refuse it (nibabel's reading is the rule)."""
    image = nib.Nifti1Image(labels(6, SMALL), np.eye(4))
    image.header.extensions.append(nib.nifti1.Nifti1Extension(4, b"hello world!"))
    raw = bytearray(image.to_bytes())
    raw[352:356] = struct.pack("<i", 10**6)  # esize past the data offset
    path = tmp_path / "ext.nii.gz"
    path.write_bytes(gzip.compress(bytes(raw)))
    with pytest.raises(Exception):  # noqa: B017 - nibabel's own error type varies
        nib.load(str(path)).get_fdata()
    with pytest.raises(CaseError):
        load_mask(path)


def test_png_fast_path_and_pillow_agree_on_a_truncated_trns(tmp_path):
    """Item 2d: a grayscale PNG with a truncated tRNS chunk (valid CRC) was accepted by
    libpng and refused by Pillow; both paths now give Pillow's answer."""
    from PIL import Image

    values = labels(7, (6, 8))
    good = png_bytes(values)
    at = good.index(b"IDAT") - 4
    path = tmp_path / "trns.png"
    path.write_bytes(good[:at] + png_chunk(b"tRNS", b"\x00") + good[at:])
    try:
        with Image.open(path) as image:
            expected = np.array(image)
    except Exception:  # noqa: BLE001 - Pillow refuses: so must segeval
        with pytest.raises(CaseError):
            load_mask(path)
    else:
        assert np.array_equal(load_mask(path).array, expected)


# --- items 3 and 4: TIFF allocation and loops ------------------------------------------------
def tiff_bytes(width: int, height: int, next_ifd: int = 0, rows_per_strip: int = 1) -> bytes:
    """A little-endian classic TIFF with one 8-bit grey IFD at offset 8 (one strip of
    ``width`` bytes stored at the end); ``next_ifd`` is written as the next-IFD offset."""
    entries = [(256, 4, 1, width), (257, 4, 1, height), (258, 3, 1, 8), (259, 3, 1, 1),
               (262, 3, 1, 1), (273, 4, 1, 0), (277, 3, 1, 1), (278, 4, 1, rows_per_strip),
               (279, 4, 1, width)]
    data_at = 8 + 2 + 12 * len(entries) + 4
    body = b"".join(struct.pack("<HHII", tag, kind, count, data_at if tag == 273 else value)
                    for tag, kind, count, value in entries)
    return (b"II*\x00" + struct.pack("<I", 8) + struct.pack("<H", len(entries)) + body
            + struct.pack("<I", next_ifd) + bytes(width))


def test_tiff_control_loads(tmp_path):
    path = tmp_path / "ok.tif"
    path.write_bytes(tiff_bytes(4, 1))
    assert load_mask(path).array.shape in ((1, 4), (4, 1), (4,))


@pytest.mark.parametrize("height", [2**31 - 1, 2**32 - 1])
def test_tiff_announcing_billions_of_rows_is_refused_before_allocating(tmp_path, height):
    """Item 3: a 1 KiB TIFF with ImageLength 2**31 - 1 took 4-8 GiB in the header probe."""
    path = tmp_path / "tall.tif"
    path.write_bytes(tiff_bytes(4, height))
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with pytest.raises(CaseError) as raised:
        load_mask(path, limits=Limits(max_voxels=10**7))
    assert raised.value.code in (errors.E_TOO_LARGE, errors.E_UNREADABLE)
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 100_000  # KiB
    with pytest.raises(CaseError):  # within the voxel limit: refused by its strip count
        load_mask(path, limits=Limits(max_voxels=2**40))
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 100_000


def test_tiff_ifd_loop_is_refused_at_once(tmp_path):
    """Item 4: an IFD chain pointing back at itself made SimpleITK count pages for ever."""
    path = tmp_path / "loop.tif"
    path.write_bytes(tiff_bytes(4, 1, next_ifd=8))
    with pytest.raises(CaseError) as raised:
        load_mask(path)
    assert "loops" in raised.value.message


# --- item 5: internal errors on inputs that deserve a clear one ------------------------------
@pytest.mark.parametrize("dtype", ["complex64", "complex128", "<U3", "S2", "V4",
                                   "datetime64[s]"])
def test_npy_that_is_not_real_numbers_is_a_clear_error(tmp_path, dtype):
    array = np.zeros(SMALL, dtype=dtype)
    case = evaluate_pair(tmp_path, npy_bytes(array), npy_bytes(labels(1, SMALL)), ".npy")
    assert case["error_code"] == errors.E_UNSUPPORTED_FORMAT, case


def test_complex_nifti_is_a_clear_error(tmp_path):
    complex_image = nib.Nifti1Image(labels(1, SMALL).astype(np.complex64), np.eye(4))
    case = evaluate_pair(tmp_path, gzip.compress(complex_image.to_bytes()),
                         nifti_bytes(labels(1, SMALL), np.eye(4)), ".nii.gz")
    assert case["error_code"] == errors.E_UNSUPPORTED_FORMAT, case


def test_complex_arrays_are_a_clear_error():
    report = segeval.evaluate(labels(1, SMALL).astype(np.complex128), labels(1, SMALL))
    assert report.to_dict()["cases"][0]["error_code"] == errors.E_UNSUPPORTED_FORMAT


def test_non_finite_affine_is_refused_in_the_preflight(tmp_path):
    image = nib.Nifti1Image(labels(1, SMALL), np.eye(4))
    raw = bytearray(image.to_bytes())
    raw[280:284] = struct.pack("<f", float("inf"))  # srow_x[0]
    case = evaluate_pair(tmp_path, gzip.compress(bytes(raw)),
                         nifti_bytes(labels(1, SMALL), np.eye(4)), ".nii.gz")
    assert case["error_code"] == errors.E_BAD_SPACING, case


# --- item 6: decoder crashes refused before ITK sees the file ---------------------------------
@pytest.mark.parametrize("header", [
    "ObjectType = Image\nNDims = 3\nNDims = 2\nDimSize = 6 5 4\nElementType = MET_UCHAR\n"
    "ElementDataFile = LOCAL\n",
    "ObjectType = Image\nNDims = 12\nDimSize = " + " ".join(["1"] * 12) + "\n"
    "ElementType = MET_UCHAR\nElementDataFile = LOCAL\n",
])
def test_metaimage_headers_that_crash_metaio_are_refused(tmp_path, header):
    path = tmp_path / "bad.mha"
    path.write_bytes(header.encode() + bytes(120))
    with pytest.raises(CaseError) as raised:
        load_mask(path)
    assert raised.value.code in (errors.E_UNREADABLE, errors.E_BAD_DIMENSIONS)


@pytest.mark.parametrize("encoding", ["text", "ascii", "txt", "hex"])
def test_nrrd_text_encoding_is_refused(tmp_path, encoding):
    path = tmp_path / "text.nrrd"
    path.write_bytes(NRRD_TOP.replace("raw", encoding).encode() + b"\n" + bytes(range(120)))
    with pytest.raises(CaseError) as raised:
        load_mask(path)
    assert raised.value.code == errors.E_UNREADABLE
    assert "encoding" in raised.value.message


# --- item 7: the C library's stdout -----------------------------------------------------------
def test_json_on_stdout_stays_valid_when_metaio_prints(tmp_path):
    """MetaIO prints complaints on std::cout; ``--json -`` must still be one JSON document.
    (NDims 11 is refused before MetaIO now, so this calls ITK through the capture directly
    and checks nothing leaks past it.)"""
    path = tmp_path / "eleven.mha"
    path.write_bytes(("ObjectType = Image\nNDims = 11\nDimSize = " + " ".join(["1"] * 11)
                      + "\nElementType = MET_UCHAR\nElementDataFile = LOCAL\n").encode()
                     + bytes(4))
    code = ("import sys; from pathlib import Path; from segeval.formats import itk\n"
            "try:\n    itk.probe(Path(sys.argv[1]), 'MetaImageIO')\nexcept Exception:\n"
            "    pass\nprint('{}')\n")
    result = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True,
                            text=True, timeout=60)
    assert result.stdout == "{}\n", result.stdout
