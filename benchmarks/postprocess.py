"""Decode + postprocess in the worst case, and the loss's forward + backward, against the
machine's own matmul.

    python benchmarks/postprocess.py                 # 608, batch 1 and 8, IoU and DIoU NMS; loss b16@416
    python benchmarks/postprocess.py --batches 1 --repeats 3 --threads 1 --out postprocess_1thread

Worst case for postprocess: head maps of untrained-looking logits (N(0, 1): objectness and class
probabilities around 0.5) so that at ``conf_thresh=0.001`` every one of the 22,743 boxes at 608
passes for every class; the pre-NMS cap then decides the work. The loss is timed on random maps
(no network) with 50 random targets per image. Prints a table and writes
benchmarks/results/postprocess.json.
"""

from __future__ import annotations

import argparse

import torch
from common import add_out_argument, machine_info, matmul_gflops, save, time_fn

from yolov4.loss import YoloLoss
from yolov4.models import ModelConfig
from yolov4.ops import decode_predictions, postprocess

CONF_THRESH = 0.001  # COCO-evaluation threshold (darknet `detector map` uses 0.005)


def random_targets(
    batch: int, per_image: int, size: int, classes: int, g: torch.Generator
) -> torch.Tensor:
    n = batch * per_image
    wh = torch.rand(n, 2, generator=g) * size * 0.5 + 4
    xy = torch.rand(n, 2, generator=g) * (size - wh)
    img = torch.arange(batch).repeat_interleave(per_image)[:, None].float()
    cls = torch.randint(0, classes, (n, 1), generator=g).float()
    return torch.cat((img, cls, xy, xy + wh), 1)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--size", type=int, default=608)
    parser.add_argument("--batches", nargs="+", type=int, default=[1, 8])
    parser.add_argument("--nms", nargs="+", default=["iou", "diou"])
    parser.add_argument("--loss-batch", type=int, default=16)
    parser.add_argument("--loss-size", type=int, default=416)
    parser.add_argument("--targets-per-image", type=int, default=50)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument(
        "--threads", type=int, default=None, help="torch threads (default: torch's)"
    )
    add_out_argument(parser, "--out", "postprocess")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    g = torch.Generator().manual_seed(0)
    gflops_machine = matmul_gflops()
    info = machine_info()
    print(f"{info['cpu']} ({info['torch_threads']} threads): matmul {gflops_machine:.1f} GFLOP/s")
    cfg = ModelConfig.load("yolov4")
    anchors, strides, scales = cfg.head_anchors(), cfg.strides, cfg.scale_x_y
    rows = []
    for batch in args.batches:
        maps = [
            torch.randn(batch, cfg.num_outputs, args.size // s, args.size // s, generator=g)
            for s in strides
        ]
        with torch.inference_mode():
            t_dec = time_fn(
                lambda m=maps: decode_predictions(m, anchors, strides, scales), args.repeats
            )
            preds = decode_predictions(maps, anchors, strides, scales)
            for kind in args.nms:

                def run(p=preds, k=kind):
                    return postprocess(
                        p, (args.size, args.size), conf_thresh=CONF_THRESH, nms_kind=k
                    )

                t_post = time_fn(run, args.repeats)
                kept = sum(d.shape[0] for d in run())
                row = {
                    "batch": batch,
                    "size": args.size,
                    "boxes_per_image": preds.shape[1],
                    "nms": kind,
                    "decode_ms_per_image": round(t_dec["median_s"] * 1e3 / batch, 2),
                    "postprocess_ms_per_image": round(t_post["median_s"] * 1e3 / batch, 2),
                    "total_ms_per_image": round(
                        (t_dec["median_s"] + t_post["median_s"]) * 1e3 / batch, 2
                    ),
                    "total_min_ms_per_image": round(
                        (t_dec["min_s"] + t_post["min_s"]) * 1e3 / batch, 2
                    ),
                    "detections_per_image": kept / batch,
                    "repeats": args.repeats,
                }
                rows.append(row)
                print(
                    f"decode+postprocess {args.size} b{batch:<2d} nms={kind:4s} "
                    f"decode {row['decode_ms_per_image']:6.2f} ms/img  "
                    f"postprocess {row['postprocess_ms_per_image']:6.2f} ms/img  "
                    f"total {row['total_ms_per_image']:6.2f} ms/img (median of {args.repeats}; "
                    f"min {row['total_min_ms_per_image']:6.2f})"
                )

    loss_fn = YoloLoss.from_config(cfg)
    b, size = args.loss_batch, args.loss_size
    maps = [
        torch.randn(b, cfg.num_outputs, size // s, size // s, generator=g, requires_grad=True)
        for s in strides
    ]
    targets = random_targets(b, args.targets_per_image, size, cfg.num_classes, g)

    def step():
        loss_fn(maps, targets).total.backward()

    t_loss = time_fn(step, max(3, args.repeats // 2))
    loss_row = {
        "batch": b,
        "size": size,
        "targets_per_image": args.targets_per_image,
        "forward_backward_ms": round(t_loss["median_s"] * 1e3, 1),
        "min_ms": round(t_loss["min_s"] * 1e3, 1),
    }
    print(
        f"loss forward+backward b{b} {size} {args.targets_per_image} targets/img: "
        f"median {loss_row['forward_backward_ms']:.1f} ms (min {loss_row['min_ms']:.1f} ms)"
    )
    payload = {
        "machine": info,
        "matmul_gflops_per_s": round(gflops_machine, 1),
        "conf_thresh": CONF_THRESH,
        "postprocess": rows,
        "loss": loss_row,
    }
    print(f"wrote {save(args.out, payload)}")


if __name__ == "__main__":
    main()
