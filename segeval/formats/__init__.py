"""File → :class:`Mask`.  One module per format, each with a :class:`Format` entry.

:data:`FORMATS` is the one list of formats: their suffixes (which name a case), magic bytes
(checked against the name), pre-flight probe and reader all come from it.  Adding a format
is one module and one line here (see :mod:`segeval.formats.spec`).

Arrays are returned in index order (i, j, k) = (x, y, z) for volumes and (row, column) for
PNG images, so a NIfTI prediction pairs with an NRRD reference voxel for voxel.  Geometry is
kept in one frame (RAS, as NIfTI) whatever the format: ITK's LPS is converted on reading.
Trailing singleton axes beyond the third are squeezed ((X, Y, Z, 1) → (X, Y, Z)).
"""

from __future__ import annotations

import math
import stat
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import numpy as np

from segeval import errors
from segeval.errors import CaseError
from segeval.formats import metaimage, nifti, npy, npz, nrrd, png, tiff
from segeval.formats.mask import Header, Mask
from segeval.formats.spec import Format, Limits

T = TypeVar("T")

FORMATS: tuple[Format, ...] = (nifti.FORMAT, nrrd.FORMAT, metaimage.FORMAT, png.FORMAT,
                               npy.FORMAT, npz.FORMAT, tiff.FORMAT)
# Longest first, so that ".nii.gz" wins over ".gz"-less ".nii".
SUFFIXES: tuple[str, ...] = tuple(sorted((s for f in FORMATS for s in f.suffixes),
                                         key=lambda s: -len(s)))
BY_SUFFIX: dict[str, Format] = {s: f for f in FORMATS for s in f.suffixes}
# Other magic bytes, only to name what a misnamed file is
OTHER_MAGIC: tuple[tuple[str, bytes], ...] = (("gzip", b"\x1f\x8b"), ("zip", b"PK\x03\x04"))
SNIFF_BYTES = 512
DEFAULT_LIMITS = Limits()


def format_suffix(name: str) -> str | None:
    """The known format suffix of a file name (case-insensitive), or None."""
    lower = name.lower()
    return next((s for s in SUFFIXES if lower.endswith(s)), None)


def format_of(name: str) -> Format | None:
    """The format a file name says (by suffix), or None."""
    suffix = format_suffix(name)
    return None if suffix is None else BY_SUFFIX[suffix]


def case_id(name: str) -> str:
    """A file name without its format suffix: ``case_01.nii.gz`` → ``case_01``."""
    suffix = format_suffix(name)
    return name[: len(name) - len(suffix)] if suffix else name


def sniff(head: bytes) -> str | None:
    """The format a file's first bytes show (None when no known magic matches)."""
    container = next((name for name, magic in OTHER_MAGIC if head.startswith(magic)), None)
    return container or next((fmt.name for fmt in FORMATS
                              if any(fmt.magic(head, suffix) for suffix in fmt.suffixes)), None)


def check_file(path: Path, root: Path | None = None) -> bytes:
    """Pre-flight on the file itself; returns its first bytes.

    A regular file (not a FIFO, device or folder), not empty, not a symlink that leaves
    ``root`` (the folder being evaluated), and its magic bytes agree with its name.
    """
    try:
        status = path.lstat()
    except OSError:
        raise CaseError(errors.E_UNREADABLE, "no such file", path) from None
    if stat.S_ISLNK(status.st_mode):
        target = path.resolve()
        if root is not None and not target.is_relative_to(root.resolve()):
            raise CaseError(errors.E_UNSAFE_PATH,
                            f"symbolic link to {target}, outside the evaluated folder", path,
                            "copy the file into the folder instead of linking it")
        try:
            status = target.stat()
        except OSError:
            raise CaseError(errors.E_UNREADABLE, "broken symbolic link", path) from None
    if not stat.S_ISREG(status.st_mode):
        kind = "folder" if stat.S_ISDIR(status.st_mode) else \
            "FIFO" if stat.S_ISFIFO(status.st_mode) else "device or special file"
        raise CaseError(errors.E_NOT_A_FILE, f"a {kind}, not a regular file", path)
    if status.st_size == 0:
        raise CaseError(errors.E_EMPTY_FILE, "the file is empty (0 bytes)", path,
                        "the writer failed or was interrupted; write it again")
    with open(path, "rb") as stream:  # a regular file: open cannot block
        head = stream.read(SNIFF_BYTES)
    suffix = format_suffix(path.name)
    if suffix is not None and not BY_SUFFIX[suffix].magic(head, suffix):
        found = sniff(head)
        what = f"a {found} file" if found else "not a file of that format"
        raise CaseError(errors.E_FORMAT_MISMATCH, f"named {suffix} but its bytes show {what}",
                        path, "rename the file to its real format, or write it again")
    return head


