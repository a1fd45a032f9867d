"""The TIDE-style error breakdown: hand-built cases where exactly one error type is present, and
the AP50 before any fix against pycocotools' COCOeval on generated data."""

from __future__ import annotations

import contextlib
import io

import numpy as np
import pytest
from pycocotools.cocoeval import COCOeval

from tests.evaluation.test_analysis import CAT, DOG, det, make_coco
from tests.evaluation.test_darknet_map import generated
from yolov4.evaluation.tide import ERROR_TYPES, error_breakdown

A1, A2 = (100, CAT, (0, 0, 10, 10), 0), (101, CAT, (0, 0, 10, 10), 0)  # a cat in each image

CASES = {
    # a dog box detected, at the right place, as a cat
    "classification": (
        [A1, (101, DOG, (50, 50, 10, 10), 0)],
        [det(100, CAT, (0, 0, 10, 10), 0.9), det(101, CAT, (50, 50, 10, 10), 0.95)],
        {"classification": 1},
        (0.5 + 0.0) / 2,
    ),
    # a cat found twice: the first detection too far off (IoU 0.25), the second right
    "localization": (
        [A1, A2],
        [det(100, CAT, (0, 0, 10, 10), 0.9), det(101, CAT, (5, 0, 10, 10), 0.95)],
        {"localization": 1},
        51 * 0.5 / 101,
    ),
    # a dog detection half on a cat (IoU 1/3, wrong class): neither box nor class right
    "both": (
        [A1, (100, DOG, (60, 60, 10, 10), 0)],
        [
            det(100, CAT, (0, 0, 10, 10), 0.9),
            det(100, DOG, (60, 60, 10, 10), 0.8),
            det(100, DOG, (5, 0, 10, 10), 0.95),
        ],
        {"both": 1},
        (1.0 + 0.5) / 2,
    ),
    # the first cat found twice, the second copy scored above the other cat
    "duplicate": (
        [A1, A2],
        [
            det(100, CAT, (0, 0, 10, 10), 0.9),
            det(100, CAT, (0.5, 0, 10, 10), 0.85),
            det(101, CAT, (0, 0, 10, 10), 0.8),
        ],
        {"duplicate": 1},
        (51 * 1 + 50 * 2 / 3) / 101,
    ),
    # a cat where there is nothing, scored above both real cats
    "background": (
        [A1, A2],
        [
            det(100, CAT, (60, 60, 10, 10), 0.95),
            det(100, CAT, (0, 0, 10, 10), 0.9),
            det(101, CAT, (0, 0, 10, 10), 0.8),
        ],
        {"background": 1},
        2 / 3,  # precision 1/2 at recall 1/2 is under the envelope of 2/3 at recall 1
    ),
    # the second cat never detected
    "missed": (
        [A1, A2],
        [det(100, CAT, (0, 0, 10, 10), 0.9)],
        {"missed": 1},
        51 / 101,
    ),
}


def coco_map50(gt, dets) -> float:
    with contextlib.redirect_stdout(io.StringIO()):
        ev = COCOeval(gt, gt.loadRes([dict(d) for d in dets]), "bbox")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return float(ev.stats[1])


@pytest.mark.parametrize("kind", list(CASES))
def test_one_error_type_alone_is_the_only_ap_gained(kind):
    anns, dets, counts, ap50 = CASES[kind]
    gt = make_coco(anns)
    b = error_breakdown(gt, dets)
    assert b.ap50 == pytest.approx(ap50) and b.ap50 == pytest.approx(coco_map50(gt, dets))
    assert b.counts == {t: counts.get(t, 0) for t in ERROR_TYPES}
    assert b.dap50[kind] == pytest.approx(1.0 - ap50)  # fixing it reaches AP50 1
    assert {t: v for t, v in b.dap50.items() if t != kind} == {
        t: 0.0 for t in ERROR_TYPES if t != kind
    }
    assert b.fixed_all == pytest.approx(1.0)


