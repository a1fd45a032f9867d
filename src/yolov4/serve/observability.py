"""Request ids, access logs with latency, a generic 500 for the unexpected, Prometheus metrics.

:class:`RequestLog` is a plain ASGI middleware (no per-request task or body copy): it gives each
request an id (the client's ``X-Request-ID`` when sane, else a new one), echoes it in the response,
logs ``method path status latency`` and counts the request in :class:`Metrics`. An exception that
escapes a route is logged with its traceback and the request id, and the client gets
``{"error": {"code": "internal", ...}}`` naming only the id.

:class:`Metrics` writes the Prometheus text exposition format (version 0.0.4) itself, so there is
no client library to install. With ``--workers N`` each scrape reaches one worker process: each
worker writes its counts to a file of its own in a folder the parent shares
(:data:`METRICS_DIR_ENV`) after every request, and the one that answers sums the counters of
all of them (gauges are its own), so the totals grow monotonically whichever worker answers.
"""

from __future__ import annotations

import json
import logging
import os
import re
import threading
import time
import uuid
from bisect import bisect_left
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

__all__ = ["Metrics", "RequestLog", "LATENCY_BUCKETS_S", "REQUEST_ID_HEADER", "METRICS_DIR_ENV"]

log = logging.getLogger("yolov4.serve")
REQUEST_ID_HEADER = "x-request-id"
METRICS_DIR_ENV = "YOLOV4_SERVE_METRICS_DIR"  # set by yolov4-serve for its worker processes
REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
# seconds; Prometheus client defaults stretched to CPU inference times
LATENCY_BUCKETS_S = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
KNOWN_PATHS = (
    "/v1/detect",
    "/v1/detect/batch",
    "/v1/model",
    "/healthz",
    "/readyz",
    "/metrics",
    "/docs",
    "/openapi.json",
)


