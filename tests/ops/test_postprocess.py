"""Postprocess against torchvision's batched_nms and a loop transcription of darknet's DIoU-NMS."""

from __future__ import annotations

import importlib

import pytest
import torch
import torchvision.ops as tvo

from tests.oracles.darknet_nms import loop_diou_nms
from yolov4.ops.postprocess import diou_nms, nms, postprocess

# the module itself (the package's `postprocess` attribute is the function)
postprocess_module = importlib.import_module("yolov4.ops.postprocess")


def random_predictions(b: int, n: int, c: int, seed: int, size: float = 320.0) -> torch.Tensor:
    """``(B, N, 5 + C)`` decoded-looking predictions: clustered boxes so NMS has work to do."""
    g = torch.Generator().manual_seed(seed)
    centres = torch.rand(b, 6, 2, generator=g) * size
    pick = torch.randint(0, 6, (b, n), generator=g)
    cxcy = (
        centres.gather(1, pick[..., None].expand(-1, -1, 2)) + torch.randn(b, n, 2, generator=g) * 8
    )
    wh = torch.rand(b, n, 2, generator=g) * 80 + 10
    probs = torch.rand(b, n, 1 + c, generator=g)
    return torch.cat((cxcy, wh, probs), dim=-1)


def reference_detections(pred, conf, iou, hw):
    """Per image: every (box, class) pair above ``conf`` -> torchvision batched_nms -> clip."""
    out = []
    for p in pred:
        scores = p[:, 4:5] * p[:, 5:]
        box_idx, labels = (scores > conf).nonzero(as_tuple=True)
        s = scores[box_idx, labels]
        boxes = tvo.box_convert(p[box_idx, :4], "cxcywh", "xyxy")
        keep = tvo.batched_nms(boxes, s, labels, iou)
        boxes = tvo.clip_boxes_to_image(boxes[keep], hw)
        out.append(torch.cat((boxes, s[keep, None], labels[keep, None].float()), 1))
    return out


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_matches_torchvision_batched_nms(seed):
    pred = random_predictions(3, 400, 4, seed)
    before = pred.clone()
    got = postprocess(pred, (320, 288), conf_thresh=0.3, iou_thresh=0.5, max_det=10_000)
    want = reference_detections(pred, 0.3, 0.5, (320, 288))
    assert torch.equal(pred, before)
    for g, w in zip(got, want):
        assert g.shape == w.shape and g.shape[0] > 20
        torch.testing.assert_close(g, w)
        assert (g[:, 4].diff() <= 0).all()


def test_half_and_integer_inputs_are_suppressed_in_float32():
    """fp16 predictions crashed in torchvision's CPU NMS kernel (its docstring promised them);
    integer boxes did too with kind="iou" while kind="diou" kept overlapping boxes."""
    pred = random_predictions(2, 200, 3, 7)
    got = postprocess(pred.half(), (320, 288), conf_thresh=0.3, iou_thresh=0.5, max_det=10_000)
    want = reference_detections(pred.half().float(), 0.3, 0.5, (320, 288))
    for g, w in zip(got, want):  # fp16 scores tie more often: the order of ties may differ
        assert g.dtype == torch.float16 and w.shape[0] > 10 and abs(g.shape[0] - w.shape[0]) <= 2
    boxes = torch.tensor([[0, 0, 10, 10], [1, 1, 11, 11], [50, 50, 60, 60]])
    scores, labels = torch.tensor([0.9, 0.8, 0.7]), torch.zeros(3, dtype=torch.long)
    for kind in ("iou", "diou"):
        assert nms(boxes, scores, labels, 0.5, kind=kind).tolist() == [0, 2]


