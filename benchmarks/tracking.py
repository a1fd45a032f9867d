"""Tracker libraries against each other: MOTA / IDF1 / ID switches and ms per frame.

The sequence is :func:`yolov4.data.synthetic_video.make_tracking_video` (crossings, an
occlusion, border entries and exits, a shape that stops) at 2x (640 x 480, 120 frames) and the
detections are its ground truth with box noise (4% of the side), objects under 30% visible
missed and 10% of the rest dropped at random, over several noise seeds. Metrics from
:func:`yolov4.evaluation.mot.mot_metrics` (motmetrics). Each candidate is a library's tracker
with its defaults except ``frame_rate`` (25) and, where a library has one, a new-track score
threshold low enough for the detections' scores (0.6 to 0.95).

    python benchmarks/tracking.py            # candidates importable in this environment
    python benchmarks/tracking.py --merge    # add to benchmarks/results/tracking.json
    python benchmarks/tracking.py --only trackers/sort boxmot/ocsort   # these rows, merged
    python benchmarks/tracking.py --checkpoint runs/x/weights/best.pt   # a trained detector
    python benchmarks/tracking.py --checkpoint ... --save-as tracking_trained_epyc   # another file

``--checkpoint``: the sequence is written to an mp4 and run through ``python predict.py
source=<video.mp4> checkpoint=... [track=<name>]`` (the user's command), once without tracking
for the detector's own recall and precision at IoU 0.5 (class-agnostic, per frame, against the
ground-truth boxes; at several score thresholds, from ``--conf``), then once per
``configs/tracker`` config as shipped (``track=<name>``, with predict.py's conf under tracking);
MOTA / IDF1 / ID switches from each run's ``predictions.jsonl``. Saved under the
``"trained_model"`` key of the results file, the other keys kept. ``--tracker-score 0.2``: also
each tracker with its score thresholds (``SCORE_KEYS`` it has) at 0.2, for a detector whose
scores stay under the shipped ones.

A run of some candidates (``--only``) replaces their rows and keeps the others, since some
need an environment of their own to run again (below); a run without ``--only`` or ``--merge``
writes the file anew, and a run in which no candidate's library is installed writes nothing.
Candidates whose library is not installed are listed as such. boxmot's dependencies
(opencv-python, timm, huggingface-hub, gdown, pyarrow, pandas<3) do not fit the project's
environment, so the saved run is from a virtual environment created with
``--system-site-packages`` over it, with boxmot installed there: every candidate in one process.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import add_out_argument, machine_info, matmul_gflops, result_path, save  # noqa: E402

from yolov4.data.synthetic_video import (  # noqa: E402
    make_tracking_video,
    noisy_detections,
    write_video,
)
from yolov4.evaluation.mot import mot_metrics  # noqa: E402
from yolov4.inference.tracking import TRACKER_KEYS  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SCORE_KEYS = ("track_activation_threshold", "high_conf_det_threshold")

FPS = 25
SEEDS = (0, 1, 2, 3, 4)

# name -> () -> step(boxes, scores, class_ids, frame) -> (ids, boxes)
Step = Callable[[np.ndarray, np.ndarray, np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]


def _trackers(kind: str) -> Callable[[], Step]:
    def make() -> Step:
        import supervision as sv
        import trackers

        cls = {
            "bytetrack": trackers.ByteTrackTracker,
            "ocsort": trackers.OCSORTTracker,
            "botsort": trackers.BoTSORTTracker,
            "sort": trackers.SORTTracker,
        }[kind]
        extra = {"enable_cmc": False} if kind == "botsort" else {}
        if kind in ("bytetrack", "botsort", "sort"):
            extra["track_activation_threshold"] = 0.5
        tracker = cls(frame_rate=FPS, **extra)

        def step(boxes, scores, class_ids, frame):
            dets = sv.Detections(xyxy=boxes, confidence=scores, class_id=class_ids)
            out = tracker.update(dets)
            keep = out.tracker_id >= 0
            return out.tracker_id[keep], out.xyxy[keep]

        return step

    return make


def _boxmot(kind: str) -> Callable[[], Step]:
    def make() -> Step:
        import boxmot

        if kind == "bytetrack":
            tracker = boxmot.ByteTrack(frame_rate=FPS, track_thresh=0.5)
        elif kind == "ocsort":
            tracker = boxmot.OcSort()
        else:
            tracker = boxmot.BotSort(frame_rate=FPS, use_cmc=False, use_embeddings=False)

        def step(boxes, scores, class_ids, frame):
            dets = np.concatenate([boxes, scores[:, None], class_ids[:, None]], 1)
            out = np.asarray(tracker.update(dets.astype(np.float32), frame)).reshape(-1, 8)
            return out[:, 4].astype(np.int64), out[:, :4]

        return step

    return make


def _supervision() -> Step:
    import supervision as sv

    tracker = sv.ByteTrack(frame_rate=FPS)  # not in supervision 0.31 (see ``trackers``)

    def step(boxes, scores, class_ids, frame):
        out = tracker.update_with_detections(
            sv.Detections(xyxy=boxes, confidence=scores, class_id=class_ids)
        )
        return out.tracker_id, out.xyxy

    return step


CANDIDATES = {
    "supervision/bytetrack": _supervision,
    **{f"trackers/{k}": _trackers(k) for k in ("bytetrack", "ocsort", "botsort", "sort")},
    **{f"boxmot/{k}": _boxmot(k) for k in ("bytetrack", "ocsort", "botsort")},
}


def _version(name: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(name)
    except PackageNotFoundError:
        return None


def run_candidate(make: Callable[[], Step], video, seeds) -> dict:
    runs, ms = [], []
    truth = [(gt.ids, gt.boxes) for gt in video.truth]
    for seed in seeds:
        step = make()
        hyp = []
        dets = noisy_detections(video.truth, seed=seed)
        start = time.perf_counter()
        for frame, (boxes, scores, class_ids) in zip(video.frames, dets):
            hyp.append(step(boxes, scores, class_ids, frame))
        ms.append((time.perf_counter() - start) * 1000 / len(dets))
        runs.append(mot_metrics(truth, hyp))
    keys = ("idf1", "mota", "num_switches")
    out = {k: round(statistics.mean(r[k] for r in runs), 4) for k in keys}
    out["idf1_min"] = round(min(r["idf1"] for r in runs), 4)
    out["ms_per_frame"] = round(statistics.median(ms), 3)
    return out


def _predict(
    video: Path,
    checkpoint: Path,
    out: Path,
    conf: float | None,
    track: str | None,
    score: float | None,
) -> list:
    """``python predict.py`` on ``video``: each frame's detections, in frame order. ``conf``
    None: predict.py's own default. ``score``: the tracker's score thresholds (the keys of
    ``SCORE_KEYS`` it has) set to it."""
    cmd = [sys.executable, str(ROOT / "predict.py"), f"source={video}", f"checkpoint={checkpoint}"]
    cmd += [f"output={out}", "save=false", "progress=false"]
    cmd += [] if conf is None else [f"conf={conf}"]
    if track and score is not None:
        keys = [k for k in SCORE_KEYS if k in TRACKER_KEYS[track]]
        cmd += [f"tracker={track}", *(f"tracker.{k}={score}" for k in keys)]
    elif track:
        cmd.append(f"track={track}")
    subprocess.run(cmd, check=True, cwd=ROOT, capture_output=True, text=True)
    lines = (out / "predictions.jsonl").read_text().splitlines()
    records = sorted((json.loads(line) for line in lines), key=lambda r: r["frame"])
    return [r["detections"] for r in records]


def _box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.clip(rb - lt, 0, None).prod(-1)
    area = lambda x: (x[:, 2:] - x[:, :2]).prod(-1)  # noqa: E731
    return inter / np.maximum(area(a)[:, None] + area(b)[None, :] - inter, 1e-12)


def detector_pr(truth, frames: list, threshold: float, min_iou: float = 0.5) -> dict:
    """Recall and precision of the detections scoring at least ``threshold``: each frame's
    detections, best score first, greedily matched to an unmatched ground-truth box with IoU >=
    ``min_iou`` (any class); ``class_correct``: the matched share with the right class."""
    tp = fp = gt_total = right = 0
    for gt, dets in zip(truth, frames):
        dets = sorted((d for d in dets if d["score"] >= threshold), key=lambda d: -d["score"])
        gt_total += len(gt.boxes)
        free = np.ones(len(gt.boxes), bool)
        boxes = np.array([d["box"] for d in dets], np.float64).reshape(-1, 4)
        iou = _box_iou(boxes, gt.boxes.astype(np.float64)) if len(gt.boxes) else None
        for k, d in enumerate(dets):
            j = -1 if iou is None else int(np.argmax(np.where(free, iou[k], -1)))
            if j >= 0 and free[j] and iou[k, j] >= min_iou:
                free[j] = False
                tp += 1
                right += int(d["class_id"] == gt.class_ids[j])
            else:
                fp += 1
    return {
        "threshold": threshold,
        "recall": round(tp / max(gt_total, 1), 4),
        "precision": round(tp / max(tp + fp, 1), 4),
        "class_correct": round(right / max(tp, 1), 4),
    }


def run_trained(checkpoint: Path, video, conf: float, score: float | None = None) -> dict:
    """The trained detector on the sequence as an mp4: its recall / precision, then each
    ``configs/tracker`` config's MOT metrics on its detections (``python predict.py``); with
    ``score``, also each with its score thresholds at ``score`` (``"trackers_score_<score>"``)."""
    truth = [(gt.ids, gt.boxes) for gt in video.truth]
    metrics_file = checkpoint.parent.parent / "metrics.json"
    metrics = json.loads(metrics_file.read_text()) if metrics_file.exists() else {}
    row: dict = {"checkpoint": str(checkpoint), "conf": conf, "checkpoint_metrics": metrics}
    names = sorted(p.stem for p in (ROOT / "configs" / "tracker").glob("*.yaml"))
    runs = [(n, None) for n in names] + ([(n, score) for n in names] if score is not None else [])
    with tempfile.TemporaryDirectory() as tmp:
        mp4 = write_video(Path(tmp) / "shapes.mp4", video.frames, fps=FPS)
        frames = _predict(mp4, checkpoint, Path(tmp) / "det", conf, None, None)
        row["detector"] = [
            detector_pr(video.truth, frames, t) for t in sorted({conf, 0.25, 0.5, 0.7})
        ]
        print("detector", row["detector"], flush=True)
        for name, at in runs:
            start = time.perf_counter()
            frames = _predict(mp4, checkpoint, Path(tmp) / f"{name}{at}", None, name, at)
            seconds = time.perf_counter() - start
            hyp = [
                (
                    np.array([d["track_id"] for d in dets if d.get("track_id", -1) > 0], np.int64),
                    np.array(
                        [d["box"] for d in dets if d.get("track_id", -1) > 0], np.float32
                    ).reshape(-1, 4),
                )
                for dets in frames
            ]
            m = {k: round(v, 4) for k, v in mot_metrics(truth, hyp).items()}
            key = "trackers" if at is None else f"trackers_score_{at}"
            row.setdefault(key, {})[name] = {**m, "predict_wall_s": round(seconds, 1)}
            print(f"{key} {name:10s} {row[key][name]}", flush=True)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--merge", action="store_true", help="keep other candidates' results")
    parser.add_argument(
        "--only",
        nargs="+",
        choices=list(CANDIDATES),
        metavar="NAME",
        help="run only these candidates, their rows merged into the saved ones (as --merge); "
        f"names: {', '.join(CANDIDATES)}",
    )
    parser.add_argument("--checkpoint", help="a trained checkpoint: its detections, tracked")
    parser.add_argument(
        "--conf", type=float, default=0.1, help="--checkpoint: the detector rows' lowest threshold"
    )
    parser.add_argument("--tracker-score", type=float, help="--checkpoint: also trackers at this")
    add_out_argument(parser, "--save-as", "tracking", when="--checkpoint: ")
    args = parser.parse_args()
    video = make_tracking_video(scale=2.0, fps=FPS)
    results = {}
    path = args.save_as if args.checkpoint else result_path("tracking")
    previous = json.loads(path.read_text()) if path.exists() else {}
    if args.checkpoint:
        row = run_trained(Path(args.checkpoint), video, args.conf, args.tracker_score)
        row["machine"] = {**machine_info(), "matmul_gflops": round(matmul_gflops(1024, 5), 1)}
        print("saved", save(path, {**previous, "trained_model": row}))
        return
    if args.merge or args.only:
        results = previous.get("candidates", {})
    ran = 0
    for name, make in CANDIDATES.items():
        if args.only and name not in args.only:
            continue
        lib = name.split("/")[0]
        if _version(lib) is None:
            results.setdefault(name, {"status": f"{lib} not installed"})
            continue
        ran += 1
        try:
            row = run_candidate(make, video, SEEDS)
        except Exception as e:  # a candidate's failure is a result, not a crash
            row = {"status": f"failed: {type(e).__name__}: {e}"[:300]}
        row["version"] = _version(lib)
        results[name] = row
        print(f"{name:20s} {row}", flush=True)
    if not ran:
        wanted = ", ".join(args.only or CANDIDATES)
        sys.exit(f"no candidate ran (their libraries are not installed: {wanted}); {path} kept")
    payload = {
        "machine": {**machine_info(), "matmul_gflops": round(matmul_gflops(1024, 5), 1)},
        "sequence": {"frames": len(video.truth), "size": list(video.image_size), "seeds": SEEDS},
        "candidates": results,
        **({"trained_model": previous["trained_model"]} if "trained_model" in previous else {}),
    }
    print("saved", save("tracking", payload))


if __name__ == "__main__":
    main()
