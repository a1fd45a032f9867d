"""Darknet's cfg keys section by section, and what the builder does with each.

Every key of a section that darknet's ``src/parser.c`` reads falls in one of these groups:

- built: what the network and the loss here read (``LAYER_KEYS``, ``NET_KEYS``);
- kept: darknet's training-loop settings (``TRAINING_KEYS``, ``NET_TRAINING_KEYS``), kept in
  the cfg verbatim (written back by :func:`yolov4.darknet.write_darknet_cfg`, read by the zoo's
  ``experiment=`` recipes and reported by ``yolov4.training.cfg_settings``);
- inert (``INERT_KEYS``): darknet reads them, but they change neither the network's outputs nor
  its training (printing, CUDA streams, darknet's demo tracker): accepted, kept, no effect;
- refused: every other key darknet reads (``DARKNET_KEYS``): it changes the layer's output,
  its weights file or its training in a way the builder does not implement, so the cfg stops
  with a :class:`ConfigError` naming it; unless it is set to the value darknet uses when the key
  is absent (``DARKNET_DEFAULTS``: ``[maxpool] maxpool_depth=0``, ``[yolo] focal_loss=0``),
  which changes nothing: accepted and kept.

A key darknet does not read at all is ignored by darknet (for a layer it prints "Unused field"),
so here it is a warning naming the line (:func:`unread_warnings`, logged by
:func:`yolov4.models.cfg.parse_cfg`) and the cfg is built; unless the key is
a near miss of a key darknet reads in that section (``difflib`` ratio >= ``NEAR_MISS``:
``widht``, ``letterbox``, ``ignore_tresh``) and read in no other section type: a likely typo
whose intended value darknet would not read either, refused with the suggestion.
"""

from __future__ import annotations

import difflib
from typing import Any

from yolov4.errors import ConfigError
from yolov4.models.gaussian import GAUSSIAN_KEYS, GAUSSIAN_KIND
from yolov4.models.region import REGION_TRAINING_KEYS, check_region_keys

# cfg.Section: typed Any here (yolov4.models.cfg imports this module)
Section = Any

__all__ = [
    "LAYER_KEYS",
    "TRAINING_KEYS",
    "REGION_TRAINING_KEYS",
    "NET_KEYS",
    "NET_TRAINING_KEYS",
    "INERT_KEYS",
    "DARKNET_KEYS",
    "DARKNET_DEFAULTS",
    "NEAR_MISS",
    "check_net_keys",
    "check_layer_keys",
    "unread_warnings",
    "yolo_anchors",
    "extra_anchors_warnings",
]

