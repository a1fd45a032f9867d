"""The resource budget of a network built from a darknet cfg, checked before anything is allocated.

A cfg (a file, the text stored in a checkpoint or artifact, a zoo name) is bounded at three
points, each from the parsed layer list alone (no torch):

- its text: :func:`read_cfg_file` and :func:`check_cfg_text` (``MAX_CFG_BYTES``; UTF-8 only,
  a binary file such as the ``.weights`` named as one before its size);
- each layer (:func:`check_layer`, called by :func:`yolov4.models.cfg.resolve_layers`): the
  layer count, ``filters``, kernel ``size``, ``[maxpool]``/``[local_avgpool]`` ``size``,
  ``[upsample] stride`` and the
  channels any layer (``[route]`` included) puts out;
- the network at its input size (:func:`check_network`): the input sides, the parameter count
  and the bytes of every layer's float32 output for one image (their sum: what a forward pass
  writes and training keeps for the backward pass; layers without parameters included, and the
  padded copy a ``[maxpool]`` or ``[local_avgpool]`` with uneven padding makes).

Each violation is a :class:`ConfigError` naming the key, the cfg line (or the model config key),
the value and the bound. The defaults are the largest values of the zoo (``yolov4-p6`` at 1280 x
1280 with 80 classes the largest network) with about 4-8x headroom. A user with a real need
raises one with an environment variable read at import, ``YOLOV4_<NAME>`` (e.g.
``YOLOV4_MAX_INPUT_SIDE=16384``), or by assigning the module constant
(``yolov4.models.budget.MAX_INPUT_SIDE = 16384``), which every check reads when it runs.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from yolov4.errors import ConfigError, other_text

# yolov4.models.cfg imports this module: its Section (and cfg_layers' LayerSpec) are typed Any here
Section = LayerSpec = Any

__all__ = [
    "LIMITS",
    "check_cfg_text",
    "read_cfg_file",
    "cfg_text",
    "check_layer",
    "check_layer_count",
    "check_network",
    "check_anchor",
    "check_classes",
    "check_input_side",
    "over",
    "param_count",
    "weight_floats",
    "activation_bytes",
]


def _env(name: str, default: int) -> int:
    raw = os.environ.get(f"YOLOV4_{name}")
    if raw is None:
        return default
    try:
        value = int(float(raw))
    except (ValueError, OverflowError):  # not a number, nan, inf
        value = 0
    if value < 1:
        raise ConfigError(f"YOLOV4_{name}: expected a positive integer, got {raw!r}")
    return value


# zoo measurements (tests/models/test_budget.py prints them): largest cfg 24 KB (yolov4-p6.cfg)
MAX_CFG_BYTES = _env("MAX_CFG_BYTES", 1 << 20)
# darknet layers after [net]: 305 in yolov4-p6
MAX_LAYERS = _env("MAX_LAYERS", 2048)
# [convolutional] filters: 1280 in yolov4-csp-x-swish; a head conv is A * (classes + 5)
MAX_FILTERS = _env("MAX_FILTERS", 16384)
# channels of any layer's output ([route] concatenations included): 2560 in yolov4-csp-x-swish
MAX_CHANNELS = _env("MAX_CHANNELS", 32768)
# [convolutional] size (kernel side): 3 in every zoo cfg, 7 in darknet's classifier stems
MAX_KERNEL_SIZE = _env("MAX_KERNEL_SIZE", 15)
# [maxpool] and [local_avgpool] size: 13 in the SPP blocks
MAX_POOL_SIZE = _env("MAX_POOL_SIZE", 64)
# [upsample] stride (either sign): 2 in every zoo cfg
MAX_UPSAMPLE_STRIDE = _env("MAX_UPSAMPLE_STRIDE", 16)
# input height and width in pixels ([net] or model.input_size): 1280 in yolov4-p6
MAX_INPUT_SIDE = _env("MAX_INPUT_SIDE", 8192)
# [yolo] classes: 80 in the zoo; LVIS's 1,203 fit
MAX_CLASSES = _env("MAX_CLASSES", 2000)
# [yolo] num (anchors): 16 in yolov4-p6
MAX_ANCHORS = _env("MAX_ANCHORS", 64)
# anchor width/height in input pixels: 1024 in yolov4-p6 (an anchor wider than any input is moot)
MAX_ANCHOR_SIDE = _env("MAX_ANCHOR_SIDE", MAX_INPUT_SIDE)
# parameters (weights, biases, BN statistics): 127.7 M in yolov4-p6 with 80 classes
MAX_PARAMS = _env("MAX_PARAMS", 1_000_000_000)
# float32 bytes of every layer's output for one image: 2.91 GiB for yolov4-p6 at 1280 x 1280
MAX_ACTIVATION_BYTES = _env("MAX_ACTIVATION_BYTES", 16 << 30)

LIMITS = (
    "MAX_CFG_BYTES",
    "MAX_LAYERS",
    "MAX_FILTERS",
    "MAX_CHANNELS",
    "MAX_KERNEL_SIZE",
    "MAX_POOL_SIZE",
    "MAX_UPSAMPLE_STRIDE",
    "MAX_INPUT_SIDE",
    "MAX_CLASSES",
    "MAX_ANCHORS",
    "MAX_ANCHOR_SIDE",
    "MAX_PARAMS",
    "MAX_ACTIVATION_BYTES",
)
FLOAT_BYTES = 4  # float32 activations


def _limit(name: str) -> int:
    return globals()[name]


def over(name: str, value: object) -> str:
    return (
        f"{value}, over the limit {_limit(name):,} (yolov4.models.budget.{name}; raise it with "
        f"the environment variable YOLOV4_{name} if the network is real)"
    )


def _gib(n: int) -> str:
    return f"{n / (1 << 30):.2f} GiB"


# -- text ---------------------------------------------------------------------------------------
def check_cfg_text(text: str, source: str) -> None:
    """Refuse cfg text longer than ``MAX_CFG_BYTES`` characters (before it is parsed)."""
    if len(text) > MAX_CFG_BYTES:
        raise ConfigError(
            f"{source}: cfg text of " + over("MAX_CFG_BYTES", f"{len(text):,} characters")
        )


# the first bytes of a cfg file checked to be text before its size is: a binary file given as
# the cfg (the .weights file, an image) is named as such, not as a cfg over the size limit
TEXT_HEAD_BYTES = 1024


def read_cfg_file(path: Path) -> str:
    """The text of a cfg file: at most ``MAX_CFG_BYTES`` bytes are read, and it must be UTF-8
    without NUL bytes (:class:`ConfigError` naming the file, and the line and byte offset
    otherwise); a binary file is named as one before its size is checked."""
    try:
        with path.open("rb") as f:
            data = f.read(MAX_CFG_BYTES + 1)
    except OSError as e:
        raise ConfigError(f"cannot read darknet cfg {path}: {e}") from e
    _check_text(data[:TEXT_HEAD_BYTES], str(path), cut=len(data) > TEXT_HEAD_BYTES)
    if len(data) > MAX_CFG_BYTES:
        size = path.stat().st_size  # 0 for a device or pipe, which is read no further either
        shown = f"{size:,} bytes" if size > MAX_CFG_BYTES else f"more than {MAX_CFG_BYTES:,} bytes"
        raise ConfigError(f"{path}: cfg file of " + over("MAX_CFG_BYTES", shown))
    return cfg_text(data, str(path))


def _check_text(data: bytes, source: str, cut: bool = False) -> None:
    """:class:`ConfigError` unless ``data`` is UTF-8 text without NUL bytes (``cut``: ``data``
    is the head of a longer file, and may end inside a character); text that a byte order mark
    names UTF-16 or UTF-32 is named as such, with the fix."""
    if (other := other_text(data)) is not None:  # UTF-16 has NUL bytes: named before them
        raise ConfigError(f"{source}: expected UTF-8 text, found {other}")
    nul = data.find(b"\0")
    if nul >= 0:
        line = data[:nul].count(b"\n") + 1
        raise ConfigError(
            f"{source}:{line}: not text: byte offset {nul} is a NUL byte; a darknet cfg is plain "
            "text (is this the .weights file?)"
        )
    try:
        data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        if cut and e.reason == "unexpected end of data":
            return  # a character the head's end cuts in two
        line = data[: e.start].count(b"\n") + 1
        raise ConfigError(
            f"{source}:{line}: not UTF-8 text: byte offset {e.start} is "
            f"{data[e.start : e.start + 1]!r} ({e.reason}); a darknet cfg is plain text"
        ) from None


def cfg_text(data: bytes, source: str) -> str:
    """A cfg's bytes as text: UTF-8 (a byte-order mark dropped) with ``\\n`` line ends (Windows'
    ``\\r\\n`` and old Macs' ``\\r`` too); :class:`ConfigError` naming ``source``, the line and
    the byte offset otherwise (a NUL byte included: a binary file)."""
    _check_text(data, source)
    text = data.decode("utf-8-sig")
    return text.replace("\r\n", "\n").replace("\r", "\n")


# -- layers -------------------------------------------------------------------------------------
def check_layer_count(sections: Sequence[Section]) -> None:
    n = len(sections) - 1
    if n > MAX_LAYERS:
        s = sections[MAX_LAYERS + 1]
        raise s.error(
            None, f"layer {MAX_LAYERS}: the cfg has " + over("MAX_LAYERS", f"{n:,} layers")
        )


def _bound(s: Section, index: int, key: str, value: int, name: str) -> None:
    if value > _limit(name):
        raise s.error(key, f"(layer {index}) {over(name, value)}")


# the key that sets a layer's output channels, named when there are too many
_CHANNELS_KEY = {"route": "layers", "shortcut": "from", "sam": "from", "scale_channels": "from",
                 "convolutional": "filters"}  # fmt: skip


def check_layer(spec: LayerSpec) -> None:
    """One resolved layer's keys and output channels against the limits."""
    s, p, i = spec.section, spec.params, spec.index
    if spec.kind == "convolutional":
        _bound(s, i, "filters", p["filters"], "MAX_FILTERS")
        _bound(s, i, "size", p["size"], "MAX_KERNEL_SIZE")
    elif spec.kind in ("maxpool", "local_avgpool"):
        _bound(s, i, "size", p["size"], "MAX_POOL_SIZE")
    elif spec.kind == "upsample":
        _bound(s, i, "stride", abs(p["stride"]), "MAX_UPSAMPLE_STRIDE")
    if spec.channels > MAX_CHANNELS:
        raise s.error(
            _CHANNELS_KEY.get(spec.kind),
            f"(layer {i}) gives " + over("MAX_CHANNELS", f"{spec.channels:,} channels"),
        )


