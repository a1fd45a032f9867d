"""darknet's crop and mosaic, piece by piece (``augment.jitter``: :mod:`yolov4.data.darknet_crop`
through :class:`yolov4.data.mosaic.TrainGeometry`): the crop of a single image and of each
mosaic piece against a transcription of ``load_data_detection``'s formula (two-sample KS), each
piece with its own flip, boxes on their pieces' pixels, and mosaic donors drawn from the whole
dataset."""

from __future__ import annotations

import dataclasses
import random

import cv2
import numpy as np
import pytest
from scipy.stats import chisquare, ks_2samp

from yolov4.data.darknet_crop import Crop, cut_offset, to_corner
from yolov4.data.mosaic import MOSAIC_DONORS
from yolov4.data.transforms import AugmentConfig, build_geometry

KS_P_MIN = 0.01  # same distribution unless a 1%-level two-sample KS test says otherwise
SAMPLES = 300
ORIGINAL = (96, 128)  # (H0, W0) of the generated images
INPUT = (96, 96)
GRID_BOX, GRID_STEP = 3.0, 4  # px: probe boxes dense enough that every piece holds whole ones
PIECE_LABEL = 100_000  # label = piece * PIECE_LABEL + probe index
GEOMETRY_ONLY = {
    "hue": 0.0,
    "saturation": 1.0,
    "exposure": 1.0,
    "scale": (1.0, 1.0),
    "translate": 0.0,
}


def _config(**kw) -> AugmentConfig:
    return dataclasses.replace(AugmentConfig(), **{**GEOMETRY_ONLY, "jitter": 0.3, **kw})


def _darknet_crops(size, jitter: float, resize: float, n: int, seed: int) -> np.ndarray:
    """``(n, 4)`` pleft, pright, ptop, pbot of darknet's ``load_data_detection`` for an image of
    ``size`` ``(H0, W0)``, transcribed: ``rand_precalc_random(min, max, r) = r * (max - min) +
    min``; ``pleft = that(-dw, dw, r1)`` stored in an int, then ``pleft += that(min_rdw,
    max_rdw, resize_r1)`` (ptop with ``resize_r1`` too, pright and pbot with ``resize_r2``)."""
    oh, ow = size
    rng = np.random.default_rng(seed)
    dw, dh = int(ow * jitter), int(oh * jitter)
    resize_down, resize_up = 1 / resize, resize
    min_rdw, min_rdh = int(ow * (1 - 1 / resize_down) / 2), int(oh * (1 - 1 / resize_down) / 2)
    max_rdw, max_rdh = int(ow * (1 - 1 / resize_up) / 2), int(oh * (1 - 1 / resize_up) / 2)
    resize_r1, resize_r2, r1, r2, r3, r4 = rng.random((6, n))

    def precalc(low, high, r):
        return r * (high - low) + low

    pleft = np.trunc(np.trunc(precalc(-dw, dw, r1)) + precalc(min_rdw, max_rdw, resize_r1))
    pright = np.trunc(np.trunc(precalc(-dw, dw, r2)) + precalc(min_rdw, max_rdw, resize_r2))
    ptop = np.trunc(np.trunc(precalc(-dh, dh, r3)) + precalc(min_rdh, max_rdh, resize_r1))
    pbot = np.trunc(np.trunc(precalc(-dh, dh, r4)) + precalc(min_rdh, max_rdh, resize_r2))
    return np.stack([pleft, pright, ptop, pbot], 1)


def _grid(piece: int) -> dict:
    """A blank ``ORIGINAL`` image with a dense grid of small probe boxes."""
    oh, ow = ORIGINAL
    xs, ys = np.meshgrid(np.arange(1, ow - 3, GRID_STEP), np.arange(1, oh - 3, GRID_STEP))
    x, y = xs.ravel().astype(np.float32), ys.ravel().astype(np.float32)
    boxes = np.stack([x, y, x + GRID_BOX, y + GRID_BOX], 1)
    labels = piece * PIECE_LABEL + np.arange(len(boxes))
    return {"image": np.zeros((oh, ow, 3), np.uint8), "boxes": boxes, "labels": labels}


