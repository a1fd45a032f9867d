"""Necks: SPP + PANet (yolov4.cfg layers 105-158) and yolov4-tiny's small FPN (27-34).

A neck takes the backbone's features (ascending stride) and returns one feature map per head,
ascending stride. ``emit_darknet`` calls ``on_output(level, layer)`` the moment a level's
output exists, so the caller can emit that level's head where darknet's cfg puts it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from yolov4.models.darknet_graph import DarknetGraph
from yolov4.models.layers import ConvBnAct

__all__ = ["SPP", "PANet", "TinyFPN", "ConvStack"]

OnOutput = Callable[[int, int], None]
ACT = "leaky"  # every neck layer of yolov4.cfg and yolov4-tiny.cfg


def _upsample(x: torch.Tensor) -> torch.Tensor:
    return F.interpolate(x, scale_factor=2.0, mode="nearest")  # darknet [upsample] stride=2


class ConvStack(nn.Sequential):
    """Alternating 1x1 (``channels``) and 3x3 (``2 * channels``) convs, starting and ending with
    1x1; ``num`` is odd. ``(B, Cin, H, W) -> (B, channels, H, W)``."""

    def __init__(self, in_channels: int, channels: int, num: int) -> None:
        layers = [ConvBnAct(in_channels, channels, 1, act=ACT)]
        for i in range(1, num):
            layers.append(
                ConvBnAct(channels, 2 * channels, 3, act=ACT)
                if i % 2
                else ConvBnAct(2 * channels, channels, 1, act=ACT)
            )
        super().__init__(*layers)

    def emit_darknet(self, g: DarknetGraph, src: int) -> int:
        for layer in self:
            src = layer.emit_darknet(g, src)
        return src


class SPP(nn.Module):
    """Spatial pyramid pooling: concat ``[mp13, mp9, mp5, x]`` (stride-1 max pools, same size).
    ``(B, C, H, W) -> (B, 4C, H, W)``.

    Computed as darknet defines it but cheaper: a 9x9 max pool equals two chained 5x5 ones and
    a 13x13 three (stride 1, out-of-image positions ignored), exactly.
    """

    SIZES = (5, 9, 13)
    BASE = 5

    def __init__(self) -> None:
        super().__init__()
        self.pool = nn.MaxPool2d(self.BASE, 1, self.BASE // 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mp5 = self.pool(x)
        mp9 = self.pool(mp5)
        mp13 = self.pool(mp9)
        return torch.cat([mp13, mp9, mp5, x], 1)

    def emit_darknet(self, g: DarknetGraph, src: int) -> int:
        pooled = [g.maxpool(src, size=k, stride=1) for k in self.SIZES]
        return g.route(pooled[::-1] + [src])


class PANet(nn.Module):
    """SPP, top-down FPN and bottom-up path of yolov4.cfg.

    ``(C3, C4, C5)`` with ``in_channels`` (256, 512, 1024) -> ``(P3, N4, N5)`` with
    ``out_channels`` (128, 256, 512), strides unchanged.
    """

    def __init__(self, in_channels: Sequence[int] = (256, 512, 1024)) -> None:
        super().__init__()
        c3, c4, c5 = in_channels
        self.out_channels = (c3 // 2, c4 // 2, c5 // 2)
        p3, p4, p5 = self.out_channels
        self.pre_spp = ConvStack(c5, p5, 3)
        self.spp = SPP()
        self.post_spp = ConvStack(4 * p5, p5, 3)
        # top-down: reduce, upsample, concat [lateral, upsampled]
        self.reduce5 = ConvBnAct(p5, p4, 1, act=ACT)
        self.lateral4 = ConvBnAct(c4, p4, 1, act=ACT)
        self.td4 = ConvStack(2 * p4, p4, 5)
        self.reduce4 = ConvBnAct(p4, p3, 1, act=ACT)
        self.lateral3 = ConvBnAct(c3, p3, 1, act=ACT)
        self.td3 = ConvStack(2 * p3, p3, 5)
        # bottom-up: stride-2 conv, concat [downsampled, top-down feature]
        self.down3 = ConvBnAct(p3, p4, 3, 2, act=ACT)
        self.bu4 = ConvStack(2 * p4, p4, 5)
        self.down4 = ConvBnAct(p4, p5, 3, 2, act=ACT)
        self.bu5 = ConvStack(2 * p5, p5, 5)

    def forward(
        self, c3: torch.Tensor, c4: torch.Tensor, c5: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        p5 = self.post_spp(self.spp(self.pre_spp(c5)))
        p4 = self.td4(torch.cat([self.lateral4(c4), _upsample(self.reduce5(p5))], 1))
        p3 = self.td3(torch.cat([self.lateral3(c3), _upsample(self.reduce4(p4))], 1))
        n4 = self.bu4(torch.cat([self.down3(p3), p4], 1))
        n5 = self.bu5(torch.cat([self.down4(n4), p5], 1))
        return p3, n4, n5

    def emit_darknet(self, g: DarknetGraph, srcs: Sequence[int], on_output: OnOutput) -> None:
        c3, c4, c5 = srcs
        p5 = self.post_spp.emit_darknet(
            g, self.spp.emit_darknet(g, self.pre_spp.emit_darknet(g, c5))
        )
        up = g.upsample(self.reduce5.emit_darknet(g, p5))
        p4 = self.td4.emit_darknet(g, g.route([self.lateral4.emit_darknet(g, c4), up]))
        up = g.upsample(self.reduce4.emit_darknet(g, p4))
        p3 = self.td3.emit_darknet(g, g.route([self.lateral3.emit_darknet(g, c3), up]))
        on_output(0, p3)
        n4 = self.bu4.emit_darknet(g, g.route([self.down3.emit_darknet(g, p3), p4]))
        on_output(1, n4)
        n5 = self.bu5.emit_darknet(g, g.route([self.down4.emit_darknet(g, n4), p5]))
        on_output(2, n5)


class TinyFPN(nn.Module):
    """yolov4-tiny's neck. ``(C4, C5)`` with ``in_channels`` (256, 512) -> ``(P4, P5)`` with
    ``out_channels`` (384, 256): P5 = 1x1(C5); P4 = concat [upsample(1x1(P5)), C4]."""

    def __init__(self, in_channels: Sequence[int] = (256, 512)) -> None:
        super().__init__()
        c4, c5 = in_channels
        self.reduce5 = ConvBnAct(c5, c5 // 2, 1, act=ACT)
        self.reduce_up = ConvBnAct(c5 // 2, c5 // 4, 1, act=ACT)
        self.out_channels = (c5 // 4 + c4, c5 // 2)

    def forward(self, c4: torch.Tensor, c5: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        p5 = self.reduce5(c5)
        return torch.cat([_upsample(self.reduce_up(p5)), c4], 1), p5

    def emit_darknet(self, g: DarknetGraph, srcs: Sequence[int], on_output: OnOutput) -> None:
        c4, c5 = srcs
        p5 = self.reduce5.emit_darknet(g, c5)
        on_output(1, p5)
        up = g.upsample(self.reduce_up.emit_darknet(g, p5))
        on_output(0, g.route([up, c4]))