@pytest.mark.parametrize("beta, n", [(0.6, 300), (1.0, 300), (0.6, 1300)])
@pytest.mark.parametrize("path", ["padded", "blocks"])
def test_diou_nms_matches_loop_reference(beta, n, path, monkeypatch):
    if path == "blocks":  # force the block-by-block path, with blocks spanning classes
        monkeypatch.setattr(postprocess_module, "_DIOU_PADDED_MAX", 0)
        monkeypatch.setattr(postprocess_module, "_DIOU_BLOCK", 128)
    pred = random_predictions(1, n, 3, seed=n)[0].double()
    boxes = tvo.box_convert(pred[:, :4], "cxcywh", "xyxy")
    scores, labels = (
        pred[:, 4],
        torch.randint(0, 3, (n,), generator=torch.Generator().manual_seed(1)),
    )
    got = diou_nms(boxes, scores, labels, 0.45, beta)
    assert got.tolist() == loop_diou_nms(boxes, scores, labels, 0.45, beta)
    # the distance term matters on these inputs: plain IoU-NMS keeps another set
    assert set(got.tolist()) != set(tvo.batched_nms(boxes, scores, labels, 0.45).tolist())


def test_diou_postprocess_normalises_by_the_image_like_darknet():
    pred = random_predictions(1, 300, 2, seed=5, size=200)
    hw = (160, 320)  # non-square: the distance term depends on the normalisation
    got = postprocess(pred, hw, conf_thresh=0.2, nms_kind="diou", max_det=10_000)[0]
    scores = pred[0, :, 4:5] * pred[0, :, 5:]
    box_idx, labels = (scores > 0.2).nonzero(as_tuple=True)
    boxes = tvo.box_convert(pred[0, box_idx, :4], "cxcywh", "xyxy")
    rel = boxes / torch.tensor([320.0, 160.0, 320.0, 160.0])
    keep = loop_diou_nms(rel.double(), scores[box_idx, labels], labels, 0.45, 0.6)
    want = tvo.clip_boxes_to_image(boxes[keep], hw)
    torch.testing.assert_close(got[:, :4], want)


def test_multi_label_keeps_every_class_above_threshold_best_class_only_one():
    pred = torch.tensor([[[50.0, 50.0, 20.0, 20.0, 0.9, 0.8, 0.7, 0.1]]])
    multi = postprocess(pred, (100, 100), conf_thresh=0.5)[0]
    assert multi[:, 5].tolist() == [0.0, 1.0]
    torch.testing.assert_close(multi[:, 4], torch.tensor([0.72, 0.63]))
    torch.testing.assert_close(multi[0, :4], torch.tensor([40.0, 40.0, 60.0, 60.0]))
    single = postprocess(pred, (100, 100), conf_thresh=0.5, multi_label=False)[0]
    assert single.shape == (1, 6) and single[0, 5] == 0


def test_empty_all_below_threshold_and_mixed_batches():
    empty = postprocess(torch.zeros(2, 0, 7), (64, 64))
    assert [d.shape for d in empty] == [(0, 6), (0, 6)]
    pred = random_predictions(3, 50, 2, seed=3)
    pred[1, :, 4] = 0.01  # image 1: every score below the threshold
    for kind in ("iou", "diou"):
        for multi in (True, False):
            out = postprocess(pred, (320, 320), conf_thresh=0.25, nms_kind=kind, multi_label=multi)
            assert len(out) == 3 and out[1].shape == (0, 6)
            assert out[0].shape[0] > 0 and out[2].shape[0] > 0
            assert all(d.dtype == pred.dtype and d.shape[1] == 6 for d in out)
    assert nms(
        torch.zeros(0, 4), torch.zeros(0), torch.zeros(0, dtype=torch.int64), kind="diou"
    ).shape == (0,)


def test_boxes_are_clipped_to_the_image():
    pred = torch.tensor([[[5.0, 95.0, 40.0, 40.0, 0.9, 0.9], [60.0, 40.0, 300.0, 10.0, 0.9, 0.8]]])
    out = postprocess(pred, (100, 120), conf_thresh=0.1)[0]
    torch.testing.assert_close(
        out[:, :4], torch.tensor([[0.0, 75.0, 25.0, 100.0], [0.0, 35.0, 120.0, 45.0]])
    )