# Keys each layer section may carry. Keys in TRAINING_KEYS are darknet training-loop settings
# (augmentation, freezing): read where noted, never silently changing the network.
LAYER_KEYS: dict[str, set[str]] = {
    "convolutional": {
        "batch_normalize",
        "filters",
        "size",
        "stride",
        "stride_x",
        "stride_y",
        "pad",
        "padding",
        "activation",
        "groups",
        "dilation",
        "stopbackward",  # freeze layers <= this one for N iterations (training.module)
    },
    # onlyforward: darknet's backward skips the layer (yolov4-tiny_contrastive.cfg): a detach
    "route": {"layers", "groups", "group_id", "onlyforward"},
    "shortcut": {"from", "activation", "weights_type", "weights_normalization"},
    "maxpool": {"size", "stride", "stride_x", "stride_y", "padding"},
    "local_avgpool": {"size", "stride", "stride_x", "stride_y", "padding"},
    "upsample": {"stride", "scale"},
    "dropout": {"probability"},
    "sam": {"from", "activation"},
    "avgpool": set(),
    "scale_channels": {"from", "scale_wh", "activation"},
    "yolo": {
        "mask",
        "anchors",
        "classes",
        "num",
        "scale_x_y",
        "ignore_thresh",
        "truth_thresh",
        "iou_thresh",
        "iou_normalizer",
        "cls_normalizer",
        "obj_normalizer",
        "max_delta",
        "iou_loss",
        "new_coords",
        "nms_kind",
        "beta_nms",
        "label_smooth_eps",
        "objectness_smooth",
        "counters_per_class",  # yolov4.models.class_balance
        # darknet's data augmentation / batch settings: our augment config owns these
        "jitter",
        "random",
        "resize",
        "max",
    },
    # darknet's reorg_old_layer.c ([reorg]) and reorg_layer.c ([reorg3d]): space to depth (depth
    # to space with reverse), darknet's channel order (yolov4.models.layers.Reorg)
    "reorg": {"stride", "reverse"},
    "reorg3d": {"stride", "reverse"},
    # darknet's YOLOv2 head (region_layer.c), built for inference (yolov4.models.region)
    "region": {"anchors", "classes", "num", "coords", "softmax", *REGION_TRAINING_KEYS},
}
# darknet's Gaussian YOLOv3 head (gaussian_yolo_layer.c), built for inference
# (yolov4.models.gaussian): the [yolo] keys but new_coords, which parse_gaussian_yolo does not
# read, and its uncertainty loss weight (yolo_point: at darknet's default only)
LAYER_KEYS[GAUSSIAN_KIND] = (LAYER_KEYS["yolo"] - {"new_coords"}) | {"uc_normalizer"}
TRAINING_KEYS = {"stopbackward", "jitter", "random", "resize", "max", *REGION_TRAINING_KEYS}
# [net] keys the network reads (its input; darknet's resize mode, yolov4.inference.darknet)
NET_KEYS = {"width", "height", "channels", "letter_box"}
# the other [net] keys darknet reads (src/parser.c, parse_net_options): its training loop's
# batch, optimizer, schedule and augmentation, kept verbatim and used by the zoo's experiment=
# recipes only
NET_TRAINING_KEYS = {
    "B1", "B2", "adam", "adversarial_lr", "angle", "aspect", "attention", "augment_speed",
    "badlabels_rejection_percentage", "batch", "blur", "burn_in", "contrastive",
    "contrastive_color", "contrastive_jit_flip", "cutmix", "decay", "dynamic_minibatch",
    "ema_alpha", "eps", "equidistant_point", "exposure", "flip", "gamma", "gaussian_noise", "hue",
    "inputs", "label_smooth_eps", "learning_rate", "learning_rate_min", "loss_scale",
    "max_batches", "max_chart_loss", "max_crop", "min_crop", "mixup", "momentum", "mosaic",
    "mosaic_bound", "num_sigmas_reject_badlabels", "optimized_memory", "policy", "power",
    "resize_step", "saturation", "scale", "scales", "seq_scales", "sequential_subdivisions",
    "sgdr_cycle", "sgdr_mult", "step", "steps", "subdivisions", "time_steps", "track",
    "try_fix_nan", "unsupervised", "use_cuda_graph", "weights_reject_freq",
    "workspace_size_limit_MB",
}  # fmt: skip

# Keys darknet reads that change nothing the network computes or how it trains.
INERT_KEYS: dict[str, set[str]] = {
    # parse_network_cfg_custom: prints each layer's receptive field
    "net": {"show_receptive_field"},
    # the CUDA stream a layer runs on / waits for (GPU scheduling); `angle` is read by the
    # sway/rotate/stretch kernels only, which are refused
    "convolutional": {"stream", "wait_stream", "angle"},
    "route": {"stream", "wait_stream"},
    # show_details: the loss's printout; the rest: darknet's demo tracker, which runs only with
    # embedding_layer (refused)
    "yolo": {
        "show_details",
        "track_history_size",
        "sim_thresh",
        "dets_for_track",
        "dets_for_show",
        "track_ciou_norm",
    },  # fmt: skip
}

