"""Darknet ``.cfg`` files: parsing, validation and shape inference (no torch).

A cfg is a list of ``[section]``s with ``key=value`` lines. :func:`parse_cfg` keeps every
section's options in file order with their line numbers, so that an error can name the file,
line, section and key; :func:`resolve_layers` turns the sections after ``[net]`` into
:class:`LayerSpec`s: darknet's layer index, absolute input indices, channels and stride of each
output, with the semantics of darknet's ``src/parser.c`` (relative and absolute ``layers=`` /
``from=``, ``[route] groups/group_id``, ``[maxpool]`` ``size`` defaulting to ``stride`` and
padding ``size - 1`` on the right/bottom unless given, ``[convolutional]`` ``pad=1`` meaning
``size // 2`` whatever ``padding=`` says and ``dilation`` scaling it).

Anything the network builder does not implement stops here with a :class:`ConfigError`; which
keys of each section are built, kept verbatim (darknet's training loop, written back by
:func:`yolov4.darknet.write_darknet_cfg`), accepted without effect, refused or warned about is
:mod:`yolov4.models.cfg_keys`.
"""

from __future__ import annotations

import math
import re
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from yolov4.errors import ConfigError, ConfigWarning
from yolov4.models.budget import check_cfg_text, check_layer, check_layer_count
from yolov4.models.cfg_keys import NET_KEYS, check_layer_keys, check_net_keys, warn_unread

__all__ = [
    "CFG_DIR",
    "ZOO",
    "Section",
    "LayerSpec",
    "parse_cfg",
    "resolve_layers",
    "read_zoo_cfg",
    "ACTIVATIONS",
    "CONV_DEFAULT_ACTIVATION",
    "SECTION_ALIASES",
    "GLOBAL",
    "cfg_error",
]

# darknet's official cfgs, shipped verbatim inside the package (src/yolov4/models/cfg/)
CFG_DIR = Path(__file__).resolve().parent / "cfg"
ZOO = tuple(sorted(p.stem for p in CFG_DIR.glob("*.cfg")))

# darknet's other names of the sections built here (src/parser.c string_to_layer_type): a
# section is read under the name on the left as the one on the right; errors quote the name as
# written, and write_darknet_cfg writes the right one (OpenCV's importer knows only those)
SECTION_ALIASES = {
    "network": "net",
    "conv": "convolutional",
    "max": "maxpool",
    "local_avg": "local_avgpool",
    "avg": "avgpool",
}

# activations the network implements (darknet's src/activations.c definitions)
ACTIVATIONS = ("linear", "leaky", "relu", "logistic", "tanh", "mish", "swish")
# a [convolutional] without activation= (parse_convolutional's default)
CONV_DEFAULT_ACTIVATION = "logistic"


@dataclass
class Section:
    """One ``[kind]`` section of a cfg: raw option strings in file order, with line numbers.
    ``kind`` is darknet's name of the layer type (``convolutional`` for a ``[conv]``: see
    :data:`SECTION_ALIASES`); ``header`` the name as the cfg writes it (default ``kind``)."""

    kind: str
    line: int
    source: str
    options: dict[str, str] = field(default_factory=dict)
    lines: dict[str, int] = field(default_factory=dict)
    header: str = ""

    def __post_init__(self) -> None:
        self.header = self.header or self.kind

    def where(self, key: str | None = None) -> str:
        line = self.lines.get(key, self.line) if key else self.line
        return f"{self.source}:{line}: [{self.header}]" + (f" {key}" if key else "")

    def error(self, key: str | None, message: str) -> ConfigError:
        return ConfigError(f"{self.where(key)}: {message}")

    # typed getters: a bad value names the file, line, section and key
    def get_int(self, key: str, default: int | None = None) -> int:
        raw = self.options.get(key)
        if raw is None:
            if default is None:
                raise self.error(key, "is required")
            return default
        try:
            return int(raw)
        except ValueError:
            raise self.error(key, f"expected an integer, got {raw!r}") from None

    def get_float(self, key: str, default: float | None = None) -> float | None:
        raw = self.options.get(key)
        if raw is None:
            return default
        try:
            return float(raw)
        except ValueError:
            raise self.error(key, f"expected a number, got {raw!r}") from None

    def get_ints(self, key: str) -> list[int]:
        raw = self.options.get(key)
        if raw is None:
            raise self.error(key, "is required")
        try:
            return [int(v) for v in raw.split(",") if v.strip()]
        except ValueError:
            raise self.error(key, f"expected comma-separated integers, got {raw!r}") from None

    def get_floats(self, key: str) -> list[float]:
        raw = self.options.get(key, "")
        try:
            return [float(v) for v in raw.split(",") if v.strip()]
        except ValueError:
            raise self.error(key, f"expected comma-separated numbers, got {raw!r}") from None


