"""Running the cases: one after another, in a process pool, or with loader threads
feeding a GPU.

Each case is a pure function of its paths and the config (``evaluate_case``), so the way
cases are scheduled never changes a number: results come back in case order and are
identical for any worker count.  On the CPU, ``workers`` processes each load and count
whole cases (decoding dominates, and it holds the GIL in parts of the readers).  On a torch
device, ``workers`` threads load and decode ahead while the main thread counts on the GPU.
At most ``2 × workers`` cases are in flight, which bounds memory.
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Executor, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from segeval import errors
from segeval.config import EvalConfig
from segeval.engines import Backend, get_backend
from segeval.engines.interpret import count_case
from segeval.engines.numpy_backend import NumpyBackend
from segeval.errors import CaseError, UsageError
from segeval.formats import Header, Limits, open_header, read_mask
from segeval.formats.geometry import check_geometry
from segeval.results import CaseResult
from segeval.run.cases import CaseSource
from segeval.run.supervise import Failure, SupervisedPool

Progress = Callable[[int, int, str], None]
T = TypeVar("T")
R = TypeVar("R")
MIN_CASES_FOR_POOL = 4  # below this, starting more workers costs more than it saves
DASK_CONNECT_TIMEOUT = 30  # seconds to reach a --scheduler


def default_workers() -> int:
    """Usable cores (respecting CPU affinity), at most 8."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 1
    return max(1, min(cores, 8))


@dataclass
class LoadedCase:
    result: CaseResult
    prediction: Any = None
    reference: Any = None
    prediction_failed: bool = False  # with --invalid empty: score an empty prediction


# Errors that are not the prediction's fault: scoring an empty prediction cannot help.
NOT_THE_PREDICTION = {errors.E_INTERNAL, errors.E_INTERRUPTED}
# a case whose worker timed out or died: it is evaluated again alone, and with
# --invalid empty scored as an empty prediction (see score_failures_as_empty)
WORKER_FAILURES = {errors.E_TIMEOUT, errors.E_WORKER_CRASHED}


DEFAULT_TIMEOUT_BASE = 120.0  # seconds any case may take, however small its files
DEFAULT_TIMEOUT_PER_MIB = 10.0  # and this much more per MiB of its largest case's files


def default_case_timeout(cases: list[CaseSource]) -> float:
    """The ``--case-timeout`` used when none is given (files on the CPU): 120 s plus 10 s per
    MiB of the largest case's two files on disk.  Generous by design: it exists to end
    hangs (a hostile header that makes a decoder spin), not to judge speed.  Measured
    (docs/fuzz.md): a 512x512x400 label volume loads in under 1 s from 3-4 MiB of
    .nii.gz, .nrrd or .mha; the worst honest case, a highly compressible volume, inflates
    at well over 50 MB/s, so 2**31 voxels need under a minute."""
    largest = 0
    for case in cases:
        size = 0
        for path in (case.reference, case.prediction):
            try:
                size += os.stat(path).st_size if isinstance(path, (str, os.PathLike)) else 0
            except OSError:
                pass
        largest = max(largest, size)
    return round(DEFAULT_TIMEOUT_BASE + DEFAULT_TIMEOUT_PER_MIB * largest / 2**20, 1)


