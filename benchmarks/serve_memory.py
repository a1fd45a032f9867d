"""What batch traffic leaves in the service's memory: RSS after a few small requests, after
batch requests of large photos, and after small requests again, per ``--model-batch``.

    python benchmarks/serve_memory.py [--model-batch 4 16] [--batch 16] [--rounds 3]

Exports an artifact of a randomly initialised yolov4-tiny at 416x416, starts
``python -m yolov4.serve`` on a free loopback port per ``--model-batch`` value, sends 5 single
640x480 JPEGs, then ``--rounds`` batches of ``--batch`` 2048x1536 JPEGs, then 5 single ones
again, reading the server's ``VmRSS`` (and its peak, ``VmHWM``) from /proc after each step
(Linux only). ``kept_mib`` = RSS after the last small requests - RSS before the batches: the
memory that batch traffic left behind (the runtime's arena keeps the size of its largest model
call; the service bounds the call with ``--model-batch`` and hands freed heap back with
``malloc_trim`` after large jobs).

Writes benchmarks/results/serve_memory.json. It measures memory only, nothing whose speed
depends on the machine, so it records no matmul rate.
"""

from __future__ import annotations

import argparse
import io
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np
from common import machine_info, save
from fuzz_api import start_server
from PIL import Image
from serve import make_artifact

SETTLE_S = 2.0  # after the traffic, before reading RSS


def jpeg(h: int, w: int, seed: int) -> bytes:
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w]
    image = np.stack([x * 255 // w, y * 255 // h, (x + y) * 127 // (h + w)], -1).astype(np.uint8)
    image[rng.integers(0, h // 2) :, rng.integers(0, w // 2) :] //= 2
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, "JPEG", quality=90)
    return buf.getvalue()


def rss_mib(pid: int) -> dict[str, float]:
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(("VmRSS:", "VmHWM:")):
            key, value = line.split(":")
            out[key] = round(int(value.split()[0]) / 1024, 1)
    return out


def measure(artifact: Path, model_batch: int, args: argparse.Namespace, log: Path) -> dict:
    small = {"file": ("x.jpg", jpeg(480, 640, 0))}
    batch = [("files", (f"{i}.jpg", jpeg(1536, 2048, i))) for i in range(args.batch)]
    extra = ("--max-batch", str(args.batch), "--model-batch", str(model_batch))
    proc, url = start_server(artifact, log, *extra)
    steps = {}
    try:
        with httpx.Client(base_url=url, timeout=600) as c:
            for _ in range(5):
                c.post("/v1/detect", files=small).raise_for_status()
            time.sleep(SETTLE_S)
            steps["after_small"] = rss_mib(proc.pid)
            for _ in range(args.rounds):
                c.post("/v1/detect/batch", files=batch).raise_for_status()
            time.sleep(SETTLE_S)
            steps["after_batches"] = rss_mib(proc.pid)
            for _ in range(5):
                c.post("/v1/detect", files=small).raise_for_status()
            time.sleep(SETTLE_S)
            steps["after_small_again"] = rss_mib(proc.pid)
    finally:
        proc.terminate()
        proc.wait(60)
    kept = steps["after_small_again"]["VmRSS"] - steps["after_small"]["VmRSS"]
    return {"model_batch": model_batch, "rss_mib": steps, "kept_mib": round(kept, 1)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model-batch", type=int, nargs="+", default=[16, 4])
    p.add_argument("--batch", type=int, default=16, help="images per batch request")
    p.add_argument("--rounds", type=int, default=3, help="batch requests")
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        artifact = make_artifact("yolov4-tiny", 416, tmp)
        runs = [measure(artifact, n, args, tmp / f"server-{n}.log") for n in args.model_batch]
    for r in runs:
        print(f"--model-batch {r['model_batch']:>3}: kept {r['kept_mib']:7.1f} MiB  {r['rss_mib']}")
    payload = {"machine": machine_info(), "settings": vars(args), "runs": runs}
    print("saved", save("serve_memory", payload))


if __name__ == "__main__":
    main()
