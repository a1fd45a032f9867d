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
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from yolov4.errors import ConfigError
from yolov4.models import budget, class_balance
from yolov4.models.cfg import ZOO, Section, parse_cfg, read_zoo_cfg, resolve_layers
from yolov4.models.config_checks import (
    LOSS_RANGES,
    check_anchors,
    check_cfg_shapes,
    check_choice,
    check_flags,
    check_head_values,
    check_masks,
    check_number,
    check_scale_x_y,
    pairs,
    per_head,
    same_value,
    whole,
)
from yolov4.models.gaussian import YOLO_KINDS, head_entries
from yolov4.models.region_config import (
    YOLO_LOSS_KEYS,
    check_head_kind,
    check_region_config,
    put_region,
)
from yolov4.models.stride import check_stride_multiple
from yolov4.models.yolo_keys import (
    CPC,
    GLOBAL_YOLO_KEYS,
    IOU_LOSSES,
    NMS_KINDS,
    PER_HEAD_KEYS,
    put_option,
    read_yolo_keys,
    yolo_heads,
)
from yolov4.models.zoo import is_zoo_network

__all__ = [
    "YOLO_LOSS_KEYS",
    "ModelConfig",
    "available_models",
    "IOU_LOSSES",
    "NMS_KINDS",
    "PER_HEAD_KEYS",
    "yolo_heads",
    "config_sections",
    "check_cfg_given",
]


