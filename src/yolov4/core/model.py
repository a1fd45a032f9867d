"""Network + decode: the one module every backend, export and evaluation path runs."""

from __future__ import annotations

import dataclasses

import torch
from torch import nn

from yolov4.core.preprocess import PreprocessConfig
from yolov4.models import ModelConfig, YOLOv4
from yolov4.ops.decode import decode_predictions

__all__ = ["DecodedModel", "running_config"]


def running_config(config: ModelConfig, preprocess: PreprocessConfig) -> ModelConfig:
    """The model config of ``config``'s network as it runs on the images of ``preprocess``:
    its input size, and ``[net] letter_box`` from the resize mode (as the darknet format's
    model.cfg writes both), not the cfg's darknet training setting. What an export's metadata
    and a Predictor's ``metadata["model"]`` record."""
    letter_box = preprocess.mode == "letterbox"
    size = tuple(int(s) for s in preprocess.input_size)
    return dataclasses.replace(config, input_size=size, letter_box=letter_box)


class DecodedModel(nn.Module):
    """The network plus darknet's decode (``new_coords``, a ``[region]`` head's class softmax and
    ``[Gaussian_yolo]`` heads' uncertainty as the model's config says):
    ``(B, 3, H, W) -> (B, N, 5 + C)`` in input pixels."""

    def __init__(self, model: YOLOv4) -> None:
        super().__init__()
        self.model = model
        c = model.config
        self.anchors, self.strides, self.scale_x_y = (
            c.head_anchors(),
            list(c.strides),
            list(c.scale_x_y),
        )
        self.new_coords = bool(c.new_coords)
        self.softmax = bool(c.region)
        self.gaussian = bool(c.gaussian)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return decode_predictions(
            self.model(images),
            self.anchors,
            self.strides,
            self.scale_x_y,
            self.new_coords,
            self.softmax,
            self.gaussian,
        )
