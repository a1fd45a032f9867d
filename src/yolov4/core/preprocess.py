"""THE image preprocessing: the one function validation, evaluate.py, the export check and the
Predictor all call, so that training and serving can never disagree.

``numpy (H0, W0, 3) uint8 RGB`` → resize (``letterbox`` or ``stretch``) to the input size →
channel order → ``* scale`` → ``torch (3, H, W) float32`` + the :class:`LetterboxParams` that map
boxes back (:func:`yolov4.ops.letterbox.unmap_boxes`). Its settings are a
:class:`PreprocessConfig` whose plain-dict form (``to_dict``) is stored in every checkpoint and
artifact.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, fields
from typing import Any

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from yolov4.errors import ConfigError, InputError
from yolov4.ops.letterbox import RESIZE_MODES, LetterboxParams, letterbox_params

__all__ = [
    "LETTERBOX_PAD_VALUE",
    "PreprocessConfig",
    "preprocess",
    "resize_image",
    "image_to_tensor",
    "to_float",
    "batch_to_input",
]

# Grey border of letterboxed images, YOLOv5/ultralytics' value (114, 114, 114) for all channels;
# darknet's own letterbox_image fills with 0.5 (= 127.5 of 255) but its weights use stretch.
LETTERBOX_PAD_VALUE = 114
# Pixel values are divided by 255 (darknet's load_image_color: uint8 → [0, 1] float).
UINT8_SCALE = 1.0 / 255.0
CHANNEL_ORDERS = ("rgb", "bgr")


@dataclass(frozen=True)
class PreprocessConfig:
    """How an RGB uint8 image becomes a network input.

    Attributes:
        input_size: ``(H, W)`` of the network input, multiples of its largest stride
            (``model.config.max_stride``: 32, 64 for yolov4-p6).
        mode: ``letterbox`` (aspect kept, padded; default for models trained here) or
            ``stretch`` (darknet's resize; use for darknet's published weights).
        pad_value: letterbox border value in uint8 units.
        channel_order: the order the network expects, ``rgb`` (darknet, this project) or ``bgr``.
        scale: multiplier applied to uint8 values (``1/255`` gives ``[0, 1]``).
    """

    input_size: tuple[int, int] = (416, 416)
    mode: str = "letterbox"
    pad_value: int = LETTERBOX_PAD_VALUE
    channel_order: str = "rgb"
    scale: float = UINT8_SCALE

    def __post_init__(self) -> None:
        size = _positive_int_pair(self.input_size)
        if size is None:
            raise ConfigError(
                f"preprocess.input_size: expected (H, W) integers > 0, got {self.input_size!r}"
            )
        object.__setattr__(self, "input_size", size)
        if not isinstance(self.mode, str) or self.mode not in RESIZE_MODES:
            raise ConfigError(f"preprocess.mode: expected one of {RESIZE_MODES}, got {self.mode!r}")
        if not isinstance(self.channel_order, str) or self.channel_order not in CHANNEL_ORDERS:
            raise ConfigError(
                f"preprocess.channel_order: expected one of {CHANNEL_ORDERS}, "
                f"got {self.channel_order!r}"
            )
        pad = self.pad_value
        if not _is_real(pad) or not float(pad).is_integer() or not 0 <= pad <= 255:
            raise ConfigError(f"preprocess.pad_value: expected an integer 0..255, got {pad!r}")
        object.__setattr__(self, "pad_value", int(pad))
        if not _is_real(self.scale) or not math.isfinite(self.scale) or self.scale <= 0:
            raise ConfigError(f"preprocess.scale: expected a finite number > 0, got {self.scale!r}")
        object.__setattr__(self, "scale", float(self.scale))

    def to_dict(self) -> dict[str, Any]:
        """Plain builtins only (safe for ``torch.load(weights_only=True)`` and JSON)."""
        d = asdict(self)
        d["input_size"] = list(self.input_size)
        return d

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> PreprocessConfig:
        """The inverse of :meth:`to_dict`; missing keys take their defaults, unknown keys and
        bad values raise :class:`ConfigError` naming the key."""
        if not isinstance(values, Mapping):
            raise ConfigError(f"preprocess: expected a mapping, got {type(values).__name__}")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ConfigError(
                f"unknown preprocess key(s) {unknown}; expected keys from {sorted(known)}"
            )
        return cls(**dict(values))

    def with_size(self, input_size: Sequence[int]) -> PreprocessConfig:
        return PreprocessConfig(**{**asdict(self), "input_size": tuple(input_size)})


def _is_real(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _positive_int_pair(value: Any) -> tuple[int, int] | None:
    """``(H, W)`` as two ints from any pair of integer-valued numbers; ``None`` if it is not."""
    if isinstance(value, (str, bytes)) or not isinstance(value, Iterable):
        return None
    items = list(value)
    if len(items) != 2 or not all(_is_real(v) and float(v).is_integer() and v > 0 for v in items):
        return None
    return int(items[0]), int(items[1])


def _check_image(image: Any) -> None:
    if (
        not isinstance(image, np.ndarray)
        or image.ndim != 3
        or image.shape[2] != 3
        or image.dtype != np.uint8
    ):
        found = (
            f"shape {tuple(image.shape)} dtype {image.dtype}"
            if isinstance(image, np.ndarray)
            else type(image).__name__
        )
        raise InputError(f"expected an RGB image as a numpy (H, W, 3) uint8 array, got {found}")
    if image.shape[0] == 0 or image.shape[1] == 0:
        raise InputError(f"expected a non-empty image, got shape {tuple(image.shape)}")


def resize_image(
    image: np.ndarray,
    params: LetterboxParams,
    input_size: Sequence[int],
    pad_value: int,
    interpolation: int = cv2.INTER_LINEAR,
) -> np.ndarray:
    """Apply ``params`` to a ``(H0, W0[, C])`` uint8 image: resize (bilinear; the training
    pipeline passes ``cv2.INTER_NEAREST`` for masks), then place it at ``(pad_x, pad_y)`` on a
    ``(H, W[, C])`` canvas filled with ``pad_value``. The one resize :func:`preprocess` and
    the training pipeline (:mod:`yolov4.data.transforms`) share."""
    h, w = (int(s) for s in input_size)
    h0, w0 = image.shape[:2]
    new_w, new_h = round(w0 * params.scale_x), round(h0 * params.scale_y)
    resized = (
        image
        if (new_w, new_h) == (w0, h0)
        else cv2.resize(image, (new_w, new_h), interpolation=interpolation).reshape(
            new_h, new_w, *image.shape[2:]
        )
    )
    if (new_h, new_w) == (h, w):
        return np.ascontiguousarray(resized)
    canvas = np.full((h, w, *image.shape[2:]), pad_value, dtype=image.dtype)
    px, py = int(params.pad_x), int(params.pad_y)
    canvas[py : py + new_h, px : px + new_w] = resized
    return canvas


def preprocess(
    image: np.ndarray, config: PreprocessConfig, scale: bool = True
) -> tuple[torch.Tensor, LetterboxParams]:
    """One image → network input.

    Args:
        image: ``(H0, W0, 3)`` uint8, RGB.
        config: the :class:`PreprocessConfig`.
        scale: ``False`` stops before the last step and returns uint8 (the data path: 4x fewer
            bytes between DataLoader workers; the device finishes with :func:`to_float`).

    Returns:
        ``(3, H, W)`` float32 tensor (``[0, 1]`` for the default scale) in ``config.channel_order``
        (uint8 with ``scale=False``) and the :class:`LetterboxParams` mapping original → input
        pixels.

    Raises:
        InputError: if ``image`` is not a non-empty ``(H, W, 3)`` uint8 array.
    """
    _check_image(image)
    params = letterbox_params(image.shape[:2], config.input_size, config.mode)
    resized = resize_image(image, params, config.input_size, config.pad_value)
    return image_to_tensor(resized, config, scale), params


def image_to_tensor(
    image: np.ndarray, config: PreprocessConfig, scale: bool = True
) -> torch.Tensor:
    """``(H, W, 3)`` uint8 RGB already at the input size → ``(3, H, W)`` in
    ``config.channel_order``: float32 times ``config.scale`` (the last step of
    :func:`preprocess`), or with ``scale=False`` still uint8, for :func:`to_float` to finish
    batch-wise (the data path: 4x less data between DataLoader workers). The uint8 tensor is a
    view of channels-last memory: the collate stacks it with one copy, the device makes it
    contiguous."""
    if config.channel_order == "bgr":
        image = image[..., ::-1]
    if not scale:
        return torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)
    tensor = torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1)))
    return to_float(tensor, config)


def to_float(images: torch.Tensor, config: PreprocessConfig) -> torch.Tensor:
    """uint8 ``(..., 3, H, W)`` in ``config.channel_order`` (a training batch: the data path
    leaves the scaling to the device, 4x fewer bytes between DataLoader workers) → float32 times
    ``config.scale``; float input is returned unchanged."""
    if images.dtype != torch.uint8:
        return images
    return images.to(torch.float32).mul_(config.scale)


def batch_to_input(batch: Mapping[str, Any], preprocess: PreprocessConfig) -> dict[str, Any]:
    """A DataLoader batch (:class:`yolov4.data.collate.Batch`) as the model reads it, on whatever
    device its tensors are: uint8 ``images`` ``(B, 3, h, w)`` (channels-last memory from the
    DataLoader) → contiguous float32 times
    ``preprocess.scale`` (:func:`to_float`, what :func:`preprocess` does
    last), then bilinearly resized to
    ``batch["input_size"]`` when multi-scale drew another size (its targets already are in
    those pixels). Float images are only resized; the other keys are passed on unchanged."""
    images = to_float(batch["images"].contiguous(), preprocess)
    size = tuple(batch.get("input_size") or images.shape[-2:])
    if size != tuple(images.shape[-2:]):
        images = F.interpolate(images, size=size, mode="bilinear", align_corners=False)
    return {**batch, "images": images}
