"""Bad and hostile input (issue 5): every broken file gives a clear one-line error and a
predictable exit code, never takes the other cases down, and never makes segeval read,
allocate or wait more than it should.

The files come from ``tests/corpus.py``, built at test time.  Most of the corpus is
evaluated in ONE folder run, so each bad case is also a test of isolation: the good cases
beside it must keep the numbers a plain NumPy count gives.  Archives are tested in
``test_archive.py``.
"""

from __future__ import annotations

import dataclasses
import gzip
import io
import json
import os
import re
import resource
import select
import signal
import struct
import subprocess
import sys
import time
import zlib
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image
from typer.testing import CliRunner

import segeval
import segeval.formats.png
import segeval.results
from segeval import errors
from segeval.commands.app import app
from segeval.errors import CaseError
from segeval.formats import Limits, Mask, load_mask
from segeval.run.supervise import Failure, SupervisedPool
from tests.corpus import (
    AFFINE,
    SHAPE,
    Bad,
    Corpus,
    build_corpus,
    gzip_bomb,
    itk_write,
    labels,
    metaimage_header,
    metaimage_with_negative_ndims,
    nifti_bytes,
    nifti_header_bytes,
    npy_bytes,
    nrrd_header,
    png_bytes,
)
from tests.fuzzer import png_crcs_fixed

REPO = Path(__file__).resolve().parents[1]
CLASSES = ("1", "2")  # the folder run uses --labels 1,2
runner = CliRunner(env={"NO_COLOR": "1", "COLUMNS": "200"})


# --- helpers ----------------------------------------------------------------------------------
def user_environment(**env: str) -> dict[str, str]:
    """The environment of a user's non-interactive run: no COLUMNS, no colour."""
    environment = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES")}
    return {**environment, "NO_COLOR": "1", **env}


def no_core_files() -> None:
    """In a child about to crash on purpose: leave no core file in the repository."""
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))


def segeval_process(*args: object, timeout: float = 120, **env: str
                    ) -> subprocess.CompletedProcess:
    """``python -m segeval ARGS`` as a user runs it: stderr not a terminal, no COLUMNS."""
    return subprocess.run([sys.executable, "-m", "segeval", *map(str, args)],
                          capture_output=True, text=True, cwd=REPO, timeout=timeout,
                          env=user_environment(**env), preexec_fn=no_core_files)


def invoke(*args: object):
    return runner.invoke(app, [str(a) for a in args])


def counts(prediction: np.ndarray, reference: np.ndarray, label: int) -> dict[str, int]:
    """The oracle: one class's confusion counts, straight from NumPy."""
    p, g = prediction == label, reference == label
    return {"tp": int((p & g).sum()), "fp": int((p & ~g).sum()),
            "fn": int((~p & g).sum()), "tn": int((~p & ~g).sum())}


def dice(count: dict[str, int]) -> float | None:
    denominator = 2 * count["tp"] + count["fp"] + count["fn"]
    return None if denominator == 0 else 2 * count["tp"] / denominator


def assert_dice(reported: float | None, count: dict[str, int]) -> None:
    expected = dice(count)
    assert reported == (None if expected is None else pytest.approx(expected, abs=1e-12))


def by_id(report: dict) -> dict[str, dict]:
    return {case["id"]: case for case in report["cases"]}


def problems_with_bad_case(case: dict, expected: Bad, files: tuple[Path, Path]) -> list[str]:
    """What is wrong with one bad case's entry in the report (empty when all is right)."""
    found = []
    message = case["message"] or ""
    if (case["status"], case["error_code"]) != ("error", expected.code):
        found.append(f"status {case['status']} / {case['error_code']}, expected {expected.code}")
    if case["scored"] or case["metrics"]:
        found.append("scored although invalid")
    named = files[0] if expected.names == "pred" else files[1]
    for word in (named.name, *expected.words):
        if word not in message:
            found.append(f"message lacks {word!r}")
    if "\n" in message or "Traceback" in message:
        found.append("message is not one line")
    return [f"{case['id']}: {problem} (message: {message!r})" for problem in found]


def assert_good_cases_exact(report: dict, corpus: Corpus) -> None:
    """Every good case, and the per-class pooled numbers over them, as NumPy counts them."""
    cases = by_id(report)
    assert [c["key"] for c in report["classes"]] == list(CLASSES)
    pooled = {key: {"tp": 0, "fp": 0, "fn": 0, "tn": 0} for key in CLASSES}
    for case_id, good in corpus.good.items():
        case = cases[case_id]
        assert (case["status"], case["error_code"], case["scored"]) == ("ok", None, True), case
        for key in CLASSES:
            want = counts(good.prediction, good.reference, int(key))
            got = case["metrics"][key]
            assert {c: got[c] for c in want} == want, (case_id, key)
            assert_dice(got["dice"], want)
            for name in want:
                pooled[key][name] += want[name]
    for key in CLASSES:
        got = report["per_class"][key]["pooled"]
        assert {c: got[c] for c in pooled[key]} == pooled[key], key
        assert_dice(got["dice"], pooled[key])
        assert report["per_class"][key]["n_cases"] == len(corpus.good)
    macro = np.mean([dice(pooled[key]) for key in CLASSES])
    assert report["summary"]["macro"]["dice"] == pytest.approx(macro, abs=1e-12)
    assert report["summary"]["n_scored"] == len(corpus.good)
    assert report["summary"]["n_invalid"] == len(corpus.bad)


# --- the corpus in one folder run -------------------------------------------------------------
@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Corpus:
    return build_corpus(tmp_path_factory.mktemp("corpus"))


