"""``python predict.py source=... <model source>``: a model on image files, folders, globs, list
files, videos, cameras and streams (:mod:`yolov4.inference.sources`), written as annotated files,
``predictions.jsonl``, labels and crops (:mod:`yolov4.inference.writers`).

Every source and option is checked before the model is loaded. Files decode and preprocess on a
thread ahead of the model (:meth:`~yolov4.inference.Predictor.prepare`), ``batch`` images or
frames per call, and the outputs are drawn, encoded and written on a thread behind it
(:class:`~yolov4.inference.writers.WriteBehind`); a file or frame that does not decode is
skipped and reported. Ctrl-C or SIGTERM ends the run with every file complete (videos
finalised). ``track=`` adds object ids, trails and counts (:mod:`yolov4.cli.tracking`).

``trainer=<default | gpu | ddp>`` (the training's Trainer group) runs image files instead with
Lightning's ``Trainer.predict`` (:mod:`yolov4.cli.predict_sharded`): a project checkpoint,
files sharded over DDP ranks, GPUs and nodes, ``predictions.jsonl`` (the same records) and
``skipped.jsonl`` only.
"""

from __future__ import annotations

import dataclasses
import logging
import signal
import sys
import threading
import time
from collections.abc import Callable, Generator, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import hydra
from omegaconf import DictConfig

from yolov4.cli.common import (
    INTERRUPTED_EXIT,
    check_override_syntax,
    hold_folder,
    one_line_errors,
    rank_log_argv,
    release_folder,
    to_builtin,
)
from yolov4.cli.predict_output import (
    check_earlier_run,
    check_output,
    input_files,
    output_folder,
)
from yolov4.cli.sources import (
    check_no_network,
    check_runtime_keys,
    load_predictor,
)
from yolov4.cli.tracking import (
    TRACK_DEFAULTS,
    Tracks,
    check_track_sources,
    track_argv,
    tracking_options,
)
from yolov4.core.images import MAX_PIXELS
from yolov4.core.postprocess import SWITCHES  # null in predict.py: the model's; track= sets its own
from yolov4.errors import ConfigError, InputError, shown
from yolov4.inference import Predictor
from yolov4.inference.counting import LINE_MARGIN, check_margin
from yolov4.inference.sources import (
    Frame,
    ImageFiles,
    ImageURL,
    is_live_source,
    open_sources,
    prefetch,
)
from yolov4.inference.streams import interleave_live
from yolov4.inference.tiling import check_tile_count, predict_tiled, tile_shape
from yolov4.inference.writers import PredictionWriter, Summary, WriteBehind

__all__ = ["predict", "hydra_main", "check_options", "check_output", "check_something_read"]

log = logging.getLogger(__name__)
Item = tuple[Frame, Any]  # a frame and its network input (Predictor.prepare), or None
PROGRESS_EVERY_S = 0.5  # progress line refresh on a terminal (10x that in a log file)


def _number(cfg: DictConfig, key: str, ok: Any, expected: str, integer: bool = False) -> None:
    value = cfg.get(key)
    if value is None:
        return
    kinds = (int,) if integer else (int, float)
    if isinstance(value, bool) or not isinstance(value, kinds) or not ok(value):
        raise ConfigError(f"{key} must be {expected}, got {shown(value)}")


def check_options(cfg: DictConfig) -> None:
    """Every option checked at start-up, naming the key (before sources open or models load)."""
    _number(cfg, "conf", lambda v: 0 <= v <= 1, "a number in [0, 1] or null")
    _number(cfg, "iou", lambda v: 0 <= v <= 1, "a number in [0, 1] or null")  # the Predictor's
    _number(cfg, "max_det", lambda v: v >= 1, "an integer >= 1 or null", True)
    _number(cfg, "batch", lambda v: v >= 1, "an integer >= 1", True)
    _number(cfg, "max_pixels", lambda v: v >= 1, "an integer >= 1 or null (no limit)", True)
    _number(cfg, "tile_size", lambda v: v >= 32, "an integer >= 32 or null", True)
    _number(cfg, "tile_overlap", lambda v: 0 <= v < 1, "a number in [0, 1)")
    _number(cfg, "reconnect_timeout", lambda v: v >= 0, "a number of seconds >= 0")
    _number(cfg, "max_frames", lambda v: v >= 1, "an integer >= 1 or null", True)
    _number(cfg, "workers", lambda v: v >= 0, "an integer >= 0", True)
    check_margin(cfg.get("count_margin", LINE_MARGIN))  # the Counter's, with or without track=
    for key in SWITCHES:
        if cfg.get(key) is not None and not isinstance(cfg[key], bool):
            raise ConfigError(f"{key} must be true, false or null, got {cfg[key]!r}")
    classes = to_builtin(cfg.get("classes"))
    if isinstance(classes, int | str) and not isinstance(classes, bool):
        cfg.classes = classes = [classes]  # one class: classes=2 or classes=person
    if classes is not None and (
        not isinstance(classes, list)
        or not all(isinstance(c, int | str) and not isinstance(c, bool) for c in classes)
    ):
        raise ConfigError(
            f"classes must be class ids or names, e.g. [0,2], [person] or 2, got {classes!r}"
        )
    if classes == []:
        raise ConfigError(
            "classes=[] would keep no class; leave classes out (null) to keep every class, or "
            "give ids or names, e.g. classes=[0,2] or classes=[person]"
        )


