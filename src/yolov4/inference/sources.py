"""What predict.py reads: image files, folders, globs, list files, videos, cameras and streams,
each kind one small class yielding :class:`Frame` s (RGB uint8 images with where they came
from).

:func:`open_sources` turns what a user typed into sources and checks every one before any model
is loaded: a missing path, a glob or folder without images or videos, a video OpenCV cannot open
and a camera or URL that refuses are one :class:`InputError`. Inside a source a file or frame
that does not decode is a :class:`Frame` with ``error`` set (reported, never fatal).

The file sources (:class:`ImageFiles`, :class:`ImageURL`, :class:`VideoFile`) are in
:mod:`yolov4.inference.media`, the live ones (:class:`Camera`, :class:`Stream`) in
:mod:`yolov4.inference.streams`; this module re-exports them.
"""

from __future__ import annotations

import glob as globlib
import logging
import queue
import re
import threading
import urllib.parse
from collections.abc import Generator, Iterator, Sequence
from pathlib import Path
from typing import Any

from yolov4.core.files import files_under, listed_path, posix_form, posix_note
from yolov4.core.images import IMAGE_SUFFIXES, VIDEO_SUFFIXES
from yolov4.errors import InputError
from yolov4.inference.media import ImageFiles, ImageURL, VideoFile, output_name, stream_name
from yolov4.inference.streams import Camera, Frame, Stream

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
GLOB_CHARS = "*?["
# How long closing a prefetch waits for its thread to finish the frame it decodes (one frame of
# any video decodes in far less; a thread still busy after it is left to the process's exit).
PREFETCH_JOIN_S = 30.0

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


def glob_root(pattern: str) -> Path:
    """The folders of a glob before its first wildcard: ``in/**/*.jpg`` -> ``in``, ``*.jpg``
    -> ``.``."""
    parts = Path(pattern).parts
    fixed = next((i for i, p in enumerate(parts) if any(c in p for c in GLOB_CHARS)), len(parts))
    return Path(*parts[:fixed])


def prefetch(
    frames: Iterator[Frame], size: int, stop: threading.Event
) -> Generator[Frame, None, None]:
    """``frames`` decoded on a thread of their own, up to ``size`` ahead of the consumer, so
    that decoding overlaps the model. ``stop`` ends the thread early; so does closing this
    generator (``close()``, or an exception in the consumer's loop), which returns once the
    thread has finished the frame it was decoding and closed ``frames``: a video is never
    released, nor the process ended, while the thread is inside its decoder (a C++ decoder
    thread torn down mid-read aborts the process)."""
    q: queue.Queue[Any] = queue.Queue(max(1, size))
    end = object()
    closed = threading.Event()

    def put(item: Any) -> bool:
        while not (stop.is_set() or closed.is_set()):
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
            close = getattr(frames, "close", None)
            if close is not None:
                close()  # the source's own clean-up, on this thread, after its last read
            put(end)

    thread = threading.Thread(target=run, name="decode", daemon=True)
    thread.start()
    try:
        while True:
            item = q.get()
            if item is end:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        closed.set()
        thread.join(PREFETCH_JOIN_S)


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
    :func:`~yolov4.core.files.listed_path`; lines written on Windows read with ``/``, one note
    logged for the list), each with the folder its outputs' tree is kept below: the folder it
    was found from."""
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
    for note in posix_note(str(path), [x for _, x in listed]):  # lines written on Windows
        log.info("source %r: %s", str(path), note)
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
    entry = posix_form(entry)  # as listed_path reads it
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
        return [Stream(source, text, stream_name(text), **live)]
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
