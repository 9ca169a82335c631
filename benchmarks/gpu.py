"""Counting throughput of the torch backend on in-memory tensors (issue 4, target 7).

    python benchmarks/gpu.py                      # CUDA: 256×256×160 and 512³, K = 4 and 16
    python benchmarks/gpu.py --device cpu --quick # a smoke test of this script on the CPU

For every volume shape and number of classes K: a label volume with realistic structure
(nested blobs of labels 1..K-1 in background, ~7-25% foreground) and a prediction that
differs from it on its boundaries, both made on the device. Two timings, each the median of
``--repeat`` runs after one warm-up, with ``torch.cuda.synchronize()`` around every run:

* ``count``: ``TorchBackend(device).confusion(reference, prediction)`` — the count step;
* ``evaluate``: ``segeval.evaluate(prediction, reference)`` on the tensors (Python API,
  ``device`` auto = the tensors' device): the count step plus label checks, classes,
  reductions and the report.

G voxels/s = voxels of one volume / seconds (each voxel is a pair: one predicted, one
reference value). Before timing, the counts are checked against the NumPy backend on a CPU
copy; a row that disagrees says so. Prints one Markdown table; ``--out`` also writes it as
JSON. Needs torch (``pip install 'segeval[torch]'``).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))  # run from a checkout without installing


def make_pair(shape: tuple[int, ...], classes: int, device: str, seed: int = 0) -> Any:
    """Reference and prediction label volumes (uint8) on ``device``."""
    import torch

    generator = torch.Generator(device="cpu").manual_seed(seed)
    axes = [torch.linspace(-1.0, 1.0, size) for size in shape]
    grid = torch.meshgrid(*axes, indexing="ij")
    reference = torch.zeros(shape, dtype=torch.uint8)
    prediction = torch.zeros(shape, dtype=torch.uint8)
    for label in range(1, classes):  # nested blobs, smaller for higher labels
        centre = (torch.rand(len(shape), generator=generator) - 0.5) * 0.6
        radius = 0.65 * (1 - (label - 1) / classes)
        distance = sum((g - c) ** 2 for g, c in zip(grid, centre, strict=True)).sqrt()
        reference[distance < radius] = label
        prediction[distance < radius * 1.03 + 0.01] = label  # grown a little: FPs on edges
    return reference.to(device), prediction.to(device)


def timed(run: Callable[[], Any], device: str, repeat: int) -> tuple[float, Any]:
    """Median seconds of ``repeat`` runs after one warm-up, and the warm-up's result."""
    import torch

    def sync() -> None:
        if device.startswith("cuda"):
            torch.cuda.synchronize()

    result = run()
    sync()
    seconds = []
    for _ in range(repeat):
        sync()
        started = time.perf_counter()
        run()
        sync()
        seconds.append(time.perf_counter() - started)
    return statistics.median(seconds), result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--classes", default="4,16", help="comma-separated K values")
    parser.add_argument("--repeat", type=int, default=10)
    parser.add_argument("--quick", action="store_true", help="small volumes, 3 repeats")
    parser.add_argument("--out", type=Path, help="also write the rows as JSON here")
    args = parser.parse_args()

    import numpy as np
    import torch

    import segeval
    from segeval.engines.numpy_backend import NumpyBackend
    from segeval.engines.torch_backend import TorchBackend, check_device

    if args.device != "cpu":
        check_device(args.device)
    shapes = [(64, 64, 40), (96, 96, 64)] if args.quick else [(256, 256, 160), (512, 512, 512)]
    repeat = 3 if args.quick else args.repeat
    backend = TorchBackend(args.device)
    name = torch.cuda.get_device_name(backend.device) if args.device.startswith("cuda") \
        else args.device
    rows = []
    for shape in shapes:
        for classes in (int(k) for k in args.classes.split(",")):
            reference, prediction = make_pair(shape, classes, args.device)
            voxels = reference.numel()
            count_s, counts = timed(lambda r=reference, p=prediction: backend.confusion(r, p),
                                    args.device, repeat)
            expected = NumpyBackend().confusion(reference.cpu().numpy(),
                                                prediction.cpu().numpy())
            agrees = all(np.array_equal(getattr(counts, f), getattr(expected, f))
                         for f in ("reference", "prediction", "count"))
            evaluate_s, report = timed(
                lambda r=reference, p=prediction: segeval.evaluate(p, r), args.device, repeat)
            rows.append({"shape": "×".join(map(str, shape)), "classes": classes,
                         "voxels": voxels, "count_s": count_s, "evaluate_s": evaluate_s,
                         "count_gvox_s": voxels / count_s / 1e9,
                         "evaluate_gvox_s": voxels / evaluate_s / 1e9,
                         "device_in_report": report.run["device"],
                         "agrees_with_numpy": agrees})
    print(f"device: {name}; torch {torch.__version__}; median of {repeat} after a warm-up\n")
    print("| volume | K | count ms | count G vox/s | evaluate ms | evaluate G vox/s "
          "| counts = NumPy |")
    print("|---|---:|---:|---:|---:|---:|---|")
    for row in rows:
        print(f"| {row['shape']} | {row['classes']} | {row['count_s'] * 1e3:.2f} "
              f"| {row['count_gvox_s']:.1f} | {row['evaluate_s'] * 1e3:.2f} "
              f"| {row['evaluate_gvox_s']:.1f} "
              f"| {'yes' if row['agrees_with_numpy'] else 'NO — COUNTS DIFFER'} |")
    if args.out:
        args.out.write_text(json.dumps({"device": name, "torch": torch.__version__,
                                        "repeat": repeat, "rows": rows}, indent=1))
    if not all(row["agrees_with_numpy"] for row in rows):
        sys.exit(1)


if __name__ == "__main__":
    main()
