"""Darknet's YOLOv2 layers: ``[reorg]`` and the ``[region]`` head, read from a cfg (no torch).

``[reorg]`` (darknet's ``[reorg]`` is ``reorg_old_layer.c``; ``parse_reorg``): space to depth,
``stride`` x ``stride`` blocks into channels in darknet's order (:class:`yolov4.models.layers.Reorg`).

``[region]`` (``region_layer.c``, ``parse_region``) is built for inference: its input map is laid
out as a ``[yolo]`` head's, ``A * (5 + C)`` channels of ``[tx, ty, tw, th, to, classes]`` per
anchor, and decodes (``get_region_box``, ``get_region_detections``) as

    x = (i + sigmoid(tx)) / W        w = exp(tw) * anchor_w / W       (anchors in grid cells)
    y = (j + sigmoid(ty)) / H        h = exp(th) * anchor_h / H
    objectness = sigmoid(to),        class c = softmax(classes)_c,    score = objectness * class

which is the ``[yolo]`` decode with ``scale_x_y=1``, anchors in input pixels (the cfg's grid-cell
anchors times the head's stride) and softmax class probabilities: the model config holds it as
one head with every anchor and ``region=True`` (:func:`read_region_keys`), and
:func:`yolov4.ops.decode.decode_predictions` applies the softmax. The cfg's other ``[region]``
keys set darknet's region loss and training loop (:data:`REGION_TRAINING_KEYS`): kept and written
back. That loss is not built: :func:`check_trainable` refuses to train such a network.
"""

from __future__ import annotations

from typing import Any

from yolov4.errors import ConfigError
from yolov4.models.gaussian import GAUSSIAN_KIND, GAUSSIAN_NOT_TRAINED

# cfg.Section: typed Any here (yolov4.models.cfg imports this module through cfg_keys)
Section = Any

__all__ = [
    "HEAD_KINDS",
    "REGION_TRAINING_KEYS",
    "REGION_NOT_TRAINED",
    "check_region_keys",
    "check_trainable",
    "read_region_keys",
    "region_anchors_in_cells",
]

# the sections that end the network in a detection head
HEAD_KINDS = ("yolo", "region", GAUSSIAN_KIND)

# [region] keys darknet's region loss and training loop read (parse_region): kept verbatim and
# written back, no effect on inference
REGION_TRAINING_KEYS = {
    "jitter", "rescore", "bias_match", "object_scale", "noobject_scale", "class_scale",
    "coord_scale", "mask_scale", "random", "thresh", "absolute", "max", "resize", "classfix",
    "focal_loss",
}  # fmt: skip

# darknet's box coordinates per anchor in a [region] map (parse_region's default)
REGION_COORDS = 4

REGION_NOT_TRAINED = (
    "region (YOLOv2) networks are built for inference (predict, evaluate, export); training "
    "them needs darknet's region loss, which is not built"
)

# [region] keys that change what the layer outputs and are not built: key -> what it is
_REFUSED = {
    "tree": "darknet's hierarchical softmax (YOLO9000's word tree)",
    "map": "darknet's class map of a word-tree network (YOLO9000)",
    "log": "a log-space box variant of an older darknet",
    "sqrt": "a square-root box variant of an older darknet",
    "background": "the background-class variant of an older darknet (objectness taken as 1)",
}


def check_region_keys(s: Section) -> None:
    """A ``[region]`` section's values the builder does not build, each refused on one line
    naming the key and value: ``tree``/``map`` (YOLO9000), ``coords`` other than 4,
    ``softmax`` other than 1 (darknet's default 0: raw class values), ``log``, ``sqrt`` or
    ``background`` other than 0."""
    built = "yolov4 builds [region] with coords=4 and softmax=1 over its classes"
    for key, what in _REFUSED.items():
        value = s.options.get(key)
        if value is not None and (key in ("tree", "map") or _number(value) != 0):
            raise s.error(key, f"{key}={value} is {what}, which is not built; {built}")
    coords = s.get_int("coords", REGION_COORDS)
    if coords != REGION_COORDS:
        raise s.error("coords", f"coords={coords} (boxes with extra mask coefficients) is not "
                      f"built; {built}")  # fmt: skip
    softmax = s.get_int("softmax", 0)
    if softmax != 1:
        given = "" if "softmax" in s.options else " (darknet's default when absent)"
        raise s.error("softmax", f"softmax={softmax}{given}: darknet leaves the class values "
                      f"unactivated, which is not built; {built}")  # fmt: skip


def _number(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:
        return None


def read_region_keys(sections: list[Section], region: Section, stride: int) -> dict[str, Any]:
    """Model config values of a network whose head is the ``[region]`` section ``region`` at
    ``stride``: ``num_classes``, ``anchors`` (the cfg's grid-cell anchors times the stride:
    input pixels, as every model's), one mask of every anchor, ``region=True``."""
    heads = [s for s in sections if s.kind in HEAD_KINDS]
    if len(heads) > 1:
        other = next(s for s in heads if s is not region)
        raise other.error(None, f"a network with a [region] head ({region.where()}) has one "
                          "head here; darknet's YOLOv2 cfgs have one [region] and no [yolo]")  # fmt: skip
    num = region.get_int("num", 1)
    anchors = region.get_floats("anchors")
    if not anchors:  # no anchors= line, or an empty one
        raise region.error(
            "anchors", f"missing; num={num} needs {2 * num} numbers ({num} w,h pairs in grid cells)"
        )
    if len(anchors) < 2 * num:
        # darknet keeps its default 0.5 for anchors the cfg leaves out; a short list is a mistake
        raise region.error("anchors", f"has {len(anchors)} numbers, num={num} needs {2 * num}")
    if len(anchors) > 2 * num:
        raise region.error("anchors", f"has {len(anchors)} numbers, num={num} reads {2 * num}")
    return {
        "num_classes": region.get_int("classes", 20),
        "anchors": [[anchors[2 * k] * stride, anchors[2 * k + 1] * stride] for k in range(num)],
        "masks": [list(range(num))],
        "region": True,
    }


def region_anchors_in_cells(anchors: tuple[tuple[float, float], ...], stride: int) -> list[float]:
    """Model config anchors (input pixels) as a ``[region]``'s ``anchors=`` (grid cells)."""
    return [v / stride for wh in anchors for v in wh]


def check_trainable(config: Any) -> None:
    """:class:`ConfigError` for a model config with a ``[region]`` head (``config.region``):
    :data:`REGION_NOT_TRAINED`; with ``[Gaussian_yolo]`` heads (``config.gaussian``):
    :data:`yolov4.models.gaussian.GAUSSIAN_NOT_TRAINED`."""
    if getattr(config, "region", False):
        raise ConfigError(f"model {config.name}: {REGION_NOT_TRAINED}")
    if getattr(config, "gaussian", False):
        raise ConfigError(f"model {config.name}: {GAUSSIAN_NOT_TRAINED}")
