"""Lesion-wise metrics: segeval vs panoptica on one 256x256x160 case (issue 16).

    python benchmarks/lesions.py                     # panoptica from .venv-panoptica if present
    python benchmarks/lesions.py --panoptica-python /path/to/python --rounds 5

The case is synthetic and in memory (seeded): BraTS-style labels (1 necrosis, 2 oedema,
3 enhancing) in ~10 lesions of various sizes, the prediction the same lesions moved, grown or
shrunk, two missed and two false positives; spacing 1 mm.  Timed, per region WT (1,2,3),
TC (1,3), ET (3), the median over ``--rounds`` of:

- segeval: labels + overlap table + every table metric (lesion F1/Dice, counts, PQ/RQ/SQ,
  volumes), default convention and the ``panoptica`` and ``brats2023-gli`` presets, the
  latter also with lesion-wise HD95 (surfels, as BraTS);
- panoptica 2.1.7 (``InputType.SEMANTIC``: connected components, ``NaiveThresholdMatching``
  at IoU 0.5, instance metrics DSC and IoU only, so it does no distance work), run in its own
  interpreter because it pins numpy < 2.3 and rich < 14: ``--panoptica-python`` (default
  ``.venv-panoptica/bin/python``; made with ``python -m venv .venv-panoptica &&
  .venv-panoptica/bin/pip install panoptica==2.1.7``).  Its time is measured inside that
  process around ``evaluate`` only (imports and array loading excluded).  Its TP/FP/FN, SQ
  and PQ are checked against segeval's ``panoptica`` preset before the table is printed.

- the official BraTS 2023 script (``metrics.py`` of github.com/rachitsaluja/BraTS-2023-Metrics,
  ``get_LesionWiseResults(pred, gt, "BraTS-GLI")``: the three regions, lesion-wise Dice and
  HD95 with dilation 3 and the 50 mm³ filter) in its own interpreter with its pins (Python 3.10,
  pandas 1.3.4, NumPy 1.24.3, connected-components-3d 3.12.1, nibabel 5.1.0, SciPy 1.11.1):
  ``--brats-python`` (default ``.venv-brats/bin/python``) and ``--brats-source`` (a folder
  holding its ``metrics.py`` and ``surface_distance/``; default ``.venv-brats/official``; its
  code is not part of segeval).  Made with::

      /root/.pyenv/versions/3.10.13/bin/python -m venv .venv-brats
      .venv-brats/bin/pip install connected_components_3d==3.12.1 nibabel==5.1.0 \
          numpy==1.24.3 pandas==1.3.4 scipy==1.11.1
      git -C <clone of BraTS-2023-Metrics> archive HEAD metrics.py surface_distance \
          | tar -x -C .venv-brats/official

  Timed inside that process around ``get_LesionWiseResults`` (it reads the two NIfTI files
  itself, as it does when grading); its lesion-wise Dice and HD95 per region are printed
  beside segeval's ``brats2023-gli`` values.

``--cli`` instead times whole ``segeval evaluate`` processes on the 20-case bench folder
(``--data``, made by ``generate.py nifti DIR --cases 20 --shape 256 256 160 --classes 4`` when
missing), regions WT=1,2,3, TC=1,3, ET=3, ``--workers 2``, in interleaved rounds (one round runs
every command once, so the ratios are same-run): overlap only, ``--metrics lesions`` (every
lesion metric, lesion HD95 included), ``--metrics lesion_f1,lesion_dice,pq`` (no HD95),
``--metrics hd95`` (the regions' own HD95, no lesion work: what the distance step costs on
these cases) and ``--metrics hd95,lesions`` (both, as BraTS reports them: a region that is one
lesion per side takes its lesion HD95 from the region's distances).
``--before DIR`` (another checkout, run with ``PYTHONPATH=DIR``) times every command but the
overlap-only one with it too and checks that both checkouts write the same numbers in every
report.

Threads are limited to 2 (the benchmark machine is shared).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "2")

import numpy as np  # noqa: E402

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

from same import same_values  # noqa: E402

from segeval.core.lesions import (  # noqa: E402
    BRATS_REGIONS,
    lesion_hd95,
    lesion_labels,
    lesion_options,
    lesion_scores,
    lesion_table,
)

SHAPE = (256, 256, 160)

PANOPTICA_WORKER = r"""
import json, sys, time
import numpy as np
from panoptica import InputType, Panoptica_Evaluator, ConnectedComponentsInstanceApproximator
from panoptica import NaiveThresholdMatching
from panoptica.metrics import Metric

