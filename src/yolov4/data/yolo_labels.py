"""One YOLO label file read into boxes: a line is ``class cx cy w h`` (fractions of the image),
an ultralytics segmentation polygon ``class x1 y1 x2 y2 x3 y3 ...`` (its bounding box), or with
``kpt_shape`` ``(K, D)`` a pose line (``class cx cy w h`` and ``K * D`` keypoint numbers,
ignored). A bad line is reported and dropped (:func:`read_labels`); the loader of the split
is :func:`yolov4.data.yolo_txt.load_yolo`.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from yolov4.data.data_yaml import ClassNames
from yolov4.data.problems import Problem, ProblemReport
from yolov4.data.records import check_box
from yolov4.errors import bom_encoding, not_utf8

__all__ = ["read_labels", "count_boxes", "relative_box", "YOLO_COLUMNS"]

YOLO_COLUMNS = 5  # class cx cy w h
# A coordinate above this is not a fraction of the image (pixels): the line is refused as such
# rather than reported as a box outside the image. Fractions up to it are clipped as usual.
NORMALIZED_LIMIT = 2.0


def relative_box(
    values: list[float], kpt_shape: tuple[int, int] | None = None
) -> tuple[float, float, float, float] | None:
    """``x1, y1, x2, y2`` (fractions of the image) of a label line's numbers: ``class cx cy w h``
    or a polygon ``class x1 y1 x2 y2 x3 y3 ...`` (its bounding box), or with ``kpt_shape``
    ``(K, D)`` a pose line ``class cx cy w h`` and ``K * D`` keypoint numbers (ignored);
    ``None`` for anything else."""
    if kpt_shape is not None:
        if len(values) != YOLO_COLUMNS + kpt_shape[0] * kpt_shape[1]:
            return None
        values = values[:YOLO_COLUMNS]
    if len(values) == YOLO_COLUMNS:
        _, cx, cy, w, h = values
        return cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2
    if len(values) > YOLO_COLUMNS and len(values) % 2 == 1:
        xs, ys = values[1::2], values[2::2]
        return min(xs), min(ys), max(xs), max(ys)
    return None


def count_boxes(label_file: Path | None, kpt_shape: tuple[int, int] | None) -> int:
    """How many lines of ``label_file`` give a box (0 without a readable file): the boxes an
    unreadable image takes out of its split. UTF-8 text, or text whose byte order mark names
    its encoding (UTF-16, UTF-32: decoded for this count only, :func:`read_labels` refuses it)."""
    try:
        data = label_file.read_bytes() if label_file is not None else b""
        text = data.decode(bom_encoding(data) or "utf-8-sig")
    except (OSError, UnicodeDecodeError):
        return 0
    count = 0
    for line in text.splitlines():
        try:
            count += relative_box([float(v) for v in line.split()], kpt_shape) is not None
        except ValueError:
            pass
    return count


def _short(line: str, limit: int = 80) -> str:
    text = line.strip()
    return repr(text if len(text) <= limit else text[:limit] + " ...")


def read_labels(
    label_file: Path,
    hw: tuple[int, int],
    classes: ClassNames,
    report: ProblemReport,
    kpt_shape: tuple[int, int] | None = None,
) -> tuple[list[np.ndarray], list[int]] | None:
    """Boxes (``xyxy`` pixels) and class indices (of ``classes``) of one label file
    (``kpt_shape``: pose lines, :func:`relative_box`); bad lines are reported and dropped, a
    class index outside ``classes`` with the indices they allow. ``None`` (reported) when the file
    is not UTF-8 text: its image is skipped, since training on it as a negative would teach that
    its objects are background."""
    height, width = hw
    boxes, labels = [], []
    first_line: dict[tuple[int, ...], int] = {}  # (class, box) -> the line that gave it
    text = _label_text(label_file, report)
    if text is None:
        return None
    for n, line in enumerate(text.splitlines(), 1):
        fields = line.split()
        if not fields:
            continue
        try:
            values = [float(v) for v in fields]
        except ValueError:
            values = []
        relative = relative_box(values, kpt_shape)
        if relative is None and kpt_shape is not None and values:
            k, d = kpt_shape
            found = f"{len(values)} numbers, expected 5 + {k}*{d} = {YOLO_COLUMNS + k * d}"
            report.add(Problem.BAD_POSE_LINE, label_file, f"line {n}: {found}: {_short(line)}")
            continue
        if relative is None:
            report.add(Problem.BAD_LINE, label_file, f"line {n}: {_short(line)}")
            continue
        cls = values[0]
        if not cls.is_integer() or not 0 <= cls < len(classes.names):
            expected = _expected_classes(classes)
            report.add(
                Problem.UNKNOWN_CLASS, label_file, f"line {n}: class {fields[0]}, {expected}"
            )
            continue
        finite = all(map(math.isfinite, values[1:]))  # NaN and inf: check_box names them
        if finite and max(values[1:]) > NORMALIZED_LIMIT:
            report.add(Problem.NOT_NORMALIZED, label_file, f"line {n}: {_short(line)}")
            continue
        x1, y1, x2, y2 = relative
        box = [x1 * width, y1 * height, x2 * width, y2 * height]
        box = check_box(box, width, height, report, str(label_file), f"line {n}")
        if box is None:
            continue
        key = (int(cls), *box.tolist())
        if key in first_line:
            report.add(
                Problem.DUPLICATE_BOX, label_file, f"line {n}: repeats line {first_line[key]}"
            )
            continue
        first_line[key] = n
        boxes.append(box)
        labels.append(int(cls))
    return boxes, labels


def _label_text(label_file: Path, report: ProblemReport) -> str | None:
    """The text of ``label_file``; ``None`` (reported) when it is not UTF-8 or not readable."""
    try:
        return label_file.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as e:
        report.add(
            Problem.NOT_TEXT,
            label_file,
            f"found {not_utf8(e)}",
        )
    except OSError as e:
        report.add(Problem.NOT_TEXT, label_file, f"cannot be read: {e}")
    return None


def _expected_classes(classes: ClassNames) -> str:
    """``expected 0..1: 2 names in data.yaml``: the class indices a label line may give."""
    n = len(classes.names)
    indices = "0" if n == 1 else f"0..{n - 1}"
    return f"expected {indices}: {n} name{'s' if n != 1 else ''} in {classes.source}"
