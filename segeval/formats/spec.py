"""What segeval knows about one file format: one :class:`Format` per format module.

A format module (``nifti``, ``nrrd``, ``metaimage``, ``png``, ``npy``, ``tiff``) defines
``FORMAT`` and keeps the decoder's heavy imports inside its functions, so that walking the
list in :data:`segeval.formats.FORMATS` costs nothing at start-up.  Adding a format is one
new module and one line in that list.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from segeval.formats.mask import Header, Mask


@dataclass(frozen=True)
class Limits:
    """What a file may be before its voxels are read."""

    max_voxels: int = 2**31
    ndims: tuple[int, ...] = (2, 3)


@dataclass(frozen=True)
class Format:
    """One file format.

    ``suffixes``: lower-case name endings, longest first within the format.
    ``magic(head, suffix)``: do the file's first bytes (at most 512) show this format?
    ``probe(path, head, limits)``: the header alone, checked before any voxel is read; it
    must refuse a file whose announced size exceeds ``limits`` before any library allocates.
    ``read(path)``: the voxels (called only after ``probe`` accepted the file).
    """

    name: str
    suffixes: tuple[str, ...]
    magic: Callable[[bytes, str], bool]
    probe: Callable[[Path, bytes, Limits], Header]
    read: Callable[[Path], Mask]
