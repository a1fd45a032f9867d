"""Zoo networks learn: a short overfit on one image with the real loss, for one Scaled-YOLOv4
network (yolov4-csp: ``new_coords``, CIoU) and for yolov3-tiny (darknet's default ``mse`` box
loss), then decode + NMS must find the image's boxes again."""

from __future__ import annotations

import pytest
import torch

from tests.overfit import set_bn_statistics
from yolov4 import build_model
from yolov4.core.model import DecodedModel
from yolov4.core.postprocess import SERVING
from yolov4.loss import YoloLoss
from yolov4.ops.boxes import box_iou

# three boxes of two classes on a 128 x 128 canvas, [x1, y1, x2, y2] (scaled to the input size)
BOXES = torch.tensor([[12.0, 16, 60, 72], [70, 58, 118, 114], [76, 10, 112, 42]])
CLASSES = torch.tensor([0, 1, 0])
COLOURS = torch.tensor([[0.9, 0.1, 0.1], [0.1, 0.2, 0.9]])


def one_image(size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A grey ``(1, 3, size, size)`` image with a filled rectangle per box, and its targets
    ``(3, 6)`` ``[image, class, x1, y1, x2, y2]`` in input pixels."""
    boxes = BOXES * (size / 128)
    image = torch.full((1, 3, size, size), 0.5)
    for (x1, y1, x2, y2), c in zip(boxes.long().tolist(), CLASSES.tolist()):
        image[0, :, y1:y2, x1:x2] = COLOURS[c][:, None, None]
    targets = torch.cat([torch.zeros(len(boxes), 1), CLASSES[:, None].float(), boxes], 1)
    return image, targets


@pytest.mark.parametrize(
    "name, size, steps, iou_loss",
    [
        pytest.param(  # the smallest Scaled-YOLOv4 network, 52M parameters
            "yolov4-csp", 64, 25, "ciou", marks=pytest.mark.slow
        ),
        ("yolov3-tiny", 128, 30, "mse"),
    ],
)
def test_overfits_one_image_and_finds_its_boxes(name, size, steps, iou_loss):
    torch.manual_seed(0)
    model = build_model(name, num_classes=2, input_size=[size, size])
    loss_fn = YoloLoss.from_config(model.config)
    assert loss_fn.iou_loss == iou_loss and loss_fn.new_coords == model.config.new_coords
    image, targets = one_image(size)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3, fused=True)  # 5x faster step on CPU
    model.train()
    losses = []
    for _ in range(steps):
        loss = loss_fn(model(image), targets).total
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0] / 20, losses

    set_bn_statistics(model, image)
    with torch.no_grad():
        detections = SERVING(DecodedModel(model)(image), (size, size))[0]  # conf 0.25, NMS 0.45
    boxes = targets[:, 2:]
    iou = box_iou(boxes, detections[:, :4])  # (3 targets, K detections)
    same_class = targets[:, 1:2] == detections[:, 5][None]
    best = (iou * same_class).max(1).values if len(detections) else torch.zeros(len(boxes))
    assert (best > 0.5).all(), (best, detections)
