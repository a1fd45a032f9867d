"""Batching: samples → the batch dict every model/loss/evaluation step reads, with darknet's
multi-scale training (``random=1``) drawn per batch so all images of a batch share a size.

Batches cross the DataLoader with uint8 images (4x fewer bytes from the workers, no float work
in them) at the dataset's size; the training device finishes them
(:func:`yolov4.core.preprocess.batch_to_input`, called by ``YoloModule.on_after_batch_transfer``):
float32 times ``preprocess.scale`` (:func:`yolov4.core.preprocess.to_float`), then a bilinear
resize to ``input_size`` when multi-scale drew another size. Batch keys (defined once here),
as the model reads them after that step:

    images          (B, 3, H, W) float32 in [0, 1], H and W multiples of the network's largest
                    stride (32; 64 for yolov4-p6: ``model.config.max_stride``); from the
                    DataLoader: uint8 at the dataset's input size, channels-last memory
    input_size      (H, W) ints: the size the device resizes ``images`` to (multi-scale)
    targets         (M, 6) float32 [image_index, class_index, x1, y1, x2, y2], pixels of
                    ``input_size``
    image_ids       (B,) int64, the ids results are reported under
    original_sizes  (B, 2) int64 (H0, W0) of each original image
    letterbox       (B, 4) float32 [scale_x, scale_y, pad_x, pad_y]: original → input pixels
                    (meaningful for validation samples; for augmented training samples it
                    describes only the base resize, never use it to unmap training boxes)
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import NotRequired, TypedDict

import torch
from torch.utils.data import get_worker_info

__all__ = ["Batch", "Sample", "DetectionCollate", "SIZE_MULTIPLE", "multi_scale_size"]

# The default input side multiple: the largest stride of most networks. A network's own is
# ``model.config.max_stride`` (64 for yolov4-p6), which train.py and evaluate.py pass on.
SIZE_MULTIPLE = 32


class Sample(TypedDict):
    """One item of a :class:`~yolov4.data.dataset.DetectionDataset`."""

    image: torch.Tensor  # (3, H, W) uint8, a view of (H, W, 3) memory (the device scales it)
    boxes: torch.Tensor  # (N, 4) float32 xyxy input pixels
    labels: torch.Tensor  # (N,) int64
    image_id: int
    original_size: tuple[int, int]
    letterbox: tuple[float, float, float, float]
    decoded: NotRequired[bool]  # False: unreadable, a blank stand-in (validation skips it)


class Batch(TypedDict):
    images: torch.Tensor
    input_size: tuple[int, int]
    targets: torch.Tensor
    image_ids: torch.Tensor
    original_sizes: torch.Tensor
    letterbox: torch.Tensor
    decoded: torch.Tensor  # (B,) bool: False for an unreadable image's blank stand-in


def multi_scale_size(
    input_hw: Sequence[int], factor: float, multiple: int = SIZE_MULTIPLE
) -> tuple[int, int]:
    """``input_hw`` scaled by ``factor`` and rounded to multiples of ``multiple`` (at least one)."""
    return tuple(max(multiple, round(s * factor / multiple) * multiple) for s in input_hw)  # type: ignore[return-value]


def _random_factor(coefficient: float, generator: torch.Generator | None = None) -> float:
    """darknet's ``rand_scale``: uniform in ``[1, c]``, inverted half of the time (``generator``,
    else torch's RNG, which each DataLoader worker seeds)."""
    s = 1.0 + float(torch.rand((), generator=generator)) * (coefficient - 1.0)
    return s if float(torch.rand((), generator=generator)) < 0.5 else 1.0 / s


def _stack_images(images: Sequence[torch.Tensor]) -> torch.Tensor:
    """``B`` ``(3, H, W)`` views of ``(H, W, 3)`` memory → ``(B, 3, H, W)`` over ``(B, H, W, 3)``
    memory in one plain copy, straight into shared memory inside a DataLoader worker (as
    ``default_collate`` does) so the batch is not copied again on its way to the main process."""
    hwc = [im.permute(1, 2, 0) for im in images]
    out = None
    if get_worker_info() is not None:
        shape = (len(hwc), *hwc[0].shape)
        storage = hwc[0].untyped_storage()._new_shared(math.prod(shape) * hwc[0].element_size())
        out = hwc[0].new(storage).view(shape)
    return torch.stack(hwc, out=out).permute(0, 3, 1, 2)


def _in_main() -> bool:
    return get_worker_info() is None


class DetectionCollate:
    """Stack samples into a :class:`Batch` (images as the samples hold them: uint8); with
    ``multi_scale`` (darknet's ``random`` coefficient, e.g. 1.4) draw a random size for the whole
    batch (a multiple of ``size_multiple``, the network's largest stride, in about
    ``[size / m, size * m]``): boxes and letterbox parameters are scaled to it here, the images
    on the device (``input_size``)."""

    def __init__(
        self, multi_scale: float | None = None, size_multiple: int = SIZE_MULTIPLE
    ) -> None:
        self.multi_scale = multi_scale
        self.size_multiple = int(size_multiple)
        # without DataLoader workers: the sizes' own stream, reseeded per epoch (EpochShuffle),
        # so a seed and an epoch give the same sizes (the process's global RNG would not)
        self.generator: torch.Generator | None = None

    def reseed(self, seed: int) -> None:
        """Draw the multi-scale sizes from a stream seeded with ``seed`` (in the main process;
        DataLoader workers draw from their own seeded RNG)."""
        self.generator = torch.Generator().manual_seed(seed)

    def __call__(self, samples: Sequence[Sample]) -> Batch:
        images = _stack_images([s["image"] for s in samples])
        targets = torch.cat(
            [
                torch.cat(
                    [
                        torch.full((len(s["labels"]), 1), float(i)),
                        s["labels"][:, None].float(),
                        s["boxes"],
                    ],
                    1,
                )
                for i, s in enumerate(samples)
            ]
        ).reshape(-1, 6)
        letterbox = torch.tensor([s["letterbox"] for s in samples], dtype=torch.float32).reshape(
            -1, 4
        )
        h, w = images.shape[-2:]
        size = (int(h), int(w))
        if self.multi_scale is not None and self.multi_scale > 1.0:
            factor = _random_factor(self.multi_scale, self.generator if _in_main() else None)
            size = multi_scale_size((h, w), factor, self.size_multiple)
            if size != (h, w):
                nh, nw = size
                gain = torch.tensor([nw / w, nh / h, nw / w, nh / h])
                targets = torch.cat([targets[:, :2], targets[:, 2:] * gain], 1)
                letterbox = letterbox * gain
        return Batch(
            images=images,
            input_size=size,
            targets=targets,
            image_ids=torch.tensor([s["image_id"] for s in samples], dtype=torch.int64),
            original_sizes=torch.tensor(
                [s["original_size"] for s in samples], dtype=torch.int64
            ).reshape(-1, 2),
            letterbox=letterbox,
            decoded=torch.tensor([s.get("decoded", True) for s in samples], dtype=torch.bool),
        )
