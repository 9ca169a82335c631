"""What NRRD, MetaImage and TIFF share: SimpleITK, and checks of text headers.

SimpleITK's arrays are (z, y, x); they are transposed to index order (x, y, z) to match
nibabel, and the LPS geometry of ITK is converted to RAS.  Each format names the one ITK
reader that may open it (``NrrdImageIO``, ``MetaImageIO``, ``TIFFImageIO``): SimpleITK never
chooses a reader by guessing from the bytes.  SimpleITK is imported on first use.

Text headers (NRRD, MetaImage) are read here the way their C libraries read them before
any of them sees the file: the whole header, every line ending, any key spelling
(:func:`header_lines`, :func:`mentions`).  A data file named by a header must be a plain
file name next to the header (:func:`check_data_file`), so no file outside the evaluated
folder is ever opened.
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

from segeval import errors
from segeval.errors import CaseError
from segeval.formats.mask import Header, Mask, squeezed_shape

T = TypeVar("T")

HEADER_LIMIT = 1 << 20  # a text header longer than 1 MiB is refused, never half-read
_CAPTURE_LOCK = threading.Lock()


# --- text headers ----------------------------------------------------------------------------
def header_lines(path: Path, ends: Callable[[bytes], str | None], fmt: str
                 ) -> tuple[list[bytes], int]:
    """The header's lines (without their line endings) and the byte offset where the header
    ends, read as the format's library reads it.

    ``ends(line)`` says whether a line ends the header: ``"before"`` (the line is not part
    of it: NRRD's blank line), ``"after"`` (the line is its last: MetaImage's
    ``ElementDataFile``) or None.  Without such a line the whole file is the header.
    Refused: a header longer than :data:`HEADER_LIMIT`, a NUL byte in it, a carriage return
    that is not part of CR LF (libraries differ on CR-only line endings, so a header read
    with them could end elsewhere for the library than for this check).
    """
    with open(path, "rb") as stream:
        text = stream.read(HEADER_LIMIT + 1)
    lines: list[bytes] = []
    at = 0
    while at < len(text):
        newline = text.find(b"\n", at)
        if newline < 0:
            if len(text) > HEADER_LIMIT:
                raise CaseError(errors.E_UNREADABLE,
                                f"cannot read: {fmt} header: no end within {HEADER_LIMIT} bytes",
                                path, "a mask's header is a few hundred bytes; write it again")
            newline = len(text)
        line = text[at:newline]
        line = line[:-1] if line.endswith(b"\r") else line
        where = ends(line)
        if where == "before":
            return lines, at
        if b"\r" in line or b"\0" in line:
            what = "a carriage return without a line feed" if b"\r" in line else "a NUL byte"
            raise CaseError(errors.E_UNREADABLE, f"cannot read: {fmt} header: {what} in its "
                            "text", path, "write the header with LF or CR LF line endings")
        lines.append(line)
        at = newline + 1
        if where == "after":
            return lines, at
    return lines, len(text)


def normalized(line: bytes) -> bytes:
    """Lower case, letters and digits only: ``" Data_File :"`` → ``b"datafile"``."""
    return re.sub(rb"[^a-z0-9]", b"", line.lower())


def mentions(lines: list[bytes], key: bytes) -> list[bytes]:
    """Every line that could name ``key`` (given normalized) in any spelling a library might
    accept: a superset, so a spelling this module does not parse is refused, not missed."""
    return [line for line in lines if key in normalized(line)]


def check_data_file(path: Path, name: str, fmt: str) -> None:
    """A data file named by a header: a plain file name in the header's own folder, an
    existing regular file there (not a symbolic link)."""
    plain = (name and name not in (".", "..") and name.upper() != "LIST" and name.isprintable()
             and not any(c in name for c in "/\\:%") and not any(c.isspace() for c in name))
    if not plain:
        raise CaseError(errors.E_UNSAFE_PATH,
                        f"the {fmt} header points at data file {name!r}, not a plain file name "
                        "in its own folder", path, "keep the data file next to its header")
    target = path.parent / name
    if target.is_symlink() or not target.is_file():
        raise CaseError(errors.E_UNREADABLE, f"data file {name!r} is missing", path,
                        "keep the data file next to its header")


# --- SimpleITK -------------------------------------------------------------------------------
def probe(path: Path, io_name: str) -> Header:
    """The header alone, read by the named ITK reader."""
    import SimpleITK as sitk

    reader = sitk.ImageFileReader()
    reader.SetImageIO(io_name)
    reader.SetFileName(str(path))
    quietly(path, reader.ReadImageInformation)
    ndim = reader.GetDimension()
    size = tuple(int(s) for s in reader.GetSize())
    spacing = tuple(float(s) for s in reader.GetSpacing())
    affine = _affine(ndim, spacing, reader.GetDirection(), reader.GetOrigin())
    shape = squeezed_shape(size)
    return Header(shape=shape, spacing=spacing[: len(shape)], affine=affine,
                  components=int(reader.GetNumberOfComponents()),
                  dtype=sitk.GetPixelIDValueAsString(reader.GetPixelID()))


def read(path: Path, io_name: str) -> Mask:
    """The voxels, read by the named ITK reader, in index order."""
    import SimpleITK as sitk

    image = quietly(path, lambda: sitk.ReadImage(str(path), imageIO=io_name))
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


def quietly(path: Path, step: Callable[[], T]) -> T:
    """Run a C-library call with the process's stdout and stderr captured.

    ITK's readers print to std::cerr, and MetaIO prints some complaints ("Number of
    dimensions limited to 10") on std::cout, which would corrupt ``--json -``; what they
    print becomes part of the error message instead.
    """
    with _CAPTURE_LOCK, tempfile.TemporaryFile() as capture:
        sys.stdout.flush()
        sys.stderr.flush()
        saved = os.dup(1), os.dup(2)
        try:
            os.dup2(capture.fileno(), 1)
            os.dup2(capture.fileno(), 2)
            try:
                return step()
            except RuntimeError as exc:
                os.dup2(saved[0], 1)
                os.dup2(saved[1], 2)
                capture.seek(0)
                noise = capture.read(4096).decode("utf-8", "replace")
                raise CaseError(errors.E_UNREADABLE,
                                f"cannot read: {itk_reason(str(exc) + chr(10) + noise)}", path,
                                "is the file complete and in the format its name says?"
                                ) from None
        finally:
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            os.close(saved[0])
            os.close(saved[1])


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

