"""YoloLoss.darknet_cost: darknet's charted loss (get_network_cost / batch), checked against a loop
transcription of darknet's forward_yolo_layer deltas and cost (show_details=1, its default)."""

from __future__ import annotations

import math

import pytest
import torch

from yolov4 import build_model
from yolov4.loss import IGNORE_CLASS_CONF, YoloLoss


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


def darknet_cost_loops(cfg, maps, targets, label_smoothing=0.0):
    """forward_yolo_layer (yolo_layer.c) written out: per layer the objectness/class deltas
    (``target - sigmoid``, ignore rule, label smoothing), tot_iou_loss / count over the
    (target, anchor) pairs, ``l.cost``; then get_network_cost (mean) / batch."""
    sig = lambda v: 1 / (1 + math.exp(-v))  # noqa: E731
    batch, classes = maps[0].shape[0], cfg.num_classes
    anchors = [tuple(a) for a in cfg.anchors]
    truths = [[] for _ in range(batch)]
    for b, c, x1, y1, x2, y2 in targets.tolist():
        truths[int(b)].append((int(c), ((x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1)))
    iou_thresh = cfg.iou_thresh if cfg.iou_thresh is not None else 1.0
    costs = []
    for level, head in enumerate(maps):
        mask, stride, g = cfg.masks[level], cfg.strides[level], cfg.scale_x_y[level]
        na, h, w = len(mask), head.shape[2], head.shape[3]
        p = head.double().view(batch, na, 5 + classes, h, w)

        def box(b, n, j, i, p=p, mask=mask, stride=stride, g=g):
            tx, ty, tw, th = (float(p[b, n, k, j, i]) for k in range(4))
            aw, ah = anchors[mask[n]]
            cx = (i + sig(tx) * g - (g - 1) / 2) * stride
            cy = (j + sig(ty) * g - (g - 1) / 2) * stride
            return (cx, cy, math.exp(tw) * aw, math.exp(th) * ah)

        delta = torch.zeros(batch, na, 5 + classes, h, w, dtype=torch.float64)
        tot, count = 0.0, 0
        for b in range(batch):
            for j in range(h):
                for i in range(w):
                    for n in range(na):
                        pred = box(b, n, j, i)
                        best = max((_iou(pred, t, "iou") for _, t in truths[b]), default=0.0)
                        obj = sig(float(p[b, n, 4, j, i]))
                        delta[b, n, 4, j, i] = cfg.obj_normalizer * (0 - obj)
                        confident = any(
                            sig(float(p[b, n, 5 + k, j, i])) > IGNORE_CLASS_CONF
                            for k in range(classes)
                        )
                        if best > cfg.ignore_thresh and confident:
                            delta[b, n, 4, j, i] = 0
            for cls, t in truths[b]:
                shape = [_iou((0, 0, *t[2:]), (0, 0, *a), "iou") for a in anchors]
                best_n = max(range(len(anchors)), key=lambda k: (shape[k], -k))
                i = min(int(t[0] / stride), w - 1)
                j = min(int(t[1] / stride), h - 1)
                for n_all in range(len(anchors)):
                    if n_all not in mask or not (n_all == best_n or shape[n_all] > iou_thresh):
                        continue
                    n = mask.index(n_all)
                    tot += 1 - _iou(box(b, n, j, i), t, "giou" if cfg.iou_loss == "giou" else "iou")
                    count += 1
                    obj = sig(float(p[b, n, 4, j, i]))
                    delta[b, n, 4, j, i] = cfg.obj_normalizer * (1 - obj)
                    # delta_yolo_class: a slot that has class deltas only gets its class set
                    ks = [cls] if delta[b, n, 5 + cls, j, i] else range(classes)
                    for k in ks:
                        y = 1.0 if k == cls else 0.0
                        if label_smoothing:
                            y = y * (1 - label_smoothing) + 0.5 * label_smoothing
                        delta[b, n, 5 + k, j, i] = cfg.cls_normalizer * (
                            y - sig(float(p[b, n, 5 + k, j, i]))
                        )
        cls_obj = cfg.obj_normalizer * float(delta[:, :, 4:].square().sum())
        costs.append((cfg.iou_normalizer * tot / count if count else 0.0) + cls_obj)
    return sum(costs) / len(costs) / batch


def case(name, seed):
    torch.manual_seed(seed)
    cfg = build_model(name, num_classes=3, input_size=[64, 64]).config
    maps = [
        torch.randn(2, len(m) * 8, 64 // s, 64 // s) * 1.5
        for m, s in zip(cfg.masks, cfg.strides, strict=True)
    ]
    targets = torch.tensor(
        [
            [0, 1, 5.0, 5.0, 30.0, 40.0],
            [0, 2, 20.0, 8.0, 60.0, 30.0],
            [1, 0, 2.0, 40.0, 12.0, 63.0],
            [1, 1, 30.0, 30.0, 34.0, 36.0],
        ]
    )
    return cfg, maps, targets


@pytest.mark.parametrize("name", ["yolov4-tiny", "yolov4"])
@pytest.mark.parametrize("box_gradient", ["darknet", "exact"])
def test_darknet_cost_matches_loop_transcription(name, box_gradient):
    cfg, maps, targets = case(name, 0)
    loss_fn = YoloLoss.from_config(cfg, box_gradient=box_gradient)
    got = loss_fn.darknet_cost(maps, targets)
    want = darknet_cost_loops(cfg, maps, targets)
    assert got.shape == () and not got.requires_grad
    assert float(got) == pytest.approx(want, rel=1e-5)


def test_darknet_cost_without_targets_is_the_no_object_push():
    cfg, maps, _ = case("yolov4-tiny", 1)
    empty = torch.zeros(0, 6)
    got = YoloLoss.from_config(cfg).darknet_cost(maps, empty)
    assert float(got) == pytest.approx(darknet_cost_loops(cfg, maps, empty), rel=1e-5)


def test_darknet_cost_with_label_smoothing():
    cfg, maps, targets = case("yolov4", 2)
    got = YoloLoss.from_config(cfg, label_smoothing=0.1).darknet_cost(maps, targets)
    want = darknet_cost_loops(cfg, maps, targets, label_smoothing=0.1)
    assert float(got) == pytest.approx(want, rel=1e-5)
