"""A corpus of bad and hostile mask files, built at test time (nothing binary is committed).

Each bad case is a prediction/reference pair in two folders, with the ``error_code`` and the
key words its one-line message must hold; the good cases sit in the same folders, with the
arrays they were written from, so a test can check that their numbers survive their bad
neighbours.  The writers are the real libraries (nibabel, SimpleITK, Pillow, NumPy); the
hostile bytes (bombs, forged headers, links, FIFOs, pickles) are made by hand here.

``build_corpus(root)`` writes ``root/pred``, ``root/gt`` and ``root/outside`` (the files that
links and detached headers try to reach) and returns what each case should give.  The
smaller builders (``nifti_bytes``, ``gzip_bomb``, ``png_with_size``, ...) are used by the
tests directly too.
"""

from __future__ import annotations

import gzip
import io
import os
import pickle
import struct
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import nibabel as nib
import numpy as np
import SimpleITK as sitk
from PIL import Image

from segeval import errors

SHAPE = (16, 12, 8)  # every 3-D case, index order (x, y, z)
SPACING = (0.8, 0.9, 2.5)
ORIGIN = (-10.0, 20.0, 5.0)
AFFINE = np.array([
    [SPACING[0], 0.0, 0.0, ORIGIN[0]],
    [0.0, SPACING[1], 0.0, ORIGIN[1]],
    [0.0, 0.0, SPACING[2], ORIGIN[2]],
    [0.0, 0.0, 0.0, 1.0],
])
BOMB_MIB = 1024  # what the gzip bomb inflates to, beyond the data its header announces


# --- what a case should give ----------------------------------------------------------------
@dataclass(frozen=True)
class Bad:
    """A case that must fail alone: its code, the words of its message, and which file
    (``"pred"`` or ``"gt"``) the message must name."""

    code: str
    words: tuple[str, ...]
    names: str = "pred"


@dataclass(frozen=True)
class Good:
    """A case that must be scored exactly as a plain NumPy count of these arrays says."""

    prediction: np.ndarray
    reference: np.ndarray


@dataclass
class Corpus:
    root: Path
    pred: Path
    gt: Path
    outside: Path
    bad: dict[str, Bad] = field(default_factory=dict)
    good: dict[str, Good] = field(default_factory=dict)
    arrays: dict[str, Good] = field(default_factory=dict)  # bad cases with valid voxels
    files: dict[str, tuple[Path, Path]] = field(default_factory=dict)  # id → (pred, gt)
    unpickled_marker: Path | None = None  # exists only if a pickle was ever executed


# --- writers --------------------------------------------------------------------------------
def labels(seed: int, shape: tuple[int, ...] = SHAPE, n_labels: int = 3) -> np.ndarray:
    """A uint8 label array holding every label 0..n_labels-1."""
    array = np.random.default_rng(seed).integers(0, n_labels, size=shape).astype(np.uint8)
    array.flat[:n_labels] = np.arange(n_labels)
    return array


def nifti_bytes(array: np.ndarray, affine: np.ndarray = AFFINE, *, gz: bool = True,
                slope: float | None = None, nifti2: bool = False) -> bytes:
    """A single-file NIfTI (gzipped unless ``gz=False``) written by nibabel."""
    kind = nib.Nifti2Image if nifti2 else nib.Nifti1Image
    image = kind(array, affine)
    if slope is not None:
        image.header.set_slope_inter(slope, 0.0)
    raw = image.to_bytes()
    return gzip.compress(raw, mtime=0) if gz else raw


def nifti_header_bytes(shape: tuple[int, ...], dtype: type = np.uint8, *,
                       nifti2: bool = False, offset: int | None = None) -> bytes:
    """A NIfTI header (and its 4 extension bytes) announcing ``shape``, with no data."""
    kind = nib.Nifti2Image if nifti2 else nib.Nifti1Image
    header = kind(np.zeros((1, 1, 1), dtype), AFFINE).header.copy()
    header.set_data_shape(shape)
    header.set_data_offset(header.single_vox_offset if offset is None else offset)
    return header.binaryblock + b"\0" * 4


