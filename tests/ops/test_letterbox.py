"""Letterbox/stretch geometry: parameters, map/unmap round trips, clipping, batches."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from yolov4.ops.letterbox import (
    LetterboxParams,
    letterbox_params,
    map_boxes,
    unmap_boxes,
    unmap_detections,
)


def _random_boxes(n: int, h: int, w: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    xy = torch.rand(n, 2, generator=g) * torch.tensor([w * 0.8, h * 0.8])
    wh = torch.rand(n, 2, generator=g) * torch.tensor([w * 0.2, h * 0.2]) + 1
    return torch.cat([xy, xy + wh], 1).double()


@pytest.mark.parametrize("mode", ["letterbox", "stretch"])
@pytest.mark.parametrize(
    "orig,target", [((480, 640), (416, 416)), ((333, 101), (320, 608)), ((64, 64), (256, 256))]
)
def test_unmap_after_map_is_identity(mode, orig, target):
    boxes = _random_boxes(50, *orig)
    p = letterbox_params(orig, target, mode)
    back = unmap_boxes(map_boxes(boxes, p), p, orig)
    torch.testing.assert_close(back, boxes, atol=1e-9, rtol=0)
    # numpy in, numpy out, same result
    back_np = unmap_boxes(map_boxes(boxes.numpy(), p), p, orig)
    assert isinstance(back_np, np.ndarray)
    np.testing.assert_allclose(back_np, boxes.numpy(), atol=1e-9)


def test_letterbox_params_keep_aspect_and_centre():
    p = letterbox_params((480, 640), (416, 416))
    assert p.scale_x == pytest.approx(p.scale_y) == pytest.approx(416 / 640)
    assert p.pad_x == 0 and p.pad_y == (416 - 312) // 2
    # the full original image maps onto the content area, inside the input
    full = map_boxes(torch.tensor([[0.0, 0.0, 640.0, 480.0]]), p)
    assert full.tolist() == [[0.0, 52.0, 416.0, 364.0]]


def test_stretch_params_fill_the_input():
    p = letterbox_params((100, 200), (416, 608), "stretch")
    assert p == LetterboxParams(608 / 200, 416 / 100, 0.0, 0.0)


def test_unknown_mode_and_bad_sizes_raise():
    with pytest.raises(ValueError, match="unknown resize mode 'crop'"):
        letterbox_params((10, 10), (32, 32), "crop")
    with pytest.raises(ValueError, match="positive sizes"):
        letterbox_params((0, 10), (32, 32))


def test_unmap_clips_and_keeps_extra_columns_without_touching_input():
    p = letterbox_params((100, 200), (256, 256))  # scale 1.28, pad_y 64
    det = torch.tensor([[-10.0, 0.0, 300.0, 256.0, 0.9, 2.0]])
    before = det.clone()
    out = unmap_boxes(det, p, (100, 200))
    assert torch.equal(det, before)
    assert out[0, :4].tolist() == [0.0, 0.0, 200.0, 100.0]
    assert out[0, 4:].tolist() == pytest.approx([0.9, 2.0])
    assert out.dtype == det.dtype


def test_unmap_detections_batch_each_with_its_own_size():
    sizes = [(480, 640), (100, 50), (416, 416)]
    params = [letterbox_params(s, (320, 320)) for s in sizes]
    orig = [_random_boxes(7, *s, seed=i) for i, s in enumerate(sizes)]
    dets = [
        torch.cat([map_boxes(b, p), torch.rand(len(b), 2, dtype=b.dtype)], 1)
        for b, p in zip(orig, params, strict=True)
    ]
    dets.append(torch.zeros(0, 6, dtype=torch.float64))
    params.append(letterbox_params((10, 10), (320, 320)))
    sizes.append((10, 10))
    for as_tensor in (False, True):
        p_arg = (
            torch.tensor([tuple(p) for p in params], dtype=torch.float64) if as_tensor else params
        )
        hw_arg = torch.tensor(sizes) if as_tensor else sizes
        out = unmap_detections(dets, p_arg, hw_arg)
        assert [o.shape for o in out] == [d.shape for d in dets]
        for o, b in zip(out, orig, strict=False):
            torch.testing.assert_close(o[:, :4], b, atol=1e-9, rtol=0)
    with pytest.raises(ValueError, match="as many letterbox params"):
        unmap_detections(dets[:2], params, sizes)


def test_a_detection_wholly_in_the_padding_is_dropped():
    """A 200x100 (H x W) image letterboxed to 128: 32 px of padding left and right. A box inside
    the left padding has no area in the image once clipped: no detection to report."""
    params = letterbox_params((200, 100), (128, 128), "letterbox")
    det = torch.tensor([[0.0, 0.0, 10.0, 10.0, 0.9, 0.0], [40.0, 40.0, 60.0, 60.0, 0.8, 1.0]])
    [out] = unmap_detections([det], [params], [(200, 100)])
    assert out.shape == (1, 6) and out[0, 4] == pytest.approx(0.8)
