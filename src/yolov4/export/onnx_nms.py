"""``model_nms.onnx``: the network, decode and NMS in one graph with fixed-size outputs.

For consumers that cannot run Python postprocessing (TensorRT, Triton, C++/C# runtimes): inputs
``images (B, 3, H, W)`` float RGB in [0, 1] as for ``model.onnx``; outputs

* ``detections (B, max_det, 6)`` float: ``[x1, y1, x2, y2, score, class_index]`` in input
  pixels (clipped to the image), best first; rows past the count are zeros;
* ``num_detections (B,)`` int64: how many rows of each image are real.

So no consumer needs dynamic output shapes. NMS is ONNX's ``NonMaxSuppression`` per class
(multi-label, as darknet and :func:`yolov4.ops.postprocess` with ``multi_label=True``):
``score = objectness * class probability > conf``, IoU suppression at ``iou``, at most
``max_det`` per class and per image. With ``multi_label=False`` each box keeps only its best
class's score (its other classes' scores are zeroed before the operator), as
:func:`yolov4.ops.postprocess.postprocess` keeps only each box's best class. With
``agnostic_nms`` the operator sees one class, each box scored by its best class (which it
keeps): the result of :func:`yolov4.ops.postprocess.postprocess` with ``agnostic_nms=True``,
where a box's other classes are suppressed by its best one (``multi_label`` changes nothing).
The thresholds are baked into the graph (recorded in the artifact's metadata); the Predictor
keeps using ``model.onnx`` with thresholds per call.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torchvision.ops import batched_nms

from yolov4.core.model import DecodedModel
from yolov4.core.postprocess import PostprocessConfig
from yolov4.errors import ExportError
from yolov4.ops.boxes import cxcywh_to_xyxy

__all__ = ["NmsModel"]


class _NonMaxSuppression(torch.autograd.Function):
    """ONNX ``NonMaxSuppression`` (corner boxes): ``boxes (B, N, 4)``, ``scores (B, C, N)`` ->
    ``(K, 3)`` int64 ``[batch, class, box]``; exported as that operator.

    Eagerly (tracing, the export's parity reference) torchvision's batched NMS without the
    operator's per-class cap of ``max_per_class``: rows past it in one class rank below
    ``max_per_class`` rows of the same image, so :class:`NmsModel`'s top ``max_det`` (= the cap)
    is the same either way."""

    @staticmethod
    def forward(ctx, boxes: Tensor, scores: Tensor, max_per_class: int, iou: float, conf: float):
        out = []
        for b in range(scores.shape[0]):
            cls, idx = (scores[b] > conf).nonzero(as_tuple=True)
            keep = batched_nms(boxes[b, idx], scores[b, cls, idx], cls, iou)
            out.append(torch.stack((torch.full_like(keep, b), cls[keep], idx[keep]), 1))
        return torch.cat(out)

    @staticmethod
    def symbolic(g, boxes, scores, max_per_class, iou, conf):
        return g.op(
            "NonMaxSuppression",
            boxes,
            scores,
            g.op("Constant", value_t=torch.tensor([max_per_class], dtype=torch.int64)),
            g.op("Constant", value_t=torch.tensor([iou], dtype=torch.float32)),
            g.op("Constant", value_t=torch.tensor([conf], dtype=torch.float32)),
        )


class NmsModel(nn.Module):
    """:class:`DecodedModel` + NMS with fixed-size outputs (see the module docstring)."""

    def __init__(self, decoded: DecodedModel, settings: PostprocessConfig) -> None:
        super().__init__()
        if settings.nms_kind != "iou":
            raise ExportError(
                f"model_nms.onnx runs ONNX NonMaxSuppression (IoU NMS); the artifact's "
                f"nms_kind is {settings.nms_kind!r}: export with thresholds nms_kind=iou or "
                "without onnx_nms"
            )
        self.decoded = decoded
        self.conf, self.iou = float(settings.conf), float(settings.iou)
        self.max_det = int(settings.max_det)
        self.agnostic = bool(settings.agnostic_nms)
        self.multi_label = bool(settings.multi_label)

    def forward(self, images: Tensor) -> tuple[Tensor, Tensor]:
        """``images (B, 3, H, W)`` -> ``detections (B, max_det, 6)``, ``num_detections (B,)``."""
        pred = self.decoded(images)  # (B, N, 5 + C)
        h, w = images.shape[-2:]
        boxes = cxcywh_to_xyxy(pred[..., :4])
        scores = (pred[..., 4:5] * pred[..., 5:]).transpose(1, 2)  # (B, C, N)
        if self.agnostic:  # one class row: each box's best score; its class kept aside
            scores, best = scores.max(1, keepdim=True)  # (B, 1, N) each
        elif not self.multi_label:  # each box's best class only: its other scores zeroed
            top, best = scores.max(1, keepdim=True)  # (B, 1, N) each
            scores = torch.zeros_like(scores).scatter(1, best, top)
        sel = _NonMaxSuppression.apply(boxes, scores, self.max_det, self.iou, self.conf)
        b, c, i = sel[:, 0], sel[:, 1], sel[:, 2]
        s = scores[b, c, i]
        if self.agnostic:
            c = best[b, 0, i]
        # per image, best first: sort by (image ascending, score descending)
        order = torch.argsort(b.to(torch.float64) * 2 - s.to(torch.float64))
        b, c, i, s = b[order], c[order], i[order], s[order]
        batch = images.shape[0]
        counts = (b[:, None] == torch.arange(batch, device=b.device)[None, :]).sum(0)
        rank = torch.arange(b.shape[0], device=b.device) - (torch.cumsum(counts, 0) - counts)[b]
        keep = rank < self.max_det
        xyxy = boxes[b, i]
        x = xyxy[:, 0::2].clamp(0, int(w))  # the artifact's input size is fixed
        y = xyxy[:, 1::2].clamp(0, int(h))
        rows = torch.stack((x[:, 0], y[:, 0], x[:, 1], y[:, 1], s, c.to(s.dtype)), 1)
        # rows past max_det go to one spare row, dropped after: no boolean-mask indexing, whose
        # traced graph would keep the detection count of the example input (a Reshape to it)
        spare = batch * self.max_det
        slot = torch.where(keep, b * self.max_det + rank, torch.full_like(rank, spare))
        out = torch.zeros(spare + 1, 6, dtype=s.dtype, device=s.device)
        out = out.index_put((slot,), rows)
        return out[:spare].view(batch, self.max_det, 6), counts.clamp(max=self.max_det)