def check_classes(value: int, where: str) -> None:
    if not 1 <= value <= MAX_CLASSES:
        raise ConfigError(
            f"{where}: "
            + (
                over("MAX_CLASSES", f"{value:,} classes")
                if value > 0
                else f"{value} classes: must be >= 1"
            )
        )


def check_anchor(value: float, where: str) -> None:
    """One anchor width or height: finite, positive, at most ``MAX_ANCHOR_SIDE`` pixels."""
    if not (math.isfinite(value) and 0 < value <= MAX_ANCHOR_SIDE):
        raise ConfigError(
            f"{where}: anchor sides are finite numbers in (0, {MAX_ANCHOR_SIDE}] pixels "
            f"(yolov4.models.budget.MAX_ANCHOR_SIDE), got {value!r}"
        )


# -- the network at an input size --------------------------------------------------------------
def weight_floats(spec: LayerSpec) -> int:
    """The layer's floats in darknet's ``.weights`` file: a ``[convolutional]``'s weights and
    biases or BN statistics (4 per filter), a weighted ``[shortcut]``'s weights, else 0."""
    p = spec.params
    if spec.kind == "convolutional":
        return p["filters"] * (
            p["in_channels"] // p["groups"] * p["size"] ** 2 + (4 if p["bn"] else 1)
        )
    return p.get("weights", 0) if spec.kind == "shortcut" else 0


