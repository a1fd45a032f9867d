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

Candidates whose library is not installed are listed as such. boxmot's dependencies
(opencv-python, timm, huggingface-hub, gdown, pyarrow, pandas<3) do not fit the project's
environment, so the saved run is from a virtual environment created with
``--system-site-packages`` over it, with boxmot installed there: every candidate in one process.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import RESULTS_DIR, machine_info, matmul_gflops, save  # noqa: E402

from yolov4.data.synthetic_video import make_tracking_video, noisy_detections  # noqa: E402
from yolov4.evaluation.mot import mot_metrics  # noqa: E402

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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--merge", action="store_true", help="keep other candidates' results")
    parser.add_argument("--only", nargs="*", help="candidate names to run")
    args = parser.parse_args()
    video = make_tracking_video(scale=2.0, fps=FPS)
    results = {}
    path = RESULTS_DIR / "tracking.json"
    if args.merge and path.exists():
        results = json.loads(path.read_text())["candidates"]
    for name, make in CANDIDATES.items():
        if args.only and name not in args.only:
            continue
        lib = name.split("/")[0]
        if _version(lib) is None:
            results.setdefault(name, {"status": f"{lib} not installed"})
            continue
        try:
            row = run_candidate(make, video, SEEDS)
        except Exception as e:  # a candidate's failure is a result, not a crash
            row = {"status": f"failed: {type(e).__name__}: {e}"[:300]}
        row["version"] = _version(lib)
        results[name] = row
        print(f"{name:20s} {row}", flush=True)
    payload = {
        "machine": {**machine_info(), "matmul_gflops": round(matmul_gflops(1024, 5), 1)},
        "sequence": {"frames": len(video.truth), "size": list(video.image_size), "seeds": SEEDS},
        "candidates": results,
    }
    print("saved", save("tracking", payload))


if __name__ == "__main__":
    main()
