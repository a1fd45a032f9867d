"""COCO datasets whose json describes an image in another frame than its file displays, as
users' tools write them, and an independent reading of each image in its ground truth's frame.

Kinds of image (each written from an upright ``(H, W, 3)`` uint8 RGB array and its boxes):

- ``plain``: the array as a PNG; json size H x W. ``jpeg``: the same as a JPEG.
- ``stored``: the array as a JPEG that stores it as it is, with EXIF orientation 6 (a viewer
  shows it rotated 90 degrees clockwise, W x H); json size H x W and the boxes in the stored
  frame, as tools that ignore the tag write them. The array must not be square.
- ``resized``: the array resized to twice its size as a PNG (a file resized after annotating);
  json size H x W and the boxes of the array.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

EXIF_ORIENTATION = 0x0112
ROTATED_90_CW = 6  # EXIF orientation: the stored pixels are shown rotated 90 degrees clockwise
RESIZE = 2  # a resized file's sides: this many times the annotated ones
SUFFIX = {"plain": ".png", "jpeg": ".jpg", "stored": ".jpg", "resized": ".png"}


def write_image(path: Path, image: np.ndarray, kind: str) -> None:
    if kind == "stored":
        assert image.shape[0] != image.shape[1], "a rotation of a square image keeps its size"
        exif = Image.Exif()
        exif[EXIF_ORIENTATION] = ROTATED_90_CW
        Image.fromarray(image).save(path, exif=exif.tobytes(), quality=95)
    elif kind == "resized":
        h, w = image.shape[:2]
        big = cv2.resize(image, (RESIZE * w, RESIZE * h), interpolation=cv2.INTER_LINEAR)
        Image.fromarray(big).save(path)
    else:
        Image.fromarray(image).save(path, **({"quality": 95} if kind == "jpeg" else {}))


def write_coco(
    root: Path,
    images: Sequence[tuple[str, np.ndarray, np.ndarray, Sequence[int]]],
    categories: Sequence[dict],
) -> tuple[Path, Path]:
    """``images``: ``(kind, upright image, boxes (N, 4) xyxy in its pixels, category ids)``.
    Writes ``root/images/<i>_<kind>.<suffix>`` and ``root/annotations.json`` (image id i + 1);
    returns ``(annotations, image folder)``."""
    folder = root / "images"
    folder.mkdir(parents=True)
    doc = {"images": [], "annotations": [], "categories": list(categories)}
    for i, (kind, image, boxes, cats) in enumerate(images):
        name = f"{i}_{kind}{SUFFIX[kind]}"
        write_image(folder / name, image, kind)
        h, w = image.shape[:2]
        doc["images"].append({"id": i + 1, "file_name": name, "height": h, "width": w})
        for (x1, y1, x2, y2), cat in zip(np.asarray(boxes).tolist(), cats, strict=True):
            doc["annotations"].append(
                {
                    "id": len(doc["annotations"]) + 1,
                    "image_id": i + 1,
                    "category_id": int(cat),
                    "bbox": [x1, y1, x2 - x1, y2 - y1],
                    "area": (x2 - x1) * (y2 - y1),
                    "iscrowd": 0,
                }
            )
    annotations = root / "annotations.json"
    annotations.write_text(json.dumps(doc))
    return annotations, folder


def in_annotated_frame(file: str | Path, height: int, width: int) -> np.ndarray:
    """``(height, width, 3)`` uint8 RGB of ``file`` in its ground truth's frame, read by OpenCV
    alone: as the file stores it (EXIF orientation ignored) when that is the annotated size
    turned, else as displayed, then resized (bilinear) to the annotated size."""
    shown = cv2.imread(str(file), cv2.IMREAD_COLOR)
    stored = cv2.imread(str(file), cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION)
    turned = shown.shape[:2] == (width, height) and stored.shape[:2] == (height, width)
    image = stored if turned and height != width else shown
    if image.shape[:2] != (height, width):
        image = cv2.resize(image, (width, height), interpolation=cv2.INTER_LINEAR)
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