def itk_write(path: Path, array_xyz: np.ndarray, *, vector: bool = False,
              compress: bool = False) -> Path:
    """NRRD/MetaImage via SimpleITK from an index-order array (SimpleITK wants z, y, x)."""
    if vector:  # (x, y, z, c) → a 3-D image with c components per voxel
        image = sitk.GetImageFromArray(np.ascontiguousarray(array_xyz.transpose(2, 1, 0, 3)),
                                       isVector=True)
    else:
        image = sitk.GetImageFromArray(np.ascontiguousarray(array_xyz.T))
    sitk.WriteImage(image, str(path), useCompression=compress)
    return path


def png_bytes(array: np.ndarray, mode: str = "L") -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array.astype(np.uint8)).convert(mode).save(buffer, format="PNG")
    return buffer.getvalue()


def npy_bytes(array: np.ndarray, allow_pickle: bool = False) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=allow_pickle)
    return buffer.getvalue()


def png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def png_with_size(width: int, height: int) -> bytes:
    """A well-formed PNG (valid CRCs) whose header claims ``width × height`` 8-bit grey pixels
    while its data holds two rows: tiny on disk, huge if anyone believed it."""
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    rows = zlib.compress(b"\0" * 2 * (width + 1))
    return (b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", header) + png_chunk(b"IDAT", rows)
            + png_chunk(b"IEND", b""))


def gzip_bomb(prefix: bytes, extra_mib: int = BOMB_MIB) -> bytes:
    """A valid single-member gzip stream: ``prefix`` then ``extra_mib`` MiB of zeros.

    The zeros are one deflate block (1 MiB of zeros after a full flush, about 1 KiB)
    repeated: after ``Z_FULL_FLUSH`` the compressor starts afresh, so the same input gives
    the same bytes, and a 1 GiB bomb costs a few milliseconds to build.  The CRC and size
    in the trailer are right, so ``gzip -d`` accepts it.
    """
    compressor = zlib.compressobj(9, zlib.DEFLATED, 31)
    zeros = bytes(1 << 20)
    head = compressor.compress(prefix) + compressor.flush(zlib.Z_FULL_FLUSH)
    block = compressor.compress(zeros) + compressor.flush(zlib.Z_FULL_FLUSH)
    crc = zlib.crc32(prefix)
    for _ in range(extra_mib):
        crc = zlib.crc32(zeros, crc)
    size = len(prefix) + extra_mib * len(zeros)
    # each copy of ``block`` inflates to one MiB of zeros; b"\x03\x00" is an empty final block
    return b"".join([head, block * extra_mib, b"\x03\x00",
                     struct.pack("<II", crc, size & 0xFFFFFFFF)])


def nrrd_header(data_file: str, sizes: tuple[int, ...] = SHAPE) -> str:
    """A NRRD header whose data live in ``data_file`` (a detached header, or an attached
    ``.nrrd`` that names a data file all the same: NRRD allows both)."""
    return ("NRRD0004\n" + "type: uint8\n" + f"dimension: {len(sizes)}\n"
            + "sizes: " + " ".join(map(str, sizes)) + "\n" + "encoding: raw\n"
            + "space: left-posterior-superior\n"
            + "space directions: (1,0,0) (0,1,0) (0,0,1)\n"
            + f"data file: {data_file}\n\n")


def metaimage_header(data_file: str, sizes: tuple[int, ...] = SHAPE) -> str:
    return ("ObjectType = Image\n" + f"NDims = {len(sizes)}\n"
            + "DimSize = " + " ".join(map(str, sizes)) + "\n" + "ElementType = MET_UCHAR\n"
            + f"ElementDataFile = {data_file}\n")


def metaimage_with_negative_ndims(spacing_line: bool) -> bytes:
    """A 6×5×4 MetaImage whose header says ``NDims = -1``.  SimpleITK's
    ``ReadImageInformation`` (segeval's pre-flight) dies on it: with an ``ElementSpacing``
    line it segfaults, without one it loops for ever."""
    return ("ObjectType = Image\nNDims = -1\n"
            + ("ElementSpacing = 1 1 1\n" if spacing_line else "")
            + "DimSize = 6 5 4\nElementType = MET_UCHAR\nElementDataFile = LOCAL\n"
            ).encode() + bytes(120)


