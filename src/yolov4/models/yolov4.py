"""YOLOv4 and YOLOv4-tiny: backbone + neck + heads, wired as darknet's cfgs wire them.

``model(images)`` takes ``(B, 3, H, W)`` float images (H, W multiples of 32) and returns the raw
head maps, a list of ``(B, A * (5 + C), H / s, W / s)`` tensors in ascending stride order,
numerically darknet's conv output before each ``[yolo]`` layer.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from yolov4.errors import ConfigError, InputError
from yolov4.models.backbone import CSPDarknet53, CSPDarknet53Tiny
from yolov4.models.config import ModelConfig
from yolov4.models.darknet_graph import DarknetGraph
from yolov4.models.head import YoloHead
from yolov4.models.layers import ConvBnAct
from yolov4.models.neck import PANet, TinyFPN

__all__ = ["YOLOv4", "build_model", "MAX_STRIDE"]

MAX_STRIDE = 32  # input H and W must be multiples of the coarsest stride

# name -> (backbone, neck, mid channels of each head's 3x3 conv), from the darknet cfgs
ARCHITECTURES: dict[str, tuple[type[nn.Module], type[nn.Module], tuple[int, ...]]] = {
    "yolov4": (CSPDarknet53, PANet, (256, 512, 1024)),
    "yolov4-tiny": (CSPDarknet53Tiny, TinyFPN, (256, 512)),
}

# Initial prior for objectness and class scores of a model trained from scratch (sigmoid 0.01,
# as RetinaNet's focal-loss prior). Darknet starts from zero biases; the forward pass and the
# weight files are unaffected, it only spares the first iterations a flood of false positives.
PRIOR_PROB = 0.01


class YOLOv4(nn.Module):
    """A YOLO network built from a :class:`ModelConfig` (use :func:`build_model`)."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        if config.name not in ARCHITECTURES:
            raise ConfigError(
                f"unknown model name {config.name!r}; expected one of {sorted(ARCHITECTURES)}"
            )
        backbone_cls, neck_cls, mids = ARCHITECTURES[config.name]
        self.config = config
        self.backbone = backbone_cls()
        if tuple(config.strides) != tuple(self.backbone.strides):
            raise ConfigError(
                f"model.strides for {config.name} must be {list(self.backbone.strides)} "
                f"(fixed by the network), got {list(config.strides)}"
            )
        self.neck = neck_cls(self.backbone.out_channels)
        self.heads = nn.ModuleList(
            YoloHead(c, mid, config.num_anchors, config.num_classes)
            for c, mid in zip(self.neck.out_channels, mids)
        )
        self._init_weights()

    # -- construction ---------------------------------------------------------------------------
    def _init_weights(self) -> None:
        bias = -math.log((1 - PRIOR_PROB) / PRIOR_PROB)
        for head in self.heads:
            b = head.pred.conv.bias.data.view(self.config.num_anchors, -1)
            b[:, :4] = 0.0
            b[:, 4:] = bias

    @property
    def num_classes(self) -> int:
        return self.config.num_classes

    @property
    def strides(self) -> tuple[int, ...]:
        return self.config.strides

    @property
    def is_fused(self) -> bool:
        return any(m.is_fused for m in self.modules() if isinstance(m, ConvBnAct))

    # -- forward --------------------------------------------------------------------------------
    def check_input(self, images: torch.Tensor) -> None:
        """Raise :class:`InputError` naming expected vs found unless ``images`` fits the model."""
        if not isinstance(images, torch.Tensor):
            raise InputError(
                f"expected images as a torch.Tensor (B, 3, H, W), got {type(images).__name__}"
            )
        if images.dim() != 4 or images.shape[1] != 3:
            raise InputError(
                f"expected images of shape (B, 3, H, W), got {tuple(images.shape)}"
                + (
                    " (a single image? add a batch dimension: images[None])"
                    if images.dim() == 3
                    else ""
                )
            )
        h, w = images.shape[-2:]
        if h % MAX_STRIDE or w % MAX_STRIDE or h == 0 or w == 0:
            raise InputError(
                f"expected images of shape (B, 3, H, W) with H, W positive multiples of {MAX_STRIDE}, "
                f"got {tuple(images.shape)} (resize or letterbox to e.g. "
                f"{_round_up(h)}x{_round_up(w)})"
            )
        weight = next(self.parameters())
        if not images.is_floating_point():
            raise InputError(
                f"expected floating-point images scaled to [0, 1], got dtype {images.dtype}"
                + (" (convert with images.float() / 255)" if images.dtype == torch.uint8 else "")
            )
        if images.device != weight.device:
            raise InputError(
                f"images are on {images.device} but the model's weights are on {weight.device}; "
                f"move one of them (images.to({str(weight.device)!r}))"
            )
        if images.dtype != weight.dtype and not torch.is_autocast_enabled(images.device.type):
            raise InputError(
                f"expected images of dtype {weight.dtype} (the model's dtype), got {images.dtype}; "
                "cast the images or the model, or run under torch.autocast"
            )

    def forward(self, images: torch.Tensor) -> list[torch.Tensor]:
        """``(B, 3, H, W)`` float in [0, 1] -> list of ``(B, A*(5+C), H/s, W/s)``, ascending ``s``."""
        if not (
            torch.jit.is_tracing() or torch.jit.is_scripting() or torch.compiler.is_exporting()
        ):
            self.check_input(images)
        feats = self.neck(*self.backbone(images))
        return [head(f) for head, f in zip(self.heads, feats)]

    # -- darknet --------------------------------------------------------------------------------
    def darknet_graph(self) -> DarknetGraph:
        """The network as darknet's layer list, in cfg order (see :mod:`yolov4.darknet`)."""
        g = DarknetGraph()
        feats = self.backbone.emit_darknet(g)
        self.neck.emit_darknet(g, feats, lambda level, src: self._emit_head(g, level, src))
        return g

    def _emit_head(self, g: DarknetGraph, level: int, src: int) -> None:
        c = self.config
        out = self.heads[level].emit_darknet(g, src)
        options: dict[str, Any] = {
            "mask": list(c.masks[level]),
            "anchors": [v for wh in c.anchors for v in wh],
            "classes": c.num_classes,
            "num": len(c.anchors),
            "scale_x_y": c.scale_x_y[level],
            "ignore_thresh": c.ignore_thresh,
            "truth_thresh": c.truth_thresh,
            "iou_normalizer": c.iou_normalizer,
            "cls_normalizer": c.cls_normalizer,
            "iou_loss": c.iou_loss,
            "nms_kind": c.nms_kind,
            "beta_nms": c.beta_nms,
        }
        if c.obj_normalizer != 1.0:
            options["obj_normalizer"] = c.obj_normalizer
        if c.iou_thresh is not None:
            options["iou_thresh"] = c.iou_thresh
        if c.max_delta is not None:
            options["max_delta"] = c.max_delta
        if c.new_coords:
            # darknet's new_coords layer takes the box, objectness and classes already through
            # the conv's logistic (the raw map here, as ops.decode and the loss read it)
            assert g.layers[out].kind == "convolutional"
            g.layers[out].options["activation"] = "logistic"
            options["new_coords"] = 1
        g.yolo(out, options)

    def backbone_layer_count(self) -> int:
        """Number of darknet layers that make up the backbone (the ``backbone_only`` cut-off)."""
        g = DarknetGraph()
        self.backbone.emit_darknet(g)
        return len(g.layers)


def _round_up(n: int) -> int:
    return max(MAX_STRIDE, math.ceil(n / MAX_STRIDE) * MAX_STRIDE)


def build_model(name: str = "yolov4", num_classes: int = 80, **overrides: Any) -> YOLOv4:
    """Build ``yolov4`` or ``yolov4-tiny`` from ``configs/model/<name>.yaml`` plus overrides.

    ``overrides`` are model config keys (``anchors``, ``masks``, ``scale_x_y``, ``input_size``,
    loss keys, ...); an unknown key raises :class:`ConfigError`. ``build_model(**model.config.to_dict())``
    rebuilds a model with identical state_dict keys and shapes.
    """
    return YOLOv4(ModelConfig.load(name, num_classes=num_classes, **overrides))
