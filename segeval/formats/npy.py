"""NumPy ``.npy`` arrays: the header is checked before any allocation, and the file is
never unpickled (``allow_pickle=False``; object arrays are refused from the header)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from segeval import errors
from segeval.errors import CaseError
from segeval.formats.mask import Header, Mask, squeezed_shape
from segeval.formats.spec import Format, Limits


def probe(path: Path, head: bytes, limits: Limits) -> Header:
    with open(path, "rb") as stream:
        version = np.lib.format.read_magic(stream)
        if version == (1, 0):
            shape, _, dtype = np.lib.format.read_array_header_1_0(stream)
        else:
            shape, _, dtype = np.lib.format.read_array_header_2_0(stream)
        data_start = stream.tell()
    if dtype.hasobject:
        raise CaseError(errors.E_UNREADABLE, "the array holds Python objects (pickled data)",
                        path, "save label masks as numeric arrays; segeval never unpickles")
    expected = data_start + math.prod(shape) * dtype.itemsize
    if path.stat().st_size < expected:
        raise CaseError(errors.E_UNREADABLE,
                        f"truncated: the header announces {expected} bytes, the file has "
                        f"{path.stat().st_size}", path)
    return Header(shape=squeezed_shape(tuple(shape)), spacing=(1.0,) * len(shape),
                  dtype=dtype.str)


def read(path: Path) -> Mask:
    array = np.load(path, allow_pickle=False)
    return Mask(array=array, spacing=(1.0,) * array.ndim, path=str(path))


FORMAT = Format(name="NumPy", suffixes=(".npy",),
                magic=lambda head, suffix: head.startswith(b"\x93NUMPY"), probe=probe,
                read=read)
