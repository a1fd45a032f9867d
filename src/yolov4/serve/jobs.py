"""The work a request hands the inference threads, and what the service says about its model."""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from yolov4.errors import InputError
from yolov4.inference import Detections, Predictor
from yolov4.inference.images import decode_image
from yolov4.serve.inputs import Upload
from yolov4.serve.render import render_jpeg
from yolov4.serve.settings import ServeSettings

__all__ = ["DetectJob", "run_together", "model_info", "model_summary"]

MODEL_SUFFIX = {"onnxruntime": ".onnx", "torchscript": ".torchscript"}
SUMMARY_KEYS = (  # metadata.json keys /v1/model passes on
    "class_names",
    "input_size",
    "preprocess",
    "thresholds",
    "strides",
    "anchors",
    "format",
    "created",
    "versions",
    "files",
    "parity",
)


class DetectJob:
    """Decode the uploads and run the Predictor on them as one batch (called in a worker thread).

    Args:
        predictor: the service's Predictor.
        max_pixels: the decoded-size limit (:class:`~yolov4.inference.images.ImageTooLarge`).
        uploads: the request's encoded images.
        conf, iou, max_det, classes: Predictor thresholds (``None``: the artifact's defaults).
        render_quality: also draw the first image's detections into :attr:`jpeg` (JPEG quality).
        warmup: ignore ``uploads`` and run one blank image of the model's input size.
    """

    def __init__(
        self,
        predictor: Predictor,
        max_pixels: int,
        uploads: list[Upload] | None = None,
        conf: float | None = None,
        iou: float | None = None,
        max_det: int | None = None,
        classes: list[int] | None = None,
        render_quality: int | None = None,
        warmup: bool = False,
    ) -> None:
        self.predictor = predictor
        self.max_pixels = max_pixels
        self.uploads = uploads or []
        self.thresholds = {"conf": conf, "iou": iou, "max_det": max_det, "classes": classes}
        self.render_quality = render_quality
        self.warmup = warmup
        self.jpeg = b""
        self.results: list[dict[str, Any]] = []
        self.timing: dict[str, float] = {}

    def __call__(self) -> list[dict[str, Any]]:
        """-> one ``Detections.to_dict()`` per upload, in order. Raises ``InputError``."""
        if self.warmup:
            self.predictor(np.zeros((*self.predictor.input_size, 3), np.uint8))
            return []
        images = self.decode()
        return self.collect(images, self.predictor(images, **self.thresholds))

    def decode(self) -> list[np.ndarray]:
        """The uploads as ``(H, W, 3)`` uint8 RGB arrays. Raises ``InputError``."""
        start = time.perf_counter()
        images = [decode_image(u.data, u.name, self.max_pixels) for u in self.uploads]
        self.timing["decode"] = 1e3 * (time.perf_counter() - start)
        return images

    def collect(self, images: list[np.ndarray], detections: list[Detections]) -> list[dict]:
        """Keep the Predictor's answer for this job's ``images`` (and draw it if asked)."""
        self.timing.update(detections[0].timing_ms)
        self.results = [d.to_dict() for d in detections]
        if self.render_quality is not None:
            self.jpeg = render_jpeg(images[0], self.results[0], self.render_quality)
        return self.results

    def batches_with(self, other: DetectJob) -> bool:
        """Whether one Predictor call can serve both jobs (same thresholds, no warm-up)."""
        return not (self.warmup or other.warmup) and self.thresholds == other.thresholds

    def finish(self, started: float) -> dict[str, float]:
        """The timing block of a response: queue, decode, preprocess, model, postprocess and
        ``total`` (server time since ``started``, a ``time.perf_counter()``), in ms."""
        timing = {**self.timing, "total": 1e3 * (time.perf_counter() - started)}
        return {k: round(v, 2) for k, v in timing.items()}


def run_together(jobs: list[DetectJob]) -> list[list[dict[str, Any]] | InputError]:
    """Jobs that :meth:`~DetectJob.batches_with` each other in one Predictor call -> each job's
    results, or the ``InputError`` of a job whose image did not decode (the others still run)."""
    if len(jobs) == 1:
        try:
            return [jobs[0]()]
        except InputError as e:
            return [e]
    decoded: list[list[np.ndarray] | InputError] = []
    for job in jobs:
        try:
            decoded.append(job.decode())
        except InputError as e:
            decoded.append(e)
    ok = [(job, images) for job, images in zip(jobs, decoded) if isinstance(images, list)]
    if ok:
        detections = ok[0][0].predictor(
            [im for _, images in ok for im in images], **ok[0][0].thresholds
        )
        start = 0
        for job, images in ok:
            job.collect(images, detections[start : start + len(images)])
            start += len(images)
    return [d if isinstance(d, InputError) else job.results for job, d in zip(jobs, decoded)]


def model_info(metadata: dict[str, Any], backend: str) -> dict[str, Any]:
    """``{"name", "version", "sha256", "backend"}``: which model answered (``sha256`` of the
    served file, 16 hex digits, changes with every export)."""
    suffix = MODEL_SUFFIX.get(backend, "")
    files = metadata.get("files", {})
    sha = next((f["sha256"][:16] for n, f in files.items() if n.endswith(suffix)), None)
    return {
        "name": metadata.get("model", {}).get("name"),
        "version": metadata.get("versions", {}).get("yolov4"),
        "sha256": sha,
        "backend": backend,
    }


def model_summary(
    predictor: Predictor, info: dict[str, Any], settings: ServeSettings
) -> dict[str, Any]:
    """The ``GET /v1/model`` body: artifact metadata, the served model and the request limits."""
    meta = predictor.metadata
    return {
        "model": info,
        "architecture": meta.get("model"),
        **{k: meta[k] for k in SUMMARY_KEYS if k in meta},
        "num_classes": len(predictor.class_names),
        "limits": {
            "max_bytes": settings.max_bytes,
            "max_pixels": settings.max_pixels,
            "max_batch": settings.max_batch,
            "max_batch_bytes": settings.max_batch_bytes,
            "max_det": settings.max_det,
        },
    }
