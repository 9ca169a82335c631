"""A seeded, structure-aware mutator of mask files and a harness that judges segeval on them.

Used by ``tests/test_fuzz.py`` (a few hundred mutants, in the test budget) and by
``benchmarks/fuzz.py`` (thousands per format, for release checks; see docs/fuzz.md).

One *batch* is one ``segeval evaluate`` process over two folders: for every format, mutants
of a small valid file as predictions (against the unmutated file) and as references
(against the unmutated prediction).  Mutations: bit flips, byte writes, extreme integers
and floats over header fields, insertions, deletions, truncation; for text headers also
numbers replaced by extreme ones, lines duplicated, CR-only line endings, leading white
space, and data-file lines naming a decoy file outside the folder in several spellings.

The batch is judged by :func:`judge`:

* exit 0 or 3, a report, no case ``E_INTERNAL``, ``E_WORKER_CRASHED`` or ``E_TIMEOUT``;
* the decoy outside the folder never opened (inotify, any process);
* peak RSS of the run within a bound;
* **differential**: every case scored ``ok`` has the counts that the format's reference
  library (nibabel, SimpleITK, Pillow, ``numpy.load``), recounted with NumPy, gives.
"""

from __future__ import annotations

import gzip
import io
import json
import os
import random
import re
import resource
import shutil
import struct
import subprocess
import sys
import time
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from tests.corpus import DecoyWatch, itk_write, labels, nifti_bytes, npy_bytes, png_bytes

FORBIDDEN = {"E_INTERNAL", "E_WORKER_CRASHED", "E_TIMEOUT"}
RSS_LIMIT_KIB = 1536 * 1024  # the whole run's largest process, for files of a few KiB
SHAPE = (6, 5, 4)
NUMBERS = [b"0", b"-1", b"1", b"11", b"17", b"65536", b"99999999999", b"4294967297",
           b"2147483647", b"nan", b"inf", b"1e309", b"1e30", b"-0"]
EXTREMES = [0, 1, 2, 7, 127, 255, 2**15 - 1, 2**16 - 1, 2**31 - 1, 2**32 - 1, 2**63 - 1,
            2**64 - 1]
FLOATS = [0.0, -1.0, 1e-30, 1e30, 1.7e38, float("nan"), float("inf"), float("-inf")]
TEXT_FORMATS = (".nrrd", ".nhdr", ".mha", ".mhd")
FORMATS = (".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd", ".png", ".npy", ".npz", ".tif")


# --- bases: small valid files ----------------------------------------------------------------
def bases(folder: Path) -> dict[str, list[tuple[bytes, int]]]:
    """Per suffix, valid files and how many leading bytes are header."""
    volume = labels(60, SHAPE)
    nii = nifti_bytes(volume, np.diag([0.8, 0.9, 2.0, 1.0]), gz=False)
    found: dict[str, list[tuple[bytes, int]]] = {
        ".nii": [(nii, 352)], ".nii.gz": [(nii, 352)],
        ".png": [(png_bytes(labels(61, (9, 7))), 40)],
        ".npy": [(npy_bytes(volume.astype(np.int16)), 128), (npy_bytes(volume), 128)],
        # zip local header + name + .npy header lead; the central directory trails
        ".npz": [(npz_bytes(probabilities=volume), 200),
                 (npz_bytes(compressed=True, arr_0=volume.astype(np.int16)), 200)],
    }
    for suffix in (".nrrd", ".mha"):
        plain = itk_write(folder / f"base{suffix}", volume).read_bytes()
        packed = itk_write(folder / f"basez{suffix}", labels(63, (16, 12, 8)),
                           compress=True).read_bytes()
        found[suffix] = [(plain, len(plain) - volume.size),
                         (packed, packed.index(b"\n\n") if suffix == ".nrrd" else
                          packed.index(b"LOCAL\n") + 6)]
    found[".nhdr"] = [((b"NRRD0004\ntype: uint8\ndimension: 3\nsizes: 6 5 4\nencoding: raw\n"
                        b"space: left-posterior-superior\n"
                        b"space directions: (1,0,0) (0,1,0) (0,0,1)\n"
                        b"data file: DATA\n"), 10**6)]
    found[".mhd"] = [((b"ObjectType = Image\nNDims = 3\nDimSize = 6 5 4\n"
                       b"ElementSpacing = 1 1 2\nElementType = MET_UCHAR\n"
                       b"ElementDataFile = DATA\n"), 10**6)]
    import SimpleITK as sitk

    image = sitk.GetImageFromArray(labels(64, (9, 7)).T.copy())
    sitk.WriteImage(image, str(folder / "base.tif"))
    tif = (folder / "base.tif").read_bytes()
    found[".tif"] = [(tif, len(tif))]
    return found


