"""The serving artifact: ``model.onnx`` (+ ``model.torchscript``) and ``metadata.json``.

Both files hold the fused network followed by the decode (:func:`yolov4.ops.decode`): input
``images (B, 3, H, W)`` float32 as the preprocessing makes them (``[0, 1]``, the stored colour
order), ``B`` dynamic, ``H, W`` fixed to the artifact's input size; output ``predictions
(B, N, 5 + C)`` ``[cx, cy, w, h, objectness, class probs...]`` in input pixels. NMS and the
mapping back to original pixels happen in the Predictor, from the metadata. Optionally
(``formats`` with ``onnx_nms``) ``model_nms.onnx`` adds NMS inside the graph with fixed-size
outputs (:mod:`yolov4.export.onnx_nms`) for consumers without Python. Before
:func:`export_artifact` returns, every file is run against PyTorch on a few inputs and the worst
difference is recorded; a file that disagrees fails the export and nothing is left behind.
"""

from __future__ import annotations

import json
import os
import shutil
import warnings
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from yolov4.core.artifact import (
    ARTIFACT_FORMAT,
    AUTO_PRECISION,
    FORMATS,
    METADATA,
    MODEL_NMS_ONNX,
    MODEL_ONNX,
    MODEL_TORCHSCRIPT,
    PRECISIONS,
    check_class_names,
    sha256,
)
from yolov4.core.checkpoint import Checkpoint, load_checkpoint
from yolov4.core.model import DecodedModel
from yolov4.core.postprocess import SERVING
from yolov4.core.preprocess import PreprocessConfig
from yolov4.errors import ConfigError, ExportError
from yolov4.export.onnx_nms import NmsModel
from yolov4.export.output import check_output, install, remove_stale_exports, temp_dir
from yolov4.export.quantize import (
    DEFAULT_GATE_POINTS,
    Evaluate,
    check_request,
    reduced_precisions,
)
from yolov4.inference.backends import import_openvino, load_backend, openvino_available
from yolov4.models import fuse_model
from yolov4.ops.boxes import box_iou, cxcywh_to_xyxy

__all__ = ["export_artifact"]

DEFAULT_OPSET = 17
try:  # the newest opset torch's TorchScript-based exporter writes
    from torch.onnx._constants import ONNX_TORCHSCRIPT_EXPORTER_MAX_OPSET as MAX_OPSET
except ImportError:
    MAX_OPSET = 20
PARITY_RTOL = 1e-3  # worst |difference| allowed, relative to the largest |output|
PARITY_BATCHES = (1, 2)
# NMS graph parity: scores this close may be one prediction's in the two runtimes, and tie (float
# noise orders them): a deep network's scores differ by up to ~5e-4 between onnxruntime and
# PyTorch (yolov4-p6's 300 layers)
SCORE_TOL = 2e-3
IOU_TOL = 1e-3  # NMS graph parity: IoU differences from float noise near the threshold
NMS_CHECK_ROWS = 32  # detections compared with the predictions at once (bounds the memory)


def _finite(name: str, *arrays: Any) -> None:
    """Raise :class:`ExportError` when an output holds NaN or infinity (``max(0.0, nan)`` is
    ``0.0``: a NaN model would otherwise pass the parity check with a difference of 0)."""
    bad = sum(int((~np.isfinite(np.asarray(a, dtype=np.float64))).sum()) for a in arrays)
    if bad:
        raise ExportError(
            f"{name}: {bad:,} non-finite values (NaN or infinite) in its outputs or PyTorch's on "
            "random inputs; the checkpoint's weights are not usable (NaN training?); the "
            "export was not written"
        )


def _versions() -> dict[str, str]:
    import onnx
    import onnxruntime

    from yolov4.version import __version__

    versions = {
        "yolov4": __version__,
        "torch": str(torch.__version__),
        "onnx": onnx.__version__,
        "onnxruntime": onnxruntime.__version__,
    }
    if openvino_available():
        versions["openvino"] = import_openvino().__version__
    return versions


