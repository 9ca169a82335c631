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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--panoptica-python", type=Path,
                        default=HERE.parent / ".venv-panoptica" / "bin" / "python")
    args = parser.parse_args()

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

    base = rows[1][1]
    print("\n| tool | seconds, 3 regions (median) | / segeval (panoptica preset) |")
    print("|---|---:|---:|")
    for label, seconds in rows:
        print(f"| {label} | {seconds:.3f} | {seconds / base:.1f}x |")


if __name__ == "__main__":
    main()
