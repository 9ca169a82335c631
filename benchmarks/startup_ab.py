"""Start-up of two checkouts side by side: ``segeval --help`` and one PNG pair, whole processes.

    python benchmarks/startup_ab.py OLD_TREE [NEW_TREE]     # NEW_TREE: this checkout

Each tree is a folder holding ``segeval/`` (e.g. ``git worktree add /tmp/old 600b59c`` or
``git archive REV segeval | tar -x -C DIR``).  Both are byte-compiled first (``compileall``):
a pip install writes bytecode, but an environment with ``PYTHONDONTWRITEBYTECODE`` set would
otherwise compile every module in every process and penalise the tree with more code.
Rounds are interleaved (old, new, old, new, ...) so that machine noise falls on both; the
table gives the median and minimum of ``--rounds`` runs.  Run from the repository root.
"""

from __future__ import annotations

import argparse
import compileall
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
PAIR = [str(HERE.parent / "sample_data" / "png2d" / side / "img_001.png")
        for side in ("pred", "gt")]
COMMANDS = {"segeval --help": ["--help"], "segeval dice a.png b.png -q": ["dice", *PAIR, "-q"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("old", type=Path)
    parser.add_argument("new", type=Path, nargs="?", default=HERE.parent)
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    trees = [args.old.resolve(), args.new.resolve()]
    for tree in trees:
        compileall.compile_dir(str(tree / "segeval"), quiet=1)
    times: dict[tuple[Path, str], list[float]] = {}
    for _ in range(args.rounds):
        for tree in trees:
            for name, command in COMMANDS.items():
                # ``-m`` from inside the tree: its segeval comes first on sys.path
                env = {**os.environ, "PYTHONPATH": str(tree)}
                start = time.perf_counter()
                done = subprocess.run([sys.executable, "-m", "segeval", *command], cwd=tree,
                                      env=env, capture_output=True)
                times.setdefault((tree, name), []).append(time.perf_counter() - start)
                if done.returncode != 0:
                    raise SystemExit(f"{tree}: {name} failed: {done.stderr.decode()[-300:]}")
    print(f"| command | {trees[0]} median (min) ms | {trees[1]} median (min) ms |")
    print("|---|---|---|")
    for name in COMMANDS:
        cells = [f"{statistics.median(times[(t, name)]) * 1000:.0f} "
                 f"({min(times[(t, name)]) * 1000:.0f})" for t in trees]
        print(f"| `{name}` | {cells[0]} | {cells[1]} |")


if __name__ == "__main__":
    main()
