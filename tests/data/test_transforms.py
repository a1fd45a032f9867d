"""After each augmentation (mosaic included) boxes still cover the drawn shapes, stay inside the
image and have positive area; settings are validated."""

from __future__ import annotations

import albumentations as A
import cv2
import numpy as np
import pytest

from tests.data.legacy_pipeline import build_legacy_transform
from yolov4.data.synthetic import render_sample
from yolov4.data.transforms import MOSAIC_DONORS, AugmentConfig, DarknetHSV
from yolov4.errors import ConfigError

INPUT = (128, 160)
ID_STRIDE = 16  # instance ids of image k are 16k + 1 ..: unique across the mosaic's images
TOLERANCE_PX = 2.5  # rasterisation of a vertex + nearest-neighbour mask resampling
TOLERANCE_REL = 0.05  # ... scaled by the zoom (up to ~2x here), as a fraction of the box size


def _sample(seed: int, k: int):
    """A synthetic image whose shapes do not overlap, its boxes, and its instance mask with ids
    offset by ``ID_STRIDE * k``; the instance id rides along as the box label."""
    image, boxes, _, mask = render_sample(np.random.default_rng(seed), 128, max_overlap_iou=0.0)
    ids = np.arange(1, len(boxes) + 1) + ID_STRIDE * k
    mask = np.where(mask > 0, mask + ID_STRIDE * k, 0).astype(np.uint8)
    return {"image": image, "bboxes": boxes, "labels": ids, "mask": mask}


def _check_boxes_cover_shapes(out: dict, tight: bool = True) -> int:
    """Every box contains all drawn pixels of its shape; it is also tight around them when the
    shape is wholly visible (a clipped box of a rotated shape is looser than the visible part,
    and mosaic cuts at cell borders the test cannot see, hence ``tight=False`` there)."""
    h, w = out["image"].shape[:2]
    assert (h, w) == INPUT
    boxes = np.asarray(out["bboxes"], np.float64).reshape(-1, 4)
    assert np.all(boxes >= 0) and np.all(boxes[:, [0, 2]] <= w) and np.all(boxes[:, [1, 3]] <= h)
    assert np.all(boxes[:, 2] > boxes[:, 0]) and np.all(boxes[:, 3] > boxes[:, 1])
    mask, empty = out["mask"], []
    for box, inst in zip(boxes, np.asarray(out["labels"]).tolist(), strict=True):
        ys, xs = np.nonzero(mask == inst)
        if len(xs) == 0 and not tight:  # a clipped box corner can hold none of a rotated shape
            empty.append(box)
            continue
        assert len(xs) > 0, f"box {box} of instance {inst} covers no drawn pixel of its shape"
        drawn = np.array([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], np.float64)
        tol = TOLERANCE_PX + TOLERANCE_REL * max(box[2] - box[0], box[3] - box[1])
        inside = np.all(drawn[:2] >= box[:2] - tol) and np.all(drawn[2:] <= box[2:] + tol)
        assert inside, f"instance {inst}: box {box} does not contain its shape drawn at {drawn}"
        at_border = drawn[0] <= 0 or drawn[1] <= 0 or drawn[2] >= w or drawn[3] >= h
        if tight and not at_border:
            assert np.abs(box - drawn).max() <= tol, (
                f"instance {inst}: box {box} loose around {drawn}"
            )
    assert len(empty) <= max(1, 0.1 * len(boxes)), f"boxes without their shape: {empty}"
    return len(boxes)


@pytest.mark.parametrize("with_mosaic", [False, True])
def test_boxes_follow_the_shapes_through_the_full_pipeline(with_mosaic: bool):
    config = AugmentConfig()  # darknet's recipe: every augmentation on
    transform = build_legacy_transform(config, INPUT, with_mosaic=with_mosaic, seed=0)
    seen = 0
    for trial in range(12):
        primary = _sample(100 * trial, 0)
        extra = {}
        if with_mosaic:
            extra["mosaic_metadata"] = [
                _sample(100 * trial + k, k) for k in range(1, MOSAIC_DONORS + 1)
            ]
        out = transform(**primary, **extra)
        seen += _check_boxes_cover_shapes(out, tight=not with_mosaic)
    assert seen > 20  # the check ran on many boxes


@pytest.mark.parametrize("mode", ["letterbox", "stretch"])
def test_each_augmentation_alone_keeps_boxes_on_shapes(mode: str):
    none = AugmentConfig.none()
    variants = [
        none,
        AugmentConfig(**{**none.__dict__, "flip": 1.0}),
        AugmentConfig(**{**none.__dict__, "scale": (0.5, 1.5), "translate": 0.2}),
        AugmentConfig(**{**none.__dict__, "hue": 0.1, "saturation": 1.5, "exposure": 1.5}),
    ]
    for i, config in enumerate(variants):
        transform = build_legacy_transform(
            config, INPUT, with_mosaic=False, resize_mode=mode, seed=i
        )
        for trial in range(4):
            _check_boxes_cover_shapes(transform(**_sample(7 + trial, 0)))


def test_mostly_cut_off_boxes_are_dropped():
    config = AugmentConfig(**{**AugmentConfig.none().__dict__, "min_visibility": 0.5})
    transform = build_legacy_transform(config, (64, 64), with_mosaic=False)
    image = np.zeros((64, 64, 3), np.uint8)
    out = transform(image=image, bboxes=np.array([[10.0, 10.0, 30.0, 30.0]]), labels=np.array([1]))
    assert len(out["bboxes"]) == 1  # untouched geometry keeps it
    # an affine that pushes it mostly outside drops it rather than keeping a sliver
    config = AugmentConfig(**{**config.__dict__, "scale": (1.0, 1.0), "translate": 0.45})
    transform = build_legacy_transform(config, (64, 64), with_mosaic=False, seed=1)
    for _ in range(20):
        out = transform(
            image=image, bboxes=np.array([[0.0, 0.0, 16.0, 16.0]]), labels=np.array([1])
        )
        for x1, y1, x2, y2 in np.asarray(out["bboxes"]).reshape(-1, 4):
            assert (x2 - x1) * (y2 - y1) >= 0.5 * 16 * 16 - 1


