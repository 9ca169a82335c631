"""A small supervised process pool: a task that hangs or kills its process is attributed
to exactly its own case.

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

    @classmethod
    def timed_out(cls, limit: float) -> Failure:
        """The failure of a task that gave no result within ``limit`` seconds."""
        return cls("timeout", f"no result after {limit:g} s")


def _context() -> Any:
    # fork shares the already-imported modules (fast start); elsewhere spawn is the safe one
    return multiprocessing.get_context("fork" if sys.platform == "linux" else "spawn")


def _serve(function: Callable[[Any], Any], connection: Connection) -> None:
    """Worker loop: receive a group of tasks, send back their results and the seconds they
    took (one message), until told to stop (None)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle
    while True:
        try:
            group = connection.recv()
        except EOFError:
            return
        if group is None:
            return
        started = time.perf_counter()
        results = [function(task) for task in group]
        connection.send((results, time.perf_counter() - started))


class _Worker:
    def __init__(self, function: Callable[[Any], Any]) -> None:
        self.connection, child = _context().Pipe()
        self.process = _context().Process(target=_serve, args=(function, child), daemon=True)
        self.process.start()
        child.close()
        self.queue: deque[list[int]] = deque()  # groups of task indices sent, in order
        self.deadline = float("inf")  # for the group at the head of the queue

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

    Each worker has up to ``DEPTH`` messages queued so it never waits for the parent
    between tasks; it runs them in order, so the head of its queue is what it is running.
    A worker that dies or passes the head's deadline is replaced: the head gets a
    :class:`Failure`, what was queued behind it is sent again.

    Quick tasks travel in groups: once tasks are seen to take less than ``GROUP_SECONDS``,
    up to ``MAX_GROUP`` of them go in one message and come back in one (for 400 small PNG
    pairs the messages, not the work, were ~10% of the time).  A group whose worker dies or
    passes the deadline says nothing about which task was at fault, so its tasks are run
    again one per message, where the failure is attributed exactly: a crashing task runs
    twice, and a hanging one is stopped after at most twice the ``timeout`` (a group of
    quick tasks has the deadline of one task, ``timeout``).
    ``function`` must be picklable for the spawn start method.
    """

    DEPTH = 2
    GROUP_SECONDS = 0.01  # aim for messages of about this much work
    MAX_GROUP = 16
    MAX_IDLE_DEATHS = 8  # workers found dead before their next task; then tasks are blamed

    def __init__(self, function: Callable[[T], R], workers: int,
                 timeout: float | None = None) -> None:
        self.function = function
        self.timeout = timeout
        self.workers = [_Worker(function) for _ in range(max(1, workers))]
        self.seconds = 0.0  # measured by the workers, over the tasks they finished
        self.finished = 0
        self.messages = 0  # groups sent (for tests and diagnostics)
        self.idle_deaths = 0

    def __enter__(self) -> SupervisedPool[T, R]:
        return self

    def __exit__(self, *exc: object) -> None:
        interrupted = exc[0] is not None
        for worker in self.workers:
            worker.stop(kill=interrupted or bool(worker.queue))

    def _deadline(self) -> float:
        return time.monotonic() + self.timeout if self.timeout else float("inf")

    def _group_size(self, waiting: int) -> int:
        """How many tasks the next message carries: 1 until tasks are known to be quick,
        and never so many that the last messages leave workers idle."""
        if not self.finished:
            return 1
        per_task = self.seconds / self.finished
        size = int(self.GROUP_SECONDS / per_task) if per_task > 0 else self.MAX_GROUP
        return max(1, min(size, self.MAX_GROUP, waiting // (4 * len(self.workers))))

    def _next_group(self, waiting: deque[int], alone: set[int]) -> list[int]:
        group = [waiting.popleft()]
        if group[0] in alone:
            return group
        size = self._group_size(len(waiting) + 1)
        while waiting and len(group) < size and waiting[0] not in alone:
            group.append(waiting.popleft())
        return group

    def map(self, items: Iterable[T]) -> Iterator[R | Failure]:
        tasks = list(items)
        waiting = deque(range(len(tasks)))
        alone: set[int] = set()  # tasks of a failed group: each runs in its own message
        results: dict[int, R | Failure] = {}
        next_out = 0
        while next_out < len(tasks):
            for position, worker in enumerate(self.workers):  # keep every queue full
                while waiting and len(worker.queue) < self.DEPTH:
                    group = self._next_group(waiting, alone)
                    if not worker.queue:
                        worker.deadline = self._deadline()
                    worker.queue.append(group)
                    self.messages += 1
                    try:
                        worker.connection.send([tasks[i] for i in group])
                    except OSError:  # it is dead
                        if len(worker.queue) == 1 and self.idle_deaths < self.MAX_IDLE_DEATHS:
                            # it died idle (killed from outside): this group never ran
                            self.idle_deaths += 1
                            worker.queue.clear()
                            waiting.extendleft(reversed(group))
                            worker.stop(kill=True)
                            self.workers[position] = _Worker(self.function)
                        # else its sentinel says so below, and the head of its queue is
                        # what it died on; the rest is sent again
                        break
            busy = [w for w in self.workers if w.queue]
            if not busy:  # a worker found dead before its task was replaced: send again
                continue
            nearest = min(w.deadline for w in busy)
            wait_for = None if nearest == float("inf") else max(0.0, nearest - time.monotonic())
            ready = wait([w.connection for w in busy] + [w.process.sentinel for w in busy],
                         timeout=wait_for)
            for position, worker in enumerate(self.workers):
                if worker.queue and not self._collect(worker, ready, results):
                    failed = worker.queue.popleft()
                    if len(failed) == 1:
                        results[failed[0]] = self._failure(worker, ready)
                    else:  # which task was it?  each alone, first
                        alone.update(failed)
                        worker.queue.appendleft(failed)
                    # what was sent but not finished is sent again, in order
                    waiting.extendleft(reversed([i for group in worker.queue for i in group]))
                    worker.queue.clear()
                    worker.stop(kill=True)
                    self.workers[position] = _Worker(self.function)
            while next_out in results:
                yield results.pop(next_out)
                next_out += 1

    def _collect(self, worker: _Worker, ready: list[Any], results: dict[int, Any]) -> bool:
        """Take every finished group; False when the worker died or is past its deadline."""
        if worker.connection in ready:
            try:
                while worker.queue and worker.connection.poll():
                    outcomes, seconds = worker.connection.recv()
                    group = worker.queue.popleft()
                    results.update(zip(group, outcomes, strict=True))
                    self.seconds += seconds
                    self.finished += len(group)
                    worker.deadline = self._deadline() if worker.queue else float("inf")
            except (EOFError, OSError):
                return False  # died while sending
        if worker.queue and worker.process.sentinel in ready and not worker.connection.poll():
            return False
        return not (worker.queue and time.monotonic() >= worker.deadline)

    def _failure(self, worker: _Worker, ready: list[Any]) -> Failure:
        if worker.process.is_alive() and time.monotonic() >= worker.deadline:
            assert self.timeout is not None  # only a timeout sets a finite deadline
            return Failure.timed_out(self.timeout)
        worker.process.join(timeout=5)
        code = worker.process.exitcode
        detail = (f"killed by signal {signal.Signals(-code).name}" if code and code < 0
                  else f"exit code {code}")
        return Failure("crashed", detail)
