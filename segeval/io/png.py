"""PNG masks via Pillow: pixel value (or palette index) = label.

Accepted modes: ``1`` (bit), ``L`` (8-bit), ``P`` (palette: the index is the label, the
colours are ignored), ``I;16`` (16-bit), ``I`` (32-bit).  Colour images are refused: a
colour is not a label, and guessing a colour→label mapping would be silent.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
from PIL import Image

from segeval import errors
from segeval.errors import CaseError
from segeval.io.mask import Mask

LABEL_MODES = {"1", "L", "P", "I;16", "I;16B", "I;16L", "I"}


def read(path: Path) -> Mask:
    with warnings.catch_warnings():
        # Pillow's decompression-bomb guard stays on; its warning is an error here.
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        with Image.open(path, formats=["PNG"]) as image:
            if image.mode not in LABEL_MODES:
                raise CaseError(
                    errors.E_RGB_MASK,
                    f"a {image.mode} colour image, not a label mask", path,
                    "save masks as 8/16-bit grayscale or palette PNG where the pixel value "
                    "is the label, e.g. Image.fromarray(labels.astype('uint8'))")
            array = np.array(image)
    if array.dtype == np.bool_:
        array = array.astype(np.uint8)  # Pillow's mode "1" bools hold 255 in their bytes
    return Mask(array=array, spacing=(1.0,) * array.ndim, path=str(path))
