"""The detection head in front of each darknet ``[yolo]`` layer: 3x3 conv + linear 1x1 conv."""

from __future__ import annotations

import torch
from torch import nn

from yolov4.models.darknet_graph import DarknetGraph
from yolov4.models.layers import ConvBnAct

__all__ = ["YoloHead"]


class YoloHead(nn.Module):
    """``(B, in_channels, H, W) -> (B, A * (5 + C), H, W)``: raw ``[tx, ty, tw, th, obj, cls...]``
    per anchor, laid out as darknet's conv output (anchor-major channels)."""

    def __init__(self, in_channels: int, mid_channels: int, num_anchors: int, num_classes: int):
        super().__init__()
        self.num_anchors, self.num_classes = num_anchors, num_classes
        self.conv = ConvBnAct(in_channels, mid_channels, 3, act="leaky")
        self.pred = ConvBnAct(
            mid_channels, num_anchors * (5 + num_classes), 1, act="linear", bn=False
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pred(self.conv(x))

    def emit_darknet(self, g: DarknetGraph, src: int) -> int:
        return self.pred.emit_darknet(g, self.conv.emit_darknet(g, src))
