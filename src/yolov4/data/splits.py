"""The checks a DataModule makes of a loaded split: a training split needs a box
(:func:`check_trainable`), a class without a box is named (:func:`classes_without_boxes`,
also in ``yolov4-check-data``'s report), and images listed more than once are read once in a
split that is scored (:func:`repeated_listings`).
"""

from __future__ import annotations

import logging

import numpy as np

from yolov4.data.records import DetectionData
from yolov4.errors import DatasetError

__all__ = ["check_trainable", "classes_without_boxes", "repeated_listings"]

log = logging.getLogger(__name__)


def check_trainable(data: DetectionData, name: str = "train") -> None:
    """Refuse a training split without a single box (:class:`DatasetError` with what the loader
    searched: labels in a folder of another name, or all in pixel coordinates, end here), and
    warn about classes without a box in it (:func:`classes_without_boxes`)."""
    if data.num_boxes == 0:
        found = "".join(f"\n  {note}" for note in data.notes)
        raise DatasetError(
            f"data.{name} has {len(data.records)} images and no box: nothing to learn from. "
            f"Check the labels (yolov4-check-data shows what was read){found}"
        )
    warning = classes_without_boxes(data, name)
    if warning:
        log.warning("%s", warning)


def classes_without_boxes(data: DetectionData, name: str = "train") -> str | None:
    """The warning naming the classes of split ``name`` without a box; ``None`` when every
    class has one, or when the split has no box at all (:func:`check_trainable` refuses it)."""
    if data.num_boxes == 0:
        return None
    counts = np.bincount(
        np.concatenate([r.labels for r in data.records]), minlength=data.num_classes
    )
    empty = [
        f"{n!r} (category_id {c})"
        for n, c, k in zip(data.class_names, data.category_ids, counts, strict=True)
        if k == 0
    ]
    if not empty:
        return None
    return (
        f"data.{name}: {len(empty)} of {data.num_classes} classes have no box to learn from: "
        + ", ".join(empty)
    )


def repeated_listings(name: str, data: DetectionData) -> DetectionData:
    """Split ``name`` with the images listed more than once (:attr:`DetectionData.repeats`)
    read once in a val or test split (repeats would weigh those images twice in the metrics),
    kept in a train split (oversampling may be meant); a note says which."""
    n = len(data.repeats)
    if not n:
        return data
    if name == "train":
        data.notes.append(
            f"{n} repeated listings of images kept: each listing is one more sample of its "
            "image per epoch (list each image once for a uniform draw)"
        )
        return data
    data = data.without_repeats()
    data.notes.append(f"{n} repeated listings of images left out: each image is scored once")
    return data
