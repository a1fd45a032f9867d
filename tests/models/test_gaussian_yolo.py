"""Darknet's Gaussian YOLOv3 head ([Gaussian_yolo]): built for inference, its decode against a
transcription of darknet's gaussian_yolo_layer.c."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch

from tests.conftest import randomize_
from tests.models.test_zoo import boost_heads_
from tests.oracles import darknet_gaussian_yolo as oracle
from yolov4 import build_model
from yolov4.core.model import DecodedModel
from yolov4.darknet import load_darknet_weights, save_darknet_weights, write_darknet_cfg
from yolov4.errors import ConfigError
from yolov4.ops.decode import decode_head

HW = (64, 96)
ANCHORS = [(10, 14), (23, 27), (37, 58), (81, 82), (135, 169), (344, 319)]


def gaussian_cfg(classes: int = 2, head: str = "[Gaussian_yolo]", extra: str = "") -> str:
    """Two convs and a [Gaussian_yolo] head of 3 anchors: filters = 3 * (classes + 9)."""
    anchors = ", ".join(f"{w},{h}" for w, h in ANCHORS)
    return f"""[net]
width={HW[1]}
height={HW[0]}
channels=3

[convolutional]
batch_normalize=1
filters=8
size=3
stride=2
pad=1
activation=leaky

[convolutional]
size=1
stride=1
pad=1
filters={3 * (classes + 9)}
activation=linear

{head}
mask=3,4,5
anchors={anchors}
classes={classes}
num=6
scale_x_y=1.1
uc_normalizer=1.0
iou_loss=giou
{extra}
"""


def gaussian_model(seed: int = 1, **overrides):
    model = build_model(cfg=gaussian_cfg(), **overrides)
    return boost_heads_(randomize_(model, seed=seed)).eval()


@pytest.mark.parametrize("scale_x_y", [1.0, 1.1])
def test_decode_matches_darknets_gaussian_yolo_detections(scale_x_y):
    """Random head maps: boxes (input pixels), objectness and objectness x class scores equal
    darknet's forward_gaussian_yolo_layer + get_gaussian_yolo_detections, uncertainty included."""
    n, classes, h, w, stride, thresh = 3, 4, 5, 7, 16, 0.3
    anchors = [(12.0, 20.0), (40.0, 33.0), (90.0, 70.0)]
    head = torch.randn(1, n * (9 + classes), h, w, generator=torch.Generator().manual_seed(0)) * 2
    ours = decode_head(head, anchors, stride, scale_x_y, gaussian=True)[0].double()
    assert ours.shape == (n * h * w, 5 + classes)
    out = oracle.forward(head[0].numpy(), n, classes, scale_x_y)
    dets = oracle.detections(out, n, classes, h, w, anchors, (h * stride, w * stride), thresh)
    kept = {a * h * w + r * w + c for a, r, c in (d["cell"] for d in dets)}
    assert kept == set((ours[:, 4] > thresh).nonzero().flatten().tolist())
    assert 0 < len(dets) < n * h * w
    scale = torch.tensor([w * stride, h * stride] * 2, dtype=torch.float64)
    for d in dets:
        a, r, c = d["cell"]
        row = ours[a * h * w + r * w + c]
        np.testing.assert_allclose(row[:4] / scale, d["bbox"], rtol=1e-5, atol=1e-6)
        assert row[4].item() == pytest.approx(d["objectness"], rel=1e-6)
        scores = (row[4] * row[5:]).numpy()
        np.testing.assert_allclose(np.where(scores > thresh, scores, 0), d["prob"], atol=1e-6)
    # the uncertainty lowers the scores: without it they would be the plain [yolo] ones
    plain = decode_head(
        head[:, : 9 + classes].clone(), anchors[:1], stride, scale_x_y, gaussian=True
    )
    assert (plain[0, :, 5:] < torch.sigmoid(head[0, 9:13].flatten(1).T)).all()


