"""Darknet's YOLOv2 networks ([reorg], [region]): built for inference, exact to OpenCV's importer."""

from __future__ import annotations

import json
import re
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from tests.conftest import randomize_
from tests.models.test_zoo import as_opencv_yolo, boost_heads_
from yolov4 import build_model
from yolov4.core.artifact import METADATA
from yolov4.core.checkpoint import load_checkpoint, save_checkpoint
from yolov4.core.model import DecodedModel
from yolov4.darknet import (
    load_darknet_weights,
    read_darknet_cfg,
    save_darknet_weights,
    write_darknet_cfg,
)
from yolov4.errors import ConfigError
from yolov4.models.config import YOLO_LOSS_KEYS, ModelConfig

# darknet's own cfgs of the YOLOv2 family (cfg/ of AlexeyAB/darknet), verbatim
CFGS = Path(__file__).parent / "darknet_cfgs"
HW = (96, 128)


def shrunk(name: str, factor: int = 16) -> str:
    """darknet's ``name``.cfg with every hidden layer's filters divided by ``factor`` (the head
    conv's follow from the classes): the same graph, small enough for a test."""
    text = (CFGS / f"{name}.cfg").read_text()
    return re.sub(r"filters=(32|64|128|256|512|1024)\b",
                  lambda m: f"filters={max(int(m.group(1)) // factor, 4)}", text)  # fmt: skip


def region_model(name: str, seed: int = 1):
    model = build_model(cfg=shrunk(name), name=name, input_size=list(HW), num_classes=3)
    return boost_heads_(randomize_(model, seed=seed))


def opencv(model, tmp_path: Path):
    """OpenCV's net from our cfg and weights; its [region] zeroes scores under the cfg's
    ``thresh`` (darknet's training key, OpenCV's score threshold): 0 here."""
    cfg, weights = tmp_path / "m.cfg", tmp_path / "m.weights"
    cfg.write_text(re.sub(r"\nthresh=[.\d]+\n", "\nthresh=0\n", write_darknet_cfg(model)))
    save_darknet_weights(model, weights)
    return cv2.dnn.readNetFromDarknet(str(cfg), str(weights))


@pytest.mark.parametrize("name", ["yolov2-tiny", "yolov2"])
def test_yolov2_matches_opencv(tmp_path, name):
    """The raw head map, every [reorg]'s output, and the decoded boxes, objectness and scores
    against OpenCV's [region] output (relative boxes, objectness, objectness x softmax)."""
    model = region_model(name)
    assert model.config.region and model.strides == (32,) and model.config.num_anchors == 5
    net = opencv(model, tmp_path)
    images = torch.rand(1, 3, *HW)
    reorgs = [i for i, s in enumerate(model._specs) if s.kind == "reorg"]
    assert len(reorgs) == (name == "yolov2")
    names = [f"conv_{model.head_layers[0]}", *(f"reorg_{i}" for i in reorgs)]
    net.setInput(images.numpy())
    ref_map, *ref_reorgs, ref_region = net.forward([*names, *net.getUnconnectedOutLayersNames()])
    seen = {}
    hooks = [model.layers[i].register_forward_hook(lambda m, a, o, i=i: seen.update({i: o}))
             for i in reorgs]  # fmt: skip
    with torch.no_grad():
        (head,) = model(images)
        decoded = DecodedModel(model)(images)
    for h in hooks:
        h.remove()
    tol = dict(rtol=1e-4, atol=1e-4 * float(np.abs(ref_map).max()))
    assert float(head.std()) > 0.1
    np.testing.assert_allclose(head.numpy(), ref_map, **tol)
    for i, ref in zip(reorgs, ref_reorgs):
        assert seen[i].shape == ref.shape and float(seen[i].std()) > 0
        np.testing.assert_allclose(seen[i].numpy(), ref, rtol=1e-4, atol=1e-5)
    (ours,) = as_opencv_yolo(model, decoded, HW)
    assert ours.shape == ref_region.shape == (5 * 3 * 4, 5 + 3)
    np.testing.assert_allclose(ours[:, :5], ref_region[:, :5], rtol=1e-4, atol=1e-5)
    # OpenCV zeroes the scores under the cfg's thresh and those its in-layer NMS drops
    kept = ref_region[:, 5:] > 0
    assert kept.sum() >= 10
    np.testing.assert_allclose(ours[:, 5:][kept], ref_region[:, 5:][kept], rtol=1e-4, atol=1e-5)
    # softmax: each row's class probabilities sum to 1 (times objectness in OpenCV's layout)
    np.testing.assert_allclose(ours[:, 5:].sum(1), ours[:, 4], rtol=1e-5)