@pytest.mark.parametrize(
    "key,value,message",
    [
        ("mosaic", 1.5, "augment.mosaic"),
        ("saturation", 0.5, "augment.saturation"),
        ("hue", 0.9, "augment.hue"),
        ("multi_scale", 0.5, "augment.multi_scale"),
    ],
)
def test_bad_settings_name_the_key(key, value, message):
    with pytest.raises(ConfigError, match=message):
        AugmentConfig(**{key: value})


def test_darknet_hsv_scales_value_and_saturation_within_rand_scale():
    rng = np.random.default_rng(0)
    image = rng.integers(40, 160, (32, 32, 3), dtype=np.uint8)
    identity = A.Compose([DarknetHSV(hue=0.0, saturation=1.0, exposure=1.0)], seed=0)
    assert np.abs(identity(image=image)["image"].astype(int) - image).max() <= 3  # HSV round trip
    jitter = A.Compose([DarknetHSV(hue=0.0, saturation=1.0, exposure=1.5)], seed=0)
    ratios = {
        round(float(jitter(image=image)["image"].max(2).mean() / image.max(2).mean()), 2)
        for _ in range(30)
    }
    assert min(ratios) >= 1 / 1.5 - 0.02 and max(ratios) <= 1.5 + 0.02
    assert min(ratios) < 0.95 and max(ratios) > 1.05  # both directions, as darknet's rand_scale


def _darknet_colour(rgb: np.ndarray, dhue: float, dsat: float, dexp: float) -> np.ndarray:
    """darknet's ``image_data_augmentation`` colour step, transcribed with OpenCV's own 8-bit
    ``Mat`` arithmetic: RGB -> HSV, ``hsv[1] *= dsat``, ``hsv[2] *= dexp`` (a scaled copy,
    rounded and saturated; ``convertScaleAbs`` is that for non-negative values), ``hsv[0] +=
    179 * dhue`` (``add`` with a scalar: rounded, saturated), HSV -> RGB."""
    h, s, v = cv2.split(cv2.cvtColor(rgb, cv2.COLOR_RGB2HSV))
    s = cv2.convertScaleAbs(s, alpha=dsat)
    v = cv2.convertScaleAbs(v, alpha=dexp)
    h = cv2.add(h, 179 * dhue)
    return cv2.cvtColor(cv2.merge([h, s, v]), cv2.COLOR_HSV2RGB)


def test_darknet_hsv_is_darknets_8_bit_arithmetic_on_random_pixels():
    """Random pixels and draws (hue shifts up to half the circle): the same bytes as the
    transcription; a hue pushed below 0 stops at red (darknet saturates), one pushed past 180
    comes round again."""
    rng = np.random.default_rng(0)
    for _ in range(20):
        image = rng.integers(0, 256, (48, 64, 3), dtype=np.uint8)
        dhue, dsat, dexp = rng.uniform(-0.5, 0.5), rng.uniform(0.5, 2.0), rng.uniform(0.5, 2.0)
        np.testing.assert_array_equal(
            DarknetHSV.colour(image, dhue, dsat, dexp), _darknet_colour(image, dhue, dsat, dexp)
        )
    hsv = np.uint8([[[5, 255, 255], [175, 255, 255]]])  # near red, either side of 0
    rgb = cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)
    hue = cv2.cvtColor(DarknetHSV.colour(rgb, -0.1, 1.0, 1.0), cv2.COLOR_RGB2HSV)[0, :, 0]
    assert hue[0] == 0 and abs(int(hue[1]) - 157) <= 1  # 5 - 17.9 stops at 0; 175 - 17.9
    hue = cv2.cvtColor(DarknetHSV.colour(rgb, 0.1, 1.0, 1.0), cv2.COLOR_RGB2HSV)[0, :, 0]
    assert abs(int(hue[0]) - 23) <= 1 and abs(int(hue[1]) - 13) <= 1  # 175 + 17.9 wraps


def test_darknet_hsv_draws_once_per_piece():
    """``pieces`` windows (a darknet mosaic's) each take their own colour draw; without, the
    image takes one."""
    image = np.full((40, 40, 3), (150, 90, 60), np.uint8)
    pieces = ((0, 0, 15, 25), (15, 0, 40, 25), (0, 25, 15, 40), (15, 25, 40, 40))
    transform = A.Compose([DarknetHSV(hue=0.1, saturation=1.5, exposure=1.5)], seed=0)
    spread = lambda a: int(np.ptp(a.reshape(-1, 3).astype(int), 0).max())  # noqa: E731
    for _ in range(5):
        out = transform(image=image, pieces=pieces)["image"]
        means = [out[y1:y2, x1:x2].reshape(-1, 3).mean(0) for x1, y1, x2, y2 in pieces]
        # one colour per window (OpenCV's vectorised HSV conversion may differ by 1 in places)
        assert all(spread(out[y1:y2, x1:x2]) <= 1 for x1, y1, x2, y2 in pieces)
        assert min(np.abs(a - b).max() for i, a in enumerate(means) for b in means[i + 1 :]) > 2
        assert spread(transform(image=image)["image"]) <= 1