@pytest.fixture(scope="module")
def corpus_runs(corpus) -> dict[str, tuple[subprocess.CompletedProcess, dict]]:
    """The folder run twice: default (``--on-error fail``, worker processes) and
    ``--on-error continue`` with one worker in-process."""
    runs = {}
    for name, extra in (("fail", ("--workers", "2")),
                        ("continue", ("--on-error", "continue", "--workers", "1"))):
        target = corpus.root / f"{name}.json"
        result = segeval_process("evaluate", corpus.pred, corpus.gt, "--labels", "1,2",
                                 "--unexpected-labels", "error", "--json", target, *extra)
        report = json.loads(target.read_text()) if target.exists() else {}
        runs[name] = (result, report)
    return runs


def test_corpus_every_bad_case_fails_alone_with_its_code_and_message(corpus, corpus_runs,
                                                                     validate):
    result, report = corpus_runs["fail"]
    assert result.returncode == 3, result.stderr
    validate(report)
    assert "Traceback" not in result.stderr
    cases = by_id(report)
    assert set(cases) == set(corpus.bad) | set(corpus.good)
    found = []
    for case_id, expected in sorted(corpus.bad.items()):
        found += problems_with_bad_case(cases[case_id], expected, corpus.files[case_id])
        if f"segeval: {case_id}: {expected.code}:" not in result.stderr:
            found.append(f"{case_id}: no '{expected.code}' line on stderr")
    assert not found, "\n".join(found)
    assert f"{len(corpus.bad)} case(s) had invalid input (exit 3)" in result.stderr


def test_corpus_good_cases_keep_their_numbers(corpus, corpus_runs):
    _, report = corpus_runs["fail"]
    assert_good_cases_exact(report, corpus)


def test_on_error_continue_exits_0_with_the_same_report(corpus, corpus_runs, validate):
    _, strict = corpus_runs["fail"]
    result, report = corpus_runs["continue"]
    assert result.returncode == 0, result.stderr
    validate(report)
    assert "Traceback" not in result.stderr
    assert "invalid input (exit 3)" not in result.stderr
    for key in ("cases", "classes", "per_class", "summary", "config"):
        assert report[key] == strict[key], key  # one worker in-process, or a pool: same
    assert report["run"]["workers"] == 1 and strict["run"]["workers"] > 1
    assert invoke("dice", corpus.pred, corpus.gt, "--on-error", "maybe").exit_code == 2


def test_pickles_in_the_corpus_were_never_executed(corpus, corpus_runs):
    assert corpus.unpickled_marker is not None and not corpus.unpickled_marker.exists()
    # the trap is real: NumPy with pickles allowed does run it
    np.load(corpus.files["pickled_npy"][0], allow_pickle=True)
    assert corpus.unpickled_marker.is_dir()
    corpus.unpickled_marker.rmdir()


def test_stderr_messages_are_one_line_each(corpus, corpus_runs):
    """README: "Errors are printed as one line on stderr".  Run as a user runs it (stderr
    not a terminal, no COLUMNS), each case's message must be one line, so that
    ``grep E_`` finds the whole of it."""
    result, report = corpus_runs["fail"]
    lines = result.stderr.splitlines()
    broken = []
    for case in report["cases"]:
        if case["error_code"] is None:
            continue
        whole = f"segeval: {case['id']}: {case['error_code']}: {case['message']}"
        if whole not in lines:
            broken.append(case["id"])
    assert not broken, f"messages broken over several lines on stderr: {broken}"


# --- geometry options ---------------------------------------------------------------------------
def _copy_cases(corpus: Corpus, ids: list[str], root: Path) -> tuple[Path, Path]:
    pred, gt = root / "pred", root / "gt"
    pred.mkdir()
    gt.mkdir()
    for case_id in ids:
        source_pred, source_gt = corpus.files[case_id]
        (pred / source_pred.name).write_bytes(source_pred.read_bytes())
        (gt / source_gt.name).write_bytes(source_gt.read_bytes())
    return pred, gt


@pytest.mark.parametrize("mode", ["shape", "off"])
def test_geometry_shape_evaluates_flipped_spacing_and_origin(corpus, tmp_path, mode):
    """With ``--geometry shape`` (or off) grids are compared voxel for voxel in index
    order: the flipped, stretched and shifted predictions are scored as their arrays say."""
    ids = ["flipped", "wrong_spacing", "shifted_origin", "good_nii"]
    pred, gt = _copy_cases(corpus, ids, tmp_path)
    result = invoke("evaluate", pred, gt, "--geometry", mode, "--json", "-", "-q")
    assert result.exit_code == 0, result.stderr
    cases = by_id(json.loads(result.stdout))
    for case_id in ids:
        written = {**corpus.arrays, **corpus.good}[case_id]
        assert cases[case_id]["status"] == "ok"
        for key in CLASSES:
            want = counts(written.prediction, written.reference, int(key))
            got = cases[case_id]["metrics"][key]
            assert {c: got[c] for c in want} == want
            assert_dice(got["dice"], want)
    # still refused by default, naming both orientations
    result = invoke("evaluate", pred, gt, "--json", "-", "-q")
    assert result.exit_code == 3
    assert "orientation LAS vs RAS" in by_id(json.loads(result.stdout))["flipped"]["message"]


