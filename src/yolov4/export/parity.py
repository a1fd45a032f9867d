"""Each export file against PyTorch: the checks a format declares (:mod:`yolov4.export.formats`).

:func:`parity`: a file's decoded predictions vs the fused PyTorch model's on random inputs,
worst difference relative to the largest output, at most :data:`PARITY_RTOL`.
:func:`parity_nms`: an NMS graph's baked-in thresholds are the export's, and its fixed-size
detections on images that give detections (the export's calibration images, else generated
scenes) are the NMS of PyTorch's predictions (:func:`check_nms_image`), at its score threshold
and at a lowered one. A file that disagrees raises :class:`~yolov4.errors.ExportError` and
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

__all__ = [
    "PARITY_RTOL",
    "PARITY_BATCHES",
    "NMS_CHECK_IMAGES",
    "finite",
    "parity",
    "parity_nms",
    "check_nms_image",
    "nms_node",
    "nms_constants",
]

PARITY_RTOL = 1e-3  # worst |difference| allowed, relative to the largest |output|
PARITY_BATCHES = (1, 2)
NO_BOXES = "no boxes to compare"  # a parity record's "boxes" when no box was compared
# NMS graph parity: scores this close may be one prediction's in the two runtimes, and tie (float
# noise orders them): a deep network's scores differ by up to ~5e-4 between onnxruntime and
# PyTorch (yolov4-p6's 300 layers)
SCORE_TOL = 2e-3
IOU_TOL = 1e-3  # NMS graph parity: IoU differences from float noise near the threshold
NMS_CHECK_ROWS = 32  # detections compared with the predictions at once (bounds the memory)
NMS_CHECK_IMAGES = sum(PARITY_BATCHES)  # images an NMS graph is checked on
# the NMS graph's second run: its score threshold lowered to where this many class scores of
# each image pass (a few hundred: many boxes for NMS, well under a default max_det of 300 kept)
LOWERED_SCORES = 200
LOWERED_CONF_INPUT = "parity_lowered_score_threshold"  # the initializer that lowers it


def finite(name: str, *arrays: Any) -> None:
    """Raise :class:`ExportError` when an output holds NaN or infinity (``max(0.0, nan)`` is
    ``0.0``: a NaN model would otherwise pass the parity check with a difference of 0)."""
    bad = sum(int((~np.isfinite(np.asarray(a, dtype=np.float64))).sum()) for a in arrays)
    if bad:
        raise ExportError(
            f"{name}: {bad:,} non-finite values (NaN or infinite) in its outputs or PyTorch's on "
            "the check's inputs; the checkpoint's weights are not usable (NaN training?); the "
            "export was not written"
        )


def check_nms_image(
    rows: np.ndarray,
    count: int,
    pred: torch.Tensor,
    model: NmsModel,
    size: Sequence[int],
    tol: float,
    conf: float | None = None,
) -> float | str:
    """One image of ``model_nms.onnx``'s output (``rows (max_det, 6)``, ``count``) against
    PyTorch's decoded predictions ``pred (N, 5 + C)`` of the same image: is it the NMS of those
    predictions? Returns the worst box difference (input pixels) of a row to its prediction,
    or what is wrong (a str); ``tol``: the box difference allowed; ``conf``: the score
    threshold the graph ran at (``model.conf`` unless given).

    Greedy NMS is fixed by its scores only up to ties: boxes whose scores differ by float noise
    (many, for an untrained network or random inputs) may be taken in another order, and then
    other boxes of the run are kept. So the rows are checked for what defines NMS rather than
    compared with one reference order: every row is a prediction of its class (clipped box, and
    score within :data:`SCORE_TOL`), best first, zeros past ``count``; no two rows of a class
    inside the image overlap more than ``iou`` (a clipped row may stand for several
    predictions); every prediction above ``conf`` that is not a row is suppressed by a row of
    its class scoring at least as high, or ranks below the ``max_det`` cut. A class-agnostic
    graph (``agnostic_nms``) is checked as one class of each prediction's best score; a
    best-class graph (``multi_label=False``) with each prediction's scores other than its best
    class's taken as zero."""
    h, w = (float(v) for v in size)
    conf = model.conf if conf is None else conf
    iou, max_det = model.iou, model.max_det
    if count > max_det or rows[count:].any():
        return f"{count} detections but non-zero rows past them, or more than max_det={max_det}"
    kept = torch.from_numpy(np.ascontiguousarray(rows[:count])).float()
    if count > 1 and (kept[1:, 4] - kept[:-1, 4] > SCORE_TOL).any():
        return "detections are not sorted best first"
    boxes = cxcywh_to_xyxy(pred[:, :4].float())
    # the graph clips its boxes to the image after NMS (which sees them unclipped)
    clipped = torch.stack([boxes[:, k].clamp(0, (w, h)[k % 2]) for k in range(4)], 1)
    scores = (pred[:, 4:5] * pred[:, 5:]).float()  # (N, C)
    if model.agnostic or not model.multi_label:
        wrong = _not_best_class(kept, scores, clipped, tol)
        if wrong is not None:
            return wrong
        kept, scores = _best_class_only(kept, scores, model.agnostic)
    cut = float(kept[-1, 4]) if count == max_det else -1.0  # below the max_det cut: unchecked
    worst = 0.0
    for c in range(scores.shape[1]):
        mine = kept[kept[:, 5] == c]
        s = scores[:, c]
        matched = _match_rows(mine, s, clipped, conf, tol)
        if matched is None:
            return f"a detection of class {c} is none of PyTorch's predictions"
        row_score, worst = matched[0], max(worst, matched[1])
        inside = mine[(mine[:, 0] > 0) & (mine[:, 1] > 0) & (mine[:, 2] < w) & (mine[:, 3] < h)]
        if (box_iou(inside[:, :4], inside[:, :4]).fill_diagonal_(0.0) > iou + IOU_TOL).any():
            return f"two detections of class {c} overlap more than iou={iou}"
        if not _all_suppressed(s, row_score, boxes, conf, cut, iou):
            return (
                f"a prediction of class {c} above conf={conf} is neither a detection "
                "nor suppressed by one"
            )
    return worst