def cfg_error(sections: list[Section], message: str) -> ConfigError:
    source = sections[0].source if sections else "<cfg>"
    return ConfigError(f"{source}: {message}")


# darknet's strip() (src/utils.c): the characters it removes from every cfg line
_BLANKS = str.maketrans("", "", " \t\r\n")
# darknet's read_cfg: a line whose first character (after strip) is one of these is a comment;
# anywhere else in a line they are part of the text
COMMENT_CHARS = "#;"


def parse_cfg(text: str, source: str = "<cfg>", warn: bool = False) -> list[Section]:
    """cfg text -> sections (``[net]`` first), read as darknet's ``read_cfg`` reads it: blanks
    removed from every line (darknet's ``strip``), a line starting with ``#`` or ``;`` a comment,
    blank lines dropped. A ``#``/``;`` later in a line is part of it for darknet: a numeric value
    followed by one reads as the number before it (``atoi``/``atof`` stop there), anything else
    (a text value such as ``activation=linear # head``, a section header) is a
    :class:`ConfigError` saying what darknet reads. A key given twice reads its first value, as
    darknet's ``option_find`` does: for a ``[net]`` key the network does not read (``batch`` in
    yolov3-openimages.cfg) with a warning, for any other it is refused. ``warn``: emit the
    :class:`~yolov4.errors.ConfigWarning`s (where a cfg enters; the text re-read from a
    model config stays quiet). Text longer than :data:`yolov4.models.budget.MAX_CFG_BYTES` is
    refused before it is read."""
    check_cfg_text(text, source)
    sections: list[Section] = []
    twice: list[str] = []
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.translate(_BLANKS)
        if not line or line[0] in COMMENT_CHARS:
            continue
        if line.startswith("["):
            if any(c in line for c in COMMENT_CHARS):
                raise ConfigError(
                    f"{source}:{number}: darknet reads the section header {line!r} whole (# and ; "
                    "start a comment only at the start of a line), a layer type it does not know; "
                    "put the comment on a line of its own"
                )
            if not line.endswith("]"):
                raise ConfigError(f"{source}:{number}: cannot parse section header {raw.strip()!r}")
            name = line[1:-1]
            sections.append(Section(SECTION_ALIASES.get(name, name), number, source, header=name))
        elif "=" in line and sections:
            key, value = line.split("=", 1)
            section = sections[-1]
            if key in section.options:
                twice.append(_set_twice(section, key, value, number))
                continue  # darknet's option_find reads the first
            section.lines[key] = number
            section.options[key] = _value_before_comment(section, key, value)
        elif "=" in line:
            raise ConfigError(
                f"{source}:{number}: {raw.strip()!r} comes before any section; a darknet cfg "
                "starts with a [net] section"
            )
        else:
            raise ConfigError(f"{source}:{number}: cannot parse cfg line {raw.strip()!r}")
    if not sections or sections[0].kind != "net":
        raise ConfigError(f"{source}: a darknet cfg starts with a [net] section")
    check_net_keys(sections[0])
    if warn:
        for message in twice:
            warnings.warn(message, ConfigWarning, stacklevel=2)
        warn_unread(sections)
    return sections


def _set_twice(section: Section, key: str, value: str, number: int) -> str:
    """A key given again on line ``number``: darknet's ``option_find`` reads the first. For a
    ``[net]`` key the network does not read (``batch``, ``subdivisions``: yolov3-openimages.cfg,
    yolo9000.cfg) the first is kept and the warning returned; any other is refused, as the
    second value is likely the one meant."""
    first = f"first on line {section.lines[key]}: {key}={section.options[key]}"
    if section.kind == "net" and key not in NET_KEYS:
        return (
            f"{section.source}:{number}: [{section.header}] {key}: set twice ({first}); darknet "
            f"reads the first, and so does yolov4 ({key}={value} here is ignored)"
        )
    raise ConfigError(
        f"{section.source}:{number}: [{section.header}] {key}: set twice ({first}); darknet reads "
        "the first: remove the line that is not meant"
    )


