"""3x3 affine maps of continuous pixel coordinates (the image spans ``[0, W] x [0, H]``) as
the training geometry (:mod:`yolov4.data.mosaic`) applies them: to images through cv2's
pixel-index form (:func:`pixel_matrix`), to boxes (:func:`transform_boxes`), and the box rules
after a placement, cut or warp (:func:`clip_filter`)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from yolov4.data.records import MIN_BOX_SIDE

__all__ = ["clip_filter", "pixel_matrix", "transform_boxes"]


def pixel_matrix(m: np.ndarray) -> np.ndarray:
    """A 3x3 map of continuous coordinates as cv2's pixel-index map (pixel centres at +0.5)."""
    shift = np.array([[1.0, 0, 0.5], [0, 1.0, 0.5], [0, 0, 1.0]])
    back = np.array([[1.0, 0, -0.5], [0, 1.0, -0.5], [0, 0, 1.0]])
    return back @ m @ shift


def transform_boxes(boxes: np.ndarray, m: np.ndarray) -> np.ndarray:
    """``(N, 4)`` xyxy through the 3x3 affine ``m`` (no rotation: corners stay corners)."""
    x = boxes[:, [0, 2]] * m[0, 0] + m[0, 2]
    y = boxes[:, [1, 3]] * m[1, 1] + m[1, 2]
    return np.stack([x.min(1), y.min(1), x.max(1), y.max(1)], 1)


def _area(boxes: np.ndarray) -> np.ndarray:
    return np.clip(boxes[:, 2] - boxes[:, 0], 0, None) * np.clip(boxes[:, 3] - boxes[:, 1], 0, None)


def clip_filter(
    boxes: np.ndarray,
    window: Sequence[float],
    min_area: float,
    min_visibility: float,
    min_side: float = MIN_BOX_SIDE,
) -> tuple[np.ndarray, np.ndarray]:
    """Clip ``boxes`` to ``window`` ``(x1, y1, x2, y2)``; keep the ones with a positive area of
    at least ``min_area``, both sides at least ``min_side`` px (darknet drops boxes under one
    pixel: a 140 x 0.3 px sliver at a mosaic cut is no object), that keep ``min_visibility`` of
    their area. Returns (clipped, keep)."""
    clipped = np.empty_like(boxes)
    clipped[:, [0, 2]] = np.clip(boxes[:, [0, 2]], window[0], window[2])
    clipped[:, [1, 3]] = np.clip(boxes[:, [1, 3]], window[1], window[3])
    before, after = _area(boxes), _area(clipped)
    sides = np.minimum(clipped[:, 2] - clipped[:, 0], clipped[:, 3] - clipped[:, 1])
    keep = (after > 0) & (after >= min_area) & (after >= min_visibility * before)
    return clipped, keep & (sides >= min_side)