def test_geometry_tol(tmp_path):
    pred, gt = tmp_path / "pred", tmp_path / "gt"
    pred.mkdir()
    gt.mkdir()
    nearly = AFFINE.copy()
    nearly[0, 0] *= 1.0005  # 0.05 % more spacing along x
    (pred / "a.nii.gz").write_bytes(nifti_bytes(labels(2), nearly))
    (gt / "a.nii.gz").write_bytes(nifti_bytes(labels(1)))
    assert invoke("dice", pred, gt, "-q").exit_code == 0  # default tolerance 1e-3
    result = invoke("dice", pred, gt, "-q", "--geometry-tol", "1e-5")
    assert result.exit_code == 3
    assert "E_GEOMETRY_MISMATCH" in result.stderr and "spacing (0.8004" in result.stderr
    assert "Traceback" not in result.stderr


def test_max_voxels_refuses_before_reading_and_spares_small_cases(corpus, tmp_path):
    pred, gt = _copy_cases(corpus, ["good_nii", "good_png"], tmp_path)
    result = invoke("evaluate", pred, gt, "--max-voxels", "100", "--json", "-", "-q")
    assert result.exit_code == 3
    cases = by_id(json.loads(result.stdout))
    assert cases["good_nii"]["error_code"] == errors.E_TOO_LARGE
    assert "1536 voxels, more than --max-voxels 100" in cases["good_nii"]["message"]
    assert cases["good_png"]["status"] == "ok"
    assert cases["good_png"]["metrics"]["1"]["tp"] == 3  # hand-counted in conftest


@pytest.mark.parametrize("holder", ["pred", "gt"])
def test_unexpected_label_names_the_file_that_holds_it(tmp_path, holder):
    """A label outside --labels found only in the reference must send the user to the
    reference, not to the prediction."""
    pred, gt = tmp_path / "pred", tmp_path / "gt"
    pred.mkdir()
    gt.mkdir()
    arrays = {"pred": labels(2), "gt": labels(1)}
    arrays[holder][0, 0, 5] = 7
    for folder in (pred, gt):
        (folder / "a.nii.gz").write_bytes(nifti_bytes(arrays[folder.name]))
    result = invoke("dice", pred, gt, "--labels", "1,2", "--unexpected-labels", "error",
                    "--json", "-", "-q")
    assert result.exit_code == 3
    (case,) = json.loads(result.stdout)["cases"]
    assert case["error_code"] == errors.E_UNEXPECTED_LABEL
    assert case["message"].startswith(str(tmp_path / holder / "a.nii.gz")), case["message"]


# --- bombs and memory ---------------------------------------------------------------------------
MEASURE_RSS = """
import json, resource, sys
from segeval.errors import CaseError
from segeval.formats import load_mask
import nibabel, numpy, PIL.Image, SimpleITK  # imported before the baseline is taken
from tests.test_hostile import peak_rss_kib, reset_peak_rss
before = reset_peak_rss()
try:
    mask = load_mask(sys.argv[1])
    outcome = {"code": None, "shape": list(mask.array.shape)}
except CaseError as error:
    outcome = {"code": error.code, "message": error.message}
print(json.dumps({**outcome, "before_kib": before, "peak_kib": peak_rss_kib(),
                  "ru_maxrss_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}))
"""


def _status_kib(field: str) -> int | None:
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def peak_rss_kib() -> int:
    """This process's peak resident memory, KiB: ``VmHWM`` where Linux has it.

    ``getrusage().ru_maxrss`` is not used when /proc can answer: for a process started by
    a large one (pytest with torch loaded) it still holds the parent's size from before
    ``exec``, which hides anything smaller."""
    peak = _status_kib("VmHWM")
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss if peak is None else peak


def reset_peak_rss() -> int:
    """Reset the peak to the current resident memory (Linux ``clear_refs``) so that a later
    :func:`peak_rss_kib` is the peak of what follows; returns the current size (KiB)."""
    try:
        with open("/proc/self/clear_refs", "w") as control:
            control.write("5")
    except OSError:
        pass  # the peak then includes what came before: a stricter test, never a looser one
    now = _status_kib("VmRSS")
    return peak_rss_kib() if now is None else now


RSS_ALLOWANCE_KIB = 64 * 1024  # a bomb may cost its compressed size and change, no more
BOMB_OFFSET_MIB = 256  # the vox_offset bomb: 100 MB of padding, then data, then more zeros


