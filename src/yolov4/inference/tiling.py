"""Tiled prediction for small objects in large images (drone, satellite, document scans).

    dets = predict_tiled(predictor, image)              # tiles at the network's input size
    dets = predict_tiled(predictor, image, tile_size=640, overlap=0.25, conf=0.3)

The image is covered by overlapping tiles of ``tile_size`` (the last tile of a row or column is
moved back to end at the image's edge, so every tile has the same size), and the whole image is
added as one more input. Every input runs through the Predictor itself (its preprocess, backend,
postprocess and unmapping, :data:`TILE_BATCH` tiles per backend call), so each tile's boxes come
back in that tile's pixels; they are shifted to the original image and merged:

1. a tile box that touches an inner edge of its tile (an edge that is not the image's edge,
   within :data:`EDGE_MARGIN`) is *cut*: the object may go on in the neighbouring tile;
2. the uncut boxes (the whole-image pass included) are merged by class-wise NMS: the
   Predictor's (:func:`yolov4.ops.postprocess.nms` with its ``nms_kind``, ``beta`` and IoU
   threshold; DIoU on boxes relative to the image, as darknet's);
3. a cut box mostly inside a kept box of its class (intersection over the cut box's area
   >= :data:`CUT_COVERED`) is dropped: the overlap gave that object whole, so a seam leaves no
   duplicate. The other cut boxes (objects larger than the overlap that no pass saw whole) stay,
   merged by NMS with the rest;
4. the best ``max_det`` boxes by score are kept.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torchvision.ops import box_area

from yolov4.errors import ConfigError, InputError
from yolov4.inference.images import load_image
from yolov4.inference.predictor import Detections, Predictor
from yolov4.ops.postprocess import DIOU_BETA, nms

__all__ = [
    "predict_tiled", "tile_grid", "tile_shape", "check_tile_count", "merge_tiles",
    "TILE_BATCH", "MAX_TILES", "EDGE_MARGIN", "CUT_COVERED",
]  # fmt: skip

TILE_BATCH = 16  # tiles per backend call: bounds memory on a 100-megapixel image
MAX_TILES = 10_000  # default bound on one image's tiles (a 30000x30000 image at 416 px, 0.2: 8,100)
EDGE_MARGIN = 0.01  # a box edge within 1% of the tile side (at least 2 px) of an inner edge is cut
CUT_COVERED = 0.5  # a cut box at least half inside a kept whole box is the same object


def _starts(length: int, tile: int, overlap: float) -> list[int]:
    """Tile origins along one axis: step ``tile * (1 - overlap)``, the last at ``length - tile``."""
    if length <= tile:
        return [0]
    step = max(1, int(round(tile * (1 - overlap))))
    n = math.ceil((length - tile) / step) + 1
    return sorted({min(i * step, length - tile) for i in range(n)})


def tile_grid(
    image_hw: Sequence[int], tile_hw: Sequence[int], overlap: float
) -> list[tuple[int, int, int, int]]:
    """Tiles ``(x1, y1, x2, y2)`` in pixels covering an image of ``(H, W)`` with tiles of
    ``(h, w)`` (cut to the image where it is smaller), neighbours overlapping by ``overlap`` of
    the tile side, row by row."""
    (h, w), (th, tw) = image_hw, tile_hw
    th, tw = min(th, h), min(tw, w)
    return [
        (x, y, x + tw, y + th) for y in _starts(h, th, overlap) for x in _starts(w, tw, overlap)
    ]


def check_tile_count(
    image_hw: Sequence[int], tile_hw: Sequence[int], overlap: float, max_tiles: int = MAX_TILES
) -> int:
    """The number of tiles :func:`tile_grid` makes; an :class:`InputError` naming it when it is
    over ``max_tiles`` (counted without building the grid)."""
    count = math.prod(len(_starts(n, min(t, n), overlap)) for n, t in zip(image_hw, tile_hw))
    if count > max_tiles:
        (h, w), (th, tw) = image_hw, tile_hw
        raise InputError(
            f"a {w}x{h} image needs {count:,} tiles of {tw}x{th} at overlap {overlap}, more than "
            f"the limit of {max_tiles:,} (max_tiles): use a larger tile size or a smaller overlap"
        )
    return count


def _cut_mask(boxes: torch.Tensor, tile: Sequence[int], image_hw: Sequence[int]) -> torch.Tensor:
    """``boxes (N, 4)`` xyxy in tile pixels → ``(N,)`` bool: touching an inner edge of ``tile``
    (``(x1, y1, x2, y2)`` in image pixels) of an image of ``(H, W)``."""
    x1, y1, x2, y2 = tile
    h, w = image_hw
    mx = max(2.0, EDGE_MARGIN * (x2 - x1))
    my = max(2.0, EDGE_MARGIN * (y2 - y1))
    cut = torch.zeros(len(boxes), dtype=torch.bool)
    if x1 > 0:
        cut |= boxes[:, 0] <= mx
    if y1 > 0:
        cut |= boxes[:, 1] <= my
    if x2 < w:
        cut |= boxes[:, 2] >= (x2 - x1) - mx
    if y2 < h:
        cut |= boxes[:, 3] >= (y2 - y1) - my
    return cut


def merge_tiles(
    boxes: torch.Tensor,
    scores: torch.Tensor,
    class_ids: torch.Tensor,
    cut: torch.Tensor,
    iou: float,
    max_det: int,
    agnostic: bool = False,
    nms_kind: str = "iou",
    beta: float = DIOU_BETA,
    image_size: tuple[int, int] | None = None,
) -> torch.Tensor:
    """Indices of the boxes to keep, best score first (steps 2-4 of the module docstring).

    Args:
        boxes: ``(N, 4)`` float xyxy in original-image pixels, from every tile and the whole image.
        scores: ``(N,)`` float. class_ids: ``(N,)`` int64.
        cut: ``(N,)`` bool, the box touches an inner tile edge.
        iou: NMS IoU threshold. max_det: the most boxes kept.
        agnostic: boxes of any class suppress and cover each other (``agnostic_nms``).
        nms_kind, beta: the NMS (:func:`yolov4.ops.postprocess.nms`).
        image_size: ``(H, W)``: ``"diou"``'s distance term is computed on boxes relative to it,
            as darknet's; ``None``: on the boxes' pixels.
    """
    rel = boxes if image_size is None else boxes / boxes.new_tensor(image_size[::-1] * 2)
    if agnostic:
        class_ids = torch.zeros_like(class_ids)
    whole = torch.nonzero(~cut).flatten()
    kept = whole[nms(rel[whole], scores[whole], class_ids[whole], iou, nms_kind, beta)]
    pieces = torch.nonzero(cut).flatten()
    if len(pieces) and len(kept):
        p, k = boxes[pieces][:, None], boxes[kept][None]
        wh = torch.minimum(p[..., 2:], k[..., 2:]) - torch.maximum(p[..., :2], k[..., :2])
        inter = wh.clamp(min=0).prod(-1)  # (pieces, kept) intersection areas
        area_p = box_area(boxes[pieces])
        same = class_ids[pieces][:, None] == class_ids[kept][None, :]
        covered = ((inter / area_p.clamp(min=1e-6)[:, None]) * same).amax(1) >= CUT_COVERED
        pieces = pieces[~covered]
    if len(pieces):
        both = torch.cat([kept, pieces])
        kept = both[nms(rel[both], scores[both], class_ids[both], iou, nms_kind, beta)]
    return kept[:max_det]


def tile_shape(tile_size: Any, predictor: Predictor) -> tuple[int, int]:
    """``(h, w)`` of the tiles: ``tile_size`` square, or ``None``: the predictor's input size."""
    if tile_size is None:
        return tuple(predictor.input_size)
    if isinstance(tile_size, int) and not isinstance(tile_size, bool) and tile_size >= 32:
        return (tile_size, tile_size)
    raise InputError(f"tile_size must be an integer >= 32 pixels or None, got {tile_size!r}")


