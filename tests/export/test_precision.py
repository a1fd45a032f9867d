"""Reduced-precision artifacts: INT8 (NNCF, OpenVINO) and bf16 made at export, each
gated on its mAP50 against fp32 on the overfit model's own images, recorded in metadata.json,
loaded by the Predictor with the runtime that can run them."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
import torch

from yolov4.core.artifact import MODEL_INT8_BIN, MODEL_INT8_XML, read_metadata, sha256
from yolov4.core.checkpoint import load_checkpoint
from yolov4.core.model import DecodedModel
from yolov4.core.preprocess import preprocess
from yolov4.errors import ExportError
from yolov4.export.artifact import export_artifact
from yolov4.export.quantize import PARITY_SCORE, REDUCED_PARITY_TOL
from yolov4.inference import Predictor
from yolov4.inference.backends import BF16_CPU_FLAGS, OpenVinoBackend, bf16_native, cpu_features
from yolov4.inference.images import load_images
from yolov4.models import fuse_model

GATE_MESSAGE = re.compile(
    r"int8 mAP50 (\d+\.\d+) is (-?\d+\.\d+) points below fp32's (\d+\.\d+) on .*gate: 0\.0 points"
)


def test_int8_passes_its_gate_and_records_both_maps(int8_artifact, overfit):
    meta = read_metadata(int8_artifact)  # checksums of every file, the IR's .bin included
    assert meta["default_precision"] == "int8"  # as exported (default: auto)
    assert set(meta["precisions"]) == {"fp32", "int8"}
    entry = meta["precisions"]["int8"]
    assert entry["file"] == MODEL_INT8_XML and entry["backends"] == ["openvino"]
    for name in (MODEL_INT8_XML, MODEL_INT8_BIN):
        assert meta["files"][name]["sha256"] == sha256(int8_artifact / name)
    assert entry["quantization"]["calibration_images"] == len(overfit.calibration)
    acc = entry["accuracy"]
    assert acc["images"] == 4 and acc["subset"] == "synthetic val, 4 images"
    assert acc["fp32"]["mAP50"] > 0.3  # a trained model: the gate compares real numbers
    assert acc["mAP50_drop_points"] == pytest.approx(
        100 * (acc["fp32"]["mAP50"] - acc["int8"]["mAP50"]), abs=1e-3
    )
    assert acc["mAP50_drop_points"] <= acc["gate_points"] == 1.0
    assert acc["runtime"].startswith("openvino") and acc["executed_precision"] == "f32"
    assert acc["cpu"] == cpu_features()
    # the recorded numbers are what the artifact gives when loaded again: int8 by default
    predictor = Predictor.from_artifact(int8_artifact)
    assert (predictor.backend.name, predictor.precision) == ("openvino", "int8")
    assert overfit.evaluate(predictor)["mAP50"] == pytest.approx(acc["int8"]["mAP50"], abs=1e-4)
    # fp32 in onnxruntime (another runtime than the gate's OpenVINO) gives fp32's number
    fp32 = Predictor.from_artifact(int8_artifact, precision="fp32")
    assert (fp32.backend.name, fp32.precision) == ("onnxruntime", "fp32")
    assert overfit.evaluate(fp32)["mAP50"] == pytest.approx(acc["fp32"]["mAP50"], abs=1e-3)


def test_int8_agrees_with_torch_within_its_tolerance(int8_artifact, overfit):
    """On the dataset's images: probabilities within REDUCED_PARITY_TOL['int8']['prob'] and the
    boxes PyTorch serves (score > PARITY_SCORE) within its box tolerance of the input side."""
    ckpt = load_checkpoint(overfit.checkpoint)
    reference = DecodedModel(fuse_model(ckpt.model)).eval()
    predictor = Predictor.from_artifact(int8_artifact)
    files = [r.file for r in overfit.datamodule.split("val").records]
    x = torch.stack([preprocess(a, predictor.preprocess_config)[0] for a in load_images(files)])
    with torch.inference_mode():
        ref = reference(x)
    out = predictor.backend(x)
    tol = REDUCED_PARITY_TOL["int8"]
    assert float((out[..., 4:] - ref[..., 4:]).abs().mean()) <= tol["prob"]
    served = (ref[..., 4:5] * ref[..., 5:]).amax(-1) > PARITY_SCORE
    assert served.any()  # a trained model serves boxes on its own images
    box = float((out[..., :4] - ref[..., :4]).abs()[served].max())
    scale = max(max(x.shape[-2:]), float(ref[..., :4][served].abs().max()))
    assert box <= tol["box"] * scale
    # and what export measured is recorded
    parity = read_metadata(int8_artifact)["parity"]
    recorded = parity[f"{MODEL_INT8_XML}@openvino-int8"]
    assert recorded["mean_prob_diff"] <= tol["prob"]
    assert recorded["max_rel_diff"] <= tol["box"] and recorded["box_scale_px"] >= 64


def test_int8_runs_in_openvino_only(int8_artifact):
    with pytest.raises(ExportError, match=r"int8 model runs in \['openvino'\], not 'onnxruntime'"):
        Predictor.from_artifact(int8_artifact, backend="onnxruntime")
    with pytest.raises(ExportError, match=r"no bf16 model \(precisions: \['fp32', 'int8'\]\)"):
        Predictor.from_artifact(int8_artifact, precision="bf16")


@pytest.mark.parametrize("name", [MODEL_INT8_BIN, MODEL_INT8_XML])
def test_a_corrupt_int8_file_refuses_int8_and_leaves_fp32_loadable(int8_artifact, tmp_path, name):
    """One byte flipped in the middle of the IR's weights or graph: OpenVINO would read the
    file, so the sha256 check refuses INT8 naming the file; fp32 (model.onnx, unchanged) loads
    in both its runtimes and predicts as the intact artifact does."""
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(int8_artifact, copy)
    data = bytearray((copy / name).read_bytes())
    data[len(data) // 2] ^= 0xFF
    (copy / name).write_bytes(bytes(data))
    with pytest.raises(ExportError, match=f"{re.escape(name)} does not match its sha256"):
        Predictor.from_artifact(copy, precision="int8")
    with pytest.raises(ExportError, match=f"{re.escape(name)} does not match its sha256"):
        read_metadata(copy)  # the whole artifact's check names it too
    x = torch.rand(1, 3, 64, 64)
    for backend in ("onnxruntime", "openvino"):
        intact = Predictor.from_artifact(int8_artifact, precision="fp32", backend=backend)
        loaded = Predictor.from_artifact(copy, precision="fp32", backend=backend)
        assert loaded.model_file == "model.onnx"
        assert torch.equal(loaded.backend(x), intact.backend(x))


def test_gate_refuses_a_bad_calibration_naming_both_numbers(overfit, tmp_path):
    """Black images calibrate every activation range to ~0: the INT8 model loses its mAP,
    and a gate of 0 points refuses it with both numbers; nothing is left behind."""
    black = [np.zeros((64, 64, 3), np.uint8)] * 2
    out = tmp_path / "export"
    with pytest.raises(ExportError) as e:
        export_artifact(
            overfit.checkpoint,
            out,
            formats=["onnx"],
            precisions=["fp32", "int8"],
            calibration=black,
            evaluate=overfit.evaluate,
            map50_gate=0.0,
        )
    m = GATE_MESSAGE.search(str(e.value))
    assert m, str(e.value)
    low, drop, fp32 = (float(v) for v in m.groups())
    assert fp32 > 30 and low < fp32 and drop == pytest.approx(fp32 - low, abs=0.011)
    assert not out.exists() and list(tmp_path.iterdir()) == []


def test_bf16_only_on_a_cpu_with_native_bf16(overfit, tmp_path):
    """This machine (AVX2, no AVX512-BF16/AMX) refuses bf16 naming what it lacks and has; a
    bf16 CPU exports it within the gate, executed in bf16."""
    run = dict(formats=["onnx"], precisions=["fp32", "bf16"], evaluate=overfit.evaluate)
    features = cpu_features()
    if not bf16_native(features):
        flags = ", ".join(features["flags"]) or "none of"
        with pytest.raises(ExportError, match=" or ".join(BF16_CPU_FLAGS)) as e:
            export_artifact(overfit.checkpoint, tmp_path / "export", **run)
        assert flags in str(e.value) and "use precision fp32 or int8" in str(e.value)
        assert not (tmp_path / "export").exists()
        return
    art = export_artifact(overfit.checkpoint, tmp_path / "export", **run)
    acc = read_metadata(art)["precisions"]["bf16"]["accuracy"]
    assert acc["executed_precision"] == "bf16" and acc["mAP50_drop_points"] <= 1.0
    assert Predictor.from_artifact(art, precision="bf16").precision == "bf16"


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(precisions=["int8"]), r"needs a validation set"),
        (dict(precisions=["int8"], evaluate=print), r"int8 needs calibration images"),
        (dict(precisions=["fp16"]), r"precisions must be a non-empty subset"),
        (dict(precisions=["int8"], evaluate=print, calibration=[1], map50_gate=-1), r">= 0"),
        (
            dict(precisions=["int8"], evaluate=print, calibration=[1], formats=["torchscript"]),
            r"made from model.onnx: add onnx",
        ),
        (
            dict(precisions=["fp32"], default_precision="int8"),
            r"default_precision must be 'auto' or one",
        ),
    ],
)
def test_reduced_precision_requests_checked_before_any_work(overfit, tmp_path, kwargs, message):
    with pytest.raises(ExportError, match=message):
        export_artifact(overfit.checkpoint, tmp_path / "export", **kwargs)
    assert list(tmp_path.iterdir()) == []


def test_metadata_precisions_are_validated(int8_artifact, tmp_path):
    import shutil

    cases = {
        "precisions.int8.file": lambda m: m["precisions"]["int8"].update(file="nope.xml"),
        "precisions.int8.backends": lambda m: m["precisions"]["int8"].update(
            backends=["onnxruntime"]
        ),
        "default_precision": lambda m: m.update(default_precision="bf16"),
        "precisions": lambda m: m["precisions"].update(fp16={"file": "model.onnx"}),
    }
    for key, change in cases.items():
        art = tmp_path / key
        shutil.copytree(int8_artifact, art)
        meta = json.loads((art / "metadata.json").read_text())
        change(meta)
        (art / "metadata.json").write_text(json.dumps(meta))
        with pytest.raises(ExportError, match=f"key '{re.escape(key)}'"):
            read_metadata(art)


def test_openvino_backend_refuses_an_unknown_precision(int8_artifact):
    with pytest.raises(ExportError, match=r"precision must be one of .* got 'fp16'"):
        OpenVinoBackend(int8_artifact / "model.onnx", "fp16")


@pytest.mark.parametrize(
    ("precision", "hint"), [("int8", True), ("int8_bf16", True), ("bf16", False)]
)
def test_a_reduced_model_that_disagrees_is_refused_naming_the_differences(precision, hint):
    """The parity check on a stand-in backend whose boxes are 100 px off PyTorch's: refused with
    both differences; an INT8 refusal says an undertrained network is the usual cause."""
    from yolov4.export.quantize import _parity

    x = torch.rand(2, 3, 64, 64)
    ref = torch.zeros(2, 5, 7)
    ref[..., 2:4] = 10.0
    ref[..., 4:] = 0.9  # scored 0.81: served, so its box is compared

    class Shifted:
        def __init__(self) -> None:
            self.precision = precision

        def __call__(self, images):
            out = ref.clone()
            out[..., :2] += 100.0
            return out

    with pytest.raises(ExportError) as e:
        _parity(Shifted(), lambda images: ref, x, "model_int8.xml")
    msg = str(e.value)
    assert f"model_int8.xml ({precision}) disagrees with PyTorch" in msg
    assert "boxes scored over 0.25 by up to 100 px" in msg and "the export was not written" in msg
    assert ("barely trained network" in msg) is hint
    assert _parity(Shifted(), lambda images: Shifted()(images), x, "f")["max_abs_diff"] == 0.0
