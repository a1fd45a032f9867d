"""The HTTP service under load: requests/s and latency percentiles, and its overhead over
calling the Predictor directly.

    python benchmarks/serve.py [--model yolov4-tiny] [--size 416] [--concurrency 1 4 16]
                               [--requests 60] [--backend onnxruntime|openvino|torchscript]
                               [--precision fp32|int8] [--micro-batch 1 8] [--name serve]

Exports an artifact of a randomly initialised network (head biases set so that postprocess has
real work, as in benchmarks/predict.py), starts ``python -m yolov4.serve`` on a free loopback
port, and sends the same 640x480 JPEG as a multipart upload to ``POST /v1/detect``:

* concurrency 1: HTTP requests interleaved one for one with direct ``Predictor(jpeg_bytes)``
  calls in this process (decode included in both, a short pause after each), so a machine busy
  with other work slows both alike; ``overhead_pct`` = median over pairs of (HTTP - Predictor)
  / Predictor p50 (target <= 15%); ``overhead_pct_of_p50s`` = (HTTP p50 - Predictor p50) /
  Predictor p50.
* concurrency N: N client threads (one keep-alive connection each) share ``--requests``
  requests; requests/s is over the wall time of the whole run.

Each level runs against a server per ``--micro-batch`` value (1: one request per model call).

The client (a lean stdlib ``http.client`` one, see :class:`Client`) runs on the same cores as
the server, so its cost is part of the overhead. Prints a table and writes
benchmarks/results/serve.json, with the machine's matmul GFLOP/s as reference.
"""

from __future__ import annotations

import argparse
import http.client
import io
import json
import statistics
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import torch
from common import (
    add_out_argument,
    machine_info,
    matmul_gflops,
    save,
    spread_head_biases,
    start_server,
)
from PIL import Image

from yolov4 import Predictor, build_model, save_checkpoint
from yolov4.export.artifact import export_artifact

# pause between the interleaved calls: onnxruntime's threads spin-wait for a moment after a run,
# and would otherwise take the cores from the next call in the other process
SETTLE_S = 0.05


def pct(values: list[float], q: float) -> float:
    return round(1e3 * float(np.percentile(np.asarray(values), q)), 1)


def summary(latencies: list[float]) -> dict[str, float]:
    return {f"p{q}_ms": pct(latencies, q) for q in (50, 95, 99)}


