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
import tempfile
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
    FORMATS,
    METADATA,
    MODEL_NMS_ONNX,
    check_class_names,
    sha256,
)
from yolov4.core.checkpoint import Checkpoint, load_checkpoint
from yolov4.core.model import DecodedModel
from yolov4.core.postprocess import SERVING
from yolov4.core.preprocess import PreprocessConfig
from yolov4.errors import ConfigError, ExportError
from yolov4.export.onnx_nms import NmsModel
from yolov4.inference.backends import load_backend
from yolov4.models import fuse_model

__all__ = ["export_artifact"]

DEFAULT_OPSET = 17
PARITY_RTOL = 1e-3  # worst |difference| allowed, relative to the largest |output|
PARITY_BATCHES = (1, 2)


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

    return {
        "yolov4": __version__,
        "torch": str(torch.__version__),
        "onnx": onnx.__version__,
        "onnxruntime": onnxruntime.__version__,
    }


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


def _parity_nms(path: Path, reference: NmsModel, input_size: Sequence[int], seed: int = 0):
    """onnxruntime's NonMaxSuppression graph vs the same model in PyTorch (torchvision NMS):
    same counts and the same rows (best first). Rows scoring within 1e-4 of ``conf`` may
    appear on one side only (the last rows: float differences decide the threshold there)."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    g = torch.Generator().manual_seed(seed)
    worst = 0.0
    for batch in PARITY_BATCHES:
        x = torch.rand(batch, 3, *input_size, generator=g)
        with torch.inference_mode():
            ref, ref_n = reference(x)
        out, out_n = session.run(None, {"images": x.numpy()})
        _finite(path.name, out, ref.numpy())
        if out.shape != tuple(ref.shape):
            raise ExportError(
                f"{path.name}: detections of shape {out.shape} for batch {batch}, "
                f"PyTorch gives {tuple(ref.shape)}"
            )
        for k in range(batch):
            n = min(int(out_n[k]), int(ref_n[k]))
            extra = np.concatenate([out[k, n : out_n[k], 4], ref[k, n : ref_n[k], 4].numpy()])
            if (extra > reference.conf + 1e-4).any():
                raise ExportError(
                    f"{path.name} disagrees with PyTorch: image {k} of batch {batch} has "
                    f"{int(out_n[k])} detections, PyTorch {int(ref_n[k])}; the export was not written"
                )
            diff = float(np.abs(out[k, :n] - ref[k, :n].numpy()).max()) if n else 0.0
            worst = max(worst, diff)
    scale = max(input_size)
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
) -> Path:
    """Write the artifact directory for a checkpoint (path or loaded :class:`Checkpoint`).

    ``input_size`` ``(H, W)`` defaults to the checkpoint's preprocessing size. The directory is
    built next to ``out_dir`` and moved into place only once every file passed its parity check,
    so a failed export never leaves a half-written or mismatched artifact.
    """
    ckpt = source if isinstance(source, Checkpoint) else load_checkpoint(source)
    check_class_names(ckpt.class_names, ckpt.model.config.num_classes, "export")
    unknown = [f for f in formats if f not in FORMATS]
    if unknown or not formats:
        raise ExportError(
            f"formats must be a non-empty subset of {sorted(FORMATS)}, got {list(formats)}"
        )
    if opset < DEFAULT_OPSET:
        raise ExportError(f"opset must be >= {DEFAULT_OPSET}, got {opset}")
    preprocess = dict(ckpt.preprocess) or {
        "input_size": list(ckpt.model.config.input_size),
        "mode": "letterbox",
    }
    size = [int(s) for s in (input_size or preprocess["input_size"])]
    if len(size) != 2 or any(s <= 0 or s % 32 for s in size):
        raise ExportError(f"input_size must be (H, W), multiples of 32, got {size}")
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
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out_dir.parent, prefix=f".{out_dir.name}."))
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
            files[path.name] = {"sha256": sha256(path), "bytes": path.stat().st_size}
        c = ckpt.model.config
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
            "opset": opset if {"onnx", "onnx_nms"} & set(formats) else None,
            "versions": _versions(),
            "files": files,
            "parity": parity,
            "source": {"metrics": ckpt.metrics, "trained": ckpt.trained},
        }
        (tmp / METADATA).write_text(json.dumps(metadata, indent=2) + "\n")
        if out_dir.exists():
            shutil.rmtree(out_dir)
        os.replace(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out_dir
