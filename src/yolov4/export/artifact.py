"""The serving artifact: the files of the requested formats and ``metadata.json``.

The formats are the table of :mod:`yolov4.export.formats`. ``model.onnx`` and
``model.torchscript`` hold the fused network followed by the decode
(:func:`yolov4.ops.decode`): input ``images (B, 3, H, W)`` float32 as the preprocessing makes
them (``[0, 1]``, the stored colour order), ``B`` dynamic, ``H, W`` fixed to the artifact's
input size; output ``predictions (B, N, 5 + C)`` ``[cx, cy, w, h, objectness, class probs...]``
in input pixels. NMS and the mapping back to original pixels happen in the Predictor, from the
metadata. ``onnx_nms`` (``model_nms.onnx``) and ``triton`` (a Triton model repository) add NMS
inside the graph with fixed-size outputs (:mod:`yolov4.export.onnx_nms`), ``onnx_uint8`` the
preprocessing's last step (:mod:`yolov4.export.onnx_uint8`). :func:`export_artifact`
validates the request, writes and checks each format (every file is run against PyTorch on a
few inputs and the worst difference recorded), then :func:`build_metadata`; a file that
disagrees fails the export and nothing is left behind.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import yolov4.export.formats  # noqa: F401  (the table: registers the formats)
from yolov4.core.artifact import (
    ARTIFACT_FORMAT,
    AUTO_PRECISION,
    FORMATS,
    METADATA,
    PRECISIONS,
    check_class_names,
    sha256,
)
from yolov4.core.checkpoint import Checkpoint, load_checkpoint
from yolov4.core.model import DecodedModel, running_config
from yolov4.core.postprocess import SERVING
from yolov4.errors import ConfigError, ExportError
from yolov4.export.gates import DEFAULT_GATE_POINTS, Evaluate
from yolov4.export.job import ExportJob
from yolov4.export.output import check_output, install, remove_stale_exports, temp_dir
from yolov4.export.parity import PARITY_RTOL
from yolov4.export.quantize import check_request, reduced_precisions
from yolov4.models import fuse_model
from yolov4.models.stride import check_stride_multiple
from yolov4.version import versions

__all__ = ["export_artifact", "build_metadata", "check_export_request", "PARITY_RTOL"]

DEFAULT_OPSET = 17
try:  # the newest opset torch's TorchScript-based exporter writes
    from torch.onnx._constants import ONNX_TORCHSCRIPT_EXPORTER_MAX_OPSET as MAX_OPSET
except ImportError:
    MAX_OPSET = 20

# how the Predictor's preprocessing turns an image into the network input, for a consumer that
# reimplements it (the settings themselves are "preprocess"); yolov4.ops.letterbox, core.images.
# The letterbox and box formulas are Python, one assignment per "; "-separated part
# (tests/export/test_preprocess_rules.py evaluates them against letterbox_params and unmap_boxes).
PREPROCESS_RULES = {
    "decode": "8-bit RGB: grey repeated to 3 channels, alpha dropped, palette and CMYK converted, "
    "16-bit to its high byte; the EXIF orientation applied (JPEG, PNG, WebP, TIFF)",
    "resize": "OpenCV INTER_LINEAR (cv2.resize), no antialiasing",
    "letterbox": "r = min(H / H0, W / W0); w = min(W, max(1, round(W0 * r))); "
    "h = min(H, max(1, round(H0 * r))); pad_x = (W - w) // 2; pad_y = (H - h) // 2; "
    "the content resized to w x h placed at (pad_x, pad_y), the rest filled with pad_value; "
    "round() rounds halves to even (Python's round: round(2.5) = 2)",
    "stretch": "resized to W x H directly, no border; w = W; h = H; pad_x = 0; pad_y = 0",
    "input": "float32, (batch, 3, H, W), channel order and scale as preprocess says",
    "boxes back": "x0 = min(W0, max(0, (x - pad_x) * W0 / w)); "
    "y0 = min(H0, max(0, (y - pad_y) * H0 / h)); for x1, x2 and y1, y2 (clipped to the image)",
    "padding boxes": "boxes with no area inside (pad_x, pad_y, pad_x + w, pad_y + h) are dropped "
    "before NMS and max_det (the graphs with NMS inside return them: drop rows with no area "
    "once clipped)",
}


def check_export_request(
    formats: Sequence[str],
    opset: int,
    precisions: Sequence[str],
    default_precision: str | None,
) -> str:
    """:class:`ExportError` for formats, opset or precisions out of range; returns the default
    precision."""
    unknown = [f for f in formats if f not in FORMATS]
    if unknown or not formats:
        raise ExportError(
            f"formats must be a non-empty subset of {sorted(FORMATS)}, got {list(formats)}"
        )
    if (
        isinstance(opset, bool)
        or not isinstance(opset, int)
        or not (DEFAULT_OPSET <= opset <= MAX_OPSET)
    ):
        raise ExportError(
            f"opset must be an integer in [{DEFAULT_OPSET}, {MAX_OPSET}], got {opset!r}"
        )
    bad = [p for p in precisions if p not in PRECISIONS]
    if bad or not precisions:
        raise ExportError(
            f"precisions must be a non-empty subset of {list(PRECISIONS)}, got {list(precisions)}"
        )
    default_precision = default_precision or AUTO_PRECISION  # chosen per CPU when served
    if default_precision not in (*precisions, "fp32", AUTO_PRECISION):
        raise ExportError(
            f"default_precision must be {AUTO_PRECISION!r} or one of the exported "
            f"{list(dict.fromkeys(['fp32', *precisions]))}, got {default_precision!r}"
        )
    reduced = set(precisions) - {"fp32"}
    missing = [p for p in reduced if not any(p in FORMATS[f].precisions for f in formats)]
    if missing:
        carriers = [f for f in FORMATS.values() if set(missing) & set(f.precisions)]
        raise ExportError(
            f"precisions {list(precisions)} are made from "
            f"{' or '.join(str(f.model_file) for f in carriers)}: add "
            f"{' or '.join(f.name for f in carriers)} to formats {list(formats)}"
        )
    return default_precision


def _job(
    ckpt: Checkpoint,
    opset: int,
    input_size: Sequence[int] | None,
    thresholds: dict | None,
    calibration: Sequence[Any] | None = None,
    own: bool = False,
    formats: Sequence[str] = (),
) -> ExportJob:
    """What the formats are written from: the fused fp32 model, validated preprocessing (at
    ``input_size``) and thresholds, the calibration images, and the unfused network when one
    of ``formats`` writes it. ``own``: ``ckpt`` was loaded for this export alone, and its
    network is fused in place unless a format needs it unfused."""
    size = input_size or ckpt.preprocess.input_size
    size = check_stride_multiple(size, ckpt.model.config.max_stride, "input_size", ExportError)
    try:
        settings = SERVING.update(thresholds).resolve(ckpt.model.config)
    except ConfigError as e:
        raise ExportError(f"thresholds: {e}") from None
    unfused = any(FORMATS[name].unfused for name in formats)
    # a copy of the caller's model is fused: it keeps its device, dtype and BN layers
    fused = fuse_model(ckpt.model, inplace=own and not unfused)
    wrapped = DecodedModel(fused.cpu().float()).eval()
    preprocess = ckpt.preprocess.with_size(size)
    return ExportJob(
        model=wrapped,
        config=running_config(ckpt.model.config, preprocess),
        class_names=list(ckpt.class_names),
        preprocess=preprocess,
        settings=settings,
        opset=opset,
        calibration=calibration,
        network=ckpt.model if unfused else None,
    )


def _file_record(folder: Path, name: str) -> dict[str, Any]:
    return {"sha256": sha256(folder / name), "bytes": (folder / name).stat().st_size}


def _file_records(
    folder: Path, formats: Sequence[str], reduced: dict[str, Any]
) -> dict[str, dict[str, Any]]:
    """The checksum and size of every file of ``formats`` and of the ``reduced`` precisions."""
    files = {}
    for name in formats:
        files.update({f: _file_record(folder, f) for f in FORMATS[name].files})
    for entry in reduced.values():
        for name in entry.get("files", [entry["file"]]):
            files.setdefault(name, _file_record(folder, name))
    return files


def _fp32(formats: Sequence[str]) -> dict[str, Any] | None:
    """The fp32 entry of ``precisions``: the file of the first requested format (table order)
    a Predictor runs, and every installed runtime of the requested formats; None when no
    requested format is a Predictor model (e.g. an NMS-graph-only artifact)."""
    carrying = [f for f in FORMATS.values() if f.name in formats and f.precisions.get("fp32")]
    if not carrying:
        return None
    backends = [
        r
        for f in carrying
        for r in f.precisions["fp32"]
        if getattr(f.backends[r], "available", lambda: True)()
    ]
    return {"file": carrying[0].model_file, "backends": backends}


def _reduced(
    job: ExportJob,
    folder: Path,
    precisions: Sequence[str],
    calibration: Sequence[Any] | None,
    evaluate: Evaluate | None,
    map50_gate: float,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The reduced ``precisions`` written into ``folder`` from ``job``'s model and gated against
    fp32 (:func:`yolov4.export.quantize.reduced_precisions`): their metadata entries and
    parity records."""
    return reduced_precisions(
        folder,
        precisions,
        job.model,
        {
            "class_names": job.class_names,
            "preprocess": job.preprocess,
            "thresholds": job.settings.to_dict(),
            "metadata": {"model": job.config.to_dict()},
        },
        calibration,
        evaluate,
        map50_gate,
    )