def run_cases(cases: list[CaseSource], config: EvalConfig, device: str, from_files: bool,
              workers: int, progress: Progress | None = None,
              case_timeout: float | None = None, cache: Any = None,
              scheduler: str | None = None) -> list[CaseResult]:
    """Evaluate every case, taking what ``cache`` (a :class:`segeval.run.cache.CountCache`)
    already holds; see :func:`evaluate_cases` for the rest (or :func:`evaluate_on_dask`
    with a ``scheduler`` address)."""
    def compute(subset: list[CaseSource], report: Progress | None) -> list[CaseResult]:
        if scheduler is not None:  # a case whose cluster worker died: scored here as empty
            return score_failures_as_empty(
                subset, evaluate_on_dask(subset, config, from_files, scheduler, report),
                config, workers, case_timeout)
        return evaluate_cases(subset, config, device, from_files, workers, report,
                              case_timeout)

    if cache is None:
        return compute(cases, progress)
    keys = [cache.key(case) for case in cases]
    cached = [cache.get(key, case) for key, case in zip(keys, cases, strict=True)]
    todo = [i for i, result in enumerate(cached) if result is None]
    hits = len(cases) - len(todo)

    def fresh_progress(done: int, total: int, case_id: str) -> None:
        if progress is not None:
            progress(hits + done, len(cases), case_id)

    fresh = iter(compute([cases[i] for i in todo], fresh_progress))
    results = []
    for index, result in enumerate(cached):
        if result is None:
            result = next(fresh)
            cache.put(keys[index], result)
        results.append(result)
    return results


def evaluate_cases(cases: list[CaseSource], config: EvalConfig, device: str, from_files: bool,
                   workers: int, progress: Progress | None = None,
                   case_timeout: float | None = None) -> list[CaseResult]:
    """Evaluate every case; the list is in the order of ``cases``.

    On the CPU, files are always read in supervised worker processes (one for a small run,
    ``workers`` for four cases or more): a case that runs past ``case_timeout`` or kills its
    process is recorded (``E_TIMEOUT``, ``E_WORKER_CRASHED``) and the run goes on.  Ctrl-C
    stops the run; finished cases are kept and the rest are recorded as ``E_INTERRUPTED``.
    """
    pooled = from_files and workers > 1 and len(cases) >= MIN_CASES_FOR_POOL
    if device == "cpu":
        if from_files:  # even one case: a decoder crash must not take the run down
            job = _CaseJob(config, from_files)
            processes = min(workers, len(cases)) if pooled else 1
            with SupervisedPool(job, processes, case_timeout) as pool:
                outcomes = pool.map(cases)
                named = (_from_failure(case, outcome)
                         for case, outcome in zip(cases, outcomes, strict=True))
                results = _collect(named, cases, progress)
            return score_failures_as_empty(cases, results, config, processes, case_timeout)
        return _collect((evaluate_case(c, config, NumpyBackend(), from_files) for c in cases),
                        cases, progress)
    backend = get_backend(device)

    def load(case: CaseSource) -> LoadedCase:
        return load_case(case, config, from_files)

    if pooled:
        with ThreadPoolExecutor(workers) as threads:
            loaded: Iterable[LoadedCase] = _bounded_map(threads, load, cases, 2 * workers)
            return _collect((count_loaded(x, config, backend) for x in loaded), cases, progress)
    return _collect((count_loaded(load(c), config, backend) for c in cases), cases, progress)


def evaluate_on_dask(cases: list[CaseSource], config: EvalConfig, from_files: bool,
                     scheduler: str, progress: Progress | None = None) -> list[CaseResult]:
    """Send each case to an existing Dask distributed cluster (``segeval[dask]``).

    The per-case work is the same pure function as locally (paths and config in, counts
    out), and counts add, so the report is identical to a local run.  The workers must see
    the same paths (a shared file system).  A worker that dies repeatedly on a case makes
    it ``E_WORKER_CRASHED``; ``--case-timeout`` is not applied on a cluster.
    """
    with check_scheduler(scheduler, keep=True) as client:
        futures = client.map(_CaseJob(config, from_files), cases, pure=False)
        results = []
        try:
            for done, (case, future) in enumerate(zip(cases, futures, strict=True), start=1):
                try:
                    result = future.result()
                except Exception as exc:  # KilledWorker and friends: this case's failure
                    result = _from_failure(case, Failure("crashed", type(exc).__name__))
                results.append(result)
                if progress is not None:
                    progress(done, len(cases), case.id)
        except KeyboardInterrupt:
            client.cancel(futures)
            results += [_interrupted(case) for case in cases[len(results):]]
        return results


