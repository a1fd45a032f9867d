"""Serving speed per backend and precision, against the machine's fp32 limit, with mAP50.

    python benchmarks/predict.py [--models yolov4-tiny yolov4] [--sizes 416 608]
        [--backends torch onnxruntime openvino] [--precisions fp32 int8 bf16 int8_bf16]
        [--threads 2]
        [--batches 1 8] [--repeats 3] [--calibration-images 8] [--busy] [--name predict]

For each model and input size: export an artifact of a randomly initialised network (head biases
spread so that postprocess has work) with every precision this CPU can make (INT8: NNCF,
calibrated on ``--calibration-images`` generated images; bf16 and int8_bf16 -- the INT8 model
with its non-quantized operations in bf16 -- only with native bf16, otherwise recorded as
refused with the export's message), then time the model call (``backend(images)``
on preprocessed tensors) at each batch size, and the whole Predictor (640x480 JPEG-like RGB
array -> detections) at batch 1. "x limit" is the measured time over the fp32 limit: the
network's GFLOPs (2 per multiply-add) at the machine's fp32 matmul GFLOP/s measured in the same
run; below 1 needs lower precision. Every row records the CPU flags of the machine measuring it
(``cpu_flags``); ``chosen`` records the precision ``Predictor.from_artifact`` picks when not told
one (:mod:`yolov4.inference.precision`) and why.

mAP50: the export's own gate, fp32 vs INT8 in OpenVINO as metadata.json records, either of a
trained checkpoint (``--checkpoint <run>/weights/best.pt``: ``python export.py`` with
``precision=[fp32,int8]`` on the synthetic val split, as a user runs it) or, without one, of the
overfit yolov4-tiny of the tests (40 Adam steps on four 64-px synthetic images, evaluated on
them). The timed networks are untrained, so no mAP is claimed for them.

Threads (``--threads``, default: every core): PyTorch's pool (``torch.set_num_threads``),
onnxruntime's ``intra_op_num_threads`` (inter-op 1), OpenVINO's ``INFERENCE_NUM_THREADS`` (one
stream, latency hint). ``--busy`` runs a neighbour process (one thread of float32 matmuls) for
the whole run, the contention a shared serving host sees. Writes
benchmarks/results/<name>.json with the machine, its load average and every row.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from common import add_out_argument, machine_info, matmul_gflops, save, spread_head_biases

from yolov4 import Predictor, build_model, save_checkpoint
from yolov4.core.artifact import read_metadata
from yolov4.data.datamodule import SyntheticDataModule
from yolov4.errors import ExportError
from yolov4.evaluation import evaluate_predictor
from yolov4.export.artifact import export_artifact
from yolov4.inference.backends import bf16_native, cpu_features

BUSY = "import torch; torch.set_num_threads(1); a = torch.randn(512, 512)\nwhile True: a @ a"


def gflops(model: torch.nn.Module, size: int) -> float:
    """Multiply-adds x 2 of the convolutions at ``size`` (hooks on every Conv2d)."""
    total = 0

    def hook(m: torch.nn.Conv2d, _inp, out: torch.Tensor) -> None:
        nonlocal total
        k = m.kernel_size[0] * m.kernel_size[1] * m.in_channels // m.groups
        total += 2 * k * out.numel()

    hooks = [
        m.register_forward_hook(hook) for m in model.modules() if isinstance(m, torch.nn.Conv2d)
    ]
    with torch.inference_mode():
        model.eval()(torch.zeros(1, 3, size, size))
    for h in hooks:
        h.remove()
    return total / 1e9


def timed(fn, repeats: int) -> list[float]:
    fn()  # warm-up: allocation, OpenVINO's first-shape compilation
    out = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        out.append(time.perf_counter() - start)
    return out


def loadavg() -> list[float]:
    try:
        return [float(v) for v in Path("/proc/loadavg").read_text().split()[:3]]
    except OSError:
        return []


def dataset(root: Path, size: int, n_train: int, n_val: int) -> SyntheticDataModule:
    dm = SyntheticDataModule(num_train=n_train, num_val=n_val, image_size=size,
                             input_size=[size, size], cache_dir=str(root), num_workers=0)  # fmt: skip
    dm.prepare_data()
    return dm


def evaluator(dm: SyntheticDataModule, subset: str):
    val = dm.split("val").records

    def evaluate(predictor: Predictor) -> dict:
        result = evaluate_predictor(predictor, dm, val, 8, {})
        return {**result.metrics, "images": len(val), "subset": subset}

    return evaluate


def export_all(
    ckpt: Path, out: Path, precisions: list[str], dm, subset: str, gate: float = 1.0
) -> dict:
    """Export with every precision in ``precisions`` this CPU can make; -> {"artifact",
    "refused": {precision: message}}. ``gate``: the export's mAP50 gate (the timed, untrained
    networks pass any: their mAP50 of a few points is noise; the overfit model keeps 1 point)."""
    wanted = [p for p in precisions if p != "fp32"]
    refused = {}
    calibration = [r.file for r in dm.split("train").records]
    while True:
        try:
            start = time.perf_counter()
            art = export_artifact(ckpt, out, formats=["onnx"], precisions=["fp32", *wanted],
                                  calibration=calibration, evaluate=evaluator(dm, subset),
                                  map50_gate=gate)  # fmt: skip
            return {"artifact": art, "refused": refused, "export_s": time.perf_counter() - start}
        except ExportError as e:
            failed = next((p for p in wanted if f"precision {p} needs" in str(e)), None)
            if failed is None:
                raise
            refused[failed] = str(e)
            wanted.remove(failed)


def overfit_map(root: Path, precisions: list[str], threads: int) -> dict:
    """The tests' overfit yolov4-tiny (tests/export/conftest.py), exported with the gate."""
    from yolov4.loss import YoloLoss

    dm = dataset(root / "overfit-data", 64, 4, 4)
    dm.batch_size = 4
    dm.setup()
    batch = next(iter(dm.val_dataloader()))
    images, targets = batch["images"].float() / 255, batch["targets"]
    torch.manual_seed(0)
    model = build_model("yolov4-tiny", num_classes=len(dm.class_names), input_size=[64, 64])
    loss_fn = YoloLoss.from_config(model.config)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3, fused=True)
    start = time.perf_counter()
    torch.set_num_threads(1)  # a small model on a shared machine: 1 thread is 4-10x faster
    for _ in range(40):
        loss = loss_fn(model.train()(images), targets).total
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    with torch.no_grad():  # BN statistics of the trained batch (as the test fixture does)
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.momentum = 1.0
        model.train()(images)
    model.eval()
    torch.set_num_threads(threads)
    train_s = time.perf_counter() - start
    ckpt = save_checkpoint(
        root / "overfit.pt", model, dm.class_names, dm.preprocess_config.to_dict()
    )
    done = export_all(
        ckpt, root / "overfit-export", precisions, dm, "synthetic val, 4 64-px images"
    )
    meta = read_metadata(done["artifact"])
    return {
        "model": "yolov4-tiny overfit (40 Adam steps, four 64-px synthetic images)",
        "train_s": round(train_s, 1),
        "precisions": {p: e.get("accuracy") for p, e in meta["precisions"].items() if p != "fp32"},
        "refused": done["refused"],
    }


