"""Helpers shared by the benchmark scripts: the machine's own reference and JSON output."""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import httpx
import torch

from yolov4.inference.backends import cpu_model_and_flags

RESULTS_DIR = Path(__file__).resolve().parent / "results"


def machine_info() -> dict[str, Any]:
    """The machine a figure is measured on: CPU model, cores, the CPU flags that decide fp32 /
    INT8 / bf16 speed (:data:`~yolov4.inference.backends.REPORTED_CPU_FLAGS`), the 1/5/15-minute
    load average at the call, torch's threads and the versions. The machine's float32 rate is
    :func:`matmul_gflops`, measured by each script in the same run."""
    cpu, flags = cpu_model_and_flags()
    if cpu == "unknown":
        cpu = platform.processor() or platform.machine()
    return {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "cpu": cpu,
        "cores": os.cpu_count(),
        "cpu_flags": flags,
        "load_average_1_5_15": [round(v, 2) for v in os.getloadavg()],
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "cuda": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
    }


def time_fn(fn: Callable[[], Any], repeats: int, warmup: int = 1) -> dict[str, float]:
    """Seconds per call: min and median over ``repeats`` after ``warmup`` calls."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return {"min_s": min(times), "median_s": statistics.median(times), "repeats": repeats}


def matmul_gflops(n: int = 2048, repeats: int = 10) -> float:
    """The machine's achievable float32 GFLOP/s: best of ``repeats`` n x n matmuls."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    t = time_fn(lambda: torch.mm(a, b), repeats, warmup=2)["min_s"]
    return 2 * n**3 / t / 1e9


def finite(value: Any) -> Any:
    """``value`` with every NaN / inf float replaced by None (strict JSON has neither)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [finite(v) for v in value]
    return value


OUT_HELP = (
    "where the JSON goes: a bare name writes benchmarks/results/<name>.json; a path (with a "
    "folder, or ending in .json) is written as given, its folders created"
)


def result_path(out: str | os.PathLike) -> Path:
    """The file an ``--out`` value names: a bare name -> ``benchmarks/results/<name>.json``; a
    value with a folder or ending in ``.json`` -> that path (relative to the working folder)."""
    text = os.fspath(out)
    if text.endswith(".json") or os.sep in text or "/" in text:
        return Path(text)
    if text in ("", ".", ".."):
        raise argparse.ArgumentTypeError(
            f"expected a results name (benchmarks/results/<name>.json) or a .json path, "
            f"found {text!r}"
        )
    return RESULTS_DIR / f"{text}.json"


def add_out_argument(
    parser: argparse.ArgumentParser, flag: str, default: str | None, when: str = ""
) -> None:
    """``flag`` (``--out``, ``--name``...) on ``parser``, its help led by ``when`` (the
    options it applies with): the results file, read by
    :func:`result_path` when parsed (a bad value is argparse's usage error); the script
    passes the value to :func:`save`."""
    shown = "" if default is None else " (default: %(default)s)"
    parser.add_argument(flag, default=default, type=result_path, help=when + OUT_HELP + shown)


def save(out: str | os.PathLike, payload: dict[str, Any]) -> Path:
    """``payload`` as strict JSON (NaN/inf as null) in the file ``out`` names
    (:func:`result_path`), its folders created."""
    path = result_path(out)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(finite(payload), indent=2, allow_nan=False) + "\n")
    return path


def spread_head_biases(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Objectness and class biases of every head drawn from U(-3, 1): the detection counts of
    an early-trained model (hundreds of boxes pass conf 0.001, ~100 pass 0.25), so that
    postprocess and COCOeval have real work. An initialised model (prior 0.01) keeps none."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for conv in model.head_convs():
            bias = conv.conv.bias.view(model.config.num_anchors, -1)[:, 4:]
            bias.copy_(torch.rand(bias.shape, generator=g) * 4 - 3)
    return model


SERVER_START_TIMEOUT_S = 120  # model load + warm-up on a busy 2-core machine


def start_server(artifact: Path, log: Path, *extra: str) -> tuple[subprocess.Popen, str]:
    """``python -m yolov4.serve ARTIFACT [extra flags]`` on a free loopback port, once ready."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cmd = [sys.executable, "-m", "yolov4.serve", str(artifact), "--port", str(port),
           "--log-level", "warning", *extra]  # fmt: skip
    with open(log, "wb") as f:
        proc = subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + SERVER_START_TIMEOUT_S
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            if httpx.get(url + "/readyz", timeout=2).status_code == 200:
                return proc, url
        except httpx.TransportError:
            time.sleep(0.2)
    proc.kill()
    raise SystemExit(f"the server did not start:\n{log.read_text()}")
