"""The checks a DataModule makes of a loaded split: a training split needs a box
(:func:`check_trainable`), a class without a box is named (:func:`classes_without_boxes`,
also in ``yolov4-check-data``'s report), images listed more than once are read once in a
split that is scored (:func:`repeated_listings`), the splits agree on their classes
(:func:`check_classes`) and do not share images (:func:`shared_images`).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping

import numpy as np

from yolov4.data.records import DetectionData
from yolov4.errors import DatasetError

__all__ = [
    "check_classes",
    "check_trainable",
    "classes_without_boxes",
    "repeated_listings",
    "shared_images",
]

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


def check_classes(
    name: str, splits: Mapping[str, DetectionData], num_classes: int | None = None
) -> None:
    """Split ``name`` of the loaded ``splits`` has ``num_classes`` classes (the model's; any
    when ``None``) and the classes and category ids of every other loaded split, else a
    :class:`DatasetError`."""
    data = splits[name]
    if num_classes is not None and data.num_classes != num_classes:
        raise DatasetError(
            f"data.{name} has {data.num_classes} classes {data.class_names} but the model has "
            f"{num_classes}; set model.num_classes={data.num_classes}"
        )
    for other, od in splits.items():
        if od.class_names != data.class_names or od.category_ids != data.category_ids:
            raise DatasetError(
                f"data.{name} classes {list(zip(data.category_ids, data.class_names, strict=True))} differ "
                f"from data.{other} classes {list(zip(od.category_ids, od.class_names, strict=True))}"
            )


def shared_images(name: str, splits: Mapping[str, DetectionData]) -> list[str]:
    """A warning for each other loaded split that holds images of split ``name`` (a val folder
    inside the train folder): its mAP would score images the network trained on."""
    files = {os.path.abspath(r.file) for r in splits[name].records}
    warnings = []
    for other, od in splits.items():
        if other == name:
            continue
        shared = sorted(files.intersection(os.path.abspath(r.file) for r in od.records))
        if shared:
            warnings.append(
                f"data.{other} and data.{name} share {len(shared)} images (e.g. "
                f"{shared[0]}): validation would score images the network trains on; give "
                "the splits separate images"
            )
    return warnings
