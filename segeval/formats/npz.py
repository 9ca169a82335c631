"""NumPy ``.npz`` archives, as nnU-Net v2 writes its probabilities.

nnU-Net v2 (``nnunetv2/inference/export_prediction.py``) saves
``np.savez_compressed(case + '.npz', probabilities=...)`` with an array of shape
``(C, *spatial)`` (float16/float32, one channel per label, channel ``c`` = label ``c``) whose
spatial axes are in the order of its image reader: SimpleITK's ``GetArrayFromImage`` order
``(z, y, x)``, which its NibabelIO reproduces by transposing nibabel's ``(x, y, z)``.
segeval reads NIfTI in index order ``(x, y, z)``, so such a file is evaluated against its
reference with ``--channel-axis 0 --prediction-axes c,2,1,0``.

The array read is the member ``probabilities`` when present, otherwise the only member;
several members without ``probabilities`` are refused (naming them).  Nothing is ever
unpickled: object arrays are refused from the member's header, before any data is read.
Its header is read from the archive without inflating the data, and the sizes the zip
directory announces must agree with the header (a bomb or a truncated member is refused).
"""

from __future__ import annotations

import math
import zipfile
from pathlib import Path
from typing import IO

import numpy as np

from segeval import errors
from segeval.errors import CaseError
from segeval.formats.mask import Header, Mask, squeezed_shape
from segeval.formats.spec import Format, Limits

MEMBER = "probabilities"


def _member(archive: zipfile.ZipFile, path: Path) -> zipfile.ZipInfo:
    members = [info for info in archive.infolist() if info.filename.endswith(".npy")]
    named = [info for info in members if info.filename == MEMBER + ".npy"]
    if named:
        return named[0]
    if len(members) == 1:
        return members[0]
    names = ", ".join(info.filename[:-4] for info in members) or "none"
    raise CaseError(errors.E_UNREADABLE, f"the archive holds arrays {names}, none named "
                    f"{MEMBER!r}", path, f"save one array, or name it {MEMBER!r} as nnU-Net does")


def _array_header(stream: IO[bytes]) -> tuple[tuple[int, ...], bool, np.dtype]:
    version = np.lib.format.read_magic(stream)
    if version == (1, 0):
        return np.lib.format.read_array_header_1_0(stream)
    return np.lib.format.read_array_header_2_0(stream)


def probe(path: Path, head: bytes, limits: Limits) -> Header:
    with zipfile.ZipFile(path) as archive:
        info = _member(archive, path)
        with archive.open(info) as stream:
            shape, _, dtype = _array_header(stream)
    if dtype.hasobject:
        raise CaseError(errors.E_UNREADABLE, "the array holds Python objects (pickled data)",
                        path, "save numeric arrays; segeval never unpickles")
    if info.file_size < math.prod(shape) * dtype.itemsize:
        raise CaseError(errors.E_UNREADABLE,
                        f"truncated: member {info.filename} announces {info.file_size} bytes, "
                        f"its array needs {math.prod(shape) * dtype.itemsize}", path)
    return Header(shape=squeezed_shape(tuple(shape)), spacing=(1.0,) * len(shape),
                  dtype=dtype.str)


def read(path: Path) -> Mask:
    with zipfile.ZipFile(path) as archive:
        info = _member(archive, path)
        with archive.open(info) as stream:
            array = np.lib.format.read_array(stream, allow_pickle=False)
    return Mask(array=array, spacing=(1.0,) * array.ndim, path=str(path))


FORMAT = Format(name="NumPy archive", suffixes=(".npz",),
                magic=lambda head, suffix: head.startswith(b"PK\x03\x04"), probe=probe,
                read=read)
