"""darknet's ``[yolo]`` layer training signal, transcribed in loops from AlexeyAB darknet
(src/yolo_layer.c ``forward_yolo_layer``, show_details=1; src/network.c ``get_network_cost``):
every delta (objectness, classes, boxes of every ``iou_loss``, ``objectness_smooth``,
``new_coords``, ``iou_thresh`` with ``averages_yolo_deltas``) and the cost, with the layer's own
per-head keys. :func:`dk_expected_grad` is the project's gradient that a delta means."""

from __future__ import annotations

import math

import torch

from tests.oracles.darknet_box import (
    dk_delta_yolo_box,
    dk_delta_yolo_box_mse,
    dk_delta_yolo_box_new_coords,
)
from yolov4.loss import IGNORE_CLASS_CONF


def _sig(v):
    return 1 / (1 + math.exp(-v))


def _iou(a, b, kind):
    """darknet's box_iou / box_giou on cxcywh tuples."""
    ax1, ax2, ay1, ay2 = a[0] - a[2] / 2, a[0] + a[2] / 2, a[1] - a[3] / 2, a[1] + a[3] / 2
    bx1, bx2, by1, by2 = b[0] - b[2] / 2, b[0] + b[2] / 2, b[1] - b[3] / 2, b[1] + b[3] / 2
    iw, ih = min(ax2, bx2) - max(ax1, bx1), min(ay2, by2) - max(ay1, by1)
    inter = iw * ih if iw > 0 and ih > 0 else 0.0
    union = a[2] * a[3] + b[2] * b[3] - inter
    iou = inter / union
    if kind != "giou":
        return iou
    c = (max(ax2, bx2) - min(ax1, bx1)) * (max(ay2, by2) - min(ay1, by1))
    return iou - (c - union) / c


def dk_truths(targets, batch, net_hw):
    """Targets ``(M, 6)`` pixels -> darknet's truths per image: ``(class, (x, y, w, h))`` relative."""
    net_h, net_w = net_hw
    truths = [[] for _ in range(batch)]
    for b, c, x1, y1, x2, y2 in targets.tolist():
        box = ((x1 + x2) / 2 / net_w, (y1 + y2) / 2 / net_h, (x2 - x1) / net_w, (y2 - y1) / net_h)
        truths[int(b)].append((int(c), box))
    return truths