def build_metadata(
    job: ExportJob,
    ckpt: Checkpoint,
    formats: Sequence[str],
    folder: Path,
    reduced: dict[str, Any],
    default_precision: str,
    parity: dict[str, Any],
    conf_source: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """``metadata.json`` of the files written into ``folder``: the contract
    (:func:`yolov4.core.artifact.validate_metadata`), each format's own entry, checksums and
    parity records."""
    c, size = job.config, job.size
    reduced = dict(reduced)
    measured = reduced.pop("fp32", {})  # fp32's latency, measured beside the reduced ones
    files = _file_records(folder, formats, reduced)
    described: dict[str, Any] = {"opset": None}
    for name in formats:
        if FORMATS[name].describe is not None:
            described.update(FORMATS[name].describe(job))
    fp32 = _fp32(formats)
    if fp32 is not None:
        fp32.update(measured)
    return {
        "format": ARTIFACT_FORMAT,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "formats": list(formats),
        "model": c.to_dict(),
        "class_names": list(job.class_names),
        "input_size": size,
        "preprocess": job.preprocess.to_dict(),
        "preprocess_rules": PREPROCESS_RULES,  # what a consumer needs beyond the settings
        "input": {"name": "images", "shape": ["batch", 3, *size], "dtype": "float32"},
        "output": {
            "name": "predictions",
            "shape": [
                "batch",
                sum(c.num_anchors * (size[0] // s) * (size[1] // s) for s in c.strides),
                5 + c.num_classes,
            ],
            "layout": "cx, cy, w, h (input pixels), objectness, class probabilities",
        },
        "anchors": c.head_anchors(),
        "strides": list(c.strides),
        "scale_x_y": list(c.scale_x_y),
        "thresholds": job.settings.to_dict(),
        **({"conf_source": conf_source} if conf_source else {}),
        # an artifact of no Predictor model (e.g. NMS graph only) lists no precisions
        **(
            {"precisions": {"fp32": fp32, **reduced}, "default_precision": default_precision}
            if fp32 and fp32["backends"]
            else {}
        ),
        **described,
        "versions": versions("onnx", "onnxruntime", "openvino"),
        "files": files,
        "parity": parity,
        # the run's data config (what evaluate.py artifact= scores, as for the checkpoint)
        "source": {"metrics": ckpt.metrics, "trained": ckpt.trained, "data": ckpt.data},
    }


def export_artifact(
    source: Checkpoint | str | os.PathLike,
    out_dir: str | os.PathLike,
    formats: Sequence[str] = ("onnx", "torchscript"),
    opset: int = DEFAULT_OPSET,
    input_size: Sequence[int] | None = None,
    thresholds: dict[str, Any] | None = None,
    precisions: Sequence[str] = ("fp32",),
    default_precision: str | None = None,
    calibration: Sequence[Any] | None = None,
    evaluate: Evaluate | None = None,
    map50_gate: float = DEFAULT_GATE_POINTS,
    conf_source: dict[str, Any] | None = None,
    overwrite: bool = False,
) -> Path:
    """Write the artifact directory for a checkpoint (path or loaded :class:`Checkpoint`).

    ``input_size`` ``(H, W)`` defaults to the checkpoint's preprocessing size. The directory is
    built next to ``out_dir`` and moved into place only once every file passed its parity check,
    so a failed export never leaves a half-written or mismatched artifact.

    ``formats``: names of the formats table (:mod:`yolov4.export.formats`: onnx, torchscript,
    onnx_nms, triton, onnx_uint8, darknet, and any registered), each written and checked in
    this order; a format that cannot hold the model (its ``refuse``) fails the export before
    any file is written.

    ``precisions`` (:data:`~yolov4.core.artifact.PRECISIONS`): fp32 is always written (the
    reference); ``int8`` and ``bf16`` are made by :mod:`yolov4.export.quantize` from
    ``calibration`` images (files or RGB arrays of the checkpoint's dataset) and checked by
    ``evaluate`` (a Predictor -> its mAP50/mAP on a stated validation subset) against fp32: more
    than ``map50_gate`` points lost fails the export; each precision's batch-1 latency is
    recorded with the CPU it was measured on. The NMS graphs (onnx_nms, triton) are checked
    on the first ``calibration`` images, else on generated scenes
    (:attr:`~yolov4.export.job.ExportJob.check_images`), whatever the precisions. ``default_precision`` is what a Predictor and the
    service load unless told otherwise; ``auto`` (the default): the fastest for the CPU they
    run on (:func:`yolov4.inference.precision.choose_precision`).
    ``conf_source``: where ``thresholds["conf"]`` came from (e.g. the best-F1 confidence of a
    ``pr_f1.json``), recorded as metadata ``conf_source``.

    ``out_dir`` is checked before anything is loaded (:func:`yolov4.export.output.check_output`):
    a missing or empty folder or an earlier artifact; another folder only with ``overwrite``.
    Files in it that the old artifact does not own are kept; the new artifact replaces the old
    one in a single folder exchange (:func:`yolov4.export.output.install`).
    """
    out_dir = check_output(out_dir, overwrite)
    own = not isinstance(source, Checkpoint)
    ckpt = load_checkpoint(source) if own else source
    check_class_names(ckpt.class_names, ckpt.model.config.num_classes, "export")
    default_precision = check_export_request(formats, opset, precisions, default_precision)
    check_request(precisions, calibration, evaluate, map50_gate)
    job = _job(ckpt, opset, input_size, thresholds, calibration, own, formats)
    for name in formats:  # a format that cannot hold this model says so before any file
        if FORMATS[name].refuse is not None:
            FORMATS[name].refuse(job)
    remove_stale_exports(out_dir)
    tmp, lock = temp_dir(out_dir)
    try:
        parity: dict[str, Any] = {}
        for name in formats:
            FORMATS[name].write(job, tmp)
            parity.update(FORMATS[name].check(job, tmp))
        reduced, reduced_parity = _reduced(job, tmp, precisions, calibration, evaluate, map50_gate)
        parity.update(reduced_parity)
        metadata = build_metadata(
            job, ckpt, formats, tmp, reduced, default_precision, parity, conf_source
        )
        (tmp / METADATA).write_text(json.dumps(metadata, indent=2) + "\n")
        install(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    finally:
        if lock >= 0:
            os.close(lock)
    return out_dir
