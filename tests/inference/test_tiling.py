"""Tiled prediction: tiles plus the whole image, merged in original pixels without seam duplicates.

No trained network ships with the tests, so the Predictor runs a deterministic stand-in backend,
:func:`blobs`: it "detects" every pure red (class 0) or green (class 1) blob of its input tensor
that is at least :data:`MIN_SIDE` input pixels wide and high, like a network that cannot see
objects below a few pixels. Shapes drawn at known places in a 4000x3000 image then check the
geometry exactly: small shapes vanish when the whole image is shrunk to the input size and are
found in the tiles; shapes on tile seams and a shape larger than a tile come out once, at the
place they were drawn.
"""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch
from torchvision.ops import batched_nms, box_iou

from yolov4.core.preprocess import PreprocessConfig
from yolov4.errors import InputError
from yolov4.inference import Predictor
from yolov4.inference.tiling import merge_tiles, predict_tiled, tile_grid

MIN_SIDE = 8  # input pixels: smaller blobs are not seen
SIZE = 416
COLORS = {0: (255, 0, 0), 1: (0, 255, 0)}
MAX_BOXES = 64


def blobs(images: torch.Tensor) -> torch.Tensor:
    """``(B, 3, H, W)`` float in [0, 1] -> ``(B, 64, 7)`` decoded predictions in input pixels
    (cx, cy, w, h, objectness, 2 class scores); rows past the blobs found are zeros."""
    out = torch.zeros(images.shape[0], MAX_BOXES, 7)
    for i, im in enumerate(images.numpy()):
        rows = []
        for cls, on in ((0, 0), (1, 1)):
            off = [c for c in range(3) if c != on]
            mask = (im[on] > 0.5) & (im[off[0]] < 0.3) & (im[off[1]] < 0.3)
            n, _, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=4)
            for x, y, w, h, _ in stats[1:n]:
                if w >= MIN_SIDE and h >= MIN_SIDE:
                    rows.append([x + w / 2, y + h / 2, w, h, 0.9, float(cls == 0), float(cls == 1)])
        if rows:
            out[i, : len(rows)] = torch.tensor(rows[:MAX_BOXES])
    return out


def predictor() -> Predictor:
    return Predictor(blobs, ["red", "green"], PreprocessConfig(input_size=(SIZE, SIZE)))


def scene() -> tuple[np.ndarray, list[tuple[int, int, int, int, int]]]:
    """A 4000x3000 RGB image and its shapes ``(x1, y1, x2, y2, class)``: small shapes at random
    places, small shapes centred on tile seams, and one shape larger than a tile."""
    h, w = 3000, 4000
    rng = np.random.default_rng(0)
    image = np.full((h, w, 3), 40, np.uint8)
    shapes = [(1500, 1200, 2200, 1700, 0)]  # larger than a 416-px tile: cut in every tile
    tiles = tile_grid((h, w), (SIZE, SIZE), 0.2)
    seams = sorted({x2 for _, _, x2, _ in tiles if x2 < w})[:6]
    for i, x in enumerate(seams):  # straddling the right edge of a tile column
        shapes.append((x - 15, 300 + 400 * i, x + 15, 330 + 400 * i, i % 2))
    while len(shapes) < 40:
        s = int(rng.integers(20, 41))
        x, y = int(rng.integers(0, w - s)), int(rng.integers(0, h - s))
        box = (x, y, x + s, y + int(rng.integers(20, 41)), int(rng.integers(0, 2)))
        if all(  # 10 px apart from every other shape
            box[0] > b[2] + 10 or box[2] < b[0] - 10 or box[1] > b[3] + 10 or box[3] < b[1] - 10
            for b in shapes
        ):
            shapes.append(box)
    for x1, y1, x2, y2, c in shapes:
        image[y1:y2, x1:x2] = COLORS[c]
    return image, shapes


def match(dets, shapes, tol: float) -> list[int]:
    """For each shape, how many detections of its class lie on it within ``tol`` pixels."""
    return [
        sum(
            1
            for box, c in zip(dets.boxes, dets.class_ids)
            if c == cls and np.abs(box - np.array([x1, y1, x2, y2])).max() <= tol
        )
        for x1, y1, x2, y2, cls in shapes
    ]


