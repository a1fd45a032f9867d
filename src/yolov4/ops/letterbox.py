"""Letterbox / stretch resize geometry: pure numbers and tensors, no image IO, no state.

An original image of size ``(H0, W0)`` is resized to the network input ``(H, W)`` either

* ``letterbox``: one scale ``r = min(H / H0, W / W0)`` for both axes (aspect ratio kept), the
  resized image ``(round(H0 * r), round(W0 * r))`` centred and the border padded; or
* ``stretch``: each axis scaled independently to fill ``(H, W)`` (darknet's own ``resize_image``,
  what the published darknet weights were trained with), no padding.

Both are the affine map ``x_in = x0 * scale_x + pad_x``, ``y_in = y0 * scale_y + pad_y``; the
parameters are a :class:`LetterboxParams`. Boxes are ``xyxy`` in pixels, ``x1 <= x2``,
``y1 <= y2``. Functions never modify their inputs and accept ``torch.Tensor`` or
``numpy.ndarray`` boxes, returning the same type.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple, TypeVar

import numpy as np
import torch

__all__ = [
    "RESIZE_MODES",
    "LetterboxParams",
    "letterbox_params",
    "map_boxes",
    "unmap_boxes",
    "unmap_detections",
    "image_windows",
]

RESIZE_MODES = ("letterbox", "stretch")

BoxArray = TypeVar("BoxArray", torch.Tensor, np.ndarray)


class LetterboxParams(NamedTuple):
    """The affine map original pixels → input pixels: ``x_in = x0 * scale_x + pad_x``.

    ``pad_x``/``pad_y`` are the left/top padding in input pixels (0 for stretch).
    """

    scale_x: float
    scale_y: float
    pad_x: float
    pad_y: float

    def to_dict(self) -> dict[str, float]:
        return {k: float(v) for k, v in self._asdict().items()}


def letterbox_params(
    original_hw: Sequence[int], target_hw: Sequence[int], mode: str = "letterbox"
) -> LetterboxParams:
    """Parameters of the resize from ``original_hw = (H0, W0)`` to ``target_hw = (H, W)``.

    In ``letterbox`` mode the resized content is ``(round(H0 * r), round(W0 * r))`` pixels with
    ``r = min(H / H0, W / W0)``, placed at integer offset ``((W - w) // 2, (H - h) // 2)``; the
    scales are the exact ratios of resized to original size so the image and the boxes move
    together. ``stretch`` uses ``(H / H0, W / W0)`` and no padding.
    """
    h0, w0 = (int(v) for v in original_hw)
    h, w = (int(v) for v in target_hw)
    if min(h0, w0, h, w) <= 0:
        raise ValueError(f"expected positive sizes, got original {(h0, w0)} and target {(h, w)}")
    if mode == "stretch":
        return LetterboxParams(w / w0, h / h0, 0.0, 0.0)
    if mode != "letterbox":
        raise ValueError(f"unknown resize mode {mode!r}; expected one of {RESIZE_MODES}")
    r = min(h / h0, w / w0)
    new_w, new_h = min(w, max(1, round(w0 * r))), min(h, max(1, round(h0 * r)))
    return LetterboxParams(new_w / w0, new_h / h0, float((w - new_w) // 2), float((h - new_h) // 2))


def _affine(boxes: BoxArray, mul: Sequence[float], add: Sequence[float]) -> BoxArray:
    """``boxes[..., :4] * mul + add`` (per column), other columns copied unchanged."""
    if isinstance(boxes, torch.Tensor):
        out = boxes.clone()
        coords = boxes[..., :4].to(torch.float64) * boxes.new_tensor(mul, dtype=torch.float64)
        out[..., :4] = (coords + boxes.new_tensor(add, dtype=torch.float64)).to(out.dtype)
        return out
    out = np.array(boxes, copy=True)
    out[..., :4] = boxes[..., :4] * np.asarray(mul) + np.asarray(add)
    return out


def _clip(boxes: BoxArray, hw: Sequence[float]) -> BoxArray:
    """Clip ``boxes[..., :4]`` (xyxy) into ``[0, W] x [0, H]`` in place and return it."""
    h, w = float(hw[0]), float(hw[1])
    if isinstance(boxes, torch.Tensor):
        boxes[..., 0:4:2] = boxes[..., 0:4:2].clamp(0.0, w)
        boxes[..., 1:4:2] = boxes[..., 1:4:2].clamp(0.0, h)
        return boxes
    boxes[..., 0:4:2] = np.clip(boxes[..., 0:4:2], 0.0, w)
    boxes[..., 1:4:2] = np.clip(boxes[..., 1:4:2], 0.0, h)
    return boxes


def map_boxes(boxes: BoxArray, params: LetterboxParams) -> BoxArray:
    """Original-image pixels → network-input pixels.

    Args:
        boxes: ``(..., 4+)`` xyxy pixel boxes of the original image; columns after the 4th
            (score, class, ...) are copied unchanged.
        params: from :func:`letterbox_params` for this image.

    Returns:
        A new array/tensor of the same shape and dtype.
    """
    sx, sy, px, py = params
    return _affine(boxes, (sx, sy, sx, sy), (px, py, px, py))


def unmap_boxes(
    boxes: BoxArray, params: LetterboxParams, original_hw: Sequence[int] | None = None
) -> BoxArray:
    """Network-input pixels → original-image pixels, the inverse of :func:`map_boxes`.

    Args:
        boxes: ``(..., 4+)`` xyxy boxes in input pixels; extra columns are copied unchanged.
        params: the :class:`LetterboxParams` the image was preprocessed with.
        original_hw: ``(H0, W0)``; when given, boxes are clipped to ``[0, W0] x [0, H0]``.
    """
    sx, sy, px, py = params
    out = _affine(boxes, (1 / sx, 1 / sy, 1 / sx, 1 / sy), (-px / sx, -py / sy, -px / sx, -py / sy))
    return out if original_hw is None else _clip(out, original_hw)


def unmap_detections(
    detections: Sequence[BoxArray],
    params: Sequence[LetterboxParams] | torch.Tensor,
    original_hw: Sequence[Sequence[int]] | torch.Tensor,
) -> list[BoxArray]:
    """Per-image :func:`unmap_boxes` over a batch, clipping each to its own original size.

    Args:
        detections: ``B`` arrays ``(K_i, 4+)`` xyxy in input pixels, e.g. postprocess's
            ``(K_i, 6)`` ``[x1, y1, x2, y2, score, class_index]``; ``K_i`` may be 0.
        params: ``B`` :class:`LetterboxParams`, or a ``(B, 4)`` tensor of them
            (``[scale_x, scale_y, pad_x, pad_y]`` per row, as a collated batch carries them).
        original_hw: ``B`` pairs ``(H0, W0)`` or a ``(B, 2)`` tensor.

    Returns:
        ``B`` new arrays ``(K'_i, 4+)``, boxes in original-image pixels; a row whose box has no
        area once clipped (wholly in the letterbox padding) is dropped.
    """
    if len(detections) != len(params) or len(detections) != len(original_hw):
        raise ValueError(
            f"expected as many letterbox params ({len(params)}) and original sizes "
            f"({len(original_hw)}) as images ({len(detections)})"
        )
    out = []
    for det, p, hw in zip(detections, params, original_hw, strict=True):
        p = LetterboxParams(*(float(v) for v in p))
        boxes = unmap_boxes(det, p, [float(v) for v in hw])
        out.append(boxes[(boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])])
    return out


def image_windows(
    params: Sequence[LetterboxParams] | torch.Tensor,
    original_hw: Sequence[Sequence[int]] | torch.Tensor,
) -> torch.Tensor:
    """``(B, 4)`` float32 ``[x1, y1, x2, y2]``: where each original image lies in the input
    (inside the letterbox padding), from its :class:`LetterboxParams` (or a ``(B, 4)`` tensor of
    them) and ``(H0, W0)``; the postprocess drops boxes outside it before ``max_det``."""
    out = []
    for p, (h, w) in zip(params, original_hw, strict=True):
        sx, sy, px, py = (float(v) for v in p)
        out.append([px, py, px + float(w) * sx, py + float(h) * sy])
    return torch.tensor(out, dtype=torch.float32).reshape(-1, 4)
