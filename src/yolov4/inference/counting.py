"""Counting tracked objects: crossings of a line, by direction, and occupancy of a polygon zone.

    counter = Counter(line=[[320, 0], [320, 480]], zone=[[0, 0], [200, 0], [200, 200], [0, 200]])
    for index, frame in enumerate(frames):
        dets = tracker.update(predictor(frame)[0], index)
        counter.update(dets, index)           # one row per frame
    counter.write("counts.csv")               # or .json; counter.summary() -> dict

Each object is its box's anchor point (``center`` or ``bottom_center``, the ground contact
point of people and vehicles). A track crosses the line when its anchor moves from one side of
the line's segment to the other through the segment (not its extension); ``in`` is a crossing
to the side where ``(b - a) x (p - a) < 0`` in image coordinates (y down): for a line drawn
from top to bottom, left to right. A side counts once the anchor is more than ``margin`` times its
box's height from the line (0.1 by default): a box jittering on the line, as detections do,
crosses nothing until it leaves the band. Each track id counts at most once per direction. The zone
counts, per frame, the objects whose anchor is inside the polygon or on its edge among the
boxes it is given (tracked or not: the zone needs no ids; predict.py gives it the tracker's
confirmed boxes).
"""

from __future__ import annotations

import csv
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from yolov4.errors import ConfigError, InputError
from yolov4.inference.predictor import Detections
from yolov4.inference.tracking import check_frame_index

__all__ = ["ANCHORS", "LINE_MARGIN", "Counter", "check_margin"]

ANCHORS = ("center", "bottom_center")
FORGET_AFTER = 900  # frames (30 s at 30 fps; trackers keep a lost track for about 1 s)
FORGET_EVERY = 100  # frames between two sweeps of the forgotten ids
LINE_MARGIN = 0.1  # the line's band, a fraction of the box height (detections jitter a few %)
LINE_COLOUR, ZONE_COLOUR = (255, 220, 0), (0, 200, 255)  # RGB, as drawn on annotated frames


def _points(name: str, value: Any, min_points: int) -> np.ndarray:
    try:
        pts = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        pts = None
    if pts is None or pts.ndim != 2 or pts.shape[1] != 2 or not np.isfinite(pts).all():
        raise ConfigError(f"{name}: expected [[x, y], ...] (finite numbers), got {value!r}")
    if len(pts) < min_points or (min_points == 2 and len(pts) != 2):
        want = "exactly 2 points" if min_points == 2 else f"at least {min_points} points"
        raise ConfigError(f"{name}: expected {want}, got {len(pts)}")
    if len(np.unique(pts, axis=0)) < min_points:
        raise ConfigError(f"{name}: expected {min_points} distinct points, got {value!r}")
    return pts


def _cross(a: np.ndarray, b: np.ndarray, p: np.ndarray) -> np.ndarray:
    return (b[0] - a[0]) * (p[..., 1] - a[1]) - (b[1] - a[1]) * (p[..., 0] - a[0])


def check_margin(margin: Any) -> float:
    """``count_margin``, a fraction of the box height in [0, 10), as a float."""
    if isinstance(margin, bool) or not isinstance(margin, int | float) or not 0 <= margin < 10:
        raise ConfigError(
            f"count_margin: expected a fraction of the box height in [0, 10), got {margin!r}"
        )
    return float(margin)


