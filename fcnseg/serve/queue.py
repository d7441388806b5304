"""The bounded work queue in front of the one model: a few worker threads, a fixed number of waiting places, refusal beyond.

A request that finds every worker busy and every waiting place taken is refused at once
(:class:`QueueFull`, answered 503) instead of piling up: a busy server answers every client within
bounded time and holds at most ``workers + capacity`` decoded images in memory.
"""

from __future__ import annotations

import asyncio
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Callable

from fcnseg.files import plural


class QueueFull(Exception):
    """Every worker is busy and every waiting place is taken."""


@dataclass(frozen=True)
class QueueState:
    """A snapshot: ``busy`` jobs running, ``waiting`` admitted but not started, room for ``capacity`` waiting."""

    workers: int
    capacity: int
    busy: int
    waiting: int

    def to_dict(self) -> dict:
        return {"workers": self.workers, "capacity": self.capacity, "busy": self.busy, "waiting": self.waiting}


@dataclass(frozen=True)
class Outcome:
    """What a job returned, and how long it waited for a worker (seconds)."""

    value: Any
    waited: float


class WorkQueue:
    """Run blocking jobs (decode + forward + encode) on ``workers`` threads with room for ``capacity`` more waiting.

    Every worker calls into the same model: inference-mode forwards share no state, so one instance
    (one copy of the weights) serves them all.

    Args:
        workers: threads running jobs at once (at least 1).
        capacity: admitted jobs that may wait for a worker (0: refuse whenever all workers are busy).
    """

    def __init__(self, workers: int = 1, capacity: int = 8):
        if workers < 1:
            raise ValueError(f"workers must be at least 1, got {workers}")
        if capacity < 0:
            raise ValueError(f"queue capacity must be 0 or more, got {capacity}")
        self.workers = workers
        self.capacity = capacity
        self._executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="fcnseg-serve")
        self._lock = threading.Lock()
        self._admitted = 0  # running + waiting
        self._running = 0

    def state(self) -> QueueState:
        with self._lock:
            return QueueState(self.workers, self.capacity, self._running, self._admitted - self._running)

    def full(self) -> bool:
        """True when a job submitted now would be refused."""
        with self._lock:
            return self._admitted >= self.workers + self.capacity

    def refusal(self) -> QueueFull:
        """The error a refused job gets, saying how busy the server is."""
        state = self.state()
        return QueueFull(
            f"the server is busy: {plural(state.busy, 'image')} being segmented and {state.waiting} waiting, the most it "
            f"queues (--workers {state.workers}, --queue {state.capacity}); try again shortly"
        )

    def _admit(self) -> None:
        with self._lock:
            admitted = self._admitted < self.workers + self.capacity
            if admitted:
                self._admitted += 1
        if not admitted:
            raise self.refusal()

    def _call(self, fn: Callable[..., Any], args: tuple, admitted_at: float) -> Outcome:
        with self._lock:
            self._running += 1
        waited = time.perf_counter() - admitted_at
        try:
            return Outcome(fn(*args), waited)
        finally:
            with self._lock:
                self._running -= 1

    def _release(self, _future) -> None:
        # Runs when the job ends, fails, or is cancelled before it started (its client went away).
        with self._lock:
            self._admitted -= 1

    async def run(self, fn: Callable[..., Any], *args: Any) -> Outcome:
        """Run ``fn(*args)`` on a worker and await its result; exceptions from ``fn`` propagate.

        Raises:
            QueueFull: no worker and no waiting place is free (nothing was started).
        """
        self._admit()
        try:
            future = self._executor.submit(self._call, fn, args, time.perf_counter())
        except BaseException:
            with self._lock:
                self._admitted -= 1
            raise
        future.add_done_callback(self._release)
        return await asyncio.wrap_future(future)

    def close(self, wait: bool = True) -> None:
        """Stop the workers once the jobs they hold are done; jobs not yet started are dropped."""
        self._executor.shutdown(wait=wait, cancel_futures=True)
