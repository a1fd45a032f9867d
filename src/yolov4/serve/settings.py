"""The service's settings: limits, threads and queue, one dataclass the CLI fills in."""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass

__all__ = ["ServeSettings", "SETTINGS_ENV"]

SETTINGS_ENV = "YOLOV4_SERVE_SETTINGS"  # JSON settings handed to uvicorn worker processes
MIB = 1 << 20


@dataclass
class ServeSettings:
    """Everything ``yolov4-serve`` can be told (CLI flag names in brackets).

    Attributes:
        artifact_dir: the export artifact to serve (``ARTIFACT_DIR``).
        backend: ``"onnxruntime"``, ``"openvino"`` or ``"torchscript"``; None: the first
            runtime the served precision lists (fp32: onnxruntime; bf16, int8: openvino)
            (``--backend``).
        precision: ``"fp32"``, ``"bf16"``, ``"int8"``, ``"int8_bf16"`` or ``"auto"`` (the
            fastest the artifact holds for this CPU); None: the artifact's
            ``default_precision`` (``--precision``).
        runtime_threads: each model call's intra-op threads (onnxruntime's
            ``intra_op_num_threads``, OpenVINO's ``INFERENCE_NUM_THREADS``); None: the CPU's
            cores divided by ``threads``, so that ``threads`` calls at once do not oversubscribe
            the cores (``--runtime-threads``). TorchScript's pool is PyTorch's, process-wide.
        max_bytes: largest encoded image, in bytes; a body over it gets 413 before it is read
            whole (``--max-bytes``).
        max_batch_bytes: largest ``/v1/detect/batch`` body (``--max-batch-bytes``).
        max_pixels: largest decoded image, ``H * W``; over it (decompression bombs) 413 from the
            image header alone, before any pixel is decoded (``--max-pixels``).
        max_request_pixels: the pixel budget of one request, all its images together: a batch
            is decoded image by image, each allowed ``min(max_pixels, what is left)``, and the
            first one over it gets 413 before the rest is decoded (``--max-request-pixels``;
            decoded RGB takes 3 bytes a pixel, so the default holds ~300 MB at most).
        max_batch: most images in one ``/v1/detect/batch`` request (``--max-batch``).
        model_batch: most images in one model call; a larger batch request (or micro-batch
            group) runs in several calls. The runtime keeps the memory its largest call needed
            (onnxruntime's arena: ~400 MB more after 16 images at 416x416), so this bounds what
            batch traffic leaves behind (``--model-batch``).
        threads: inference threads per process (``--threads``); requests beyond them wait.
        max_queue: inference jobs admitted at once (running + waiting); one more gets 503 with
            ``Retry-After`` instead of piling up memory (``--max-queue``).
        read_timeout_s: longest time to receive a request body; a slower upload (which holds an
            admission slot) gets 408 (``--read-timeout``).
        head_timeout_s: longest time from a connection's first byte (or its opening) to the end
            of its request head; a slower one gets 408 and is closed, and a silent one is closed,
            so idle sockets cannot pile up (``--head-timeout``).
        keep_alive_timeout_s: how long an idle keep-alive connection stays open between
            requests (``--keep-alive-timeout``, uvicorn's ``timeout_keep_alive``).
        max_connections: open connections per process; one more gets 503 and is closed at once
            (``--max-connections``).
        max_head_bytes: largest request head (request line and headers), h11's
            ``max_incomplete_event_size``; over it 400 (``--max-head-bytes``).
        max_det: upper bound of the ``max_det`` query parameter.
        retry_after_s: the ``Retry-After`` header of a 503.
        jpeg_quality: quality of ``?render=true`` images.
        log_level: Python logging level name (``--log-level``).
    """

    artifact_dir: str = ""
    backend: str | None = None
    precision: str | None = None
    runtime_threads: int | None = None
    max_bytes: int = 20 * MIB
    max_batch_bytes: int = 64 * MIB
    max_pixels: int = 50_000_000
    max_request_pixels: int = 100_000_000  # two images at the per-image limit
    max_batch: int = 32
    model_batch: int = 4  # 4 and 8 images per call ran equally fast on 2 cores (416x416)
    threads: int = 1
    max_queue: int = 64
    micro_batch: int = 1
    read_timeout_s: float = 30.0
    head_timeout_s: float = 10.0
    keep_alive_timeout_s: float = 5.0  # uvicorn's default
    max_connections: int = 512  # half the usual 1024 file descriptors of a process
    max_head_bytes: int = 16 * 1024  # h11's default
    max_det: int = 1000
    retry_after_s: int = 1
    jpeg_quality: int = 90
    log_level: str = "info"

    def model_threads(self) -> int:
        """:attr:`runtime_threads`, or the cores shared out among the :attr:`threads` calls."""
        return self.runtime_threads or max(1, (os.cpu_count() or 1) // self.threads)

    def to_env(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_env(cls) -> ServeSettings:
        """The settings a parent ``yolov4-serve`` put in :data:`SETTINGS_ENV`."""
        raw = os.environ.get(SETTINGS_ENV)
        if not raw:
            raise RuntimeError(f"{SETTINGS_ENV} is not set; start the service with yolov4-serve")
        return cls(**json.loads(raw))