def checkpoint_map(ckpt: Path, out: Path, precisions: list[str]) -> dict:
    """``python export.py checkpoint=ckpt precision=[...]`` (the user's command: calibration and
    the gate's images from the synthetic dataset); the mAPs its metadata.json records."""
    root = Path(__file__).resolve().parent.parent
    # bf16 is refused by the export on CPUs without native bf16 (the timed rows record why)
    native = bf16_native()
    wanted = ["fp32", *(p for p in precisions if p == "int8" or (p != "fp32" and native))]
    start = time.perf_counter()
    subprocess.run(
        [sys.executable, str(root / "export.py"), f"checkpoint={ckpt}", f"output={out}",
         "formats=[onnx]", f"precision=[{','.join(wanted)}]", f"hydra.run.dir={out}-hydra"],
        check=True,
    )  # fmt: skip
    meta = read_metadata(out)
    return {
        "model": f"{meta['model'].get('name', 'model')} checkpoint {ckpt}",
        "export_s": round(time.perf_counter() - start, 1),
        "precisions": {p: e.get("accuracy") for p, e in meta["precisions"].items() if p != "fp32"},
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--models", nargs="+", default=["yolov4-tiny", "yolov4"])
    parser.add_argument("--sizes", nargs="+", type=int, default=[416, 608])
    parser.add_argument("--backends", nargs="+", default=["torch", "onnxruntime", "openvino"])
    parser.add_argument("--precisions", nargs="+", default=["fp32", "int8", "bf16", "int8_bf16"])
    parser.add_argument("--batches", nargs="+", type=int, default=[1, 8])
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--calibration-images", type=int, default=8)
    parser.add_argument("--no-map", action="store_true", help="skip the mAP50 measurement")
    parser.add_argument(
        "--checkpoint", type=Path, help="a trained checkpoint whose INT8 mAP50 is measured"
    )
    parser.add_argument("--busy", action="store_true", help="a busy neighbour process throughout")
    add_out_argument(parser, "--name", "predict")
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    neighbour = subprocess.Popen([sys.executable, "-c", BUSY]) if args.busy else None
    load_start = loadavg()
    try:
        limit = matmul_gflops()
        openvino = cpu_features()["openvino_capabilities"]
        info = {**machine_info(), "openvino_capabilities": openvino, "threads": args.threads}
        print(f"{info['cpu']} {info['cpu_flags']}, {args.threads} threads: "
              f"matmul {limit:.1f} GFLOP/s; load {load_start}")  # fmt: skip
        rng = np.random.default_rng(0)
        rows, exports = [], []
        with tempfile.TemporaryDirectory() as tmp:
            tmp = Path(tmp)
            if args.no_map:
                accuracy = None
            elif args.checkpoint:
                accuracy = checkpoint_map(args.checkpoint, tmp / "trained-export", args.precisions)
            else:
                accuracy = overfit_map(tmp, args.precisions, args.threads)
            if accuracy:
                print(f"mAP50 ({accuracy['model']}): {accuracy['precisions']}")
            for name in args.models:
                for size in args.sizes:
                    dm = dataset(tmp / f"data-{size}", size, args.calibration_images, 4)
                    torch.manual_seed(0)
                    model = spread_head_biases(
                        build_model(name, num_classes=len(dm.class_names)).eval()
                    )
                    flops = gflops(model, size)
                    # the limit again next to each group: on a shared machine it moves with load
                    limit_here = matmul_gflops()
                    floor_ms = 1e3 * flops / limit_here
                    preprocess = {"input_size": [size, size], "mode": "letterbox"}
                    ckpt = save_checkpoint(
                        tmp / f"{name}-{size}.pt", model, dm.class_names, preprocess
                    )
                    done = export_all(
                        ckpt, tmp / f"{name}-{size}", args.precisions, dm, "untrained", 100.0
                    )
                    art = done["artifact"]
                    meta = read_metadata(art)
                    exports.append({"model": name, "size": size, "export_s": round(done["export_s"], 1),
                                    "refused": done["refused"],
                                    "calibration_images": args.calibration_images})  # fmt: skip
                    image = rng.integers(0, 255, (480, 640, 3), dtype=np.uint8)
                    auto = Predictor.from_artifact(art, threads=args.threads)
                    exports[-1]["chosen"] = {"precision": auto.precision,
                                             "why": auto.precision_reason}  # fmt: skip
                    for backend in args.backends:
                        for precision in meta["precisions"]:
                            if backend == "torch":
                                if precision != "fp32":
                                    continue
                                p = Predictor.from_checkpoint(ckpt)
                            elif backend not in meta["precisions"][precision]["backends"]:
                                continue
                            else:
                                p = Predictor.from_artifact(art, backend, precision=precision,
                                                            threads=args.threads)  # fmt: skip
                            row = {"model": name, "size": size, "backend": backend,
                                   "precision": precision, "gflops": round(flops, 2),
                                   "matmul_gflops_per_s": round(limit_here, 1),
                                   "fp32_limit_ms": round(floor_ms, 1),
                                   "cpu_flags": info["cpu_flags"]}  # fmt: skip
                            for batch in args.batches:
                                x = torch.rand(batch, 3, size, size)
                                reps = max(1, args.repeats if batch == 1 else args.repeats // 2)
                                t = statistics.median(timed(lambda p=p, x=x: p.backend(x), reps))
                                if batch == 1:
                                    row["b1_ms"] = round(1e3 * t, 1)
                                    row["b1_x_limit"] = round(1e3 * t / floor_ms, 2)
                                else:
                                    row[f"b{batch}_img_per_s"] = round(batch / t, 2)
                                    row[f"b{batch}_x_limit"] = round(1e3 * t / batch / floor_ms, 2)
                            pred = timed(lambda p=p, im=image: p(im), args.repeats)
                            row["predictor_b1_ms"] = round(1e3 * statistics.median(pred), 1)
                            row["load"] = loadavg()
                            rows.append(row)
                            print("  ".join(f"{k}={v}" for k, v in row.items()), flush=True)
        payload = {
            "machine": info,
            "matmul_gflops_per_s": round(limit, 1),
            "load_start": load_start,
            "load_end": loadavg(),
            "busy_neighbour": BUSY if args.busy else None,
            "note": "the machine is shared: see load_* (1-min load averages) next to its 2 cores",
            "exports": exports,
            "map50": accuracy,
            "map50_note": "mAP50 of --checkpoint on the synthetic val split (export.py's gate)"
            if args.checkpoint
            else "mAP50 on the overfit model's own 4 val images (a gate check, not a "
            "benchmark of accuracy); the timed networks are untrained (spread head biases)",
            "results": rows,
        }
        print(f"wrote {save(args.name, payload)}")
    finally:
        if neighbour is not None:
            neighbour.kill()
            neighbour.wait()


if __name__ == "__main__":
    main()
