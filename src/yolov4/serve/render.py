"""``?render=true``: the uploaded image with its detections drawn, as JPEG bytes."""

from __future__ import annotations

import io
from typing import Any

import numpy as np

from yolov4.inference.drawing import draw_detections

__all__ = ["render_jpeg"]


def render_jpeg(image: np.ndarray, detections: Any, quality: int = 90) -> bytes:
    """Boxes and ``name score`` labels drawn as predict.py draws them
    (:func:`~yolov4.inference.drawing.draw_detections`: the best box on top), encoded.

    Args:
        image: ``(H, W, 3)`` uint8 RGB, the decoded upload (EXIF orientation applied).
        detections: the :class:`~yolov4.inference.Detections` of that image (boxes xyxy in
            its pixels).
        quality: JPEG quality, 1-95.

    Returns:
        The encoded JPEG.
    """
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(draw_detections(image, detections)).save(buf, "JPEG", quality=quality)
    return buf.getvalue()
