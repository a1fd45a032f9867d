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
same images), and pass one of the accuracy gates of :mod:`yolov4.export.gates` (``map50`` on
labelled images, ``agreement`` with fp32's detections on unlabelled ones; :class:`Agreement` is
re-exported here).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from yolov4.core.artifact import MODEL_INT8_BIN, MODEL_INT8_XML, MODEL_ONNX
from yolov4.core.preprocess import PreprocessConfig, preprocess
from yolov4.errors import ExportError
from yolov4.export.gates import (
    DEFAULT_GATE_POINTS,
    NO_BOXES,
    Agreement,
    Evaluate,
    agreement_gate,
    decoded_images,
    map50_gate,
    warn_skipped,
)
from yolov4.inference.backends import (
    OV_PRECISION,
    OnnxBackend,
    OpenVinoBackend,
    bf16_native,
    bf16_refusal,
    cpu_features,
    import_openvino,
    openvino_core,
)
from yolov4.inference.precision import measure
from yolov4.inference.predictor import Predictor

__all__ = [
    "Agreement",
    "NO_BOXES",
    "REDUCED_PARITY_TOL",
    "calibration_batch",
    "MIN_CALIBRATION_IMAGES",
    "check_request",
    "decoded_images",
    "quantize_int8",
    "reduced_precisions",
    "warn_skipped",
]

log = logging.getLogger(__name__)

# parity vs PyTorch on calibration images (see _parity): the mean probability difference, and
# the worst box difference of served predictions relative to the largest served coordinate (or
# the input side). Measured INT8: the tests' overfit 64-px yolov4-tiny, boxes within 2.8 px of
# 64; an untrained 64-px tiny, mean probability difference 0.003, boxes 7.7 px. These bounds
# only catch a broken model: the mAP gate judges the accuracy
REDUCED_PARITY_TOL = {
    "int8": {"prob": 0.1, "box": 0.1},
    "int8_bf16": {"prob": 0.1, "box": 0.1},  # int8's gate: the same IR, float layers in bf16
    "bf16": {"prob": 0.05, "box": 0.05},
}
INT8_MODELS = ("int8", "int8_bf16")  # the precisions that run model_int8.xml
PARITY_SCORE = 0.25  # boxes compared: PyTorch's objectness x class probability above it
PARITY_IMAGES = 4  # calibration images the parity check runs


# INT8 ranges are measured on the images there are; the parity and NMS checks cycle through
# fewer images than they take: one readable image is the least an export can calibrate on
MIN_CALIBRATION_IMAGES = 1


def calibration_batch(
    images: Sequence[Any], config: PreprocessConfig, what: str = "INT8 calibration"
) -> torch.Tensor:
    """``images`` (files or ``(H, W, 3)`` uint8 RGB arrays) preprocessed as the artifact's
    input: ``(N, 3, H, W)`` float32. Images that cannot be read are skipped with one warning
    naming ``what``; :class:`ExportError` when fewer than :data:`MIN_CALIBRATION_IMAGES`
    remain."""
    tensors, skipped = [], []
    for _, array, why in decoded_images(images):
        if array is None:
            skipped.append(why)
        else:
            tensors.append(preprocess(array, config)[0])
    warn_skipped(what, skipped, len(images))
    if len(tensors) < MIN_CALIBRATION_IMAGES:
        found = (
            f"none of {len(images)} can be read ({'; '.join(skipped)})" if images else "got none"
        )
        raise ExportError(
            f"{what} needs at least {MIN_CALIBRATION_IMAGES} image of the checkpoint's dataset, "
            f"{found}"
        )
    return torch.stack(tensors)


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
    model = openvino_core().read_model(str(onnx_path))
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
        hint = (
            " (INT8 moves the outputs of a barely trained network most: train it longer, or "
            "export precision=[fp32] for now)"
            if backend.precision.startswith("int8")
            else ""
        )
        raise ExportError(
            f"{name} ({backend.precision}) disagrees with PyTorch: probabilities differ by "
            f"{prob:.3g} on average (allowed {allowed['prob']}), boxes scored over {PARITY_SCORE} by up to "
            f"{box:.3g} px (allowed {allowed['box']} of {side:.0f} px); the export was not "
            f"written{hint}"
        )
    return {
        # the box difference is measured on served boxes only: none, nothing compared
        **({} if served.any() else {"boxes": NO_BOXES}),
        "max_abs_diff": box,
        "max_rel_diff": box / side,
        "box_scale_px": side,
        "mean_prob_diff": prob,
        "max_prob_diff": worst_prob,
        "boxes_compared": int(served.sum()),
        "images": len(x),
        "inputs": "calibration images",
    }


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
            "or unlabelled images to check its detections against fp32's (export.py: data=... "
            "or calibration=<folder of images>; export_artifact: evaluate=...)"
        )
    if not gate >= 0:
        raise ExportError(f"the mAP50 gate must be >= 0 points, got {gate}")
    for precision in [p for p in wanted if OV_PRECISION[p] == "bf16"]:
        features = cpu_features()
        if not bf16_native(features):
            raise ExportError(bf16_refusal(features, precision))
    if set(INT8_MODELS) & set(wanted) and not calibration:
        raise ExportError(
            f"precision {' and '.join(p for p in wanted if p in INT8_MODELS)} needs calibration images of "
            "the checkpoint's dataset (export.py: data=... or calibration=<folder of images>, calibration_images=N; "
            "export_artifact: calibration=...)"
        )


