"""Backbones: CSPDarknet53 (yolov4.cfg layers 0-104) and CSPDarknet53-tiny (yolov4-tiny.cfg 0-26).

Each backbone returns a tuple of feature maps in ascending stride order and declares their
``out_channels`` and ``strides``; the neck is built from those.
"""

from __future__ import annotations

import torch
from torch import nn

from yolov4.models.darknet_graph import INPUT, DarknetGraph
from yolov4.models.layers import ConvBnAct

__all__ = ["CSPDarknet53", "CSPDarknet53Tiny"]


class ResBlock(nn.Module):
    """1x1 conv -> 3x3 conv -> ``[shortcut] from=-3``. ``(B, C, H, W) -> (B, C, H, W)``."""

    def __init__(self, channels: int, hidden: int, act: str) -> None:
        super().__init__()
        self.conv1 = ConvBnAct(channels, hidden, 1, act=act)
        self.conv2 = ConvBnAct(hidden, channels, 3, act=act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv2(self.conv1(x))

    def emit_darknet(self, g: DarknetGraph, src: int) -> int:
        y = self.conv2.emit_darknet(g, self.conv1.emit_darknet(g, src))
        return g.shortcut(y, src)


class CSPStage(nn.Module):
    """One CSPDarknet53 stage: stride-2 conv, split into a shortcut part and a residual part,
    concat ``[residual, shortcut]``, 1x1 transition. ``(B, Cin, H, W) -> (B, Cout, H/2, W/2)``.

    The first stage of yolov4.cfg keeps the full width in both parts (64) with 32-channel
    bottlenecks; the others split the width in halves.
    """

    def __init__(self, in_channels: int, out_channels: int, num_blocks: int, first: bool) -> None:
        super().__init__()
        act = "mish"
        part = out_channels if first else out_channels // 2
        hidden = out_channels // 2
        self.down = ConvBnAct(in_channels, out_channels, 3, 2, act=act)
        self.split_short = ConvBnAct(out_channels, part, 1, act=act)
        self.split_main = ConvBnAct(out_channels, part, 1, act=act)
        self.blocks = nn.Sequential(*(ResBlock(part, hidden, act) for _ in range(num_blocks)))
        self.post = ConvBnAct(part, part, 1, act=act)
        self.transition = ConvBnAct(2 * part, out_channels, 1, act=act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.down(x)
        short = self.split_short(x)
        main = self.post(self.blocks(self.split_main(x)))
        return self.transition(torch.cat([main, short], 1))

    def emit_darknet(self, g: DarknetGraph, src: int) -> int:
        x = self.down.emit_darknet(g, src)
        short = self.split_short.emit_darknet(g, x)
        y = self.split_main.emit_darknet(g, x)
        for block in self.blocks:
            y = block.emit_darknet(g, y)
        y = self.post.emit_darknet(g, y)
        return self.transition.emit_darknet(g, g.route([y, short]))


class CSPDarknet53(nn.Module):
    """CSPDarknet53 with Mish. ``(B, 3, H, W) -> (C3, C4, C5)`` at strides 8, 16, 32 with
    256, 512, 1024 channels (darknet layers 54, 85, 104)."""

    # (out_channels, residual blocks) of the five stages, from yolov4.cfg
    STAGES = ((64, 1), (128, 2), (256, 8), (512, 8), (1024, 4))
    out_channels = (256, 512, 1024)
    strides = (8, 16, 32)

    def __init__(self) -> None:
        super().__init__()
        self.stem = ConvBnAct(3, 32, 3, 1, act="mish")
        stages, c = [], 32
        for i, (out, n) in enumerate(self.STAGES):
            stages.append(CSPStage(c, out, n, first=i == 0))
            c = out
        self.stages = nn.ModuleList(stages)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        x = self.stem(x)
        feats = []
        for stage in self.stages:
            x = stage(x)
            feats.append(x)
        return tuple(feats[2:])

    def emit_darknet(self, g: DarknetGraph, src: int = INPUT) -> tuple[int, ...]:
        x = self.stem.emit_darknet(g, src)
        feats = []
        for stage in self.stages:
            x = stage.emit_darknet(g, x)
            feats.append(x)
        return tuple(feats[2:])


class TinyCSPBlock(nn.Module):
    """yolov4-tiny's CSP block: 3x3 conv, the SECOND half of its channels (``[route] groups=2
    group_id=1``) through two 3x3 convs, concat, 1x1, concat with the first conv, 2x2 maxpool.

    ``(B, Cin, H, W) -> (pooled (B, 2C, H/2, W/2), partial (B, C, H, W))``; ``partial`` is the
    1x1 output that yolov4-tiny's neck reuses.
    """

    def __init__(self, in_channels: int, channels: int) -> None:
        super().__init__()
        act, half = "leaky", channels // 2
        self.conv0 = ConvBnAct(in_channels, channels, 3, act=act)
        self.conv1 = ConvBnAct(half, half, 3, act=act)
        self.conv2 = ConvBnAct(half, half, 3, act=act)
        self.conv3 = ConvBnAct(channels, channels, 1, act=act)
        self.pool = nn.MaxPool2d(2, 2)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x0 = self.conv0(x)
        half = x0.shape[1] // 2
        x1 = self.conv1(x0[:, half:])  # group_id=1: the second half
        x2 = self.conv2(x1)
        x3 = self.conv3(torch.cat([x2, x1], 1))
        return self.pool(torch.cat([x0, x3], 1)), x3

    def emit_darknet(self, g: DarknetGraph, src: int) -> tuple[int, int]:
        x0 = self.conv0.emit_darknet(g, src)
        x1 = self.conv1.emit_darknet(g, g.route([x0], groups=2, group_id=1))
        x2 = self.conv2.emit_darknet(g, x1)
        x3 = self.conv3.emit_darknet(g, g.route([x2, x1]))
        return g.maxpool(g.route([x0, x3]), size=2, stride=2), x3


class CSPDarknet53Tiny(nn.Module):
    """CSPDarknet53-tiny with leaky ReLU. ``(B, 3, H, W) -> (C4, C5)`` at strides 16, 32 with
    256, 512 channels (darknet layers 23, 26)."""

    out_channels = (256, 512)
    strides = (16, 32)

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(
            ConvBnAct(3, 32, 3, 2, act="leaky"), ConvBnAct(32, 64, 3, 2, act="leaky")
        )
        self.blocks = nn.ModuleList(
            [TinyCSPBlock(64, 64), TinyCSPBlock(128, 128), TinyCSPBlock(256, 256)]
        )
        self.head_conv = ConvBnAct(512, 512, 3, act="leaky")

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.stem(x)
        for block in self.blocks:
            x, partial = block(x)
        return partial, self.head_conv(x)

    def emit_darknet(self, g: DarknetGraph, src: int = INPUT) -> tuple[int, int]:
        for conv in self.stem:
            src = conv.emit_darknet(g, src)
        for block in self.blocks:
            src, partial = block.emit_darknet(g, src)
        return partial, self.head_conv.emit_darknet(g, src)
