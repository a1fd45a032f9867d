"""The fused mosaic + affine (:mod:`yolov4.data.mosaic`): boxes land on their shapes for many
seeds, pixels move with them, and the random geometry has the statistics of the albumentations
pipeline it replaced (``tests/data/legacy_pipeline.py``: ``A.Mosaic`` + ``A.Affine``), compared with
two-sample Kolmogorov-Smirnov tests over many samples."""

from __future__ import annotations

import dataclasses
import random

import albumentations as A
import cv2
import numpy as np
import pytest
from scipy.stats import ks_2samp

from tests.data.legacy_pipeline import build_legacy_transform
from tests.data.test_transforms import INPUT, _check_boxes_cover_shapes, _sample
from yolov4.data.mosaic import MOSAIC_DONORS
from yolov4.data.transforms import AugmentConfig, build_geometry, build_photometric_transform
from yolov4.errors import ConfigError

SEEDS = 25
KS_P_MIN = 0.01  # same distribution unless a 1%-level two-sample KS test says otherwise
STAT_SAMPLES = 400
GEOMETRY_ONLY = {"hue": 0.0, "saturation": 1.0, "exposure": 1.0}


def _config(**kw) -> AugmentConfig:
    return dataclasses.replace(AugmentConfig(), **{**GEOMETRY_ONLY, **kw})


def _fused(config: AugmentConfig, trial: int, with_mosaic: bool, rng: random.Random) -> dict:
    geometry = build_geometry(config, INPUT)
    placed = [
        geometry.resize(s["image"], s["bboxes"], s["labels"], s["mask"])
        for s in [_sample(100 * trial + k, k) for k in range(MOSAIC_DONORS + 1)]
    ]
    out = geometry(rng, placed[0], placed[1:] if with_mosaic else None)
    return {"image": out.image, "bboxes": out.boxes, "labels": out.labels, "mask": out.mask}


@pytest.mark.parametrize(
    "mosaic,with_mosaic,jitter",
    [(0.0, False, None), (0.5, False, None), (0.5, True, None), (1.0, True, None),
     (0.0, False, 0.3), (1.0, True, 0.3)],
    ids=["letterbox", "letterbox-from-cover-resize", "mosaic", "mosaic-from-cell-resize",
         "darknet-crop", "darknet-crop-mosaic"],
)  # fmt: skip
def test_boxes_and_pixels_follow_the_shapes_for_many_seeds(mosaic, with_mosaic, jitter):
    """Each box holds its drawn shape (the instance mask, warped by nearest neighbour with the
    same matrix) and the image under that mask keeps the shape's colour (the pixels moved with
    it), through mosaic, zoom, shift and flip; images resized at decode for letterbox only, for
    either path (mosaic probability 0.5), or for mosaics only (only their cell is resized);
    with darknet's per-side crop (jitter) in place of zoom and shift."""
    zoom = {"scale": (0.5, 1.5), "translate": 0.2} if jitter is None else {
        "jitter": jitter, "resize": 1.5, "scale": (1.0, 1.0), "translate": 0.0}  # fmt: skip
    config = _config(mosaic=mosaic, **zoom)
    rng, seen, coloured = random.Random(0), 0, 0
    for trial in range(SEEDS):
        out = _fused(config, trial, with_mosaic, rng)
        seen += _check_boxes_cover_shapes(out, tight=not with_mosaic)
        sources = {}
        for k in range(MOSAIC_DONORS + 1):
            s = _sample(100 * trial + k, k)
            for inst in np.unique(s["mask"])[1:]:
                sources[int(inst)] = s["image"][s["mask"] == inst].mean(0)
        for inst in np.unique(out["mask"])[1:]:
            # interior pixels only: at the edges bilinear mixes in the background
            inside = cv2.erode((out["mask"] == inst).astype(np.uint8), np.ones((3, 3))) > 0
            if inside.sum() < 30:
                continue
            colour = out["image"][inside].astype(float).mean(0)
            assert np.abs(colour - sources[int(inst)]).max() < 30, (trial, int(inst))
            coloured += 1
    assert seen > 60 and coloured > 30


def test_without_random_geometry_the_sample_is_the_letterboxed_image():
    config = AugmentConfig.none()
    geometry = build_geometry(config, INPUT)
    s = _sample(5, 0)
    out = geometry(random.Random(0), geometry.resize(s["image"], s["bboxes"], s["labels"]))
    from yolov4.core.preprocess import resize_image
    from yolov4.ops.letterbox import letterbox_params, map_boxes

    params = letterbox_params(s["image"].shape[:2], INPUT, "letterbox")
    np.testing.assert_array_equal(out[0], resize_image(s["image"], params, INPUT, 114))
    np.testing.assert_allclose(out[1], map_boxes(s["bboxes"], params), atol=1e-3)