class Progress:
    """One line on stderr: done / total, images or frames per second, ETA (``total`` known).
    ``done`` counts the images and frames read and the files skipped (a video's frame that does
    not decode, or its unreadable tail, is no frame read); :meth:`close` prints the final count
    once."""

    def __init__(self, total: int | None, enabled: bool = True) -> None:
        self.total, self.enabled, self.done = total, enabled, 0
        self.tty = sys.stderr.isatty()
        self.start = self.last = time.perf_counter()
        self._lock = threading.Lock()
        self._shown: int | None = None  # the count of the line on screen
        self._width = 0  # its length (a shorter final line on a terminal blanks the rest)

    def update(self, n: int) -> None:  # the model loop (skipped files) and the writer thread
        with self._lock:
            self.done += n
        now = time.perf_counter()
        if self.enabled and now - self.last >= PROGRESS_EVERY_S * (1 if self.tty else 10):
            self.last = now
            self._print(now, "\r" if self.tty else "", "" if self.tty else "\n")

    def _print(self, now: float, start: str, end: str, final: bool = False) -> None:
        rate = self.done / max(now - self.start, 1e-9)
        line = f"{self.done}" + (f"/{self.total}" if self.total else "") + f" {rate:.1f}/s"
        if self.total and rate > 0 and not final:
            line += f" ETA {max(self.total - self.done, 0) / rate:.0f} s"
        self._shown, width, self._width = self.done, self._width, len(line)
        sys.stderr.write(f"{start}{line.ljust(width) if start else line}{end}")
        sys.stderr.flush()

    def close(self) -> None:
        """The final line: on a terminal it replaces the last one; in a log it is written
        unless the last line already gave this count."""
        if not self.enabled or not self.done:
            return
        if self.tty or self._shown != self.done:
            self._print(time.perf_counter(), "\r" if self.tty else "", "\n", final=True)


def _prepared(
    frames: Iterator[Frame], prepare: Callable[[Any], Any] | None
) -> Generator[Item, None, None]:
    """Each frame with ``prepare(image)``, the work a reader thread does ahead of the model (a
    frame it refuses is passed on as an error, to be skipped); ``None``: the frames as they are
    (live frames wait for the model so the newest one is taken)."""
    for f in frames:
        if f.image is None or prepare is None:
            yield f, None
            continue
        try:
            prepared = prepare(f.image)
        except InputError as e:
            yield dataclasses.replace(f, image=None, error=f"{f.file or f.source}: {e}"), None
            continue
        yield f, prepared


def _preparation(predictor: Predictor, cfg: DictConfig) -> Callable[[Any], Any]:
    """What :func:`_prepared` does to each file or video frame (decoded: ``(H, W, 3)`` whatever
    its shape): its network input, or with ``tile`` (tiles cut their own inputs) the check that
    its tiles are not too many."""
    if not cfg.get("tile"):
        return lambda image: predictor.prepare(image, decoded=True)[0]
    tile_hw = tile_shape(cfg.get("tile_size"), predictor)
    overlap = float(cfg.get("tile_overlap", 0.2))

    def check_tiles(image: Any) -> None:
        check_tile_count(image.shape[:2], tile_hw, overlap)

    return check_tiles


