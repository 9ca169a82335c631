#!/usr/bin/env python
"""Generate the small synthetic segmentation sets shipped in ``sample_data/``.

Run from the repository root::

    python sample_data/make_sample_data.py

The output is byte-for-byte reproducible (seeded generator, gzip streams
without timestamps), so the files can live in git and tests may rely on exact
voxel counts.  Needs only numpy, Pillow, nibabel and SimpleITK.

Shapes are smooth irregular blobs rather than noise, and predictions are
derived from the references the way a real model fails: boundaries shifted by
a few pixels, small objects missed, spurious blobs, one class swapped for
another.  The per-case error table is in ``PNG_CASES`` and ``VOLUME_CASES``.
"""

from __future__ import annotations

import gzip
import itertools
import json
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
import SimpleITK as sitk
from PIL import Image

SEED = 20240611
OUT_ROOT = Path(__file__).resolve().parent
GENERATED_SUFFIXES = (".png", ".nii.gz", ".nrrd")

# ---------------------------------------------------------------- 2D set ---
PNG_SHAPE = (160, 160)
CELL, NUCLEUS, DEBRIS = 1, 2, 3
PNG_LABELS = {"1": "cell", "2": "nucleus", "3": "debris"}


@dataclass(frozen=True)
class PngCase:
    n_debris: int
    miss: str | None = None  # "smallest_cell" | "smallest_debris" | "all_debris"
    false_positive: int | None = None  # label of a spurious blob in the prediction
    confuse: bool = False  # smallest cell predicted as nucleus


PNG_CASES = (
    PngCase(n_debris=2, false_positive=DEBRIS),
    PngCase(n_debris=1, miss="smallest_cell"),
    PngCase(n_debris=2, confuse=True),
    PngCase(n_debris=0, false_positive=CELL),  # debris absent from gt AND pred
    PngCase(n_debris=2, miss="all_debris"),  # pred has no debris at all
    PngCase(n_debris=3, miss="smallest_debris", false_positive=CELL),
    PngCase(n_debris=1, confuse=True, false_positive=DEBRIS),
    PngCase(n_debris=2),  # only boundary errors
)

# ---------------------------------------------------------------- 3D set ---
VOLUME_SHAPE = (64, 64, 40)  # (x, y, z) as nibabel indexes it
SPACING = (1.5, 1.5, 2.5)  # mm
TRANSLATION = (-47.25, -31.5, 12.5)  # distinct per axis so axis mix-ups show
AFFINE = np.diag([*SPACING, 1.0])
AFFINE[:3, 3] = TRANSLATION
LIVER, TUMOUR, KIDNEY = 1, 2, 3
VOLUME_LABELS = {"labels": {"background": 0, "liver": 1, "tumour": 2, "kidney": 3}}


@dataclass(frozen=True)
class VolumeCase:
    n_tumours: int
    miss_smallest_tumour: bool = False
    false_positive_kidney: bool = False
    reference_as_nrrd: bool = False  # cross-format pairing: .nrrd ref, .nii.gz pred


VOLUME_CASES = (
    VolumeCase(n_tumours=1),
    VolumeCase(n_tumours=2, miss_smallest_tumour=True),
    VolumeCase(n_tumours=0),  # tumour absent from gt AND pred
    VolumeCase(n_tumours=1, false_positive_kidney=True),
    VolumeCase(n_tumours=1, reference_as_nrrd=True),
)


# ------------------------------------------------------------ morphology ---
def neighbour_offsets(ndim: int, full: bool) -> list[tuple[int, ...]]:
    """Face neighbours (cross) or all neighbours (box) of a pixel/voxel."""
    if full:
        return [o for o in itertools.product((-1, 0, 1), repeat=ndim) if any(o)]
    offsets = []
    for axis in range(ndim):
        for step in (-1, 1):
            offset = [0] * ndim
            offset[axis] = step
            offsets.append(tuple(offset))
    return offsets


