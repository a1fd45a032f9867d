"""Every darknet YOLO network, built from its cfg: the zoo's shipped files or a user's own.

``model(images)`` takes ``(B, 3, H, W)`` float images (H, W multiples of the largest stride) and
returns the raw head maps, a list of ``(B, A * (5 + C), H / s, W / s)`` tensors in ascending
stride order, numerically darknet's output of the layer before each ``[yolo]`` layer (or the
YOLOv2 ``[region]`` layer, :mod:`yolov4.models.region`; for a
``new_coords`` cfg, whose conv there is ``activation=logistic``: the conv's output before the
logistic, which :mod:`yolov4.ops.decode` and the loss apply).

One builder for all of them (yolov4 and yolov4-tiny included): module ``layers.i`` is darknet's
layer ``i`` of the cfg, so state_dict keys, ``.weights`` order and the cfg written back follow
from the same list.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from yolov4.errors import ConfigError, InputError
from yolov4.models import budget
from yolov4.models.cfg import GLOBAL, LayerSpec, Section, resolve_layers
from yolov4.models.config import ModelConfig, config_sections
from yolov4.models.layers import (
    ConvBnAct,
    GlobalAvgPool,
    LocalAvgPool,
    MaxPool,
    Multiply,
    Reorg,
    Route,
    Shortcut,
    Upsample,
)
from yolov4.models.region import HEAD_KINDS
from yolov4.models.stride import check_stride_multiple
from yolov4.models.zoo import backbone_cutoff

__all__ = ["YOLOv4", "build_model"]

# Initial prior for objectness and class scores of a model trained from scratch (sigmoid 0.01,
# as RetinaNet's focal-loss prior). Darknet starts from zero biases; the forward pass and the
# weight files are unaffected, it only spares the first iterations a flood of false positives.
PRIOR_PROB = 0.01
# layers that read the outputs of layers other than the one before them (their `inputs`)
READERS = ("route", "shortcut", "sam", "scale_channels")


def _module(spec: LayerSpec) -> nn.Module:
    p = spec.params
    if spec.kind == "convolutional":
        return ConvBnAct(
            p["in_channels"],
            p["filters"],
            p["size"],
            p["stride"],
            act=p["activation"],
            bn=p["bn"],
            groups=p["groups"],
            padding=p["padding"],
            dilation=p["dilation"],
        )
    if spec.kind == "route":
        return Route(p["groups"], p["group_id"])
    if spec.kind == "shortcut":
        return Shortcut(
            p["activation"], p["weights_type"], p["normalization"], len(spec.inputs), spec.channels
        )
    if spec.kind in ("sam", "scale_channels"):
        return Multiply(p["activation"])
    if spec.kind == "maxpool":
        return MaxPool(p["size"], p["stride"], p["pad_left"], p["pad_right"])
    if spec.kind == "local_avgpool":
        return LocalAvgPool(p["size"], p["stride"], p["pad_left"], p["pad_right"])
    if spec.kind == "upsample":
        return Upsample(p["stride"], p["scale"])
    if spec.kind == "avgpool":
        return GlobalAvgPool()
    if spec.kind == "dropout":
        return nn.Dropout(p["probability"])  # darknet's mask, drawn from torch's generator
    if spec.kind in ("reorg", "reorg3d"):
        return Reorg(p["stride"], p["reverse"], output_sizes=spec.kind == "reorg3d")
    return nn.Identity()  # [yolo], [region]: decode and loss live outside the network


class YOLOv4(nn.Module):
    """A YOLO network built from a :class:`ModelConfig` (use :func:`build_model`)."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        self.sections: list[Section] = config_sections(config)
        specs = resolve_layers(self.sections)
        budget.check_network(specs, config.input_size)  # before any module is allocated
        self._specs = specs  # the layer list (for the activation budget of other input sizes)
        if config.new_coords:
            # darknet's new_coords [yolo] reads the logistic of the conv in front of it (the cfg's
            # activation=logistic); here ops.decode and the loss apply that logistic, reading the
            # conv's output before it, as they read every other head map
            for s in specs:
                if s.kind == "yolo":
                    feeder = specs[s.index - 1]
                    feeder.params = {**feeder.params, "activation": "linear"}
        self.layers = nn.ModuleList(_module(s) for s in specs)
        self._kinds = [s.kind for s in specs]
        self._inputs = [s.inputs for s in specs]
        yolos = sorted((s for s in specs if s.kind in HEAD_KINDS), key=lambda s: s.stride)
        # darknet index of the layer whose output is head h's raw map (ascending stride)
        self.head_layers: tuple[int, ...] = tuple(s.index - 1 for s in yolos)
        refs = {j for s in specs if s.kind in READERS for j in s.inputs}
        self._keep = refs | set(self.head_layers)
        # outputs a [route]/[shortcut]/[sam]/[scale_channels] reads are dropped after their last reader (inference
        # memory of the big nets at their cfg sizes); head maps are kept to the end
        last: dict[int, int] = {}
        for s in specs:
            if s.kind in READERS:
                for j in s.inputs:
                    last[j] = s.index
        self._free_after: list[list[int]] = [[] for _ in specs]
        for j, i in last.items():
            if j not in self.head_layers:
                self._free_after[i].append(j)
        # [convolutional] stopbackward=N: no gradient reaches layers <= this one for the first N
        # training iterations (darknet's backward_network); `iteration` is set by the trainer
        self.stop_backward: tuple[tuple[int, int], ...] = tuple(
            (s.index, s.params["stopbackward"])
            for s in specs
            if s.kind == "convolutional" and s.params["stopbackward"]
        )
        self.iteration = 0
        # [route] onlyforward=1: darknet's backward_network skips the layer; its output is
        # detached here, so no gradient reaches the layers it reads through it
        self._only_forward = frozenset(s.index for s in specs if s.params.get("onlyforward"))
        # the first BN convolution on a global (1 x 1) map: no training on a batch of one
        self._bn_on_global = next(
            (s.index for s in specs if s.params.get("bn") and s.stride == GLOBAL), None
        )
        self._init_weights()

    # -- construction ---------------------------------------------------------------------------
    def _init_weights(self) -> None:
        bias = -math.log((1 - PRIOR_PROB) / PRIOR_PROB)
        for i in self.head_layers:
            m = self.layers[i]
            if isinstance(m, ConvBnAct) and m.conv.bias is not None:
                b = m.conv.bias.data.view(self.config.num_anchors, -1)
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

    def conv_layers(self) -> list[tuple[int, ConvBnAct]]:
        """``(darknet layer index, conv module)`` of every ``[convolutional]``, in weight-file order."""
        return [(i, m) for i, m in enumerate(self.layers) if isinstance(m, ConvBnAct)]

    def darknet_layers(self) -> list[tuple[int, nn.Module]]:
        """``(darknet layer index, module)`` of every layer with tensors in the ``.weights`` file
        (``[convolutional]``, a weighted ``[shortcut]``), in file order; each module's
        ``darknet_tensors()`` lists them."""
        return [(i, m) for i, m in enumerate(self.layers) if getattr(m, "weights", None) is not None
                or isinstance(m, ConvBnAct)]  # fmt: skip

    def head_convs(self) -> list[ConvBnAct]:
        """The convolution in front of each ``[yolo]`` layer (ascending stride): the layers whose
        shape follows ``num_classes`` and the anchors per head."""
        return [self.layers[i] for i in self.head_layers]

    def backbone_layer_count(self) -> int:
        """Darknet layers loaded by ``backbone_only``: the cut-off of darknet's published partial
        file for this network (``yolov4.conv.137`` -> 137; see :mod:`yolov4.models.zoo`)."""
        return backbone_cutoff(self.config.name, self.sections)

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
        m = self.config.max_stride
        if h % m or w % m or h == 0 or w == 0:  # cheap on the hot path; the helper words it
            check_stride_multiple(
                (int(h), int(w)), m, "images of shape (B, 3, H, W)", InputError, tuple(images.shape)
            )
        if self.training and images.shape[0] * (h // m) * (w // m) == 1:
            if any(s.params.get("bn") for s in self._specs):  # BatchNorm's statistics need two
                raise InputError(
                    f"training a batch of {images.shape[0]} at {w}x{h} (WxH) gives 1x1 maps at stride "
                    f"{m}: one value per channel, which BatchNorm cannot normalise; train with "
                    "two or more images or a larger input (model.eval() predicts one)"
                )
        if self.training and images.shape[0] == 1 and self._bn_on_global is not None:
            raise InputError(
                f"training a batch of 1: layer {self._bn_on_global} normalises a global (1 x 1) "
                "map of an [avgpool], one value per channel, which BatchNorm cannot; train with "
                "two or more images (model.eval() predicts one)"
            )
        if not torch.compiler.is_compiling():  # plain Python over the layer list: no guards
            try:
                budget.check_network(self._specs, (int(h), int(w)), "input image size")
            except ConfigError as e:
                raise InputError(f"expected images within the activation budget: {e}") from None
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
        exporting = (
            torch.jit.is_tracing() or torch.jit.is_scripting() or torch.compiler.is_exporting()
        )
        if not exporting:
            self.check_input(images)
        stop = -1
        if self.training and not exporting:
            stop = max(
                (i for i, n in self.stop_backward if n == 1 or self.iteration < n), default=-1
            )
        outs: list[torch.Tensor | None] = []
        x = images
        for i, (kind, layer) in enumerate(zip(self._kinds, self.layers)):
            if kind == "route":
                x = layer([outs[j] for j in self._inputs[i]])
            elif kind in ("shortcut", "sam", "scale_channels"):
                x = layer(x, [outs[j] for j in self._inputs[i][1:]])
            elif kind not in HEAD_KINDS:
                x = layer(x)
            if kind == "dropout" and outs[i - 1] is not None:
                outs[i - 1] = x  # darknet drops in the previous layer's output itself
            if i in self._only_forward:
                x = x.detach()
            if i == stop:
                x = x.detach()
                outs = [o.detach() if o is not None else None for o in outs]
            outs.append(x if i in self._keep else None)
            for j in self._free_after[i]:
                outs[j] = None
        return [outs[i] for i in self.head_layers]


def build_model(
    name: str | None = None, num_classes: int | None = None, cfg: Any = None, **overrides: Any
) -> YOLOv4:
    """Build a zoo network by its cfg name (``yolov4``, ``yolov4-csp``, ``yolov4-p6``,
    ``yolov3-tiny``, ... see :func:`available_models`) or a user's darknet cfg (``cfg=path``, or
    the cfg's text), plus overrides.

    ``overrides`` are model config keys (``anchors``, ``masks``, ``scale_x_y``, ``input_size``,
    ``[yolo]`` keys, ...); an unknown key raises :class:`ConfigError`. ``num_classes`` not given
    (or None) keeps the cfg's ``classes`` (80 for every zoo cfg; a user's cfg is the source of
    truth). The cfg is checked against :mod:`yolov4.models.budget` before anything is
    allocated. ``build_model(**model.config.to_dict())`` rebuilds a model with
    identical state_dict keys and shapes. Without ``name`` and ``cfg``: ``yolov4``; a user cfg
    without ``name`` is named after its file (``custom`` for cfg text), and so is a cfg file of
    another network given with a zoo name (:meth:`ModelConfig.load`).
    """
    if name is None and cfg is None:
        name = "yolov4"
    if num_classes is not None:
        overrides["num_classes"] = num_classes
    return YOLOv4(ModelConfig.load(name, cfg=cfg, **overrides))
