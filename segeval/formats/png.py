"""PNG masks: pixel value (or palette index) = label.

Accepted modes: ``1`` (bit), ``L`` (8-bit), ``P`` (palette: the index is the label, the
colours are ignored), ``I;16`` (16-bit), ``I`` (32-bit).  Colour images are refused: a
colour is not a label, and guessing a colour→label mapping would be silent.  Pillow's
decompression-bomb guard stays on, and its warning is an error here.

Fast path: the common mask, 8- or 16-bit grayscale, not interlaced, is decoded by libpng
through ``imagecodecs`` when it is installed (about twice as fast as Pillow on a 512×512
mask, most of it a faster inflate).  The result must have exactly the shape and type the
IHDR chunk announces, or the file goes to Pillow; so does every other kind of PNG (palette,
1/2/4-bit, transparency, interlaced), every file libpng refuses, and every file libpng only
warns about (an ancillary chunk with a bad CRC, which Pillow refuses; a colour ICC profile
in a grayscale file), so that the same files are accepted, and errors read the same,
whichever decoder was tried first.  libpng's warnings are not printed.  Tests assert both
decoders give identical arrays.
"""

from __future__ import annotations

import logging
import threading
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from segeval import errors
from segeval.errors import CaseError
from segeval.formats.mask import Header, Mask
from segeval.formats.spec import Format, Limits

_UNLOADED: Any = object()
_png_decode: Any = _UNLOADED  # libpng via imagecodecs, imported on first use (or None)


def _decoder() -> Any:
    """imagecodecs' ``png_decode`` (optional: Pillow decodes everything without it), or None."""
    global _png_decode
    if _png_decode is _UNLOADED:
        try:
            from imagecodecs import png_decode
        except ImportError:  # pragma: no cover - depends on the platform's wheels
            _png_decode = None
        else:
            logging.getLogger("imagecodecs").addHandler(_LIBPNG_WARNINGS)
            _png_decode = png_decode
    return _png_decode


class _LibpngWarnings(logging.Handler):
    """imagecodecs logs libpng's warnings to the ``imagecodecs`` logger, from the thread
    that decodes.  While segeval decodes in a thread they are collected there (and the
    file goes to Pillow); any other record is handled as Python would have without this
    handler (printed to stderr when logging is not configured)."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.local = threading.local()

    def emit(self, record: logging.LogRecord) -> None:
        seen: list[str] | None = getattr(self.local, "seen", None)
        if seen is not None:
            seen.append(record.getMessage())
        elif not logging.getLogger().handlers and logging.lastResort is not None:
            logging.lastResort.handle(record)

    @contextmanager
    def collecting(self) -> Iterator[list[str]]:
        seen: list[str] = []
        self.local.seen = seen
        try:
            yield seen
        finally:
            self.local.seen = None


_LIBPNG_WARNINGS = _LibpngWarnings()

LABEL_MODES = {"1", "L", "P", "I;16", "I;16B", "I;16L", "I"}


@contextmanager
def _open(path: Path) -> Iterator[Any]:
    from PIL import Image

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


def _ihdr(path: Path, head: bytes) -> tuple[int, int, int, int, int] | None:
    """(width, height, bit depth, colour type, interlace) from the IHDR chunk, after
    Pillow's bomb-guard limit; None when the first bytes do not hold a usable IHDR."""
    if len(head) < 29 or head[12:16] != b"IHDR":
        return None
    width, height = int.from_bytes(head[16:20], "big"), int.from_bytes(head[20:24], "big")
    if width <= 0 or height <= 0:
        return None
    from PIL import Image

    limit = Image.MAX_IMAGE_PIXELS
    if limit is not None and width * height > limit:
        raise CaseError(errors.E_TOO_LARGE,
                        f"refused by Pillow's bomb guard: {width * height} pixels "
                        f"({width}x{height}) exceed its limit of {limit}", path,
                        "a label image this large is not plausible")
    return width, height, head[24], head[25], head[28]


def probe(path: Path, head: bytes, limits: Limits) -> Header:
    """Size and mode from the IHDR chunk in the first bytes (no decoder), with Pillow's
    bomb-guard limits applied; anything unusual is left to Pillow's own parser."""
    ihdr = _ihdr(path, head)
    mode = None if ihdr is None else IHDR_MODES.get((ihdr[3], ihdr[2]))
    if ihdr is not None and mode is not None:
        _check_mode(mode, path)
        return Header(shape=(ihdr[1], ihdr[0]), spacing=(1.0, 1.0), dtype=mode)
    with _open(path) as image:
        _check_mode(image.mode, path)
        width, height = image.size
    return Header(shape=(height, width), spacing=(1.0, 1.0), dtype=image.mode)


def read(path: Path) -> Mask:
    array = _read_fast(path)
    if array is None:
        with _open(path) as image:
            _check_mode(image.mode, path)
            array = np.array(image)
        scale = _gray_scale(path)
        if scale > 1:  # exact: Pillow wrote value * scale
            array = array // scale
    if array.dtype == np.bool_:
        array = array.astype(np.uint8)  # Pillow's mode "1" bools hold 255 in their bytes
    return Mask(array=array, spacing=(1.0,) * array.ndim, path=str(path))


def _gray_scale(path: Path) -> int:
    """Pillow stretches 2- and 4-bit grayscale to 0..255 (value × 85, value × 17): the
    factor that gives the stored values (the labels) back exactly, or 1."""
    with open(path, "rb") as stream:
        ihdr = _ihdr(path, stream.read(33))
    if ihdr is None or ihdr[3] != 0 or ihdr[2] not in (2, 4):
        return 1
    return 255 // (2 ** ihdr[2] - 1)


FAST_DEPTHS = {8: np.dtype(np.uint8), 16: np.dtype(np.uint16)}


def _read_fast(path: Path) -> np.ndarray | None:
    """An 8/16-bit grayscale, non-interlaced PNG decoded by libpng, or None for Pillow."""
    decode = _decoder()
    if decode is None:
        return None
    with open(path, "rb") as stream:
        head = stream.read(33)
        ihdr = _ihdr(path, head)
        if ihdr is None or ihdr[3] != 0 or ihdr[2] not in FAST_DEPTHS or ihdr[4] != 0:
            return None
        width, height, depth = ihdr[0], ihdr[1], ihdr[2]
        limit = 2 * width * height * (depth // 8) + (1 << 20)
        data = head + stream.read(limit + 1)
        if len(data) > limit:
            return None  # far larger than its pixels: Pillow reads it in bounded pieces
    if b"tRNS" in data:
        return None  # transparency (or a damaged tRNS chunk): Pillow's reading is the rule
    with _LIBPNG_WARNINGS.collecting() as warned:
        try:
            array = decode(data)
        except Exception:
            return None  # Pillow decides, and words the error
    if warned:
        return None  # accepted by libpng with a warning: Pillow decides
    if array.shape != (height, width) or array.dtype != FAST_DEPTHS[depth]:
        return None  # libpng added channels (a tRNS chunk): Pillow's reading is the rule
    return np.asarray(array)


def _check_mode(mode: str, path: Path) -> None:
    if mode not in LABEL_MODES:
        raise CaseError(
            errors.E_RGB_MASK, f"a {mode} colour image, not a label mask", path,
            "save masks as 8/16-bit grayscale or palette PNG where the pixel value is the "
            "label, e.g. Image.fromarray(labels.astype('uint8'))")


FORMAT = Format(name="PNG", suffixes=(".png",),
                magic=lambda head, suffix: head.startswith(b"\x89PNG\r\n\x1a\n"),
                probe=probe, read=read)
