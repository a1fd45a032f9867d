"""The default ``python train.py`` in each training precision: wall time and final mAP50.

    python benchmarks/train_precision.py [--precisions auto 32-true] [--seeds 0] [-- OVERRIDES]

Runs ``train.py`` (the default: yolov4-tiny@256 on the built-in synthetic shapes, 13 epochs)
once per precision and seed, one after the other, in subprocesses; records each run's wall
time, the precision it resolved to (``auto``), its final mAP50/mAP (``metrics.json``), the
CPU flags and the load average before and after. Writes benchmarks/results/<--name>.json (or the
``--name`` path).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import add_out_argument, machine_info, matmul_gflops, save

ROOT = Path(__file__).resolve().parents[1]


def train_once(precision: str, seed: int, extra: list[str], out: Path) -> dict:
    cmd = [sys.executable, "train.py", f"trainer.precision={precision}", f"seed={seed}",
           f"paths.output_dir={out}", f"hydra.run.dir={out}", "trainer.enable_progress_bar=false", "export=null", *extra]  # fmt: skip
    load = os.getloadavg()[0]
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if proc.returncode:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{proc.stderr[-3000:]}")
    found = re.search(r"parameters(?: \(\+ their EMA\))?; (\S+)", proc.stdout + proc.stderr)
    metrics = json.loads((out / "metrics.json").read_text())
    return {
        "precision": precision,
        "ran": found.group(1) if found else None,
        "seed": seed,
        "seconds": round(seconds, 1),
        "mAP50": metrics.get("mAP50"),
        "mAP": metrics.get("mAP"),
        "load_before": round(load, 2),
        "load_after": round(os.getloadavg()[0], 2),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--precisions", nargs="+", default=["auto", "32-true"])
    p.add_argument("--seeds", nargs="+", type=int, default=[0])
    add_out_argument(p, "--name", "train_precision")
    p.add_argument("overrides", nargs="*", help="train.py overrides for every run")
    args = p.parse_args()
    info = machine_info()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for seed in args.seeds:
            for precision in args.precisions:
                row = train_once(precision, seed, args.overrides, Path(tmp) / f"{precision}-{seed}")
                row["cpu_flags"] = info["cpu_flags"]
                rows.append(row)
                print(json.dumps(row), flush=True)
    payload = {
        "machine": {**info, "fp32_gflops": round(matmul_gflops(), 1)},
        "overrides": args.overrides,
        "rows": rows,
    }
    print(f"wrote {save(args.name, payload)}")


if __name__ == "__main__":
    main()
