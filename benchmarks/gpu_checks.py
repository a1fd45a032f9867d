"""The checks of benchmarks/gpu.py (see its docstring): each takes a :class:`Context` and returns
a dict of what it found; it raises on failure, or lists failed sub-checks under ``failures``."""

from __future__ import annotations

import contextlib
import gc
import json
import math
import os
import statistics
import subprocess
import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from common import machine_info, matmul_gflops, spread_head_biases
from train_step import random_targets

from yolov4 import InputError, Predictor, build_model, load_checkpoint, save_checkpoint
from yolov4.models import ModelConfig, YOLOv4

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


# -- training steps -------------------------------------------------------------------------------
MODES = {  # name: (autocast dtype, channels_last)
    "fp32": (None, False),
    "16-mixed": (torch.float16, False),
    "bf16-mixed": (torch.bfloat16, False),
    "bf16-mixed+channels_last": (torch.bfloat16, True),
}


def make_module(name: str, device: str, compile: bool = False, backend: str = "inductor"):
    """A YoloModule for ``name`` (80 classes, EMA off) on ``device`` and its AdamW optimizer."""
    from yolov4.training.module import YoloModule
    from yolov4.training.optim import OptimConfig, build_optimizer

    torch.manual_seed(0)
    config = ModelConfig.load(name, num_classes=80).to_dict()
    module = YoloModule(model=config, ema_decay=None, compile=compile)
    if compile and backend != "inductor":  # --dry-run: dynamo's graph capture, no code generation
        module._forward = torch.compile(module.model, backend=backend)
    # darknet's charted cost is an extra loss pass on the steps a trainer logs (1 in 5); without
    # a trainer the module would run it on every step
    module._darknet_cost_due = lambda: False
    module.to(device).train()
    return module, build_optimizer(module.model, OptimConfig())


class Stepper:
    """``step(images, targets) -> loss``: training_step under autocast, backward (GradScaler for
    fp16), AdamW step, as Lightning's MixedPrecision plugin runs them."""

    def __init__(self, module, optimizer, device: str, dtype: torch.dtype | None) -> None:
        self.module, self.optimizer, self.device, self.dtype = module, optimizer, device, dtype
        self.scaler = torch.amp.GradScaler(device) if dtype == torch.float16 else None

    def __call__(self, images: torch.Tensor, targets: torch.Tensor, step: bool = True):
        autocast = (
            torch.autocast(self.device, dtype=self.dtype)
            if self.dtype is not None
            else contextlib.nullcontext()
        )
        with autocast, warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*self.log.*")  # no trainer attached
            loss = self.module.training_step({"images": images, "targets": targets}, 0)
        (self.scaler.scale(loss) if self.scaler else loss).backward()
        if step:
            if self.scaler:
                self.scaler.step(self.optimizer)
                self.scaler.update()
            else:
                self.optimizer.step()
            self.optimizer.zero_grad(set_to_none=True)
        return loss.detach()


def batch_for(size: int, batch: int, device: str, channels_last: bool = False):
    g = torch.Generator().manual_seed(0)
    x = torch.rand(batch, 3, size, size, generator=g).to(device)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    return x, random_targets(batch, size).to(device)


def time_steps(stepper: Stepper, x, t, warmup: int, repeats: int, device: str) -> dict[str, Any]:
    losses = [float(stepper(x, t)) for _ in range(warmup)]
    sync(device)
    start = time.perf_counter()
    losses += [stepper(x, t) for _ in range(repeats)]
    sync(device)
    seconds = time.perf_counter() - start
    losses = [float(v) for v in losses]
    if not all(math.isfinite(v) for v in losses):
        raise FloatingPointError(f"non-finite losses {losses}")
    return {
        "images_per_s": round(x.shape[0] * repeats / seconds, 2),
        "step_ms": round(1e3 * seconds / repeats, 1),
        "losses": [round(v, 4) for v in losses],
    }


def peak_memory_gib(device: str) -> float | None:
    return round(torch.cuda.max_memory_allocated() / 2**30, 2) if device == "cuda" else None


