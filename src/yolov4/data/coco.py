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
entries the records train on (plus ``iscrowd`` boxes), with unique ids.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path, PureWindowsPath
from typing import Any

import numpy as np
from pycocotools import mask as mask_utils

from yolov4.core.files import looked_for
from yolov4.data.image_io import image_size
from yolov4.data.records import (
    DetectionData,
    ImageRecord,
    Problem,
    ProblemReport,
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
COCO_BBOX_LEN = 4  # [x, y, width, height]


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
        if not file.is_file() and "\\" in name:  # written on Windows: sub\a.jpg
            file = image_dir / PureWindowsPath(name).as_posix()
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


def _where(index: int, given_id: int | None) -> str:
    """How an annotation is named in reports: ``annotations[3] (id 7)``."""
    return f"annotations[{index}]" + (f" (id {given_id})" if given_id is not None else "")


@dataclass
class _Annotation:
    index: int  # position in the json's `annotations`
    given_id: int | None  # the id in the file (None when it had no integer id)
    entry: dict[str, Any]  # id, image_id, category_id repaired; bbox as 4 floats

    @property
    def where(self) -> str:
        return _where(self.index, self.given_id)

    def __str__(self) -> str:  # as a box problem names it (check_box adds the x1, y1, x2, y2)
        x, y, w, h = self.entry["bbox"]
        return f"{self.where}: bbox [x, y, w, h] = [{x:g}, {y:g}, {w:g}, {h:g}], as x1, y1, x2, y2"


def _bbox(bbox: Any) -> list[float] | None:
    """``bbox`` as 4 floats (NaN and infinity kept for :func:`check_box` to report), or
    ``None`` when it is not a list of 4 numbers that fit a float."""
    if not (isinstance(bbox, list) and len(bbox) == COCO_BBOX_LEN and all(map(is_number, bbox))):
        return None
    try:
        return [float(v) for v in bbox]
    except OverflowError:
        return None


def _segmentation_bbox(segmentation: Any) -> tuple[list[float], str] | None:
    """``[x, y, width, height]`` of a COCO ``segmentation`` and what it was (``polygon`` or
    ``RLE``): polygons (lists ``[x1, y1, x2, y2, ...]``; one flat list is one polygon) give the
    min/max of their points, an RLE (``{"size": [h, w], "counts": ...}``, compressed or not)
    ``pycocotools.mask.toBbox``; ``None`` when it is neither."""
    polygons = segmentation
    if isinstance(polygons, list) and polygons and all(map(is_number, polygons)):
        polygons = [polygons]
    if isinstance(polygons, list) and polygons:
        if not all(
            isinstance(p, list) and p and len(p) % 2 == 0 and all(map(is_number, p))
            for p in polygons
        ):
            return None
        xs = [float(v) for p in polygons for v in p[0::2]]
        ys = [float(v) for p in polygons for v in p[1::2]]
        return [min(xs), min(ys), max(xs) - min(xs), max(ys) - min(ys)], "polygon"
    if not isinstance(segmentation, dict):
        return None
    size, counts = segmentation.get("size"), segmentation.get("counts")
    if not (isinstance(size, list) and len(size) == 2 and all(as_int(v) for v in size)):
        return None
    h, w = (as_int(v) for v in size)
    try:
        if isinstance(counts, list):  # uncompressed
            rle = mask_utils.frPyObjects({"size": [h, w], "counts": counts}, h, w)
        elif isinstance(counts, str | bytes):
            rle = {"size": [h, w], "counts": counts}
        else:
            return None
        return [float(v) for v in mask_utils.toBbox(rle).tolist()], "RLE"
    except (TypeError, ValueError, OverflowError):
        return None


def _content(entry: dict[str, Any]) -> tuple[Any, ...]:
    """What makes two annotations the same box: image, category, bbox, iscrowd."""
    return entry["image_id"], entry["category_id"], entry["bbox"], entry.get("iscrowd", 0)


def _annotations(
    raw: list[Any], path: Path, listed: set[int], report: ProblemReport
) -> dict[int, list[_Annotation]]:
    """Usable annotations per image id, in file order (see the module docstring)."""
    given = [as_int(a.get("id")) if isinstance(a, dict) else None for a in raw]
    next_id = max((i for i in given if i is not None), default=0) + 1
    first: dict[int, _Annotation] = {}  # id -> the first annotation kept under it
    per_image: dict[int, list[_Annotation]] = {}
    for i, (ann, aid) in enumerate(zip(raw, given, strict=True)):
        if not isinstance(ann, dict):
            found = f"{json_kind(ann)}, expected an object"
            report.add(Problem.BAD_ANNOTATION, path, f"{_where(i, None)}: {found}")
            continue
        image_id = as_int(ann.get("image_id"))
        cat = as_int(ann.get("category_id"))
        bbox = _bbox(ann.get("bbox"))
        from_segmentation = None
        if bbox is None and ann.get("bbox") in (None, []) and "segmentation" in ann:
            from_segmentation = _segmentation_bbox(ann["segmentation"])
            bbox = from_segmentation[0] if from_segmentation else None
        if image_id is None or cat is None or bbox is None:
            bad = [
                f"{key} {ann.get(key)!r}, expected an integer"
                for key, value in (("image_id", image_id), ("category_id", cat))
                if value is None
            ]
            if bbox is None:
                bad.append(
                    f"bbox {ann.get('bbox')!r}, expected [x, y, width, height] numbers"
                    + (" or a segmentation (polygons or RLE)" if "segmentation" in ann else "")
                )
            report.add(Problem.BAD_ANNOTATION, path, f"{_where(i, aid)}: {'; '.join(bad)}")
            continue
        if image_id not in listed:
            found = f"image_id {image_id} is not the id of any image entry"
            report.add(Problem.ORPHAN_ANNOTATION, path, f"{_where(i, aid)}: {found}")
            continue
        entry = {**ann, "id": aid, "image_id": image_id, "category_id": cat, "bbox": bbox}
        if from_segmentation is not None:
            given = f"bbox {ann['bbox']!r}" if "bbox" in ann else "no bbox"
            found = f"{given}, computed from its {from_segmentation[1]} segmentation"
            box = ", ".join(f"{v:g}" for v in bbox)
            report.add(Problem.BBOX_FROM_SEGMENTATION, path, f"{_where(i, aid)}: {found}: [{box}]")
        if aid is None or aid < 1:  # pycocotools matches by id and reads 0 as "no match"
            why = "" if aid is None else " (COCOeval takes ids below 1 for 'no box')"
            found = f"id {ann.get('id')!r}{why}, given id {next_id}"
            report.add(Problem.ANNOTATION_ID, path, f"{_where(i, aid)}: {found}")
            entry["id"], next_id = next_id, next_id + 1
        elif aid in first:
            earlier = first[aid]
            if _content(entry) == _content(earlier.entry):
                found = f"an exact repeat of {earlier.where}, dropped"
                report.add(Problem.DUPLICATE_ANNOTATION, path, f"{_where(i, aid)}: {found}")
                continue
            found = f"id already used by {earlier.where}, kept as id {next_id}"
            report.add(Problem.DUPLICATE_ANNOTATION, path, f"{_where(i, aid)}: {found}")
            entry["id"], next_id = next_id, next_id + 1
        kept = _Annotation(i, aid, entry)
        first.setdefault(entry["id"], kept)
        per_image.setdefault(image_id, []).append(kept)
    return per_image


def _crowd_and_area(
    ann: _Annotation, box_area: float, path: Path, report: ProblemReport
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
    annotations: list[_Annotation],
    class_of: dict[int, int],
    ann_path: Path,
    report: ProblemReport,
) -> tuple[list[np.ndarray], list[int], list[dict]]:
    """One image's annotations -> its non-crowd boxes (clipped ``x1, y1, x2, y2``) and class
    indices, and the annotations kept for the ground truth (unknown classes and unusable
    boxes reported and left out)."""
    file, width, height = img.file, img.width, img.height
    boxes, labels, anns = [], [], []
    first: dict[tuple[Any, ...], _Annotation] = {}  # (category, box, crowd) -> its first entry
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
    per_image = _annotations(dataset["annotations"], ann_path, listed, report)

    records, gt_images, gt_annotations = [], [], []
    for img in image_entries:
        file, width, height = img.file, img.width, img.height
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
    return DetectionData(records, names, category_ids, coco)
