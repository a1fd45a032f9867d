"""The serving artifact of every kind of zoo network (tests/zoo_cases.py): ONNX, ONNX with NMS in
the graph and TorchScript, each parity-checked by the export, agree with the PyTorch model
through the Predictor; the metadata describes the network's heads, anchors and strides."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tests.zoo_cases import KINDS, zoo_model
from yolov4 import save_checkpoint
from yolov4.core.artifact import read_metadata
from yolov4.core.model import DecodedModel
from yolov4.core.preprocess import preprocess
from yolov4.errors import CheckpointError, ExportError
from yolov4.export import artifact as artifact_mod
from yolov4.export.artifact import export_artifact
from yolov4.inference import Predictor

NAMES = ["circle", "square", "cross"]
FILES = {"model.onnx", "model.torchscript", "model_nms.onnx"}
TOP = 0.995  # conf: this quantile of the scores on random inputs (few boxes, none tied)


def scores(pred: torch.Tensor) -> torch.Tensor:
    return (pred[..., 4:5] * pred[..., 5:]).flatten()


# yolov4-p6 and yolov4-csp take the longest to export: their kinds run with the slow tests
SLOW_KINDS = {"4 heads", "new_coords"}


@pytest.fixture(
    scope="module",
    params=[pytest.param(k, marks=pytest.mark.slow) if k in SLOW_KINDS else k for k in KINDS],
)
def exported(request, tmp_path_factory):
    name, size = KINDS[request.param]
    d = tmp_path_factory.mktemp("zoo-artifact")
    model = zoo_model(name, len(NAMES), size, seed=11)
    with torch.inference_mode():
        pred = DecodedModel(model)(torch.rand(2, 3, *size))
    conf = round(float(torch.quantile(scores(pred), TOP)), 3)
    preprocess = {"input_size": list(size), "mode": "letterbox"}
    ckpt = save_checkpoint(d / "best.pt", model, NAMES, preprocess)
    formats = ["onnx", "torchscript", "onnx_nms"]
    art = export_artifact(ckpt, d / "export", formats, thresholds={"conf": conf})
    return model, ckpt, art


def assert_same_detections(a, b, score_tol: float = 2e-3, box_tol: float = 2.0) -> None:
    """Detections of one image from two backends: as many, and each of ``a`` is one of ``b``
    (class, score, box; the order of boxes of tied scores may differ)."""
    assert len(a) == len(b) and a.image_size == b.image_size
    for box, score, cls in zip(a.boxes, a.scores, a.class_ids, strict=True):
        same = (b.class_ids == cls) & (np.abs(b.scores - score) <= score_tol)
        assert (np.abs(b.boxes[same] - box).max(1) <= box_tol).any(), (box, score, cls)


def test_metadata_describes_the_network(exported):
    model, _, art = exported
    c = model.config
    meta = read_metadata(art)
    # every file checked against PyTorch; model.onnx also in OpenVINO (installed with [dev])
    assert set(meta["files"]) == FILES == set(meta["parity"]) - {"model.onnx@openvino"}
    for info in meta["parity"].values():
        assert info["max_rel_diff"] <= artifact_mod.PARITY_RTOL
    # rebuilds the network, a user cfg's text included; letter_box is the artifact's resize mode
    letter_box = meta["preprocess"]["mode"] == "letterbox"
    assert meta["model"] == {**c.to_dict(), "letter_box": letter_box}
    assert meta["model"]["name"] == c.name
    assert meta["strides"] == list(c.strides) and len(meta["anchors"]) == len(c.strides)
    assert all(len(a) == c.num_anchors for a in meta["anchors"])
    h, w = meta["input_size"]
    assert h % c.max_stride == 0 and w % c.max_stride == 0
    rows = sum(c.num_anchors * (h // s) * (w // s) for s in c.strides)
    assert meta["output"]["shape"] == ["batch", rows, 5 + len(NAMES)]
    import onnxruntime as ort

    session = ort.InferenceSession(str(art / "model.onnx"), providers=["CPUExecutionProvider"])
    assert session.get_inputs()[0].shape == ["batch", 3, h, w]  # dynamic batch
    (out,) = session.run(None, {"images": np.zeros((3, 3, h, w), np.float32)})
    assert out.shape == (3, rows, 5 + len(NAMES))


def test_every_backend_agrees_with_the_pytorch_model(exported):
    """Raw predictions of both files vs the (unfused) network + decode, then detections through
    the Predictor in original pixels: onnxruntime, TorchScript and the checkpoint agree."""
    model, ckpt, art = exported
    predictors = (
        Predictor.from_artifact(art),
        Predictor.from_artifact(art, backend="torchscript"),
        Predictor.from_checkpoint(ckpt, thresholds=read_metadata(art)["thresholds"]),
    )
    x = torch.rand(2, 3, *predictors[0].input_size, generator=torch.Generator().manual_seed(2))
    with torch.inference_mode():
        want = DecodedModel(model)(x)
    scale = float(want.abs().max())
    for p in predictors:
        got = p.backend(x).float().cpu()
        assert got.shape == want.shape
        assert float((got - want).abs().max()) <= artifact_mod.PARITY_RTOL * scale
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 255, (h, w, 3), dtype=np.uint8) for h, w in ((97, 203), (150, 90))]
    batch = torch.stack([preprocess(im, predictors[0].preprocess_config)[0] for im in images])
    conf = float(torch.quantile(scores(predictors[-1].backend(batch)), TOP))
    results = [p(images, conf=conf) for p in predictors]
    assert sum(len(d) for d in results[0]) > 0  # a real comparison
    for other in results[1:]:
        for a, b in zip(results[0], other, strict=True):
            assert_same_detections(a, b)


def test_nms_graph_matches_model_onnx_and_postprocess(exported):
    import onnxruntime as ort

    from yolov4.ops.postprocess import postprocess

    _, _, art = exported
    meta = read_metadata(art)
    size = tuple(meta["input_size"])
    graph = meta["nms_graph"]
    assert graph["conf"] == meta["thresholds"]["conf"]
    plain = ort.InferenceSession(str(art / "model.onnx"), providers=["CPUExecutionProvider"])
    nms = ort.InferenceSession(str(art / "model_nms.onnx"), providers=["CPUExecutionProvider"])
    x = np.random.default_rng(1).random((2, 3, *size), dtype=np.float32)
    dets, counts = nms.run(None, {"images": x})
    assert dets.shape == (2, graph["max_det"], 6) and counts.shape == (2,)
    (pred,) = plain.run(None, {"images": x})
    assert pred.shape[1] == meta["output"]["shape"][1]
    want = postprocess(
        torch.from_numpy(pred),
        size,
        conf_thresh=graph["conf"],
        iou_thresh=graph["iou"],
        max_det=graph["max_det"],
    )
    assert counts.sum() > 0
    for k in range(2):
        n = int(counts[k])
        assert n == len(want[k]) and not dets[k, n:].any()
        for row in dets[k, :n]:  # boxes of tied scores may come in another order
            same = (want[k][:, 5] == row[5]) & ((want[k][:, 4] - row[4]).abs() <= 1e-4)
            assert ((want[k][same, :4] - torch.from_numpy(row[:4])).abs().amax(1) <= 1e-2).any()


def test_input_sizes_follow_the_largest_stride(exported, tmp_path):
    """yolov4-p6 (stride 64): export, checkpoint and artifact metadata ask for multiples of 64;
    the stride-32 networks still take multiples of 32."""
    model, ckpt, art = exported
    m = model.config.max_stride
    odd = [m + 32, m * 2] if m > 32 else [m + 16, m * 2]  # not a multiple of the largest stride
    with pytest.raises(
        ExportError, match=rf"input_size: .*multiples of {m} \(the network's largest stride\)"
    ):
        export_artifact(ckpt, tmp_path / "e", ["onnx"], input_size=odd)
    assert not (tmp_path / "e").exists()
    with pytest.raises(CheckpointError, match=rf"multiples of {m} \(the network's largest"):
        save_checkpoint(tmp_path / "x.pt", model, NAMES, {"input_size": odd})
    if m > 32:  # metadata edited to a size the network cannot take
        import json
        import shutil

        copy = tmp_path / "copy"
        shutil.copytree(art, copy)
        meta = json.loads((copy / "metadata.json").read_text())
        meta["input_size"] = meta["preprocess"]["input_size"] = [96, 128]
        (copy / "metadata.json").write_text(json.dumps(meta))
        with pytest.raises(ExportError, match=r"'input_size'.*multiples of 64.*\[96, 128\]"):
            Predictor.from_artifact(copy)
