"""darknet's ``get_yolo_box`` decode (src/yolo_layer.c), transcribed in loops."""

from __future__ import annotations

import math

import torch


def loop_decode(
    head: torch.Tensor, anchors, stride: int, g: float, new_coords: bool = False
) -> torch.Tensor:
    """Darknet's get_yolo_box + activations, one scalar at a time, (a, j, i) order. With
    ``new_coords`` the layer input is the conv's logistic output ``sig(t)`` (all channels) and
    get_yolo_box's new_coords branch sizes the box as ``x * x * 4 * anchor``."""
    b_, ch, h, w = head.shape
    a_n = len(anchors)
    k = ch // a_n
    sig = lambda v: 1 / (1 + math.exp(-v))  # noqa: E731
    rows = []
    for b in range(b_):
        per_image = []
        for a in range(a_n):
            for j in range(h):
                for i in range(w):
                    t = [float(head[b, a * k + c, j, i]) for c in range(k)]
                    cx = (i + sig(t[0]) * g - 0.5 * (g - 1)) * stride
                    cy = (j + sig(t[1]) * g - 0.5 * (g - 1)) * stride
                    if new_coords:
                        x = [sig(v) for v in t]
                        bw = x[2] * x[2] * 4 * anchors[a][0]
                        bh = x[3] * x[3] * 4 * anchors[a][1]
                    else:
                        bw = math.exp(t[2]) * anchors[a][0]
                        bh = math.exp(t[3]) * anchors[a][1]
                    per_image.append([cx, cy, bw, bh] + [sig(v) for v in t[4:]])
        rows.append(per_image)
    return torch.tensor(rows, dtype=torch.float64)
