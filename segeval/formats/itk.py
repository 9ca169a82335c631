"""NRRD, MetaImage (.mha/.mhd) and TIFF via SimpleITK.

SimpleITK's arrays are (z, y, x); they are transposed to index order (x, y, z) to match
nibabel, and the LPS geometry of ITK is converted to RAS.  Detached headers (``.nhdr``,
``.mhd``) may only name a data file by a plain name in their own folder.
"""

from __future__ import annotations

import os
import re
import sys
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import numpy as np
import SimpleITK as sitk

from segeval import errors
from segeval.errors import CaseError
from segeval.formats.mask import Header, Mask, squeezed_shape

T = TypeVar("T")

NRRD_DATA_FILE = re.compile(rb"^data ?file:\s*(.*?)\s*$", re.IGNORECASE | re.MULTILINE)
META_DATA_FILE = re.compile(rb"^ElementDataFile\s*=\s*(.*?)\s*$", re.MULTILINE)
META_NDIMS = re.compile(rb"^NDims\s*=\s*(.*?)\s*$", re.MULTILINE)
META_DIMSIZE = re.compile(rb"^DimSize\s*=\s*(.*?)\s*$", re.MULTILINE)
HEADER_LIMIT = 1 << 16  # headers are small text; data after them is never searched
_STDERR_LOCK = threading.Lock()


def probe(path: Path, head: bytes = b"") -> Header:
    check_header_text(path)
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    _quietly(path, reader.ReadImageInformation)
    ndim = reader.GetDimension()
    size = tuple(int(s) for s in reader.GetSize())
    spacing = tuple(float(s) for s in reader.GetSpacing())
    affine = _affine(ndim, spacing, reader.GetDirection(), reader.GetOrigin())
    shape = squeezed_shape(size)
    return Header(shape=shape, spacing=spacing[: len(shape)], affine=affine,
                  components=int(reader.GetNumberOfComponents()),
                  dtype=sitk.GetPixelIDValueAsString(reader.GetPixelID()))


def read(path: Path) -> Mask:
    check_header_text(path)
    image = _quietly(path, lambda: sitk.ReadImage(str(path)))
    if image.GetNumberOfComponentsPerPixel() != 1:
        raise CaseError(errors.E_RGB_MASK,
                        f"{image.GetNumberOfComponentsPerPixel()} components per voxel, not a "
                        "label mask", path, "store one label per voxel")
    array = sitk.GetArrayFromImage(image).T  # a Fortran-order view: nibabel's layout
    spacing = tuple(float(s) for s in image.GetSpacing())
    affine = _affine(image.GetDimension(), spacing, image.GetDirection(), image.GetOrigin())
    return Mask(array=array, spacing=spacing, affine=affine, path=str(path))


def _affine(ndim: int, spacing: tuple[float, ...], direction: tuple[float, ...],
            origin: tuple[float, ...]) -> np.ndarray | None:
    if ndim > 3:
        return None
    affine = np.eye(4)
    affine[:ndim, :ndim] = np.asarray(direction, dtype=float).reshape(ndim, ndim) * np.asarray(
        spacing)
    affine[:ndim, 3] = origin
    return np.diag([-1.0, -1.0, 1.0, 1.0]) @ affine  # LPS → RAS


def check_header_text(path: Path) -> None:
    """Checks of the text header that SimpleITK must never see unchecked.

    A data file (NRRD ``data file:``, MetaImage ``ElementDataFile``) may only be a plain
    name next to the header, in attached headers (.nrrd, .mha) as in detached ones (.nhdr,
    .mhd), so no file outside the evaluated folder is ever read.  MetaImage ``NDims`` must
    be a whole number from 1 to 16 matching ``DimSize`` (SimpleITK crashes or spins on
    others).
    """
    suffix = path.suffix.lower()
    with open(path, "rb") as stream:
        text = stream.read(HEADER_LIMIT)
    if suffix in (".nrrd", ".nhdr"):
        text = text.split(b"\n\n", 1)[0] if suffix == ".nrrd" else text
        _check_data_file(path, NRRD_DATA_FILE.search(text), required=suffix == ".nhdr")
    elif suffix in (".mha", ".mhd"):
        _check_meta_dimensions(path, text)
        _check_data_file(path, META_DATA_FILE.search(text), required=suffix == ".mhd",
                         local_ok=True)


def _check_meta_dimensions(path: Path, text: bytes) -> None:
    ndims, sizes = META_NDIMS.search(text), META_DIMSIZE.search(text)
    try:
        n = int(ndims.group(1)) if ndims else -1
        size = [int(v) for v in sizes.group(1).split()] if sizes else []
    except ValueError:
        n, size = -1, []
    if not 1 <= n <= 16 or len(size) != n or min(size, default=0) <= 0:
        raise CaseError(errors.E_BAD_DIMENSIONS,
                        "MetaImage header: NDims and DimSize are not a valid set of dimensions",
                        path, "write the file again")


def _check_data_file(path: Path, match: re.Match[bytes] | None, required: bool,
                     local_ok: bool = False) -> None:
    if match is None:
        if required:
            raise CaseError(errors.E_UNREADABLE, "detached header names no data file", path)
        return
    name = match.group(1).decode("utf-8", "replace")
    if local_ok and name.upper() == "LOCAL":
        return
    plain = (name and name not in (".", "..") and "/" not in name and "\\" not in name
             and ":" not in name and " " not in name and "%" not in name
             and name.upper() != "LIST")
    if not plain:
        raise CaseError(errors.E_UNSAFE_PATH,
                        f"the header points at data file {name!r}, not a plain file name in its "
                        "own folder", path, "keep the data file next to its header")
    target = path.parent / name
    if not target.is_file() or target.is_symlink():
        raise CaseError(errors.E_UNREADABLE, f"data file {name!r} is missing", path,
                        "keep the data file next to its header")


def _quietly(path: Path, step: Callable[[], T]) -> T:
    """Run a SimpleITK call with the process's stderr captured: ITK's readers print to
    std::cerr themselves; what they print becomes part of the error message instead."""
    with _STDERR_LOCK, tempfile.TemporaryFile() as capture:
        saved = os.dup(2)
        try:
            sys.stderr.flush()
            os.dup2(capture.fileno(), 2)
            try:
                return step()
            except RuntimeError as exc:
                os.dup2(saved, 2)
                capture.seek(0)
                noise = capture.read(4096).decode("utf-8", "replace")
                raise CaseError(errors.E_UNREADABLE,
                                f"cannot read: {itk_reason(str(exc) + chr(10) + noise)}", path,
                                "is the file complete and in the format its name says?"
                                ) from None
        finally:
            os.dup2(saved, 2)
            os.close(saved)


def itk_reason(text: str) -> str:
    """The informative lines of an ITK error (not the C++ source locations)."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    useful = [line for line in lines
              if not line.startswith(("Exception thrown in SimpleITK", "/", "itk::ExceptionObject",
                                      "Location:", "File:", "Line:", "Description:"))
              and not re.search(r"\.(cxx|h|hxx):\d+", line)]
    described = [line.split("Description:", 1)[-1].strip() for line in lines
                 if line.startswith("Description:")]
    specific = [line for line in useful if "trouble" not in line and "Error reading" not in line]
    reason = "; ".join(dict.fromkeys(described + (specific or useful)))
    return (reason or (lines[0] if lines else "unknown error"))[:300]