class Metrics:
    """Request counts by path and status, a latency histogram, images, and readings.

    ``readings`` maps a metric name to ``(type, help, fn() -> number)``, read at scrape time
    (``type`` is ``"gauge"`` or ``"counter"``). ``share_dir``: the folder the worker processes of
    one service share (module docstring); ``worker`` names this one's file there."""

    def __init__(
        self,
        readings: dict[str, tuple[str, str, Callable[[], float]]] | None = None,
        share_dir: str | os.PathLike | None = None,
        worker: str | None = None,
    ) -> None:
        self._lock = threading.Lock()
        self.requests: Counter[tuple[str, str, int]] = Counter()
        self.buckets = [0] * (len(LATENCY_BUCKETS_S) + 1)  # last: +Inf
        self.latency_sum = 0.0
        self.latency_count = 0
        self.images = 0
        self.readings = readings or {}
        self.share_dir = None if share_dir is None else Path(share_dir)
        self._file = None
        if self.share_dir is not None:
            self._file = self.share_dir / f"worker-{worker or os.getpid()}.json"

    def observe(self, method: str, path: str, status: int, seconds: float) -> None:
        path = path if path in KNOWN_PATHS else "other"  # bounded label values
        with self._lock:
            self.requests[(method, path, status)] += 1
            self.buckets[bisect_left(LATENCY_BUCKETS_S, seconds)] += 1
            self.latency_sum += seconds
            self.latency_count += 1
            self._publish()

    def add_images(self, n: int) -> None:
        with self._lock:
            self.images += n
            self._publish()

    def _counts(self) -> dict[str, Any]:
        """This process's counters (the shared file's content)."""
        counters = {k: fn() for k, (kind, _, fn) in self.readings.items() if kind == "counter"}
        return {
            "requests": [[*key, n] for key, n in self.requests.items()],
            "buckets": list(self.buckets),
            "latency_sum": self.latency_sum,
            "latency_count": self.latency_count,
            "images": self.images,
            "counters": counters,
        }

    def _publish(self) -> None:
        """Write this worker's counts to its file (atomically: a reader sees the old or new)."""
        if self._file is None:
            return
        tmp = self._file.with_suffix(".tmp")
        try:
            tmp.write_text(json.dumps(self._counts()))
            os.replace(tmp, self._file)
        except OSError as e:  # the metrics must never fail a request
            log.warning("metrics: cannot write %s: %s", self._file, e)

    def _all_counts(self) -> list[dict[str, Any]]:
        """This worker's counts and every other worker's last written ones."""
        mine = self._counts()
        if self.share_dir is None:
            return [mine]
        others = []
        for path in sorted(self.share_dir.glob("worker-*.json")):
            if path == self._file:
                continue
            try:
                others.append(json.loads(path.read_text()))
            except (OSError, ValueError):  # a worker gone, or its file being replaced
                continue
        return [mine, *others]

    def render(self) -> str:
        """The text exposition format, one ``# HELP``/``# TYPE`` block per metric; counters
        summed over the service's workers."""
        with self._lock:
            counts = self._all_counts()
        requests: Counter[tuple[str, str, int]] = Counter()
        buckets = [0] * len(self.buckets)
        for c in counts:
            for method, path, status, n in c["requests"]:
                requests[(method, path, int(status))] += n
            buckets = [a + b for a, b in zip(buckets, c["buckets"])]
        out = [
            "# HELP yolov4_http_requests_total HTTP requests by method, path and status.",
            "# TYPE yolov4_http_requests_total counter",
        ]
        for (method, path, status), n in sorted(requests.items()):
            out.append(
                f'yolov4_http_requests_total{{method="{method}",path="{path}",status="{status}"}} {n}'
            )
        out += [
            "# HELP yolov4_http_request_duration_seconds Time from request start to response end.",
            "# TYPE yolov4_http_request_duration_seconds histogram",
        ]
        cumulative = 0
        for bound, n in zip((*LATENCY_BUCKETS_S, "+Inf"), buckets):
            cumulative += n
            out.append(f'yolov4_http_request_duration_seconds_bucket{{le="{bound}"}} {cumulative}')
        out += [
            f"yolov4_http_request_duration_seconds_sum {sum(c['latency_sum'] for c in counts):.6f}",
            f"yolov4_http_request_duration_seconds_count {sum(c['latency_count'] for c in counts)}",
            "# HELP yolov4_images_total Images run through the model.",
            "# TYPE yolov4_images_total counter",
            f"yolov4_images_total {sum(c['images'] for c in counts)}",
        ]
        for name, (kind, help_, fn) in self.readings.items():
            value = fn()
            if kind == "counter":
                value = value + sum(c["counters"].get(name, 0) for c in counts[1:])
            out += [f"# HELP {name} {help_}", f"# TYPE {name} {kind}", f"{name} {value}"]
        return "\n".join(out) + "\n"


def error_body(code: str, message: str) -> bytes:
    return json.dumps({"error": {"code": code, "message": message}}).encode()


class RequestLog:
    """ASGI middleware: request id, access log, metrics, generic 500 (see module docstring)."""

    def __init__(self, app: Any, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        given = dict(scope["headers"]).get(REQUEST_ID_HEADER.encode(), b"").decode("latin-1")
        request_id = given if REQUEST_ID.match(given) else uuid.uuid4().hex[:16]
        scope.setdefault("state", {}).update(request_id=request_id, start=start)
        status = [500, False]  # status code, response started

        async def send_with_id(message: dict) -> None:
            if message["type"] == "http.response.start":
                status[:] = [message["status"], True]
                message["headers"] = [
                    *message.get("headers", []),
                    (REQUEST_ID_HEADER.encode(), request_id.encode()),
                ]
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        except Exception:
            log.exception("request %s %s %s failed", request_id, scope["method"], scope["path"])
            if not status[1]:
                body = error_body("internal", f"internal server error (request id {request_id})")
                await send_with_id(
                    {
                        "type": "http.response.start",
                        "status": 500,
                        "headers": [
                            (b"content-type", b"application/json"),
                            (b"content-length", str(len(body)).encode()),
                        ],
                    }
                )
                await send_with_id({"type": "http.response.body", "body": body})
        finally:
            seconds = time.perf_counter() - start
            self.metrics.observe(scope["method"], scope["path"], status[0], seconds)
            log.info(
                "%s %s %s %d %.1fms",
                request_id,
                scope["method"],
                scope["path"],
                status[0],
                1e3 * seconds,
            )
