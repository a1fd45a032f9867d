"""Predictor throughput and latency per backend, preprocessing and postprocessing included.

    python benchmarks/predict.py [--models yolov4-tiny yolov4] [--size 416] [--batches 1 8]

For each model: export an artifact of a randomly initialised network (head biases set so that
postprocess has real work: ~100 boxes per image pass conf 0.25), then time the Predictor with
the torch (fused), onnxruntime and torchscript backends on 640x480 RGB images, and the network
alone (fused PyTorch forward) as the reference. Prints a table and writes
benchmarks/results/predict.json; "x network" is the Predictor's per-image time over the
network-only time.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from common import machine_info, matmul_gflops, save, spread_head_biases

from yolov4 import Predictor, build_model, fuse_model, save_checkpoint
from yolov4.export.artifact import export_artifact


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q))


def bench(fn, repeats: int) -> list[float]:
    fn()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--models", nargs="+", default=["yolov4-tiny", "yolov4"])
    parser.add_argument("--size", type=int, default=416)
    parser.add_argument("--batches", nargs="+", type=int, default=[1, 8])
    parser.add_argument("--repeats", type=int, default=10)
    args = parser.parse_args()

    gflops = matmul_gflops()
    info = machine_info()
    print(f"{info['cpu']} ({info['torch_threads']} threads): matmul {gflops:.1f} GFLOP/s")
    rng = np.random.default_rng(0)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.models:
            torch.manual_seed(0)
            model = build_model(name).eval()
            spread_head_biases(model)
            preprocess = {"input_size": [args.size, args.size], "mode": "letterbox"}
            ckpt = save_checkpoint(Path(tmp) / f"{name}.pt", model, None, preprocess)
            art = export_artifact(ckpt, Path(tmp) / f"{name}-export")
            predictors = {
                "torch": Predictor.from_checkpoint(ckpt),
                "onnxruntime": Predictor.from_artifact(art),
                "torchscript": Predictor.from_artifact(art, backend="torchscript"),
            }
            fused = fuse_model(model)
            for batch in args.batches:
                images = [rng.integers(0, 255, (480, 640, 3), dtype=np.uint8) for _ in range(batch)]
                x = torch.rand(batch, 3, args.size, args.size)
                with torch.inference_mode():
                    net = bench(lambda fused=fused, x=x: fused(x), args.repeats)
                net_per_image = statistics.median(net) / batch
                for backend, p in predictors.items():
                    parts: dict[str, list[float]] = {
                        "preprocess": [],
                        "model": [],
                        "postprocess": [],
                    }

                    def run(p=p, parts=parts, images=images):
                        dets = p(images)
                        for k in parts:
                            parts[k].append(dets[0].timing_ms[k])

                    times = bench(run, args.repeats)
                    per_image = statistics.median(times) / batch
                    row = {
                        "model": name,
                        "backend": backend,
                        "size": args.size,
                        "batch": batch,
                        "images_per_s": round(1 / per_image, 2),
                        "latency_p50_ms": round(1e3 * percentile(times, 50), 1),
                        "latency_p99_ms": round(1e3 * percentile(times, 99), 1),
                        **{f"{k}_ms": round(statistics.median(v[1:]), 1) for k, v in parts.items()},
                        "network_only_ms_per_image": round(1e3 * net_per_image, 1),
                        "x_network": round(per_image / net_per_image, 2),
                    }
                    rows.append(row)
                    print(
                        f"{name:12s} {backend:12s} b{batch:<2d} {row['images_per_s']:7.2f} img/s  p50 {row['latency_p50_ms']:8.1f} ms  "
                        f"p99 {row['latency_p99_ms']:8.1f} ms  pre {row['preprocess_ms']:6.1f}  model {row['model_ms']:7.1f}  "
                        f"post {row['postprocess_ms']:6.1f} ms/batch  network-only {row['network_only_ms_per_image']:.1f} ms/img  "
                        f"x{row['x_network']:.2f}"
                    )
    print(
        f"wrote {save('predict', {'machine': info, 'matmul_gflops_per_s': round(gflops, 1), 'results': rows})}"
    )


if __name__ == "__main__":
    main()