def shifted(mask: np.ndarray, offset: tuple[int, ...]) -> np.ndarray:
    """``out[i] = mask[i - offset]``, replicating the border.

    Edge replication keeps objects that are cut by the image border cut there:
    with zero padding an erosion would peel them away from the border.
    """
    padded = np.pad(mask, [(abs(o), abs(o)) for o in offset], mode="edge")
    window = tuple(
        slice(abs(o) - o, abs(o) - o + n) for o, n in zip(offset, mask.shape, strict=True)
    )
    return padded[window]


def dilate(mask: np.ndarray, steps: int) -> np.ndarray:
    for step in range(steps):
        # Alternating cross and box gives an octagon, closer to a disc/ball
        # than either element alone.
        grown = mask.copy()
        for offset in neighbour_offsets(mask.ndim, full=bool(step % 2)):
            grown |= shifted(mask, offset)
        mask = grown
    return mask


def erode(mask: np.ndarray, steps: int) -> np.ndarray:
    return ~dilate(~mask, steps)


# ---------------------------------------------------------------- shapes ---
def smooth_field(shape: tuple[int, ...], rng: np.random.Generator, n_waves: int = 4) -> np.ndarray:
    """Zero-mean field with one or two cycles across the image.

    Used to decide *where* a prediction over- or under-segments, so that
    errors come in coherent stretches of boundary as with real models.
    """
    grid = np.indices(shape, dtype=float) / np.reshape(shape, (-1,) + (1,) * len(shape))
    field = np.zeros(shape)
    for _ in range(n_waves):
        frequency = rng.uniform(0.3, 1.5, size=len(shape)) * rng.choice([-1, 1], size=len(shape))
        field += np.cos(
            2 * np.pi * np.tensordot(frequency, grid, axes=1) + rng.uniform(0, 2 * np.pi)
        )
    return field


def blob_2d(center, radii, angle, rng: np.random.Generator, roughness: float = 0.08) -> np.ndarray:
    """Rotated ellipse whose outline is bent by a few low harmonics."""
    rows, cols = np.indices(PNG_SHAPE, dtype=float)
    dy, dx = rows - center[0], cols - center[1]
    u = (np.cos(angle) * dx + np.sin(angle) * dy) / radii[0]
    v = (-np.sin(angle) * dx + np.cos(angle) * dy) / radii[1]
    theta = np.arctan2(v, u)
    # Harmonics 2-4 only: low enough that the outline never grows spikes.
    outline = np.ones_like(theta)
    for k in (2, 3, 4):
        outline += rng.uniform(0, roughness) * np.cos(k * theta + rng.uniform(0, 2 * np.pi))
    return np.hypot(u, v) <= outline


def random_rotation(rng: np.random.Generator, max_degrees: float) -> np.ndarray:
    """Rotation about a random axis by at most ``max_degrees`` (Rodrigues)."""
    axis = rng.normal(size=3)
    axis /= np.linalg.norm(axis)
    angle = np.deg2rad(rng.uniform(-max_degrees, max_degrees))
    k = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    return np.eye(3) + np.sin(angle) * k + (1 - np.cos(angle)) * k @ k


def voxel_centres_mm() -> np.ndarray:
    """(3, X, Y, Z) voxel positions in mm, so shapes are round in physical space."""
    return np.indices(VOLUME_SHAPE, dtype=float) * np.reshape(SPACING, (3, 1, 1, 1))


def blob_3d(
    center_mm, radii_mm, rotation, rng: np.random.Generator, roughness: float
) -> np.ndarray:
    """Rotated ellipsoid whose surface is modulated by a few smooth waves over the sphere."""
    relative = voxel_centres_mm() - np.reshape(center_mm, (3, 1, 1, 1))
    local = np.tensordot(rotation.T, relative, axes=1) / np.reshape(radii_mm, (3, 1, 1, 1))
    radius = np.linalg.norm(local, axis=0)
    direction = local / np.maximum(radius, 1e-9)
    surface = np.ones_like(radius)
    for _ in range(3):
        wave = rng.normal(size=3)
        wave /= np.linalg.norm(wave)
        frequency = rng.uniform(1.0, 2.5)
        surface += rng.uniform(0, roughness) * np.cos(
            frequency * np.tensordot(wave, direction, axes=1) * np.pi + rng.uniform(0, 2 * np.pi)
        )
    return radius <= surface


