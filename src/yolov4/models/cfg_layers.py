"""The layer of each darknet cfg section: its inputs, channels and stride (no torch).

:func:`layer_spec` reads one section after ``[net]`` as darknet's ``src/parser.c`` does
(``parse_convolutional``, ``parse_route``, ``parse_shortcut``, ``parse_maxpool``, ...) and
infers the shape of its output from those of the layers before it: a :class:`LayerSpec`, the
parameters the network builder (:mod:`yolov4.models.layers`) takes. A value darknet would read
differently, or a shape the builder does not implement, is a :class:`~yolov4.errors.ConfigError`
naming the file, line, section and key. :func:`yolov4.models.cfg.resolve_layers` runs it over a
cfg's sections.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from yolov4.errors import ConfigError

# cfg.Section: typed Any here (yolov4.models.cfg imports this module)
Section = Any

__all__ = [
    "ACTIVATIONS",
    "CONV_DEFAULT_ACTIVATION",
    "GLOBAL",
    "LayerSpec",
    "Shape",
    "SHORTCUT_WEIGHTS",
    "SHORTCUT_NORMALIZATIONS",
    "PRODUCT_ACTIVATIONS",
    "layer_spec",
]

# activations the network implements (darknet's src/activations.c definitions)
ACTIVATIONS = ("linear", "leaky", "relu", "logistic", "tanh", "mish", "swish")
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


def _strides_text(strides: tuple[int, int]) -> str:
    """A layer's stride as messages write it: ``8``, ``8 x 16`` (along y x along x), or
    ``global (1 x 1)``."""
    if strides == (GLOBAL, GLOBAL):
        return "global (1 x 1)"
    return str(strides[0]) if strides[0] == strides[1] else f"{strides[0]} x {strides[1]}"


def _index(s: Section, key: str, value: int, i: int) -> int:
    """darknet: a negative index is relative to layer ``i``, a positive one is absolute."""
    j = i + value if value < 0 else value
    if not 0 <= j < i:
        raise s.error(
            key, f"refers to layer {j} (from {value}); layer {i} can use layers 0-{i - 1}"
        )
    return j


def _activation(s: Section, default: str | None = None) -> str:
    act = s.options.get("activation", default)
    if act is None:
        raise s.error("activation", "is required")
    if act not in ACTIVATIONS:
        raise s.error("activation", f"{act!r} is not supported; supported: {list(ACTIVATIONS)}")
    return act


def _stride_of(s: Section, key: str, in_stride: int, factor: float) -> int:
    if in_stride == GLOBAL:
        return GLOBAL  # a 1 x 1 map stays 1 x 1 (the layers that would change it are refused)
    out = in_stride * factor
    if out < 1 or not math.isclose(out, round(out)):
        raise s.error(key, f"gives a fractional stride {out:g} relative to the input image")
    return round(out)


def _spec(
    s: Section, i: int, inputs: list[int], channels: int, strides: tuple[int, int], **params
) -> LayerSpec:
    return LayerSpec(i, s.kind, s, inputs, channels, strides[0], params, strides[1])


def _conv_strides(s: Section) -> tuple[int, int]:
    """``(stride_y, stride_x)`` as darknet's ``parse_convolutional`` reads them: each of
    ``stride_x``/``stride_y`` given (>= 1) wins, the other takes ``stride`` (default 1)."""
    stride = s.get_int("stride", 1)
    sy, sx = s.get_int("stride_y", -1), s.get_int("stride_x", -1)
    return (sy if sy >= 1 else stride), (sx if sx >= 1 else stride)


def _conv_padding(s: Section, size: int, strides: tuple[int, int]) -> tuple[int, int]:
    """``(padding, dilation)`` of a ``[convolutional]`` as darknet's ``parse_convolutional``
    reads them: ``pad=1`` means ``size // 2`` whatever ``padding=`` says, ``padding=`` counts
    without it (default 0), ``dilation`` is 1 for ``size=1``; the window starts ``padding *
    dilation`` cells before the map (``im2col_cpu_ext``)."""
    pad = size // 2 if s.get_int("pad", 0) else s.get_int("padding", 0)
    dilation = 1 if size == 1 else s.get_int("dilation", 1)
    key = "padding" if "padding" in s.options and not s.get_int("pad", 0) else "pad"
    if pad < 0 or dilation < 1:
        raise s.error(key if pad < 0 else "dilation", "padding must be >= 0, dilation >= 1")
    # darknet's map: (H + 2 * padding - size) / stride + 1 rows, which is H / stride for H a
    # multiple of stride iff size - stride <= 2 * padding <= size - 1 ([maxpool]'s rule)
    for stride in sorted(set(strides)):
        if size - stride <= 2 * pad <= size - 1:
            continue
        raise s.error(
            key,
            f"padding {pad} with size {size} stride {stride} gives darknet's map of "
            f"(H + 2 * {pad} - {size}) / {stride} + 1 rows, not H / {stride}: yolov4 builds "
            f"layers whose maps are H / stride (heads decode by stride), padding p with "
            f"size - stride <= 2p <= size - 1 (pad=1 for an odd size; pad=0 when size <= stride)",
        )
    # darknet sizes the map without the dilation (convolutional_layer.c out_h) and runs the
    # dilated kernel: the two agree only when the padding is the kernel's half
    if dilation > 1 and 2 * pad != size - 1:
        raise s.error(
            "dilation",
            f"dilation {dilation} with size {size} and padding {pad}: darknet sizes the map as "
            "if undilated but runs the dilated kernel, which agree only for padding = "
            "(size - 1) / 2 (pad=1 with an odd size)",
        )
    return pad, dilation


def _conv_spec(s: Section, i: int, c_in: int, st_in: tuple[int, int]) -> LayerSpec:
    size = s.get_int("size", 1)
    strides = _conv_strides(s)
    filters = s.get_int("filters", 1)
    groups = s.get_int("groups", 1)
    if size < 1 or min(strides) < 1 or filters < 1 or groups < 1:
        raise s.error(None, "size, stride, filters and groups must be >= 1, padding >= 0")
    if c_in % groups or filters % groups:
        raise s.error("groups", f"{groups} does not divide {c_in} inputs / {filters} filters")
    pad, dilation = _conv_padding(s, size, strides)
    if st_in == (GLOBAL, GLOBAL) and 2 * pad != size - 1:
        # darknet's 1 x 1 map stays 1 x 1 ((1 + 2p - size) / stride + 1 in C); torch's would not
        raise s.error(
            "padding" if "padding" in s.options and not s.get_int("pad", 0) else "pad",
            f"padding {pad} with size {size} on a global (1 x 1) map: only padding "
            "(size - 1) / 2 keeps it 1 x 1 here",
        )
    params = dict(
        in_channels=c_in,
        filters=filters,
        size=size,
        stride=strides,
        padding=pad,
        dilation=dilation,
        groups=groups,
        bn=bool(s.get_int("batch_normalize", 0)),
        activation=_activation(s, CONV_DEFAULT_ACTIVATION),
        stopbackward=s.get_int("stopbackward", 0),
    )
    keys = [k if k in s.options else "stride" for k in ("stride_y", "stride_x")]
    out = tuple(_stride_of(s, k, st, f) for k, st, f in zip(keys, st_in, strides))
    return _spec(s, i, [i - 1], filters, out, **params)


def _route_spec(s: Section, i: int, out: Callable[[int], Shape]) -> LayerSpec:
    """``out(j)``: layer ``j``'s (channels, strides); layers 0 to ``i - 1`` exist."""
    srcs = [_index(s, "layers", v, i) for v in s.get_ints("layers")]
    if not srcs:
        raise s.error("layers", "is empty; expected one or more layer indices (-1, 61, ...)")
    groups, group_id = s.get_int("groups", 1), s.get_int("group_id", 0)
    if groups < 1 or not 0 <= group_id < groups:
        raise s.error("group_id", f"must be in [0, groups={groups}), got {group_id}")
    strides = {out(j)[1] for j in srcs}
    if len(strides) != 1:
        shown = ", ".join(_strides_text(st) for st in sorted(strides))
        raise s.error("layers", f"joins maps of different strides [{shown}]")
    c = 0
    for j in srcs:
        if out(j)[0] % groups:
            raise s.error(
                "groups", f"{groups} does not divide the {out(j)[0]} channels of layer {j}"
            )
        c += out(j)[0] // groups
    onlyforward = bool(s.get_int("onlyforward", 0))  # darknet: no backward through it
    return _spec(
        s, i, srcs, c, strides.pop(), groups=groups, group_id=group_id, onlyforward=onlyforward
    )


