"""Grading many teams: the reference decoded once per case (issue 15) vs once per team.

    python benchmarks/grade.py --before DIR          # DIR: a checkout of segeval before it
    python benchmarks/grade.py --teams 4 --cases 4   # quick

Data: ``data/grade/gt`` = the first ``--cases`` reference volumes of ``data/boundary/gt``
(``generate.py nifti``: 256x256x160, labels 0..3, written when missing); team k's submission
``data/grade/subs/team_k/case_i.nii.gz`` is the reference rolled by -2..2 voxels per axis
(a seeded draw per team and case).  Each row is one whole ``segeval grade SUBS GT --out OUT``
process with a fresh OUT (no cache), run once after a warm-up of the file cache:

* overlap only, and with ``--metrics hd95``, for this checkout;
* the same with ``--before DIR`` (PYTHONPATH=DIR: every team evaluated with its own
  ``evaluate``, decoding the reference set again per team).

Both leaderboards' numbers (and every team's report.json, run facts aside) are compared
between the two checkouts; a difference stops the script.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from same import same_values  # noqa: E402


def make_data(root: Path, teams: int, cases: int) -> tuple[Path, Path]:
    import nibabel as nib

    source = HERE / "data" / "boundary"
    if not (source / "gt" / f"case_{cases - 1:03d}.nii.gz").exists():
        from generate import generate
        generate("nifti", source, max(cases, 20), (256, 256, 160), 4)
    gt, subs = root / "gt", root / "subs"
    if (subs / f"team_{teams - 1:02d}" / f"case_{cases - 1:03d}.nii.gz").exists():
        return subs, gt
    gt.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for i in range(cases):
        name = f"case_{i:03d}.nii.gz"
        shutil.copyfile(source / "gt" / name, gt / name)
        image = nib.load(gt / name)
        labels = np.asarray(image.dataobj)
        for k in range(teams):
            rolled = np.roll(labels, tuple(rng.integers(-2, 3, size=3)), axis=(0, 1, 2))
            out = nib.Nifti1Image(rolled, image.affine, image.header)
            (subs / f"team_{k:02d}").mkdir(parents=True, exist_ok=True)
            (subs / f"team_{k:02d}" / name).write_bytes(
                gzip.compress(out.to_bytes(), compresslevel=6, mtime=0))
    return subs, gt


def run(python_path: Path, subs: Path, gt: Path, out: Path, extra: list[str]) -> float:
    shutil.rmtree(out, ignore_errors=True)
    env = {**os.environ, "PYTHONPATH": str(python_path)}
    command = [sys.executable, "-m", "segeval", "grade", str(subs), str(gt), "--out", str(out),
               "-q", *extra]
    start = time.perf_counter()
    # run from the checkout: ``python -m`` puts the working folder first on sys.path
    subprocess.run(command, check=True, env=env, cwd=python_path, stdout=subprocess.DEVNULL)
    return time.perf_counter() - start


def numbers(out: Path) -> dict:
    board = json.loads((out / "leaderboard.json").read_text())
    reports = {}
    for team in sorted(p.name for p in out.iterdir() if (p / "report.json").exists()):
        report = json.loads((out / team / "report.json").read_text())
        reports[team] = {key: value for key, value in report.items()
                         if key not in ("run", "tool")}
    return {"teams": board["teams"], "reports": reports}


def same_numbers(before: dict, after: dict) -> bool:
    """Equal, except for what one version does not write (a newer version records more
    options in ``config``, each at its default, and more report keys)."""
    for one, other in ((before, after), (after, before)):
        for team, report in one["reports"].items():
            theirs = other["reports"].get(team, {})
            for key in [k for k in report if k not in theirs]:
                del report[key]
            report["config"] = {k: v for k, v in report.get("config", {}).items()
                                if k in theirs.get("config", {})}
    return same_values(before, after)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--teams", type=int, default=20)
    parser.add_argument("--cases", type=int, default=20)
    parser.add_argument("--data", type=Path, default=HERE / "data" / "grade")
    parser.add_argument("--before", type=Path, default=None)
    parser.add_argument("--no-hd95", action="store_true")
    args = parser.parse_args()
    subs, gt = make_data(args.data, args.teams, args.cases)
    here = HERE.parent
    scratch = args.data / "out"
    run(here, subs, gt, scratch / "warm", [])  # warm the file cache
    rows = []
    for label, extra in (("overlap only", []), ("--metrics hd95", ["--metrics", "hd95"])):
        if extra and args.no_hd95:
            continue
        after = run(here, subs, gt, scratch / "after", extra)
        row = [label, after]
        if args.before is not None:
            before = run(args.before, subs, gt, scratch / "before", extra)
            if not same_numbers(numbers(scratch / "before"), numbers(scratch / "after")):
                raise SystemExit(f"{label}: leaderboards or reports DIFFER before/after")
            row.append(before)
        rows.append(row)
    print(f"segeval grade, {args.teams} teams x {args.cases} cases 256x256x160 .nii.gz, "
          f"{os.cpu_count()} CPUs, one process each, fresh --out\n")
    print("| grade run | this checkout s | before s | before / this |")
    print("|---|---|---|---|")
    for row in rows:
        before = f"{row[2]:.1f} | {row[2] / row[1]:.2f}x" if len(row) > 2 else "- | -"
        print(f"| {row[0]} | {row[1]:.1f} | {before} |")
    if args.before is not None:
        print("\nleaderboard.json and every report.json: the same numbers before/after "
              "(floats to 1e-12 relative)")


if __name__ == "__main__":
    main()