def npz_bytes(compressed: bool = False, **arrays: np.ndarray) -> bytes:
    """A ``.npz`` file's bytes (``np.savez`` or ``np.savez_compressed``)."""
    buffer = io.BytesIO()
    (np.savez_compressed if compressed else np.savez)(buffer, **arrays)
    return buffer.getvalue()


# --- mutations -------------------------------------------------------------------------------
def mutate(rng: random.Random, base: bytes, header: int, suffix: str, decoy: Path) -> bytes:
    """One to four edits, mostly inside the header."""
    data = bytearray(base)
    for _ in range(rng.choice([1, 1, 1, 2, 2, 3, 4])):
        end = min(header, len(data)) if rng.random() < 0.8 else len(data)
        at = rng.randrange(max(1, end))
        kinds = ["flip", "byte", "int", "float", "insert", "delete", "truncate"]
        if suffix in TEXT_FORMATS:
            kinds += ["number"] * 3 + ["line"] * 2 + ["datafile"] * 2 + ["cr", "space"]
        kind = rng.choice(kinds)
        if kind == "flip" and data:
            data[min(at, len(data) - 1)] ^= 1 << rng.randrange(8)
        elif kind == "byte" and data:
            data[min(at, len(data) - 1)] = rng.randrange(256)
        elif kind == "int":
            width = rng.choice([1, 2, 4, 8])
            value = rng.choice(EXTREMES) % (1 << (8 * width))
            data[at:at + width] = value.to_bytes(width, rng.choice(["little", "big"]))
        elif kind == "float":
            data[at:at + 4] = struct.pack(rng.choice("<>") + "f", rng.choice(FLOATS))
        elif kind == "insert":
            data[at:at] = rng.randbytes(rng.randint(1, 16))
        elif kind == "delete":
            del data[at:at + rng.randint(1, 64)]
        elif kind == "truncate":
            del data[at:]
        elif kind == "number":
            numbers = list(re.finditer(rb"-?\d+(\.\d+)?", bytes(data[:header])))
            if numbers:
                match = rng.choice(numbers)
                data[match.start():match.end()] = rng.choice(NUMBERS)
        elif kind in ("line", "datafile", "cr", "space"):
            data = bytearray(_text_edit(rng, bytes(data), header, kind, suffix, decoy))
    return bytes(data)


def _text_edit(rng: random.Random, data: bytes, header: int, kind: str, suffix: str,
               decoy: Path) -> bytes:
    head, tail = data[:header], data[header:]
    lines = head.split(b"\n")
    if kind == "line" and len(lines) > 1:
        i = rng.randrange(len(lines) - 1)
        lines.insert(rng.randrange(len(lines)), lines[i])  # a duplicated field
    elif kind == "datafile":
        target = rng.choice([str(decoy), "../" + decoy.parent.name + "/" + decoy.name,
                             "LIST", "x%03d.raw 1 2 1", "/dev/zero"]).encode()
        key = rng.choice([b"data file: ", b"datafile: ", b"DATA FILE: ", b" data file: ",
                          b"ElementDataFile = ", b" ElementDataFile = ",
                          b"\tElementDataFile : ", b"# data file: "])
        lines.insert(rng.randrange(len(lines)), key + target)
        if target == b"LIST":
            lines.insert(rng.randrange(len(lines)), str(decoy).encode())
    elif kind == "cr":
        return head.replace(b"\n", b"\r") + tail
    elif kind == "space" and lines:
        i = rng.randrange(len(lines))
        lines[i] = rng.choice([b" ", b"\t", b"  "]) + lines[i]
    return b"\n".join(lines) + tail


# --- one batch -------------------------------------------------------------------------------
@dataclass
class Batch:
    root: Path
    pred: Path
    gt: Path
    decoy: Path
    cases: dict[str, str] = field(default_factory=dict)  # case id → suffix


