"""How darknet reads a cfg's text, transcribed from AlexeyAB darknet: ``src/parser.c``
``read_cfg``, ``parse_yolo_mask``, the ``anchors`` loop of ``parse_yolo``, the ``layers`` loop of
``parse_route``; ``src/option_list.c`` ``read_option``, ``option_find``; ``src/utils.c``
``strip``; ``src/activations.c`` ``get_activation``; C's ``atoi``/``atof``. The reference the
project's cfg parser is checked against."""

from __future__ import annotations

import re

# src/activations.c get_activation: the names it knows; any other is "going with ReLU"
DARKNET_ACTIVATIONS = (
    "logistic", "swish", "mish", "hard_mish", "normalize_channels", "normalize_channels_softmax",
    "normalize_channels_softmax_maxval", "loggy", "relu", "relu6", "elu", "selu", "gelu", "relie",
    "plse", "hardtan", "lhtan", "linear", "ramp", "revleaky", "leaky", "tanh", "stair",
)  # fmt: skip


def strip(s: str) -> str:
    """utils.c strip: drops ' ', '\\t', '\\n', '\\r' everywhere in the line."""
    return "".join(c for c in s if c not in " \t\n\r")


def read_cfg(text: str) -> list[tuple[str, list[tuple[str, str]]]]:
    """parser.c read_cfg: ``[(section type as written, [(key, value), ...] in file order)]``;
    a line is a comment only when its first character (after strip) is ``#`` or ``;``."""
    sections: list[tuple[str, list[tuple[str, str]]]] = []
    for raw in text.split("\n"):
        line = strip(raw)
        if not line:
            continue
        if line[0] == "[":
            sections.append((line, []))
        elif line[0] in "#;":
            continue
        else:
            read_option(line, sections[-1][1])
    return sections


def read_option(s: str, options: list[tuple[str, str]]) -> bool:
    """option_list.c read_option: split at the first '='; '=' as the last character is refused."""
    i = s.find("=")
    if i == len(s) - 1:
        return False
    key, val = (s, None) if i < 0 else (s[:i], s[i + 1 :])
    options.append((key, val))
    return True


def option_find(options: list[tuple[str, str]], key: str) -> str | None:
    """option_list.c option_find: the FIRST value of ``key`` (the list is in file order)."""
    return next((v for k, v in options if k == key), None)


def atoi(s: str) -> int:
    m = re.match(r"\s*([+-]?\d+)", s)
    return int(m.group(1)) if m else 0


def atof(s: str) -> float:
    m = re.match(r"\s*([+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?)", s)
    return float(m.group(1)) if m else 0.0


def _commas_before_hash(a: str) -> int:
    n = 1
    for c in a:
        if c == "#":
            break
        if c == ",":
            n += 1
    return n


def _next(a: str) -> str:
    """``strchr(a, ',') + 1`` (past the last value: nothing more is read)."""
    i = a.find(",")
    return a[i + 1 :] if i >= 0 else ""


def parse_yolo_mask(a: str) -> list[int]:
    """parser.c parse_yolo_mask (``mask``, ``counters_per_class``): commas counted up to '#'."""
    out = []
    for _ in range(_commas_before_hash(a)):
        out.append(atoi(a))
        a = _next(a)
    return out


def parse_anchors(a: str, total: int) -> list[float]:
    """parse_yolo's ``anchors`` loop: commas counted up to '#', at most ``2 * num`` values."""
    out = []
    n = _commas_before_hash(a)
    for i in range(n):
        if i >= total * 2:
            break
        out.append(atof(a))
        a = _next(a)
    return out


def parse_route_layers(a: str) -> list[int]:
    """parse_route's (and parse_shortcut's ``from``) loop: EVERY comma counted, '#' or not."""
    out = []
    for _ in range(a.count(",") + 1):
        out.append(atoi(a))
        a = _next(a)
    return out


def get_activation(s: str) -> str:
    """activations.c get_activation: an unknown name is ReLU."""
    return s if s in DARKNET_ACTIVATIONS else "relu"


