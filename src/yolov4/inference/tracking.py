"""Object ids across video frames: a :class:`Tracker` over one frame's :class:`Detections`.

    tracker = Tracker.from_name("bytetrack", frame_rate=video_fps)  # configs/tracker/bytetrack.yaml
    for index, frame in enumerate(frames):
        [dets] = predictor(frame)
        dets = tracker.update(dets, index)      # dets.track_ids (K,) int64, ids from 1
        dets.to_dict()                          # each detection gains "track_id"

The trackers are the ``trackers`` package's (Roboflow's maintained re-implementations of
ByteTrack, BoT-SORT, OC-SORT and SORT; the ``track`` extra), chosen on the measurement in
``benchmarks/tracking.py``. They see boxes and scores only, so any model source works. The
frame index sets the tracker's clock (``index / frame_rate`` seconds): skipped frames (a live
source that keeps only the newest frame, a stream that reconnects) are a time gap the motion
model bridges for up to ``lost_track_buffer`` frames (counted at 30 fps) before ids are dropped.
Detections the tracker has not confirmed yet (``minimum_consecutive_frames``) are left out unless
``keep_unconfirmed``, which keeps them with id -1. Settings are the ``configs/tracker/*.yaml``
group; every key is checked here against :data:`TRACKER_KEYS`. :class:`TrackTrails` draws the
ids and each track's recent path on a frame (annotated videos).
"""

from __future__ import annotations

import dataclasses
import numbers
from collections import deque
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import yaml

from yolov4.errors import ConfigError, InputError
from yolov4.inference.predictor import Detections

__all__ = ["TRACKERS", "TRACKER_KEYS", "TrackTrails", "Tracker", "check_frame_index"]


def check_frame_index(frame_index: Any) -> None:
    """A video frame's index as :class:`Tracker` and the counter take it: an int >= 0, else an
    :class:`InputError` naming what was found."""
    if not isinstance(frame_index, (int, np.integer)) or isinstance(frame_index, bool):
        raise InputError(f"frame_index: expected an int, got {frame_index!r}")
    if frame_index < 0:
        raise InputError(f"frame_index: expected an int >= 0, got {frame_index}")


_THRESHOLD = (float, 0.0, 1.0)
_COMMON = {
    "lost_track_buffer": (int, 0, None),
    "minimum_consecutive_frames": (int, 1, None),
}
# tracker name -> {key: (type, min, max) or (str, choices)}; the trackers package's arguments
TRACKER_KEYS: dict[str, dict[str, tuple]] = {
    "bytetrack": {
        **_COMMON,
        "track_activation_threshold": _THRESHOLD,
        "minimum_iou_threshold": _THRESHOLD,
        "high_conf_det_threshold": _THRESHOLD,
    },
    "botsort": {
        **_COMMON,
        "track_activation_threshold": _THRESHOLD,
        "minimum_iou_threshold_first_assoc": _THRESHOLD,
        "minimum_iou_threshold_second_assoc": _THRESHOLD,
        "minimum_iou_threshold_unconfirmed_assoc": _THRESHOLD,
        "high_conf_det_threshold": _THRESHOLD,
        "enable_cmc": (bool, None, None),
        "cmc_method": (str, ("orb", "sift", "sparseOptFlow", "ecc")),
        "cmc_downscale": (int, 1, None),
        "instant_first_frame_activation": (bool, None, None),
    },
    "ocsort": {
        **_COMMON,
        "minimum_iou_threshold": _THRESHOLD,
        "direction_consistency_weight": (float, 0.0, None),
        "high_conf_det_threshold": _THRESHOLD,
        "delta_t": (int, 1, None),
    },
    "sort": {
        **_COMMON,
        "track_activation_threshold": _THRESHOLD,
        "minimum_iou_threshold": _THRESHOLD,
    },
}
TRACKERS = tuple(TRACKER_KEYS)
DEFAULT_FRAME_RATE = 30.0
CONFIG_DIR = Path(__file__).resolve().parent.parent / "configs" / "tracker"  # the Hydra group


