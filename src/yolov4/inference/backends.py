"""Inference backends: ``backend(images (B, 3, H, W) float32) -> predictions (B, N, 5 + C)``.

All three return the same thing, the decoded predictions in input pixels (see
:mod:`yolov4.core.artifact`): PyTorch (a fused model + decode), onnxruntime (``model.onnx``)
and TorchScript (``model.torchscript``).
"""

from __future__ import annotations

import warnings
from pathlib import Path

import torch

from yolov4.core.model import DecodedModel
from yolov4.errors import ExportError

__all__ = [
    "TorchBackend",
    "OnnxBackend",
    "TorchScriptBackend",
    "load_backend",
    "BACKENDS",
]

BACKENDS = ("onnxruntime", "torchscript")


class TorchBackend:
    """A (fused) :class:`DecodedModel` on ``device``."""

    name = "torch"

    def __init__(self, model: DecodedModel, device: str | torch.device = "cpu") -> None:
        self.device = torch.device(device)
        self.model = model.to(self.device).eval()

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            return self.model(images.to(self.device, non_blocking=True))


class OnnxBackend:
    """``model.onnx`` through onnxruntime (CUDA provider first when available)."""

    name = "onnxruntime"

    def __init__(self, path: str | Path, providers: list[str] | None = None) -> None:
        import onnxruntime as ort

        available = ort.get_available_providers()
        wanted = providers or [
            p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in available
        ]
        try:
            self.session = ort.InferenceSession(str(path), providers=wanted)
        except Exception as e:  # onnxruntime raises its own exception types
            raise ExportError(f"onnxruntime cannot load {path}: {e}") from e
        self.input_name = self.session.get_inputs()[0].name
        self.device = torch.device("cpu")

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        x = images.detach().to("cpu", torch.float32).contiguous().numpy()
        return torch.from_numpy(self.session.run(None, {self.input_name: x})[0])


class TorchScriptBackend:
    """``model.torchscript`` (traced) on ``device``."""

    name = "torchscript"

    def __init__(self, path: str | Path, device: str | torch.device = "cpu") -> None:
        self.device = torch.device(device)
        try:
            with warnings.catch_warnings():  # deprecated in favour of torch.export, still supported
                warnings.simplefilter("ignore", FutureWarning)
                self.model = torch.jit.load(str(path), map_location=self.device).eval()
        except Exception as e:
            raise ExportError(f"cannot load TorchScript {path}: {e}") from e

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            return self.model(images.to(self.device))


def load_backend(path: str | Path, name: str, device: str | torch.device = "cpu"):
    """The backend ``name`` (``onnx``/``onnxruntime`` or ``torchscript``) over the file ``path``."""
    if name in ("onnx", "onnxruntime"):
        return OnnxBackend(path)
    if name == "torchscript":
        return TorchScriptBackend(path, device)
    raise ExportError(f"unknown backend {name!r}; expected one of {BACKENDS}")
