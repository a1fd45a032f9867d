"""Models with detections worth comparing, and OpenCV's darknet importer as the reference for
darknet's files (predict.py, Predictor.from_darknet, export.py darknet_weights=)."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import torch
import torchvision

from tests.conftest import randomize_
from yolov4.core.darknet_pair import DARKNET_PAD_VALUE
from yolov4.core.preprocess import PreprocessConfig, preprocess


@torch.no_grad()
def calibrate_heads_(model, image: np.ndarray, mode: str = "stretch", mean: float = -5.0):
    """Rescale each head conv so that on ``image`` (RGB uint8) every output channel has mean
    ``mean`` and std 2 over the grid: a random network then scores a few dozen cells high and
    the rest low, and its detections depend on the image (not on biases alone)."""
    config = PreprocessConfig(input_size=model.config.input_size, mode=mode)
    x, _ = preprocess(image, config)
    for conv, fmap in zip(model.head_convs(), model(x[None])):
        k = 2.0 / fmap.std((2, 3))[0]
        offset = fmap.mean((2, 3))[0] - conv.conv.bias
        conv.conv.weight.mul_(k[:, None, None, None])
        conv.conv.bias.copy_(mean - k * offset)
    return model.eval()


def darknet_model(name: str, image: np.ndarray, seed: int = 3, mean: float = -5.0, **kwargs):
    """A zoo network with random weights (BN statistics included), calibrated on ``image``
    (``mean``: the head channels' mean logit; higher for fewer cells and classes)."""
    from yolov4 import build_model

    torch.manual_seed(seed)
    model = randomize_(build_model(name, **kwargs), seed=seed)
    return calibrate_heads_(model, image, mean=mean)


def darknet_letterbox(image: np.ndarray, input_size) -> tuple[np.ndarray, tuple[int, int]]:
    """darknet's ``letterbox_image`` of ``image`` (RGB uint8) into ``input_size`` ``(H, W)``:
    the size that fits, in integers as darknet computes it, resized bilinearly and centred on
    darknet's 0.5 grey (as uint8). Returns the canvas and that ``(new_w, new_h)``."""
    (h, w), (ih, iw) = input_size, image.shape[:2]
    if w / iw < h / ih:
        new_w, new_h = w, ih * w // iw
    else:
        new_w, new_h = iw * h // ih, h
    canvas = np.full((h, w, 3), DARKNET_PAD_VALUE, np.uint8)
    x, y = (w - new_w) // 2, (h - new_h) // 2
    canvas[y : y + new_h, x : x + new_w] = cv2.resize(image, (new_w, new_h))
    return canvas, (new_w, new_h)


def opencv_detections(
    cfg: Path,
    weights: Path,
    image: np.ndarray,
    input_size,
    conf: float,
    iou: float = 0.45,
    letter_box: bool = False,
) -> list[tuple]:
    """Detections of OpenCV's darknet importer on ``image`` (RGB uint8, stretched to
    ``input_size`` as darknet does, or with ``letter_box`` letterboxed as darknet does
    (:func:`darknet_letterbox`) and the boxes mapped back with darknet's
    ``correct_yolo_boxes(letter=1)``, which OpenCV's importer does not apply):
    ``score = objectness * class probability > conf`` per class, per-class NMS (torchvision,
    float64, original pixels), boxes clipped to the image. Sorted ``(class, score, x1, y1, x2,
    y2)``."""
    net = cv2.dnn.readNetFromDarknet(str(cfg), str(weights))
    h, w = input_size
    image_in, (new_w, new_h) = (
        darknet_letterbox(image, input_size) if letter_box else (image, (w, h))
    )
    net.setInput(cv2.dnn.blobFromImage(image_in, 1 / 255, (w, h), swapRB=False, crop=False))
    rows = np.concatenate(net.forward(net.getUnconnectedOutLayersNames())).astype(np.float64)
    # correct_yolo_boxes: relative to the network input -> relative to the image
    ratio = np.array([new_w / w, new_h / h])
    rows[:, :2] = (rows[:, :2] - np.array([w - new_w, h - new_h]) / 2 / [w, h]) / ratio
    rows[:, 2:4] /= ratio
    H, W = image.shape[:2]
    boxes, scores, ids = [], [], []
    for r in rows:
        for c in np.nonzero(r[5:] > conf)[0]:
            cx, cy, bw, bh = r[:4] * [W, H, W, H]
            boxes.append([cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2])
            scores.append(r[5 + c])
            ids.append(int(c))
    assert boxes, "OpenCV found nothing above conf: nothing to compare"
    b = torch.tensor(boxes, dtype=torch.float64)
    keep = torchvision.ops.batched_nms(b, torch.tensor(scores), torch.tensor(ids), iou)
    clipped = [(ids[i], scores[i], *np.clip(b[i].numpy(), 0, [W, H, W, H])) for i in keep.tolist()]
    # a box wholly in the letterbox border is empty once clipped: the Predictor serves none
    return sorted(r for r in clipped if r[4] > r[2] and r[5] > r[3])


def as_rows(detections: list[dict]) -> list[tuple]:
    """``Detections.to_dict()["detections"]`` as sorted ``(class, score, x1, y1, x2, y2)``."""
    return sorted((d["class_id"], d["score"], *d["box"]) for d in detections)


def assert_same_detections(
    ours: list[tuple], ref: list[tuple], box_atol: float = 0.05, score_atol: float = 2e-5
) -> None:
    """One-to-one: each detection of ``ours`` has one of ``ref`` of its class with its score
    and box (the closest; scores that tie after rounding may be listed in either order)."""
    assert len(ours) == len(ref) > 0
    a, b = np.array(ours, np.float64), np.array(ref, np.float64)
    free = np.ones(len(b), bool)
    for row in a:
        cost = np.abs(b[:, 2:] - row[2:]).max(1) + np.abs(b[:, 1] - row[1])
        cost[(b[:, 0] != row[0]) | ~free] = np.inf
        j = int(np.argmin(cost))
        assert np.isfinite(cost[j]), f"{row} has no counterpart of its class in the reference"
        assert abs(b[j, 1] - row[1]) <= score_atol, (row, b[j])
        np.testing.assert_allclose(row[2:], b[j, 2:], atol=box_atol, err_msg=str((row, b[j])))
        free[j] = False