def jitter_boundary(
    mask, field, max_steps: int, bias: float, rng: np.random.Generator
) -> np.ndarray:
    """Move the outline out where ``field + bias`` is high and in where it is low.

    The offset changes by one pixel at a time along the outline; switching
    straight from "grown by k" to "shrunk by k" would cut notches and holes.
    Each object also gets its own random bias: otherwise a small object in a
    calm stretch of the field could come out pixel-perfect.
    """
    level = (field - field.mean()) / field.std() + bias + rng.normal(0, 0.5)
    offset = np.clip(np.rint(0.8 * max_steps * level), -max_steps, max_steps).astype(int)
    shifted_mask = np.zeros_like(mask)
    for steps in range(-max_steps, max_steps + 1):
        here = offset == steps
        candidate = dilate(mask, steps) if steps >= 0 else erode(mask, -steps)
        shifted_mask[here] = candidate[here]
    return shifted_mask


def paint(shape, layers) -> np.ndarray:
    """Label map from ``(label, mask)`` layers; later layers win."""
    labels = np.zeros(shape, dtype=np.uint8)
    for label, mask in layers:
        labels[mask] = label
    return labels


def place_in_background(
    make_blob, occupied: np.ndarray, rng: np.random.Generator, tries: int = 500
):
    """Retry a random blob until it is non-empty and avoids ``occupied``."""
    for _ in range(tries):
        blob = make_blob(rng)
        if blob.any() and not (blob & occupied).any():
            return blob
    raise RuntimeError("could not place a blob in the background; change SEED")


# ---------------------------------------------------------------- 2D set ---
@dataclass
class CellScene:
    cells: list[np.ndarray]
    nuclei: list[np.ndarray | None]  # nuclei[i] belongs to cells[i]
    debris: list[np.ndarray]


def cell_geometry(rng: np.random.Generator, at_edge: bool):
    radii = rng.uniform(11, 24, size=2)
    if at_edge:
        # Centre within a fraction of a radius of one border, so the cell is cut.
        side, along = rng.integers(4), rng.uniform(20, 140)
        depth = rng.uniform(-0.3, 0.4) * radii.min()
        far = PNG_SHAPE[0] - 1 - depth
        center = [(depth, along), (far, along), (along, depth), (along, far)][side]
    else:
        center = tuple(rng.uniform(25, 135, size=2))
    return np.array(center), radii, rng.uniform(0, np.pi)


def make_cells(rng: np.random.Generator):
    """Several cells, a few cut by the border, allowed to touch but not to pile up."""
    n_cells = int(rng.integers(5, 8))
    geometries = []
    while len(geometries) < n_cells:
        center, radii, angle = cell_geometry(rng, at_edge=len(geometries) < 2)
        if all(
            np.linalg.norm(center - c) > 0.8 * (radii.mean() + r.mean()) for c, r, _ in geometries
        ):
            geometries.append((center, radii, angle))
    cells = [blob_2d(c, r, a, rng) for c, r, a in geometries]
    return geometries, cells


def make_nucleus(cell: np.ndarray, center, radii, angle, rng: np.random.Generator):
    """Smaller, slightly off-centre blob kept two pixels inside its cell."""
    offset = rng.uniform(-0.15, 0.15, size=2) * radii.min()
    blob = blob_2d(
        center + offset, radii * rng.uniform(0.3, 0.45), angle + rng.normal(0, 0.3), rng, 0.05
    )
    nucleus = blob & erode(cell, 2)
    return nucleus if nucleus.sum() >= 10 else None


def random_debris(rng: np.random.Generator) -> np.ndarray:
    return blob_2d(
        rng.uniform(8, 152, size=2), rng.uniform(2.5, 4.5, size=2), rng.uniform(0, np.pi), rng, 0.15
    )


