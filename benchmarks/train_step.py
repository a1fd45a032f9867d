"""Training throughput and where validation time goes, on this machine.

    python benchmarks/train_step.py [--models yolov4-tiny yolov4] [--size 416] [--batch 8]
        [--precisions fp32 bf16]

Training: images/s of forward + loss + backward + optimizer step (synthetic targets, 8 boxes per
image), channels-last, per precision: fp32, and bf16 as ``trainer.precision=bf16-mixed`` runs
it (the forward under ``torch.autocast("cpu", bfloat16)``, the loss in float32 outside it;
measured only on a CPU with native bf16, :func:`yolov4.training.precision.cpu_bf16`), the two
interleaved step by step so that a change of load hits both. Every row records the CPU flags. Validation: per image, the time in forward, decode + postprocess (conf 0.001, the mAP
setting) and COCOeval, on generated val images (one 50x50 box each) with a briefly
trained-looking model (random head biases: hundreds of boxes per image pass conf 0.001). Prints a table and writes benchmarks/results/<--name>.json.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import statistics
import time

import torch
from common import add_out_argument, machine_info, matmul_gflops, save, spread_head_biases, time_fn

from yolov4 import build_model
from yolov4.loss import YoloLoss
from yolov4.ops.decode import decode_predictions
from yolov4.ops.postprocess import postprocess
from yolov4.training.optim import OptimConfig, build_optimizer
from yolov4.training.precision import cpu_bf16


def random_targets(batch: int, size: int, per_image: int = 8, classes: int = 80) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    rows = []
    for i in range(batch):
        xy = torch.rand(per_image, 2, generator=g) * size * 0.8
        wh = torch.rand(per_image, 2, generator=g) * size * 0.3 + 8
        cls = torch.randint(0, classes, (per_image, 1), generator=g).float()
        rows.append(
            torch.cat([torch.full((per_image, 1), float(i)), cls, xy, (xy + wh).clamp(max=size)], 1)
        )
    return torch.cat(rows)


def train_rates(name: str, size: int, batch: int, repeats: int, precisions: list[str]) -> list:
    """One row per precision: seconds per training step, the precisions' steps interleaved."""
    steps = {}
    for precision in precisions:
        torch.manual_seed(0)
        model = build_model(name).train().to(memory_format=torch.channels_last)
        loss_fn = YoloLoss.from_config(model.config)
        opt = build_optimizer(model, OptimConfig())
        x = torch.rand(batch, 3, size, size).contiguous(memory_format=torch.channels_last)
        t = random_targets(batch, size)

        def step(model=model, loss_fn=loss_fn, opt=opt, x=x, t=t, bf16=precision == "bf16"):
            with torch.autocast("cpu", torch.bfloat16, enabled=bf16):
                maps = model(x)
            loss = loss_fn(maps, t).total  # float32, outside autocast (YoloModule's way)
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)

        step()  # warm-up
        steps[precision] = step
    times = {p: [] for p in precisions}
    cpu = {p: [] for p in precisions}  # CPU seconds of this process: less moved by neighbours
    for _ in range(repeats):
        for p, step in steps.items():
            start = time.process_time()
            times[p].append(time_fn(step, 1, warmup=0)["min_s"])
            cpu[p].append(time.process_time() - start)
    return [
        {
            "model": name,
            "size": size,
            "batch": batch,
            "precision": p,
            "repeats": repeats,
            "threads": torch.get_num_threads(),
            "min_s": min(ts),
            "median_s": statistics.median(ts),
            "cpu_s": statistics.median(cpu[p]),
            "images_per_s": batch / statistics.median(ts),
        }  # fmt: skip
        for p, ts in times.items()
    ]


def validation_split(name: str, size: int, images: int) -> dict:
    """Per-image seconds in forward, decode+postprocess and COCOeval on synthetic val images."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    model = build_model(name, num_classes=4).eval()
    spread_head_biases(model)
    c = model.config
    x = torch.rand(1, 3, size, size)
    timings = {"forward": 0.0, "postprocess": 0.0}
    results = []
    gt = {
        "images": [],
        "annotations": [],
        "categories": [{"id": i, "name": str(i)} for i in range(4)],
    }
    for i in range(images):
        gt["images"].append({"id": i, "width": size, "height": size})
        gt["annotations"].append(
            {
                "id": i + 1,
                "image_id": i,
                "category_id": i % 4,
                "bbox": [10, 10, 50, 50],
                "area": 2500,
                "iscrowd": 0,
            }
        )
        with torch.inference_mode():
            t0 = time.perf_counter()
            maps = model(x)
            t1 = time.perf_counter()
            dets = postprocess(
                decode_predictions(maps, c.head_anchors(), c.strides, c.scale_x_y),
                (size, size),
                conf_thresh=0.001,
            )[0]
            t2 = time.perf_counter()
        timings["forward"] += t1 - t0
        timings["postprocess"] += t2 - t1
        for x1, y1, x2, y2, s, k in dets.tolist():
            results.append(
                {
                    "image_id": i,
                    "category_id": int(k),
                    "bbox": [x1, y1, x2 - x1, y2 - y1],
                    "score": s,
                }
            )
    coco = COCO()
    coco.dataset = gt
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
        t0 = time.perf_counter()
        ev = COCOeval(coco, coco.loadRes(results), "bbox")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
        timings["cocoeval"] = time.perf_counter() - t0
    return {
        "model": name,
        "size": size,
        "images": images,
        "detections_per_image": len(results) / images,
        **{f"{k}_ms_per_image": 1e3 * v / images for k, v in timings.items()},
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--models", nargs="+", default=["yolov4-tiny", "yolov4"])
    parser.add_argument("--size", type=int, default=416)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--val-images", type=int, default=20)
    parser.add_argument("--precisions", nargs="+", default=["fp32", "bf16"])
    parser.add_argument("--no-val", action="store_true", help="skip the validation split")
    add_out_argument(parser, "--name", "train_step")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: all)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    gflops = matmul_gflops()
    info = machine_info()
    native, why = cpu_bf16()
    precisions = [p for p in args.precisions if p != "bf16" or native]
    skipped = {"bf16": why} if len(precisions) < len(args.precisions) else {}
    print(f"{info['cpu']} ({info['torch_threads']} threads, {info['cpu_flags']}): "
          f"matmul {gflops:.1f} GFLOP/s; load {info['load_average_1_5_15']}")  # fmt: skip
    train_rows, val_rows = [], []
    for name in args.models:
        for row in train_rates(name, args.size, args.batch, args.repeats, precisions):
            row.update(cpu_flags=info["cpu_flags"], load=os.getloadavg()[0])
            train_rows.append(row)
            print(
                f"train {name:12s} {args.size} b{args.batch} {row['precision']}: "
                f"{row['images_per_s']:.2f} images/s (median step {row['median_s']:.3f} s, "
                f"{row['cpu_s']:.3f} CPU s)"
            )
        if args.no_val:
            continue
        v = validation_split(name, args.size, args.val_images)
        v["cpu_flags"] = info["cpu_flags"]
        val_rows.append(v)
        print(
            f"val   {name:12s}: forward {v['forward_ms_per_image']:.1f} ms, decode+NMS {v['postprocess_ms_per_image']:.1f} ms, "
            f"COCOeval {v['cocoeval_ms_per_image']:.1f} ms per image ({v['detections_per_image']:.0f} detections/image)"
        )
    path = save(
        args.name,
        {
            "machine": info,
            "matmul_gflops_per_s": round(gflops, 1),
            "train": train_rows,
            "skipped": skipped,
            "validation": val_rows,
        },
    )
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
