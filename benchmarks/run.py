"""Whole-process benchmarks of ``segeval evaluate`` against load-only baselines and peers.

    python benchmarks/run.py                 # the full benchmark (8-25 min by machine; ~20 MB data)
    python benchmarks/run.py --quick         # under a minute once the data exists
    python benchmarks/run.py --out docs/bench.md   # also write the tables (.md + .json)
    python benchmarks/run.py --snapshot HEAD  # measure the committed segeval, not the tree

Every figure is the wall time of a whole process (``time.perf_counter`` around starting it
and reaping it), the median of ``--rounds`` interleaved rounds run in this one invocation
(round r starts at command r, so no command always runs first), after one untimed warm-up
run of each command that also checks the competitors' numbers.  Each row is also given as
a ratio to the load-only baseline of its section, measured in the same rounds, because on a
shared machine only same-run ratios mean anything.

Peak memory is measured two ways, both without third-party packages:

* ``max RSS``: the kernel's peak resident set of the largest single process of the tree,
  as GNU ``/usr/bin/time -f %M`` reports it (each command runs under it; it includes reaped
  worker processes, but takes their maximum, not their sum).  Nearly free (one ~1 ms exec),
  so every row has it.  Without GNU time a 15-line Python helper does the same (+~20 ms).
* ``tree RSS``: the sum of the resident sets of the process and all its descendants,
  sampled every 5 ms from ``/proc`` (``/proc/PID/task/*/children`` and ``statm``), in the
  memory section only.  It can miss a spike shorter than 5 ms and counts pages shared
  between forked workers once per process, so it is an upper bound for the tree.

Data sets come from ``benchmarks/generate.py`` (cached under ``benchmarks/data/``, reused
when present; smaller case counts are hard links to the first cases of a larger set, which
``generate.py`` makes identical because case i is seeded with i).  Two sets are made here:
the 117-class set relabels the 4-class volumes (same geometry, each foreground label split
into 16-voxel blocks), and the 1024×1024×512 pair is written slab by slab so that it never
needs more than a few hundred MB to generate.

Optional competitors (MONAI, torchmetrics, nnU-Net v2, MedPy) run when importable and are
skipped with a message otherwise; each must reproduce segeval's per-class Dice (all cases,
to 1e-6) in its warm-up run, and the table says whether it did.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
TOLERANCE = 1e-6
PAGE = os.sysconf("SC_PAGE_SIZE")
CHILD_ENV = dict(os.environ)  # every measured process gets this (PYTHONPATH for --snapshot)

# --------------------------------------------------------------------------------------
# The measured scripts.  Written to DATA/_scripts/ and run as `python script.py ...`.
# Arguments: PRED_DIR GT_DIR N_CLASSES OUT_JSON EXT; each writes {case: {label: dice}}.
# --------------------------------------------------------------------------------------

COMMON = '''
import json, os, sys
pred_dir, gt_dir, n_classes, out, ext = sys.argv[1:6]
n_classes = int(n_classes)
ids = sorted(f[: -len(ext)] for f in os.listdir(gt_dir)
             if f.endswith(ext) and not f.startswith("."))
def pairs():
    for i in ids:
        yield i, os.path.join(pred_dir, i + ext), os.path.join(gt_dir, i + ext)
def write(per_case):
    with open(out, "w") as f:
        json.dump({c: {str(k): (None if v != v else float(v)) for k, v in d.items()}
                   for c, d in per_case.items()}, f)
'''

SCRIPTS = {
    "load_nifti": '''
import sys, os
import numpy as np, nibabel as nib
for d in sys.argv[1:]:
    for f in sorted(os.listdir(d)):
        if f.endswith(".nii.gz"):
            np.asarray(nib.load(os.path.join(d, f)).dataobj)
''',
    "load_png": '''
import sys, os
import numpy as np
from PIL import Image
for d in sys.argv[1:]:
    for f in sorted(os.listdir(d)):
        if f.endswith(".png"):
            np.asarray(Image.open(os.path.join(d, f)))
''',
    "inflate_zlib": '''
import sys, os, zlib
for d in sys.argv[1:]:
    for f in sorted(os.listdir(d)):
        if f.endswith(".gz"):
            with open(os.path.join(d, f), "rb") as fh:
                zlib.decompress(fh.read(), 31)
''',
    "inflate_isal": '''
import sys, os
from isal import isal_zlib
for d in sys.argv[1:]:
    for f in sorted(os.listdir(d)):
        if f.endswith(".gz"):
            with open(os.path.join(d, f), "rb") as fh:
                isal_zlib.decompress(fh.read(), 31)
''',
    # the "simple fast" competitor: nibabel/Pillow load + one NumPy bincount per case
    "numpy": COMMON + '''
import numpy as np
if ext == ".png":
    from PIL import Image
    load = lambda f: np.asarray(Image.open(f))
else:
    import nibabel as nib
    load = lambda f: np.asarray(nib.load(f).dataobj)
per_case = {}
for case, pf, gf in pairs():
    p, g = load(pf), load(gf)
    # flattened in memory order (both files have the same layout): a plain .ravel() of
    # nibabel's Fortran-ordered arrays would add a transposing copy (~0.2 s per case here)
    index = g.ravel(order="K").astype(np.int64) * n_classes + p.ravel(order="K")
    cm = np.bincount(index, minlength=n_classes * n_classes).reshape(n_classes, n_classes)
    tp = np.diag(cm).astype(float)
    fp, fn = cm.sum(0) - tp, cm.sum(1) - tp
    with np.errstate(invalid="ignore", divide="ignore"):
        dice, iou = 2 * tp / (2 * tp + fp + fn), tp / (tp + fp + fn)
    per_case[case] = {k: dice[k] for k in range(1, n_classes)}
write(per_case)
''',
    "medpy": COMMON + '''
import numpy as np
from medpy.metric.binary import dc, jc
if ext == ".png":
    from PIL import Image
    load = lambda f: np.asarray(Image.open(f))
else:
    import nibabel as nib
    load = lambda f: np.asarray(nib.load(f).dataobj)
per_case = {}
for case, pf, gf in pairs():
    p, g = load(pf), load(gf)
    per_case[case] = {}
    for k in range(1, n_classes):
        per_case[case][k] = dc(p == k, g == k)
        jc(p == k, g == k)
write(per_case)
''',
    "monai": COMMON + '''
import torch
from monai.metrics import DiceMetric, MeanIoU
from monai.networks.utils import one_hot
from monai.transforms import LoadImage
load = LoadImage(image_only=True)
dice = DiceMetric(include_background=False, reduction="none")
iou = MeanIoU(include_background=False, reduction="none")
for case, pf, gf in pairs():
    p = one_hot(torch.as_tensor(load(pf))[None, None], n_classes)
    g = one_hot(torch.as_tensor(load(gf))[None, None], n_classes)
    dice(p, g)
    iou(p, g)
d = dice.aggregate()
iou.aggregate()
write({case: {k + 1: d[i, k].item() for k in range(n_classes - 1)} for i, case in enumerate(ids)})
''',
    "torchmetrics": COMMON + '''
import numpy as np, torch
from torchmetrics.segmentation import DiceScore, MeanIoU
if ext == ".png":
    from PIL import Image
    load = lambda f: torch.from_numpy(np.asarray(Image.open(f)).astype(np.int64))
else:
    import nibabel as nib
    load = lambda f: torch.from_numpy(np.asarray(nib.load(f).dataobj).astype(np.int64))
dice = DiceScore(num_classes=n_classes, include_background=False, average="none",
                 input_format="index")
iou = MeanIoU(num_classes=n_classes, include_background=False, per_class=True,
              input_format="index")
per_case = {}
for case, pf, gf in pairs():
    p, g = load(pf)[None], load(gf)[None]
    d = dice(p, g)
    iou(p, g)
    per_case[case] = {k + 1: d[k].item() for k in range(n_classes - 1)}
dice.compute()
iou.compute()
write(per_case)
''',
    # nnU-Net v2's own folder evaluation (multiprocessing "spawn" pool, SimpleITK/skimage readers)
    "nnunet": COMMON + '''
def main():
    from nnunetv2.evaluation.evaluate_predictions import compute_metrics_on_folder
    if ext == ".png":
        from nnunetv2.imageio.natural_image_reader_writer import NaturalImage2DIO as IO
    else:
        from nnunetv2.imageio.simpleitk_reader_writer import SimpleITKIO as IO
    processes = len(os.sched_getaffinity(0))
    result = compute_metrics_on_folder(gt_dir, pred_dir, out + ".summary.json", IO(), ext,
                                       list(range(1, n_classes)), num_processes=processes)
    per_case = {}
    for entry in result["metric_per_case"]:
        case = os.path.basename(entry["reference_file"])[: -len(ext)]
        per_case[case] = {k: entry["metrics"][k]["Dice"] for k in range(1, n_classes)}
    write(per_case)

if __name__ == "__main__":
    main()
''',
}

COMPETITORS = {  # name → (table label, import that must work, script)
    "numpy": ("nibabel/Pillow load + NumPy bincount confusion", None, "numpy"),
    "medpy": ("MedPy per-label dc/jc", "from medpy.metric.binary import dc, jc", "medpy"),
    "nnunet": ("nnU-Net v2 compute_metrics_on_folder",
               "from nnunetv2.evaluation.evaluate_predictions import compute_metrics_on_folder;"
               "from nnunetv2.imageio.simpleitk_reader_writer import SimpleITKIO;"
               "from nnunetv2.imageio.natural_image_reader_writer import NaturalImage2DIO",
               "nnunet"),
    "monai": ("MONAI LoadImage + one-hot + DiceMetric + MeanIoU",
              "from monai.metrics import DiceMetric, MeanIoU;"
              "from monai.networks.utils import one_hot; from monai.transforms import LoadImage",
              "monai"),
    "torchmetrics": ("torchmetrics DiceScore + MeanIoU (index input)",
                     "from torchmetrics.segmentation import DiceScore, MeanIoU", "torchmetrics"),
}
QUICK_COMPETITORS = ("numpy",)


# --------------------------------------------------------------------------------------
# Running one process and measuring it
# --------------------------------------------------------------------------------------

@dataclass
class Cmd:
    name: str
    argv: list[str]
    check: Callable[[], str] | None = None  # run after the warm-up: agreement note
    tree: bool = False  # sample the tree's RSS (memory section)
    info: dict[str, Any] = field(default_factory=dict)


@dataclass
class Measured:
    cmd: Cmd
    times: list[float] = field(default_factory=list)
    max_rss_kb: list[int] = field(default_factory=list)
    tree_rss_kb: list[int] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    note: str = ""

    @property
    def ok(self) -> bool:
        return bool(self.times)

    @property
    def median(self) -> float:
        return statistics.median(self.times) if self.times else math.nan

    @property
    def rss_mb(self) -> float:
        return max(self.max_rss_kb) / 1024 if self.max_rss_kb else math.nan

    @property
    def tree_mb(self) -> float:
        return max(self.tree_rss_kb) / 1024 if self.tree_rss_kb else math.nan

    def to_json(self) -> dict[str, Any]:
        return {"name": self.cmd.name, "argv": self.cmd.argv, "seconds": self.times,
                "median_s": self.median, "max_rss_mb": self.rss_mb,
                "tree_rss_mb": self.tree_mb if self.tree_rss_kb else None,
                "failures": self.failures, "note": self.note, **self.cmd.info}


def _children(pid: int) -> list[int]:
    kids = []
    try:
        for task in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{task}/children") as fh:
                kids += [int(x) for x in fh.read().split()]
    except OSError:
        pass
    return kids


def _tree_rss(pid: int) -> int:
    total, stack = 0, [pid]
    while stack:
        p = stack.pop()
        try:
            with open(f"/proc/{p}/statm") as fh:
                total += int(fh.read().split()[1]) * PAGE
        except (OSError, IndexError, ValueError):
            continue
        stack += _children(p)
    return total


TREE_SAMPLING = os.path.exists(f"/proc/{os.getpid()}/task/{os.getpid()}/children")


# GNU time reports the peak RSS of its child (its own wait4 rusage: the largest process of
# the child's tree).  Reading our own wait4 rusage instead would be wrong: Linux carries the
# parent's high-water RSS across fork+exec into the child's ru_maxrss, and this runner holds
# NumPy and decoded volumes.  `time` itself is a ~2 MB process, so nothing leaks through it.
GNU_TIME = "/usr/bin/time" if os.access("/usr/bin/time", os.X_OK) else None
RSS_HELPER = """
import os, sys
pid = os.fork()
if pid == 0:
    os.execvp(sys.argv[2], sys.argv[2:])