def load_in_fresh_process(path: Path) -> dict:
    """``load_mask(path)`` in a new interpreter: its outcome and peak resident memory."""
    result = subprocess.run([sys.executable, "-c", MEASURE_RSS, str(path)], cwd=REPO,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def bomb_prefix(*, offset: int | None = None, slope: float | None = None) -> bytes:
    """A NIfTI-1 header for SHAPE uint8 (1536 bytes of data), and those data."""
    header = nifti_header_bytes(SHAPE, offset=offset)
    if slope is not None:
        header = header[:112] + struct.pack("<ff", slope, 0.0) + header[120:]
    padding = b"" if offset is None else bytes(offset - len(header))
    return header + padding + labels(28).tobytes("F")


def test_gzip_bomb_is_refused_without_inflating_it(tmp_path, record_property):
    """A 1 MiB .nii.gz whose header announces 1536 bytes of data and whose stream inflates
    to 1 GiB more: refused, and the process never holds more than a few MiB extra."""
    path = tmp_path / "bomb.nii.gz"
    path.write_bytes(gzip_bomb(bomb_prefix()))
    assert path.stat().st_size < 2 << 20
    outcome = load_in_fresh_process(path)
    extra_kib = outcome["peak_kib"] - outcome["before_kib"]
    record_property("gzip_bomb_peak_rss_kib", outcome["peak_kib"])
    record_property("gzip_bomb_extra_rss_kib", extra_kib)
    print(f"gzip bomb: peak RSS {outcome['peak_kib']} KiB, {extra_kib} KiB above the "
          f"{outcome['before_kib']} KiB before loading (ru_maxrss {outcome['ru_maxrss_kib']})")
    assert outcome["code"] == errors.E_UNREADABLE
    assert "more than the 1536 bytes its header announces" in outcome["message"]
    assert extra_kib < RSS_ALLOWANCE_KIB


@pytest.mark.parametrize("variant", ["scaled", "second_gzip_member", "large_vox_offset"])
def test_gzip_bomb_variants_are_refused_within_bounded_memory(tmp_path, variant):
    """The same bomb behind the headers that leave segeval's fast NIfTI path: a scaled
    header, the data in one gzip member and the bomb in a second, or a ``vox_offset`` of
    100 MB in front of 1536 bytes of data.  Each must be refused (the stream holds far
    more than the header implies) without inflating the bomb."""
    path = tmp_path / f"{variant}.nii.gz"
    if variant == "scaled":
        path.write_bytes(gzip_bomb(bomb_prefix(slope=2.0)))
    elif variant == "second_gzip_member":
        first = zlib.compressobj(9, zlib.DEFLATED, 31)
        member = first.compress(bomb_prefix()) + first.flush()
        path.write_bytes(member + gzip_bomb(b""))
    else:
        header = nifti_header_bytes(SHAPE, offset=100_000_352)
        path.write_bytes(gzip_bomb(header, extra_mib=BOMB_OFFSET_MIB))
    outcome = load_in_fresh_process(path)
    extra_kib = outcome["peak_kib"] - outcome["before_kib"]
    assert extra_kib < RSS_ALLOWANCE_KIB, f"{variant}: {extra_kib} KiB for a 1536-voxel file"
    assert outcome["code"] is not None, f"{variant}: accepted as a {outcome['shape']} mask"



# --- paths that leave the folder (bugs: attached headers can be detached too) ---------------
@pytest.mark.parametrize("suffix,where", [(".nrrd", "parent"), (".nrrd", "absolute"),
                                          (".mha", "parent"), (".mha", "absolute")])
def test_attached_header_naming_a_data_file_outside_is_unsafe(tmp_path, suffix, where):
    """A ``.nrrd`` may carry a ``data file:`` line and a ``.mha`` an ``ElementDataFile``
    other than LOCAL: they are then detached headers under another name, and the rule for
    ``.nhdr``/``.mhd`` (a plain name in the same folder) must hold for them too."""
    pred, gt, outside = tmp_path / "pred", tmp_path / "gt", tmp_path / "outside"
    for folder in (pred, gt, outside):
        folder.mkdir()
    secret = outside / "secret.raw"
    secret.write_bytes(labels(29).tobytes("F"))
    name = "../outside/secret.raw" if where == "parent" else str(secret)
    header = nrrd_header(name) if suffix == ".nrrd" else metaimage_header(name)
    (pred / f"case{suffix}").write_text(header)
    itk_write(gt / f"case{suffix}", labels(1))
    result = invoke("dice", pred, gt, "--json", "-", "-q")
    (case,) = json.loads(result.stdout)["cases"]
    assert case["error_code"] == errors.E_UNSAFE_PATH, (
        f"{suffix} pointing at {name} was read: status {case['status']}, "
        f"labels {case['labels_found']}")
    assert result.exit_code == 3


# --- messages from SimpleITK and MetaIO ------------------------------------------------------
def test_itk_read_error_says_what_is_wrong(corpus):
    """The message of a truncated NRRD must name the problem, not only the C++ source line
    SimpleITK threw from (its first line)."""
    with pytest.raises(CaseError) as raised:
        load_mask(corpus.files["truncated_nrrd"][0])
    message = raised.value.message
    assert raised.value.code == errors.E_UNREADABLE
    assert ".cxx:" not in message and "SimpleITK-build" not in message, message
    assert "1536" in message, message  # ITK's reason: "fread got only 1236 ..., not 1536"


def test_metaimage_reader_noise_does_not_reach_stderr(tmp_path):
    """MetaIO writes its complaints straight to the C++ std::cerr; the user must see only
    segeval's one-line messages."""
    pred, gt = tmp_path / "pred", tmp_path / "gt"
    pred.mkdir()
    gt.mkdir()
    full = itk_write(gt / "cut.mha", labels(1)).read_bytes()
    (pred / "cut.mha").write_bytes(full[:-300])
    (pred / "magic.mha").write_bytes(b"ObjectType = Image\nNDims = 3\n" + b"\x01" * 64)
    (gt / "magic.mha").write_bytes(full)
    result = segeval_process("dice", pred, gt, "-q", COLUMNS="1000")
    assert result.returncode == 3
    assert "E_UNREADABLE" in result.stderr and "Traceback" not in result.stderr
    foreign = [line for line in result.stderr.splitlines()
               if line.strip() and not line.startswith("segeval:")]
    assert not foreign, foreign


# --- a header that kills or hangs SimpleITK ---------------------------------------------------
def _two_case_folders(root: Path, bad_mha: bytes) -> tuple[Path, Path]:
    """``good`` (NIfTI, scored) and ``bad`` (the given .mha against a valid one)."""
    pred, gt = root / "pred", root / "gt"
    pred.mkdir()
    gt.mkdir()
    (pred / "good.nii.gz").write_bytes(nifti_bytes(labels(2)))
    (gt / "good.nii.gz").write_bytes(nifti_bytes(labels(1)))
    (pred / "bad.mha").write_bytes(bad_mha)
    itk_write(gt / "bad.mha", labels(1, (6, 5, 4)))
    return pred, gt


def assert_small_run_survived(result: subprocess.CompletedProcess, target: Path,
                              codes: tuple[str, ...]) -> None:
    assert result.returncode == 3, f"exit {result.returncode}: {result.stderr[-500:]}"
    assert "Traceback" not in result.stderr
    cases = by_id(json.loads(target.read_text()))
    assert cases["bad"]["error_code"] in codes and "bad.mha" in cases["bad"]["message"]
    for key in CLASSES:
        want = counts(labels(2), labels(1), int(key))
        assert {c: cases["good"]["metrics"][key][c] for c in want} == want


@pytest.mark.parametrize("workers", ["1", "2"])
def test_segfaulting_header_in_a_small_run_is_contained(tmp_path, workers):
    """``NDims = -1`` in a .mha kills SimpleITK with SIGSEGV.  With fewer than 4 cases (or
    one worker) and no --case-timeout, segeval reads in its own process, so the whole run
    dies: no report, no message, exit -11.  The crash must stay the case's problem (or
    the pre-flight must refuse the header before SimpleITK sees it)."""
    pred, gt = _two_case_folders(tmp_path, metaimage_with_negative_ndims(spacing_line=True))
    target = tmp_path / "report.json"
    result = segeval_process("evaluate", pred, gt, "--labels", "1,2", "--workers", workers,
                             "--json", target, timeout=60)
    assert_small_run_survived(result, target, (errors.E_WORKER_CRASHED, errors.E_UNREADABLE,
                                               errors.E_BAD_DIMENSIONS))


def test_spinning_header_is_stopped_by_case_timeout(tmp_path):
    pred, gt = _two_case_folders(tmp_path, metaimage_with_negative_ndims(spacing_line=False))
    target = tmp_path / "report.json"
    started = time.monotonic()
    result = segeval_process("evaluate", pred, gt, "--labels", "1,2", "--case-timeout", "2",
                             "--json", target, timeout=60)
    assert time.monotonic() - started < 30
    assert_small_run_survived(result, target, (errors.E_TIMEOUT, errors.E_UNREADABLE,
                                               errors.E_BAD_DIMENSIONS))


def test_spinning_header_is_refused_by_the_preflight(tmp_path):
    """Without --case-timeout the same 200-byte file hangs segeval for ever, inside the
    pre-flight ("header read alone and checked: dimensions positive")."""
    pred, gt = _two_case_folders(tmp_path, metaimage_with_negative_ndims(spacing_line=False))
    target = tmp_path / "report.json"
    try:
        result = segeval_process("evaluate", pred, gt, "--labels", "1,2", "--json", target,
                                 timeout=15)
    except subprocess.TimeoutExpired:
        pytest.fail("segeval still reading a 200-byte .mha header after 15 s")
    assert_small_run_survived(result, target, (errors.E_UNREADABLE, errors.E_BAD_DIMENSIONS))


# --- worker containment ---------------------------------------------------------------------------
def _die_quietly(how: int) -> None:
    """Kill this (worker) process with a signal, without a core file or faulthandler dump."""
    import faulthandler

    faulthandler.disable()
    no_core_files()
    os.kill(os.getpid(), how)
    time.sleep(10)  # the signal is delivered before this returns


def hostile_task(item: object) -> object:
    """A module-level task for SupervisedPool: some items hang or kill their process."""
    if item == "sleep":
        time.sleep(30)
    elif item == "exit":
        os._exit(1)
    elif item == "segv":
        _die_quietly(signal.SIGSEGV)
    assert isinstance(item, int)
    return item * 10


def test_supervised_pool_contains_hangs_and_crashes():
    items = [1, "segv", 2, "sleep", 3, "exit", 4, 5]
    started = time.monotonic()
    with SupervisedPool(hostile_task, 2, timeout=1.0) as pool:
        results = list(pool.map(items))
    elapsed = time.monotonic() - started
    assert [r for r in results if not isinstance(r, Failure)] == [10, 20, 30, 40, 50]
    assert [results[i] for i in (0, 2, 4, 6, 7)] == [10, 20, 30, 40, 50]  # in order
    assert results[1] == Failure("crashed", "killed by signal SIGSEGV")
    assert results[3] == Failure("timeout", "no result after 1 s")
    assert results[5] == Failure("crashed", "exit code 1")
    assert elapsed < 10


def test_supervised_pool_groups_quick_tasks_and_still_names_the_crash():
    """Without a timeout quick tasks travel in groups; a crash inside a group sends its
    tasks again one by one, so that only the crashing ones fail, and each exactly."""
    items: list[object] = list(range(300))
    items[150], items[233] = "segv", "exit"
    with SupervisedPool(hostile_task, 2) as pool:
        results = list(pool.map(items))
    assert pool.messages < len(items) // 2  # grouped (plus the re-runs one by one)
    assert results[150] == Failure("crashed", "killed by signal SIGSEGV")
    assert results[233] == Failure("crashed", "exit code 1")
    assert [r for i, r in enumerate(results) if i not in (150, 233)] == [
        i * 10 for i in range(300) if i not in (150, 233)]


def test_supervised_pool_worker_killed_while_idle_blames_no_task():
    """A worker killed from outside while it has nothing to do (OOM killer, kill) is
    replaced and the task it was about to get runs on the next one; nothing is reported
    as crashed."""
    with SupervisedPool(hostile_task, 1) as pool:
        pool.workers[0].process.kill()  # idle: nothing sent yet
        pool.workers[0].process.join()
        results = list(pool.map(list(range(4))))
    assert results == [0, 10, 20, 30] and pool.idle_deaths == 1


def test_supervised_pool_workers_that_never_start_end_the_run(monkeypatch):
    """Workers that die as they start: the tasks are blamed (at the latest after a few
    replacements of workers found dead), so the run ends instead of starting workers for
    ever."""
    import segeval.run.supervise

    monkeypatch.setattr(segeval.run.supervise, "_serve", _exit_at_once)
    with SupervisedPool(hostile_task, 2) as pool:
        results = list(pool.map([1, 2, 3]))
    assert results == [Failure("crashed", "exit code 3")] * 3
    assert pool.idle_deaths <= SupervisedPool.MAX_IDLE_DEATHS


def _exit_at_once(function: object, connection: object) -> None:
    os._exit(3)


def test_supervised_pool_groups_under_a_timeout_and_still_names_the_hang():
    """With a timeout quick tasks still travel in groups (the deadline of a group is one
    task's); a group that passes it runs again task by task, so only the hanging task
    times out, once, and every other result arrives."""
    items: list[object] = list(range(200))
    items[120] = "sleep"
    started = time.monotonic()
    with SupervisedPool(hostile_task, 2, timeout=1.0) as pool:
        results = list(pool.map(items))
    assert pool.messages < len(items) // 2  # grouped (plus the re-runs one by one)
    assert results[120] == Failure("timeout", "no result after 1 s")
    assert [r for i, r in enumerate(results) if i != 120] == [
        i * 10 for i in range(200) if i != 120]
    assert time.monotonic() - started < 10


@pytest.fixture
def hostile_png_reader(monkeypatch, tmp_path):
    """Folders of PNG cases where reading ``crash.png`` kills the worker with SIGSEGV and
    reading ``hang.png`` sleeps 30 s.  The patch is made before the pool forks, so the
    workers inherit it; in the parent process it would be a bug, and says so."""
    parent = os.getpid()
    read = segeval.formats.png.read

    def reading(path: Path) -> Mask:
        if path.name in ("crash.png", "hang.png") and "pred" in path.parts:
            if os.getpid() == parent:
                raise AssertionError("a case ran in the parent process")
            if path.name == "crash.png":
                _die_quietly(signal.SIGSEGV)
            time.sleep(30)
        return read(path)

    monkeypatch.setitem(segeval.formats.BY_SUFFIX, ".png",
                        dataclasses.replace(segeval.formats.png.FORMAT, read=reading))
    pred, gt = tmp_path / "pred", tmp_path / "gt"
    pred.mkdir()
    gt.mkdir()
    arrays = {name: (labels(40 + i, (6, 7)), labels(50 + i, (6, 7)))
              for i, name in enumerate(["a", "crash", "b", "hang", "c", "d"])}
    for name, (prediction, reference) in arrays.items():
        (pred / f"{name}.png").write_bytes(png_bytes(prediction))
        (gt / f"{name}.png").write_bytes(png_bytes(reference))
    return pred, gt, arrays


def assert_contained(report: dict, arrays: dict) -> None:
    cases = by_id(report)
    assert list(cases) == sorted(arrays)
    crash, hang = cases["crash"], cases["hang"]
    assert crash["error_code"] == errors.E_WORKER_CRASHED
    assert "crash.png" in crash["message"] and "SIGSEGV" in crash["message"]
    assert hang["error_code"] == errors.E_TIMEOUT
    assert "hang.png" in hang["message"] and "--case-timeout" in hang["message"]
    for name in ("a", "b", "c", "d"):
        assert cases[name]["status"] == "ok"
        for key in CLASSES:
            want = counts(*arrays[name], int(key))
            got = cases[name]["metrics"][key]
            assert {c: got[c] for c in want} == want
            assert_dice(got["dice"], want)


def test_evaluate_survives_a_segfault_and_a_hang(hostile_png_reader, validate):
    pred, gt, arrays = hostile_png_reader
    started = time.monotonic()
    report = segeval.evaluate(str(pred), str(gt), workers=2, case_timeout=1,
                              labels=[1, 2]).to_dict()
    assert time.monotonic() - started < 10
    validate(report)
    assert_contained(report, arrays)
    assert report["summary"]["n_invalid"] == 2 and report["summary"]["n_scored"] == 4


def test_cli_survives_a_segfault_and_a_hang_with_one_worker(hostile_png_reader):
    pred, gt, arrays = hostile_png_reader
    started = time.monotonic()
    result = invoke("evaluate", pred, gt, "--labels", "1,2", "--workers", "1",
                    "--case-timeout", "1", "--json", "-", "-q")
    assert time.monotonic() - started < 10
    assert result.exit_code == 3
    assert "Traceback" not in result.stderr
    assert "E_WORKER_CRASHED" in result.stderr and "E_TIMEOUT" in result.stderr
    assert_contained(json.loads(result.stdout), arrays)


# --- interrupted runs ---------------------------------------------------------------------------
def _reading_case(pid: int, folders: set[Path]) -> int | None:
    """The highest case number of a file that process ``pid`` has open in ``folders``."""
    found = None
    try:
        descriptors = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return None
    for descriptor in descriptors:
        try:
            target = Path(os.readlink(f"/proc/{pid}/fd/{descriptor}"))
        except OSError:
            continue
        match = re.fullmatch(r"c(\d+)\.png", target.name)
        if match and target.parent in folders:
            found = max(found or 0, int(match.group(1)))
    return found


def _children(pid: int) -> list[int]:
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return []
    return [int(child) for child in text.split()]


def palette_png(array: np.ndarray) -> bytes:
    """A mode-P PNG whose palette indices are ``array``'s labels."""
    image = Image.fromarray(array.astype(np.uint8))
    image.putpalette([0, 0, 0, 255, 255, 255])
    assert image.mode == "P"
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="needs Linux /proc")
def test_ctrl_c_mid_run_exits_130_with_a_complete_report(tmp_path, validate):
    """SIGINT while the third or a later case is being read: exit 130, and a valid report
    whose finished cases are scored and the rest E_INTERRUPTED.  The cases are large
    images (16 Mpixel, 16 KiB on disk) so that each takes a visible while; the test
    watches which file the process has open (``/proc/PID/fd``) to know how far it got.
    They are palette PNGs: Pillow decodes those, keeping the file open while it inflates
    (the libpng fast path for grayscale reads the file into memory first and closes it).

    Seeing the worker on case k says cases < k were counted, not that the parent has
    received their results (up to two tasks are in flight per worker): so the signal goes
    when case 3 is being read, and at least one finished case is asserted (it failed one
    run in six when it went at case 2 and asserted two)."""
    pred, gt = tmp_path / "pred", tmp_path / "gt"
    pred.mkdir()
    gt.mkdir()
    reference = np.zeros((4000, 4000), np.uint8)
    reference[100:200, 100:200] = 1
    prediction = np.roll(reference, 10, axis=0)  # TP 9000, FP 1000, FN 1000: Dice 0.9
    reference_png, prediction_png = palette_png(reference), palette_png(prediction)
    n_cases = 30
    for i in range(n_cases):
        (gt / f"c{i:02d}.png").write_bytes(reference_png)
        (pred / f"c{i:02d}.png").write_bytes(prediction_png)
    target = tmp_path / "out.json"
    process = subprocess.Popen(
        [sys.executable, "-m", "segeval", "evaluate", str(pred), str(gt), "--json",
         str(target), "--workers", "1"], cwd=REPO, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True, env=user_environment())
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and process.poll() is None:
            # files are read in a supervised worker process: watch the children too
            readings = [_reading_case(pid, {pred.resolve(), gt.resolve()})
                        for pid in [process.pid, *_children(process.pid)]]
            reading = max((r for r in readings if r is not None), default=None)
            if reading is not None and reading >= 3:
                break
            time.sleep(0.002)
        assert process.poll() is None, "the run ended before it could be interrupted"
        process.send_signal(signal.SIGINT)
        _, stderr = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 130, stderr
    assert "Traceback" not in stderr
    assert re.search(rf"interrupted after \d+ of {n_cases} cases", stderr), stderr
    assert not list(tmp_path.glob(".out.json.*"))  # no temporary file left behind
    # cases were finished, so the report must be there (README: "a report is written
    # whenever any case was evaluated"), complete and valid
    report = validate(target.read_text())
    statuses = [(case["status"], case["error_code"]) for case in report["cases"]]
    done = statuses.count(("ok", None))
    assert done >= 1 and statuses == [("ok", None)] * done + [
        ("error", errors.E_INTERRUPTED)] * (n_cases - done)
    assert report["run"]["interrupted"] is True
    for case in report["cases"][:done]:
        assert case["metrics"]["1"]["tp"] == 9000 and case["metrics"]["1"]["dice"] == 0.9
    assert report["per_class"]["1"]["pooled"]["tp"] == 9000 * done