def score_failures_as_empty(cases: list[CaseSource], results: list[CaseResult],
                            config: EvalConfig, workers: int,
                            case_timeout: float | None) -> list[CaseResult]:
    """With ``--invalid empty``, a file case whose worker timed out or died keeps its error
    code and is *also* scored as an empty prediction (its reference read again, alone, in a
    supervised worker): a prediction that hangs or crashes the decoder must not be worth more
    than no prediction (grading).  If the reference alone fails too, the case stays as it
    was.  Other runs: ``results`` unchanged."""
    todo = [i for i, r in enumerate(results) if r.error_code in WORKER_FAILURES
            and r.counts is None and cases[i].prediction is not None]
    if config.invalid != "empty" or not todo:
        return results
    job = _CaseJob(dataclasses.replace(config, missing="empty"), True)
    alone = [dataclasses.replace(cases[i], prediction=None) for i in todo]
    results = list(results)
    handled = 0
    try:
        with SupervisedPool(job, max(1, min(workers, len(alone))), case_timeout) as pool:
            for i, outcome in zip(todo, pool.map(alone), strict=True):
                handled += 1
                if isinstance(outcome, Failure) or outcome.counts is None:
                    continue
                outcome.status, outcome.error_code = "error", results[i].error_code
                outcome.message = f"{results[i].message}; scored as an empty prediction " \
                    "(--invalid empty)"
                results[i] = outcome
    except KeyboardInterrupt:  # the cases not scored yet must not count as failures
        for i in todo[handled:]:
            results[i] = _interrupted(cases[i])
    return results


def check_scheduler(scheduler: str, keep: bool = False) -> Any:
    """A Dask ``Client`` connected to ``scheduler`` (closed again unless ``keep``); a
    :class:`UsageError` when Dask is missing or the scheduler cannot be reached."""
    try:
        from distributed import Client
    except ImportError:
        raise UsageError("E_USAGE", "--scheduler needs Dask distributed",
                         hint="pip install 'segeval[dask]'") from None
    try:
        client = Client(scheduler, timeout=DASK_CONNECT_TIMEOUT)
    except (OSError, TimeoutError) as exc:
        raise UsageError("E_USAGE", f"--scheduler {scheduler}: cannot connect ({exc})") from None
    if not keep:
        client.close()
    return client


def _from_failure(case: CaseSource, outcome: CaseResult | Failure) -> CaseResult:
    if not isinstance(outcome, Failure):
        return outcome
    result = CaseResult(case.id, case.prediction_name, case.reference_name, status="error")
    files = f"{case.prediction_name} / {case.reference_name}"
    if outcome.kind == "timeout":
        result.error_code = errors.E_TIMEOUT
        result.message = f"{files}: {outcome.detail} (--case-timeout); the worker was stopped"
    else:
        result.error_code = errors.E_WORKER_CRASHED
        result.message = (f"{files}: the process evaluating this case died ({outcome.detail}), "
                          "probably in a decoder; the file is likely corrupt or hostile")
    return result


def evaluate_case(source: CaseSource, config: EvalConfig, backend: Backend,
                  from_files: bool) -> CaseResult:
    """Load, interpret and count one case; every failure becomes the case's status."""
    return count_loaded(load_case(source, config, from_files), config, backend)


