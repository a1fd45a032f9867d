"""Darknet's ``[yolo]`` decode: raw head maps -> boxes in input pixels, objectness, class scores.

A head map is the conv output in front of one ``[yolo]`` layer, ``(B, A * (5 + C), H, W)`` with
channel ``a * (5 + C) + k``, ``k`` indexing ``[tx, ty, tw, th, obj, cls_0 .. cls_{C-1}]``. For the
cell in column ``i``, row ``j`` and anchor ``(aw, ah)`` of a head with stride ``s`` and
``scale_x_y`` ``g`` (darknet's ``get_yolo_box`` after the ``scal_add`` of ``forward_yolo_layer``):

    cx = (i + g * sigmoid(tx) - (g - 1) / 2) * s        w = aw * exp(tw)
    cy = (j + g * sigmoid(ty) - (g - 1) / 2) * s        h = ah * exp(th)
    obj = sigmoid(obj_logit),  cls_c = sigmoid(cls_logit_c)

With ``new_coords`` (darknet's ``[yolo] new_coords=1``, the Scaled-YOLOv4 cfgs: the conv in front
of the layer has ``activation=logistic``, so darknet's layer input is ``sigmoid`` of the raw map
here; ``get_yolo_box``'s new_coords branch, yolo_layer.c:139-143, after the same ``scal_add``):

    cx, cy as above                                     w = aw * 4 * sigmoid(tw) ** 2
                                                        h = ah * 4 * sigmoid(th) ** 2

With ``softmax`` (darknet's YOLOv2 ``[region]`` head with ``softmax=1``, ``get_region_box`` and
``forward_region_layer``; its anchors given here in input pixels, the cfg's grid-cell anchors
times the stride, and ``scale_x_y`` 1) the box and objectness decode as above and the class
probabilities are ``softmax`` over the ``C`` class logits instead of sigmoids.

With ``gaussian`` (darknet's Gaussian YOLOv3 ``[Gaussian_yolo]`` heads, ``gaussian_yolo_layer.c``)
a head map has ``A * (9 + C)`` channels, per anchor ``[tx, sx, ty, sy, tw, sw, th, sh, obj,
cls_0 ..]``: each box coordinate followed by its uncertainty. The box decodes from ``tx, ty, tw,
th`` as above (``get_gaussian_yolo_box``), and darknet's score of class ``c``,
``obj * cls_c * (1 - u)`` with ``u`` the mean of ``sigmoid(sx), sigmoid(sy), sigmoid(sw),
sigmoid(sh)`` (``get_gaussian_yolo_detections``), is kept as ``obj`` and class probabilities
``cls_c * (1 - u)``: the ``(B, N, 5 + C)`` layout of every head, objectness as darknet
thresholds it, the uncertainties themselves not kept.

Predictions of one head are ordered ``(a, j, i)`` (darknet's ``entry_index``), heads in the
order given (ascending stride). Shapes only drive ``view``/``permute``/``arange``, never Python
branches on values, so the functions trace for ONNX with any ``H, W`` and batch size.
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Sequence

import torch
from torch import Tensor

__all__ = ["split_head", "cell_grid", "decode_boxes", "decode_head", "decode_predictions"]

_GRID_CACHE_SIZE = 32  # distinct (H, W, device, dtype): every head of a few input sizes


def split_head(head: Tensor, num_anchors: int) -> Tensor:
    """``(B, A * (5 + C), H, W)`` raw map -> ``(B, A, H, W, 5 + C)`` view (no copy, no activation)."""
    b, _, h, w = head.shape
    return head.view(b, num_anchors, -1, h, w).permute(0, 1, 3, 4, 2)


def _make_grid(h: int, w: int, device: torch.device, dtype: torch.dtype) -> Tensor:
    ys = torch.arange(h, device=device, dtype=dtype)
    xs = torch.arange(w, device=device, dtype=dtype)
    gy, gx = torch.meshgrid(ys, xs, indexing="ij")
    return torch.stack((gx, gy), dim=-1)


@functools.lru_cache(maxsize=_GRID_CACHE_SIZE)
def _cached_grid(h: int, w: int, device: torch.device, dtype: torch.dtype) -> Tensor:
    with torch.inference_mode(False):  # a normal tensor, usable later with autograd on
        return _make_grid(h, w, device, dtype)


def _exporting() -> bool:
    return (
        torch.jit.is_tracing()
        or torch.compiler.is_compiling()
        or torch.compiler.is_exporting()
        or torch.onnx.is_in_onnx_export()
    )


def cell_grid(h: int, w: int, device: torch.device, dtype: torch.dtype) -> Tensor:
    """``(H, W, 2)`` cell offsets ``(i, j)`` = (column, row) of dtype ``dtype``.

    Cached per ``(H, W, device, dtype)`` in eager mode (treat as read-only); built with
    ``arange`` while tracing/compiling so that exported graphs keep ``H, W`` symbolic.
    """
    if _exporting():
        return _make_grid(h, w, device, dtype)
    return _cached_grid(int(h), int(w), torch.device(device), dtype)


def decode_boxes(
    t: Tensor, anchors: Tensor, stride: int, scale_x_y: float, new_coords: bool = False
) -> Tensor:
    """Raw ``t = (tx, ty, tw, th)`` ``(B, A, H, W, 4)`` -> boxes ``(B, A, H, W, 4)`` cxcywh pixels.

    ``anchors`` is ``(A, 2)`` ``(w, h)`` in input pixels; ``new_coords``: darknet's
    ``new_coords=1`` sizes ``4 * sigmoid(t) ** 2 * anchor`` instead of ``exp(t) * anchor``.
    Differentiable (the loss uses it).
    """
    h, w = t.shape[2], t.shape[3]
    grid = cell_grid(h, w, t.device, t.dtype)  # (H, W, 2)
    xy = (t[..., :2].sigmoid() * scale_x_y - (scale_x_y - 1) / 2 + grid) * stride
    size = t[..., 2:4].sigmoid().square() * 4 if new_coords else t[..., 2:4].exp()
    wh = size * anchors.to(t.dtype).view(1, -1, 1, 1, 2)
    return torch.cat((xy, wh), dim=-1)


def decode_head(
    head: Tensor,
    anchors: Sequence[Sequence[float]] | Tensor,
    stride: int,
    scale_x_y: float,
    new_coords: bool = False,
    softmax: bool = False,
    gaussian: bool = False,
) -> Tensor:
    """One raw head map ``(B, A * (5 + C), H, W)`` (``A * (9 + C)`` with ``gaussian``) ->
    ``(B, A * H * W, 5 + C)``.

    Columns are ``[cx, cy, w, h, obj, cls_0 .. cls_{C-1}]``: box in input pixels, objectness and
    class probabilities (sigmoids, not yet multiplied; with ``softmax``, a ``[region]`` head's
    softmax over the classes; with ``gaussian``, a ``[Gaussian_yolo]`` head's sigmoids times one
    minus the mean box uncertainty). ``anchors``: the head's ``A`` anchors ``(w, h)`` in input
    pixels; ``new_coords`` as :func:`decode_boxes`. Same dtype and device as ``head``.
    """
    with warnings.catch_warnings():  # the anchors are constants of the model: fine in a trace
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        anchors = torch.as_tensor(anchors, dtype=head.dtype, device=head.device).view(-1, 2)
    p = split_head(head, anchors.shape[0])
    if gaussian:
        pairs = p[..., :8].unflatten(-1, (4, 2))  # (tx, sx), (ty, sy), (tw, sw), (th, sh)
        certainty = 1 - pairs[..., 1].sigmoid().mean(dim=-1, keepdim=True)
        t, p = pairs[..., 0], p[..., 4:]  # p: [_, _, _, _, obj, classes] from here
    else:
        t, certainty = p[..., :4], None
    boxes = decode_boxes(t, anchors, stride, scale_x_y, new_coords)
    classes = p[..., 5:].softmax(dim=-1) if softmax else p[..., 5:].sigmoid()
    if certainty is not None:
        classes = classes * certainty
    out = torch.cat((boxes, p[..., 4:5].sigmoid(), classes), dim=-1)
    return out.reshape(head.shape[0], -1, out.shape[-1])


def decode_predictions(
    heads: Sequence[Tensor],
    anchors: Sequence[Sequence[Sequence[float]]],
    strides: Sequence[int],
    scale_x_y: Sequence[float],
    new_coords: bool = False,
    softmax: bool = False,
    gaussian: bool = False,
) -> Tensor:
    """All heads -> ``(B, N, 5 + C)``, ``N = sum(A * H_l * W_l)``, heads in the order given.

    ``heads``: the network's raw maps, ascending stride; ``anchors[l]`` the ``A`` anchor
    ``(w, h)`` pixels of head ``l``; ``strides[l]`` and ``scale_x_y[l]`` its stride and grid
    sensitivity; ``new_coords`` darknet's ``[yolo] new_coords=1`` (all heads); ``softmax`` the
    class softmax of a ``[region]`` head; ``gaussian`` the ``[Gaussian_yolo]`` heads' layout and
    scores. For a model: ``decode_predictions(maps, cfg.head_anchors(), cfg.strides,
    cfg.scale_x_y, cfg.new_coords, cfg.region, cfg.gaussian)`` with ``cfg = model.config``.
    """
    return torch.cat(
        [
            decode_head(m, a, s, g, new_coords, softmax, gaussian)
            for m, a, s, g in zip(heads, anchors, strides, scale_x_y)
        ],
        dim=1,
    )


def decode(*args, **kwargs) -> Tensor:
    """The old name of :func:`decode_predictions`, kept for one release (warns)."""
    warnings.warn(
        "yolov4.ops.decode is renamed yolov4.ops.decode_predictions; the old name goes in the "
        "next release",
        DeprecationWarning,
        stacklevel=2,
    )
    return decode_predictions(*args, **kwargs)
