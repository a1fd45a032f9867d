"""int8_bf16: the INT8 IR with its non-quantized operations in bf16, on CPUs with native bf16,
gated as INT8 (parity vs PyTorch, mAP50 vs fp32); every precision's latency recorded with the
CPU it ran on, and the Predictor's choice when it is not told a precision."""

from __future__ import annotations

import logging

import pytest

from yolov4.core.artifact import MODEL_INT8_XML, read_metadata
from yolov4.errors import ExportError
from yolov4.export.artifact import export_artifact
from yolov4.export.quantize import REDUCED_PARITY_TOL
from yolov4.inference import Predictor
from yolov4.inference.backends import BF16_CPU_FLAGS, bf16_native, cpu_features

NATIVE = bf16_native(cpu_features())


def export(overfit, out, precisions):
    """The overfit checkpoint exported to ONNX with ``precisions`` (INT8 calibrated and gated)."""
    return export_artifact(
        overfit.checkpoint,
        out,
        formats=["onnx"],
        precisions=precisions,
        calibration=overfit.calibration,
        evaluate=overfit.evaluate,
    )


def test_refused_without_native_bf16(overfit, tmp_path, monkeypatch):
    """Any CPU: one that reports no BF16 capability refuses int8_bf16 before any file."""
    from yolov4.export import quantize

    plain = {"cpu": "plain", "flags": ["avx2", "fma"], "openvino_capabilities": ["FP32", "INT8"]}
    monkeypatch.setattr(quantize, "cpu_features", lambda: plain)
    with pytest.raises(ExportError, match=r"precision int8_bf16 needs a CPU with native bf16") as e:
        export(overfit, tmp_path / "export", ["fp32", "int8_bf16"])
    assert " or ".join(BF16_CPU_FLAGS) in str(e.value) and "avx2, fma" in str(e.value)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow  # an NNCF quantization and four evaluations (~30 s on a busy 2-core machine)
def test_int8_bf16_gated_measured_and_chosen(overfit, tmp_path, caplog):
    if not NATIVE:  # this CPU itself (nothing mocked) refuses int8_bf16, naming its own flags
        match = r"precision int8_bf16 needs a CPU with native bf16"
        with pytest.raises(ExportError, match=match) as e:
            export(overfit, tmp_path / "export", ["fp32", "int8_bf16"])
        assert ", ".join(cpu_features()["flags"]) in str(e.value)
        assert not (tmp_path / "export").exists()
        return
    art = export(overfit, tmp_path / "export", ["fp32", "int8", "int8_bf16"])
    meta = read_metadata(art)
    assert meta["default_precision"] == "auto"
    entry = meta["precisions"]["int8_bf16"]
    assert entry["file"] == MODEL_INT8_XML and entry["backends"] == ["openvino"]
    acc = entry["accuracy"]
    assert acc["executed_precision"] == "bf16"  # the IR's float layers in bf16
    assert meta["precisions"]["int8"]["accuracy"]["executed_precision"] == "f32"
    assert acc["fp32"]["mAP50"] > 0.3 and acc["mAP50_drop_points"] <= acc["gate_points"]
    parity = meta["parity"][f"{MODEL_INT8_XML}@openvino-int8_bf16"]
    assert parity["mean_prob_diff"] <= REDUCED_PARITY_TOL["int8_bf16"]["prob"]
    here = cpu_features()
    for name in ("fp32", "int8", "int8_bf16"):
        measured = meta["precisions"][name]["measured"]
        assert measured["cpu"] == here and measured["latency_ms"] > 0 and measured["batch"] == 1
    assert meta["precisions"]["fp32"]["measured"]["backend"] == "onnxruntime"
    # the recorded mAP is what the artifact gives when loaded in int8_bf16
    named = Predictor.from_artifact(art, precision="int8_bf16")
    assert named.backend.executed == "bf16" and named.precision_reason is None
    assert overfit.evaluate(named)["mAP50"] == pytest.approx(acc["int8_bf16"]["mAP50"], abs=1e-4)
    # not told: the fastest measured here, logged with the numbers
    with caplog.at_level(logging.INFO, logger="yolov4.inference.precision"):
        chosen = Predictor.from_artifact(art)
    fastest = min(
        ("fp32", "int8", "int8_bf16"), key=lambda p: meta["precisions"][p]["measured"]["latency_ms"]
    )
    assert chosen.precision == fastest
    assert (
        f"precision auto -> {fastest}: fastest measured at export on this CPU kind" in caplog.text
    )
    assert chosen.precision_reason in caplog.text
