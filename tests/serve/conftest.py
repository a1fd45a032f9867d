"""The service under test: an artifact of a seeded tiny model, served on a free loopback port
either in a thread of the test process (:func:`serve_here`: the CLI's settings, predictor, app,
protocol and uvicorn server, without a process start) or by the real CLI in a subprocess
(:func:`serve`), always stopped by the fixture's finaliser."""

from __future__ import annotations

import contextlib
import io
import logging
import os
import signal
import socket
import ssl
import subprocess
import sys
import threading
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
# one TLS context for every client: httpx builds one (loading the CA bundle, ~50 ms) per client
# otherwise, and the tests make a few hundred over plain-HTTP loopback
TLS = ssl.create_default_context()


@dataclass
class Server:
    """A running service: its base ``url``, log file and process (``None``: in this process)."""

    url: str
    log: Path
    proc: subprocess.Popen | None = None

    def client(self, **kwargs) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=60, verify=TLS, **kwargs)

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
    server = Server(f"http://127.0.0.1:{port}", log, proc)
    try:
        wait_ready(server, lambda: proc.poll() is None, start_timeout)
        yield server
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def wait_ready(server: Server, alive, timeout: float) -> None:
    """Poll ``/readyz`` until it answers 200; fail if ``alive()`` turns false or after
    ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        if not alive():
            pytest.fail(f"the server stopped before it was ready:\n{server.log_text()}")
        if time.monotonic() > deadline:
            pytest.fail(f"the server was not ready in {timeout}s:\n{server.log_text()}")
        try:
            if httpx.get(server.url + "/readyz", timeout=2, verify=TLS).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.05)


@contextlib.contextmanager
def serve_here(artifact: Path, log: Path, *args: str) -> Iterator[Server]:
    """``yolov4-serve ARTIFACT *args`` (one process) served from a thread of this process: the
    CLI's settings, predictor and uvicorn server (app, guarded protocol, timeouts), on a free
    port, ready when this yields, stopped on exit. Its thread's log lines (the service's and
    uvicorn's) go to ``log``; the caller's logging configuration is left as it is."""
    from yolov4.serve.__main__ import load_predictor, one_process_server, parse_args

    settings = parse_args([str(artifact), "--port", str(free_port()), *args])
    uv = one_process_server(settings, load_predictor(settings), log_config=None)
    thread = threading.Thread(target=uv.run, name=f"yolov4-serve-{settings.port}", daemon=True)
    handler = logging.FileHandler(log)
    handler.addFilter(lambda record: record.threadName == thread.name)
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    loggers = {name: logging.getLogger(name) for name in ("yolov4.serve", "uvicorn.error")}
    levels = {name: lg.level for name, lg in loggers.items()}
    for lg in loggers.values():
        lg.addHandler(handler)
        lg.setLevel(logging.INFO)
    server = Server(f"http://127.0.0.1:{settings.port}", log)
    try:
        thread.start()
        wait_ready(server, thread.is_alive, START_TIMEOUT_S)
        yield server
    finally:
        uv.should_exit = True
        thread.join(STOP_TIMEOUT_S)
        for name, lg in loggers.items():
            lg.removeHandler(handler)
            lg.setLevel(levels[name])
        handler.close()


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
    with serve_here(artifact, log, *args) as s:
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
