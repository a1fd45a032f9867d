"""The albumentations-only training pipeline that the fused geometry (:mod:`yolov4.data.mosaic`)
replaced, kept as the reference the tests compare the fused one with (``tests/data/
test_mosaic.py``, ``test_transforms.py``) and for the dataloader benchmark
(``benchmarks/dataloader.py``, through :class:`LegacyDataset`).

:func:`build_legacy_transform`: ``A.Mosaic`` → :class:`PreprocessResize` → ``A.Affine`` → HSV →
flip, the boxes through albumentations' ``BboxParams`` with the :class:`AugmentConfig` rules.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import albumentations as A
import cv2
import numpy as np
import torch
from albumentations.core.bbox_utils import denormalize_bboxes, normalize_bboxes

from yolov4.core.preprocess import LETTERBOX_PAD_VALUE, PreprocessConfig, resize_image
from yolov4.data.collate import Sample
from yolov4.data.dataset import DetectionDataset
from yolov4.data.mosaic import MOSAIC_GRID, Placed
from yolov4.data.transforms import AugmentConfig, DarknetHSV
from yolov4.ops.letterbox import LetterboxParams, letterbox_params, map_boxes


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


def build_legacy_transform(
    config: AugmentConfig,
    input_size: Sequence[int],
    with_mosaic: bool,
    resize_mode: str = "letterbox",
    pad_value: int = LETTERBOX_PAD_VALUE,
    seed: int | None = None,
) -> A.Compose:
    """The albumentations-only training pipeline for one sample, output ``(H, W, 3)`` uint8 at
    ``input_size``.

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
    bbox_params = A.BboxParams(
        format="pascal_voc",
        label_fields=["labels"],
        min_area=config.min_area,
        min_visibility=config.min_visibility,
        clip=True,
        filter_invalid_bboxes=True,
    )
    return A.Compose(steps, bbox_params=bbox_params, seed=seed)


def donor(image: np.ndarray, boxes: np.ndarray, labels: np.ndarray) -> dict[str, Any]:
    """A ``mosaic_metadata`` entry."""
    return {"image": image, "bboxes": boxes, "labels": labels}


class LegacyDataset(DetectionDataset):
    """:class:`DetectionDataset`'s training samples through :func:`build_legacy_transform`
    (images stored as decoded, resized by the pipeline), uint8 out like the fused pipeline."""

    def __init__(
        self,
        data: Any,
        preprocess_config: PreprocessConfig,
        augment: AugmentConfig,
        seed: int = 0,
        name: str = "legacy",
    ) -> None:
        super().__init__(data, preprocess_config, augment, seed=seed, name=name)
        size, mode = preprocess_config.input_size, preprocess_config.mode
        pad = preprocess_config.pad_value
        self._transforms = {
            m: build_legacy_transform(augment, size, with_mosaic=m, resize_mode=mode, pad_value=pad)
            for m in (False, True)
        }
        self.reseed(seed)

    def load_train(self, index: int) -> Placed | None:
        loaded = self.load(index)
        if loaded is None:
            return None
        image, boxes, labels = loaded
        return Placed(image, boxes, labels, (1.0, 1.0), image.shape[:2])

    def __getitem__(self, index: int) -> Sample:
        index, placed = self._load_train(index)
        rec, config = self.records[index], self.preprocess_config
        with_mosaic = bool(self.rng.uniform() < self.augment.mosaic)
        donors = self._donors(index) if with_mosaic else None
        extra = {"mosaic_metadata": [donor(*d[:3]) for d in donors]} if donors else {}
        out = self._transforms[with_mosaic](
            image=placed.image, bboxes=placed.boxes, labels=placed.labels, **extra
        )
        image = out["image"][..., ::-1] if config.channel_order == "bgr" else out["image"]
        params = letterbox_params((rec.height, rec.width), config.input_size, config.mode)
        return Sample(
            image=torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1),
            boxes=torch.as_tensor(np.asarray(out["bboxes"], np.float32)).reshape(-1, 4),
            labels=torch.as_tensor(np.asarray(out["labels"], np.int64)).reshape(-1),
            image_id=rec.image_id,
            original_size=(rec.height, rec.width),
            letterbox=tuple(params),
        )
