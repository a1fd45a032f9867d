"""The training checks of benchmarks/gpu.py: steps per precision, compiled vs eager, the largest
batch (see gpu.py's docstring)."""

from __future__ import annotations

import contextlib
import math
import time
import warnings
from typing import Any

import torch
from gpu_base import COMPILE_RTOL, SIMULATED_OOM_BATCH, Context, NotApplicable, free_memory, sync
from train_step import random_targets

from yolov4.models import ModelConfig

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
    module = YoloModule(model=config, ema_decay=None, compile_model=compile)
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