def _chunks(
    items: Iterator[Item], size: int, summary: Summary, progress: Progress
) -> Iterator[list[Item]]:
    """Decoded frames (with their inputs) in lists of up to ``size``; undecodable ones reported
    in ``summary``."""
    chunk: list[Item] = []
    for item in items:
        f = item[0]
        if f.image is None:
            message = f.error or f"{f.file or f.source}: cannot be decoded"
            summary.skip(message)
            log.warning("skipped: %s", message)
            progress.update(1 if f.frame is None else 0)  # a file; not a video's frame read
            continue
        chunk.append(item)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def _detect(predictor: Predictor, chunk: list[Item], cfg: DictConfig) -> list[Any]:
    post = {k: cfg.get(k) for k in ("conf", "iou", "max_det")}
    post["classes"] = to_builtin(cfg.get("classes"))
    images = [f.image for f, _ in chunk]
    if not cfg.get("tile"):
        if all(p is not None for _, p in chunk):
            return predictor.predict_prepared([p for _, p in chunk], **post)
        return predictor(images, decoded=True, **post)  # live frames: prepared here
    size, overlap = cfg.get("tile_size"), float(cfg.get("tile_overlap", 0.2))
    return [predict_tiled(predictor, im, size, overlap, decoded=True, **post) for im in images]


def run(
    predictor: Predictor,
    sources: list[Any],
    writer: PredictionWriter,
    summary: Summary,
    cfg: DictConfig,
    tracks: Tracks | None = None,
) -> None:
    """Every source through ``predictor`` into ``writer`` (on a writer thread behind the model:
    :class:`WriteBehind`), counting in ``summary``. ``tracks``: ids, trails and counts."""
    lengths = [len(s) for s in sources]
    progress = Progress(sum(lengths) if all(lengths) else None, bool(cfg.get("progress", True)))
    batch = int(cfg.batch)
    stop = threading.Event()
    live = [s for s in sources if s.live]
    # the files and videos one after the other, then the live sources together
    prepare = _preparation(predictor, cfg)
    streams: list[tuple[Generator[Item, None, None], int, bool]] = [
        (prefetch(_prepared(s.frames(), prepare), 2 * batch, stop), batch, False)
        for s in sources
        if not s.live
    ]
    if len(live) == 1:  # newest frame: one at a time; a queue: what the model can take
        streams.append((_prepared(live[0].frames(), None), batch if live[0].buffer else 1, True))
    elif live:
        streams.append((_prepared(interleave_live(live), None), len(live), True))
    behind = WriteBehind(_write_chunk(writer, summary, progress, tracks), depth=2)
    try:
        for items, size, is_live in streams:
            for chunk in _chunks(items, size, summary, progress):
                behind.put(chunk, _detect(predictor, chunk, cfg), is_live)
        behind.close()
    finally:
        stop.set()
        for items, _, _ in streams:  # each decode thread finished and its source's reads done
            items.close()
        behind.close(finish=False)  # interrupted: the frames already detected are written
        progress.close()


def _write_chunk(
    writer: PredictionWriter, summary: Summary, progress: Progress, tracks: Tracks | None
) -> Any:
    """What the writer thread does with each chunk and its detections: ids (``tracks``), the
    files and records, the counts."""

    def write(chunk: list[Item], detections: list[Any], is_live: bool) -> None:
        for (f, _), dets in zip(chunk, detections):
            overlay, index = None, None
            if tracks is not None:
                dets = tracks.update(f, dets, is_live, writer.name_of(f))
                overlay, index = tracks.overlay(f), tracks.frame_index
            writer.write(f, dets, overlay, sequence_index=index)
            summary.add(f, dets)
        progress.update(len(chunk))

    return write


