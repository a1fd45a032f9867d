"""The accuracy gates a reduced precision passes at export (:mod:`yolov4.export.quantize`),
recorded as ``accuracy.gate`` in metadata.json:

* ``map50`` (:func:`map50_gate`; labelled images, darknet's ``valid`` postprocess as evaluate.py
  uses): the export fails when a reduced precision's mAP50 is more than ``gate`` points below
  fp32's, naming both; when fp32's mAP50 is 0 it passes with a ``warning`` (logged and recorded
  in ``accuracy``): nothing was measured.
* ``agreement`` (:func:`agreement_gate`, :class:`Agreement`: unlabelled images, e.g.
  ``export.py calibration=<folder>`` with no ``data``): fp32's detections are the reference. A
  box one model scores at least :data:`AGREEMENT_CONF` counts as matched when the other model
  has a box of the same class with IoU >= :data:`AGREEMENT_IOU` scored at least
  :data:`AGREEMENT_MATCH_CONF` (one box matches one box); the agreement is the F1 of the two
  match rates (reduced boxes matched = precision, fp32 boxes matched = recall), and the export
  fails below ``minimum`` (default :data:`DEFAULT_AGREEMENT_GATE`), naming both numbers.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np
import torch
from torchvision.ops import box_iou

from yolov4.errors import ExportError, InputError
from yolov4.export.parity import NO_BOXES
from yolov4.inference.images import load_image
from yolov4.inference.predictor import Detections, Predictor

__all__ = [
    "AGREEMENT_CONF",
    "AGREEMENT_IOU",
    "AGREEMENT_MATCH_CONF",
    "Agreement",
    "DEFAULT_AGREEMENT_GATE",
    "DEFAULT_GATE_POINTS",
    "Evaluate",
    "NO_BOXES",
    "SKIPPED_SHOWN",
    "agreement_gate",
    "decoded_images",
    "map50_gate",
    "warn_skipped",
]

log = logging.getLogger(__name__)
DEFAULT_GATE_POINTS = 1.0  # mAP50 points a reduced precision may lose against fp32
# an evaluation of a Predictor on the stated validation subset:
# -> {"mAP50": float, "mAP": float, "images": int, "subset": str}
Evaluate = Callable[[Predictor], dict[str, Any]]
# the agreement gate (unlabelled images): see the module docstring
AGREEMENT_CONF = 0.25  # boxes that count: what the service serves by default
AGREEMENT_MATCH_CONF = 0.1  # a match may score this low (a box at 0.26 vs 0.24 is one box)
AGREEMENT_IOU = 0.5
DEFAULT_AGREEMENT_GATE = 0.9  # the lowest agreement F1 a reduced precision may have
SKIPPED_SHOWN = 5  # skipped images a warning names (it counts them all)


def decoded_images(images: Sequence[Any]) -> Iterator[tuple[Any, np.ndarray | None, str | None]]:
    """``(item, (H, W, 3) uint8 RGB, None)`` for each of ``images`` (files or decoded RGB
    arrays) that decodes, ``(item, None, why)`` for one that does not (truncated, over the pixel
    limit, not an image: its :class:`InputError`), one at a time and in order."""
    for i, item in enumerate(images):
        try:
            yield item, load_image(item, i, decoded=True), None
        except InputError as e:
            yield item, None, str(e)


def warn_skipped(what: str, skipped: Sequence[str], read: int) -> None:
    """One warning for the ``skipped`` images of ``what`` (the first :data:`SKIPPED_SHOWN`
    reasons), saying how many of the ``read`` images were kept."""
    if not skipped:
        return
    more = len(skipped) - SKIPPED_SHOWN
    listed = "; ".join(skipped[:SKIPPED_SHOWN]) + (f"; and {more} more" if more > 0 else "")
    log.warning(
        "%s: skipped %d of %d images that cannot be read, using the other %d (%s)",
        what,
        len(skipped),
        read,
        read - len(skipped),
        listed,
    )


class Agreement:
    """The gate of unlabelled ``images`` (files or RGB arrays): a reduced precision's boxes
    against fp32's (see the module docstring); ``minimum``: the lowest F1 that passes;
    ``subset``: what the images are, recorded with the result. Images that cannot be read
    (truncated, over the pixel limit, not an image) are skipped with one warning, as
    ``export.py calibration=<folder>`` skips them; none readable is an :class:`ExportError`."""

    def __init__(
        self,
        images: Sequence[Any],
        minimum: float = DEFAULT_AGREEMENT_GATE,
        subset: str = "unlabelled images",
        batch_size: int = 8,
    ) -> None:
        if not len(images):
            raise ExportError("the agreement gate needs images, got none")
        if not 0 <= minimum <= 1:
            raise ExportError(f"the agreement gate must be an F1 in [0, 1], got {minimum}")
        self.images, self.minimum, self.subset = list(images), float(minimum), subset
        self.batch_size = int(batch_size)

    def detections(self, predictor: Predictor) -> list[Detections]:
        """``predictor``'s boxes scored at least :data:`AGREEMENT_MATCH_CONF` on every readable
        image, in order. The first call drops the unreadable ones from :attr:`images` (one
        warning), so every model is compared on the same images."""
        out: list[Detections] = []
        kept, skipped, batch = [], [], []
        for item, array, why in decoded_images(self.images):
            if array is None:
                skipped.append(why)
                continue
            kept.append(item)
            batch.append(array)
            if len(batch) == self.batch_size:
                out += predictor(batch, conf=AGREEMENT_MATCH_CONF, decoded=True)
                batch = []
        if batch:
            out += predictor(batch, conf=AGREEMENT_MATCH_CONF, decoded=True)
        if not kept:
            raise ExportError(
                f"the agreement gate on {self.subset} needs at least one readable image, none of "
                f"{len(self.images)} can be read ({'; '.join(skipped[:SKIPPED_SHOWN])})"
            )
        warn_skipped(f"agreement gate on {self.subset}", skipped, len(self.images))
        self.images = kept
        return out

    def compare(self, reference: list[Detections], other: list[Detections]) -> dict[str, Any]:
        """The agreement of ``other`` with ``reference`` (fp32): matched boxes both ways, their
        F1 (``None`` with ``note`` :data:`NO_BOXES` when neither model has a box to count)."""
        hits_ref = hits_other = n_ref = n_other = 0
        for a, b in zip(reference, other, strict=True):
            hits_ref += _matched(a, b)
            hits_other += _matched(b, a)
            n_ref += int((a.scores >= AGREEMENT_CONF).sum())
            n_other += int((b.scores >= AGREEMENT_CONF).sum())
        result: dict[str, Any] = {"fp32_boxes": n_ref, "boxes": n_other}
        if n_ref + n_other == 0:
            return {**result, "f1": None, "note": NO_BOXES}
        recall = hits_ref / n_ref if n_ref else 0.0
        precision = hits_other / n_other if n_other else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        return {**result, "precision": precision, "recall": recall, "f1": round(f1, 5)}


def _matched(a: Detections, b: Detections) -> int:
    """How many of ``a``'s boxes scored >= AGREEMENT_CONF have their own box in ``b`` (same
    class, IoU >= AGREEMENT_IOU, scored >= AGREEMENT_MATCH_CONF), greedily by ``a``'s score."""
    keep = a.scores >= AGREEMENT_CONF
    if not keep.any() or not len(b):
        return 0
    order = keep.nonzero()[0][(-a.scores[keep]).argsort(kind="stable")]
    iou = box_iou(torch.from_numpy(a.boxes[order]), torch.from_numpy(b.boxes)).numpy()
    iou[a.class_ids[order][:, None] != b.class_ids[None, :]] = 0.0
    used = set()
    for row in iou:
        free = [j for j in row.argsort()[::-1] if j not in used and row[j] >= AGREEMENT_IOU]
        if free:
            used.add(int(free[0]))
    return len(used)


