"""benchmarks/gpu.py: its --dry-run runs every GPU check on the CPU with tiny sizes, so
that the script cannot rot while no GPU is at hand."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "benchmarks" / "gpu.py"

# one check per bullet of the issue
EXPECTED = [
    "environment",
    "device_mismatch",
    "train_steps_yolov4-tiny",
    "train_steps_yolov4",
    "max_batch",
    "train_cli",
    "predictor",
    "ddp",
    "compile_yolov4-tiny",
    "compile_yolov4",
]
# on the CPU only yolov4-tiny's training steps run: yolov4 takes tens of seconds a step there
NOT_APPLICABLE_ON_CPU = {"train_steps_yolov4", "compile_yolov4"}


def run_script(out: Path, *args: str, env: dict[str, str] | None = None) -> dict:
    r = subprocess.run(
        [sys.executable, str(SCRIPT), "--dry-run", "--out", str(out), *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=900,
        env={**os.environ, **(env or {})},
    )
    assert out.is_file(), f"no JSON (exit {r.returncode}):\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}"
    payload = json.loads(out.read_text())
    payload["returncode"] = r.returncode
    return payload


@pytest.fixture(scope="module")
def dry_run(tmp_path_factory) -> dict:
    payload = run_script(tmp_path_factory.mktemp("gpu") / "gpu_dryrun.json")
    payload["by_name"] = {c["name"]: c for c in payload["checks"]}
    return payload


@pytest.mark.slow  # the whole dry run (dry_run fixture)
def test_every_check_runs_and_passes(dry_run):
    assert [c["name"] for c in dry_run["checks"]] == EXPECTED
    failed = {
        c["name"]: (c["status"], c.get("error"), c.get("traceback"))
        for c in dry_run["checks"]
        if c["status"] != "passed" and c["name"] not in NOT_APPLICABLE_ON_CPU
    }
    assert not failed
    for name in NOT_APPLICABLE_ON_CPU:
        c = dry_run["by_name"][name]
        assert c["status"] == "not_applicable" and "yolov4-tiny" in c["error"]
    assert dry_run["returncode"] == 0 and dry_run["dry_run"] and not dry_run["isolated"]


@pytest.mark.slow  # the whole dry run (dry_run fixture)
def test_train_steps_measure_every_precision(dry_run):
    d = dry_run["by_name"]["train_steps_yolov4-tiny"]["details"]
    modes = d["modes"]
    assert set(modes) == {"fp32", "16-mixed", "bf16-mixed", "bf16-mixed+channels_last"}
    assert modes["16-mixed"]["status"] == "not_applicable"  # Lightning: CUDA only
    for mode in ("fp32", "bf16-mixed", "bf16-mixed+channels_last"):
        r = modes[mode]
        assert r["images_per_s"] > 0 and r["losses"] and all(map(math.isfinite, r["losses"]))
        assert r["peak_memory_gib"] is None  # CUDA's allocator statistics only


@pytest.mark.slow  # the whole dry run (dry_run fixture)
def test_compiled_step_equals_eager(dry_run):
    d = dry_run["by_name"]["compile_yolov4-tiny"]["details"]
    assert d["backend"] == "eager"  # dynamo's capture on the CPU; inductor on the GPU
    assert d["eager"]["loss"] > 0 and math.isfinite(d["compiled"]["loss"])
    assert all(v <= d["rtol"] for v in d["rel_diff"].values())


@pytest.mark.slow  # the whole dry run (dry_run fixture)
def test_max_batch_search_stops_at_the_oom_with_the_modules_message(dry_run):
    d = dry_run["by_name"]["max_batch"]["details"]
    assert d["simulated_oom"] and d["largest_batch"] == 2 and d["smallest_oom_batch"] == 3
    assert [b for b, ok in d["probes"] if ok] == [1, 2]
    assert "out of memory with batch size 4" in d["oom_message"]  # the first OOM: 1, 2, 4
    assert "lower data.batch_size" in d["oom_message"]


@pytest.mark.slow  # the whole dry run (dry_run fixture)
def test_train_then_evaluate_compares_real_detections(dry_run):
    d = dry_run["by_name"]["train_cli"]["details"]
    evals = d["evaluations"]
    assert set(evals) == {"cpu_as_gpu", "cpu"}
    assert evals["cpu"]["detections"] > 0
    assert evals["cpu"]["detections"] == evals["cpu_as_gpu"]["detections"]
    assert d["max_abs_diff_gpu32_vs_cpu"] == 0.0  # the same device twice: bitwise equal
    assert d["ranked_scores_max_abs_diff"] == 0.0
    [(path, loaded)] = [
        (k, v) for k, v in d["last_ckpt_without_cuda"].items() if k.endswith("ckpt")
    ]
    assert loaded["device"] == "cpu"


@pytest.mark.slow  # the whole dry run (dry_run fixture)
def test_device_mismatch_and_checkpoint_loading(dry_run):
    d = dry_run["by_name"]["device_mismatch"]["details"]
    assert d["cpu_images_error"].startswith("images are on cpu but the model's weights are on meta")
    assert set(d["loaded_without_cuda"]) >= {"device.pt", "device.ckpt"}
    assert all(d["loaded_without_cuda"][f]["device"] == "cpu" for f in ("device.pt", "device.ckpt"))


@pytest.mark.slow  # the whole dry run (dry_run fixture)
def test_ddp_writes_strict_loadable_weights(dry_run):
    d = dry_run["by_name"]["ddp"]["details"]
    assert d["strict_load"] and d["trained"]["step"] == d["steps"]
    assert not any(p in ("module", "model", "_orig_mod") for p in d["key_prefixes"])


@pytest.mark.slow  # the whole dry run (dry_run fixture)
def test_predictor_times_each_backend(dry_run):
    d = dry_run["by_name"]["predictor"]["details"]
    torch_row = d["backends"]["torch"]
    assert torch_row["latency_b1_p50_ms"] > 0 and torch_row["images_per_s_b"] > 0
    assert torch_row["detections_vs_cpu"][0] == torch_row["detections_vs_cpu"][1]
    assert d["backends"]["network_fp32"]["tflops"] > 0 and d["gflops_per_image"] > 0
    for ort in ("onnxruntime_cuda", "onnxruntime_tensorrt"):
        assert d["backends"][ort]["status"] == "not_applicable"


@pytest.mark.slow  # a subprocess per check
def test_isolated_checks_report_through_their_own_process(tmp_path):
    # the GPU run's mode: each check in a child process that writes its result file
    payload = run_script(tmp_path / "iso.json", "--isolate", "--only", "environment")
    [check] = payload["checks"]
    assert payload["isolated"] and check["status"] == "passed", check
    assert check["details"]["versions"]["hydra-core"] and check["details"]["versions"]["torch"]


def test_a_broken_import_still_writes_the_json(tmp_path):
    # e.g. a wheel that did not install on the GPU machine: the JSON says what failed
    (tmp_path / "torch.py").write_text('raise ImportError("simulated: torch is broken")')
    out = tmp_path / "gpu.json"
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}
    r = subprocess.run([sys.executable, str(SCRIPT), "--out", str(out)], env=env, timeout=120)
    [row] = json.loads(out.read_text())["checks"]
    assert r.returncode == 1 and row["status"] == "failed"
    assert row["error"] == "ImportError: simulated: torch is broken"


# a sitecustomize that makes gpu.py's process for one check (``--check NAME``) hang: it starts a
# child of its own, as the train_cli and ddp checks do, writes the child's pid and sleeps
HANG = """
import os, subprocess, sys, time
if "--check" in sys.argv:
    child = subprocess.Popen(["sleep", "300"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    with open(os.environ["HANG_PID_FILE"], "w") as f:
        f.write(str(child.pid))
    time.sleep(300)
"""


def running(pid: int) -> bool:
    """Whether process ``pid`` exists and is not a zombie (dead, waiting to be reaped)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rpartition(")")[2].split()[0] != "Z"


@pytest.mark.slow  # waits out the run's budget (about 21 s)
def test_a_check_past_its_budget_is_stopped_and_recorded(tmp_path):
    """A hanging check is stopped at the run's budget with its process group (its own child
    too) and recorded as a timeout; the run exits 1."""
    (tmp_path / "hang").mkdir()
    (tmp_path / "hang" / "sitecustomize.py").write_text(HANG)
    pid_file = tmp_path / "child.pid"
    env = {"PYTHONPATH": str(tmp_path / "hang"), "HANG_PID_FILE": str(pid_file)}
    args = ("--isolate", "--only", "environment", "--budget", "21")
    payload = run_script(tmp_path / "t.json", *args, env=env)
    [check] = payload["checks"]
    assert check["status"] == "timeout", check
    assert check["error"].startswith("stopped at its budget of ")
    assert 15 < check["seconds"] < 21 + 15 and payload["returncode"] == 1
    assert not running(int(pid_file.read_text()))


@pytest.mark.parametrize(
    "name, peak",
    [
        ("NVIDIA H100 80GB HBM3", 989.4),
        ("NVIDIA H100 PCIe", 756.0),
        ("NVIDIA H100 NVL", 835.0),
        ("NVIDIA H200", 989.4),
        ("NVIDIA A100-SXM4-80GB", 312.0),
        ("NVIDIA L40S", 362.1),
        ("NVIDIA L4", 121.0),
        ("NVIDIA A10G", 70.0),
        ("Tesla T4", 65.0),
        ("Quadro RTX 5000", None),
    ],
)
def test_fp16_peak_from_the_gpu_name(name, peak, monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    for mod in ("gpu_checks", "gpu_base", "gpu_train", "common", "train_step"):
        monkeypatch.delitem(sys.modules, mod, raising=False)
    import gpu_checks

    assert gpu_checks.fp16_peak(name) == peak


def _bash_array(text: str, name: str) -> set[str]:
    import re

    body = re.search(rf"^{name}=\((.*?)\)", text, re.S | re.M).group(1)
    return {w.lower() for line in body.splitlines() for w in line.split("#")[0].split()}


def test_the_wheels_cover_every_import_the_gpu_run_needs():
    """Every third-party module that src/yolov4 imports (the service's FastAPI stack, the
    opt-in backends and tracking aside), with its requirements, is on the GPU machine or among the wheels."""
    import ast
    import importlib.metadata as md

    from packaging.requirements import Requirement

    text = (ROOT / "benchmarks" / "gpu_wheels.sh").read_text()
    wheels, machine = _bash_array(text, "DISTS"), _bash_array(text, "MACHINE_HAS")
    assert not wheels & machine
    optional = {"faster_coco_eval", "openvino", "nncf", "fastapi", "starlette", "uvicorn", "h11"}
    optional |= {"trackers", "supervision", "motmetrics"}  # the `track` extra: predict.py track=
    # the `triton` (config check at export) and `sweep` (Optuna pruning) extras, imported lazily
    optional |= {"tritonclient", "google", "optuna"}
    optional |= {"wandb"}  # logger=wandb, imported when that logger starts its run
    modules = set()
    for path in (ROOT / "src" / "yolov4").rglob("*.py"):
        if "serve" in path.parts:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                modules |= {a.name.split(".")[0] for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                modules.add(node.module.split(".")[0])
    owners = md.packages_distributions()
    needed = {
        owners[m][0].lower() for m in modules - optional - {"yolov4"} if m in owners
    }  # stdlib modules have no distribution
    env = {"python_version": "3.12", "extra": ""}
    todo = [d for d in needed if d not in machine]
    seen = set()
    while todo:  # the wheels' own requirements, transitively (the machine's are its own)
        d = todo.pop().replace("_", "-")
        if d in seen or d in machine:
            continue
        seen.add(d)
        for r in md.requires(d) or []:
            req = Requirement(r)
            if req.marker is None or req.marker.evaluate(env):
                todo.append(req.name.lower().replace("_", "-"))
    assert seen <= wheels, f"not carried and not on the GPU machine: {sorted(seen - wheels)}"
