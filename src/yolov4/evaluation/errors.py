"""The TIDE error breakdown under its old module name, kept for one release:
:mod:`yolov4.evaluation.tide` (importing this module warns)."""

from yolov4.evaluation.tide import (
    ERROR_TYPES,
    TB,
    TF,
    ErrorBreakdown,
    coco_ap50,
    error_breakdown,
)
from yolov4.version import warn_renamed

__all__ = ["ErrorBreakdown", "error_breakdown", "coco_ap50", "ERROR_TYPES", "TB", "TF"]

warn_renamed("yolov4.evaluation.errors", "yolov4.evaluation.tide", stacklevel=2)
