"""NRRD, MetaImage (.mha/.mhd) and TIFF via SimpleITK.

SimpleITK's arrays are (z, y, x); they are transposed to index order (x, y, z) to match
nibabel, and the LPS geometry of ITK is converted to RAS.  Detached headers (``.nhdr``,
``.mhd``) may only name a data file by a plain name in their own folder.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from segeval import errors
from segeval.errors import CaseError
from segeval.io.mask import Header, Mask, squeezed_shape

DATA_FILE_KEYS = {
    ".nhdr": re.compile(rb"^data ?file:\s*(.*?)\s*$", re.IGNORECASE | re.MULTILINE),
    ".mhd": re.compile(rb"^ElementDataFile\s*=\s*(.*?)\s*$", re.MULTILINE),
}
HEADER_LIMIT = 1 << 16  # detached headers are small text files


def probe(path: Path) -> Header:
    _check_detached_data_file(path)
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    reader.ReadImageInformation()
    ndim = reader.GetDimension()
    size = tuple(int(s) for s in reader.GetSize())
    spacing = tuple(float(s) for s in reader.GetSpacing())
    affine = _affine(ndim, spacing, reader.GetDirection(), reader.GetOrigin())
    shape = squeezed_shape(size)
    return Header(shape=shape, spacing=spacing[: len(shape)], affine=affine,
                  components=int(reader.GetNumberOfComponents()),
                  dtype=sitk.GetPixelIDValueAsString(reader.GetPixelID()))


def read(path: Path) -> Mask:
    _check_detached_data_file(path)
    image = sitk.ReadImage(str(path))
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


def _check_detached_data_file(path: Path) -> None:
    """A detached header may only point at a plain file name next to it."""
    pattern = DATA_FILE_KEYS.get(path.suffix.lower())
    if pattern is None:
        return
    with open(path, "rb") as stream:
        text = stream.read(HEADER_LIMIT)
    match = pattern.search(text)
    if match is None:
        raise CaseError(errors.E_UNREADABLE, "detached header names no data file", path)
    name = match.group(1).decode("utf-8", "replace")
    if name.upper() == "LOCAL" and path.suffix.lower() == ".mhd":
        return
    plain = (name and name not in (".", "..") and "/" not in name and "\\" not in name
             and ":" not in name and " " not in name and "%" not in name
             and name.upper() != "LIST")
    target = path.parent / name
    if not plain:
        raise CaseError(errors.E_UNSAFE_PATH,
                        f"detached header points at {name!r}, not a plain file name in its own "
                        "folder", path, "keep the data file next to its header")
    if not target.is_file() or target.is_symlink():
        raise CaseError(errors.E_UNREADABLE, f"data file {name!r} is missing", path,
                        "keep the data file next to its header")
