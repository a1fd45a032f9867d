"""device= is checked where it enters (a backend), naming what the machine has."""

from __future__ import annotations

import pytest
import torch

from yolov4.errors import ConfigError
from yolov4.inference.backends import check_device, load_backend


def test_unknown_names_and_missing_gpus_are_config_errors(monkeypatch):
    assert check_device("cpu") == torch.device("cpu")
    with pytest.raises(ConfigError, match="'foo' is not a device torch knows"):
        check_device("foo")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ConfigError, match="no CUDA GPU that torch can use"):
        check_device("cuda")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert check_device("cuda:1") == torch.device("cuda:1")
    with pytest.raises(ConfigError, match=r"has 2 CUDA GPU\(s\): cuda:0 .. cuda:1"):
        check_device("cuda:5")
    # meta was accepted and failed at the first image ("Cannot copy out of meta tensor")
    for other in ("meta", "xla"):
        with pytest.raises(ConfigError, match=rf"models run on cpu, cuda .* or mps, got '{other}'"):
            check_device(other)


def test_a_cpu_runtime_refuses_a_gpu_device(monkeypatch, tmp_path):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    with pytest.raises(ConfigError, match="'openvino' runs on the CPU"):
        load_backend(tmp_path / "model.onnx", "openvino", "cuda")
    import onnxruntime as ort

    monkeypatch.setattr(ort, "get_available_providers", lambda: ["CPUExecutionProvider"])
    with pytest.raises(ConfigError, match="this onnxruntime has no CUDA provider"):
        load_backend(tmp_path / "model.onnx", "onnxruntime", "cuda")
