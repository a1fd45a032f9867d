"""Network + decode: the one module every backend, export and evaluation path runs."""

from __future__ import annotations

import torch
from torch import nn

from yolov4.models import YOLOv4
from yolov4.ops.decode import decode_predictions

__all__ = ["DecodedModel"]


class DecodedModel(nn.Module):
    """The network plus darknet's decode (``new_coords`` as the model's config says):
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

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return decode_predictions(
            self.model(images), self.anchors, self.strides, self.scale_x_y, self.new_coords
        )
