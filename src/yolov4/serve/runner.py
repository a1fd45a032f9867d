"""Inference off the event loop: a thread pool behind a bounded number of admission slots.

The event loop only parses HTTP; decoding and the Predictor run in ``threads`` worker threads,
so ``/healthz`` and ``/metrics`` answer while inference is busy. A request takes one of
``max_queue`` slots *before* its body is read and holds it until its inference is done; with
every slot taken the next request gets :class:`Overloaded` at once (HTTP 503 with
``Retry-After``), so neither bodies nor jobs pile up in memory behind a long queue.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

__all__ = ["InferenceRunner", "Overloaded"]

T = TypeVar("T")


class Overloaded(Exception):
    """Every admission slot is taken (HTTP 503)."""


class InferenceRunner:
    """Run blocking jobs in ``threads`` threads for at most ``max_queue`` admitted requests.

    Attributes:
        admitted: slots held (requests reading their body, waiting for a thread or running).
        running: jobs running in a thread now.
        calls: jobs run so far (model calls, warm-up included).
    """

    def __init__(self, threads: int = 1, max_queue: int = 64) -> None:
        if threads < 1 or max_queue < 1:
            raise ValueError(f"threads and max_queue must be >= 1, got {threads}, {max_queue}")
        self.threads = threads
        self.max_queue = max_queue
        self.pool = ThreadPoolExecutor(threads, thread_name_prefix="yolov4-infer")
        self._lock = threading.Lock()
        self.admitted = 0
        self.running = 0
        self.calls = 0  # jobs run, warm-up included

    @property
    def waiting(self) -> int:
        """Admitted requests not running yet (the queue depth)."""
        return self.admitted - self.running

    @contextlib.asynccontextmanager
    async def admission(self) -> AsyncIterator[None]:
        """Hold one slot for the block; raises :class:`Overloaded` when none is free."""
        with self._lock:
            if self.admitted >= self.max_queue:
                raise Overloaded(
                    f"{self.admitted} requests in progress (limit {self.max_queue}, --max-queue)"
                )
            self.admitted += 1
        try:
            yield
        finally:
            with self._lock:
                self.admitted -= 1

    async def run(self, fn: Callable[[], T]) -> tuple[T, float]:
        """``fn()`` in a worker thread -> ``(its result, ms it waited for a thread)``. Call it
        inside :meth:`admission`. A job whose request is cancelled still runs to its end."""
        queued = time.perf_counter()
        waited: list[float] = []

        def job() -> T:
            with self._lock:
                self.running += 1
                self.calls += 1
            waited.append(1e3 * (time.perf_counter() - queued))
            try:
                return fn()
            finally:
                with self._lock:
                    self.running -= 1

        try:
            future = self.pool.submit(job)
        except RuntimeError:  # the pool is shut down
            raise Overloaded("the service is shutting down") from None
        result = await asyncio.shield(asyncio.wrap_future(future))
        return result, waited[0]

    def shutdown(self) -> None:
        """Finish the jobs already submitted, then stop the threads."""
        self.pool.shutdown(wait=True)
