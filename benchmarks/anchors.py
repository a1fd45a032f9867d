"""Anchors fitted by ``yolov4.anchors`` against darknet's ``detector calc_anchors``, and what
fitted anchors do to a short training run.

    python benchmarks/anchors.py darknet [--darknet /work/dk/oracle/darknet/darknet]
        [--clusters 9 6] [--sizes 416 608] [--seeds 1 2 3]
    python benchmarks/anchors.py map [--epochs 12] [--size 128] [--train 200] [--val 60]
        [--burn-in 10] [--sets bars synthetic] [--anchors cfg auto fit] [--seed 0]
        [--name anchors_map]

``darknet``: darknet's own binary runs ``detector calc_anchors DATA -num_of_clusters K -width S
-height S`` on the label files of two generated sets, the built-in synthetic shapes (train split)
and long thin bars (:func:`bars_dataset`), for every K and S, once per seed. A preloaded shim
(compiled here with the system C compiler) fixes darknet's ``srand(time(0))`` to the seed and
records the k-means centres darknet sorts (it prints them rounded to whole pixels). Per run:
darknet's printed ``avg IoU``, ours from :func:`yolov4.anchors.fit_anchors` (best of 10 starts)
on the same box sizes, and our :func:`yolov4.anchors.avg_best_iou` of darknet's exact centres,
printed as darknet prints it (``%2.2f``), which must equal darknet's line. Writes
benchmarks/results/anchors_darknet.json. Nothing in it depends on the machine's speed (IoU
figures only), so it records no matmul rate.

``map``: ``train.py`` (yolov4-tiny from scratch, ``--epochs`` epochs at ``--size`` px, ``seed``
``--seed``) with the cfg's anchors and with ``model.anchors=auto`` / ``fit`` on the thin bars and
on the built-in shapes, same seed and data; val mAP50, mAP and wall time of each, with the
machine's float32 matmul rate measured first. Writes benchmarks/results/<--name>.json (default
anchors_map.json; or the ``--name`` path).
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
from common import add_out_argument, machine_info, matmul_gflops, save

from yolov4.anchors import avg_best_iou, box_sizes, fit_anchors
from yolov4.data.coco import load_coco
from yolov4.data.problems import ProblemReport
from yolov4.data.records import ImageRecord
from yolov4.data.synthetic import generate_split

DARKNET = "/work/dk/oracle/darknet/darknet"
SHIM = r"""
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
typedef int (*cmp_t)(const void *, const void *);
void qsort(void *base, size_t n, size_t size, cmp_t cmp) {
    static void (*real)(void *, size_t, size_t, cmp_t);
    if (!real) real = (void (*)(void *, size_t, size_t, cmp_t))dlsym(RTLD_NEXT, "qsort");
    real(base, n, size, cmp);
    if (size == 2 * sizeof(float) && getenv("DK_DUMP_CENTERS")) {
        float **rows = (float **)base;  /* calc_anchors sorts the centre rows' pointers */
        for (size_t i = 0; i < n; ++i) fprintf(stderr, "center %.9g %.9g\n", rows[i][0], rows[i][1]);
    }
}
time_t time(time_t *t) {
    time_t v = (time_t)atol(getenv("DK_SEED") ? getenv("DK_SEED") : "1");
    if (t) *t = v;
    return v;
}
"""
BAR_ASPECT = (5.0, 12.0)  # length / thickness of a bar
BAR_LENGTH = (0.25, 0.85)  # bar length as a fraction of the image side


def bars_sample(rng: np.random.Generator, size: int) -> tuple[np.ndarray, np.ndarray]:
    """One image of long thin bars (horizontal or vertical) on a noisy gradient: ``(H, W, 3)``
    uint8 RGB and ``(N, 4)`` float32 xyxy boxes, N in 1..4."""
    h, w = (int(rng.uniform(0.75, 1.0) * size) for _ in range(2))
    c0, c1 = rng.uniform(0, 255, 3), rng.uniform(0, 255, 3)
    t = np.linspace(0, 1, w, dtype=np.float32)[None, :, None]
    img = np.repeat(c0 * (1 - t) + c1 * t, h, axis=0).astype(np.float32)
    boxes = []
    for _ in range(int(rng.integers(1, 5))):
        length = rng.uniform(*BAR_LENGTH) * min(h, w)
        thick = max(2.0, length / rng.uniform(*BAR_ASPECT))
        bw, bh = (length, thick) if rng.uniform() < 0.5 else (thick, length)
        x1, y1 = rng.uniform(0, w - bw), rng.uniform(0, h - bh)
        color = rng.uniform(0, 255, 3)
        if np.abs(color - img[int(y1), int(x1)]).sum() < 90:
            color = 255 - img[int(y1), int(x1)]
        cv2.rectangle(
            img, (int(x1), int(y1)), (int(x1 + bw) - 1, int(y1 + bh) - 1), color.tolist(), -1
        )
        boxes.append([int(x1), int(y1), int(x1 + bw), int(y1 + bh)])
    img += rng.normal(0, 8, img.shape).astype(np.float32)
    return np.clip(img, 0, 255).astype(np.uint8), np.array(boxes, np.float32)


def bars_dataset(root: Path, split: str, num: int, size: int, seed: int) -> list[ImageRecord]:
    """A YOLO txt split of :func:`bars_sample` images under ``root``: ``images/<split>/`` and
    ``labels/<split>/`` (class 0 ``bar``); returns its records."""
    (root / "images" / split).mkdir(parents=True, exist_ok=True)
    (root / "labels" / split).mkdir(parents=True, exist_ok=True)
    records = []
    for i in range(num):
        image, boxes = bars_sample(np.random.default_rng([seed, i]), size)
        name = f"{split}_{i:05d}"
        cv2.imwrite(str(root / "images" / split / f"{name}.jpg"), image[..., ::-1])
        h, w = image.shape[:2]
        records.append(ImageRecord(i + 1, f"{name}.jpg", h, w, boxes, np.zeros(len(boxes), int)))
        write_labels(root / "labels" / split / f"{name}.txt", records[-1])
    return records


def write_labels(path: Path, r: ImageRecord) -> None:
    """darknet's label file: ``class cx cy w h`` normalised."""
    lines = []
    for (x1, y1, x2, y2), c in zip(r.boxes.tolist(), r.labels.tolist(), strict=True):
        cx, cy = (x1 + x2) / 2 / r.width, (y1 + y2) / 2 / r.height
        lines.append(f"{c} {cx:.9g} {cy:.9g} {(x2 - x1) / r.width:.9g} {(y2 - y1) / r.height:.9g}")
    path.write_text("\n".join(lines) + "\n")