def load_case(source: CaseSource, config: EvalConfig, from_files: bool,
              references: dict[Any, Any] | None = None) -> LoadedCase:
    """Pre-flight both files (headers, shapes, geometry) before decoding either.

    With ``config.invalid == "empty"`` a prediction that fails pre-flight or decoding leaves
    the case in error *and* scored as an empty prediction (grading: a broken file must not
    be worth more than no file).  ``references`` (a dict kept across the calls of one group of
    cases sharing a reference file) holds the reference's header and decoded array once read,
    so that grading many teams decodes each reference once (a reference that fails is read,
    and fails, again for each case: nothing is kept from it).
    """
    result = CaseResult(source.id, source.prediction_name, source.reference_name)
    loaded = LoadedCase(result)

    def load() -> None:
        if source.problem is not None:
            raise CaseError(source.problem[0], source.problem[1])
        if source.prediction is None:
            if config.missing != "empty":
                _mark_missing(result, config, source)
                return
            result.status = "missing"
            result.message = "no prediction: scored as an empty prediction (--missing empty)"
        if not from_files:
            loaded.reference, loaded.prediction = source.reference, source.prediction
            return
        # with --channel-axis a reference may hold channels too (one-hot or multi-label)
        reference = _remembered(references, ("header", source.reference), lambda: _open(
            source.reference, source.in_folder, config, channels=config.channel_axis is not None))
        result.shape, result.spacing = reference.shape, reference.spacing
        if source.prediction is not None:
            prediction_path = Path(source.prediction)

            def load_prediction() -> None:
                prediction = _open(prediction_path, source.in_folder, config,
                                   channels=config.channel_axis is not None)
                if config.channel_axis is None:
                    check_geometry(prediction, reference, config.geometry, config.geometry_tol,
                                   str(prediction_path), str(source.reference))
                loaded.prediction = read_mask(prediction_path).array

            if config.invalid == "empty":
                loaded.prediction_failed = not _guarded(result, load_prediction,
                                                        str(source.prediction))
            else:
                load_prediction()
        loaded.reference = _remembered(references, ("array", source.reference),
                                       lambda: read_mask(source.reference).array)

    _guarded(result, load, source.reference_name)
    return loaded


def _remembered(memo: dict[Any, Any] | None, key: Any, make: Callable[[], T]) -> T:
    """``make()``, kept in ``memo`` under ``key`` once it succeeded (no memo: not kept)."""
    if memo is None:
        return make()
    if key not in memo:
        memo[key] = make()
    return memo[key]  # type: ignore[no-any-return]


def _open(path: Any, in_folder: bool, config: EvalConfig, channels: bool) -> Header:
    path = Path(path)
    ndims = (2, 3, 4) if channels else (2, 3)
    limits = Limits(max_voxels=config.max_voxels, ndims=ndims)
    return open_header(path, path.parent if in_folder else None, limits)


def count_loaded(loaded: LoadedCase, config: EvalConfig, backend: Backend,
                 shared: dict[Any, Any] | None = None) -> CaseResult:
    """Count a loaded case, then its per-case values (boundary, lesions) when asked.
    ``shared``: the dict of a group of cases sharing one reference file (see
    :func:`load_case`), where reference-side work is kept for the next case of the group."""
    result = loaded.result
    if loaded.reference is None or (result.error_code is not None
                                    and not loaded.prediction_failed):
        return result  # an error in the reference or pairing, or a skipped/missing case

    def count(prediction: Any) -> Callable[[], None]:
        def step() -> None:
            result.counts = count_case(prediction, loaded.reference, config, backend,
                                       result.prediction or "prediction", result.reference)
        return step

    if not loaded.prediction_failed:
        ok = _guarded(result, count(loaded.prediction), result.reference)
        loaded.prediction_failed = not ok and config.invalid == "empty" \
            and result.error_code not in NOT_THE_PREDICTION
    if loaded.prediction_failed:
        code, message = result.error_code, result.message
        if _guarded(result, count(None), result.reference):  # the empty prediction
            result.status, result.error_code = "error", code
            result.message = f"{message}; scored as an empty prediction (--invalid empty)"
    if (config.boundary_metrics or config.lesion_metrics) and result.counts is not None:
        prediction = None if loaded.prediction_failed else loaded.prediction
        _guarded(result, _measure(result, prediction, loaded.reference, config, shared),
                 result.reference)
    return result


