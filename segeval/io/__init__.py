"""File → :class:`Mask`.  One module per format family, chosen by file name suffix.

Arrays are returned in index order (i, j, k) = (x, y, z) for volumes and (row, column) for
PNG images, so a NIfTI prediction pairs with an NRRD reference voxel for voxel.  Geometry is
kept in one frame (RAS, as NIfTI) whatever the format: ITK's LPS is converted on reading.
Trailing singleton axes beyond the third are squeezed ((X, Y, Z, 1) → (X, Y, Z)).
"""

from __future__ import annotations

from pathlib import Path

from segeval import errors
from segeval.errors import CaseError
from segeval.io.mask import Mask

# Longest first, so that ".nii.gz" wins over ".gz"-less ".nii".
SUFFIXES: tuple[str, ...] = (
    ".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd", ".png", ".npy", ".tiff", ".tif",
)


def format_suffix(name: str) -> str | None:
    """The known format suffix of a file name (case-insensitive), or None."""
    lower = name.lower()
    return next((s for s in SUFFIXES if lower.endswith(s)), None)


def case_id(name: str) -> str:
    """A file name without its format suffix: ``case_01.nii.gz`` → ``case_01``."""
    suffix = format_suffix(name)
    return name[: len(name) - len(suffix)] if suffix else name


def load_mask(path: str | Path) -> Mask:
    """Read a mask file; raises :class:`CaseError` (never another exception) on failure."""
    path = Path(path)
    suffix = format_suffix(path.name)
    if suffix is None:
        raise CaseError(errors.E_UNSUPPORTED_FORMAT, "unknown file type", path,
                        f"segeval reads {', '.join(SUFFIXES)}")
    if not path.is_file():
        raise CaseError(errors.E_UNREADABLE, "no such file", path)
    try:
        if suffix == ".png":
            from segeval.io import png as reader
        elif suffix in (".nii.gz", ".nii"):
            from segeval.io import nifti as reader  # type: ignore[no-redef]
        elif suffix == ".npy":
            from segeval.io import npy as reader  # type: ignore[no-redef]
        else:
            from segeval.io import itk as reader  # type: ignore[no-redef]
        mask = reader.read(path)
    except CaseError:
        raise
    except MemoryError:
        raise CaseError(errors.E_UNREADABLE, "not enough memory to load the file", path) from None
    except Exception as exc:  # any decoder failure is this file's problem, not the run's
        problem = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CaseError(errors.E_UNREADABLE, f"cannot read: {problem}", path,
                        "is the file complete and in the format its name says?") from None
    return mask.squeezed()


__all__ = ["Mask", "SUFFIXES", "case_id", "format_suffix", "load_mask"]
