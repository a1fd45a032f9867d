"""darknet's jitter crop (``load_data_detection`` in darknet's ``src/data.c``), one image at a
time: the crop drawn in the pixels of the decoded image, its ``letter_box`` form, and where a
mosaic piece shows it around the cut point.

A crop is four integers (:class:`Crop`): how many pixels of the original ``(H0, W0)`` image each
side moves in (negative: out; the part it uncovers is filled with the image's mean colour). The
crop is stretched to the input ``(H, W)`` and then flipped as a whole. In a mosaic, each of the
four pieces is such an ``(H, W)`` output, of which the part that fits its quarter of the canvas
is shown, its image's edge aligned with the cut where the crop left a border
(:func:`cut_offset`). Integers and their truncation toward zero are darknet's.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np

__all__ = [
    "Crop",
    "crop_matrix",
    "cut_offset",
    "cut_point",
    "draw_crop",
    "letterbox_crop",
    "to_corner",
]

# Pieces of a mosaic, as darknet numbers them: 0 top-left, 1 top-right, 2 bottom-left, 3 bottom-right.
LEFT_PIECES, TOP_PIECES = (0, 2), (0, 1)


class Crop(NamedTuple):
    """Pixels of the original image each side of the crop moves in (negative: out)."""

    left: int
    right: int
    top: int
    bottom: int


def draw_crop(rng: random.Random, size: Sequence[int], jitter: float, resize: float) -> Crop:
    """darknet's crop of an image of ``size`` ``(H0, W0)``: each side moves by its own uniform
    draw in ``[-d, d]`` (``d = int(side * jitter)``), truncated to an integer, plus, with
    ``resize`` > 1, a zoom draw in ``[side * (1 - resize) / 2, side * (1 - 1 / resize) / 2]``
    (each end truncated) shared by the left and top sides and another one shared by the right
    and bottom sides; the sum is truncated again."""
    oh, ow = size
    dw, dh = int(ow * jitter), int(oh * jitter)
    zoom_w = (int(ow * (1 - resize) / 2), int(ow * (1 - 1 / resize) / 2))
    zoom_h = (int(oh * (1 - resize) / 2), int(oh * (1 - 1 / resize) / 2))
    near, far = rng.random(), rng.random()  # the zoom draws: left and top, right and bottom

    def side(d: int, zoom: tuple[int, int], r: float) -> int:
        moved = int(-d + rng.random() * 2 * d)
        return int(moved + zoom[0] + r * (zoom[1] - zoom[0]))

    return Crop(side(dw, zoom_w, near), side(dw, zoom_w, far), side(dh, zoom_h, near),
                side(dh, zoom_h, far))  # fmt: skip


def letterbox_crop(crop: Crop, size: Sequence[int], input_size: Sequence[int]) -> Crop:
    """darknet's ``letter_box=1``: the crop grows by the same amount on both ends of the image's
    short side (relative to the input's aspect ratio), so that the image keeps its aspect ratio
    when the crop is stretched to ``input_size`` ``(H, W)``."""
    (oh, ow), (h, w) = size, input_size
    net_ar = w / h
    if ow / oh / net_ar > 1:
        grow = (ow / net_ar - oh) / 2
        return crop._replace(top=int(crop.top - grow), bottom=int(crop.bottom - grow))
    grow = (oh * net_ar - ow) / 2
    return crop._replace(left=int(crop.left - grow), right=int(crop.right - grow))


def to_corner(crop: Crop, piece: int, flip: bool) -> Crop:
    """The crop of mosaic ``piece`` moved, at the same size, to the image's corner on the far
    side from the cut (darknet does it to half of its pieces): the sides facing away from the
    cut move 0, the sides facing it take the whole slack. ``flip``: the image is mirrored after
    the crop, so its left and right swap roles."""
    left, right, top, bottom = crop
    if (piece in LEFT_PIECES) != flip:
        left, right = 0, left + right
    else:
        left, right = left + right, 0
    if piece in TOP_PIECES:
        top, bottom = 0, top + bottom
    else:
        top, bottom = top + bottom, 0
    return Crop(left, right, top, bottom)


def crop_matrix(
    crop: Crop, size: Sequence[int], input_size: Sequence[int], flip: bool
) -> np.ndarray:
    """The 3x3 map of continuous coordinates from the original image of ``size`` ``(H0, W0)`` to
    the crop stretched to ``input_size`` ``(H, W)``, mirrored horizontally when ``flip``."""
    (oh, ow), (h, w) = size, input_size
    sx, sy = w / (ow - crop.left - crop.right), h / (oh - crop.top - crop.bottom)
    m = np.array([[sx, 0, -crop.left * sx], [0, sy, -crop.top * sy], [0, 0, 1.0]])
    if flip:
        m = np.array([[-1.0, 0, w], [0, 1.0, 0], [0, 0, 1.0]]) @ m
    return m


def cut_point(
    rng: random.Random, input_size: Sequence[int], center: Sequence[float]
) -> tuple[int, int]:
    """darknet's cut point ``(x, y)``: an integer uniform in ``[int(side * low), int(side *
    high)]`` per axis (``center`` = ``(low, high)``, darknet's ``[0.2, 0.8]``)."""
    h, w = input_size
    low, high = center
    return rng.randint(int(w * low), int(w * high)), rng.randint(int(h * low), int(h * high))


def cut_offset(
    crop: Crop,
    size: Sequence[int],
    input_size: Sequence[int],
    cut: Sequence[int],
    piece: int,
    flip: bool,
) -> tuple[int, int]:
    """``(dx, dy)`` from canvas pixels to the pixels of mosaic ``piece``'s ``(H, W)`` output (its
    crop stretched, flipped when ``flip``): the piece shows the part of that output next to its
    cut-side edges, moved in by the border the crop left there (so that the image's own edge
    meets the cut), the border measured as darknet measures it (``-side * W // W0``, not the
    stretched border) and at most the width of the piece's quarter."""
    (oh, ow), (h, w), (cx, cy) = size, input_size, cut
    left, right = (crop.right, crop.left) if flip else (crop.left, crop.right)
    if piece in LEFT_PIECES:
        dx = w - cx - min(w - cx, max(0, -right * w // ow))
    else:
        dx = min(cx, max(0, -left * w // ow)) - cx
    if piece in TOP_PIECES:
        dy = h - cy - min(h - cy, max(0, -crop.bottom * h // oh))
    else:
        dy = min(cy, max(0, -crop.top * h // oh)) - cy
    return dx, dy
