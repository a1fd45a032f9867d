"""darknet's ``[Gaussian_yolo]`` inference (src/gaussian_yolo_layer.c): ``forward_gaussian_yolo_layer``
on the flat output buffer and ``get_gaussian_yolo_detections``, transcribed in numpy loops.
Independent of yolov4's decode: it indexes darknet's buffer the way darknet does."""

from __future__ import annotations

import math

import numpy as np


def _logistic(v: np.ndarray) -> np.ndarray:
    return (1.0 / (1.0 + np.exp(-v.astype(np.float64)))).astype(np.float32)


def forward(head: np.ndarray, n: int, classes: int, scale_x_y: float) -> np.ndarray:
    """``forward_gaussian_yolo_layer`` of one image's input ``(n * (9 + classes), h, w)``: the
    layer's flat ``l.output`` (float32)."""
    _, h, w = head.shape
    out = head.astype(np.float32).reshape(-1).copy()
    hw = h * w

    def entry(a: int, e: int) -> int:  # entry_gaussian_index(l, 0, a * w * h, e)
        return a * hw * (8 + classes + 1) + e * hw

    for a in range(n):
        for first, count, shift in ((0, 2, True), (2, 2, True), (5, 1, False), (7, 1, False),
                                    (8, 1 + classes, False)):  # fmt: skip
            i = entry(a, first)
            out[i : i + count * hw] = _logistic(out[i : i + count * hw])
            if shift:  # scal_add_cpu over the mean alone (x or y), not its sigma
                out[i : i + hw] = out[i : i + hw] * scale_x_y - 0.5 * (scale_x_y - 1)
    return out


def detections(
    out: np.ndarray,
    n: int,
    classes: int,
    h: int,
    w: int,
    anchors: list[tuple[float, float]],
    net_hw: tuple[int, int],
    thresh: float,
) -> list[dict]:
    """``get_gaussian_yolo_detections`` (yolo_point center, relative boxes, no letterbox: the
    image is the network input): one dict per (cell, anchor) whose objectness exceeds
    ``thresh``, with ``cell`` (anchor, row, col), ``bbox`` (x, y, w, h relative), ``objectness``
    and ``prob`` (per class, 0 at or under ``thresh``)."""
    neth, netw = net_hw
    hw = h * w

    def entry(a: int, loc: int, e: int) -> int:
        return a * hw * (8 + classes + 1) + e * hw + loc

    dets = []
    for loc in range(hw):
        row, col = loc // w, loc % w
        for a in range(n):
            objectness = out[entry(a, loc, 8)]
            if objectness <= thresh:
                continue
            x = [out[entry(a, loc, e)] for e in range(8)]
            bw = math.exp(x[4]) * anchors[a][0] / netw
            bh = math.exp(x[6]) * anchors[a][1] / neth
            bx = (col + x[0]) / w
            by = (row + x[2]) / h
            uc_aver = (x[1] + x[3] + x[5] + x[7]) / 4.0
            prob = []
            for c in range(classes):
                p = objectness * out[entry(a, loc, 9 + c)] * (1.0 - uc_aver)
                prob.append(p if p > thresh else 0.0)
            dets.append(
                {
                    "cell": (a, row, col),
                    "bbox": (bx, by, bw, bh),
                    "objectness": float(objectness),
                    "prob": prob,
                }
            )
    return dets
