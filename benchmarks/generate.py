"""Generate benchmark sets: realistic label volumes and images, not noise.

    python benchmarks/generate.py nifti OUT --cases 20 --shape 256 256 160 --classes 4
    python benchmarks/generate.py png OUT --cases 400 --shape 512 512 --classes 5

Each case is a few smooth ellipsoids (one per foreground class, nested like organ and
lesion), and its prediction the same shapes slightly moved and resized, so the data
compresses like real masks (long runs) and the counts are not trivial.  Written as
``OUT/gt/case_XXX.nii.gz`` / ``OUT/pred/case_XXX.nii.gz`` (uint8) or ``.png``.
"""

from __future__ import annotations

import argparse
import gzip
from pathlib import Path

import numpy as np


def label_volume(shape: tuple[int, ...], n_classes: int, rng: np.random.Generator,
                 jitter: float = 0.0, jitter_rng: np.random.Generator | None = None
                 ) -> np.ndarray:
    grids = np.ogrid[tuple(slice(0, s) for s in shape)]
    labels = np.zeros(shape, dtype=np.uint8 if n_classes <= 256 else np.uint16)
    for label in range(1, n_classes):
        centre = [s * rng.uniform(0.3, 0.7) for s in shape]
        radius = [s * rng.uniform(0.08, 0.3) / (1 + 0.02 * label) for s in shape]
        if jitter:  # from its own generator, so every label keeps the reference's shape
            assert jitter_rng is not None
            centre = [c + jitter_rng.normal(0, jitter * r)
                      for c, r in zip(centre, radius, strict=True)]
            radius = [r * (1 + jitter_rng.normal(0, jitter)) for r in radius]
        distance = sum(((g - c) / r) ** 2 for g, c, r in zip(grids, centre, radius, strict=True))
        labels[distance <= 1.0] = label
    return labels


def write_nifti(path: Path, array: np.ndarray, spacing: tuple[float, ...]) -> None:
    import nibabel as nib

    image = nib.Nifti1Image(array, np.diag([*spacing, 1.0]))
    image.header.set_data_dtype(array.dtype)
    path.write_bytes(gzip.compress(image.to_bytes(), compresslevel=6, mtime=0))


def write_png(path: Path, array: np.ndarray) -> None:
    from PIL import Image

    Image.fromarray(array).save(path)


def generate(kind: str, out: Path, cases: int, shape: tuple[int, ...], classes: int,
             seed: int = 0) -> None:
    for folder in ("gt", "pred"):
        (out / folder).mkdir(parents=True, exist_ok=True)
    for index in range(cases):
        rng = np.random.default_rng(seed + index)
        state = rng.bit_generator.state
        reference = label_volume(shape, classes, rng)
        rng.bit_generator.state = state  # same shapes, then moved a little
        prediction = label_volume(shape, classes, rng, jitter=0.08,
                                  jitter_rng=np.random.default_rng(10_000 + seed + index))
        for folder, array in (("gt", reference), ("pred", prediction)):
            if kind == "nifti":
                write_nifti(out / folder / f"case_{index:03d}.nii.gz", array, (0.8, 0.8, 1.5))
            else:
                write_png(out / folder / f"case_{index:03d}.png", array)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("kind", choices=["nifti", "png"])
    parser.add_argument("out", type=Path)
    parser.add_argument("--cases", type=int, default=20)
    parser.add_argument("--shape", type=int, nargs="+", default=[256, 256, 160])
    parser.add_argument("--classes", type=int, default=4, help="labels 0..classes-1")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    generate(args.kind, args.out, args.cases, tuple(args.shape), args.classes, args.seed)


if __name__ == "__main__":
    main()
