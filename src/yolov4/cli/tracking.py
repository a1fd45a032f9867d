"""``python predict.py ... track=<tracker>``: object ids per video, camera, stream or folder of
frames, drawn with short trails, and line / zone counts
(:class:`~yolov4.inference.tracking.Tracker`, :class:`~yolov4.inference.counting.Counter`).

    track=bytetrack                          configs/tracker/bytetrack.yaml as shipped
    tracker=bytetrack tracker.lost_track_buffer=60   the Hydra group, with key overrides
    track=bytetrack tracker.lost_track_buffer=60     the same (tracker= added: track_argv)
    count_line=[[x1,y1],[x2,y2]] count_zone=[[x,y],...] count_anchor=center|bottom_center
    count_margin=0.1                         the line's band, a fraction of the box height

One tracker per video or stream (a new source starts from id 1); a folder or glob of images is
tracked as one sequence of frames in natural path order (f2 before f10). A single image, a list
file and a list of sources that mixes images with anything else are refused: ids across unrelated
images mean nothing. Live sources keep their ids across dropped frames and reconnects: the frame
index (the tracker's clock) is the source's frame counter. Counts are written per frame to
``counts.csv`` (one row per frame: the video's output name, the frame, the counts) and summed up
in ``summary.json`` under ``tracking``.
"""

from __future__ import annotations

import csv
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import DictConfig

from yolov4.cli.common import to_builtin
from yolov4.errors import ConfigError
from yolov4.inference.counting import ANCHORS, LINE_MARGIN, Counter
from yolov4.inference.sources import GLOB_CHARS, ImageFiles, ImageURL
from yolov4.inference.streams import Frame
from yolov4.inference.tracking import Tracker, TrackTrails

__all__ = [
    "COUNTS", "TRACK_CONF", "TRACK_DEFAULTS", "Tracks", "check_track_sources", "tracking_options"
]  # fmt: skip

COUNTS = "counts.csv"
TRACK_KEYS = ("count_line", "count_zone")
# predict.py's score threshold under track= when conf= is not given: the trackers start and
# continue tracks from boxes of 0.25 and more (configs/tracker) and ByteTrack-like ones match
# the boxes between this and 0.25 to tracks that exist (ultralytics' track mode does the same)
TRACK_CONF = 0.1
# predict.py's postprocess under track= where the command does not set it: (value, why)
TRACK_DEFAULTS = {
    "conf": (
        TRACK_CONF,
        "the tracker's second association uses the boxes under its own thresholds; only "
        "tracked boxes are written",
    ),
    "multi_label": (
        False,
        "one box per object, its best class: a second class's box on the same object would "
        "start a second track",
    ),
    "agnostic_nms": (
        True,
        "NMS across classes: neighbouring boxes that see one object as different classes "
        "would start a track each",
    ),
}


def track_argv(argv: list[str]) -> list[str]:
    """``argv`` for Hydra: ``track=<name>`` with ``tracker.<key>=`` overrides and no
    ``tracker=`` gets ``tracker=<name>`` added, so the keys override that tracker's settings
    (Hydra refuses them while no tracker group is selected)."""
    overrides = [a.lstrip("+~") for a in argv[1:]]
    track = next((a.split("=", 1)[1] for a in overrides if a.startswith("track=")), "")
    keyed = any(a.startswith("tracker.") for a in overrides)
    chosen = any(a.startswith("tracker=") for a in overrides)
    if track and track != "null" and keyed and not chosen:
        return [*argv, f"tracker={track}"]
    return argv


def tracking_options(cfg: DictConfig) -> dict[str, Any] | None:
    """The run's tracking settings, every key checked (a tracker is built once, so an unknown
    tracker, key or value fails here, before any model loads); None without ``track=`` or
    ``tracker=``. Returns ``{"make": fps -> Tracker, "name", "counter": kwargs or None,
    "trail"}``."""
    track, node = cfg.get("track"), to_builtin(cfg.get("tracker"))
    if track is None and node is None:
        given = [k for k in TRACK_KEYS if cfg.get(k) is not None]
        if given:
            raise ConfigError(f"{given[0]} counts tracked objects: add track=<tracker>")
        return None
    if track is not None and (not isinstance(track, str) or not track):
        raise ConfigError(f"track: expected a tracker name (configs/tracker), got {track!r}")
    if node is not None:
        if not isinstance(node, dict):
            raise ConfigError(f"tracker: expected a configs/tracker node, got {node!r}")
        if track is not None and node.get("tracker") != track:
            raise ConfigError(
                f"track={track!r} and tracker={node.get('tracker')!r} name different trackers; "
                "give one (tracker=<name> to override its keys)"
            )

        def make(fps: float | None) -> Tracker:
            return Tracker.from_config(node, fps)
    else:

        def make(fps: float | None) -> Tracker:
            return Tracker.from_name(track, fps)

    name = make(None).name  # checks the tracker, its keys and values
    line, zone = to_builtin(cfg.get("count_line")), to_builtin(cfg.get("count_zone"))
    anchor = cfg.get("count_anchor", "center")
    if anchor not in ANCHORS:
        raise ConfigError(f"count_anchor: expected one of {list(ANCHORS)}, got {anchor!r}")
    counter = None
    if line is not None or zone is not None:
        margin = cfg.get("count_margin", LINE_MARGIN)
        counter = {"line": line, "zone": zone, "anchor": anchor, "margin": margin}
        Counter(**counter)  # checks the points
    trail = cfg.get("trail", 30)
    TrackTrails(trail)
    return {"make": make, "name": name, "counter": counter, "trail": trail}


