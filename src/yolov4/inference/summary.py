"""The counts of a predict.py run (:class:`Summary`): images, frames, detections per class,
what was skipped or not written, live sources' drops and reconnects, tracking; printed at the
run's end and written as its ``summary.json``.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from yolov4.inference.streams import Frame

__all__ = ["Summary", "MAX_SKIPPED_LISTED"]

MAX_SKIPPED_LISTED = 1000  # summary.json lists this many skipped files or frames, counts all


@dataclass
class Summary:
    """Counts of a run, printed at its end and written as ``summary.json``."""

    images: int = 0
    frames: int = 0
    detections: Counter = field(default_factory=Counter)
    skipped: list[str] = field(default_factory=list)  # the first MAX_SKIPPED_LISTED of them
    skipped_count: int = 0
    unwritten: list[str] = field(default_factory=list)  # output files that could not be written
    unwritten_count: int = 0
    dropped_frames: int = 0
    reconnects: int = 0
    lost: list[str] = field(default_factory=list)  # live sources that dropped and did not return
    interrupted: bool = False
    tracking: dict[str, Any] | None = None  # track=: tracker, tracks and counts per source
    postprocess: dict[str, Any] | None = None  # the thresholds the run used (conf, iou, ...)
    start: float = field(default_factory=time.perf_counter)

    def skip(self, message: str) -> None:
        """One image or frame that could not be decoded (memory stays flat on a long stream:
        only the first :data:`MAX_SKIPPED_LISTED` messages are kept)."""
        self.skipped_count += 1
        if len(self.skipped) < MAX_SKIPPED_LISTED:
            self.skipped.append(message)

    def add(self, frame: Frame, dets: Any) -> None:
        if frame.frame is None:
            self.images += 1
        else:
            self.frames += 1
        self.detections.update(dets.class_names)

    def to_dict(self) -> dict[str, Any]:
        seconds = time.perf_counter() - self.start
        done = self.images + self.frames
        return {
            "images": self.images,
            "frames": self.frames,
            "detections": dict(sorted(self.detections.items(), key=lambda kv: -kv[1])),
            "skipped_count": self.skipped_count,
            "skipped": self.skipped,
            "unwritten_count": self.unwritten_count,
            "unwritten": self.unwritten,
            "dropped_frames": self.dropped_frames,
            "reconnects": self.reconnects,
            "lost": self.lost,
            "interrupted": self.interrupted,
            "seconds": round(seconds, 3),
            "per_second": round(done / seconds, 3) if seconds > 0 else None,
            **({"tracking": self.tracking} if self.tracking is not None else {}),
            **({"postprocess": self.postprocess} if self.postprocess is not None else {}),
        }

    def text(self) -> str:
        d = self.to_dict()
        per_class = ", ".join(f"{n} {c}" for n, c in d["detections"].items()) or "none"
        lines = [
            f"{d['images']} images, {d['frames']} frames in {d['seconds']:.1f} s "
            f"({d['per_second'] or 0:.1f}/s){' (interrupted)' if d['interrupted'] else ''}",
            f"detections: {sum(self.detections.values())} ({per_class})",
        ]
        if d["dropped_frames"] or d["reconnects"]:
            lines.append(
                f"live: {d['dropped_frames']} frames dropped (newest-frame policy), "
                f"{d['reconnects']} reconnects"
            )
        lines += [f"ended: {lost}" for lost in self.lost]
        for name, track in ((self.tracking or {}).get("sources") or {}).items():
            counts = track.get("counts", {})
            line = counts.get("line")
            lines.append(
                f"{name}: {track['tracks']} tracks"
                + (f", line in {line['in']} out {line['out']}" if line else "")
                + (f", zone max {counts['zone']['max']}" if "zone" in counts else "")
            )
        if self.skipped_count:
            lines.append(f"skipped {self.skipped_count}: " + "; ".join(self.skipped[:5]))
        if self.unwritten_count:
            lines.append(
                f"output files not written {self.unwritten_count}: " + "; ".join(self.unwritten[:5])
            )
        return "\n".join(lines)