def test_region_cfg_is_written_back_with_its_training_keys_and_grid_anchors():
    model = build_model(cfg=CFGS / "yolov2-tiny.cfg", num_classes=3)
    given = read_darknet_cfg((CFGS / "yolov2-tiny.cfg").read_text())
    written = read_darknet_cfg(write_darknet_cfg(model))
    region, given_region = written[-1][1], given[-1][1]
    assert written[-1][0] == "region"
    assert region["classes"] == "3" and written[-2][1]["filters"] == str(5 * (5 + 3))
    for key in ("bias_match", "rescore", "object_scale", "noobject_scale", "thresh", "jitter",
                "absolute", "random", "softmax", "coords"):  # fmt: skip
        assert region[key] == given_region[key], key
    cells = [float(v) for v in given_region["anchors"].split(",")]
    assert [float(v) for v in region["anchors"].split(",")] == pytest.approx(cells)
    # the model config holds pixels: the grid-cell anchors times the head's stride
    assert [v for wh in model.config.anchors for v in wh] == pytest.approx([32 * v for v in cells])


def test_yolov2_weights_with_the_old_header_load_and_write_back_the_same_file(tmp_path):
    """darknet's 0.1.0 header (a uint32 ``seen``), the official YOLOv2 files'."""
    model = region_model("yolov2-tiny")
    floats = save_darknet_weights(model, tmp_path / "new.weights").read_bytes()[20:]
    old = tmp_path / "old.weights"
    old.write_bytes(
        np.array([0, 1, 0], "<i4").tobytes() + np.array([640], "<u4").tobytes() + floats
    )
    fresh = build_model(cfg=shrunk("yolov2-tiny"), input_size=list(HW), num_classes=3)
    header = load_darknet_weights(fresh, old)
    assert (header.major, header.minor, header.seen) == (0, 1, 640)
    assert save_darknet_weights(fresh, tmp_path / "again.weights").read_bytes() == old.read_bytes()
    assert torch.equal(fresh.head_convs()[0].conv.weight, model.head_convs()[0].conv.weight)


@pytest.mark.parametrize(
    "line, message",
    [
        ("tree=data/9k.tree", "[region] tree: tree=data/9k.tree is darknet's hierarchical softmax"),
        ("map=data/inet9k.map", "[region] map: map=data/inet9k.map is darknet's class map"),
        ("coords=5", "[region] coords: coords=5 (boxes with extra mask coefficients) is not built"),
        ("softmax=0", "[region] softmax: softmax=0: darknet leaves the class values"),
        (None, "[region] softmax: softmax=0 (darknet's default when absent): darknet leaves"),
        ("log=1", "[region] log: log=1 is a log-space box variant of an older darknet"),
        ("background=1", "[region] background: background=1 is the background-class variant"),
    ],
)
def test_region_keys_that_change_inference_are_refused_on_one_line(line, message):
    text = (CFGS / "yolov2-tiny.cfg").read_text()
    if line is None:
        text = text.replace("softmax=1\n", "")
    else:
        key = line.split("=")[0]
        text = re.sub(rf"^{key}=.*\n", "", text, flags=re.M)  # the cfg's own line, if any
        text = text.replace("[region]\n", f"[region]\n{line}\n")
    with pytest.raises(ConfigError) as e:
        build_model(cfg=text)
    assert message in str(e.value) and "\n" not in str(e.value)


def test_a_word_tree_network_is_refused_for_its_tree_before_its_size():
    # YOLO9000's [region]: 9,418 classes and a 47,115-filter head conv, both over the budget's
    # limits; raising them would not build it, so the tree is what the error names
    classes = 9418
    text = (CFGS / "yolov2-tiny.cfg").read_text()
    text = text.replace("filters=425", f"filters={5 * (classes + 5)}")
    text = text.replace("classes=80", f"classes={classes}\ntree=data/9k.tree")
    with pytest.raises(ConfigError) as e:
        build_model(cfg=text)
    assert "[region] tree: tree=data/9k.tree is darknet's hierarchical softmax" in str(e.value)
    assert "YOLOV4_MAX" not in str(e.value)


def test_reorg_and_region_keys_set_to_darknets_default_are_accepted():
    from tests.models.test_cfg_text import YOLOV2_DEFAULTS

    text = shrunk("yolov2")
    for kind, line in YOLOV2_DEFAULTS:
        text = text.replace(f"[{kind}]\n", f"[{kind}]\n{line}\n", 1)
    model = build_model(cfg=text, input_size=list(HW))
    assert model.config.region
    region = model.sections[-1].options
    assert (region["log"], region["background"]) == ("0", "0")  # kept


def test_reorg_needs_whole_channel_groups():
    text = shrunk("yolov2").replace("[reorg]\nstride=2", "[reorg]\nstride=3")
    with pytest.raises(ConfigError, match=r"\[reorg\] stride: 3 reorganises 4 input channels"):
        build_model(cfg=text)