def step_sizes(ctx: Context, which: int) -> tuple[str, int, int]:
    ctx.need_cuda()
    if ctx.sizes["steps"][which] is None:
        raise NotApplicable("on the CPU only yolov4-tiny's steps run (yolov4: minutes here)")
    return tuple(ctx.sizes["steps"][which])


def train_steps(ctx: Context, which: int) -> dict[str, Any]:
    name, size, batch = step_sizes(ctx, which)
    rows, failures = ctx.partial.setdefault("modes", {}), []
    for mode, (dtype, channels_last) in MODES.items():
        try:
            if ctx.dry_run and dtype == torch.float16:
                raise NotApplicable("Lightning's 16-mixed is CUDA-only (CPU: bf16-mixed)")
            module, opt = make_module(name, ctx.device)
            if channels_last:
                module.to(memory_format=torch.channels_last)
            x, t = batch_for(size, batch, ctx.device, channels_last)
            if ctx.device == "cuda":
                torch.cuda.reset_peak_memory_stats()
            r = time_steps(Stepper(module, opt, ctx.device, dtype), x, t,
                           ctx.sizes["warmup"], ctx.sizes["repeats"], ctx.device)  # fmt: skip
            rows[mode] = {**r, "peak_memory_gib": peak_memory_gib(ctx.device)}
        except NotApplicable as e:
            rows[mode] = {"status": "not_applicable", "reason": str(e)}
        except Exception as e:
            rows[mode] = {"status": "failed", "error": f"{type(e).__name__}: {e}"[:1000]}
            failures.append(f"{mode}: {type(e).__name__}: {str(e)[:300]}")
        finally:
            module = opt = None  # noqa: F841
            free_memory()
    return {"model": name, "size": size, "batch": batch, "modes": rows, "failures": failures}


def compile_check(ctx: Context, which: int) -> dict[str, Any]:
    """Eager vs ``compile=True`` (fp32): first-step loss and gradient norm, then compiled rate."""
    name, size, batch = step_sizes(ctx, which)
    backend = ctx.sizes["compile_backend"]
    x, t = batch_for(size, batch, ctx.device)
    found = ctx.partial
    for kind in ("eager", "compiled"):
        module, opt = make_module(name, ctx.device, compile=kind == "compiled", backend=backend)
        stepper = Stepper(module, opt, ctx.device, None)
        if ctx.device == "cuda":
            torch.cuda.reset_peak_memory_stats()
        t0 = time.perf_counter()
        loss = float(stepper(x, t, step=False))
        grad_norm = float(torch.linalg.vector_norm(
            torch.stack([p.grad.norm() for p in module.model.parameters() if p.grad is not None])))  # fmt: skip
        opt.zero_grad(set_to_none=True)
        first_s = time.perf_counter() - t0
        rate = time_steps(
            stepper, x, t, min(1, ctx.sizes["warmup"]), ctx.sizes["repeats"], ctx.device
        )
        found[kind] = {
            "loss": loss,
            "grad_norm": grad_norm,
            "first_step_s": round(first_s, 2),
            **rate,
            "peak_memory_gib": peak_memory_gib(ctx.device),
        }
        module = opt = stepper = None
        free_memory()
    from torch._dynamo.utils import counters

    breaks = counters["graph_break"]  # graphs captured, and why dynamo had to cut the forward
    found["dynamo"] = {"unique_graphs": counters["stats"]["unique_graphs"],
                       "graph_breaks": sum(breaks.values()), "break_reasons": list(breaks)[:5]}  # fmt: skip
    e, c = found["eager"], found["compiled"]
    rel = {k: abs(c[k] - e[k]) / max(abs(e[k]), 1e-12) for k in ("loss", "grad_norm")}
    failures = [f"compiled {k} {c[k]:.6g} vs eager {e[k]:.6g} (rel {v:.2e} > {COMPILE_RTOL})"
                for k, v in rel.items() if not v <= COMPILE_RTOL]  # fmt: skip
    return {
        "model": name, "size": size, "batch": batch, "backend": backend, "rtol": COMPILE_RTOL,
        "rel_diff": {k: float(f"{v:.3g}") for k, v in rel.items()}, **found,
        "speedup": round(c["images_per_s"] / e["images_per_s"], 2), "failures": failures,
    }  # fmt: skip


