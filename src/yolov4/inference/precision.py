"""Which precision of an artifact to serve on this CPU, when the caller does not say.

Every precision in an artifact's ``metadata.json`` passed its gate at export (a failed one is
never written). The export also measures each one's batch-1 latency in the runtime that serves
it by default and records it with the CPU it ran on (:func:`measure`): ``precisions.<name>.
measured = {"latency_ms", "batch", "runs", "backend", "cpu": {"cpu", "flags",
"openvino_capabilities"}}``.

:func:`choose_precision` keeps the precisions this CPU can run (bf16 and int8_bf16 need native
bf16; anything but fp32 needs OpenVINO), then

* when every one of them has a measurement from a CPU of this kind (the same
  :data:`~yolov4.inference.backends.REPORTED_CPU_FLAGS`), the fastest measured;
* otherwise the first in :data:`EXPECTED_ORDER` for this kind of CPU: on native bf16 (AMX,
  AVX512-BF16) bf16, int8_bf16, int8, fp32; elsewhere int8 (VNNI or AVX2), fp32.

The reason is returned with the choice, and logged by the Predictor.
"""

from __future__ import annotations

import logging
import os
import statistics
import time
from typing import Any

import torch

from yolov4.core.artifact import AUTO_PRECISION, artifact_precisions
from yolov4.inference.backends import bf16_native, cpu_features, openvino_available

__all__ = ["EXPECTED_ORDER", "MEASURE_RUNS", "choose_precision", "measure", "resolve_precision"]

log = logging.getLogger(__name__)

MEASURE_RUNS = 5  # timed batch-1 calls per precision at export (after one warm-up call)
# the fastest first, per kind of CPU (benchmarks/predict.py, docs/cpu-precision.md)
EXPECTED_ORDER = {
    "bf16": ("bf16", "int8_bf16", "int8", "fp32"),
    "other": ("int8", "fp32"),
}
NEEDS_BF16 = ("bf16", "int8_bf16")


def measure(backend: Any, image: torch.Tensor, runs: int = MEASURE_RUNS) -> dict[str, Any]:
    """``backend``'s median latency on ``image (1, 3, H, W)`` over ``runs`` calls after one
    warm-up call, with the CPU it ran on: the ``measured`` record of a precision."""
    backend(image)
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        backend(image)
        times.append(time.perf_counter() - start)
    return {
        "latency_ms": round(1000 * statistics.median(times), 2),
        "batch": int(image.shape[0]),
        "runs": runs,
        "backend": getattr(backend, "name", type(backend).__name__),
        "cpu": cpu_features(),
    }


def choose_precision(
    meta: dict[str, Any], features: dict[str, Any] | None = None, backend: str | None = None
) -> tuple[str, str]:
    """``(precision, why)``: the precision of the artifact ``meta`` to serve on the CPU of
    ``features`` (default this one; :func:`~yolov4.inference.backends.cpu_features`), see the
    module docstring; with ``backend``, among the precisions that runtime runs."""
    here = features or cpu_features()
    precisions = artifact_precisions(meta)
    if backend is not None:
        mine = {p: e for p, e in precisions.items() if backend in e.get("backends", ())}
        precisions = mine or precisions  # none: the caller names the mismatch
    bf16 = bf16_native(here)
    ov = openvino_available()
    runnable = [p for p in precisions if (p == "fp32" or ov) and (p not in NEEDS_BF16 or bf16)]
    left = sorted(set(precisions) - set(runnable))
    skipped = (
        f"; {', '.join(left)} not runnable here ({'no native bf16' if bf16 else 'needs native bf16'}"
        f"{'' if ov else ', no OpenVINO'})"
        if left
        else ""
    )
    if not runnable:  # an artifact of bf16 models only, on a CPU without bf16
        runnable = ["fp32"] if "fp32" in precisions else list(precisions)
    kind = ", ".join(here["flags"]) or "none of the reported flags"
    measured = {p: precisions[p].get("measured") for p in runnable}
    same = all(
        isinstance(m, dict) and m.get("cpu", {}).get("flags") == here["flags"]
        for m in measured.values()
    )
    if same:
        chosen = min(runnable, key=lambda p: measured[p]["latency_ms"])
        times = ", ".join(f"{p} {measured[p]['latency_ms']:g} ms" for p in runnable)
        why = f"fastest measured at export on this CPU kind ({kind}): {times}"
    else:
        order = EXPECTED_ORDER["bf16" if bf16 else "other"]
        chosen = next((p for p in order if p in runnable), runnable[0])
        why = (
            f"the expected fastest on a CPU {'with' if bf16 else 'without'} native bf16 "
            f"({kind}; order {', '.join(order)}): {_unmeasured(measured, here['flags'])}"
        )
    return chosen, f"precision {AUTO_PRECISION} -> {chosen}: {why}{skipped}"


def _unmeasured(measured: dict[str, Any], flags: list[str]) -> str:
    """What keeps the export's measurements from deciding: precisions not measured, and the
    other CPU kinds (flags) the rest were measured on."""
    missing = [p for p, m in measured.items() if not isinstance(m, dict)]
    other = sorted(
        {tuple(m.get("cpu", {}).get("flags", ())) for m in measured.values() if m} - {tuple(flags)}
    )
    parts = [f"{', '.join(missing)} not measured at export"] if missing else []
    if other:
        kinds = "; ".join(", ".join(f) or "no reported flags" for f in other)
        parts.append(f"the export measured on another CPU kind ({kinds})")
    return " and ".join(parts)


def resolve_precision(
    meta: dict[str, Any],
    precision: str | None,
    where: str | os.PathLike,
    backend: str | None = None,
) -> tuple[str, str | None]:
    """``(precision, why)`` to load from the artifact ``meta`` (at ``where``): ``precision``,
    else its ``default_precision``; ``auto`` chosen by :func:`choose_precision` (among the
    precisions ``backend`` runs, when named) and logged (``why`` is ``None`` for a named
    precision)."""
    precision = precision or meta.get("default_precision", "fp32")
    if precision != AUTO_PRECISION:
        return precision, None
    held = list(artifact_precisions(meta))
    if len(held) <= 1:  # nothing to choose: an fp32-only export, or no model (the caller says)
        return (held or ["fp32"])[0], None
    chosen, why = choose_precision(meta, backend=backend)
    log.info("%s: %s", where, why)
    return chosen, why
