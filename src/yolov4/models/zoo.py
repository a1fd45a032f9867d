"""Facts about the darknet zoo's networks: darknet's published partial weight files (the
``backbone_only`` cut-off) and published COCO accuracy (darknet's README).

``PARTIAL[name]`` is the layer count ``N`` of darknet's ``<file>.conv.N`` for that network
(``darknet partial cfg weights out N`` keeps layers ``0 .. N-1``). A user's cfg gets the cut-off
of the zoo network whose first ``N`` layers it repeats exactly. :func:`is_zoo_network` tells
whether a cfg is a zoo network's, whatever its classes, anchors and ``[net]`` settings.
"""

from __future__ import annotations

from yolov4.errors import ConfigError
from yolov4.models.cfg import ZOO, Section, parse_cfg, read_zoo_cfg

__all__ = ["PARTIAL", "PUBLISHED", "backbone_cutoff", "is_zoo_network"]

# name -> (partial file, N)
PARTIAL: dict[str, tuple[str, int]] = {
    "yolov4": ("yolov4.conv.137", 137),
    "yolov4-tiny": ("yolov4-tiny.conv.29", 29),
    "yolov4-tiny-3l": ("yolov4-tiny.conv.29", 29),
    "yolov4-csp": ("yolov4-csp.conv.142", 142),
    "yolov4-csp-swish": ("yolov4-csp-swish.conv.164", 164),
    "yolov4-csp-x-swish": ("yolov4-csp-x-swish.conv.192", 192),
    "yolov4x-mish": ("yolov4x-mish.conv.166", 166),
    "yolov4-p5": ("yolov4-p5.conv.232", 232),
    "yolov4-p6": ("yolov4-p6.conv.289", 289),
    "yolov3": ("darknet53.conv.74", 74),
    "yolov3-spp": ("darknet53.conv.74", 74),
    "yolov3-tiny": ("yolov3-tiny.conv.15", 15),
}

# name -> published COCO test-dev figures from darknet's README: (input size, metric, value)
PUBLISHED: dict[str, tuple[int, str, float]] = {
    "yolov4": (608, "AP", 43.5),
    "yolov4-tiny": (416, "AP50", 40.2),
    "yolov4-csp": (640, "AP", 48.7),
    "yolov4-csp-swish": (640, "AP", 50.0),
    "yolov4x-mish": (640, "AP", 50.1),
    "yolov4-csp-x-swish": (640, "AP", 51.5),
    "yolov4-p5": (896, "AP", 51.6),
    "yolov4-p6": (1280, "AP", 54.0),
    "yolov3": (416, "AP50", 55.3),
    "yolov3-tiny": (416, "AP50", 33.1),
}


def _key(s: Section) -> tuple:
    return (s.kind, tuple(sorted(s.options.items())))


def backbone_cutoff(name: str, sections: list[Section]) -> int:
    """The ``backbone_only`` layer count for network ``name`` built from ``sections``: the zoo's
    partial-file cut-off, if its first ``N`` layers are the zoo network's; else a
    :class:`ConfigError` asking for ``upto``."""
    candidates = [name] if name in PARTIAL else []
    candidates += [n for n in ZOO if n in PARTIAL and n != name]
    for n in candidates:
        cut = PARTIAL[n][1]
        zoo = parse_cfg(read_zoo_cfg(n), f"{n}.cfg")[1 : cut + 1]
        mine = sections[1 : cut + 1]
        if len(mine) == cut and [_key(s) for s in mine] == [_key(s) for s in zoo]:
            return cut
    raise ConfigError(
        f"{sections[0].source}: no darknet partial file is known for this network (its first "
        "layers are not a zoo network's backbone); load a prefix with upto=N instead of "
        "backbone_only"
    )


def _layer_keys(sections: list[Section]) -> list[tuple]:
    """The layers of a parsed cfg as comparable keys: a ``[yolo]`` by its kind alone (its keys
    are the model config's) and the convolution in front of it without ``filters`` (which
    follows from classes and masks); ``[net]`` left out."""
    layers = sections[1:]
    keys = []
    for i, s in enumerate(layers):
        head = i + 1 < len(layers) and layers[i + 1].kind == "yolo"
        options = {k: v for k, v in s.options.items() if not (head and k == "filters")}
        keys.append((s.kind,) if s.kind == "yolo" else (s.kind, tuple(sorted(options.items()))))
    return keys


def is_zoo_network(name: str, sections: list[Section]) -> bool:
    """Whether the parsed cfg ``sections`` are zoo network ``name``'s layers (same sections in the
    same order with the same options), whatever their ``[net]`` settings and ``[yolo]`` keys
    (classes, anchors, masks, thresholds)."""
    zoo = parse_cfg(read_zoo_cfg(name), f"{name}.cfg")
    return _layer_keys(sections) == _layer_keys(zoo)