def _probe(size: tuple[int, int] = (64, 64)) -> dict:
    """A blank image with one small box in the middle: its output box measures the affine."""
    h, w = size
    box = np.array([[w / 2 - 4, h / 2 - 4, w / 2 + 4, h / 2 + 4]], np.float32)
    return {"image": np.zeros((h, w, 3), np.uint8), "bboxes": box, "labels": np.array([1])}


def _zoom_shift(boxes: np.ndarray, size: tuple[int, int] = (64, 64)) -> tuple[float, ...]:
    (x1, y1, x2, y2), (h, w) = boxes[0], size
    return (x2 - x1) / 8.0, (x1 + x2) / 2 - w / 2, (y1 + y2) / 2 - h / 2


def test_zoom_and_shift_have_the_legacy_distribution():
    config = _config(mosaic=0.0, flip=0.0, min_visibility=0.0)
    legacy = build_legacy_transform(config, (64, 64), with_mosaic=False, seed=0)
    geometry, rng = build_geometry(config, (64, 64)), random.Random(0)
    old, new = [], []
    for _ in range(STAT_SAMPLES):
        p = _probe()
        old.append(_zoom_shift(np.asarray(legacy(**p)["bboxes"])))
        placed = geometry.resize(p["image"], p["bboxes"], p["labels"])
        new.append(_zoom_shift(geometry(rng, placed)[1]))
    old, new = np.array(old), np.array(new)
    for i, name in enumerate(["zoom", "shift x", "shift y"]):
        assert ks_2samp(old[:, i], new[:, i]).pvalue > KS_P_MIN, name
    assert 0.69 < new[:, 0].min() and new[:, 0].max() < 1.31  # jitter=.3
    assert np.abs(new[:, 1:]).max() <= 0.1 * 64 + 1


def _mosaic_stats(boxes: np.ndarray, labels: np.ndarray) -> tuple[float, float, float]:
    """The primary's slice (its full-image box clipped to it): split point x, y and its area."""
    x1, y1, x2, y2 = boxes[list(labels).index(0)]
    return (x2 if x1 == 0 else x1), (y2 if y1 == 0 else y1), (x2 - x1) * (y2 - y1)


@pytest.mark.slow
def test_mosaic_split_and_the_primarys_slice_have_the_legacy_distribution():
    """Four images, each one full-image box labelled by its place (0 = the sample): with no
    affine, the sample's box is its slice."""
    config = _config(mosaic=1.0, flip=0.0, scale=(1.0, 1.0), translate=0.0)
    legacy = build_legacy_transform(config, (64, 64), with_mosaic=True, seed=0)
    geometry, rng = build_geometry(config, (64, 64)), random.Random(0)
    sizes = [(64, 80), (48, 64), (64, 64), (100, 70)]
    items = [
        {
            "image": np.zeros((h, w, 3), np.uint8),
            "bboxes": np.array([[0.0, 0.0, w, h]], np.float32),
            "labels": np.array([k]),
        }
        for k, (h, w) in enumerate(sizes)
    ]
    placed = [geometry.resize(i["image"], i["bboxes"], i["labels"]) for i in items]
    old, new, seen = [], [], set()
    for _ in range(STAT_SAMPLES):
        out = legacy(**items[0], mosaic_metadata=items[1:])
        old.append(_mosaic_stats(np.asarray(out["bboxes"]), np.asarray(out["labels"])))
        _, boxes, labels, *_ = geometry(rng, placed[0], placed[1:])
        new.append(_mosaic_stats(boxes, labels))
        seen.add(tuple(sorted(labels.tolist())))
    old, new = np.array(old), np.array(new)
    for i, name in enumerate(["split x", "split y", "primary area"]):
        assert ks_2samp(old[:, i], new[:, i]).pvalue > KS_P_MIN, name
    assert np.all(new[:, 2] >= 64 * 64 / 4)  # the sample takes the largest slice
    assert seen == {(0, 1, 2, 3)}  # every image in every mosaic


