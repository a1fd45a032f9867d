"""YOLO txt datasets (darknet / ultralytics layout) converted to the internal form.

    images/<name>.jpg   labels/<name>.txt   one line per box: ``class cx cy w h``, normalised
                                            to [0, 1]; a missing label file means no object

Class names come from a darknet ``.names`` file (one per line), an ultralytics data yaml
(``names:`` list or ``{index: name}`` dict) or a list. The class index is kept as the category
id. The ground truth for evaluation is built in memory (:func:`records_to_coco`) so a YOLO val
set is scored by pycocotools like COCO.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import yaml

from yolov4.data.image_io import IMAGE_SUFFIXES, image_size
from yolov4.data.records import (
    DetectionData,
    ImageRecord,
    Problem,
    ProblemReport,
    check_box,
    records_to_coco,
)
from yolov4.errors import DatasetError

__all__ = ["YoloSource", "load_yolo", "read_class_names"]

YOLO_COLUMNS = 5  # class cx cy w h


def read_class_names(names: str | Sequence[str]) -> list[str]:
    """Class names from a ``.names`` / ``.txt`` file, a data ``.yaml`` or a list."""
    if not isinstance(names, str):
        return [str(n) for n in names]
    path = Path(names)
    if not path.is_file():
        raise DatasetError(f"class names file not found: {path} (a .names file or a data yaml)")
    if path.suffix in (".yaml", ".yml"):
        data = yaml.safe_load(path.read_text())
        value = data.get("names") if isinstance(data, dict) else None
        if isinstance(value, dict):
            value = [value[k] for k in sorted(value, key=int)]
        if not isinstance(value, list) or not value:
            raise DatasetError(f"{path}: expected a `names:` list or {{index: name}} dict")
        return [str(n) for n in value]
    result = [line.strip() for line in path.read_text().splitlines() if line.strip()]
    if not result:
        raise DatasetError(f"{path}: expected one class name per line, found none")
    return result


@dataclass
class YoloSource:
    """A YOLO txt split: ``images`` directory, ``labels`` directory (default: the sibling
    ``labels`` of ``images``, ultralytics' rule) and class ``names``."""

    images: str
    names: str | list[str]
    labels: str | None = None
    include_negatives: bool = True

    def load(self, report: ProblemReport) -> DetectionData:
        return load_yolo(self.images, self.names, self.labels, self.include_negatives, report)


def _default_labels_dir(images: Path) -> Path:
    parts = list(images.parts)
    for i in range(len(parts) - 1, -1, -1):
        if parts[i] == "images":
            parts[i] = "labels"
            return Path(*parts)
    return images.parent / "labels"


def _read_labels(
    label_file: Path, hw: tuple[int, int], num_classes: int, report: ProblemReport, file: str
) -> tuple[list[np.ndarray], list[int]]:
    height, width = hw
    boxes, labels = [], []
    for n, line in enumerate(label_file.read_text().splitlines(), 1):
        fields = line.split()
        if not fields:
            continue
        try:
            values = [float(v) for v in fields]
        except ValueError:
            values = []
        if len(values) != YOLO_COLUMNS:
            report.add(Problem.BAD_LINE, label_file, f"line {n}: {line.strip()!r}")
            continue
        cls, cx, cy, w, h = values
        if not cls.is_integer() or not 0 <= cls < num_classes:
            report.add(Problem.UNKNOWN_CLASS, label_file, f"line {n}: class {fields[0]}")
            continue
        box = np.array(
            [
                (cx - w / 2) * width,
                (cy - h / 2) * height,
                (cx + w / 2) * width,
                (cy + h / 2) * height,
            ]
        )
        box = check_box(box, width, height, report, f"{label_file} line {n}")
        if box is not None:
            boxes.append(box)
            labels.append(int(cls))
    return boxes, labels


def load_yolo(
    images: str | Path,
    names: str | Sequence[str],
    labels: str | Path | None = None,
    include_negatives: bool = True,
    report: ProblemReport | None = None,
) -> DetectionData:
    """Load a YOLO txt split; image ids are 1.. in sorted file order.

    Raises:
        DatasetError: missing image directory or names, or no usable image.
    """
    report = report if report is not None else ProblemReport(name=str(images))
    image_dir = Path(images)
    if not image_dir.is_dir():
        raise DatasetError(
            f"image directory not found: {image_dir} (YOLO layout images/ + labels/)"
        )
    label_dir = Path(labels) if labels is not None else _default_labels_dir(image_dir)
    class_names = read_class_names(names)
    files = sorted(p for p in image_dir.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    records = []
    for image_id, path in enumerate(files, 1):
        hw = image_size(path)
        if hw is None:
            report.add(Problem.UNREADABLE, path, "no readable image header")
            continue
        label_file = (label_dir / path.relative_to(image_dir)).with_suffix(".txt")
        boxes, cls = [], []
        if label_file.is_file():
            boxes, cls = _read_labels(label_file, hw, len(class_names), report, str(path))
        if not boxes and not include_negatives:
            continue
        records.append(
            ImageRecord(
                image_id=image_id,
                file=str(path),
                height=hw[0],
                width=hw[1],
                boxes=np.array(boxes, np.float32).reshape(-1, 4),
                labels=np.array(cls, np.int64),
            )
        )
    if not records:
        raise DatasetError(
            f"no usable image in {image_dir} (found {len(files)} files with suffixes {IMAGE_SUFFIXES})"
        )
    category_ids = list(range(len(class_names)))
    return DetectionData(
        records, class_names, category_ids, records_to_coco(records, class_names, category_ids)
    )