def _check(tracker: str, key: str, value: Any, spec: tuple) -> Any:
    where = f"tracker {tracker!r} key {key!r}"
    if spec[0] is str:
        if value not in spec[1]:
            raise ConfigError(f"{where}: expected one of {list(spec[1])}, got {value!r}")
        return value
    kind, lo, hi = spec
    number = numbers.Real if kind is float else numbers.Integral  # numpy's numbers too
    ok = isinstance(value, bool | np.bool_) if kind is bool else (
        isinstance(value, number) and not isinstance(value, bool | np.bool_)
    )  # fmt: skip
    if not ok:
        raise ConfigError(f"{where}: expected {kind.__name__}, got {value!r}")
    if (lo is not None and value < lo) or (hi is not None and value > hi):
        raise ConfigError(f"{where}: expected a value in [{lo}, {hi if hi is not None else 'inf'}], got {value!r}")  # fmt: skip
    return kind(value)


def shipped_options(tracker: str) -> dict[str, Any]:
    """The settings of the packaged ``configs/tracker/<tracker>.yaml`` (without its ``tracker``
    and ``frame_rate``)."""
    node = yaml.safe_load((CONFIG_DIR / f"{tracker}.yaml").read_text())
    return {k: v for k, v in node.items() if k not in ("tracker", "frame_rate")}


