"""The built-in synthetic dataset: coloured shapes on textured, noisy backgrounds.

Deterministic from ``(seed, split, image index)`` and generated once into a cache directory as a
real COCO-format dataset (``images/*.jpg`` + ``annotations.json``), so it goes through exactly
the code path of COCO. Four classes (circle, rectangle, triangle, cross); the class is the shape
only (colours are random), shapes are rotated, sizes are log-uniform from small to large,
objects may overlap, and some images are empty. Image sizes vary (non-square) so letterboxing is
exercised. Category ids have gaps on purpose (like COCO's 1-90) so a results file written with
class indices instead of ids scores ~0 and is caught.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from yolov4.core.files import make_temp_dir
from yolov4.data.coco import load_coco
from yolov4.data.problems import ProblemReport
from yolov4.data.records import DetectionData

__all__ = [
    "SHAPES",
    "SYNTHETIC_CATEGORY_IDS",
    "SyntheticSource",
    "render_sample",
    "generate_split",
    "default_cache_dir",
]

SHAPES = ("circle", "rectangle", "triangle", "cross")
SYNTHETIC_CATEGORY_IDS = (1, 3, 5, 7)  # gaps on purpose, see module docstring
GENERATOR_VERSION = 1  # bump when the drawing changes so stale caches are not reused
SPLIT_CODES = {"train": 0, "val": 1, "test": 2}

MIN_SIDE_FRACTION = 0.75  # image sides are uniform in [0.75, 1] * image_size
MIN_OBJECT_FRACTION = 0.07  # object size log-uniform in [0.07, 0.45] * image_size:
MAX_OBJECT_FRACTION = 0.45  # at 256 px, 18..115 px, about a third below COCO's "small" 32 px
MAX_OBJECTS = 6
EMPTY_FRACTION = 0.08  # images with no object (negatives)
MAX_OVERLAP_IOU = 0.3  # placements overlapping an earlier box more than this are retried
PLACEMENT_TRIES = 20
MIN_CONTRAST = 90  # L1 distance (sum over RGB) between an object's colour and its background
NOISE_SIGMA = (4.0, 16.0)  # per-image Gaussian pixel noise, uint8 units
JPEG_QUALITY = 90
CV_SHIFT = 4  # cv2 fixed-point fractional bits: vertices drawn at 1/16 px precision
CIRCLE_VERTICES = 48


def default_cache_dir() -> Path:
    """``$YOLOV4_CACHE_DIR/synthetic`` or ``~/.cache/yolov4/synthetic``."""
    root = os.environ.get("YOLOV4_CACHE_DIR") or Path.home() / ".cache" / "yolov4"
    return Path(root) / "synthetic"


def _shape_vertices(shape: str, size: float, rng: np.random.Generator) -> np.ndarray:
    """``(V, 2)`` polygon of ``shape`` centred at 0 with extent about ``size``, rotated."""
    r = size / 2
    if shape == "circle":
        t = np.linspace(0, 2 * np.pi, CIRCLE_VERTICES, endpoint=False)
        ratio = rng.uniform(0.8, 1.0)
        v = np.stack([np.cos(t) * r, np.sin(t) * r * ratio], 1)
        angle = rng.uniform(0, np.pi)
    elif shape == "rectangle":
        a = rng.uniform(0.45, 1.0)
        v = np.array([[-1, -a], [1, -a], [1, a], [-1, a]]) * r
        angle = rng.uniform(-np.pi / 7, np.pi / 7) + rng.integers(0, 2) * np.pi / 2
    elif shape == "triangle":
        v = np.array([[0.0, -1.0], [-0.95, 0.75], [0.95, 0.75]]) * r
        angle = rng.uniform(0, 2 * np.pi)
    else:  # cross: a plus sign with arms of a third of its size
        t = 1 / 3
        v = (
            np.array(
                [
                    [-t, -1],
                    [t, -1],
                    [t, -t],
                    [1, -t],
                    [1, t],
                    [t, t],
                    [t, 1],
                    [-t, 1],
                    [-t, t],
                    [-1, t],
                    [-1, -t],
                    [-t, -t],
                ]
            )
            * r
        )
        angle = rng.uniform(-np.pi / 7, np.pi / 7)
    c, s = np.cos(angle), np.sin(angle)
    return v @ np.array([[c, s], [-s, c]])


def _background(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """Two-colour linear gradient with random distractor lines (float32 RGB)."""
    c0, c1 = rng.uniform(0, 255, 3), rng.uniform(0, 255, 3)
    angle = rng.uniform(0, 2 * np.pi)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    t = (np.cos(angle) * xx / w + np.sin(angle) * yy / h + 1) / 2
    img = (c0 * (1 - t[..., None]) + c1 * t[..., None]).astype(np.float32)
    for _ in range(rng.integers(0, 6)):
        p0, p1 = rng.uniform(0, (w, h)), rng.uniform(0, (w, h))
        color = tuple(float(v) for v in rng.uniform(0, 255, 3))
        cv2.line(
            img,
            tuple(int(v) for v in p0),
            tuple(int(v) for v in p1),
            color,
            int(rng.integers(1, 4)),
        )
    return img


def _contrasting_color(rng: np.random.Generator, local_mean: np.ndarray) -> np.ndarray:
    for _ in range(PLACEMENT_TRIES):
        color = rng.uniform(0, 255, 3)
        if np.abs(color - local_mean).sum() >= MIN_CONTRAST:
            return color
    return 255.0 - local_mean


def _iou(box: np.ndarray, others: list[np.ndarray]) -> float:
    if not others:
        return 0.0
    o = np.array(others)
    iw = np.clip(np.minimum(box[2], o[:, 2]) - np.maximum(box[0], o[:, 0]), 0, None)
    ih = np.clip(np.minimum(box[3], o[:, 3]) - np.maximum(box[1], o[:, 1]), 0, None)
    inter = iw * ih
    area = lambda b: (b[..., 2] - b[..., 0]) * (b[..., 3] - b[..., 1])  # noqa: E731
    return float((inter / (area(box) + area(o) - inter)).max())


def render_sample(
    rng: np.random.Generator, image_size: int = 256, max_overlap_iou: float = MAX_OVERLAP_IOU
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Draw one synthetic image.

    Returns:
        image ``(H, W, 3)`` uint8 RGB; boxes ``(N, 4)`` float32 xyxy pixels (the full shape's
        extent, pixel ``i`` covering ``[i, i+1)``); labels ``(N,)`` int64 class indices into
        :data:`SHAPES`; instance mask ``(H, W)`` uint8 with ``k + 1`` on the visible pixels of
        object ``k`` (0 background).
    """
    h, w = (int(rng.uniform(MIN_SIDE_FRACTION, 1.0) * image_size) for _ in range(2))
    img = _background(rng, h, w)
    mask = np.zeros((h, w), np.uint8)
    n = 0 if rng.uniform() < EMPTY_FRACTION else int(rng.integers(1, MAX_OBJECTS + 1))
    lo, hi = np.log(MIN_OBJECT_FRACTION * image_size), np.log(MAX_OBJECT_FRACTION * image_size)
    boxes: list[np.ndarray] = []
    labels: list[int] = []
    for _ in range(n):
        label = int(rng.integers(0, len(SHAPES)))
        verts = _shape_vertices(SHAPES[label], float(np.exp(rng.uniform(lo, hi))), rng)
        extent = verts.max(0) - verts.min(0)
        for _ in range(PLACEMENT_TRIES):
            centre = (
                rng.uniform(-verts.min(0), (w, h) - verts.max(0))
                if np.all(extent < (w, h))
                else None
            )
            if centre is None:
                break
            poly = verts + centre
            box = np.concatenate([poly.min(0), poly.max(0)])
            if _iou(box, boxes) <= max_overlap_iou:
                break
        else:
            centre = None
        if centre is None:
            continue
        x1, y1, x2, y2 = box.astype(int)
        color = _contrasting_color(rng, img[y1 : y2 + 1, x1 : x2 + 1].reshape(-1, 3).mean(0))
        pts = [np.round((poly - 0.5) * (1 << CV_SHIFT)).astype(np.int32)]
        cv2.fillPoly(img, pts, tuple(float(c) for c in color), cv2.LINE_8, CV_SHIFT)
        cv2.fillPoly(mask, pts, len(boxes) + 1, cv2.LINE_8, CV_SHIFT)
        boxes.append(box)
        labels.append(label)
    img += rng.normal(0, rng.uniform(*NOISE_SIGMA), img.shape).astype(np.float32)
    return (
        np.clip(img, 0, 255).astype(np.uint8),
        np.array(boxes, np.float32).reshape(-1, 4),
        np.array(labels, np.int64),
        mask,
    )


