"""Live sources for predict.py: a camera by index and any stream URL FFmpeg opens (``rtsp://``,
``http(s)://`` MJPEG, ...), read on a thread of their own.

By default only the newest frame is kept (a slow model drops frames instead of lagging behind the
scene); with ``buffer=True`` a bounded queue keeps every frame (the reader waits when it is
full). A dropped connection is reopened with backoff until ``reconnect_timeout`` seconds pass
without a frame; one that does not come back ends the source, logged and in the run's
summary (``lost``). :class:`Frame` is what every source (:mod:`yolov4.inference.sources`) yields.
"""

from __future__ import annotations

import logging
import math
import queue
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass

import cv2
import numpy as np

from yolov4.errors import InputError

__all__ = ["Frame", "Camera", "Stream", "interleave_live", "fps_of", "DEFAULT_FPS"]

DEFAULT_FPS = 30.0  # for a source that does not say (cameras, many streams)
OPEN_TIMEOUT_MS = 10_000  # cv2.CAP_PROP_OPEN_TIMEOUT_MSEC / READ_TIMEOUT for streams
BACKOFF = (0.25, 0.5, 1.0, 2.0, 4.0, 8.0)  # seconds between reconnection attempts, then the last
QUEUE_SIZE = 64  # buffer=True: frames held while the model catches up

log = logging.getLogger(__name__)


@dataclass
class Frame:
    """One image or video frame. ``image`` ``(H, W, 3)`` uint8 RGB, ``None`` with ``error``
    when it could not be decoded. ``name``: the output file name (relative path) of its source
    (an image's own, a video's, ``<stream>.mp4``)."""

    source: str
    name: str
    image: np.ndarray | None
    file: str | None = None
    frame: int | None = None
    timestamp_ms: float | None = None
    error: str | None = None
    fps: float | None = None  # a video's or stream's frame rate (its annotated video keeps it)


def fps_of(cap: cv2.VideoCapture) -> float:
    """The capture's frame rate, :data:`DEFAULT_FPS` when it does not know it."""
    fps = cap.get(cv2.CAP_PROP_FPS)
    return float(fps) if math.isfinite(fps) and 0 < fps < 1000 else DEFAULT_FPS


class _Live:
    """A camera or stream read on its own thread (see the module docstring)."""

    live = True
    count = None

    def __init__(
        self,
        source: str,
        target: int | str,
        name: str,
        buffer: bool = False,
        reconnect_timeout: float = 60.0,
        max_frames: int | None = None,
    ) -> None:
        self.source, self.target, self.name = source, target, name
        self.buffer, self.reconnect_timeout, self.max_frames = buffer, reconnect_timeout, max_frames
        self.dropped = self.reconnects = 0
        self.lost: str | None = None  # why it ended: a connection that did not come back
        self._stop = threading.Event()
        self._queue: queue.Queue[Frame | None] = queue.Queue(QUEUE_SIZE if buffer else 1)
        cap = self._open()
        ok, bgr = cap.read() if cap.isOpened() else (False, None)
        if not ok:
            cap.release()
            raise InputError(
                f"source {source!r}: {self._what()} cannot be opened or gives no frame"
            )
        self.fps = fps_of(cap)
        self._cap, self._first = cap, bgr
        self._thread: threading.Thread | None = None

    def __len__(self) -> int:
        return self.max_frames or 0

    def _what(self) -> str:
        return f"camera {self.target}" if isinstance(self.target, int) else f"stream {self.target}"

    def _open(self) -> cv2.VideoCapture:
        if isinstance(self.target, int):
            return cv2.VideoCapture(self.target)
        timeouts = [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, OPEN_TIMEOUT_MS]
        timeouts += [cv2.CAP_PROP_READ_TIMEOUT_MSEC, OPEN_TIMEOUT_MS]
        return cv2.VideoCapture(self.target, cv2.CAP_FFMPEG, timeouts)

    def _put(self, frame: Frame | None) -> None:
        if self.buffer or frame is None:
            while not self._stop.is_set():
                try:
                    return self._queue.put(frame, timeout=0.1)
                except queue.Full:
                    if frame is None:  # the end marker replaces what is waiting
                        self._drain()
            return
        if self._drain():  # newest frame only: the one waiting is dropped
            self.dropped += 1
        self._queue.put_nowait(frame)

    def _drain(self) -> int:
        n = 0
        while True:
            try:
                self._queue.get_nowait()
                n += 1
            except queue.Empty:
                return n

    def _reconnect(self, cap: cv2.VideoCapture) -> cv2.VideoCapture | None:
        """Reopen after a lost frame, with backoff; None once ``reconnect_timeout`` passed."""
        cap.release()
        start, attempt = time.monotonic(), 0
        while not self._stop.is_set():
            delay = BACKOFF[min(attempt, len(BACKOFF) - 1)]
            if time.monotonic() - start + delay > self.reconnect_timeout:
                return None
            self._stop.wait(delay)
            attempt += 1
            cap = self._open()
            if cap.isOpened():
                self.reconnects += 1
                return cap
            cap.release()
        return None

    def _run(self) -> None:
        cap, bgr, index = self._cap, self._first, 0
        start = time.monotonic()
        try:
            while not self._stop.is_set():
                if bgr is None:
                    ok, bgr = cap.read()
                    if not ok or bgr is None:
                        cap = self._reconnect(cap)
                        if cap is None:
                            if not self._stop.is_set():
                                self.lost = (
                                    f"{self.source}: lost after frame {index - 1}, not back "
                                    f"within reconnect_timeout={self.reconnect_timeout:g} s"
                                )
                                log.warning("%s: the source ended", self.lost)
                            break
                        bgr = None
                        continue
                rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
                ts = 1000.0 * (time.monotonic() - start)
                self._put(Frame(self.source, self.name, rgb, None, index, ts, fps=self.fps))
                bgr, index = None, index + 1
                if self.max_frames is not None and index >= self.max_frames:
                    break
        finally:
            if cap is not None:
                cap.release()
            self._put(None)

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name=f"read {self.name}", daemon=True)
            self._thread.start()

    def poll(self, timeout: float = 0.1) -> Frame | None | bool:
        """The next frame; ``None`` when none came within ``timeout``; ``False`` at the end."""
        self.start()
        if self._stop.is_set():
            return False
        try:
            frame = self._queue.get(timeout=timeout)
        except queue.Empty:
            return None
        return False if frame is None else frame

    def frames(self) -> Iterator[Frame]:
        while (frame := self.poll()) is not False:
            if frame is not None:
                yield frame

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        elif self._cap is not None:
            self._cap.release()


class Camera(_Live):
    """A camera by index (``source=0``)."""


class Stream(_Live):
    """An ``rtsp://``, ``http(s)://`` (MJPEG included) or other stream URL FFmpeg opens."""


POLL_S = 0.005  # interleave_live: wait between rounds that found no new frame


def interleave_live(sources: list[_Live]) -> Iterator[Frame]:
    """Several live sources at once: each one's new frames in turn, until all have ended."""
    active = list(sources)
    while active:
        got = False
        for source in list(active):
            frame = source.poll(timeout=0)
            if frame is False:
                active.remove(source)
            elif frame is not None:
                got = True
                yield frame
        if not got:
            time.sleep(POLL_S)
