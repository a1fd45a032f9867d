"""Darknet's class balance (``[yolo] counters_per_class``) in the loss, against a loop
transcription of darknet's C (``get_classes_multipliers`` in parser.c; ``delta_yolo_class`` and
the positive writes of ``process_batch`` in yolo_layer.c) written here as the reference."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from yolov4.loss import YoloLoss
from yolov4.models import ModelConfig
from yolov4.models.class_balance import class_multipliers

HW = (256, 256)
COUNTS = (400, 30, 7, 90)


def darknet_multipliers(counts, max_delta=None) -> list[float]:
    """parser.c get_classes_multipliers, one value at a time in float32."""
    counts = [max(c, 1) for c in counts]
    top = np.float32(max(counts))
    out = []
    for c in counts:
        m = top / np.float32(c)
        if max_delta is not None and m > max_delta:
            m = np.float32(max_delta)
        out.append(float(m))
    return out


def darknet_slots(cfg: ModelConfig, targets: torch.Tensor, level: int) -> list[tuple]:
    """process_batch's truth loop for one layer, in darknet's order: per truth, its best anchor
    (over all anchors) if in this layer's mask, then the iou_thresh extras. ``[(t, slot)]`` with
    slot ``(image, mask index, row, col)``."""
    out = []
    stride, mask = cfg.strides[level], cfg.masks[level]
    for t, (img, _, x1, y1, x2, y2) in enumerate(targets.tolist()):
        w, h = x2 - x1, y2 - y1
        i, j = int((x1 + x2) / 2 / stride), int((y1 + y2) / 2 / stride)

        def shape_iou(n, w=w, h=h):
            aw, ah = cfg.anchors[n]
            inter = min(w, aw) * min(h, ah)
            return inter / (w * h + aw * ah - inter)

        best_iou, best_n = 0.0, 0
        for n in range(len(cfg.anchors)):
            if shape_iou(n) > best_iou:
                best_iou, best_n = shape_iou(n), n
        if best_n in mask:
            out.append((t, (int(img), mask.index(best_n), j, i)))
        thresh = cfg.iou_thresh[level]
        for k, n in enumerate(mask):
            if thresh is not None and n != best_n and shape_iou(n) > thresh:
                out.append((t, (int(img), k, j, i)))
    return out


def darknet_positive_deltas(cfg, maps, targets, mults, cls_norm, obj_norm, eps):
    """``{(level, slot): (class deltas [C], objectness delta)}`` of darknet's positives with
    ``classes_multipliers`` (``mults[level]``; yolo_layer.c delta_yolo_class and the positive
    objectness write, objectness_smooth off), from the sigmoid outputs of ``maps``."""
    c = cfg.num_classes
    out = {}
    for level, m in enumerate(maps):
        mult = mults[level]
        p = m.detach().view(m.shape[0], cfg.num_anchors, 5 + c, *m.shape[2:]).sigmoid()
        delta: dict[tuple, list[float]] = {}
        obj: dict[tuple, float] = {}
        for t, slot in darknet_slots(cfg, targets, level):
            b, a, j, i = slot
            cls_id = int(targets[t, 1])
            o = p[b, a, 5:, j, i].tolist()
            obj[slot] = mult[cls_id] * obj_norm * (1 - float(p[b, a, 4, j, i]))
            d = delta.setdefault(slot, [0.0] * c)
            if d[cls_id]:  # delta_yolo_class: this class already has a delta at the slot
                y = 1 * (1 - eps) + 0.5 * eps if eps else 1.0
                d[cls_id] = (y - o[cls_id]) * mult[cls_id]
                continue
            for n in range(c):
                y = 1.0 if n == cls_id else 0.0
                if eps:
                    y = y * (1 - eps) + 0.5 * eps
                d[n] = y - o[n]
                if n == cls_id:
                    d[n] *= mult[cls_id] * cls_norm
        for slot in delta:
            out[(level, slot)] = (delta[slot], obj[slot])
    return out


def project_deltas(loss_fn, maps, targets):
    """``-B * d(loss)/d(map)`` per level as ``(B, A, 5 + C, H, W)``: darknet's delta."""
    leaves = [m.detach().clone().requires_grad_() for m in maps]
    loss_fn(leaves, targets).total.backward()
    b, c = maps[0].shape[0], loss_fn.num_classes
    return [(-b * x.grad).view(b, -1, 5 + c, *x.shape[2:]) for x in leaves]