def _unequal_maps(
    s: Section, i: int, j: int, out: Callable[[int], Shape], rule: str
) -> ConfigError:
    """The error of a layer ``i`` that combines layer ``j``'s map with the previous layer's
    (``[shortcut]``, ``[sam]``) where their shapes break ``rule``."""
    (c_j, st_j), (c_in, st_in) = out(j), out(i - 1)
    return s.error(
        "from",
        f"layer {j} gives {c_j} channels at stride {_strides_text(st_j)}, layer {i - 1} {c_in} "
        f"at stride {_strides_text(st_in)}: {rule}",
    )


def _shortcut_spec(
    s: Section, i: int, out: Callable[[int], Shape], c_in: int, st_in: tuple[int, int]
) -> LayerSpec:
    """``[shortcut]`` (darknet's ``parse_shortcut``, ``shortcut_multilayer_cpu``): the previous
    layer plus the ``from`` layers (weighted with ``weights_type``), then ``activation``. A
    ``from`` map of other channels adds element ``k`` of its own to element ``k`` of the sum,
    as far as it has elements: of maps of equal size, its first channels to the first ones."""
    srcs = [_index(s, "from", v, i) for v in s.get_ints("from")]
    for j in srcs:
        if out(j)[1] != st_in:
            raise _unequal_maps(s, i, j, out, "only maps of equal size can be added")
    weights_type, normalization = _shortcut_weights(s)
    n = {"per_feature": 1 + len(srcs), "per_channel": (1 + len(srcs)) * c_in}.get(weights_type, 0)
    return _spec(
        s, i, [i - 1, *srcs], c_in, st_in,
        activation=_activation(s, "linear"), weights_type=weights_type,
        normalization=normalization, weights=n,
    )  # fmt: skip


