"""What ``yolov4-check-data`` prints (:mod:`yolov4.cli.check_data`: composes the data config,
builds the DataModule): loads every split, decodes every image (``--no-decode`` to skip) and
prints per split: image count, negatives, boxes per class,
the box size histogram (COCO's small < 32², medium < 96², large), and every problem found with
its file and entry: malformed entries, duplicate image and annotation ids, annotations of
unlisted images (what is kept is the loaders' rule: :mod:`yolov4.data.coco`), bad label lines,
undecodable images, and what ``train.py`` warns about at start-up (splits sharing images,
classes without a box in the train split).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from yolov4.data.datamodule import SPLITS, DetectionDataModule, classes_without_boxes
from yolov4.data.dataset import DetectionDataset
from yolov4.data.records import COCO_MEDIUM_AREA, COCO_SMALL_AREA, DetectionData, ProblemReport

__all__ = ["split_statistics", "check_datamodule"]


def split_statistics(
    data: DetectionData, unreadable: Sequence[int] = (), split: str = "train"
) -> str:
    """Counts per class and the COCO size histogram of one split (boxes in original pixels),
    what the loader left out (``data.notes``), and the images of ``unreadable`` (record
    indices that did not decode: skipped in training, left out of evaluation); ``split`` names
    what a split without boxes means (``train``: no run starts; ``val``: no mAP)."""
    labels = (
        np.concatenate([r.labels for r in data.records]) if data.records else np.zeros(0, np.int64)
    )
    boxes = np.concatenate([r.boxes for r in data.records]).reshape(-1, 4)
    area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    negatives = sum(len(r.labels) == 0 for r in data.records)
    lines = [f"  images: {len(data.records)} ({negatives} without boxes), boxes: {len(labels)}"]
    counts = np.bincount(labels, minlength=data.num_classes)
    for i, (cid, name) in enumerate(zip(data.category_ids, data.class_names, strict=True)):
        lines.append(f"    {i:3d} {name:<24s} (category_id {cid:>4}): {counts[i]:7d}")
    small = int((area < COCO_SMALL_AREA).sum())
    medium = int(((area >= COCO_SMALL_AREA) & (area < COCO_MEDIUM_AREA)).sum())
    lines.append(f"  box sizes: small {small}, medium {medium}, large {len(area) - small - medium}")
    if unreadable:
        lost = sum(len(data.records[i].labels) for i in unreadable)
        lines.append(
            f"  of these, {len(unreadable)} images ({lost} boxes) do not decode: skipped in "
            "training, left out of evaluation"
        )
    lines.extend(f"  note: {note}" for note in data.notes)
    if not len(labels) and split == "train":
        lines.append("  no box in this split: training on it stops at start-up")
    elif not len(labels):
        lines.append(
            "  no box in this split: COCO mAP is undefined on it (validation logs 0 and "
            "best.pt is not chosen by it)"
        )
    return "\n".join(lines)


def check_datamodule(
    dm: DetectionDataModule, decode: bool = True, examples: int | None = None
) -> str:
    """Load (and decode) every split of ``dm`` and return the report text."""
    out = []
    for name in SPLITS:
        data = dm.split(name)
        if data is None:
            continue
        report: ProblemReport = dm.reports[name]
        unreadable = []
        if decode:
            dataset = DetectionDataset(
                data, dm.preprocess_config, None, dm.strict, name=f"data.{name}"
            )
            dataset.report.log_each = False
            unreadable = [i for i in range(len(dataset)) if dataset.load(i) is None]
            report.merge(dataset.report)
        stats = split_statistics(data, unreadable, name)
        warnings = list(dm.warnings.get(name, []))
        if name == "train":  # what train.py warns about at start-up
            warnings.append(classes_without_boxes(data, name))
        stats += "".join(f"\n  warning: {w}" for w in warnings if w)
        out += [f"[{name}]", stats, report.summary(examples)]
    return "\n".join(out)
