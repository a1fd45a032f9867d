"""The YOLOv4 loss: darknet's ``[yolo]`` layer training signal (``yolo_layer.c``), vectorised.

:class:`YoloLoss` (:mod:`.yolo`) computes it, with its inputs checked in :mod:`.inputs`, the
anchor assignment in :mod:`.assign`, the box term and its gradient in :mod:`.box` (darknet's box
deltas transcribed in :mod:`.darknet`); :func:`darknet_cost` (:mod:`.cost`) gives the number
darknet charts.

For every ground truth box (``targets (M, 6)``: ``[image_index, class_index, x1, y1, x2, y2]``
in input pixels) and every head, with that head's values of the ``[yolo]`` keys darknet reads per
layer (``scale_x_y``, ``ignore_thresh``, ``iou_thresh``, ``iou_normalizer``, ``cls_normalizer``,
``obj_normalizer``, ``max_delta``, ``objectness_smooth``, ``label_smooth_eps``: yolov4-csp, for
one, has ``obj_normalizer`` 4 / 1 / 0.4 and ``objectness_smooth`` 0 / 1 / 1 by stride):

* **Assignment.** The shape IoU (boxes aligned at a common centre) of the target with each of
  the model's anchors picks the best anchor over *all* heads; if that anchor belongs to this
  head, it is positive in the cell containing the box centre. With ``iou_thresh`` set
  (yolov4.cfg: 0.213) every other anchor of this head whose shape IoU exceeds it is positive in
  the same cell too; without it (yolov4-tiny) only the single best anchor is.
* **Box** (positives): ``iou_normalizer * (1 - CIoU)`` (``iou_loss``: ``ciou``, or ``diou``,
  ``giou``, ``iou``) between the decoded prediction (with the
  grid-sensitivity decode of :mod:`yolov4.ops.decode`) and the target, CIoU in coordinates
  relative to the input size as darknet computes it; or with ``iou_loss="mse"`` (darknet's
  default, the YOLOv3 cfgs) a squared error on the coordinates (below).
* **Objectness**: binary cross-entropy towards 1 at positives and 0 elsewhere, times
  ``obj_normalizer``; a non-positive prediction is left alone (no push to 0) when its decoded
  box overlaps some target of its image with IoU > ``ignore_thresh`` and it has some class
  probability above 0.25 (that IoU is darknet's ``best_match_iou``, 0 without such a class).
  With ``objectness_smooth`` (yolo_layer.c:455-460, 568-572) every prediction is pushed towards
  ``best_match_iou`` where it exceeds ``ignore_thresh``, else towards 0, *positives included*:
  darknet's positive rule only writes ``1 - sigmoid(obj)`` into a delta still exactly 0, and the
  first loop has already written one for every prediction (so a positive is pulled up only as
  far as its decoded box fits some target, and down when it fits none above ``ignore_thresh``).
* **Class** (positives): binary cross-entropy per class; the target is the union of the classes
  of all targets assigned to that prediction, optionally label-smoothed (``y * (1 - eps) + eps /
  2``, darknet's ``label_smooth_eps``).
* **Class balance** (``counters_per_class``, per head; :mod:`yolov4.models.class_balance`):
  darknet's multipliers ``m_c = max(N) / N_c`` (capped at ``max_delta``) scale, for a target of
  class ``c``, its box term (``iou_normalizer * m_c``, inside ``fix_nan_inf`` and the
  ``max_delta`` clip), the objectness at its positives (``m_c`` of the slot's last target; with
  ``objectness_smooth`` of the first, where the positive rule acts) and its class's term
  (``m_c * cls_normalizer``; :func:`~yolov4.loss.darknet.balanced_class_weight` gives darknet's
  rule for several targets in one slot). The other classes' terms are not scaled.

Parts are summed over predictions and targets, averaged over images: darknet's deltas are
per-image sums and its SGD step divides by the batch size.

The box term's gradient (``box_gradient``: ``"darknet"``, darknet's hand-derived ``dx_box_iou``
and ``delta_yolo_box``, the default; or ``"exact"``, the autograd derivative of the value) and
the ``mse`` box term are described, and computed, in :mod:`yolov4.loss.box`. With ``iou_thresh``
set, a positive's box gradient is divided as darknet's ``averages_yolo_deltas`` does (there).

``new_coords`` (darknet's ``[yolo] new_coords=1``, the Scaled-YOLOv4 cfgs yolov4-csp, yolov4x-mish,
yolov4-p5/p6): the conv in front of the layer has ``activation=logistic``, so darknet's layer input
is ``sigmoid`` of the raw map seen here, and the layer neither activates it again nor (as always)
differentiates anything in backward; the conv's backward then multiplies ``l.delta`` by the
logistic derivative ``s * (1 - s)`` (convolutional_layer.c, ``gradient_array``). Hence:

* boxes decode as ``w = 4 * sigmoid(tw)^2 * anchor`` (``get_yolo_box``, yolo_layer.c:139-143;
  ``x, y`` as without it, ``scale_x_y`` included), in the assignment-free parts too (ignore);
* the box gradient goes to the layer input ``sigmoid(t)`` (:mod:`yolov4.loss.box`);
* objectness and class deltas ``target - s`` on ``s`` become ``(target - s) * s * (1 - s)`` on the
  raw map: the gradient of the squared error ``0.5 * (s - target)^2``, which is what these terms
  are here (times ``obj_normalizer``, ``cls_normalizer``) instead of the cross-entropy.

Departures from darknet, and why:

* ``box_gradient="exact"`` is not darknet's gradient (see above); ``"darknet"`` is, up to
  float rounding.
* Targets whose centre lies on the right/bottom edge use the last cell (darknet would index
  past the row); class indices are trusted (darknet skips out-of-range ones with a warning).
* ``cls_normalizer``: darknet applies it only together with ``counters_per_class``
  (yolo_layer.c:350, the positive class only), so without that key the Scaled-YOLOv4 cfgs' 0.5
  does nothing there. :meth:`from_config` passes the cfg's value to the heads with
  ``counters_per_class`` and 1.0 to the others (darknet's gradient); without
  ``counters_per_class`` the constructor's ``cls_normalizer`` scales the whole class term.
* A pair with a zero-size target gets a zero mse box term (darknet's ``log 0`` writes inf).
* ``truth_thresh`` is not implemented. It is 1.0 in every zoo cfg, but darknet's test
  ``best_iou > truth_thresh`` (yolo_layer.c:488) fires when a float IoU rounds above 1, i.e. on
  a prediction fitting a target exactly (about half of planted exact fits): that slot becomes a
  positive for the target (objectness, class and box deltas) even if not assigned to it, and an
  assigned one gets its box delta twice (objectness and class are rewritten with equal values).
  Near an exact fit the box delta is darknet's kink value, so this is a corner case.
* The options no zoo cfg uses (focal loss, ``iou_thresh_kind`` other than
  ``iou``, ``map``, adversarial training, the bad-label rejection schedule) are not implemented.
* The result is a differentiable tensor, not deltas written into the layer: it works with
  autocast (the maps are cast to float32 here), gradient accumulation and DDP.
"""

from yolov4.loss.box import MAX_LOG_WH
from yolov4.loss.cost import darknet_cost
from yolov4.loss.darknet import darknet_dx_box_iou, iou_loss_gradient
from yolov4.loss.inputs import BOX_GRADIENTS
from yolov4.loss.yolo import IGNORE_CLASS_CONF, LossOutput, YoloLoss

__all__ = [
    "YoloLoss",
    "LossOutput",
    "IGNORE_CLASS_CONF",
    "BOX_GRADIENTS",
    "MAX_LOG_WH",
    "darknet_cost",
    "darknet_dx_box_iou",
    "iou_loss_gradient",
]