def test_image() -> bytes:
    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:480, 0:640]
    image = np.stack([x * 255 // 640, y * 255 // 480, (x + y) * 127 // 1120], -1).astype(np.uint8)
    for _ in range(6):
        x1, y1 = rng.integers(0, 500), rng.integers(0, 380)
        image[y1 : y1 + 100, x1 : x1 + 140] = rng.integers(0, 255, 3)
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, "JPEG", quality=90)
    return buf.getvalue()


def make_artifact(name: str, size: int, out: Path, precision: str = "fp32") -> Path:
    """fp32: the 80-class network; int8: a 4-class one (the synthetic dataset's classes, on
    which its INT8 model is calibrated, 8 images, and gated, 4 images: untrained, both mAP ~0)."""
    torch.manual_seed(0)
    if precision == "fp32":
        model = spread_head_biases(build_model(name).eval())
        ckpt = save_checkpoint(
            out / f"{name}.pt", model, None, {"input_size": [size, size], "mode": "letterbox"}
        )
        return export_artifact(ckpt, out / "export", formats=["onnx", "torchscript"])
    from yolov4.data.datamodule import SyntheticDataModule
    from yolov4.evaluation import evaluate_predictor

    dm = SyntheticDataModule(num_train=8, num_val=4, image_size=size, input_size=[size, size],
                             cache_dir=str(out / "data"), num_workers=0)  # fmt: skip
    dm.prepare_data()
    model = spread_head_biases(build_model(name, num_classes=len(dm.class_names)).eval())
    ckpt = save_checkpoint(
        out / f"{name}.pt", model, dm.class_names, dm.preprocess_config.to_dict()
    )
    val = dm.split("val").records

    def evaluate(predictor):
        result = evaluate_predictor(predictor, dm, val, 4, {})
        return {**result.metrics, "images": len(val), "subset": "synthetic val, 4 images"}

    return export_artifact(ckpt, out / "export", formats=["onnx"], precisions=["fp32", precision],
                           calibration=[r.file for r in dm.split("train").records],
                           evaluate=evaluate)  # fmt: skip


class Client:
    """A lean keep-alive HTTP/1.1 client (stdlib ``http.client``) posting one pre-encoded
    multipart body, so that the client's own Python work stays out of the service's overhead as
    far as possible (with httpx it adds ~2-3 ms a request on this machine)."""

    BOUNDARY = "yolov4-bench-boundary"

    def __init__(self, url: str, data: bytes, timeout: float = 300) -> None:
        host, port = url.removeprefix("http://").split(":")
        self.conn = http.client.HTTPConnection(host, int(port), timeout=timeout)
        self.body = (
            (
                f'--{self.BOUNDARY}\r\nContent-Disposition: form-data; name="file"; filename="bench.jpg"'
                f"\r\nContent-Type: image/jpeg\r\n\r\n"
            ).encode()
            + data
            + f"\r\n--{self.BOUNDARY}--\r\n".encode()
        )
        self.headers = {"Content-Type": f"multipart/form-data; boundary={self.BOUNDARY}"}

    def post(self) -> tuple[float, dict]:
        """-> (seconds from sending to the parsed JSON, the JSON)."""
        start = time.perf_counter()
        self.conn.request("POST", "/v1/detect", self.body, self.headers)
        r = self.conn.getresponse()
        payload = r.read()
        if r.status != 200:
            raise SystemExit(f"HTTP {r.status}: {payload[:500]!r}")
        body = json.loads(payload)
        return time.perf_counter() - start, body

    def close(self) -> None:
        self.conn.close()


def sequential(url: str, predictor: Predictor, data: bytes, n: int) -> dict:
    """Concurrency 1, HTTP and direct calls interleaved."""
    served, direct, server, predictor_parts = [], [], [], []
    client = Client(url, data)
    try:
        client.post(), predictor(data)  # warm both paths
        for _ in range(n):
            start = time.perf_counter()
            [dets] = predictor(data)
            direct.append(time.perf_counter() - start)
            predictor_parts.append(dets.timing_ms)
            time.sleep(SETTLE_S)
            elapsed, body = client.post()
            time.sleep(SETTLE_S)
            served.append(elapsed)
            server.append(body["timing_ms"])
    finally:
        client.close()
    p50_http, p50_direct = statistics.median(served), statistics.median(direct)
    return {
        "concurrency": 1,
        "requests": n,
        "requests_per_s": round(1 / statistics.mean(served), 2),
        **summary(served),
        "predictor_p50_ms": round(1e3 * p50_direct, 1),
        "server_total_p50_ms": round(statistics.median(t["total"] for t in server), 1),
        "server_parts_p50_ms": {
            k: round(statistics.median(t[k] for t in server), 1) for k in server[0]
        },
        "predictor_parts_p50_ms": {
            k: round(statistics.median(t[k] for t in predictor_parts), 1)
            for k in predictor_parts[0]
        },
        # paired: each HTTP request against the direct call just before it, so load that comes
        # and goes on a shared machine cancels out; the difference of the two p50s alongside
        "overhead_pct": round(
            100 * statistics.median(h - d for h, d in zip(served, direct)) / p50_direct, 1
        ),
        "overhead_pct_of_p50s": round(100 * (p50_http - p50_direct) / p50_direct, 1),
    }


def concurrent(url: str, data: bytes, clients: int, n: int) -> dict:
    latencies: list[float] = []
    left = [n]
    lock = threading.Lock()

    def worker() -> None:
        client = Client(url, data)
        while True:
            with lock:
                if left[0] == 0:
                    client.close()
                    return
                left[0] -= 1
            elapsed, _ = client.post()
            with lock:
                latencies.append(elapsed)

    threads = [threading.Thread(target=worker) for _ in range(clients)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - start
    return {
        "concurrency": clients,
        "requests": n,
        "requests_per_s": round(n / wall, 2),
        **summary(latencies),
    }


def print_row(row: dict) -> None:
    c = row["concurrency"]
    print(
        f"{row['model']}@{row['size']} {row['backend']} micro-batch {row['micro_batch']} c={c:<3d} "
        f"{row['requests_per_s']:6.2f} req/s  p50 {row['p50_ms']:7.1f}  p95 {row['p95_ms']:7.1f}  "
        f"p99 {row['p99_ms']:7.1f} ms"
    )
    if c == 1:
        print(
            f"    Predictor p50 {row['predictor_p50_ms']:.1f} ms  server {row['server_total_p50_ms']:.1f} ms  "
            f"overhead {row['overhead_pct']:+.1f}% (p50s: {row['overhead_pct_of_p50s']:+.1f}%)\n    server parts {row['server_parts_p50_ms']}\n"
            f"    Predictor parts {row['predictor_parts_p50_ms']}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", default="yolov4-tiny")
    parser.add_argument("--size", type=int, default=416)
    parser.add_argument(
        "--backend", default="onnxruntime", choices=["onnxruntime", "openvino", "torchscript"]
    )
    parser.add_argument("--precision", default="fp32", choices=["fp32", "int8"])
    add_out_argument(parser, "--name", "serve")
    parser.add_argument("--concurrency", nargs="+", type=int, default=[1, 4, 16])
    parser.add_argument("--requests", type=int, default=60, help="per concurrency level")
    parser.add_argument(
        "--micro-batch", nargs="+", type=int, default=[1, 8], help="server --micro-batch values"
    )
    args = parser.parse_args()

    gflops = matmul_gflops()
    info = machine_info()
    print(f"{info['cpu']} ({info['cores']} cores): matmul {gflops:.1f} GFLOP/s")
    data = test_image()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        artifact = make_artifact(args.model, args.size, Path(tmp), args.precision)
        predictor = Predictor.from_artifact(
            artifact, backend=args.backend, precision=args.precision
        )
        for micro in args.micro_batch:
            proc, url = start_server(
                artifact,
                Path(tmp) / "server.log",
                "--backend",
                args.backend,
                "--precision",
                args.precision,
                "--max-queue",
                "256",
                "--micro-batch",
                str(micro),
            )
            try:
                for c in args.concurrency:
                    row = (sequential(url, predictor, data, args.requests) if c == 1
                           else concurrent(url, data, c, args.requests))  # fmt: skip
                    row = {"model": args.model, "size": args.size, "backend": args.backend,
                           "precision": args.precision, "micro_batch": micro, **row}  # fmt: skip
                    rows.append(row)
                    print_row(row)
            finally:
                proc.terminate()
                proc.wait(60)
    payload = {
        "machine": info,
        "matmul_gflops_per_s": round(gflops, 1),
        "image": "640x480 JPEG, multipart",
        "load_end": Path("/proc/loadavg").read_text().split()[:3],
        "results": rows,
    }
    print(f"wrote {save(args.name, payload)}")


if __name__ == "__main__":
    main()