def available_models() -> list[str]:
    """The zoo: every darknet cfg shipped in the package, by file stem."""
    return list(ZOO)


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
    # darknet's YOLOv2 [region] head: one head of every anchor, classes by softmax (see
    # yolov4.models.region); built for inference only
    region: bool = False
    # darknet's Gaussian YOLOv3 [Gaussian_yolo] heads: [yolo] heads with a box uncertainty per
    # coordinate (see yolov4.models.gaussian); built for inference only
    gaussian: bool = False
    # the darknet cfg text of a user's network; None: the zoo's shipped ``<name>.cfg``
    cfg: str | None = None

    @classmethod
    def load(
        cls, name: str | None = None, cfg: str | Path | None = None, **overrides: Any
    ) -> ModelConfig:
        """A zoo network by name (``yolov4-csp``), or ``cfg``: a path to a darknet cfg file (or
        its text), with ``overrides`` on top; unknown keys fail.

        With ``cfg``, ``name`` is the network's label (default: the file's stem, ``custom`` for
        text). A zoo name given with a cfg file of another network
        (:func:`~yolov4.models.zoo.is_zoo_network`: other layers, whatever the classes, anchors
        and ``[net]`` settings) is not that network: it is named after the file, as without a
        name."""
        if cfg is None:
            if name is None:
                raise ConfigError(
                    f"pass a model name (one of {list(ZOO)}) or cfg=path/to/model.cfg"
                )
            return cls.from_cfg(read_zoo_cfg(name), name, f"{name}.cfg", zoo=True, **overrides)
        text, source = _cfg_text(cfg)
        stem = Path(source).stem if source != "<cfg>" else "custom"
        label = name or stem
        if name in ZOO and source != "<cfg>" and name != stem:
            if not is_zoo_network(name, parse_cfg(text, source)):
                label = stem
        return cls.from_cfg(text, label, source, **overrides)

    @classmethod
    def from_cfg(
        cls, text: str, name: str, source: str = "<cfg>", zoo: bool = False, **overrides: Any
    ) -> ModelConfig:
        """Config of the network ``text`` describes (darknet's defaults for absent [yolo] keys),
        then ``overrides``. ``zoo``: ``text`` is the shipped ``<name>.cfg`` (not stored)."""
        sections = parse_cfg(text, source, warn=True)
        values = read_yolo_keys(sections, name)
        derived_strides = values["strides"]
        values.update(overrides)
        values["name"] = name
        values["cfg"] = None if zoo else text
        check_cfg_shapes(sections, overrides)
        if list(values["strides"]) != list(derived_strides):
            raise ConfigError(
                f"model.strides of {source} are {derived_strides} (fixed by the network), "
                f"got {list(values['strides'])}"
            )
        try:
            return cls.from_dict(values)
        except ConfigError as e:  # a [yolo] value of the cfg itself: name its line
            key = str(e).split(" ", 1)[0].removeprefix("model.")
            found = [y for y in sections if y.kind in YOLO_KINDS and key in y.options]
            if key in overrides or not found:
                raise
            got = str(e).rsplit("got ", 1)[-1].strip("'\"")
            bad = [y for y in found if same_value(y.options[key], got)] or found
            lines = ", ".join(str(y.lines[key]) for y in bad)
            raise ConfigError(f"{source}:{lines}: [yolo] {key}: {e}") from None

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
        _check_anchors_given(values.get("anchors"))
        cls._check_keys(values)
        v = _coerce_shapes(values)
        heads = len(v["strides"])
        for key, default in PER_HEAD_KEYS.items():
            v[key] = per_head(key, v.get(key, default), heads)
        v[CPC] = class_balance.normalize_counters(v.get(CPC), v["num_classes"], heads)
        config = cls(**v)
        config.validate()
        return config

    @classmethod
    def _check_keys(cls, values: dict[str, Any]) -> None:
        """Every key of ``values`` a field, and every field without a default given."""
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

    def validate(self) -> None:
        """Every value within what decode, loss and the network take; a :class:`ConfigError`
        naming the key otherwise."""
        if self.num_classes < 1:
            raise ConfigError(f"model.num_classes must be >= 1, got {self.num_classes}")
        budget.check_classes(self.num_classes, "model.num_classes")
        budget.check_input_side(self.input_size, "model.input_size")
        check_anchors(self.anchors)
        check_stride_multiple(self.input_size, self.max_stride, "model.input_size")
        check_masks(self.masks, len(self.anchors), len(self.strides))
        check_choice("iou_loss", self.iou_loss, IOU_LOSSES)
        check_choice("nms_kind", self.nms_kind, NMS_KINDS)
        for key in LOSS_RANGES:
            check_head_values(key, getattr(self, key))
        check_number("beta_nms", self.beta_nms, 0.0, float("inf"), False)
        check_flags(
            {
                "new_coords": self.new_coords,
                "letter_box": self.letter_box,
                "gaussian": self.gaussian,
            },
            self.objectness_smooth,
        )
        check_scale_x_y(self.scale_x_y, self.strides)
        if self.region:
            check_region_config(self)
        # the network as built (head filters follow num_classes) at its input size
        budget.check_network(
            resolve_layers(config_sections(self, loss_keys=False)), self.input_size
        )

    @functools.cached_property
    def max_stride(self) -> int:
        """The coarsest stride of any layer (not only the heads'; along y or x): input H and W
        must be multiples of it for every ``[route]`` to join maps of equal size."""
        layers = resolve_layers(parse_cfg(self.cfg_text(), self.name))
        return max(max(layer.strides) for layer in layers)

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
        """Channels of each raw head map: ``A * (5 + C)`` (``A * (9 + C)`` with ``gaussian``)."""
        return self.num_anchors * (head_entries(self.gaussian) + self.num_classes)

    def head_anchors(self) -> list[list[tuple[float, float]]]:
        """Anchor ``(w, h)`` in input pixels for each head, ascending stride."""
        return [[self.anchors[a] for a in mask] for mask in self.masks]

    def cfg_text(self) -> str:
        """The darknet cfg the network is built from (before this config's overrides)."""
        return self.cfg if self.cfg is not None else read_zoo_cfg(self.name)

    def to_dict(self) -> dict[str, Any]:
        """Builtins only (lists, not tuples): safe for JSON, YAML and ``torch.load(weights_only=True)``.
        A ``[region]`` network's leaves out the ``[yolo]`` loss keys (:data:`YOLO_LOSS_KEYS`):
        it has no such loss, and :meth:`from_dict` gives them their defaults."""

        def plain(x: Any) -> Any:
            return [plain(i) for i in x] if isinstance(x, (tuple, list)) else x

        left_out = YOLO_LOSS_KEYS if self.region else ()
        return {k: plain(v) for k, v in dataclasses.asdict(self).items() if k not in left_out}


def _check_anchors_given(anchors: Any) -> None:
    """``model.anchors`` as pairs or null; ``auto``/``fit`` only reach train.py's start-up."""
    if isinstance(anchors, str) and anchors not in ("auto", "fit"):
        raise ConfigError(
            f"model.anchors={anchors!r}: expected [[w, h], ...] pairs, auto or fit "
            "(train.py fits them on the data) or null (the cfg's)"
        )
    if anchors in ("auto", "fit"):
        raise ConfigError(
            f"model.anchors={anchors} is resolved on the training split by train.py "
            "at start-up; "
            "elsewhere give the anchors (python -m yolov4.anchors fits them)"
        )