def darknet_data(records: list[ImageRecord], root: Path, classes: int) -> Path:
    """An ``obj.data`` whose ``train`` list names one (absent) image per record, its label
    file beside it (``replace_image_to_label``: ``.jpg`` -> ``.txt``)."""
    root.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, r in enumerate(records):
        write_labels(root / f"{i:06d}.txt", r)
        paths.append(str(root / f"{i:06d}.jpg"))
    (root / "train.txt").write_text("\n".join(paths) + "\n")
    (root / "obj.data").write_text(f"classes={classes}\ntrain={root / 'train.txt'}\n")
    return root / "obj.data"


def build_shim(work: Path) -> Path:
    (work / "shim.c").write_text(SHIM)
    out = work / "shim.so"
    subprocess.run(
        ["cc", "-O2", "-shared", "-fPIC", "-o", out, work / "shim.c", "-ldl"], check=True
    )
    return out


def run_darknet(darknet: str, data: Path, k: int, size: int, seed: int, shim: Path) -> dict:
    env = {**os.environ, "LD_PRELOAD": str(shim), "DK_SEED": str(seed), "DK_DUMP_CENTERS": "1"}
    cmd = [darknet, "detector", "calc_anchors", str(data), "-num_of_clusters", str(k)]
    cmd += ["-width", str(size), "-height", str(size)]
    p = subprocess.run(cmd, cwd=data.parent, env=env, capture_output=True, text=True, check=True)
    avg = float(re.search(r"avg IoU = ([\d.]+) %", p.stdout).group(1))
    printed = re.search(r"anchors = (.*)", p.stdout).group(1)
    centers = [[float(a), float(b)] for a, b in re.findall(r"center (\S+) (\S+)", p.stderr)]
    return {"avg_iou_printed": avg, "anchors_printed": printed, "centers": centers[-k:]}


def darknet_main(args: argparse.Namespace) -> None:
    work = Path(tempfile.mkdtemp(prefix="anchors-dk-"))
    shim = build_shim(work)
    coco = generate_split(work / "synthetic", "train", 500, 256, 0)
    sets = {
        "synthetic": load_coco(coco / "annotations.json", coco / "images", True, ProblemReport()),
        "bars": None,
    }
    sets["synthetic"] = sets["synthetic"].records
    sets["bars"] = bars_dataset(work / "bars", "train", 500, 256, 0)
    rows = []
    for name, records in sets.items():
        data = darknet_data(records, work / f"dk-{name}", 4 if name == "synthetic" else 1)
        for size in args.sizes:
            wh = box_sizes(records, (size, size), "stretch")
            for k in args.clusters:
                ours = fit_anchors(wh, k, restarts=10, seed=0)
                for seed in args.seeds:
                    dk = run_darknet(args.darknet, data, k, size, seed, shim)
                    same = avg_best_iou(wh, np.array(dk["centers"], np.float32))
                    row = {
                        "set": name,
                        "boxes": len(wh),
                        "size": size,
                        "clusters": k,
                        "seed": seed,
                        "darknet_avg_iou": dk["avg_iou_printed"],
                        "ours_for_darknet_centers": f"{same:2.2f}",
                        "figure_equal": f"{same:2.2f}" == f"{dk['avg_iou_printed']:2.2f}",
                        "ours_avg_iou": round(ours.avg_iou, 4),
                        "ours_at_least_darknet": round(ours.avg_iou, 2) >= dk["avg_iou_printed"],
                        "darknet_anchors": dk["anchors_printed"],
                        "ours_anchors": ", ".join(f"{a:g},{b:g}" for a, b in ours.anchors),
                    }
                    rows.append(row)
                    print(
                        f"{name:9s} {size} k={k} seed={seed}: darknet {dk['avg_iou_printed']:.2f} "
                        f"(ours for its centres {same:2.2f}) | ours {ours.avg_iou:.2f}"
                    )
    summary = {
        "figure_equal_all": all(r["figure_equal"] for r in rows),
        "ours_at_least_darknet_all": all(r["ours_at_least_darknet"] for r in rows),
    }
    print(summary)
    path = save("anchors_darknet", {"machine": machine_info(), "summary": summary, "rows": rows})
    print(f"wrote {path}")


