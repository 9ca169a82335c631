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

import os
import sys
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Executor, ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np

from segeval import errors
from segeval.cases import CaseSource
from segeval.config import EvalConfig
from segeval.engine import NumpyBackend, get_backend
from segeval.errors import CaseError
from segeval.io import load_mask
from segeval.prepare import count_case
from segeval.report import CaseResult

Progress = Callable[[int, int, str], None]
T = TypeVar("T")
R = TypeVar("R")
MIN_CASES_FOR_POOL = 4  # below this, starting workers costs more than it saves


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


def run_cases(cases: list[CaseSource], config: EvalConfig, device: str, from_files: bool,
              workers: int, progress: Progress | None = None) -> list[CaseResult]:
    """Evaluate every case; the list is in the order of ``cases``."""
    pooled = from_files and workers > 1 and len(cases) >= MIN_CASES_FOR_POOL
    if device == "cpu":
        if pooled:
            with ProcessPoolExecutor(workers, mp_context=_process_context()) as pool:
                job = _CaseJob(config, from_files)
                return _collect(_bounded_map(pool, job, cases, 2 * workers), cases, progress)
        backend = NumpyBackend()
        return _collect((evaluate_case(c, config, backend, from_files) for c in cases),
                        cases, progress)
    backend = get_backend(device)

    def load(case: CaseSource) -> LoadedCase:
        return load_case(case, config, from_files)

    if pooled:
        with ThreadPoolExecutor(workers) as threads:
            loaded: Iterable[LoadedCase] = _bounded_map(threads, load, cases, 2 * workers)
            return _collect((count_loaded(x, config, backend) for x in loaded), cases, progress)
    return _collect((count_loaded(load(c), config, backend) for c in cases), cases, progress)


def evaluate_case(source: CaseSource, config: EvalConfig, backend: Any,
                  from_files: bool) -> CaseResult:
    """Load, interpret and count one case; every failure becomes the case's status."""
    return count_loaded(load_case(source, config, from_files), config, backend)


def load_case(source: CaseSource, config: EvalConfig, from_files: bool) -> LoadedCase:
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
        loaded.reference = _load(source.reference, source.reference_name, config, from_files,
                                 result)
        if source.prediction is not None:
            loaded.prediction = _load(source.prediction, source.prediction_name or "", config,
                                      from_files, result)

    _guarded(result, load, source.reference_name)
    return loaded


def count_loaded(loaded: LoadedCase, config: EvalConfig, backend: Any) -> CaseResult:
    result = loaded.result
    if result.error_code is not None or loaded.reference is None:
        return result  # an error while loading, or a skipped/missing case

    def count() -> None:
        result.counts = count_case(loaded.prediction, loaded.reference, config, backend,
                                   result.prediction or "prediction", result.reference)

    _guarded(result, count, result.reference)
    return result


def _guarded(result: CaseResult, step: Callable[[], None], name: str) -> None:
    """Run one step of a case; any failure becomes the case's status, never an exception."""
    try:
        step()
        return
    except CaseError as exc:
        result.error_code, result.message = exc.code, exc.message
    except MemoryError:
        result.error_code = errors.E_UNREADABLE
        result.message = f"{name}: not enough memory for this case"
    except Exception as exc:  # a bug must not take the other cases down with it
        result.error_code = "E_INTERNAL"
        result.message = f"internal error ({type(exc).__name__}: {exc}); please report it"
    result.status, result.counts = "error", None


def _mark_missing(result: CaseResult, config: EvalConfig, source: CaseSource) -> None:
    result.status = "missing"
    if config.missing == "error":
        result.error_code = errors.E_MISSING_PREDICTION
        result.message = (f"{source.reference_name}: no prediction for case {source.id!r} "
                          "(--missing error; use --missing empty to score it as empty)")
    else:
        result.message = f"no prediction for case {source.id!r}: skipped (--missing skip)"


def _load(value: Any, name: str, config: EvalConfig, from_files: bool,
          result: CaseResult) -> Any:
    if not from_files:
        return value  # arrays and tensors go to the backend as they are
    mask = load_mask(value)
    allowed = (2, 3) if config.channel_axis is None else (2, 3, 4)
    if mask.array.ndim not in allowed:
        raise CaseError(errors.E_BAD_DIMENSIONS,
                        f"{mask.array.ndim}-D array of shape {mask.array.shape}", name,
                        "segeval evaluates 2-D images and 3-D volumes"
                        + ("" if config.channel_axis is not None else
                           " (channel layouts need --channel-axis)"))
    if result.shape is None:
        result.shape, result.spacing = tuple(mask.array.shape), mask.spacing
    elif result.spacing is not None and len(mask.spacing) == len(result.spacing) and not \
            np.allclose(mask.spacing, result.spacing, rtol=1e-3, atol=1e-6):
        result.warnings.append(f"spacing differs: reference {tuple(result.spacing)}, "
                               f"prediction {tuple(mask.spacing)}")
    return mask.array


class _CaseJob:
    """A picklable ``case → CaseResult`` for worker processes (CPU counting)."""

    def __init__(self, config: EvalConfig, from_files: bool) -> None:
        self.config = config
        self.from_files = from_files

    def __call__(self, source: CaseSource) -> CaseResult:
        return evaluate_case(source, self.config, NumpyBackend(), self.from_files)


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
    collected = []
    for done, result in enumerate(results, start=1):
        collected.append(result)
        if progress is not None:
            progress(done, len(cases), result.id)
    return collected


def _process_context() -> Any:
    import multiprocessing

    # fork shares the already-imported modules (fast start); elsewhere spawn is the safe one
    return multiprocessing.get_context("fork" if sys.platform == "linux" else "spawn")
