"""The checks of benchmarks/gpu.py (see its docstring; the training ones are in gpu_train.py):
each takes a :class:`Context` and returns a dict of what it found; it raises on failure, or lists
failed sub-checks under ``failures``."""

from __future__ import annotations

import contextlib
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from common import matmul_gflops, spread_head_biases
from gpu_base import (  # noqa: F401  (NotApplicable, machine, settings, fp16_peak: gpu.py's API)
    EVAL_ATOL,
    EVAL_CONF,
    ROOT,
    Context,
    NotApplicable,
    fp16_peak,
    free_memory,
    machine,
    settings,
    sync,
)
from gpu_train import compile_check, max_batch, train_steps

from yolov4 import InputError, Predictor, build_model, load_checkpoint, save_checkpoint
from yolov4.models import YOLOv4

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
        run_cli(ctx, "evaluate", [*tr, f"checkpoint={weights}",  # its recorded data
                                  f"paths.output_dir={d}", "batch_size=8",
                                  f"module.val_postprocess.conf={EVAL_CONF}"], cpu_only=hidden)  # fmt: skip
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