def _measure(result: CaseResult, prediction: Any, reference: Any, config: EvalConfig,
             shared: dict[Any, Any] | None) -> Callable[[], None]:
    """The per-case value step (boundary and lesion metrics) of a case, after counting, from
    the same arrays read once into label maps."""
    def step() -> None:
        from segeval.engines.distances import (  # scipy only when asked
            CaseMaps,
            ClassDistances,
            distances_of,
        )

        maps = CaseMaps.read(prediction, reference, config, result.spacing,
                             result.prediction or "prediction", result.reference)
        # each class's boundaries and distances once, for both metric families
        distances = ClassDistances(maps, shared)
        if config.lesion_metrics:
            from segeval.engines.lesions import lesions_of

            result.lesions, result.lesion_rows = lesions_of(maps, config, distances)
        if not config.boundary_metrics:
            return
        result.distances = distances_of(maps, config, distances=distances)
        if result.shape is not None and len(result.shape) == 3 and 1 in result.shape:
            result.warnings.append(
                f"{result.reference}: shape {result.shape} has an axis of length 1, so every "
                "voxel of a 3-D mask is a boundary voxel; boundary metrics of a 2-D image "
                "need a 2-D file")
    return step


def _guarded(result: CaseResult, step: Callable[[], None], name: str) -> bool:
    """Run one step of a case; any failure becomes the case's status, never an exception.
    Returns whether the step succeeded."""
    try:
        step()
        return True
    except CaseError as exc:
        result.error_code, result.message = exc.code, exc.message
    except MemoryError:
        result.error_code = errors.E_UNREADABLE
        result.message = f"{name}: not enough memory for this case"
    except Exception as exc:  # a bug must not take the other cases down with it
        result.error_code = "E_INTERNAL"
        result.message = f"internal error ({type(exc).__name__}: {exc}); please report it"
    result.status, result.counts = "error", None
    return False


def _mark_missing(result: CaseResult, config: EvalConfig, source: CaseSource) -> None:
    result.status = "missing"
    if config.missing == "error":
        result.error_code = errors.E_MISSING_PREDICTION
        result.message = (f"{source.reference_name}: no prediction for case {source.id!r} "
                          "(--missing error; use --missing empty to score it as empty)")
    else:
        result.message = f"no prediction for case {source.id!r}: skipped (--missing skip)"


class _CaseJob:
    """A picklable ``case → CaseResult`` for worker processes (CPU counting)."""

    def __init__(self, config: EvalConfig, from_files: bool) -> None:
        self.config = config
        self.from_files = from_files

    def __call__(self, source: CaseSource) -> CaseResult:
        return evaluate_case(source, self.config, NumpyBackend(), self.from_files)


class _GroupJob:
    """A picklable ``[(case, its --case-timeout)] → [CaseResult]`` for cases sharing one
    reference file: the reference is opened and decoded once for the group (grading: the
    same case of every team), and each class's reference boundary and k-d tree are built
    once (boundary metrics, and the HD95 of a class that is one lesion per side).  A case
    that finishes past its own timeout is recorded as ``E_TIMEOUT``, as it would be alone (a
    case that never finishes is the supervisor's)."""

    def __init__(self, config: EvalConfig) -> None:
        self.config = config

    def __call__(self, group: list[tuple[CaseSource, float | None]]) -> list[CaseResult]:
        references: dict[Any, Any] = {}
        results = []
        for source, limit in group:
            started = time.perf_counter()
            result = count_loaded(load_case(source, self.config, True, references),
                                  self.config, NumpyBackend(), references)
            if limit is not None and time.perf_counter() - started > limit:
                result = _from_failure(source, Failure.timed_out(limit))
            results.append(result)
        return results


