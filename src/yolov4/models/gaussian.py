"""Darknet's Gaussian YOLOv3 head, ``[Gaussian_yolo]``, read from a cfg (no torch).

``[Gaussian_yolo]`` (``gaussian_yolo_layer.c``, ``parse_gaussian_yolo``; the Gaussian YOLOv3
paper, Choi et al., ICCV 2019) is built for inference. It is a ``[yolo]`` head (``mask``,
``anchors``, ``num``, ``classes``, ``scale_x_y`` and the ``[yolo]`` loss keys, read as a
``[yolo]``'s) whose map has ``A * (9 + C)`` channels, per anchor
``[tx, sx, ty, sy, tw, sw, th, sh, to, classes]``: each box coordinate followed by its
uncertainty. Darknet's forward applies the logistic to ``tx, sx, ty, sy, sw, sh``, the
objectness and the classes (not to ``tw, th``), shifts ``tx, ty`` by ``scale_x_y`` as a
``[yolo]``'s, and ``get_gaussian_yolo_detections`` gives, for objectness above the threshold,

    box as a [yolo] head's from (tx, ty, tw, th)
    score_c = objectness * class_c * (1 - (sx + sy + sw + sh) / 4)   (the logistics)

so the model config holds the heads as ``[yolo]`` heads with ``gaussian=True``, and
:func:`yolov4.ops.decode.decode_predictions` folds the uncertainty factor into the class
probabilities (objectness unchanged, as darknet thresholds it), giving the ``(B, N, 5 + C)``
layout of every model; the four uncertainties themselves are not kept after the decode.
``yolo_point`` (the box point tx, ty place) is built at darknet's default ``center`` only; the
Gaussian loss is not built: :func:`yolov4.models.region.check_trainable` refuses to train such a
network. OpenCV's darknet importer does not know the layer.
"""

from __future__ import annotations

__all__ = [
    "GAUSSIAN_KIND",
    "GAUSSIAN_KEYS",
    "GAUSSIAN_NOT_TRAINED",
    "YOLO_KINDS",
    "head_entries",
]

# the section type as darknet's parser names it (src/parser.c string_to_layer_type: case matters)
GAUSSIAN_KIND = "Gaussian_yolo"

# the masked-anchor heads whose keys are darknet's [yolo] keys
YOLO_KINDS = ("yolo", GAUSSIAN_KIND)

# keys parse_gaussian_yolo reads beside the [yolo] ones: the uncertainty loss weight (kept and
# written back) and the box point (yolo_point; only darknet's default, center, is built)
GAUSSIAN_KEYS = {"uc_normalizer", "yolo_point"}

# entries per anchor before the classes: [yolo]'s tx, ty, tw, th, to; [Gaussian_yolo]'s eight
# box entries (each coordinate and its uncertainty) and to (make_gaussian_yolo_layer: 8 + 1)
_YOLO_ENTRIES = 5
_GAUSSIAN_ENTRIES = 9

GAUSSIAN_NOT_TRAINED = (
    "Gaussian_yolo (Gaussian YOLOv3) networks are built for inference (predict, evaluate, "
    "export); training them needs darknet's Gaussian loss, which is not built"
)


def head_entries(gaussian: bool) -> int:
    """Channels per anchor of a head map before its ``C`` class channels: 9 for a
    ``[Gaussian_yolo]`` head, 5 for a ``[yolo]`` (or ``[region]``) head."""
    return _GAUSSIAN_ENTRIES if gaussian else _YOLO_ENTRIES