def random_spurious_cell(rng: np.random.Generator) -> np.ndarray:
    return blob_2d(
        rng.uniform(15, 145, size=2), rng.uniform(6, 9, size=2), rng.uniform(0, np.pi), rng
    )


def make_cell_scene(case: PngCase, rng: np.random.Generator) -> CellScene:
    geometries, cells = make_cells(rng)
    nuclei = [
        make_nucleus(cell, *geometry, rng) for cell, geometry in zip(cells, geometries, strict=True)
    ]
    occupied = dilate(np.any(cells, axis=0), 3)
    debris = []
    for _ in range(case.n_debris):
        debris.append(place_in_background(random_debris, occupied, rng))
        occupied |= dilate(debris[-1], 3)
    return CellScene(cells, nuclei, debris)


def reference_cells(scene: CellScene) -> np.ndarray:
    nuclei = [n for n in scene.nuclei if n is not None]
    return paint(
        PNG_SHAPE,
        [(CELL, c) for c in scene.cells]
        + [(NUCLEUS, n) for n in nuclei]
        + [(DEBRIS, d) for d in scene.debris],
    )


def smallest(masks) -> int:
    return int(np.argmin([m.sum() for m in masks]))


def touches_border(mask: np.ndarray) -> bool:
    return bool(mask[0].any() or mask[-1].any() or mask[:, 0].any() or mask[:, -1].any())


def pick_confused_cell(scene: CellScene, candidates: list[int]) -> int:
    """Smallest whole cell: a small round cell is what a model mistakes for a nucleus."""
    whole = [i for i in candidates if not touches_border(scene.cells[i])] or candidates
    return whole[smallest([scene.cells[i] for i in whole])]


def predict_cells(scene: CellScene, case: PngCase, rng: np.random.Generator) -> np.ndarray:
    field = smooth_field(PNG_SHAPE, rng)
    bias = rng.uniform(-0.5, 0.5)  # overall tendency to over- or under-segment

    kept = list(range(len(scene.cells)))
    if case.miss == "smallest_cell":
        kept.remove(smallest(scene.cells))
    confused = pick_confused_cell(scene, kept) if case.confuse else None

    layers = []
    cell_masks = {i: jitter_boundary(scene.cells[i], field, 3, bias, rng) for i in kept}
    for i, mask in cell_masks.items():
        layers.append((NUCLEUS if i == confused else CELL, mask))
    for i, mask in cell_masks.items():
        if scene.nuclei[i] is not None and i != confused:
            nucleus = jitter_boundary(scene.nuclei[i], field, 2, bias, rng) & erode(mask, 1)
            layers.append((NUCLEUS, nucleus))

    debris = list(scene.debris)
    if case.miss == "all_debris":
        debris = []
    elif case.miss == "smallest_debris":
        debris.pop(smallest(debris))
    layers += [(DEBRIS, jitter_boundary(d, field, 1, bias, rng)) for d in debris]

    if case.false_positive is not None:
        occupied = dilate(np.any([m for _, m in layers], axis=0), 3)
        make = random_debris if case.false_positive == DEBRIS else random_spurious_cell
        layers.append((case.false_positive, place_in_background(make, occupied, rng)))
    return paint(PNG_SHAPE, layers)


def write_png(labels: np.ndarray, path: Path) -> None:
    Image.fromarray(labels.astype(np.uint8)).save(path, format="PNG")


