"""Box ops against torchvision's independent implementations, degenerate and fp16 boxes included."""

from __future__ import annotations

import pytest
import torch
import torchvision.ops as tvo

from yolov4.ops import boxes as B


def random_boxes(n: int, seed: int, degenerate: bool = True) -> torch.Tensor:
    """``(n, 4)`` float64 xyxy pixel boxes; with ``degenerate`` a third have zero width, height
    or both, and a few coincide exactly with another box."""
    g = torch.Generator().manual_seed(seed)
    xy = torch.rand(n, 2, generator=g, dtype=torch.float64) * 400
    wh = torch.rand(n, 2, generator=g, dtype=torch.float64) * 200 + 0.5
    if degenerate:
        wh[0::6, 0] = 0
        wh[1::6, 1] = 0
        wh[2::6] = 0
    out = torch.cat((xy, xy + wh), dim=1)
    if degenerate:
        same = torch.arange(5, n, 6)
        out[same] = out[same - 1]
    return out


PAIRWISE = [
    (B.box_iou, tvo.box_iou),
    (B.generalized_box_iou, tvo.generalized_box_iou),
    (B.distance_box_iou, tvo.distance_box_iou),
    (B.complete_box_iou, tvo.complete_box_iou),
]


@pytest.mark.parametrize("ours, ref", PAIRWISE, ids=lambda f: getattr(f, "__name__", ""))
def test_pairwise_matches_torchvision(ours, ref):
    b1, b2 = random_boxes(60, 0), random_boxes(45, 1)
    got, want = ours(b1, b2), ref(b1, b2)
    assert got.shape == (60, 45) and got.dtype == torch.float64
    assert torch.isfinite(got).all()
    finite = torch.isfinite(want)
    assert finite.float().mean() > 0.5  # two zero-area boxes give NaN in torchvision
    torch.testing.assert_close(got[finite], want[finite], atol=1e-5, rtol=0)


def test_pairwise_batched_dims_and_float32():
    b1 = random_boxes(24, 2, degenerate=False).float().view(2, 12, 4)
    b2 = random_boxes(10, 3, degenerate=False).float().view(2, 5, 4)
    got = B.box_iou(b1, b2)
    assert got.shape == (2, 12, 5) and got.dtype == torch.float32
    for i in range(2):
        torch.testing.assert_close(got[i], tvo.box_iou(b1[i], b2[i]), atol=1e-5, rtol=0)


@pytest.mark.parametrize("ours, ref", PAIRWISE, ids=lambda f: getattr(f, "__name__", ""))
def test_integer_boxes_give_float_overlaps_as_torchvision(ours, ref):
    """Integer pixel boxes: the overlap was cast back to int (every IoU 0 or 1), and DIoU-NMS
    kept boxes of IoU 0.68 at a 0.5 threshold."""
    b1 = random_boxes(30, 4, degenerate=False).round().long()
    b2 = random_boxes(20, 5, degenerate=False).round().long()
    got, want = ours(b1, b2), ref(b1, b2)
    assert got.dtype == torch.float32
    torch.testing.assert_close(got, want.float(), atol=1e-5, rtol=0)
    pair = B.paired_box_iou(b1[:20], b2, "giou")
    assert pair.dtype == torch.float32 and (pair.abs() < 1).any()


@pytest.mark.parametrize("kind", B.IOU_KINDS)
def test_paired_is_the_diagonal_of_pairwise(kind):
    b1, b2 = random_boxes(30, 4), random_boxes(30, 5)
    pairwise = {
        "iou": B.box_iou,
        "giou": B.generalized_box_iou,
        "diou": B.distance_box_iou,
        "ciou": B.complete_box_iou,
    }[kind]
    torch.testing.assert_close(B.paired_box_iou(b1, b2, kind), pairwise(b1, b2).diagonal())


def test_ciou_loss_matches_torchvision_values_and_gradients():
    pred = random_boxes(50, 6, degenerate=False).requires_grad_()
    target = random_boxes(50, 7, degenerate=False)
    ours = B.complete_box_iou_loss(pred, target)
    ref_pred = pred.detach().clone().requires_grad_()
    ref = tvo.complete_box_iou_loss(ref_pred, target, reduction="none")
    torch.testing.assert_close(ours, ref, atol=1e-5, rtol=0)
    ours.sum().backward()
    ref.sum().backward()
    torch.testing.assert_close(pred.grad, ref_pred.grad, atol=1e-5, rtol=1e-4)


def test_ciou_loss_degenerate_values_agree_where_torchvision_is_finite():
    pred, target = random_boxes(60, 8), random_boxes(60, 9)
    ours = B.complete_box_iou_loss(pred, target)
    ref = tvo.complete_box_iou_loss(pred, target, reduction="none")
    finite = torch.isfinite(ref)
    assert torch.isfinite(ours).all() and finite.any()
    torch.testing.assert_close(ours[finite], ref[finite], atol=1e-5, rtol=0)


@pytest.mark.parametrize("kind", B.IOU_KINDS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_gradients_finite_for_degenerate_boxes(kind, dtype):
    point = torch.tensor([5.0, 5.0, 5.0, 5.0])
    line = torch.tensor([0.0, 3.0, 10.0, 3.0])
    normal = torch.tensor([2.0, 2.0, 8.0, 9.0])
    far = torch.tensor([60000.0, 60000.0, 65000.0, 65000.0])  # squares overflow fp16
    b1 = torch.stack([point, point, line, line, normal, far, point]).to(dtype).requires_grad_()
    b2 = torch.stack([point, normal, line, normal, far, normal, line]).to(dtype)
    out = B.paired_box_iou(b1, b2, kind)
    assert out.dtype == dtype and torch.isfinite(out).all()
    out.sum().backward()
    assert torch.isfinite(b1.grad).all()
    pw = B.box_iou(b1.detach(), b2) if kind == "iou" else B.complete_box_iou(b1.detach(), b2)
    assert torch.isfinite(pw).all()


def test_values_on_known_boxes():
    a = torch.tensor([[0.0, 0.0, 2.0, 2.0]])
    b = torch.tensor([[1.0, 1.0, 3.0, 3.0]])
    assert B.box_iou(a, b).item() == pytest.approx(1 / 7)
    assert B.generalized_box_iou(a, b).item() == pytest.approx(1 / 7 - (9 - 7) / 9)
    # centre offset (1, 1): rho^2 = 2; enclosing box 3x3: c^2 = 18
    assert B.distance_box_iou(a, b).item() == pytest.approx(1 / 7 - 2 / 18)
    assert B.distance_box_iou(a, b, beta=0.6).item() == pytest.approx(1 / 7 - (2 / 18) ** 0.6)
    assert B.paired_box_iou(a, a, "ciou").item() == pytest.approx(1.0)


def test_conversions_round_trip_and_do_not_modify_inputs():
    xyxy = random_boxes(20, 10, degenerate=False)
    before = xyxy.clone()
    cxcywh = B.xyxy_to_cxcywh(xyxy)
    torch.testing.assert_close(cxcywh, tvo.box_convert(xyxy, "xyxy", "cxcywh"))
    torch.testing.assert_close(B.cxcywh_to_xyxy(cxcywh), xyxy)
    torch.testing.assert_close(B.box_area(xyxy), tvo.box_area(xyxy))
    B.complete_box_iou(xyxy, xyxy)
    assert torch.equal(xyxy, before)


def test_unknown_kind_is_rejected():
    with pytest.raises(ValueError, match="kind must be one of"):
        B.paired_box_iou(torch.zeros(1, 4), torch.zeros(1, 4), "siou")
