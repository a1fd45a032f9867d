"""The darknet cfg layers that read more than the previous layer: ``[route]``, ``[shortcut]``,
``[sam]`` and ``[scale_channels]`` (no torch).

Each reads its section as darknet's ``src/parser.c`` does (``parse_route``, ``parse_shortcut``,
``parse_sam``, ``parse_scale_channels``) and checks the shapes of the layers it combines;
:func:`yolov4.models.cfg_layers.layer_spec` dispatches to them.
"""

from __future__ import annotations

from collections.abc import Callable

from yolov4.errors import ConfigError
from yolov4.models.cfg_spec import (
    ACTIVATIONS,
    GLOBAL,
    LayerSpec,
    Section,
    Shape,
    activation,
    layer_index,
    spec,
    strides_text,
)

__all__ = [
    "PRODUCT_ACTIVATIONS",
    "SHORTCUT_NORMALIZATIONS",
    "SHORTCUT_WEIGHTS",
    "route_spec",
    "sam_spec",
    "scale_channels_spec",
    "shortcut_spec",
]


def route_spec(s: Section, i: int, out: Callable[[int], Shape]) -> LayerSpec:
    """``out(j)``: layer ``j``'s (channels, strides); layers 0 to ``i - 1`` exist."""
    srcs = [layer_index(s, "layers", v, i) for v in s.get_ints("layers")]
    if not srcs:
        raise s.error("layers", "is empty; expected one or more layer indices (-1, 61, ...)")
    groups, group_id = s.get_int("groups", 1), s.get_int("group_id", 0)
    if groups < 1 or not 0 <= group_id < groups:
        raise s.error("group_id", f"must be in [0, groups={groups}), got {group_id}")
    strides = {out(j)[1] for j in srcs}
    if len(strides) != 1:
        shown = ", ".join(strides_text(st) for st in sorted(strides))
        raise s.error("layers", f"joins maps of different strides [{shown}]")
    c = 0
    for j in srcs:
        if out(j)[0] % groups:
            raise s.error(
                "groups", f"{groups} does not divide the {out(j)[0]} channels of layer {j}"
            )
        c += out(j)[0] // groups
    onlyforward = bool(s.get_int("onlyforward", 0))  # darknet: no backward through it
    return spec(
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
        f"layer {j} gives {c_j} channels at stride {strides_text(st_j)}, layer {i - 1} {c_in} "
        f"at stride {strides_text(st_in)}: {rule}",
    )


def shortcut_spec(
    s: Section, i: int, out: Callable[[int], Shape], c_in: int, st_in: tuple[int, int]
) -> LayerSpec:
    """``[shortcut]`` (darknet's ``parse_shortcut``, ``shortcut_multilayer_cpu``): the previous
    layer plus the ``from`` layers (weighted with ``weights_type``), then ``activation``. A
    ``from`` map of other channels adds element ``k`` of its own to element ``k`` of the sum,
    as far as it has elements: of maps of equal size, its first channels to the first ones."""
    srcs = [layer_index(s, "from", v, i) for v in s.get_ints("from")]
    for j in srcs:
        if out(j)[1] != st_in:
            raise _unequal_maps(s, i, j, out, "only maps of equal size can be added")
    weights_type, normalization = _shortcut_weights(s)
    n = {"per_feature": 1 + len(srcs), "per_channel": (1 + len(srcs)) * c_in}.get(weights_type, 0)
    return spec(
        s, i, [i - 1, *srcs], c_in, st_in,
        activation=activation(s, "linear"), weights_type=weights_type,
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


# The activations [sam] and [scale_channels] apply through darknet's activate(), whose switch has
# no case for swish, mish, relu6 or hard_mish (their output is zero).
PRODUCT_ACTIVATIONS = tuple(
    a for a in ACTIVATIONS if a not in ("swish", "mish", "relu6", "hard_mish")
)


def _product_from(s: Section, i: int) -> tuple[int, str]:
    """``[sam]``/``[scale_channels]``: the ``from`` layer (one: darknet's ``atoi`` reads the
    first) and the ``activation`` (default linear; not swish, mish, relu6 or hard_mish,
    which they do not apply)."""
    froms = s.get_ints("from")
    if len(froms) != 1:
        raise s.error(
            "from", f"darknet's [{s.kind}] reads one layer (atoi: the first), got {froms}"
        )
    act = activation(s, "linear")
    if act not in PRODUCT_ACTIVATIONS:
        raise s.error(
            "activation",
            f"darknet's [{s.kind}] does not apply {act} (its activate() has no case for it: the "
            f"output is zero); supported here: {list(PRODUCT_ACTIVATIONS)}",
        )
    return layer_index(s, "from", froms[0], i), act


def sam_spec(
    s: Section, i: int, out: Callable[[int], Shape], c_in: int, st_in: tuple[int, int]
) -> LayerSpec:
    """``[sam]`` (darknet's ``parse_sam``, ``forward_sam_layer``): the previous layer's output
    times layer ``from``'s, element by element (equal shapes: darknet asserts it), then
    ``activation`` (default linear)."""
    j, act = _product_from(s, i)
    if out(j) != (c_in, st_in):
        raise _unequal_maps(s, i, j, out, "only equal shapes can be multiplied")
    return spec(s, i, [i - 1, j], c_in, st_in, activation=act)


def scale_channels_spec(
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
        fits, need = c_in == 1 and st_in == st_from, f"1 channel at stride {strides_text(st_from)}"
    else:
        fits, need = c_in == c_from and st_in == (GLOBAL, GLOBAL), f"{c_from} channels, 1 x 1"
    if not fits:
        raise s.error(
            "from",
            f"scales layer {j} ({c_from} channels at stride {strides_text(st_from)}) by layer "
            f"{i - 1}, which gives {c_in} channels at stride {strides_text(st_in)}; darknet "
            f"needs {need}" + ("" if "scale_wh" in s.options else " (scale_wh=1: 1 channel)"),
        )
    return spec(s, i, [i - 1, j], c_from, st_from, activation=act)
