"""COCO-format datasets (COCO itself, CVAT / Label Studio / Roboflow exports) via pycocotools.

Categories are sorted by id and numbered ``0..C-1`` (the contiguous class index the network
predicts); ``category_ids[class_index]`` keeps the original id, which results must carry (COCO's
80 classes use ids 1-90 with gaps: results with contiguous ids silently score ~0 mAP).
``iscrowd`` boxes are not training targets (they stay in the ground truth, where COCOeval
ignores detections matching them).

Every entry is checked before use; a malformed one is repaired or skipped and reported with the
json file and the entry (``annotations[3] (id 7)``), and strict mode stops on it:

- a document that is not an object with ``images``/``annotations``/``categories`` lists, or
  without one usable category, is a :class:`~yolov4.errors.DatasetError` naming the file;
- a category without an integer id (or repeating one) is skipped; without a name it is named
  ``category_<id>``;
- an image entry without an integer ``id`` or a ``file_name`` is skipped; without a positive
  numeric ``width``/``height`` its size is read from the image file;
- an annotation without a ``bbox`` (missing, null or empty) but with a ``segmentation`` gets
  the segmentation's box (polygons: the min/max of their points; RLE: ``pycocotools.mask.toBbox``);
- an annotation without an integer ``image_id``/``category_id`` or a ``bbox`` of 4 numbers (or
  a segmentation to compute it from) is skipped; without an integer ``id``, or with one below 1 (COCOeval reads id 0 as "matched
  nothing": a Roboflow export's first box would never be a true positive), it gets a new one; a missing ``area``/``iscrowd`` is filled
  in silently (the box area, 0: COCO's meaning), a non-numeric one is reported and filled in.

Duplicates and orphans (pycocotools indexes images and annotations by id: a repeated id makes
COCOeval count one box twice and lose another), with a rule that depends only on file order:

- the first image entry with an id is kept, later entries with that id are skipped (reported
  naming both file names); annotations with that id belong to the kept entry;
- an annotation repeating an earlier one's id is dropped when it is an exact repeat (same
  image, category, bbox, iscrowd: one box listed twice), else kept as a distinct box under a
  new id (after the largest id in the file), so training and COCOeval both see it once;
- an annotation whose box (once clipped to the image), category and ``iscrowd`` repeat an
  earlier annotation of its image under another id is dropped (a ground truth box listed twice
  leaves one of the two unmatched by any detector: a duplicated val set scores mAP50 0.5);
- an annotation whose ``image_id`` no image entry has is skipped.

The ground truth handed to COCOeval (:attr:`DetectionData.coco`) holds exactly the repaired
entries the records train on (plus ``iscrowd`` boxes), with unique ids. The ``annotations``
entries are checked in :mod:`yolov4.data.coco_annotations`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from yolov4.core.files import looked_for, posix_form, posix_note
from yolov4.data.coco_annotations import Annotation, annotations_by_image
from yolov4.data.image_io import image_size
from yolov4.data.problems import Problem, ProblemReport
from yolov4.data.records import (
    DetectionData,
    ImageRecord,
    as_int,
    check_box,
    coco_from_dict,
    finite_float,
    is_number,
    json_kind,
)
from yolov4.errors import DatasetError

__all__ = ["CocoSource", "load_coco"]

SECTIONS = ("images", "annotations", "categories")


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
    """The json document, checked to be an object with the three COCO lists."""
    if not path.is_file():
        raise DatasetError(
            f"COCO annotation file not found: expected a json at {path}{looked_for(path)}; "
            "set data.*.annotations to an instances_*.json"
        )
    try:
        dataset = json.loads(path.read_bytes())  # UTF-8/16/32 detected as json allows
    except OSError as e:
        raise DatasetError(f"cannot read the COCO annotation file {path}: {e}") from e
    except (ValueError, RecursionError) as e:  # JSONDecodeError, UnicodeDecodeError; deep nesting
        raise DatasetError(f"{path} is not valid json: {e}") from e
    if not isinstance(dataset, dict):
        raise DatasetError(
            f"{path}: expected a COCO object with keys images/annotations/categories, "
            f"found {json_kind(dataset)}"
        )
    missing = [k for k in SECTIONS if k not in dataset]
    if missing:
        raise DatasetError(
            f"{path}: expected a COCO object with keys images/annotations/categories, "
            f"missing {missing}"
        )
    for key in SECTIONS:
        if not isinstance(dataset[key], list):
            raise DatasetError(
                f"{path}: expected `{key}` to be a list, found {json_kind(dataset[key])}"
            )
    return dataset


def _categories(raw: list[Any], path: Path, report: ProblemReport) -> list[dict[str, Any]]:
    """The usable categories, sorted by id (see the module docstring for the rules)."""
    kept: dict[int, dict[str, Any]] = {}
    for i, cat in enumerate(raw):
        where = f"categories[{i}]"
        cid = as_int(cat.get("id")) if isinstance(cat, dict) else None
        if cid is None:
            found = f"id {cat.get('id')!r}" if isinstance(cat, dict) else json_kind(cat)
            report.add(Problem.BAD_CATEGORY, path, f"{where}: {found}, expected an integer id")
            continue
        where = f"{where} (id {cid})"
        if cid in kept:
            report.add(Problem.BAD_CATEGORY, path, f"{where}: id repeated, the first is kept")
            continue
        name = cat.get("name")
        if not isinstance(name, (str, int, float)) or isinstance(name, bool) or name == "":
            report.add(Problem.CATEGORY_NAME, path, f"{where}: name {name!r}, named category_{cid}")
            name = f"category_{cid}"
        kept[cid] = {**cat, "id": cid, "name": str(name)}
    if not kept:
        raise DatasetError(
            f"{path}: expected at least one category with an integer id, "
            f"found none among {len(raw)}"
        )
    return [kept[cid] for cid in sorted(kept)]


def _positive_size(value: Any) -> bool:
    size = finite_float(value)
    return size is not None and size > 0


@dataclass
class _Image:
    index: int  # position in the json's `images`
    entry: dict[str, Any]  # the repaired entry for the ground truth
    file: str
    height: float
    width: float


def _images(
    raw: list[Any], path: Path, image_dir: Path, report: ProblemReport
) -> tuple[list[_Image], set[int]]:
    """The usable image entries in file order, and every integer id listed (orphans are
    annotations whose image id is not among these)."""
    images: list[_Image] = []
    first: dict[int, str] = {}  # id -> the entry kept for it
    for i, img in enumerate(raw):
        iid = as_int(img.get("id")) if isinstance(img, dict) else None
        if iid is None:
            found = f"id {img.get('id')!r}" if isinstance(img, dict) else json_kind(img)
            report.add(Problem.BAD_IMAGE, path, f"images[{i}]: {found}, expected an integer id")
            continue
        name = img.get("file_name")
        where = f"images[{i}] (id {iid}, file_name {name!r})"
        if iid in first:
            report.add(Problem.DUPLICATE_IMAGE, path, f"{where}: id already used by {first[iid]}")
            continue
        first[iid] = where
        if not isinstance(name, str) or not name:
            report.add(Problem.BAD_IMAGE, path, f"{where}: expected a file_name")
            continue
        file = image_dir / name
        if not file.is_file():  # written on Windows: sub\a.jpg
            file = image_dir / posix_form(name)
        if not file.is_file():
            report.add(Problem.MISSING_FILE, file)
            continue
        width, height = img.get("width"), img.get("height")
        if not (_positive_size(width) and _positive_size(height)):
            hw = image_size(file)
            if hw is None:
                report.add(Problem.UNREADABLE, file, f"no width/height in {path} {where}")
                continue
            report.add(
                Problem.IMAGE_SIZE,
                path,
                f"{where}: width {width!r}, height {height!r}; read {hw[1]}x{hw[0]} from the file",
            )
            height, width = hw
        entry = {**img, "id": iid, "file_name": name, "width": width, "height": height}
        images.append(_Image(i, entry, str(file), float(height), float(width)))
    return images, set(first)


def _crowd_and_area(
    ann: Annotation, box_area: float, path: Path, report: ProblemReport
) -> tuple[int, float]:
    """``iscrowd`` (0/1) and ``area`` for COCOeval (it reads both); missing: 0 and the box
    area, silently; present but not numbers: reported and filled in the same way."""
    crowd, area = ann.entry.get("iscrowd", 0), ann.entry.get("area", box_area)
    bad = []
    if not (is_number(crowd) and crowd in (0, 1)):
        bad.append(f"iscrowd {crowd!r} (set to 0)")
        crowd = 0
    if finite_float(area) is None or area < 0:
        bad.append(f"area {area!r} (set to the box area)")
        area = box_area
    if bad:
        report.add(Problem.BAD_FIELD, path, f"{ann.where}: {', '.join(bad)}")
    return int(crowd), float(area)


def _image_boxes(
    img: _Image,
    annotations: list[Annotation],
    class_of: dict[int, int],
    ann_path: Path,
    report: ProblemReport,
) -> tuple[list[np.ndarray], list[int], list[dict]]:
    """One image's annotations -> its non-crowd boxes (clipped ``x1, y1, x2, y2``) and class
    indices, and the annotations kept for the ground truth (unknown classes and unusable
    boxes reported and left out)."""
    file, width, height = img.file, img.width, img.height
    boxes, labels, anns = [], [], []
    first: dict[tuple[Any, ...], Annotation] = {}  # (category, box, crowd) -> its first entry
    for ann in annotations:
        entry = ann.entry
        if entry["category_id"] not in class_of:
            report.add(
                Problem.UNKNOWN_CLASS, file, f"{ann.where}: category_id {entry['category_id']}"
            )
            continue
        x, y, w, h = entry["bbox"]
        box = check_box([x, y, x + w, y + h], width, height, report, file, ann)
        if box is None:
            continue
        x1, y1, x2, y2 = box.tolist()
        crowd, area = _crowd_and_area(ann, (x2 - x1) * (y2 - y1), ann_path, report)
        key = (entry["category_id"], x1, y1, x2, y2, crowd)
        if key in first:
            found = f"the box of {first[key].where} (image_id {entry['image_id']}), dropped"
            report.add(Problem.DUPLICATE_BOX, ann_path, f"{ann.where}: {found}")
            continue
        first[key] = ann
        anns.append({**entry, "bbox": [x1, y1, x2 - x1, y2 - y1], "area": area, "iscrowd": crowd})
        if not crowd:
            boxes.append(box)
            labels.append(class_of[entry["category_id"]])
    return boxes, labels, anns


def _records(
    image_entries: list[_Image],
    per_image: dict[int, list[Annotation]],
    class_of: dict[int, int],
    ann_path: Path,
    report: ProblemReport,
    include_negatives: bool,
) -> tuple[list[ImageRecord], list[dict[str, Any]], list[dict[str, Any]]]:
    """The records of the images kept, with their entries and annotations for the ground truth
    (an image without a box is left out unless ``include_negatives``)."""
    records, gt_images, gt_annotations = [], [], []
    for img in image_entries:
        boxes, labels, anns = _image_boxes(
            img, per_image.get(img.entry["id"], []), class_of, ann_path, report
        )
        if not boxes and not include_negatives:
            continue
        gt_images.append(img.entry)
        gt_annotations.extend(anns)
        records.append(
            ImageRecord(
                image_id=img.entry["id"],
                file=img.file,
                height=int(img.height),
                width=int(img.width),
                boxes=np.array(boxes, np.float32).reshape(-1, 4),
                labels=np.array(labels, np.int64),
            )
        )
    return records, gt_images, gt_annotations


def load_coco(
    annotations: str | Path,
    images: str | Path,
    include_negatives: bool = True,
    report: ProblemReport | None = None,
) -> DetectionData:
    """Load one COCO-format split; malformed entries, duplicates and orphans are repaired or
    skipped and reported (rules in the module docstring).

    Returns:
        :class:`DetectionData` whose ``coco`` is the ground truth restricted to the images kept
        (missing files dropped) with bad annotations removed and partly-outside boxes clipped.

    Raises:
        DatasetError: missing/invalid json or a document of another shape, no usable category,
            missing image directory, no usable image; in strict mode, the first problem.
    """
    report = report if report is not None else ProblemReport(name=str(annotations))
    ann_path, image_dir = Path(annotations), Path(images)
    dataset = _read_json(ann_path)
    if not image_dir.is_dir():
        raise DatasetError(
            f"image directory not found: {image_dir}{looked_for(image_dir)} (for {ann_path})"
        )
    categories = _categories(dataset["categories"], ann_path, report)
    category_ids = [c["id"] for c in categories]
    class_of = {cid: i for i, cid in enumerate(category_ids)}
    image_entries, listed = _images(dataset["images"], ann_path, image_dir, report)
    per_image = annotations_by_image(dataset["annotations"], ann_path, listed, report)

    records, gt_images, gt_annotations = _records(
        image_entries, per_image, class_of, ann_path, report, include_negatives
    )
    if not records:
        raise DatasetError(
            f"{ann_path}: no usable image (found {len(dataset['images'])} listed under "
            f"{image_dir}); check that data.*.images points at the image directory\n"
            f"{report.summary()}"
        )
    coco = coco_from_dict(
        {
            **{k: v for k, v in dataset.items() if k not in SECTIONS},
            "images": gt_images,
            "annotations": gt_annotations,
            "categories": categories,
        }
    )
    names = [c["name"] for c in categories]
    written = [
        i.entry["file_name"]
        for i in image_entries
        if i.file != str(image_dir / i.entry["file_name"])
    ]
    info = posix_note(f"{ann_path}'s file_name", written)  # written on Windows, read with `/`
    return DetectionData(records, names, category_ids, coco, info=info)
