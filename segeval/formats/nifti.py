"""NIfTI-1/2 (.nii, .nii.gz).

Fast path for the common case of a gzipped NIfTI-1 label map without scaling: the file is
read once, inflated with ISA-L (``isal``, when installed; zlib otherwise) into one buffer of
exactly the size the header announces, and viewed as an array without a copy.  The header
is parsed by nibabel's own header class.  Everything unusual (NIfTI-2, scaling slopes,
complex or RGB data types, a truncated stream) goes through nibabel's loader, whose array
proxy applies ``scl_slope``/``scl_inter``; a scaled label map then arrives as floats and is
accepted only if every value is whole (checked in :mod:`segeval.engines.interpret`).  Tests assert
that both paths give identical arrays.
"""

from __future__ import annotations

import gzip
import math
import zlib
from io import BytesIO
from pathlib import Path
from typing import Any

import numpy as np

from segeval import errors
from segeval.errors import CaseError
from segeval.formats.mask import Header, Mask, squeezed_shape
from segeval.formats.spec import Format, Limits


def _inflate_module() -> Any:
    """ISA-L's zlib (about 3x faster inflate; optional), or zlib; imported on first use."""
    try:
        from isal import isal_zlib
    except ImportError:  # pragma: no cover - depends on the platform's wheels
        return zlib
    return isal_zlib

HEADER_SIZE = 348
# sizeof_hdr as the first four bytes read little-endian: a little- or a big-endian header
SIZEOF_HDR = (HEADER_SIZE, int.from_bytes(HEADER_SIZE.to_bytes(4, "big"), "little"))
GZIP_WBITS = 31  # gzip container
FAST_KINDS = "biuf"  # bool, signed, unsigned, float
EXTENSION_LIMIT = 1 << 24  # header extensions read before the data (16 MiB)
TRAILING_LIMIT = 1 << 16  # bytes tolerated after the data (harmless padding); more is refused


def probe(path: Path, head: bytes, limits: Limits) -> Header:
    """The header alone, parsed by nibabel's header class.  A NIfTI-1 header is taken from
    ``head`` (the file's first bytes, inflated for .nii.gz) when it holds all of it, so the
    file is not opened again; otherwise ``nib.load`` reads it and leaves the data behind a
    proxy.  Both give the same header, affine included (``get_best_affine``, as nibabel's
    image does)."""
    import nibabel as nib

    header = _header_from_head(path, head)
    if header is None:
        image: Any = nib.load(str(path))
        header, affine = image.header, image.affine
    else:
        affine = header.get_best_affine()
    dtype = header.get_data_dtype()
    shape = squeezed_shape(tuple(int(s) for s in header.get_data_shape()))
    zooms = tuple(float(z) for z in header.get_zooms()[: len(shape)])
    components = len(dtype.names) if dtype.names else 1  # RGB(A) NIfTI data types
    return Header(shape=shape, spacing=zooms, affine=np.asarray(affine, dtype=float),
                  components=components, dtype=dtype.str)


def _header_from_head(path: Path, head: bytes) -> Any:
    """A NIfTI-1 header parsed from the first bytes, or None to let nibabel open the file."""
    import nibabel as nib

    if path.name.lower().endswith(".gz"):
        try:
            head = zlib.decompressobj(GZIP_WBITS).decompress(head, HEADER_SIZE)
        except zlib.error:
            return None
    if (len(head) < HEADER_SIZE or int.from_bytes(head[:4], "little") not in SIZEOF_HDR
            or head[344:348] != b"n+1\0"):
        return None  # NIfTI-2, a .hdr/.img pair header, or too few bytes: nibabel decides
    return nib.Nifti1Header.from_fileobj(BytesIO(head[:HEADER_SIZE]))


def read(path: Path) -> Mask:
    import nibabel as nib

    if not path.name.lower().endswith(".gz"):
        return read_with_nibabel(path)
    mask = _read_gzip_fast(path)
    if mask is None:
        mask = read_with_nibabel(path)
        header: Any = nib.load(str(path)).header
        announced = max(int(header.get_data_offset()), int(header.sizeof_hdr) + 4) + \
            math.prod(header.get_data_shape()) * header.get_data_dtype().itemsize
        check_inflated_size(path, announced)
    return mask


def check_inflated_size(path: Path, announced: int) -> None:
    """Refuse a .gz that inflates (over all its gzip members) to more than its header
    announces, counting in bounded chunks: memory stays flat whatever the file holds."""
    total = 0
    with gzip.open(path, "rb") as stream:
        while block := stream.read(1 << 20):
            total += len(block)
            if total > announced + TRAILING_LIMIT:
                raise CaseError(errors.E_UNREADABLE,
                                f"the compressed data holds more than the {announced} bytes "
                                "its header announces (refused without inflating the rest)",
                                path, "write the file again; it may be corrupt or hostile")


