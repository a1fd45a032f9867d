"""Models with detections worth comparing, and OpenCV's darknet importer as the reference for
darknet's files (predict.py, Predictor.from_darknet, export.py darknet_weights=)."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import torch
import torchvision

from tests.conftest import randomize_
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


def opencv_detections(
    cfg: Path, weights: Path, image: np.ndarray, input_size, conf: float, iou: float = 0.45
) -> list[tuple]:
    """Detections of OpenCV's darknet importer on ``image`` (RGB uint8, stretched to
    ``input_size`` as darknet does): ``score = objectness * class probability > conf`` per
    class, per-class NMS (torchvision, float64, original pixels), boxes clipped to the image.
    Sorted ``(class, score, x1, y1, x2, y2)``."""
    net = cv2.dnn.readNetFromDarknet(str(cfg), str(weights))
    h, w = input_size
    net.setInput(cv2.dnn.blobFromImage(image, 1 / 255, (w, h), swapRB=False, crop=False))
    rows = np.concatenate(net.forward(net.getUnconnectedOutLayersNames())).astype(np.float64)
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
    return sorted(
        (ids[i], scores[i], *np.clip(b[i].numpy(), 0, [W, H, W, H])) for i in keep.tolist()
    )


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
