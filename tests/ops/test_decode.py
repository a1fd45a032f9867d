"""Decode against a loop transcription of darknet's formula, OpenCV's [yolo] layer and ONNX."""

from __future__ import annotations

import io
import math
import warnings

import numpy as np
import pytest
import torch

from tests.oracles.darknet_decode import loop_decode
from yolov4 import build_model
from yolov4.ops.decode import cell_grid, decode_head, decode_predictions, split_head

TINY_ANCHORS = [[(10, 14), (23, 27), (37, 58)], [(81, 82), (135, 169), (344, 319)]]


def test_decode_matches_loop_transcription():
    torch.manual_seed(0)
    c = 2
    heads = [
        torch.randn(2, 3 * (5 + c), 4, 5, dtype=torch.float64),
        torch.randn(2, 3 * (5 + c), 2, 3, dtype=torch.float64),
    ]
    out = decode_predictions(heads, TINY_ANCHORS, [16, 32], [1.05, 1.2])
    assert out.shape == (2, 3 * 20 + 3 * 6, 5 + c) and out.dtype == torch.float64
    want = torch.cat(
        [
            loop_decode(heads[0], TINY_ANCHORS[0], 16, 1.05),
            loop_decode(heads[1], TINY_ANCHORS[1], 32, 1.2),
        ],
        1,
    )
    torch.testing.assert_close(out, want, atol=1e-9, rtol=1e-9)


def test_new_coords_decode_matches_loop_transcription():
    torch.manual_seed(1)
    c = 3
    heads = [
        torch.randn(2, 3 * (5 + c), 4, 5, dtype=torch.float64) * 3,
        torch.randn(2, 3 * (5 + c), 2, 3, dtype=torch.float64) * 3,
    ]
    out = decode_predictions(heads, TINY_ANCHORS, [16, 32], [2.0, 2.0], new_coords=True)
    want = torch.cat(
        [
            loop_decode(heads[0], TINY_ANCHORS[0], 16, 2.0, new_coords=True),
            loop_decode(heads[1], TINY_ANCHORS[1], 32, 2.0, new_coords=True),
        ],
        1,
    )
    torch.testing.assert_close(out, want, atol=1e-9, rtol=1e-9)
    # x, y are the same as without new_coords; sizes differ (at most 4 anchors wide)
    old = decode_predictions(heads, TINY_ANCHORS, [16, 32], [2.0, 2.0])
    torch.testing.assert_close(out[..., :2], old[..., :2])
    torch.testing.assert_close(out[..., 4:], old[..., 4:])
    assert not torch.allclose(out[..., 2:4], old[..., 2:4])
    assert (out[:, :60, 2] <= 4 * 37 + 1e-9).all()


def test_new_coords_zero_map_is_one_anchor_at_the_cell_centre():
    """sigmoid(0) = 0.5: 4 * 0.25 = 1 anchor; x = i + 0.5 for any scale_x_y."""
    head = torch.zeros(1, 3 * 6, 2, 2)
    out = decode_head(head, TINY_ANCHORS[0], 16, 2.0, new_coords=True)
    torch.testing.assert_close(out[0, 3, :4], torch.tensor([24.0, 24.0, 10.0, 14.0]))


def test_a_box_at_a_known_cell_and_anchor_decodes_to_known_pixels():
    c, a_n, h, w, stride, g = 3, 3, 5, 7, 16, 1.2
    head = torch.full((1, a_n * (5 + c), h, w), -20.0)
    k = 5 + c
    a, j, i = 1, 2, 4
    head[0, a * k + 0, j, i] = 0.0  # sigmoid 0.5: centre of the cell
    head[0, a * k + 1, j, i] = 50.0  # sigmoid 1: the far edge, (g - 1) / 2 beyond the cell
    head[0, a * k + 2, j, i] = math.log(2.0)  # twice the anchor width
    head[0, a * k + 3, j, i] = 0.0
    head[0, a * k + 4, j, i] = 20.0
    head[0, a * k + 5 + 2, j, i] = 20.0
    out = decode_head(head, TINY_ANCHORS[0], stride, g)
    n = (a * h + j) * w + i  # darknet's entry order: anchor, row, column
    assert out[0, :, 4].argmax().item() == n
    cx, cy, bw, bh = out[0, n, :4].tolist()
    assert cx == pytest.approx((i + 0.5) * stride)
    assert cy == pytest.approx((j + 1 + (g - 1) / 2) * stride)
    assert (bw, bh) == (pytest.approx(2 * 23), pytest.approx(27))
    assert out[0, n, 5:].argmax().item() == 2 and out[0, n, 4].item() == pytest.approx(1.0)


