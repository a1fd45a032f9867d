"""The ``onnx_uint8`` export format: ``model_uint8.onnx``, the preprocessing's last step in the
graph, for runtimes and clients without Python (Triton, C++, DeepStream).

Input ``images (B, H, W, 3)`` uint8, NHWC, RGB: the image already letterboxed with
``preprocess.pad_value`` borders (or stretched, without border, per the artifact's
``preprocess.mode``) to the network size ``H, W``, as
:func:`yolov4.core.preprocess.resize_image` makes it.
Inside: the channels reordered to ``preprocess.channel_order``, NCHW, float32 times
``preprocess.scale`` (:func:`yolov4.core.preprocess.image_to_tensor`), then the network and
decode of ``model.onnx``: output ``predictions (B, N, 5 + C)`` as ``model.onnx``'s. The
export's check feeds the same uint8 pixels to this file (onnxruntime) and, through
``image_to_tensor``, to the PyTorch model, within
:data:`~yolov4.export.parity.PARITY_RTOL` (boxes) and
:data:`~yolov4.export.parity.SCORE_TOL` (objectness and class probabilities).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import Tensor, nn

from yolov4.core.model import DecodedModel
from yolov4.core.preprocess import PreprocessConfig, image_to_tensor
from yolov4.export.parity import SCORE_TOL, parity

if TYPE_CHECKING:
    from yolov4.export.job import ExportJob

__all__ = ["FILE", "Uint8Model", "example", "check", "describe"]

FILE = "model_uint8.onnx"


class Uint8Model(nn.Module):
    """``images (B, H, W, 3)`` uint8 RGB -> :class:`DecodedModel`'s predictions, with the
    channel order and scale of ``preprocess`` applied first."""

    def __init__(self, decoded: DecodedModel, preprocess: PreprocessConfig) -> None:
        super().__init__()
        self.decoded = decoded
        self.scale = float(preprocess.scale)
        order = [2, 1, 0] if preprocess.channel_order == "bgr" else [0, 1, 2]
        self.register_buffer("order", torch.tensor(order), persistent=False)

    def forward(self, images: Tensor) -> Tensor:
        x = images.index_select(3, self.order).permute(0, 3, 1, 2)
        return self.decoded(x.to(torch.float32) * self.scale)


def example(size: Sequence[int], batch: int = 1, generator: torch.Generator | None = None):
    """Random ``(batch, H, W, 3)`` uint8 images at the network size."""
    return torch.randint(0, 256, (batch, *size, 3), dtype=torch.uint8, generator=generator)


def check(job: ExportJob, folder: Path) -> dict[str, Any]:
    """onnxruntime on uint8 images vs PyTorch on the same pixels made float by
    :func:`~yolov4.core.preprocess.image_to_tensor` (the Predictor's path)."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(folder / FILE), providers=["CPUExecutionProvider"])

    def sample(batch: int, g: torch.Generator) -> tuple[Tensor, np.ndarray]:
        u = example(job.size, batch, g).numpy()
        return torch.stack([image_to_tensor(im, job.preprocess) for im in u]), u

    def run(u: np.ndarray) -> Tensor:
        return torch.from_numpy(session.run(None, {"images": u})[0])

    return {FILE: parity(FILE, run, job.model, sample, score_tol=SCORE_TOL)}


def describe(job: ExportJob) -> dict[str, Any]:
    """The artifact metadata's ``uint8_input`` entry."""
    p = job.preprocess
    return {
        "file": FILE,
        "input": {
            "name": "images",
            "shape": ["batch", *job.size, 3],
            "dtype": "uint8",
            "layout": "NHWC",
            "channel_order": "rgb",
            "resized": f"letterbox to the input size, pad_value {p.pad_value}"
            if p.mode == "letterbox"
            else f"{p.mode} to the input size, no border",
        },
        "in_graph": {"channel_order": p.channel_order, "scale": p.scale},
        "output": "predictions, as model.onnx's",
    }