def max_batch(ctx: Context) -> dict[str, Any]:
    """Doubling then bisection over the batch of one 16-mixed training step of yolov4@608."""
    ctx.need_cuda()
    name, size, first, largest = ctx.sizes["max_batch"]
    dtype = None if ctx.dry_run else torch.float16  # 16-mixed is CUDA-only (CPU: fp32, faster)
    module, opt = make_module(name, ctx.device)
    if ctx.dry_run:  # the same except-path as a real OOM: raised inside the network's forward

        def simulated_oom(_module, args):
            if args[0].shape[0] > SIMULATED_OOM_BATCH:
                raise torch.OutOfMemoryError(
                    f"simulated: batch {args[0].shape[0]} > {SIMULATED_OOM_BATCH}"
                )

        module.model.register_forward_pre_hook(simulated_oom)
    stepper = Stepper(module, opt, ctx.device, dtype)
    messages: list[str] = []
    probes: list[tuple[int, bool]] = ctx.partial.setdefault("probes", [])

    def fits(b: int) -> bool:
        ok, message = True, None
        try:
            x, t = batch_for(size, b, ctx.device)
            stepper(x, t)
            sync(ctx.device)
        except torch.OutOfMemoryError as e:
            ok, message = False, str(e)
        x = t = None  # noqa: F841
        opt.zero_grad(set_to_none=True)
        free_memory()
        if message is not None:
            messages.append(message)
        probes.append((b, ok))
        return ok

    good, bad = 0, None
    b = first
    while b <= largest:
        if not fits(b):
            bad = b
            break
        good, b = b, b * 2
    while bad is not None and bad - good > max(1, good // 16):
        mid = (good + bad) // 2
        good, bad = (mid, bad) if fits(mid) else (good, mid)
    hint = "out of memory with batch size"
    if bad is not None and not any(hint in m for m in messages):
        fits(2 * bad)  # the first OOMs were outside the forward: try once more for the module's
    seen = [m for m in messages if hint in m]
    failures = []
    if good == 0:
        failures.append(f"batch {first} does not fit")
    if bad is None:
        failures.append(
            f"no out-of-memory up to batch {largest}: the message path was not exercised"
        )
    elif not seen:
        failures.append("out-of-memory errors came without the module's message (raised "
                        f"outside YoloModule.training_step's forward + loss): {messages[0][:300]}")  # fmt: skip
    return {
        "model": name, "size": size, "precision": "32-true" if ctx.dry_run else "16-mixed",
        "simulated_oom": ctx.dry_run, "largest_batch": good, "smallest_oom_batch": bad,
        "probes": probes, "oom_message": (seen or messages or [None])[0], "failures": failures,
    }  # fmt: skip


# -- device mismatch and loading without CUDA -------------------------------------------------------
LOAD_SCRIPT = """
import json, sys, numpy as np, torch
from yolov4 import Predictor, load_checkpoint
out = {"cuda_available": torch.cuda.is_available()}
for p in sys.argv[1:]:
    ckpt = load_checkpoint(p)
    dets = Predictor.from_checkpoint(p)(np.zeros((48, 64, 3), np.uint8))
    out[p] = {"device": str(next(ckpt.model.parameters()).device), "detections": len(dets[0])}
print("RESULT " + json.dumps(out))
"""


def load_without_cuda(paths: list[Path]) -> dict[str, Any]:
    """load_checkpoint + a Predictor call on each file in a process that sees no GPU
    (CUDA_VISIBLE_DEVICES=''); in this process where there is no CUDA anyway."""
    if not torch.cuda.is_available():
        out = {"cuda_available": False, "in_process": True}
        for p in paths:
            ckpt = load_checkpoint(p)
            dets = Predictor.from_checkpoint(p)(np.zeros((48, 64, 3), np.uint8))
            out[str(p)] = {"device": str(next(ckpt.model.parameters()).device), "detections": len(dets[0])}  # fmt: skip
        return out
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}
    r = subprocess.run([sys.executable, "-c", LOAD_SCRIPT, *map(str, paths)], env=env,
                       capture_output=True, text=True, timeout=120)  # fmt: skip
    lines = [x for x in r.stdout.splitlines() if x.startswith("RESULT ")]
    if r.returncode or not lines:
        raise RuntimeError(f"loading without CUDA failed (exit {r.returncode}): {r.stderr[-1500:]}")
    return json.loads(lines[-1][len("RESULT ") :])


