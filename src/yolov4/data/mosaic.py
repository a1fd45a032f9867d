"""darknet's mosaic, crop, flip and random scale/translate with the geometry done once per sample.

Each image is resized once, when it is decoded (:meth:`TrainGeometry.resize`). With darknet's
crop (``jitter``, ``augment=darknet`` and the recipes) a sample follows darknet's
``load_data_detection``, each image kept at its decoded size (at most ``COVER_LIMIT`` input
sides long):

* single: one crop (:mod:`yolov4.data.darknet_crop`: each side in or out by its own draw, in
  the image's pixels; widened to keep the aspect ratio in letterbox mode) and one flip, the crop
  stretched to the output by ONE ``cv2.warpAffine``, the border it uncovers the image's mean
  colour;
* mosaic (darknet ``mosaic=1``): a cut point drawn in ``mosaic_center`` of the output, and four
  pieces around it (the sample top left, three donors), each with its own crop, flip and colour
  draw (:attr:`TrainSample.pieces`); each piece's crop is stretched to the whole output and the
  part of it next to the cut is shown, the image's edge moved to the cut where the crop left a
  border, as darknet does (:func:`~yolov4.data.darknet_crop.cut_offset`): ONE warp per piece.

Without ``jitter`` (``augment=basic``) the image is resized to cover one ``(H, W)`` mosaic cell
(``max(H / H0, W / W0)``) when mosaic is on, else to THE letterbox/stretch scale of
:func:`yolov4.ops.letterbox.letterbox_params`, and a sample takes one of two paths:

* mosaic: a split point drawn in ``mosaic_center`` of the output cuts it into four slices; each
  holds one ``(H, W)`` cell of an image, drawn at random in the image resized to cover it (every
  part of a non-square image gets its turn), with the cell's inner corner at the split point
  (the sample itself in the largest slice, three donors at random in the others); the slices
  are pasted into one ``(H, W)`` canvas, and that canvas goes through ONE ``cv2.warpAffine``;
* single: the resized image goes through ONE ``cv2.warpAffine`` that places it as the
  letterbox would (no warp at all when the random affine is the identity: then the sample is
  exactly :func:`~yolov4.core.preprocess.preprocess`'s image).

That warp is the random affine (zoom ``scale`` about the centre, shift ``translate`` of the
size) composed with the horizontal flip (``flip``); the boxes go through the same matrix. Box
rules (:func:`~yolov4.data.affine.clip_filter`), as albumentations' ``BboxParams(clip=True,
min_area, min_visibility)`` applied after the placement and after the affine: boxes are clipped
to their slice and dropped under ``min_area`` px² (a mosaic's cut keeps any part of a box, as
darknet's and the albumentations pipeline's); after the affine (darknet: the crop) they are
clipped to the image and dropped under ``min_area`` px² or when less than ``min_visibility`` of
their area (as placed) is left; a box under :data:`~yolov4.data.records.MIN_BOX_SIDE` px wide or
high is dropped at a cut and after the affine (a sliver at a cut, 140 x 0.3 px, is no object).
Coordinates are continuous pixels (the image spans ``[0, W] x [0, H]``; :mod:`yolov4.data.affine`
maps them).
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from typing import NamedTuple

import cv2
import numpy as np

from yolov4.data.affine import clip_filter, pixel_matrix, transform_boxes
from yolov4.data.darknet_crop import (
    crop_matrix,
    cut_offset,
    cut_point,
    draw_crop,
    letterbox_crop,
    to_corner,
)
from yolov4.ops.letterbox import letterbox_params

__all__ = ["MOSAIC_DONORS", "Placed", "TrainGeometry", "TrainSample"]

MOSAIC_GRID = (2, 2)  # darknet mosaic=1: four images
MOSAIC_DONORS = MOSAIC_GRID[0] * MOSAIC_GRID[1] - 1
COVER_LIMIT = 4  # an image resized at decode is at most this many input sides (cells) long


class TrainSample(NamedTuple):
    """One training sample out of :class:`TrainGeometry`."""

    image: np.ndarray  # (H, W, 3) uint8 RGB
    boxes: np.ndarray  # (N, 4) float32 xyxy pixels
    labels: np.ndarray  # (N,) int64
    mask: np.ndarray | None  # (H, W) uint8, when the inputs had one
    # (x1, y1, x2, y2) windows that each take their own colour draw (darknet's mosaic pieces)
    pieces: tuple[tuple[int, int, int, int], ...]


class Placed(NamedTuple):
    """An image resized at decode for training, with its annotations in its own pixels."""

    image: np.ndarray  # (h, w, 3) uint8 RGB, the original resized by `scale`
    boxes: np.ndarray  # (N, 4) float32 xyxy pixels of `image`
    labels: np.ndarray  # (N,) int64
    scale: tuple[float, float]  # (x, y): original pixels → `image` pixels
    original_size: tuple[int, int]  # (H0, W0)
    mask: np.ndarray | None = None  # (h, w) uint8, follows the geometry (tests track shapes)


class TrainGeometry:
    """The geometric half of the training augmentation (:mod:`yolov4.data.transforms` builds the
    photometric half), for output ``input_size`` ``(H, W)``.

    Args:
        mosaic: probability of a mosaic (images are resized at decode to cover a cell when > 0).
        mosaic_center: range of the split point, as a fraction of the output, per axis.
        scale: zoom range of the random affine; translate: shift range, fraction of the size.
        jitter, resize: darknet's crop, per image and per mosaic piece, in place of ``scale``
            and ``translate`` (``jitter`` ``None``: off;
            :class:`~yolov4.data.transforms.AugmentConfig`).
        flip: probability of a horizontal flip.
        min_area, min_visibility: the box rules (module docstring).
        input_size: ``(H, W)``; resize_mode: ``letterbox`` or ``stretch`` (single path);
        pad_value: the border's uint8 value.
    """

    def __init__(
        self,
        *,
        mosaic: float,
        mosaic_center: Sequence[float],
        scale: Sequence[float],
        translate: float,
        flip: float,
        min_area: float,
        min_visibility: float,
        input_size: Sequence[int],
        resize_mode: str = "letterbox",
        pad_value: int = 114,
        jitter: float | None = None,
        resize: float = 1.0,
    ) -> None:
        self.mosaic, self.mosaic_center = float(mosaic), tuple(float(v) for v in mosaic_center)
        self.scale, self.translate = tuple(float(v) for v in scale), float(translate)
        self.jitter = None if jitter is None else float(jitter)
        self.crop_resize = float(resize)  # (self.resize is the decode-time resize)
        self.flip = float(flip)
        self.min_area, self.min_visibility = float(min_area), float(min_visibility)
        self.input_size = tuple(int(s) for s in input_size)
        self.resize_mode, self.pad_value = resize_mode, int(pad_value)

    # ---------------------------------------------------------------- decode-time resize
    def decode_scale(self, original_size: Sequence[int]) -> tuple[float, float]:
        """``(x, y)`` scale an image of ``original_size`` ``(H0, W0)`` is resized by at decode."""
        (h, w), (h0, w0) = self.input_size, original_size
        if self.jitter is not None:  # darknet crops the decoded image itself, at any size
            if self.resize_mode == "stretch":  # each axis stretched anyway: limited on its own
                return min(1.0, COVER_LIMIT * w / w0), min(1.0, COVER_LIMIT * h / h0)
            s = min(1.0, COVER_LIMIT * max(h, w) / max(h0, w0))
            return s, s
        if self.mosaic > 0:  # cover a cell (albumentations' Mosaic fit_mode="cover")
            # an image longer than COVER_LIMIT cells (a 60:1 strip) covers less: its cover
            # resize would be tens of thousands of pixels long (cv2's warps stop at 32767)
            s = min(max(h / h0, w / w0), COVER_LIMIT * max(h, w) / max(h0, w0))
            return s, s
        p = letterbox_params((h0, w0), self.input_size, self.resize_mode)
        return p.scale_x, p.scale_y

    def resize(
        self,
        image: np.ndarray,
        boxes: np.ndarray,
        labels: np.ndarray,
        mask: np.ndarray | None = None,
        rng: random.Random | None = None,
    ) -> Placed:
        """Decoded ``(H0, W0, 3)`` uint8 image + ``(N, 4)`` xyxy boxes → :class:`Placed`, resized
        as :func:`~yolov4.core.preprocess.resize_image` resizes (bilinear, sides rounded).

        With ``mosaic >= 1`` only one ``(H, W)`` cell of the covering image is ever used, so
        only that window is resized: at a random place drawn from ``rng`` (the top-left one
        without), so that every part of a non-square image is trained on."""
        h0, w0 = image.shape[:2]
        sx, sy = self.decode_scale((h0, w0))
        x0 = y0 = 0
        if self.mosaic >= 1.0 and self.jitter is None:
            h, w = self.input_size
            ch, cw = min(h0, math.ceil(h / sy) + 1), min(w0, math.ceil(w / sx) + 1)
            if rng is not None:
                x0, y0 = rng.randint(0, w0 - cw), rng.randint(0, h0 - ch)
            image = image[y0 : y0 + ch, x0 : x0 + cw]
            if mask is not None:
                mask = mask[y0 : y0 + ch, x0 : x0 + cw]
        ch, cw = image.shape[:2]
        size = (max(1, round(cw * sx)), max(1, round(ch * sy)))
        if size != (cw, ch):
            image = cv2.resize(image, size, interpolation=cv2.INTER_LINEAR)
            if mask is not None:
                mask = cv2.resize(mask, size, interpolation=cv2.INTER_NEAREST)
        boxes = np.asarray(boxes, np.float32).reshape(-1, 4) - np.float32([x0, y0, x0, y0])
        boxes = boxes * np.float32([sx, sy, sx, sy])
        labels = np.asarray(labels, np.int64).reshape(-1)
        return Placed(image, boxes, labels, (sx, sy), (h0, w0), mask)

    # ---------------------------------------------------------------- random parameters
    def affine(self, rng: random.Random) -> tuple[np.ndarray, bool]:
        """The random 3x3 map of continuous coordinates of ``augment=basic``: zoom about the
        centre by ``U(scale)``, shift by ``int(U(-t, t) * side)`` px per axis (as
        ``A.Affine(scale, translate_percent, keep_ratio=True)``), then a horizontal flip with
        probability ``flip``; and whether it is the identity."""
        h, w = self.input_size
        s = rng.uniform(*self.scale)
        tx = int(rng.uniform(-self.translate, self.translate) * w)
        ty = int(rng.uniform(-self.translate, self.translate) * h)
        m = np.array([[s, 0, (1 - s) * w / 2 + tx], [0, s, (1 - s) * h / 2 + ty], [0, 0, 1.0]])
        identity = s == 1.0 and tx == 0 and ty == 0
        flip = self.flip > 0 and rng.random() < self.flip
        if flip:
            m = np.array([[-1.0, 0, w], [0, 1.0, 0], [0, 0, 1.0]]) @ m
        return m, identity and not flip

    def split_point(self, rng: random.Random) -> tuple[int, int]:
        """``(x, y)`` where the four mosaic slices meet: ``side - int((side + 1) * U(center))``
        per axis (albumentations' ``calculate_mosaic_center_point`` for a ``(H, W)`` crop of
        the 2x2 grid of ``(H, W)`` cells)."""
        h, w = self.input_size
        xs = w - int((w + 1) * rng.uniform(*self.mosaic_center))
        ys = h - int((h + 1) * rng.uniform(*self.mosaic_center))
        return min(max(xs, 0), w), min(max(ys, 0), h)

    # ---------------------------------------------------------------- one sample
    def __call__(
        self, rng: random.Random, primary: Placed, donors: Sequence[Placed] | None = None
    ) -> TrainSample:
        """One training sample (:class:`TrainSample`). ``donors`` (up to three; missing ones
        repeat ``primary``) make it a mosaic, ``None`` the single path."""
        h, w = self.input_size
        if self.jitter is not None:
            if donors is None:
                return self._darknet(rng, [primary], [(0, 0, w, h)], None)
            items = [primary, *list(donors)[:MOSAIC_DONORS]]
            items += [primary] * (MOSAIC_DONORS + 1 - len(items))  # too few donors: repeat
            cut = cut_point(rng, self.input_size, self.mosaic_center)
            cx, cy = cut
            windows = [(0, 0, cx, cy), (cx, 0, w, cy), (0, cy, cx, h), (cx, cy, w, h)]
            return self._darknet(rng, items, windows, cut)
        if donors is None:
            canvas, mask, boxes, labels, m0 = self._single(primary)
        else:
            canvas, mask, boxes, labels = self._mosaic(rng, primary, donors)
            m0 = np.eye(3)
        a, identity = self.affine(rng)
        whole = ((0, 0, w, h),)
        shift_only = m0[0, 0] == 1.0 and m0[1, 1] == 1.0 and not (m0[:2, 2] % 1).any()
        if shift_only and identity:  # no resampling: exactly the placement
            image = canvas if canvas.shape[:2] == (h, w) else self._paste(canvas, m0)
            mask = mask if mask is None or mask.shape == (h, w) else self._paste(mask, m0, 0)
            return TrainSample(image, boxes, labels, mask, whole)
        pm = pixel_matrix(a @ m0)[:2]
        image = cv2.warpAffine(
            canvas, pm, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT,
            borderValue=(self.pad_value,) * 3,
        )  # fmt: skip
        if mask is not None:
            mask = cv2.warpAffine(mask, pm, (w, h), flags=cv2.INTER_NEAREST, borderValue=0)
        moved = transform_boxes(boxes, a)
        clipped, keep = clip_filter(moved, (0, 0, w, h), self.min_area, self.min_visibility)
        return TrainSample(image, clipped[keep].astype(np.float32), labels[keep], mask, whole)

    def _darknet(
        self,
        rng: random.Random,
        items: Sequence[Placed],
        windows: Sequence[tuple[int, int, int, int]],
        cut: tuple[int, int] | None,
    ) -> TrainSample:
        """darknet's ``load_data_detection`` with ``jitter``: each item (one, or four around
        ``cut``) gets its own crop (:func:`~yolov4.data.darknet_crop.draw_crop`, in its original
        pixels; :func:`~yolov4.data.darknet_crop.letterbox_crop` in letterbox mode) and flip,
        stretched to the output; a mosaic piece shows the part of it that
        :func:`~yolov4.data.darknet_crop.cut_offset` puts in its ``window``, its crop moved to
        the image's outer corner half of the time. One ``cv2.warpAffine`` per piece, the border
        its image's mean colour; its boxes through the same matrix, ``min_visibility`` measured
        against the crop and any part of a box kept at the cut."""
        h, w = self.input_size
        canvas = np.empty((h, w, 3), np.uint8)
        with_mask = items[0].mask is not None
        mask = np.zeros((h, w), np.uint8) if with_mask else None
        boxes, labels, shown = [np.zeros((0, 4), np.float32)], [np.zeros(0, np.int64)], []
        for piece, (item, window) in enumerate(zip(items, windows, strict=True)):
            x1, y1, x2, y2 = window
            if x2 <= x1 or y2 <= y1:
                continue
            crop = draw_crop(rng, item.original_size, self.jitter, self.crop_resize)
            if self.resize_mode == "letterbox":
                crop = letterbox_crop(crop, item.original_size, self.input_size)
            flip = self.flip > 0 and rng.random() < self.flip
            dx = dy = 0
            if cut is not None:
                crop = to_corner(crop, piece, flip) if rng.random() < 0.5 else crop
                dx, dy = cut_offset(crop, item.original_size, self.input_size, cut, piece, flip)
            placed = np.diag([1 / item.scale[0], 1 / item.scale[1], 1.0])  # → original pixels
            m = crop_matrix(crop, item.original_size, self.input_size, flip) @ placed
            m[:2, 2] -= (dx, dy)  # → canvas pixels
            pm, size = pixel_matrix(m)[:2], (x2 - x1, y2 - y1)
            pm[:, 2] -= (x1, y1)  # → the window's own pixels
            border = cv2.mean(item.image)[:3]  # darknet fills the crop's border with it
            canvas[y1:y2, x1:x2] = cv2.warpAffine(
                item.image, pm, size, flags=cv2.INTER_LINEAR, borderValue=border
            )
            if with_mask and item.mask is not None:
                mask[y1:y2, x1:x2] = cv2.warpAffine(
                    item.mask, pm, size, flags=cv2.INTER_NEAREST, borderValue=0
                )
            cropped = (-dx, -dy, w - dx, h - dy)  # the piece's whole output on the canvas
            moved, keep = clip_filter(
                transform_boxes(item.boxes, m), cropped, self.min_area, self.min_visibility
            )
            moved, kept = clip_filter(moved[keep], window, self.min_area, 0.0)
            boxes.append(moved[kept].astype(np.float32))
            labels.append(item.labels[keep][kept])
            shown.append(window)
        return TrainSample(canvas, np.concatenate(boxes), np.concatenate(labels), mask,
                           tuple(shown))  # fmt: skip

    def _paste(self, image: np.ndarray, m0: np.ndarray, fill: int | None = None) -> np.ndarray:
        """``image`` placed at the integer offset of ``m0`` on an ``(H, W)`` canvas."""
        h, w = self.input_size
        fill = self.pad_value if fill is None else fill
        canvas = np.full((h, w, *image.shape[2:]), fill, image.dtype)
        px, py = int(round(m0[0, 2])), int(round(m0[1, 2]))
        ih, iw = image.shape[:2]
        canvas[py : py + ih, px : px + iw] = image[: h - py, : w - px]
        return canvas

    def _single(self, item: Placed):
        """The letterbox/stretch placement of ``item`` as a map ``m0`` from its pixels to the
        output; boxes come back in the output's pixels (placed), ready for the affine."""
        p = letterbox_params(item.original_size, self.input_size, self.resize_mode)
        rx, ry = p.scale_x / item.scale[0], p.scale_y / item.scale[1]
        m0 = np.array([[rx, 0, p.pad_x], [0, ry, p.pad_y], [0, 0, 1.0]])
        placed = transform_boxes(item.boxes, m0)
        h, w = self.input_size
        # the placement scales, it cuts nothing: a small image's small boxes stay (as preprocess)
        placed, keep = clip_filter(placed, (0, 0, w, h), self.min_area, 0.0, min_side=0.0)
        return item.image, item.mask, placed[keep], item.labels[keep], m0

    def _mosaic(self, rng: random.Random, primary: Placed, donors: Sequence[Placed]):
        h, w = self.input_size
        xs, ys = self.split_point(rng)
        # slices (x1, y1, x2, y2) and the item's corner that sits at the split point
        slices = [(0, 0, xs, ys), (xs, 0, w, ys), (0, ys, xs, h), (xs, ys, w, h)]
        slices = [s for s in slices if s[2] > s[0] and s[3] > s[1]]
        items = [primary, *list(donors)[:MOSAIC_DONORS]]
        items += [primary] * (MOSAIC_DONORS + 1 - len(items))  # too few donors: repeat
        largest = max(slices, key=lambda s: (s[2] - s[0]) * (s[3] - s[1]))
        order = list(range(1, len(items)))
        rng.shuffle(order)
        assign = {largest: 0} | dict(zip([s for s in slices if s != largest], order, strict=False))
        canvas = np.full((h, w, 3), self.pad_value, np.uint8)
        mask = None if primary.mask is None else np.zeros((h, w), np.uint8)
        all_boxes, all_labels = [], []
        for (x1, y1, x2, y2), k in assign.items():
            item = items[k]
            ih, iw = item.image.shape[:2]
            # the item's (H, W) cell (smaller for an image that covers less), at a random place
            # in it, sits with its inner corner at the split point, opposite its slice
            cw, ch = min(w, iw), min(h, ih)
            wx, wy = rng.randint(0, iw - cw), rng.randint(0, ih - ch)
            dx = x2 - cw if x2 == xs else x1  # where the cell's left/top edge lands
            dy = y2 - ch if y2 == ys else y1
            vx1, vy1, vx2, vy2 = max(x1, dx), max(y1, dy), min(x2, dx + cw), min(y2, dy + ch)
            if vx2 <= vx1 or vy2 <= vy1:
                continue
            src = (slice(vy1 - dy + wy, vy2 - dy + wy), slice(vx1 - dx + wx, vx2 - dx + wx))
            canvas[vy1:vy2, vx1:vx2] = item.image[src]
            if mask is not None and item.mask is not None:
                mask[vy1:vy2, vx1:vx2] = item.mask[src]
            if len(item.boxes):
                shift = np.float32([dx - wx, dy - wy, dx - wx, dy - wy])
                window = (vx1, vy1, vx2, vy2)
                clipped, keep = clip_filter(item.boxes + shift, window, self.min_area, 0.0)
                all_boxes.append(clipped[keep])
                all_labels.append(item.labels[keep])
        boxes = np.concatenate(all_boxes) if all_boxes else np.zeros((0, 4), np.float32)
        labels = np.concatenate(all_labels) if all_labels else np.zeros((0,), np.int64)
        return canvas, mask, boxes, labels
