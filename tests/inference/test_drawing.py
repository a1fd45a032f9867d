"""Annotated outputs (predict.py's files, the service's ``?render=true`` JPEG): where a
multi-label model gives one object two boxes, the best box's label is the one shown."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from yolov4.inference.drawing import PALETTE, draw_detections
from yolov4.inference.predictor import Detections
from yolov4.serve.render import render_jpeg

BOX = [40.0, 60.0, 150.0, 130.0]  # one object, two classes: the labels share a corner
LABEL_PIXEL = (50, 41)  # (row, column): the label's padding left of its text, above the box


def two_labels(best_first: bool) -> Detections:
    """``rectangle 0.55`` (class 1) and ``triangle 0.26`` (class 2) on one box, listed in
    either order."""
    rows = [(0.55, 1, "rectangle"), (0.26, 2, "triangle")]
    rows = rows if best_first else rows[::-1]
    return Detections(
        np.array([BOX, BOX], np.float32),
        np.array([s for s, _, _ in rows], np.float32),
        np.array([c for _, c, _ in rows]),
        [n for _, _, n in rows],
        (200, 240),
    )


def nearest_class(pixel: np.ndarray) -> int:
    return int(np.argmin([np.abs(pixel.astype(int) - c).sum() for c in PALETTE]))


@pytest.mark.parametrize("best_first", [True, False])
def test_the_best_label_is_drawn_on_top(best_first):
    image = np.full((200, 240, 3), 255, np.uint8)
    drawn = draw_detections(image, two_labels(best_first))
    assert tuple(drawn[LABEL_PIXEL]) == PALETTE[1]  # rectangle's colour, not triangle's


def test_the_rendered_jpeg_shows_the_best_label_on_top():
    image = np.full((200, 240, 3), 255, np.uint8)
    jpeg = render_jpeg(image, two_labels(best_first=True), quality=95)
    pixels = np.asarray(Image.open(io.BytesIO(jpeg)).convert("RGB"))
    assert nearest_class(pixels[LABEL_PIXEL]) == 1
    # the label strip itself is where the test looks: its colour is a class colour
    assert np.abs(pixels[LABEL_PIXEL].astype(int) - PALETTE[1]).max() < 24


@pytest.mark.parametrize("x1", [150.0, 200.0, -10.0])
def test_a_label_at_the_images_edge_is_shifted_inside_it_whole(x1):
    """A box near the right edge of a 209-pixel-wide image (or past its left edge): its label's
    fill is as wide as cv2.getTextSize's text plus padding, and its text as wide as the text."""
    import cv2

    from yolov4.inference.drawing import FONT

    image = np.zeros((120, 209, 3), np.uint8)
    dets = Detections(
        np.array([[x1, 50.0, 206.0, 110.0]], np.float32),
        np.array([0.3], np.float32),
        np.array([0]),
        ["circle"],
        (120, 209),
    )
    out = draw_detections(image, dets)
    scale = max(0.35, 209 / 1600)  # draw_detections' font scale for this image
    (tw, th), base = cv2.getTextSize("circle 0.30", FONT, scale, 1)
    band = out[50 - th - base - 2 : 50]  # the rows of the label above the box
    fill = (np.abs(band.astype(int) - PALETTE[0]).sum(-1) == 0).any(0)
    text = (band.min(-1) > 200).any(0)  # the white text's columns
    assert fill.sum() == tw + 5  # the fill (columns left .. left + tw + 4), none cut off
    assert text.nonzero()[0].max() - text.nonzero()[0].min() + 1 >= tw - 2
    left, right = fill.nonzero()[0].min(), fill.nonzero()[0].max()
    assert left == max(0, int(x1)) or right == 208  # at the box's left, or ending at the edge
