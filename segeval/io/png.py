"""PNG masks via Pillow: pixel value (or palette index) = label.

Accepted modes: ``1`` (bit), ``L`` (8-bit), ``P`` (palette: the index is the label, the
colours are ignored), ``I;16`` (16-bit), ``I`` (32-bit).  Colour images are refused: a
colour is not a label, and guessing a colour→label mapping would be silent.  Pillow's
decompression-bomb guard stays on, and its warning is an error here.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from segeval import errors
from segeval.errors import CaseError
from segeval.io.mask import Header, Mask

LABEL_MODES = {"1", "L", "P", "I;16", "I;16B", "I;16L", "I"}


@contextmanager
def _open(path: Path) -> Iterator[Any]:
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            with Image.open(path, formats=["PNG"]) as image:
                yield image
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
            raise CaseError(errors.E_TOO_LARGE, f"refused by Pillow's bomb guard: {exc}",
                            path, "a label image this large is not plausible") from None


# PNG colour type and bit depth (IHDR) → the Pillow mode it decodes to
IHDR_MODES = {(0, 1): "1", (0, 2): "L", (0, 4): "L", (0, 8): "L", (0, 16): "I;16",
              (2, 8): "RGB", (2, 16): "RGB", (3, 1): "P", (3, 2): "P", (3, 4): "P",
              (3, 8): "P", (4, 8): "LA", (4, 16): "LA", (6, 8): "RGBA", (6, 16): "RGBA"}


def probe(path: Path, head: bytes = b"") -> Header:
    """Size and mode from the IHDR chunk in the first bytes (no decoder), with Pillow's
    bomb-guard limits applied; anything unusual is left to Pillow's own parser."""
    if len(head) >= 26 and head[12:16] == b"IHDR":
        width, height = int.from_bytes(head[16:20], "big"), int.from_bytes(head[20:24], "big")
        mode = IHDR_MODES.get((head[25], head[24]))
        limit = Image.MAX_IMAGE_PIXELS
        if mode is not None and width > 0 and height > 0:
            if limit is not None and width * height > limit:
                raise CaseError(errors.E_TOO_LARGE,
                                f"refused by Pillow's bomb guard: {width * height} pixels "
                                f"({width}x{height}) exceed its limit of {limit}", path,
                                "a label image this large is not plausible")
            _check_mode(mode, path)
            return Header(shape=(height, width), spacing=(1.0, 1.0), dtype=mode)
    with _open(path) as image:
        _check_mode(image.mode, path)
        width, height = image.size
    return Header(shape=(height, width), spacing=(1.0, 1.0), dtype=image.mode)


def read(path: Path) -> Mask:
    with _open(path) as image:
        _check_mode(image.mode, path)
        array = np.array(image)
    if array.dtype == np.bool_:
        array = array.astype(np.uint8)  # Pillow's mode "1" bools hold 255 in their bytes
    return Mask(array=array, spacing=(1.0,) * array.ndim, path=str(path))


def _check_mode(mode: str, path: Path) -> None:
    if mode not in LABEL_MODES:
        raise CaseError(
            errors.E_RGB_MASK, f"a {mode} colour image, not a label mask", path,
            "save masks as 8/16-bit grayscale or palette PNG where the pixel value is the "
            "label, e.g. Image.fromarray(labels.astype('uint8'))")
