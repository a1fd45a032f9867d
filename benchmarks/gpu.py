"""GPU readiness: every GPU path of the project checked and measured in one short run.

    bash benchmarks/gpu_wheels.sh                  # once, on a machine that reaches PyPI
    python benchmarks/gpu.py                       # on the GPU machine (see the run command below)
    python benchmarks/gpu.py --dry-run             # the same checks on the CPU, tiny sizes

Checks, each in its own try/except with its own time budget (on the GPU each runs in its own
process, killed at its budget, so a hang, a crash or a broken CUDA context loses only that check),
in this order (gpu_checks.py, gpu_train.py; sizes and tolerances in gpu_base.py):

    environment       versions, GPU name, the fp16 matmul TFLOP/s measured here (the machine's
                      own reference) and the GPU's dense fp16 tensor peak looked up from its name
    device_mismatch   CPU images into a CUDA model -> InputError naming both devices; a CUDA
                      checkpoint (weights file and Lightning .ckpt) loads cleanly with CUDA hidden
    train_steps_*     YoloModule.training_step + backward + AdamW for yolov4-tiny@416 and
                      yolov4@608 in fp32, 16-mixed, bf16-mixed and bf16-mixed + channels-last:
                      images/s, peak memory, losses finite
    max_batch         the largest batch of yolov4@608 (16-mixed, trainer=gpu's precision) that
                      trains a step; the module's out-of-memory message seen once
    train_cli         python train.py trainer=gpu on the synthetic data (one short epoch), then
                      evaluate.py on its weights on the GPU and on the CPU: the same metrics
    predictor         Predictor on CUDA (torch; onnxruntime's CUDA and TensorRT providers when
                      installed): latency at batch 1, throughput at batch 32, TFLOP/s vs the peak
    ddp               python train.py trainer=ddp on one GPU: trains a few steps, its weights load
                      strictly into build_model(...)
    compile_*         module.compile_model=true vs eager: the first step's loss and gradient norm equal
                      within COMPILE_RTOL; compiled images/s

It writes benchmarks/results/gpu.json (``--dry-run``: gpu_dryrun.json) with pass/fail and the
error text per check, and prints a table. A whole run stays under ``--budget`` seconds (default
390): a check starts only with time left, and gets at most what is left.

``--dry-run`` runs the same checks on the CPU with tiny sizes (yolov4-tiny at 64 px, batch 1-2,
one step per mode), in one process: train.py/evaluate.py take the same overrides through Hydra's
compose in this process instead of subprocesses (imports cost 10+ s per process on a 2-core
machine), and torch.compile uses dynamo's ``eager`` backend (the graph capture, no inductor code
generation, which takes minutes on 2 cores). Not applicable there: yolov4's own training and
compile checks (tens of seconds per step on 2 cores; yolov4-tiny's take the same code path),
16-mixed (Lightning: CUDA only), onnxruntime's CUDA/TensorRT providers. Stand-ins that take the
code path of the CUDA-only parts: a model on the meta device for the device check, an
out-of-memory error raised inside the network's forward past batch 2 for the batch search, CPU
against CPU for the evaluation comparison. tests/test_gpu_script.py runs it.

Run on a lent GPU (device tool ``run``; the wheels travel in ``carry``):

    command: python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site benchmarks/wheels/*.whl && { PYTHONPATH=/tmp/site:$PWD/src PYTHONUNBUFFERED=1 python3 benchmarks/gpu.py --budget 390 2>&1 | tee $OUT/gpu.log; cp benchmarks/results/gpu.json $OUT/; }
    carry: ["benchmarks/wheels"]     timeout_s: 450

That leaves time in a 15-minute lease for one rerun (``--only NAME ...`` reruns some checks).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))  # benchmarks/ (common, train_step)

RESULTS_DIR = Path(__file__).resolve().parent / "results"  # as common.RESULTS_DIR

try:  # torch, the project and what it imports (the carried wheels): a JSON even when they fail
    import gpu_checks as checks
except Exception:
    checks = None
    IMPORT_ERROR = traceback.format_exc()

DEFAULT_BUDGET_S = 390  # the whole run; leaves a rerun's time in a 15-minute lease
MIN_START_S = 20  # a check starts only with at least this much of the run's budget left
TERM_GRACE_S = 10  # a check stopped at its budget has this long to write what it found


class BudgetSpent(BaseException):
    """SIGTERM from the runner: the check's time budget is spent (a BaseException, so that
    the checks' own ``except Exception`` around each part do not carry on)."""


def stop_on_sigterm(signum: int, frame: Any) -> None:
    raise BudgetSpent("stopped at the check's time budget (SIGTERM)")


def run_isolated(name: str, args: argparse.Namespace, workdir: Path, timeout: float) -> dict:
    """``name`` in a child process (own process group, killed at ``timeout``)."""
    result_file = workdir / f"{name}.result.json"
    cmd = [sys.executable, __file__, "--check", name, "--result-file", str(result_file)]
    cmd += ["--workdir", str(workdir)] + (["--dry-run"] if args.dry_run else [])
    proc = subprocess.Popen(cmd, cwd=ROOT, start_new_session=True)
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGTERM)  # the check records what it has found so far
        try:
            proc.wait(timeout=TERM_GRACE_S)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)  # its own children (train.py, workers)
        stopped = {"status": "timeout", "error": f"stopped at its budget of {timeout:.0f} s"}
        if result_file.is_file():
            return {**json.loads(result_file.read_text()), **stopped}
        return stopped
    if result_file.is_file():
        return json.loads(result_file.read_text())
    return {"status": "failed", "error": f"the check's process exited {proc.returncode} "
            "without a result (crash or signal; see its output above)"}  # fmt: skip


