"""Model summary: ``python -m yolov4.models [yolov4|yolov4-tiny] [--size 416] [--num-classes 80]``.

Builds the network, runs one forward pass on a random image and prints the parameter count,
FLOPs, darknet layer count and the raw head map shapes; ``--cfg PATH`` also writes the darknet
cfg and ``--weights PATH`` the (randomly initialised) darknet weights.
"""

from __future__ import annotations

import argparse
import time

import torch
from torch.utils.flop_counter import FlopCounterMode

from yolov4.darknet import darknet_float_count, save_darknet_weights, write_darknet_cfg
from yolov4.models import available_models, build_model, fuse_model


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m yolov4.models", description=__doc__)
    parser.add_argument("name", nargs="?", default="yolov4-tiny", choices=available_models())
    parser.add_argument("--size", type=int, nargs="+", default=[416], help="H [W], multiples of 32")
    parser.add_argument("--num-classes", type=int, default=80)
    parser.add_argument("--cfg", help="write the darknet cfg here")
    parser.add_argument("--weights", help="write darknet weights here")
    args = parser.parse_args(argv)
    h, w = (args.size * 2)[:2]

    model = build_model(args.name, num_classes=args.num_classes).eval()
    fused = fuse_model(model)
    x = torch.rand(1, 3, h, w)
    with FlopCounterMode(display=False) as flops, torch.no_grad():
        outs = model(x)
    with torch.inference_mode():
        fused(x)
        start = time.perf_counter()
        fused(x)
        ms = (time.perf_counter() - start) * 1e3
    params = sum(p.numel() for p in model.parameters())
    print(f"{args.name}: {args.num_classes} classes, input 1x3x{h}x{w}")
    print(f"  parameters        {params:,}")
    print(f"  darknet layers    {len(model.layers)}")
    print(f"  .weights floats   {darknet_float_count(model):,}")
    print(f"  GFLOPs            {flops.get_total_flops() / 1e9:.2f}")
    for s, o in zip(model.strides, outs):
        print(f"  stride {s:2d} map     {tuple(o.shape)}")
    print(f"  fused forward     {ms:.1f} ms ({torch.get_num_threads()} CPU threads)")
    if args.cfg:
        with open(args.cfg, "w") as f:
            f.write(write_darknet_cfg(model, input_size=(h, w)))
        print(f"  wrote {args.cfg}")
    if args.weights:
        print(f"  wrote {save_darknet_weights(model, args.weights)}")


if __name__ == "__main__":
    main()