# darknet's parse_shortcut: weights_type and weights_normalization values, by the name built
SHORTCUT_WEIGHTS = {"none": "none", "per_feature": "per_feature", "per_layer": "per_feature",
                    "per_channel": "per_channel"}  # fmt: skip
SHORTCUT_NORMALIZATIONS = {"none": "none", "relu": "relu", "avg_relu": "relu", "softmax": "softmax"}


def _shortcut_weights(s: Section) -> tuple[str, str]:
    """``(weights_type, weights_normalization)`` of a ``[shortcut]`` as ``parse_shortcut``
    reads them: ``per_layer`` is ``per_feature``, ``avg_relu`` is ``relu``; another value is
    darknet's error (a normalization only with weights: without, darknet ignores it)."""
    kind = s.options.get("weights_type", "none")
    norm = s.options.get("weights_normalization", "none")
    if kind not in SHORTCUT_WEIGHTS:
        raise s.error("weights_type", f"expected one of {list(SHORTCUT_WEIGHTS)}, got {kind!r}")
    if kind == "none":
        return "none", "none"
    if norm not in SHORTCUT_NORMALIZATIONS:
        raise s.error(
            "weights_normalization",
            f"expected one of {list(SHORTCUT_NORMALIZATIONS)}, got {norm!r}",
        )
    return SHORTCUT_WEIGHTS[kind], SHORTCUT_NORMALIZATIONS[norm]


