"""The zoo's kinds of network for the downstream tests (export, Predictor, service, checkpoints),
each small enough for a CPU test.

One network per kind of structure the downstream code must handle:

=================== ================ ====================================================
kind                network          what it exercises
=================== ================ ====================================================
``new_coords``      yolov4-csp       ``[yolo] new_coords=1`` decode (Scaled-YOLOv4)
``4 heads``         yolov4-p6        4 heads down to stride 64 (inputs multiples of 64),
                                     4 anchors per head, ``new_coords``
``stride-1 pool``   yolov3-tiny      ``[maxpool] size=2 stride=1`` (darknet's asymmetric pad)
``group routes``    yolov4-tiny-3l   ``[route] groups=2 group_id=1``, 3 heads on a tiny net
=================== ================ ====================================================

yolov3-tiny and yolov4-tiny-3l are the zoo networks themselves (a few million weights).
yolov4-csp (52 M weights) and yolov4-p6 (127 M) are too big to export in a unit test, so they are
their own cfg with every ``[convolutional]`` ``filters`` divided by :data:`SLIM`
(:func:`slim_cfg`): the same layers, routes, shortcuts, strides, heads, anchors and ``[yolo]``
keys, built as a user's cfg (``build_model(cfg=text)``).
"""

from __future__ import annotations

import re

import torch

from tests.conftest import randomize_
from yolov4 import build_model
from yolov4.models import YOLOv4
from yolov4.models.cfg import read_zoo_cfg

SLIM = 8  # filters divisor of the stand-ins for the big networks
BIG = ("yolov4-csp", "yolov4-p6")

# kind -> (zoo network, input size (H, W): multiples of its largest stride, not square)
KINDS: dict[str, tuple[str, tuple[int, int]]] = {
    "new_coords": ("yolov4-csp", (96, 128)),
    "4 heads": ("yolov4-p6", (128, 192)),
    "stride-1 pool": ("yolov3-tiny", (96, 128)),
    "group routes": ("yolov4-tiny-3l", (96, 128)),
}


def slim_cfg(name: str, divisor: int = SLIM) -> str:
    """Zoo cfg ``name`` with every ``filters=N`` (N a multiple of ``divisor``) divided by it
    (at least 8): the network's structure at a fraction of its weights. The convolutions in
    front of the ``[yolo]`` layers get their filters from the model config anyway."""

    def thinner(m: re.Match) -> str:
        n = int(m.group(2))
        return m.group(1) + str(max(8, n // divisor) if n % divisor == 0 else n)

    return re.sub(r"^(\s*filters\s*=\s*)(\d+)", thinner, read_zoo_cfg(name), flags=re.M)


def calibrate_(model: YOLOv4, input_size, seed: int = 0) -> YOLOv4:
    """Set every BatchNorm's running statistics to those of a batch of random images (in place,
    eval mode after): a deep network with default-initialised convolutions otherwise loses its
    input on the way (its outputs are the head biases everywhere, so every box ties with its
    neighbours and NMS results depend on float noise), as a trained one does not."""
    g = torch.Generator().manual_seed(seed)
    norms = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # a cumulative average: this batch's statistics
    with torch.no_grad():
        model.train()(torch.rand(4, 3, *input_size, generator=g))
    for m in norms:
        m.momentum = 0.1
    return model.eval()


def zoo_model(name: str, num_classes: int = 3, input_size=(128, 128), seed: int = 0) -> YOLOv4:
    """A seeded network of kind ``name`` in eval mode, :func:`randomize_`'d (BN affine and conv
    biases: an untrained model reports boxes) and :func:`calibrate_`'d (its outputs follow its
    input): the zoo network itself, or for :data:`BIG` ones its :func:`slim_cfg` named
    ``<name>-slim``."""
    torch.manual_seed(seed)
    size = list(input_size)
    if name in BIG:
        model = build_model(
            f"{name}-slim", cfg=slim_cfg(name), num_classes=num_classes, input_size=size
        )
    else:
        model = build_model(name, num_classes=num_classes, input_size=size)
    return calibrate_(randomize_(model, seed=seed), size, seed)
