"""Training augmentation after darknet's recipe: settings, and its photometric half.

Training, per sample (``mosaic_impl: fused``, the default): the geometry in one step,
:class:`yolov4.data.mosaic.TrainGeometry` (each image resized once at decode; a 2x2 mosaic of the
sample and three donors pasted into one canvas, or the letterbox/stretch placement of THE
preprocessing geometry; random scale/translate (darknet's ``jitter``) and horizontal flip in ONE
``cv2.warpAffine``, the boxes through the same matrix), then the photometric half as an
albumentations pipeline (:func:`build_photometric_transform`: HSV jitter, :class:`DarknetHSV`:
darknet's ``hue``, ``saturation``, ``exposure``; then ``augment.extra``, the user's own
albumentations transforms). Boxes are ``xyxy`` pixels, clipped to the image; boxes under
``min_area`` px² or with less than ``min_visibility`` of their area left are dropped.
Multi-scale (darknet's ``random=1``) is drawn per batch in the collate function
(:mod:`yolov4.data.collate`) and applied on the training device.

``mosaic_impl: legacy`` is the albumentations-only pipeline this replaced
(:func:`build_legacy_transform`: ``A.Mosaic`` → :class:`PreprocessResize` → ``A.Affine`` → HSV →
flip), kept for the dataloader benchmark and the tests that compare the two.

Validation and inference use :func:`yolov4.core.preprocess.preprocess`, the one
preprocessing function; with no augmentation the training pipeline produces its very image
(``tests/data/test_preprocess_parity.py``).
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import albumentations as A
import cv2
import numpy as np
from albumentations.core.bbox_utils import denormalize_bboxes, normalize_bboxes

from yolov4.core.preprocess import LETTERBOX_PAD_VALUE, resize_image
from yolov4.data.mosaic import MOSAIC_DONORS, MOSAIC_GRID, TrainGeometry
from yolov4.errors import ConfigError
from yolov4.ops.letterbox import LetterboxParams, letterbox_params, map_boxes

__all__ = [
    "AugmentConfig",
    "DarknetHSV",
    "MOSAIC_IMPLS",
    "PreprocessResize",
    "build_geometry",
    "build_legacy_transform",
    "build_photometric_transform",
    "MOSAIC_DONORS",
]

MOSAIC_IMPLS = ("fused", "legacy")


@dataclass(frozen=True)
class AugmentConfig:
    """Training augmentation settings (``configs/augment/*.yaml``), defaults = darknet's
    yolov4.cfg ``[net]`` section.

    Attributes:
        mosaic: probability of a 2x2 mosaic (cfg ``mosaic=1`` → 1.0).
        mosaic_center: range of the mosaic's centre point, as a fraction of the 2x2 grid.
        hue: hue shift as a fraction of the colour circle, uniform in ``[-hue, hue]`` (cfg ``hue``).
        saturation: saturation scale, darknet's ``rand_scale(s)`` (cfg ``saturation``).
        exposure: value (brightness) scale, ``rand_scale(e)`` (cfg ``exposure``).
        flip: probability of a horizontal flip (cfg ``flip=1`` flips half of the images).
        scale: zoom range of the random affine (darknet ``jitter=.3`` resizes by up to ±30%;
            ultralytics' default is ``[0.5, 1.5]``).
        translate: random shift as a fraction of the input size, uniform in ``[-t, t]``.
        min_area: boxes smaller than this many px² after augmentation are dropped.
        min_visibility: boxes keeping less than this fraction of their area are dropped.
        multi_scale: darknet's ``random`` coefficient: each batch is resized by a factor in
            ``[1/m, m]`` rounded to a multiple of the network's largest stride (32, 64 for
            yolov4-p6; ``null`` keeps the input size).
        mosaic_impl: ``fused`` (one warp per sample, :mod:`yolov4.data.mosaic`) or ``legacy``
            (the albumentations ``A.Mosaic`` + ``A.Affine`` pipeline, for comparisons).
        extra: more albumentations transforms run after the built-in ones (e.g. from Hydra:
            ``augment.extra=[{_target_: albumentations.ToGray, p: 0.01}]``); geometric ones
            get the boxes through albumentations' ``BboxParams`` with the rules above.
    """

    mosaic: float = 1.0
    mosaic_center: tuple[float, float] = (0.3, 0.7)
    hue: float = 0.1
    saturation: float = 1.5
    exposure: float = 1.5
    flip: float = 0.5
    scale: tuple[float, float] = (0.7, 1.3)
    translate: float = 0.1
    min_area: float = 4.0
    min_visibility: float = 0.25
    multi_scale: float | None = 1.4
    mosaic_impl: str = "fused"
    extra: tuple[Any, ...] = ()

    def __post_init__(self) -> None:
        if self.mosaic_impl not in MOSAIC_IMPLS:
            raise ConfigError(
                f"augment.mosaic_impl: expected one of {list(MOSAIC_IMPLS)}, got {self.mosaic_impl!r}"
            )
        extra = tuple(self.extra or ())
        for i, t in enumerate(extra):
            if not isinstance(t, A.BasicTransform):
                raise ConfigError(
                    f"augment.extra[{i}]: expected an albumentations transform, got {type(t).__name__}"
                )
        object.__setattr__(self, "extra", extra)
        for name in ("mosaic", "flip", "min_visibility"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ConfigError(
                    f"augment.{name}: expected a probability in [0, 1], got {getattr(self, name)}"
                )
        for name in ("saturation", "exposure"):
            if getattr(self, name) < 1.0:
                raise ConfigError(
                    f"augment.{name}: expected a scale >= 1 (range [1/s, s]), got {getattr(self, name)}"
                )
        if not 0.0 <= self.hue <= 0.5:
            raise ConfigError(
                f"augment.hue: expected a fraction of the colour circle in [0, 0.5], got {self.hue}"
            )
        if self.multi_scale is not None and self.multi_scale < 1.0:
            raise ConfigError(
                f"augment.multi_scale: expected null or a factor >= 1, got {self.multi_scale}"
            )
        object.__setattr__(self, "scale", tuple(float(v) for v in self.scale))
        object.__setattr__(self, "mosaic_center", tuple(float(v) for v in self.mosaic_center))

    @classmethod
    def none(cls) -> AugmentConfig:
        """No augmentation at all: the training samples are exactly what
        :func:`~yolov4.core.preprocess.preprocess` makes of the image, every box kept."""
        return cls(
            mosaic=0.0,
            min_area=0.0,
            hue=0.0,
            saturation=1.0,
            exposure=1.0,
            flip=0.0,
            scale=(1.0, 1.0),
            translate=0.0,
            min_visibility=0.0,
            multi_scale=None,
        )


OPENCV_HUE_RANGE = 180  # OpenCV's uint8 HSV stores hue in [0, 180)
_LEVELS = np.arange(256, dtype=np.float32)


def _rand_scale(rng: random.Random, s: float) -> float:
    """darknet's ``rand_scale``: uniform in ``[1, s]``, inverted half of the time."""
    scale = rng.uniform(1.0, s)
    return scale if rng.random() < 0.5 else 1.0 / scale


class DarknetHSV(A.ImageOnlyTransform):
    """darknet's ``random_distort_image``: hue shifted by a uniform fraction in ``[-hue, hue]``
    of the colour circle, saturation and value (``exposure``) multiplied by ``rand_scale``.
    On uint8 RGB with one HSV round trip and three lookup tables."""

    def __init__(
        self, hue: float = 0.1, saturation: float = 1.5, exposure: float = 1.5, p: float = 1.0
    ):
        super().__init__(p=p)
        self.hue, self.saturation, self.exposure = hue, saturation, exposure

    def get_params(self) -> dict[str, float]:
        return {
            "dhue": self.py_random.uniform(-self.hue, self.hue),
            "dsat": _rand_scale(self.py_random, self.saturation),
            "dexp": _rand_scale(self.py_random, self.exposure),
        }

    def apply(
        self, img: np.ndarray, dhue: float, dsat: float, dexp: float, **params: Any
    ) -> np.ndarray:
        lut = np.empty((256, 1, 3), np.uint8)  # one table per HSV channel, one cv2.LUT pass
        lut[:, 0, 0] = np.mod(_LEVELS + dhue * OPENCV_HUE_RANGE, OPENCV_HUE_RANGE)
        lut[:, 0, 1] = np.clip(_LEVELS * dsat, 0, 255)
        lut[:, 0, 2] = np.clip(_LEVELS * dexp, 0, 255)
        hsv = cv2.LUT(cv2.cvtColor(img, cv2.COLOR_RGB2HSV), lut)
        return cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)

    def get_transform_init_args_names(self) -> tuple[str, ...]:
        return ("hue", "saturation", "exposure")


class PreprocessResize(A.DualTransform):
    """The resize of :func:`yolov4.core.preprocess.preprocess` as an albumentations step: the
    same :func:`~yolov4.ops.letterbox.letterbox_params` and
    :func:`~yolov4.core.preprocess.resize_image` on the image (bilinear, ``pad_value`` border),
    nearest-neighbour with a 0 border on masks, :func:`~yolov4.ops.letterbox.map_boxes` on the
    boxes. Output ``(H, W[, C])`` = ``input_size``; an image already that size is unchanged."""

    def __init__(
        self,
        input_size: Sequence[int],
        mode: str = "letterbox",
        pad_value: int = LETTERBOX_PAD_VALUE,
        p: float = 1.0,
    ):
        super().__init__(p=p)
        self.input_size = tuple(int(s) for s in input_size)
        self.mode, self.pad_value = mode, int(pad_value)

    def get_params_dependent_on_data(
        self, params: dict[str, Any], data: dict[str, Any]
    ) -> dict[str, Any]:
        return {"letterbox": letterbox_params(params["shape"][:2], self.input_size, self.mode)}

    def apply(self, img: np.ndarray, letterbox: LetterboxParams, **params: Any) -> np.ndarray:
        return resize_image(img, letterbox, self.input_size, self.pad_value)

    def apply_to_mask(
        self, mask: np.ndarray, letterbox: LetterboxParams, **params: Any
    ) -> np.ndarray:
        return resize_image(mask, letterbox, self.input_size, 0, cv2.INTER_NEAREST)

    def apply_to_bboxes(
        self, bboxes: np.ndarray, letterbox: LetterboxParams, **params: Any
    ) -> np.ndarray:
        """``bboxes``: albumentations' ``(N, 4+)`` xyxy normalised to the input image."""
        pixels = denormalize_bboxes(bboxes, params["shape"][:2])
        return normalize_bboxes(map_boxes(pixels, letterbox), self.input_size)

    def get_transform_init_args_names(self) -> tuple[str, ...]:
        return ("input_size", "mode", "pad_value")


def _bbox_params(config: AugmentConfig) -> A.BboxParams:
    return A.BboxParams(
        format="pascal_voc",
        label_fields=["labels"],
        min_area=config.min_area,
        min_visibility=config.min_visibility,
        clip=True,
        filter_invalid_bboxes=True,
    )


def build_geometry(
    config: AugmentConfig,
    input_size: Sequence[int],
    resize_mode: str = "letterbox",
    pad_value: int = LETTERBOX_PAD_VALUE,
) -> TrainGeometry:
    """The fused geometric half of the training pipeline for ``input_size`` ``(H, W)``."""
    return TrainGeometry(
        mosaic=config.mosaic,
        mosaic_center=config.mosaic_center,
        scale=config.scale,
        translate=config.translate,
        flip=config.flip,
        min_area=config.min_area,
        min_visibility=config.min_visibility,
        input_size=input_size,
        resize_mode=resize_mode,
        pad_value=pad_value,
    )


def build_photometric_transform(config: AugmentConfig, seed: int | None = None) -> A.Compose:
    """The albumentations half after :class:`~yolov4.data.mosaic.TrainGeometry`: HSV jitter,
    then ``config.extra``. Call it as ``t(image=rgb, bboxes=(N, 4) xyxy, labels=(N,))``; the
    boxes pass through albumentations only when an extra transform is geometric."""
    steps: list[Any] = []
    if config.hue > 0 or config.saturation > 1 or config.exposure > 1:
        steps.append(
            DarknetHSV(
                hue=config.hue, saturation=config.saturation, exposure=config.exposure, p=1.0
            )
        )
    steps.extend(config.extra)
    geometric = any(isinstance(t, A.DualTransform) for t in config.extra)
    return A.Compose(steps, bbox_params=_bbox_params(config) if geometric else None, seed=seed)


def build_legacy_transform(
    config: AugmentConfig,
    input_size: Sequence[int],
    with_mosaic: bool,
    resize_mode: str = "letterbox",
    pad_value: int = LETTERBOX_PAD_VALUE,
    seed: int | None = None,
) -> A.Compose:
    """The albumentations-only training pipeline (``mosaic_impl: legacy``) for one sample,
    output ``(H, W, 3)`` uint8 at ``input_size``.

    Call it as ``t(image=rgb, bboxes=(N, 4) xyxy, labels=(N,), mosaic_metadata=[donor dicts])``
    (donors only when ``with_mosaic``; each ``{"image", "bboxes", "labels"}``). ``resize_mode``
    and ``pad_value`` are the :class:`~yolov4.core.preprocess.PreprocessConfig`'s ``mode``
    (``letterbox``: fit + pad, or ``stretch``) and ``pad_value``. An extra
    ``mask`` follows the geometric transforms (used by the tests to track shapes).
    """
    h, w = (int(s) for s in input_size)
    steps: list[Any] = []
    if with_mosaic:
        steps.append(
            A.Mosaic(
                grid_yx=MOSAIC_GRID,
                target_size=(h, w),
                cell_shape=(h, w),
                center_range=config.mosaic_center,
                fit_mode="cover",
                fill=pad_value,
                fill_mask=0,
                p=1.0,
            )
        )
    steps.append(PreprocessResize((h, w), resize_mode, pad_value))  # no-op after mosaic
    if config.scale != (1.0, 1.0) or config.translate > 0:
        steps.append(
            A.Affine(
                scale=config.scale,
                translate_percent=(-config.translate, config.translate),
                keep_ratio=True,
                border_mode=cv2.BORDER_CONSTANT,
                fill=pad_value,
                fill_mask=0,
                p=1.0,
            )
        )
    if config.hue > 0 or config.saturation > 1 or config.exposure > 1:
        steps.append(
            DarknetHSV(
                hue=config.hue, saturation=config.saturation, exposure=config.exposure, p=1.0
            )
        )
    if config.flip > 0:
        steps.append(A.HorizontalFlip(p=config.flip))
    steps.extend(config.extra)
    return A.Compose(steps, bbox_params=_bbox_params(config), seed=seed)


def donor(image: np.ndarray, boxes: np.ndarray, labels: np.ndarray) -> dict[str, Any]:
    """A ``mosaic_metadata`` entry."""
    return {"image": image, "bboxes": boxes, "labels": labels}