def make_png_set(root: Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    results = {}
    for index, case in enumerate(PNG_CASES, start=1):
        # One generator per case: editing one case leaves the others unchanged.
        rng = np.random.default_rng([SEED, 2, index])
        scene = make_cell_scene(case, rng)
        name = f"img_{index:03d}"
        results[name] = (reference_cells(scene), predict_cells(scene, case, rng))
        write_png(results[name][0], root / "gt" / f"{name}.png")
        write_png(results[name][1], root / "pred" / f"{name}.png")
    write_json(PNG_LABELS, root / "labels.json")
    return results


# ---------------------------------------------------------------- 3D set ---
@dataclass
class Abdomen:
    liver: np.ndarray
    tumours: list[np.ndarray]
    kidneys: list[np.ndarray]


def vary(values, rng: np.random.Generator, spread: float) -> np.ndarray:
    """Scale each value by a random factor in [1 - spread, 1 + spread]."""
    return np.asarray(values, dtype=float) * rng.uniform(1 - spread, 1 + spread, size=len(values))


def make_tumours(liver: np.ndarray, count: int, rng: np.random.Generator) -> list[np.ndarray]:
    """Near-spherical lesions fully inside the liver and apart from each other."""
    tumours = []
    forbidden = ~liver
    candidates = np.argwhere(erode(liver, 3))

    def random_tumour(r: np.random.Generator) -> np.ndarray:
        center_mm = candidates[r.integers(len(candidates))] * SPACING
        return blob_3d(center_mm, [r.uniform(5, 9)] * 3, np.eye(3), r, roughness=0.05)

    for _ in range(count):
        tumours.append(place_in_background(random_tumour, forbidden, rng))
        forbidden = forbidden | dilate(tumours[-1], 2)
    return tumours


def make_abdomen(case: VolumeCase, rng: np.random.Generator) -> Abdomen:
    # Rough RAS layout: +x is patient left, +y anterior, +z superior, so the
    # liver sits at low x, the kidneys posteriorly (low y) and lower down.
    liver = blob_3d(
        vary([36, 52, 60], rng, 0.08),
        vary([30, 24, 28], rng, 0.1),
        random_rotation(rng, 20),
        rng,
        0.08,
    )
    tumours = make_tumours(liver, case.n_tumours, rng)
    fat_plane = dilate(liver, 1)
    kidneys = [
        blob_3d(
            vary(center, rng, 0.06), vary([9, 7, 14], rng, 0.1), random_rotation(rng, 15), rng, 0.05
        )
        & ~fat_plane
        for center in ([24, 22, 40], [70, 22, 44])
    ]
    return Abdomen(liver, tumours, kidneys)


def reference_abdomen(abdomen: Abdomen) -> np.ndarray:
    return paint(
        VOLUME_SHAPE,
        [(LIVER, abdomen.liver)]
        + [(TUMOUR, t) for t in abdomen.tumours]
        + [(KIDNEY, k) for k in abdomen.kidneys],
    )


def random_spurious_kidney(rng: np.random.Generator) -> np.ndarray:
    # Spleen-like region on the patient's left, where such confusions happen.
    center = [rng.uniform(60, 80), rng.uniform(45, 70), rng.uniform(55, 80)]
    return blob_3d(center, vary([6, 5, 8], rng, 0.15), random_rotation(rng, 30), rng, 0.06)


def predict_abdomen(abdomen: Abdomen, case: VolumeCase, rng: np.random.Generator) -> np.ndarray:
    field = smooth_field(VOLUME_SHAPE, rng)
    bias = rng.uniform(-0.5, 0.5)
    liver = jitter_boundary(abdomen.liver, field, 2, bias, rng)

    tumours = list(abdomen.tumours)
    if case.miss_smallest_tumour:
        tumours.pop(smallest(tumours))
    tumours = [jitter_boundary(t, field, 1, bias, rng) & liver for t in tumours]

    kidneys = [jitter_boundary(k, field, 1, bias, rng) & ~liver for k in abdomen.kidneys]
    if case.false_positive_kidney:
        occupied = dilate(liver | np.any(kidneys, axis=0), 2)
        kidneys.append(place_in_background(random_spurious_kidney, occupied, rng))

    return paint(
        VOLUME_SHAPE,
        [(LIVER, liver)] + [(TUMOUR, t) for t in tumours] + [(KIDNEY, k) for k in kidneys],
    )


def write_nifti(labels: np.ndarray, path: Path) -> None:
    image = nib.Nifti1Image(labels.astype(np.uint8), AFFINE)
    image.set_data_dtype(np.uint8)
    image.header.set_xyzt_units("mm")
    image.set_qform(AFFINE, code=1)
    image.set_sform(AFFINE, code=1)
    # nib.save would stamp the gzip header with the current time; mtime=0
    # keeps the file byte-identical across runs.
    path.write_bytes(gzip.compress(image.to_bytes(), compresslevel=9, mtime=0))


def itk_geometry() -> tuple[tuple, tuple, tuple]:
    """Spacing, origin, direction of AFFINE in ITK's LPS convention.

    NIfTI world space is RAS, ITK's is LPS: flipping x and y of the affine
    gives the geometry SimpleITK reports when it reads the NIfTI files.
    """
    ras_to_lps = np.diag([-1.0, -1.0, 1.0])
    direction = ras_to_lps @ AFFINE[:3, :3] / np.asarray(SPACING)
    origin = ras_to_lps @ AFFINE[:3, 3]
    return tuple(SPACING), tuple(origin), tuple(direction.ravel())


def write_nrrd(labels: np.ndarray, path: Path) -> None:
    # SimpleITK arrays are indexed (z, y, x); nibabel's are (x, y, z).
    image = sitk.GetImageFromArray(np.ascontiguousarray(labels.astype(np.uint8).transpose(2, 1, 0)))
    spacing, origin, direction = itk_geometry()
    image.SetSpacing(spacing)
    image.SetOrigin(origin)
    image.SetDirection(direction)
    sitk.WriteImage(image, str(path), useCompression=True)


def make_volume_set(root: Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    results = {}
    for index, case in enumerate(VOLUME_CASES, start=1):
        rng = np.random.default_rng([SEED, 3, index])
        abdomen = make_abdomen(case, rng)
        name = f"case_{index:03d}"
        results[name] = (reference_abdomen(abdomen), predict_abdomen(abdomen, case, rng))
        if case.reference_as_nrrd:
            write_nrrd(results[name][0], root / "gt" / f"{name}.nrrd")
        else:
            write_nifti(results[name][0], root / "gt" / f"{name}.nii.gz")
        write_nifti(results[name][1], root / "pred" / f"{name}.nii.gz")
    write_json(VOLUME_LABELS, root / "labels.json")
    return results


def check_cross_format(root: Path, volumes: dict[str, tuple[np.ndarray, np.ndarray]]) -> None:
    """Fail loudly if a .nrrd reference would not line up with its .nii.gz prediction."""
    for index, case in enumerate(VOLUME_CASES, start=1):
        if not case.reference_as_nrrd:
            continue
        name = f"case_{index:03d}"
        ref = sitk.ReadImage(str(root / "gt" / f"{name}.nrrd"))
        pred = sitk.ReadImage(str(root / "pred" / f"{name}.nii.gz"))
        for attribute in ("GetSpacing", "GetOrigin", "GetDirection"):
            a, b = getattr(ref, attribute)(), getattr(pred, attribute)()
            if not np.allclose(a, b):
                raise AssertionError(f"{name}: {attribute} differs, nrrd {a} vs nifti {b}")
        if not np.array_equal(sitk.GetArrayFromImage(ref).transpose(2, 1, 0), volumes[name][0]):
            raise AssertionError(f"{name}: nrrd voxels are not the intended reference")


# ----------------------------------------------------------------- utils ---
def write_json(payload: dict, path: Path) -> None:
    path.write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")


def prepare_dirs(root: Path) -> None:
    """Create gt/pred folders and drop earlier outputs, so renamed cases leave no orphans."""
    for sub in ("gt", "pred"):
        folder = root / sub
        folder.mkdir(parents=True, exist_ok=True)
        for path in folder.iterdir():
            if path.is_file() and path.name.endswith(GENERATED_SUFFIXES):
                path.unlink()


def main() -> None:
    png_root, volume_root = OUT_ROOT / "png2d", OUT_ROOT / "nifti3d"
    prepare_dirs(png_root)
    prepare_dirs(volume_root)
    make_png_set(png_root)
    volumes = make_volume_set(volume_root)
    check_cross_format(volume_root, volumes)
    print(f"wrote {len(PNG_CASES)} image pairs to {png_root}")
    print(f"wrote {len(VOLUME_CASES)} volume pairs to {volume_root}")


if __name__ == "__main__":
    main()