# Every key darknet's parser reads, per section (src/parser.c): parse_convolutional,
# parse_route, parse_shortcut, parse_maxpool, parse_local_avgpool, parse_upsample, parse_dropout,
# parse_sam, parse_avgpool, parse_scale_channels, parse_yolo, parse_reorg_old ([reorg]),
# parse_reorg ([reorg3d]), parse_region, parse_gaussian_yolo, and the keys
# parse_network_cfg_custom reads in every layer (GENERIC).
_GENERIC = {
    "clip", "onlyforward", "dont_update", "burnin_update", "stopbackward", "train_only_bn",
    "dontload", "dontloadscales", "learning_rate",
}  # fmt: skip
DARKNET_KEYS: dict[str, set[str]] = {
    "net": NET_KEYS | NET_TRAINING_KEYS | INERT_KEYS["net"],
    "convolutional": _GENERIC | {
        "activation", "angle", "antialiasing", "assisted_excitation", "batch_normalize",
        "bin_output", "binary", "cbn", "coordconv", "dilation", "dot", "filters", "flipped",
        "grad_centr", "groups", "pad", "padding", "reverse", "rotate", "share_index", "size",
        "stream", "stretch", "stretch_sway", "stride", "stride_x", "stride_y", "sway",
        "wait_stream", "xnor",
    },
    "route": _GENERIC | {"group_id", "groups", "layers", "stream", "wait_stream"},
    "shortcut": _GENERIC | {"activation", "from", "weights_normalization", "weights_type"},
    "maxpool": _GENERIC | {
        "antialiasing", "maxpool_depth", "maxpool_zero_nonmax", "out_channels", "padding",
        "size", "stride", "stride_x", "stride_y",
    },
    "local_avgpool": _GENERIC | {"padding", "size", "stride", "stride_x", "stride_y"},
    "upsample": _GENERIC | {"scale", "stride"},
    "dropout": _GENERIC | {
        "dropblock", "dropblock_size_abs", "dropblock_size_rel", "probability",
    },
    "sam": _GENERIC | {"activation", "from"},
    "avgpool": _GENERIC,
    "scale_channels": _GENERIC | {"activation", "from", "scale_wh"},
    "yolo": _GENERIC | {
        "anchors", "beta_nms", "classes", "cls_normalizer", "counters_per_class",
        "delta_normalizer", "dets_for_show", "dets_for_track", "embedding_layer", "focal_loss",
        "ignore_thresh", "iou_loss", "iou_normalizer", "iou_thresh", "iou_thresh_kind", "jitter",
        "label_smooth_eps", "map", "mask", "max", "max_delta", "new_coords", "nms_kind", "num",
        "obj_normalizer", "objectness_smooth", "random", "resize", "scale_x_y", "show_details",
        "sim_thresh", "track_ciou_norm", "track_history_size", "truth_thresh",
    },
    "reorg": _GENERIC | {"stride", "reverse"},
    "reorg3d": _GENERIC | {"stride", "reverse"},
    "region": _GENERIC | REGION_TRAINING_KEYS | {
        "anchors", "classes", "coords", "log", "map", "num", "softmax", "sqrt", "tree",
        # read by the darknet of the first YOLOv2 cfgs, not by AlexeyAB's: refused unless 0
        "background",
    },
}  # fmt: skip
# parse_gaussian_yolo: parse_yolo's keys but the tracker's, focal_loss and new_coords
DARKNET_KEYS[GAUSSIAN_KIND] = GAUSSIAN_KEYS | DARKNET_KEYS["yolo"] - {
    "dets_for_show", "dets_for_track", "embedding_layer", "focal_loss", "new_coords",
    "show_details", "sim_thresh", "track_ciou_norm", "track_history_size",
}  # fmt: skip


def _read_elsewhere(kind: str, key: str) -> list[str]:
    """The other section types darknet reads ``key`` in, as ``[type]``."""
    return [f"[{k}]" for k, keys in DARKNET_KEYS.items() if k != kind and key in keys]


