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

from yolov4.models.cfg_joins import (
    PRODUCT_ACTIVATIONS,
    SHORTCUT_NORMALIZATIONS,
    SHORTCUT_WEIGHTS,
    route_spec,
    sam_spec,
    scale_channels_spec,
    shortcut_spec,
)
from yolov4.models.cfg_spec import (
    ACTIVATIONS,
    CONV_DEFAULT_ACTIVATION,
    GLOBAL,
    LayerSpec,
    Section,
    Shape,
    activation,
    spec,
    stride_of,
)

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
        activation=activation(s, CONV_DEFAULT_ACTIVATION),
        stopbackward=s.get_int("stopbackward", 0),
    )
    keys = [k if k in s.options else "stride" for k in ("stride_y", "stride_x")]
    out = tuple(stride_of(s, k, st, f) for k, st, f in zip(keys, st_in, strides))
    return spec(s, i, [i - 1], filters, out, **params)


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
    out = tuple(stride_of(s, "stride", st, f) for st, f in zip(st_in, strides))
    return spec(s, i, [i - 1], c_in, out, size=size, stride=strides, pad_left=left, pad_right=right)


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
    out = tuple(stride_of(s, "stride", st, factor) for st in st_in)
    return spec(s, i, [i - 1], c_in, out, stride=stride, scale=scale)


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
    return spec(s, i, [i - 1], c_in, st_in, probability=p)


def _avgpool_spec(s: Section, i: int, c_in: int, st_in: tuple[int, int]) -> LayerSpec:
    """``[avgpool]`` (darknet's ``parse_avgpool``, ``forward_avgpool_layer``; no keys): the mean
    of each channel over the whole map, a 1 x 1 map whatever the input's size."""
    return spec(s, i, [i - 1], c_in, (GLOBAL, GLOBAL))


def _reorg_spec(s: Section, i: int, c_in: int, st_in: tuple[int, int]) -> LayerSpec:
    """``[reorg]`` and ``[reorg3d]`` (darknet's ``parse_reorg_old`` / ``parse_reorg``; ``stride``
    default 1, ``reverse`` default 0): ``stride`` x ``stride`` blocks into channels,
    ``stride ** 2`` times the channels at ``stride`` times the stride; with ``reverse``, the
    other way (:class:`yolov4.models.layers.Reorg`)."""
    stride = s.get_int("stride", 1)
    reverse = s.get_int("reverse", 0) != 0  # darknet's atoi: any other number reverses
    if stride < 1:
        raise s.error("stride", f"must be an integer >= 1, got {stride}")
    # reorg_cpu reads C' channels as C' / stride^2 maps stride times larger: whole ones only.
    # C' is the input's C for [reorg], the output's (C * stride^2, or C / stride^2 reversed)
    # for [reorg3d]
    need = stride**2 if s.kind == "reorg" else stride**4 if reverse else 1
    if c_in % need:
        raise s.error(
            "stride",
            f"{stride} reorganises {c_in} input channels as {c_in} / {need} maps; darknet's "
            f"[{s.header}]{' reverse=1' if reverse else ''} needs a channel count divisible by "
            f"{need} (stride^{2 if need == stride**2 else 4})",
        )
    factor = 1 / stride if reverse else stride
    out = tuple(stride_of(s, "stride", st, factor) for st in st_in)
    channels = c_in // stride**2 if reverse else c_in * stride**2
    return spec(s, i, [i - 1], channels, out, stride=stride, reverse=reverse)


def _yolo_spec(s: Section, i: int, c_in: int, st_in: tuple[int, int]) -> LayerSpec:
    """``[yolo]``, ``[Gaussian_yolo]`` and ``[region]``: passes its input through; its map's stride is the head's,
    one for both axes (decode and loss scale x and y by it)."""
    if st_in[0] != st_in[1]:
        raise s.error(
            None,
            f"reads a map of stride {st_in[0]} along y and {st_in[1]} along x (stride_x / "
            "stride_y of a layer before it); yolov4 decodes a head with one stride for x and y",
        )
    return spec(s, i, [i - 1], c_in, st_in)


# layers whose map would not stay H / stride when they read a global (1 x 1) map
_NOT_ON_GLOBAL = (
    "maxpool", "local_avgpool", "upsample", "reorg", "reorg3d", "yolo", "region",
    "Gaussian_yolo",
)  # fmt: skip


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
        return route_spec(s, i, out)
    if s.kind == "shortcut":
        return shortcut_spec(s, i, out, c_in, st_in)
    if s.kind in ("maxpool", "local_avgpool"):
        return _pool_spec(s, i, c_in, st_in)
    if s.kind == "upsample":
        return _upsample_spec(s, i, c_in, st_in)
    if s.kind == "dropout":
        return _dropout_spec(s, i, c_in, st_in)
    if s.kind == "sam":
        return sam_spec(s, i, out, c_in, st_in)
    if s.kind == "scale_channels":
        return scale_channels_spec(s, i, out, c_in, st_in)
    if s.kind == "avgpool":
        return _avgpool_spec(s, i, c_in, st_in)
    if s.kind in ("reorg", "reorg3d"):
        return _reorg_spec(s, i, c_in, st_in)
    return _yolo_spec(s, i, c_in, st_in)