def dk_forward_yolo_layer(cfg, level, head, truths, net_hw, label_smooth_eps=None):
    """forward_yolo_layer + process_batch (yolo_layer.c) for head ``level`` of ``cfg``, written out
    in Python floats: ``head`` the project's raw map ``(B, A * (5 + C), H, W)``, ``truths`` from
    :func:`dk_truths`. -> (``l.delta`` ``(B, A, 5 + C, H, W)`` float64 on the layer's input,
    ``l.cost``). With new_coords the layer's input is ``sigmoid(head)`` (the logistic conv's
    output) and the layer activates nothing. ``cls_normalizer`` is not applied (darknet applies it
    only with counters_per_class, which no zoo cfg has);
    ``truth_thresh`` (1.0 in every zoo cfg) is not transcribed."""
    batch, classes = head.shape[0], cfg.num_classes
    mask, g, nc = cfg.masks[level], cfg.scale_x_y[level], cfg.new_coords
    na, lh, lw = len(mask), head.shape[2], head.shape[3]
    net_h, net_w = net_hw
    anchors = [tuple(a) for a in cfg.anchors]
    obj_norm, cls_norm = cfg.obj_normalizer[level], 1.0
    iou_norm, max_delta = cfg.iou_normalizer[level], cfg.max_delta[level]
    iou_thresh = cfg.iou_thresh[level] if cfg.iou_thresh[level] is not None else 1.0
    smooth = cfg.objectness_smooth[level]
    eps = cfg.label_smooth_eps[level] if label_smooth_eps is None else label_smooth_eps
    # l.output: the layer input (sigmoid of the map with new_coords), x, y, obj, classes
    # activated without new_coords, then x, y scaled by scale_x_y
    raw = head.double().view(batch, na, 5 + classes, lh, lw).tolist()
    out = [[[[[0.0] * lw for _ in range(lh)] for _ in range(5 + classes)] for _ in range(na)]
           for _ in range(batch)]  # fmt: skip
    for b in range(batch):
        for n in range(na):
            for k in range(5 + classes):
                for j in range(lh):
                    for i in range(lw):
                        v = raw[b][n][k][j][i]
                        v = _sig(v) if nc or k in (0, 1) or k >= 4 else v
                        out[b][n][k][j][i] = v * g - 0.5 * (g - 1) if k < 2 else v
    delta = torch.zeros(batch, na, 5 + classes, lh, lw, dtype=torch.float64)

    def pred_box(b, n, j, i, anchor):
        x = [out[b][n][k][j][i] for k in range(4)]
        size = [x[2] * x[2] * 4, x[3] * x[3] * 4] if nc else [math.exp(x[2]), math.exp(x[3])]
        return ((i + x[0]) / lw, (j + x[1]) / lh, size[0] * anchor[0] / net_w,
                size[1] * anchor[1] / net_h)  # fmt: skip

    def box_delta(truth, b, n, j, i, anchor):
        x = [out[b][n][k][j][i] for k in range(4)]
        args = (truth, x, anchor, i, j, lw, lh, net_w, net_h, iou_norm)
        if cfg.iou_loss == "mse":
            return dk_delta_yolo_box_mse(*args, nc)
        box = dk_delta_yolo_box_new_coords if nc else dk_delta_yolo_box
        return box(*args, cfg.iou_loss, max_delta)

    def delta_yolo_class(b, n, j, i, cls):
        if delta[b, n, 5 + cls, j, i]:
            y = 1 * (1 - eps) + 0.5 * eps if eps else 1.0
            delta[b, n, 5 + cls, j, i] = cls_norm * (y - out[b][n][5 + cls][j][i])
            return
        for k in range(classes):
            y = 1.0 if k == cls else 0.0
            if eps:
                y = y * (1 - eps) + 0.5 * eps
            delta[b, n, 5 + k, j, i] = cls_norm * (y - out[b][n][5 + k][j][i])

    tot_iou_loss = tot_giou_loss = 0.0
    count = 0
    for b in range(batch):
        for j in range(lh):
            for i in range(lw):
                for n in range(na):
                    pred = pred_box(b, n, j, i, anchors[mask[n]])
                    match = any(out[b][n][5 + k][j][i] > IGNORE_CLASS_CONF for k in range(classes))
                    best_match_iou = 0.0
                    for _, truth in truths[b]:
                        iou = _iou(pred, truth, "iou")
                        if iou > best_match_iou and match:
                            best_match_iou = iou
                    o = out[b][n][4][j][i]
                    delta[b, n, 4, j, i] = obj_norm * (0 - o)
                    if best_match_iou > cfg.ignore_thresh[level]:
                        if smooth:
                            d = obj_norm * (best_match_iou - o)
                            if d > delta[b, n, 4, j, i]:
                                delta[b, n, 4, j, i] = d
                        else:
                            delta[b, n, 4, j, i] = 0
        for cls, truth in truths[b]:
            i, j = min(int(truth[0] * lw), lw - 1), min(int(truth[1] * lh), lh - 1)
            shape = [_iou((0, 0, *truth[2:]), (0, 0, aw / net_w, ah / net_h), "iou")
                     for aw, ah in anchors]  # fmt: skip
            best_n = 0
            for k in range(len(anchors)):
                if shape[k] > shape[best_n]:
                    best_n = k
            for n_all in range(len(anchors)):
                if n_all not in mask or not (n_all == best_n or shape[n_all] > iou_thresh):
                    continue
                n = mask.index(n_all)
                for k, d in enumerate(box_delta(truth, b, n, j, i, anchors[n_all])):
                    delta[b, n, k, j, i] += d
                pred = pred_box(b, n, j, i, anchors[n_all])
                tot_iou_loss += 1 - _iou(pred, truth, "iou")
                tot_giou_loss += 1 - _iou(pred, truth, "giou")
                count += 1
                o = out[b][n][4][j][i]
                if not smooth or delta[b, n, 4, j, i] == 0:
                    delta[b, n, 4, j, i] = obj_norm * (1 - o)
                delta_yolo_class(b, n, j, i, cls)
        if iou_thresh < 1.0:  # averages_yolo_deltas
            for j in range(lh):
                for i in range(lw):
                    for n in range(na):
                        if delta[b, n, 4, j, i] == 0:
                            continue
                        k = int((delta[b, n, 5:, j, i] > 0).sum())
                        if k > 0:
                            delta[b, n, :4, j, i] /= k
    if cfg.iou_loss == "mse":
        cost = float(delta.square().sum())
    else:
        tot = tot_giou_loss if cfg.iou_loss == "giou" else tot_iou_loss
        cost = (iou_norm * tot / count if count else 0.0) + obj_norm * float(
            delta[:, :, 4:].square().sum()
        )
    return delta, cost


def dk_expected_grad(cfg, level, head, delta):
    """The project's gradient of the loss w.r.t. the raw map that darknet's ``delta`` means:
    ``-delta / batch``, through the logistic conv's ``s * (1 - s)`` with new_coords."""
    if cfg.new_coords:
        s = head.double().view(delta.shape).sigmoid()
        delta = delta * s * (1 - s)
    return (-delta / head.shape[0]).view(head.shape)


def darknet_cost_loops(cfg, maps, targets, label_smoothing=None):
    """get_network_cost (mean of l.cost over the [yolo] layers) / batch, from the transcription."""
    batch = maps[0].shape[0]
    net_hw = (maps[0].shape[2] * cfg.strides[0], maps[0].shape[3] * cfg.strides[0])
    truths = dk_truths(targets, batch, net_hw)
    costs = [
        dk_forward_yolo_layer(cfg, level, head, truths, net_hw, label_smoothing)[1]
        for level, head in enumerate(maps)
    ]
    return sum(costs) / len(costs) / batch
