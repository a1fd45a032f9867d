"""What the checks of benchmarks/gpu.py share: the sizes of a run, its context, the GPU's fp16
peak by name, and device helpers."""

from __future__ import annotations

import gc
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from common import machine_info

ROOT = Path(__file__).resolve().parent.parent

# Dense (no sparsity) fp16 tensor-core TFLOP/s with fp32 accumulation, from NVIDIA's data sheets.
# Matched in order against torch.cuda.get_device_name(): the first key contained in the name wins.
FP16_PEAK_TFLOPS = {
    "B200": 2250.0,
    "H200 NVL": 835.0,
    "H200": 989.4,  # H200 SXM: the H100 SXM's tensor cores
    "H100 NVL": 835.0,
    "H100 PCIe": 756.0,
    "H100": 989.4,  # H100 SXM5 ("NVIDIA H100 80GB HBM3")
    "GH200": 989.4,
    "A100": 312.0,  # SXM and PCIe
    "L40S": 362.1,
    "L40": 181.0,
    "L4": 121.0,
    "A10G": 70.0,  # AWS A10G: NVIDIA's figure for the A10 is 125; Amazon's part runs lower clocks
    "A10": 125.0,
    "T4": 65.0,
    "V100": 125.0,  # SXM2; PCIe 112
}
COMPILE_RTOL = 1e-3  # compiled vs eager, fp32, same weights and batch: loss and gradient norm
EVAL_ATOL = 1e-3  # evaluate.py on the GPU vs the CPU: each of the 12 COCO numbers
# evaluate.py's score threshold in train_cli: below an untrained network's scores (prior 0.01 x
# 0.01), so that a model trained for one short epoch still has detections to compare
EVAL_CONF = 1e-6
SIMULATED_OOM_BATCH = 2  # --dry-run: the network's forward raises torch.OutOfMemoryError past this


class NotApplicable(Exception):
    """The check (or part) has no meaning on this machine (e.g. CUDA-only, on the CPU)."""


@dataclass
class Context:
    dry_run: bool
    workdir: Path
    # what a check has found so far: recorded when it fails or is stopped at its budget
    partial: dict[str, Any] = field(default_factory=dict)

    @property
    def device(self) -> str:
        return "cpu" if self.dry_run else "cuda"

    @property
    def sizes(self) -> dict[str, Any]:
        return settings(self.dry_run)

    def need_cuda(self) -> None:
        if not self.dry_run and not torch.cuda.is_available():
            raise RuntimeError(
                "no CUDA device (torch.cuda.is_available() is False); run with --dry-run on a CPU"
            )


def settings(dry_run: bool) -> dict[str, Any]:
    """The sizes of every check: the GPU run's, or the CPU dry run's."""
    if dry_run:
        return {
            # model, input size, batch; None: not run (yolov4 takes tens of seconds a step here)
            "steps": [["yolov4-tiny", 64, 1], None],
            "warmup": 0,
            "repeats": 1,
            "max_batch": ["yolov4-tiny", 64, 1, 16],  # model, size, first batch, largest tried
            "cli": {
                "num_train": 4,
                "num_val": 2,
                "image_size": 64,
                "input_size": 64,
                "batch_size": 4,
                "num_workers": 0,
                "ddp_steps": 1,
            },
            "predictor": {
                "model": "yolov4-tiny",
                "size": 64,
                "latency_repeats": 2,
                "batch": 2,
                "batch_repeats": 1,
            },
            "compile_backend": "eager",
        }
    return {
        "steps": [["yolov4-tiny", 416, 32], ["yolov4", 608, 8]],
        "warmup": 3,
        "repeats": 8,
        "max_batch": ["yolov4", 608, 8, 512],
        "cli": {
            "num_train": 256,
            "num_val": 64,
            "image_size": 256,
            "input_size": 256,
            "batch_size": 16,
            "num_workers": 4,
            "ddp_steps": 4,
        },
        "predictor": {
            "model": "yolov4",
            "size": 608,
            "latency_repeats": 30,
            "batch": 32,
            "batch_repeats": 5,
        },
        "compile_backend": "inductor",
    }


def machine() -> dict[str, Any]:
    info = machine_info()
    info["loadavg"] = Path("/proc/loadavg").read_text().split()[:3]
    if torch.cuda.is_available():
        p = torch.cuda.get_device_properties(0)
        info.update(
            gpu_memory_gib=round(p.total_memory / 2**30, 1), capability=f"{p.major}.{p.minor}"
        )
        info["fp16_peak_tflops"] = fp16_peak(p.name)
    return info


def fp16_peak(name: str) -> float | None:
    """Dense fp16 tensor TFLOP/s of the GPU called ``name`` (:data:`FP16_PEAK_TFLOPS`)."""
    return next((v for k, v in FP16_PEAK_TFLOPS.items() if k in name), None)


def sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def free_memory() -> None:
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