def _coerce_shapes(values: dict[str, Any]) -> dict[str, Any]:
    """A copy of ``values`` with ``num_classes``, ``input_size`` (``(H, W)``), ``strides``,
    ``anchors`` and ``masks`` as whole numbers / float pairs; a :class:`ConfigError` naming the
    key for a value of the wrong type."""
    v = dict(values)
    try:
        v["num_classes"] = whole(v["num_classes"], "num_classes")
        size = v["input_size"]  # (H, W), or one side for a square (as data.input_size)
        size = [size, size] if isinstance(size, int | float) else size
        v["input_size"] = tuple(whole(s, "input_size") for s in size)
        if len(v["input_size"]) != 2:
            raise ConfigError(
                f"model.input_size: expected [height, width] or one side, got {size!r}"
            )
        v["strides"] = tuple(whole(s, "strides") for s in v["strides"])
        v["anchors"] = pairs(v["anchors"])
        v["masks"] = tuple(tuple(whole(i, "masks") for i in m) for m in v["masks"])
    except ConfigError:
        raise
    except (TypeError, ValueError) as e:
        raise ConfigError(f"model config has a value of the wrong type: {e}") from e
    return v


def check_cfg_given(cfg: Any) -> None:
    """``model=darknet`` without ``model.cfg=``: its ``cfg`` is Hydra's missing-value marker
    ``???``. The one check train.py, evaluate.py, predict.py, export.py and the anchors fit
    share, naming what to give."""
    if str(cfg) == "???":
        raise ConfigError("model=darknet needs the cfg file: model.cfg=path/to/your.cfg")


def _cfg_text(cfg: str | bytes | os.PathLike) -> tuple[str, str]:
    """``cfg`` as (text, source name): a path to a file, or cfg text itself (a string of more
    than one line, or bytes)."""
    if isinstance(cfg, bytes | bytearray):
        return budget.cfg_text(bytes(cfg), "<cfg>"), "<cfg>"
    if isinstance(cfg, str) and ("\n" in cfg or "\r" in cfg):
        return budget.cfg_text(cfg.encode("utf-8"), "<cfg>"), "<cfg>"
    check_cfg_given(cfg)
    if not isinstance(cfg, str | os.PathLike) or not str(cfg).strip():
        raise ConfigError(f"cfg must be a path to a darknet cfg file or its text, got {cfg!r}")
    path = Path(cfg)
    return budget.read_cfg_file(path), str(path)


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
    put_option(net, "height", config.input_size[0])
    put_option(net, "width", config.input_size[1])
    put_option(net, "letter_box", int(config.letter_box), 0)
    anchors = [v for wh in config.anchors for v in wh]
    entries = head_entries(config.gaussian)
    check_head_kind(sections, heads, config, source)
    if config.region:
        put_region(sections, heads[0], config)
        return sections
    for h, i in enumerate(heads):
        y = sections[i]
        mask = config.masks[h]
        put_option(y, "mask", list(mask))
        put_option(y, "anchors", anchors)
        put_option(y, "classes", config.num_classes)
        put_option(y, "num", len(config.anchors))
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
            put_option(y, key, value, default if default is not None else ...)
        counts = config.counters_per_class[h] if config.counters_per_class else None
        if loss_keys and counts is not None:
            put_option(y, CPC, list(counts))
        elif loss_keys:
            y.options.pop(CPC, None)
        feeder = sections[i - 1]
        was_new = y.options.get("new_coords", "0") == "1" and not config.gaussian
        for key, default in GLOBAL_YOLO_KEYS.items():
            if not (config.gaussian and key == "new_coords"):  # parse_gaussian_yolo: not read
                put_option(y, key, getattr(config, key), default)
        if feeder.kind == "convolutional":
            put_option(feeder, "filters", len(mask) * (config.num_classes + entries))
            if config.new_coords != was_new:
                # darknet's new_coords [yolo] applies no activation: the conv in front does
                feeder.options["activation"] = "logistic" if config.new_coords else "linear"
    return sections
