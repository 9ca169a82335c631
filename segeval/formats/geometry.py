"""Do prediction and reference lie on the same voxel grid in space?

Checked from the two headers before any voxel is read (``--geometry``):

* shapes must always be equal (``E_SHAPE_MISMATCH``, with a hint when the axes look
  permuted);
* ``strict`` (default) also requires, when both files carry geometry (NIfTI, NRRD,
  MetaImage): spacing equal within a relative ``tol``, direction cosines within ``tol``, and
  origins within ``tol`` voxels.  A flipped or permuted orientation is therefore an error
  naming both orientations (``RAS`` versus ``LAS``), never a silent Dice near 0;
* ``shape`` compares voxel grids only; ``off`` is accepted as a synonym of ``shape``
  (voxels of different grids cannot be paired, so the shape check cannot be switched off).
PNG and ``.npy`` files carry no geometry, so only their shapes are compared.
"""

from __future__ import annotations

import numpy as np

from segeval import errors
from segeval.errors import CaseError
from segeval.formats.mask import Header


def check_same_shape(prediction_shape: tuple[int, ...], reference_shape: tuple[int, ...],
                     prediction_name: str, reference_name: str) -> None:
    if tuple(prediction_shape) == tuple(reference_shape):
        return
    hint = "prediction and reference must have the same grid"
    if sorted(prediction_shape) == sorted(reference_shape):
        hint = "the axes look permuted: check the axis order the files were written in"
    raise CaseError(
        errors.E_SHAPE_MISMATCH,
        f"shape {tuple(prediction_shape)} does not match the reference's "
        f"{tuple(reference_shape)} ({reference_name})",
        prediction_name, hint)


def check_geometry(prediction: Header, reference: Header, mode: str, tol: float,
                   prediction_name: str, reference_name: str) -> None:
    """Raise :class:`CaseError` when the two grids differ beyond ``tol`` (see module doc)."""
    check_same_shape(prediction.shape, reference.shape, prediction_name, reference_name)
    if mode != "strict" or prediction.affine is None or reference.affine is None:
        return
    differences = describe_differences(prediction, reference, tol)
    if differences:
        raise CaseError(
            errors.E_GEOMETRY_MISMATCH,
            f"geometry differs from the reference's ({reference_name}): "
            + "; ".join(differences), prediction_name,
            "resample or reorient the prediction onto the reference grid, or pass "
            "--geometry shape to compare voxel grids only")


def describe_differences(prediction: Header, reference: Header, tol: float) -> list[str]:
    ndim = min(3, len(reference.shape))
    found = []
    spacing_p = np.asarray(prediction.spacing[:ndim], float)
    spacing_r = np.asarray(reference.spacing[:ndim], float)
    if not np.allclose(spacing_p, spacing_r, rtol=tol, atol=0):
        found.append(f"spacing {_fmt(spacing_p)} vs {_fmt(spacing_r)}")
    assert prediction.affine is not None and reference.affine is not None
    cosines_p = _cosines(prediction.affine)
    cosines_r = _cosines(reference.affine)
    if not np.allclose(cosines_p, cosines_r, rtol=0, atol=tol):
        found.append(f"orientation {orientation(prediction.affine)} vs "
                     f"{orientation(reference.affine)} (direction cosines "
                     f"{_fmt(cosines_p.ravel())} vs {_fmt(cosines_r.ravel())})")
    origin_p, origin_r = prediction.affine[:3, 3], reference.affine[:3, 3]
    if np.any(np.abs(origin_p - origin_r) > tol * np.minimum(spacing_p.min(), spacing_r.min())):
        found.append(f"origin {_fmt(origin_p)} vs {_fmt(origin_r)} mm")
    return found


def orientation(affine: np.ndarray) -> str:
    """Axis codes such as ``RAS`` (where each index axis points, in RAS+ world space)."""
    from nibabel.orientations import aff2axcodes

    return "".join(str(code) for code in aff2axcodes(affine))


def _cosines(affine: np.ndarray) -> np.ndarray:
    columns = affine[:3, :3]
    norms = np.linalg.norm(columns, axis=0)
    return columns / np.where(norms == 0, 1.0, norms)


def _fmt(values: np.ndarray) -> str:
    return "(" + ", ".join(f"{v:.6g}" for v in np.asarray(values).ravel()) + ")"
