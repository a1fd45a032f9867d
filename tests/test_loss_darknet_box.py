"""The box term's two gradients: ``box_gradient="darknet"`` against a loop transcription of
darknet's ``delta_yolo_box`` / ``dx_box_iou`` (AlexeyAB darknet, src/yolo_layer.c and src/box.c)
in plain Python floats, and ``box_gradient="exact"`` against finite differences."""

from __future__ import annotations

import math

import pytest
import torch

from tests.oracles.darknet_box import (
    dk_delta_yolo_box,
    dk_delta_yolo_box_new_coords,
    dk_dx_box_iou,
)
from yolov4.loss import YoloLoss, darknet_dx_box_iou, iou_loss_gradient
from yolov4.models import ModelConfig
from yolov4.ops.boxes import cxcywh_to_xyxy, paired_box_iou

KINDS = ["iou", "giou", "diou", "ciou"]
HW = (128, 160)  # input height, width


def raw_maps(cfg, batch=1, tw=-8.0):
    maps = []
    for s in cfg.strides:
        m = torch.zeros(batch, cfg.num_anchors, 5 + cfg.num_classes, HW[0] // s, HW[1] // s)
        m[:, :, 2:4] = tw
        maps.append(m)
    return maps


def positives(cfg, target):
    """(level, anchor index, row, col) of the target's positives: objectness pushed up."""
    maps = [m.view(1, cfg.num_outputs, *m.shape[-2:]).requires_grad_() for m in raw_maps(cfg)]
    YoloLoss.from_config(cfg)(maps, target).total.backward()
    found = []
    for level, m in enumerate(maps):
        obj = m.grad.view(cfg.num_anchors, 5 + cfg.num_classes, *m.shape[-2:])[:, 4]
        found += [(level, *idx) for idx in (obj < 0).nonzero().tolist()]
    return found


def box_grads(cfg, target, slot_t, box_gradient, label_smoothing=0.0, cls_logit=0.0, obj=0.0):
    """Run the loss with every positive slot of ``target`` predicting ``slot_t`` (raw tx, ty,
    tw, th); -> {(level, k, j, i): box gradient (4,) float64} and the positives."""
    pos = positives(cfg, target)
    maps = raw_maps(cfg)
    for level, k, j, i in pos:
        maps[level][0, k, :4, j, i] = torch.tensor(slot_t)
        maps[level][0, k, 4, j, i] = obj
        maps[level][0, k, 5:, j, i] = cls_logit
    flat = [m.view(1, cfg.num_outputs, *m.shape[-2:]).requires_grad_() for m in maps]
    loss_fn = YoloLoss.from_config(cfg, label_smoothing, box_gradient=box_gradient)
    loss_fn(flat, target).total.backward()
    out = {}
    for level, k, j, i in pos:
        grad = flat[level].grad.view(cfg.num_anchors, 5 + cfg.num_classes, *maps[level].shape[-2:])
        out[level, k, j, i] = grad[k, :4, j, i].double()
    return out, pos


def darknet_box_delta(cfg, target, slot, slot_t, new_coords=False):
    """The transcription's deltas for one positive slot (float64 (4,)) on the raw map. With
    ``new_coords`` the layer's input is the logistic of the map: darknet's delta on it times the
    conv's logistic gradient ``s * (1 - s)`` (gradient_array)."""
    level, k, j, i = slot
    stride, g = cfg.strides[level], cfg.scale_x_y[level]
    lh, lw = HW[0] // stride, HW[1] // stride
    _, _, x1, y1, x2, y2 = target[0].tolist()
    truth = [(x1 + x2) / 2 / HW[1], (y1 + y2) / 2 / HW[0], (x2 - x1) / HW[1], (y2 - y1) / HW[0]]
    sig = [1 / (1 + math.exp(-v)) for v in slot_t]
    x = [s * g - 0.5 * (g - 1) for s in sig[:2]] + (sig[2:] if new_coords else list(slot_t[2:]))
    anchor = cfg.anchors[cfg.masks[level][k]]
    delta = dk_delta_yolo_box_new_coords if new_coords else dk_delta_yolo_box
    d = delta(
        truth,
        x,
        anchor,
        i,
        j,
        lw,
        lh,
        HW[1],
        HW[0],
        cfg.iou_normalizer[level],
        cfg.iou_loss,
        cfg.max_delta[level],
    )
    if new_coords:
        d = [dk * s * (1 - s) for dk, s in zip(d, sig)]
    return torch.tensor(d, dtype=torch.float64)


# a 40x60 target centred at (50, 50): yolov4-tiny's anchor 2, head 0, cell (3, 3)
BIG = torch.tensor([[0.0, 1.0, 30.0, 20.0, 70.0, 80.0]])
# an 18x22 target centred at (50, 50): anchor 1 (23x27), head 0, cell (3, 3)
SMALL = torch.tensor([[0.0, 1.0, 41.0, 39.0, 59.0, 61.0]])


def to_t(cx, cy, w, h, cell=(3, 3), stride=16, g=1.05, anchor=(37, 58)):
    """Raw (tx, ty, tw, th) of a prediction decoding to the pixel box (cx, cy, w, h)."""
    sx = (cx / stride - cell[0] + (g - 1) / 2) / g
    sy = (cy / stride - cell[1] + (g - 1) / 2) / g
    return (
        math.log(sx / (1 - sx)),
        math.log(sy / (1 - sy)),
        math.log(w / anchor[0]),
        math.log(h / anchor[1]),
    )


CASES = {
    # (target, raw t at the positive, max_delta)
    "overlapping": (BIG, (0.3, -0.4, 0.2, -0.3), None),
    "sticks out right only": (BIG, to_t(56, 50, 40, 50), None),
    "sticks out top only": (BIG, to_t(50, 49, 30, 62), None),
    "disjoint in x": (SMALL, to_t(63, 50, 2, 10, anchor=(23, 27)), None),
    "disjoint in x and y": (SMALL, to_t(63, 63, 2, 2, anchor=(23, 27)), None),
    "wider and flatter": (BIG, (0.1, 0.2, 1.5, -1.0), None),
    "diverged (77,000 px wide)": (BIG, (0.0, 0.0, 7.6, 0.3), None),
    "diverged, max_delta": (BIG, (0.0, 0.0, 12.0, 11.0), 5.0),
    "tiny (0.09 px)": (BIG, (0.5, -0.5, -6.0, -6.5), None),
}


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("case", list(CASES))
def test_darknet_box_gradient_matches_transcription(kind, case):
    target, slot_t, max_delta = CASES[case]
    cfg = ModelConfig.load("yolov4-tiny", num_classes=4, iou_loss=kind, max_delta=max_delta)
    got, pos = box_grads(cfg, target, slot_t, "darknet")
    assert len(pos) == 1  # tiny: the single best anchor
    want = -darknet_box_delta(cfg, target, pos[0], slot_t)  # delta is minus the gradient
    assert want.abs().max() > 1e-12  # IoU/GIoU of a far too large or tiny box: nearly flat
    scale = want.abs().max().item()
    torch.testing.assert_close(got[pos[0]], want, rtol=2e-4, atol=2e-5 * scale)
    if max_delta is not None and kind == "ciou":  # the aspect-ratio push times exp(12)
        assert (got[pos[0]].abs() == max_delta).any()


def test_darknet_and_exact_differ_where_darknet_departs():
    """The departures are real: w/h about twice the exact IoU part; a disjoint small box's
    distance term with darknet's sign; the unscaled aspect-ratio push of a diverged box."""
    target, slot_t, _ = CASES["sticks out right only"]
    cfg = ModelConfig.load("yolov4-tiny", num_classes=4, iou_loss="iou", max_delta=None)
    dk, pos = box_grads(cfg, target, slot_t, "darknet")
    ex, _ = box_grads(cfg, target, slot_t, "exact")
    torch.testing.assert_close(dk[pos[0]][2:], 2 * ex[pos[0]][2:], rtol=1e-4, atol=1e-7)
    torch.testing.assert_close(dk[pos[0]][:2], ex[pos[0]][:2], rtol=1e-4, atol=1e-7)
    cfg = ModelConfig.load("yolov4-tiny", num_classes=4, iou_loss="ciou", max_delta=None)
    target, slot_t, _ = CASES["diverged (77,000 px wide)"]
    dk, pos = box_grads(cfg, target, slot_t, "darknet")
    ex, _ = box_grads(cfg, target, slot_t, "exact")
    assert abs(dk[pos[0]][2]) > 100 * abs(ex[pos[0]][2])


@pytest.mark.parametrize("kind", KINDS)
def test_darknet_dx_box_iou_vectorised_matches_transcription_on_random_boxes(kind):
    g = torch.Generator().manual_seed(1)
    n = 400
    truth = torch.cat(
        (torch.rand(n, 2, generator=g), torch.rand(n, 2, generator=g) * 0.5 + 0.01), 1
    )
    pred = torch.cat(
        (
            truth[:, :2] + torch.randn(n, 2, generator=g) * 0.2,
            torch.rand(n, 2, generator=g) * 0.6 + 1e-3,
        ),
        1,
    ).double()
    got = darknet_dx_box_iou(pred, truth.double(), kind)
    want = [dk_dx_box_iou(p, t, kind) for p, t in zip(pred.tolist(), truth.tolist())]
    torch.testing.assert_close(got, torch.tensor(want, dtype=torch.float64), rtol=1e-9, atol=1e-9)


def test_label_smoothing_divides_box_deltas_by_classes_with_a_positive_delta():
    """averages_yolo_deltas (yolov4.cfg: iou_thresh set): with label smoothing and class
    probabilities below eps/2, every class delta is positive, so the box delta is divided by C;
    exact mode divides by the distinct assigned classes (1); a saturated objectness (delta 0)
    skips darknet's division."""
    cfg = ModelConfig.load("yolov4", num_classes=4, max_delta=None, iou_loss="iou")
    target = torch.tensor([[0.0, 2.0, 20.0, 30.0, 70.0, 90.0]])
    slot_t = (0.2, -0.1, 0.1, 0.2)
    eps = 0.1
    dk, pos = box_grads(cfg, target, slot_t, "darknet", label_smoothing=eps, cls_logit=-6.0)
    assert len(pos) >= 2  # iou_thresh: extra anchors
    for slot in pos:
        want = -darknet_box_delta(cfg, target, slot, slot_t)
        torch.testing.assert_close(dk[slot], want / 4, rtol=2e-4, atol=1e-8)
    ex, _ = box_grads(cfg, target, slot_t, "exact", label_smoothing=eps, cls_logit=-6.0)
    for slot in pos:  # IoU: darknet's x, y are the exact ones, so only the divisor differs
        torch.testing.assert_close(ex[slot][:2], 4 * dk[slot][:2], rtol=1e-4, atol=1e-9)
    # class probability 0.5 > eps / 2: only the target's class delta is positive -> / 1
    one, _ = box_grads(cfg, target, slot_t, "darknet", label_smoothing=eps, cls_logit=0.0)
    sat, _ = box_grads(
        cfg, target, slot_t, "darknet", label_smoothing=eps, cls_logit=-6.0, obj=20.0
    )
    for slot in pos:
        torch.testing.assert_close(one[slot], 4 * dk[slot])
        torch.testing.assert_close(sat[slot], 4 * dk[slot])


def test_darknet_overflowing_box_gives_zero_not_nan():
    cfg = ModelConfig.load("yolov4-tiny", num_classes=4, max_delta=None)
    got, pos = box_grads(cfg, BIG, (0.0, 0.0, 100.0, 0.0), "darknet")  # exp(100) is inf in float32
    assert torch.isfinite(got[pos[0]]).all() and got[pos[0]][2] == 0


def frozen_ciou_loss(rel, truth, alpha):
    """1 - CIoU with alpha a constant (the paper's and the exact mode's convention)."""
    diou = paired_box_iou(cxcywh_to_xyxy(rel), cxcywh_to_xyxy(truth), "diou")
    angle = torch.atan(truth[:, 2] / truth[:, 3]) - torch.atan(rel[:, 2] / rel[:, 3])
    return 1 - diou + alpha * 4 / math.pi**2 * angle**2


@pytest.mark.parametrize("kind", KINDS)
def test_exact_box_gradient_is_the_true_derivative(kind):
    """gradcheck in float64: a function whose value is ``1 - IoU-kind`` and whose autograd
    gradient is :func:`iou_loss_gradient` (exact) passes only if the two agree."""
    g = torch.Generator().manual_seed(2)
    n = 12
    truth = torch.cat(
        (torch.rand(n, 2, generator=g), torch.rand(n, 2, generator=g) * 0.4 + 0.05), 1
    )
    # overlapping, sticking out, disjoint, tiny: away from the kinks of min/max
    offsets = torch.randn(n, 2, generator=g) * 0.15
    sizes = torch.rand(n, 2, generator=g) * 0.5 + 0.002
    rel0 = torch.cat((truth[:, :2] + offsets, sizes), 1).double()
    truth = truth.double()
    if kind == "ciou":
        with torch.no_grad():
            iou = paired_box_iou(cxcywh_to_xyxy(rel0), cxcywh_to_xyxy(truth), "iou")
            angle = torch.atan(truth[:, 2] / truth[:, 3]) - torch.atan(rel0[:, 2] / rel0[:, 3])
            v = 4 / math.pi**2 * angle**2
            alpha = v / (1 - iou + v + 1e-7)

        def value(rel):
            return frozen_ciou_loss(rel, truth, alpha)
    else:

        def value(rel):
            return 1 - paired_box_iou(cxcywh_to_xyxy(rel), cxcywh_to_xyxy(truth), kind)

    def with_project_gradient(rel):
        grad = iou_loss_gradient(rel.detach(), truth, kind, "exact")
        return value(rel).detach() + (grad * (rel - rel.detach())).sum(1)

    rel = rel0.clone().requires_grad_()
    assert torch.autograd.gradcheck(with_project_gradient, (rel,), eps=1e-7, atol=1e-5, rtol=1e-4)

    def with_darknet_gradient(rel):
        grad = iou_loss_gradient(rel.detach(), truth, kind, "darknet")
        return value(rel).detach() + (grad * (rel - rel.detach())).sum(1)

    # darknet's gradient is not the derivative (w/h doubled for every kind)
    assert not torch.autograd.gradcheck(
        with_darknet_gradient, (rel,), eps=1e-7, atol=1e-5, rtol=1e-4, raise_exception=False
    )


# --- new_coords (darknet's [yolo] new_coords=1: the Scaled-YOLOv4 cfgs) ---------------------------


def to_t_new_coords(cx, cy, w, h, cell=(3, 3), stride=16, g=2.0, anchor=(37, 58)):
    """Raw (tx, ty, tw, th) of a new_coords prediction decoding to the pixel box (cx, cy, w, h)."""
    sx = (cx / stride - cell[0] + (g - 1) / 2) / g
    sy = (cy / stride - cell[1] + (g - 1) / 2) / g
    sw, sh = math.sqrt(w / (4 * anchor[0])), math.sqrt(h / (4 * anchor[1]))
    return tuple(math.log(s / (1 - s)) for s in (sx, sy, sw, sh))


NEW_COORDS_CASES = {
    "overlapping": (BIG, (0.3, -0.4, 0.2, -0.3), None),
    "sticks out right only": (BIG, to_t_new_coords(56, 50, 40, 50), None),
    "sticks out top only": (BIG, to_t_new_coords(50, 49, 30, 62), None),
    "disjoint in x": (SMALL, to_t_new_coords(63, 50, 2, 10, anchor=(23, 27)), None),
    "disjoint in x and y": (SMALL, to_t_new_coords(63, 63, 2, 2, anchor=(23, 27)), None),
    "wider and flatter": (BIG, (0.1, 0.2, 1.5, -1.0), None),
    "near the 4-anchor limit": (BIG, (0.0, 0.0, 6.0, 0.3), None),
    "disjoint, max_delta": (SMALL, to_t_new_coords(63, 63, 2, 2, anchor=(23, 27)), 0.01),
    "tiny (0.05 px)": (BIG, (0.5, -0.5, -4.0, -4.5), None),
}


def new_coords_config(kind, max_delta=None):
    return ModelConfig.load(
        "yolov4-tiny",
        num_classes=4,
        iou_loss=kind,
        max_delta=max_delta,
        scale_x_y=[2.0, 2.0],
        new_coords=True,
    )


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("case", list(NEW_COORDS_CASES))
def test_new_coords_darknet_box_gradient_matches_transcription(kind, case):
    target, slot_t, max_delta = NEW_COORDS_CASES[case]
    cfg = new_coords_config(kind, max_delta)
    got, pos = box_grads(cfg, target, slot_t, "darknet")
    assert len(pos) == 1
    want = -darknet_box_delta(cfg, target, pos[0], slot_t, new_coords=True)
    assert want.abs().max() > 1e-12
    scale = want.abs().max().item()
    torch.testing.assert_close(got[pos[0]], want, rtol=2e-4, atol=2e-5 * scale)
    if max_delta is not None and kind != "iou":  # the disjoint box's distance push is clipped
        s = torch.tensor(slot_t, dtype=torch.float64).sigmoid()
        assert ((got[pos[0]] / (s * (1 - s))).abs() - max_delta).abs().min() < 1e-6


def test_new_coords_differs_from_exp_coords():
    """The same raw t is a different box and gradient with new_coords (no exp(tw) factor)."""
    target, slot_t, _ = NEW_COORDS_CASES["overlapping"]
    nc, pos = box_grads(new_coords_config("ciou"), target, slot_t, "darknet")
    cfg = ModelConfig.load("yolov4-tiny", num_classes=4, scale_x_y=[2.0, 2.0], max_delta=None)
    old, pos_old = box_grads(cfg, target, slot_t, "darknet")
    assert pos == pos_old and not torch.allclose(nc[pos[0]], old[pos[0]])


@pytest.mark.parametrize("kind", KINDS)
def test_new_coords_exact_box_gradient_is_the_true_derivative_up_to_darknets_chain(kind):
    """gradcheck in float64 of the exact mode's box term with new_coords w.r.t. raw t: restoring
    the decode factors darknet's chain leaves out (``g * stride / W`` on x, y and
    ``8 * sigmoid(tw) * anchor / W`` on w, h; the logistic derivative is kept) gives the true
    derivative of ``iou_normalizer * (1 - IoU-kind)`` (CIoU's alpha held constant)."""
    gen = torch.Generator().manual_seed(3)
    n, stride, g = 10, 16, 2.0  # head 0 of yolov4-tiny
    scale = torch.tensor([160.0, 128.0, 160.0, 128.0], dtype=torch.float64)
    anchor = torch.tensor([[37.0, 58.0]], dtype=torch.float64).expand(n, 2)
    cell = torch.randint(0, 6, (n, 2), generator=gen).double()
    t0 = torch.randn(n, 4, generator=gen, dtype=torch.float64)
    truth = torch.cat(
        (
            (cell + 0.5) * stride / scale[:2] + torch.randn(n, 2, generator=gen).double() * 0.05,
            torch.rand(n, 2, generator=gen).double() * 0.4 + 0.05,
        ),
        1,
    )
    loss_fn = YoloLoss.from_config(new_coords_config(kind), box_gradient="exact")

    def decode(t):
        s = t.sigmoid()
        xy = (s[:, :2] * g - (g - 1) / 2 + cell) * stride / scale[:2]
        return torch.cat((xy, 4 * s[:, 2:] ** 2 * anchor / scale[2:]), 1)

    rel0 = decode(t0)
    with torch.no_grad():
        iou = paired_box_iou(cxcywh_to_xyxy(rel0), cxcywh_to_xyxy(truth), "iou")
        angle = torch.atan(truth[:, 2] / truth[:, 3]) - torch.atan(rel0[:, 2] / rel0[:, 3])
        v = 4 / math.pi**2 * angle**2
        alpha = v / (1 - iou + v + 1e-7)

    def value(t):
        rel = decode(t)
        if kind == "ciou":
            return loss_fn.iou_normalizer[0] * frozen_ciou_loss(rel, truth, alpha)
        return loss_fn.iou_normalizer[0] * (
            1 - paired_box_iou(cxcywh_to_xyxy(rel), cxcywh_to_xyxy(truth), kind)
        )

    def with_project_gradient(t):
        td = t.detach().requires_grad_()
        val, grad = loss_fn._box_term(0, td, cell, anchor, truth, scale, "exact")
        torch.testing.assert_close(val, value(t.detach()))
        s = td.detach().sigmoid()
        chain = torch.cat(
            (g * stride / scale[:2].expand(n, 2), 8 * s[:, 2:] * anchor / scale[2:]), 1
        )
        return value(t).detach() + (grad * chain * (t - t.detach())).sum(1)

    t = t0.clone().requires_grad_()
    assert torch.autograd.gradcheck(with_project_gradient, (t,), eps=1e-7, atol=1e-6, rtol=1e-4)


def test_new_coords_objectness_and_class_are_darknets_delta_through_the_logistic():
    """Darknet's objectness/class delta ``target - s`` on the layer input ``s`` (the conv's
    logistic output) times the conv's ``s * (1 - s)``: the gradient of ``0.5 * (s - target)^2``."""
    cfg = new_coords_config("ciou")
    maps = raw_maps(cfg)
    torch.manual_seed(0)
    for m in maps:
        m[:, :, 4:] = torch.randn_like(m[:, :, 4:]) * 2
    target, _, _ = NEW_COORDS_CASES["overlapping"]
    flat = [m.view(1, cfg.num_outputs, *m.shape[-2:]).requires_grad_() for m in maps]
    YoloLoss.from_config(cfg)(flat, target).total.backward()
    (level, k, j, i) = positives(cfg, target)[0]
    for lv, (m, f) in enumerate(zip(maps, flat)):
        s = m[0, :, 4:].sigmoid()
        grad = f.grad.view(cfg.num_anchors, 5 + cfg.num_classes, *m.shape[-2:])[:, 4:]
        obj_target = torch.zeros_like(s[:, 0])
        if lv == level:
            obj_target[k, j, i] = 1.0
        delta = (obj_target - s[:, 0]) * s[:, 0] * (1 - s[:, 0])  # no box overlaps: no ignore
        torch.testing.assert_close(grad[:, 0], -delta, rtol=1e-5, atol=1e-7)
        if lv == level:
            cls_t = torch.zeros(cfg.num_classes)
            cls_t[int(target[0, 1])] = 1.0
            sc = s[k, 1:, j, i]
            torch.testing.assert_close(grad[k, 1:, j, i], -(cls_t - sc) * sc * (1 - sc))
