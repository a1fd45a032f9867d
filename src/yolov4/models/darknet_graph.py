"""A recorder of darknet's layer list, written by the modules themselves.

Each module of the network knows which darknet ``[section]``s it corresponds to and emits them,
in darknet's order, into a :class:`DarknetGraph`. The graph is the single source of both the
``.cfg`` text (``yolov4.darknet.write_darknet_cfg``) and the order in which convolution weights
appear in a ``.weights`` file, so the two can never disagree.

Layer references are absolute layer indices while emitting (``-1`` is the network input) and
are written as darknet's relative indices. A module that consumes a layer other than the last
one gets a ``[route]`` inserted automatically, exactly as darknet's cfgs do.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from torch import nn

__all__ = ["DarknetLayer", "DarknetGraph"]

INPUT = -1  # the index that stands for the network's input image


@dataclass
class DarknetLayer:
    """One darknet ``[kind]`` section; ``module`` is the conv module for convolutional layers."""

    kind: str
    options: dict[str, Any] = field(default_factory=dict)
    module: nn.Module | None = None


class DarknetGraph:
    """Sequential list of darknet layers under construction."""

    def __init__(self) -> None:
        self.layers: list[DarknetLayer] = []

    @property
    def last(self) -> int:
        """Index of the most recently emitted layer (``-1``: the input)."""
        return len(self.layers) - 1

    def _append(self, kind: str, options: dict[str, Any], module: nn.Module | None = None) -> int:
        self.layers.append(DarknetLayer(kind, options, module))
        return self.last

    def _rel(self, index: int) -> int:
        # Darknet resolves a negative index relative to the layer being parsed.
        return index - len(self.layers)

    def _take(self, src: int) -> None:
        """Make ``src`` the input of the next layer, inserting ``[route]`` when needed."""
        if src != self.last:
            self.route([src])

    def conv(self, module: nn.Module, src: int, options: dict[str, Any]) -> int:
        self._take(src)
        return self._append("convolutional", options, module)

    def route(self, srcs: list[int], groups: int = 1, group_id: int = 0) -> int:
        options: dict[str, Any] = {"layers": [self._rel(s) for s in srcs]}
        if groups != 1:
            options.update(groups=groups, group_id=group_id)
        return self._append("route", options)

    def shortcut(self, src: int, frm: int) -> int:
        """``src + frm`` (darknet adds ``from`` to the previous layer), linear activation."""
        self._take(src)
        return self._append("shortcut", {"from": [self._rel(frm)], "activation": "linear"})

    def maxpool(self, src: int, size: int, stride: int) -> int:
        self._take(src)
        return self._append("maxpool", {"size": size, "stride": stride})

    def upsample(self, src: int, stride: int = 2) -> int:
        self._take(src)
        return self._append("upsample", {"stride": stride})

    def yolo(self, src: int, options: dict[str, Any]) -> int:
        self._take(src)
        return self._append("yolo", options)

    def conv_layers(self) -> list[tuple[int, nn.Module]]:
        """``(layer index, conv module)`` in weight-file order."""
        return [
            (i, layer.module)
            for i, layer in enumerate(self.layers)
            if layer.kind == "convolutional"
        ]