# The value darknet gives each refused key it reads when the cfg leaves it out (src/parser.c:
# the option_find_* default of parse_convolutional, parse_shortcut, parse_maxpool,
# parse_upsample, parse_dropout, parse_yolo, and of the keys parse_network_cfg_custom reads in every layer).
# Set to it, the key changes nothing darknet computes: accepted. Numbers compare as numbers
# (xnor=0, clip=0.0); text as text (iou_thresh_kind=iou). Keys whose default depends on
# another key (maxpool stride_x: the stride) or that have none (yolo map) are not listed.
_GENERIC_DEFAULTS: dict[str, int | float] = {
    "clip": 0.0, "onlyforward": 0, "dont_update": 0, "burnin_update": 0, "stopbackward": 0,
    "train_only_bn": 0, "dontload": 0, "dontloadscales": 0, "learning_rate": 1.0,
}  # fmt: skip
DARKNET_DEFAULTS: dict[str, dict[str, int | float | str]] = {
    "convolutional": _GENERIC_DEFAULTS | {
        "antialiasing": 0, "assisted_excitation": 0.0, "bin_output": 0, "binary": 0, "cbn": 0,
        "coordconv": 0, "dot": 0.0, "flipped": 0, "grad_centr": 0,
        "reverse": 0.0, "rotate": 0, "stretch": 0, "stretch_sway": 0, "sway": 0, "xnor": 0,
    },
    "route": _GENERIC_DEFAULTS,
    "shortcut": _GENERIC_DEFAULTS,
    "maxpool": _GENERIC_DEFAULTS | {
        "antialiasing": 0, "maxpool_depth": 0, "maxpool_zero_nonmax": 0, "out_channels": 1,
    },
    "local_avgpool": _GENERIC_DEFAULTS,
    "upsample": _GENERIC_DEFAULTS,
    "dropout": _GENERIC_DEFAULTS | {
        "dropblock": 0, "dropblock_size_rel": 0.0, "dropblock_size_abs": 0,
    },
    "sam": _GENERIC_DEFAULTS,
    "avgpool": _GENERIC_DEFAULTS,
    "scale_channels": _GENERIC_DEFAULTS,
    "yolo": _GENERIC_DEFAULTS | {
        "delta_normalizer": 1.0, "focal_loss": 0, "iou_thresh_kind": "iou",
        "embedding_layer": 999999,
    },
    "reorg": _GENERIC_DEFAULTS,
    "reorg3d": _GENERIC_DEFAULTS,
    "region": _GENERIC_DEFAULTS | {"log": 0, "sqrt": 0, "background": 0},
    GAUSSIAN_KIND: _GENERIC_DEFAULTS | {
        "delta_normalizer": 1.0, "iou_thresh_kind": "iou", "yolo_point": "center",
    },
}  # fmt: skip

# a key darknet does not read within this difflib ratio of one it reads is taken for a typo
NEAR_MISS = 0.8


def _near_miss(s: Section, key: str) -> ConfigError | None:
    """The error for ``key`` of section ``s`` when darknet does not read it but it is a near miss
    of a key darknet reads there (a typo whose value darknet would not read either)."""
    known = DARKNET_KEYS[s.kind]
    near = difflib.get_close_matches(key, sorted(known), n=1, cutoff=NEAR_MISS)
    if not near or _read_elsewhere(s.kind, key):
        return None
    return s.error(
        key,
        f"darknet does not read this key in [{s.header}]; did you mean {near[0]}? (a misspelt key "
        "leaves the setting at darknet's default)",
    )


def check_net_keys(net: Section) -> None:
    """``[net]``: a key darknet does not read that is a near miss of one it reads (``widht=``,
    ``letterbox=``) is refused with the suggestion."""
    for key in net.options:
        if key not in DARKNET_KEYS["net"] and (error := _near_miss(net, key)):
            raise error