def _reduced_models(
    tmp: Path, wanted: Sequence[str], calibration: Sequence[Any] | None, config: PreprocessConfig
) -> tuple[dict[str, OpenVinoBackend], dict[str, dict[str, Any]], torch.Tensor | None]:
    """The OpenVINO backend of each ``wanted`` precision beside ``tmp/model.onnx`` (the INT8
    ones quantized here, on the calibration images), the metadata entries begun for them (how
    INT8 was made) and the calibration batch ``(N, 3, H, W)`` (``None`` without INT8)."""
    onnx_path = tmp / MODEL_ONNX
    backends = {p: OpenVinoBackend(onnx_path, p) for p in wanted if p == "bf16"}
    entries: dict[str, dict[str, Any]] = {}
    batch = None
    if set(INT8_MODELS) & set(wanted):
        batch = calibration_batch(calibration, config)
        made = quantize_int8(onnx_path, tmp, batch)
        for p in (p for p in wanted if p in INT8_MODELS):
            entries[p] = {"quantization": made}
            backends[p] = OpenVinoBackend(tmp / MODEL_INT8_XML, p)
    return backends, entries, batch


def reduced_precisions(
    tmp: Path,
    precisions: Sequence[str],
    reference_model: torch.nn.Module,
    predictor_args: dict[str, Any],
    calibration: Sequence[Any] | None,
    evaluate: Evaluate | None,
    gate: float = DEFAULT_GATE_POINTS,
) -> tuple[dict[str, dict[str, Any]], dict[str, Any]]:
    """Make and check the reduced precisions beside ``tmp/model.onnx``.

    ``reference_model``: the fused decoded PyTorch model; ``predictor_args``: the
    :class:`Predictor` arguments but the backend (class names, preprocess, thresholds,
    metadata). Returns ``({precision: metadata entry}, {file name: parity})`` (fp32's entry:
    its ``measured`` latency only, beside the reduced ones'; see
    :mod:`yolov4.inference.precision`); raises
    :class:`ExportError` when a precision cannot run here, disagrees with PyTorch, or fails its
    gate: more than ``gate`` mAP50 points lost (``evaluate`` a labelled evaluation) or an
    agreement below ``evaluate.minimum`` (``evaluate`` an :class:`Agreement`)."""
    wanted = [p for p in precisions if p != "fp32"]
    if not wanted:
        return {}, {}
    check_request(precisions, calibration, evaluate, gate)
    onnx_path = tmp / MODEL_ONNX
    config = predictor_args["preprocess"]
    backends, entries, batch = _reduced_models(tmp, wanted, calibration, config)
    parity: dict[str, Any] = {}
    fp32_predictor = Predictor(OpenVinoBackend(onnx_path, "fp32"), **predictor_args)
    if isinstance(evaluate, Agreement):
        gate_check, reference = agreement_gate, evaluate.detections(fp32_predictor)
    else:
        gate_check, reference = map50_gate, evaluate(fp32_predictor)
    import openvino as ov

    common = {"runtime": f"openvino {ov.__version__}", "cpu": cpu_features()}
    for precision in wanted:
        backend = backends[precision]
        file = MODEL_INT8_XML if precision in INT8_MODELS else MODEL_ONNX
        if batch is not None:
            parity[f"{file}@openvino-{precision}"] = _parity(backend, reference_model, batch, file)
        accuracy = gate_check(
            evaluate, Predictor(backend, **predictor_args), reference, precision, gate
        )
        accuracy.update(common, executed_precision=backend.executed)
        entries.setdefault(precision, {}).update(
            {
                "file": file,
                "backends": ["openvino"],
                **({"files": [MODEL_INT8_XML, MODEL_INT8_BIN]} if file == MODEL_INT8_XML else {}),
                "accuracy": accuracy,
            }
        )
    # each precision's batch-1 latency in its default runtime, on this CPU (the Predictor's
    # per-CPU choice reads it); fp32's in onnxruntime, the runtime it is served in by default
    image = batch[:1] if batch is not None else torch.rand(1, 3, *config.input_size)
    entries["fp32"] = {"measured": measure(OnnxBackend(onnx_path), image)}
    for precision in wanted:
        entries[precision]["measured"] = measure(backends[precision], image)
    return {p: entries[p] for p in ("fp32", *wanted)}, parity