def check_track_sources(sources: list[Any], given: Any) -> None:
    """Refuse what cannot be tracked (module docstring); ``given``: the source as typed."""
    images = [s for s in sources if isinstance(s, ImageFiles | ImageURL)]
    if not images:
        return
    text = given if isinstance(given, str) else None
    sequence = text is not None and (
        Path(text).is_dir() or (any(c in text for c in GLOB_CHARS) and not Path(text).exists())
    )
    if len(images[0]) < 2 and len(sources) == 1 and text is not None and not sequence:
        raise ConfigError(
            f"track=: source {given!r} is a single image; tracking needs a video, a camera, a "
            "stream or a folder of frames"
        )
    if len(sources) > 1 or not sequence:
        raise ConfigError(
            f"track=: source {given!r} mixes unrelated images with other sources (or lists "
            "them); ids across unrelated images mean nothing. Track a video, a camera, a "
            "stream, or one folder (or glob) of frames, read in natural order (f2 before f10)"
        )


class _Track:
    """One video's or stream's tracker, trails and counter."""

    def __init__(self, options: dict[str, Any], fps: float | None, name: str) -> None:
        self.name = name  # in summary.json and counts.csv: the output name of the video
        self.tracker: Tracker = options["make"](fps)
        self.trails = TrackTrails(options["trail"])
        counter = options["counter"]  # rows go to counts.csv as they come
        self.counter = None if counter is None else Counter(**counter, keep_rows=False)
        self.ids: set[int] = set()
        self.next_index = 0  # images of a folder: their position in the sequence

    def summary(self) -> dict[str, Any]:
        out: dict[str, Any] = {"tracks": len(self.ids)}
        if self.counter is not None:
            out["counts"] = self.counter.summary()
        return out


class Tracks:
    """The tracking state of a run: :meth:`update` gives each frame's detections their ids (and
    counts them), :meth:`draw` adds ids and trails to its annotated frame, :meth:`close` writes
    the end of ``counts.csv`` and returns the summary."""

    def __init__(self, options: dict[str, Any], out: Path) -> None:
        self.options = options
        self.states: dict[tuple[str, str], _Track] = {}
        self.done: dict[str, dict[str, Any]] = {}
        self._current: tuple[str, str] | None = None  # the file source being read
        self._csv: Any = None
        self._rows: csv.DictWriter | None = None
        if options["counter"] is not None:
            self._csv = (Path(out) / COUNTS).open("w", newline="", encoding="utf-8")

    def _state(self, frame: Frame, live: bool, name: str | None) -> _Track:
        key = (frame.source, frame.name if frame.frame is not None else "")
        if key not in self.states:
            if not live and self._current is not None:  # files end before the next begins
                self._finish(self._current)
            # a video's (stream's) output name, unique in the run; a folder of frames: its source
            label = (name or frame.name) if frame.frame is not None else frame.source
            self.states[key] = _Track(self.options, frame.fps, label)
        if not live:
            self._current = key
        return self.states[key]

    frame_index: int | None = None  # the frame number of the last update's frame

    def _finish(self, key: tuple[str, str]) -> None:
        state = self.states.pop(key)
        self.done[state.name] = state.summary()

    def update(self, frame: Frame, dets: Any, live: bool = False, name: str | None = None) -> Any:
        """``dets`` of ``frame`` with ``track_ids`` (confirmed tracks only). ``name``: the
        output name of the frame's video (the writer's: ``clip_1.mp4`` for a second
        ``clip.mp4``), which names its tracks and counts."""
        state = self._state(frame, live, name)
        index = frame.frame if frame.frame is not None else state.next_index
        state.next_index = index + 1
        self.frame_index = index  # the tracker's frame number (a folder's image: its place)
        dets = state.tracker.update(dets, index, frame=frame.image)
        state.trails.update(dets)
        state.ids.update(int(t) for t in dets.track_ids if t >= 0)
        if state.counter is not None:
            self._write_row(state.name, state.counter.update(dets, index))
        return dets

    def _write_row(self, name: str, row: dict[str, Any]) -> None:
        row = {"video": name, **{k: _cell(v) for k, v in row.items()}}
        if self._rows is None:
            self._rows = csv.DictWriter(self._csv, list(row))
            self._rows.writeheader()
        self._rows.writerow(row)
        self._csv.flush()

    def overlay(self, frame: Frame) -> Callable[[np.ndarray, Any], np.ndarray]:
        """Draws ``frame``'s tracks (ids and trails) on its annotated image, and the count line
        and zone with their counts."""
        key = (frame.source, frame.name if frame.frame is not None else "")
        state = self.states.get(key)
        if state is None:
            return lambda image, dets: image
        counter = state.counter

        def draw(image: np.ndarray, dets: Any) -> np.ndarray:
            image = state.trails.draw(image, dets)
            return image if counter is None else counter.draw(image)

        return draw

    def close(self) -> dict[str, Any]:
        for key in list(self.states):
            self._finish(key)
        if self._csv is not None:
            self._csv.close()
        return {"tracker": self.options["name"], "sources": self.done}


def _cell(value: Any) -> Any:
    return " ".join(map(str, value)) if isinstance(value, list) else value