def test_a_gaussian_network_builds_and_its_weights_and_cfg_round_trip(tmp_path):
    model = gaussian_model()
    c = model.config
    assert c.gaussian and not c.region and c.num_outputs == 3 * (2 + 9)
    assert c.masks == ((3, 4, 5),) and c.scale_x_y == (1.1,) and c.iou_loss == "giou"
    images = torch.rand(1, 3, *HW, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        [raw] = model(images)
        decoded = DecodedModel(model)(images)
    assert raw.shape == (1, 33, HW[0] // 2, HW[1] // 2)
    assert decoded.shape == (1, 3 * (HW[0] // 2) * (HW[1] // 2), 5 + 2)
    text = write_darknet_cfg(model)
    assert "[Gaussian_yolo]" in text and "uc_normalizer=1.0" in text and "new_coords" not in text
    weights = save_darknet_weights(model, tmp_path / "g.weights")
    again = build_model(cfg=text).eval()
    load_darknet_weights(again, weights)
    with torch.no_grad():
        torch.testing.assert_close(DecodedModel(again)(images), decoded)
    assert save_darknet_weights(again, tmp_path / "h.weights").read_bytes() == weights.read_bytes()
    five = build_model(cfg=text, num_classes=5)
    assert "filters=42" in write_darknet_cfg(five)  # 3 anchors x (5 classes + 9)


def test_head_filters_not_fitting_classes_plus_nine_are_refused():
    text = gaussian_cfg().replace("filters=33", "filters=21")
    with pytest.raises(
        ConfigError, match=re.escape("3 anchors x (classes=2 + 9) needs filters=33")
    ):
        build_model(cfg=text)


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ("yolo_point=left_top", "[Gaussian_yolo] yolo_point: key not supported"),
        ("map=data/labels.map", "[Gaussian_yolo] map: key not supported"),
    ],
)
def test_gaussian_keys_that_are_not_built_are_refused(extra, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        build_model(cfg=gaussian_cfg(extra=extra))


def test_gaussian_keys_set_to_darknets_default_are_accepted():
    from tests.models.test_cfg_text import GAUSSIAN_DEFAULTS

    extra = "\n".join(line for _, line in GAUSSIAN_DEFAULTS)
    model = build_model(cfg=gaussian_cfg(extra=extra))
    assert model.sections[-1].options["yolo_point"] == "center"


def test_darknets_default_yolo_point_and_an_unread_new_coords_build_as_darknet_reads_them(caplog):
    model = build_model(cfg=gaussian_cfg(extra="yolo_point=center\nnew_coords=1"))
    assert model.config.gaussian and not model.config.new_coords
    assert "[Gaussian_yolo] new_coords: darknet does not read this key" in caplog.text
    assert "activation=linear" in write_darknet_cfg(model)  # the head conv stays as the cfg's
    with pytest.raises(ConfigError, match="darknet's \\[Gaussian_yolo\\] decodes sizes as exp"):
        build_model(cfg=gaussian_cfg(), new_coords=True)


def test_yolo_and_gaussian_heads_in_one_network_are_refused():
    text = gaussian_cfg()
    text += "\n[route]\nlayers=-3\n\n[convolutional]\nsize=1\nstride=1\npad=1\nfilters=21\n"
    text += "activation=linear\n\n[yolo]\nmask=0,1,2\nanchors=" + ",".join(
        f"{w},{h}" for w, h in ANCHORS
    )
    text += "\nclasses=2\nnum=6\n"
    with pytest.raises(ConfigError, match=r"\[yolo\] head beside the \[Gaussian_yolo\] head"):
        build_model(cfg=text)


def test_training_a_gaussian_network_is_refused():
    from yolov4.loss import YoloLoss
    from yolov4.training.module import YoloModule

    model = build_model(cfg=gaussian_cfg())
    expected = "Gaussian_yolo (Gaussian YOLOv3) networks are built for inference"
    with pytest.raises(ConfigError, match=re.escape(expected)):
        YoloLoss.from_config(model.config)
    module = YoloModule(model=model.config.to_dict(), ema_decay=None)
    with pytest.raises(ConfigError, match=re.escape(expected)) as e:
        module.setup("fit")
    assert "darknet's Gaussian loss, which is not built" in str(e.value)
    module.setup("validate")  # evaluate.py's stage: no loss, no refusal


def test_opencvs_importer_does_not_know_the_layer_and_the_darknet_export_says_so(tmp_path):
    """OpenCV's darknet importer (the reference of the [yolo] and [region] tests) refuses
    [Gaussian_yolo], so the darknet export format, which checks its files through it, is
    refused before writing; the decode's reference here is the transcription above."""
    import cv2

    from yolov4.errors import ExportError
    from yolov4.export.artifact import export_artifact
    from yolov4.inference.darknet import darknet_checkpoint

    model = gaussian_model()
    cfg = tmp_path / "g.cfg"
    cfg.write_text(write_darknet_cfg(model))
    weights = save_darknet_weights(model, tmp_path / "g.weights")
    with pytest.raises(cv2.error, match="Unknown layer type: Gaussian_yolo"):
        cv2.dnn.readNetFromDarknet(str(cfg), str(weights))
    ckpt = darknet_checkpoint(cfg, weights, ["a", "b"])
    with pytest.raises(ExportError, match="Unknown layer type: Gaussian_yolo"):
        export_artifact(ckpt, tmp_path / "art", formats=["darknet"])
    assert not (tmp_path / "art").exists()


def test_a_gaussian_network_predicts_and_exports_to_onnx_with_the_same_detections(tmp_path):
    """darknet files -> Predictor (decode, NMS, boxes in the image's pixels) -> ONNX artifact
    (its parity check against PyTorch) -> the same detections."""
    from yolov4.export.artifact import export_artifact
    from yolov4.inference import Predictor
    from yolov4.inference.darknet import darknet_checkpoint

    model = gaussian_model(seed=5)
    cfg = tmp_path / "g.cfg"
    cfg.write_text(write_darknet_cfg(model))
    weights = save_darknet_weights(model, tmp_path / "g.weights")
    names = ["a", "b"]
    image = np.random.default_rng(0).integers(0, 256, (120, 160, 3), dtype=np.uint8)
    [dets] = Predictor.from_darknet(cfg, weights, names)(image, conf=0.05)
    assert len(dets) > 0 and set(dets.class_names) <= set(names)
    art = export_artifact(
        darknet_checkpoint(cfg, weights, names), tmp_path / "art", formats=["onnx"]
    )
    [onnx_dets] = Predictor.from_artifact(art, backend="onnxruntime")(image, conf=0.05)
    assert len(onnx_dets) == len(dets)
    np.testing.assert_allclose(onnx_dets.boxes, dets.boxes, rtol=1e-3, atol=1e-2)
    np.testing.assert_allclose(onnx_dets.scores, dets.scores, rtol=1e-3, atol=1e-4)
