"""COCO-format datasets (COCO itself, CVAT / Label Studio / Roboflow exports) via pycocotools.

Categories are sorted by id and numbered ``0..C-1`` (the contiguous class index the network
predicts); ``category_ids[class_index]`` keeps the original id, which results must carry (COCO's
80 classes use ids 1-90 with gaps: results with contiguous ids silently score ~0 mAP).
``iscrowd`` boxes are not training targets (they stay in the ground truth, where COCOeval
ignores detections matching them).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from yolov4.data.records import (
    DetectionData,
    ImageRecord,
    Problem,
    ProblemReport,
    check_box,
    coco_from_dict,
)
from yolov4.errors import DatasetError

__all__ = ["CocoSource", "load_coco"]


@dataclass
class CocoSource:
    """A COCO-format split: ``annotations`` json + ``images`` directory (``file_name`` is
    relative to it). ``include_negatives`` keeps images without boxes as negatives."""

    annotations: str
    images: str
    include_negatives: bool = True

    def load(self, report: ProblemReport) -> DetectionData:
        return load_coco(self.annotations, self.images, self.include_negatives, report)


def _read_json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise DatasetError(
            f"COCO annotation file not found: expected a json at {path}; "
            "set data.*.annotations to an instances_*.json"
        )
    try:
        with path.open() as f:
            dataset = json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise DatasetError(f"{path} is not valid json: {e}") from e
    missing = [k for k in ("images", "annotations", "categories") if k not in dataset]
    if not isinstance(dataset, dict) or missing:
        raise DatasetError(
            f"{path}: expected a COCO dict with keys images/annotations/categories, missing {missing}"
        )
    if not dataset["categories"]:
        raise DatasetError(f"{path}: expected at least one category, found none")
    return dataset


def load_coco(
    annotations: str | Path,
    images: str | Path,
    include_negatives: bool = True,
    report: ProblemReport | None = None,
) -> DetectionData:
    """Load one COCO-format split.

    Returns:
        :class:`DetectionData` whose ``coco`` is the ground truth restricted to the images kept
        (missing files dropped) with bad annotations removed and partly-outside boxes clipped.

    Raises:
        DatasetError: missing/invalid json, missing image directory, or no usable image.
    """
    report = report if report is not None else ProblemReport(name=str(annotations))
    ann_path, image_dir = Path(annotations), Path(images)
    dataset = _read_json(ann_path)
    if not image_dir.is_dir():
        raise DatasetError(f"image directory not found: {image_dir} (for {ann_path})")
    categories = sorted(dataset["categories"], key=lambda c: c["id"])
    category_ids = [int(c["id"]) for c in categories]
    class_of = {cid: i for i, cid in enumerate(category_ids)}

    per_image: dict[int, list[dict[str, Any]]] = {}
    for ann in dataset["annotations"]:
        per_image.setdefault(ann["image_id"], []).append(ann)

    records, gt_images, gt_annotations = [], [], []
    for img in dataset["images"]:
        file = str(image_dir / img["file_name"])
        if not Path(file).is_file():
            report.add(Problem.MISSING_FILE, file)
            continue
        width, height = float(img["width"]), float(img["height"])
        boxes, labels = [], []
        for ann in per_image.get(img["id"], []):
            if ann["category_id"] not in class_of:
                report.add(Problem.UNKNOWN_CLASS, file, f"category_id {ann['category_id']}")
                continue
            x, y, w, h = (float(v) for v in ann["bbox"])
            box = check_box(np.array([x, y, x + w, y + h]), width, height, report, file)
            if box is None:
                continue
            x1, y1, x2, y2 = box.tolist()
            gt_annotations.append({**ann, "bbox": [x1, y1, x2 - x1, y2 - y1]})
            if not ann.get("iscrowd", 0):
                boxes.append(box)
                labels.append(class_of[ann["category_id"]])
        if not boxes and not include_negatives:
            continue
        gt_images.append(img)
        records.append(
            ImageRecord(
                image_id=int(img["id"]),
                file=file,
                height=int(height),
                width=int(width),
                boxes=np.array(boxes, np.float32).reshape(-1, 4),
                labels=np.array(labels, np.int64),
            )
        )
    if not records:
        raise DatasetError(
            f"{ann_path}: no usable image (found {len(dataset['images'])} listed under "
            f"{image_dir}); check that data.*.images points at the image directory"
        )
    kept = {img["id"] for img in gt_images}
    coco = coco_from_dict(
        {
            **{k: v for k, v in dataset.items() if k not in ("images", "annotations")},
            "images": gt_images,
            "annotations": [a for a in gt_annotations if a["image_id"] in kept],
            "categories": categories,
        }
    )
    names = [str(c["name"]) for c in categories]
    return DetectionData(records, names, category_ids, coco)