def _pool_spec(s: Section, i: int, c_in: int, st_in: tuple[int, int]) -> LayerSpec:
    """``[maxpool]`` and ``[local_avgpool]`` (darknet's ``parse_maxpool`` /
    ``parse_local_avgpool``, one ``make_maxpool_layer``): ``size`` defaults to ``stride``,
    ``padding`` to ``size - 1``, ``stride_x``/``stride_y`` to ``stride``; the map is
    ``(W + padding - size) / stride_x + 1`` wide, its windows start ``padding // 2`` cells
    before it, and cells outside it never count (a max never wins there; an average divides
    by the cells inside)."""
    stride = s.get_int("stride", 1)
    strides = s.get_int("stride_y", stride), s.get_int("stride_x", stride)
    size = s.get_int("size", stride)  # darknet's default: the stride
    padding = s.get_int("padding", size - 1)
    if size < 1 or min(strides) < 1 or padding < 0:
        raise s.error(None, "size and stride must be >= 1, padding >= 0")
    # out == W / stride for W a multiple of stride iff size - stride <= padding < size
    for st in sorted(set(strides)):
        if not size - st <= padding <= size - 1:
            raise s.error(
                "padding" if "padding" in s.options else "size",
                f"size {size} stride {st} padding {padding} does not give a map of "
                f"H / stride (darknet's default padding is size - 1)",
            )
    left = padding // 2
    # cells past the right/bottom edge a window reaches (negative: the last cells no window
    # reaches, e.g. size=4 stride=4 with padding 3)
    right = tuple(size - st - left for st in strides)
    out = tuple(_stride_of(s, "stride", st, f) for st, f in zip(st_in, strides))
    return _spec(
        s, i, [i - 1], c_in, out, size=size, stride=strides, pad_left=left, pad_right=right
    )


def _upsample_spec(s: Section, i: int, c_in: int, st_in: tuple[int, int]) -> LayerSpec:
    """``[upsample]`` (darknet's ``parse_upsample`` and ``upsample_cpu``): ``stride`` (default 2)
    times larger, each cell repeated, times ``scale`` (default 1); a negative ``stride`` is
    darknet's downsample: each ``|stride|`` x ``|stride|`` block summed, times ``scale``."""
    stride = s.get_int("stride", 2)
    scale = s.get_float("scale", 1.0)
    if stride == 0:
        raise s.error("stride", "must be a non-zero integer (negative: downsample), got 0")
    if not math.isfinite(scale):
        raise s.error("scale", f"must be a finite number, got {scale}")
    factor = 1 / stride if stride > 0 else -stride
    out = tuple(_stride_of(s, "stride", st, factor) for st in st_in)
    return _spec(s, i, [i - 1], c_in, out, stride=stride, scale=scale)


# darknet's activate() has no case for these: a [sam] or [scale_channels] with one of them
# puts out zeros
PRODUCT_ACTIVATIONS = tuple(a for a in ACTIVATIONS if a not in ("swish", "mish"))


def _product_from(s: Section, i: int) -> tuple[int, str]:
    """``[sam]``/``[scale_channels]``: the ``from`` layer (one: darknet's ``atoi`` reads the
    first) and the ``activation`` (default linear; not swish or mish, which they do not
    apply)."""
    froms = s.get_ints("from")
    if len(froms) != 1:
        raise s.error(
            "from", f"darknet's [{s.kind}] reads one layer (atoi: the first), got {froms}"
        )
    act = _activation(s, "linear")
    if act not in PRODUCT_ACTIVATIONS:
        raise s.error(
            "activation",
            f"darknet's [{s.kind}] does not apply {act} (its activate() has no case for it: the "
            f"output is zero); supported here: {list(PRODUCT_ACTIVATIONS)}",
        )
    return _index(s, "from", froms[0], i), act


def _sam_spec(
    s: Section, i: int, out: Callable[[int], Shape], c_in: int, st_in: tuple[int, int]
) -> LayerSpec:
    """``[sam]`` (darknet's ``parse_sam``, ``forward_sam_layer``): the previous layer's output
    times layer ``from``'s, element by element (equal shapes: darknet asserts it), then
    ``activation`` (default linear)."""
    j, act = _product_from(s, i)
    if out(j) != (c_in, st_in):
        raise _unequal_maps(s, i, j, out, "only equal shapes can be multiplied")
    return _spec(s, i, [i - 1, j], c_in, st_in, activation=act)


def _scale_channels_spec(
    s: Section, i: int, out: Callable[[int], Shape], c_in: int, st_in: tuple[int, int]
) -> LayerSpec:
    """``[scale_channels]`` (darknet's ``parse_scale_channels``, ``forward_scale_channels_layer``):
    layer ``from``'s map times the previous layer's output, one value per channel (a global
    1 x 1 map of the same channels: squeeze-and-excitation), or with ``scale_wh=1`` one value
    per cell (a 1-channel map of the same size), then ``activation``; the output is ``from``'s
    shape."""
    j, act = _product_from(s, i)
    c_from, st_from = out(j)
    if s.get_int("scale_wh", 0):
        fits, need = c_in == 1 and st_in == st_from, f"1 channel at stride {_strides_text(st_from)}"
    else:
        fits, need = c_in == c_from and st_in == (GLOBAL, GLOBAL), f"{c_from} channels, 1 x 1"
    if not fits:
        raise s.error(
            "from",
            f"scales layer {j} ({c_from} channels at stride {_strides_text(st_from)}) by layer "
            f"{i - 1}, which gives {c_in} channels at stride {_strides_text(st_in)}; darknet "
            f"needs {need}" + ("" if "scale_wh" in s.options else " (scale_wh=1: 1 channel)"),
        )
    return _spec(s, i, [i - 1, j], c_from, st_from, activation=act)