folder, rounds = sys.argv[1], int(sys.argv[2])
evaluator = Panoptica_Evaluator(
    expected_input=InputType.SEMANTIC,
    instance_approximator=ConnectedComponentsInstanceApproximator(),
    instance_matcher=NaiveThresholdMatching(matching_metric=Metric.IOU, matching_threshold=0.5),
    instance_metrics=[Metric.DSC, Metric.IOU],
    global_metrics=[Metric.DSC],
)
out = {}
for region in ("WT", "TC", "ET"):
    ref = np.load(f"{folder}/ref_{region}.npy").astype(np.uint8)
    pred = np.load(f"{folder}/pred_{region}.npy").astype(np.uint8)
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        result = evaluator.evaluate(pred, ref, verbose=False)
        times.append(time.perf_counter() - start)
    result = result["ungrouped"] if isinstance(result, dict) else result
    values = {k: float(getattr(result, k)) for k in ("tp", "fp", "fn", "sq", "pq", "rq")}
    out[region] = {"seconds": times, "values": values}
print(json.dumps(out))
"""


BRATS_WORKER = r"""
import json, sys, time
sys.path.insert(0, sys.argv[1])
import metrics
folder, rounds = sys.argv[2], int(sys.argv[3])
times = []
for _ in range(rounds):
    start = time.perf_counter()
    frame = metrics.get_LesionWiseResults(f"{folder}/pred.nii.gz", f"{folder}/gt.nii.gz",
                                          "BraTS-GLI")
    times.append(time.perf_counter() - start)
values = {row["Labels"]: {k: float(row[k]) for k in ("LesionWise_Score_Dice",
          "LesionWise_Score_HD95", "Num_TP", "Num_FP", "Num_FN")}
          for row in frame.to_dict("records")}
