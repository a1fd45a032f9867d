"""Darknet ``.cfg`` files: reading the text, and the layers it describes (no torch).

A cfg is a list of ``[section]``s with ``key=value`` lines. :func:`parse_cfg` reads the text as
darknet's ``read_cfg`` does and keeps every section's options in file order with their line
numbers, so that an error can name the file, line, section and key; :func:`resolve_layers` turns
the sections after ``[net]`` into :class:`LayerSpec`s, darknet's layer index, absolute input
indices, channels and stride of each output, one section at a time with
:func:`yolov4.models.cfg_layers.layer_spec` (darknet's ``src/parser.c`` semantics of each layer
type).

Anything the network builder does not implement stops here with a :class:`ConfigError`; which
keys of each section are built, kept verbatim (darknet's training loop, written back by
:func:`yolov4.darknet.write_darknet_cfg`), accepted without effect, refused or warned about is
:mod:`yolov4.models.cfg_keys`.
"""

from __future__ import annotations

import hashlib
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path

from yolov4.errors import ConfigError
from yolov4.models.budget import check_cfg_text, check_layer, check_layer_count
from yolov4.models.cfg_keys import (
    NET_KEYS,
    check_layer_keys,
    check_net_keys,
    extra_anchors_warnings,
    unread_warnings,
)
from yolov4.models.cfg_layers import (
    ACTIVATIONS,
    CONV_DEFAULT_ACTIVATION,
    GLOBAL,
    LayerSpec,
    Shape,
    layer_spec,
)
from yolov4.models.region import HEAD_KINDS

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

log = logging.getLogger(__name__)
# sha256 of each cfg text whose warnings this process has logged: a network built again from
# the same cfg (its EMA copy, a checkpoint's check, evaluate, export) does not repeat them
_WARNED: set[str] = set()

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
    yolov3-openimages.cfg) with a warning, for any other it is refused. ``warn``: log the
    warnings (where a cfg enters; the text re-read from a model config stays quiet), once per
    cfg text in a process. Text longer than :data:`yolov4.models.budget.MAX_CFG_BYTES` is
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
        _log_once(text, [*twice, *unread_warnings(sections), *extra_anchors_warnings(sections)])
    return sections


def _log_once(text: str, messages: list[str]) -> None:
    """Log ``messages``, the warnings of cfg ``text``, as warnings (a run's ``train.log`` has
    them), unless this process has logged those of ``text`` already."""
    digest = hashlib.sha256(text.encode()).hexdigest()
    if messages and digest not in _WARNED:
        _WARNED.add(digest)
        for message in messages:
            log.warning(message)


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
    act = "logistic-activated" if yolo.kind == "yolo" else "logistic- and softmax-activated"
    at = f"{yolo.section.source}:{yolo.section.line} (layer {yolo.index}"
    at += ")" if key else ", the layer before it)"
    return ConfigError(
        f"{reads} reads the [{yolo.kind}] layer at {at}; yolov4 does not build a layer that "
        f"reads a [{yolo.kind}] layer's output (darknet passes its {act} map on)"
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
        spec = layer_spec(s, i, out)
        for j in spec.inputs:
            if j >= 0 and layers[j].kind in HEAD_KINDS:
                raise _reads_yolo(spec, layers[j])
        check_layer(spec)  # yolov4.models.budget: the layer's keys and channels
        layers.append(spec)
    if not any(layer.kind in HEAD_KINDS for layer in layers):
        raise cfg_error(
            sections,
            "has no [yolo] layer (nor a [Gaussian_yolo] or YOLOv2 [region] layer): only YOLO "
            "detection cfgs are supported",
        )
    return layers
