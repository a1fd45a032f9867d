"""Images/s of the data pipelines, against the machine's own matmul GFLOP/s.

    python benchmarks/dataloader.py                      # 416 and 608, 0/1/2 workers
    python benchmarks/dataloader.py --sizes 608 --workers 1 --batches 10

Training pipeline = decode + mosaic (4 images) + affine + HSV + flip + collate, darknet's
recipe (configs/augment/darknet.yaml) at a fixed size (multi-scale off, so the size is known).
Validation pipeline = decode + THE preprocess function (letterbox) + collate. Images are
synthetic COCO-like 640 px jpgs generated once into a temp dir. Prints a table and writes
benchmarks/results/dataloader.json.
"""

from __future__ import annotations

import argparse
import dataclasses
import tempfile
import time

import torch
from common import machine_info, matmul_gflops, save

from yolov4.data.datamodule import SyntheticDataModule
from yolov4.data.transforms import AugmentConfig

SOURCE_IMAGE_SIZE = 640  # longest side, like COCO's images
NUM_IMAGES = 64
BATCH_SIZE = 8
TARGET_PER_WORKER = 60  # images/s per worker at 608 (issue 4's aim)


def images_per_second(
    cache: str, size: int, workers: int, train: bool, batches: int
) -> tuple[float, float]:
    """Wall-clock images/s, and images per CPU-second of this process (with 0 workers that is
    the per-core rate, robust to other load on a shared machine; with workers it is not
    meaningful and reported as 0)."""
    augment = dataclasses.replace(AugmentConfig(), multi_scale=None)
    dm = SyntheticDataModule(
        num_train=NUM_IMAGES,
        num_val=NUM_IMAGES,
        image_size=SOURCE_IMAGE_SIZE,
        cache_dir=cache,
        input_size=size,
        batch_size=BATCH_SIZE,
        num_workers=workers,
        persistent_workers=workers > 0,
        augment=augment,
    )
    dm.setup("fit")
    loader = dm.train_dataloader() if train else dm.val_dataloader()
    it = iter(loader)
    next(it)  # warm-up: worker start, first decodes
    done, start, cpu_start = 0, time.perf_counter(), time.process_time()
    while done < batches:
        try:
            batch = next(it)
        except StopIteration:
            it = iter(loader)
            continue
        done += 1
        assert batch["images"].shape[-1] == size
    wall, cpu = time.perf_counter() - start, time.process_time() - cpu_start
    return done * BATCH_SIZE / wall, (done * BATCH_SIZE / cpu if workers == 0 else 0.0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[416, 608])
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--batches", type=int, default=12)
    args = parser.parse_args()
    torch.set_num_threads(1)  # the pipelines run single-threaded per worker
    info = machine_info()
    gflops = matmul_gflops(n=1024)
    rows = []
    with tempfile.TemporaryDirectory() as cache:
        for pipeline in ("train", "val"):
            for size in args.sizes:
                for workers in args.workers:
                    train = pipeline == "train"
                    ips, per_cpu = images_per_second(cache, size, workers, train, args.batches)
                    per_worker = ips / max(workers, 1)
                    rows.append(
                        {
                            "pipeline": pipeline,
                            "size": size,
                            "workers": workers,
                            "images_per_s": round(ips, 1),
                            "images_per_s_per_worker": round(per_worker, 1),
                            "images_per_cpu_s": round(per_cpu, 1),
                        }
                    )
                    cpu_note = f", {per_cpu:.1f} per CPU-second" if workers == 0 else ""
                    print(
                        f"{pipeline:5s} {size:4d} px  workers {workers}: {ips:7.1f} img/s "
                        f"({per_worker:.1f} per worker{cpu_note})"
                    )
    print(
        f"reference: float32 matmul {gflops:.1f} GFLOP/s (1 thread); aim >= {TARGET_PER_WORKER} img/s/worker at 608"
    )
    path = save(
        "dataloader",
        {
            "machine": info,
            "matmul_gflops_1thread": round(gflops, 1),
            "batch_size": BATCH_SIZE,
            "source_image_size": SOURCE_IMAGE_SIZE,
            "target_images_per_s_per_worker_608": TARGET_PER_WORKER,
            "results": rows,
        },
    )
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
