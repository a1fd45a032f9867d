"""The files predict.py reads, one small class per kind, each yielding :class:`Frame` s (RGB
uint8 images with where they came from): :class:`ImageFiles` (image files, decoded as the
Predictor decodes them), :class:`ImageURL` (one image fetched from an ``http(s)://`` URL) and
:class:`VideoFile` (a video, frame by frame).

A file or frame that does not decode is a :class:`Frame` with ``error`` set (reported, never
fatal). What a user typed becomes these sources in :func:`yolov4.inference.sources.open_sources`.
"""

from __future__ import annotations

import os
import tempfile
import urllib.error
import urllib.request
import weakref
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import cv2

from yolov4.core.images import MAX_PIXELS
from yolov4.errors import InputError
from yolov4.inference.images import load_image
from yolov4.inference.streams import Frame, fps_of

__all__ = ["ImageFiles", "ImageURL", "VideoFile", "output_name", "stream_name"]

URL_TIMEOUT_S = 30.0  # an image URL's fetch
MAX_URL_BYTES = 256 * 2**20  # an image URL's body, at most
URL_CHUNK_BYTES = 2**20  # an image URL's body is copied to its temporary file in reads of this
MAX_BAD_FRAMES = 50  # consecutive unreadable frames before a video counts as ended


def output_name(path: Path, root: Path | None) -> str:
    """The name a file's outputs are written under: its path relative to its source's ``root``
    (the folder given, a glob's fixed folders, the folder a list's entry was found from: the
    tree is kept), else, for a file outside ``root`` or without one, its file name."""
    if root is not None:
        try:  # a list's absolute entry may lie under its relative folder
            rel = path.absolute().relative_to(root.absolute())
        except ValueError:  # a list's entry elsewhere (an absolute path, ../)
            return path.name
        if ".." not in rel.parts:  # a glob's "*/../x": its outputs stay in the output folder
            return str(rel)
    return path.name


class ImageFiles:
    """Image files (a file, a folder's tree, a glob's or a list file's matches): decoded as the
    Predictor decodes them (EXIF orientation applied). ``root``: output names are relative to
    it (:func:`output_name`: a folder's, a glob's or a list's tree is kept), else the file
    name."""

    live = False
    max_pixels: int | None = MAX_PIXELS  # the decoded-size limit (None: none)

    def __init__(self, source: str, files: Sequence[Path], root: Path | None = None) -> None:
        self.source, self.files, self.root = source, list(files), root

    def __len__(self) -> int:
        return len(self.files)

    def frames(self) -> Iterator[Frame]:
        for path in self.files:
            name = output_name(path, self.root)
            try:
                image, error = load_image(path, 0, "rgb", self.max_pixels), None
            except InputError as e:  # "image 0 (<file name>): ..." -> "<path>: ..."
                image, error = None, _named(str(e), str(path), f"image 0 ({path.name})", "image 0")
            yield Frame(self.source, name, image, file=str(path), error=error)

    def close(self) -> None:
        pass


def _named(message: str, name: str, *prefixes: str) -> str:
    """``message`` with the first of ``prefixes`` it starts with replaced by ``name``."""
    for prefix in prefixes:
        if message.startswith(prefix):
            return name + message[len(prefix) :]
    return f"{name}: {message}"


