"""Training augmentation after darknet's recipe: settings, and its photometric half.

Training, per sample: the geometry in one step,
:class:`yolov4.data.mosaic.TrainGeometry` (each image resized once at decode; with darknet's
``jitter`` crop, darknet's sample: one crop and flip per image, a mosaic of four pieces around a
cut point, each with its own crop and flip, one ``cv2.warpAffine`` per piece; without, a 2x2
mosaic of the sample and three donors pasted into one canvas, or the letterbox/stretch placement
of THE preprocessing geometry, then one scale and a shift and the horizontal flip in ONE
``cv2.warpAffine``; the boxes through the same matrices), then the photometric half as an
albumentations pipeline (:func:`build_photometric_transform`: HSV jitter, :class:`DarknetHSV`:
darknet's ``hue``, ``saturation``, ``exposure``, one draw per darknet mosaic piece; then
``augment.extra``, the user's own
albumentations transforms). Boxes are ``xyxy`` pixels, clipped to the image; boxes under one
pixel wide or high (darknet's rule), under ``min_area`` px² or with less than
``min_visibility`` of their area left are dropped. Multi-scale (darknet's ``random=1``) is one
size per 10 optimizer steps (:class:`yolov4.data.collate.MultiScale`), applied on the training
device.

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
from albumentations.core.composition import BaseCompose

from yolov4.core.preprocess import LETTERBOX_PAD_VALUE
from yolov4.data.mosaic import MOSAIC_DONORS, TrainGeometry
from yolov4.errors import ConfigError

__all__ = [
    "AugmentConfig",
    "DarknetHSV",
    "build_geometry",
    "build_photometric_transform",
    "MOSAIC_DONORS",
    "check_extra_output",
]


# albumentations transforms that mix several images (they need mosaic_metadata)
MULTI_IMAGE = ("Mosaic",)


def _flat(t: Any) -> list[Any]:
    """``t`` and, for a composition (``OneOf``, ``SomeOf``, ...), every transform in it."""
    return [t, *(u for child in getattr(t, "transforms", ()) for u in _flat(child))]


def _check_range(name: str, value: Any, above: float | None) -> None:
    """``augment.<name>`` as ``[low, high]`` numbers, low <= high; zoom factors above ``above``
    (``None``: fractions in [0, 1])."""
    try:
        low, high = (float(v) for v in value)
    except (TypeError, ValueError):
        raise ConfigError(f"augment.{name}: expected [low, high], got {value!r}") from None
    ok = low <= high and (low > above if above is not None else 0 <= low and high <= 1)
    if not ok:
        want = f"low > {above:g}" if above is not None else "fractions in [0, 1]"
        raise ConfigError(
            f"augment.{name}: expected [low, high] with low <= high, {want}; got {value!r}"
        )


NUMBERS = ("mosaic", "hue", "saturation", "exposure", "flip", "translate", "jitter", "resize",
           "min_area", "min_visibility", "multi_scale")  # fmt: skip
OPTIONAL_NUMBERS = ("jitter", "multi_scale")  # null: off


@dataclass(frozen=True)
class AugmentConfig:
    """Training augmentation settings (``configs/augment/*.yaml``); the defaults are darknet's
    yolov4.cfg ``[net]`` keys with ``augment=basic``'s zoom (``jitter`` off: ``scale`` and
    ``translate``).

    Attributes:
        mosaic: probability of a 2x2 mosaic (cfg ``mosaic=1`` → 0.5: darknet makes each loader
            thread's share of a batch a mosaic or not with even odds); with ``jitter``, darknet's
            mosaic (each piece its own crop, flip and colour, donors from the whole dataset).
        mosaic_center: range of the point where the mosaic's pieces meet, as a fraction of
            each side of the input (darknet's cut point: 20 % to 80 %).
        hue: hue shift as a fraction of the colour circle, uniform in ``[-hue, hue]`` (cfg
            ``hue``; darknet's 8-bit arithmetic: a shift below red's 0 stops there).
        saturation: saturation scale, darknet's ``rand_scale(s)`` (cfg ``saturation``).
        exposure: value (brightness) scale, ``rand_scale(e)`` (cfg ``exposure``).
        flip: probability of a horizontal flip (cfg ``flip=1`` flips half of the images).
        scale: zoom range of the random affine (one factor for both axes; ultralytics' default
            is ``[0.5, 1.5]``); with ``jitter``: ``[1, 1]``.
        translate: random shift as a fraction of the input size, uniform in ``[-t, t]``; with
            ``jitter``: 0.
        jitter: darknet's ``[yolo] jitter`` crop in place of ``scale`` and ``translate``
            (``None``: off): each side of the image moves in or out by its own uniform draw in
            ``[-jitter, jitter]`` of the side, and the crop is stretched to the input size, so
            the zoom and the aspect ratio change per axis (``jitter=.3``: a zoom from 0.63x to
            2.5x per axis); the border it uncovers is the image's mean colour, as darknet's.
            A mosaic then is darknet's: each piece its own crop, flip and colour.
        resize: darknet's ``[yolo] resize`` (>= 1): one more zoom, from ``1/resize`` to
            ``resize``, one draw for the left and top sides, one for the right and bottom
            (needs ``jitter``).
        min_area: boxes smaller than this many px² after augmentation are dropped.
        min_visibility: boxes keeping less than this fraction of their area are dropped.
        multi_scale: darknet's ``random`` coefficient ``m``: every 10 optimizer steps the
            training batches take a new size, the input size times a factor in ``[1/m, m]``
            rounded as darknet rounds it to a multiple of the network's largest stride (32, 64
            for yolov4-p6), the first 10 and the last 100 steps at the largest
            (:class:`yolov4.data.collate.MultiScale`; ``null`` keeps the input size).
        extra: more albumentations transforms run after the built-in ones (e.g. from Hydra:
            ``augment.extra=[{_target_: albumentations.ToGray, p: 0.01}]``); geometric ones
            get the boxes through albumentations' ``BboxParams`` with the rules above.
    """

    mosaic: float = 0.5
    mosaic_center: tuple[float, float] = (0.2, 0.8)
    hue: float = 0.1
    saturation: float = 1.5
    exposure: float = 1.5
    flip: float = 0.5
    scale: tuple[float, float] = (0.7, 1.3)
    translate: float = 0.1
    jitter: float | None = None
    resize: float = 1.0
    min_area: float = 0.0
    min_visibility: float = 0.0
    multi_scale: float | None = 1.4
    extra: tuple[Any, ...] = ()

    def __post_init__(self) -> None:
        extra = tuple(self.extra or ())
        for i, t in enumerate(extra):
            if not isinstance(t, A.BasicTransform | BaseCompose):
                raise ConfigError(
                    f"augment.extra[{i}]: expected an albumentations transform, got {type(t).__name__}"
                )
            if any(type(u).__name__ in MULTI_IMAGE for u in _flat(t)):
                raise ConfigError(
                    f"augment.extra[{i}]: {type(t).__name__} needs other images (mosaic_metadata); "
                    "the built-in mosaic is augment.mosaic"
                )
        object.__setattr__(self, "extra", extra)
        for name in NUMBERS:  # augment.jitter=abc failed deep in a comparison, unnamed
            value = getattr(self, name)
            if value is None and name in OPTIONAL_NUMBERS:
                continue
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise ConfigError(f"augment.{name}: expected a number, got {value!r}")
        for name in ("scale", "mosaic_center"):
            _check_range(name, getattr(self, name), 0.0 if name == "scale" else None)
        if not 0.0 <= self.translate < 1.0:
            raise ConfigError(
                f"augment.translate: expected a fraction of the size in [0, 1), got {self.translate}"
            )
        if not self.min_area >= 0:
            raise ConfigError(f"augment.min_area: expected px² >= 0, got {self.min_area}")
        self._check_jitter()
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

    def _check_jitter(self) -> None:
        if not (isinstance(self.resize, int | float) and self.resize >= 1.0):
            raise ConfigError(
                f"augment.resize: expected darknet's resize >= 1, got {self.resize!r}"
            )
        if self.jitter is None:
            if self.resize != 1.0:
                raise ConfigError(
                    f"augment.resize={self.resize} is darknet's zoom of its jitter crop: give "
                    f"augment.jitter too (augment.scale is the zoom without it)"
                )
            return
        limit = 1 / (2 * self.resize)  # every side cut by its most still leaves an image
        if not 0.0 <= self.jitter < limit:
            raise ConfigError(
                f"augment.jitter: expected a fraction of the side in [0, {limit:.3g}) (with "
                f"augment.resize={self.resize:g}), got {self.jitter}"
            )
        if tuple(self.scale) != (1.0, 1.0) or self.translate != 0.0:
            raise ConfigError(
                f"augment.jitter={self.jitter} (darknet's crop) replaces augment.scale and "
                f"augment.translate: set augment.scale=[1,1] augment.translate=0, or "
                f"augment.jitter=null to zoom by augment.scale (got scale={list(self.scale)}, "
                f"translate={self.translate})"
            )

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


# darknet adds 179 * dhue to OpenCV's 8-bit hue (stored in [0, 180)): the sum saturates to
# [0, 255] (a shift below 0 stops at red, 0), and OpenCV's HSV -> RGB reads a hue of 180 and
# above around the circle again
DARKNET_HUE_SCALE = 179
_LEVELS = np.arange(256, dtype=np.float64)


def _rand_scale(rng: random.Random, s: float) -> float:
    """darknet's ``rand_scale``: uniform in ``[1, s]``, inverted half of the time."""
    scale = rng.uniform(1.0, s)
    return scale if rng.random() < 0.5 else 1.0 / scale


def _saturate(values: np.ndarray) -> np.ndarray:
    """OpenCV's ``saturate_cast<uchar>``: rounded to the nearest (ties to even), clamped."""
    return np.clip(np.rint(values), 0, 255)


class DarknetHSV(A.ImageOnlyTransform):
    """darknet's colour jitter (``image_data_augmentation``): on OpenCV's 8-bit HSV of the RGB
    image, the hue plus ``179 * dhue`` (``dhue`` uniform in ``[-hue, hue]``), saturation and
    value times ``rand_scale(saturation)`` and ``rand_scale(exposure)``, each result rounded and
    saturated to uint8 as OpenCV's ``Mat`` arithmetic does (a hue shifted below 0 is 0; one of
    180 and above wraps in the conversion back). One HSV round trip and three lookup tables.

    Called with ``pieces`` (``(x1, y1, x2, y2)`` windows: a darknet mosaic's pieces), each window
    takes its own draw, as darknet colours each piece; without, the whole image takes one."""

    def __init__(
        self, hue: float = 0.1, saturation: float = 1.5, exposure: float = 1.5, p: float = 1.0
    ):
        super().__init__(p=p)
        self.hue, self.saturation, self.exposure = hue, saturation, exposure

    def _draw(self) -> tuple[float, float, float]:
        return (
            self.py_random.uniform(-self.hue, self.hue),
            _rand_scale(self.py_random, self.saturation),
            _rand_scale(self.py_random, self.exposure),
        )

    def get_params_dependent_on_data(
        self, params: dict[str, Any], data: dict[str, Any]
    ) -> dict[str, Any]:
        h, w = params["shape"][:2]
        windows = tuple(data.get("pieces") or ((0, 0, w, h),))
        return {"windows": windows, "draws": [self._draw() for _ in windows]}

    def apply(self, img: np.ndarray, windows: Any, draws: Any, **params: Any) -> np.ndarray:
        if len(windows) == 1 and tuple(windows[0]) == (0, 0, img.shape[1], img.shape[0]):
            return self.colour(img, *draws[0])
        out = img.copy()
        for (x1, y1, x2, y2), draw in zip(windows, draws, strict=True):
            out[y1:y2, x1:x2] = self.colour(img[y1:y2, x1:x2], *draw)
        return out

    @staticmethod
    def colour(img: np.ndarray, dhue: float, dsat: float, dexp: float) -> np.ndarray:
        """``(h, w, 3)`` uint8 RGB with darknet's draw ``dhue``, ``dsat``, ``dexp`` applied."""
        lut = np.empty((256, 1, 3), np.uint8)  # one table per HSV channel, one cv2.LUT pass
        lut[:, 0, 0] = _saturate(_LEVELS + DARKNET_HUE_SCALE * dhue)
        lut[:, 0, 1] = _saturate(_LEVELS * dsat)
        lut[:, 0, 2] = _saturate(_LEVELS * dexp)
        hsv = cv2.LUT(cv2.cvtColor(img, cv2.COLOR_RGB2HSV), lut)
        return cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)

    def get_transform_init_args_names(self) -> tuple[str, ...]:
        return ("hue", "saturation", "exposure")


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
        jitter=config.jitter,
        resize=config.resize,
        flip=config.flip,
        min_area=config.min_area,
        min_visibility=config.min_visibility,
        input_size=input_size,
        resize_mode=resize_mode,
        pad_value=pad_value,
    )


def check_extra_output(before: np.ndarray, after: Any) -> None:
    """What ``augment.extra`` made of a training image: the same ``(H, W, 3)`` uint8 as it was
    given, or a :class:`ConfigError` (an ``A.Normalize`` made training inputs unlike the
    validation and served ones, scaled by ``data.preprocess``; an ``A.RandomCrop`` trained
    at another size)."""
    shape, dtype = getattr(after, "shape", None), getattr(after, "dtype", None)
    if shape != before.shape or dtype != np.uint8:
        raise ConfigError(
            f"augment.extra: the transforms made a {before.dtype} {before.shape} training image "
            f"into {dtype} {shape}; they must keep the input size and uint8 pixels "
            "(data.preprocess scales them, as for validation and serving): leave out Normalize, "
            "ToFloat and transforms that resize or crop to another size"
        )


def build_photometric_transform(config: AugmentConfig, seed: int | None = None) -> A.Compose:
    """The albumentations half after :class:`~yolov4.data.mosaic.TrainGeometry`: HSV jitter,
    then ``config.extra``. Call it as ``t(image=rgb, bboxes=(N, 4) xyxy, labels=(N,))``, with
    ``pieces=`` the sample's :attr:`~yolov4.data.mosaic.TrainSample.pieces` (one HSV draw per
    piece); the boxes pass through albumentations only when an extra transform is geometric."""
    steps: list[Any] = []
    if config.hue > 0 or config.saturation > 1 or config.exposure > 1:
        steps.append(
            DarknetHSV(
                hue=config.hue, saturation=config.saturation, exposure=config.exposure, p=1.0
            )
        )
    steps.extend(config.extra)
    geometric = any(isinstance(u, A.DualTransform) for t in config.extra for u in _flat(t))
    return A.Compose(steps, bbox_params=_bbox_params(config) if geometric else None, seed=seed)
