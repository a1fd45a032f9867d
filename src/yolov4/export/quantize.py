"""Reduced-precision models of an artifact, each with its mAP checked against fp32 at export.

* ``int8``: NNCF's post-training quantization of ``model.onnx`` read by OpenVINO (symmetric
  INT8 weights and activations, ranges from calibration images of the checkpoint's dataset,
  fast bias correction), saved as the OpenVINO IR ``model_int8.xml`` + ``.bin``. OpenVINO runs
  INT8 on any x86-64 CPU with SSE4.2 or later (AVX2 without VNNI emulates the dot products:
  slower than VNNI/AMX, still faster than fp32 on the 2-core EPYC measured, see the README).
* ``bf16``: ``model.onnx`` run by OpenVINO with its bf16 inference precision. Only on a CPU
  with native bf16 (AVX512-BF16 or AMX); elsewhere the export is refused, naming what the CPU
  has, since OpenVINO would silently execute f32 and the recorded mAP would not be bf16's.

Both are measured with OpenVINO, like the fp32 model they are compared with (same runtime,
same images, darknet's ``valid`` postprocess as evaluate.py uses): the export fails when a
reduced precision's mAP50 is more than ``gate`` points below fp32's, naming both numbers.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from yolov4.core.artifact import MODEL_INT8_BIN, MODEL_INT8_XML, MODEL_ONNX
from yolov4.core.preprocess import PreprocessConfig, preprocess
from yolov4.errors import ExportError
from yolov4.inference.backends import (
    OpenVinoBackend,
    bf16_native,
    bf16_refusal,
    cpu_features,
    import_openvino,
)
from yolov4.inference.images import load_images
from yolov4.inference.predictor import Predictor

__all__ = [
    "DEFAULT_GATE_POINTS",
    "REDUCED_PARITY_TOL",
    "Evaluate",
    "calibration_batch",
    "check_request",
    "quantize_int8",
    "reduced_precisions",
]

DEFAULT_GATE_POINTS = 1.0  # mAP50 points a reduced precision may lose against fp32 (issue 14)
# parity vs PyTorch on calibration images (see _parity): the mean probability difference, and
# the worst box difference of served predictions relative to the largest served coordinate (or
# the input side). Measured INT8: the tests' overfit 64-px yolov4-tiny, boxes within 2.8 px of
# 64; an untrained 64-px tiny, mean probability difference 0.003, boxes 7.7 px. These bounds
# only catch a broken model: the mAP gate judges the accuracy
REDUCED_PARITY_TOL = {"int8": {"prob": 0.1, "box": 0.1}, "bf16": {"prob": 0.05, "box": 0.05}}
PARITY_SCORE = 0.25  # boxes compared: PyTorch's objectness x class probability above it
PARITY_IMAGES = 4  # calibration images the parity check runs
# an evaluation of a Predictor on the stated validation subset:
# -> {"mAP50": float, "mAP": float, "images": int, "subset": str}
Evaluate = Callable[[Predictor], dict[str, Any]]


def calibration_batch(images: Sequence[Any], config: PreprocessConfig) -> torch.Tensor:
    """``images`` (files or ``(H, W, 3)`` uint8 RGB arrays) preprocessed as the artifact's
    input: ``(N, 3, H, W)`` float32."""
    if not len(images):
        raise ExportError("INT8 calibration needs images of the checkpoint's dataset, got none")
    return torch.stack([preprocess(a, config)[0] for a in load_images(list(images))])


def quantize_int8(onnx_path: Path, out_dir: Path, batch: torch.Tensor) -> dict[str, Any]:
    """NNCF post-training quantization of ``onnx_path`` calibrated on ``batch (N, 3, H, W)``,
    saved as ``out_dir/model_int8.xml`` + ``.bin``; returns how it was made."""
    try:
        import nncf
    except ImportError as e:  # an optional dependency: only INT8 export needs it
        raise ExportError(
            f"precision int8 needs NNCF: pip install 'yolov4[openvino]' ({e})"
        ) from None
    import openvino as ov

    start = time.perf_counter()
    data = nncf.Dataset([x[None].numpy() for x in batch])
    model = ov.Core().read_model(str(onnx_path))
    quantized = nncf.quantize(
        model,
        data,
        preset=nncf.QuantizationPreset.PERFORMANCE,  # symmetric: what INT8 kernels run fastest
        subset_size=len(batch),
    )
    ov.save_model(quantized, str(out_dir / MODEL_INT8_XML), compress_to_fp16=False)
    return {
        "tool": f"nncf {nncf.__version__}, openvino {ov.__version__}",
        "method": "post-training quantization (MinMax ranges, fast bias correction), "
        "symmetric INT8 weights (per channel) and activations",
        "calibration_images": len(batch),
        "seconds": round(time.perf_counter() - start, 1),
    }


def _parity(
    backend: OpenVinoBackend, reference: torch.nn.Module, batch: torch.Tensor, name: str
) -> dict[str, Any]:
    """The reduced model vs PyTorch on the first calibration images (the inputs it was
    calibrated for; random pixels are outside its activation ranges): the mean difference of
    objectness and class probabilities over every prediction (the worst one is recorded: INT8
    moves a few of them by up to ~0.5 on a barely trained model, so a maximum would refuse
    models the mAP gate passes), and the worst difference of the boxes of the predictions
    PyTorch scores above :data:`PARITY_SCORE` (a box of a near-zero score is ``exp`` of an
    unconstrained output, meaningless and never served), relative to the largest input side."""
    x = batch[:PARITY_IMAGES]
    with torch.inference_mode():
        ref = reference(x)
    out = backend(x)
    if not (out.shape == ref.shape and torch.isfinite(out).all()):
        raise ExportError(
            f"{name}: output of shape {tuple(out.shape)} with non-finite values or not PyTorch's "
            f"{tuple(ref.shape)}; the export was not written"
        )
    prob_diff = (out[..., 4:] - ref[..., 4:]).abs()
    prob, worst_prob = float(prob_diff.mean()), float(prob_diff.max())
    served = (ref[..., 4:5] * ref[..., 5:]).amax(-1) > PARITY_SCORE
    box = float((out[..., :4] - ref[..., :4]).abs()[served].max()) if served.any() else 0.0
    # boxes relative to the largest served coordinate or the input side (an untrained network
    # serves boxes larger than the image), as model.onnx's parity is relative to its outputs
    side = max(
        float(max(x.shape[-2:])), float(ref[..., :4][served].abs().max()) if served.any() else 0.0
    )
    allowed = REDUCED_PARITY_TOL[backend.precision]
    if not (prob <= allowed["prob"] and box <= allowed["box"] * side):
        raise ExportError(
            f"{name} ({backend.precision}) disagrees with PyTorch: probabilities differ by "
            f"{prob:.3g} on average (allowed {allowed['prob']}), boxes scored over {PARITY_SCORE} by up to "
            f"{box:.3g} px (allowed {allowed['box']} of {side:.0f} px); the export was not written"
        )
    return {
        "max_abs_diff": box,
        "max_rel_diff": box / side,
        "box_scale_px": side,
        "mean_prob_diff": prob,
        "max_prob_diff": worst_prob,
        "boxes_compared": int(served.sum()),
        "images": len(x),
        "inputs": "calibration images",
    }


def _scores(result: dict[str, Any]) -> dict[str, float]:
    return {k: round(float(result[k]), 5) for k in ("mAP50", "mAP")}


def check_request(
    precisions: Sequence[str],
    calibration: Sequence[Any] | None,
    evaluate: Evaluate | None,
    gate: float,
) -> None:
    """What a reduced precision needs, checked before any file is written (bf16: a CPU with
    native bf16): :class:`ExportError` naming what is missing."""
    wanted = [p for p in precisions if p != "fp32"]
    if not wanted:
        return
    import_openvino()  # ExportError naming the extra when it is not installed
    if evaluate is None:
        raise ExportError(
            f"precision {wanted} needs a validation set to check its mAP against fp32 "
            "(export.py: data=...; export_artifact: evaluate=...)"
        )
    if not gate >= 0:
        raise ExportError(f"the mAP50 gate must be >= 0 points, got {gate}")
    if "bf16" in wanted:
        features = cpu_features()
        if not bf16_native(features):
            raise ExportError(bf16_refusal(features))
    if "int8" in wanted and not calibration:
        raise ExportError(
            "precision int8 needs calibration images of the checkpoint's dataset "
            "(export.py: data=..., calibration_images=N; export_artifact: calibration=...)"
        )


def reduced_precisions(
    tmp: Path,
    precisions: Sequence[str],
    reference: torch.nn.Module,
    predictor_args: dict[str, Any],
    calibration: Sequence[Any] | None,
    evaluate: Evaluate | None,
    gate: float = DEFAULT_GATE_POINTS,
) -> tuple[dict[str, dict[str, Any]], dict[str, Any]]:
    """Make and check the reduced precisions beside ``tmp/model.onnx``.

    ``reference``: the fused decoded PyTorch model; ``predictor_args``: the
    :class:`Predictor` arguments but the backend (class names, preprocess, thresholds,
    metadata). Returns ``({precision: metadata entry}, {file name: parity})``; raises
    :class:`ExportError` when a precision cannot run here, disagrees with PyTorch, or loses
    more than ``gate`` mAP50 points."""
    wanted = [p for p in precisions if p != "fp32"]
    if not wanted:
        return {}, {}
    check_request(precisions, calibration, evaluate, gate)
    onnx_path = tmp / MODEL_ONNX
    backends = {p: OpenVinoBackend(onnx_path, p) for p in wanted if p == "bf16"}
    config = predictor_args["preprocess"]
    batch = None
    entries: dict[str, dict[str, Any]] = {}
    parity: dict[str, Any] = {}
    if "int8" in wanted:
        batch = calibration_batch(calibration, config)
        entries["int8"] = {"quantization": quantize_int8(onnx_path, tmp, batch)}
        backends["int8"] = OpenVinoBackend(tmp / MODEL_INT8_XML, "int8")
    fp32 = evaluate(Predictor(OpenVinoBackend(onnx_path, "fp32"), **predictor_args))
    features = cpu_features()
    import openvino as ov

    for precision in wanted:
        backend = backends[precision]
        file = MODEL_INT8_XML if precision == "int8" else MODEL_ONNX
        if batch is not None:
            parity[f"{file}@openvino-{precision}"] = _parity(backend, reference, batch, file)
        result = evaluate(Predictor(backend, **predictor_args))
        drop = 100 * (fp32["mAP50"] - result["mAP50"])
        accuracy = {
            "subset": fp32["subset"],
            "images": fp32["images"],
            "fp32": _scores(fp32),
            precision: _scores(result),
            "mAP50_drop_points": round(drop, 3),
            "gate_points": gate,
            "runtime": f"openvino {ov.__version__}",
            "executed_precision": backend.executed,
            "cpu": features,
        }
        if not drop <= gate:
            raise ExportError(
                f"{precision} mAP50 {100 * result['mAP50']:.2f} is {drop:.2f} points below "
                f"fp32's {100 * fp32['mAP50']:.2f} on {fp32['subset']} (gate: {gate} points, "
                "export.py map50_gate=...); the export was not written"
            )
        entries.setdefault(precision, {}).update(
            {
                "file": file,
                "backends": ["openvino"],
                **({"files": [MODEL_INT8_XML, MODEL_INT8_BIN]} if precision == "int8" else {}),
                "accuracy": accuracy,
            }
        )
    return {p: entries[p] for p in wanted}, parity
