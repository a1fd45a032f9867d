"""What every darknet cfg layer's reading shares: :class:`LayerSpec` and its shape helpers (no torch).

A :class:`LayerSpec` is one layer after shape inference, the parameters the network builder
(:mod:`yolov4.models.layers`) takes; the helpers read the keys many layers have (``activation``,
a layer index) as darknet's ``src/parser.c`` does and raise a :class:`~yolov4.errors.ConfigError`
naming the file, line, section and key. :mod:`yolov4.models.cfg_layers` and
:mod:`yolov4.models.cfg_joins` build on them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

# cfg.Section: typed Any here (yolov4.models.cfg imports this module)
Section = Any

__all__ = [
    "ACTIVATIONS",
    "CONV_DEFAULT_ACTIVATION",
    "GLOBAL",
    "LayerSpec",
    "Section",
    "Shape",
    "activation",
    "layer_index",
    "spec",
    "stride_of",
    "strides_text",
]

# activations the network implements (darknet's src/activations.c definitions)
ACTIVATIONS = (
    "linear", "leaky", "relu", "logistic", "tanh", "mish", "swish",
    "relu6", "elu", "selu", "gelu", "hard_mish", "hardtan", "loggy",
)  # fmt: skip
# a [convolutional] without activation= (parse_convolutional's default)
CONV_DEFAULT_ACTIVATION = "logistic"


@dataclass
class LayerSpec:
    """One darknet layer after shape inference. ``inputs`` are absolute layer indices (``-1``:
    the image); ``stride`` is the output's stride relative to the input image along y (rows),
    ``stride_x`` along x (columns; the same unless a ``stride_x``/``stride_y`` key made them
    differ): the map is ``H / stride`` x ``W / stride_x``; both :data:`GLOBAL` for a map that
    is 1 x 1 whatever the input (an ``[avgpool]``'s)."""

    index: int
    kind: str
    section: Section
    inputs: list[int]
    channels: int
    stride: int
    params: dict = field(default_factory=dict)
    stride_x: int = 0

    def __post_init__(self) -> None:
        self.stride_x = self.stride_x or self.stride

    @property
    def strides(self) -> tuple[int, int]:
        """``(stride along y, stride along x)``."""
        return self.stride, self.stride_x


# the stride of a map that is 1 x 1 whatever the input's size (a global [avgpool]'s output)
GLOBAL = 0

Shape = tuple[int, tuple[int, int]]  # a layer's output: channels, (stride along y, along x)


def strides_text(strides: tuple[int, int]) -> str:
    """A layer's stride as messages write it: ``8``, ``8 x 16`` (along y x along x), or
    ``global (1 x 1)``."""
    if strides == (GLOBAL, GLOBAL):
        return "global (1 x 1)"
    return str(strides[0]) if strides[0] == strides[1] else f"{strides[0]} x {strides[1]}"


def layer_index(s: Section, key: str, value: int, i: int) -> int:
    """darknet: a negative index is relative to layer ``i``, a positive one is absolute."""
    j = i + value if value < 0 else value
    if not 0 <= j < i:
        raise s.error(
            key, f"refers to layer {j} (from {value}); layer {i} can use layers 0-{i - 1}"
        )
    return j


def activation(s: Section, default: str | None = None) -> str:
    act = s.options.get("activation", default)
    if act is None:
        raise s.error("activation", "is required")
    if act not in ACTIVATIONS:
        raise s.error("activation", f"{act!r} is not supported; supported: {list(ACTIVATIONS)}")
    return act


def stride_of(s: Section, key: str, in_stride: int, factor: float) -> int:
    if in_stride == GLOBAL:
        return GLOBAL  # a 1 x 1 map stays 1 x 1 (the layers that would change it are refused)
    out = in_stride * factor
    if out < 1 or not math.isclose(out, round(out)):
        raise s.error(key, f"gives a fractional stride {out:g} relative to the input image")
    return round(out)


def spec(
    s: Section, i: int, inputs: list[int], channels: int, strides: tuple[int, int], **params
) -> LayerSpec:
    return LayerSpec(i, s.kind, s, inputs, channels, strides[0], params, strides[1])