def param_count(layers: Sequence[LayerSpec]) -> int:
    """Weights, biases and BN statistics of the network: its ``.weights`` file's floats."""
    return sum(weight_floats(spec) for spec in layers)


def _layer_bytes(spec: LayerSpec, h: int, w: int) -> int:
    if spec.kind in ("yolo", "region", "Gaussian_yolo", "dropout") or (
        spec.kind == "route" and len(spec.inputs) == 1
    ):
        return 0  # its input itself (a [dropout] at inference), or a view of it ([route] groups)
    if spec.stride == 0:  # a global (1 x 1) map
        return FLOAT_BYTES * spec.channels
    out = spec.channels * (h // spec.stride) * (w // spec.stride_x)
    p = spec.params
    if spec.kind in ("maxpool", "local_avgpool") and p["pad_right"] != (p["pad_left"],) * 2:
        # an uneven padding: the pool pads a copy of its input first
        (sy, sx), (ry, rx) = p["stride"], p["pad_right"]
        sy, sx = spec.stride // sy, spec.stride_x // sx
        out += spec.channels * (h // sy + p["pad_left"] + ry) * (w // sx + p["pad_left"] + rx)
    return FLOAT_BYTES * out


def activation_bytes(
    layers: Sequence[LayerSpec], input_size: Sequence[int]
) -> tuple[int, LayerSpec | None]:
    """Float32 bytes of the input and every layer's output for one ``(H, W)`` image, and the layer
    with the largest output."""
    h, w = input_size
    total, largest, biggest = FLOAT_BYTES * 3 * h * w, 0, None
    for spec in layers:
        n = _layer_bytes(spec, h, w)
        total += n
        if n > largest:
            largest, biggest = n, spec
    return total, biggest


def check_input_side(input_size: Sequence[int], where: str) -> None:
    big = [s for s in input_size if s > MAX_INPUT_SIDE]
    if big:
        raise ConfigError(f"{where}: " + over("MAX_INPUT_SIDE", f"a side of {big[0]} pixels"))


def check_network(
    layers: Sequence[LayerSpec], input_size: Sequence[int], where: str = "model.input_size"
) -> None:
    """The network's parameter count and the activation memory of one image at ``input_size``
    (``(H, W)``, named ``where`` in errors) against the limits."""
    check_input_side(input_size, where)
    params = param_count(layers)
    if params > MAX_PARAMS:
        big = max(layers, key=weight_floats)
        key = "filters" if big.kind == "convolutional" else "weights_type"
        raise ConfigError(
            f"{big.section.where(key)}: (layer {big.index}, the largest: "
            f"{weight_floats(big):,}) the network has "
            + over("MAX_PARAMS", f"{params:,} parameters")
        )
    total, biggest = activation_bytes(layers, input_size)
    if total > MAX_ACTIVATION_BYTES:
        top = (
            f" (largest: {biggest.section.where()}, layer {biggest.index}, {_gib(_layer_bytes(biggest, *input_size))})"
            if biggest
            else ""
        )
        raise ConfigError(
            f"{where} {list(input_size)}: one image's forward pass writes {_gib(total)} of layer "
            f"outputs{top}: " + over("MAX_ACTIVATION_BYTES", f"{total:,} bytes")
        )
