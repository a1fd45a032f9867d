"""The inputs of a COCO evaluation, checked where they enter: the ``COCOeval`` backend, the
category id of each class, and detection results against the ground truth they are scored on.

Each check raises a :class:`~yolov4.errors.ConfigError` (a setting) or
:class:`~yolov4.errors.InputError` (data) naming the expected, the found and the index, where
pycocotools would stop on an assertion or drop detections without a word.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from pycocotools.coco import COCO

from yolov4.errors import ConfigError, InputError

__all__ = [
    "COCO_BACKENDS",
    "DEFAULT_COCO_BACKEND",
    "RESULT_KEYS",
    "check_category_ids",
    "check_coco_backend",
    "check_results",
]

# module.coco_backend: what runs COCOeval. pycocotools is the reference every number is checked
# against; faster_coco_eval (pip install faster-coco-eval) is the drop-in C++ implementation.
COCO_BACKENDS = ("pycocotools", "faster_coco_eval")
DEFAULT_COCO_BACKEND = "pycocotools"


def check_coco_backend(backend: str) -> str:
    """``backend`` if it is one of :data:`COCO_BACKENDS` whose library is installed, else a
    :class:`ConfigError` naming the choices or the package to install."""
    if backend not in COCO_BACKENDS:
        raise ConfigError(
            f"module.coco_backend must be one of {list(COCO_BACKENDS)}, got {backend!r}"
        )
    if backend == "faster_coco_eval":
        try:
            import faster_coco_eval  # noqa: F401
        except ImportError as e:
            raise ConfigError(
                "module.coco_backend=faster_coco_eval needs the faster-coco-eval package, which "
                f"is not installed ({e}): pip install faster-coco-eval, or use "
                "module.coco_backend=pycocotools"
            ) from e
    return backend


RESULT_KEYS = ("image_id", "category_id", "bbox", "score")  # a COCO detection result's keys
IDS_SHOWN = 10  # ground-truth ids a message lists


def _ids_text(ids: Sequence[int]) -> str:
    ids = sorted(ids)
    if len(ids) <= IDS_SHOWN:
        return str(ids)
    return f"{str(ids[:IDS_SHOWN])[:-1]}, ... {len(ids)} in all]"


def check_category_ids(
    coco_gt: COCO, category_ids: Sequence[int], num_classes: int | None = None
) -> list[int]:
    """``category_ids`` (``category_ids[class_index]``: the category id a class is scored as)
    as a list, or a :class:`ConfigError` naming what is wrong: not ``num_classes`` of them
    (when given), an id repeated, or an id that is not a category of ``coco_gt``, whose
    detections COCOeval would drop without a word (class indices written as ids: a model
    scored 0)."""
    ids = list(category_ids)
    if num_classes is not None and len(ids) != num_classes:
        raise ConfigError(
            f"category_ids: expected one category id per class of the model ({num_classes}), "
            f"got {len(ids)}: {ids}"
        )
    known = set(coco_gt.getCatIds())
    for k, c in enumerate(ids):
        if isinstance(c, bool) or not isinstance(c, (int, np.integer)):
            raise ConfigError(f"category_ids[{k}]: expected an integer category id, got {c!r}")
        if c not in known:
            raise ConfigError(
                f"category_ids[{k}] = {c} is not a category of the ground truth (its category "
                f"ids: {_ids_text(known)}); category_ids[class_index] is the id of the class's "
                "category, not the class index"
            )
        if c in ids[:k]:
            raise ConfigError(
                f"category_ids[{k}] = {c} repeats category_ids[{ids.index(c)}]: one category "
                "per class"
            )
    return [int(c) for c in ids]


def check_results(
    coco_gt: COCO, results: Sequence[Any], image_ids: Sequence[int] | None = None
) -> None:
    """An :class:`InputError` naming the first bad entry of ``results`` (COCO detection results
    on ``coco_gt``): not a mapping with :data:`RESULT_KEYS`, an ``image_id`` that is not an
    image of ``coco_gt`` (pycocotools would stop on an assertion) or a ``category_id`` that is
    not one of its categories (COCOeval would drop it without a word: class indices written
    as ids score 0); also an id of ``image_ids`` that is not an image of ``coco_gt``."""
    images, cats = set(coco_gt.getImgIds()), set(coco_gt.getCatIds())
    for i in image_ids if image_ids is not None else ():
        if i not in images:
            raise InputError(
                f"image_ids: {i!r} is not an image of the ground truth (its image ids: "
                f"{_ids_text(images)})"
            )
    try:  # sets first: a loop in Python over every result only to name a bad one
        found_images = {r["image_id"] for r in results}
        found_cats = {r["category_id"] for r in results}
        complete = all("bbox" in r and "score" in r for r in results)
    except (KeyError, TypeError, AttributeError):
        found_images, found_cats, complete = set(), set(), False
    if complete and found_images <= images and found_cats <= cats:
        return
    for k, r in enumerate(results):
        if not isinstance(r, Mapping) or any(key not in r for key in RESULT_KEYS):
            found = sorted(map(str, r)) if isinstance(r, Mapping) else type(r).__name__
            raise InputError(
                f"results[{k}]: expected a dict with keys {list(RESULT_KEYS)}, got {found}"
            )
        if r["image_id"] not in images:
            raise InputError(
                f"results[{k}]: image_id {r['image_id']!r} is not an image of the ground truth "
                f"(its image ids: {_ids_text(images)})"
            )
        if r["category_id"] not in cats:
            raise InputError(
                f"results[{k}]: category_id {r['category_id']!r} is not a category of the ground "
                f"truth (its category ids: {_ids_text(cats)}); results carry each class's "
                "category id (category_ids[class_index]), not the class index"
            )