class RunsWhenUnpickled:
    """Unpickling this calls ``os.mkdir(path)``: proof that a pickle was executed."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self) -> tuple:
        return (os.mkdir, (self.path,))


# --- the corpus -----------------------------------------------------------------------------
def build_corpus(root: Path) -> Corpus:
    """Write every case of the folder run (see the module docstring) under ``root``."""
    pred, gt, outside = root / "pred", root / "gt", root / "outside"
    for folder in (pred, gt, outside):
        folder.mkdir(parents=True)
    corpus = Corpus(root, pred, gt, outside, unpickled_marker=root / "UNPICKLED")
    reference = labels(1)
    ref_nii = nifti_bytes(reference)

    def put(case: str, pred_name: str, pred_bytes: bytes | None, gt_name: str,
            gt_bytes: bytes) -> tuple[Path, Path]:
        p, g = pred / pred_name, gt / gt_name
        if pred_bytes is not None:
            p.write_bytes(pred_bytes)
        g.write_bytes(gt_bytes)
        corpus.files[case] = (p, g)
        return p, g

    def bad(case: str, pred_suffix: str, pred_bytes: bytes | None, expected: Bad,
            gt_suffix: str = ".nii.gz", gt_bytes: bytes = ref_nii) -> tuple[Path, Path]:
        corpus.bad[case] = expected
        return put(case, case + pred_suffix, pred_bytes, case + gt_suffix, gt_bytes)

    # --- good cases, one per format family ---------------------------------------------
    good_pred = labels(2)
    put("good_nii", "good_nii.nii.gz", nifti_bytes(good_pred), "good_nii.nii.gz", ref_nii)
    corpus.good["good_nii"] = Good(good_pred, reference)
    square_ref = np.array([[1, 1, 0, 0], [1, 1, 0, 0], [0, 0, 2, 2], [0, 0, 2, 2]])
    square_pred = np.array([[1, 0, 0, 0], [1, 1, 0, 0], [0, 0, 2, 0], [0, 0, 0, 0]])
    put("good_png", "good_png.png", png_bytes(square_pred), "good_png.png",
        png_bytes(square_ref))
    corpus.good["good_png"] = Good(square_pred, square_ref)
    itk_write(pred / "good_nrrd.nrrd", labels(3))
    itk_write(gt / "good_nrrd.nrrd", labels(4))
    corpus.files["good_nrrd"] = (pred / "good_nrrd.nrrd", gt / "good_nrrd.nrrd")
    corpus.good["good_nrrd"] = Good(labels(3), labels(4))
    put("good_npy", "good_npy.npy", npy_bytes(labels(5).astype(np.int32)), "good_npy.npy",
        npy_bytes(labels(6)))
    corpus.good["good_npy"] = Good(labels(5), labels(6))
    raw = labels(7, n_labels=2)  # 0/1 stored, × scl_slope 2 → labels 0 and 2: whole numbers
    put("scaled_whole", "scaled_whole.nii.gz", nifti_bytes(raw, slope=2.0),
        "scaled_whole.nii.gz", ref_nii)
    corpus.good["scaled_whole"] = Good(2 * raw, reference)
    # a link that stays inside the folder is fine
    put("link_inside", "link_inside.nii.gz", None, "link_inside.nii.gz", ref_nii)
    (pred / "link_inside.nii.gz").symlink_to("good_nii.nii.gz")
    corpus.good["link_inside"] = Good(good_pred, reference)

    # --- truncated -------------------------------------------------------------------------
    noise = np.random.default_rng(9).integers(0, 256, size=SHAPE).astype(np.uint8)
    bad("truncated_niigz", ".nii.gz", nifti_bytes(noise)[:-300],
        Bad(errors.E_UNREADABLE, ("truncated", "header announces")))
    picture = np.random.default_rng(10).integers(0, 3, size=(64, 64)).astype(np.uint8)
    data = png_bytes(picture)
    bad("truncated_png", ".png", data[: len(data) // 2],
        Bad(errors.E_UNREADABLE, ("truncated",)), ".png", png_bytes(picture))
    full_nrrd = itk_write(outside / "full.nrrd", noise).read_bytes()
    bad("truncated_nrrd", ".nrrd", full_nrrd[:-300], Bad(errors.E_UNREADABLE, ("cannot read",)),
        ".nrrd", full_nrrd)  # the same geometry: the pre-flight passes, the data run out
    data = npy_bytes(noise)
    bad("truncated_npy", ".npy", data[:-300],
        Bad(errors.E_UNREADABLE, ("truncated", "header announces")), ".npy", data)

    # --- garbage under every extension, and garbage behind the right magic bytes -----------
    garbage = np.random.default_rng(11).bytes(4096)
    for suffix in (".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd", ".png", ".npy",
                   ".tif", ".tiff"):
        case = "garbage_" + suffix.strip(".").replace(".", "")
        bad(case, suffix, garbage,
            Bad(errors.E_FORMAT_MISMATCH, (f"named {suffix}", "its bytes show")))
    for suffix, magic in ((".nii.gz", b"\x1f\x8b"), (".nrrd", b"NRRD0004\n"),
                          (".png", b"\x89PNG\r\n\x1a\n"), (".npy", b"\x93NUMPY"),
                          (".tif", b"II*\x00"), (".nii", struct.pack("<i", 348))):
        case = "magic_" + suffix.strip(".").replace(".", "")
        bad(case, suffix, magic + garbage, Bad(errors.E_UNREADABLE, ("cannot read",)))
    bad("empty", ".nii.gz", b"", Bad(errors.E_EMPTY_FILE, ("empty", "0 bytes")))

    # --- shapes and geometry ---------------------------------------------------------------
    bad("wrong_shape", ".nii.gz", nifti_bytes(labels(12, (16, 12, 9))),
        Bad(errors.E_SHAPE_MISMATCH, ("shape (16, 12, 9)", "(16, 12, 8)")))
    bad("transposed", ".nii.gz", nifti_bytes(labels(13, SHAPE[::-1])),
        Bad(errors.E_SHAPE_MISMATCH, ("shape (8, 12, 16)", "permuted")))
    bad("wrong_shape_png", ".png", png_bytes(labels(14, (4, 5))),
        Bad(errors.E_SHAPE_MISMATCH, ("shape (4, 5)", "(4, 4)")), ".png",
        png_bytes(square_ref))
    # right voxels on another grid: refused with --geometry strict, scored with shape/off
    stretched = AFFINE.copy()
    stretched[2, 2] = 2 * SPACING[2]
    flipped = AFFINE.copy()
    flipped[0, 0] = -SPACING[0]  # x runs right-to-left: LAS instead of RAS
    shifted = AFFINE.copy()
    shifted[:3, 3] += (5.0, 0.0, 0.0)
    for seed, (case, affine, words) in enumerate([
        ("wrong_spacing", stretched, ("spacing (0.8, 0.9, 5) vs (0.8, 0.9, 2.5)",
                                      "--geometry shape")),
        ("flipped", flipped, ("orientation LAS vs RAS", "--geometry shape")),
        ("shifted_origin", shifted, ("origin (-5, 20, 5) vs (-10, 20, 5) mm",)),
    ], start=15):
        bad(case, ".nii.gz", nifti_bytes(labels(seed), affine),
            Bad(errors.E_GEOMETRY_MISMATCH, words))
        corpus.arrays[case] = Good(labels(seed), reference)

    # --- values ----------------------------------------------------------------------------
    values = labels(18).astype(np.float32)
    values[3, 4, 5] = np.nan
    bad("nan", ".nii.gz", nifti_bytes(values), Bad(errors.E_NAN, ("NaN",)))
    values[3, 4, 5] = np.inf
    bad("inf", ".nii.gz", nifti_bytes(values), Bad(errors.E_NAN, ("infinite",)))
    negative = labels(19).astype(np.int16)
    negative[1, 2, 3] = -3
    bad("negative", ".nii.gz", nifti_bytes(negative),
        Bad(errors.E_NEGATIVE_LABEL, ("negative label -3",)))
    fractional = labels(20).astype(np.float32)
    fractional[0, 0, 0] = 1.5
    bad("fractional_reference", ".nii.gz", nifti_bytes(labels(21)),
        Bad(errors.E_NON_INTEGER_LABELS, ("non-integer",), names="gt"),
        ".nii.gz", nifti_bytes(fractional))
    above_one = labels(22).astype(np.float32) + 0.25  # not whole, so a probability map
    bad("float_labels", ".nii.gz", nifti_bytes(above_one),
        Bad(errors.E_PROBABILITY_RANGE, ("outside [0, 1]", "max 2.25")))
    unexpected = labels(23)
    unexpected[2, 2, 2] = 7
    bad("unexpected_label", ".nii.gz", nifti_bytes(unexpected),
        Bad(errors.E_UNEXPECTED_LABEL, ("labels [7]", "expected only [0, 1, 2]")))
    bad("scaled_fraction", ".nii.gz", nifti_bytes(labels(24)),
        Bad(errors.E_NON_INTEGER_LABELS, ("non-integer",), names="gt"),
        ".nii.gz", nifti_bytes(labels(25), slope=0.5))  # 0, 0.5, 1.0

    # --- not one label per voxel -----------------------------------------------------------
    bad("time_axis", ".nii.gz", nifti_bytes(labels(26, (*SHAPE, 3))),
        Bad(errors.E_BAD_DIMENSIONS, ("4-D", "(16, 12, 8, 3)")))
    itk_write(pred / "vector_nrrd.nrrd", labels(27, (*SHAPE, 3)), vector=True)
    bad("vector_nrrd", ".nrrd", None, Bad(errors.E_RGB_MASK, ("3 components",)))
    rgb = np.zeros(SHAPE, dtype=[("R", "u1"), ("G", "u1"), ("B", "u1")])
    bad("rgb24_nifti", ".nii.gz", gzip.compress(nib.Nifti1Image(rgb, AFFINE).to_bytes()),
        Bad(errors.E_RGB_MASK, ("3 components",)))
    square = png_bytes(square_ref)
    bad("rgb_png", ".png", png_bytes(square_pred, "RGB"),
        Bad(errors.E_RGB_MASK, ("RGB colour image", "grayscale")), ".png", square)
    bad("rgba_png", ".png", png_bytes(square_pred, "RGBA"),
        Bad(errors.E_RGB_MASK, ("RGBA colour image", "grayscale")), ".png", square)
    bad("fake_png", ".png", gzip.compress(square, mtime=0),
        Bad(errors.E_FORMAT_MISMATCH, ("named .png", "gzip")), ".png", square)

    # --- sizes that are lies, and bombs ----------------------------------------------------
    bad("huge_nifti2", ".nii", nifti_header_bytes((100_000,) * 3, nifti2=True) + bytes(64),
        Bad(errors.E_TOO_LARGE, ("1000000000000000 voxels", "--max-voxels")))
    bad("huge_nifti1", ".nii.gz",
        gzip.compress(nifti_header_bytes((30_000,) * 3) + bytes(64), mtime=0),
        Bad(errors.E_TOO_LARGE, ("27000000000000 voxels", "--max-voxels")))
    bad("huge_png", ".png", png_with_size(100_000, 100_000),
        Bad(errors.E_TOO_LARGE, ("bomb guard", "10000000000 pixels")), ".png", square)
    bad("big_png_warning", ".png", png_with_size(10_000, 10_000),  # Pillow only warns here
        Bad(errors.E_TOO_LARGE, ("bomb guard", "100000000 pixels")), ".png", square)
    bad("gzip_bomb", ".nii.gz", gzip_bomb(nifti_header_bytes(SHAPE) + labels(28).tobytes("F")),
        Bad(errors.E_UNREADABLE, ("more than", "without inflating")))

    # --- paths that leave the folder -------------------------------------------------------
    (outside / "outside.raw").write_bytes(labels(29).tobytes("F"))
    bad("nhdr_parent", ".nhdr", nrrd_header("../outside/outside.raw").encode(),
        Bad(errors.E_UNSAFE_PATH, ("'../outside/outside.raw'", "not a plain file name")))
    bad("nhdr_absolute", ".nhdr", nrrd_header(str(outside / "outside.raw")).encode(),
        Bad(errors.E_UNSAFE_PATH, (str(outside / "outside.raw"), "not a plain file name")))
    (outside / "elsewhere.nii.gz").write_bytes(nifti_bytes(labels(30)))
    bad("symlink_out", ".nii.gz", None,
        Bad(errors.E_UNSAFE_PATH, ("symbolic link", "outside the evaluated folder")))
    (pred / "symlink_out.nii.gz").symlink_to(outside / "elsewhere.nii.gz")
    bad("symlink_up", ".nii.gz", None,
        Bad(errors.E_UNSAFE_PATH, ("symbolic link", "outside the evaluated folder")))
    (pred / "symlink_up.nii.gz").symlink_to("../outside/elsewhere.nii.gz")
    bad("symlink_broken", ".nii.gz", None,
        Bad(errors.E_UNREADABLE, ("broken symbolic link",)))
    (pred / "symlink_broken.nii.gz").symlink_to("not_there.nii.gz")
    bad("fifo", ".nii.gz", None, Bad(errors.E_NOT_A_FILE, ("FIFO", "not a regular file")))
    os.mkfifo(pred / "fifo.nii.gz")
    bad("link_to_fifo", ".nii.gz", None, Bad(errors.E_NOT_A_FILE, ("FIFO",)))
    (pred / "link_to_fifo.nii.gz").symlink_to("fifo.nii.gz")
    os.mkfifo(pred / "fifo.raw")  # not a mask name: listed as ignored, never opened
    bad("nhdr_fifo_data", ".nhdr", nrrd_header("fifo.raw").encode(),
        Bad(errors.E_UNREADABLE, ("data file 'fifo.raw'",)))

    # --- pickles ---------------------------------------------------------------------------
    payload = np.empty((4, 4), dtype=object)
    payload[0, 0] = RunsWhenUnpickled(str(corpus.unpickled_marker))
    bad("pickled_npy", ".npy", npy_bytes(payload, allow_pickle=True),
        Bad(errors.E_UNREADABLE, ("Python objects", "never unpickles")), ".png", square)
    bad("pickle_named_npy", ".npy", pickle.dumps(RunsWhenUnpickled(
        str(corpus.unpickled_marker))), Bad(errors.E_FORMAT_MISMATCH, ("named .npy",)),
        ".png", square)
    return corpus



class DecoyWatch:
    """Sees every open of one file, by any process (Linux inotify, through ctypes).

    Plant a decoy file outside the evaluated folder, point hostile headers at it, and
    assert ``opened()`` is False afterwards: a check that does not depend on how the
    file would have been read (by Python, nibabel or a C library in a worker process).
    """

    IN_ACCESS, IN_OPEN = 0x1, 0x20

    def __init__(self, path: Path) -> None:
        import ctypes

        self.libc = ctypes.CDLL(None, use_errno=True)
        self.fd = self.libc.inotify_init1(os.O_NONBLOCK | os.O_CLOEXEC)
        if self.fd < 0 or self.libc.inotify_add_watch(
                self.fd, str(path).encode(), self.IN_ACCESS | self.IN_OPEN) < 0:
            raise OSError(ctypes.get_errno(), f"inotify on {path}")
        self.seen = False

    def opened(self) -> bool:
        """Whether the file was opened or read since the watch began (or the last call)."""
        try:
            while os.read(self.fd, 4096):
                self.seen = True
        except BlockingIOError:
            pass
        seen, self.seen = self.seen, False
        return seen

    def close(self) -> None:
        os.close(self.fd)