def split_dir(root: Path, split: str, num_images: int, image_size: int, seed: int) -> Path:
    return Path(root) / f"v{GENERATOR_VERSION}-{split}-n{num_images}-s{image_size}-seed{seed}"


def generate_split(
    root: str | Path,
    split: str = "train",
    num_images: int = 500,
    image_size: int = 256,
    seed: int = 0,
) -> Path:
    """Generate a split once (atomic: written to a temp dir, then renamed) and return its
    directory holding ``images/`` and ``annotations.json``; an existing one is reused."""
    out = split_dir(Path(root), split, num_images, image_size, seed)
    if (out / "annotations.json").is_file():
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = make_temp_dir(out.parent, f".{out.name}-")
    (tmp / "images").mkdir()
    images, annotations = [], []
    for i in range(num_images):
        rng = np.random.default_rng([seed, SPLIT_CODES.get(split, 3), i])
        image, boxes, labels, _ = render_sample(rng, image_size)
        name = f"{split}_{i:06d}.jpg"
        cv2.imwrite(
            str(tmp / "images" / name), image[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY]
        )
        images.append(
            {"id": i + 1, "file_name": name, "height": image.shape[0], "width": image.shape[1]}
        )
        for box, label in zip(boxes.tolist(), labels.tolist(), strict=True):
            bw, bh = box[2] - box[0], box[3] - box[1]
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": i + 1,
                    "category_id": SYNTHETIC_CATEGORY_IDS[label],
                    "bbox": [round(v, 3) for v in (box[0], box[1], bw, bh)],
                    "area": round(bw * bh, 3),
                    "iscrowd": 0,
                }
            )
    categories = [
        {"id": c, "name": n, "supercategory": "shape"}
        for c, n in zip(SYNTHETIC_CATEGORY_IDS, SHAPES, strict=True)
    ]
    info = {
        "description": "yolov4 synthetic shapes",
        "version": GENERATOR_VERSION,
        "seed": seed,
        "split": split,
    }
    with (tmp / "annotations.json").open("w") as f:
        json.dump(
            {"info": info, "images": images, "annotations": annotations, "categories": categories},
            f,
        )
    try:
        os.replace(tmp, out)
    except OSError:  # another process (DDP rank, worker) finished first: keep its copy
        shutil.rmtree(tmp, ignore_errors=True)
    return out


@dataclass
class SyntheticSource:
    """A synthetic split, generated on first use into ``cache_dir`` (default
    :func:`default_cache_dir`) and then loaded as COCO."""

    split: str = "train"
    num_images: int = 500
    image_size: int = 256
    seed: int = 0
    cache_dir: str | None = None

    def prepare(self) -> Path:
        root = Path(self.cache_dir) if self.cache_dir else default_cache_dir()
        return generate_split(root, self.split, self.num_images, self.image_size, self.seed)

    def load(self, report: ProblemReport) -> DetectionData:
        path = self.prepare()
        return load_coco(path / "annotations.json", path / "images", True, report)