def test_tiles_find_small_shapes_the_whole_image_misses_and_no_seam_duplicates():
    image, shapes = scene()
    p = predictor()
    [whole] = p(image)
    tiled = predict_tiled(p, image)
    # the whole-image pass only sees the large shape (small ones shrink below MIN_SIDE)
    assert match(whole, shapes, tol=12)[0] == 1 and len(whole) == 1
    # tiled: every shape exactly once, at its place; the large one from the whole-image pass
    assert match(tiled, shapes[:1], tol=12) == [1]
    assert match(tiled, shapes[1:], tol=1.0) == [1] * (len(shapes) - 1)
    assert len(tiled) == len(shapes)
    assert tiled.image_size == (3000, 4000)
    assert tiled.class_names == [["red", "green"][c] for c in tiled.class_ids]
    assert np.all(np.diff(tiled.scores) <= 0)
    assert {"model", "merge"} <= set(tiled.timing_ms)


def test_tiled_call_options_apply_to_the_merged_result():
    image, shapes = scene()
    p = predictor()
    greens = predict_tiled(p, image, classes=[1])
    assert len(greens) == sum(c == 1 for *_, c in shapes) and set(greens.class_ids) == {1}
    assert len(predict_tiled(p, image, max_det=5)) == 5
    assert len(predict_tiled(p, image, conf=0.95)) == 0  # the stand-in scores 0.9


def test_merge_drops_cut_pieces_of_a_whole_box_and_keeps_other_pieces():
    boxes = torch.tensor(
        [
            [100.0, 100, 160, 130],  # whole box (from the overlapping tile)
            [100.0, 100, 124, 130],  # its left piece, cut at x=124 (40% of it)
            [124.0, 100, 160, 130],  # its right piece
            [124.0, 100, 160, 130],  # a piece of class 1 there: another object
            [500.0, 500, 530, 530],  # a piece with no whole box anywhere
        ]
    )
    scores = torch.tensor([0.8, 0.9, 0.85, 0.7, 0.6])
    ids = torch.tensor([0, 0, 0, 1, 0])
    cut = torch.tensor([False, True, True, True, True])
    keep = merge_tiles(boxes, scores, ids, cut, iou=0.45, max_det=100)
    assert sorted(keep.tolist()) == [0, 3, 4]
    assert keep.tolist() == [0, 3, 4]  # best score first
    assert merge_tiles(boxes, scores, ids, cut, iou=0.45, max_det=2).tolist() == [0, 3]
    # plain NMS keeps a piece next to the whole box: the duplicate the seam rule removes
    plain = batched_nms(boxes, scores, ids, 0.45)
    assert {0, 1} & set(plain.tolist()) and len(plain) > 3
    # agnostic: the class-1 piece lies inside the class-0 whole box, so it goes too
    agnostic = merge_tiles(boxes, scores, ids, cut, iou=0.45, max_det=100, agnostic=True)
    assert agnostic.tolist() == [0, 4]
    assert box_iou(boxes[:1], boxes[1:2]).item() < 0.45


@pytest.mark.parametrize(
    ("hw", "tile", "overlap"),
    [((3000, 4000), (416, 416), 0.2), ((500, 900), (416, 416), 0.5), ((300, 200), (416, 416), 0.2),
     ((1000, 1000), (320, 512), 0.0)],
)  # fmt: skip
def test_tile_grid_covers_the_image_with_equal_overlapping_tiles(hw, tile, overlap):
    h, w = hw
    tiles = tile_grid(hw, tile, overlap)
    covered = np.zeros(hw, bool)
    for x1, y1, x2, y2 in tiles:
        assert 0 <= x1 < x2 <= w and 0 <= y1 < y2 <= h
        assert (y2 - y1, x2 - x1) == (min(tile[0], h), min(tile[1], w))
        covered[y1:y2, x1:x2] = True
    assert covered.all()
    xs = sorted({t[0] for t in tiles})
    steps = np.diff(xs)
    if len(xs) > 1:
        assert steps.max() <= round(min(tile[1], w) * (1 - overlap))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"overlap": 1.0}, "overlap must be a number in \\[0, 1\\), got 1.0"),
        ({"overlap": -0.1}, "overlap must be a number in \\[0, 1\\)"),
        ({"tile_size": 0}, "tile_size must be an integer >= 32 pixels or None, got 0"),
        ({"tile_size": 416.0}, "tile_size must be an integer"),
        ({"conf": 2.0}, "conf must be a number in \\[0, 1\\]"),
    ],
)
def test_bad_tiling_options_are_input_errors(kwargs, message):
    with pytest.raises(InputError, match=message):
        predict_tiled(predictor(), np.zeros((64, 64, 3), np.uint8), **kwargs)


