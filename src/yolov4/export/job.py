"""What an export format's writer and check are handed (:class:`ExportJob`), the ONNX
writers several formats share (:func:`export_onnx`, :func:`write_nms_onnx`) and the check of
their NMS graphs (:func:`check_nms_graph`)."""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from yolov4.core.model import DecodedModel
from yolov4.core.postprocess import PostprocessConfig
from yolov4.core.preprocess import PreprocessConfig
from yolov4.export.onnx_nms import NmsModel
from yolov4.export.parity import NMS_CHECK_IMAGES, finite, parity_nms
from yolov4.export.quantize import calibration_batch
from yolov4.models import ModelConfig, YOLOv4

__all__ = [
    "ExportJob",
    "export_onnx",
    "write_nms_onnx",
    "nms_graph",
    "check_nms_graph",
    "synthetic_scenes",
]

SCENE_SEED = 0  # the generated scenes of an export without images (deterministic)


@dataclass
class ExportJob:
    """What every format's writer and check read: the fused fp32 model with its decode, its
    config, the artifact's preprocessing and thresholds, the ONNX opset, the export's
    calibration images (files or RGB arrays of the checkpoint's dataset) when it has them, and
    the unfused network when a requested format writes it (``ArtifactFormat.unfused``)."""

    model: DecodedModel
    config: ModelConfig
    class_names: list[str]
    preprocess: PreprocessConfig
    settings: PostprocessConfig
    opset: int
    calibration: Sequence[Any] | None = None
    network: YOLOv4 | None = None

    @property
    def size(self) -> list[int]:
        return list(self.preprocess.input_size)

    def example(self, batch: int = 1) -> torch.Tensor:
        return torch.rand(batch, 3, *self.size)

    @cached_property
    def nms_model(self) -> NmsModel:
        """The model with NMS in the graph (its thresholds baked in)."""
        return NmsModel(self.model, self.settings).eval()  # as self.model: an export keeps its mode

    @cached_property
    def check_images(self) -> tuple[torch.Tensor, str]:
        """``(images (NMS_CHECK_IMAGES, 3, H, W), what they are)``: images that give
        detections, preprocessed as the artifact's: the first calibration images, else
        generated scenes (:func:`synthetic_scenes`)."""
        if self.calibration:
            chosen = list(self.calibration[:NMS_CHECK_IMAGES])
            what = f"the first {len(chosen)} calibration images"
        else:
            chosen = synthetic_scenes(NMS_CHECK_IMAGES, max(self.size))
            what = f"{len(chosen)} generated scenes (yolov4.data.synthetic, seed {SCENE_SEED})"
        return calibration_batch(chosen, self.preprocess, "the NMS graphs' check"), what


def synthetic_scenes(n: int, side: int, seed: int = SCENE_SEED) -> list[np.ndarray]:
    """``n`` images ``(H, W, 3)`` uint8 RGB of the built-in synthetic dataset's kind (shapes on
    textured backgrounds, :func:`yolov4.data.synthetic.render_sample`; sides about ``side``),
    each with at least one object."""
    from yolov4.data.synthetic import render_sample

    rng = np.random.default_rng(seed)
    scenes: list[np.ndarray] = []
    while len(scenes) < n:
        image, boxes, _, _ = render_sample(rng, side)
        if len(boxes):
            scenes.append(image)
    return scenes


def export_onnx(
    model: nn.Module,
    path: Path,
    example: torch.Tensor,
    opset: int,
    outputs: Sequence[str] = ("predictions",),
) -> None:
    """Legacy (TorchScript-based) ONNX export, dynamic batch on the input and every output."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model,
            (example,),
            str(path),
            dynamo=False,
            opset_version=opset,
            input_names=["images"],
            output_names=list(outputs),
            dynamic_axes={name: {0: "batch"} for name in ("images", *outputs)},
        )


def write_nms_onnx(job: ExportJob, path: Path) -> None:
    """``job``'s model with NMS in the graph (:mod:`yolov4.export.onnx_nms`) to ``path``."""
    with torch.inference_mode():  # NMS drops NaN scores: check what it is fed
        finite(path.name, job.model(job.example(2)).numpy())
    export_onnx(job.nms_model, path, job.example(), job.opset, ("detections", "num_detections"))


def check_nms_graph(job: ExportJob, folder: Path, file: str) -> dict[str, Any]:
    """``{file: parity record}``: the NMS graph ``folder / file`` checked against PyTorch on
    ``job``'s :attr:`~ExportJob.check_images` (:func:`yolov4.export.parity.parity_nms`)."""
    images, what = job.check_images
    return {file: parity_nms(folder / file, job.nms_model, images, what, name=file)}


def nms_graph(job: ExportJob, file: str) -> dict[str, Any]:
    """The metadata of an NMS graph ``file``: outputs, layout and the thresholds baked in."""
    m = job.nms_model
    return {
        "file": file,
        "outputs": {"detections": ["batch", m.max_det, 6], "num_detections": ["batch"]},
        "layout": "x1, y1, x2, y2 (input pixels), score, class index; "
        "rows past num_detections are zeros",
        "conf": m.conf,
        "iou": m.iou,
        "max_det": m.max_det,
        "nms": "ONNX NonMaxSuppression over all classes (each box's best class)"
        if m.agnostic
        else "ONNX NonMaxSuppression per class ("
        + ("multi-label)" if m.multi_label else "each box's best class)"),
        "multi_label": m.multi_label,
        "agnostic_nms": m.agnostic,
    }
