"""The model's configuration: which network, its classes, and darknet's ``[net]``/``[yolo]`` keys.

The network is darknet's cfg: a zoo name (``yolov4``, ``yolov4-csp``, ``yolov3-tiny``, ... shipped
in ``yolov4/models/cfg/``) or a user's own cfg text (``cfg``). :meth:`ModelConfig.from_cfg` reads
the ``[net]`` size and every ``[yolo]`` layer's keys (darknet's defaults where a key is absent),
heads ordered by ascending stride whatever their order in the file, then applies keyword
overrides. The resulting :class:`ModelConfig` is stored on the model as ``model.config`` and is
the one place decode, loss and export read anchors, masks, strides and the ``[yolo]`` keys from;
``build_model(**config.to_dict())`` rebuilds the same network (a user cfg travels as text).

``[yolo]`` keys darknet reads per layer are per-head tuples here (``scale_x_y``, the thresholds,
normalizers, ``max_delta``, ``objectness_smooth``, ``label_smooth_eps``); a scalar override is
given to every head. ``iou_loss``, ``nms_kind``, ``beta_nms`` and ``new_coords`` must agree
between the layers (a cfg where they differ is refused, naming the line).
"""

from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from yolov4.errors import ConfigError
from yolov4.models import budget, class_balance
from yolov4.models.cfg import ZOO, Section, parse_cfg, read_zoo_cfg, resolve_layers
from yolov4.models.stride import check_stride_multiple

__all__ = [
    "ModelConfig",
    "available_models",
    "IOU_LOSSES",
    "NMS_KINDS",
    "PER_HEAD_KEYS",
    "yolo_heads",
    "config_sections",
]

# [yolo] iou_loss values the loss computes; darknet's default (no iou_loss key, the YOLOv3
# cfgs) is `mse`: squared error on the raw (tx, ty, tw, th) scaled by (2 - w * h).
IOU_LOSSES = ("mse", "iou", "giou", "diou", "ciou")
# [yolo] nms_kind values and the NMS of ops.postprocess each one means by default: darknet's
# greedynms and diounms both suppress by DIoU with the distance term to the power beta_nms;
# `default` (no nms_kind in the cfg) is plain IoU NMS.
NMS_KINDS = {"default": "iou", "greedynms": "diou", "diounms": "diou"}

# [yolo] key -> darknet's default when the cfg does not set it (src/parser.c, parse_yolo).
# None: off (iou_thresh 1.0 admits no extra anchor; max_delta FLT_MAX clips nothing).
PER_HEAD_KEYS: dict[str, Any] = {
    "scale_x_y": 1.0,
    "ignore_thresh": 0.5,
    "truth_thresh": 1.0,
    "iou_thresh": None,
    "iou_normalizer": 0.75,
    "cls_normalizer": 1.0,
    "obj_normalizer": 1.0,
    "max_delta": None,
    "objectness_smooth": False,
    "label_smooth_eps": 0.0,
}
CPC = class_balance.KEY  # [yolo] counters_per_class: one list of counts per head, or none
GLOBAL_YOLO_KEYS: dict[str, Any] = {
    "iou_loss": "mse",
    "nms_kind": "default",
    "beta_nms": 0.6,
    "new_coords": False,
}


def available_models() -> list[str]:
    """The zoo: every darknet cfg shipped in the package, by file stem."""
    return list(ZOO)


def _pairs(value: Any) -> tuple[tuple[float, float], ...]:
    return tuple((float(w), float(h)) for w, h in value)


def yolo_heads(sections: list[Section]) -> list[int]:
    """Indices into ``sections`` of the ``[yolo]`` sections, ascending stride (file order for
    equal strides): head ``h`` of the model is ``sections[yolo_heads(sections)[h]]``."""
    layers = resolve_layers(sections)
    yolos = [layer for layer in layers if layer.kind == "yolo"]
    return [layer.index + 1 for layer in sorted(yolos, key=lambda layer: layer.stride)]


