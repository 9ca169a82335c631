"""Boundary metrics: segeval vs MONAI, DeepMind surface-distance and MedPy (issue 15).

    python benchmarks/boundary.py                      # 20 cases, competitors on the first 5/2
    python benchmarks/boundary.py --cases 4 --monai-cases 2 --other-cases 1   # quick

Data: ``benchmarks/data/boundary/{gt,pred}`` written by ``generate.py``'s ``nifti`` generator
(256x256x160, labels 0..3, spacing 0.8x0.8x1.5 mm) when missing.  Every tool gets the same
decoded arrays (nibabel), so the table times the metric step only: all of HD, HD95, ASSD and
NSD (τ = 1.5 mm) for the 3 foreground classes of a case, per case, median over cases, in
this process, one after the other.  Before timing, each competitor's numbers are checked
against segeval's on every case it runs (MONAI: voxel convention, rel 1e-5 since MONAI
computes in float32; surface-distance: segeval's ``surfel`` convention, rel 1e-9; MedPy:
segeval's pooled-percentile HD95 and ASSD, rel 1e-9); a disagreement stops the script.

``--cli`` instead times whole processes on ``--data`` (``--cases`` cases, default 20),
each run once after a warm-up of the file cache (MONAI on the first ``--monai-cases``; the
ratio is per case, each process's start-up included in its own time):

* ``segeval evaluate pred/ gt/ --metrics all -q`` (the installed entry point: start-up, file
  decoding, counting, HD, HD95, ASSD, MASD, NSD, reductions), with the default workers and
  with ``--workers 1``;
* MONAI as a user would run it: a fresh ``python`` that imports MONAI, decodes each pair
  with nibabel and calls ``compute_hausdorff_distance`` (percentile None and 95),
  ``compute_average_surface_distance(symmetric=True)`` and ``compute_surface_dice``
  (τ = 1.5 mm) on one-hot tensors of the 3 foreground classes, one case after the other;
* ``segeval evaluate pred/ gt/ -q`` (overlap only) with this checkout, and with
  ``--before DIR`` (another checkout) ``--metrics all`` with that one.

Also measured: the distance step with its grid search and with the k-d tree alone, on the
bench cases and on predictions that follow the reference (grown by 2 voxels or shrunk by 1
in smooth patches, as a good model's); the stray-voxel worst case (5 far voxels added to
case 0's prediction, which stretch the union bounding box to the whole image) vs the clean
case; the peak RSS of all boundary metrics on a 1024x1024x512 pair with a large object (a
fresh process: ru_maxrss, with the RSS of only holding the two masks beside it); and that
computing them imports no torch.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

from segeval.core.boundary import boundary_scores, surface_distances  # noqa: E402

TAU = 1.5
CLASSES = (1, 2, 3)
METRICS = ("hd", "hd95", "assd", "nsd")


def load(folder: Path, cases: int) -> list[tuple[np.ndarray, np.ndarray, tuple[float, ...]]]:
    import nibabel as nib

    pairs = []
    for index in range(cases):
        name = f"case_{index:03d}.nii.gz"
        reference = nib.load(folder / "gt" / name)
        prediction = nib.load(folder / "pred" / name)
        spacing = tuple(float(z) for z in reference.header.get_zooms())
        pairs.append((np.asarray(prediction.dataobj), np.asarray(reference.dataobj), spacing))
    return pairs


def segeval_case(prediction, reference, spacing, surface="voxel", pooled=False):
    out = {}
    for c in CLASSES:
        distances = surface_distances(reference == c, prediction == c, spacing, surface)
        out[c] = boundary_scores(distances, METRICS, tolerance=TAU, pooled_percentile=pooled)
    return out


def monai_case(prediction, reference, spacing):
    import torch
    from monai.metrics import (
        compute_average_surface_distance,
        compute_hausdorff_distance,
        compute_surface_dice,
    )

    def one_hot(labels):
        return torch.from_numpy(np.stack([labels == c for c in range(4)])[None]).float()

    p, g = one_hot(prediction), one_hot(reference)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        values = {
            "hd": compute_hausdorff_distance(p, g, spacing=spacing)[0],
            "hd95": compute_hausdorff_distance(p, g, percentile=95, spacing=spacing)[0],
            "assd": compute_average_surface_distance(p, g, symmetric=True, spacing=spacing)[0],
            "nsd": compute_surface_dice(p, g, [TAU] * 3, spacing=spacing)[0],
        }
    return {c: {m: float(values[m][c - 1]) for m in METRICS} for c in CLASSES}


def deepmind_case(prediction, reference, spacing):
    import surface_distance as deepmind

    out = {}
    for c in CLASSES:
        d = deepmind.compute_surface_distances(reference == c, prediction == c, spacing)
        to_pred, to_ref = deepmind.compute_average_surface_distance(d)
        areas = d["surfel_areas_gt"].sum() + d["surfel_areas_pred"].sum()
        out[c] = {
            "hd": deepmind.compute_robust_hausdorff(d, 100),
            "hd95": deepmind.compute_robust_hausdorff(d, 95),
            "assd": (to_pred * d["surfel_areas_gt"].sum()
                     + to_ref * d["surfel_areas_pred"].sum()) / areas,
            "nsd": deepmind.compute_surface_dice_at_tolerance(d, TAU),
        }
    return out


def medpy_case(prediction, reference, spacing):
    from medpy.metric import binary

    out = {}
    for c in CLASSES:
        p, g = prediction == c, reference == c
        out[c] = {"hd": binary.hd(p, g, spacing), "hd95": binary.hd95(p, g, spacing),
                  "assd": binary.assd(p, g, spacing)}
    return out


def check(name, theirs, ours, rel):
    for c, values in theirs.items():
        for metric, value in values.items():
            if not np.isclose(value, ours[c][metric], rtol=rel, atol=0):
                raise SystemExit(f"{name} DISAGREES on class {c} {metric}: {value} vs "
                                 f"{ours[c][metric]}")


def timed(function, pairs):
    seconds = []
    for prediction, reference, spacing in pairs:
        start = time.perf_counter()
        function(prediction, reference, spacing)
        seconds.append(time.perf_counter() - start)
    return seconds


def following(reference: np.ndarray, seed: int = 0) -> np.ndarray:
    """A prediction that follows the reference, as a good model's does: each class grown by
    2 voxels or shrunk by 1 in smooth random patches."""
    from scipy import ndimage

    rng = np.random.default_rng(seed)
    patches = ndimage.gaussian_filter(rng.standard_normal(reference.shape), 4)
    out = np.zeros_like(reference)
    for c in CLASSES:
        mask = reference == c
        grown = ndimage.binary_dilation(mask, iterations=2) & (reference == 0)
        shrunk = ndimage.binary_erosion(mask)
        out[np.where(patches > 0.01, mask | grown, np.where(patches < -0.01, shrunk, mask))] = c
    return out


def grid_versus_tree(pairs) -> None:
    """The distance step with its grid search (the default) and with the k-d tree alone
    (the grid's cell budget set to 0), same arrays, same run: the bench cases, whose lesions
    are moved (most elements several mm from the other boundary), and the same references
    with a prediction that follows them (:func:`following`).  Values checked equal first."""
    from segeval.core import boundary

    sets = {"bench cases (moved lesions)": pairs,
            "predictions that follow the reference": [(following(r, i), r, s)
                                                      for i, (_, r, s) in enumerate(pairs)]}
    budget = boundary._GRID_CELLS
    print("\nGrid search + k-d tree vs k-d tree alone (segeval voxel, HD/HD95/ASSD/NSD, "
          "median s/case)\n")
    print("| cases | n | grid + tree | tree alone | tree / grid |")
    print("|---|---|---|---|---|")
    for name, chosen in sets.items():
        boundary._GRID_CELLS = 0
        tree = [segeval_case(*pair) for pair in chosen]
        tree_s = timed(segeval_case, chosen)
        boundary._GRID_CELLS = budget
        for ours, theirs in zip((segeval_case(*pair) for pair in chosen), tree, strict=True):
            check("tree alone", theirs, ours, 1e-12)
        grid_s = timed(segeval_case, chosen)
        print(f"| {name} | {len(chosen)} | {statistics.median(grid_s):.3f} | "
              f"{statistics.median(tree_s):.3f} | "
              f"{statistics.median(tree_s) / statistics.median(grid_s):.2f}x |")


def with_strays(prediction: np.ndarray) -> np.ndarray:
    stray = prediction.copy()
    last = [n - 1 for n in stray.shape]
    for corner in ([0, 0, 0], [last[0], 0, 0], [0, last[1], 0], [0, 0, last[2]], last):
        stray[tuple(corner)] = 1
    return stray


LARGE = """
import resource, sys, time
import numpy as np
sys.path.insert(0, {root!r})
shape = (1024, 1024, 512)
def ball(centre, radius):
    mask = np.zeros(shape, bool)
    y, x = np.ogrid[:shape[1], :shape[2]]
    for z in range(shape[0]):
        r2 = radius ** 2 - (z - centre[0]) ** 2
        if r2 > 0:
            mask[z] = (y - centre[1]) ** 2 + ((x - centre[2]) * 2.0) ** 2 <= r2
    return mask
reference = ball((512, 512, 256), 400)
prediction = ball((520, 505, 258), 395)
held = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
if {compute}:
    from segeval.core.boundary import boundary_scores, surface_distances
    start = time.perf_counter()
    d = surface_distances(reference, prediction, (0.5, 0.5, 1.0))
    values = boundary_scores(d, ("hd", "hd95", "assd", "masd", "nsd"), tolerance=1.5)
    seconds = time.perf_counter() - start
    print(f"{{seconds:.1f}} s, boundary sizes {{d.pred_size}} / {{d.ref_size}}, {{values}}")
    print("torch imported:", "torch" in sys.modules)
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
print(f"peak RSS {{peak:.2f}} GiB (masks alone {{held:.2f}} GiB)")
"""


MONAI_PROCESS = """
import sys, warnings
from pathlib import Path
import nibabel as nib, numpy as np, torch
from monai.metrics import (compute_average_surface_distance, compute_hausdorff_distance,
                           compute_surface_dice)
warnings.simplefilter("ignore")
folder = Path(sys.argv[1])
for path in sorted((folder / "gt").glob("*.nii.gz"))[: int(sys.argv[2])]:
    reference = nib.load(path)
    spacing = tuple(float(z) for z in reference.header.get_zooms())
    g = np.asarray(reference.dataobj)
    p = np.asarray(nib.load(folder / "pred" / path.name).dataobj)
    hot = lambda a: torch.from_numpy(np.stack([a == c for c in range(4)])[None]).float()
    P, G = hot(p), hot(g)
    compute_hausdorff_distance(P, G, spacing=spacing)
    compute_hausdorff_distance(P, G, percentile=95, spacing=spacing)
    compute_average_surface_distance(P, G, symmetric=True, spacing=spacing)
    compute_surface_dice(P, G, [1.5] * 3, spacing=spacing)
"""


def wall(command: list[str], env: dict[str, str] | None = None,
         cwd: Path | None = None) -> float:
    start = time.perf_counter()
    subprocess.run(command, check=True, env=env, cwd=cwd, stdout=subprocess.DEVNULL)
    return time.perf_counter() - start


def cli_benchmark(data: Path, cases: int, monai_cases: int, before: Path | None) -> None:
    """Whole processes on one folder (see the module docstring)."""
    import os
    import shutil

    if not (data / "gt" / f"case_{cases - 1:03d}.nii.gz").exists():
        from generate import generate
        generate("nifti", data, cases, (256, 256, 160), 4)
    segeval = shutil.which("segeval") or str(Path(sys.executable).parent / "segeval")
    pred, gt = str(data / "pred"), str(data / "gt")
    wall([segeval, "evaluate", pred, gt, "-q"])  # warm the file cache
    rows = [
        (f"segeval evaluate {pred} {gt} --metrics all -q", cases,
         wall([segeval, "evaluate", pred, gt, "--metrics", "all", "-q"])),
        (f"segeval evaluate {pred} {gt} --metrics all -q --workers 1", cases,
         wall([segeval, "evaluate", pred, gt, "--metrics", "all", "-q", "--workers", "1"])),
        ("MONAI 1.6 process (nibabel + HD, HD95, ASSD, NSD)", monai_cases,
         wall([sys.executable, "-c", MONAI_PROCESS, str(data), str(monai_cases)])),
        (f"segeval evaluate {pred} {gt} -q (overlap only, this checkout)", cases,
         wall([segeval, "evaluate", pred, gt, "-q"])),
    ]
    if before is not None:
        env = {**os.environ, "PYTHONPATH": str(before)}
        rows.append((f"segeval evaluate {pred} {gt} --metrics all -q, checkout {before}", cases,
                     wall([sys.executable, "-m", "segeval", "evaluate", pred, gt, "--metrics",
                           "all", "-q"], env, cwd=before)))
    print(f"Whole processes, 256x256x160 .nii.gz, 3 classes, {os.cpu_count()} CPUs; "
          "per case = wall / cases (start-up included)\n")
    print("| command | cases | wall s | s per case |")
    print("|---|---|---|---|")
    for name, n, seconds in rows:
        print(f"| {name} | {n} | {seconds:.2f} | {seconds / n:.3f} |")
    monai = rows[2][2] / monai_cases
    print(f"\nMONAI / segeval --metrics all, per case: {monai / (rows[0][2] / cases):.1f}x "
          f"(default workers), {monai / (rows[1][2] / cases):.1f}x (--workers 1)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=HERE / "data" / "boundary")
    parser.add_argument("--cases", type=int, default=20)
    parser.add_argument("--monai-cases", type=int, default=5)
    parser.add_argument("--other-cases", type=int, default=2,
                        help="cases for surface-distance and MedPy (MedPy takes ~1 min each)")
    parser.add_argument("--skip-large", action="store_true")
    parser.add_argument("--cli", action="store_true",
                        help="time whole processes on --data")
    parser.add_argument("--before", type=Path, default=None,
                        help="--cli: another segeval checkout to time too (PYTHONPATH)")
    args = parser.parse_args()
    if args.cli:
        cli_benchmark(args.data, args.cases, args.monai_cases, args.before)
        return

    if not (args.data / "gt" / f"case_{args.cases - 1:03d}.nii.gz").exists():
        from generate import generate
        generate("nifti", args.data, max(args.cases, 20), (256, 256, 160), 4)
    pairs = load(args.data, args.cases)

    rows = []
    ours = [segeval_case(*pair) for pair in pairs]
    segeval_seconds = timed(segeval_case, pairs)
    torch_loaded = "torch" in sys.modules
    rows.append(("segeval (voxel)", len(pairs), segeval_seconds))
    monai_pairs = pairs[: args.monai_cases]
    for pair, mine in zip(monai_pairs, ours, strict=False):
        check("MONAI", monai_case(*pair), mine, 1e-5)
    rows.append(("MONAI 1.6", len(monai_pairs), timed(monai_case, monai_pairs)))

    other = pairs[: args.other_cases]
    surfel = lambda p, g, s: segeval_case(p, g, s, "surfel")  # noqa: E731
    pooled = lambda p, g, s: segeval_case(p, g, s, pooled=True)  # noqa: E731
    for pair in other:
        check("surface-distance", deepmind_case(*pair), surfel(*pair), 1e-9)
        check("MedPy", medpy_case(*pair), pooled(*pair), 1e-9)
    rows.append(("segeval (surfel)", len(other), timed(surfel, other)))
    rows.append(("DeepMind surface-distance", len(other), timed(deepmind_case, other)))
    rows.append(("MedPy 0.5.2 (hd, hd95, assd only)", len(other), timed(medpy_case, other)))

    print("Boundary metrics per case (3 classes, 256x256x160, HD+HD95+ASSD+NSD), "
          "median seconds; ratio = tool / segeval-voxel on the same cases\n")
    print("| tool | cases | median s/case | ratio |")
    print("|---|---|---|---|")
    for name, n, seconds in rows:
        ratio = statistics.median(seconds) / statistics.median(segeval_seconds[:n])
        print(f"| {name} | {n} | {statistics.median(seconds):.3f} | {ratio:.1f}x |")

    prediction, reference, spacing = pairs[0]
    stray = with_strays(prediction)
    clean_s = min(timed(segeval_case, [(prediction, reference, spacing)] * 3))
    stray_s = min(timed(segeval_case, [(stray, reference, spacing)] * 3))
    print(f"\nStray voxels (case 0, 5 far voxels of class 1 in the prediction): clean "
          f"{clean_s:.3f} s, with strays {stray_s:.3f} s ({stray_s / clean_s:.2f}x)")
    print(f"torch imported after segeval's boundary metrics (before MONAI ran): {torch_loaded}")
    grid_versus_tree(pairs)

    if not args.skip_large:
        root = str(HERE.parent)
        for compute in (False, True):
            result = subprocess.run([sys.executable, "-c", LARGE.format(root=root,
                                                                        compute=compute)],
                                    capture_output=True, text=True, check=True)
            label = "all boundary metrics" if compute else "masks only"
            print(f"\n1024x1024x512 pair, {label}:\n{result.stdout.strip()}")

if __name__ == "__main__":
    main()