def stored_devices(path: Path) -> list[str]:
    data = torch.load(path, map_location=None, weights_only=True)  # tensors where they were saved
    return sorted({str(v.device) for v in data["state_dict"].values()})


def device_mismatch(ctx: Context) -> dict[str, Any]:
    ctx.need_cuda()
    import lightning as L

    model = build_model("yolov4-tiny", num_classes=4)
    where = "meta" if ctx.dry_run else "cuda"  # meta: a stand-in device on a CPU-only machine
    if ctx.dry_run:
        with torch.device("meta"):
            moved = YOLOv4(model.config)
    else:
        moved = model.to("cuda")
    out: dict[str, Any] = {"model_device": where}
    try:
        moved(torch.rand(1, 3, 64, 64))
        raise AssertionError("CPU images into a model on another device raised nothing")
    except InputError as e:
        out["cpu_images_error"] = str(e)
        if "images are on cpu" not in str(e) or where not in str(e):
            raise AssertionError(f"the InputError does not name both devices: {e}") from e
    # a checkpoint saved from the device: the weights file and a Lightning .ckpt of the same tensors
    source = model if ctx.dry_run else moved
    names = [f"c{i}" for i in range(4)]
    pre = {"input_size": [64, 64], "mode": "letterbox"}
    weights = save_checkpoint(ctx.workdir / "device.pt", source, names, pre)
    lightning_ckpt = ctx.workdir / "device.ckpt"
    torch.save({
        "pytorch-lightning_version": L.__version__, "epoch": 0, "global_step": 0,
        "state_dict": {f"model.{k}": v for k, v in source.state_dict().items()},
        "hyper_parameters": {"model": source.config.to_dict(), "class_names": names, "preprocess": pre},
    }, lightning_ckpt)  # fmt: skip
    out["stored_on"] = {p.name: stored_devices(p) for p in (weights, lightning_ckpt)}
    if not ctx.dry_run and out["stored_on"]["device.ckpt"] != ["cuda:0"]:
        raise AssertionError(f"the .ckpt was meant to hold CUDA tensors: {out['stored_on']}")
    loaded = load_without_cuda([weights, lightning_ckpt])
    bad = {p: v for p, v in loaded.items() if isinstance(v, dict) and v["device"] != "cpu"}
    if loaded["cuda_available"] or bad:
        raise AssertionError(f"not a clean CPU load: {loaded}")
    out["loaded_without_cuda"] = {Path(k).name if "/" in k else k: v for k, v in loaded.items()}
    return out


# -- train.py / evaluate.py -----------------------------------------------------------------------
def run_cli(ctx: Context, script: str, overrides: list[str], cpu_only: bool = False) -> None:
    """``python {script}.py overrides`` on the GPU machine (CUDA hidden when ``cpu_only``); in
    the dry run the same overrides through Hydra's compose in this process."""
    if ctx.dry_run:
        from hydra import compose, initialize_config_module

        with initialize_config_module(config_module="yolov4.configs", version_base="1.3"):
            cfg = compose(script, overrides=overrides)
        if script == "train":
            from yolov4.cli.train import train

            train(cfg)
        else:
            from yolov4.cli.evaluate import evaluate

            evaluate(cfg)
        return
    out = next(o.split("=", 1)[1] for o in overrides if o.startswith("paths.output_dir="))
    cmd = [sys.executable, f"{script}.py", *overrides, f"hydra.run.dir={out}"]
    env = {**os.environ, **({"CUDA_VISIBLE_DEVICES": ""} if cpu_only else {})}
    r = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    if r.returncode:
        raise RuntimeError(f"{' '.join(cmd[1:])} exited {r.returncode}: {r.stderr[-2500:]}")