@pytest.mark.slow
def test_full_recipe_boxes_have_the_legacy_size_and_count_distribution():
    """darknet's recipe on the synthetic shapes: widths, heights and boxes per sample (every
    sample a mosaic, with a box filter both apply alike: albumentations keeps the slivers under
    1 px that this drops)."""
    config = _config(mosaic=1.0, min_area=4.0, min_visibility=0.25)
    legacy = build_legacy_transform(config, INPUT, with_mosaic=True, seed=0)
    rng, old, new = random.Random(0), {"w": [], "h": [], "n": []}, {"w": [], "h": [], "n": []}
    for trial in range(STAT_SAMPLES // 4):
        samples = [_sample(100 * trial + k, k) for k in range(MOSAIC_DONORS + 1)]
        out = legacy(**samples[0], mosaic_metadata=samples[1:])
        for stats, boxes in [
            (old, np.asarray(out["bboxes"]).reshape(-1, 4)),
            (new, _fused(config, trial, True, rng)["bboxes"]),
        ]:
            stats["w"] += list(boxes[:, 2] - boxes[:, 0])
            stats["h"] += list(boxes[:, 3] - boxes[:, 1])
            stats["n"].append(len(boxes))
    for key in ("w", "h"):
        assert ks_2samp(old[key], new[key]).pvalue > KS_P_MIN, key
    assert np.mean(new["n"]) == pytest.approx(np.mean(old["n"]), rel=0.1)


def test_extra_albumentations_transforms_compose_after_the_geometry():
    flip = A.VerticalFlip(p=1.0)
    config = _config(extra=[flip])
    assert config.extra == (flip,)
    transform = build_photometric_transform(config, seed=0)
    image = np.zeros((INPUT[0], INPUT[1], 3), np.uint8)
    out = transform(image=image, bboxes=np.array([[10.0, 20.0, 30.0, 40.0]]), labels=[1])
    np.testing.assert_allclose(out["bboxes"], [[10.0, INPUT[0] - 40, 30.0, INPUT[0] - 20]])


@pytest.mark.parametrize(
    "kw,message",
    [
        ({"extra": ["ToGray"]}, r"augment.extra\[0\]: expected an albumentations transform"),
        ({"extra": [A.Mosaic()]}, r"augment.extra\[0\]: Mosaic needs other images"),
        ({"scale": (0, 0)}, r"augment.scale: expected \[low, high\] with low <= high, low > 0"),
        ({"scale": (1.3, 0.7)}, r"augment.scale: expected \[low, high\] with low <= high"),
        ({"scale": (0.5,)}, r"augment.scale: expected \[low, high\], got \(0.5,\)"),
        ({"mosaic_center": (-1, 2)}, r"augment.mosaic_center: .* fractions in \[0, 1\]"),
        ({"translate": 5}, r"augment.translate: expected a fraction of the size in \[0, 1\)"),
        ({"translate": -0.5}, r"augment.translate: expected a fraction"),
        ({"min_area": -5}, r"augment.min_area: expected px² >= 0, got -5"),
        ({"jitter": 0.3}, r"augment.jitter=0.3 \(darknet's crop\) replaces augment.scale"),
        (
            {"jitter": 0.4, "resize": 1.5, "scale": (1, 1), "translate": 0},
            r"augment.jitter: expected a fraction of the side in \[0, 0.333\)",
        ),  # fmt: skip
        ({"resize": 1.5}, r"augment.resize=1.5 is darknet's zoom of its jitter crop"),
        ({"resize": 0.5}, r"augment.resize: expected darknet's resize >= 1, got 0.5"),
        ({"jitter": "abc"}, r"augment.jitter: expected a number, got 'abc'"),
        ({"hue": True}, r"augment.hue: expected a number, got True"),
    ],
)
def test_bad_settings_name_the_key(kw, message):
    with pytest.raises(ConfigError, match=message):
        AugmentConfig(**kw)


@pytest.mark.parametrize("mosaic", [1.0, 0.5])
@pytest.mark.parametrize("hw", [(180, 320), (320, 180)])
def test_every_part_of_a_non_square_image_reaches_the_mosaics(mosaic, hw):
    """A 16:9 image covering a square cell shows one cell of it per slice: that cell is drawn
    anywhere in the image (it was always the top-left one, so objects at the far end of
    landscape or portrait images were never trained on)."""
    h, w = hw
    near, far = [5.0, 5.0, 45.0, 45.0], [w - 45.0, h - 45.0, w - 5.0, h - 5.0]
    geometry = build_geometry(_config(mosaic=mosaic, scale=(1.0, 1.0), translate=0.0), (64, 64))
    rng, counts = random.Random(0), np.zeros(2)
    image = np.zeros((h, w, 3), np.uint8)
    for _ in range(200):
        placed = [
            geometry.resize(image, np.float32([near, far]), np.array([0, 1]), rng=rng)
            for _ in range(MOSAIC_DONORS + 1)
        ]
        labels = geometry(rng, placed[0], placed[1:]).labels
        counts += np.bincount(labels, minlength=2)
    assert counts.min() > 0.5 * counts.max(), counts


@pytest.mark.parametrize("jitter", [None, 0.3], ids=["basic", "darknet-crop"])
@pytest.mark.parametrize("mosaic", [0.5, 1.0])
def test_a_long_strip_is_resized_to_a_few_cells_at_most(mosaic, jitter):
    """A 6000x100 image at input 608: covering a cell would make it 36480 px long, past what
    cv2's warp takes (it stopped the run); darknet's crop keeps a decoded image's own size up
    to that length; both paths give a sample."""
    from yolov4.data.mosaic import COVER_LIMIT

    zoom = {} if jitter is None else {"jitter": jitter, "scale": (1.0, 1.0), "translate": 0.0}
    geometry = build_geometry(_config(mosaic=mosaic, **zoom), (608, 608))
    if jitter is not None:  # an image of ordinary size: cropped from its decoded pixels
        small = geometry.resize(np.zeros((480, 640, 3), np.uint8), np.zeros((0, 4)), np.zeros(0))
        assert small.image.shape[:2] == (480, 640)
    rng = random.Random(0)
    strip = np.full((100, 6000, 3), 200, np.uint8)
    placed = geometry.resize(strip, np.float32([[100, 10, 300, 90]]), np.array([0]), rng=rng)
    assert max(placed.image.shape[:2]) <= COVER_LIMIT * 608
    for donors in (None, [placed] * MOSAIC_DONORS):
        image, boxes, labels, *_ = geometry(rng, placed, donors)
        assert image.shape == (608, 608, 3) and len(boxes) == len(labels)


@pytest.mark.parametrize(
    "extra",
    [A.Normalize(), A.ToFloat(), A.RandomCrop(32, 32, p=1.0), A.PadIfNeeded(96, 96)],
    ids=["Normalize", "ToFloat", "RandomCrop", "PadIfNeeded"],
)
def test_extras_that_change_the_input_scale_or_size_stop_at_set_up(extra):
    """ImageNet-normalised training inputs met /255 validation and serving inputs, and crops
    trained at another size, silently: the dataset refuses them when it is built."""
    from yolov4.core.preprocess import PreprocessConfig
    from yolov4.data.dataset import DetectionDataset
    from yolov4.data.records import DetectionData

    data = DetectionData(records=[], class_names=["a"], category_ids=[0], coco=None)
    with pytest.raises(
        ConfigError, match=r"augment.extra: the transforms made a uint8 \(64, 64, 3\)"
    ):
        DetectionDataset(data, PreprocessConfig(input_size=(64, 64)), _config(extra=[extra]))


def test_a_composition_of_extras_runs_with_the_boxes():
    """OneOf / SomeOf: accepted, and their geometric members get the boxes."""
    config = _config(extra=[A.OneOf([A.VerticalFlip(p=1.0)], p=1.0)])
    transform = build_photometric_transform(config, seed=0)
    image = np.zeros((INPUT[0], INPUT[1], 3), np.uint8)
    out = transform(image=image, bboxes=np.array([[10.0, 20.0, 30.0, 40.0]]), labels=[1])
    np.testing.assert_allclose(out["bboxes"], [[10.0, INPUT[0] - 40, 30.0, INPUT[0] - 20]])


def test_a_sliver_left_at_a_mosaic_cut_is_no_box():
    """A 140 x 60.3 px box of which 0.3 px falls in the next slice was kept there as an object
    (0.5 % of it visible, 42 px² over min_area): boxes under one pixel wide or high are dropped,
    as darknet drops them; a cut keeping more than that of a box keeps it (as darknet's)."""
    from yolov4.data.affine import clip_filter

    boxes = np.float32([[10, 0, 150, 60.3], [10, 0, 150, 61.5], [10, 55, 11.5, 80]])
    clipped, keep = clip_filter(boxes, (0, 60, 200, 200), min_area=4.0, min_visibility=0.0)
    assert keep.tolist() == [False, True, True]
    np.testing.assert_allclose(clipped[1], [10, 60, 150, 61.5])


def test_a_long_strip_keeps_its_short_side_under_darknets_crop_in_stretch_mode():
    """A 16x3000 strip at input 64 (stretch): one scale for both axes made it 1 px tall at
    decode, its object gone under boxes that stayed. Each axis is limited on its own: the
    short side keeps its pixels and the box still covers the object (red pixels)."""
    config = _config(mosaic=0.0, jitter=0.3, scale=(1.0, 1.0), translate=0.0, flip=0.0)
    geometry = build_geometry(config, (64, 64), resize_mode="stretch")
    strip = np.zeros((16, 3000, 3), np.uint8)
    strip[4:12, 1400:1600] = (255, 0, 0)
    placed = geometry.resize(strip, np.float32([[1400, 4, 1600, 12]]), np.array([0]))
    assert placed.image.shape[0] == 16 and placed.image.shape[1] <= 4 * 64
    rng, inside = random.Random(0), []
    for _ in range(20):
        image, boxes, *_ = geometry(rng, placed, None)
        red = (image[..., 0] > 200) & (image[..., 1] < 60)
        for x1, y1, x2, y2 in boxes.astype(int):
            box = red[max(y1, 0) : y2, max(x1, 0) : x2]
            if box.size:
                inside.append(box.mean())
    assert inside and np.median(inside) > 0.5
