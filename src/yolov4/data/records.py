"""The internal form every dataset format is converted to, and the checks of its values.

A split is a :class:`DetectionData`: one :class:`ImageRecord` per image (boxes ``xyxy`` in the
original image's pixels, contiguous class indices ``0..C-1``), the class names, the original
category id of each class index, and the pycocotools ``COCO`` ground truth for evaluation.

A box is checked against its image by :func:`check_box`, a JSON value by :func:`as_int`,
:func:`is_number`, :func:`finite_float`; what they find goes to a
:class:`~yolov4.data.problems.ProblemReport`.
"""

from __future__ import annotations

import contextlib
import io
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from pycocotools.coco import COCO

from yolov4.data.problems import Problem, ProblemReport
from yolov4.errors import DatasetError

__all__ = [
    "ImageRecord",
    "DetectionData",
    "check_box",
    "coco_from_dict",
    "as_int",
    "is_number",
    "finite_float",
    "json_kind",
    "records_to_coco",
    "COCO_SMALL_AREA",
    "COCO_MEDIUM_AREA",
]

# COCO's object size classes (cocoeval.Params.areaRng): small < 32², medium < 96², large above.
COCO_SMALL_AREA = 32**2
COCO_MEDIUM_AREA = 96**2
# Boxes overshooting the image by at most this many pixels are clipped without a report
# (float rounding in exporters).
BOX_CLIP_TOLERANCE = 0.5
# A box narrower or lower than this (pixels of its image, once clipped) is dropped: darknet skips
# boxes under one pixel of the network input too, and such a box is an anchor fit's outlier.
MIN_BOX_SIDE = 1.0


@dataclass
class ImageRecord:
    """One image of a split.

    Attributes:
        image_id: the id results are reported under (COCO ``image_id``).
        file: absolute path of the image file.
        height, width: the image size the boxes refer to (pixels).
        boxes: ``(N, 4)`` float32 ``xyxy`` in original-image pixels.
        labels: ``(N,)`` int64 contiguous class indices.
    """

    image_id: int
    file: str
    height: int
    width: int
    boxes: np.ndarray = field(default_factory=lambda: np.zeros((0, 4), np.float32))
    labels: np.ndarray = field(default_factory=lambda: np.zeros((0,), np.int64))


@dataclass
class DetectionData:
    """A loaded split: records, class names, ``category_ids[class_index]`` (the original id
    results must carry), the ``COCO`` ground truth of exactly these images, and ``notes``: what
    the loader looked for and left out that is not a problem of one file (images without a
    label file, files it does not read), one line each, for the log (WARNING) and
    ``check-data``; ``info``: notes on where the split's parts came from (the class names of a
    darknet ``.data`` file), logged at INFO and shown by ``check-data`` with the notes;
    ``repeats``: the indices of records that list an earlier record's image file again (a list
    file naming an image twice).

    Raises:
        DatasetError: two classes share a name (reports, metrics and exports key by name).
    """

    records: list[ImageRecord]
    class_names: list[str]
    category_ids: list[int]
    coco: COCO
    notes: list[str] = field(default_factory=list)
    repeats: list[int] = field(default_factory=list)
    info: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        seen: dict[str, int] = {}
        for cid, name in zip(self.category_ids, self.class_names, strict=True):
            if name in seen:
                raise DatasetError(
                    f"class names must be unique: {name!r} is the name of category_id "
                    f"{seen[name]} and of category_id {cid}; rename one (reports, metrics and "
                    "exports name classes by name)"
                )
            seen[name] = cid

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def num_boxes(self) -> int:
        return sum(len(r.labels) for r in self.records)

    def without_repeats(self) -> DetectionData:
        """This split with the records of :attr:`repeats` left out, in the ground truth too."""
        dropped = {self.records[i].image_id for i in self.repeats}
        kept = set(range(len(self.records))) - set(self.repeats)
        gt = self.coco.dataset
        coco = coco_from_dict(
            {
                **gt,
                "images": [im for im in gt["images"] if im["id"] not in dropped],
                "annotations": [a for a in gt["annotations"] if a["image_id"] not in dropped],
            }
        )
        records = [r for i, r in enumerate(self.records) if i in kept]
        return DetectionData(
            records,
            self.class_names,
            self.category_ids,
            coco,
            list(self.notes),
            info=list(self.info),
        )


def coco_from_dict(dataset: dict[str, Any]) -> COCO:
    """A pycocotools ``COCO`` built in memory from a COCO-format dict (no file, no printing)."""
    coco = COCO()
    coco.dataset = dataset
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    return coco


