"""The work a request hands the inference threads, and what the service says about its model."""

from __future__ import annotations

import ctypes
import functools
import hashlib
import sys
import time
from pathlib import PurePath
from typing import Any

import numpy as np

from yolov4.core.images import ImageTooLarge, decode_image
from yolov4.errors import InputError
from yolov4.inference import Detections, Predictor
from yolov4.serve.inputs import Upload
from yolov4.serve.render import render_jpeg
from yolov4.serve.settings import ServeSettings

__all__ = ["DetectJob", "run_together", "predict_in_calls", "release_memory", "model_info",
           "model_summary"]  # fmt: skip

# After a job that decoded this many pixels, freed memory is handed back to the OS: glibc raises
# its mmap threshold to the largest block freed (up to 32 MB), so big decoded images end up in
# heap arenas that stay mapped (measured: ~250 MB kept after 16 images of 2048x1536).
TRIM_AFTER_PIXELS = 4_000_000

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
    "precisions",
    "default_precision",
)  # and conf_source, its file's name only (_without_paths)


class DetectJob:
    """Decode the uploads and run the Predictor on them as one batch (called in a worker thread).

    Args:
        predictor: the service's Predictor.
        max_pixels: the decoded-size limit of one image
            (:class:`~yolov4.inference.images.ImageTooLarge`).
        uploads: the request's encoded images.
        max_request_pixels: the pixel budget of all ``uploads`` together (default: no more
            than ``max_pixels`` each); see :meth:`decode`.
        model_batch: most images per Predictor call (default: all in one).
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
        max_request_pixels: int | None = None,
        model_batch: int | None = None,
    ) -> None:
        self.predictor = predictor
        self.max_pixels = max_pixels
        self.max_request_pixels = max_request_pixels
        self.model_batch = model_batch
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
        try:
            images = self.decode()
            detections, timing = predict_in_calls(
                self.predictor, images, self.thresholds, self.model_batch
            )
            return self.collect(images, detections, timing)
        finally:
            images = None  # before the trim: the decoded arrays are garbage now
            if self.decoded_pixels >= TRIM_AFTER_PIXELS:
                release_memory()

    @property
    def decoded_pixels(self) -> int:
        return self.timing.get("pixels", 0)

    def decode(self) -> list[np.ndarray]:
        """The uploads as ``(H, W, 3)`` uint8 RGB arrays, decoded one by one: each may have at
        most ``min(max_pixels, what the request's budget has left)`` pixels, judged from its
        header before its pixels are decoded, so a request over its budget is refused (413)
        without decoding the rest. Raises ``InputError`` (``ImageTooLarge``)."""
        start = time.perf_counter()
        budget = self.max_request_pixels
        images: list[np.ndarray] = []
        used = 0
        for u in self.uploads:
            left = self.max_pixels if budget is None else budget - used
            try:
                image = decode_image(u.data, u.name, min(self.max_pixels, left))
            except ImageTooLarge as e:
                if budget is None or left >= self.max_pixels:
                    raise ImageTooLarge(f"{e} pixels per image (--max-pixels)") from None
                raise ImageTooLarge(
                    f"{e}: the request's pixel budget is {budget:,} pixels for all its images "
                    f"(--max-request-pixels) and the {len(images)} before it took {used:,}"
                ) from None
            used += image.shape[0] * image.shape[1]
            self.timing["pixels"] = used
            images.append(image)
        self.timing["decode"] = 1e3 * (time.perf_counter() - start)
        return images

    def collect(
        self,
        images: list[np.ndarray],
        detections: list[Detections],
        timing: dict[str, float] | None = None,
    ) -> list[dict]:
        """Keep the Predictor's answer for this job's ``images`` (and draw it if asked);
        ``timing``: the model calls' preprocess/model/postprocess ms (default: the first
        detection's)."""
        self.timing.update(timing or detections[0].timing_ms)
        self.results = [d.to_dict() for d in detections]
        if self.render_quality is not None:
            self.jpeg = render_jpeg(images[0], detections[0], self.render_quality)
        return self.results

    def batches_with(self, other: DetectJob) -> bool:
        """Whether one Predictor call can serve both jobs (same thresholds, no warm-up)."""
        return not (self.warmup or other.warmup) and self.thresholds == other.thresholds

    def finish(self, started: float) -> dict[str, float]:
        """The timing block of a response: queue, decode, preprocess, model, postprocess and
        ``total`` (server time since ``started``, a ``time.perf_counter()``), in ms."""
        timing = {**self.timing, "total": 1e3 * (time.perf_counter() - started)}
        return {k: round(v, 2) for k, v in timing.items() if k != "pixels"}


def predict_in_calls(
    predictor: Predictor,
    images: list[np.ndarray],
    thresholds: dict[str, Any],
    per_call: int | None = None,
) -> tuple[list[Detections], dict[str, float]]:
    """``predictor(images)`` in calls of at most ``per_call`` images -> (one
    :class:`Detections` per image, in order; the calls' summed preprocess/model/postprocess
    ms)."""
    step = per_call or max(1, len(images))
    detections: list[Detections] = []
    timing: dict[str, float] = {}
    for i in range(0, len(images), step):
        part = predictor(images[i : i + step], decoded=True, **thresholds)
        for k, v in part[0].timing_ms.items():
            timing[k] = timing.get(k, 0.0) + v
        detections += part
    return detections, timing


def _malloc_trim():
    """glibc's ``malloc_trim``, or ``None`` (another C library, another OS)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        fn = ctypes.CDLL(None).malloc_trim
    except (OSError, AttributeError):  # musl has none
        return None
    fn.argtypes, fn.restype = [ctypes.c_size_t], ctypes.c_int
    return fn


MALLOC_TRIM = _malloc_trim()


def release_memory() -> None:
    """Hand the C heap's free pages back to the OS (glibc; a no-op elsewhere)."""
    if MALLOC_TRIM is not None:
        MALLOC_TRIM(0)


def run_together(jobs: list[DetectJob]) -> list[list[dict[str, Any]] | InputError]:
    """Jobs that :meth:`~DetectJob.batches_with` each other in one Predictor call -> each job's
    results, or the ``InputError`` of a job whose image did not decode (the others still run)."""
    if len(jobs) == 1:
        try:
            return [jobs[0]()]
        except InputError as e:
            return [e]
    decoded: list[list[np.ndarray] | InputError] = []
    try:
        for job in jobs:
            try:
                decoded.append(job.decode())
            except InputError as e:
                decoded.append(e)
        ok = [(job, images) for job, images in zip(jobs, decoded) if isinstance(images, list)]
        if ok:
            first = ok[0][0]
            detections, timing = predict_in_calls(
                first.predictor,
                [im for _, images in ok for im in images],
                first.thresholds,
                first.model_batch,
            )
            start = 0
            for job, images in ok:
                job.collect(images, detections[start : start + len(images)], timing)
                start += len(images)
        return [d if isinstance(d, InputError) else job.results for job, d in zip(jobs, decoded)]
    finally:
        pixels = sum(job.decoded_pixels for job in jobs)
        decoded = ok = None  # before the trim: the decoded arrays are garbage now
        if pixels >= TRIM_AFTER_PIXELS:
            release_memory()


def model_info(predictor: Predictor) -> dict[str, Any]:
    """``{"name", "version", "sha256", "backend", "precision"}``: which model answered
    (``sha256`` of the served file, 16 hex digits, changes with every export; ``precision`` the
    artifact's precision served, fp32 / bf16 / int8)."""
    metadata = predictor.metadata
    files = metadata.get("files", {})
    served = files.get(predictor.model_file) if predictor.model_file else None
    return {
        "name": metadata.get("model", {}).get("name"),
        "version": metadata.get("versions", {}).get("yolov4"),
        "sha256": served["sha256"][:16] if served else None,
        "backend": getattr(predictor.backend, "name", type(predictor.backend).__name__),
        "precision": predictor.precision,
    }


def model_summary(
    predictor: Predictor, info: dict[str, Any], settings: ServeSettings, cfg: bool = False
) -> dict[str, Any]:
    """The ``GET /v1/model`` body: artifact metadata, the served model and the request limits.

    The architecture's darknet cfg text (a user cfg can be megabytes) is summed up as
    ``cfg_sha256`` and ``cfg_bytes`` (its UTF-8 size), both null for a zoo model, whose cfg
    ships with the package; ``cfg=True`` adds the text itself as ``cfg``. ``conf_source.file``
    is the file's name only."""
    meta = predictor.metadata
    return {
        "model": info,
        "architecture": _architecture(meta.get("model"), cfg),
        **{k: meta[k] for k in SUMMARY_KEYS if k in meta},
        **({"conf_source": _without_paths(meta["conf_source"])} if "conf_source" in meta else {}),
        "num_classes": len(predictor.class_names),
        "limits": {
            "max_bytes": settings.max_bytes,
            "max_pixels": settings.max_pixels,
            "max_batch": settings.max_batch,
            "max_batch_bytes": settings.max_batch_bytes,
            "max_det": settings.max_det,
        },
    }


def _without_paths(source: Any) -> Any:
    """``conf_source`` with its ``file`` (a path on the exporting machine) cut to the file's
    name: the service does not tell its clients the training machine's folders."""
    if isinstance(source, dict) and isinstance(source.get("file"), str):
        return {**source, "file": PurePath(source["file"]).name}
    return source


def _architecture(model: dict[str, Any] | None, with_cfg: bool) -> dict[str, Any] | None:
    """The metadata's model config with its cfg text replaced by its sha256 and size."""
    if not isinstance(model, dict):
        return model
    arch = {k: v for k, v in model.items() if k != "cfg"}
    text = model.get("cfg")
    digest, size = _cfg_digest(text) if isinstance(text, str) else (None, None)
    arch.update(cfg_sha256=digest, cfg_bytes=size)
    if with_cfg:
        arch["cfg"] = text
    return arch


@functools.lru_cache(maxsize=4)
def _cfg_digest(text: str) -> tuple[str, int]:
    """-> (sha256 hex digest, bytes) of ``text`` in UTF-8 (hashed once per served cfg)."""
    data = text.encode("utf-8")
    return hashlib.sha256(data).hexdigest(), len(data)
