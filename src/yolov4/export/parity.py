"""Each export file against PyTorch: the checks a format declares (:mod:`yolov4.export.formats`).

:func:`parity`: a file's decoded predictions vs the fused PyTorch model's on random inputs,
worst difference relative to the largest output, at most :data:`PARITY_RTOL`.
:func:`parity_nms`: an NMS graph's fixed-size detections are the NMS of PyTorch's predictions
(:func:`check_nms_image`). A file that disagrees raises :class:`~yolov4.errors.ExportError` and
the export is not written.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from yolov4.errors import ExportError
from yolov4.export.onnx_nms import NmsModel
from yolov4.ops.boxes import box_iou, cxcywh_to_xyxy

__all__ = ["PARITY_RTOL", "PARITY_BATCHES", "finite", "parity", "parity_nms", "check_nms_image"]

PARITY_RTOL = 1e-3  # worst |difference| allowed, relative to the largest |output|
PARITY_BATCHES = (1, 2)
NO_BOXES = "no boxes to compare"  # a parity record's "boxes" when no box was compared
# NMS graph parity: scores this close may be one prediction's in the two runtimes, and tie (float
# noise orders them): a deep network's scores differ by up to ~5e-4 between onnxruntime and
# PyTorch (yolov4-p6's 300 layers)
SCORE_TOL = 2e-3
IOU_TOL = 1e-3  # NMS graph parity: IoU differences from float noise near the threshold
NMS_CHECK_ROWS = 32  # detections compared with the predictions at once (bounds the memory)


def finite(name: str, *arrays: Any) -> None:
    """Raise :class:`ExportError` when an output holds NaN or infinity (``max(0.0, nan)`` is
    ``0.0``: a NaN model would otherwise pass the parity check with a difference of 0)."""
    bad = sum(int((~np.isfinite(np.asarray(a, dtype=np.float64))).sum()) for a in arrays)
    if bad:
        raise ExportError(
            f"{name}: {bad:,} non-finite values (NaN or infinite) in its outputs or PyTorch's on "
            "random inputs; the checkpoint's weights are not usable (NaN training?); the "
            "export was not written"
        )


def check_nms_image(
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


def parity_nms(
    path: Path, reference: NmsModel, input_size: Sequence[int], seed: int = 0, name: str = ""
) -> dict[str, Any]:
    """onnxruntime's NonMaxSuppression graph vs the same model's decoded predictions in
    PyTorch: each image's detections must be the NMS of PyTorch's predictions
    (:func:`check_nms_image`, which allows any order among boxes of tied scores); the worst
    box difference is recorded, relative to the largest predicted box coordinate (or input
    side), as model.onnx's parity is."""
    import onnxruntime as ort

    name = name or path.name
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    g = torch.Generator().manual_seed(seed)
    worst, scale, compared = 0.0, float(max(input_size)), 0
    for batch in PARITY_BATCHES:
        x = torch.rand(batch, 3, *input_size, generator=g)
        with torch.inference_mode():
            pred = reference.decoded(x)
        out, out_n = session.run(None, {"images": x.numpy()})
        compared += int(out_n.sum())
        finite(name, out, pred.numpy())
        want = (batch, reference.max_det, 6)
        if out.shape != want or out_n.shape != (batch,):
            raise ExportError(
                f"{name}: detections of shape {out.shape} and counts {out_n.shape} for "
                f"batch {batch}, expected {want} and ({batch},)"
            )
        # boxes as model.onnx's parity allows them: relative to the largest output
        scale = max(scale, float(pred[..., :4].abs().max()))
        for k in range(batch):
            found = check_nms_image(
                out[k], int(out_n[k]), pred[k], reference, input_size, PARITY_RTOL * scale
            )
            if isinstance(found, str):
                raise ExportError(
                    f"{name} disagrees with PyTorch: image {k} of batch {batch}: {found}; "
                    "the export was not written"
                )
            worst = max(worst, found)
    if not worst <= PARITY_RTOL * scale:
        raise ExportError(
            f"{name} disagrees with PyTorch: worst difference {worst:.3g} "
            f"(allowed {PARITY_RTOL * scale:.3g}); the export was not written"
        )
    record = {"max_abs_diff": worst, "max_rel_diff": worst / scale, "batches": list(PARITY_BATCHES)}
    record["boxes_compared"] = compared  # 0 (a network scoring nothing over conf): no box compared
    if not compared:
        record["boxes"] = NO_BOXES
    return record


def float_inputs(size: Sequence[int]) -> Callable[[int, torch.Generator], tuple[Any, Any]]:
    """The default sample: the same ``(B, 3, H, W)`` floats in ``[0, 1]`` for both models."""

    def sample(batch: int, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        x = torch.rand(batch, 3, *size, generator=g)
        return x, x

    return sample


def parity(
    name: str,
    run: Callable[[Any], torch.Tensor],
    reference: Callable[[torch.Tensor], torch.Tensor],
    sample: Callable[[int, torch.Generator], tuple[Any, Any]],
    seed: int = 0,
    score_tol: float | None = None,
) -> dict[str, Any]:
    """Worst absolute and relative difference of ``run`` (the file in its runtime) vs
    ``reference`` (PyTorch) over :data:`PARITY_BATCHES`; ``sample(batch, generator)`` gives
    ``(reference input, file input)``: the same pixels in each model's input form. With
    ``score_tol``, the objectness and class probabilities (channels 4 on, which the relative
    difference measures against the largest box coordinate) must also agree within it."""
    g = torch.Generator().manual_seed(seed)
    worst_abs, worst_rel, worst_score = 0.0, 0.0, 0.0
    for batch in PARITY_BATCHES:
        ref_in, file_in = sample(batch, g)
        with torch.inference_mode():
            ref = reference(ref_in)
            out = run(file_in)
        finite(name, out.float().numpy(), ref.float().numpy())
        if tuple(out.shape) != tuple(ref.shape):
            raise ExportError(
                f"{name}: output shape {tuple(out.shape)} for batch {batch}, PyTorch gives "
                f"{tuple(ref.shape)}"
            )
        diff = (out.float() - ref.float()).abs().max().item()
        worst_abs = max(worst_abs, diff)
        worst_rel = max(worst_rel, diff / max(ref.abs().max().item(), 1e-12))
        worst_score = max(worst_score, (out[..., 4:].float() - ref[..., 4:]).abs().max().item())
    if score_tol is not None and not worst_score <= score_tol:
        raise ExportError(
            f"{name} disagrees with PyTorch: worst score difference {worst_score:.3g} "
            f"(allowed {score_tol}); the export was not written"
        )
    if not worst_rel <= PARITY_RTOL:
        raise ExportError(
            f"{name} disagrees with PyTorch: worst difference {worst_abs:.3g} "
            f"({worst_rel:.3g} relative, allowed {PARITY_RTOL}); the export was not written"
        )
    return {
        "max_abs_diff": worst_abs,
        "max_rel_diff": worst_rel,
        "max_score_diff": worst_score,
        "batches": list(PARITY_BATCHES),
    }