def read_with_nibabel(path: Path) -> Mask:
    import nibabel as nib

    image: Any = nib.load(str(path))
    array = np.asanyarray(image.dataobj)
    zooms = tuple(float(z) for z in image.header.get_zooms()[: array.ndim])
    return Mask(array=array, spacing=zooms, affine=np.asarray(image.affine, dtype=float),
                path=str(path))


def _read_gzip_fast(path: Path) -> Mask | None:
    """The array and geometry, or None when nibabel should handle the file."""
    import nibabel as nib

    compressed = path.read_bytes()
    inflater = _inflate_module().decompressobj(GZIP_WBITS)
    try:
        head = inflater.decompress(compressed, HEADER_SIZE)
    except zlib.error:
        return None  # not gzip after all: let nibabel say what it is
    except Exception:  # isal raises its own error type for corrupt streams
        return None
    if len(head) < HEADER_SIZE or int.from_bytes(head[:4], "little") not in SIZEOF_HDR:
        return None  # NIfTI-2 (540-byte header) or not NIfTI-1
    try:
        header = nib.Nifti1Header.from_fileobj(BytesIO(head))
    except Exception:
        return None
    slope, intercept = header.get_slope_inter()
    dtype = header.get_data_dtype()
    shape = header.get_data_shape()
    offset = int(header.get_data_offset())
    if (slope not in (None, 1.0) or intercept not in (None, 0.0)
            or dtype.kind not in FAST_KINDS or dtype.hasobject or offset < HEADER_SIZE
            or not shape or min(shape) <= 0):
        return None
    n_bytes = math.prod(shape) * dtype.itemsize
    if offset - HEADER_SIZE > EXTENSION_LIMIT:
        raise CaseError(errors.E_UNREADABLE,
                        f"{offset - HEADER_SIZE} bytes of header extensions before the data "
                        f"(at most {EXTENSION_LIMIT} are read)", path,
                        "a label mask needs no large extensions; write it again without them")
    wanted = offset - HEADER_SIZE + n_bytes
    try:
        # Bounded: never inflate more than the header announces (a bomb stays compressed).
        body = inflater.decompress(inflater.unconsumed_tail, wanted)
    except Exception:
        return None
    if offset > HEADER_SIZE and body[:1] not in (b"", b"\0"):
        return None  # header extensions: nibabel parses (and checks) them
    if len(body) < wanted and inflater.eof and inflater.unused_data:
        return None  # several gzip members (pgzip, bgzip): nibabel reads them as one stream
    if len(body) < wanted:
        raise CaseError(errors.E_UNREADABLE,
                        f"truncated: the header announces {n_bytes} data bytes, the file holds "
                        f"{max(0, len(body) - (offset - HEADER_SIZE))}", path,
                        "the file is incomplete; write it again")
    try:
        surplus = inflater.decompress(inflater.unconsumed_tail, TRAILING_LIMIT + 1)
    except Exception:
        return None  # a corrupt stream (or CRC) after the data: nibabel refuses it
    if not inflater.eof and len(surplus) <= TRAILING_LIMIT:
        return None  # the stream does not end (truncated, or its checksum never checked)
    if inflater.eof and inflater.unused_data:  # more gzip members follow the data
        check_inflated_size(path, offset + n_bytes)
    if len(surplus) > TRAILING_LIMIT:
        raise CaseError(errors.E_UNREADABLE,
                        f"the compressed data holds more than the {n_bytes} bytes its header "
                        "announces (refused without inflating the rest)", path,
                        "write the file again; it may be corrupt or hostile")
    array = np.frombuffer(body, dtype=dtype, count=math.prod(shape),
                          offset=offset - HEADER_SIZE).reshape(shape, order="F")
    zooms = tuple(float(z) for z in header.get_zooms()[: array.ndim])
    return Mask(array=array, spacing=zooms, affine=header.get_best_affine(), path=str(path))


def _magic(head: bytes, suffix: str) -> bool:
    """gzip for .nii.gz; a NIfTI-1/2 ``sizeof_hdr`` (348 or 540, either byte order) for .nii."""
    if suffix == ".nii.gz":
        return head.startswith(b"\x1f\x8b")
    return len(head) >= HEADER_SIZE and (int.from_bytes(head[:4], "little") in (348, 540)
                                         or int.from_bytes(head[:4], "big") in (348, 540))


FORMAT = Format(name="NIfTI", suffixes=(".nii.gz", ".nii"), magic=_magic, probe=probe,
                read=read)