print(json.dumps({"seconds": times, "values": values}))
"""


def run_brats(python: Path, source: Path, reference, prediction, rounds: int) -> dict | str:
    if not python.exists() or not (source / "metrics.py").exists():
        return f"skipped: no interpreter at {python} or no metrics.py in {source} (see the " \
            "module docstring to make them)"
    import nibabel as nib

    with tempfile.TemporaryDirectory() as folder:
        for name, labels in (("gt", reference), ("pred", prediction)):
            nib.save(nib.Nifti1Image(labels, np.eye(4)), f"{folder}/{name}.nii.gz")
        env = {**os.environ, "OMP_NUM_THREADS": "2"}
        done = subprocess.run([str(python), "-c", BRATS_WORKER, str(source), folder,
                               str(rounds)], capture_output=True, text=True, env=env,
                              timeout=3600)
    if done.returncode != 0:
        return "failed: " + (done.stderr.strip().splitlines() or ["?"])[-1]
    return json.loads(done.stdout.strip().splitlines()[-1])


def ellipsoid(shape, centre, radii) -> np.ndarray:
    axes = np.ogrid[tuple(slice(0, n) for n in shape)]
    return sum(((x - c) / r) ** 2 for x, c, r in zip(axes, centre, radii, strict=True)) <= 1.0


def make_case(seed: int = 16) -> tuple[np.ndarray, np.ndarray]:
    """Reference and prediction label maps (uint8, SHAPE) with ~10 lesions."""
    rng = np.random.default_rng(seed)
    reference = np.zeros(SHAPE, dtype=np.uint8)
    prediction = np.zeros(SHAPE, dtype=np.uint8)
    for index in range(10):
        centre = rng.uniform([30, 30, 20], [226, 226, 140])
        radius = rng.uniform(3, 22) * np.array([1.0, rng.uniform(0.7, 1.3), rng.uniform(0.6, 1)])
        for labels, shift, scale in ((reference, 0.0, 1.0),
                                     (prediction, rng.normal(0, 1, 3), rng.uniform(0.9, 1.1))):
            if labels is prediction and index in (3, 7):
                continue  # missed
            c, r = centre + shift, radius * scale
            labels[ellipsoid(SHAPE, c, r)] = 2
            labels[ellipsoid(SHAPE, c, r * 0.6)] = 3
            labels[ellipsoid(SHAPE, c, r * 0.35)] = 1
    for _ in range(2):  # false positives
        centre = rng.uniform([30, 30, 20], [226, 226, 140])
        prediction[ellipsoid(SHAPE, centre, (3, 3, 2))] = 2
    return reference, prediction


def regions(labels: np.ndarray) -> dict[str, np.ndarray]:
    return {name: np.isin(labels, members) for name, members in BRATS_REGIONS.items()}


def segeval_region(reference, prediction, options, hd95=False):
    labels = lesion_labels(reference, prediction, options)
    table = lesion_table(reference, prediction, (1.0, 1.0, 1.0), options, labels)
    values = lesion_scores(table, options)
    if hd95:
        values["lesion_hd95"] = lesion_hd95(labels, table, options)[0]
    return values


def timed(function, rounds: int) -> tuple[float, object]:
    times, value = [], None
    for _ in range(rounds):
        start = time.perf_counter()
        value = function()
        times.append(time.perf_counter() - start)
    return statistics.median(times), value


def run_panoptica(python: Path, ref_regions, pred_regions, rounds: int) -> dict | str:
    if not python.exists():
        return f"skipped: no interpreter at {python} (see the module docstring to make one)"
    with tempfile.TemporaryDirectory() as folder:
        for name in ref_regions:
            np.save(f"{folder}/ref_{name}.npy", ref_regions[name])
            np.save(f"{folder}/pred_{name}.npy", pred_regions[name])
        env = {**os.environ, "OMP_NUM_THREADS": "2"}
        done = subprocess.run([str(python), "-c", PANOPTICA_WORKER, folder, str(rounds)],
                              capture_output=True, text=True, env=env, timeout=3600)
    if done.returncode != 0:
        return "skipped: panoptica failed: " + (done.stderr.strip().splitlines() or ["?"])[-1]
    return json.loads(done.stdout.strip().splitlines()[-1])


FOLDER_COMMANDS = (
    ("overlap only", []),
    ("--metrics lesions", ["--metrics", "lesions"]),
    ("--metrics lesion_f1,lesion_dice,pq", ["--metrics", "lesion_f1,lesion_dice,pq"]),
    # the regions' own HD95 (no lesion work): what the distance step costs on these cases
    ("--metrics hd95", ["--metrics", "hd95"]),
    # BraTS reports both: the regions' HD95 and the lesion-wise one share their distances
    ("--metrics hd95,lesions", ["--metrics", "hd95,lesions"]),
)


def cli_benchmark(data: Path, rounds: int, before: Path | None) -> None:
    """Whole processes on one folder, interleaved rounds (see the module docstring)."""
    if not (data / "gt" / "case_019.nii.gz").exists():
        from generate import generate
        generate("nifti", data, 20, SHAPE, 4)
    base = ["evaluate", str(data / "pred"), str(data / "gt"), "--region", "WT=1,2,3",
            "--region", "TC=1,3", "--region", "ET=3", "-q", "--workers", "2"]
    runs: list[tuple[str, list[str], dict[str, str] | None]] = [
        (name, extra, None) for name, extra in FOLDER_COMMANDS]
    if before is not None:
        env = {**os.environ, "PYTHONPATH": str(before)}
        runs += [(f"{name}, checkout {before}", extra, env)
                 for name, extra in FOLDER_COMMANDS[1:]]
    times: dict[str, list[float]] = {name: [] for name, _, _ in runs}
    load = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as scratch:
        reports: dict[str, Path] = {}
        # run from the scratch folder: ``python -m`` puts the working directory first on
        # sys.path, before PYTHONPATH, so run from a checkout it would import that checkout
        subprocess.run([sys.executable, "-m", "segeval", *base], check=True, cwd=scratch,
                       stdout=subprocess.DEVNULL)  # the files into the page cache
        for _ in range(rounds):
            for index, (name, extra, env) in enumerate(runs):
                reports[name] = Path(scratch) / f"{index}.json"
                start = time.perf_counter()
                subprocess.run([sys.executable, "-m", "segeval", *base, *extra, "--json",
                                str(reports[name])], check=True, env=env, cwd=scratch,
                               stdout=subprocess.DEVNULL)
                times[name].append(time.perf_counter() - start)
        if before is not None:
            for name, _ in FOLDER_COMMANDS[1:]:
                if not same_values(_numbers(reports[name]),
                                   _numbers(reports[f"{name}, checkout {before}"])):
                    raise SystemExit(f"{name}: the two checkouts' reports DIFFER")
            print(f"both checkouts wrote the same reports (all but the run facts; floats to "
                  f"1e-12 relative) for "
                  f"{', '.join(name for name, _ in FOLDER_COMMANDS[1:])}")
    overlap = statistics.median(times["overlap only"])
    print(f"\n20 cases 256x256x160 .nii.gz, WT/TC/ET, --workers 2, {rounds} interleaved rounds, "
          f"{os.cpu_count()} CPUs, 1-min load average {load:.1f} before, "
          f"{os.getloadavg()[0]:.1f} after\n")
    print("| segeval evaluate ... | median s | min-max s | / overlap only |")
    print("|---|---:|---:|---:|")
    for name, seconds in times.items():
        median = statistics.median(seconds)
        print(f"| {name} | {median:.2f} | {min(seconds):.2f}-{max(seconds):.2f} "
              f"| {median / overlap:.2f}x |")


def _numbers(report: Path) -> object:
    """Everything of a JSON report but its run facts (times, workers, version)."""
    data = json.loads(report.read_text())
    return {key: value for key, value in data.items() if key != "run"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--panoptica-python", type=Path,
                        default=HERE.parent / ".venv-panoptica" / "bin" / "python")
    parser.add_argument("--brats-python", type=Path,
                        default=HERE.parent / ".venv-brats" / "bin" / "python")
    parser.add_argument("--brats-source", type=Path,
                        default=HERE.parent / ".venv-brats" / "official")
    parser.add_argument("--brats-rounds", type=int, default=1)
    parser.add_argument("--cli", action="store_true",
                        help="time whole segeval processes on the 20-case folder --data")
    parser.add_argument("--data", type=Path, default=HERE / "data" / "boundary")
    parser.add_argument("--before", type=Path, default=None,
                        help="--cli: another segeval checkout to time and compare too")
    args = parser.parse_args()
    if args.cli:
        cli_benchmark(args.data, args.rounds, args.before)
        return

    reference, prediction = make_case()
    ref_regions, pred_regions = regions(reference), regions(prediction)
    print(f"case {SHAPE}, regions WT/TC/ET, rounds {args.rounds}")
    rows = []
    results = {}
    for preset, hd95 in ((None, False), ("panoptica", False), ("brats2023-gli", False),
                         ("brats2023-gli", True)):
        options = lesion_options(preset)
        seconds, values = timed(lambda o=options, h=hd95: {
            name: segeval_region(ref_regions[name], pred_regions[name], o, h)
            for name in ref_regions}, args.rounds)
        results[preset] = values
        results[(preset, hd95)] = values
        rows.append((f"segeval ({preset or 'default'}{' + lesion HD95' if hd95 else ''})",
                     seconds))
    for name, values in results[None].items():
        print(f"  {name}: {values['n_ref_lesions']} reference / {values['n_pred_lesions']} "
              f"predicted lesions, lesion F1 {values['lesion_f1']:.3f}, lesion Dice "
              f"{values['lesion_dice']:.3f}, PQ {values['pq']:.3f}")

    panoptica = run_panoptica(args.panoptica_python, ref_regions, pred_regions, args.rounds)
    if isinstance(panoptica, str):
        print(f"panoptica {panoptica}")
    else:
        for name, got in panoptica.items():
            ours = results["panoptica"][name]
            theirs = got["values"]
            for key, mine in (("tp", ours["pq_tp"]), ("fp", ours["pq_fp"]),
                              ("fn", ours["pq_fn"]), ("sq", ours["sq"]), ("pq", ours["pq"]),
                              ("rq", ours["rq"])):
                if not np.isclose(float(mine), theirs[key], rtol=1e-9, equal_nan=True):
                    raise SystemExit(f"disagreement on {name} {key}: segeval {mine}, "
                                     f"panoptica {theirs[key]}")
        print("panoptica agrees with segeval's panoptica preset on TP/FP/FN, SQ, RQ, PQ "
              "for WT, TC, ET")
        rows.append(("panoptica 2.1.7 (evaluate only)",
                     sum(statistics.median(got["seconds"]) for got in panoptica.values())))

    brats = run_brats(args.brats_python, args.brats_source, reference, prediction,
                      args.brats_rounds)
    if isinstance(brats, str):
        print(f"official BraTS 2023 script {brats}")
    else:
        ours = results[("brats2023-gli", True)]
        for name, got in brats["values"].items():
            print(f"  BraTS-GLI {name}: official lesion-wise Dice "
                  f"{got['LesionWise_Score_Dice']:.4f}, HD95 {got['LesionWise_Score_HD95']:.3f}"
                  f" | segeval brats2023-gli {ours[name]['lesion_dice']:.4f}, "
                  f"{ours[name]['lesion_hd95']:.3f}")
        rows.append(("official BraTS 2023 script (get_LesionWiseResults, BraTS-GLI)",
                     statistics.median(brats["seconds"])))

    base = rows[1][1]
    hd95_row = rows[3][1]
    print("\n| tool | seconds, 3 regions (median) | / segeval (panoptica preset) "
          "| / segeval (brats2023-gli + lesion HD95) |")
    print("|---|---:|---:|---:|")
    for label, seconds in rows:
        print(f"| {label} | {seconds:.3f} | {seconds / base:.1f}x | {seconds / hd95_row:.1f}x |")


if __name__ == "__main__":
    main()
