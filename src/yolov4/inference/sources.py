"""What predict.py reads: image files, folders, globs, list files, videos, cameras and streams,
one small class per kind, each yielding :class:`Frame` s (RGB uint8 images with where they came
from).

:func:`open_sources` turns what a user typed into sources and checks every one before any model
is loaded: a missing path, a glob or folder without images or videos, a video OpenCV cannot open
and a camera or URL that refuses are one :class:`InputError`. Inside a source a file or frame
that does not decode is a :class:`Frame` with ``error`` set (reported, never fatal).

Live sources (:class:`Camera`, :class:`Stream`) are in :mod:`yolov4.inference.streams`.
"""

from __future__ import annotations

import glob as globlib
import logging
import os
import queue
import re
import tempfile
import threading
import urllib.error
import urllib.parse
import urllib.request
import weakref
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import cv2

from yolov4.core.files import files_under, listed_path
from yolov4.core.images import IMAGE_SUFFIXES, MAX_PIXELS, VIDEO_SUFFIXES
from yolov4.errors import InputError
from yolov4.inference.images import load_image
from yolov4.inference.streams import Camera, Frame, Stream, fps_of

__all__ = [
    "Frame",
    "ImageFiles",
    "VideoFile",
    "ImageURL",
    "Camera",
    "Stream",
    "open_sources",
    "source_kind",
    "is_live_source",
    "output_name",
    "prediction_record",
    "prefetch",
    "IMAGE_SUFFIXES",
    "VIDEO_SUFFIXES",
]

STREAM_SCHEMES = ("rtsp://", "rtsps://", "rtmp://", "http://", "https://", "udp://", "tcp://")
LIST_SUFFIX = ".txt"
URL_TIMEOUT_S = 30.0  # an image URL's fetch
MAX_URL_BYTES = 256 * 2**20  # an image URL's body, at most
URL_CHUNK_BYTES = 2**20  # an image URL's body is copied to its temporary file in reads of this
GLOB_CHARS = "*?["
MAX_BAD_FRAMES = 50  # consecutive unreadable frames before a video counts as ended

log = logging.getLogger(__name__)


def prediction_record(
    dets: Any,
    source: str,
    file: str | None = None,
    frame: int | None = None,
    timestamp_ms: float | None = None,
) -> dict[str, Any]:
    """One ``predictions.jsonl`` line: ``{"source", "file", "frame", "timestamp_ms",
    "detections": [{"box": [x1, y1, x2, y2], "score", "class_id", "class_name"}], "image":
    {"width", "height"}}`` (``dets`` a :class:`~yolov4.inference.Detections`; boxes in the
    original pixels)."""
    return {
        "source": source,
        "file": file,
        "frame": frame,
        "timestamp_ms": None if timestamp_ms is None else round(float(timestamp_ms), 3),
        **dets.to_dict(),
    }


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


def glob_root(pattern: str) -> Path:
    """The folders of a glob before its first wildcard: ``in/**/*.jpg`` -> ``in``, ``*.jpg``
    -> ``.``."""
    parts = Path(pattern).parts
    fixed = next((i for i, p in enumerate(parts) if any(c in p for c in GLOB_CHARS)), len(parts))
    return Path(*parts[:fixed])


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
        self.name = _stream_name(url).removesuffix(".mp4")
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
        error = (
            f"{self.path}: frames {first} to {self.count - 1} of {self.count} cannot be decoded; "
            f"the readable video ends at frame {first} (a truncated or damaged file)"
        )
        return Frame(self.source, self.name, None, str(self.path), first, error=error)

    def close(self) -> None:
        pass


def prefetch(frames: Iterator[Frame], size: int, stop: threading.Event) -> Iterator[Frame]:
    """``frames`` decoded on a thread of their own, up to ``size`` ahead of the consumer, so
    that decoding overlaps the model. ``stop`` ends the thread early."""
    q: queue.Queue[Any] = queue.Queue(max(1, size))
    end = object()

    def put(item: Any) -> bool:
        while not stop.is_set():
            try:
                q.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def run() -> None:
        try:
            for f in frames:
                if not put(f):
                    return
        except BaseException as e:  # handed to the consumer
            put(e)
        finally:
            put(end)

    thread = threading.Thread(target=run, name="decode", daemon=True)
    thread.start()
    while True:
        item = q.get()
        if item is end:
            return
        if isinstance(item, BaseException):
            raise item
        yield item


def _is_stream(text: str) -> bool:
    return text.lower().startswith(STREAM_SCHEMES)


def _is_image_url(text: str) -> bool:
    """An ``http(s)://`` URL whose path (before ``?``) ends in an image suffix."""
    if not text.lower().startswith(("http://", "https://")):
        return False
    path = urllib.parse.urlsplit(text).path
    return Path(path).suffix.lower() in IMAGE_SUFFIXES


def source_kind(source: str | int) -> str:
    """What ``source`` names, read from its text alone (nothing is opened): ``"camera"`` (an
    index), ``"image URL"`` (:class:`ImageURL`), ``"stream"`` (any other URL of
    :data:`STREAM_SCHEMES`) or ``"path"`` (a file, folder, glob or list)."""
    text = str(source).strip()
    if text.isdecimal():
        return "camera"
    if _is_image_url(text):
        return "image URL"
    return "stream" if _is_stream(text) else "path"


