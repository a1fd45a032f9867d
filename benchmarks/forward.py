"""Forward latency of yolov4 and yolov4-tiny, eager and fused, against the machine's own matmul.

    python benchmarks/forward.py                 # full grid: 2 models x 416/608 x batch 1/8 x 2 modes
    python benchmarks/forward.py --models yolov4-tiny --sizes 416 --batches 1

Prints a table and writes benchmarks/results/forward.json. "ideal" is the model's FLOPs divided by
the float32 matmul GFLOP/s measured in the same run; "x ideal" is median latency / ideal.
"""

from __future__ import annotations

import argparse

import torch
from common import add_out_argument, machine_info, matmul_gflops, save, time_fn
from torch.utils.flop_counter import FlopCounterMode

from yolov4 import build_model, fuse_model

# darknet's own count (BFLOPs printed when it loads the cfg) at 416x416, for reference
DARKNET_GFLOPS_416 = {"yolov4": 60.1, "yolov4-tiny": 6.9}


def count_gflops(model: torch.nn.Module, size: int) -> float:
    """FLOPs of one image (multiply-add = 2 FLOPs, as darknet counts), in GFLOPs."""
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(torch.rand(1, 3, size, size))
    return counter.get_total_flops() / 1e9


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--models", nargs="+", default=["yolov4", "yolov4-tiny"])
    parser.add_argument("--sizes", nargs="+", type=int, default=[416, 608])
    parser.add_argument("--batches", nargs="+", type=int, default=[1, 8])
    parser.add_argument("--repeats", type=int, default=3)
    add_out_argument(parser, "--out", "forward")
    args = parser.parse_args()

    torch.manual_seed(0)
    gflops_machine = matmul_gflops()
    info = machine_info()
    print(f"{info['cpu']} ({info['torch_threads']} threads): matmul {gflops_machine:.1f} GFLOP/s")
    rows = []
    for name in args.models:
        eager = build_model(name).eval()
        fused = fuse_model(eager)
        for size in args.sizes:
            gflops = count_gflops(eager, size)
            for batch in args.batches:
                x = torch.rand(batch, 3, size, size)
                for mode, model in (("eager", eager), ("fused", fused)):
                    with torch.inference_mode():
                        t = time_fn(lambda m=model, x=x: m(x), args.repeats)
                    ideal = batch * gflops / gflops_machine
                    row = {
                        "model": name,
                        "size": size,
                        "batch": batch,
                        "mode": mode,
                        "gflops_per_image": round(gflops, 2),
                        **{k: round(v, 4) if isinstance(v, float) else v for k, v in t.items()},
                        "achieved_gflops_per_s": round(batch * gflops / t["median_s"], 1),
                        "ideal_s": round(ideal, 4),
                        "x_ideal": round(t["median_s"] / ideal, 2),
                    }
                    rows.append(row)
                    print(
                        f"{name:12s} {size:4d} b{batch:<2d} {mode:5s} "
                        f"min {t['min_s'] * 1e3:8.1f} ms  median {t['median_s'] * 1e3:8.1f} ms  "
                        f"{row['achieved_gflops_per_s']:6.1f} GFLOP/s  ideal {ideal * 1e3:8.1f} ms  "
                        f"x{row['x_ideal']:.2f}"
                    )
    payload = {
        "machine": info,
        "matmul_gflops_per_s": round(gflops_machine, 1),
        "darknet_gflops_416": DARKNET_GFLOPS_416,
        "results": rows,
    }
    print(f"wrote {save(args.out, payload)}")


if __name__ == "__main__":
    main()