class Tracker:
    """One video's tracker (see module docstring).

    Args:
        tracker: one of :data:`TRACKERS`.
        frame_rate: the source's frames per second (None: 30).
        keep_unconfirmed: keep detections not yet given an id, with id -1.
        **options: the tracker's settings, :data:`TRACKER_KEYS` ``[tracker]``, over those of
            the packaged ``configs/tracker/<tracker>.yaml`` (what ``predict.py track=<tracker>``
            runs); others raise :class:`~yolov4.errors.ConfigError`.
    """

    def __init__(
        self,
        tracker: str = "bytetrack",
        frame_rate: float | None = None,
        keep_unconfirmed: bool = False,
        **options: Any,
    ) -> None:
        if tracker not in TRACKER_KEYS:
            raise ConfigError(f"unknown tracker {tracker!r}; expected one of {list(TRACKERS)}")
        schema = TRACKER_KEYS[tracker]
        unknown = sorted(set(options) - set(schema))
        if unknown:
            raise ConfigError(
                f"tracker {tracker!r}: unknown key(s) {unknown}; expected some of {sorted(schema)}"
            )
        frame_rate = DEFAULT_FRAME_RATE if frame_rate is None else frame_rate
        if isinstance(frame_rate, bool) or not isinstance(frame_rate, (int, float)) or not (
            np.isfinite(frame_rate) and frame_rate > 0
        ):  # fmt: skip
            raise ConfigError(f"tracker {tracker!r} key 'frame_rate': expected a number > 0, got {frame_rate!r}")  # fmt: skip
        self.name = tracker
        self.frame_rate = float(frame_rate)
        self.keep_unconfirmed = bool(keep_unconfirmed)
        options = {**shipped_options(tracker), **options}
        self.options = {k: _check(tracker, k, v, schema[k]) for k, v in options.items()}
        self._last_index: int | None = None
        self._tracker = self._build()

    @classmethod
    def from_config(cls, cfg: Mapping[str, Any], frame_rate: float | None = None) -> Tracker:
        """From a ``configs/tracker`` node: ``{"tracker": name, "frame_rate": ..., **options}``;
        ``frame_rate`` (the source's) applies when the node's is null."""
        cfg = dict(cfg)
        if "tracker" not in cfg:
            raise ConfigError(f"tracker config: missing key 'tracker' (one of {list(TRACKERS)})")
        if cfg.get("frame_rate") is None:
            cfg["frame_rate"] = frame_rate
        return cls(**cfg)

    @classmethod
    def from_name(cls, name: str, frame_rate: float | None = None, **overrides: Any) -> Tracker:
        """From the packaged ``configs/tracker/<name>.yaml`` with ``overrides`` on top (as
        ``Tracker(name, frame_rate, **overrides)``, with the packaged files named on an unknown
        ``name``)."""
        files = sorted(CONFIG_DIR.glob("*.yaml"))
        if CONFIG_DIR / f"{name}.yaml" not in files:
            raise ConfigError(
                f"unknown tracker {name!r}; expected one of {[f.stem for f in files]}"
            )
        return cls(name, frame_rate, **overrides)

    def _build(self) -> Any:
        try:
            import trackers
        except ImportError as e:
            raise ConfigError(
                "tracking needs the 'trackers' package: pip install 'yolov4[track]'"
            ) from e
        cls = {
            "bytetrack": trackers.ByteTrackTracker,
            "botsort": trackers.BoTSORTTracker,
            "ocsort": trackers.OCSORTTracker,
            "sort": trackers.SORTTracker,
        }[self.name]
        options = dict(self.options)
        if self.name == "botsort":
            options.setdefault("enable_cmc", False)  # needs the frames; see update(frame=)
        return cls(frame_rate=self.frame_rate, **options)

    def reset(self) -> None:
        """Forget every track (a new, unrelated video); ids restart from 1."""
        self._tracker = self._build()
        self._last_index = None

    def update(
        self, dets: Detections, frame_index: int, frame: np.ndarray | None = None
    ) -> Detections:
        """``dets`` of frame ``frame_index`` (from 0, increasing; gaps are skipped frames) with
        ``track_ids``. ``frame`` (H, W, 3) is needed only by BoT-SORT with ``enable_cmc``."""
        import supervision as sv

        if not isinstance(dets, Detections):
            hint = (
                " (the Predictor returns one per image: pass [0])"
                if isinstance(dets, (list, tuple))
                else ""
            )
            raise InputError(
                f"dets: expected one image's Detections, got {type(dets).__name__}{hint}"
            )
        check_frame_index(frame_index)
        if self._last_index is not None and frame_index <= self._last_index:
            raise InputError(
                f"frame_index {frame_index} after {self._last_index}: frame indices must increase "
                "(call reset() for a new video)"
            )
        if self.options.get("enable_cmc") and frame is None:
            raise InputError("botsort with enable_cmc=true needs each frame: update(..., frame=)")
        if frame is not None and (
            not isinstance(frame, np.ndarray) or frame.ndim != 3 or frame.shape[2] != 3
        ):
            found = frame.shape if isinstance(frame, np.ndarray) else type(frame).__name__
            raise InputError(f"frame: expected an (H, W, 3) image array, got {found}")
        boxes, scores, class_ids = _checked_arrays(dets, frame_index)
        self._last_index = int(frame_index)
        index = np.arange(len(boxes))
        sv_dets = sv.Detections(
            xyxy=boxes, confidence=scores, class_id=class_ids, data={"index": index}
        )
        kwargs = {"frame": frame} if self.name == "botsort" and frame is not None else {}
        out = self._tracker.update(sv_dets, timestamp=frame_index / self.frame_rate, **kwargs)
        ids = np.full(len(boxes), -1, np.int64)
        if len(out):
            ids[np.asarray(out.data["index"], np.int64)] = np.asarray(out.tracker_id, np.int64)
        ids = np.where(ids >= 0, ids + 1, -1)
        keep = index if self.keep_unconfirmed else index[ids > 0]
        return dataclasses.replace(
            dets,
            boxes=boxes[keep],
            scores=scores[keep],
            class_ids=class_ids[keep],
            class_names=[dets.class_names[i] for i in keep],
            track_ids=ids[keep],
        )


def _colour(track_id: int) -> tuple[int, int, int]:
    """A stable, distinct colour per id (golden-angle hues)."""
    hsv = np.uint8([[[int(track_id * 137.508) % 180, 220, 230]]])
    return tuple(int(c) for c in cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)[0, 0])


