"""darknet's box deltas, transcribed in plain Python floats from AlexeyAB darknet
(src/box.c ``dx_box_iou``, src/yolo_layer.c ``delta_yolo_box``): the reference the loss's
``box_gradient="darknet"`` is checked against."""

from __future__ import annotations

import math

M_PI = 3.14159265358979323846  # math.h


def dk_dx_box_iou(pred, truth, kind):
    """box.c dx_box_iou, one box at a time: ``pred``, ``truth`` (x, y, w, h) relative ->
    (dx, dy, dw, dh), the gradient of the IoU-kind as darknet writes it."""
    px, py, pw, ph = pred
    tx, ty, tw, th = truth
    top, bot, left, right = py - ph / 2, py + ph / 2, px - pw / 2, px + pw / 2
    pred_t, pred_b = min(top, bot), max(top, bot)
    pred_l, pred_r = min(left, right), max(left, right)
    t_top, t_bot, t_left, t_right = ty - th / 2, ty + th / 2, tx - tw / 2, tx + tw / 2
    X = (pred_b - pred_t) * (pred_r - pred_l)
    Xhat = (t_bot - t_top) * (t_right - t_left)
    Ih = min(pred_b, t_bot) - max(pred_t, t_top)
    Iw = min(pred_r, t_right) - max(pred_l, t_left)
    I = Iw * Ih  # noqa: E741 (darknet's name)
    U = X + Xhat - I
    S = (px - tx) ** 2 + (py - ty) ** 2
    giou_Cw = max(pred_r, t_right) - min(pred_l, t_left)
    giou_Ch = max(pred_b, t_bot) - min(pred_t, t_top)
    giou_C = giou_Cw * giou_Ch
    dX = {
        "t": -(pred_r - pred_l),
        "b": pred_r - pred_l,
        "l": -(pred_b - pred_t),
        "r": pred_b - pred_t,
    }
    dI = {
        "t": -Iw if pred_t > t_top else 0.0,
        "b": Iw if pred_b < t_bot else 0.0,
        "l": -Ih if pred_l > t_left else 0.0,
        "r": Ih if pred_r < t_right else 0.0,
    }
    dU = {k: dX[k] - dI[k] for k in "tblr"}
    dC = {
        "t": -giou_Cw if pred_t < t_top else 0.0,
        "b": giou_Cw if pred_b > t_bot else 0.0,
        "l": -giou_Ch if pred_l < t_left else 0.0,
        "r": giou_Ch if pred_r > t_right else 0.0,
    }
    p = {k: 0.0 for k in "tblr"}
    if U > 0:
        p = {k: (U * dI[k] - I * dU[k]) / (U * U) for k in "tblr"}
    p["t"] = p["t"] if top < bot else p["b"]
    p["b"] = p["b"] if top < bot else p["t"]
    p["l"] = p["l"] if left < right else p["r"]
    p["r"] = p["r"] if left < right else p["l"]
    if kind == "giou":
        if giou_C > 0:
            for k in "tblr":
                p[k] += (giou_C * dU[k] - U * dC[k]) / (giou_C * giou_C)
        if Iw <= 0 or Ih <= 0:
            for k in "tblr":
                p[k] = (giou_C * dU[k] - U * dC[k]) / (giou_C * giou_C)
    Ct, Cb = min(py - ph / 2, ty - th / 2), max(py + ph / 2, ty + th / 2)
    Cl, Cr = min(px - pw / 2, tx - tw / 2), max(px + pw / 2, tx + tw / 2)
    Cw, Ch = Cr - Cl, Cb - Ct
    C = Cw * Cw + Ch * Ch
    dCt_dy, dCt_dh = (1.0, -0.5) if pred_t < t_top else (0.0, 0.0)
    dCb_dy, dCb_dh = (1.0, 0.5) if pred_b > t_bot else (0.0, 0.0)
    dCl_dx, dCl_dw = (1.0, -0.5) if pred_l < t_left else (0.0, 0.0)
    dCr_dx, dCr_dw = (1.0, 0.5) if pred_r > t_right else (0.0, 0.0)
    dCw_dx, dCw_dy, dCw_dw, dCw_dh = dCr_dx - dCl_dx, 0.0, dCr_dw - dCl_dw, 0.0
    dCh_dx, dCh_dy, dCh_dw, dCh_dh = 0.0, dCb_dy - dCt_dy, 0.0, dCb_dh - dCt_dh
    p_dx = p["l"] + p["r"]
    p_dy = p["t"] + p["b"]
    p_dw = p["r"] - p["l"]
    p_dh = p["b"] - p["t"]
    if kind in ("diou", "ciou"):
        alpha = ar_dw = ar_dh = 0.0
        if kind == "ciou":
            ar_gt, ar_pred = tw / th, pw / ph
            ar_loss = 4 / (M_PI * M_PI) * (math.atan(ar_gt) - math.atan(ar_pred)) ** 2
            alpha = ar_loss / (1 - I / U + ar_loss + 0.000001)
            ar_dw = 8 / (M_PI * M_PI) * (math.atan(ar_gt) - math.atan(ar_pred)) * ph
            ar_dh = -8 / (M_PI * M_PI) * (math.atan(ar_gt) - math.atan(ar_pred)) * pw
        dist = (
            (2 * (tx - px) * C - (2 * Cw * dCw_dx + 2 * Ch * dCh_dx) * S) / (C * C),
            (2 * (ty - py) * C - (2 * Cw * dCw_dy + 2 * Ch * dCh_dy) * S) / (C * C),
            (2 * Cw * dCw_dw + 2 * Ch * dCh_dw) * S / (C * C) + alpha * ar_dw,
            (2 * Cw * dCw_dh + 2 * Ch * dCh_dh) * S / (C * C) + alpha * ar_dh,
        )
        if C > 0:
            p_dx, p_dy, p_dw, p_dh = p_dx + dist[0], p_dy + dist[1], p_dw + dist[2], p_dh + dist[3]
        if Iw <= 0 or Ih <= 0:
            p_dx, p_dy, p_dw, p_dh = dist
    return p_dx, p_dy, p_dw, p_dh