def _dropout_spec(s: Section, i: int, c_in: int, st_in: tuple[int, int]) -> LayerSpec:
    """``[dropout]`` (darknet's ``parse_dropout``, ``probability`` default 0.2): the identity
    at inference; in training each value is zeroed with that probability and the others scaled
    by ``1 / (1 - probability)``, in the previous layer's own output (darknet's dropout layer
    shares its buffer: a ``[route]`` to that layer reads the dropped map too)."""
    p = s.get_float("probability", 0.2)
    if not 0 <= p <= 1:
        raise s.error("probability", f"must be a probability in [0, 1], got {p:g}")
    if i == 0:
        raise s.error(None, "darknet's [dropout] works in the previous layer's output: it cannot "
                      "be the first layer")  # fmt: skip
    return _spec(s, i, [i - 1], c_in, st_in, probability=p)


def _avgpool_spec(s: Section, i: int, c_in: int, st_in: tuple[int, int]) -> LayerSpec:
    """``[avgpool]`` (darknet's ``parse_avgpool``, ``forward_avgpool_layer``; no keys): the mean
    of each channel over the whole map, a 1 x 1 map whatever the input's size."""
    return _spec(s, i, [i - 1], c_in, (GLOBAL, GLOBAL))


def _yolo_spec(s: Section, i: int, c_in: int, st_in: tuple[int, int]) -> LayerSpec:
    """``[yolo]``: passes its input through; its map's stride is the head's, one for both axes
    (decode and loss scale x and y by it)."""
    if st_in[0] != st_in[1]:
        raise s.error(
            None,
            f"reads a map of stride {st_in[0]} along y and {st_in[1]} along x (stride_x / "
            "stride_y of a layer before it); yolov4 decodes a head with one stride for x and y",
        )
    return _spec(s, i, [i - 1], c_in, st_in)


# layers whose map would not stay H / stride when they read a global (1 x 1) map
_NOT_ON_GLOBAL = ("maxpool", "local_avgpool", "upsample", "yolo")


def layer_spec(s: Section, i: int, out: Callable[[int], Shape]) -> LayerSpec:
    """Darknet layer ``i`` of section ``s`` (a type :mod:`yolov4.models.cfg_keys` accepts);
    ``out(j)``: layer ``j``'s (channels, strides), for ``j`` from -1 (the image) to ``i - 1``."""
    c_in, st_in = out(i - 1)
    if st_in == (GLOBAL, GLOBAL) and s.kind in _NOT_ON_GLOBAL:
        raise s.error(
            None,
            f"reads the global (1 x 1) map of layer {i - 1} (an [avgpool]); yolov4 builds "
            f"a [{s.kind}] on maps of H / stride only",
        )
    if s.kind == "convolutional":
        return _conv_spec(s, i, c_in, st_in)
    if s.kind == "route":
        return _route_spec(s, i, out)
    if s.kind == "shortcut":
        return _shortcut_spec(s, i, out, c_in, st_in)
    if s.kind in ("maxpool", "local_avgpool"):
        return _pool_spec(s, i, c_in, st_in)
    if s.kind == "upsample":
        return _upsample_spec(s, i, c_in, st_in)
    if s.kind == "dropout":
        return _dropout_spec(s, i, c_in, st_in)
    if s.kind == "sam":
        return _sam_spec(s, i, out, c_in, st_in)
    if s.kind == "scale_channels":
        return _scale_channels_spec(s, i, out, c_in, st_in)
    if s.kind == "avgpool":
        return _avgpool_spec(s, i, c_in, st_in)
    return _yolo_spec(s, i, c_in, st_in)
