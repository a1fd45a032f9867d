"""uvicorn's h11 protocol with the two guards uvicorn lacks: a request-head timeout and a cap on
open connections.

uvicorn (0.54) times out idle keep-alive connections but not a connection that never completes
its request head: such connections (slowloris, port scanners, broken clients) stay open until
file descriptors run out and ``/healthz`` stops answering. Here

* a connection must complete each request head within ``head_timeout_s`` of its opening (the
  first request) or of the first byte of the head (later requests; the idle time between
  requests is uvicorn's keep-alive timeout). A head begun but not finished gets 408 and is
  closed; a connection that sent nothing is closed silently.
* at most ``max_connections`` connections (per process) are open. A connection beyond them
  closes the longest-idle open connection to take its place (idle: no byte of a request since
  it opened or since its last response, as nginx reuses its keep-alive connections), so idle
  sockets cannot starve a health probe; when none is idle it is answered 503 at once and
  closed. The process never holds more sockets than the limit, plus the refused ones for at
  most :data:`REFUSED_GRACE_S`.

and a request h11 cannot parse (a malformed head, or one over ``h11_max_incomplete_event_size``,
counted here whether it arrives in one read or several) gets the service's JSON error body
instead of uvicorn's plain text.

Used as ``uvicorn.run(..., http=functools.partial(GuardedH11Protocol, head_timeout_s=...,
max_connections=...))``, or, for worker processes, as
``http="yolov4.serve.protocol:GuardedH11Protocol"`` with the limits taken from the settings in
the environment (:data:`~yolov4.serve.settings.SETTINGS_ENV`): a worker unpickles its uvicorn
config before it answers the parent's health checks, so that config must not import the model
stack.
"""

from __future__ import annotations

import asyncio
import functools
import itertools
import logging

import h11
from h11._connection import DEFAULT_MAX_INCOMPLETE_EVENT_SIZE  # uvicorn imports it too
from uvicorn.protocols.http.h11_impl import H11Protocol

from yolov4.serve.observability import error_body
from yolov4.serve.settings import ServeSettings

__all__ = ["GuardedH11Protocol", "raw_response"]

log = logging.getLogger("yolov4.serve")
# seconds a refused connection stays open for the client's request to arrive, so that closing
# it does not reset the connection before the client has read the 503 (a close with unread
# data in the socket sends RST)
REFUSED_GRACE_S = 1.0
REASONS = {408: "Request Timeout", 503: "Service Unavailable"}
_IDLE_ORDER = itertools.count()  # connections in the order they became idle