def _format(path: Path) -> Format:
    fmt = format_of(path.name)
    if fmt is None:
        raise CaseError(errors.E_UNSUPPORTED_FORMAT, "unknown file type", path,
                        f"segeval reads {', '.join(SUFFIXES)}")
    return fmt


def open_header(path: str | Path, root: Path | None = None,
                limits: Limits = DEFAULT_LIMITS) -> Header:
    """Pre-flight: check the file and read its header alone, before any voxel.

    Raises :class:`CaseError` for a bad file, a bad header, non-positive or too many
    dimensions, vector pixels, data that are not real numbers, more than
    ``limits.max_voxels`` voxels, a spacing that is not finite and positive, or an affine
    that is not finite.
    """
    path = Path(path)
    fmt = _format(path)
    head = check_file(path, root)
    header: Header = _decoding(path, lambda: fmt.probe(path, head, limits))
    if header.components != 1:
        raise CaseError(errors.E_RGB_MASK,
                        f"{header.components} components per voxel (colour or vector data), "
                        "not a label mask", path, "store one label per voxel")
    check_real(header.dtype, path)
    if not header.shape or min(header.shape) <= 0:
        raise CaseError(errors.E_BAD_DIMENSIONS, f"dimensions {header.shape} are not positive",
                        path)
    if len(header.shape) not in limits.ndims:
        raise CaseError(errors.E_BAD_DIMENSIONS,
                        f"{len(header.shape)}-D data of shape {header.shape}", path,
                        "segeval evaluates 2-D images and 3-D volumes; a time axis or vector "
                        "components are not a mask")
    if header.voxels > limits.max_voxels:
        raise CaseError(errors.E_TOO_LARGE,
                        f"{header.voxels} voxels, more than --max-voxels {limits.max_voxels}",
                        path, "raise --max-voxels if the volume is genuine")
    if not all(math.isfinite(s) and s > 0 for s in header.spacing):
        raise CaseError(errors.E_BAD_SPACING, f"voxel spacing {header.spacing} is not finite "
                        "and positive", path, "fix the header's pixel dimensions")
    if header.affine is not None and not np.isfinite(header.affine).all():
        raise CaseError(errors.E_BAD_SPACING, "the voxel-to-world affine holds infinite or NaN "
                        "values", path, "fix the header's orientation (srow/qform) fields")
    return header


def check_real(dtype: str, path: Path | str) -> None:
    """Refuse voxels that are not real numbers: complex, text, bytes, records, dates.

    ``dtype`` is a NumPy dtype string (``"<c8"``) or SimpleITK's pixel-type words
    (``"complex of 32-bit float"``).
    """
    try:
        kind = np.dtype(dtype).kind
    except (TypeError, ValueError):
        kind = "c" if "complex" in dtype else "f"
    if kind not in "biuf":
        what = {"c": "complex numbers", "U": "text", "S": "bytes", "V": "raw records",
                "M": "dates", "m": "time spans", "O": "Python objects"}.get(kind, kind)
        raise CaseError(errors.E_UNSUPPORTED_FORMAT, f"the voxels are {what} ({dtype}), not "
                        "labels or probabilities", path,
                        "save masks as integers (labels) or floats (probabilities)")


def read_mask(path: str | Path) -> Mask:
    """Decode the voxels (after :func:`open_header`); raises only :class:`CaseError`."""
    path = Path(path)
    fmt = _format(path)
    mask: Mask = _decoding(path, lambda: fmt.read(path))
    check_real(mask.array.dtype.str, path)
    return mask.squeezed()


def load_mask(path: str | Path, root: Path | None = None, limits: Limits = DEFAULT_LIMITS) -> Mask:
    """Pre-flight and decode one mask file."""
    open_header(path, root, limits)
    return read_mask(path)


def _decoding(path: Path, step: Callable[[], T]) -> T:
    """Run a decoder step; any failure is this file's problem, reported as a CaseError."""
    try:
        return step()
    except CaseError:
        raise
    except MemoryError:
        raise CaseError(errors.E_UNREADABLE, "not enough memory to load the file", path) from None
    except Exception as exc:
        problem = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CaseError(errors.E_UNREADABLE, f"cannot read: {problem[:300]}", path,
                        "is the file complete and in the format its name says?") from None


__all__ = ["FORMATS", "Format", "Header", "Limits", "Mask", "SUFFIXES", "case_id",
           "check_file", "check_real", "format_of", "format_suffix", "load_mask",
           "open_header", "read_mask", "sniff"]
