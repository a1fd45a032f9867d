"""Video throughput: the predict command against the model alone and the alternatives a user has.

    python benchmarks/predict_sources.py [--frames 200] [--width 640] [--height 480] [--size 416]
        [--batch 8] [--threads N] [--skip-ultralytics] [--checkpoint CKPT] [--name predict_sources]

On a generated video (moving shapes, mp4v, ``--frames`` frames of ``--width`` x ``--height``),
yolov4-tiny (80 classes) at ``--size`` with random weights (head biases spread, so postprocess has
boxes to sort), written as a darknet ``.cfg`` + ``.weights`` and as a project checkpoint (stretch
resize, as the cfg's ``letter_box=0``) — or, with ``--checkpoint``, a trained detector (its input
size unless ``--size`` is given, and its resize; detection counts as in real use), in one run:

a. ``model_only``: the Predictor's backend (PyTorch) on ready preprocessed tensors, batch
   ``--batch`` and 1 (the first :data:`B1_FRAMES` frames);
b. ``opencv_dnn``: ``cv2.dnn.readNetFromDarknet`` on the same cfg + weights, frame by frame as
   its tutorials do (``VideoCapture`` → ``blobFromImage`` → ``forward`` → its [yolo] decode and
   per-class NMS, then ``NMSBoxes``), and its ``forward`` alone;
c. ``ultralytics``: its predict loop (``YOLO("yolov8n.yaml")``, built offline from its yaml,
   random weights) on the video file, ``imgsz=--size``: its total time over the sum of its own
   per-frame ``inference`` times (loop overhead; a different network, so only the ratio compares);
d. ``predict_command``: ``python predict.py source=<video> checkpoint=<ckpt> batch=--batch`` as a
   user runs it (annotated video and predictions.jsonl written). Frames/s from wall time, and
   steady-state (``(N - 1) / (t_N - t_1)``: the same command on a 1-frame video removes start-up
   and model loading), and its own (``summary.json``: from the model loaded to the last file
   finalised). Recorded as not available when this checkout has no ``predict.py``;
e. ``predictor_loop``: the Python API without overlap: frames read one by one, the Predictor
   called on each ``--batch`` frames;
f. ``interleaved``: (a) at ``--batch`` and (d) in turns, ``--rounds`` times (the speed of a
   shared machine drifts by up to 2x within minutes, so each run of the command is set against
   the model-alone runs either side of it).

The target: (d)'s own frames/s at >= 90% of (a) at the same batch, the median of (f)'s ratios.
Writes
benchmarks/results/<name>.json with the machine (CPU flags, matmul GFLOP/s measured in the same
run, load averages before and after) and every figure.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
from common import add_out_argument, machine_info, matmul_gflops, save, spread_head_biases

from predict import loadavg
from yolov4 import Predictor, build_model, load_checkpoint, save_checkpoint
from yolov4.core.preprocess import preprocess
from yolov4.darknet import save_darknet_weights, write_darknet_cfg
from yolov4.inference.backends import cpu_features

ROOT = Path(__file__).resolve().parent.parent
FPS = 30
B1_FRAMES = 48  # batch-1 model-only figure: the first frames only (a reference, not the ceiling)
CONF, NMS = 0.25, 0.45  # darknet `detector demo` -thresh default; the usual tutorial NMS


def make_video(path: Path, frames: int, w: int, h: int, seed: int = 0) -> Path:
    """Moving filled rectangles and circles on a gradient, ``frames`` frames at :data:`FPS`."""
    rng = np.random.default_rng(seed)
    background = np.zeros((h, w, 3), np.uint8)
    background[..., 0] = np.linspace(40, 200, w, dtype=np.uint8)[None]
    background[..., 1] = np.linspace(200, 40, h, dtype=np.uint8)[:, None]
    n = 12
    pos = rng.uniform([0, 0], [w, h], (n, 2))
    vel = rng.uniform(-6, 6, (n, 2))
    size = rng.integers(20, 90, n)
    colors = rng.integers(0, 256, (n, 3)).tolist()
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), FPS, (w, h))
    for _ in range(frames):
        frame = background.copy()
        for (x, y), s, c, k in zip(pos.astype(int), size, colors, range(n)):
            if k % 2:
                cv2.circle(frame, (x, y), int(s) // 2, c, -1)
            else:
                cv2.rectangle(frame, (x, y), (x + int(s), y + int(s) * 2 // 3), c, -1)
        writer.write(frame)
        pos = (pos + vel) % [w, h]
    writer.release()
    return path


def read_frames(video: Path) -> list[np.ndarray]:
    """Every frame as RGB."""
    cap, out = cv2.VideoCapture(str(video)), []
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        out.append(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB))
    cap.release()
    return out


def model_only(
    predictor: Predictor, frames: list[np.ndarray], batch: int, batches: tuple[int, ...] = ()
) -> dict[str, Any]:
    """(a): the backend on tensors preprocessed beforehand, at 1 and ``batch`` (or ``batches``)."""
    tensors = torch.stack([preprocess(f, predictor.preprocess_config)[0] for f in frames])
    out = {}
    for b in sorted(set(batches) or {1, batch}):
        timed = tensors if b > 1 else tensors[:B1_FRAMES]
        predictor.backend(timed[:b])  # warm-up
        start = time.perf_counter()
        for i in range(0, len(timed), b):
            predictor.backend(timed[i : i + b])
        out[f"b{b}_fps"] = round(len(timed) / (time.perf_counter() - start), 2)
    return out


def opencv_dnn(cfg: Path, weights: Path, video: Path, size: int) -> dict[str, Any]:
    """(b): OpenCV DNN frame by frame, its own decode and NMS."""
    net = cv2.dnn.readNetFromDarknet(str(cfg), str(weights))
    names = net.getUnconnectedOutLayersNames()
    net.setInput(cv2.dnn.blobFromImage(np.zeros((size, size, 3), np.uint8), 1 / 255, (size, size)))
    net.forward(names)  # warm-up: layer allocation
    cap = cv2.VideoCapture(str(video))
    frames, boxes_total, forward_s = 0, 0, 0.0
    start = time.perf_counter()
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        h, w = frame.shape[:2]
        net.setInput(cv2.dnn.blobFromImage(frame, 1 / 255, (size, size), swapRB=True, crop=False))
        t = time.perf_counter()
        outs = net.forward(names)
        forward_s += time.perf_counter() - t
        rows = np.concatenate([o.reshape(-1, o.shape[-1]) for o in outs])
        scores = rows[:, 5:].max(1)
        keep = scores > CONF
        rows, scores = rows[keep], scores[keep]
        xywh = np.stack([(rows[:, 0] - rows[:, 2] / 2) * w, (rows[:, 1] - rows[:, 3] / 2) * h,
                         rows[:, 2] * w, rows[:, 3] * h], 1)  # fmt: skip
        kept = cv2.dnn.NMSBoxes(xywh.tolist(), scores.tolist(), CONF, NMS)
        boxes_total += len(kept)
        frames += 1
    total = time.perf_counter() - start
    cap.release()
    return {"fps": round(frames / total, 2), "forward_fps": round(frames / forward_s, 2),
            "frames": frames, "boxes": boxes_total}  # fmt: skip


def ultralytics_loop(video: Path, size: int) -> dict[str, Any]:
    """(c): ultralytics' predict loop on the video file; total time over its model time."""
    os.environ.setdefault("YOLO_OFFLINE", "1")
    try:
        import ultralytics
        from ultralytics import YOLO
    except ImportError as e:
        return {"available": False, "reason": f"ultralytics not importable: {e}"}
    model = YOLO("yolov8n.yaml")
    model.predict(np.zeros((64, 64, 3), np.uint8), imgsz=size, device="cpu", verbose=False)
    speed = {"preprocess": 0.0, "inference": 0.0, "postprocess": 0.0}
    frames = 0
    start = time.perf_counter()
    for r in model.predict(str(video), imgsz=size, device="cpu", stream=True, verbose=False):
        for k in speed:
            speed[k] += r.speed[k]
        frames += 1
    total = time.perf_counter() - start
    return {"available": True, "version": ultralytics.__version__, "model": "yolov8n.yaml",
            "fps": round(frames / total, 2), "model_fps": round(1e3 * frames / speed["inference"], 2),
            "total_over_model": round(1e3 * total / speed["inference"], 3),
            "own_ms": {k: round(v, 1) for k, v in speed.items()}, "frames": frames}  # fmt: skip


