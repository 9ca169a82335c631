"""TIFF (``.tif``, ``.tiff``; classic and BigTIFF), decoded by SimpleITK's ``TIFFImageIO``.

libtiff trusts the header: a 1 KiB file whose IFD says ``ImageLength`` 2**32 - 1 makes it
allocate strip tables of gigabytes, and an IFD chain that points back at itself makes ITK
count pages for ever.  The IFD chain is therefore walked here first, without any library:
every IFD inside the file and visited once (a loop is refused), at most
:data:`MAX_PAGES` pages, the announced voxels (width × height × pages, as ITK stacks pages)
within ``--max-voxels``, and no more strips or tiles than the file has bytes.
"""

from __future__ import annotations

import math
import mmap
import struct
from pathlib import Path

from segeval import errors
from segeval.errors import CaseError
from segeval.formats import itk
from segeval.formats.mask import Header, Mask
from segeval.formats.spec import Format, Limits

IO_NAME = "TIFFImageIO"
MAX_PAGES = 1 << 16
SIGNATURES = (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")
# tag numbers
WIDTH, LENGTH, SAMPLES, ROWS_PER_STRIP, PLANAR, TILE_WIDTH, TILE_LENGTH = (
    256, 257, 277, 278, 284, 322, 323)
TYPE_SIZES = {1: 1, 2: 1, 3: 2, 4: 4, 5: 8, 6: 1, 7: 1, 8: 2, 9: 4, 10: 8, 11: 4, 12: 8,
              16: 8, 17: 8, 18: 8}
SCALAR_FORMATS = {3: "H", 4: "I", 8: "h", 9: "i", 16: "Q", 17: "q"}


def _bad(path: Path, what: str) -> CaseError:
    return CaseError(errors.E_UNREADABLE, f"cannot read: TIFF structure: {what}", path,
                     "the file is damaged or hostile; write it again")


def walk_ifds(path: Path) -> tuple[int, int, int]:
    """(width, height, pages) from the IFD chain, checked as the module docstring says."""
    with open(path, "rb") as stream, mmap.mmap(stream.fileno(), 0, access=mmap.ACCESS_READ
                                               ) as data:
        return _walk(path, data)


def _walk(path: Path, data: mmap.mmap) -> tuple[int, int, int]:
    size = len(data)
    if data[:4] not in SIGNATURES:
        raise _bad(path, "no TIFF signature")
    order = "<" if data[:2] == b"II" else ">"
    big = data[2:4] in (b"+\x00", b"\x00+")
    offset_format, count_format, entry_size = ("Q", "Q", 20) if big else ("I", "H", 12)
    head = 16 if big else 8
    if size < head:
        raise _bad(path, "truncated header")
    (offset,) = struct.unpack_from(order + offset_format, data, 8 if big else 4)
    seen: set[int] = set()
    first: dict[int, int] = {}
    pages = 0
    while offset:
        if offset in seen:
            raise _bad(path, f"the IFD chain loops back to offset {offset}")
        seen.add(offset)
        pages += 1
        if pages > MAX_PAGES:
            raise _bad(path, f"more than {MAX_PAGES} pages")
        count_size = struct.calcsize(count_format)
        if offset + count_size > size:
            raise _bad(path, f"an IFD at offset {offset} lies beyond the end of the file")
        (n,) = struct.unpack_from(order + count_format, data, offset)
        end = offset + count_size + n * entry_size
        if end + struct.calcsize(offset_format) > size:
            raise _bad(path, f"the IFD at offset {offset} ({n} entries) runs past the end")
        tags = _scalar_tags(data, order, big, offset + count_size, n, entry_size)
        if pages == 1:
            first = tags
        _check_page(path, tags, size)
        (offset,) = struct.unpack_from(order + offset_format, data, end)
    if not first:
        raise _bad(path, "no image directory")
    return first.get(WIDTH, 0), first.get(LENGTH, 0), pages


def _scalar_tags(data: mmap.mmap, order: str, big: bool, at: int, n: int, entry_size: int
                 ) -> dict[int, int]:
    """The single-valued integer tags of one IFD (values stored in the entry itself)."""
    tags: dict[int, int] = {}
    for i in range(n):
        entry = at + i * entry_size
        tag, kind = struct.unpack_from(order + "HH", data, entry)
        (count,) = struct.unpack_from(order + ("Q" if big else "I"), data, entry + 4)
        if count == 1 and kind in SCALAR_FORMATS:
            (tags[tag],) = struct.unpack_from(order + SCALAR_FORMATS[kind], data,
                                              entry + (12 if big else 8))
    return tags


def _check_page(path: Path, tags: dict[int, int], size: int) -> None:
    width, height = tags.get(WIDTH, 0), tags.get(LENGTH, 0)
    planes = tags.get(SAMPLES, 1) if tags.get(PLANAR, 1) == 2 else 1
    if TILE_WIDTH in tags or TILE_LENGTH in tags:
        tile_w, tile_h = max(tags.get(TILE_WIDTH, 1), 1), max(tags.get(TILE_LENGTH, 1), 1)
        pieces = math.ceil(width / tile_w) * math.ceil(height / tile_h) * planes
    else:
        rows = tags.get(ROWS_PER_STRIP, 0) or height or 1
        pieces = math.ceil(height / rows) * planes
    if pieces > size:
        raise _bad(path, f"{pieces} strips or tiles announced in a file of {size} bytes")


def probe(path: Path, head: bytes, limits: Limits) -> Header:
    width, height, pages = walk_ifds(path)
    voxels = width * height * pages
    if voxels > limits.max_voxels:
        raise CaseError(errors.E_TOO_LARGE,
                        f"{voxels} voxels announced ({width}x{height}, {pages} pages), more "
                        f"than --max-voxels {limits.max_voxels}", path,
                        "raise --max-voxels if the image is genuine")
    return itk.probe(path, IO_NAME)


def read(path: Path) -> Mask:
    walk_ifds(path)
    return itk.read(path, IO_NAME)


FORMAT = Format(name="TIFF", suffixes=(".tiff", ".tif"),
                magic=lambda head, suffix: head.startswith(SIGNATURES), probe=probe, read=read)