def is_live_source(source: str | int) -> bool:
    """A camera index or a stream URL (read until it ends or the run is stopped)."""
    return source_kind(source) in ("camera", "stream")


def natural_key(path: Path) -> list[Any]:
    """Sort key reading runs of digits as numbers: ``f2.jpg`` before ``f10.jpg`` (frames of a
    sequence are numbered without leading zeros as often as with them)."""
    return [(0, int(t), t) if t.isdigit() else (1, 0, t) for t in re.split(r"(\d+)", str(path))]


def _media(paths: Sequence[Path]) -> list[Path]:
    found = (p for p in paths if p.is_file() and p.suffix.lower() in MEDIA_SUFFIXES)
    return sorted(found, key=natural_key)


MEDIA_SUFFIXES = IMAGE_SUFFIXES + VIDEO_SUFFIXES
# image formats a folder source leaves out (said, so that a folder of them is not "done")
UNREAD_IMAGE_SUFFIXES = (".gif", ".heic", ".heif", ".avif", ".jxl", ".jp2", ".svg", ".ico")


def _warn_unread(source: str, paths: Sequence[Path]) -> None:
    """A warning naming the image files of formats the run does not read among ``paths``."""
    unread = [p for p in paths if p.suffix.lower() in UNREAD_IMAGE_SUFFIXES and p.is_file()]
    if unread:
        kinds = sorted({p.suffix.lower() for p in unread})
        log.warning(
            "source %r: left out %d image file(s) of a format it does not read (%s), e.g. %s; "
            "convert them to one of %s",
            source, len(unread), ", ".join(kinds), unread[0], ", ".join(IMAGE_SUFFIXES),
        )  # fmt: skip


# what marks a folder as a run of train.py / predict.py / evaluate.py (Hydra's .hydra/, or the
# predictions a predict.py output= holds): its images are outputs, not a source's inputs
RUN_MARKERS = (".hydra", "predictions.jsonl")


def _is_run(folder: Path) -> bool:
    return any((folder / m).exists() for m in RUN_MARKERS)


def _list_entries(path: Path) -> list[tuple[Path, Path]]:
    """The paths of a ``.txt`` list, one a line, as the datasets read darknet's list files
    (relative ones from the list's folder, else from the working directory:
    :func:`~yolov4.core.files.listed_path`), each with the folder its outputs' tree is kept
    below: the folder it was found from."""
    try:
        lines = path.read_text(encoding="utf-8-sig").splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise InputError(f"source {str(path)!r}: cannot read the list file: {e}") from None
    listed = [(n, x.strip()) for n, x in enumerate(lines, 1) if x.strip()]
    listed = [(n, x) for n, x in listed if not x.startswith("#")]
    urls = [f"line {n}: {x}" for n, x in listed if "://" in x]
    if urls:
        raise InputError(
            f"source {str(path)!r}: a list file names image files, not URLs ({urls[0]}); give "
            "URLs as sources: source=<url> or source=[<url>,<url>]"
        )
    numbered = [(n, x, listed_path(x, path)) for n, x in listed]
    missing = [f"line {n}: {x}" for n, x, found in numbered if not found.exists()]
    if missing:
        raise InputError(
            f"source {str(path)!r}: {len(missing)} listed path(s) do not exist, neither from "
            f"the list's folder ({path.parent.absolute()}) nor from the working directory "
            f"({Path.cwd()}), first {'; '.join(missing[:3])}"
        )
    if not numbered:
        raise InputError(f"source {str(path)!r}: the list file names no path")
    return [(found, _found_from(x, found, path)) for _, x, found in numbered]


def _found_from(entry: str, found: Path, list_file: Path) -> Path:
    """The folder a list's ``entry`` (at ``found``) was found from: the working directory for a
    relative entry found there only, else the list's folder."""
    from_cwd = found == Path(entry).expanduser() and found != list_file.parent / entry
    return Path.cwd() if from_cwd else list_file.parent


def _files(
    source: str, files: Sequence[Path], root: Path | None = None, many: bool = True
) -> list[Any]:
    """Image files grouped into one :class:`ImageFiles`, videos one :class:`VideoFile` each,
    in order. ``many``: the files of a folder, glob or list, where an unreadable video is
    skipped (reported by the run) rather than refused."""
    out: list[Any] = []
    for f in files:
        rel = output_name(f, root)
        if f.suffix.lower() in VIDEO_SUFFIXES:
            out.append(VideoFile(source, f, rel, skip_unreadable=many))
        elif out and isinstance(out[-1], ImageFiles):
            out[-1].files.append(f)
        else:
            out.append(ImageFiles(source, [f], root))
    return out