def build_batch(root: Path, seed: int, per_format: int, formats: tuple[str, ...] = FORMATS
                ) -> Batch:
    """Folders with ``per_format`` mutated cases per format (about a quarter of them
    mutated references), and the decoy outside them."""
    rng = random.Random(seed)
    pred, gt, outside = root / "pred", root / "gt", root / "outside"
    for folder in (pred, gt, outside):
        folder.mkdir(parents=True, exist_ok=True)
    decoy = outside / "decoy.raw"
    decoy.write_bytes(labels(29, SHAPE).tobytes("F"))
    work = root / "bases"
    work.mkdir(exist_ok=True)
    valid = bases(work)
    batch = Batch(root, pred, gt, decoy)
    raw = labels(60, SHAPE).tobytes("F")
    for suffix in formats:
        for i in range(per_format):
            base, header = rng.choice(valid[suffix])
            case = f"{suffix.strip('.').replace('.', '_')}_{i:05d}"
            data_name = f"{case}.raw"
            if suffix in (".nhdr", ".mhd"):
                base = base.replace(b"DATA", data_name.encode())
                header = len(base)
            mutated = mutate(rng, base, header, suffix, decoy)
            if suffix == ".nii.gz":
                mutated = gzip.compress(mutated, mtime=0) if rng.random() < 0.7 else \
                    mutate(rng, gzip.compress(base, mtime=0), 10**6, suffix, decoy)
                base = gzip.compress(base, mtime=0)
            if suffix == ".png" and rng.random() < 0.5:
                mutated = png_crcs_fixed(mutated)
            as_reference = rng.random() < 0.25
            (gt if as_reference else pred).joinpath(case + suffix).write_bytes(mutated)
            (pred if as_reference else gt).joinpath(case + suffix).write_bytes(base)
            if suffix in (".nhdr", ".mhd"):
                for folder in (pred, gt):
                    folder.joinpath(data_name).write_bytes(raw)
            batch.cases[case] = suffix
    return batch


def png_crcs_fixed(data: bytes) -> bytes:
    """Recompute every chunk's CRC where the chunk lengths still add up."""
    fixed, at = bytearray(data[:8]), 8
    while at + 8 <= len(data):
        (length,) = struct.unpack(">I", data[at:at + 4])
        end = at + 8 + length
        if end + 4 > len(data):
            break
        fixed += data[at:end] + struct.pack(">I", zlib.crc32(data[at + 4:end]))
        at = end + 4
    return bytes(fixed + data[at:])


def run_batch(batch: Batch, timeout: float = 600, case_timeout: float = 20,
              workers: int = 2) -> dict:
    """segeval over the batch, watched; the raw outcome for :func:`judge`."""
    watch = DecoyWatch(batch.decoy)
    target = batch.root / "report.json"
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    started = time.monotonic()
    try:
        result = subprocess.run(
            [sys.executable, "-m", "segeval", "evaluate", str(batch.pred), str(batch.gt),
             "--json", str(target), "--workers", str(workers), "--case-timeout",
             str(case_timeout), "-q"], capture_output=True, text=True, timeout=timeout,
            env={**os.environ, "NO_COLOR": "1"}, preexec_fn=_no_core_files)
        code, stderr = result.returncode, result.stderr
    except subprocess.TimeoutExpired:
        code, stderr = "hang", ""
    seconds = time.monotonic() - started
    rss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    opened = watch.opened()
    watch.close()
    report = json.loads(target.read_text()) if target.exists() else None
    return {"code": code, "stderr": stderr, "report": report, "decoy_opened": opened,
            "peak_rss_kib": max(rss, before) if rss > before else rss, "seconds": seconds}


def _no_core_files() -> None:
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))


# --- judging ---------------------------------------------------------------------------------
def reference_reading(path: Path) -> np.ndarray:
    """The format's reference library reading, squeezed as segeval documents it, with
    segeval's documented rule for 2/4-bit grayscale PNG (stored values, not stretched)."""
    name = path.name.lower()
    if name.endswith((".nii", ".nii.gz")):
        import nibabel as nib

        array = np.asanyarray(nib.load(str(path)).dataobj)
    elif name.endswith(".npy"):
        array = np.load(path, allow_pickle=False)
    elif name.endswith(".npz"):
        with np.load(path, allow_pickle=False) as archive:  # segeval's member rule
            names = archive.files
            if "probabilities" in names:
                array = archive["probabilities"]
            elif len(names) == 1:
                array = archive[names[0]]
            else:
                raise ValueError(f"members {names}: none named probabilities")
    elif name.endswith(".png"):
        from PIL import Image

        with Image.open(path) as image:
            array = np.array(image)
        head = path.read_bytes()[:33]
        if head[25] == 0 and head[24] in (2, 4):
            array = array // (255 // (2 ** head[24] - 1))
    else:
        import SimpleITK as sitk

        array = sitk.GetArrayFromImage(sitk.ReadImage(str(path))).T
    while array.ndim > 3 and array.shape[-1] == 1:
        array = array.reshape(array.shape[:-1])
    return array