def records_to_coco(
    records: list[ImageRecord], class_names: list[str], category_ids: list[int]
) -> COCO:
    """In-memory COCO ground truth of ``records`` (boxes as COCO ``xywh``, area = box area),
    so formats without a json (YOLO txt) are evaluated by pycocotools like COCO itself."""
    images, annotations = [], []
    for rec in records:
        images.append(
            {"id": rec.image_id, "file_name": rec.file, "height": rec.height, "width": rec.width}
        )
        for box, label in zip(rec.boxes.tolist(), rec.labels.tolist(), strict=True):
            w, h = box[2] - box[0], box[3] - box[1]
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": rec.image_id,
                    "category_id": category_ids[label],
                    "bbox": [box[0], box[1], w, h],
                    "area": w * h,
                    "iscrowd": 0,
                }
            )
    categories = [{"id": i, "name": n} for i, n in zip(category_ids, class_names, strict=True)]
    return coco_from_dict({"images": images, "annotations": annotations, "categories": categories})


def as_int(value: Any) -> int | None:
    """``value`` as an ``int`` when it is a JSON integer (``3`` or ``3.0``, not ``true`` nor
    ``"3"``), else ``None``."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return None


def is_number(value: Any) -> bool:
    """A JSON number (``int`` or ``float``, NaN included; not ``bool``, not a string)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def finite_float(value: Any) -> float | None:
    """A JSON number as a finite ``float``; ``None`` for anything else (strings, NaN, infinity,
    integers too large for a float)."""
    if not is_number(value):
        return None
    try:
        result = float(value)
    except OverflowError:
        return None
    return result if np.isfinite(result) else None


def json_kind(value: Any) -> str:
    """How a JSON value is named in messages: ``null``, ``a list``, ``an object``, ``a str``."""
    if value is None:
        return "null"
    if isinstance(value, dict):
        return "an object"
    return f"a {type(value).__name__}"


def check_box(
    box: Sequence[float],
    width: float,
    height: float,
    report: ProblemReport,
    file: str,
    entry: Any = "",
) -> np.ndarray | None:
    """Validate one ``xyxy`` pixel box against its image: NaN, empty and wholly-outside boxes
    are reported and dropped (``None``), partly-outside ones reported and clipped.

    Args:
        box: 4 numbers ``x1, y1, x2, y2``.
        file, entry: where the box comes from, for the report (``entry``, e.g. the annotation
            or the label line, is only formatted when a problem is reported).

    Returns:
        ``(4,)`` float32 ``xyxy`` inside ``[0, width] x [0, height]``, or ``None``.
    """
    x1, y1, x2, y2 = (float(v) for v in box)  # Python floats: ~10x faster than numpy for 4
    if not all(map(math.isfinite, (x1, y1, x2, y2))):
        report.add(Problem.BOX_NAN, file, _box_detail(entry, box))
        return None
    if x2 <= x1 or y2 <= y1:
        report.add(Problem.BOX_EMPTY, file, _box_detail(entry, box))
        return None
    cx1, cx2 = min(max(x1, 0.0), width), min(max(x2, 0.0), width)
    cy1, cy2 = min(max(y1, 0.0), height), min(max(y2, 0.0), height)
    if cx2 <= cx1 or cy2 <= cy1:
        report.add(Problem.BOX_OUTSIDE, file, _box_detail(entry, box, width, height))
        return None
    if cx2 - cx1 < MIN_BOX_SIDE or cy2 - cy1 < MIN_BOX_SIDE:
        report.add(Problem.BOX_TINY, file, _box_detail(entry, box, width, height))
        return None
    # Sub-pixel overshoot (float rounding in exporters) is not worth a report.
    if max(abs(cx1 - x1), abs(cy1 - y1), abs(cx2 - x2), abs(cy2 - y2)) > BOX_CLIP_TOLERANCE:
        report.add(Problem.BOX_CLIPPED, file, _box_detail(entry, box, width, height))
    return np.array([cx1, cy1, cx2, cy2], np.float32)


def _number(value: float) -> str:
    """A pixel coordinate as messages show it: at most 2 decimals, no trailing zeros (``16.6``
    for 16.599999999999998, ``137`` for 137.0), ``nan``/``inf`` as such."""
    value = float(value)
    if not math.isfinite(value):
        return str(value)
    text = f"{value:.2f}".rstrip("0").rstrip(".")
    return "0" if text == "-0" else text


def _box_detail(entry: Any, box: Sequence[float], width: float = 0, height: float = 0) -> str:
    values = "[" + ", ".join(_number(v) for v in box) + "]"
    text = f"{entry}: box {values}" if str(entry) else f"box {values}"
    return f"{text} in image {_number(width)}x{_number(height)} (WxH)" if width else text
