"""Checkpoint format and (later) ONNX/TorchScript artifacts."""

from yolov4.export.checkpoint import (
    FORMAT,
    Checkpoint,
    load_checkpoint,
    load_state_dict_checked,
    read_checkpoint,
    save_checkpoint,
)

__all__ = [
    "FORMAT",
    "Checkpoint",
    "load_checkpoint",
    "load_state_dict_checked",
    "read_checkpoint",
    "save_checkpoint",
]