def _check(
    image: Any,
    tile_size: Any,
    overlap: Any,
    max_tiles: Any,
    predictor: Predictor,
    color: str,
    decoded: bool,
) -> tuple:
    tile_hw = tile_shape(tile_size, predictor)
    if isinstance(overlap, bool) or not isinstance(overlap, (int, float)) or not 0 <= overlap < 1:
        raise InputError(f"overlap must be a number in [0, 1), got {overlap!r}")
    if isinstance(max_tiles, bool) or not isinstance(max_tiles, int) or max_tiles < 1:
        raise InputError(f"max_tiles must be a positive integer, got {max_tiles!r}")
    return load_image(image, 0, color, predictor.max_pixels, decoded), tile_hw


def _run_passes(
    predictor: Predictor,
    image: np.ndarray,
    tiles: list[tuple[int, int, int, int]],
    kwargs: dict[str, Any],
) -> tuple[list[tuple[torch.Tensor, ...]], dict[str, float]]:
    """The Predictor (called with ``kwargs``) on the whole image, then on the ``tiles``
    (``(x1, y1, x2, y2)``, :data:`TILE_BATCH` per call) when there are several: per input
    ``(boxes (N, 4) in image pixels, scores (N,), class ids (N,), cut (N,) bool)``, and the
    passes' summed ``timing_ms``."""
    h, w = image.shape[:2]
    timing: dict[str, float] = {}
    parts = []  # (boxes in image pixels, scores, class ids, cut)

    def run(crops: list[np.ndarray], origins: list[tuple[int, int, int, int] | None]) -> None:
        dets = predictor(crops, decoded=True, **kwargs)  # loaded: (H, W, 3) whatever their shape
        for key, ms in dets[0].timing_ms.items():
            timing[key] = timing.get(key, 0.0) + ms
        for d, tile in zip(dets, origins):
            boxes = torch.from_numpy(d.boxes).reshape(-1, 4)
            if tile is None:
                cut = torch.zeros(len(boxes), dtype=torch.bool)
            else:
                cut = _cut_mask(boxes, tile, (h, w))
                boxes = boxes + torch.tensor(tile[:2] * 2, dtype=boxes.dtype)
            parts.append((boxes, torch.from_numpy(d.scores), torch.from_numpy(d.class_ids), cut))

    run([image], [None])
    if len(tiles) > 1:
        for i in range(0, len(tiles), TILE_BATCH):
            chunk = tiles[i : i + TILE_BATCH]
            run([image[y1:y2, x1:x2] for x1, y1, x2, y2 in chunk], chunk)
    return parts, timing


