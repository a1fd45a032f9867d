"""Detections drawn on an image: what predict.py's annotated files and the service's
``?render=true`` JPEG show.

Each box is outlined in its class's colour with a ``name score`` label (``#id name score`` for
tracked detections) filled in that colour above its top-left corner, shifted inside the image
where it would leave it (a box at the right edge: its label ends at the edge; at the top: the
label goes inside the box), as ultralytics' ``Annotator``. Boxes are drawn lowest
score first, so where boxes and labels overlap (darknet's multi-label output gives one object a
box per class above ``conf``), the best one is on top.
"""

from __future__ import annotations

from typing import Any

import cv2
import numpy as np

__all__ = ["PALETTE", "draw_detections"]

# one colour per class id, cycling (RGB; matplotlib's "tab10" palette)
PALETTE = ((31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189),
           (140, 86, 75), (227, 119, 194), (127, 127, 127), (188, 189, 34), (23, 190, 207))  # fmt: skip
TEXT_COLOR = (255, 255, 255)
FONT = cv2.FONT_HERSHEY_SIMPLEX


def draw_detections(image: np.ndarray, dets: Any) -> np.ndarray:
    """A copy of ``image`` ``(H, W, 3)`` uint8 RGB with ``dets``' boxes and labels drawn.

    Args:
        image: ``(H, W, 3)`` uint8 RGB, the image the detections are in the pixels of.
        dets: a :class:`~yolov4.inference.Detections` (``boxes (K, 4)`` xyxy, ``scores (K,)``,
            ``class_ids (K,)``, ``class_names``; ``track_ids (K,)`` when tracked, -1 for none).

    Returns:
        ``(H, W, 3)`` uint8 RGB; the highest-scoring box and label drawn last (on top), the
        first of equal scores on top of the later ones.
    """
    out = np.ascontiguousarray(image).copy()
    thick = max(1, round(max(out.shape[:2]) / 400))
    scale = max(0.35, max(out.shape[:2]) / 1600)
    scores = np.asarray(dets.scores, dtype=np.float64).reshape(-1)
    ids = dets.track_ids if getattr(dets, "track_ids", None) is not None else [-1] * len(scores)
    # best first (stable: the given order among equals), then reversed: the best is drawn last
    for k in np.argsort(-scores, kind="stable")[::-1]:
        color = PALETTE[int(dets.class_ids[k]) % len(PALETTE)]
        x1, y1, x2, y2 = (int(round(float(v))) for v in dets.boxes[k])
        cv2.rectangle(out, (x1, y1), (x2, y2), color, thick)
        tid = int(ids[k])
        label = (f"#{tid} " if tid >= 0 else "") + f"{dets.class_names[k]} {scores[k]:.2f}"
        (tw, th), base = cv2.getTextSize(label, FONT, scale, 1)
        top = max(0, y1 - th - base - 2)
        left = max(0, min(x1, out.shape[1] - 1 - (tw + 4)))  # the label's last column inside
        cv2.rectangle(out, (left, top), (left + tw + 4, top + th + base + 2), color, -1)
        cv2.putText(out, label, (left + 2, top + th + 1), FONT, scale, TEXT_COLOR, 1, cv2.LINE_AA)
    return out
