"""Serving artifacts: the files of the formats table (:mod:`yolov4.export.formats`), each
checked against PyTorch, with their metadata."""

from yolov4.export.artifact import export_artifact

__all__ = ["export_artifact"]