def _export_onnx(
    model: nn.Module,
    path: Path,
    example: torch.Tensor,
    opset: int,
    outputs: Sequence[str] = ("predictions",),
) -> None:
    """Legacy (TorchScript-based) ONNX export, dynamic batch on the input and every output."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model,
            (example,),
            str(path),
            dynamo=False,
            opset_version=opset,
            input_names=["images"],
            output_names=list(outputs),
            dynamic_axes={name: {0: "batch"} for name in ("images", *outputs)},
        )


def _check_nms_image(
    rows: np.ndarray,
    count: int,
    pred: torch.Tensor,
    model: NmsModel,
    size: Sequence[int],
    tol: float,
) -> float | str:
    """One image of ``model_nms.onnx``'s output (``rows (max_det, 6)``, ``count``) against
    PyTorch's decoded predictions ``pred (N, 5 + C)`` of the same image: is it the NMS of those
    predictions? Returns the worst box difference (input pixels) of a row to its prediction,
    or what is wrong (a str); ``tol``: the box difference allowed.

    Greedy NMS is fixed by its scores only up to ties: boxes whose scores differ by float noise
    (many, for an untrained network or random inputs) may be taken in another order, and then
    other boxes of the run are kept. So the rows are checked for what defines NMS rather than
    compared with one reference order: every row is a prediction of its class (clipped box, and
    score within :data:`SCORE_TOL`), best first, zeros past ``count``; no two rows of a class
    inside the image overlap more than ``iou`` (a clipped row may stand for several
    predictions); every prediction above ``conf`` that is not a row is suppressed by a row of
    its class scoring at least as high, or ranks below the ``max_det`` cut."""
    h, w = (float(v) for v in size)
    conf, iou, max_det = model.conf, model.iou, model.max_det
    if count > max_det or rows[count:].any():
        return f"{count} detections but non-zero rows past them, or more than max_det={max_det}"
    kept = torch.from_numpy(np.ascontiguousarray(rows[:count])).float()
    if count > 1 and (kept[1:, 4] - kept[:-1, 4] > SCORE_TOL).any():
        return "detections are not sorted best first"
    boxes = cxcywh_to_xyxy(pred[:, :4].float())
    # the graph clips its boxes to the image after NMS (which sees them unclipped)
    clipped = torch.stack([boxes[:, k].clamp(0, (w, h)[k % 2]) for k in range(4)], 1)
    scores = (pred[:, 4:5] * pred[:, 5:]).float()  # (N, C)
    cut = float(kept[-1, 4]) if count == max_det else -1.0  # below the max_det cut: unchecked
    worst = 0.0
    for c in range(scores.shape[1]):
        mine = kept[kept[:, 5] == c]
        s = scores[:, c]
        cand = (s > conf - SCORE_TOL).nonzero()[:, 0]  # what NMS may keep
        # each row: a prediction of its class with its score and box; the best score of the
        # rows each prediction may be (several, where clipping made their boxes one)
        row_score = torch.full_like(s, -1.0)
        for r in range(0, len(mine), NMS_CHECK_ROWS):
            m = mine[r : r + NMS_CHECK_ROWS]
            d = (m[:, None, :4] - clipped[cand][None]).abs().amax(-1)
            d[(m[:, None, 4] - s[cand][None]).abs() > SCORE_TOL] = float("inf")
            best = d.min(1).values if len(cand) else torch.full((len(m),), float("inf"))
            if not torch.isfinite(best).all():
                return f"a detection of class {c} is none of PyTorch's predictions"
            worst = max(worst, float(best.max()))
            near = d <= torch.maximum(best[:, None], torch.tensor(tol))
            hit = torch.where(near, m[:, None, 4], torch.tensor(-1.0)).amax(0)
            row_score[cand] = torch.maximum(row_score[cand], hit)
        inside = mine[(mine[:, 0] > 0) & (mine[:, 1] > 0) & (mine[:, 2] < w) & (mine[:, 3] < h)]
        if (box_iou(inside[:, :4], inside[:, :4]).fill_diagonal_(0.0) > iou + IOU_TOL).any():
            return f"two detections of class {c} overlap more than iou={iou}"
        # every other prediction above conf is suppressed by a row scoring as high, or is cut
        matched = (row_score >= 0).nonzero()[:, 0]
        others = ((s > conf + SCORE_TOL) & (s > cut + SCORE_TOL) & (row_score < 0)).nonzero()[:, 0]
        for r in range(0, len(others), NMS_CHECK_ROWS * 64):
            o = others[r : r + NMS_CHECK_ROWS * 64]
            near = box_iou(boxes[o], boxes[matched]) > iou - IOU_TOL
            higher = row_score[matched][None, :] >= s[o][:, None] - SCORE_TOL
            if not (near & higher).any(1).all():
                return (
                    f"a prediction of class {c} above conf={conf} is neither a detection "
                    "nor suppressed by one"
                )
    return worst


def _parity_nms(path: Path, reference: NmsModel, input_size: Sequence[int], seed: int = 0):
    """onnxruntime's NonMaxSuppression graph vs the same model's decoded predictions in
    PyTorch: each image's detections must be the NMS of PyTorch's predictions
    (:func:`_check_nms_image`, which allows any order among boxes of tied scores); the worst
    box difference is recorded, relative to the largest predicted box coordinate (or input
    side), as model.onnx's parity is."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    g = torch.Generator().manual_seed(seed)
    worst, scale = 0.0, float(max(input_size))
    for batch in PARITY_BATCHES:
        x = torch.rand(batch, 3, *input_size, generator=g)
        with torch.inference_mode():
            pred = reference.decoded(x)
        out, out_n = session.run(None, {"images": x.numpy()})
        _finite(path.name, out, pred.numpy())
        want = (batch, reference.max_det, 6)
        if out.shape != want or out_n.shape != (batch,):
            raise ExportError(
                f"{path.name}: detections of shape {out.shape} and counts {out_n.shape} for "
                f"batch {batch}, expected {want} and ({batch},)"
            )
        # boxes as model.onnx's parity allows them: relative to the largest output
        scale = max(scale, float(pred[..., :4].abs().max()))
        for k in range(batch):
            found = _check_nms_image(
                out[k], int(out_n[k]), pred[k], reference, input_size, PARITY_RTOL * scale
            )
            if isinstance(found, str):
                raise ExportError(
                    f"{path.name} disagrees with PyTorch: image {k} of batch {batch}: {found}; "
                    "the export was not written"
                )
            worst = max(worst, found)
    if not worst <= PARITY_RTOL * scale:
        raise ExportError(
            f"{path.name} disagrees with PyTorch: worst difference {worst:.3g} "
            f"(allowed {PARITY_RTOL * scale:.3g}); the export was not written"
        )
    return {"max_abs_diff": worst, "max_rel_diff": worst / scale, "batches": list(PARITY_BATCHES)}