def _scores(result: dict[str, Any]) -> dict[str, float]:
    return {k: round(float(result[k]), 5) for k in ("mAP50", "mAP")}


def map50_gate(
    evaluate: Evaluate, predictor: Predictor, fp32: dict[str, Any], precision: str, gate: float
) -> dict[str, Any]:
    """The labelled gate: ``precision``'s mAP50 at most ``gate`` points below fp32's."""
    result = evaluate(predictor)
    drop = 100 * (fp32["mAP50"] - result["mAP50"])
    if not drop <= gate:
        raise ExportError(
            f"{precision} mAP50 {100 * result['mAP50']:.2f} is {drop:.3f} points below "
            f"fp32's {100 * fp32['mAP50']:.2f} on {fp32['subset']} (gate: {gate} points, "
            "export.py map50_gate=...); the export was not written"
        )
    accuracy = {
        "gate": "map50",
        "subset": fp32["subset"],
        "images": fp32["images"],
        "fp32": _scores(fp32),
        precision: _scores(result),
        "mAP50_drop_points": round(drop, 3),
        "gate_points": gate,
    }
    if not fp32["mAP50"] > 0:  # no drop can be measured from nothing
        accuracy["warning"] = (
            f"fp32 scores mAP50 0 on {fp32['subset']}: the gate compared {precision}'s mAP50 "
            f"{100 * result['mAP50']:.2f} with 0, which says nothing about {precision}'s "
            "accuracy; calibrate and evaluate with a trained model, or a val set with ground truth"
        )
        log.warning("%s map50 gate: %s", precision, accuracy["warning"])
    return accuracy


def agreement_gate(
    agreement: Agreement,
    predictor: Predictor,
    fp32: list[Detections],
    precision: str,
    _gate: float,
) -> dict[str, Any]:
    """The unlabelled gate: ``precision``'s boxes against fp32's, F1 at least
    ``agreement.minimum`` (module docstring); nothing to compare passes with a warning."""
    found = agreement.compare(fp32, agreement.detections(predictor))
    f1 = found["f1"]
    if f1 is None:
        log.warning(
            "%s agreement gate on %s: %s (neither model scores a box at %s or more; the "
            "probabilities were compared with PyTorch's)",
            precision,
            agreement.subset,
            NO_BOXES,
            AGREEMENT_CONF,
        )
    elif not f1 >= agreement.minimum:
        raise ExportError(
            f"{precision} agrees with fp32 at F1 {f1:.3f} on {agreement.subset} ({found['boxes']} "
            f"{precision} boxes, {found['fp32_boxes']} fp32 boxes scored >= {AGREEMENT_CONF}; "
            f"gate: F1 >= {agreement.minimum}, export.py agreement_gate=...); the export was "
            "not written"
        )
    return {
        "gate": "agreement",
        "metric": f"F1 of boxes matched with fp32's (score >= {AGREEMENT_CONF}, a match: same "
        f"class, IoU >= {AGREEMENT_IOU}, score >= {AGREEMENT_MATCH_CONF})",
        "subset": agreement.subset,
        "images": len(agreement.images),
        "agreement": found,
        "minimum_f1": agreement.minimum,
    }