def raw_response(status: int, code: str, message: str, headers: dict[str, str] | None = None):
    """A complete ``Connection: close`` HTTP/1.1 response with the service's JSON error body,
    for the moments h11 cannot write one (no request head parsed)."""
    body = error_body(code, message)
    lines = [
        f"HTTP/1.1 {status} {REASONS[status]}",
        "content-type: application/json",
        f"content-length: {len(body)}",
        "connection: close",
        *(f"{k}: {v}" for k, v in (headers or {}).items()),
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


@functools.cache
def _settings() -> ServeSettings:
    """The settings a parent ``yolov4-serve`` handed its workers, or the defaults."""
    try:
        return ServeSettings.from_env()
    except RuntimeError:
        return ServeSettings()


class GuardedH11Protocol(H11Protocol):
    """:class:`~uvicorn.protocols.http.h11_impl.H11Protocol` plus a head timeout and a
    connection cap (see the module docstring)."""

    def __init__(
        self,
        *args,
        head_timeout_s: float | None = None,
        max_connections: int | None = None,
        **kwargs,
    ) -> None:
        super().__init__(*args, **kwargs)
        if head_timeout_s is None or max_connections is None:
            settings = _settings()
            head_timeout_s = head_timeout_s or settings.head_timeout_s
            max_connections = max_connections or settings.max_connections
        self.head_timeout_s = head_timeout_s
        self.max_connections = max_connections
        self.head_timer: asyncio.TimerHandle | None = None
        self.head_started = False  # a byte of the awaited head arrived
        self.refused = False
        self.head = bytearray()  # the awaited head's bytes so far (at most the limit + 4)
        self.idle_since = 0  # when it became idle (its opening, its last response), in order

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self.idle_since = next(_IDLE_ORDER)
        if self._open_connections() > self.max_connections and not self._close_longest_idle():
            self._refuse()
            return
        self._start_head_timer()

    def idle(self) -> bool:
        """Open, admitted, and no byte of a request since the opening or the last response."""
        return (
            not self.refused
            and not self.transport.is_closing()
            and self._awaiting_head()
            and not self.head_started
        )

    def _open_connections(self) -> int:
        """Admitted connections not closing (this one included)."""
        return sum(
            not getattr(c, "refused", False) and not c.transport.is_closing()
            for c in self.connections
        )

    def _close_longest_idle(self) -> bool:
        """Close the connection idle the longest -> whether there was one."""
        idle = [c for c in self.connections if isinstance(c, GuardedH11Protocol) and c.idle()]
        idle = [c for c in idle if c is not self]
        if not idle:
            return False
        oldest = min(idle, key=lambda c: c.idle_since)
        oldest.transport.close()
        log.debug("closed an idle connection from %s for a new one", oldest.client)
        return True

    def _refuse(self) -> None:
        self.refused = True
        message = (
            f"{self.max_connections} connections are open (the limit, --max-connections), none "
            "idle; retry later"
        )
        self.transport.write(
            raw_response(503, "too_many_connections", message, {"retry-after": "1"})
        )
        self.loop.call_later(REFUSED_GRACE_S, self.transport.close)
        log.debug("refused a connection from %s: %s", self.client, message)

    def data_received(self, data: bytes) -> None:
        if self.refused:  # the request is read (and dropped) so that the close is clean
            self.transport.close()
            return
        if self.head_timer is None and self._awaiting_head():
            self._start_head_timer()
        if self.head_timer is not None:
            self.head_started = True
        # bytes of a request head (not the rest of a body answered early, e.g. with 413)
        if self.conn.their_state in (h11.IDLE, h11.DONE) and self._head_over_limit(data):
            self.send_400_response("Request head too large")
            return
        super().data_received(data)

    def _head_over_limit(self, data: bytes) -> bool:
        """Whether the awaited head, with ``data``, is longer than the limit. h11 enforces its
        ``max_incomplete_event_size`` only on a head still incomplete after a read: a whole head
        arriving in one read passes it at any size."""
        limit = self.config.h11_max_incomplete_event_size or DEFAULT_MAX_INCOMPLETE_EVENT_SIZE
        seen = len(self.head)
        self.head += data[: limit + 4 - seen]
        end = self.head.find(b"\r\n\r\n", max(seen - 3, 0))  # only where the new bytes reach
        if end < 0:
            return len(self.head) > limit
        self.head.clear()  # the head is whole: what follows is its body or the next request
        return end + 4 > limit

    def handle_events(self) -> None:
        cycle = self.cycle
        super().handle_events()
        if self.cycle is not cycle:  # a request head was parsed: the app takes over
            self._cancel_head_timer()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        # idle again, unless bytes of a next request are already buffered
        self.idle_since = next(_IDLE_ORDER)
        self.head_started = bool(self.conn.trailing_data[0])

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_head_timer()
        super().connection_lost(exc)

    def send_400_response(self, msg: str) -> None:
        limit = self.config.h11_max_incomplete_event_size or DEFAULT_MAX_INCOMPLETE_EVENT_SIZE
        body = error_body(
            "bad_request",
            f"{msg.rstrip('.')}: a malformed request line or header, or a head over {limit:,} "
            "bytes (--max-head-bytes)",
        )
        headers = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
            (b"connection", b"close"),
        ]
        for event in (
            h11.Response(status_code=400, headers=headers, reason=b"Bad Request"),
            h11.Data(data=body),
            h11.EndOfMessage(),
        ):
            self.transport.write(self.conn.send(event))
        self.transport.close()

    def _awaiting_head(self) -> bool:
        return self.cycle is None or self.cycle.response_complete

    def _start_head_timer(self) -> None:
        self._cancel_head_timer()
        self.head_started = False
        self.head.clear()
        self.head_timer = self.loop.call_later(self.head_timeout_s, self._head_timed_out)

    def _cancel_head_timer(self) -> None:
        if self.head_timer is not None:
            self.head_timer.cancel()
            self.head_timer = None

    def _head_timed_out(self) -> None:
        self.head_timer = None
        if self.transport.is_closing() or not self._awaiting_head():
            return
        if self.head_started:
            message = (
                f"the request head did not arrive within {self.head_timeout_s:g} s (--head-timeout)"
            )
            self.transport.write(raw_response(408, "request_timeout", message))
            log.info("closed a connection from %s: %s", self.client, message)
        self.transport.close()
