"""The darknet model zoo: size, compute and CPU latency of every network at its cfg input size.

    python benchmarks/zoo.py                                # every zoo network
    python benchmarks/zoo.py --models yolov4-csp yolov4-p6 --repeats 5
    python benchmarks/zoo.py --latency-size yolov4-p6=640   # time p6 at 640 (FLOPs still at 1280)
    python benchmarks/zoo.py --threads 1 --out zoo          # what results/zoo.json holds

Per network, at its cfg's ``[net]`` width/height with 80 classes: parameters, GFLOPs (torch's
``FlopCounterMode``: 2 FLOPs per multiply-add, convolutions only), darknet's own "Total BFLOPS"
line for the same cfg (given a darknet build: ``--darknet``, run as ``darknet detector test
cfg/coco.data <cfg> -dont_show`` with no weights and no image, which parses the network, prints
the line and exits), the same formula computed from our layer list (darknet adds one operation
per element of each [shortcut] input and ``size^2`` per [maxpool] output element to the
convolutions), darknet's published COCO AP (``yolov4.models.zoo.PUBLISHED``, darknet's README) and
the fused forward latency on the CPU (batch 1, Conv+BN folded, channels-last, ``inference_mode``;
median of ``--repeats`` after one warm-up), with the machine's float32 matmul GFLOP/s measured in
the same run. Prints a table and writes benchmarks/results/zoo.json.
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import time
from pathlib import Path

import torch
from common import add_out_argument, machine_info, matmul_gflops, save

from yolov4 import build_model
from yolov4.darknet import darknet_float_count
from yolov4.models.__main__ import count_gflops, fused_latency_ms, weights_bytes
from yolov4.models.cfg import CFG_DIR, ZOO, resolve_layers
from yolov4.models.zoo import PUBLISHED

DEFAULT_DARKNET = Path("/tmp/dkwork/darknet/darknet")
BUSY_LOAD = 2.0  # 1-minute load average above which the run is marked as under load


def darknet_bflops(darknet: Path, cfg: Path, timeout: float = 180) -> float | None:
    """darknet's "Total BFLOPS" for ``cfg`` (None when darknet is absent or prints none)."""
    if not darknet.is_file():
        return None
    try:
        proc = subprocess.run(
            [str(darknet.resolve()), "detector", "test", "cfg/coco.data", str(cfg), "-dont_show"],
            cwd=darknet.parent,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
    except subprocess.TimeoutExpired:
        return None
    match = re.search(r"Total BFLOPS\s+([\d.]+)", proc.stdout + proc.stderr)
    return float(match.group(1)) if match else None


def darknet_formula_gflops(model, size: tuple[int, int]) -> float:
    """darknet's BFLOPS formula on our layer list: ``2 * weights * out_h * out_w`` per
    [convolutional], ``out_h * out_w * out_c * n`` per [shortcut] (``n`` added inputs),
    ``size^2 * c * out_h * out_w`` per [maxpool] (convolutional_layer.c, shortcut_layer.c,
    maxpool_layer.c)."""
    h, w = size
    total = 0
    for spec in resolve_layers(model.sections):
        p, area = spec.params, (h // spec.stride) * (w // spec.stride)
        if spec.kind == "convolutional":
            weights = p["in_channels"] // p["groups"] * p["filters"] * p["size"] ** 2
            total += 2 * weights * area
        elif spec.kind == "shortcut":
            total += area * spec.channels * (len(spec.inputs) - 1)
        elif spec.kind == "maxpool":
            total += p["size"] ** 2 * spec.channels * area
    return total / 1e9


def load_average() -> float:
    return os.getloadavg()[0]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--models", nargs="+", default=list(ZOO), choices=ZOO)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--latency-size",
        nargs="*",
        default=[],
        metavar="NAME=SIZE",
        help="time NAME at SIZE x SIZE instead of its cfg size",
    )
    parser.add_argument(
        "--threads",
        type=int,
        help="torch CPU threads (default torch's: one per core); on a shared machine 1 thread "
        "is the stable measurement",
    )
    parser.add_argument("--darknet", type=Path, default=DEFAULT_DARKNET)
    add_out_argument(parser, "--out", "zoo")
    args = parser.parse_args()
    latency_size = {k: int(v) for k, v in (s.split("=") for s in args.latency_size)}

    if args.threads:
        torch.set_num_threads(args.threads)
    start = time.perf_counter()
    load_start = load_average()
    torch.manual_seed(0)
    machine_gflops = matmul_gflops()
    info = machine_info()
    print(
        f"{info['cpu']} ({info['torch_threads']} threads, torch {info['torch']}): matmul "
        f"{machine_gflops:.1f} GFLOP/s; load average {load_start:.2f}"
    )
    header = (
        f"{'model':19s} {'input':>9s} {'params':>7s} {'GFLOPs':>7s} {'darknet':>8s} "
        f"{'published':>15s} {'fused ms':>9s} {'x ideal':>7s}"
    )
    print(header)
    rows = []
    for name in args.models:
        t0 = time.perf_counter()
        load_row = load_average()
        model = build_model(name).eval()
        h, w = model.config.input_size
        gflops = count_gflops(model, (h, w))
        formula = darknet_formula_gflops(model, (h, w))
        dk = darknet_bflops(args.darknet, CFG_DIR / f"{name}.cfg")
        ls = latency_size.get(name)
        lat_hw = (ls, ls) if ls else (h, w)
        times = fused_latency_ms(model, lat_hw, args.repeats)
        median = statistics.median(times)
        lat_gflops = gflops if lat_hw == (h, w) else count_gflops(model, lat_hw)
        ideal_ms = lat_gflops / machine_gflops * 1e3
        published = PUBLISHED.get(name)
        floats = darknet_float_count(model)
        row = {
            "model": name,
            "input_size": [h, w],
            "num_classes": model.config.num_classes,
            "parameters": sum(p.numel() for p in model.parameters()),
            "darknet_layers": len(model.layers),
            "weights_bytes": weights_bytes(floats),
            "gflops": round(gflops, 3),
            "darknet_bflops_printed": dk,
            "darknet_formula_gflops": round(formula, 3),
            "published": (
                {"size": published[0], "metric": published[1], "value": published[2]}
                if published
                else None
            ),
            "latency_input_size": list(lat_hw),
            "latency_gflops": round(lat_gflops, 3),
            "fused_ms_median": round(median, 1),
            "fused_ms_min": round(min(times), 1),
            "repeats": len(times),
            "ideal_ms": round(ideal_ms, 1),
            "x_ideal": round(median / ideal_ms, 2),
            "seconds": round(time.perf_counter() - t0, 1),
            "load_average_1min": round(load_row, 2),
        }
        rows.append(row)
        pub = f"{published[1]} {published[2]} @{published[0]}" if published else "-"
        lat = f"{median:.0f}" + ("" if lat_hw == (h, w) else f"@{lat_hw[0]}")
        print(
            f"{name:19s} {f'{h}x{w}':>9s} {row['parameters'] / 1e6:6.1f}M {gflops:7.1f} "
            f"{dk if dk is not None else '-':>8} {pub:>15s} {lat:>9s} {row['x_ideal']:7.2f}",
            flush=True,
        )
        del model
    load_end = load_average()
    loads = [load_start, load_end, *(r["load_average_1min"] for r in rows)]
    busy = max(loads) > BUSY_LOAD
    payload = {
        "machine": info,
        "matmul_gflops_per_s": round(machine_gflops, 1),
        "load_average_1min": {"start": round(load_start, 2), "end": round(load_end, 2)},
        "under_load": busy,
        "notes": [
            "gflops: torch FlopCounterMode at the cfg's input size, 2 FLOPs per multiply-add "
            "(GFLOPs = 2 x MACs / 1e9), convolutions only",
            "darknet_bflops_printed: darknet's 'Total BFLOPS' for the shipped cfg "
            f"({args.darknet}, AlexeyAB darknet CPU build; null: not run); "
            "darknet_formula_gflops: darknet's formula on our layer list (convolutions as "
            "ours plus one op per [shortcut] input element and size^2 per [maxpool] output)",
            "published: darknet's README COCO test-dev figures (yolov4.models.zoo.PUBLISHED), "
            "not measured here",
            "fused_ms: fuse_model (Conv+BN folded, channels-last weights and input), "
            "torch.inference_mode, batch 1, median after one warm-up; ideal_ms = GFLOPs / "
            "matmul GFLOP/s",
            f"machine under load (1-min load average up to {max(loads):.2f} > {BUSY_LOAD}, at "
            f"start {load_start:.2f}: other jobs on the same cores): latencies are pessimistic"
            if busy
            else f"machine quiet (1-min load average <= {BUSY_LOAD} at start, end and each model)",
        ],
        "total_seconds": round(time.perf_counter() - start, 1),
        "results": rows,
    }
    print(f"load average: start {load_start:.2f}, end {load_end:.2f}, max {max(loads):.2f}")
    print(f"wrote {save(args.out, payload)} in {payload['total_seconds']:.0f} s")


if __name__ == "__main__":
    main()