def _atoi(text: str) -> int:
    """C's ``atoi``: the leading integer of ``text``, 0 without one."""
    match = re.match(r"[+-]?\d+", text)
    return int(match.group()) if match else 0


def _is_numbers(text: str) -> bool:
    """Whether ``text`` is a number or comma-separated numbers (a trailing comma allowed)."""
    parts = text.split(",")
    parts = parts[:-1] if len(parts) > 1 and not parts[-1] else parts
    try:
        [float(p) for p in parts]
    except ValueError:
        return False
    return True


def _value_before_comment(section: Section, key: str, value: str) -> str:
    """``value`` (blanks removed) as darknet's number parsing reads it: up to a ``#`` or ``;``
    in it when what comes before is numeric (``atoi``/``atof`` stop there, and ``mask``,
    ``anchors``, ``steps`` count their commas up to a ``#``); a :class:`ConfigError` saying what
    darknet reads otherwise."""
    cut = min((value.find(c) for c in COMMENT_CHARS if c in value), default=-1)
    if cut < 0:
        return value
    head, where = value[:cut], section.where(key)
    rule = "# and ; start a comment only at the start of a line"
    if key in ("layers", "from") and section.kind in ("route", "shortcut") and "," in value[cut:]:
        # parse_route / parse_shortcut count every comma of the value, the comment's too
        read = ",".join(str(_atoi(p)) for p in value.split(","))
        raise ConfigError(
            f"{where}: darknet reads {value!r} ({rule}) and counts the comment's commas too: the "
            f"layers {read}; move the comment to a line of its own"
        )
    if head and _is_numbers(head):
        return head
    if key == "activation":
        raise ConfigError(
            f"{where}: darknet reads {value!r} ({rule}), an activation it does not know: it warns "
            "and uses relu, so weights trained with this cfg in darknet were trained with relu "
            "there (OpenCV refuses the cfg); write activation=relu to build what darknet "
            f"trained, or move the comment to a line of its own for activation={head}"
        )
    raise ConfigError(
        f"{where}: darknet reads {value!r} ({rule}), not {head!r}; move the comment to a line "
        "of its own"
    )


def read_zoo_cfg(name: str) -> str:
    path = CFG_DIR / f"{name}.cfg"
    if not path.is_file():
        raise ConfigError(
            f"unknown model name {name!r}; expected one of {list(ZOO)} or cfg=path/to/model.cfg"
        )
    return path.read_text()


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


def _strides_text(strides: tuple[int, int]) -> str:
    """A layer's stride as messages write it: ``8``, ``8 x 16`` (along y x along x), or
    ``global (1 x 1)``."""
    if strides == (GLOBAL, GLOBAL):
        return "global (1 x 1)"
    return str(strides[0]) if strides[0] == strides[1] else f"{strides[0]} x {strides[1]}"


def _index(s: Section, key: str, value: int, i: int, n_layers: int) -> int:
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


Shape = tuple[int, tuple[int, int]]  # a layer's output: channels, (stride along y, along x)


def _route_spec(s: Section, i: int, out: Callable[[int], Shape]) -> LayerSpec:
    """``out(j)``: layer ``j``'s (channels, strides); layers 0 to ``i - 1`` exist."""
    srcs = [_index(s, "layers", v, i, i) for v in s.get_ints("layers")]
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


def _shortcut_spec(
    s: Section, i: int, out: Callable[[int], Shape], c_in: int, st_in: tuple[int, int]
) -> LayerSpec:
    """``[shortcut]`` (darknet's ``parse_shortcut``, ``shortcut_multilayer_cpu``): the previous
    layer plus the ``from`` layers (weighted with ``weights_type``), then ``activation``. A
    ``from`` map of other channels adds element ``k`` of its own to element ``k`` of the sum,
    as far as it has elements: of maps of equal size, its first channels to the first ones."""
    srcs = [_index(s, "from", v, i, i) for v in s.get_ints("from")]
    for j in srcs:
        if out(j)[1] != st_in:
            raise s.error(
                "from",
                f"layer {j} gives {out(j)[0]} channels at stride {_strides_text(out(j)[1])}, "
                f"layer {i - 1} {c_in} at stride {_strides_text(st_in)}: only maps of equal "
                "size can be added",
            )
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
    return _index(s, "from", froms[0], i, i), act