# The keys darknet's parser reads in each section (src/parser.c): parse_net_options and
# parse_network_cfg_custom (show_receptive_field) for [net]; parse_convolutional, parse_route,
# parse_shortcut, parse_maxpool, parse_local_avgpool, parse_upsample, parse_dropout, parse_sam,
# parse_avgpool (none), parse_scale_channels, parse_yolo, and the keys parse_network_cfg_custom reads in every layer section (EVERY_LAYER)
# before option_unused prints the rest as "Unused field".
EVERY_LAYER = (
    "clip", "onlyforward", "dont_update", "burnin_update", "stopbackward", "train_only_bn",
    "dontload", "dontloadscales", "learning_rate",
)  # fmt: skip
PARSER_KEYS = {
    "net": (
        "max_batches", "batch", "learning_rate", "learning_rate_min", "sgdr_cycle", "sgdr_mult",
        "momentum", "decay", "subdivisions", "time_steps", "track", "augment_speed",
        "sequential_subdivisions", "try_fix_nan", "weights_reject_freq", "equidistant_point",
        "badlabels_rejection_percentage", "num_sigmas_reject_badlabels", "ema_alpha",
        "use_cuda_graph", "loss_scale", "dynamic_minibatch", "optimized_memory",
        "workspace_size_limit_MB", "adam", "B1", "B2", "eps", "height", "width", "channels",
        "inputs", "max_crop", "min_crop", "flip", "blur", "gaussian_noise", "mixup", "cutmix",
        "mosaic", "letter_box", "mosaic_bound", "contrastive", "contrastive_jit_flip",
        "contrastive_color", "unsupervised", "label_smooth_eps", "resize_step", "attention",
        "adversarial_lr", "max_chart_loss", "angle", "aspect", "saturation", "exposure", "hue",
        "power", "policy", "burn_in", "step", "scale", "steps", "scales", "seq_scales", "gamma",
        "show_receptive_field",
    ),
    "convolutional": EVERY_LAYER + (
        "filters", "groups", "size", "stride_x", "stride_y", "stride", "dilation",
        "antialiasing", "pad", "padding", "activation", "assisted_excitation", "share_index",
        "batch_normalize", "cbn", "binary", "xnor", "bin_output", "sway", "rotate", "stretch",
        "stretch_sway", "flipped", "dot", "angle", "grad_centr", "reverse", "coordconv",
        "stream", "wait_stream",
    ),
    "route": EVERY_LAYER + ("layers", "groups", "group_id", "stream", "wait_stream"),
    "shortcut": EVERY_LAYER + ("activation", "weights_type", "weights_normalization", "from"),
    "maxpool": EVERY_LAYER + (
        "stride", "stride_x", "stride_y", "size", "padding", "maxpool_depth", "out_channels",
        "antialiasing", "maxpool_zero_nonmax",
    ),
    "local_avgpool": EVERY_LAYER + ("stride", "stride_x", "stride_y", "size", "padding"),
    "sam": EVERY_LAYER + ("from", "activation"),
    "avgpool": EVERY_LAYER,
    "scale_channels": EVERY_LAYER + ("from", "scale_wh", "activation"),
    "upsample": EVERY_LAYER + ("stride", "scale"),
    "dropout": EVERY_LAYER + (
        "probability", "dropblock", "dropblock_size_rel", "dropblock_size_abs",
    ),
    "yolo": EVERY_LAYER + (
        "classes", "num", "mask", "max", "show_details", "max_delta", "counters_per_class",
        "label_smooth_eps", "scale_x_y", "objectness_smooth", "new_coords", "iou_normalizer",
        "obj_normalizer", "cls_normalizer", "delta_normalizer", "iou_loss", "iou_thresh_kind",
        "beta_nms", "nms_kind", "jitter", "resize", "focal_loss", "ignore_thresh",
        "truth_thresh", "iou_thresh", "random", "track_history_size", "sim_thresh",
        "dets_for_track", "dets_for_show", "track_ciou_norm", "embedding_layer", "map",
        "anchors",
    ),
}  # fmt: skip