def dk_delta_yolo_box(
    truth, x, anchor, i, j, lw, lh, net_w, net_h, iou_normalizer, kind, max_delta
):
    """yolo_layer.c delta_yolo_box (IoU-kind branch, no new_coords): ``x`` is the layer output
    at the slot (x, y activated and scaled by scale_x_y; raw tw, th) -> the 4 box deltas."""
    pred = [
        (i + x[0]) / lw,
        (j + x[1]) / lh,
        math.exp(x[2]) * anchor[0] / net_w,
        math.exp(x[3]) * anchor[1] / net_h,
    ]
    pred[2] = pred[2] or 1.0  # "avoid nan in dx_box_iou"
    pred[3] = pred[3] or 1.0
    dx, dy, dw, dh = dk_dx_box_iou(pred, truth, kind)
    dw *= math.exp(x[2])
    dh *= math.exp(x[3])
    out = []
    for d in (dx, dy, dw, dh):
        d *= iou_normalizer
        d = 0.0 if math.isnan(d) or math.isinf(d) else d  # fix_nan_inf
        if max_delta is not None:
            d = max(-max_delta, min(max_delta, d))  # clip_value
        out.append(d)
    return out


def dk_delta_yolo_box_mse(truth, x, anchor, i, j, lw, lh, net_w, net_h, iou_normalizer, new_coords):
    """yolo_layer.c delta_yolo_box, ``iou_loss == MSE`` branch: ``x`` is the layer output at the
    slot (x, y activated and scaled by scale_x_y; tw, th raw, or with new_coords the layer input
    sigmoid(tw), sigmoid(th)) -> the 4 box deltas (no fix_nan_inf, no max_delta)."""
    scale = 2 - truth[2] * truth[3]
    tx = truth[0] * lw - i
    ty = truth[1] * lh - j
    if new_coords:
        tw = math.sqrt(truth[2] * net_w / (4 * anchor[0]))
        th = math.sqrt(truth[3] * net_h / (4 * anchor[1]))
    else:
        tw = math.log(truth[2] * net_w / anchor[0])
        th = math.log(truth[3] * net_h / anchor[1])
    return [scale * (t - v) * iou_normalizer for t, v in zip((tx, ty, tw, th), x)]


def dk_delta_yolo_box_new_coords(
    truth, x, anchor, i, j, lw, lh, net_w, net_h, iou_normalizer, kind, max_delta
):
    """yolo_layer.c delta_yolo_box with new_coords: ``x`` is the layer input at the slot (the
    conv's logistic output; x, y scaled by scale_x_y) -> the 4 box deltas on it. get_yolo_box's
    new_coords branch sizes the box ``x * x * 4 * anchor``; dw, dh get no factor."""
    pred = [
        (i + x[0]) / lw,
        (j + x[1]) / lh,
        x[2] * x[2] * 4 * anchor[0] / net_w,
        x[3] * x[3] * 4 * anchor[1] / net_h,
    ]
    pred[2] = pred[2] or 1.0  # "avoid nan in dx_box_iou"
    pred[3] = pred[3] or 1.0
    out = []
    for d in dk_dx_box_iou(pred, truth, kind):
        d *= iou_normalizer
        d = 0.0 if math.isnan(d) or math.isinf(d) else d  # fix_nan_inf
        if max_delta is not None:
            d = max(-max_delta, min(max_delta, d))  # clip_value
        out.append(d)
    return out
