"""Darknet's ``[yolo]`` keys in a parsed cfg: read (:func:`read_yolo_keys`, darknet's defaults
for absent keys, heads in ascending stride) and written back (:func:`put_option`), with the
values the loss and the decode accept. :class:`~yolov4.models.config.ModelConfig` holds them."""

from __future__ import annotations

from typing import Any

from yolov4.errors import ConfigError
from yolov4.models import budget, class_balance
from yolov4.models.cfg import LayerSpec, Section, resolve_layers
from yolov4.models.cfg_keys import yolo_anchors
from yolov4.models.gaussian import GAUSSIAN_KIND, head_entries
from yolov4.models.region import HEAD_KINDS, check_region_keys, read_region_keys

__all__ = [
    "IOU_LOSSES",
    "NMS_KINDS",
    "PER_HEAD_KEYS",
    "GLOBAL_YOLO_KEYS",
    "CPC",
    "put_option",
    "read_yolo_keys",
    "y_index",
    "yolo_heads",
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


def yolo_heads(sections: list[Section]) -> list[int]:
    """Indices into ``sections`` of the ``[yolo]`` (or ``[region]``) sections, ascending stride (file order for
    equal strides): head ``h`` of the model is ``sections[yolo_heads(sections)[h]]``."""
    layers = resolve_layers(sections)
    yolos = [layer for layer in layers if layer.kind in HEAD_KINDS]
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
        value = s.options[key]
        allowed = IOU_LOSSES if key == "iou_loss" else tuple(NMS_KINDS)
        if value not in allowed:
            raise s.error(key, f"must be one of {list(allowed)}, got {value!r}")
        return value
    value = s.get_float(key)
    if key == "iou_thresh" and value >= 1.0:
        return None  # darknet's 1.0: no extra anchors
    return value


def _check_cfg_values(sections: list[Section]) -> None:
    """The ``[net]`` size and the ``[yolo]`` classes and anchors against
    :mod:`yolov4.models.budget`, naming the line, before the layers are resolved; a ``[region]``
    value that is not built (:func:`yolov4.models.region.check_region_keys`) first, as raising
    a limit would not build it."""
    for region in (s for s in sections if s.kind == "region"):
        check_region_keys(region)
    net = sections[0]
    for key in ("height", "width"):
        if key in net.options:
            budget.check_input_side([net.get_int(key)], net.where(key))
    for y in (s for s in sections if s.kind in HEAD_KINDS):
        if "classes" in y.options:
            budget.check_classes(y.get_int("classes"), y.where("classes"))
        anchors = y.get_floats("anchors") if y.kind == "region" else yolo_anchors(y)
        for key, n in (("num", y.get_int("num", 1)), ("anchors", len(anchors) // 2)):
            if n > budget.MAX_ANCHORS:
                raise y.error(key, budget.over("MAX_ANCHORS", f"{n} anchors"))
        for value in anchors:
            budget.check_anchor(value, y.where("anchors"))


def read_yolo_keys(sections: list[Section], name: str) -> dict[str, Any]:
    """The model config values parsed cfg ``sections`` define (before overrides): ``name``,
    ``input_size``, ``letter_box``, ``strides``, ``num_classes``, ``anchors``, ``masks``,
    ``counters_per_class``, ``gaussian`` and every ``[yolo]`` key, per head in ascending stride
    (``[Gaussian_yolo]`` heads are read as ``[yolo]`` heads, :mod:`yolov4.models.gaussian`; a
    ``[region]`` head: :func:`yolov4.models.region.read_region_keys`, darknet's defaults of the
    ``[yolo]`` keys); a value darknet would not accept, or one the layers disagree on, raises :class:`ConfigError` naming the line."""
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
    region = next((y for y in yolos if y.kind == "region"), None)
    if region is not None:  # darknet's YOLOv2 head: yolov4.models.region
        values.update(read_region_keys(sections, region, values["strides"][0]))
        _check_head_filters(sections, layers, yolos, values["masks"], values["num_classes"])
        values["counters_per_class"] = [None]
        values["gaussian"] = False
        values |= {key: [default] for key, default in PER_HEAD_KEYS.items()}
        return values | GLOBAL_YOLO_KEYS
    _check_shared_shape(yolos)
    gaussian = _gaussian_heads(yolos)
    num_classes = first.get_int("classes", 20)
    num = first.get_int("num", 1)
    anchors = yolo_anchors(first)  # darknet reads the first num * 2 (a warning names the rest)
    if len(anchors) < 2 * num:
        raise first.error(
            "anchors",
            f"has {len(anchors)} numbers, num={num} needs {2 * num} (darknet would leave the "
            f"missing {2 * num - len(anchors)} at make_yolo_layer's 0.5 and run with them)",
        )
    values["num_classes"] = num_classes
    values["anchors"] = [anchors[2 * k : 2 * k + 2] for k in range(num)]
    values["masks"] = [_read_mask(y, num) for y in yolos]
    _check_head_filters(sections, layers, yolos, values["masks"], num_classes, gaussian)
    values["gaussian"] = gaussian
    values["counters_per_class"] = [
        class_balance.parse_counters(y.options[CPC], num_classes, y.where(CPC))
        if CPC in y.options
        else None
        for y in yolos
    ]
    for key, default in PER_HEAD_KEYS.items():
        values[key] = [_yolo_value(y, key, default) for y in yolos]
    for key, default in GLOBAL_YOLO_KEYS.items():
        # parse_gaussian_yolo does not read new_coords: its heads decode with exp sizes
        values[key] = (
            default if gaussian and key == "new_coords" else _shared_value(yolos, key, default)
        )
    if values["new_coords"]:
        _check_new_coords_feeders(sections, layers, yolos)
    return values


def _check_shared_shape(yolos: list[Section]) -> None:
    """``classes``, ``num`` and ``anchors`` equal (by value, as darknet reads them: "10.0,14" is
    "10,14") in every ``[yolo]`` layer, or :class:`ConfigError` naming the first that differs."""
    first = yolos[0]
    for key, read in (("classes", lambda y: y.get_int("classes")),
                      ("num", lambda y: y.get_int("num")), ("anchors", yolo_anchors)):  # fmt: skip
        found = [read(y) if key in y.options else None for y in yolos]
        other = next((y for y, v in zip(yolos, found) if v != found[0]), None)
        if other is not None:
            raise other.error(
                key, f"differs from {first.where(key)}: every [yolo] layer must agree"
            )


def _gaussian_heads(yolos: list[Section]) -> bool:
    """Whether the heads are ``[Gaussian_yolo]``; :class:`ConfigError` for a cfg mixing them
    with ``[yolo]`` heads (one decode for every head)."""
    kinds = [y.kind == GAUSSIAN_KIND for y in yolos]
    if len(set(kinds)) > 1:
        other = yolos[kinds.index(not kinds[0])]
        raise other.error(
            None,
            f"a [{other.header}] head beside the [{yolos[0].header}] head at {yolos[0].where()}: "
            "yolov4 builds networks whose heads are all [yolo] or all [Gaussian_yolo]",
        )
    return kinds[0]


def _read_mask(y: Section, num: int) -> list[int]:
    """``y``'s ``mask`` (all ``num`` anchors without one), checked against the anchors."""
    mask = y.get_ints("mask") if "mask" in y.options else list(range(num))
    bad = [a for a in mask if not 0 <= a < num]
    if bad or not mask:
        raise y.error("mask", f"{mask} must be non-empty indices into the {num} anchors")
    return mask


def _check_head_filters(
    sections: list[Section],
    layers: list[LayerSpec],
    yolos: list[Section],
    masks: list[list[int]],
    num_classes: int,
    gaussian: bool = False,
) -> None:
    """The layer in front of each ``[yolo]`` (or the ``[region]``) gives
    ``len(mask) * (classes + 5)`` channels (``+ 9`` for ``[Gaussian_yolo]`` heads), or :class:`ConfigError` naming every head that does
    not and both ways out: the filters for ``classes``, or the class count the channels fit
    (when one whole count fits every head), to set in the head sections the cfg has."""
    feeders = [layers[y_index(sections, y) - 1] for y in yolos]
    e = head_entries(gaussian)
    bad = []
    for y, mask, feeder in zip(yolos, masks, feeders):
        want = len(mask) * (num_classes + e)
        if feeder.channels != want:
            key = "filters" if feeder.kind == "convolutional" else None
            bad.append(
                f"{feeder.section.where(key)}: the layer before {y.where()} gives "
                f"{feeder.channels} channels; {len(mask)} anchors x (classes={num_classes} + {e}) "
                f"needs filters={want}"
            )
    if not bad:
        return
    wants = sorted({len(m) * (num_classes + e) for m in masks})
    filters = f"filters={wants[0]}" if len(wants) == 1 else "the filters named"
    fixes = [f"set {filters} for classes={num_classes}"]
    fit = {
        f.channels // len(m) - e if f.channels % len(m) == 0 else 0 for f, m in zip(feeders, masks)
    }
    if len(fit) == 1 and (classes := fit.pop()) >= 1:
        c, m = feeders[0].channels, len(masks[0])
        heads = f"every [{yolos[0].header}]" if len(yolos) > 1 else f"the [{yolos[0].header}]"
        fixes.append(
            f"set classes={classes} in {heads} if {classes} classes are meant "
            f"({c} = {m} x ({classes} + {e}))"
        )
    fix = f"either {fixes[0]}, or {fixes[1]}" if len(fixes) == 2 else fixes[0]
    raise ConfigError("\n  ".join([*bad, fix]))


def _shared_value(yolos: list[Section], key: str, default: Any) -> Any:
    """The one value of a ``GLOBAL_YOLO_KEYS`` key in every ``[yolo]`` layer, or
    :class:`ConfigError` naming the first layer that differs."""
    found = [_yolo_value(y, key, default) for y in yolos]
    if len(set(found)) > 1:
        other = yolos[found.index(next(v for v in found if v != found[0]))]
        raise other.error(
            key,
            f"differs from {yolos[0].where(key)}: one value for every [yolo] layer is supported",
        )
    return found[0]


def _check_new_coords_feeders(
    sections: list[Section], layers: list[LayerSpec], yolos: list[Section]
) -> None:
    """darknet's new_coords [yolo] takes its input as probabilities: the layer in front of each
    must be a ``[convolutional]`` with ``activation=logistic``."""
    for y in yolos:
        feeder = layers[y_index(sections, y) - 1]
        if feeder.kind != "convolutional" or feeder.params["activation"] != "logistic":
            raise ConfigError(
                f"{feeder.section.where('activation')}: {y.where('new_coords')}=1 needs a "
                "[convolutional] with activation=logistic right before it"
            )


def y_index(sections: list[Section], section: Section) -> int:
    """Darknet layer index of ``section`` (``sections[0]`` is ``[net]``)."""
    return next(i for i, s in enumerate(sections) if s is section) - 1


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


def put_option(s: Section, key: str, value: Any, default: Any = ...) -> None:
    """Set ``key`` to ``value`` keeping the cfg's own text when it means the same; a value equal
    to darknet's default is not added to a section that did not have the key."""
    if key not in s.options and default is not ... and value == default:
        return
    if not _same(s.options.get(key), value):
        s.options[key] = _fmt(value)