def test_ctrl_c_while_writing_leaves_the_old_report_whole(corpus, tmp_path, monkeypatch,
                                                          validate):
    pred, gt = _copy_cases(corpus, ["good_nii", "good_png"], tmp_path)
    target = tmp_path / "report.json"
    target.write_text('{"old": true}\n')

    def interrupted(source: object, destination: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(segeval.results.os, "replace", interrupted)
    result = invoke("dice", pred, gt, "--json", target, "-q")
    monkeypatch.undo()
    assert result.exit_code == 130
    assert "Traceback" not in result.stderr
    assert target.read_text() == '{"old": true}\n'
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".report")] == []


# --- fuzzing the loaders ------------------------------------------------------------------
FUZZ_LIMITS = Limits(max_voxels=10**7)
FUZZ_RSS_KIB = 512 * 1024  # 10^7 voxels as float64 (80 MB) and a copy or two, with room
EXTREMES = [0, 1, 2, 7, -1, 127, 255, 2**15 - 1, -(2**15), 2**16 - 1, 2**31 - 1, -(2**31),
            2**32 - 1, 2**63 - 1]
FLOAT_EXTREMES = [0.0, -1.0, 1e-30, 1e38, float("nan"), float("inf"), float("-inf")]


def fuzz_bases() -> dict[str, tuple[bytes, int]]:
    """Small valid files per suffix, and how many leading bytes are header."""
    volume = labels(60, (6, 5, 4))
    nii = nifti_bytes(volume, gz=False)
    return {
        ".nii.gz": (nii, 352),  # mutated before or after compression
        ".nii": (nii, 352),
        ".png": (png_bytes(labels(61, (9, 7))), 33),
        ".npy": (npy_bytes(volume.astype(np.int16)), 128),
    }


