"""Batching: samples → the batch dict every model/loss/evaluation step reads; darknet's
multi-scale training (``random=1``, :class:`MultiScale`): one size for all the batches of 10
optimizer steps, chosen by the step on the training device.

Batches cross the DataLoader with uint8 images (4x fewer bytes from the workers, no float work
in them) at the dataset's size; the training device finishes them
(:func:`yolov4.core.preprocess.batch_to_input`, called by ``YoloModule.on_after_batch_transfer``):
float32 times ``preprocess.scale`` (:func:`yolov4.core.preprocess.to_float`), then a bilinear
resize to ``input_size`` when multi-scale chose another size (:meth:`MultiScale.apply`, which
scales ``targets`` and ``letterbox`` to it). Batch keys (defined once here),
as the model reads them after that step:

    images          (B, 3, H, W) float32 in [0, 1], H and W multiples of the network's largest
                    stride (32; 64 for yolov4-p6: ``model.config.max_stride``); from the
                    DataLoader: uint8 at the dataset's input size, channels-last memory
    input_size      (H, W) ints: the size the device resizes ``images`` to (the dataset's size
                    from the DataLoader; another after :meth:`MultiScale.apply`)
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
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NotRequired, TypedDict

import torch
from torch.utils.data import get_worker_info

__all__ = [
    "Batch",
    "Sample",
    "DetectionCollate",
    "MultiScale",
    "SIZE_MULTIPLE",
    "multi_scale_size",
]

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
    """darknet's multi-scale size for ``input_hw`` scaled by ``factor``: each side
    ``round(side * factor / multiple + 1) * multiple`` (rounded half up: darknet's ``roundl``;
    the ``+ 1`` is darknet's, so sides run about one ``multiple`` above ``side * factor``), at
    least ``multiple``; a ``factor`` below 1 never gives a side above ``input_hw``'s (both
    sides are ``input_hw`` then)."""
    size = tuple(
        max(multiple, math.floor(s * factor / multiple + 1.5) * multiple) for s in input_hw
    )
    if factor < 1 and any(n > s for n, s in zip(size, input_hw, strict=True)):
        return tuple(int(s) for s in input_hw)  # type: ignore[return-value]
    return size  # type: ignore[return-value]


def _random_factor(coefficient: float, generator: torch.Generator | None = None) -> float:
    """darknet's ``rand_scale``: uniform in ``[1, c]``, inverted half of the time."""
    s = 1.0 + float(torch.rand((), generator=generator)) * (coefficient - 1.0)
    return s if float(torch.rand((), generator=generator)) < 0.5 else 1.0 / s


_WINDOW_SEED_STRIDE = 1_000_003  # window w of seed s: s * stride + w (no collision below 1e6)


@dataclass(frozen=True)
class MultiScale:
    """darknet's multi-scale training (a ``[yolo]`` layer's ``random``, the coefficient ``c``):
    every ``every`` optimizer steps (darknet's iterations: 10) a new input size
    (:func:`multi_scale_size` of a factor in ``[1/c, c]``) for all the batches of those steps,
    every DataLoader worker and every DDP rank alike; the first window and those starting in
    the last ``final`` steps (darknet's 100) at the largest size (darknet: at once a run that
    would run out of memory at it, and the last steps' batch-norm statistics at it).

    The size is a function of the seed and the step alone, so a resumed run draws what an
    uninterrupted one draws and the number of workers or GPUs changes nothing.
    """

    coefficient: float
    multiple: int = SIZE_MULTIPLE
    seed: int = 0
    every: int = 10
    final: int = 100

    def __post_init__(self) -> None:
        if not self.coefficient >= 1.0:
            raise ValueError(f"multi-scale coefficient: expected >= 1, got {self.coefficient}")
        if self.every < 1 or self.final < 0:
            raise ValueError(
                f"multi-scale: expected every >= 1 and final >= 0, got {self.every}, {self.final}"
            )

    def largest(self, input_hw: Sequence[int]) -> tuple[int, int]:
        return multi_scale_size(input_hw, self.coefficient, self.multiple)

    def smallest(self, input_hw: Sequence[int]) -> tuple[int, int]:
        return multi_scale_size(input_hw, 1 / self.coefficient, self.multiple)

    def size(
        self, input_hw: Sequence[int], step: int, total_steps: int | None = None
    ) -> tuple[int, int]:
        """The input size of optimizer step ``step`` (0-based) of a run of ``total_steps``
        (``None``: no final window) whose dataset size is ``input_hw``."""
        start = step - step % self.every
        if start == 0 or (total_steps is not None and start > total_steps - self.final):
            return self.largest(input_hw)
        window = start // self.every
        g = torch.Generator().manual_seed((self.seed * _WINDOW_SEED_STRIDE + window) % 2**63)
        return multi_scale_size(input_hw, _random_factor(self.coefficient, g), self.multiple)

    def apply(
        self, batch: Mapping[str, Any], step: int, total_steps: int | None = None
    ) -> dict[str, Any]:
        """``batch`` (a :class:`Batch`, on any device) at step ``step``'s size: ``input_size``
        set to it, ``targets`` and ``letterbox`` scaled to its pixels (the images are resized
        by :func:`yolov4.core.preprocess.batch_to_input`)."""
        h, w = (int(s) for s in batch["images"].shape[-2:])
        size = self.size((h, w), step, total_steps)
        if size == (h, w):
            return {**batch, "input_size": size}
        nh, nw = size
        targets, letterbox = batch["targets"], batch["letterbox"]
        gain = torch.tensor([nw / w, nh / h, nw / w, nh / h], device=targets.device)
        return {
            **batch,
            "input_size": size,
            "targets": torch.cat([targets[:, :2], targets[:, 2:] * gain], 1),
            "letterbox": letterbox * gain.to(letterbox.device),
        }


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


class DetectionCollate:
    """Stack samples into a :class:`Batch` (images as the samples hold them: uint8, at the
    dataset's size, ``input_size``; multi-scale training sizes are chosen per optimizer step on
    the device: :class:`MultiScale`)."""

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
        return Batch(
            images=images,
            input_size=(int(h), int(w)),
            targets=targets,
            image_ids=torch.tensor([s["image_id"] for s in samples], dtype=torch.int64),
            original_sizes=torch.tensor(
                [s["original_size"] for s in samples], dtype=torch.int64
            ).reshape(-1, 2),
            letterbox=letterbox,
            decoded=torch.tensor([s.get("decoded", True) for s in samples], dtype=torch.bool),
        )
