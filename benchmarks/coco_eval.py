"""Validation's COCO evaluation at COCO-val scale, phase by phase, pycocotools against
faster-coco-eval in the same run.

    python benchmarks/coco_eval.py                      # 5,000 images, ~36,000 boxes, <= 300 dets each
    python benchmarks/coco_eval.py --images 500 --out coco_eval_small

Nothing is downloaded: the ground truth and the detections are generated with COCO val2017's
shape. Ground truth: 5,000 images of 640 px on the long side, ~7.3 boxes per image (1% of the
images empty, 1% of the boxes ``iscrowd``), 80 classes under COCO's gapped ids with ``person``
~30% of the boxes, box sizes log-normal so that ~41% / 34% / 25% are small / medium / large
(COCO's 32^2 and 96^2 area limits). Detections, as validation hands them to
:class:`~yolov4.evaluation.CocoEvaluator` (per image ``(K, 6)`` float32 ``[x1, y1, x2, y2,
score, class_index]`` in original pixels, conf >= 0.001, at most 300 per image by score, as
``module.val_postprocess.max_det``): each box found with probability 0.85, jittered by 2-15% of its size,
8% of them under a wrong class, 30% with a lower-scoring duplicate; then false positives at low
scores (0.001 + exponential, mean 0.03) up to 100-300 detections per image.

Phases timed (seconds, one run each; ``--repeats`` for more):
    to_coco       CocoEvaluator.update + the results list of compute() (detections_to_coco)
    load_res      COCO.loadRes on copies of the results (+ faster-coco-eval's own gt index)
    evaluate      COCOeval.evaluate (faster-coco-eval: per-image matching and accumulation in C++)
    accumulate    COCOeval.accumulate (faster-coco-eval: the work is already done in evaluate)
    summarize     COCOeval.summarize, the 12 numbers
    per_class     per-class AP and AP50 from the precision array
    end_to_end    evaluate_coco(...) as validation calls it (checks that the phases add up)
and, read-only (owned elsewhere, reported here), the analyses written beside metrics.json:
    analyze_detections   confusion matrix, P/R/F1 curves (yolov4.evaluation.analysis)
    darknet_map          darknet's `detector map` report (yolov4.evaluation.darknet_map)
    error_breakdown      the TIDE-style error breakdown (yolov4.evaluation.tide)
The numbers of the two backends are compared (max abs difference of the 12 numbers, per-class
AP and the precision array). Prints a table; writes benchmarks/results/coco_eval.json with the
machine, its matmul GFLOP/s measured in the same run, and the load average before and after.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import io
import os
import time
from collections.abc import Callable
from importlib.metadata import version
from typing import Any

import numpy as np
import torch
from common import add_out_argument, machine_info, matmul_gflops, save
from pycocotools.coco import COCO

from yolov4.evaluation.analysis import analyze_detections
from yolov4.evaluation.coco import (
    COCO_BACKENDS,
    CocoEvaluator,
    _summarize,
    cocoeval,
    evaluate_coco,
    per_class_ap,
)
from yolov4.evaluation.darknet_map import darknet_map
from yolov4.evaluation.tide import error_breakdown

# COCO's 80 category ids: 1..90 without the 10 ids the 2017 release never used
COCO_IDS = [i for i in range(1, 91) if i not in {12, 26, 29, 30, 45, 66, 68, 69, 71, 83}]
PERSON_SHARE = 0.30  # val2017: 11,004 of 36,781 boxes are `person`
BOXES_PER_IMAGE = 7.3  # val2017: 36,781 boxes / 5,000 images
EMPTY_IMAGES = 0.01  # val2017: 48 images without a box
CROWD_SHARE = 0.01  # share of boxes with iscrowd=1
# ln(sqrt(area)) ~ N(MU, SIGMA): P(area < 32^2) = 0.41, P(area < 96^2) = 0.75 (val2017's
# small / medium / large split 41% / 34% / 25%)
LOG_SIDE_MU, LOG_SIDE_SIGMA = 3.743, 1.217
MAX_DET = 300  # module.val_postprocess.max_det
CONF = 0.001  # module.val_postprocess.conf
# what evaluate.py / train.py compute beside metrics.json (write_analysis), default settings
ANALYSES = {
    "analyze_detections": analyze_detections,  # confusion matrix, P/R/F1 curves
    "darknet_map": darknet_map,  # darknet's `detector map` report
    "error_breakdown": error_breakdown,  # TIDE-style breakdown
}
IMAGE_SHAPES = [(640, 480), (640, 427), (640, 640), (640, 360), (480, 640), (427, 640)]


def _boxes(rng: np.random.Generator, n: int, width: int, height: int) -> np.ndarray:
    """``(n, 4)`` xywh inside the image, COCO-like sizes and aspect ratios."""
    side = np.exp(rng.normal(LOG_SIDE_MU, LOG_SIDE_SIGMA, n))
    ratio = np.exp(rng.normal(0.0, 0.5, n))
    w = np.clip(side * np.sqrt(ratio), 2.0, width)
    h = np.clip(side / np.sqrt(ratio), 2.0, height)
    x, y = rng.uniform(0, width - w), rng.uniform(0, height - h)
    return np.stack([x, y, w, h], 1)


def make_data(num_images: int, seed: int = 0) -> tuple[COCO, dict[int, torch.Tensor]]:
    """The ground truth (pycocotools ``COCO``, as ``DataModule.val_coco``) and per image id the
    ``(K, 6)`` float32 detections in original pixels with contiguous class indices."""
    rng = np.random.default_rng(seed)
    num_classes = len(COCO_IDS)
    others = 1.0 / np.arange(2, num_classes + 1) ** 0.7  # a Zipf-like tail for the other 79
    freq = np.concatenate([[PERSON_SHARE], others / others.sum() * (1 - PERSON_SHARE)])
    images, anns, dets = [], [], {}
    for image_id in range(1, num_images + 1):
        width, height = IMAGE_SHAPES[rng.integers(len(IMAGE_SHAPES))]
        images.append(
            {"id": image_id, "width": width, "height": height, "file_name": f"{image_id}.jpg"}
        )
        n = (
            0
            if rng.random() < EMPTY_IMAGES
            else 1 + rng.negative_binomial(1.5, 1.5 / (1.5 + BOXES_PER_IMAGE - 1))
        )
        gt = _boxes(rng, n, width, height)
        gt_cls = rng.choice(num_classes, n, p=freq)
        crowd = rng.random(n) < CROWD_SHARE
        for box, c, is_crowd in zip(gt, gt_cls, crowd):
            anns.append(
                {
                    "id": len(anns) + 1,
                    "image_id": image_id,
                    "category_id": COCO_IDS[c],
                    "bbox": box.tolist(),
                    "area": float(box[2] * box[3]),
                    "iscrowd": int(is_crowd),
                }
            )
        # found boxes: jittered by 2-15% of their size, some under a wrong class
        found = rng.random(n) < 0.85
        hit, hit_cls = gt[found], gt_cls[found].copy()
        swap = rng.random(len(hit)) < 0.08
        hit_cls[swap] = rng.choice(num_classes, int(swap.sum()), p=freq)
        dup = rng.random(len(hit)) < 0.30
        rows = [hit, hit[dup]]
        cls = [hit_cls, hit_cls[dup]]
        scores = [rng.beta(4, 2, len(hit)), rng.beta(4, 2, int(dup.sum())) * rng.uniform(0.2, 0.8)]
        jitter = np.concatenate(rows)
        sigma = rng.uniform(0.02, 0.15, (len(jitter), 1))
        jitter = jitter + rng.normal(0, 1, jitter.shape) * sigma * jitter[:, [2, 3, 2, 3]]
        # false positives at low scores up to 100-300 detections in all
        n_fp = max(int(rng.integers(100, MAX_DET + 1)) - len(jitter), 0)
        fp = _boxes(rng, n_fp, width, height)
        xywh = np.concatenate([jitter, fp])
        xywh[:, 2:] = np.maximum(xywh[:, 2:], 1.0)
        score = np.concatenate([*scores, CONF + rng.exponential(0.03, n_fp)])
        score = np.clip(score, CONF, 0.999)
        c = np.concatenate([*cls, rng.choice(num_classes, n_fp, p=freq)])
        keep = np.argsort(-score, kind="stable")[:MAX_DET]
        x1y1 = xywh[keep, :2]
        det = np.concatenate(
            [x1y1, x1y1 + xywh[keep, 2:], score[keep, None], c[keep, None].astype(float)], 1
        )
        dets[image_id] = torch.from_numpy(det).float()
    coco = COCO()
    coco.dataset = {
        "images": images,
        "annotations": anns,
        "categories": [{"id": c, "name": f"class{c}"} for c in COCO_IDS],
    }
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    return coco, dets


def timed(fn: Callable[[], Any]) -> tuple[Any, float]:
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


def run_backend(
    coco: COCO, results: list[dict[str, Any]], ids: list[int], names: list[str], backend: str
) -> tuple[dict[str, float], Any]:
    """Seconds of each phase of :func:`evaluate_coco` with ``backend``, and the evaluated
    ``COCOeval``."""
    ev, t_load = timed(lambda: cocoeval(coco, results, ids, backend))
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints its progress
        _, t_eval = timed(ev.evaluate)
        _, t_acc = timed(ev.accumulate)
    _, t_sum = timed(lambda: _summarize(ev, backend))
    per_class, t_cls = timed(lambda: per_class_ap(ev.eval["precision"], names))
    ev.per_class = per_class
    times = {
        "load_res": t_load,
        "evaluate": t_eval,
        "accumulate": t_acc,
        "summarize": t_sum,
        "per_class": t_cls,
    }
    return times, ev


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--images", type=int, default=5000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--repeats", type=int, default=1, help="runs per backend (min taken)")
    parser.add_argument("--backends", nargs="+", default=list(COCO_BACKENDS))
    parser.add_argument("--skip-analysis", action="store_true")
    add_out_argument(parser, "--out", "coco_eval")
    args = parser.parse_args()

    load_before = [round(v, 2) for v in os.getloadavg()]
    gflops = matmul_gflops()
    (coco, dets), t_gen = timed(lambda: make_data(args.images, args.seed))
    cat_ids = sorted(coco.getCatIds())
    names = [coco.cats[c]["name"] for c in cat_ids]
    anns = coco.dataset["annotations"]
    areas = np.array([a["area"] for a in anns])
    data = {
        "images": args.images,
        "gt_boxes": len(anns),
        "crowd_boxes": int(sum(a["iscrowd"] for a in anns)),
        "images_without_boxes": sum(1 for i in coco.getImgIds() if not coco.imgToAnns[i]),
        "small_medium_large": [
            round(float(np.mean(areas < 32**2)), 3),
            round(float(np.mean((areas >= 32**2) & (areas < 96**2))), 3),
            round(float(np.mean(areas >= 96**2)), 3),
        ],
        "detections": int(sum(len(d) for d in dets.values())),
        "max_detections_per_image": int(max(len(d) for d in dets.values())),
        "generate_s": round(t_gen, 2),
    }
    print(f"data: {data}")

    # to_coco: what validation does per batch (update) and at the epoch's end (compute's list)
    def to_coco() -> list[dict[str, Any]]:
        ev = CocoEvaluator(coco, COCO_IDS, names)
        for image_id, det in dets.items():
            ev.update([det], [image_id])
        per_image = ev.gather()
        return [r for i in sorted(per_image) for r in per_image[i]]

    t_to_coco = []
    for _ in range(args.repeats):
        results, t = timed(to_coco)
        t_to_coco.append(t)
    ids = sorted(coco.getImgIds())

    backends: dict[str, dict[str, Any]] = {}
    evals = {}
    for backend in args.backends:
        runs = []
        for _ in range(args.repeats):
            gc.collect()
            times, ev = run_backend(coco, results, ids, names, backend)
            runs.append(times)
        best = {k: min(r[k] for r in runs) for k in runs[0]}
        gc.collect()
        _, t_e2e = timed(lambda b=backend: evaluate_coco(coco, results, ids, None, b))
        best = {"to_coco": min(t_to_coco), **best}
        best["total_phases"] = sum(best.values())
        best["end_to_end"] = t_e2e + min(t_to_coco)
        backends[backend] = {k: round(v, 3) for k, v in best.items()}
        evals[backend] = ev
        print(f"{backend}: {backends[backend]}")

    parity = None
    if len(evals) == 2:
        ref, fast = evals["pycocotools"], evals["faster_coco_eval"]
        parity = {
            "stats_max_abs_diff": float(np.max(np.abs(np.asarray(ref.stats) - fast.stats[:12]))),
            "per_class_max_abs_diff": max(
                abs(ref.per_class[n][k] - fast.per_class[n][k])
                for n in names
                for k in ("AP", "AP50")
            ),
            "precision_max_abs_diff": float(
                np.max(np.abs(ref.eval["precision"] - fast.eval["precision"]))
            ),
            "mAP": float(ref.stats[0]),
            "mAP50": float(ref.stats[1]),
        }
        print(f"parity: {parity}")
        del ref, fast
    del evals
    gc.collect()

    analysis = None
    if not args.skip_analysis:
        analysis = {}
        for name, fn in ANALYSES.items():  # read-only use: reported, not tuned here
            gc.collect()
            try:
                _, t = timed(lambda fn=fn: fn(coco, results, image_ids=ids))
                analysis[name] = round(t, 3)
            except Exception as e:  # an analysis in flux must not cost the COCOeval figures
                analysis[name] = f"failed: {type(e).__name__}: {e}"
            print(f"analysis {name}: {analysis[name]}")

    load_after = [round(v, 2) for v in os.getloadavg()]
    phases = list(backends[args.backends[0]])
    print(f"\n{'phase':<14}" + "".join(f"{b:>18}" for b in backends))
    for p in phases:
        print(f"{p:<14}" + "".join(f"{backends[b][p]:>17.2f}s" for b in backends))
    speedup = None
    if len(backends) == 2:
        speedup = backends["pycocotools"]["end_to_end"] / backends["faster_coco_eval"]["end_to_end"]
        print(f"end-to-end speed-up: {speedup:.1f}x")
    for name, t in (analysis or {}).items():
        print(f"{name:<20} {t:.2f}s" if isinstance(t, float) else f"{name:<20} {t}")
    print(f"load average before {load_before}, after {load_after}; matmul {gflops:.0f} GFLOP/s")

    payload = {
        "machine": {
            **machine_info(),
            "matmul_gflops": round(gflops, 1),
            "load_average_1_5_15_before": load_before,
            "load_average_1_5_15_after": load_after,
            "under_load": max(load_before[0], load_after[0]) > 1.5,
            "pycocotools": version("pycocotools"),
            "faster_coco_eval": version("faster-coco-eval"),
        },
        "data": data,
        "repeats": args.repeats,
        "seconds": backends,
        "end_to_end_speedup": round(speedup, 2) if speedup else None,
        "parity": parity,
        "analysis": analysis,
    }
    print(f"wrote {save(args.out, payload)}")


if __name__ == "__main__":
    main()