def text_bases(folder: Path) -> dict[str, tuple[bytes, int]]:
    bases = {}
    for suffix in (".nrrd", ".mha"):
        data = itk_write(folder / f"base{suffix}", labels(62, (6, 5, 4))).read_bytes()
        bases[suffix] = (data, len(data) - 120)
    return bases


@st.composite
def mutations(draw, base: bytes, header: int) -> bytes:
    """Up to four edits, mostly inside the header: flipped bits, bytes, extreme integers
    and floats written over fields, inserted and deleted runs, truncation, and (for text
    headers) numbers replaced by extreme ones."""
    data = bytearray(base)
    for _ in range(draw(st.integers(1, 4))):
        end = min(header, len(data)) if draw(st.integers(0, 4)) else len(data)
        at = draw(st.integers(0, max(0, end - 1)))
        kind = draw(st.sampled_from(["flip", "byte", "int", "float", "insert", "delete",
                                     "truncate", "number"]))
        if kind == "flip" and data:
            data[at] ^= 1 << draw(st.integers(0, 7))
        elif kind == "byte" and data:
            data[at] = draw(st.integers(0, 255))
        elif kind == "int":
            width = draw(st.sampled_from([2, 4, 8]))
            value = draw(st.sampled_from(EXTREMES)) % (1 << (8 * width))
            data[at:at + width] = value.to_bytes(width, draw(st.sampled_from(["little",
                                                                              "big"])))
        elif kind == "float":
            data[at:at + 4] = struct.pack("<f", draw(st.sampled_from(FLOAT_EXTREMES)))
        elif kind == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=16))
        elif kind == "delete":
            del data[at:at + draw(st.integers(1, 64))]
        elif kind == "truncate":
            del data[at:]
        elif kind == "number":
            numbers = list(re.finditer(rb"\d+", bytes(data[:header])))
            if numbers:
                match = numbers[draw(st.integers(0, len(numbers) - 1))]
                value = draw(st.sampled_from([b"0", b"-1", b"99999999999", b"4294967297",
                                              b"nan", b"1e309", b"65536"]))
                data[match.start():match.end()] = value
    return bytes(data)