def _export_torchscript(model: DecodedModel, path: Path, example: torch.Tensor) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        traced = torch.jit.trace(model, example, check_trace=False)
    traced.save(str(path))


def _parity(
    name: str, path: Path, reference: DecodedModel, input_size: Sequence[int], seed: int = 0
) -> dict[str, float]:
    """Worst absolute and relative difference of the file's outputs vs PyTorch's."""
    backend = load_backend(path, name)
    g = torch.Generator().manual_seed(seed)
    worst_abs, worst_rel = 0.0, 0.0
    for batch in PARITY_BATCHES:
        x = torch.rand(batch, 3, *input_size, generator=g)
        with torch.inference_mode():
            ref = reference(x)
            out = backend(x)
        _finite(path.name, out.float().numpy(), ref.float().numpy())
        if tuple(out.shape) != tuple(ref.shape):
            raise ExportError(
                f"{path.name}: output shape {tuple(out.shape)} for batch {batch}, PyTorch gives {tuple(ref.shape)}"
            )
        diff = (out.float() - ref.float()).abs().max().item()
        worst_abs = max(worst_abs, diff)
        worst_rel = max(worst_rel, diff / max(ref.abs().max().item(), 1e-12))
    if not worst_rel <= PARITY_RTOL:
        raise ExportError(
            f"{path.name} disagrees with PyTorch: worst difference {worst_abs:.3g} "
            f"({worst_rel:.3g} relative, allowed {PARITY_RTOL}); the export was not written"
        )
    return {"max_abs_diff": worst_abs, "max_rel_diff": worst_rel, "batches": list(PARITY_BATCHES)}


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

    ``precisions`` (:data:`~yolov4.core.artifact.PRECISIONS`): fp32 is always written (the
    reference); ``int8`` and ``bf16`` are made by :mod:`yolov4.export.quantize` from
    ``calibration`` images (files or RGB arrays of the checkpoint's dataset) and checked by
    ``evaluate`` (a Predictor -> its mAP50/mAP on a stated validation subset) against fp32: more
    than ``map50_gate`` points lost fails the export; each precision's batch-1 latency is
    recorded with the CPU it was measured on. ``default_precision`` is what a Predictor and the
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
    ckpt = source if isinstance(source, Checkpoint) else load_checkpoint(source)
    check_class_names(ckpt.class_names, ckpt.model.config.num_classes, "export")
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
            f"{['fp32', *precisions]}, got {default_precision!r}"
        )
    check_request(precisions, calibration, evaluate, map50_gate)
    openvino = openvino_available()  # an extra: without it, fp32 runs in onnxruntime/TorchScript
    if set(precisions) - {"fp32"} and "onnx" not in formats:
        raise ExportError(
            f"precisions {list(precisions)} are made from model.onnx: add onnx to formats "
            f"{list(formats)}"
        )
    preprocess = ckpt.preprocess_dict()
    size = [int(s) for s in (input_size or preprocess["input_size"])]
    multiple = ckpt.model.config.max_stride  # the network's largest stride: 32, 64 for p6
    if len(size) != 2 or any(s <= 0 or s % multiple for s in size):
        raise ExportError(
            f"input_size must be (H, W), multiples of {multiple} (the largest stride of "
            f"{ckpt.model.config.name}), got {size}"
        )
    preprocess["input_size"] = size
    preprocess = PreprocessConfig.from_dict(preprocess).to_dict()  # complete and validated

    # fuse_model copies: the caller's model keeps its device, dtype and BN layers
    wrapped = DecodedModel(fuse_model(ckpt.model).cpu().float()).eval()
    try:
        settings = SERVING.update(thresholds).resolve(ckpt.model.config)
    except ConfigError as e:
        raise ExportError(f"thresholds: {e}") from None
    nms_model = NmsModel(wrapped, settings) if "onnx_nms" in formats else None
    example = torch.rand(1, 3, *size)
    remove_stale_exports(out_dir)
    tmp, lock = temp_dir(out_dir)
    try:
        files, parity = {}, {}
        for fmt in formats:
            path = tmp / FORMATS[fmt]
            if fmt == "onnx_nms":
                with torch.inference_mode():  # NMS drops NaN scores: check what it is fed
                    _finite(path.name, wrapped(torch.rand(2, 3, *size)).numpy())
                _export_onnx(nms_model, path, example, opset, ("detections", "num_detections"))
                parity[path.name] = _parity_nms(path, nms_model, size)
            else:
                if fmt == "onnx":
                    _export_onnx(wrapped, path, example, opset)
                else:
                    _export_torchscript(wrapped, path, example)
                parity[path.name] = _parity(fmt, path, wrapped, size)
                if fmt == "onnx" and openvino:  # the same file in OpenVINO (f32)
                    parity[f"{path.name}@openvino"] = _parity("openvino", path, wrapped, size)
            files[path.name] = {"sha256": sha256(path), "bytes": path.stat().st_size}
        c = ckpt.model.config
        reduced, reduced_parity = reduced_precisions(
            tmp,
            precisions,
            wrapped,
            {
                "class_names": list(ckpt.class_names),
                "preprocess": PreprocessConfig.from_dict(preprocess),
                "thresholds": settings.to_dict(),
                "metadata": {"model": c.to_dict()},
            },
            calibration,
            evaluate,
            map50_gate,
        )
        parity.update(reduced_parity)
        measured = reduced.pop("fp32", {})  # fp32's latency, measured beside the reduced ones
        for entry in reduced.values():
            for name in entry.get("files", [entry["file"]]):
                files.setdefault(
                    name, {"sha256": sha256(tmp / name), "bytes": (tmp / name).stat().st_size}
                )
        onnx_backends = (
            (["onnxruntime"] + (["openvino"] if openvino else [])) if "onnx" in formats else []
        )
        fp32 = {
            "file": MODEL_ONNX if "onnx" in formats else MODEL_TORCHSCRIPT,
            "backends": onnx_backends + (["torchscript"] if "torchscript" in formats else []),
            **measured,
        }
        metadata = {
            "format": ARTIFACT_FORMAT,
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "model": c.to_dict(),
            "class_names": list(ckpt.class_names),
            "input_size": size,
            "preprocess": preprocess,
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
            **(
                {
                    "nms_graph": {
                        "file": MODEL_NMS_ONNX,
                        "outputs": {
                            "detections": ["batch", nms_model.max_det, 6],
                            "num_detections": ["batch"],
                        },
                        "layout": "x1, y1, x2, y2 (input pixels), score, class index; "
                        "rows past num_detections are zeros",
                        "conf": nms_model.conf,
                        "iou": nms_model.iou,
                        "max_det": nms_model.max_det,
                        "nms": "ONNX NonMaxSuppression per class (multi-label)",
                    }
                }
                if "onnx_nms" in formats
                else {}
            ),
            "anchors": c.head_anchors(),
            "strides": list(c.strides),
            "scale_x_y": list(c.scale_x_y),
            "thresholds": settings.to_dict(),
            **({"conf_source": conf_source} if conf_source else {}),
            # an NMS-graph-only artifact has no model a Predictor loads
            **(
                {"precisions": {"fp32": fp32, **reduced}, "default_precision": default_precision}
                if fp32["backends"]
                else {}
            ),
            "opset": opset if {"onnx", "onnx_nms"} & set(formats) else None,
            "versions": _versions(),
            "files": files,
            "parity": parity,
            "source": {"metrics": ckpt.metrics, "trained": ckpt.trained},
        }
        (tmp / METADATA).write_text(json.dumps(metadata, indent=2) + "\n")
        install(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    finally:
        if lock >= 0:
            os.close(lock)
    return out_dir