def test_training_a_region_network_is_refused():
    from yolov4.loss import YoloLoss
    from yolov4.training.module import YoloModule

    model = build_model(cfg=shrunk("yolov2-tiny"), input_size=list(HW), num_classes=3)
    expected = "region (YOLOv2) networks are built for inference (predict, evaluate, export)"
    with pytest.raises(ConfigError, match=re.escape(expected)):
        YoloLoss.from_config(model.config)
    module = YoloModule(model=model.config.to_dict(), ema_decay=None)  # evaluate builds one
    with pytest.raises(ConfigError, match=re.escape(expected)) as e:
        module.setup("fit")
    assert "darknet's region loss, which is not built" in str(e.value)
    module.setup("validate")  # evaluate.py's stage: no loss, no refusal


def test_yolov2_tiny_predicts_and_exports_to_onnx_with_the_same_detections(tmp_path):
    """darknet files of a [region] network -> Predictor (decode, NMS, boxes in the image's
    pixels) -> ONNX artifact (its parity check against PyTorch) -> the same detections."""
    from yolov4.export.artifact import export_artifact
    from yolov4.inference import Predictor
    from yolov4.inference.darknet import darknet_checkpoint

    model = region_model("yolov2-tiny", seed=5)
    cfg = tmp_path / "yolov2-tiny.cfg"
    cfg.write_text(write_darknet_cfg(model))
    weights = save_darknet_weights(model, tmp_path / "yolov2-tiny.weights")
    names = ["a", "b", "c"]
    image = np.random.default_rng(0).integers(0, 256, (120, 160, 3), dtype=np.uint8)
    predictor = Predictor.from_darknet(cfg, weights, names)
    [dets] = predictor(image, conf=0.05)
    assert len(dets) > 0 and set(dets.class_names) <= set(names)
    ckpt = darknet_checkpoint(cfg, weights, names)
    art = export_artifact(ckpt, tmp_path / "art", formats=["onnx"])
    [onnx_dets] = Predictor.from_artifact(art, backend="onnxruntime")(image, conf=0.05)
    assert len(onnx_dets) == len(dets)
    np.testing.assert_allclose(onnx_dets.boxes, dets.boxes, rtol=1e-3, atol=1e-2)
    np.testing.assert_allclose(onnx_dets.scores, dets.scores, rtol=1e-3, atol=1e-4)
    stored = json.loads((art / METADATA).read_text())["model"]
    assert stored["region"] and not set(YOLO_LOSS_KEYS) & set(stored)


def test_region_classes_not_matching_the_head_filters_name_the_region_section():
    text = (CFGS / "yolov2-tiny.cfg").read_text().replace("classes=80", "classes=20")
    with pytest.raises(ConfigError) as e:
        build_model(cfg=text)
    assert "[region] gives 425 channels; 5 anchors x (classes=20 + 5) needs filters=125" in str(
        e.value
    )
    assert str(e.value).endswith(
        "either set filters=125 for classes=20, or set classes=80 in the [region] if 80 classes "
        "are meant (425 = 5 x (80 + 5))"
    )


def test_a_region_without_anchors_is_refused_as_missing_them():
    text = re.sub(r"^anchors =.*\n", "", (CFGS / "yolov2-tiny.cfg").read_text(), flags=re.M)
    with pytest.raises(ConfigError) as e:
        build_model(cfg=text)
    assert str(e.value).endswith(
        "[region] anchors: missing; num=5 needs 10 numbers (5 w,h pairs in grid cells)"
    )


def test_a_region_config_leaves_out_the_yolo_loss_keys_and_round_trips(tmp_path):
    model = region_model("yolov2-tiny")
    values = model.config.to_dict()
    assert values["region"] and not set(YOLO_LOSS_KEYS) & set(values)
    assert {"scale_x_y", "nms_kind", "beta_nms", "new_coords"} <= set(values)  # decode, NMS
    assert ModelConfig.from_dict(values) == model.config
    path = save_checkpoint(tmp_path / "m.pt", model, class_names=["a", "b", "c"])
    loaded = load_checkpoint(path).model  # strict=True
    assert loaded.config == model.config
    for name, tensor in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[name], tensor), name


@pytest.mark.parametrize(
    "override, got",
    [({"ignore_thresh": 0.7}, "got [0.7]"), ({"iou_loss": "ciou"}, "got ciou"),
     ({"counters_per_class": [1, 2, 3]}, "got [[1, 2, 3]]")],
)  # fmt: skip
def test_yolo_loss_keys_given_to_a_region_network_are_refused(override, got):
    key = next(iter(override))
    with pytest.raises(ConfigError) as e:
        build_model(cfg=shrunk("yolov2-tiny"), input_size=list(HW), num_classes=3, **override)
    assert str(e.value).startswith(f"model.{key} is a [yolo] loss key; a [region] (YOLOv2)")
    assert str(e.value).endswith(got)


