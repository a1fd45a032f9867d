"""A generated video of moving shapes with ground-truth track ids, for tracking and counting checks.

Six scripted objects on a plain textured background: two shapes crossing at the same height (the
second passes behind the first: occlusion), shapes entering and leaving through the left, right,
top and bottom borders, one that moves in and stops, and one that appears later. Each frame's
ground truth is every object at least partly inside the frame (boxes clipped to it) with its
track id, class id (the synthetic dataset's class index) and visible fraction (1 minus the part
hidden by shapes drawn in front of it).

    video = make_tracking_video()          # frames + per-frame ground truth
    write_video("shapes.mp4", video.frames, fps=video.fps)
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from yolov4.data.synthetic import SHAPES
from yolov4.errors import ConfigError, InputError

__all__ = [
    "FrameTruth",
    "TrackingVideo",
    "make_tracking_video",
    "noisy_detections",
    "write_video",
]

# (shape, colour RGB, size px, first frame, [(frame, x, y), ...] keyframes of the centre at
# 320 x 240, linearly interpolated; an object exists from its first to its last keyframe).
# Listed back to front: later objects are drawn over earlier ones.
SCRIPT = (
    ("rectangle", (40, 90, 220), 36, [(0, -20, 120), (80, 340, 120)]),  # right, behind the circle
    ("circle", (230, 60, 50), 44, [(0, 340, 120), (80, -20, 120)]),  # left, crosses in front
    ("triangle", (40, 180, 60), 38, [(0, 80, -20), (40, 80, 70), (119, 80, 70)]),  # enters, stops
    ("cross", (200, 160, 20), 34, [(10, 240, 260), (100, 240, -20)]),  # bottom to top
    ("circle", (150, 60, 200), 30, [(30, 260, 50), (90, 40, 200)]),  # diagonal, inside only
    ("rectangle", (20, 170, 190), 30, [(60, -20, 200), (119, 200, 200)]),  # enters late, stays
)
BASE_SIZE = (240, 320)  # (H, W) the script's coordinates refer to


@dataclass
class FrameTruth:
    """One frame's ground truth: ``ids (K,)`` int64, ``boxes (K, 4)`` float32 xyxy clipped to
    the frame, ``class_ids (K,)`` int64, ``visible (K,)`` float32 in [0, 1]."""

    ids: np.ndarray
    boxes: np.ndarray
    class_ids: np.ndarray
    visible: np.ndarray


@dataclass
class TrackingVideo:
    frames: list[np.ndarray] | None  # (H, W, 3) uint8 RGB each, None when not rendered
    truth: list[FrameTruth]
    image_size: tuple[int, int]  # (H, W)
    fps: float


def _centre(keys: list[tuple[int, float, float]], t: int) -> tuple[float, float] | None:
    frames = [k[0] for k in keys]
    if t < frames[0] or t > frames[-1]:
        return None
    return float(np.interp(t, frames, [k[1] for k in keys])), float(
        np.interp(t, frames, [k[2] for k in keys])
    )


def _polygon(shape: str, cx: float, cy: float, r: float) -> np.ndarray:
    if shape == "circle":
        a = np.linspace(0, 2 * np.pi, 40, endpoint=False)
        pts = np.stack([np.cos(a), np.sin(a)], 1)
    elif shape == "rectangle":
        pts = np.array([[-1, -0.7], [1, -0.7], [1, 0.7], [-1, 0.7]])
    elif shape == "triangle":
        pts = np.array([[0, -1], [1, 1], [-1, 1]])
    else:
        t = 0.35
        pts = np.array([[-t, -1], [t, -1], [t, -t], [1, -t], [1, t], [t, t], [t, 1], [-t, 1],
                        [-t, t], [-1, t], [-1, -t], [-t, -t]])  # fmt: skip
    return pts * r + [cx, cy]


def make_tracking_video(
    num_frames: int = 120, scale: float = 1.0, fps: float = 25.0, seed: int = 0, render: bool = True
) -> TrackingVideo:
    """The scripted video at ``scale`` times 320 x 240; ``render=False`` skips drawing frames
    (ground truth only, visible fractions included)."""
    if isinstance(num_frames, bool) or not isinstance(num_frames, int) or num_frames < 1:
        raise ConfigError(f"num_frames: expected an int >= 1, got {num_frames!r}")
    if not scale > 0 or not fps > 0:
        raise ConfigError(f"scale and fps: expected numbers > 0, got {scale!r} and {fps!r}")
    h, w = round(BASE_SIZE[0] * scale), round(BASE_SIZE[1] * scale)
    rng = np.random.default_rng(seed)
    background = cv2.GaussianBlur(rng.integers(90, 170, (h, w, 3), dtype=np.uint8), (0, 0), 3)
    frames: list[np.ndarray] | None = [] if render else None
    truth = []
    for t in range(num_frames):
        image = background.copy() if render else None
        masks = []
        for i, (shape, colour, size, keys) in enumerate(SCRIPT):
            c = _centre(keys, t)
            if c is None:
                continue
            poly = np.round(_polygon(shape, c[0] * scale, c[1] * scale, size * scale / 2))
            mask = np.zeros((h, w), np.uint8)
            cv2.fillPoly(mask, [poly.astype(np.int32)], 1)
            if not mask.any():
                continue
            if image is not None:
                cv2.fillPoly(image, [poly.astype(np.int32)], colour)
            ys, xs = np.nonzero(mask)
            box = [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]
            masks.append((i, SHAPES.index(shape), box, mask))
        rows = []
        for j, (i, cls, box, mask) in enumerate(masks):
            front = np.zeros((h, w), np.uint8)  # shapes drawn over this one
            for *_, other in masks[j + 1 :]:
                front |= other
            visible = (mask & (1 - front)).sum() / mask.sum()
            rows.append((i + 1, box, cls, visible))
        truth.append(
            FrameTruth(
                ids=np.array([r[0] for r in rows], np.int64),
                boxes=np.array([r[1] for r in rows], np.float32).reshape(-1, 4),
                class_ids=np.array([r[2] for r in rows], np.int64),
                visible=np.array([r[3] for r in rows], np.float32),
            )
        )
        if frames is not None:
            noise = rng.normal(0, 4, image.shape)
            frames.append(np.clip(image + noise, 0, 255).astype(np.uint8))
    return TrackingVideo(frames=frames, truth=truth, image_size=(h, w), fps=fps)


def noisy_detections(
    truth: list[FrameTruth],
    jitter: float = 0.04,
    drop: float = 0.1,
    min_visible: float = 0.3,
    seed: int = 0,
) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """A detector's view of the ground truth, per frame ``(boxes (K, 4), scores (K,), class_ids
    (K,))``: objects less than ``min_visible`` visible are missed, a further ``drop`` fraction is
    dropped at random, box corners move by Gaussian noise of ``jitter`` times the box's side and
    scores are uniform in [0.6, 0.95]."""
    rng = np.random.default_rng(seed)
    out = []
    for gt in truth:
        keep = (gt.visible >= min_visible) & (rng.random(len(gt.ids)) >= drop)
        boxes = gt.boxes[keep].astype(np.float64)
        side = boxes[:, 2:] - boxes[:, :2]  # (w, h)
        noise = rng.normal(0, jitter, boxes.shape) * np.concatenate([side, side], 1)
        boxes = boxes + noise
        boxes[:, 2:] = np.maximum(boxes[:, 2:], boxes[:, :2] + 1)
        scores = rng.uniform(0.6, 0.95, len(boxes))
        out.append((boxes.astype(np.float32), scores.astype(np.float32), gt.class_ids[keep]))
    return out


def write_video(path: str | Path, frames: list[np.ndarray], fps: float = 25.0) -> Path:
    """RGB frames to an mp4 (OpenCV's ``mp4v`` codec)."""
    path = Path(path)
    if not frames:
        raise InputError(f"write_video {str(path)!r}: expected at least one frame, got none")
    h, w = frames[0].shape[:2]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (w, h))
    try:
        for frame in frames:
            writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    finally:
        writer.release()
    return path
