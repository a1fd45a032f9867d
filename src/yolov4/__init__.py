"""yolov4: train, evaluate, export and serve YOLOv4-family detectors, exact to darknet."""

from yolov4.core.checkpoint import Checkpoint, load_checkpoint, save_checkpoint
from yolov4.errors import CheckpointError, ConfigError, DatasetError, ExportError, InputError
from yolov4.export import formats as _formats  # noqa: F401  (registers the export formats)
from yolov4.inference import Detections, Predictor
from yolov4.models import ModelConfig, YOLOv4, build_model, fuse_model
from yolov4.version import __version__

__all__ = [
    "build_model",
    "fuse_model",
    "YOLOv4",
    "load_checkpoint",
    "save_checkpoint",
    "Checkpoint",
    "ModelConfig",
    "InputError",
    "ExportError",
    "Predictor",
    "Detections",
    "CheckpointError",
    "ConfigError",
    "DatasetError",
    "__version__",
]
