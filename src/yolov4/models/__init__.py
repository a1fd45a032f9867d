"""The networks (pure ``nn.Module``s): layers, backbones, necks, heads and their assembly."""

from yolov4.models.config import ModelConfig, available_models
from yolov4.models.fuse import fuse_model
from yolov4.models.yolov4 import YOLOv4, build_model

__all__ = ["YOLOv4", "ModelConfig", "build_model", "fuse_model", "available_models"]