class ImageURL:
    """One image at an ``http(s)://`` URL whose path ends in an image suffix (``.jpg``, ...):
    fetched once, when the source is opened (:data:`URL_TIMEOUT_S`, at most
    :data:`MAX_URL_BYTES`), so that a URL that refuses (no server, a 404, an unknown host, too
    large) is an :class:`InputError` before any model loads. Its body waits in a temporary file
    (``path``), not in memory, until the image is read; the file is deleted once the image is
    read, by :meth:`close`, or at the latest when the object or the process goes. It decodes as
    a file does, a decode failure being that image's error. OpenCV opens such a URL as a
    one-frame stream, which a live source reconnects to without end."""

    live = False
    max_pixels: int | None = MAX_PIXELS  # the decoded-size limit (None: none)

    def __init__(self, source: str, url: str) -> None:
        self.source, self.url = source, url
        self.name = stream_name(url).removesuffix(".mp4")
        try:
            fd, name = tempfile.mkstemp(prefix="yolov4-url-")
        except OSError as e:
            raise InputError(
                f"source {source!r}: no temporary file for the fetched image in "
                f"{tempfile.gettempdir()} ({e.strerror or e}); set TMPDIR to a writable folder"
            ) from None
        self.path = Path(name)
        self._delete = weakref.finalize(self, _unlink, self.path)
        try:
            with os.fdopen(fd, "wb") as f:
                self._fetch(f)
        except BaseException:
            self._delete()
            raise

    def _fetch(self, f: Any) -> None:
        """The URL's body copied into ``f``; an :class:`InputError` when it cannot be."""
        size = 0
        try:
            with urllib.request.urlopen(self.url, timeout=URL_TIMEOUT_S) as response:  # noqa: S310 - the user's source
                while chunk := response.read(URL_CHUNK_BYTES):
                    size += len(chunk)
                    if size > MAX_URL_BYTES:
                        raise InputError(
                            f"source {self.source!r}: the image is over {MAX_URL_BYTES:,} bytes"
                        )
                    f.write(chunk)
        except urllib.error.HTTPError as e:  # the server answered, with an error status
            raise InputError(
                f"source {self.source!r}: cannot fetch the image (HTTP {e.code} {e.reason})"
            ) from None
        except (OSError, ValueError) as e:  # URLError, timeouts are OSErrors
            why = getattr(e, "reason", None) or e
            raise InputError(f"source {self.source!r}: cannot fetch the image ({why})") from None

    def __len__(self) -> int:
        return 1

    def frames(self) -> Iterator[Frame]:
        image, error = self._decoded()
        yield Frame(self.source, self.name, image, file=self.url, error=error)

    def _decoded(self) -> tuple[Any, str | None]:
        """The image (or None) and its error; the temporary file is deleted."""
        try:
            data = self.path.read_bytes()
        except OSError as e:  # deleted under the run (a cleaner of the temporary folder)
            return None, f"{self.url}: its fetched copy cannot be read ({e.strerror or e})"
        finally:
            self._delete()
        try:
            return load_image(data, 0, "rgb", self.max_pixels), None
        except InputError as e:
            return None, _named(str(e), self.url, "image 0")

    def close(self) -> None:
        self._delete()


def _unlink(path: Path) -> None:
    path.unlink(missing_ok=True)


class VideoFile:
    """A video file, frame by frame (``frame`` index from 0, ``timestamp_ms`` = index / fps). An
    unreadable frame inside the video is skipped and reported; ``MAX_BAD_FRAMES`` in a row end
    it."""

    live = False

    def __init__(
        self, source: str, path: Path, name: str | None = None, skip_unreadable: bool = False
    ) -> None:
        self.source, self.path = source, path
        self.name = name or path.name
        self.error: str | None = None
        cap = cv2.VideoCapture(str(path))
        ok, _ = cap.read() if cap.isOpened() else (False, None)
        if not ok:
            cap.release()
            message = f"source {source!r}: OpenCV cannot read the video {path}"
            if not skip_unreadable:
                raise InputError(message)
            # one of a folder's (glob's, list's) files: reported as skipped, the run goes on
            self.error, self.fps, self.count = message, None, 0
            return
        self.fps = fps_of(cap)
        count = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
        self.count = count if count > 0 else None
        cap.release()

    def __len__(self) -> int:
        return self.count or 0

    def frames(self) -> Iterator[Frame]:
        if self.error is not None:
            yield Frame(self.source, self.name, None, str(self.path), error=self.error)
            return
        cap = cv2.VideoCapture(str(self.path))
        index, bad = 0, []  # the unreadable frames since the last one read
        try:
            while True:
                ok, bgr = cap.read()
                if not ok or bgr is None:
                    if self.count is None or index >= self.count or len(bad) >= MAX_BAD_FRAMES:
                        if bad:  # the video's readable frames end here: one report
                            yield self._ends_at(bad[0])
                        return
                    bad.append(index)
                    index += 1
                    continue
                for k in bad:  # frames inside the video that do not decode: each reported
                    error = f"{self.path}: frame {k} cannot be decoded"
                    yield Frame(self.source, self.name, None, str(self.path), k, error=error)
                bad = []
                ts = 1000.0 * index / self.fps
                rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
                yield Frame(self.source, self.name, rgb, str(self.path), index, ts, fps=self.fps)
                index += 1
        finally:
            cap.release()

    def _ends_at(self, first: int) -> Frame:
        """The report of frames ``first`` to the end that do not decode (``first - 1`` read)."""
        ends = f"ends after frame {first - 1}" if first else "has no frame"
        error = (
            f"{self.path}: frames {first} to {self.count - 1} of {self.count} cannot be decoded; "
            f"the readable video {ends} (a truncated or damaged file)"
        )
        return Frame(self.source, self.name, None, str(self.path), first, error=error)

    def close(self) -> None:
        pass


def stream_name(url: str) -> str:
    """A stream's output file name: its URL's host and path as one safe name, ``.mp4``."""
    tail = url.split("://", 1)[1].split("?", 1)[0]
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in tail).strip("_.")
    return f"{safe or 'stream'}.mp4"