def _yolo_value(s: Section, key: str, default: Any) -> Any:
    if key not in s.options:
        return default
    if key in ("objectness_smooth", "new_coords"):
        value = s.get_int(key)
        if value not in (0, 1):
            raise s.error(key, f"must be 0 or 1, got {value}")
        return bool(value)
    if key in ("iou_loss", "nms_kind"):
        return s.options[key]
    value = s.get_float(key)
    if key == "iou_thresh" and value >= 1.0:
        return None  # darknet's 1.0: no extra anchors
    return value


def _check_cfg_values(sections: list[Section]) -> None:
    """The ``[net]`` size and the ``[yolo]`` classes and anchors against
    :mod:`yolov4.models.budget`, naming the line, before the layers are resolved."""
    net = sections[0]
    for key in ("height", "width"):
        if key in net.options:
            budget.check_input_side([net.get_int(key)], net.where(key))
    for y in (s for s in sections if s.kind == "yolo"):
        if "classes" in y.options:
            budget.check_classes(y.get_int("classes"), y.where("classes"))
        anchors = y.get_floats("anchors")
        for key, n in (("num", y.get_int("num", 1)), ("anchors", len(anchors) // 2)):
            if n > budget.MAX_ANCHORS:
                raise y.error(key, budget.over("MAX_ANCHORS", f"{n} anchors"))
        for value in anchors:
            budget.check_anchor(value, y.where("anchors"))


def _from_sections(sections: list[Section], name: str) -> dict[str, Any]:
    """Model config values a parsed cfg defines (before overrides)."""
    net = sections[0]
    _check_cfg_values(sections)
    layers = resolve_layers(sections)
    heads = yolo_heads(sections)
    yolos = [sections[i] for i in heads]
    first = yolos[0]
    values: dict[str, Any] = {"name": name}
    values["input_size"] = [net.get_int("height", 416), net.get_int("width", 416)]
    values["letter_box"] = bool(net.get_int("letter_box", 0))
    values["strides"] = [layers[i - 1].stride for i in heads]
    for key in ("classes", "num", "anchors"):
        raws = {y.options.get(key) for y in yolos}
        if len(raws) > 1:
            other = next(y for y in yolos if y.options.get(key) != first.options.get(key))
            raise other.error(
                key, f"differs from {first.where(key)}: every [yolo] layer must agree"
            )
    num_classes = first.get_int("classes", 20)
    num = first.get_int("num", 1)
    anchors = first.get_floats("anchors")
    if len(anchors) != 2 * num:
        raise first.error("anchors", f"has {len(anchors)} numbers, num={num} needs {2 * num}")
    values["num_classes"] = num_classes
    values["anchors"] = [anchors[2 * k : 2 * k + 2] for k in range(num)]
    masks = []
    for y in yolos:
        mask = y.get_ints("mask") if "mask" in y.options else list(range(num))
        bad = [a for a in mask if not 0 <= a < num]
        if bad or not mask:
            raise y.error("mask", f"{mask} must be non-empty indices into the {num} anchors")
        masks.append(mask)
        feeder = layers[y_index(sections, y) - 1]
        want = len(mask) * (num_classes + 5)
        if feeder.channels != want:
            where = (
                feeder.section.where("filters")
                if feeder.kind == "convolutional"
                else feeder.section.where()
            )
            raise ConfigError(
                f"{where}: the layer before {y.where()} gives {feeder.channels} channels; "
                f"{len(mask)} anchors x (classes={num_classes} + 5) needs filters={want}"
            )
    values["masks"] = masks
    values["counters_per_class"] = [
        class_balance.parse_counters(y.options[CPC], num_classes, y.where(CPC))
        if CPC in y.options
        else None
        for y in yolos
    ]
    for key, default in PER_HEAD_KEYS.items():
        values[key] = [_yolo_value(y, key, default) for y in yolos]
    for key, default in GLOBAL_YOLO_KEYS.items():
        found = [_yolo_value(y, key, default) for y in yolos]
        if len(set(found)) > 1:
            other = yolos[found.index(next(v for v in found if v != found[0]))]
            raise other.error(
                key,
                f"differs from {first.where(key)}: one value for every [yolo] layer is supported",
            )
        values[key] = found[0]
    if values["new_coords"]:
        # darknet's new_coords [yolo] takes its input as probabilities: the conv's logistic
        for y in yolos:
            feeder = layers[y_index(sections, y) - 1]
            if feeder.kind != "convolutional" or feeder.params["activation"] != "logistic":
                raise ConfigError(
                    f"{feeder.section.where('activation')}: {y.where('new_coords')}=1 needs a "
                    "[convolutional] with activation=logistic right before it"
                )
    return values


def y_index(sections: list[Section], section: Section) -> int:
    """Darknet layer index of ``section`` (``sections[0]`` is ``[net]``)."""
    return next(i for i, s in enumerate(sections) if s is section) - 1


@dataclass(frozen=True)
class ModelConfig:
    """Darknet's description of a YOLO network; per-head tuples in ascending stride order."""

    name: str
    num_classes: int
    input_size: tuple[int, int]
    strides: tuple[int, ...]
    anchors: tuple[tuple[float, float], ...]
    masks: tuple[tuple[int, ...], ...]
    scale_x_y: tuple[float, ...]
    ignore_thresh: tuple[float, ...] = ()
    truth_thresh: tuple[float, ...] = ()
    iou_thresh: tuple[float | None, ...] = ()
    iou_normalizer: tuple[float, ...] = ()
    cls_normalizer: tuple[float, ...] = ()
    obj_normalizer: tuple[float, ...] = ()
    max_delta: tuple[float | None, ...] = ()
    objectness_smooth: tuple[bool, ...] = ()
    label_smooth_eps: tuple[float, ...] = ()
    # [yolo] counters_per_class per head (None: none): darknet's class balance, see class_balance
    counters_per_class: tuple[tuple[int, ...] | None, ...] = ()
    iou_loss: str = "mse"
    nms_kind: str = "default"
    beta_nms: float = 0.6
    # [yolo] new_coords=1 (Scaled-YOLOv4): sizes 4 * sigmoid(t)^2 * anchor, see ops.decode
    new_coords: bool = False
    # [net] letter_box=1: the network was trained on letterboxed images
    letter_box: bool = False
    # the darknet cfg text of a user's network; None: the zoo's shipped ``<name>.cfg``
    cfg: str | None = None

    @classmethod
    def load(
        cls, name: str | None = None, cfg: str | Path | None = None, **overrides: Any
    ) -> ModelConfig:
        """A zoo network by name (``yolov4-csp``), or ``cfg``: a path to a darknet cfg file (or
        its text), with ``overrides`` on top; unknown keys fail."""
        if cfg is None:
            if name is None:
                raise ConfigError(
                    f"pass a model name (one of {list(ZOO)}) or cfg=path/to/model.cfg"
                )
            return cls.from_cfg(read_zoo_cfg(name), name, f"{name}.cfg", zoo=True, **overrides)
        text, source = _cfg_text(cfg)
        label = name or (Path(source).stem if source != "<cfg>" else "custom")
        return cls.from_cfg(text, label, source, **overrides)

    @classmethod
    def from_cfg(
        cls, text: str, name: str, source: str = "<cfg>", zoo: bool = False, **overrides: Any
    ) -> ModelConfig:
        """Config of the network ``text`` describes (darknet's defaults for absent [yolo] keys),
        then ``overrides``. ``zoo``: ``text`` is the shipped ``<name>.cfg`` (not stored)."""
        sections = parse_cfg(text, source)
        values = _from_sections(sections, name)
        derived_strides = values["strides"]
        values.update(overrides)
        values["name"] = name
        values["cfg"] = None if zoo else text
        if list(values["strides"]) != list(derived_strides):
            raise ConfigError(
                f"model.strides of {source} are {derived_strides} (fixed by the network), "
                f"got {list(values['strides'])}"
            )
        return cls.from_dict(values)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> ModelConfig:
        """A config from a dict: ``to_dict()``'s output, or a Hydra model config (``name`` or
        ``cfg`` plus overrides; the rest is read from the cfg)."""
        cfg = values.get("cfg")
        if "strides" not in values or (cfg is not None and "\n" not in str(cfg)):
            rest = {k: v for k, v in values.items() if k not in ("name", "cfg")}
            for key in ("num_classes", "anchors", "masks"):
                if key in rest and rest[key] is None:
                    del rest[key]  # null: the cfg's classes, anchors, masks
            return cls.load(values.get("name"), cfg=cfg, **rest)
        if values.get("anchors") in ("auto", "fit"):
            raise ConfigError(
                f"model.anchors={values['anchors']} is resolved on the training split by train.py "
                "at start-up; "
                "elsewhere give the anchors (python -m yolov4.anchors fits them)"
            )
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ConfigError(
                f"unknown model config key(s) {unknown}; expected keys from {sorted(known)}"
            )
        missing = sorted(
            f.name
            for f in dataclasses.fields(cls)
            if f.default is dataclasses.MISSING and f.name not in values
        )
        if missing:
            raise ConfigError(f"model config is missing key(s) {missing}")
        v = dict(values)
        try:
            v["num_classes"] = int(v["num_classes"])
            v["input_size"] = tuple(int(s) for s in v["input_size"])
            v["strides"] = tuple(int(s) for s in v["strides"])
            v["anchors"] = _pairs(v["anchors"])
            v["masks"] = tuple(tuple(int(i) for i in m) for m in v["masks"])
        except (TypeError, ValueError) as e:
            raise ConfigError(f"model config has a value of the wrong type: {e}") from e
        heads = len(v["strides"])
        for key, default in PER_HEAD_KEYS.items():
            value = v.get(key, default)
            if isinstance(value, (list, tuple)):
                if len(value) != heads:
                    raise ConfigError(
                        f"model.{key} needs one value per head ({heads}, ascending stride) "
                        f"or one for all, got {list(value)}"
                    )
                v[key] = tuple(value)
            else:
                v[key] = (value,) * heads
        v[CPC] = class_balance.normalize_counters(v.get(CPC), v["num_classes"], heads)
        config = cls(**v)
        config.validate()
        return config

    def validate(self) -> None:
        if self.num_classes < 1:
            raise ConfigError(f"model.num_classes must be >= 1, got {self.num_classes}")
        budget.check_classes(self.num_classes, "model.num_classes")
        budget.check_input_side(self.input_size, "model.input_size")
        if len(self.anchors) > budget.MAX_ANCHORS:
            raise ConfigError(
                "model.anchors: " + budget.over("MAX_ANCHORS", f"{len(self.anchors)} anchors")
            )
        for w, h in self.anchors:
            for v in (w, h):
                budget.check_anchor(v, "model.anchors")
        check_stride_multiple(self.input_size, self.max_stride, "model.input_size")
        n = len(self.strides)
        if len(self.masks) != n:
            raise ConfigError(
                f"model.masks needs one entry per head ({n}, ascending stride), got {len(self.masks)}"
            )
        for i, mask in enumerate(self.masks):
            bad = [a for a in mask if not 0 <= a < len(self.anchors)]
            if bad or not mask:
                raise ConfigError(
                    f"model.masks[{i}]={list(mask)} must be non-empty indices into the "
                    f"{len(self.anchors)} anchors"
                )
            if len(mask) != len(self.masks[0]):
                raise ConfigError(
                    f"every head needs the same number of anchors; model.masks = {self.masks}"
                )
        if self.iou_loss not in IOU_LOSSES:
            raise ConfigError(
                f"model.iou_loss must be one of {list(IOU_LOSSES)}, got {self.iou_loss!r}"
            )
        if self.nms_kind not in NMS_KINDS:
            raise ConfigError(
                f"model.nms_kind must be one of {list(NMS_KINDS)}, got {self.nms_kind!r}"
            )
        ranges = {  # key: (low, high, low inclusive)
            "ignore_thresh": (0.0, 1.0, True),
            # darknet's truth_thresh < 1 branch (extra positives) is not implemented; >= 1 is
            # inert (every zoo cfg has 1)
            "truth_thresh": (1.0, float("inf"), True),
            "iou_thresh": (0.0, 1.0, False),
            "iou_normalizer": (0.0, float("inf"), True),
            "cls_normalizer": (0.0, float("inf"), True),
            "obj_normalizer": (0.0, float("inf"), True),
            "max_delta": (0.0, float("inf"), False),
            "label_smooth_eps": (0.0, 1.0, True),
        }
        for key, (lo, hi, inclusive) in ranges.items():
            for value in getattr(self, key):
                if value is None and key in ("iou_thresh", "max_delta"):
                    continue
                _check_number(key, value, lo, hi, inclusive)
        _check_number("beta_nms", self.beta_nms, 0.0, float("inf"), False)
        for key in ("new_coords", "letter_box"):
            if not isinstance(getattr(self, key), bool):
                raise ConfigError(f"model.{key} must be true or false, got {getattr(self, key)!r}")
        if any(not isinstance(v, bool) for v in self.objectness_smooth):
            raise ConfigError(
                f"model.objectness_smooth must be true or false, got {list(self.objectness_smooth)}"
            )
        if any(
            not isinstance(s, (int, float)) or isinstance(s, bool) or not s >= 1.0
            for s in self.scale_x_y
        ):
            raise ConfigError(f"model.scale_x_y must be >= 1 per head, got {list(self.scale_x_y)}")
        # the network as built (head filters follow num_classes) at its input size
        budget.check_network(
            resolve_layers(config_sections(self, loss_keys=False)), self.input_size
        )

    @functools.cached_property
    def max_stride(self) -> int:
        """The coarsest stride of any layer (not only the heads'): input H and W must be
        multiples of it for every ``[route]`` to join maps of equal size."""
        layers = resolve_layers(parse_cfg(self.cfg_text(), self.name))
        return max(layer.stride for layer in layers)

    @property
    def default_nms(self) -> tuple[str, float]:
        """The NMS darknet runs for this model (``nms_kind``, ``beta_nms``) in the vocabulary of
        :func:`yolov4.ops.postprocess.postprocess`: ``(nms_kind, beta)``."""
        return NMS_KINDS[self.nms_kind], self.beta_nms

    @property
    def num_anchors(self) -> int:
        """Anchors per head (``A``)."""
        return len(self.masks[0])

    @property
    def num_outputs(self) -> int:
        """Channels of each raw head map: ``A * (5 + C)``."""
        return self.num_anchors * (5 + self.num_classes)

    def head_anchors(self) -> list[list[tuple[float, float]]]:
        """Anchor ``(w, h)`` in input pixels for each head, ascending stride."""
        return [[self.anchors[a] for a in mask] for mask in self.masks]

    def cfg_text(self) -> str:
        """The darknet cfg the network is built from (before this config's overrides)."""
        return self.cfg if self.cfg is not None else read_zoo_cfg(self.name)

    def to_dict(self) -> dict[str, Any]:
        """Builtins only (lists, not tuples): safe for JSON, YAML and ``torch.load(weights_only=True)``."""

        def plain(x: Any) -> Any:
            return [plain(i) for i in x] if isinstance(x, (tuple, list)) else x

        return {k: plain(v) for k, v in dataclasses.asdict(self).items()}


def _check_number(key: str, value: Any, lo: float, hi: float, inclusive: bool) -> None:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    ok = ok and (lo <= value if inclusive else lo < value) and value <= hi
    if not ok:
        bound = f"{'[' if inclusive else '('}{lo:g}, {hi:g}]"
        raise ConfigError(f"model.{key} must be a number in {bound}, got {value!r}")


def _cfg_text(cfg: str | Path) -> tuple[str, str]:
    """``cfg`` as (text, source name): a path to a file, or cfg text itself."""
    if isinstance(cfg, str) and "\n" in cfg:
        return cfg, "<cfg>"
    path = Path(cfg)
    return budget.read_cfg_file(path), str(path)


def _fmt(value: Any) -> str:
    if isinstance(value, bool):
        return str(int(value))
    if isinstance(value, (list, tuple)):
        return ",".join(_fmt(v) for v in value)
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def _same(raw: str | None, value: Any) -> bool:
    if raw is None:
        return False
    try:
        if isinstance(value, (list, tuple)):
            got = [float(v) for v in raw.split(",") if v.strip()]
            return got == [float(v) for v in value]
        if isinstance(value, str):
            return raw == value
        return float(raw) == float(value)
    except ValueError:
        return False


def _put(s: Section, key: str, value: Any, default: Any = ...) -> None:
    """Set ``key`` to ``value`` keeping the cfg's own text when it means the same; a value equal
    to darknet's default is not added to a section that did not have the key."""
    if key not in s.options and default is not ... and value == default:
        return
    if not _same(s.options.get(key), value):
        s.options[key] = _fmt(value)


def config_sections(config: ModelConfig, loss_keys: bool = True) -> list[Section]:
    """The cfg's sections with ``config`` applied: ``[net]`` size, every ``[yolo]``'s classes,
    anchors, masks and keys, and the filters of the layer in front of it. The network is built
    from these, and :func:`yolov4.darknet.write_darknet_cfg` writes them back.
    ``loss_keys=False`` leaves the ``[yolo]`` training keys (``PER_HEAD_KEYS``) as the cfg has
    them: what the network's shapes alone need (the resource budget)."""
    source = f"{config.name}.cfg" if config.cfg is None else f"{config.name} (cfg text)"
    sections = parse_cfg(config.cfg_text(), source)
    heads = yolo_heads(sections)
    if len(heads) != len(config.strides):
        raise ConfigError(
            f"{source} has {len(heads)} [yolo] layers, model.strides has {len(config.strides)}"
        )
    net = sections[0]
    _put(net, "height", config.input_size[0])
    _put(net, "width", config.input_size[1])
    _put(net, "letter_box", int(config.letter_box), 0)
    anchors = [v for wh in config.anchors for v in wh]
    for h, i in enumerate(heads):
        y = sections[i]
        mask = config.masks[h]
        _put(y, "mask", list(mask))
        _put(y, "anchors", anchors)
        _put(y, "classes", config.num_classes)
        _put(y, "num", len(config.anchors))
        for key, default in PER_HEAD_KEYS.items() if loss_keys else ():
            value = getattr(config, key)[h]
            if key == "iou_thresh" and value is None:
                value = 1.0 if "iou_thresh" in y.options else None
            if key == "max_delta" and value is None:
                if "max_delta" in y.options:
                    raise ConfigError(f"{y.where('max_delta')}: cannot write 'no clipping' back")
                continue
            if value is None:
                continue
            _put(y, key, value, default if default is not None else ...)
        counts = config.counters_per_class[h] if config.counters_per_class else None
        if loss_keys and counts is not None:
            _put(y, CPC, list(counts))
        elif loss_keys:
            y.options.pop(CPC, None)
        feeder = sections[i - 1]
        was_new = y.options.get("new_coords", "0") == "1"
        for key, default in GLOBAL_YOLO_KEYS.items():
            _put(y, key, getattr(config, key), default)
        if feeder.kind == "convolutional":
            _put(feeder, "filters", len(mask) * (config.num_classes + 5))
            if config.new_coords != was_new:
                # darknet's new_coords [yolo] applies no activation: the conv in front does
                feeder.options["activation"] = "logistic" if config.new_coords else "linear"
    return sections