def train_run(overrides: list[str], out: Path) -> dict:
    """``train.py`` in a child process (one Hydra app per process); its metrics.json."""
    import json

    cmd = [sys.executable, str(Path(__file__).resolve().parents[1] / "train.py")]
    start = time.perf_counter()
    subprocess.run([*cmd, *overrides, f"hydra.run.dir={out}"], check=True)
    metrics = json.loads((out / "metrics.json").read_text())
    return {
        "mAP50": metrics["mAP50"],
        "mAP": metrics["mAP"],
        "seconds": time.perf_counter() - start,
    }


def map_main(args: argparse.Namespace) -> None:
    work = Path(tempfile.mkdtemp(prefix="anchors-map-"))
    bars = work / "bars"
    bars_dataset(bars, "train", args.train, args.size, 1)
    bars_dataset(bars, "val", args.val, args.size, 2)
    common = [
        f"data.input_size=[{args.size},{args.size}]",
        "data.batch_size=16",
        "data.num_workers=0",
        f"optim.burn_in={args.burn_in}",
        "augment.multi_scale=null",
        f"trainer.max_epochs={args.epochs}",
        "trainer.enable_progress_bar=false",
        "trainer.check_val_every_n_epoch=1000",
        "logger=none",
        "export=null",
        f"seed={args.seed}",
    ]
    datasets = {
        "bars": [
            "data=yolo",
            f"data.train.images={bars / 'images' / 'train'}",
            "data.train.names=[bar]",
            f"data.val.images={bars / 'images' / 'val'}",
        ],
        "synthetic": [
            f"data.num_train={args.train}",
            f"data.num_val={args.val}",
            f"data.image_size={args.size}",
            f"data.cache_dir={work / 'synthetic'}",
        ],
    }
    load = os.getloadavg()
    gflops = matmul_gflops()
    rows = []
    for name in args.sets:
        data = datasets[name]
        for anchors in args.anchors:
            extra = [] if anchors == "cfg" else [f"model.anchors={anchors}"]
            result = train_run([*common, *data, *extra], work / f"{name}-{anchors}")
            rows.append({"set": name, "anchors": anchors, **result})
            print(rows[-1])
            payload = {  # saved after every run: a cut-short benchmark keeps what it measured
                "machine": {
                    **machine_info(),
                    "matmul_gflops_per_s": round(gflops, 1),
                    "loadavg_start": load,
                    "loadavg_now": os.getloadavg(),
                },
                "settings": vars(args),
                "rows": rows,
            }
            print(f"wrote {save(args.name, payload)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    dk = sub.add_parser("darknet")
    dk.add_argument("--darknet", default=DARKNET)
    dk.add_argument("--clusters", type=int, nargs="+", default=[9, 6])
    dk.add_argument("--sizes", type=int, nargs="+", default=[416, 608])
    dk.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    mp = sub.add_parser("map")
    mp.add_argument("--epochs", type=int, default=12)
    mp.add_argument("--size", type=int, default=128)
    mp.add_argument("--train", type=int, default=200)
    mp.add_argument("--val", type=int, default=60)
    mp.add_argument("--seed", type=int, default=0, help="train.py's seed (the data stay the same)")
    mp.add_argument("--burn-in", type=int, default=10, help="optim.burn_in (warm-up steps)")
    mp.add_argument("--sets", nargs="+", default=["bars", "synthetic"])
    mp.add_argument(
        "--anchors",
        nargs="+",
        default=["cfg", "auto"],
        help="cfg, auto and/or fit (model.anchors=)",
    )
    add_out_argument(mp, "--name", "anchors_map")
    args = parser.parse_args()
    darknet_main(args) if args.command == "darknet" else map_main(args)


if __name__ == "__main__":
    main()