class Counter:
    """Line crossings and zone occupancy over a video (see module docstring).

    Args:
        line: ``[[x1, y1], [x2, y2]]`` in the frame's pixels, or None.
        zone: ``[[x, y], ...]`` (3 or more) polygon in the frame's pixels, or None.
        anchor: one of :data:`ANCHORS`.
        keep_rows: keep every frame's row in :attr:`rows` (for :meth:`write`); predict.py
            streams them to ``counts.csv`` instead, so an endless stream stays in flat memory.
        forget_after: frames after which a track id not seen again is forgotten (trackers
            never reuse ids; the ones counted stay counted).
        margin: the band on each side of the line, a fraction of each box's height, in which
            an anchor keeps the side it had (0: any change of side; see the module docstring).
    """

    def __init__(
        self,
        line: Sequence[Sequence[float]] | None = None,
        zone: Sequence[Sequence[float]] | None = None,
        anchor: str = "center",
        keep_rows: bool = True,
        forget_after: int = FORGET_AFTER,
        margin: float = LINE_MARGIN,
    ) -> None:
        if line is None and zone is None:
            raise ConfigError("counting: expected count_line and/or count_zone, got neither")
        if anchor not in ANCHORS:
            raise ConfigError(f"count anchor: expected one of {list(ANCHORS)}, got {anchor!r}")
        self.margin = check_margin(margin)
        if isinstance(forget_after, bool) or not isinstance(forget_after, int) or forget_after < 1:
            raise ConfigError(f"forget_after: expected frames >= 1, got {forget_after!r}")
        self.line = None if line is None else _points("count_line", line, 2)
        self.zone = None if zone is None else _points("count_zone", zone, 3)
        if self.zone is not None and cv2.contourArea(self.zone.astype(np.float32)) <= 0:
            raise ConfigError(
                f"count_zone: expected a polygon with an area, got {zone!r} (its points on a line)"
            )
        self._last_frame: int | None = None
        self.anchor = anchor
        self.keep_rows, self.forget_after = keep_rows, forget_after
        self.rows: list[dict[str, Any]] = []
        self.frames, self._zone_max, self._zone_sum, self._last_zone = 0, 0, 0, 0
        self._seen: dict[int, int] = {}  # track id -> the last update it was seen in
        self._side: dict[int, float] = {}  # track id -> last nonzero side of the line
        self._last: dict[int, np.ndarray] = {}  # track id -> last anchor
        self._crossed: dict[str, list[int]] = {"in": [], "out": []}
        self._zone_ids: set[int] = set()

    def _anchors(self, dets: Detections, frame_index: int) -> tuple[np.ndarray, np.ndarray]:
        """``(N, 2)`` anchor points and ``(N,)`` box heights, or an :class:`InputError` naming
        the frame: boxes that are
        not ``(N, 4)`` finite numbers (a NaN box has no side of the line), track ids not one per
        box."""
        try:
            b = np.asarray(dets.boxes, np.float64)
        except (TypeError, ValueError) as e:
            raise InputError(f"frame {frame_index}: boxes that are not numbers: {e}") from None
        b = b.reshape(0, 4) if b.size == 0 else b
        if b.ndim != 2 or b.shape[1] != 4:
            raise InputError(f"frame {frame_index}: expected boxes (N, 4), got shape {b.shape}")
        if not np.isfinite(b).all():
            raise InputError(f"frame {frame_index}: boxes hold NaN or infinite values")
        if dets.track_ids is not None and len(dets.track_ids) != len(b):
            raise InputError(
                f"frame {frame_index}: expected one track id per box ({len(b)}), got "
                f"{len(dets.track_ids)}"
            )
        y = b[:, 3] if self.anchor == "bottom_center" else (b[:, 1] + b[:, 3]) / 2
        return np.stack([(b[:, 0] + b[:, 2]) / 2, y], 1), np.abs(b[:, 3] - b[:, 1])

    def _through_segment(self, p: np.ndarray, q: np.ndarray) -> bool:
        a, b = self.line
        sa, sb = _cross(p, q, a), _cross(p, q, b)
        return sa * sb <= 0 and not (sa == 0 and sb == 0)

    def _update_line(
        self, ids: np.ndarray, points: np.ndarray, heights: np.ndarray
    ) -> dict[str, list[int]]:
        new: dict[str, list[int]] = {"in": [], "out": []}
        a, b = self.line
        distance = _cross(a, b, points) / float(np.hypot(*(b - a)))  # signed, in pixels
        for tid, p, d, h in zip(ids.tolist(), points, distance, heights):
            if abs(d) <= self.margin * h:  # in the band (or on the line): the side it had
                continue
            side = float(np.sign(d))
            prev_side, prev = self._side.get(tid), self._last.get(tid)
            self._side[tid], self._last[tid] = side, p  # the last anchor clear of the band
            if prev_side is None or side == prev_side or not self._through_segment(prev, p):
                continue
            direction = "in" if side < 0 else "out"
            if tid not in self._crossed[direction]:
                self._crossed[direction].append(tid)
                new[direction].append(tid)
        return new

    def update(self, dets: Detections, frame_index: int) -> dict[str, Any]:
        """Count frame ``frame_index``'s detections; returns (and keeps) its row: ``frame``;
        with a line ``line_in`` / ``line_out`` (running totals: the tracks that have crossed so
        far) and ``crossed_in`` / ``crossed_out`` (the ids crossing in this frame); with a zone
        ``zone`` (the objects inside in this frame) and, for tracked boxes, ``zone_ids``."""
        check_frame_index(frame_index)
        if self._last_frame is not None and frame_index <= self._last_frame:
            raise InputError(
                f"frame {frame_index}: expected frames in increasing order, after frame "
                f"{self._last_frame} (a new video needs a new Counter)"
            )
        self._last_frame = int(frame_index)
        points, heights = self._anchors(dets, frame_index)
        row: dict[str, Any] = {"frame": int(frame_index)}
        if self.line is not None:
            if dets.track_ids is None:
                raise InputError("count_line needs track ids: pass the Tracker's output")
            ids = np.asarray(dets.track_ids, np.int64)
            keep = ids >= 0
            new = self._update_line(ids[keep], points[keep], heights[keep])
            row |= {
                "line_in": len(self._crossed["in"]),
                "line_out": len(self._crossed["out"]),
                "crossed_in": new["in"],
                "crossed_out": new["out"],
            }
        if self.zone is not None:
            contour = self.zone.astype(np.float32).reshape(-1, 1, 2)
            inside = [
                cv2.pointPolygonTest(contour, (float(x), float(y)), False) >= 0 for x, y in points
            ]
            row["zone"] = self._last_zone = int(sum(inside))
            if dets.track_ids is not None:
                ids = [int(t) for t, i in zip(dets.track_ids, inside) if i and t >= 0]
                row["zone_ids"] = ids
                self._zone_ids.update(ids)
        self.frames += 1
        if "zone" in row:
            self._zone_max, self._zone_sum = (
                max(self._zone_max, row["zone"]),
                self._zone_sum + row["zone"],
            )
        if self.keep_rows:
            self.rows.append(row)
        self._forget(dets)
        return row

    def _forget(self, dets: Detections) -> None:
        if dets.track_ids is not None:
            self._seen.update((int(t), self.frames) for t in dets.track_ids if t >= 0)
        if self.frames % FORGET_EVERY:
            return
        gone = [t for t, last in self._seen.items() if self.frames - last > self.forget_after]
        for t in gone:
            for state in (self._seen, self._side, self._last):
                state.pop(t, None)

    def draw(self, image: np.ndarray) -> np.ndarray:
        """``image`` (H, W, 3) RGB uint8, drawn in place: the line with its ``in``/``out`` counts
        so far and the zone with the objects in it at the last update."""
        scale = max(0.45, max(image.shape[:2]) / 1200)
        if self.zone is not None:
            polygon = np.round(self.zone).astype(np.int32).reshape(-1, 1, 2)
            cv2.polylines(image, [polygon], True, ZONE_COLOUR, 2, cv2.LINE_AA)
            count = self._last_zone
            x, y = polygon[:, 0].min(0)
            cv2.putText(image, f"zone {count}", (int(x) + 4, int(y) + 18),
                        cv2.FONT_HERSHEY_SIMPLEX, scale, ZONE_COLOUR, 2, cv2.LINE_AA)  # fmt: skip
        if self.line is not None:
            (x1, y1), (x2, y2) = np.round(self.line).astype(int).tolist()
            cv2.line(image, (x1, y1), (x2, y2), LINE_COLOUR, 2, cv2.LINE_AA)
            label = f"in {len(self._crossed['in'])} out {len(self._crossed['out'])}"
            cv2.putText(image, label, (min(x1, x2) + 4, max(min(y1, y2), 0) + 18),
                        cv2.FONT_HERSHEY_SIMPLEX, scale, LINE_COLOUR, 2, cv2.LINE_AA)  # fmt: skip
        return image

    def summary(self) -> dict[str, Any]:
        out: dict[str, Any] = {"frames": self.frames, "anchor": self.anchor}
        if self.line is not None:
            out["line"] = {
                "points": self.line.tolist(),
                "margin": self.margin,
                "in": len(self._crossed["in"]),
                "out": len(self._crossed["out"]),
                "in_ids": list(self._crossed["in"]),
                "out_ids": list(self._crossed["out"]),
            }
        if self.zone is not None:
            out["zone"] = {
                "points": self.zone.tolist(),
                "max": self._zone_max,
                "mean": round(self._zone_sum / self.frames, 4) if self.frames else 0.0,
                "unique_ids": len(self._zone_ids),
            }
        return out

    def write(self, path: str | Path) -> Path:
        """The per-frame rows: ``.csv`` (ids joined by spaces) or ``.json`` (rows + summary)."""
        path = Path(path)
        if not self.keep_rows:
            raise ConfigError("Counter.write: this counter was made with keep_rows=False")
        if path.suffix == ".json":
            path.write_text(json.dumps({"summary": self.summary(), "frames": self.rows}) + "\n")
        elif path.suffix == ".csv":
            fields = list(dict.fromkeys(k for row in self.rows for k in row)) or ["frame"]
            with open(path, "w", newline="") as f:
                writer = csv.DictWriter(f, fields)
                writer.writeheader()
                for row in self.rows:
                    writer.writerow(
                        {
                            k: " ".join(map(str, v)) if isinstance(v, list) else v
                            for k, v in row.items()
                        }
                    )
        else:
            raise ConfigError(f"counts file: expected a .csv or .json path, got {str(path)!r}")
        return path
