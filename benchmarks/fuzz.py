"""Release fuzz run of the loaders (issue 13): thousands of mutants per format.

    python benchmarks/fuzz.py                        # 2,000 mutants per format, seed 1
    python benchmarks/fuzz.py --per-format 500 --seed 7 --out fuzz.json

Same mutator and judge as ``tests/test_fuzz.py`` (``tests/fuzzer.py``): one segeval process
per batch of about 400 cases, each judged for exit code, forbidden error codes
(E_INTERNAL, E_WORKER_CRASHED, E_TIMEOUT), the decoy file outside the folder, peak RSS and
the differential check against nibabel / SimpleITK / Pillow / numpy.load.  Batches with
findings are kept under ``--work`` for inspection.  Exit 1 when anything was found.
Results are quoted in docs/fuzz.md.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.fuzzer import FORMATS, fuzz  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--per-format", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--formats", default=",".join(FORMATS))
    parser.add_argument("--work", type=Path, default=None, help="where batches are built")
    parser.add_argument("--out", type=Path, default=None, help="write the summary as JSON")
    args = parser.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="segeval-fuzz-"))
    started = time.monotonic()
    summary = fuzz(work, args.seed, args.per_format, tuple(args.formats.split(",")),
                   workers=args.workers)
    summary["wall_seconds"] = round(time.monotonic() - started, 1)
    summary["command"] = " ".join(sys.argv)
    text = json.dumps(summary, indent=1)
    if args.out:
        args.out.write_text(text + "\n")
    print(text)
    return 1 if summary["findings"] else 0


if __name__ == "__main__":
    sys.exit(main())
