"""darknet's ``detector calc_anchors`` transcribed loop for loop (AlexeyAB darknet, ``src/detector.c``
``calc_anchors`` and ``src/matrix.c`` ``do_kmeans``, ``dist``, ``closest_center``,
``kmeans_expectation``, ``kmeans_maximization``), float32 scalars throughout as in the C: the
reference the project's vectorised ``yolov4.anchors`` is checked against."""

from __future__ import annotations

import numpy as np

F = np.float32


def dist(x: list, y: list) -> np.float32:
    mw = x[0] if x[0] < y[0] else y[0]
    mh = x[1] if x[1] < y[1] else y[1]
    inter = F(mw * mh)
    s = F(F(x[0] * x[1]) + F(y[0] * y[1]))
    un = F(s - inter)
    return F(F(1) - F(inter / un))


def closest_center(datum: list, centers: list) -> int:
    best = 0
    best_dist = dist(datum, centers[best])
    for j in range(len(centers)):
        d = dist(datum, centers[j])
        if d < best_dist:
            best_dist, best = d, j
    return best


def kmeans_expectation(data: list, assignments: list, centers: list) -> bool:
    converged = True
    for i, datum in enumerate(data):
        closest = closest_center(datum, centers)
        if closest != assignments[i]:
            converged = False
        assignments[i] = closest
    return converged


def kmeans_maximization(data: list, assignments: list, centers: list) -> None:
    old = [list(c) for c in centers]
    counts = [0] * len(centers)
    for c in centers:
        c[0], c[1] = F(0), F(0)
    for i, datum in enumerate(data):
        counts[assignments[i]] += 1
        for j in range(2):
            centers[assignments[i]][j] = F(centers[assignments[i]][j] + datum[j])
    for i, c in enumerate(centers):
        if counts[i]:
            for j in range(2):
                c[j] = F(c[j] / F(counts[i]))
    for i, c in enumerate(centers):
        for j in range(2):
            if c[j] == 0:
                c[j] = old[i][j]


def do_kmeans(data: np.ndarray, initial: np.ndarray) -> list:
    """``do_kmeans`` from the given initial centres (darknet draws them with rand())."""
    rows = [[F(v) for v in d] for d in data]
    centers = [[F(v) for v in c] for c in initial]
    assignments = [0] * len(rows)
    if len(centers) == 1:
        kmeans_maximization(rows, assignments, centers)
    i = 0
    while i < 1000 and not kmeans_expectation(rows, assignments, centers):
        kmeans_maximization(rows, assignments, centers)
        i += 1
    return centers


def avg_iou(boxes: np.ndarray, centers: np.ndarray) -> np.float32:
    """The figure calc_anchors prints: ``100 * sum(best IoU) / number_of_boxes``, float32."""
    total = F(0)
    for box_w, box_h in boxes.astype(F):
        min_dist, best_iou = F(np.finfo(F).max), F(0)
        for anchor_w, anchor_h in centers.astype(F):
            min_w = box_w if box_w < anchor_w else anchor_w
            min_h = box_h if box_h < anchor_h else anchor_h
            box_intersect = F(min_w * min_h)
            box_union = F(F(F(box_w * box_h) + F(anchor_w * anchor_h)) - box_intersect)
            iou = F(box_intersect / box_union)
            distance = F(F(1) - iou)
            if distance < min_dist:
                min_dist, best_iou = distance, iou
        if not (best_iou > 1 or best_iou < 0):
            total = F(total + best_iou)
    return F(F(F(100) * total) / F(len(boxes)))
