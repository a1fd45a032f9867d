"""The internal form every dataset format is converted to, and the bad-data report.

A split is a :class:`DetectionData`: one :class:`ImageRecord` per image (boxes ``xyxy`` in the
original image's pixels, contiguous class indices ``0..C-1``), the class names, the original
category id of each class index, and the pycocotools ``COCO`` ground truth for evaluation.

Problems in the data go through a :class:`ProblemReport`: in the default mode each one is
counted with its file name and the sample is repaired or skipped; in ``strict`` mode the first
one raises a :class:`~yolov4.errors.DatasetError` naming the file.
"""

from __future__ import annotations

import contextlib
import io
import logging
import math
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from pycocotools.coco import COCO

from yolov4.errors import DatasetError

__all__ = [
    "ImageRecord",
    "DetectionData",
    "ProblemReport",
    "Problem",
    "Note",
    "LOSSES",
    "LOST_BOXES",
    "LOST_IMAGES",
    "coco_from_dict",
    "as_int",
    "is_number",
    "finite_float",
    "json_kind",
    "records_to_coco",
    "COCO_SMALL_AREA",
    "COCO_MEDIUM_AREA",
]

log = logging.getLogger(__name__)

# COCO's object size classes (cocoeval.Params.areaRng): small < 32², medium < 96², large above.
COCO_SMALL_AREA = 32**2
COCO_MEDIUM_AREA = 96**2
# Boxes overshooting the image by at most this many pixels are clipped without a report
# (float rounding in exporters).
BOX_CLIP_TOLERANCE = 0.5
# A box narrower or lower than this (pixels of its image, once clipped) is dropped: darknet skips
# boxes under one pixel of the network input too, and such a box is an anchor fit's outlier.
MIN_BOX_SIDE = 1.0
# How many example file names a one-line summary lists per kind of problem.
SUMMARY_EXAMPLES = 5


class Problem:
    """Kinds of bad data, each with what is done about it outside strict mode."""

    MISSING_FILE = "missing image file (skipped)"
    REPEATED_LISTING = (
        "image listed again in a list file (a val/test split scores it once; a train split "
        "keeps each listing, one sample per epoch each)"
    )
    UNREADABLE = "unreadable image (skipped)"
    TRUNCATED = "truncated image (decoded what was there)"
    DAMAGED_JPEG = (
        "JPEG without its end marker, or with data libjpeg calls corrupt (decoded as libjpeg "
        "repairs it: look at it, and re-save or replace it)"
    )
    CONVERTED = (
        "not 8-bit RGB or grayscale: alpha, palette, CMYK, 16-bit or float pixels (converted to "
        "8-bit RGB, which may change what the network sees: look at it)"
    )
    SIZE_MISMATCH = "image size differs from the annotation (resized to it)"
    STORED_FRAME = (
        "annotated size is the file's own, before its EXIF rotation (read without the rotation)"
    )
    BOX_CLIPPED = "box partly outside the image (clipped, for training and for COCOeval)"
    BOX_OUTSIDE = "box wholly outside the image (dropped)"
    BOX_EMPTY = "zero or negative size box (dropped)"
    BOX_TINY = "box under 1 pixel wide or high (dropped: no anchor or cell can learn it)"
    BOX_NAN = "NaN or infinite box coordinate (dropped)"
    UNKNOWN_CLASS = "unknown category id / class index (dropped)"
    BAD_LINE = (
        "label line that is neither 5 numbers `class cx cy w h` nor a polygon `class x1 y1 x2 y2 "
        "x3 y3 ...` (dropped)"
    )
    BAD_POSE_LINE = (
        "label line of a pose dataset (data yaml with kpt_shape [K, D]) that is not "
        "`class cx cy w h` and K*D keypoint numbers (dropped)"
    )
    NOT_NORMALIZED = (
        "label line with a coordinate above 2: YOLO txt boxes are fractions of the image size "
        "in [0, 1], not pixels (dropped)"
    )
    SHARED_LABEL_FILE = (
        "label file of two images with one name and different suffixes, e.g. a.jpg and a.png "
        "(its boxes read for each: rename one image if they differ)"
    )
    NOT_TEXT = "label file not readable as UTF-8 text (image skipped: its labels are unknown)"
    # Entries of a COCO json, named by file and entry (``annotations[3] (id 7)``).
    BAD_IMAGE = "image entry without an integer id or a file_name (skipped)"
    IMAGE_SIZE = "image entry without a positive numeric width/height (read from the file)"
    BAD_CATEGORY = "category without an integer id, or a repeated id (skipped)"
    CATEGORY_NAME = "category without a name (named category_<id>)"
    BAD_ANNOTATION = (
        "annotation without an integer image_id/category_id or a bbox of 4 numbers (skipped)"
    )
    BBOX_FROM_SEGMENTATION = (
        "annotation without a bbox but with a segmentation (bbox computed from the segmentation)"
    )
    ANNOTATION_ID = "annotation without an integer id (given a new one)"
    BAD_FIELD = "annotation area/iscrowd not a number (set from the box / to 0)"
    DUPLICATE_IMAGE = "duplicate image id (first entry kept, later ones skipped)"
    DUPLICATE_ANNOTATION = (
        "duplicate annotation id (an exact repeat dropped, a different box kept under a new id)"
    )
    ORPHAN_ANNOTATION = "annotation of an image id that no image entry has (skipped)"
    DUPLICATE_BOX = (
        "box repeating an earlier box of its image: same class, same coordinates (dropped: a "
        "ground truth box listed twice is a miss for every detector)"
    )


