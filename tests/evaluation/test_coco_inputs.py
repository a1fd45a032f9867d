"""What COCO evaluation refuses at its boundary (results and category ids that do not fit the
ground truth, which pycocotools would stop on with an assertion or score 0 without a word), and
what it gives for no image at all: COCOeval's numbers over no image, never those of every
image."""

from __future__ import annotations

import contextlib
import io

import pytest
from pycocotools.cocoeval import COCOeval

from tests.evaluation.test_coco import CATEGORY_IDS, make_gt
from yolov4.errors import ConfigError, InputError
from yolov4.evaluation import METRIC_KEYS, CocoEvaluator, evaluate_coco


def _pycocotools_stats(coco, image_ids: list[int]) -> list[float]:
    """COCOeval run directly over ``image_ids`` with one detection loaded (it cannot load none)
    on an image outside them: the reference for no detection there."""
    outside = next(i for i in coco.getImgIds() if i not in image_ids)
    one = [{"image_id": outside, "category_id": CATEGORY_IDS[0], "bbox": [0, 0, 9, 9], "score": 1}]
    with contextlib.redirect_stdout(io.StringIO()):
        ev = COCOeval(coco, coco.loadRes(one), "bbox")
        ev.params.imgIds = list(image_ids)
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return [float(s) for s in ev.stats]


@pytest.mark.parametrize("which", ["none", "one without boxes"])
def test_no_detections_on_few_images_score_as_pycocotools(which):
    """No image, or one image without ground truth: -1 (undefined) everywhere, as COCOeval over
    those images says; the ground truth of the other images does not count."""
    coco = make_gt()
    empty = [i for i in coco.getImgIds() if not coco.imgToAnns[i]]
    assert empty and len(coco.getAnnIds()) > 0
    ids = [] if which == "none" else empty[:1]
    result = evaluate_coco(coco, [], image_ids=ids)
    reference = _pycocotools_stats(coco, ids)
    assert [result[k] for k in METRIC_KEYS] == reference == [-1.0] * len(METRIC_KEYS)
    assert result.num_images == len(ids) and result.image_ids == tuple(ids)
    assert all(v == {"AP": None, "AP50": None} for v in result.per_class.values())


def _result(**kwargs) -> dict:
    return {"image_id": 100, "category_id": CATEGORY_IDS[0], "bbox": [1, 2, 30, 40], "score": 0.9,
            **kwargs}  # fmt: skip


@pytest.mark.parametrize(
    ("results", "image_ids", "message"),
    [
        (
            [_result(), _result(image_id=999)],
            None,
            r"results\[1\]: image_id 999 is not an image of the ground truth \(its image ids: "
            r"\[100, 101, .* 12 in all\]\)",
        ),
        (
            [_result(category_id=2)],
            None,
            r"results\[0\]: category_id 2 is not a category of the ground truth \(its category "
            r"ids: \[1, 3, 7\]\); results carry each class's category id .*not the class index",
        ),
        (
            [_result(), {"image_id": 100, "category_id": 1, "bbox": [1, 2, 3, 4]}],
            None,
            r"results\[1\]: expected a dict with keys \['image_id', 'category_id', 'bbox', "
            r"'score'\], got \['bbox', 'category_id', 'image_id'\]",
        ),
        ([[100, 1, 1, 2, 3, 4, 0.9]], None, r"results\[0\]: expected a dict .* got list"),
        ([], [100, 555], r"image_ids: 555 is not an image of the ground truth"),
    ],
)
def test_results_that_do_not_fit_the_ground_truth_are_refused(results, image_ids, message):
    with pytest.raises(InputError, match=message):
        evaluate_coco(make_gt(), results, image_ids=image_ids)


@pytest.mark.parametrize(
    ("category_ids", "message"),
    [
        (
            [1, 2, 3],  # contiguous class indices from 1 written as ids: the classic mistake
            r"category_ids\[1\] = 2 is not a category of the ground truth \(its category ids: "
            r"\[1, 3, 7\]\); category_ids\[class_index\] is the id of the class's category, not "
            "the class index",
        ),
        ([1, 3, 3], r"category_ids\[2\] = 3 repeats category_ids\[1\]"),
        ([1, "3", 7], r"category_ids\[1\]: expected an integer category id, got '3'"),
    ],
)
def test_category_ids_that_are_not_the_ground_truths_are_refused(category_ids, message):
    with pytest.raises(ConfigError, match=message):
        CocoEvaluator(make_gt(), category_ids)
