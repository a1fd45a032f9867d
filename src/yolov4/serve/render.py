"""``?render=true``: the uploaded image with its detections drawn, as JPEG bytes."""

from __future__ import annotations

import io

import numpy as np

__all__ = ["render_jpeg"]

# one colour per class id, cycling (RGB; the "tab10" palette)
PALETTE = (
    (31, 119, 180),
    (255, 127, 14),
    (44, 160, 44),
    (214, 39, 40),
    (148, 103, 189),
    (140, 86, 75),
    (227, 119, 194),
    (127, 127, 127),
    (188, 189, 34),
    (23, 190, 207),
)


def render_jpeg(image: np.ndarray, detections: dict, quality: int = 90) -> bytes:
    """Draw boxes and ``name score`` labels.

    Args:
        image: ``(H, W, 3)`` uint8 RGB, the decoded upload (EXIF orientation applied).
        detections: ``Detections.to_dict()`` of that image (boxes xyxy in its pixels).
        quality: JPEG quality, 1-95.

    Returns:
        The encoded JPEG.
    """
    from PIL import Image, ImageDraw

    im = Image.fromarray(image)
    draw = ImageDraw.Draw(im)
    width = max(1, round(max(im.size) / 400))
    for d in detections["detections"]:
        color = PALETTE[d["class_id"] % len(PALETTE)]
        x1, y1, x2, y2 = d["box"]
        draw.rectangle((x1, y1, x2, y2), outline=color, width=width)
        label = f"{d['class_name']} {d['score']:.2f}"
        left, top, right, bottom = draw.textbbox((x1, y1), label)
        top_y = max(0.0, y1 - (bottom - top) - 2)
        draw.rectangle((x1, top_y, x1 + right - left + 4, top_y + bottom - top + 2), fill=color)
        draw.text((x1 + 2, top_y), label, fill=(255, 255, 255))
    buf = io.BytesIO()
    im.save(buf, "JPEG", quality=quality)
    return buf.getvalue()
