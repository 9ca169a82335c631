"""NIfTI-1/2 (.nii, .nii.gz) via nibabel.

The data is read with nibabel's array proxy, so ``scl_slope``/``scl_inter`` are applied;
a scaled label map arrives as floats and is accepted only if every value is whole
(checked in :mod:`segeval.prepare`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np

from segeval.io.mask import Mask


def read(path: Path) -> Mask:
    image: Any = nib.load(str(path))
    array = np.asanyarray(image.dataobj)
    zooms = tuple(float(z) for z in image.header.get_zooms()[: array.ndim])
    return Mask(array=array, spacing=zooms, affine=np.asarray(image.affine, dtype=float),
                path=str(path))
