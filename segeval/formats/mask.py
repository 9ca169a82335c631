"""The in-memory mask with its geometry, and the header read before any voxel."""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np


def squeezed_shape(shape: tuple[int, ...]) -> tuple[int, ...]:
    """Drop trailing singleton axes beyond the third: (X, Y, Z, 1) → (X, Y, Z)."""
    while len(shape) > 3 and shape[-1] == 1:
        shape = shape[:-1]
    return shape


@dataclass(frozen=True)
class Header:
    """What a file says about its array, read without decoding the voxels.

    ``shape`` is in index order and already squeezed; ``components`` > 1 means vector
    pixels (RGB, displacement fields); ``affine`` (4×4, RAS) is None for formats without
    geometry (PNG, .npy).
    """

    shape: tuple[int, ...]
    spacing: tuple[float, ...]
    affine: np.ndarray | None = None
    components: int = 1
    dtype: str = ""

    @property
    def voxels(self) -> int:
        count = 1
        for size in self.shape:
            count *= size
        return count


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
        shape = squeezed_shape(tuple(self.array.shape))
        if shape == self.array.shape:
            return self
        return replace(self, array=self.array.reshape(shape, order="A"),
                       spacing=self.spacing[: len(shape)])