def test_decode_matches_opencv_yolo_layer(tmp_path, randomize):
    """OpenCV's darknet importer decodes the [yolo] layers independently (x, y, w, h relative
    to the input, objectness, and objectness x class probability above its threshold)."""
    import cv2

    from yolov4.darknet import save_darknet_weights, write_darknet_cfg

    torch.manual_seed(3)
    model = randomize(build_model("yolov4-tiny", num_classes=3), seed=3)
    h, w = 160, 224
    images = torch.rand(1, 3, h, w)
    (tmp_path / "m.cfg").write_text(write_darknet_cfg(model, input_size=(h, w)))
    save_darknet_weights(model, tmp_path / "m.weights")
    net = cv2.dnn.readNetFromDarknet(str(tmp_path / "m.cfg"), str(tmp_path / "m.weights"))
    net.setInput(images.numpy())
    ref = sorted(net.forward(net.getUnconnectedOutLayersNames()), key=lambda o: -o.shape[0])
    cfg = model.config
    with torch.no_grad():
        maps = model(images)
    for m, anchors, s, g, r in zip(maps, cfg.head_anchors(), cfg.strides, cfg.scale_x_y, ref):
        ours = decode_head(m, anchors, s, g)[0]
        a_n, gh, gw = cfg.num_anchors, h // s, w // s
        # OpenCV orders (row, column, anchor); ours (anchor, row, column)
        ours = ours.view(a_n, gh, gw, -1).permute(1, 2, 0, 3).reshape(-1, ours.shape[-1]).numpy()
        scale = np.array([w, h, w, h], dtype=np.float32)
        np.testing.assert_allclose(ours[:, :4] / scale, r[:, :4], rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(ours[:, 4], r[:, 4], rtol=1e-4, atol=1e-5)
        score = ours[:, 4:5] * ours[:, 5:]
        kept = r[:, 5:] > 0
        assert kept.any() and (~kept).any()
        np.testing.assert_allclose(score[kept], r[:, 5:][kept], rtol=1e-4, atol=1e-5)
        assert score[~kept].max() < score[kept].min()  # OpenCV zeroes scores below a threshold


def test_grid_is_cached_per_size_device_dtype():
    g1 = cell_grid(3, 4, torch.device("cpu"), torch.float32)
    assert g1 is cell_grid(3, 4, torch.device("cpu"), torch.float32)
    assert g1 is not cell_grid(3, 4, torch.device("cpu"), torch.float64)
    assert g1.shape == (3, 4, 2)
    assert g1[2, 1].tolist() == [1.0, 2.0]  # (column, row)


def test_decode_under_inference_mode_then_with_autograd():
    head = torch.randn(1, 3 * 6, 3, 3)
    with torch.inference_mode():
        decode_head(head, TINY_ANCHORS[0], 16, 1.05)  # fills the grid cache in inference mode
    x = head.clone().requires_grad_()
    decode_head(x, TINY_ANCHORS[0], 16, 1.05).sum().backward()
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0


def test_split_head_is_a_view_in_darknet_channel_order():
    head = torch.arange(2 * 3 * 7 * 2 * 2, dtype=torch.float32).view(2, 21, 2, 2)
    p = split_head(head, 3)
    assert p.shape == (2, 3, 2, 2, 7) and p.data_ptr() == head.data_ptr()
    assert p[1, 2, 0, 1, 4] == head[1, 2 * 7 + 4, 0, 1]


def test_decode_half_precision_is_finite():
    head = torch.randn(1, 3 * 8, 19, 19).half()
    out = decode_head(head, TINY_ANCHORS[1], 32, 1.05)
    assert out.dtype == torch.float16 and torch.isfinite(out).all()
    torch.testing.assert_close(
        out.float(), decode_head(head.float(), TINY_ANCHORS[1], 32, 1.05), atol=0.5, rtol=2e-3
    )


def test_onnx_export_is_clean_and_size_agnostic():
    import onnxruntime as ort

    class Decode(torch.nn.Module):
        def forward(self, a, b):
            return decode_predictions([a, b], TINY_ANCHORS, [16, 32], [1.05, 1.05])

    a, b = torch.randn(1, 24, 4, 6), torch.randn(1, 24, 2, 3)
    f = io.BytesIO()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.onnx.export(
            Decode(),
            (a, b),
            f,
            dynamo=False,
            opset_version=17,
            input_names=["a", "b"],
            output_names=["out"],
            dynamic_axes={
                "a": {0: "B", 2: "h1", 3: "w1"},
                "b": {0: "B", 2: "h2", 3: "w2"},
                "out": {0: "B", 1: "N"},
            },
        )
    assert not [w for w in caught if issubclass(w.category, torch.jit.TracerWarning)]
    session = ort.InferenceSession(f.getvalue())
    a2, b2 = torch.randn(2, 24, 10, 8), torch.randn(2, 24, 5, 4)  # another batch and size
    (got,) = session.run(None, {"a": a2.numpy(), "b": b2.numpy()})
    want = Decode()(a2, b2)
    assert got.shape == tuple(want.shape) == (2, 3 * 80 + 3 * 20, 8)
    np.testing.assert_allclose(got, want.numpy(), rtol=1e-5, atol=1e-4)