def make_case(cfg: ModelConfig, seed: int):
    """Random maps and targets: random boxes, plus pairs in one slot (same box) of different
    classes and of the same class (darknet's rewrite rule for a class already written)."""
    g = torch.Generator().manual_seed(seed)
    maps = [
        torch.randn(2, cfg.num_outputs, HW[0] // s, HW[1] // s, generator=g) for s in cfg.strides
    ]
    rows = []
    for k in range(14):
        wh = (torch.rand(2, generator=g) ** 2 * 200 + 6).tolist()
        xy = (torch.rand(2, generator=g) * (torch.tensor(HW) - torch.tensor(wh))).tolist()
        box = [xy[0], xy[1], xy[0] + wh[0], xy[1] + wh[1]]
        rows.append([k % 2, int(torch.randint(0, 4, (1,), generator=g)), *box])
        if k in (3, 6):  # same box, another class
            rows.append([k % 2, (rows[-1][1] + 1) % 4, *box])
        if k in (4, 9):  # same box, same class
            rows.append(list(rows[-1]))
    return maps, torch.tensor(rows, dtype=torch.float32)


def balanced(cfg: ModelConfig, **changes) -> ModelConfig:
    heads = len(cfg.strides)
    return dataclasses.replace(cfg, counters_per_class=(COUNTS,) * heads, **changes)


TINY = ModelConfig.load("yolov4-tiny", num_classes=4, input_size=list(HW))
YOLOV4 = ModelConfig.load("yolov4", num_classes=4, input_size=list(HW))


def test_multipliers_are_darknets_formula_capped_at_max_delta():
    assert class_multipliers(COUNTS).tolist() == darknet_multipliers(COUNTS)
    assert class_multipliers(COUNTS, 5.0).tolist() == darknet_multipliers(COUNTS, 5.0)
    assert darknet_multipliers(COUNTS, 5.0) == [1.0, 5.0, 5.0, pytest.approx(400 / 90)]
    # the loss takes each head's max_delta (yolov4.cfg: 5, capping 13.3 and 57.1)
    loss_fn = YoloLoss.from_config(balanced(YOLOV4))
    for level, md in enumerate(YOLOV4.max_delta):
        assert loss_fn.class_multipliers[level].tolist() == darknet_multipliers(COUNTS, md)


@pytest.mark.parametrize(
    "cfg,eps,cls_norm",
    [(TINY, 0.0, 1.0), (TINY, 0.1, 0.5), (YOLOV4, 0.0, 0.5)],
    ids=["tiny", "tiny-smooth-cls0.5", "yolov4-cls0.5"],
)
def test_class_and_objectness_deltas_match_the_darknet_transcription(cfg, eps, cls_norm):
    heads = len(cfg.strides)
    loss_fn = YoloLoss.from_config(balanced(cfg, cls_normalizer=(cls_norm,) * heads), eps)
    plain = YoloLoss.from_config(cfg, eps)
    maps, targets = make_case(cfg, seed=3)
    ours, unbalanced = project_deltas(loss_fn, maps, targets), project_deltas(plain, maps, targets)
    mults = [darknet_multipliers(COUNTS, md) for md in cfg.max_delta]
    ref = darknet_positive_deltas(cfg, maps, targets, mults, cls_norm, 1.0, eps)
    assert len(ref) > 10
    for (level, (b, a, j, i)), (cls_delta, obj_delta) in ref.items():
        got = ours[level][b, a, :, j, i]
        torch.testing.assert_close(got[5:], torch.tensor(cls_delta), rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(got[4], torch.tensor(obj_delta), rtol=1e-5, atol=1e-6)
    # the slots several truths share (darknet's rewrite rule) are among them
    pairs = [s for level in range(heads) for _, s in darknet_slots(cfg, targets, level)]
    assert len(pairs) - len(set(pairs)) >= 2
    # and the balance changes the deltas (the check can fail): not the unbalanced loss's
    changed = [
        not torch.allclose(ours[lv][b, a, 5:, j, i], unbalanced[lv][b, a, 5:, j, i])
        for (lv, (b, a, j, i)) in ref
    ]
    assert sum(changed) > len(ref) // 2


@pytest.mark.parametrize("cfg", [TINY, YOLOV4], ids=["tiny", "yolov4"])
@pytest.mark.parametrize("iou_loss", ["ciou", "mse"])
def test_box_deltas_scale_by_the_targets_class_multiplier(cfg, iou_loss):
    """A slot with one truth: its box delta is the unbalanced one times ``m_c`` (no max_delta
    clip here; darknet passes ``iou_normalizer * m_c`` into delta_yolo_box)."""
    heads = len(cfg.strides)
    base = dataclasses.replace(cfg, max_delta=(None,) * heads, iou_loss=iou_loss)
    ours = project_deltas(YoloLoss.from_config(balanced(base)), *make_case(cfg, 5))
    plain = project_deltas(YoloLoss.from_config(base), *make_case(cfg, 5))
    _, targets = make_case(cfg, 5)
    mult = darknet_multipliers(COUNTS)
    checked = set()
    for level in range(heads):
        pairs = darknet_slots(cfg, targets, level)
        for t, slot in pairs:
            if [s for _, s in pairs].count(slot) > 1:
                continue
            b, a, j, i = slot
            want = plain[level][b, a, :4, j, i] * mult[int(targets[t, 1])]
            torch.testing.assert_close(ours[level][b, a, :4, j, i], want, rtol=1e-5, atol=1e-6)
            checked.add(int(targets[t, 1]))
    assert len(checked) >= 3  # several classes, several multipliers


def test_max_delta_clips_the_scaled_box_delta():
    """Darknet clips ``iou_normalizer * m_c * d`` at max_delta (after the multiplier)."""
    md = 0.05
    base = dataclasses.replace(TINY, max_delta=(md, md), iou_loss="ciou")
    maps, targets = make_case(TINY, 5)
    ours = project_deltas(YoloLoss.from_config(balanced(base)), maps, targets)
    free = dataclasses.replace(base, max_delta=(None, None))
    unclipped = project_deltas(YoloLoss.from_config(balanced(free)), maps, targets)
    for got, raw in zip(ours, unclipped, strict=True):
        box, raw_box = got[:, :, :4], raw[:, :, :4]
        assert box.abs().max() <= md * (1 + 1e-6)
        assert (raw_box.abs() > md).any()


def test_no_counters_keeps_the_loss_unchanged_and_cls_normalizer_inert():
    """Without counters_per_class the cfg's cls_normalizer does nothing (as in darknet)."""
    maps, targets = make_case(TINY, 7)
    half = dataclasses.replace(TINY, cls_normalizer=(0.5, 0.5))
    a = project_deltas(YoloLoss.from_config(TINY), maps, targets)
    b = project_deltas(YoloLoss.from_config(half), maps, targets)
    for x, y in zip(a, b, strict=True):
        assert torch.equal(x, y)


def test_images_without_targets_are_unaffected():
    maps, _ = make_case(TINY, 9)
    empty = torch.zeros(0, 6)
    a = YoloLoss.from_config(balanced(TINY))(maps, empty)
    b = YoloLoss.from_config(TINY)(maps, empty)
    assert torch.equal(a.total, b.total) and a.total > 0
