"""Inference off the event loop: a thread pool behind a bounded admission count.

The event loop only parses HTTP; decoding and the Predictor run in ``threads`` worker threads,
so ``/healthz`` and ``/metrics`` answer while inference is busy. At most ``max_queue`` jobs are
admitted (running + waiting); one more raises :class:`Overloaded` at once (HTTP 503 with
``Retry-After``) rather than holding its body in memory behind a long queue.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

__all__ = ["InferenceRunner", "Overloaded"]

T = TypeVar("T")


class Overloaded(Exception):
    """Every admission slot is taken (HTTP 503)."""


class InferenceRunner:
    """Run blocking jobs in ``threads`` threads, at most ``max_queue`` admitted at a time.

    A job whose client went away still runs to its end and holds its slot until then, so the
    count always matches the work the threads really have.
    """

    def __init__(self, threads: int = 1, max_queue: int = 64) -> None:
        if threads < 1 or max_queue < 1:
            raise ValueError(f"threads and max_queue must be >= 1, got {threads}, {max_queue}")
        self.threads = threads
        self.max_queue = max_queue
        self.pool = ThreadPoolExecutor(threads, thread_name_prefix="yolov4-infer")
        self._lock = threading.Lock()
        self.admitted = 0  # running + waiting
        self.running = 0

    @property
    def waiting(self) -> int:
        """Jobs admitted but not yet started (the queue depth)."""
        return self.admitted - self.running

    async def run(self, fn: Callable[[], T]) -> tuple[T, float]:
        """``fn()`` in a worker thread -> ``(its result, ms it waited for a thread)``.

        Raises :class:`Overloaded` without queueing when ``max_queue`` jobs are admitted."""
        with self._lock:
            if self.admitted >= self.max_queue:
                raise Overloaded(
                    f"{self.admitted} inference jobs in progress (limit {self.max_queue})"
                )
            self.admitted += 1
        queued = time.perf_counter()
        waited: list[float] = []

        def job() -> T:
            with self._lock:
                self.running += 1
            waited.append(1e3 * (time.perf_counter() - queued))
            try:
                return fn()
            finally:
                with self._lock:
                    self.running -= 1
                    self.admitted -= 1

        try:
            future = self.pool.submit(job)
        except RuntimeError:  # shutting down
            with self._lock:
                self.admitted -= 1
            raise Overloaded("the service is shutting down") from None
        result = await asyncio.shield(asyncio.wrap_future(future))
        return result, waited[0]

    def shutdown(self) -> None:
        """Finish the jobs already admitted, then stop the threads."""
        self.pool.shutdown(wait=True)
