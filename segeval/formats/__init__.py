"""File → :class:`Mask`.  One module per format family, chosen by file name suffix.

Arrays are returned in index order (i, j, k) = (x, y, z) for volumes and (row, column) for
PNG images, so a NIfTI prediction pairs with an NRRD reference voxel for voxel.  Geometry is
kept in one frame (RAS, as NIfTI) whatever the format: ITK's LPS is converted on reading.
Trailing singleton axes beyond the third are squeezed ((X, Y, Z, 1) → (X, Y, Z)).
"""

from __future__ import annotations

import math
import stat
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from segeval import errors
from segeval.errors import CaseError
from segeval.formats.mask import Header, Mask

T = TypeVar("T")

# Longest first, so that ".nii.gz" wins over ".gz"-less ".nii".
SUFFIXES: tuple[str, ...] = (
    ".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd", ".png", ".npy", ".npz", ".tiff",
    ".tif",
)


def format_suffix(name: str) -> str | None:
    """The known format suffix of a file name (case-insensitive), or None."""
    lower = name.lower()
    return next((s for s in SUFFIXES if lower.endswith(s)), None)


def case_id(name: str) -> str:
    """A file name without its format suffix: ``case_01.nii.gz`` → ``case_01``."""
    suffix = format_suffix(name)
    return name[: len(name) - len(suffix)] if suffix else name


MAGIC: tuple[tuple[str, tuple[bytes, ...]], ...] = (
    ("PNG", (b"\x89PNG\r\n\x1a\n",)),
    ("gzip", (b"\x1f\x8b",)),
    ("NRRD", (b"NRRD",)),
    ("NumPy", (b"\x93NUMPY",)),
    ("TIFF", (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")),
    ("zip", (b"PK\x03\x04",)),
)
EXPECTED_FORMAT = {".png": "PNG", ".nii.gz": "gzip", ".nrrd": "NRRD", ".nhdr": "NRRD",
                   ".npy": "NumPy", ".npz": "zip", ".tif": "TIFF", ".tiff": "TIFF"}
SNIFF_BYTES = 512


@dataclass(frozen=True)
class Limits:
    """What a file may be before its voxels are read."""

    max_voxels: int = 2**31
    ndims: tuple[int, ...] = (2, 3)


def sniff(head: bytes) -> str | None:
    """The format a file's first bytes show (None when no known magic matches)."""
    for name, signatures in MAGIC:
        if head.startswith(signatures):
            return name
    if len(head) >= 348 and (int.from_bytes(head[:4], "little") in (348, 540)
                             or int.from_bytes(head[:4], "big") in (348, 540)):
        return "NIfTI"
    if b"NDims" in head or head.startswith(b"ObjectType"):
        return "MetaImage"
    return None


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
    suffix = format_suffix(path.name) or ""
    expected = EXPECTED_FORMAT.get(suffix) or ("NIfTI" if suffix == ".nii" else
                                               "MetaImage" if suffix in (".mha", ".mhd") else
                                               None)
    found = sniff(head)
    if expected is not None and found != expected:
        what = f"a {found} file" if found else "not a file of that format"
        raise CaseError(errors.E_FORMAT_MISMATCH, f"named {suffix} but its bytes show {what}",
                        path, "rename the file to its real format, or write it again")
    return head


def _reader(path: Path) -> Any:
    suffix = format_suffix(path.name)
    if suffix is None:
        raise CaseError(errors.E_UNSUPPORTED_FORMAT, "unknown file type", path,
                        f"segeval reads {', '.join(SUFFIXES)}")
    if suffix == ".png":
        from segeval.formats import png as reader
    elif suffix in (".nii.gz", ".nii"):
        from segeval.formats import nifti as reader  # type: ignore[no-redef]
    elif suffix == ".npy":
        from segeval.formats import npy as reader  # type: ignore[no-redef]
    elif suffix == ".npz":
        from segeval.formats import npz as reader  # type: ignore[no-redef]
    else:
        from segeval.formats import itk as reader  # type: ignore[no-redef]
    return reader


def open_header(path: str | Path, root: Path | None = None, limits: Limits = Limits()) -> Header:
    """Pre-flight: check the file and read its header alone, before any voxel.

    Raises :class:`CaseError` for a bad file, a bad header, non-positive or too many
    dimensions, vector pixels, more than ``limits.max_voxels`` voxels, or a spacing that is
    not finite and positive.
    """
    path = Path(path)
    reader = _reader(path)
    head = check_file(path, root)
    header: Header = _decoding(path, lambda: reader.probe(path, head))
    if header.components != 1:
        raise CaseError(errors.E_RGB_MASK,
                        f"{header.components} components per voxel (colour or vector data), "
                        "not a label mask", path, "store one label per voxel")
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
    return header


def read_mask(path: str | Path) -> Mask:
    """Decode the voxels (after :func:`open_header`); raises only :class:`CaseError`."""
    path = Path(path)
    reader = _reader(path)
    mask: Mask = _decoding(path, lambda: reader.read(path))
    return mask.squeezed()


def load_mask(path: str | Path, root: Path | None = None, limits: Limits = Limits()) -> Mask:
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


__all__ = ["Header", "Limits", "Mask", "SUFFIXES", "case_id", "check_file", "format_suffix",
           "load_mask", "open_header", "read_mask", "sniff"]
