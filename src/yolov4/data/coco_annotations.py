"""A COCO json's ``annotations`` entries, checked and repaired one by one (the rules are in
:mod:`yolov4.data.coco`'s docstring): a box from ``bbox`` or, without one, from the
``segmentation`` (polygons or RLE); an id below 1, missing or repeated replaced by a new one;
an exact repeat dropped; an orphan skipped. :func:`annotations_by_image` gives the usable ones
per image id, in file order.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pycocotools import mask as mask_utils

from yolov4.data.problems import Problem, ProblemReport
from yolov4.data.records import as_int, is_number, json_kind

__all__ = ["Annotation", "annotations_by_image"]

COCO_BBOX_LEN = 4  # [x, y, width, height]


def _where(index: int, given_id: int | None) -> str:
    """How an annotation is named in reports: ``annotations[3] (id 7)``."""
    return f"annotations[{index}]" + (f" (id {given_id})" if given_id is not None else "")


@dataclass
class Annotation:
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


def _entry(
    ann: Any, i: int, aid: int | None, path: Path, listed: set[int], report: ProblemReport
) -> dict[str, Any] | None:
    """Annotation ``i`` (its id in the file ``aid``) with ``image_id``, ``category_id`` and
    ``bbox`` checked (the box from the segmentation when it has no ``bbox``), its id not yet
    repaired; ``None`` (reported) when it is unusable or names no listed image."""
    if not isinstance(ann, dict):
        found = f"{json_kind(ann)}, expected an object"
        report.add(Problem.BAD_ANNOTATION, path, f"{_where(i, None)}: {found}")
        return None
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
        return None
    if image_id not in listed:
        found = f"image_id {image_id} is not the id of any image entry"
        report.add(Problem.ORPHAN_ANNOTATION, path, f"{_where(i, aid)}: {found}")
        return None
    if from_segmentation is not None:
        given = f"bbox {ann['bbox']!r}" if "bbox" in ann else "no bbox"
        found = f"{given}, computed from its {from_segmentation[1]} segmentation"
        box = ", ".join(f"{v:g}" for v in bbox)
        report.add(Problem.BBOX_FROM_SEGMENTATION, path, f"{_where(i, aid)}: {found}: [{box}]")
    return {**ann, "id": aid, "image_id": image_id, "category_id": cat, "bbox": bbox}


def annotations_by_image(
    raw: list[Any], path: Path, listed: set[int], report: ProblemReport
) -> dict[int, list[Annotation]]:
    """Usable annotations per image id, in file order (see the module docstring)."""
    given = [as_int(a.get("id")) if isinstance(a, dict) else None for a in raw]
    next_id = max((i for i in given if i is not None), default=0) + 1
    first: dict[int, Annotation] = {}  # id -> the first annotation kept under it
    per_image: dict[int, list[Annotation]] = {}
    for i, (ann, aid) in enumerate(zip(raw, given, strict=True)):
        entry = _entry(ann, i, aid, path, listed, report)
        if entry is None:
            continue
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
        kept = Annotation(i, aid, entry)
        first.setdefault(entry["id"], kept)
        per_image.setdefault(entry["image_id"], []).append(kept)
    return per_image
