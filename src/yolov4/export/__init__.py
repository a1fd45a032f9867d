"""Serving artifacts: ONNX / TorchScript files checked against PyTorch, with their metadata."""

from yolov4.export.artifact import export_artifact

__all__ = ["export_artifact"]