def _is_default(s: Section, key: str) -> bool:
    """Whether ``key`` of section ``s`` is set to the value darknet reads when it is absent."""
    default = DARKNET_DEFAULTS.get(s.kind, {}).get(key)
    raw = s.options[key]
    if default is None or isinstance(default, str):
        return raw == default
    try:
        return float(raw) == default
    except ValueError:
        return False


def check_layer_keys(s: Section) -> None:
    """A layer section: a type the builder does not implement, a key darknet reads that changes
    what the builder does not implement, or a near miss of a key darknet reads, is refused.
    Built, kept and inert keys pass, and so do keys darknet does not read
    (:func:`unread_warnings`) and keys set to darknet's default (:data:`DARKNET_DEFAULTS`)."""
    allowed = LAYER_KEYS.get(s.kind)
    if allowed is None:
        raise s.error(
            None,
            f"layer type [{s.header}] is not supported; supported: "
            f"{', '.join(f'[{k}]' for k in LAYER_KEYS)}",
        )
    if s.kind == "region":
        check_region_keys(s)  # its values that change the output, each on one line
    inert = INERT_KEYS.get(s.kind, set())
    for key in s.options:
        if key in allowed or key in inert or _is_default(s, key):
            continue
        if key in DARKNET_KEYS[s.kind]:
            default = DARKNET_DEFAULTS.get(s.kind, {}).get(key)
            if default is not None:
                inert = inert | {f"{key}={default if isinstance(default, str) else f'{default:g}'}"}
            raise s.error(
                key,
                f"key not supported for [{s.header}]: darknet reads it, and it changes the layer's "
                "output, its weights or their training in a way yolov4 does not implement; "
                f"supported: {sorted(allowed)}, and without effect here: {sorted(inert)}",
            )
        if error := _near_miss(s, key):
            raise error


def unread_warnings(sections: list[Section]) -> list[str]:
    """A warning naming each key darknet does not read (and that is no near miss of one it
    does), in file order: darknet ignores it, and so does the builder."""
    return [
        f"{s.where(key)}: darknet does not read this key in [{s.header}] and ignores it"
        f"{_elsewhere_note(s.kind, key)}; so does yolov4"
        for s in sections
        for key in (s.options if s.kind in DARKNET_KEYS else ())
        if key not in DARKNET_KEYS[s.kind] and not _near_miss(s, key)
    ]


def _elsewhere_note(kind: str, key: str) -> str:
    where = _read_elsewhere(kind, key)
    return f" (it reads it in {', '.join(where)})" if where else ""


def yolo_anchors(y: Section) -> list[float]:
    """The numbers of ``[yolo]`` section ``y``'s ``anchors`` darknet reads: the first
    ``num * 2`` (``parse_yolo`` stops there and ignores the rest)."""
    return y.get_floats("anchors")[: 2 * y.get_int("num", 1)]


def extra_anchors_warnings(sections: list[Section]) -> list[str]:
    """One warning for the ``[yolo]`` layers whose ``anchors`` has more numbers than
    ``num * 2`` (cspx-p7-mish.cfg: 40 with num=16), naming the first and the lines of the
    others; a value that does not read as a number is left to the checks that refuse it."""
    extra = []
    for y in (s for s in sections if s.kind == "yolo"):
        try:
            found, num = len(y.get_floats("anchors")), y.get_int("num", 1)
        except ConfigError:
            continue
        if found > 2 * num:
            extra.append((y, found, num))
    if not extra:
        return []
    (y, found, num), others = extra[0], [s.lines.get("anchors", s.line) for s, _, _ in extra[1:]]
    also = f"; so have the [yolo] anchors at lines {', '.join(map(str, others))}" if others else ""
    return [
        f"{y.where('anchors')}: has {found} numbers, num={num} reads the first {2 * num} "
        f"(darknet's parse_yolo ignores the rest, and so does yolov4; a cfg written back has "
        f"those {2 * num}){also}"
    ]
