"""What a :class:`~yolov4.inference.predictor.Predictor` answers and takes for classes:
:class:`Detections` (one image's boxes, scores and classes in its own pixels, as JSON) and
:func:`class_ids` (classes given by id or name -> ids, checked)."""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from yolov4.errors import InputError

__all__ = ["Detections", "class_ids"]

NAMES_SHOWN = 10  # class names an unknown-name error lists


def class_ids(classes: int | str | Sequence[int | str], class_names: Sequence[str]) -> list[int]:
    """Class ids (``int``, e.g. ``2``; an integer numpy array or torch tensor) or names
    (``str``, e.g. ``"person"``), mixed, or one of either -> ids, in the given order.
    :class:`InputError` for an id out of range, an unknown name (listing the first valid names
    and how many there are) or an empty list, which would keep no class (``None`` keeps all)."""
    if isinstance(classes, (np.ndarray, torch.Tensor)):
        classes = _integer_ids(classes)
    if isinstance(classes, (str, int, np.integer)):
        items = [classes]
    elif isinstance(classes, Iterable):
        items = list(classes)
    else:
        raise InputError(
            f"classes: expected a class id, a name, or a list of them, got {classes!r}"
        )
    if not items:
        raise InputError(
            "classes: got an empty list, which would keep no class; leave classes out (None) "
            "to keep every class, or give ids or names, e.g. [0, 2] or ['person']"
        )
    index = {name: i for i, name in enumerate(class_names)}
    ids, unknown, bad = [], [], []
    for c in items:
        if isinstance(c, str):
            if c in index:
                ids.append(index[c])
            else:
                unknown.append(c)
        elif isinstance(c, (int, np.integer)) and not isinstance(c, bool):
            (ids if 0 <= c < len(class_names) else bad).append(int(c))
        else:
            raise InputError(f"classes: expected class ids (int) or names (str), got {c!r}")
    if unknown:
        shown = ", ".join(class_names[:NAMES_SHOWN])
        more = f", ... ({len(class_names)} names)" if len(class_names) > NAMES_SHOWN else ""
        raise InputError(f"classes: unknown class names {unknown}; the model's are: {shown}{more}")
    if bad:
        raise InputError(f"classes {bad} out of range: the model has {len(class_names)} classes")
    return ids


def _integer_ids(array: np.ndarray | torch.Tensor) -> int | list[int]:
    """An integer array or tensor of class ids (0-d: one id) as Python ints."""
    dtype = array.dtype
    integer = (
        not dtype.is_floating_point and not dtype.is_complex and dtype != torch.bool
        if isinstance(array, torch.Tensor)
        else np.issubdtype(dtype, np.integer)
    )
    if not integer or array.ndim > 1:
        raise InputError(
            f"classes: expected class ids as an integer {type(array).__name__} of at most one "
            f"dimension, got dtype {dtype} and shape {tuple(array.shape)}"
        )
    return array.tolist()


@dataclass
class Detections:
    """Detections of one image, in that image's original pixels.

    ``boxes (K, 4)`` float32 xyxy, ``scores (K,)`` float32, ``class_ids (K,)`` int64,
    ``class_names`` K strings, ``image_size`` ``(H, W)`` of the original image. ``K`` may be 0.
    ``track_ids (K,)`` int64 when a :class:`~yolov4.inference.tracking.Tracker` set them.
    """

    boxes: np.ndarray
    scores: np.ndarray
    class_ids: np.ndarray
    class_names: list[str]
    image_size: tuple[int, int]
    timing_ms: dict[str, float] = field(default_factory=dict)
    track_ids: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.scores)

    def to_dict(self) -> dict[str, Any]:
        h, w = self.image_size
        out = {
            "detections": [
                {
                    "box": [round(float(v), 3) for v in box],  # as detections.json
                    "score": round(float(s), 5),
                    "class_id": int(c),
                    "class_name": n,
                }
                for box, s, c, n in zip(self.boxes, self.scores, self.class_ids, self.class_names)
            ],
            "image": {"width": int(w), "height": int(h)},
        }
        if self.track_ids is not None:
            for d, t in zip(out["detections"], self.track_ids):
                d["track_id"] = int(t)
        return out

    def to_json(self) -> str:
        return json.dumps(self.to_dict())
