"""A small supervised process pool: one task per worker at a time, so that a task that
hangs or kills its process is attributed to exactly its own case.

``concurrent.futures.ProcessPoolExecutor`` cannot do this: a worker that dies (a decoder's
segmentation fault) breaks the whole pool and every pending future, and a task cannot be
stopped when it runs too long.  Here each worker talks to the parent over its own pipe; the
parent waits on all pipes and process sentinels at once, kills a worker whose task passes its
deadline, replaces a worker that died, and reports both as results of that task.  Results
are yielded in submission order.
"""

from __future__ import annotations

import multiprocessing
import signal
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait
from typing import Any, Generic, TypeVar

T = TypeVar("T")
R = TypeVar("R")


@dataclass(frozen=True)
class Failure:
    """Why a task produced no result: ``"timeout"`` or ``"crashed"`` (with a detail)."""

    kind: str
    detail: str


def _context() -> Any:
    # fork shares the already-imported modules (fast start); elsewhere spawn is the safe one
    return multiprocessing.get_context("fork" if sys.platform == "linux" else "spawn")


def _serve(function: Callable[[Any], Any], connection: Connection) -> None:
    """Worker loop: receive a task, send back its result, until told to stop (None)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle
    while True:
        try:
            task = connection.recv()
        except EOFError:
            return
        if task is None:
            return
        connection.send(function(task))


class _Worker:
    def __init__(self, function: Callable[[Any], Any]) -> None:
        self.connection, child = _context().Pipe()
        self.process = _context().Process(target=_serve, args=(function, child), daemon=True)
        self.process.start()
        child.close()
        self.task_index: int | None = None
        self.deadline = float("inf")

    def stop(self, kill: bool = False) -> None:
        if kill:
            self.process.kill()
        else:
            try:
                self.connection.send(None)
            except (OSError, ValueError):
                self.process.kill()
        self.process.join(timeout=5)
        if self.process.is_alive():
            self.process.kill()
            self.process.join()
        self.connection.close()


class SupervisedPool(Generic[T, R]):
    """``map(function, items)`` over ``workers`` processes with a per-task time limit.

    ``function`` must be picklable for the spawn start method (a module-level function or a
    picklable callable object).  Each item gives either the function's result or a
    :class:`Failure`.
    """

    def __init__(self, function: Callable[[T], R], workers: int,
                 timeout: float | None = None) -> None:
        self.function = function
        self.timeout = timeout
        self.workers = [_Worker(function) for _ in range(max(1, workers))]

    def __enter__(self) -> SupervisedPool[T, R]:
        return self

    def __exit__(self, *exc: object) -> None:
        interrupted = exc[0] is not None
        for worker in self.workers:
            worker.stop(kill=interrupted or worker.task_index is not None)

    def map(self, items: Iterable[T]) -> Iterator[R | Failure]:
        pending = list(items)
        results: dict[int, R | Failure] = {}
        next_task = 0
        next_out = 0
        while next_out < len(pending):
            for worker in self.workers:  # give idle workers work
                if worker.task_index is None and next_task < len(pending):
                    worker.task_index = next_task
                    worker.deadline = (time.monotonic() + self.timeout if self.timeout
                                       else float("inf"))
                    worker.connection.send(pending[next_task])
                    next_task += 1
            busy = [w for w in self.workers if w.task_index is not None]
            nearest = min(w.deadline for w in busy)
            wait_for = None if nearest == float("inf") else max(0.0, nearest - time.monotonic())
            ready = wait([w.connection for w in busy] + [w.process.sentinel for w in busy],
                         timeout=wait_for)
            for index, worker in enumerate(self.workers):
                if worker.task_index is None:
                    continue
                outcome = self._outcome(worker, ready)
                if outcome is not None:
                    results[worker.task_index] = outcome
                    worker.task_index = None
                    if isinstance(outcome, Failure):
                        self.workers[index] = _Worker(self.function)
            while next_out in results:
                yield results.pop(next_out)
                next_out += 1

    def _outcome(self, worker: _Worker, ready: list[Any]) -> R | Failure | None:
        if worker.connection in ready:
            try:
                result: R = worker.connection.recv()
                return result
            except (EOFError, OSError):
                pass  # died while sending: treated as a crash below
        if worker.connection in ready or worker.process.sentinel in ready:
            worker.process.join(timeout=5)
            code = worker.process.exitcode
            detail = (f"killed by signal {signal.Signals(-code).name}" if code and code < 0
                      else f"exit code {code}")
            worker.stop(kill=True)
            return Failure("crashed", detail)
        if time.monotonic() >= worker.deadline:
            worker.stop(kill=True)
            return Failure("timeout", f"no result after {self.timeout:g} s")
        return None
