"""Request ids, access logs with latency, a generic 500 for the unexpected, Prometheus metrics.

:class:`RequestLog` is a plain ASGI middleware (no per-request task or body copy): it gives each
request an id (the client's ``X-Request-ID`` when sane, else a new one), echoes it in the response,
logs ``method path status latency`` and counts the request in :class:`Metrics`. An exception that
escapes a route is logged with its traceback and the request id, and the client gets
``{"error": {"code": "internal", ...}}`` naming only the id.

:class:`Metrics` writes the Prometheus text exposition format (version 0.0.4) itself, so there is
no client library to install.
"""

from __future__ import annotations

import json
import logging
import re
import threading
import time
import uuid
from bisect import bisect_left
from collections import Counter
from collections.abc import Callable
from typing import Any

__all__ = ["Metrics", "RequestLog", "LATENCY_BUCKETS_S", "REQUEST_ID_HEADER"]

log = logging.getLogger("yolov4.serve")
REQUEST_ID_HEADER = "x-request-id"
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
    (``type`` is ``"gauge"`` or ``"counter"``)."""

    def __init__(
        self, readings: dict[str, tuple[str, str, Callable[[], float]]] | None = None
    ) -> None:
        self._lock = threading.Lock()
        self.requests: Counter[tuple[str, str, int]] = Counter()
        self.buckets = [0] * (len(LATENCY_BUCKETS_S) + 1)  # last: +Inf
        self.latency_sum = 0.0
        self.latency_count = 0
        self.images = 0
        self.readings = readings or {}

    def observe(self, method: str, path: str, status: int, seconds: float) -> None:
        path = path if path in KNOWN_PATHS else "other"  # bounded label values
        with self._lock:
            self.requests[(method, path, status)] += 1
            self.buckets[bisect_left(LATENCY_BUCKETS_S, seconds)] += 1
            self.latency_sum += seconds
            self.latency_count += 1

    def add_images(self, n: int) -> None:
        with self._lock:
            self.images += n

    def render(self) -> str:
        """The text exposition format, one ``# HELP``/``# TYPE`` block per metric."""
        out = [
            "# HELP yolov4_http_requests_total HTTP requests by method, path and status.",
            "# TYPE yolov4_http_requests_total counter",
        ]
        with self._lock:
            for (method, path, status), n in sorted(self.requests.items()):
                out.append(
                    f'yolov4_http_requests_total{{method="{method}",path="{path}",status="{status}"}} {n}'
                )
            out += [
                "# HELP yolov4_http_request_duration_seconds Time from request start to response end.",
                "# TYPE yolov4_http_request_duration_seconds histogram",
            ]
            cumulative = 0
            for bound, n in zip((*LATENCY_BUCKETS_S, "+Inf"), self.buckets):
                cumulative += n
                out.append(
                    f'yolov4_http_request_duration_seconds_bucket{{le="{bound}"}} {cumulative}'
                )
            out += [
                f"yolov4_http_request_duration_seconds_sum {self.latency_sum:.6f}",
                f"yolov4_http_request_duration_seconds_count {self.latency_count}",
                "# HELP yolov4_images_total Images run through the model.",
                "# TYPE yolov4_images_total counter",
                f"yolov4_images_total {self.images}",
            ]
        for name, (kind, help_, fn) in self.readings.items():
            out += [f"# HELP {name} {help_}", f"# TYPE {name} {kind}", f"{name} {fn()}"]
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