def _checked_arrays(dets: Detections, frame_index: int) -> tuple[np.ndarray, ...]:
    """``dets``' boxes ``(N, 4)`` float32 xyxy, scores ``(N,)`` float32 and class ids ``(N,)``
    int64, or an :class:`InputError` naming the frame and the field (lengths that differ, a box
    that is not 4 numbers, a NaN or infinite value)."""
    try:
        boxes = np.asarray(dets.boxes, np.float32)
        scores = np.asarray(dets.scores, np.float32).reshape(-1)
        class_ids = np.asarray(dets.class_ids, np.int64).reshape(-1)
    except (TypeError, ValueError) as e:
        raise InputError(f"frame {frame_index}: detections that are not numbers: {e}") from None
    if boxes.size == 0:
        boxes = boxes.reshape(0, 4)
    if boxes.ndim != 2 or boxes.shape[1] != 4 or not len(boxes) == len(scores) == len(class_ids):
        raise InputError(
            f"frame {frame_index}: expected boxes (N, 4), scores (N,) and class_ids (N,), got "
            f"shapes {boxes.shape}, {scores.shape} and {class_ids.shape}"
        )
    for name, values in (("boxes", boxes), ("scores", scores)):
        if not np.isfinite(values).all():
            raise InputError(f"frame {frame_index}: {name} hold NaN or infinite values")
    inverted = (boxes[:, 2] < boxes[:, 0]) | (boxes[:, 3] < boxes[:, 1])
    if inverted.any():  # x, y, w, h given as corners would never be tracked, without a word
        k = int(np.argmax(inverted))
        raise InputError(
            f"frame {frame_index}: {int(inverted.sum())} boxes with x2 < x1 or y2 < y1, e.g. "
            f"{boxes[k].tolist()}; expected [x1, y1, x2, y2] corners"
        )
    if ((scores < 0) | (scores > 1)).any():
        raise InputError(
            f"frame {frame_index}: scores outside [0, 1], e.g. {float(scores[(scores < 0) | (scores > 1)][0])}"
        )
    return boxes, scores, class_ids


class TrackTrails:
    """The last ``length`` box centres of each track, drawn with its ``#id`` on RGB frames; the
    trail of a track not seen for ``forget_after`` updates is dropped (flat memory on endless
    streams: trackers never reuse an id)."""

    def __init__(self, length: int = 30, forget_after: int = 300) -> None:
        if isinstance(length, bool) or not isinstance(length, int) or length < 1:
            raise ConfigError(f"trail length: expected an int >= 1, got {length!r}")
        self.length, self.forget_after = length, forget_after
        self.points: dict[int, deque[tuple[int, int]]] = {}
        self._seen: dict[int, int] = {}  # track id -> the last update it was seen in
        self._updates = 0

    def update(self, dets: Detections) -> None:
        if dets.track_ids is None:
            raise InputError("TrackTrails needs track ids: pass the Tracker's output")
        for tid, (x1, y1, x2, y2) in zip(dets.track_ids.tolist(), dets.boxes.tolist()):
            if tid >= 0:
                trail = self.points.setdefault(tid, deque(maxlen=self.length))
                trail.append((round((x1 + x2) / 2), round((y1 + y2) / 2)))
                self._seen[tid] = self._updates
        self._updates += 1
        if self._updates % 100 == 0:
            gone = [t for t, last in self._seen.items() if self._updates - last > self.forget_after]
            for t in gone:
                del self._seen[t], self.points[t]

    def draw(self, image: np.ndarray, dets: Detections) -> np.ndarray:
        """``image`` (H, W, 3) RGB uint8, drawn in place: the trails of ``dets``' tracks and an
        ``#id`` label at each box's top-left corner."""
        if dets.track_ids is None:
            raise InputError("TrackTrails needs track ids: pass the Tracker's output")
        for tid, box in zip(dets.track_ids.tolist(), dets.boxes.tolist()):
            if tid < 0:
                continue
            colour = _colour(tid)
            trail = np.array(self.points.get(tid, ()), np.int32).reshape(-1, 1, 2)
            if len(trail) > 1:
                cv2.polylines(image, [trail], False, colour, 2, cv2.LINE_AA)
            x1, y1 = int(box[0]), int(box[1])
            cv2.putText(image, f"#{tid}", (x1, max(y1 - 4, 10)), cv2.FONT_HERSHEY_SIMPLEX, 0.5, colour, 1, cv2.LINE_AA)  # fmt: skip
        return image
