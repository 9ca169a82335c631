"""The in-memory mask with its geometry."""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np


@dataclass(frozen=True)
class Mask:
    """A decoded mask: the voxel array and where it sits in space.

    ``spacing`` is per array axis (mm for medical formats, 1.0 for images);
    ``affine`` (4×4, RAS) maps indices to world coordinates, or is None when the format has
    no geometry (PNG, .npy).
    """

    array: np.ndarray
    spacing: tuple[float, ...]
    affine: np.ndarray | None = None
    path: str = ""

    def squeezed(self) -> Mask:
        """Drop trailing singleton axes beyond the third: (X, Y, Z, 1) → (X, Y, Z)."""
        array = self.array
        while array.ndim > 3 and array.shape[-1] == 1:
            array = array[..., 0]
        if array is self.array:
            return self
        return replace(self, array=array, spacing=self.spacing[: array.ndim])
