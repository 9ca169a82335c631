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
from collections import deque
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
        self.queue: deque[int] = deque()  # task indices sent, in the order they run
        self.deadline = float("inf")  # for the task at the head of the queue

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

    Each worker has up to ``DEPTH`` tasks queued so it never waits for the parent between
    tasks; it runs them in order, so the head of its queue is the task it is running.  A
    worker that dies or passes the head task's deadline is replaced: the head task gets a
    :class:`Failure`, the tasks queued behind it are sent again.  ``function`` must be
    picklable for the spawn start method.
    """

    DEPTH = 2

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
            worker.stop(kill=interrupted or bool(worker.queue))

    def _deadline(self) -> float:
        return time.monotonic() + self.timeout if self.timeout else float("inf")

    def map(self, items: Iterable[T]) -> Iterator[R | Failure]:
        tasks = list(items)
        waiting = deque(range(len(tasks)))
        results: dict[int, R | Failure] = {}
        next_out = 0
        while next_out < len(tasks):
            for worker in self.workers:  # keep every worker's queue full
                while waiting and len(worker.queue) < self.DEPTH:
                    index = waiting.popleft()
                    if not worker.queue:
                        worker.deadline = self._deadline()
                    worker.queue.append(index)
                    worker.connection.send(tasks[index])
            busy = [w for w in self.workers if w.queue]
            nearest = min(w.deadline for w in busy)
            wait_for = None if nearest == float("inf") else max(0.0, nearest - time.monotonic())
            ready = wait([w.connection for w in busy] + [w.process.sentinel for w in busy],
                         timeout=wait_for)
            for position, worker in enumerate(self.workers):
                if worker.queue and not self._collect(worker, ready, results):
                    failed = worker.queue.popleft()
                    results[failed] = self._failure(worker, ready)
                    waiting.extendleft(reversed(worker.queue))  # run the rest again
                    worker.queue.clear()
                    worker.stop(kill=True)
                    self.workers[position] = _Worker(self.function)
            while next_out in results:
                yield results.pop(next_out)
                next_out += 1

    def _collect(self, worker: _Worker, ready: list[Any], results: dict[int, Any]) -> bool:
        """Take every finished result; False when the worker died or is past its deadline."""
        if worker.connection in ready:
            try:
                while worker.queue and worker.connection.poll():
                    results[worker.queue.popleft()] = worker.connection.recv()
                    worker.deadline = self._deadline() if worker.queue else float("inf")
            except (EOFError, OSError):
                return False  # died while sending
        if worker.queue and worker.process.sentinel in ready and not worker.connection.poll():
            return False
        return not (worker.queue and time.monotonic() >= worker.deadline)

    def _failure(self, worker: _Worker, ready: list[Any]) -> Failure:
        if worker.process.is_alive() and time.monotonic() >= worker.deadline:
            return Failure("timeout", f"no result after {self.timeout:g} s")
        worker.process.join(timeout=5)
        code = worker.process.exitcode
        detail = (f"killed by signal {signal.Signals(-code).name}" if code and code < 0
                  else f"exit code {code}")
        return Failure("crashed", detail)