def test_caps_candidates_and_detections():
    pred = random_predictions(1, 2000, 5, seed=4)
    # nothing suppressed (IoU > 1 never): the output is the candidate list itself
    out = postprocess(
        pred, (320, 320), conf_thresh=0.001, iou_thresh=1.0, max_candidates=700, max_det=10_000
    )[0]
    scores = (pred[0, :, 4:5] * pred[0, :, 5:]).flatten()
    torch.testing.assert_close(out[:, 4], scores.topk(700).values)
    single = postprocess(
        pred,
        (320, 320),
        conf_thresh=0.001,
        iou_thresh=1.0,
        multi_label=False,
        max_candidates=700,
        max_det=10_000,
    )[0]
    best = (pred[0, :, 4:5] * pred[0, :, 5:]).max(1).values
    torch.testing.assert_close(single[:, 4], best.topk(700).values)
    capped = postprocess(pred, (320, 320), conf_thresh=0.001, max_det=17)[0]
    full = postprocess(pred, (320, 320), conf_thresh=0.001, max_det=10_000)[0]
    assert capped.shape == (17, 6) and full.shape[0] > 17
    torch.testing.assert_close(capped, full[:17])


@pytest.mark.parametrize("seed", [5, 6])
def test_class_filter_applies_before_max_det_and_nms(seed):
    pred = random_predictions(2, 400, 4, seed=seed)
    wanted = torch.tensor([1, 3])
    # reference: the unfiltered output restricted to the wanted classes, no cap
    ref = [
        d[torch.isin(d[:, 5].long(), wanted)]
        for d in reference_detections(pred, 0.2, 0.5, (320, 320))
    ]
    out = postprocess(
        pred, (320, 320), conf_thresh=0.2, iou_thresh=0.5, max_det=10_000, classes=wanted
    )
    for got, want in zip(out, ref):
        torch.testing.assert_close(got, want)
    # max_det counts wanted classes only: capping the filtered list, not filtering a capped one
    capped = postprocess(
        pred, (320, 320), conf_thresh=0.2, iou_thresh=0.5, max_det=5, classes=wanted
    )
    for got, want in zip(capped, ref):
        assert want.shape[0] > 5
        torch.testing.assert_close(got, want[:5])
    # best-class mode keeps boxes whose best class is wanted, as ultralytics' classes=
    kw = dict(conf_thresh=0.2, multi_label=False, max_det=10_000)
    single = postprocess(pred, (320, 320), classes=wanted, **kw)
    best = postprocess(pred, (320, 320), **kw)
    for got, full in zip(single, best):
        assert got.shape[0] > 0
        torch.testing.assert_close(got, full[torch.isin(full[:, 5].long(), wanted)])


def test_unknown_nms_kind_is_rejected():
    with pytest.raises(ValueError, match="nms_kind must be one of"):
        postprocess(torch.zeros(1, 1, 6), (32, 32), nms_kind="soft")
    with pytest.raises(ValueError, match=r"classes must be indices in \[0, 1\), got \[0, 1\]"):
        postprocess(torch.zeros(1, 1, 6), (32, 32), classes=[0, 1])


