"""The images a model gets most wrong at the serving threshold, and a gallery of them.

Ranked by false positives + false negatives at ``analysis.conf`` / ``analysis.iou`` (the counts
of :attr:`DetectionAnalysis.per_image`, the confusion matrix's), ties by image id. The gallery
draws each image with its true boxes (green) and its detections at or above ``conf`` (red, class
and score), in the frame and at the size of its ground truth: read as validation reads it by a
DataModule's ``val_image`` (an image annotated before its EXIF rotation without the rotation,
one annotated at another size resized to it), or without one from its file (the dataset's image
root, or the ground truth's ``file_name``) as the file displays.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from yolov4.core.images import TruncatedImage, decode_image
from yolov4.evaluation.analysis_config import AnalysisConfig
from yolov4.evaluation.plots import draw_detections

__all__ = ["worst_images", "worst_gallery", "write_png", "val_image_files", "WORST_IMAGES", "TILE"]

log = logging.getLogger(__name__)

WORST_IMAGES = AnalysisConfig.worst_images  # images listed and drawn
TILE = 320  # the gallery's tile side (pixels): each image fitted in, aspect kept


def val_image_files(datamodule: Any) -> dict[int, str]:
    """``{image_id: image file}`` of a DataModule's val split: where the gallery reads images
    (the ground truth's ``file_name`` is relative to the dataset's image root for COCO)."""
    return {r.image_id: r.file for r in datamodule.split("val").records}


def worst_images(
    analysis: Any,
    coco_gt: Any,
    image_files: dict[int, str] | None = None,
    top: int = WORST_IMAGES,
) -> list[dict[str, Any]]:
    """``worst_images.json``: up to ``top`` images with at least one error, most ``FP + FN``
    first: ``{"image_id", "file_name", "errors", "FP", "FN", "TP", "num_gt"}`` (``num_gt``
    counts non-crowd boxes)."""
    rows = []
    for image_id, c in analysis.per_image.items():
        errors = c["FP"] + c["FN"]
        if errors:
            rows.append((-errors, image_id, c))
    rows.sort(key=lambda r: (r[0], r[1]))
    out = []
    for _, image_id, c in rows[: max(int(top), 0)]:
        anns = coco_gt.imgToAnns.get(image_id, [])
        out.append(
            {
                "image_id": int(image_id),
                "file_name": _file(coco_gt, image_id, image_files),
                "errors": c["FP"] + c["FN"],
                "FP": c["FP"],
                "FN": c["FN"],
                "TP": c["TP"],
                "num_gt": sum(1 for a in anns if not a.get("iscrowd", 0)),
            }
        )
    return out


def _file(coco_gt: Any, image_id: int, image_files: dict[int, str] | None) -> str:
    if image_files and image_id in image_files:
        return str(image_files[image_id])
    return str(coco_gt.imgs.get(image_id, {}).get("file_name", ""))


def _read(file: str) -> np.ndarray | None:
    """``(H, W, 3)`` uint8 RGB of ``file`` as it displays (EXIF orientation applied, the file's
    own size): a truncated JPEG is what was there (the rest grey); ``None`` (logged, saying
    why) for a file that is missing or that does not decode."""
    try:
        data = Path(file).read_bytes()
    except OSError as err:
        log.warning("worst images: cannot read %s (%s); left out", file, err)
        return None
    try:
        return decode_image(data, file, None)
    except TruncatedImage as err:
        if err.partial is None:
            log.warning("worst images: %s; left out", err)
        else:
            log.info("worst images: %s; drawn as validation decoded it (the rest grey)", err)
        return err.partial
    except ValueError as err:
        log.warning("worst images: %s does not decode (%s); left out", file, err)
        return None


def _fit(image: np.ndarray, tile: int) -> tuple[torch.Tensor, float]:
    """``(H, W, 3)`` uint8 -> ``(3, tile, tile)`` float [0, 1] (scaled to fit, padded grey at
    the right and bottom) and the scale."""
    h, w = image.shape[:2]
    scale = tile / max(h, w)
    t = torch.from_numpy(np.array(image)).permute(2, 0, 1).float()[None] / 255  # a copy: writable
    nh, nw = max(round(h * scale), 1), max(round(w * scale), 1)
    t = torch.nn.functional.interpolate(t, size=(nh, nw), mode="bilinear", align_corners=False)
    out = torch.full((3, tile, tile), 0.5)
    out[:, :nh, :nw] = t[0]
    return out, scale


def worst_gallery(
    entries: Sequence[dict[str, Any]],
    coco_gt: Any,
    results: Sequence[dict[str, Any]],
    names: Sequence[str],
    conf: float,
    tile: int = TILE,
    read_image: Callable[[int], np.ndarray | None] | None = None,
) -> torch.Tensor | None:
    """The images of ``entries`` (:func:`worst_images`) in a grid, ``(3, H, W)`` uint8, with
    their true boxes and their ``results`` (COCO results format) at or above ``conf``; ``names``
    in ``sorted(category ids)`` order. ``read_image(image_id)``: ``(H, W, 3)`` uint8 RGB in the
    frame and at the size of the image's ground truth, ``None`` when it does not decode (a
    DataModule's ``val_image``: the image as validation read it); without it each entry's file
    is decoded as it displays (a truncated JPEG: what was there). One that is missing or does
    not decode is left out (logged, saying which); ``None`` when none is left."""
    index = {c: k for k, c in enumerate(sorted(coco_gt.getCatIds()))}
    wanted = {e["image_id"] for e in entries}
    dets: dict[int, list[dict[str, Any]]] = {i: [] for i in wanted}
    for r in results:
        if int(r["image_id"]) in wanted and float(r["score"]) >= conf:
            dets[int(r["image_id"])].append(r)
    images, targets, detections = [], [], []
    for e in entries:
        if read_image is None:
            image = _read(e["file_name"])
        else:
            image = read_image(e["image_id"])
            if image is None:
                log.info("worst images: %s does not decode; left out", e["file_name"])
        if image is None:
            continue
        fitted, scale = _fit(image, tile)
        i = len(images)
        images.append(fitted)
        for a in coco_gt.imgToAnns.get(e["image_id"], []):
            x, y, w, h = (v * scale for v in a["bbox"])
            targets.append([i, index[a["category_id"]], x, y, x + w, y + h])
        rows = [
            [*d["bbox"][:2], d["bbox"][0] + d["bbox"][2], d["bbox"][1] + d["bbox"][3], d["score"]]
            + [index[d["category_id"]]]
            for d in dets[e["image_id"]]
        ]
        d = torch.tensor(rows, dtype=torch.float32).reshape(-1, 6)
        d[:, :4] *= scale
        detections.append(d)
    if not images:
        return None
    target = torch.tensor(targets, dtype=torch.float32).reshape(-1, 6)
    return draw_detections(torch.stack(images), target, detections, list(names), conf)


def write_png(image: torch.Tensor, path: str | Path) -> Path:
    """``(3, H, W)`` uint8 as a PNG file."""
    from PIL import Image

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(image.permute(1, 2, 0).cpu().numpy()).save(path, format="PNG")
    return path