@pytest.mark.parametrize("name", ["yolov2-tiny", "yolov3-tiny"])
def test_a_letter_box_cfg_maps_region_boxes_back_as_yolo_boxes(tmp_path, name):
    """[net] letter_box=1: a [region] head's boxes (yolov2-tiny) and a [yolo] head's
    (yolov3-tiny) go back to the original image by darknet's correct_yolo_boxes(letter=1), the
    one rule darknet applies to both heads: against OpenCV's importer on darknet's letterboxed
    input, its relative boxes mapped back by that rule (OpenCV applies no letterbox itself)."""
    from tests.inference.predict_cases import (
        as_rows,
        assert_same_detections,
        calibrate_heads_,
        opencv_detections,
    )
    from yolov4.inference import Predictor
    from yolov4.models.cfg import CFG_DIR

    text = (CFGS / f"{name}.cfg") if name.startswith("yolov2") else CFG_DIR / f"{name}.cfg"
    text = re.sub(r"filters=(32|64|128|256|512|1024)\b",
                  lambda m: f"filters={max(int(m.group(1)) // 16, 4)}", text.read_text())  # fmt: skip
    text = text.replace("[net]\n", "[net]\nletter_box=1\n", 1)
    # 240x640 into 96x128: scale 0.2 exactly, 128x48 centred with 24 px above and below
    image = np.random.default_rng(2).integers(0, 256, (240, 640, 3), dtype=np.uint8)
    torch.manual_seed(4)
    model = build_model(cfg=text, name=name, input_size=list(HW), num_classes=3)
    model = calibrate_heads_(randomize_(model, seed=4), image, mode="letterbox", mean=-3.0)
    assert model.config.letter_box and bool(model.config.region) == (name == "yolov2-tiny")
    cfg = tmp_path / f"{name}.cfg"
    cfg.write_text(re.sub(r"\nthresh=[.\d]+\n", "\nthresh=0\n", write_darknet_cfg(model)))
    weights = save_darknet_weights(model, tmp_path / f"{name}.weights")
    predictor = Predictor.from_darknet(cfg, weights, ["a", "b", "c"])
    assert predictor.preprocess_config.mode == "letterbox"
    [dets] = predictor(image, conf=0.3)
    ref = opencv_detections(cfg, weights, image, HW, 0.3, letter_box=True)
    # OpenCV's and PyTorch's float arithmetic: scores within 1e-4 (test_yolov2_matches_opencv)
    assert_same_detections(as_rows(dets.to_dict()["detections"]), ref, score_atol=1e-4)


def test_a_region_network_quantizes_to_an_openvino_int8_model(tmp_path):
    """NNCF's INT8 quantization of a [region] network's decoded ONNX (softmax classes, grid
    anchors) gives an OpenVINO IR with PyTorch's output layout. (A random network's INT8
    outputs are far from fp32's, as a random [yolo] network's are: export's parity check
    refuses both, so the export itself is checked on a trained [yolo] network in tests/export.)"""
    from yolov4.core.preprocess import PreprocessConfig
    from yolov4.export.artifact import export_artifact
    from yolov4.export.quantize import calibration_batch, quantize_int8
    from yolov4.inference.backends import OpenVinoBackend
    from yolov4.inference.darknet import darknet_checkpoint

    model = region_model("yolov2-tiny", seed=5)
    cfg = tmp_path / "yolov2-tiny.cfg"
    cfg.write_text(write_darknet_cfg(model))
    weights = save_darknet_weights(model, tmp_path / "yolov2-tiny.weights")
    art = export_artifact(darknet_checkpoint(cfg, weights, ["a", "b", "c"]), tmp_path / "art")
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (120, 160, 3), dtype=np.uint8) for _ in range(3)]
    batch = calibration_batch(images, PreprocessConfig(input_size=HW))
    made = quantize_int8(art / "model.onnx", tmp_path, batch)
    assert made["calibration_images"] == 3
    int8 = OpenVinoBackend(tmp_path / "model_int8.xml", "int8")(batch)
    with torch.no_grad():
        ref = DecodedModel(model).eval()(batch)
    assert int8.shape == ref.shape == (3, 5 * (HW[0] // 32) * (HW[1] // 32), 8)
    assert torch.isfinite(int8).all()
    # class probabilities of each prediction: a softmax in INT8 too, summing to 1
    torch.testing.assert_close(int8[..., 5:].sum(-1), torch.ones(int8.shape[:2]), atol=0.02, rtol=0)