def as_labels(array: np.ndarray) -> np.ndarray:
    """Labels as segeval's documented rules make them: bools and whole floats are labels,
    other floats are probabilities thresholded at 0.5 (``p > 0.5``)."""
    if array.dtype == np.bool_:
        return array.astype(np.int64)
    if np.issubdtype(array.dtype, np.floating):
        if np.all(np.floor(array) == array):
            return array.astype(np.int64)
        return (array > 0.5).astype(np.int64)
    return array.astype(np.int64)


def judge(batch: Batch, outcome: dict) -> dict:
    """Counts per format and the list of findings (empty when segeval behaved)."""
    findings: list[str] = []
    if outcome["code"] not in (0, 3):
        findings.append(f"exit {outcome['code']}: {outcome['stderr'][-400:]}")
    if outcome["decoy_opened"]:
        findings.append("the decoy outside the folder was opened")
    if outcome["peak_rss_kib"] > RSS_LIMIT_KIB:
        findings.append(f"peak RSS {outcome['peak_rss_kib']} KiB")
    per_format: dict[str, dict[str, int]] = {}
    cases = {c["id"]: c for c in (outcome["report"] or {}).get("cases", [])}
    for case_id, suffix in batch.cases.items():
        tally = per_format.setdefault(suffix, {"cases": 0, "ok": 0, "error": 0})
        tally["cases"] += 1
        case = cases.get(case_id)
        if case is None:
            findings.append(f"{case_id}{suffix}: missing from the report")
            continue
        if case["status"] != "ok":
            tally["error"] += 1
            if case["error_code"] in FORBIDDEN:
                findings.append(f"{case_id}{suffix}: {case['error_code']}: {case['message']}")
            continue
        tally["ok"] += 1
        findings += differential(batch, case_id, suffix, case)
    return {"per_format": per_format, "findings": findings}


def differential(batch: Batch, case_id: str, suffix: str, case: dict) -> list[str]:
    """A case scored ok must have the counts of the reference libraries' readings."""
    try:
        prediction = as_labels(reference_reading(batch.pred / f"{case_id}{suffix}"))
        reference = as_labels(reference_reading(batch.gt / f"{case_id}{suffix}"))
    except Exception as exc:  # noqa: BLE001 - the library refuses what segeval scored
        return [f"{case_id}{suffix}: scored ok, but the reference library refuses it: "
                f"{type(exc).__name__}: {str(exc)[:200]}"]
    if prediction.shape != reference.shape:
        return [f"{case_id}{suffix}: scored ok, but the readings' shapes differ "
                f"{prediction.shape} vs {reference.shape}"]
    found = []
    for key, metrics in case["metrics"].items():
        label = int(key)
        p, g = prediction == label, reference == label
        want = {"tp": int((p & g).sum()), "fp": int((p & ~g).sum()),
                "fn": int((~p & g).sum())}
        got = {name: metrics.get(name) for name in want}
        if got != want:
            found.append(f"{case_id}{suffix}: label {label}: segeval {got}, "
                         f"reference libraries {want}")
    present = set(np.unique(prediction).tolist()) | set(np.unique(reference).tolist())
    missing = present - {0} - {int(k) for k in case["metrics"]}
    if missing:
        found.append(f"{case_id}{suffix}: labels {sorted(missing)[:5]} not counted")
    return found


def fuzz(root: Path, seed: int, per_format: int, formats: tuple[str, ...] = FORMATS,
         batch_size: int = 400, workers: int = 2) -> dict:
    """Batches of at most ``batch_size`` cases until ``per_format`` mutants per format
    were judged; a summary (counts, findings, peak RSS, seconds)."""
    totals: dict[str, dict[str, int]] = {}
    findings: list[str] = []
    peak, seconds, index = 0, 0.0, 0
    per_batch = max(1, batch_size // len(formats))
    done = 0
    while done < per_format:
        count = min(per_batch, per_format - done)
        folder = root / f"batch{index:04d}"
        batch = build_batch(folder, seed * 100_003 + index, count, formats)
        outcome = run_batch(batch, workers=workers)
        verdict = judge(batch, outcome)
        for suffix, tally in verdict["per_format"].items():
            total = totals.setdefault(suffix, {"cases": 0, "ok": 0, "error": 0})
            for name, value in tally.items():
                total[name] += value
        findings += verdict["findings"]
        peak, seconds = max(peak, outcome["peak_rss_kib"]), seconds + outcome["seconds"]
        if not verdict["findings"]:
            shutil.rmtree(folder, ignore_errors=True)  # keep only batches with findings
        done += count
        index += 1
    return {"seed": seed, "per_format": totals, "findings": findings,
            "peak_rss_kib": peak, "segeval_seconds": round(seconds, 1), "batches": index}