def _not_best_class(
    kept: torch.Tensor, scores: torch.Tensor, clipped: torch.Tensor, tol: float
) -> str | None:
    """What is wrong when a row of ``kept (K, 6)`` is no prediction's best class: every row's
    class must be the best class of a prediction (``scores (N, C)``, clipped boxes ``(N, 4)``)
    with its box (within ``tol``) and score; ``None`` when all are."""
    best, label = scores.max(1)
    for row in kept:
        same = ((clipped - row[:4]).abs().amax(1) <= tol) & ((best - row[4]).abs() <= SCORE_TOL)
        if not (label[same] == int(row[5])).any():
            return f"a detection of class {int(row[5])} is no prediction's best class"
    return None


def _best_class_only(
    kept: torch.Tensor, scores: torch.Tensor, agnostic: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    """The rows ``kept (K, 6)`` and predictions' ``scores (N, C)`` as a graph that keeps each
    prediction's best class only sees them: ``agnostic``, one class of best scores ``(N, 1)``
    (the rows' class 0); else per class, each prediction's other scores zero."""
    best, label = scores.max(1, keepdim=True)
    if agnostic:
        one = kept.clone()
        one[:, 5] = 0
        return one, best
    return kept, torch.zeros_like(scores).scatter(1, label, best)


def _match_rows(
    mine: torch.Tensor, s: torch.Tensor, clipped: torch.Tensor, conf: float, tol: float
) -> tuple[torch.Tensor, float] | None:
    """The rows of one class ``mine (K, 6)`` matched to its predictions (scores ``s (N,)``,
    clipped boxes ``(N, 4)`` xyxy): each row must be a prediction with its score and box. Returns
    the best score of the rows each prediction may be ``(N,)`` (-1: none; several, where
    clipping made their boxes one) and the worst box difference of a row to its prediction, or
    ``None`` when a row is none of the predictions."""
    cand = (s > conf - SCORE_TOL).nonzero()[:, 0]  # what NMS may keep
    row_score = torch.full_like(s, -1.0)
    worst = 0.0
    for r in range(0, len(mine), NMS_CHECK_ROWS):
        m = mine[r : r + NMS_CHECK_ROWS]
        d = (m[:, None, :4] - clipped[cand][None]).abs().amax(-1)
        d[(m[:, None, 4] - s[cand][None]).abs() > SCORE_TOL] = float("inf")
        best = d.min(1).values if len(cand) else torch.full((len(m),), float("inf"))
        if not torch.isfinite(best).all():
            return None
        worst = max(worst, float(best.max()))
        near = d <= torch.maximum(best[:, None], torch.tensor(tol))
        hit = torch.where(near, m[:, None, 4], torch.tensor(-1.0)).amax(0)
        row_score[cand] = torch.maximum(row_score[cand], hit)
    return row_score, worst


def _all_suppressed(
    s: torch.Tensor,
    row_score: torch.Tensor,
    boxes: torch.Tensor,
    conf: float,
    cut: float,
    iou: float,
) -> bool:
    """Whether every prediction of one class above ``conf`` (scores ``s (N,)``, boxes
    ``(N, 4)`` xyxy) that no row is (``row_score`` < 0, from :func:`_match_rows`) is suppressed
    by a row scoring as high (IoU over ``iou``), or ranks below the ``max_det`` ``cut``."""
    matched = (row_score >= 0).nonzero()[:, 0]
    others = ((s > conf + SCORE_TOL) & (s > cut + SCORE_TOL) & (row_score < 0)).nonzero()[:, 0]
    for r in range(0, len(others), NMS_CHECK_ROWS * 64):
        o = others[r : r + NMS_CHECK_ROWS * 64]
        near = box_iou(boxes[o], boxes[matched]) > iou - IOU_TOL
        higher = row_score[matched][None, :] >= s[o][:, None] - SCORE_TOL
        if not (near & higher).any(1).all():
            return False
    return True


def nms_node(graph: Any, name: str) -> Any:
    """The one ``NonMaxSuppression`` node of an NMS graph (``onnx.ModelProto``)."""
    nodes = [n for n in graph.graph.node if n.op_type == "NonMaxSuppression"]
    if len(nodes) != 1:
        raise ExportError(
            f"{name}: {len(nodes)} NonMaxSuppression nodes, expected one; the export was not "
            "written"
        )
    return nodes[0]


def nms_constants(graph: Any, node: Any) -> dict[str, float]:
    """The thresholds baked into ``node``'s inputs 2-4 (Constant nodes or initializers):
    ``{"max_det", "iou", "conf"}``."""
    from onnx import numpy_helper

    values = {i.name: numpy_helper.to_array(i) for i in graph.graph.initializer}
    for n in graph.graph.node:
        if n.op_type == "Constant" and n.attribute and n.attribute[0].name == "value":
            values[n.output[0]] = numpy_helper.to_array(n.attribute[0].t)
    found = [values.get(i) for i in node.input[2:5]]
    return {
        k: float(np.asarray(v).reshape(-1)[0]) if v is not None else float("nan")
        for k, v in zip(("max_det", "iou", "conf"), found, strict=False)
    }


def _check_constants(graph: Any, node: Any, reference: NmsModel, name: str) -> None:
    """:class:`ExportError` when the graph's thresholds are not ``reference``'s."""
    found = nms_constants(graph, node)
    want = {"max_det": reference.max_det, "iou": reference.iou, "conf": reference.conf}
    got = {k: found.get(k, float("nan")) for k in want}
    wrong = [
        f"{k} {got[k]:g} (the export's thresholds: {v:g})"
        for k, v in want.items()
        if not abs(got[k] - v) <= 1e-6 * max(1.0, abs(v))  # float32 constants
    ]
    if wrong:
        raise ExportError(
            f"{name}: its NonMaxSuppression has {', '.join(wrong)}; the export was not written"
        )


def _session(graph: Any, conf: float | None) -> Any:
    """onnxruntime on ``graph``; with ``conf``, on a copy whose NMS score threshold is ``conf``."""
    import onnx
    import onnxruntime as ort

    options = ort.SessionOptions()
    if conf is not None:
        graph = onnx.ModelProto.FromString(graph.SerializeToString())
        node = nms_node(graph, "")
        value = onnx.numpy_helper.from_array(np.array([conf], np.float32), LOWERED_CONF_INPUT)
        graph.graph.initializer.append(value)
        node.input[4] = LOWERED_CONF_INPUT
        options.log_severity_level = 3  # not its warning that the old threshold is unused
    return ort.InferenceSession(
        graph.SerializeToString(), options, providers=["CPUExecutionProvider"]
    )


def _batches(images: torch.Tensor) -> list[torch.Tensor]:
    """``images (N, 3, H, W)`` cut into batches of :data:`PARITY_BATCHES` (cycled when short)."""
    out, start = [], 0
    for batch in PARITY_BATCHES:
        out.append(images[[(start + i) % len(images) for i in range(batch)]])
        start += batch
    return out


def _lowered_conf(preds: Sequence[torch.Tensor], conf: float) -> float:
    """A score threshold at or under ``conf`` that :data:`LOWERED_SCORES` class scores of each
    image pass: the score of each image's ``LOWERED_SCORES``-th best, the lowest of them."""
    kth = []
    for p in preds:
        scores = (p[..., 4:5] * p[..., 5:]).flatten(1)
        k = min(LOWERED_SCORES, scores.shape[1])
        kth.append(float(scores.topk(k, dim=1).values[:, -1].min()))
    return min([conf, *kth])


def _compare(
    session: Any,
    reference: NmsModel,
    batches: Sequence[torch.Tensor],
    preds: Sequence[torch.Tensor],
    conf: float,
    name: str,
) -> tuple[float, float, int]:
    """The NMS graph in ``session`` (score threshold ``conf``) vs ``preds``, PyTorch's decoded
    predictions of ``batches``: ``(worst box difference, scale, boxes compared)``;
    :class:`ExportError` when an image's detections are not the NMS of its predictions."""
    worst, scale, compared = 0.0, float(max(batches[0].shape[-2:])), 0
    for x, pred in zip(batches, preds, strict=True):
        batch = len(x)
        out, out_n = session.run(None, {"images": x.numpy()})
        finite(name, out)
        want = (batch, reference.max_det, 6)
        if out.shape != want or out_n.shape != (batch,):
            raise ExportError(
                f"{name}: detections of shape {out.shape} and counts {out_n.shape} for "
                f"batch {batch}, expected {want} and ({batch},)"
            )
        compared += int(out_n.sum())
        # boxes as model.onnx's parity allows them: relative to the largest output
        scale = max(scale, float(pred[..., :4].abs().max()))
        for k in range(batch):
            found = check_nms_image(
                out[k], int(out_n[k]), pred[k], reference, x.shape[-2:], PARITY_RTOL * scale, conf
            )
            if isinstance(found, str):
                at = "" if conf == reference.conf else f" (score threshold lowered to {conf:.3g})"
                raise ExportError(
                    f"{name} disagrees with PyTorch{at}: image {k} of batch {batch}: {found}; "
                    "the export was not written"
                )
            worst = max(worst, found)
    return worst, scale, compared


def parity_nms(
    path: Path, reference: NmsModel, images: torch.Tensor, inputs: str, name: str = ""
) -> dict[str, Any]:
    """onnxruntime's NMS graph at ``path`` vs ``reference`` (the same model in PyTorch) on
    ``images (N, 3, H, W)`` (``inputs`` says what they are): the graph's thresholds must be
    ``reference``'s, and each image's detections the NMS of PyTorch's predictions
    (:func:`check_nms_image`), at the graph's score threshold and again with it lowered to
    where :data:`LOWERED_SCORES` class scores of each image pass (so that a network scoring
    little over ``conf`` is compared on many boxes). The worst box difference is recorded
    relative to the largest predicted box coordinate (or input side), as model.onnx's parity
    is; ``boxes_compared`` at ``conf`` 0 adds a ``warning`` that says what was not checked."""
    import onnx

    name = name or path.name
    graph = onnx.load(str(path))
    node = nms_node(graph, name)
    _check_constants(graph, node, reference, name)
    batches = _batches(images)
    with torch.inference_mode():
        preds = [reference.decoded(x) for x in batches]
    finite(name, *(p.numpy() for p in preds))
    worst, scale, compared = _compare(
        _session(graph, None), reference, batches, preds, reference.conf, name
    )
    record: dict[str, Any] = {"inputs": inputs, "boxes_compared": compared}
    low = _lowered_conf(preds, reference.conf)
    if low < reference.conf:
        w, s, n = _compare(_session(graph, low), reference, batches, preds, low, name)
        worst, scale = max(worst, w), max(scale, s)
        record["lowered_conf"] = {"conf": low, "boxes_compared": n}
    if not worst <= PARITY_RTOL * scale:
        raise ExportError(
            f"{name} disagrees with PyTorch: worst difference {worst:.3g} "
            f"(allowed {PARITY_RTOL * scale:.3g}); the export was not written"
        )
    if not compared:
        record["boxes"] = NO_BOXES
        record["warning"] = _not_checked(reference.conf, inputs, record.get("lowered_conf"))
    batches_run = list(PARITY_BATCHES)
    return {"max_abs_diff": worst, "max_rel_diff": worst / scale, "batches": batches_run, **record}


def _not_checked(conf: float, inputs: str, lowered: dict[str, Any] | None) -> str:
    """What a check that compared no box at ``conf`` did and did not check."""
    head = (
        f"PyTorch scores nothing over conf={conf:g} on {inputs}: the NMS graph was not checked "
        "against detections at its own threshold"
    )
    if lowered and lowered["boxes_compared"]:
        return (
            f"{head}; with its score threshold lowered to {lowered['conf']:.3g} it was "
            f"checked on {lowered['boxes_compared']} boxes"
        )
    return f"{head} nor at a lowered one (no box compared)"


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