def data_overrides(ctx: Context) -> list[str]:
    c = ctx.sizes["cli"]
    return [
        f"data.cache_dir={ctx.workdir / 'synthetic'}", f"data.num_train={c['num_train']}",
        f"data.num_val={c['num_val']}", f"data.image_size={c['image_size']}",
        f"data.input_size=[{c['input_size']},{c['input_size']}]",
        f"data.num_workers={c['num_workers']}", f"data.persistent_workers={c['num_workers'] > 0}",
    ]  # fmt: skip


def train_overrides(ctx: Context) -> list[str]:
    c = ctx.sizes["cli"]
    return [*data_overrides(ctx), f"data.batch_size={c['batch_size']}", "augment.multi_scale=null",
            "trainer.max_epochs=1", "trainer.enable_progress_bar=false", "logger=csv"]  # fmt: skip


def train_cli(ctx: Context) -> dict[str, Any]:
    from yolov4.evaluation import METRIC_KEYS

    ctx.need_cuda()
    run = ctx.workdir / "train"
    trainer = ["trainer=default"] if ctx.dry_run else ["trainer=gpu"]
    t0 = time.perf_counter()
    run_cli(ctx, "train", [*trainer, *train_overrides(ctx), f"paths.output_dir={run}",
                           "module.ema_decay=null", "export.formats=[onnx]"])  # fmt: skip
    out = ctx.partial
    out["train_s"] = round(time.perf_counter() - t0, 1)
    trained = json.loads((run / "metrics.json").read_text())
    out["train_metrics"] = {k: trained[k] for k in METRIC_KEYS}
    weights = run / "weights" / "last.pt"
    evals = {  # name: (trainer overrides, CUDA hidden)
        "gpu_32-true": (["trainer=gpu", "trainer.precision=32-true"], False),
        "gpu_16-mixed": (["trainer=gpu"], False),
        "cpu": (["trainer=default"], True),
    }
    if ctx.dry_run:  # the comparison's code path, CPU against CPU
        evals = {"cpu_as_gpu": (["trainer=default"], False), "cpu": (["trainer=default"], True)}
    found = out.setdefault("evaluations", {})
    scores: dict[str, np.ndarray] = {}
    for name, (tr, hidden) in evals.items():
        d = ctx.workdir / f"eval-{name}"
        t0 = time.perf_counter()
        run_cli(ctx, "evaluate", [*tr, *data_overrides(ctx), f"checkpoint={weights}",
                                  f"paths.output_dir={d}", "batch_size=8",
                                  f"module.eval.conf={EVAL_CONF}"], cpu_only=hidden)  # fmt: skip
        m = json.loads((d / "metrics.json").read_text())
        dets = json.loads((d / "detections.json").read_text())
        scores[name] = np.sort([r["score"] for r in dets])[::-1]
        found[name] = {"metrics": {k: m[k] for k in METRIC_KEYS}, "detections": len(dets),
                       "seconds": round(time.perf_counter() - t0, 1)}  # fmt: skip
    out["evaluations"] = found
    gpu = found["cpu_as_gpu" if ctx.dry_run else "gpu_32-true"]
    cpu = found["cpu"]
    diff = {k: abs(gpu["metrics"][k] - cpu["metrics"][k]) for k in METRIC_KEYS}
    out["max_abs_diff_gpu32_vs_cpu"] = max(diff.values())
    # beyond the metrics: the ranked scores of all detections, GPU's against the CPU's (recorded)
    a, b = scores["cpu_as_gpu" if ctx.dry_run else "gpu_32-true"], scores["cpu"]
    k = min(len(a), len(b))
    out["ranked_scores_max_abs_diff"] = float(np.abs(a[:k] - b[:k]).max()) if k else None
    if not ctx.dry_run:
        half = found["gpu_16-mixed"]["metrics"]
        out["max_abs_diff_gpu16_vs_cpu"] = max(
            abs(half[k] - cpu["metrics"][k]) for k in METRIC_KEYS
        )
    failures = [f"{k}: GPU {gpu['metrics'][k]:.4f} vs CPU {cpu['metrics'][k]:.4f}"
                for k, v in diff.items() if not v <= EVAL_ATOL]  # fmt: skip
    if cpu["detections"] == 0:
        failures.append("no detections on the CPU: the comparison compares nothing")
    # the run's Lightning checkpoint (tensors as the trainer held them) without CUDA
    out["last_ckpt_without_cuda"] = load_without_cuda([run / "checkpoints" / "last.ckpt"])
    return {**out, "tolerance_abs": EVAL_ATOL, "failures": failures}