def evaluate_groups(groups: list[list[CaseSource]], config: EvalConfig, workers: int,
                    timeouts: list[list[float | None]],
                    done: Callable[[int, list[CaseResult]], None] | None = None,
                    ) -> list[list[CaseResult]]:
    """Evaluate groups of file cases that share their reference file, each group in one
    worker process (its reference decoded once); the results are those of
    :func:`evaluate_cases` on each case alone, in the groups' order.

    ``timeouts[g][i]`` is case i's ``--case-timeout``, enforced for each case; the whole
    group has the deadline of its slowest-allowed case (as a group of quick cases in
    :class:`SupervisedPool`).  A group that runs past it or kills its process is run again
    case by case, in parallel, each case with its own timeout, so a hostile file is charged
    to its own case only (and costs at most twice its timeout).  ``done(g, results)`` is
    called as each group's results are final (so a cache keeps them even if the run is then
    interrupted).  Ctrl-C: finished groups are kept, the other cases are ``E_INTERRUPTED``.
    """
    results: list[list[CaseResult] | None] = [None] * len(groups)
    deadlines = [None if any(t is None for t in limits) else max(limits)  # type: ignore[type-var]
                 for limits in timeouts]
    later: list[int] = []  # groups that failed or hold a failed case: finished after the pass

    def finish(g: int, outcome: list[CaseResult]) -> None:
        results[g] = outcome
        if done is not None:
            done(g, outcome)

    try:
        for deadline in dict.fromkeys(deadlines):  # one pool per distinct deadline
            indices = [g for g, d in enumerate(deadlines) if d == deadline]
            with SupervisedPool(_GroupJob(config), max(1, min(workers, len(indices))),
                                deadline) as pool:
                tasks = [list(zip(groups[g], timeouts[g], strict=True)) for g in indices]
                for g, outcome in zip(indices, pool.map(tasks), strict=True):
                    if isinstance(outcome, Failure):
                        later.append(g)
                    elif any(r.error_code in WORKER_FAILURES for r in outcome):
                        results[g] = outcome
                        later.append(g)
                    else:
                        finish(g, outcome)
        # the failed groups, case by case (all at once, in parallel, by timeout)
        cases = [(g, i) for g in later for i in range(len(groups[g]))]
        redone: dict[tuple[int, int], CaseResult] = {}
        for limit in dict.fromkeys(timeouts[g][i] for g, i in cases):
            subset = [(g, i) for g, i in cases if timeouts[g][i] == limit]
            first = [results[g][i] if results[g] is not None else None  # type: ignore[index]
                     for g, i in subset]
            todo = [k for k, r in enumerate(first) if r is None or r.error_code in
                    WORKER_FAILURES]
            fresh = evaluate_cases([groups[subset[k][0]][subset[k][1]] for k in todo], config,
                                   "cpu", True, workers, None, limit) if todo else []
            for k, result in zip(todo, fresh, strict=True):
                redone[subset[k]] = result
            rerun = set(todo)
            for k, kept in enumerate(first):
                if k not in rerun and kept is not None:
                    redone[subset[k]] = kept
        for g in later:
            finish(g, [redone[(g, i)] for i in range(len(groups[g]))])
        later = []
    except KeyboardInterrupt:
        pass
    return [outcome if outcome is not None and g not in later
            else [_interrupted(case) for case in groups[g]]
            for g, outcome in enumerate(results)]


def _bounded_map(executor: Executor, function: Callable[[T], R], items: Iterable[T],
                 window: int) -> Iterator[R]:
    """``executor.map`` in order, with at most ``window`` items submitted ahead."""
    pending: deque[Any] = deque()
    iterator = iter(items)
    for item in iterator:
        pending.append(executor.submit(function, item))
        if len(pending) >= window:
            break
    while pending:
        result = pending.popleft().result()
        for following in iterator:
            pending.append(executor.submit(function, following))
            break
        yield result


def _collect(results: Iterable[CaseResult], cases: list[CaseSource],
             progress: Progress | None) -> list[CaseResult]:
    """Gather results in order; on Ctrl-C keep them and mark the rest as interrupted."""
    collected: list[CaseResult] = []
    try:
        for done, result in enumerate(results, start=1):
            collected.append(result)
            if progress is not None:
                progress(done, len(cases), result.id)
    except KeyboardInterrupt:
        collected += [_interrupted(case) for case in cases[len(collected):]]
    return collected


def _interrupted(case: CaseSource) -> CaseResult:
    return CaseResult(case.id, case.prediction_name, case.reference_name, status="error",
                      error_code=errors.E_INTERRUPTED,
                      message="not evaluated: the run was interrupted (Ctrl-C)")
