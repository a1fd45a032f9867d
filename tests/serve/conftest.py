"""The service under test: an artifact of a seeded tiny model, served by the real CLI in a
subprocess on a free loopback port, always stopped by the fixture's finaliser."""

from __future__ import annotations

import contextlib
import io
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
import pytest
import torch
from PIL import Image

from yolov4 import build_model, save_checkpoint
from yolov4.export.artifact import export_artifact

NAMES = ["circle", "square", "cross"]
INPUT_SIZE = [416, 416]  # yolov4-tiny@416, the size the service is benchmarked at
START_TIMEOUT_S = 90  # imports + model load + warm-up on a busy 2-core machine
STOP_TIMEOUT_S = 30
LOW_CONF = 0.01  # the model is untrained: a low threshold gives many boxes to compare
MAX_BYTES = 1_000_000  # the functional server's limits, small so over-limit inputs stay small
MAX_PIXELS = 3_000_000
MAX_BATCH_BYTES = 3_000_000


@dataclass
class Server:
    """A running ``python -m yolov4.serve``: its base ``url``, process and log file."""

    url: str
    proc: subprocess.Popen
    log: Path

    def client(self, **kwargs) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=60, **kwargs)

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def pinned(cpus: list[int] | None):
    """A ``preexec_fn`` that runs the child (and what it starts) on ``cpus`` only."""
    return None if cpus is None else lambda: os.sched_setaffinity(0, cpus)


@contextlib.contextmanager
def serve(
    artifact: Path,
    log: Path,
    *args: str,
    command: list[str] | None = None,
    start_timeout: float = START_TIMEOUT_S,
    cpus: list[int] | None = None,
) -> Iterator[Server]:
    """Start the service (``command``, default ``python -m yolov4.serve``; on ``cpus`` only if
    given), wait until ``/readyz`` says ready, stop it on exit (SIGTERM, then SIGKILL after
    :data:`STOP_TIMEOUT_S`)."""
    port = free_port()
    command = command or [sys.executable, "-m", "yolov4.serve"]
    cmd = [*command, str(artifact), "--port", str(port), *args]
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, preexec_fn=pinned(cpus))
    server = Server(f"http://127.0.0.1:{port}", proc, log)
    try:
        deadline = time.monotonic() + start_timeout
        while True:
            if proc.poll() is not None:
                pytest.fail(f"the server exited with {proc.returncode}:\n{server.log_text()}")
            if time.monotonic() > deadline:
                pytest.fail(f"the server was not ready in {start_timeout}s:\n{server.log_text()}")
            try:
                if httpx.get(server.url + "/readyz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        yield server
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


@pytest.fixture(scope="session")
def artifact(tmp_path_factory, randomize) -> Path:
    """An ONNX artifact of a seeded tiny 3-class model at 416x416 (random head biases, so it
    reports boxes at a low threshold)."""
    d = tmp_path_factory.mktemp("serve-artifact")
    torch.manual_seed(3)
    model = randomize(build_model("yolov4-tiny", num_classes=len(NAMES)), seed=3)
    preprocess = {"input_size": INPUT_SIZE, "mode": "letterbox"}
    ckpt = save_checkpoint(d / "best.pt", model, NAMES, preprocess)
    return export_artifact(ckpt, d / "export", formats=["onnx"])


@pytest.fixture(scope="session")
def predictor(artifact):
    """The Predictor the service's answers are compared with."""
    from yolov4.inference import Predictor

    return Predictor.from_artifact(artifact)


@pytest.fixture(scope="session")
def server(artifact, tmp_path_factory) -> Iterator[Server]:
    """One server for the functional tests (small limits so over-limit inputs stay small)."""
    log = tmp_path_factory.mktemp("serve-log") / "server.log"
    args = ["--max-bytes", str(MAX_BYTES), "--max-pixels", str(MAX_PIXELS), "--max-batch", "8",
            "--max-batch-bytes", str(MAX_BATCH_BYTES)]  # fmt: skip
    with serve(artifact, log, *args) as s:
        yield s


def scene(h: int = 480, w: int = 640, seed: int = 0) -> np.ndarray:
    """``(h, w, 3)`` uint8 RGB: a smooth background with a few filled shapes (compresses well)."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w]
    image = np.stack([x * 255 // max(w, 1), y * 255 // max(h, 1), (x + y) * 127 // (h + w)], -1)
    image = image.astype(np.uint8)
    for _ in range(4):
        x1, y1 = rng.integers(0, w * 3 // 4), rng.integers(0, h * 3 // 4)
        x2, y2 = x1 + rng.integers(w // 8, w // 4), y1 + rng.integers(h // 8, h // 4)
        image[y1:y2, x1:x2] = rng.integers(0, 255, 3)
    return image


def encode(image: np.ndarray | Image.Image, fmt: str = "JPEG", **kwargs) -> bytes:
    """An array (RGB) or PIL image encoded with PIL."""
    im = Image.fromarray(image) if isinstance(image, np.ndarray) else image
    buf = io.BytesIO()
    im.save(buf, fmt, **kwargs)
    return buf.getvalue()