def test_bad_image_is_an_input_error():
    with pytest.raises(InputError, match="expected an \\(H, W, 3\\) image"):
        predict_tiled(predictor(), np.zeros((0, 5, 3), np.uint8))


def test_a_bgr_frame_gives_the_detections_of_its_rgb_image():
    image, _ = scene()
    p = predictor()
    rgb = predict_tiled(p, image)
    bgr = predict_tiled(p, np.ascontiguousarray(image[..., ::-1]), color="bgr")
    assert len(rgb) > 0 and rgb.to_dict()["detections"] == bgr.to_dict()["detections"]
    swapped = predict_tiled(p, np.ascontiguousarray(image[..., ::-1]))  # red read as blue
    assert set(swapped.class_ids) == {1}


def test_too_many_tiles_are_refused_before_any_pass_runs():
    calls = []
    p = Predictor(lambda x: calls.append(x) or blobs(x), ["red", "green"],
                  PreprocessConfig(input_size=(SIZE, SIZE)))  # fmt: skip
    image = np.zeros((3000, 4000, 3), np.uint8)
    n = len(tile_grid((3000, 4000), (SIZE, SIZE), 0.9))
    with pytest.raises(InputError, match=f"a 4000x3000 image needs {n:,} tiles of 416x416"):
        predict_tiled(p, image, overlap=0.9, max_tiles=n - 1)
    assert calls == []
    assert len(predict_tiled(p, image[:500, :500], overlap=0.9, max_tiles=n - 1)) == 0
    with pytest.raises(InputError, match="max_tiles must be a positive integer, got 0"):
        predict_tiled(p, image, max_tiles=0)


def test_an_image_4_pixels_high_is_tiled_as_decoded():
    """A strip 4 pixels high: given as a PIL image or as a decoder's array (``decoded=True``), its
    tiles (also 4 pixels high) run as (H, W, 3) images; a plain array of that shape, which reads
    as (C, H, W) too, is refused as ambiguous."""
    from PIL import Image

    strip = np.full((4, 400, 3), 40, np.uint8)
    strip[:, 100:112] = COLORS[0]
    p = predictor()
    for given, kwargs in ((Image.fromarray(strip), {}), (strip, {"decoded": True})):
        dets = predict_tiled(p, given, tile_size=64, overlap=0.5, **kwargs)
        assert dets.image_size == (4, 400) and match(dets, [(100, 0, 112, 4, 0)], 1.0) == [1]
        assert len(dets) == 1
    with pytest.raises(InputError, match=r"shape \(4, 400, 3\) is ambiguous"):
        predict_tiled(p, strip, tile_size=64, overlap=0.5)


@pytest.mark.parametrize("kind", ["iou", "diou"])
def test_the_merge_suppresses_with_the_predictors_nms_kind(kind):
    """Two boxes of one class with IoU 0.54 but DIoU 0.41 (centres apart): DIoU-NMS at 0.45
    keeps both, IoU-NMS one. The tiled result (one tile plus the whole image, both seeing the
    pair) is the Predictor's own detections of the image, for either NMS kind."""
    pair = torch.tensor([[15.0, 20, 10, 10, 0.9, 1, 0], [18.0, 20, 10, 10, 0.8, 1, 0]])

    def backend(images):
        return pair.expand(images.shape[0], -1, -1)

    thresholds = {"nms_kind": kind, "iou": 0.45}
    p = Predictor(backend, ["a", "b"], PreprocessConfig(input_size=(64, 64)), thresholds)
    image = np.zeros((64, 64, 3), np.uint8)
    [direct] = p(image)
    assert len(direct) == (2 if kind == "diou" else 1)
    tiled = predict_tiled(p, image, tile_size=64)
    np.testing.assert_allclose(tiled.boxes, direct.boxes, atol=1e-4)
    np.testing.assert_allclose(tiled.scores, direct.scores, atol=1e-6)
