"""The precision an artifact is served in when the caller does not name one: the fastest gated
precision measured on this kind of CPU, else the expected order for its kind; bf16 models only
on CPUs with native bf16."""

from __future__ import annotations

import pytest

from yolov4.inference import precision as P
from yolov4.inference.precision import EXPECTED_ORDER, choose_precision, resolve_precision

AMX = {
    "cpu": "Xeon AMX",
    "flags": ["avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "amx_bf16", "amx_int8"],
    "openvino_capabilities": ["BF16", "FP32", "INT8"],
}
AVX2 = {"cpu": "EPYC", "flags": ["avx2", "fma"], "openvino_capabilities": ["FP32", "INT8"]}
FILES = {"fp32": "model.onnx", "bf16": "model.onnx", "int8": "model_int8.xml"}


def meta(latency: dict[str, float], cpu: dict, default: str = "auto") -> dict:
    precisions = {}
    for name, ms in latency.items():
        entry = {"file": FILES.get(name, "model_int8.xml"), "backends": ["openvino"]}
        if ms is not None:
            entry["measured"] = {"latency_ms": ms, "batch": 1, "runs": 5, "cpu": cpu}
        precisions[name] = entry
    return {"precisions": precisions, "default_precision": default}


@pytest.fixture(autouse=True)
def with_openvino(monkeypatch):
    monkeypatch.setattr(P, "openvino_available", lambda: True)


def test_fastest_measured_on_this_cpu_kind():
    m = meta({"fp32": 370.0, "bf16": 155.0, "int8": 207.0, "int8_bf16": 180.0}, AMX)
    chosen, why = choose_precision(m, AMX)
    assert chosen == "bf16"
    assert "fastest measured at export on this CPU kind" in why
    assert "bf16 155 ms" in why and "int8 207 ms" in why and "amx_bf16" in why
    # the measurement decides, not the expected order
    m["precisions"]["fp32"]["measured"]["latency_ms"] = 100.0
    assert choose_precision(m, AMX)[0] == "fp32"


def test_measured_elsewhere_uses_the_expected_order():
    m = meta({"fp32": 370.0, "bf16": 155.0, "int8": 207.0, "int8_bf16": 180.0}, AVX2)
    chosen, why = choose_precision(m, AMX)
    assert chosen == EXPECTED_ORDER["bf16"][0] == "bf16"
    assert "expected fastest on a CPU with native bf16" in why
    assert "export measured on another CPU kind (avx2, fma)" in why


def test_without_native_bf16_the_bf16_models_are_skipped():
    m = meta({"fp32": 370.0, "bf16": 155.0, "int8": 207.0, "int8_bf16": 180.0}, AMX)
    chosen, why = choose_precision(m, AVX2)
    assert chosen == "int8"
    assert "bf16, int8_bf16 not runnable here (needs native bf16" in why
    only_bf16 = meta({"fp32": 370.0, "bf16": 155.0}, AMX)
    assert choose_precision(only_bf16, AVX2)[0] == "fp32"


def test_same_kind_but_one_precision_unmeasured_uses_the_order():
    m = meta({"fp32": 100.0, "int8": None}, AVX2)
    chosen, why = choose_precision(m, AVX2)
    assert chosen == "int8" and "not measured" in why


def test_without_openvino_only_fp32(monkeypatch):
    monkeypatch.setattr(P, "openvino_available", lambda: False)
    m = meta({"fp32": 370.0, "int8": 207.0}, AVX2)
    chosen, why = choose_precision(m, AVX2)
    assert chosen == "fp32" and "no OpenVINO" in why


def test_an_artifact_without_precisions_is_fp32(caplog):
    assert choose_precision({"files": {"model.onnx": {}}}, AMX)[0] == "fp32"
    only = meta({"fp32": None}, AMX)
    with caplog.at_level("INFO", logger="yolov4.inference.precision"):
        assert resolve_precision(only, None, "art") == ("fp32", None)
    assert not caplog.records  # nothing was chosen: nothing to log


def test_resolve_named_or_fixed_default_is_not_chosen(caplog):
    m = meta({"fp32": 370.0, "int8": 207.0}, AVX2, default="fp32")
    assert resolve_precision(m, None, "art") == ("fp32", None)
    assert resolve_precision(m, "int8", "art") == ("int8", None)
    m["default_precision"] = "auto"
    with caplog.at_level("INFO", logger="yolov4.inference.precision"):
        chosen, why = resolve_precision(m, None, "art")
    assert chosen in ("fp32", "int8") and f"art: {why}" in caplog.text


def test_a_named_backend_chooses_among_the_precisions_it_runs(caplog):
    """``backend=onnxruntime`` with auto on an fp32 + int8 artifact: int8 runs in OpenVINO only,
    so fp32 is chosen (it was chosen int8 and then refused for the backend)."""
    m = meta({"fp32": 370.0, "int8": 207.0}, AVX2)
    m["precisions"]["fp32"]["backends"] = ["onnxruntime", "openvino", "torchscript"]
    assert choose_precision(m, AVX2)[0] == "int8"
    assert choose_precision(m, AVX2, backend="onnxruntime")[0] == "fp32"
    assert choose_precision(m, AVX2, backend="openvino")[0] == "int8"
    assert resolve_precision(m, None, "art", "onnxruntime")[0] == "fp32"
    assert choose_precision(m, AVX2, backend="tensorrt")[0] == "int8"  # none: named by the caller