_, status, usage = os.wait4(pid, 0)
with open(sys.argv[1], "w") as fh:
    fh.write(str(usage.ru_maxrss))
sys.exit(os.waitstatus_to_exitcode(status))
"""


def run_once(cmd: Cmd, log: Path) -> tuple[float, int, int | None, int]:
    """Wall seconds, max RSS (KB, largest process), sampled tree RSS (KB) and exit code."""
    peak = [0]
    stop = threading.Event()
    rss_file = log.with_suffix(".rss")
    argv = cmd.argv
    if GNU_TIME:
        argv = [GNU_TIME, "-f", "%M", "-o", str(rss_file), *argv]
    else:
        argv = [sys.executable, "-I", "-S", "-c", RSS_HELPER, str(rss_file), *argv]
    with open(log, "wb") as err:
        started = time.perf_counter()
        proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=err,
                                stdin=subprocess.DEVNULL, cwd=REPO, env=CHILD_ENV)
        sampler = None
        if cmd.tree and TREE_SAMPLING:
            def sample() -> None:
                while not stop.is_set():
                    peak[0] = max(peak[0], _tree_rss(proc.pid))
                    stop.wait(0.005)
            sampler = threading.Thread(target=sample, daemon=True)
            sampler.start()
        _, status, usage = os.wait4(proc.pid, 0)
        elapsed = time.perf_counter() - started
    stop.set()
    if sampler is not None:
        sampler.join()
    proc.returncode = os.waitstatus_to_exitcode(status)
    tree = peak[0] // 1024 if sampler is not None else None
    del usage  # see GNU_TIME: our own view of the child's peak includes this runner's
    try:
        max_rss = int(rss_file.read_text().split()[-1])
    except (OSError, ValueError, IndexError):
        max_rss = 0
    return elapsed, max_rss, tree, proc.returncode


def measure(cmds: list[Cmd], rounds: int, warmup: bool, work: Path) -> list[Measured]:
    """One warm-up pass (and the agreement checks), then ``rounds`` interleaved rounds."""
    results = [Measured(c) for c in cmds]
    log = work / "stderr.log"

    def one(m: Measured, keep: bool) -> None:
        seconds, rss, tree, code = run_once(m.cmd, log)
        if code != 0:
            tail = log.read_text(errors="replace").strip().splitlines()[-3:]
            m.failures.append(f"exit {code}: {' | '.join(tail)}")
            print(f"    ! {m.cmd.name}: exit {code}: {' | '.join(tail)}", file=sys.stderr)
            return
        if keep:
            m.times.append(seconds)
            m.max_rss_kb.append(rss)
            if tree is not None:
                m.tree_rss_kb.append(tree)

    for m in results:
        if warmup or m.cmd.check is not None:
            one(m, keep=False)
            if m.cmd.check is not None and not m.failures:
                m.note = m.cmd.check()
                print(f"    agreement, {m.cmd.name}: {m.note}", file=sys.stderr)
    live = [m for m in results if not m.failures]
    for r in range(rounds):
        order = live[r % len(live):] + live[: r % len(live)] if live else []
        for m in order:
            one(m, keep=True)
        print(f"    round {r + 1}/{rounds}: " + ", ".join(
            f"{m.cmd.name} {m.times[-1]:.2f}s" for m in live if len(m.times) > r),
            file=sys.stderr)
    return results


# --------------------------------------------------------------------------------------
# Data sets
# --------------------------------------------------------------------------------------

def set_dir(data: Path, kind: str, cases: int, shape: tuple[int, ...], classes: str) -> Path:
    return data / f"{kind}_{cases}x{'x'.join(map(str, shape))}_k{classes}"


def _complete(path: Path) -> bool:
    return (path / ".complete").is_file()


def _mark(path: Path, info: dict[str, Any]) -> None:
    (path / ".complete").write_text(json.dumps(info))


def _ext(kind: str) -> str:
    return ".png" if kind == "png" else ".nii.gz"


def link_subset(source: Path, target: Path, cases: int, ext: str) -> None:
    tmp = target.with_name(target.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    for folder in ("gt", "pred"):
        (tmp / folder).mkdir(parents=True)
        for i in range(cases):
            name = f"case_{i:03d}{ext}"
            try:
                os.link(source / folder / name, tmp / folder / name)
            except OSError:
                shutil.copy2(source / folder / name, tmp / folder / name)
    _mark(tmp, {"subset_of": source.name, "cases": cases})
    tmp.rename(target)


def ensure_set(data: Path, kind: str, cases: int, shape: tuple[int, ...], classes: int,
               python: str) -> Path:
    """A generate.py set, generated once; fewer cases are linked from a larger set."""
    target = set_dir(data, kind, cases, shape, str(classes))
    if _complete(target):
        return target
    shutil.rmtree(target, ignore_errors=True)
    prefix = f"{kind}_"
    suffix = f"x{'x'.join(map(str, shape))}_k{classes}"
    for other in sorted(data.glob(f"{prefix}*{suffix}")):
        try:
            n = int(other.name[len(prefix):].split("x", 1)[0])
        except ValueError:
            continue
        if n >= cases and _complete(other) and other.name.endswith(suffix):
            link_subset(other, target, cases, _ext(kind))
            return target
    tmp = target.with_name(target.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    started = time.perf_counter()
    print(f"  generating {target.name} ...", file=sys.stderr, flush=True)
    subprocess.run([python, str(HERE / "generate.py"), kind, str(tmp), "--cases", str(cases),
                    "--shape", *map(str, shape), "--classes", str(classes)], check=True)
    _mark(tmp, {"kind": kind, "cases": cases, "shape": shape, "classes": classes})
    tmp.rename(target)
    print(f"  generated {target.name} in {time.perf_counter() - started:.0f} s",
          file=sys.stderr)
    return target


RELABEL_BLOCK = 16
RELABEL_CLASSES = 117


def relabel(array: Any, classes: int = RELABEL_CLASSES) -> Any:
    """Split each foreground label of a small-K map into spatial blocks: labels 0..classes-1.

    Voxel (x, y, z) with label l > 0 becomes 1 + ((l - 1) + 3·b) mod (classes - 1), with b a
    function of the 16-voxel block holding the voxel, so prediction and reference agree on
    the new label wherever they agreed on the old one."""
    import numpy as np

    x, y, z = np.ogrid[tuple(slice(0, s) for s in array.shape)]
    block = (x // RELABEL_BLOCK + 5 * (y // RELABEL_BLOCK) + 11 * (z // RELABEL_BLOCK)) % 39
    new = 1 + ((array.astype(np.int64) - 1) + 3 * block) % (classes - 1)
    return np.where(array == 0, 0, new).astype(np.uint8)


def ensure_relabelled(data: Path, source: Path, cases: int, shape: tuple[int, ...]) -> Path:
    target = set_dir(data, "nifti", cases, shape, f"{RELABEL_CLASSES}relabel")
    if _complete(target):
        return target
    for other in sorted(data.glob(f"nifti_*x{'x'.join(map(str, shape))}_k"
                                  f"{RELABEL_CLASSES}relabel")):
        n = int(other.name[len("nifti_"):].split("x", 1)[0])
        if n >= cases and _complete(other):
            link_subset(other, target, cases, ".nii.gz")
            return target
    print(f"  relabelling {source.name} → {target.name} ...", file=sys.stderr, flush=True)
    return write_derived(source, target, cases, lambda folder, array: relabel(array),
                         {"relabelled_from": source.name, "classes": RELABEL_CLASSES})


def write_derived(source: Path, target: Path, cases: int, convert: Callable[[str, Any], Any],
                  info: dict[str, Any]) -> Path:
    """A set made from another one, case by case: ``convert(folder, array)`` gives the new
    array of each file ("gt" or "pred"), written with generate.py's writer (gzip level 6)
    and the source's spacing."""
    import nibabel as nib
    import numpy as np

    sys.path.insert(0, str(HERE))
    from generate import write_nifti

    tmp = target.with_name(target.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    for folder in ("gt", "pred"):
        (tmp / folder).mkdir(parents=True)
        for i in range(cases):
            name = f"case_{i:03d}.nii.gz"
            image: Any = nib.load(str(source / folder / name))
            write_nifti(tmp / folder / name, convert(folder, np.asarray(image.dataobj)),
                        tuple(float(z) for z in image.header.get_zooms()))
    _mark(tmp, info)
    tmp.rename(target)
    return target


SWEEP_CASES = 6
SWEEP_SHAPE = (192, 192, 96)
SWEEP_THRESHOLDS = "0.05:0.95:0.05"  # 19 thresholds


def ensure_probability_set(data: Path, python: str) -> Path:
    """Float32 probability maps against binary references, for the sweep section: the
    4-class generator's volumes, foreground = label > 0, the prediction's mask box-blurred
    over 5 voxels per axis so that it has soft edges (and compresses like real output)."""
    target = set_dir(data, "nifti", SWEEP_CASES, SWEEP_SHAPE, "prob")
    if _complete(target):
        return target
    source = ensure_set(data, "nifti", SWEEP_CASES, SWEEP_SHAPE, 4, python)
    print(f"  making probability maps {target.name} ...", file=sys.stderr, flush=True)
    return write_derived(source, target, SWEEP_CASES, _probabilities,
                         {"probabilities_from": source.name, "cases": SWEEP_CASES})


def _probabilities(folder: str, labels: Any) -> Any:
    """gt: foreground (label > 0) as uint8; pred: that mask box-blurred over 5 voxels per
    axis (edges clamped), float32 in [0, 1]."""
    import numpy as np

    if folder == "gt":
        return (labels > 0).astype(np.uint8)
    blurred = (labels > 0).astype(np.float32)
    for axis in range(3):
        padded = np.pad(blurred, [(2, 2) if a == axis else (0, 0) for a in range(3)],
                        mode="edge")
        total = np.cumsum(padded, axis=axis, dtype=np.float64)
        total = np.concatenate([np.zeros_like(np.take(total, [0], axis=axis)), total],
                               axis=axis)
        size = blurred.shape[axis]
        blurred = ((np.take(total, range(5, size + 5), axis=axis)
                    - np.take(total, range(size), axis=axis)) / 5).astype(np.float32)
    return np.clip(blurred, 0, 1).astype(np.float32)


def ensure_big_pair(data: Path, shape: tuple[int, int, int], classes: int = 4,
                    seed: int = 0) -> Path:
    """One gt/pred pair of nested ellipsoids written as .nii.gz slab by slab (z-slabs are
    contiguous in NIfTI's Fortran order), so generating it needs ~0.3 GB whatever the size.
    The prediction is the reference's ellipsoids moved and resized a little."""
    import gzip

    import nibabel as nib
    import numpy as np

    target = set_dir(data, "bignifti", 1, shape, str(classes))
    if _complete(target):
        return target
    print(f"  streaming {target.name} ...", file=sys.stderr, flush=True)
    started = time.perf_counter()
    tmp = target.with_name(target.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    rng = np.random.default_rng(seed)
    reference = []
    for label in range(1, classes):
        centre = [s * rng.uniform(0.3, 0.7) for s in shape]
        radius = [s * rng.uniform(0.08, 0.3) / (1 + 0.02 * label) for s in shape]
        reference.append((label, centre, radius))
    prediction = []
    for label, centre, radius in reference:
        moved = [c + rng.normal(0, 0.08 * r) for c, r in zip(centre, radius, strict=True)]
        prediction.append((label, moved, [r * (1 + rng.normal(0, 0.08)) for r in radius]))
    spacing = (0.8, 0.8, 1.5)
    image = nib.Nifti1Image(np.zeros((1, 1, 1), np.uint8), np.diag([*spacing, 1.0]))
    header = image.header.copy()
    header.set_data_dtype(np.uint8)
    header.set_data_shape(shape)
    header.set_zooms(spacing)
    header["vox_offset"] = 352
    slab = 16
    for folder, ellipsoids in (("gt", reference), ("pred", prediction)):
        (tmp / folder).mkdir(parents=True)
        with gzip.GzipFile(tmp / folder / "case_000.nii.gz", "wb", compresslevel=6,
                           mtime=0) as out:
            out.write(header.binaryblock + b"\0" * 4)
            x, y = np.ogrid[0:shape[0], 0:shape[1]]
            in_plane = [(((x - c[0]) / r[0]) ** 2 + ((y - c[1]) / r[1]) ** 2)
                        .astype(np.float32)[:, :, None] for _, c, r in ellipsoids]
            for z0 in range(0, shape[2], slab):
                z = np.arange(z0, min(z0 + slab, shape[2]), dtype=np.float32)[None, None, :]
                labels = np.zeros((shape[0], shape[1], z.shape[2]), np.uint8)
                for (label, c, r), d in zip(ellipsoids, in_plane, strict=True):
                    labels[d + ((z - c[2]) / r[2]) ** 2 <= 1.0] = label
                out.write(labels.tobytes(order="F"))
    check: Any = nib.load(str(tmp / "gt" / "case_000.nii.gz"))
    assert check.shape == shape and check.get_data_dtype() == np.uint8
    _mark(tmp, {"shape": shape, "classes": classes, "streamed": True})
    tmp.rename(target)
    print(f"  streamed {target.name} in {time.perf_counter() - started:.0f} s",
          file=sys.stderr)
    return target


# --------------------------------------------------------------------------------------
# Agreement with segeval
# --------------------------------------------------------------------------------------

def segeval_dice(report: Path) -> dict[str, dict[str, tuple[float | None, bool]]]:
    """{case: {label: (dice, reference has the class)}} from a segeval JSON report."""
    data = json.loads(report.read_text())
    return {case["id"]: {k: (v.get("dice"), v["tp"] + v["fn"] > 0)
                         for k, v in (case.get("metrics") or {}).items()}
            for case in data["cases"]}


def agreement(reference_json: Path, other_json: Path) -> tuple[bool, str]:
    """Compare every case × class Dice.  A value defined on one side only is a convention
    difference when the reference lacks the class (MONAI's ignore_empty gives NaN where
    segeval gives 0 for a prediction-only class); anything else is a disagreement."""
    ours, theirs = segeval_dice(reference_json), json.loads(other_json.read_text())
    worst, compared, convention, undefined, first = 0.0, 0, 0, 0, None
    for case in sorted(ours):
        if case not in theirs:
            return False, f"DISAGREES: case {case} missing from the competitor's output"
        for label, (value, in_reference) in ours[case].items():
            other = theirs[case].get(label)
            a = math.nan if value is None else value
            b = math.nan if other is None else other
            if math.isnan(a) or math.isnan(b):
                if math.isnan(a) != math.isnan(b):
                    if in_reference:
                        undefined += 1
                    else:
                        convention += 1
                continue
            compared += 1
            worst = max(worst, abs(a - b))
        if first is None:
            first = (case, {k: (ours[case][k][0], theirs[case].get(k)) for k in ours[case]})
    ok = worst <= TOLERANCE and undefined == 0 and compared > 0
    case, values = first or ("-", {})
    shown = ", ".join(f"{k}: {a:.6f}/{b:.6f}" for k, (a, b) in list(values.items())[:4]
                      if a is not None and b is not None)
    note = f"{'agrees' if ok else 'DISAGREES'}: max abs ΔDice {worst:.0e} over {compared} values"
    if undefined:
        note += f", {undefined} defined on one side only"
    if convention:
        note += (f"; {convention} classes absent from the reference: NaN there, 0 in "
                 "segeval (convention)")
    print(f"      {case} Dice, segeval/competitor: {shown}", file=sys.stderr)
    return ok, note


# --------------------------------------------------------------------------------------
# Tables
# --------------------------------------------------------------------------------------

@dataclass
class Table:
    key: str
    title: str
    columns: list[str]
    rows: list[list[str]]
    notes: list[str] = field(default_factory=list)
    raw: list[dict[str, Any]] = field(default_factory=list)

    def markdown(self) -> str:
        lines = [f"### {self.title}", "", "| " + " | ".join(self.columns) + " |",
                 "|" + "|".join("---" if i == 0 else "---:" for i in range(len(self.columns)))
                 + "|"]
        lines += ["| " + " | ".join(r) + " |" for r in self.rows]
        if self.notes:
            lines += [""] + [f"* {n}" for n in self.notes]
        return "\n".join(lines) + "\n"


def fmt_s(m: Measured) -> str:
    if not m.ok:
        return "failed"
    if len(m.times) == 1:
        return f"{m.median:.2f}"
    return f"{m.median:.2f} ({min(m.times):.2f}–{max(m.times):.2f})"


def ratio(a: Measured, b: Measured) -> float:
    return a.median / b.median if a.ok and b.ok else math.nan


def fmt_x(value: float) -> str:
    return "—" if math.isnan(value) else f"{value:.2f}×"


def fmt_mb(value: float) -> str:
    return "—" if math.isnan(value) else f"{value:,.0f}"


# --------------------------------------------------------------------------------------
# Sections
# --------------------------------------------------------------------------------------

class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.quick = args.quick
        self.python = args.python
        self.segeval = args.segeval
        self.data: Path = args.data
        self.data.mkdir(parents=True, exist_ok=True)
        self.work = Path(tempfile.mkdtemp(prefix="bench_", dir=self.data))
        self.scripts = self.data / "_scripts"
        self.scripts.mkdir(exist_ok=True)
        for name, text in SCRIPTS.items():
            (self.scripts / f"bench_{name}.py").write_text(text.lstrip())
        self.rounds = args.rounds
        self.tables: list[Table] = []
        self.available = self._available_competitors(args.competitors)

    # ---- helpers ------------------------------------------------------------------
    def script(self, name: str, *args: Any) -> list[str]:
        return [self.python, str(self.scripts / f"bench_{name}.py"), *map(str, args)]

    def segeval_cmd(self, pred: Path, gt: Path, out: Path, *extra: str) -> list[str]:
        return [*self.segeval, "evaluate", str(pred), str(gt), "--json", str(out), "-q", *extra]

    def _available_competitors(self, wanted: list[str]) -> dict[str, str]:
        available = {}
        for name in wanted:
            label, probe, _ = COMPETITORS[name]
            if probe is None:
                available[name] = label
                continue
            done = subprocess.run([self.python, "-c", probe], capture_output=True, text=True,
                                  env=CHILD_ENV)
            if done.returncode == 0:
                available[name] = label
            else:
                why = (done.stderr.strip().splitlines() or ["import failed"])[-1]
                print(f"  skipped competitor {name}: not importable ({why})", file=sys.stderr)
        return available

    def run(self, cmds: list[Cmd], rounds: int | None = None) -> list[Measured]:
        return measure(cmds, rounds or self.rounds, warmup=not self.quick, work=self.work)

    def add(self, table: Table) -> None:
        self.tables.append(table)
        print("\n" + table.markdown(), flush=True)

    # ---- 1-4: the two main sets against baselines and peers -----------------------
    def section_set(self, key: str, title: str, root: Path, kind: str, n_classes: int) -> None:
        ext = _ext(kind)
        pred, gt = root / "pred", root / "gt"
        ours_json = self.work / f"{key}_segeval.json"
        load = Cmd("load only", self.script("load_png" if kind == "png" else "load_nifti",
                                            pred, gt))
        cmds = [load]
        if kind == "nifti" and not self.quick:
            cmds.append(Cmd("zlib inflate only", self.script("inflate_zlib", pred, gt)))
            try:
                import isal  # noqa: F401
                cmds.append(Cmd("ISA-L inflate only", self.script("inflate_isal", pred, gt)))
            except ImportError:
                print("  no isal here: the ISA-L inflate row is skipped", file=sys.stderr)
        main = Cmd("segeval evaluate (default workers)", self.segeval_cmd(pred, gt, ours_json),
                   check=lambda: "reference for the agreement checks")
        cmds += [main, Cmd("segeval evaluate --workers 1",
                           self.segeval_cmd(pred, gt, self.work / f"{key}_w1.json",
                                            "--workers", "1"))]
        for name, label in self.available.items():
            out = self.work / f"{key}_{name}.json"

            def check(out: Path = out) -> str:
                return agreement(ours_json, out)[1]

            cmds.append(Cmd(label, self.script(name, pred, gt, n_classes, out, ext),
                            check=check))
        results = self.run(cmds)
        base = results[0]
        rows = [[m.cmd.name, fmt_s(m), fmt_x(ratio(m, base)), fmt_mb(m.rss_mb),
                 m.note if m.cmd is not main else ""] for m in results]
        seg = results[[m.cmd for m in results].index(main)]
        notes = [f"segeval vs load-only: {fmt_x(ratio(seg, base))} (target ≤ 1.00×)."]
        for m in results:
            if m.cmd.check is not None and m.cmd is not main and m.ok:
                notes.append(f"{m.cmd.name}: {ratio(m, seg):.1f}× segeval's time")
        skipped = [n for n in (self.args.competitors) if n not in self.available]
        if skipped:
            notes.append("skipped (not importable or not asked for): " + ", ".join(skipped))
        self.add(Table(key, title, ["pipeline", f"s, median of {self.rounds} (min–max)",
                                    "× load-only", "max RSS MB", "agreement with segeval"],
                       rows, notes, [m.to_json() for m in results]))

    # ---- 5: flat in classes ----------------------------------------------------------
    def section_classes(self, four: Path, many: Path, cases: int) -> None:
        cmds = [
            Cmd("load only, 4 classes", self.script("load_nifti", four / "pred", four / "gt")),
            Cmd("load only, 117 classes", self.script("load_nifti", many / "pred", many / "gt")),
            Cmd("segeval, 4 classes", self.segeval_cmd(four / "pred", four / "gt",
                                                       self.work / "k4.json")),
            Cmd("segeval, 117 classes", self.segeval_cmd(many / "pred", many / "gt",
                                                         self.work / "k117.json")),
        ]
        load4, load117, seg4, seg117 = self.run(cmds)
        classes = len(json.loads((self.work / "k117.json").read_text())["classes"]) \
            if seg117.ok else 0
        check = self._check_many(many)
        rows = [[load4.cmd.name, fmt_s(load4), "1.00×", "", fmt_mb(load4.rss_mb)],
                [load117.cmd.name, fmt_s(load117), fmt_x(ratio(load117, load4)), "1.00×",
                 fmt_mb(load117.rss_mb)],
                [seg4.cmd.name, fmt_s(seg4), fmt_x(ratio(seg4, load4)), "", fmt_mb(seg4.rss_mb)],
                [seg117.cmd.name + f" ({classes} scored)", fmt_s(seg117),
                 fmt_x(ratio(seg117, load4)), fmt_x(ratio(seg117, load117)),
                 fmt_mb(seg117.rss_mb)]]
        notes = [f"segeval 117 classes / 4 classes: **{fmt_x(ratio(seg117, seg4))}** "
                 "(target ≤ 1.5×); loading the 117-class files alone takes "
                 f"{fmt_x(ratio(load117, load4))} the time of the 4-class files.",
                 f"Same {cases} volumes, each foreground label split into 16³ blocks "
                 "(labels 0–116). " + check]
        self.add(Table("classes", f"Flat in classes: {cases} cases of 256×256×160, 4 vs 117 "
                       "classes", ["pipeline", f"s, median of {self.rounds} (min–max)",
                                   "× load-only (4 cl.)", "× load-only (117 cl.)",
                                   "max RSS MB"], rows, notes,
                       [m.to_json() for m in (load4, load117, seg4, seg117)]))

    def _check_many(self, many: Path) -> str:
        """segeval's 117-class counts on case 0 against a plain NumPy bincount."""
        import nibabel as nib
        import numpy as np

        report = json.loads((self.work / "k117.json").read_text())
        case = report["cases"][0]
        images: list[Any] = [nib.load(str(many / f / "case_000.nii.gz")) for f in ("pred", "gt")]
        p, g = (np.asarray(image.dataobj).astype(np.int64) for image in images)
        k = int(max(p.max(), g.max())) + 1
        cm = np.bincount((g * k + p).ravel(), minlength=k * k).reshape(k, k)
        tp = np.diag(cm)
        bad = sum(1 for label, m in case["metrics"].items()
                  if (m["tp"], m["fp"], m["fn"]) != (tp[int(label)],
                                                    cm[:, int(label)].sum() - tp[int(label)],
                                                    cm[int(label)].sum() - tp[int(label)]))
        return (f"Counts of case_000 ({len(case['metrics'])} classes) equal a NumPy bincount"
                if bad == 0 else f"COUNTS DIFFER from a NumPy bincount in {bad} classes")

    # ---- 5b: threshold sweep --------------------------------------------------------------
    def section_sweep(self, root: Path) -> None:
        pred, gt = root / "pred", root / "gt"
        single_json, sweep_json = self.work / "sweep1.json", self.work / "sweep19.json"
        cmds = [Cmd("load only", self.script("load_nifti", pred, gt)),
                Cmd("segeval, --threshold 0.5", self.segeval_cmd(pred, gt, single_json)),
                Cmd(f"segeval, --threshold {SWEEP_THRESHOLDS} (19 thresholds)",
                    self.segeval_cmd(pred, gt, sweep_json, "--threshold", SWEEP_THRESHOLDS))]
        load, single, sweep = self.run(cmds)
        check = ""
        if single.ok and sweep.ok:  # the sweep's 0.5 row must be the single run's numbers
            one = json.loads(single_json.read_text())["summary"]["macro"]["dice"]
            block = json.loads(sweep_json.read_text())["sweep"]
            at = [i for i, t in enumerate(block["thresholds"]) if abs(t - 0.5) < 1e-9]
            same = bool(at) and block["summary"]["macro"]["dice"][at[0]] == one
            check = (f"; at 0.5 the sweep's macro Dice equals the single run's ({one:.6f})"
                     if same else "; THE SWEEP AT 0.5 DIFFERS FROM THE SINGLE RUN")
        rows = [[m.cmd.name, fmt_s(m), fmt_x(ratio(m, load)), fmt_mb(m.rss_mb)]
                for m in (load, single, sweep)]
        notes = [f"19 thresholds / 1 threshold: **{fmt_x(ratio(sweep, single))}** (one pass "
                 "per case whatever the number of thresholds)" + check + "."]
        self.add(Table("sweep", f"Threshold sweep: {SWEEP_CASES} float32 probability maps of "
                       f"{'×'.join(map(str, SWEEP_SHAPE))} .nii.gz, binary references",
                       ["pipeline", f"s, median of {self.rounds} (min–max)", "× load-only",
                        "max RSS MB"], rows, notes, [m.to_json() for m in (load, single, sweep)]))

    # ---- 6: memory ----------------------------------------------------------------------
    def section_memory(self, big: Path | None, main_set: Path, cases: int) -> None:
        cmds = []
        if big is not None:
            cmds += [Cmd("big pair: load only (nibabel)",
                          self.script("load_nifti", big / "pred", big / "gt"), tree=True),
                     Cmd("big pair: segeval evaluate", self.segeval_cmd(
                         big / "pred", big / "gt", self.work / "big.json"), tree=True)]
        cmds += [Cmd(f"{cases} cases: segeval --workers {w}", self.segeval_cmd(
            main_set / "pred", main_set / "gt", self.work / f"mem_w{w}.json", "--workers",
            str(w)), tree=True) for w in ((1, 2) if self.quick else (1, 2, 4))]
        results = self.run(cmds)
        rows = []
        base = results[0] if big is not None else None
        for m in results:
            x = fmt_x(ratio(m, base)) if base is not None and m.cmd.name.startswith("big") \
                else ""
            rows.append([m.cmd.name, fmt_s(m), x, fmt_mb(m.rss_mb), fmt_mb(m.tree_mb)])
        notes = []
        if big is not None:
            seg = results[1]
            notes.append(f"1024×1024×512 uint8 pair (2 × 512 MiB decoded): segeval peak "
                         f"{seg.rss_mb / 1024:.2f} GiB largest process, "
                         f"{seg.tree_mb / 1024:.2f} GiB tree (target ≤ 3 GB).")
        else:
            notes.append("1024×1024×512 pair skipped (--quick).")
        w = {int(m.cmd.name.split()[-1]): m for m in results if "--workers" in m.cmd.name}
        if 1 in w and 2 in w and w[1].ok and w[2].ok:
            per = (f"; each further worker adds {(w[4].tree_mb - w[2].tree_mb) / 2:.0f} MB "
                   "(W = 2 → 4)") if 4 in w and w[4].ok else ""
            notes.append(f"Tree RSS W=2 / W=1: {w[2].tree_mb / w[1].tree_mb:.2f}{per} "
                         "(target: at most linear in W). Tree RSS counts pages shared by "
                         "forked workers once per process, so it overstates the real total.")
        if not TREE_SAMPLING:
            notes.append("no /proc/PID/task/*/children here: tree RSS not sampled.")
        self.add(Table("memory", "Memory", ["run", f"s, median of {self.rounds}",
                                            "× load-only", "max RSS MB (largest process)",
                                            "tree RSS MB (sampled)"], rows, notes,
                       [m.to_json() for m in results]))

    # ---- 7: scaling -----------------------------------------------------------------------
    def section_scaling(self, sets: list[tuple[str, Path, int, int]], tiny: Path) -> None:
        """sets: (label, root, cases, voxels per volume)."""
        start = Cmd("segeval on one 256×256 PNG pair (start-up)", self.segeval_cmd(
            tiny / "pred", tiny / "gt", self.work / "tiny.json"))
        cmds = [start]
        for label, root, _, _ in sets:
            cmds += [Cmd(f"load {label}", self.script("load_nifti", root / "pred", root / "gt")),
                     Cmd(f"segeval {label}", self.segeval_cmd(root / "pred", root / "gt",
                                                               self.work / "scale.json"))]
        results = self.run(cmds)
        startup = results[0]
        rows = []
        for i, (label, _, cases, voxels) in enumerate(sets):
            load, seg = results[1 + 2 * i], results[2 + 2 * i]
            g = cases * voxels / 1e9
            net = (seg.median - startup.median) / g if seg.ok else math.nan
            rows.append([label, f"{g:.3f}", fmt_s(load), fmt_s(seg), fmt_x(ratio(seg, load)),
                         f"{seg.median / g:.2f}", f"{net:.2f}", fmt_mb(seg.rss_mb)])
        notes = [f"G vox = cases × voxels per volume (each voxel pair: one predicted and one "
                 f"reference voxel). net = (segeval − start-up {startup.median:.2f} s) / G vox, "
                 "start-up = segeval on one 256×256 PNG pair, measured in the same rounds."]
        self.add(Table("scaling", "Scaling (uint8 .nii.gz, labels 0–3)",
                       ["set", "G vox", "load-only s", "segeval s", "× load-only",
                        "segeval s/G vox", "net s/G vox", "max RSS MB"], rows, notes,
                       [m.to_json() for m in results]))

    # ---- 8: start-up -------------------------------------------------------------------------
    def section_startup(self, tiny: Path) -> None:
        cmds = [Cmd("python -c pass", [self.python, "-c", "pass"]),
                Cmd("python -c 'import numpy'", [self.python, "-c", "import numpy"]),
                Cmd("segeval --help", [*self.segeval, "--help"]),
                Cmd("segeval evaluate one 256×256 PNG pair (--json, -q)", self.segeval_cmd(
                    tiny / "pred", tiny / "gt", self.work / "tiny.json")),
                Cmd("segeval evaluate one 256×256 PNG pair (table to stdout)",
                    [*self.segeval, "evaluate", str(tiny / "pred"), str(tiny / "gt")]),
                Cmd("python -c 'import torch'", [self.python, "-c", "import torch"])]
        if self.quick:
            cmds.pop()  # 2-3 s a run: for scale only, left out of --quick
        rounds = self.rounds if self.quick else max(self.rounds, 5)
        results = self.run(cmds, rounds)
        base = results[0]
        rows = [[m.cmd.name, fmt_s(m), fmt_x(ratio(m, base)), fmt_mb(m.rss_mb)]
                for m in results]
        help_, one = results[2], results[3]
        notes = [f"targets ≤ 0.5 s: `segeval --help` {help_.median:.2f} s, one PNG pair "
                 f"{one.median:.2f} s."]
        self.add(Table("startup", "Start-up (whole process)",
                       ["command", f"s, median of {rounds} (min–max)", "× python -c pass",
                        "max RSS MB"], rows, notes, [m.to_json() for m in results]))


# --------------------------------------------------------------------------------------

def machine_info(python: str) -> dict[str, Any]:
    probe = r'''
import json, platform, sys
import numpy, nibabel, PIL
info = {"python": platform.python_version(), "numpy": numpy.__version__,
        "nibabel": nibabel.__version__, "pillow": PIL.__version__}
try:
    import isal; info["isal"] = isal.__version__
except ImportError:
    info["isal"] = None
try:
    from segeval.formats import nifti
    info["segeval_inflate"] = nifti._inflate_module.__name__
except Exception as exc:
    info["segeval_inflate"] = f"unknown ({exc})"
try:
    import imagecodecs; info["imagecodecs"] = imagecodecs.__version__
except ImportError:
    info["imagecodecs"] = None
try:
    from segeval.formats import png
    info["segeval_png"] = "libpng (imagecodecs)" if png._png_decode else "Pillow"
except Exception as exc:
    info["segeval_png"] = f"unknown ({exc})"
import segeval; info["segeval"] = segeval.__version__
print(json.dumps(info))
'''
    info = json.loads(subprocess.run([python, "-c", probe], capture_output=True, text=True,
                                     check=True, env=CHILD_ENV).stdout)
    model = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count() or 1
    mem = "unknown"
    try:
        kb = int(Path("/proc/meminfo").read_text().split()[1])
        mem = f"{kb / 1024 ** 2:.0f} GiB"
    except (OSError, ValueError, IndexError):
        pass
    try:
        import importlib.metadata as md
        torch = md.version("torch")
    except Exception:
        torch = None
    return {"nproc": usable, "cpu": model, "memory": mem, "platform": platform.platform(),
            "torch": torch, "OPENBLAS_CORETYPE": os.environ.get("OPENBLAS_CORETYPE"),
            **info}


def git(*args: str) -> str:
    done = subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True)
    return done.stdout.strip() if done.returncode == 0 else ""


def code_state(source: Path) -> dict[str, str]:
    """Which segeval is measured: the commit, whether segeval/ has uncommitted changes,
    and a hash of the package's files as the measured processes import them."""
    import hashlib

    digest = hashlib.sha256()
    for path in sorted(source.rglob("*")):
        if path.is_file() and path.suffix in (".py", ".json"):
            digest.update(str(path.relative_to(source)).encode() + b"\0" + path.read_bytes())
    return {"head": git("rev-parse", "--short", "HEAD"),
            "segeval_dirty": "yes" if git("status", "--porcelain", "--", "segeval") else "no",
            "files_sha256": digest.hexdigest()[:12]}


def make_snapshot(rev: str, data: Path) -> Path:
    """``git archive REV segeval`` under DATA/_snapshot/SHA: a frozen copy to measure while
    the working tree keeps changing; the measured processes import it via PYTHONPATH."""
    sha = git("rev-parse", "--short", rev)
    if not sha:
        raise SystemExit(f"--snapshot {rev}: not a revision of {REPO}")
    root = data / "_snapshot" / sha
    if not (root / "segeval" / "__init__.py").is_file():
        shutil.rmtree(root, ignore_errors=True)
        root.mkdir(parents=True)
        archive = subprocess.run(["git", "archive", sha, "segeval"], cwd=REPO,
                                 capture_output=True, check=True).stdout
        subprocess.run(["tar", "-x", "-C", str(root)], input=archive, check=True)
    return root


def default_segeval(python: str) -> list[str]:
    script = Path(python).parent / "segeval"
    if script.is_file():
        return [str(script)]
    found = shutil.which("segeval")
    return [found] if found else [python, "-m", "segeval"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true",
                        help="about a minute: 10 NIfTI cases and 100 PNGs, the NumPy competitor "
                        "only, warm-up runs only where a check needs them, no 1024×1024×512 "
                        "pair, scaling only up to 10 cases and 128³, no torch import row")
    parser.add_argument("--rounds", type=int, default=3, help="timed rounds (median; default 3)")
    parser.add_argument("--out", type=Path,
                        help="also write the tables: PATH.md (Markdown) and PATH.json, or only "
                        "JSON when PATH ends in .json")
    parser.add_argument("--sections",
                        default="nifti,png,classes,sweep,memory,scaling,startup",
                        help="comma-separated subset of "
                        "nifti,png,classes,sweep,memory,scaling,startup")
    parser.add_argument("--competitors", default=None,
                        help=f"comma-separated subset of {','.join(COMPETITORS)} (default: all; "
                        f"--quick: {','.join(QUICK_COMPETITORS)}); 'none' for none")
    parser.add_argument("--data", type=Path, default=HERE / "data",
                        help="where generated sets are cached (default benchmarks/data)")
    parser.add_argument("--python", default=sys.executable,
                        help="interpreter for the measured scripts (default: this one)")
    parser.add_argument("--segeval", default=None,
                        help="segeval command (default: the console script beside --python)")
    parser.add_argument("--snapshot", metavar="REV", default=None,
                        help="measure segeval as committed at REV (git archive into "
                        "DATA/_snapshot, imported via PYTHONPATH) instead of the working tree, "
                        "which may change during a long run")
    args = parser.parse_args()
    wall = time.perf_counter()
    args.segeval = args.segeval.split() if args.segeval else default_segeval(args.python)
    if args.competitors is None:
        args.competitors = list(QUICK_COMPETITORS if args.quick else COMPETITORS)
    elif args.competitors == "none":
        args.competitors = []
    else:
        args.competitors = [c.strip() for c in args.competitors.split(",") if c.strip()]
        unknown = set(args.competitors) - set(COMPETITORS)
        if unknown:
            parser.error(f"unknown competitors: {', '.join(sorted(unknown))}")
    sections = {s.strip() for s in args.sections.split(",")}
    args.data = args.data.resolve()

    source = REPO / "segeval"
    if args.snapshot:
        snapshot = make_snapshot(args.snapshot, args.data)
        CHILD_ENV["PYTHONPATH"] = os.pathsep.join(
            [str(snapshot), *filter(None, [os.environ.get("PYTHONPATH")])])
        source = snapshot / "segeval"
    state = code_state(source)
    if args.snapshot:
        state.update(head=git("rev-parse", "--short", args.snapshot), segeval_dirty="no",
                     snapshot=str(source.parent))
    info = machine_info(args.python)
    info["code"] = state
    print(f"segeval measured: {state}", file=sys.stderr)
    print(f"machine: {info}", file=sys.stderr)
    with open("/proc/loadavg") as fh:
        load_before = fh.read().split()[:3]

    # ---- data (not timed) ----
    started = time.perf_counter()
    print("data:", file=sys.stderr)
    shape3 = (256, 256, 160)
    main_cases = 10 if args.quick else 20
    png_cases = 100 if args.quick else 400
    scale_cases = [5, 10] if args.quick else [5, 10, 20, 40]
    sides = [64, 128] if args.quick else [64, 128, 256, 512]
    py = args.python
    if "scaling" in sections:  # the largest first, so that smaller counts are links to it
        ensure_set(args.data, "nifti", max(scale_cases), shape3, 4, py)
    main_set = ensure_set(args.data, "nifti", main_cases, shape3, 4, py)
    tiny = ensure_set(args.data, "png", 1, (256, 256), 5, py)
    png_set = ensure_set(args.data, "png", png_cases, (512, 512), 5, py) \
        if "png" in sections else None
    many = ensure_relabelled(args.data, main_set, main_cases, shape3) \
        if "classes" in sections else None
    probabilities = ensure_probability_set(args.data, py) if "sweep" in sections else None
    big = ensure_big_pair(args.data, (1024, 1024, 512)) \
        if "memory" in sections and not args.quick else None
    scale_sets = []
    if "scaling" in sections:
        for n in scale_cases:
            scale_sets.append((f"{n} × 256×256×160", ensure_set(args.data, "nifti", n, shape3,
                                                                 4, py), n, math.prod(shape3)))
        for side in sides:
            root = ensure_set(args.data, "nifti", 4, (side,) * 3, 4, py)
            scale_sets.append((f"4 × {side}³", root, 4, side ** 3))
    data_seconds = time.perf_counter() - started
    print(f"data ready in {data_seconds:.0f} s (not part of any timing)", file=sys.stderr)

    bench = Bench(args)
    print(f"competitors: {', '.join(bench.available) or 'none'}", file=sys.stderr)
    try:
        if "nifti" in sections:
            print(f"\n== NIfTI, {main_cases} cases", file=sys.stderr)
            bench.section_set("nifti", f"NIfTI: {main_cases} cases of 256×256×160 uint8 .nii.gz,"
                              " labels 0–3", main_set, "nifti", 4)
        if png_set is not None:
            print(f"\n== PNG, {png_cases} cases", file=sys.stderr)
            bench.section_set("png", f"PNG: {png_cases} pairs of 512×512, labels 0–4",
                              png_set, "png", 5)
        if many is not None:
            print("\n== classes", file=sys.stderr)
            bench.section_classes(main_set, many, main_cases)
        if probabilities is not None:
            print("\n== sweep", file=sys.stderr)
            bench.section_sweep(probabilities)
        if "memory" in sections:
            print("\n== memory", file=sys.stderr)
            bench.section_memory(big, main_set, main_cases)
        if scale_sets:
            print("\n== scaling", file=sys.stderr)
            bench.section_scaling(scale_sets, tiny)
        if "startup" in sections:
            print("\n== start-up", file=sys.stderr)
            bench.section_startup(tiny)
    finally:
        shutil.rmtree(bench.work, ignore_errors=True)

    with open("/proc/loadavg") as fh:
        load_after = fh.read().split()[:3]
    total = time.perf_counter() - wall
    changed = code_state(source)["files_sha256"] != state["files_sha256"]
    if changed:
        print("WARNING: segeval's files changed during the run; the tables mix versions "
              "(use --snapshot REV)", file=sys.stderr)
    command = "python benchmarks/run.py " + " ".join(sys.argv[1:])
    code = (f"segeval at {state['head']}" + (" + uncommitted changes" if
                                             state["segeval_dirty"] == "yes" else "")
            + f" (files {state['files_sha256']})"
            + (" — CHANGED DURING THE RUN, the tables mix versions" if changed else ""))
    footer = (f"Command: `{command.strip()}`; {code}; {total:.0f} s in all "
              f"({data_seconds:.0f} s of it preparing data); load average before "
              f"{' '.join(load_before)}, after {' '.join(load_after)}.")
    print("\n" + footer)
    if args.out:
        payload = {"command": command.strip(), "machine": info, "seconds": total,
                   "code_changed_during_run": changed,
                   "data_seconds": data_seconds, "rounds": args.rounds, "quick": args.quick,
                   "loadavg_before": load_before, "loadavg_after": load_after,
                   "tables": [{"key": t.key, "title": t.title, "columns": t.columns,
                               "rows": t.rows, "notes": t.notes, "runs": t.raw}
                              for t in bench.tables]}
        out: Path = args.out
        out.parent.mkdir(parents=True, exist_ok=True)
        if out.suffix == ".json":
            out.write_text(json.dumps(payload, indent=1))
        else:
            machine = (f"Machine: {info['nproc']} usable cores, {info['cpu']}, {info['memory']}"
                       f"; Python {info['python']}, NumPy {info['numpy']}, nibabel "
                       f"{info['nibabel']}, Pillow {info['pillow']}, isal {info['isal']} "
                       f"(segeval inflates with {info['segeval_inflate']}), imagecodecs "
                       f"{info['imagecodecs']} (segeval decodes grayscale PNG with "
                       f"{info['segeval_png']}), torch {info['torch']}.")
            out.write_text("\n".join([machine, "", *(t.markdown() for t in bench.tables),
                                      footer, ""]))
            out.with_suffix(".json").write_text(json.dumps(payload, indent=1))
        print(f"wrote {out}", file=sys.stderr)


if __name__ == "__main__":
    main()
