"""An MJPEG-over-HTTP test server on 127.0.0.1 (``multipart/x-mixed-replace``, as IP cameras
serve): each connection sends ``per_connection`` frames at ``fps`` and then cuts the connection
in the middle of a frame; :meth:`MjpegServer.stop` / :meth:`start` take the server down and bring
it back on the same port. Frame ``k`` of connection ``c`` is a flat image of grey level
``level(c, k)``, so a reader can tell which frames it got; with ``frames`` (RGB images) it is
``frames[(c * per_connection + k) % len(frames)]`` instead: a video cut between connections.
``pace()`` (with ``frames``): the last video frame the reader has processed; the server then
stays at most ``max_ahead`` frames ahead of it, so that the frames a slow reader drops stay
few on a loaded machine too (a camera does not wait; a test of what follows the drops does).

:func:`file_server` serves a folder's files over plain HTTP on 127.0.0.1 (404 for a missing
one), counting the requests for each path: image URLs."""

from __future__ import annotations

import contextlib
import functools
import http.server
import socketserver
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np

BOUNDARY = b"frame"


def level(connection: int, k: int) -> int:
    return (40 * connection + 3 * k) % 250


class _Server(socketserver.ThreadingTCPServer):
    allow_reuse_address = True
    daemon_threads = True


class MjpegServer:
    def __init__(
        self,
        per_connection: int = 20,
        fps: float = 50.0,
        size=(48, 64),
        max_connections: int = 2,
        frames: list[np.ndarray] | None = None,
        pace=None,
        max_ahead: int = 4,
    ) -> None:
        self.pace, self.max_ahead = pace, max_ahead
        self.per_connection, self.fps, self.size = per_connection, fps, size
        self.frames = frames
        self.max_connections = max_connections  # later requests are closed unanswered
        self.connections = 0
        self.port = 0
        self._server: _Server | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/video.mjpg"

    def _handler(self):
        owner = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                c = owner.connections
                owner.connections += 1
                if c >= owner.max_connections:
                    self.close_connection = True
                    return
                self.send_response(200)
                self.send_header(
                    "Content-Type", f"multipart/x-mixed-replace; boundary={BOUNDARY.decode()}"
                )
                self.end_headers()
                try:
                    for k in range(owner.per_connection):
                        image = np.full((*owner.size, 3), level(c, k), np.uint8)
                        if owner.frames is not None:
                            i = (c * owner.per_connection + k) % len(owner.frames)
                            owner._wait_for_reader(i)
                            image = cv2.cvtColor(owner.frames[i], cv2.COLOR_RGB2BGR)
                        data = cv2.imencode(".jpg", image)[1].tobytes()
                        self.wfile.write(b"--" + BOUNDARY + b"\r\nContent-Type: image/jpeg\r\n")
                        self.wfile.write(b"Content-Length: %d\r\n\r\n" % len(data) + data + b"\r\n")
                        time.sleep(1 / owner.fps)
                    data = cv2.imencode(".jpg", np.zeros((*owner.size, 3), np.uint8))[1].tobytes()
                    self.wfile.write(b"--" + BOUNDARY + b"\r\nContent-Type: image/jpeg\r\n")
                    self.wfile.write(
                        b"Content-Length: %d\r\n\r\n" % len(data) + data[: len(data) // 2]
                    )
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the reader went away

            def log_message(self, *args) -> None:
                pass

        return Handler

    def _wait_for_reader(self, i: int, timeout: float = 5.0) -> None:
        deadline = time.monotonic() + timeout
        while self.pace is not None and i - self.pace() > self.max_ahead:
            if time.monotonic() > deadline:
                return
            time.sleep(0.005)

    def start(self) -> MjpegServer:
        self._server = _Server(("127.0.0.1", self.port), self._handler())
        self.port = self._server.server_address[1]
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None


@contextlib.contextmanager
def file_server(folder: Path) -> Iterator[tuple[str, Counter]]:
    """``(base URL, requests per path)`` of an HTTP server of ``folder`` while in the block."""
    requests: Counter = Counter()

    class Handler(http.server.SimpleHTTPRequestHandler):
        def do_GET(self) -> None:
            requests[self.path] += 1
            super().do_GET()

        def log_message(self, *args) -> None:
            pass

    server = _Server(("127.0.0.1", 0), functools.partial(Handler, directory=str(folder)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", requests
    finally:
        server.shutdown()
        server.server_close()