def predictor_loop(predictor: Predictor, video: Path, batch: int) -> dict[str, Any]:
    """(e): read, then predict each ``batch`` frames, one after the other (no overlap)."""
    predictor(np.zeros((64, 64, 3), np.uint8))  # warm-up
    cap, frames, pending = cv2.VideoCapture(str(video)), 0, []
    start = time.perf_counter()
    while True:
        ok, frame = cap.read()
        if ok:
            pending.append(frame)
        if pending and (len(pending) == batch or not ok):
            frames += len(predictor(pending, color="bgr"))
            pending = []
        if not ok:
            break
    cap.release()
    return {"fps": round(frames / (time.perf_counter() - start), 2), "frames": frames}


def predict_command(video: Path, one_frame: Path, ckpt: Path, batch: int, out: Path) -> dict:
    """(d): the user's command, when this checkout has it."""
    entry = ROOT / "predict.py"
    if not entry.is_file():
        return {"available": False, "reason": f"{entry} not in this checkout"}

    def run(source: Path, name: str) -> tuple[float, int]:
        # a folder of its own: predict.py refuses one holding an earlier run's outputs
        folder = Path(tempfile.mkdtemp(prefix=f"{name}-", dir=out))
        cmd = [sys.executable, str(entry), f"source={source}", f"checkpoint={ckpt}",
               f"batch={batch}", f"output={folder / 'out'}", f"hydra.run.dir={folder / 'hydra'}"]  # fmt: skip
        start = time.perf_counter()
        done = subprocess.run(cmd, capture_output=True, text=True)
        wall = time.perf_counter() - start
        if done.returncode:
            raise RuntimeError(f"{' '.join(cmd)} failed:\n{done.stderr[-3000:]}")
        records = folder / "out" / "predictions.jsonl"
        lines = records.read_text().splitlines() if records.is_file() else []
        boxes.append(sum(len(json.loads(r)["detections"]) for r in lines))
        own.append(json.loads((folder / "out" / "summary.json").read_text())["per_second"])
        return wall, len(lines)

    boxes: list[int] = []
    own: list[float] = []  # the command's own frames/s (summary.json: after the model loaded)

    try:
        t1, n1 = run(one_frame, "one")
        tn, n = run(video, "all")
    except RuntimeError as e:
        return {"available": False, "reason": str(e)}
    return {"available": True, "command": f"python predict.py source=<video> checkpoint=<ckpt> batch={batch}",
            "wall_s": round(tn, 2), "records": n, "fps_wall": round(n / tn, 2),
            "steady_fps": round((n - n1) / (tn - t1), 2) if tn > t1 else None,
            "one_frame_wall_s": round(t1, 2), "summary_fps": own[-1],
            "boxes_per_frame": round(boxes[-1] / max(n, 1), 1)}  # fmt: skip


