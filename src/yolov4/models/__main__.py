"""Model summary of any zoo network or a user's darknet cfg.

    python -m yolov4.models yolov4-csp                   # at the cfg's [net] size (512x512)
    python -m yolov4.models yolov4-p6 --size 640         # H [W], multiples of the largest stride
    python -m yolov4.models --cfg-file my.cfg            # a user's darknet cfg
    python -m yolov4.models yolov4 --cfg out.cfg --weights out.weights   # also write darknet files

Builds the network and prints its parameter count, GFLOPs, darknet layer count, ``.weights``
size, the raw head map shapes and the fused CPU forward latency (batch 1, channels-last,
median of ``--repeats`` runs after one warm-up; ``--repeats 0`` skips it). GFLOPs are
torch's ``FlopCounterMode`` count, which is 2 FLOPs per multiply-accumulate, so GFLOPs =
2 x MACs / 1e9 (darknet's "BFLOPS" counts convolutions the same way, plus one operation per
element of its [shortcut] and [maxpool] layers). ``--cfg PATH`` writes the darknet cfg and
``--weights PATH`` the (randomly initialised) darknet weights: both are outputs, and a file
already there, or one path given to both, is refused, never overwritten (the cfg to read is
``--cfg-file``).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

from yolov4.darknet import (
    HEADER_VERSION,
    darknet_float_count,
    save_darknet_weights,
    write_darknet_cfg,
)
from yolov4.errors import ConfigError
from yolov4.models import available_models, build_model, fuse_model

__all__ = ["main", "count_gflops", "weights_bytes", "progress"]

# .weights header: int32 major, minor, revision, then uint64 `seen` (darknet >= 0.2)
HEADER_BYTES = 4 * len(HEADER_VERSION) + 8


def count_gflops(model: torch.nn.Module, size: tuple[int, int]) -> float:
    """GFLOPs of one ``(H, W)`` image: ``FlopCounterMode``'s total (2 per multiply-accumulate)
    / 1e9, counted on a meta-device copy of the network (no arithmetic is done)."""
    from yolov4.models import YOLOv4

    assert isinstance(model, YOLOv4)
    with torch.device("meta"):
        meta = YOLOv4(model.config)
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        meta(torch.empty(1, 3, *size, device="meta"))
    return counter.get_total_flops() / 1e9


def weights_bytes(floats: int) -> int:
    """Size of a ``.weights`` file holding ``floats`` float32s (after darknet's 20-byte header)."""
    return HEADER_BYTES + 4 * floats


def progress(message: str) -> None:
    """A phase starting (on stderr: stdout keeps the summary): the big networks take seconds to
    build and to run on a CPU."""
    print(message, file=sys.stderr, flush=True)


def fused_latency_ms(
    model: torch.nn.Module, size: tuple[int, int], repeats: int, verbose: bool = False
) -> list[float]:
    """Fused (Conv+BN folded, channels-last) forward times in ms at batch 1, after one warm-up;
    ``verbose``: each run's time on stderr as it ends."""
    fused = fuse_model(model)
    x = torch.rand(1, 3, *size).contiguous(memory_format=torch.channels_last)
    times = []
    with torch.inference_mode():
        fused(x)
        for i in range(repeats):
            start = time.perf_counter()
            fused(x)
            times.append((time.perf_counter() - start) * 1e3)
            if verbose:
                progress(f"  timed forward {i + 1}/{repeats}: {times[-1]:.1f} ms")
    return times


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m yolov4.models",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "name",
        nargs="?",
        choices=available_models(),
        help="a zoo network (default yolov4-tiny; with --cfg-file: a label only, default the "
        "file's stem)",
    )
    parser.add_argument("--cfg-file", help="a darknet .cfg of your own instead of a zoo network")
    parser.add_argument(
        "--size",
        type=int,
        nargs="+",
        help="H [W], multiples of the largest stride (default: the cfg's [net] height, width)",
    )
    parser.add_argument(
        "--num-classes", type=int, help="default: the cfg's [yolo] classes (80 for the zoo)"
    )
    parser.add_argument("--repeats", type=int, default=3, help="timed forward runs (0: none)")
    parser.add_argument(
        "--cfg",
        help="write the network's darknet cfg here (an output; an existing file is refused)",
    )
    parser.add_argument(
        "--weights",
        help="write the network's (random) darknet weights here (an output; an existing file "
        "is refused)",
    )
    return parser


