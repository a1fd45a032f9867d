"""OpenAPI conformance fuzzing of the live service with schemathesis (the ``fuzz`` extra).

    pip install -e ".[fuzz]"
    python benchmarks/fuzz_api.py [--max-examples 100] [--seed 0] [--checks all]

Exports an artifact of a small randomly initialised yolov4-tiny (3 classes, 128x128 input, so
each model call is cheap), starts ``python -m yolov4.serve`` on a free loopback port and runs
``st run`` against its ``/openapi.json``: every operation, schema-valid and schema-violating
requests (``--mode all``), every check schemathesis has unless ``--checks`` says otherwise
(no 5xx, status codes, content types, headers and bodies as documented, invalid data refused,
valid data accepted, 405 with ``Allow`` for undocumented methods, ...).

``positive_data_acceptance`` is excluded by default: the schema can say "a binary file" but not
"a decodable image", so schema-valid random bytes are rightly refused with a documented 415.

Prints schemathesis' report and writes benchmarks/results/fuzz_api.json (operations, test
cases, failures by check, the server's responses by status from ``/metrics``, its 5xx count and
whether its log holds a traceback).
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import httpx
import torch
from common import machine_info, save, spread_head_biases, start_server

from yolov4 import build_model, save_checkpoint
from yolov4.export.artifact import export_artifact

# schema-valid random bytes are not an image: the 415 they get is documented (module docstring)
DEFAULT_EXCLUDED = ("positive_data_acceptance",)


def make_artifact(out: Path) -> Path:
    torch.manual_seed(0)
    model = spread_head_biases(build_model("yolov4-tiny", num_classes=3).eval())
    preprocess = {"input_size": [128, 128], "mode": "letterbox"}
    ckpt = save_checkpoint(out / "tiny.pt", model, ["circle", "square", "cross"], preprocess)
    return export_artifact(ckpt, out / "export", formats=["onnx"])


def run_schemathesis(url: str, args: argparse.Namespace, report: Path) -> tuple[int, str]:
    st = shutil.which("st") or shutil.which("schemathesis")
    if st is None:
        raise SystemExit('schemathesis is not installed: pip install -e ".[fuzz]"')
    cmd = [st, "run", f"{url}/openapi.json", "--checks", args.checks,
           "--max-examples", str(args.max_examples), "--seed", str(args.seed),
           "--mode", "all", "--workers", "1", "--no-color", "--request-timeout", "60",
           "--generation-database", "none", "--continue-on-failure",
           "--report", "json", "--report-json-path", str(report)]  # fmt: skip
    if args.exclude_checks:
        cmd += ["--exclude-checks", args.exclude_checks]
    done = subprocess.run(cmd, capture_output=True, text=True)
    return done.returncode, done.stdout + done.stderr


def summarise(report: dict, output: str) -> dict:
    """The run's numbers from schemathesis' JSON report."""
    return {
        "schemathesis_version": report.get("schemathesis_version"),
        "running_time_s": round(report.get("running_time", 0.0), 1),
        "operations": report.get("operations"),
        "phases": {k: v.get("status") for k, v in report.get("phases", {}).items()},
        "test_cases": report.get("test_cases"),
        "failures": [
            {k: f.get(k) for k in ("code", "title", "count", "operations")}
            for f in report.get("failures", [])
        ],
        "errors": report.get("errors", []),
        "warnings": {k: v for k, v in report.get("warnings", {}).items() if v},
        "valid_rates": report.get("valid_rates"),
        "output_tail": [line for line in output.splitlines() if line.strip()][-12:],
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--max-examples", type=int, default=100, help="test cases per operation")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--checks", default="all")
    p.add_argument("--exclude-checks", default=",".join(DEFAULT_EXCLUDED))
    args = p.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        artifact = make_artifact(tmp)
        proc, url = start_server(artifact, tmp / "server.log")
        try:
            started = time.perf_counter()
            code, output = run_schemathesis(url, args, tmp / "report.json")
            seconds = time.perf_counter() - started
            metrics = httpx.get(url + "/metrics", timeout=10).text
        finally:
            proc.terminate()
            proc.wait(60)
        log = (tmp / "server.log").read_text(errors="replace")
        report_path = tmp / "report.json"
        report = json.loads(report_path.read_text()) if report_path.exists() else {}

    by_status: dict[int, int] = {}
    for status, n in re.findall(r'_requests_total\{[^}]*status="(\d+)"\} (\d+)', metrics):
        by_status[int(status)] = by_status.get(int(status), 0) + int(n)
    payload = {
        "machine": machine_info(),
        "settings": vars(args),
        "schemathesis_exit_code": code,
        "seconds": round(seconds, 1),
        "server_requests_by_status": dict(sorted(by_status.items())),
        "server_5xx": sum(n for s, n in by_status.items() if s >= 500),
        "server_log_has_traceback": "Traceback" in log,
        **summarise(report, output),
    }
    print(output)
    shown = ("output_tail", "valid_rates", "machine")
    print(json.dumps({k: v for k, v in payload.items() if k not in shown}, indent=2))
    print("saved", save("fuzz_api", payload))


if __name__ == "__main__":
    main()