def _sam_spec(
    s: Section, i: int, out: Callable[[int], Shape], c_in: int, st_in: tuple[int, int]
) -> LayerSpec:
    """``[sam]`` (darknet's ``parse_sam``, ``forward_sam_layer``): the previous layer's output
    times layer ``from``'s, element by element (equal shapes: darknet asserts it), then
    ``activation`` (default linear)."""
    j, act = _product_from(s, i)
    if out(j) != (c_in, st_in):
        raise s.error(
            "from",
            f"layer {j} gives {out(j)[0]} channels at stride {_strides_text(out(j)[1])}, layer "
            f"{i - 1} {c_in} at stride {_strides_text(st_in)}: only equal shapes can be "
            "multiplied",
        )
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


# layers whose map would not stay H / stride when they read a global (1 x 1) map
_NOT_ON_GLOBAL = ("maxpool", "local_avgpool", "upsample", "yolo")


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


def _reads_yolo(spec: LayerSpec, yolo: LayerSpec) -> ConfigError:
    """A layer reading a ``[yolo]`` layer's output. Darknet's ``forward_yolo_layer`` hands the
    next layers its output (the logistic of x, y, objectness and classes unless ``new_coords``,
    the ``scale_x_y`` shift of x, y) and its backward passes its delta straight through; here
    ``[yolo]`` is the identity (decode and loss live outside the network), so such a layer
    would read another map than darknet's. No official cfg has one."""
    s = spec.section
    key = {"route": "layers", "shortcut": "from", "sam": "from", "scale_channels": "from"}
    key = key.get(spec.kind)
    if key == "from" and yolo.index not in spec.inputs[1:]:
        key = None  # its implicit input, the layer before it
    reads = f"{s.where(key)}={s.options[key]}" if key else s.where()
    at = f"{yolo.section.source}:{yolo.section.line} (layer {yolo.index}"
    at += ")" if key else ", the layer before it)"
    return ConfigError(
        f"{reads} reads the [yolo] layer at {at}; yolov4 does not build a layer that reads a "
        "[yolo] layer's output (darknet passes its logistic-activated map on)"
    )


def resolve_layers(sections: list[Section]) -> list[LayerSpec]:
    """Sections after ``[net]`` -> layer specs with inputs, channels and strides (darknet's
    ``parse_network_cfg`` order and rules). Raises :class:`ConfigError` naming file/line/key."""
    net = sections[0]
    channels = net.get_int("channels", 3)
    if channels != 3:
        raise net.error("channels", f"only 3-channel (RGB) networks are supported, got {channels}")
    check_layer_count(sections)
    layers: list[LayerSpec] = []

    def out(j: int) -> Shape:
        return (channels, (1, 1)) if j < 0 else (layers[j].channels, layers[j].strides)

    for i, s in enumerate(sections[1:]):
        check_layer_keys(s)
        c_in, st_in = out(i - 1)
        if st_in == (GLOBAL, GLOBAL) and s.kind in _NOT_ON_GLOBAL:
            raise s.error(
                None,
                f"reads the global (1 x 1) map of layer {i - 1} (an [avgpool]); yolov4 builds "
                f"a [{s.kind}] on maps of H / stride only",
            )
        if s.kind == "convolutional":
            spec = _conv_spec(s, i, c_in, st_in)
        elif s.kind == "route":
            spec = _route_spec(s, i, out)
        elif s.kind == "shortcut":
            spec = _shortcut_spec(s, i, out, c_in, st_in)
        elif s.kind in ("maxpool", "local_avgpool"):
            spec = _pool_spec(s, i, c_in, st_in)
        elif s.kind == "upsample":
            spec = _upsample_spec(s, i, c_in, st_in)
        elif s.kind == "dropout":
            spec = _dropout_spec(s, i, c_in, st_in)
        elif s.kind == "sam":
            spec = _sam_spec(s, i, out, c_in, st_in)
        elif s.kind == "scale_channels":
            spec = _scale_channels_spec(s, i, out, c_in, st_in)
        elif s.kind == "avgpool":
            spec = _avgpool_spec(s, i, c_in, st_in)
        else:
            spec = _yolo_spec(s, i, c_in, st_in)
        for j in spec.inputs:
            if j >= 0 and layers[j].kind == "yolo":
                raise _reads_yolo(spec, layers[j])
        check_layer(spec)  # yolov4.models.budget: the layer's keys and channels
        layers.append(spec)
    if not any(layer.kind == "yolo" for layer in layers):
        raise cfg_error(sections, "has no [yolo] layer: only YOLO detection cfgs are supported")
    return layers