def predict_tiled(
    predictor: Predictor,
    image: np.ndarray,
    tile_size: int | None = None,
    overlap: float = 0.2,
    conf: float | None = None,
    iou: float | None = None,
    max_det: int | None = None,
    classes: Sequence[int] | None = None,
    color: str = "rgb",
    max_tiles: int = MAX_TILES,
    decoded: bool = False,
) -> Detections:
    """Detections of one large image from overlapping tiles plus the whole image (module docstring).

    Args:
        predictor: the :class:`Predictor` whose preprocess, backend and postprocess run each tile.
        image: ``(H, W, 3)`` uint8 RGB (or anything the Predictor takes for one image).
        tile_size: square tile side in original pixels; ``None``: the predictor's input size.
        overlap: fraction of the tile side shared by neighbouring tiles, in ``[0, 1)``.
        conf, iou, max_det, classes: as the Predictor's call (``None``: its defaults); ``iou``
            also merges the tiles, ``max_det`` caps the merged result.
        color: channel order of an array image, as the Predictor's: ``"rgb"`` or ``"bgr"``
            (OpenCV frames).
        max_tiles: the most tiles one image may need; more (a large image with a small tile or an
            overlap near 1) is an :class:`InputError` naming the count, before anything runs.
        decoded: an array image is a decoder's ``(H, W, C)`` output, as the Predictor's.

    Returns:
        One :class:`Detections` in the image's pixels; ``timing_ms`` sums the passes and adds
        ``merge``.
    """
    image, tile_hw = _check(image, tile_size, overlap, max_tiles, predictor, color, decoded)
    try:
        settings = predictor.postprocess.replace(conf=conf, iou=iou, max_det=max_det)
    except ConfigError as e:
        raise InputError(str(e)) from None
    h, w = image.shape[:2]
    check_tile_count((h, w), tile_hw, overlap, max_tiles)
    tiles = tile_grid((h, w), tile_hw, overlap)
    kwargs = {"conf": conf, "iou": iou, "max_det": max_det, "classes": classes}
    parts, timing = _run_passes(predictor, image, tiles, kwargs)
    start = time.perf_counter()
    boxes, scores, ids, cut = (torch.cat(t) for t in zip(*parts))
    keep = merge_tiles(
        boxes,
        scores,
        ids,
        cut,
        settings.iou,
        settings.max_det,
        settings.agnostic_nms,
        settings.nms_kind,
        settings.beta,
        (h, w),
    )
    timing["merge"] = 1e3 * (time.perf_counter() - start)
    ids_np = ids[keep].numpy().astype(np.int64)
    return Detections(
        boxes[keep].numpy().astype(np.float32),
        scores[keep].numpy().astype(np.float32),
        ids_np,
        [predictor.class_names[i] for i in ids_np],
        (h, w),
        timing,
    )
