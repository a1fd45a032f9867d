"""The serving artifact: metadata, parity, checksums; three backends agree through the Predictor."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
import torch

from yolov4 import build_model, save_checkpoint
from yolov4.errors import ExportError
from yolov4.export import artifact as artifact_mod
from yolov4.export.artifact import ARTIFACT_FORMAT, export_artifact, read_metadata, sha256
from yolov4.inference import Predictor

NAMES = ["circle", "rectangle", "triangle", "cross"]
PREPROCESS = {"input_size": [96, 128], "mode": "letterbox"}


@pytest.fixture(scope="module")
def exported(tmp_path_factory, randomize):
    d = tmp_path_factory.mktemp("artifact")
    torch.manual_seed(5)
    model = randomize(build_model("yolov4-tiny", num_classes=4), seed=5)
    ckpt = save_checkpoint(d / "best.pt", model, NAMES, PREPROCESS, metrics={"mAP": 0.5})
    return ckpt, export_artifact(ckpt, d / "export")


def test_metadata_describes_the_contract(exported):
    ckpt, art = exported
    meta = read_metadata(art)
    assert meta["format"] == ARTIFACT_FORMAT and meta["class_names"] == NAMES
    assert meta["input_size"] == [96, 128] and meta["opset"] >= 17
    p = meta["preprocess"]
    assert (p["mode"], p["pad_value"], p["channel_order"], p["input_size"]) == (
        "letterbox",
        114,
        "rgb",
        [96, 128],
    )
    assert p["scale"] == pytest.approx(1 / 255)
    assert meta["strides"] == [16, 32] and meta["anchors"][0] == [
        [23.0, 27.0],
        [37.0, 58.0],
        [81.0, 82.0],
    ]
    assert meta["thresholds"]["conf"] == 0.25 and meta["thresholds"]["iou"] == 0.45
    assert meta["output"]["shape"] == ["batch", 3 * (6 * 8 + 3 * 4), 9]
    assert set(meta["versions"]) >= {"yolov4", "torch", "onnx", "onnxruntime"}
    for name, info in meta["files"].items():
        assert info["sha256"] == sha256(art / name)
        assert meta["parity"][name]["max_rel_diff"] <= artifact_mod.PARITY_RTOL
    graph = onnx.load(str(art / "model.onnx")).graph
    assert graph.input[0].type.tensor_type.shape.dim[0].dim_param == "batch"  # dynamic batch


def test_backends_agree(exported):
    ckpt, art = exported
    rng = np.random.default_rng(0)
    images = [
        rng.integers(0, 255, (h, w, 3), dtype=np.uint8) for h, w in ((97, 203), (64, 64), (150, 90))
    ]
    results = [
        p(images, conf=0.3)
        for p in (
            Predictor.from_artifact(art),
            Predictor.from_artifact(art, backend="torchscript"),
            Predictor.from_checkpoint(ckpt),
        )
    ]
    assert sum(len(d) for d in results[0]) > 0  # a real comparison
    for other in results[1:]:
        for a, b in zip(results[0], other):
            assert len(a) == len(b)
            np.testing.assert_allclose(a.boxes, b.boxes, atol=1.0)
            assert a.class_names == b.class_names and (a.class_ids == b.class_ids).all()


def test_altered_or_unknown_artifacts_are_refused(exported, tmp_path):
    _, art = exported
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(art, copy)
    with open(copy / "model.onnx", "ab") as f:
        f.write(b"\0")
    with pytest.raises(ExportError, match="model.onnx does not match its sha256"):
        Predictor.from_artifact(copy)
    meta = json.loads((copy / "metadata.json").read_text())
    meta["format"] = "yolov4.artifact/99"
    (copy / "metadata.json").write_text(json.dumps(meta))
    with pytest.raises(ExportError, match="is not 'yolov4.artifact/1'"):
        Predictor.from_artifact(copy)
    with pytest.raises(ExportError, match="no metadata.json"):
        Predictor.from_artifact(tmp_path)


def test_a_file_that_disagrees_fails_the_export(exported, tmp_path, monkeypatch):
    ckpt, _ = exported
    original = artifact_mod._export_onnx

    def wrong_model(model, path, example, opset):  # exports another network
        other = artifact_mod.DecodedModel(build_model("yolov4-tiny", num_classes=4)).eval()
        original(other, path, example, opset)

    monkeypatch.setattr(artifact_mod, "_export_onnx", wrong_model)
    with pytest.raises(ExportError, match="model.onnx disagrees with PyTorch"):
        export_artifact(ckpt, tmp_path / "export", formats=["onnx"])
    assert list(tmp_path.iterdir()) == []  # nothing half-written left behind


def test_bad_export_arguments(exported, tmp_path):
    ckpt, _ = exported
    with pytest.raises(ExportError, match="formats"):
        export_artifact(ckpt, tmp_path / "e", formats=["tflite"])
    with pytest.raises(ExportError, match="multiples of 32"):
        export_artifact(ckpt, tmp_path / "e", input_size=[100, 100])


def test_mish_exports_as_vectorised_ops_with_the_same_values(tmp_path):
    """yolov4's Mish leaves ONNX without onnxruntime's scalar Softplus, and keeps its values."""
    import onnxruntime as ort
    import torch.nn.functional as F

    from yolov4.models.layers import Mish, mish_onnx

    wide = torch.cat([torch.linspace(-100, 100, 20001), torch.randn(10000) * 5])
    torch.testing.assert_close(mish_onnx(wide), F.mish(wide), atol=2e-6, rtol=1e-5)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), Mish()).eval()
    x = torch.randn(2, 3, 16, 16) * 4
    path = tmp_path / "mish.onnx"
    torch.onnx.export(net, (x,), str(path), dynamo=False, opset_version=17, input_names=["x"])
    assert "Softplus" not in {n.op_type for n in onnx.load(str(path)).graph.node}
    got = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(
        None, {"x": x.numpy()}
    )[0]
    with torch.no_grad():
        want = F.mish(net[0](x))
    np.testing.assert_allclose(got, want.numpy(), atol=2e-5, rtol=1e-4)


@pytest.mark.parametrize("conf, max_det", [(0.05, 20), (0.25, 300), (0.999, 10)])
def test_nms_graph_has_fixed_outputs_and_matches_postprocess(tmp_path, randomize, conf, max_det):
    """model_nms.onnx (onnxruntime's NonMaxSuppression) == model.onnx + ops.postprocess, padded
    to max_det rows with a count; full, partly filled and empty outputs; dynamic batch."""
    import onnxruntime as ort

    from yolov4.ops.postprocess import postprocess

    torch.manual_seed(7)
    model = randomize(build_model("yolov4-tiny", num_classes=4), seed=7)
    with torch.no_grad():  # hundreds of boxes above 0.25, as an early-trained model
        for head in model.heads:
            head.pred.conv.bias.view(model.config.num_anchors, -1)[:, 4:].uniform_(-3, 1)
    ckpt = save_checkpoint(tmp_path / "m.pt", model, NAMES, PREPROCESS)
    thresholds = {"conf": conf, "iou": 0.45, "max_det": max_det}
    art = export_artifact(ckpt, tmp_path / "export", ["onnx", "onnx_nms"], thresholds=thresholds)
    meta = read_metadata(art)
    assert meta["nms_graph"]["file"] == "model_nms.onnx" and meta["nms_graph"]["max_det"] == max_det
    assert meta["nms_graph"]["outputs"]["detections"] == ["batch", max_det, 6]
    plain = ort.InferenceSession(str(art / "model.onnx"), providers=["CPUExecutionProvider"])
    nms = ort.InferenceSession(str(art / "model_nms.onnx"), providers=["CPUExecutionProvider"])
    x = np.random.default_rng(0).random((3, 3, 96, 128), dtype=np.float32)
    dets, counts = nms.run(None, {"images": x})
    assert dets.shape == (3, max_det, 6) and counts.shape == (3,) and counts.dtype == np.int64
    (pred,) = plain.run(None, {"images": x})
    want = postprocess(
        torch.from_numpy(pred), (96, 128), conf_thresh=conf, iou_thresh=0.45, max_det=max_det
    )
    for k in range(3):
        n = int(counts[k])
        assert n == min(len(want[k]), max_det)
        np.testing.assert_allclose(dets[k, :n], want[k][:n].numpy(), atol=1e-3, rtol=1e-4)
        assert not dets[k, n:].any()
    if conf == 0.999:
        assert not counts.any()
    elif max_det == 20:
        assert (counts == max_det).all()
    else:
        assert (counts > 0).all() and (counts < max_det).all()