def _piece_geometry(grid: dict, boxes: np.ndarray, labels: np.ndarray, piece: int):
    """From the probes of ``piece`` kept whole: the zoom per axis (output px per original px),
    the original left edge's place in the output (``None`` when flipped) and the flip."""
    mine = labels // PIECE_LABEL == piece
    out, src = boxes[mine], grid["boxes"][labels[mine] % PIECE_LABEL]
    w, h = out[:, 2] - out[:, 0], out[:, 3] - out[:, 1]
    zoom = (w.max() / GRID_BOX, h.max() / GRID_BOX)
    whole = (np.abs(w - w.max()) < 1e-3) & (np.abs(h - h.max()) < 1e-3)
    a, b = np.argmin(src[whole, 0]), np.argmax(src[whole, 0])
    flipped = bool(out[whole][a, 0] > out[whole][b, 0])
    x_of_left = out[whole][a, 0] - src[whole][a, 0] * zoom[0]  # output x of original x = 0
    return zoom, x_of_left, flipped


@pytest.mark.parametrize("jitter,resize", [(0.3, 1.0), (0.1, 1.5), (0.25, 1.2)])
def test_a_single_images_crop_is_darknets(jitter, resize):
    """Without mosaic: zoom per axis and the left side's cut have the distribution of darknet's
    formula (two-sample KS), the axes drawn apart when ``resize`` is 1, half of the images
    flipped; where the crop reaches past the image, its border is the image's mean colour."""
    geometry = build_geometry(_config(jitter=jitter, resize=resize, flip=0.5), INPUT, "stretch")
    grid, rng = _grid(0), random.Random(0)
    placed = geometry.resize(grid["image"], grid["boxes"], grid["labels"])
    ours, flips = [], []
    for _ in range(SAMPLES):
        out = geometry(rng, placed)
        (zx, zy), x_left, flipped = _piece_geometry(grid, out.boxes, out.labels, 0)
        flips.append(flipped)
        ours.append((zx, zy, np.nan if flipped else -x_left / zx))  # pleft, original px
    ref = _darknet_crops(ORIGINAL, jitter, resize, SAMPLES, 1)
    (oh, ow), (h, w) = ORIGINAL, INPUT
    ref = np.stack(
        [w / (ow - ref[:, 0] - ref[:, 1]), h / (oh - ref[:, 2] - ref[:, 3]), ref[:, 0]], 1
    )
    # discrete values measured on float32 boxes: compared on the same atoms
    ours, ref = np.round(np.asarray(ours, float), 3), np.round(ref, 3)
    for i, name in enumerate(["zoom x", "zoom y", "pleft"]):
        mine = ours[~np.isnan(ours[:, i]), i]
        assert ks_2samp(mine, ref[:, i]).pvalue > KS_P_MIN, name
    if resize == 1.0:
        assert abs(np.corrcoef(ours[:, 0], ours[:, 1])[0, 1]) < 0.15
    assert 0.4 < np.mean(flips) < 0.6
    image = np.zeros((*ORIGINAL, 3), np.uint8)
    image[:, : ORIGINAL[1] // 2] = (200, 40, 10)  # mean colour (100, 20, 5)
    probe = geometry.resize(image, grid["boxes"], grid["labels"])
    uncovered = 0
    for seed in range(40):
        out = geometry(random.Random(seed), probe)
        _, x_left, flipped = _piece_geometry(grid, out.boxes, out.labels, 0)
        if not flipped and x_left > 3:  # the crop's left side moved out: a border there
            np.testing.assert_allclose(out.image[INPUT[0] // 2, 0], (100, 20, 5), atol=2)
            uncovered += 1
    assert uncovered >= 5


def _mosaic(geometry, rng: random.Random, grids: list[dict]):
    placed = [geometry.resize(g["image"], g["boxes"], g["labels"]) for g in grids]
    return geometry(rng, placed[0], placed[1:])


@pytest.mark.parametrize("jitter,resize", [(0.3, 1.0), (0.25, 1.2)])
def test_each_mosaic_piece_has_its_own_darknet_crop_and_flip(jitter, resize):
    """Four pieces per mosaic: each piece's zoom per axis has the distribution of darknet's
    crop (two-sample KS), each flips with probability 1/2, and the pieces of one mosaic flip
    independently (half of the pairs disagree)."""
    geometry = build_geometry(
        _config(jitter=jitter, resize=resize, flip=0.5, mosaic=1.0), INPUT, "stretch"
    )
    grids, rng = [_grid(k) for k in range(MOSAIC_DONORS + 1)], random.Random(0)
    zooms, flips = [], []
    for _ in range(SAMPLES // 2):
        out = _mosaic(geometry, rng, grids)
        assert len(out.pieces) == 4
        drawn = [_piece_geometry(grids[k], out.boxes, out.labels, k) for k in range(4)]
        zooms += [z for z, _, _ in drawn]
        flips.append([f for _, _, f in drawn])
    ref = _darknet_crops(ORIGINAL, jitter, resize, len(zooms), 2)
    (oh, ow), (h, w) = ORIGINAL, INPUT
    # discrete values measured on float32 boxes: compared on the same atoms
    zooms = np.round(np.asarray(zooms, float), 3)
    ref_zoom = np.round([w / (ow - ref[:, 0] - ref[:, 1]), h / (oh - ref[:, 2] - ref[:, 3])], 3)
    for axis in range(2):
        assert ks_2samp(zooms[:, axis], ref_zoom[axis]).pvalue > KS_P_MIN, axis
    flips = np.array(flips)
    assert np.all((0.35 < flips.mean(0)) & (flips.mean(0) < 0.65)), flips.mean(0)
    differ = np.mean([flips[:, i] != flips[:, j] for i in range(4) for j in range(i + 1, 4)])
    assert 0.4 < differ < 0.6


def test_a_piece_shows_its_image_up_to_the_cut():
    """darknet's placement of a piece, case by case: a crop that leaves a border on the cut side
    moves the piece by that border (measured as darknet measures it, ``-side * W // W0``) up
    to its quarter's width; the corner move keeps the crop's size and puts the slack on the
    cut side (mirrored with the flip)."""
    size, net, cut = (100, 200), (64, 64), (20, 40)
    # piece 0 (top left) shows the output's bottom-right part: the right and bottom borders
    assert cut_offset(Crop(5, -30, 0, -10), size, net, cut, 0, False) == (64 - 20 - 9, 64 - 40 - 6)
    # a border wider than the quarter: at most the quarter's width
    assert cut_offset(Crop(0, -190, 0, 0), size, net, cut, 0, False)[0] == 0
    # flipped: the crop's left border faces the cut
    assert cut_offset(Crop(-30, 5, 0, 0), size, net, cut, 0, True)[0] == 64 - 20 - 9
    # piece 3 (bottom right) shows the top-left part: left and top borders
    assert cut_offset(Crop(-30, 0, -10, 0), size, net, cut, 3, False) == (9 - 20, 6 - 40)
    assert cut_offset(Crop(8, 0, 3, 0), size, net, cut, 3, False) == (-20, -40)
    assert to_corner(Crop(5, 7, 2, 3), 0, False) == Crop(0, 12, 0, 5)
    assert to_corner(Crop(5, 7, 2, 3), 0, True) == Crop(12, 0, 0, 5)
    assert to_corner(Crop(5, 7, 2, 3), 3, False) == Crop(12, 0, 5, 0)


COLOURS = np.array([(230, 30, 30), (30, 230, 30), (30, 30, 230), (230, 230, 30), (230, 30, 230),
                    (30, 230, 230), (250, 140, 0), (140, 0, 250), (0, 250, 140), (250, 250, 250),
                    (120, 60, 0), (0, 120, 60)], np.uint8)  # fmt: skip
KERNEL = np.ones((3, 3), np.uint8)


def _rectangles(k: int) -> dict:
    """An ``ORIGINAL`` grey image with three rectangles in colours ``3k .. 3k + 2`` (labels)."""
    image = np.full((*ORIGINAL, 3), 90, np.uint8)
    boxes = np.float32([[6, 10, 46, 50], [54, 30, 90, 88], [96, 4, 124, 70]])
    for j, (x1, y1, x2, y2) in enumerate(boxes.astype(int)):
        image[y1:y2, x1:x2] = COLOURS[3 * k + j]
    return {"image": image, "boxes": boxes, "labels": np.arange(3 * k, 3 * k + 3)}


@pytest.mark.parametrize("mode", ["stretch", "letterbox"])
def test_boxes_follow_their_pieces(mode):
    """Coloured rectangles, a colour per label: in every mosaic each box holds its own colour
    (at least 90 % of its pixels), and each pixel of a colour lies in a box of that label."""
    geometry = build_geometry(_config(jitter=0.3, resize=1.2, flip=0.5, mosaic=1.0), INPUT, mode)
    items, rng, seen = [_rectangles(k) for k in range(4)], random.Random(0), 0
    for _ in range(60):
        out = _mosaic(geometry, rng, items)
        image = out.image.astype(int)
        covered = np.zeros(INPUT, bool)
        for box, label in zip(out.boxes, out.labels, strict=True):
            x1, y1, x2, y2 = np.round(box).astype(int)
            inside = image[y1 + 1 : y2 - 1, x1 + 1 : x2 - 1]
            if inside.size == 0:
                continue
            own = np.abs(inside - COLOURS[label]).max(-1) < 40
            assert own.mean() > 0.9, (box, label, own.mean())
            seen += 1
        for label, colour in enumerate(COLOURS):
            # pixels of the colour inside a patch of it (a sliver under 1 px at a cut, its
            # box dropped, has none)
            pixels = cv2.erode((np.abs(image - colour).max(-1) < 10).astype(np.uint8), KERNEL)
            covered[:] = False
            for x1, y1, x2, y2 in out.boxes[out.labels == label]:
                covered[int(y1) : int(np.ceil(y2)), int(x1) : int(np.ceil(x2))] = True
            assert not (pixels.astype(bool) & ~covered).any(), label
    assert seen > 200


def _dataset(n: int, colour=(120, 100, 80), **kw):
    """A training dataset of ``n`` ``ORIGINAL`` images, each one colour and one box, decoded
    from memory; ``.loads`` lists the indices decoded, in order."""
    from yolov4.core.preprocess import PreprocessConfig
    from yolov4.data.dataset import DetectionDataset
    from yolov4.data.records import DetectionData, ImageRecord

    box = np.float32([[10, 10, 60, 50]])
    records = [ImageRecord(i, f"{i}.jpg", *ORIGINAL, box, np.zeros(1, np.int64)) for i in range(n)]
    data = DetectionData(records=records, class_names=["a"], category_ids=[0], coco=None)
    config = _config(mosaic=1.0, **kw)
    dataset = DetectionDataset(data, PreprocessConfig(input_size=INPUT, mode="stretch"), config)
    dataset.loads = []

    def load(index: int):
        dataset.loads.append(index)
        return np.full((*ORIGINAL, 3), colour, np.uint8), box, np.zeros(1, np.int64)

    dataset.load = load
    return dataset


def test_mosaic_donors_are_drawn_from_the_whole_dataset():
    """darknet draws a mosaic's images at random from the whole dataset: in the first pass over
    the indices, donors not yet seen as a sample come as often as the rest (a buffer of recent
    samples never gives one), every image is a donor about as often (chi-square), and nothing
    is kept between samples."""
    n = 100
    dataset = _dataset(n)
    donors, ahead = [], []
    for epoch in range(3):
        for i in range(n):
            start = len(dataset.loads)
            dataset[i]
            mine = dataset.loads[start + 1 :]
            assert dataset.loads[start] == i and len(mine) == MOSAIC_DONORS
            donors += mine
            if epoch == 0 and i < n - 1:
                ahead += [j > i for j in mine]
    assert 0.4 < np.mean(ahead) < 0.6
    assert chisquare(np.bincount(donors, minlength=n)).pvalue > KS_P_MIN
    assert dataset._buffer == {}


def test_each_mosaic_piece_takes_its_own_colour_through_the_dataset():
    """Images of one colour: a training sample's pieces come out in different colours (one
    HSV draw per piece, as darknet's); with ``augment=basic``'s mosaic one colour."""
    distinct = []
    for jitter, kw in [(0.3, {}), (None, {"scale": (1.0, 1.0), "translate": 0.0})]:
        dataset = _dataset(8, jitter=jitter, hue=0.1, saturation=1.5, exposure=1.5, **kw)
        counts = []
        for i in range(20):
            pixels = dataset[i % 8]["image"].numpy().reshape(3, -1).T // 4  # OpenCV HSV: ±1
            _, sizes = np.unique(pixels, axis=0, return_counts=True)
            counts.append(int((sizes >= 20).sum()))
        distinct.append(np.mean(np.array(counts) >= 3))
    assert distinct[0] > 0.8 and distinct[1] == 0.0