class Interrupts:
    """Ctrl-C and SIGTERM end the run as a KeyboardInterrupt in the model loop; the writer
    thread then writes what the model has already detected and every file is finalised
    (:meth:`WriteBehind.close`, :meth:`PredictionWriter.close`). A second signal stops the
    writing after the image or frame being written."""

    @staticmethod
    def _handler(signum: int, _frame: Any) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    @contextmanager
    def installed(self) -> Iterator[Interrupts]:
        if threading.current_thread() is not threading.main_thread():
            yield self
            return
        previous = {s: signal.signal(s, self._handler) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield self
        finally:
            for s, handler in previous.items():
                signal.signal(s, handler)


def predict(cfg: DictConfig) -> dict[str, Any]:
    """Run ``cfg``'s model on ``cfg.source``; returns the summary (also ``summary.json``)."""
    check_options(cfg)
    check_runtime_keys(cfg)
    check_earlier_run(cfg)  # before anything is read
    if cfg.get("trainer") is not None:
        from yolov4.cli.predict_sharded import sharded

        return check_something_read(sharded(cfg), Path(cfg.output))
    tracking = tracking_options(cfg)
    if tracking is not None:
        for key, (value, why) in TRACK_DEFAULTS.items():
            if cfg.get(key) is None:  # not given: tracking's own value, logged with why
                cfg[key] = value
                log.info(
                    "track=%s: %s %s (%s; %s= sets it)", tracking["name"], key, value, why, key
                )
    check_no_network(cfg)
    sources = open_sources(
        to_builtin(cfg.source),
        buffer=bool(cfg.stream_buffer),
        reconnect_timeout=float(cfg.reconnect_timeout),
        max_frames=cfg.get("max_frames"),
    )
    _warn_max_frames_unused(cfg.get("max_frames"), sources)
    max_pixels = cfg.get("max_pixels", MAX_PIXELS)
    for s in sources:
        if isinstance(s, ImageFiles | ImageURL):
            s.max_pixels = max_pixels
    summary = Summary()
    writer = tracks = None
    try:
        if tracking is not None:
            check_track_sources(sources, to_builtin(cfg.source))
        out = output_folder(cfg)
        check_output(out, sources, bool(cfg.save))
        hold_folder(out, "output=")  # a second predict.py writing there now: refused
        predictor = load_predictor(cfg)
        predictor.max_pixels = max_pixels  # what it decodes and checks, as the sources
        predictor.postprocess = predictor.postprocess.replace(
            **{key: cfg.get(key) for key in SWITCHES}  # None: the model's
        )
        writer = PredictionWriter(
            out,
            bool(cfg.save),
            bool(cfg.save_txt),
            bool(cfg.save_crops),
            reserved=[name for _, name, _ in input_files(sources)],
        )
        tracks = None if tracking is None else Tracks(tracking, out)
        summary = Summary()  # the run's time, from here
        summary.postprocess = {
            **predictor.postprocess.replace(
                conf=cfg.get("conf"), iou=cfg.get("iou"), max_det=cfg.get("max_det")
            ).to_dict(),
            "classes": to_builtin(cfg.get("classes")),
        }
        with Interrupts().installed():
            try:
                run(predictor, sources, writer, summary, cfg, tracks)
            except KeyboardInterrupt:
                summary.interrupted = True
    finally:
        if tracks is not None:
            summary.tracking = tracks.close()
        for s in sources:
            s.close()
            summary.dropped_frames += getattr(s, "dropped", 0)
            summary.reconnects += getattr(s, "reconnects", 0)
            if getattr(s, "lost", None):
                summary.lost.append(s.lost)
        if writer is not None:
            writer.close(summary)
        if cfg.output:
            release_folder(cfg.output)
    print(summary.text())
    log.info("wrote %s", writer.out)
    return check_something_read(summary.to_dict(), writer.out)


def _warn_max_frames_unused(max_frames: int | None, sources: list[Any]) -> None:
    """One warning when ``max_frames`` is given and no source is live: it stops cameras and
    streams, while files and videos are read to their end."""
    if max_frames is not None and not any(s.live for s in sources):
        log.warning(
            "max_frames=%d stops live sources (cameras, streams) only; these sources are files "
            "and videos, read to their end",
            max_frames,
        )


def check_something_read(summary: dict[str, Any], out: Path) -> dict[str, Any]:
    """``summary``, or an :class:`InputError` when the run read nothing: every image, video or
    frame it was given was skipped (a broken image named on its own, a folder of broken files),
    so that the exit status says so (a run with some files skipped among good ones is fine)."""
    done = summary["images"] + summary["frames"]
    if done or summary["interrupted"] or not summary["skipped_count"]:
        return summary
    n = summary["skipped_count"]
    raise InputError(
        f"nothing could be read: {'the 1 input was' if n == 1 else f'all {n} inputs were'} "
        f"skipped ({summary['skipped'][0]}); the skipped list is in {out / 'summary.json'}"
    )


def hydra_main() -> None:
    """``python predict.py ...``: Hydra's app, on :func:`yolov4.cli.tracking.track_argv`'s
    arguments."""
    check_override_syntax(sys.argv, "predict")
    sys.argv = track_argv(rank_log_argv(sys.argv, "predict"))  # a DDP process: its log
    _app()


@hydra.main(version_base="1.3", config_path="../configs", config_name="predict")
@one_line_errors
def _app(cfg: DictConfig) -> None:
    summary = predict(cfg)
    given = to_builtin(cfg.source)
    live_only = all(is_live_source(s) for s in (given if isinstance(given, list) else [given]))
    if summary["interrupted"] and not live_only:
        # files left unread: exit 130 (as a shell's Ctrl-C) so that scripts can tell; a run of
        # cameras and streams ends by a signal (or max_frames) and exits 0
        sys.exit(INTERRUPTED_EXIT)


if __name__ == "__main__":
    hydra_main()