def interleaved(
    model: Callable[[], float], command: Callable[[], dict], rounds: int
) -> dict[str, Any]:
    """(f): the model alone and the command in turns, ``M C M C ... M``: each command run over
    the mean of the model-alone runs either side of it (on a shared machine the speed of both
    drifts by up to 2x within minutes), and the median of those ratios. A command run that
    fails ends the rounds: the row holds its reason and the rounds measured before it
    (``median_ratio`` None when there are none)."""
    models: list[float] = [model()]
    runs: list[dict] = []
    failed = None
    for _ in range(rounds):
        run = command()
        if not run.get("available", True):
            failed = run.get("reason", "the command failed")
            break
        runs.append(run)
        models.append(model())
    ratios = [r["summary_fps"] / ((a + b) / 2) for r, a, b in zip(runs, models, models[1:])]
    return {"available": failed is None, **({"reason": failed} if failed else {}),
            "model_only_fps": models, "command_summary_fps": [r["summary_fps"] for r in runs],
            "command_steady_fps": [r["steady_fps"] for r in runs],
            "ratios": [round(x, 3) for x in ratios],
            "median_ratio": round(statistics.median(ratios), 3) if ratios else None,
            "boxes_per_frame": runs[-1]["boxes_per_frame"] if runs else None}  # fmt: skip