def test_fixes_of_one_box_promote_only_the_best_scored_error():
    """Two localization errors on one free box: fixing makes the higher one a TP and drops the
    other (TIDE's BestGTMatch); an error on a box already found is dropped too."""
    gt = make_coco([A1, A2, (100, CAT, (40, 0, 10, 10), 0)])
    dets = [
        det(100, CAT, (0, 0, 10, 10), 0.5),  # TP on A1
        det(100, CAT, (5, 0, 10, 10), 0.7),  # localization on A1 (used): dropped
        det(101, CAT, (5, 0, 10, 10), 0.95),  # localization on A2, the best: TP when fixed
        det(101, CAT, (0, 5, 10, 10), 0.9),  # localization on A2, second: dropped
    ]
    b = error_breakdown(gt, dets)
    assert b.counts["localization"] == 3 and b.counts["missed"] == 1  # the box at x=40
    # fixed: TP .95, TP .5 of 3 boxes -> precision 1 up to recall 2/3
    assert b.ap50 + b.dap50["localization"] == pytest.approx(67 / 101)


def test_errors_of_generated_detections_start_from_cocoeval_map50():
    """On generated data (crowd boxes, class swaps, jitter, duplicates, background, misses) the
    AP50 before fixes is COCOeval's mAP50 and fixing every type at once gives 1."""
    coco, results = generated(seed=4, images=20)
    crowd = coco.dataset["annotations"][0]
    crowd["iscrowd"], crowd["area"] = 1, crowd["bbox"][2] * crowd["bbox"][3]
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    b = error_breakdown(coco, results)
    assert b.ap50 == pytest.approx(coco_map50(coco, results), abs=1e-12)
    assert b.fixed_all == pytest.approx(1.0)
    assert all(b.counts[t] > 0 for t in ("localization", "background", "missed"))
    assert sum(b.dap50.values()) > 0 and all(v >= 0 for v in b.dap50.values())
    out = b.to_dict()
    assert set(out["dAP50"]) == set(ERROR_TYPES) and set(out["per_class_dAP50"]["missed"]) == {
        "a",
        "b",
        "c",
    }


def test_more_than_100_detections_per_image_and_class_are_capped_as_cocoeval():
    gt = make_coco([A1])
    rng = np.random.default_rng(0)
    dets = [det(100, CAT, (50, 50, 5, 5), float(s)) for s in rng.uniform(0.2, 0.8, 120)]
    dets.append(det(100, CAT, (0, 0, 10, 10), 0.1))  # the TP, 121st: cut by the cap
    b = error_breakdown(gt, dets)
    assert b.ap50 == coco_map50(gt, dets) == 0.0
    assert b.counts["background"] == 100 and b.counts["missed"] == 1


def test_bad_thresholds_are_a_clear_error():
    with pytest.raises(ValueError, match="0 <= tb < tf <= 1, got tb=0.6, tf=0.5"):
        error_breakdown(make_coco([A1]), [], tb=0.6)


def test_no_detections_at_all_is_all_missed():
    """Every box missed: fixing misses leaves classes without boxes and without false
    positives, which score 1 (as fixing every type at once)."""
    b = error_breakdown(make_coco([A1, A2, (101, DOG, (50, 50, 10, 10), 0)]), [])
    assert b.ap50 == 0.0 and b.counts["missed"] == 3
    assert b.dap50 == {t: float(t == "missed") for t in ERROR_TYPES} and b.fixed_all == 1.0


def test_no_ground_truth_is_undefined_as_cocoeval_says():
    """A split without a (non-crowd) box: COCOeval's mAP50 is -1 (undefined), and so are the
    breakdown's AP50 before and after the fixes; nothing is gained."""
    gt = make_coco([])
    dets = [det(100, CAT, (10, 10, 20, 20), 0.9), det(101, DOG, (5, 5, 30, 30), 0.4)]
    b = error_breakdown(gt, dets)
    assert b.ap50 == coco_map50(gt, dets) == -1.0
    assert b.fixed_all == -1.0 and all(v == 0.0 for v in b.dap50.values())
    assert b.counts["background"] == 2
    assert "AP50 -1.0000 (undefined: no ground truth)" in b.table()