def run_forked(function, timeout: float = 20.0) -> dict:
    """``function()`` in a forked child: its JSON result, or how the child failed
    (``hang``: still running after ``timeout``; ``crashed``: killed by a signal)."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: never return into pytest
        try:
            os.close(read_end)
            no_core_files()
            text = json.dumps(function())
        except BaseException as exc:  # noqa: BLE001 - reported to the parent
            text = json.dumps({"outcome": "exception", "type": type(exc).__name__,
                               "text": str(exc)[:300]})
        os.write(write_end, text.encode()[:60000])
        os._exit(0)
    os.close(write_end)
    try:
        ready, _, _ = select.select([read_end], [], [], timeout)
        if not ready:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            return {"outcome": "hang"}
        chunks = []
        while chunk := os.read(read_end, 65536):
            chunks.append(chunk)
    finally:
        os.close(read_end)
    _, status = os.waitpid(pid, 0)
    if os.WIFSIGNALED(status):
        return {"outcome": "crashed", "signal": signal.Signals(os.WTERMSIG(status)).name}
    return json.loads(b"".join(chunks))


def load_and_describe(path: Path) -> dict:
    """In the child: load, and say what came out and how much memory it took."""
    before = reset_peak_rss()
    try:
        mask = load_mask(path, limits=FUZZ_LIMITS)
        outcome = {"outcome": "mask", "shape": list(mask.array.shape),
                   "size": int(mask.array.size)}
    except CaseError as error:
        outcome = {"outcome": "case_error", "code": error.code, "message": error.message}
    outcome["extra_kib"] = peak_rss_kib() - before
    return outcome


@pytest.fixture(scope="module")
def fuzz_folder(tmp_path_factory) -> tuple[Path, dict[str, tuple[bytes, int]]]:
    folder = tmp_path_factory.mktemp("fuzz")
    return folder, {**fuzz_bases(), **text_bases(folder)}


def check_fuzzed_file(path: Path) -> None:
    outcome = run_forked(lambda: load_and_describe(path))
    assert outcome["outcome"] in ("mask", "case_error"), outcome
    assert outcome["extra_kib"] < FUZZ_RSS_KIB, outcome
    if outcome["outcome"] == "mask":
        assert len(outcome["shape"]) in (2, 3) and outcome["size"] <= FUZZ_LIMITS.max_voxels
    else:
        message = outcome["message"]
        assert "\n" not in message and str(path) in message, outcome
        assert "not enough memory" not in message, outcome  # bounded by design, not luck


@pytest.mark.parametrize("suffix", [".nii.gz", ".nii", ".png", ".npy", ".nrrd", ".mha"])
@settings(max_examples=25, deadline=None, database=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_fuzzed_files_load_or_raise_case_error(fuzz_folder, suffix, data):
    folder, bases = fuzz_folder
    base, header = bases[suffix]
    if suffix == ".nii.gz" and data.draw(st.booleans(), label="mutate the gzip stream"):
        compressed = gzip.compress(base, mtime=0)
        mutated = data.draw(mutations(compressed, len(compressed)))
    elif suffix == ".nii.gz":  # mutate the NIfTI, then compress it as a writer would
        mutated = gzip.compress(data.draw(mutations(base, header)), mtime=0)
    else:
        mutated = data.draw(mutations(base, header))
    if suffix == ".png" and data.draw(st.booleans()):
        mutated = png_crcs_fixed(mutated)  # reach the decoder, past the CRC checks
    path = folder / f"fuzzed{suffix}"
    path.write_bytes(mutated)
    check_fuzzed_file(path)


def test_fuzz_harness_sees_crashes_and_hangs():
    """The harness itself: a crash and a hang are reported, not survived by accident."""
    assert run_forked(lambda: _die_quietly(signal.SIGSEGV))["outcome"] == "crashed"
    assert run_forked(lambda: time.sleep(5), timeout=0.5)["outcome"] == "hang"
    assert run_forked(lambda: {"outcome": "mask"}) == {"outcome": "mask"}