def _refuse_existing_outputs(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Exit 2 (argparse's usage error) when ``--cfg`` or ``--weights`` names a file that exists,
    or both name one file: they are where the summary writes, and a user's own darknet files
    there, or the cfg under the weights, would be lost."""
    if args.cfg is not None and args.weights is not None:
        if Path(args.cfg).resolve() == Path(args.weights).resolve():
            parser.error(
                f"--cfg {args.cfg} and --weights {args.weights} name one file: the weights would "
                "overwrite the cfg; give each its own path"
            )
    for flag, path in (("--cfg", args.cfg), ("--weights", args.weights)):
        if path is not None and Path(path).exists():
            parser.error(
                f"{flag} {path}: the file exists and is not overwritten; --cfg and --weights are "
                "where the summary WRITES the network's darknet files (the cfg to read is "
                "--cfg-file); name a path that does not exist"
            )


def main(argv: list[str] | None = None) -> None:
    parser = _parser()
    args = parser.parse_args(argv)
    if args.cfg_file is None and args.name is None:
        args.name = "yolov4-tiny"
    _refuse_existing_outputs(parser, args)
    overrides = {}
    if args.size:
        if len(args.size) > 2:
            parser.error(f"--size takes H [W], got {args.size}")
        overrides["input_size"] = (args.size * 2)[:2]
    progress(f"building {args.cfg_file or args.name}...")
    try:
        model = build_model(
            args.name, num_classes=args.num_classes, cfg=args.cfg_file, **overrides
        ).eval()
    except ConfigError as e:
        parser.error(str(e))
    c = model.config
    h, w = c.input_size
    progress(f"forward pass and FLOP count at {w}x{h} (WxH)...")
    with torch.no_grad():
        outs = model(torch.rand(1, 3, h, w))
    gflops = count_gflops(model, (h, w))
    params = sum(p.numel() for p in model.parameters())
    floats = darknet_float_count(model)
    source = args.cfg_file or f"{c.name}.cfg (zoo)"
    print(f"{c.name}: {source}, {c.num_classes} classes, input 1x3x{h}x{w}")
    print(f"  parameters        {params:,}")
    print(
        f"  GFLOPs            {gflops:.2f} (FlopCounterMode: 2 FLOPs per multiply-add, MACs x 2 / 1e9)"
    )
    print(f"  darknet layers    {len(model.layers)}")
    print(f"  .weights floats   {floats:,} ({weights_bytes(floats):,} bytes)")
    if c.region:  # darknet's YOLOv2 head: decode only (yolov4.models.region)
        print("  head              [region] (softmax classes), inference only")
    elif c.gaussian:  # darknet's Gaussian YOLOv3 heads: decode only (yolov4.models.gaussian)
        print("  head              [Gaussian_yolo] (box uncertainty in the scores), inference only")
    else:
        print(
            f"  box decoding      {'new_coords' if c.new_coords else 'exp'}, iou_loss {c.iou_loss}"
        )
    for s, o in zip(model.strides, outs):
        print(f"  stride {s:2d} map     {tuple(o.shape)}")
    if args.repeats > 0:
        progress(f"timing the fused forward: 1 warm-up + {args.repeats} runs...")
        times = fused_latency_ms(model, (h, w), args.repeats, verbose=True)
        print(
            f"  fused forward     {statistics.median(times):.1f} ms median of {len(times)} "
            f"(batch 1, channels-last, {torch.get_num_threads()} CPU threads)"
        )
    if args.cfg:
        with open(args.cfg, "w") as f:
            f.write(write_darknet_cfg(model, input_size=(h, w)))
        print(f"  wrote {args.cfg}")
    if args.weights:
        print(f"  wrote {save_darknet_weights(model, args.weights)}")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
