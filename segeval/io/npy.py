"""NumPy ``.npy`` arrays, never unpickled (``allow_pickle=False``)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from segeval.io.mask import Mask


def read(path: Path) -> Mask:
    array = np.load(path, allow_pickle=False)
    return Mask(array=array, spacing=(1.0,) * array.ndim, path=str(path))
