"""Images/s of the training data pipelines on the same files: this project's (fused and the
albumentations pipeline it replaced) and, when it is importable, ultralytics' YOLODataset.

    python benchmarks/dataloader.py                          # 608 and 416, 0/1/2 workers, 5 rounds
    python benchmarks/dataloader.py --sizes 608 --workers 0 --rounds 1 --images 200

Pipelines (darknet's recipe, ``configs/augment/darknet.yaml``, at a fixed size: multi-scale off):

    fused        this project: images resized once at decode, mosaic slices pasted into one
                 canvas, scale/translate/flip in one warpAffine, HSV; uint8 batches (the
                 training device scales them: YoloModule.on_after_batch_transfer)
    legacy       the albumentations pipeline the fused one replaced: A.Mosaic + A.Affine +
                 HSV + flip (tests/data/legacy_pipeline.py, the tests' reference) and the
                 float32 /255 in the collate, inside the worker
    ultralytics  ultralytics' YOLODataset (mosaic=1.0, scale=0.3 (= jitter [0.7, 1.3]),
                 translate=0.1, fliplr=0.5, darknet's HSV gains, no mixup/copy-paste/rotation;
                 its own albumentations extras at p=0.01) through a plain DataLoader with its
                 collate_fn: uint8 batches, scaled on the device by its trainer

Same 1,000 generated COCO-like JPEGs (longest side 640; YOLO txt labels written beside them for
ultralytics), batch 16, OpenCV and torch single-threaded in every process, images/s over
``--batches`` batches after one warm-up batch (worker start), pipelines interleaved within each
round, medians over ``--rounds``. Prints a table and writes benchmarks/results/dataloader.json
with the machine, its matmul GFLOP/s and load average measured in the same run.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import cv2
import torch
from common import add_out_argument, machine_info, matmul_gflops, save
from torch.utils.data import DataLoader

from yolov4.core.preprocess import PreprocessConfig, batch_to_input
from yolov4.data.datamodule import SyntheticDataModule
from yolov4.data.synthetic import generate_split
from yolov4.data.transforms import AugmentConfig

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the checkout: tests/ importable
from tests.data.legacy_pipeline import LegacyDataset  # noqa: E402

SOURCE_IMAGE_SIZE = 640  # longest side, like COCO's images
NUM_IMAGES = 1000
BATCH_SIZE = 16
DATA_SEED = 0
PIPELINES = ("fused", "legacy", "ultralytics")


def _loadavg() -> list[float]:
    return [float(v) for v in Path("/proc/loadavg").read_text().split()[:3]]


def _single_thread(worker_id: int = 0) -> None:
    cv2.setNumThreads(1)
    torch.set_num_threads(1)


def ours(cache: str, size: int, workers: int, impl: str, num_images: int) -> DataLoader:
    augment = dataclasses.replace(AugmentConfig(), multi_scale=None)
    dm = SyntheticDataModule(
        num_train=num_images,
        num_val=0,
        image_size=SOURCE_IMAGE_SIZE,
        data_seed=DATA_SEED,
        cache_dir=cache,
        input_size=size,
        batch_size=BATCH_SIZE,
        num_workers=workers,
        persistent_workers=False,
        augment=augment,
    )
    dm.setup("fit")
    loader = dm.train_dataloader()
    if impl == "legacy":  # its own samples; uint8 -> float32 / 255 in the collate (worker)
        collate, config, fused = loader.collate_fn, dm.preprocess_config, loader.dataset
        loader = DataLoader(
            LegacyDataset(fused.data, config, augment),
            batch_size=BATCH_SIZE,
            sampler=loader.sampler,
            drop_last=True,
            num_workers=workers,
            collate_fn=lambda samples: batch_to_input(collate(samples), config),
            worker_init_fn=loader.worker_init_fn,
            generator=loader.generator,
        )
    return loader


def write_yolo_labels(split: Path) -> Path:
    """YOLO txt labels (class cx cy w h, normalised) beside ``split/images``; returns images/."""
    labels = split / "labels"
    if not labels.is_dir():
        doc = json.loads((split / "annotations.json").read_text())
        tmp = Path(tempfile.mkdtemp(dir=split))
        cats = {c["id"]: i for i, c in enumerate(doc["categories"])}
        rows: dict[int, list[str]] = {img["id"]: [] for img in doc["images"]}
        sizes = {img["id"]: (img["width"], img["height"]) for img in doc["images"]}
        for a in doc["annotations"]:
            (x, y, w, h), (iw, ih) = a["bbox"], sizes[a["image_id"]]
            rows[a["image_id"]].append(
                f"{cats[a['category_id']]} {(x + w / 2) / iw:.6f} {(y + h / 2) / ih:.6f} "
                f"{w / iw:.6f} {h / ih:.6f}"
            )
        for img in doc["images"]:
            stem = Path(img["file_name"]).stem
            (tmp / f"{stem}.txt").write_text("\n".join(rows[img["id"]]) + "\n")
        tmp.rename(labels)
    return split / "images"


def ultralytics_loader(images: Path, names: list[str], size: int, workers: int) -> DataLoader:
    from ultralytics.cfg import get_cfg
    from ultralytics.data.dataset import YOLODataset

    hyp = get_cfg(
        overrides={
            "mosaic": 1.0,
            "mixup": 0.0,
            "cutmix": 0.0,
            "copy_paste": 0.0,
            "degrees": 0.0,
            "shear": 0.0,
            "perspective": 0.0,
            "translate": 0.1,
            "scale": 0.3,  # darknet jitter=.3: zoom in [0.7, 1.3]
            "fliplr": 0.5,
            "flipud": 0.0,
            "hsv_h": 0.1,  # darknet hue=.1, saturation=exposure=1.5
            "hsv_s": 0.5,
            "hsv_v": 0.5,
        }
    )
    dataset = YOLODataset(
        img_path=str(images),
        imgsz=size,
        batch_size=BATCH_SIZE,
        augment=True,
        hyp=hyp,
        rect=False,
        cache=False,
        single_cls=False,
        stride=32,
        pad=0.0,
        prefix="",
        task="detect",
        data={"names": dict(enumerate(names)), "channels": 3},
        fraction=1.0,
    )
    return DataLoader(
        dataset,
        batch_size=BATCH_SIZE,
        shuffle=True,
        drop_last=True,
        num_workers=workers,
        collate_fn=YOLODataset.collate_fn,
        worker_init_fn=_single_thread,
        generator=torch.Generator().manual_seed(0),
    )


def images_per_second(loader: DataLoader, batches: int, size: int) -> float:
    """Wall-clock images/s over ``batches`` batches after one warm-up batch."""
    it = iter(loader)
    next(it)  # warm-up: worker start, first decodes
    start, done = time.perf_counter(), 0
    while done < batches:
        try:
            batch = next(it)
        except StopIteration:
            it = iter(loader)
            continue
        images = batch["img"] if "img" in batch else batch["images"]
        assert images.shape[-1] == size, images.shape
        done += 1
    return done * BATCH_SIZE / (time.perf_counter() - start)


def device_step_ms(cache: str, size: int, num_images: int) -> float:
    """CPU ms per batch of the step moved out of the workers (uint8 → float32 / 255), for
    reference: on a GPU it runs on the device."""
    batch = next(iter(ours(cache, size, 0, "fused", num_images)))
    config = PreprocessConfig(input_size=(size, size))
    start, n = time.perf_counter(), 10
    for _ in range(n):
        batch_to_input(batch, config)
    return (time.perf_counter() - start) / n * 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[608, 416])
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--pipelines", nargs="+", default=list(PIPELINES), choices=PIPELINES)
    parser.add_argument("--batches", type=int, default=20, help="timed batches per measurement")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--images", type=int, default=NUM_IMAGES)
    parser.add_argument("--cache", default=None, help="where the JPEGs are generated (kept)")
    add_out_argument(parser, "--out", "dataloader")
    args = parser.parse_args()
    _single_thread()
    pipelines = list(args.pipelines)
    if "ultralytics" in pipelines:
        try:
            import ultralytics

            ultra_version = ultralytics.__version__
            _single_thread()  # (ultralytics sets OpenCV's threads on import)
        except ImportError:
            print("ultralytics is not importable: measuring this project's pipelines only")
            pipelines.remove("ultralytics")
            ultra_version = None
    info = machine_info()
    load_start = _loadavg()
    gflops = matmul_gflops(n=1024)
    cache = args.cache or tempfile.mkdtemp(prefix="dataloader-bench-")
    split = generate_split(cache, "train", args.images, SOURCE_IMAGE_SIZE, DATA_SEED)
    names = [c["name"] for c in json.loads((split / "annotations.json").read_text())["categories"]]
    images = write_yolo_labels(split) if "ultralytics" in pipelines else None
    rates: dict[tuple[str, int, int], list[float]] = {}
    for r in range(args.rounds):
        for size in args.sizes:
            for workers in args.workers:
                for name in pipelines:
                    if name == "ultralytics":
                        loader = ultralytics_loader(images, names, size, workers)
                    else:
                        loader = ours(cache, size, workers, name, args.images)
                    ips = images_per_second(loader, args.batches, size)
                    rates.setdefault((name, size, workers), []).append(ips)
                    print(f"round {r} {name:11s} {size:4d} px workers {workers}: {ips:7.1f} img/s")
    rows: list[dict[str, Any]] = []
    for (name, size, workers), values in rates.items():
        med = statistics.median(values)
        rows.append(
            {
                "pipeline": name,
                "size": size,
                "workers": workers,
                "images_per_s": round(med, 1),
                "images_per_s_per_worker": round(med / max(workers, 1), 1),
                "rounds": [round(v, 1) for v in values],
            }
        )
    print(f"\nmedians of {args.rounds} rounds, images/s per worker (0 workers: the main process)")
    print("| size, workers | " + " | ".join(pipelines) + " | fused / ultralytics |")
    for size in args.sizes:
        for workers in args.workers:
            med = {p: statistics.median(rates[(p, size, workers)]) for p in pipelines}
            per = {p: v / max(workers, 1) for p, v in med.items()}
            ratio = f"{med['fused'] / med['ultralytics']:.2f}x" if "ultralytics" in med else "-"
            cells = " | ".join(f"{per[p]:.1f}" for p in pipelines)
            print(f"| {size}, {workers} | {cells} | {ratio} |")
    load_end = _loadavg()
    steps = {size: round(device_step_ms(cache, size, args.images), 2) for size in args.sizes}
    print(f"uint8 -> float32 on this CPU (the device's step): {steps} ms per batch of {BATCH_SIZE}")
    print(
        f"reference: float32 matmul {gflops:.1f} GFLOP/s (1 thread); load {load_start} -> {load_end}"
    )
    path = save(
        args.out,
        {
            "machine": info,
            "matmul_gflops_1thread": round(gflops, 1),
            "loadavg_start": load_start,
            "loadavg_end": load_end,
            "note": "2-core machine shared with other jobs: see loadavg",
            "batch_size": BATCH_SIZE,
            "num_images": args.images,
            "source_image_size": SOURCE_IMAGE_SIZE,
            "timed_batches": args.batches,
            "rounds": args.rounds,
            "ultralytics": ultra_version if "ultralytics" in pipelines else None,
            "opencv": cv2.__version__,
            "cpu_count": os.cpu_count(),
            "device_step_ms_per_batch_on_cpu": steps,
            "results": rows,
        },
    )
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