@pytest.mark.parametrize("seed", [7, 8])
def test_windows_drop_boxes_outside_each_image_before_nms_and_the_caps(seed):
    """Boxes wholly outside each image's window (its place inside the letterbox padding) are
    not candidates: the output equals the postprocess of the same predictions with those boxes'
    objectness zeroed (so a padding box neither suppresses a box of the image that it overlaps
    nor takes a max_det place), and max_det caps what is left."""
    from yolov4.ops.letterbox import image_windows

    pred = random_predictions(2, 400, 3, seed=seed)
    params, sizes = [(1.0, 1.0, 0.0, 100.0), (1.0, 1.0, 80.0, 0.0)], [(120, 320), (320, 160)]
    windows = image_windows(params, sizes)
    torch.testing.assert_close(windows, torch.tensor([[0, 100, 320, 220], [80, 0, 240, 320.0]]))
    xyxy = tvo.box_convert(pred[..., :4], "cxcywh", "xyxy")
    w = windows[:, None]
    inside = (torch.minimum(xyxy[..., 2], w[..., 2]) > torch.maximum(xyxy[..., 0], w[..., 0])) & (
        torch.minimum(xyxy[..., 3], w[..., 3]) > torch.maximum(xyxy[..., 1], w[..., 1])
    )
    assert 0 < inside.sum() < inside.numel()
    zeroed = pred.clone()
    zeroed[..., 4] *= inside
    kw = dict(conf_thresh=0.2, iou_thresh=0.5)
    want = postprocess(zeroed, (320, 320), max_det=10_000, **kw)
    got = postprocess(pred, (320, 320), max_det=10_000, windows=windows, **kw)
    capped = postprocess(pred, (320, 320), max_det=4, windows=windows, **kw)
    for g, c, ref in zip(got, capped, want):
        assert ref.shape[0] > 4
        torch.testing.assert_close(g, ref)
        torch.testing.assert_close(c, ref[:4])


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("multi_label", [True, False])
def test_agnostic_nms_matches_torchvision_nms_over_all_classes(seed, multi_label):
    """``agnostic_nms``: the candidates of every class go through one torchvision ``nms``
    (any better box suppresses, whatever its class); the class-wise NMS keeps more boxes."""
    pred = random_predictions(2, 400, 4, seed)
    got = postprocess(pred, (320, 288), 0.3, 0.5, multi_label, agnostic_nms=True, max_det=10_000)
    classwise = postprocess(pred, (320, 288), 0.3, 0.5, multi_label, max_det=10_000)
    for p, g, c in zip(pred, got, classwise, strict=True):
        scores = p[:, 4:5] * p[:, 5:]
        if not multi_label:  # each box's best class only
            scores = scores * (scores == scores.amax(1, keepdim=True))
        box_idx, labels = (scores > 0.3).nonzero(as_tuple=True)
        s = scores[box_idx, labels]
        boxes = tvo.box_convert(p[box_idx, :4], "cxcywh", "xyxy")
        keep = tvo.nms(boxes, s, 0.5)
        want = torch.cat((tvo.clip_boxes_to_image(boxes[keep], (320, 288)), s[keep, None]), 1)
        assert g.shape[0] > 5
        torch.testing.assert_close(g[:, :5], want)
        torch.testing.assert_close(g[:, 5], labels[keep].float())
        assert c.shape[0] > g.shape[0]


def test_agnostic_diou_nms_is_the_diou_nms_of_one_class():
    pred = random_predictions(1, 300, 3, seed=9)
    hw = (256, 320)
    got = postprocess(pred, hw, conf_thresh=0.2, nms_kind="diou", agnostic_nms=True)[0]
    scores = pred[0, :, 4:5] * pred[0, :, 5:]
    box_idx, labels = (scores > 0.2).nonzero(as_tuple=True)
    boxes = tvo.box_convert(pred[0, box_idx, :4], "cxcywh", "xyxy")
    rel = boxes / torch.tensor([320.0, 256.0, 320.0, 256.0])
    one_class = torch.zeros_like(labels)
    keep = loop_diou_nms(rel.double(), scores[box_idx, labels], one_class, 0.45, 0.6)
    torch.testing.assert_close(got[:, :4], tvo.clip_boxes_to_image(boxes[keep], hw))
    assert got[:, 5].tolist() == labels[keep].float().tolist()
    assert len(set(got[:, 5].tolist())) > 1  # the classes are kept, only the NMS ignores them