def _open_one(source: str, live: dict[str, Any]) -> list[Any]:
    text, kind = source.strip(), source_kind(source)
    if kind == "camera":
        return [Camera(source, int(text), f"camera{text}.mp4", **live)]
    if kind == "image URL":
        return [ImageURL(source, text)]
    if kind == "stream":
        return [Stream(source, text, _stream_name(text), **live)]
    if any(c in text for c in GLOB_CHARS) and not Path(text).exists():
        matched = [Path(p) for p in globlib.glob(text, recursive=True)]
        found = _media(matched)
        _warn_unread(source, matched)
        if not found:
            raise InputError(
                f"source {source!r}: the glob matches no image or video "
                f"({', '.join(MEDIA_SUFFIXES)})"
            )
        return _files(source, found, glob_root(text))
    path = Path(text).expanduser()
    if not path.exists():
        raise InputError(f"source {source!r}: no such file or folder")
    if path.is_dir():
        runs: list[Path] = []
        listed = files_under(path, skip=lambda d: _is_run(d) and not runs.append(d))
        found = _media(listed)
        _warn_unread(source, listed)
        if runs:
            log.warning(
                "source %r: left out %d run folder(s) of this project's apps (annotated copies "
                "of earlier predictions, reports), e.g. %s; give such a folder as the source to "
                "read it",
                source, len(runs), runs[0],
            )  # fmt: skip
        if not found:
            raise InputError(
                f"source {source!r}: the folder holds no image or video "
                f"({', '.join(MEDIA_SUFFIXES)}), searched recursively"
            )
        return _files(source, found, path)
    suffix = path.suffix.lower()
    if suffix == LIST_SUFFIX:
        out: list[Any] = []
        for entry, root in _list_entries(path):
            if entry.is_dir():
                out += _open_one(str(entry), live)
            else:
                out += _files(source, [entry], root)
        return out
    if suffix not in MEDIA_SUFFIXES:
        raise InputError(
            f"source {source!r}: expected an image ({', '.join(IMAGE_SUFFIXES)}), a video "
            f"({', '.join(VIDEO_SUFFIXES)}), a folder, a glob, a {LIST_SUFFIX} list, a camera "
            f"index or a stream URL ({', '.join(STREAM_SCHEMES)}); got a {suffix or 'suffix-less'} "
            "file"
        )
    return _files(source, [path], many=False)


def _stream_name(url: str) -> str:
    tail = url.split("://", 1)[1].split("?", 1)[0]
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in tail).strip("_.")
    return f"{safe or 'stream'}.mp4"


def open_sources(
    sources: str | int | Sequence[str | int],
    buffer: bool = False,
    reconnect_timeout: float = 60.0,
    max_frames: int | None = None,
) -> list[Any]:
    """What a user typed (one source or a list) -> checked sources, in order: image files
    (:class:`ImageFiles`), :class:`VideoFile`, :class:`Camera`, :class:`Stream`. A source that
    cannot be used raises :class:`InputError` naming it; live sources are opened (and release
    their device on failure). ``buffer``, ``reconnect_timeout``, ``max_frames``: live sources'
    settings (see the module docstring)."""
    items = [sources] if isinstance(sources, (str, int)) else list(sources)
    if not items:
        raise InputError("source: expected a file, folder, glob, list, video, camera or URL")
    live = {"buffer": buffer, "reconnect_timeout": reconnect_timeout, "max_frames": max_frames}
    opened: list[Any] = []
    named: set[str | int] = set()
    # an image URL, stream or camera given again is read once, as a file given twice is (its
    # outputs would share one name; a camera would be opened twice)
    repeats: list[str] = []
    try:
        for item in items:
            if not isinstance(item, (str, int)) or isinstance(item, bool):
                raise InputError(f"source: expected a path, camera index or URL, got {item!r}")
            kind, text = source_kind(item), str(item).strip()
            key = None if kind == "path" else int(text) if kind == "camera" else text
            if key in named:
                repeats.append(f"{kind} {text}")
                continue
            if key is not None:
                named.add(key)
            opened += _open_one(str(item), live)
    except BaseException:
        for s in opened:
            s.close()
        raise
    if repeats:
        log.warning(
            "source: %d URL(s) or camera(s) given more than once, read once: %s",
            len(repeats),
            ", ".join(repeats[:5]) + (", ..." if len(repeats) > 5 else ""),
        )
    return _without_repeats(opened)


def _without_repeats(sources: list[Any]) -> list[Any]:
    """``sources`` with every image or video file an earlier source already reads left out (a
    list naming a file twice, a folder and a file in it): read twice, its outputs would be
    written twice and a video's frame count would restart under its tracker. Logged."""
    seen: set[Path] = set()
    kept, repeats = [], []
    for s in sources:
        if isinstance(s, VideoFile):
            path = s.path.resolve()
            if path in seen:
                repeats.append(str(s.path))
                continue
            seen.add(path)
        elif isinstance(s, ImageFiles):
            files = [f for f in s.files if f.resolve() not in seen]
            repeats += [str(f) for f in s.files if f.resolve() in seen]
            seen.update(f.resolve() for f in files)
            if not files:
                continue
            s.files = files
        kept.append(s)
    if repeats:
        log.warning(
            "source: %d file(s) given more than once, read once: %s",
            len(repeats),
            ", ".join(repeats[:5]) + (", ..." if len(repeats) > 5 else ""),
        )
    return kept