def ddp(ctx: Context) -> dict[str, Any]:
    ctx.need_cuda()
    run = ctx.workdir / "ddp"
    steps = ctx.sizes["cli"]["ddp_steps"]
    device = (["trainer.accelerator=cpu", "trainer.precision=32-true", "trainer.sync_batchnorm=false"]
              if ctx.dry_run else [])  # fmt: skip
    run_cli(ctx, "train", ["trainer=ddp", "trainer.devices=1", *device, *train_overrides(ctx),
                           f"trainer.limit_train_batches={steps}", "trainer.limit_val_batches=1",
                           f"paths.output_dir={run}", "export=null"])  # fmt: skip
    data = torch.load(run / "weights" / "last.pt", map_location="cpu", weights_only=True)
    model = build_model(**data["model"])
    model.load_state_dict(data["state_dict"], strict=True)  # keys exactly build_model's
    prefixes = sorted({k.split(".")[0] for k in data["state_dict"]})
    step = (data.get("trained") or {}).get("step")
    failures = [] if step == steps else [f"trained step {step}, expected {steps}"]
    return {"steps": steps, "trained": data.get("trained"), "key_prefixes": prefixes[:5],
            "strict_load": True, "failures": failures}  # fmt: skip


# -- Predictor ------------------------------------------------------------------------------------
def predictor(ctx: Context) -> dict[str, Any]:
    """Predictor throughput/latency per backend on CUDA, TFLOP/s against the fp16 peak."""
    import onnxruntime as ort

    from yolov4.core.model import DecodedModel
    from yolov4.export.artifact import export_artifact
    from yolov4.inference.backends import OnnxBackend
    from yolov4.models import fuse_model
    from yolov4.models.__main__ import count_gflops

    ctx.need_cuda()
    p = ctx.sizes["predictor"]
    torch.manual_seed(0)
    model = spread_head_biases(build_model(p["model"]).eval())
    gflops = count_gflops(model, (p["size"], p["size"]))
    pre = {"input_size": [p["size"], p["size"]], "mode": "letterbox"}
    ckpt = save_checkpoint(ctx.workdir / "predictor.pt", model, None, pre)
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 255, (480, 640, 3), dtype=np.uint8) for _ in range(p["batch"])]
    peak = fp16_peak(torch.cuda.get_device_name()) if torch.cuda.is_available() else None

    def measure(pred: Predictor) -> dict[str, Any]:
        pred(images[:1])
        lat = []
        for _ in range(p["latency_repeats"]):
            t0 = time.perf_counter()
            pred(images[:1])
            lat.append(time.perf_counter() - t0)
        pred(images)
        t0 = time.perf_counter()
        for _ in range(p["batch_repeats"]):
            dets = pred(images)
        rate = p["batch"] * p["batch_repeats"] / (time.perf_counter() - t0)
        model_ms = dets[0].timing_ms["model"]
        tflops = gflops * p["batch"] / (model_ms / 1e3) / 1e3
        return {"latency_b1_p50_ms": round(1e3 * statistics.median(lat), 2),
                "images_per_s_b": round(rate, 1), "batch": p["batch"],
                "timing_ms_last_batch": {k: round(v, 1) for k, v in dets[0].timing_ms.items()},
                "model_tflops": float(f"{tflops:.4g}"),
                "fraction_of_fp16_peak": float(f"{tflops / peak:.4g}") if peak else None,
                "first_image": dets[0]}  # fmt: skip

    rows, failures = ctx.partial.setdefault("backends", {}), []
    reference = Predictor.from_checkpoint(ckpt)(images[:1])[0]  # CPU, fp32
    candidates: dict[str, Callable[[], Predictor]] = {
        "torch": lambda: Predictor.from_checkpoint(ckpt, device=ctx.device)
    }
    providers = ort.get_available_providers()
    art = None
    for name, provider in (("onnxruntime_cuda", "CUDAExecutionProvider"),
                           ("onnxruntime_tensorrt", "TensorrtExecutionProvider")):  # fmt: skip
        if provider not in providers:
            rows[name] = {"status": "not_applicable", "reason": f"{provider} not in {providers}"}
            continue

        def make(provider=provider):
            nonlocal art
            art = art or export_artifact(ckpt, ctx.workdir / "predictor-export", formats=["onnx"])
            loaded = Predictor.from_artifact(art)
            backend = OnnxBackend(Path(art) / "model.onnx", [provider, "CPUExecutionProvider"])
            if backend.session.get_providers()[0] != provider:
                raise RuntimeError(f"onnxruntime fell back to {backend.session.get_providers()}")
            loaded.backend = backend
            return loaded

        candidates[name] = make
    for name, build in candidates.items():
        try:
            r = measure(build())
            got = r.pop("first_image")
            k = min(10, len(reference), len(got))
            diff = float(np.abs(np.sort(got.scores)[::-1][:k] - np.sort(reference.scores)[::-1][:k]).max()) if k else 0.0  # fmt: skip
            r["top10_score_max_diff_vs_cpu"] = round(diff, 5)
            r["detections_vs_cpu"] = [len(got), len(reference)]
            if diff > 0.02 or abs(len(got) - len(reference)) > max(2, len(reference) // 20):
                failures.append(f"{name}: detections differ from the CPU's ({r['detections_vs_cpu']}, top scores by {diff:.3g})")  # fmt: skip
            rows[name] = r
        except Exception as e:
            rows[name] = {"status": "failed", "error": f"{type(e).__name__}: {e}"[:1000]}
            failures.append(f"{name}: {type(e).__name__}: {str(e)[:300]}")
        free_memory()
    # the network alone, fused, batch `batch`: fp32 and fp16 autocast (the peak's precision)
    net = DecodedModel(fuse_model(model)).to(ctx.device).eval()
    x = torch.rand(p["batch"], 3, p["size"], p["size"], device=ctx.device)
    for name, dtype in (("network_fp32", None), ("network_fp16_autocast", torch.float16)):
        if ctx.dry_run and dtype is not None:
            rows[name] = {"status": "not_applicable", "reason": "fp16 autocast: CUDA"}
            continue
        ac = torch.autocast(ctx.device, dtype=dtype) if dtype else contextlib.nullcontext()
        with torch.inference_mode(), ac:
            net(x)
            sync(ctx.device)
            t0 = time.perf_counter()
            for _ in range(p["batch_repeats"]):
                net(x)
            sync(ctx.device)
        s = (time.perf_counter() - t0) / p["batch_repeats"]
        tflops = gflops * p["batch"] / s / 1e3
        rows[name] = {"images_per_s": round(p["batch"] / s, 1), "tflops": float(f"{tflops:.4g}"),
                      "fraction_of_fp16_peak": float(f"{tflops / peak:.4g}") if peak else None}  # fmt: skip
    return {"model": p["model"], "size": p["size"], "gflops_per_image": round(gflops, 2),
            "fp16_peak_tflops": peak, "providers": providers, "backends": rows,
            "failures": failures}  # fmt: skip


# -- environment ----------------------------------------------------------------------------------
def environment(ctx: Context) -> dict[str, Any]:
    import importlib.metadata as md

    import yolov4.cli.evaluate  # noqa: F401  (every import the entry points need)
    import yolov4.cli.train  # noqa: F401

    versions = {}
    for d in ("torch", "lightning", "hydra-core", "omegaconf", "pycocotools", "albumentations",
              "pydantic", "onnx", "onnxruntime", "numpy", "opencv-python-headless"):  # fmt: skip
        try:
            versions[d] = md.version(d)
        except md.PackageNotFoundError:
            versions[d] = None
    out: dict[str, Any] = {"versions": versions, "torch_file": torch.__file__,
                           "cuda_available": torch.cuda.is_available()}  # fmt: skip
    if ctx.dry_run:
        out["cpu_matmul_fp32_gflops"] = round(matmul_gflops(512, 5), 1)
        return out
    ctx.need_cuda()
    out.update(gpu=torch.cuda.get_device_name(), torch_cuda=torch.version.cuda,
               cudnn=torch.backends.cudnn.version(), tf32_conv=torch.backends.cudnn.allow_tf32,
               fp16_peak_tflops=fp16_peak(torch.cuda.get_device_name()))  # fmt: skip
    n = 8192
    for dtype in (torch.float16, torch.bfloat16):
        a = torch.randn(n, n, device="cuda", dtype=dtype)
        b = torch.randn(n, n, device="cuda", dtype=dtype)
        for _ in range(3):
            a @ b
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        for _ in range(10):
            a @ b
        torch.cuda.synchronize()
        out[f"matmul_{str(dtype)[6:]}_tflops"] = round(2 * n**3 * 10 / (time.perf_counter() - t0) / 1e12, 1)  # fmt: skip
    return out


# -- registry -------------------------------------------------------------------------------------
@dataclass
class Check:
    fn: Callable[[Context], dict[str, Any]]
    budget_s: float  # on the GPU (the check's process is killed past it)
    dry_budget_s: float  # --dry-run on a 2-core CPU (recorded, not enforced)


CHECKS: dict[str, Check] = {
    "environment": Check(environment, 45, 15),
    "device_mismatch": Check(device_mismatch, 45, 10),
    "train_steps_yolov4-tiny": Check(lambda c: train_steps(c, 0), 45, 10),
    "train_steps_yolov4": Check(lambda c: train_steps(c, 1), 60, 15),
    "max_batch": Check(max_batch, 75, 10),
    "train_cli": Check(train_cli, 120, 30),
    "predictor": Check(predictor, 75, 15),
    "ddp": Check(ddp, 60, 15),
    "compile_yolov4-tiny": Check(lambda c: compile_check(c, 0), 90, 20),
    "compile_yolov4": Check(lambda c: compile_check(c, 1), 180, 30),
}


def summarize(name: str, res: dict[str, Any]) -> str:
    """One line for the table."""
    d = res.get("details") or {}
    if not d:
        return ""
    if name.startswith("train_steps"):
        return ", ".join(f"{m} {r['images_per_s']} img/s" + (f" {r['peak_memory_gib']} GiB" if r.get("peak_memory_gib") else "")
                         for m, r in d["modes"].items() if "images_per_s" in r)  # fmt: skip
    if name.startswith("compile"):
        return f"rel diff {d['rel_diff']}, {d['compiled']['images_per_s']} img/s (x{d['speedup']}), first step {d['compiled']['first_step_s']} s"  # fmt: skip
    if name == "max_batch":
        return f"largest batch {d['largest_batch']} (smallest OOM {d['smallest_oom_batch']})"
    if name == "train_cli":
        ev = d["evaluations"]
        return "mAP50 " + ", ".join(f"{k} {v['metrics']['mAP50']:.4f}" for k, v in ev.items()) + f"; max diff {d['max_abs_diff_gpu32_vs_cpu']:.2g}"  # fmt: skip
    if name == "predictor":
        parts = []
        for k, v in d["backends"].items():
            if "latency_b1_p50_ms" in v:
                parts.append(f"{k} {v['latency_b1_p50_ms']} ms b1, {v['images_per_s_b']} img/s b{v['batch']}")  # fmt: skip
            elif "images_per_s" in v:
                parts.append(f"{k} {v['images_per_s']} img/s ({v['fraction_of_fp16_peak']} of fp16 peak)")  # fmt: skip
            else:
                parts.append(f"{k} {v.get('status')}")
        return ", ".join(parts)
    if name == "environment":
        return d.get("gpu") or f"CPU {d.get('cpu_matmul_fp32_gflops')} GFLOP/s"
    if name == "ddp":
        return f"trained {d['trained']}, strict load ok"
    if name == "device_mismatch":
        return d.get("cpu_images_error", "")[:100]
    return ""