def build(tmp: Path, size: int | None, checkpoint: Path | None) -> tuple[Path, Path, Path, str]:
    """The model as darknet cfg + weights and as a project checkpoint, and its description:
    ``checkpoint``'s (a trained detector; at ``size`` when given, else its own), else
    yolov4-tiny with random weights at ``size`` (default 416)."""
    if checkpoint is not None:
        loaded = load_checkpoint(checkpoint)
        model, ckpt = loaded.model.eval(), checkpoint
        pre = loaded.preprocess_dict()
        if size is not None and [size, size] != list(pre["input_size"]):
            pre["input_size"] = [size, size]
            ckpt = save_checkpoint(tmp / checkpoint.name, model, loaded.class_names, pre)
        size = int(pre["input_size"][0])
        about = (f"{checkpoint.name}: {model.config.name}, {model.config.num_classes} classes, "
                 f"{pre['input_size']}, {pre['mode']} resize (OpenCV DNN: stretch)")  # fmt: skip
    else:
        size = size or 416
        torch.manual_seed(0)
        model = spread_head_biases(build_model("yolov4-tiny").eval())
        names = [f"class{i}" for i in range(model.config.num_classes)]
        ckpt = save_checkpoint(tmp / "yolov4-tiny.pt", model, names,
                               {"input_size": [size, size], "mode": "stretch"})  # fmt: skip
        about = (f"yolov4-tiny, 80 classes, {size}x{size}, random weights (head biases "
                 "spread), stretch resize")  # fmt: skip
    cfg, weights = tmp / "model.cfg", tmp / "model.weights"
    cfg.write_text(write_darknet_cfg(model, input_size=(size, size)))
    save_darknet_weights(model, weights)
    return cfg, weights, ckpt, about


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--frames", type=int, default=200)
    parser.add_argument("--width", type=int, default=640)
    parser.add_argument("--height", type=int, default=480)
    parser.add_argument("--size", type=int, default=None,
                        help="network input side (default: 416, or the checkpoint's)")  # fmt: skip
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--skip-ultralytics", action="store_true")
    parser.add_argument("--rounds", type=int, default=3,
                        help="interleaved model-alone / command rounds for the target")  # fmt: skip
    parser.add_argument("--checkpoint", type=Path, default=None,
                        help="a trained checkpoint (realistic detection counts) instead of "
                        "random weights")  # fmt: skip
    add_out_argument(parser, "--name", "predict_sources")
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    cv2.setNumThreads(args.threads)
    load_start = loadavg()
    limit = matmul_gflops()
    openvino = cpu_features()["openvino_capabilities"]
    info = {**machine_info(), "openvino_capabilities": openvino, "threads": args.threads}
    print(f"{info['cpu']} {info['cpu_flags']}, {args.threads} threads: "
          f"matmul {limit:.1f} GFLOP/s; load {load_start}")  # fmt: skip
    rows: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        video = make_video(tmp / "shapes.mp4", args.frames, args.width, args.height)
        one_frame = make_video(tmp / "one.mp4", 1, args.width, args.height)
        cfg, weights, ckpt, about = build(tmp, args.size, args.checkpoint)
        predictor = Predictor.from_checkpoint(ckpt, thresholds={"conf": CONF, "iou": NMS})
        frames = read_frames(video)
        key = f"b{args.batch}_fps"
        command = lambda: predict_command(video, one_frame, ckpt, args.batch, tmp)  # noqa: E731
        steps = [
            ("model_only", lambda: model_only(predictor, frames, args.batch)),
            ("opencv_dnn", lambda: opencv_dnn(cfg, weights, video, predictor.input_size[0])),
            ("predictor_loop", lambda: predictor_loop(predictor, video, args.batch)),
            ("predict_command", command),
        ]
        if not args.skip_ultralytics:
            steps.append(("ultralytics", lambda: ultralytics_loop(video, predictor.input_size[0])))
        steps.append(("interleaved", lambda: interleaved(
            lambda: model_only(predictor, frames, args.batch, (args.batch,))[key], command,
            args.rounds)))  # fmt: skip
        for name, step in steps:
            rows[name] = {**step(), "load": loadavg()}
            print(f"{name}: {rows[name]}", flush=True)
    ratio = rows["interleaved"]["median_ratio"]
    payload = {
        "machine": info,
        "matmul_gflops_per_s": round(limit, 1),
        "load_start": load_start,
        "load_end": loadavg(),
        "note": "the machine is shared: see load_* (1-min load averages) next to its cores",
        "video": {
            "frames": len(frames),
            "width": args.width,
            "height": args.height,
            "fps": FPS,
            "codec": "mp4v",
        },  # fmt: skip
        "model": f"{about}; conf {CONF}, NMS {NMS}",
        "batch": args.batch,
        "results": rows,
        "target": "the command's own frames/s (summary.json) >= 0.9 x model_only at the same "
        "batch: the median over the interleaved rounds of each run over the model-alone runs "
        "either side of it",
        "command_over_model_only": None if ratio is None else round(ratio, 3),
        "target_met": None if ratio is None else ratio >= 0.9,
    }
    print(f"wrote {save(args.name, payload)}")


if __name__ == "__main__":
    main()