# The kinds of problem that take an image (LOST_IMAGES) or ground truth (LOST_BOXES) out of
# the split (``check-data`` exits 1 on them); the others are repaired, or drop an exact repeat.
LOST_IMAGES = frozenset(
    {
        Problem.MISSING_FILE,
        Problem.UNREADABLE,
        Problem.NOT_TEXT,
        Problem.BAD_IMAGE,
        Problem.DUPLICATE_IMAGE,
    }
)
LOST_BOXES = frozenset(
    {
        Problem.BOX_OUTSIDE,
        Problem.BOX_EMPTY,
        Problem.BOX_TINY,
        Problem.BOX_NAN,
        Problem.UNKNOWN_CLASS,
        Problem.BAD_LINE,
        Problem.BAD_POSE_LINE,
        Problem.NOT_NORMALIZED,
        Problem.BAD_ANNOTATION,
        Problem.ORPHAN_ANNOTATION,
    }
)
LOSSES = LOST_IMAGES | LOST_BOXES


class Note:
    """What the loaders read as it is meant to be read, counted apart from the problems:
    nothing is repaired or lost (a count line in the summary)."""

    GRAYSCALE = "grayscale image (read as three equal channels, as darknet and ultralytics read it)"


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
    label file, files it does not read), one line each, for the log and ``check-data``;
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
        return DetectionData(records, self.class_names, self.category_ids, coco, list(self.notes))


class ProblemReport:
    """Counts problems per kind with their file names; raises at once in ``strict`` mode.
    :meth:`note` counts what is no problem (a :class:`Note`) apart."""

    def __init__(self, strict: bool = False, name: str = "dataset", log_each: bool = False) -> None:
        self.strict = strict
        self.name = name
        self.log_each = log_each  # log each problem as found (data loading inside workers)
        self.problems: dict[str, list[str]] = defaultdict(list)
        self.notes: dict[str, list[str]] = defaultdict(list)
        self._seen: set[tuple[str, str]] = set()

    def add(self, kind: str, file: Any, detail: str = "") -> None:
        """Record one problem ``kind`` (a :class:`Problem` value) found in ``file``."""
        where = f"{file}: {detail}" if detail else str(file)
        if self.strict:
            raise DatasetError(f"{self.name}: {kind.split(' (')[0]} in {where} (strict mode)")
        if (kind, where) in self._seen:  # once per file, however many epochs
            return
        self._seen.add((kind, where))
        self.problems[kind].append(where)
        if self.log_each:  # a conversion repairs nothing of the labels: no warning per file
            # (each DataLoader worker keeps its own report: a warning would repeat per worker)
            level = logging.DEBUG if kind == Problem.CONVERTED else logging.WARNING
            log.log(level, "%s: %s: %s", self.name, kind, where)

    def note(self, kind: str, file: Any, detail: str = "") -> None:
        """Count one file of ``kind`` (a :class:`Note` value): not a problem, never raises."""
        where = f"{file}: {detail}" if detail else str(file)
        if (kind, where) not in self._seen:
            self._seen.add((kind, where))
            self.notes[kind].append(where)

    def __len__(self) -> int:
        return sum(len(v) for v in self.problems.values())

    def losses(self) -> dict[str, list[str]]:
        """The problems of a kind in :data:`LOSSES` (an image or ground truth left out)."""
        return {k: v for k, v in self.problems.items() if k in LOSSES and v}

    def merge(self, other: ProblemReport) -> None:
        for mine, theirs in ((self.problems, other.problems), (self.notes, other.notes)):
            for kind, items in theirs.items():
                for item in items:
                    if (kind, item) not in self._seen:
                        self._seen.add((kind, item))
                        mine[kind].append(item)

    def summary(self, examples: int | None = SUMMARY_EXAMPLES) -> str:
        """Multi-line text: one line per kind with its count, then the files (``examples``
        of them, all when ``None``); a count line per kind of note after them."""
        lines = [f"{self.name}: {len(self)} problem(s)" if self.problems else
                 f"{self.name}: no problems found"]  # fmt: skip
        for kind, items in self.problems.items():
            lines.append(f"  {len(items):6d} x {kind}")
            shown = items if examples is None else items[:examples]
            lines.extend(f"           {item}" for item in shown)
            if len(shown) < len(items):
                lines.append(f"           ... and {len(items) - len(shown)} more")
        for kind, items in self.notes.items():
            lines.append(f"  note: {len(items)} x {kind}, e.g. {items[0]}")
        return "\n".join(lines)

    def log(self) -> None:
        """Log the summary once as a warning (nothing when there is no problem)."""
        if self.problems:
            log.warning("%s", self.summary())


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
