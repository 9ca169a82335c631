"""NRRD, MetaImage (.mha/.mhd) and TIFF via SimpleITK.

SimpleITK's arrays are (z, y, x); they are transposed to index order (x, y, z) to match
nibabel, and the LPS geometry of ITK is converted to RAS.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import SimpleITK as sitk

from segeval import errors
from segeval.errors import CaseError
from segeval.io.mask import Mask


def read(path: Path) -> Mask:
    image = sitk.ReadImage(str(path))
    if image.GetNumberOfComponentsPerPixel() != 1:
        raise CaseError(errors.E_RGB_MASK,
                        f"{image.GetNumberOfComponentsPerPixel()} components per voxel, not a "
                        "label mask", path, "store one label per voxel")
    array = sitk.GetArrayFromImage(image)
    array = array.T  # a view in Fortran order: the same memory layout as nibabel's arrays
    ndim = image.GetDimension()
    spacing = tuple(float(s) for s in image.GetSpacing())
    direction = np.asarray(image.GetDirection(), dtype=float).reshape(ndim, ndim)
    origin = np.asarray(image.GetOrigin(), dtype=float)
    affine = np.eye(4)
    affine[:ndim, :ndim] = direction * np.asarray(spacing)
    affine[:ndim, 3] = origin
    affine = np.diag([-1.0, -1.0, 1.0, 1.0]) @ affine  # LPS → RAS
    return Mask(array=array, spacing=spacing, affine=affine, path=str(path))