def run_inline(name: str, ctx: checks.Context) -> dict:
    """``name`` in this process: its result, its exception as a failure."""
    try:
        details = checks.CHECKS[name].fn(ctx)
        failures = details.pop("failures", None)
        if failures:
            return {"status": "failed", "error": "; ".join(failures), "details": details}
        return {"status": "passed", "details": details}
    except checks.NotApplicable as e:
        return {"status": "not_applicable", "error": str(e)}
    except (Exception, BudgetSpent) as e:  # every failure is recorded; the next check runs
        tb = traceback.format_exc(limit=-4)
        res = {"status": "failed", "error": f"{type(e).__name__}: {e}"[:2000], "traceback": tb}
        return {**res, "details": ctx.partial} if ctx.partial else res


def print_table(rows: list[dict]) -> None:
    print(f"\n{'check':28s} {'status':15s} {'s':>6s}  summary")
    for r in rows:
        summary = r.get("summary") or r.get("error") or ""
        print(f"{r['name']:28s} {r['status']:15s} {r['seconds']:6.1f}  {summary[:160]}")


def import_failed(argv: list[str]) -> int:
    """The checks cannot even be imported (a missing or broken wheel): say so in the JSON."""
    dry = "--dry-run" in argv
    out = RESULTS_DIR / ("gpu_dryrun.json" if dry else "gpu.json")
    if "--out" in argv:
        out = Path(argv[argv.index("--out") + 1])
    row = {"name": "environment", "status": "failed", "seconds": 0.0,
           "error": IMPORT_ERROR.strip().splitlines()[-1], "traceback": IMPORT_ERROR}  # fmt: skip
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"dry_run": dry, "checks": [row], "python": sys.version}, indent=2))
    print(IMPORT_ERROR, f"wrote {out}", sep="\n")
    return 1


def main() -> int:
    if checks is None:
        return import_failed(sys.argv[1:])
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--dry-run", action="store_true", help="CPU, tiny sizes, one process")
    parser.add_argument("--budget", type=float, default=DEFAULT_BUDGET_S, help="whole run, s")
    parser.add_argument("--only", nargs="+", choices=list(checks.CHECKS), help="these checks")
    parser.add_argument("--out", type=Path, help="JSON path (default results/gpu[_dryrun].json)")
    parser.add_argument(
        "--isolate",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="each check in its own process (default: on the GPU yes, with --dry-run no)",
    )
    parser.add_argument("--check", help=argparse.SUPPRESS)  # internal: one isolated check
    parser.add_argument("--result-file", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--workdir", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.check:  # child of run_isolated
        signal.signal(signal.SIGTERM, stop_on_sigterm)
        ctx = checks.Context(dry_run=args.dry_run, workdir=args.workdir)
        args.result_file.write_text(json.dumps(run_inline(args.check, ctx), default=str))
        return 0

    isolate = (not args.dry_run) if args.isolate is None else args.isolate
    names = args.only or list(checks.CHECKS)
    out = args.out or RESULTS_DIR / ("gpu_dryrun.json" if args.dry_run else "gpu.json")
    start = time.monotonic()
    load_at_start = Path("/proc/loadavg").read_text().split()[:3]  # shared machines: say so
    rows = []
    with tempfile.TemporaryDirectory(prefix="yolov4-gpu-") as tmp:
        workdir = Path(tmp)
        ctx = checks.Context(dry_run=args.dry_run, workdir=workdir)
        for name in names:
            spec = checks.CHECKS[name]
            # isolated: killed at the GPU budget; inline (--dry-run): the CPU budget is recorded
            budget = spec.budget_s if isolate or not args.dry_run else spec.dry_budget_s
            left = args.budget - (time.monotonic() - start)
            t0 = time.monotonic()
            print(f"== {name} (budget {min(budget, left):.0f} s)", flush=True)
            if left < min(MIN_START_S, budget):
                res = {
                    "status": "skipped",
                    "error": f"the run's budget ({args.budget:.0f} s) is spent",
                }
            elif isolate:
                res = run_isolated(name, args, workdir, min(budget, left))
            else:
                res = run_inline(name, ctx)
            seconds = time.monotonic() - t0
            res = {"name": name, **res, "seconds": round(seconds, 1), "budget_s": budget}
            if res["status"] == "passed" and seconds > budget:
                res["over_budget"] = True
            res["summary"] = checks.summarize(name, res)
            rows.append(res)
            print(
                f"-> {res['status']} in {seconds:.1f} s: {res['summary'] or res.get('error', '')}"[
                    :400
                ],
                flush=True,
            )
    payload = {
        "dry_run": args.dry_run,
        "isolated": isolate,
        "budget_s": args.budget,
        "total_s": round(time.monotonic() - start, 1),
        "machine": {**checks.machine(), "loadavg_at_start": load_at_start},
        "settings": checks.settings(args.dry_run),
        "checks": rows,
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(payload, indent=2, default=str) + "\n")
    print_table(rows)
    print(f"wrote {out} ({payload['total_s']} s)")
    return 0 if all(r["status"] in ("passed", "not_applicable") for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
