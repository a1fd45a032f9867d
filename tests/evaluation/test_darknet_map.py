"""darknet's `detector map` report against a loop transcription of `validate_detector_map`
(AlexeyAB/darknet src/detector.c) on generated detections, and on hand-built cases."""

from __future__ import annotations

import numpy as np
import pytest

from tests.evaluation.test_analysis import CAT, DOG, det, make_coco
from tests.oracles.darknet_map_loops import darknet_loops
from yolov4.evaluation.darknet_map import darknet_map


def generated(seed: int, images: int = 12):
    """Boxes of 3 classes (gapped ids), detections near them (jittered, relabelled, duplicated)
    and on nothing, with distinct scores (darknet's qsort leaves ties in no defined order)."""
    rng = np.random.default_rng(seed)
    anns, results = [], []
    for image_id in range(1, images + 1):
        for _ in range(rng.integers(0, 6)):
            x, y = rng.uniform(0, 150, 2)
            w, h = rng.uniform(8, 60, 2)
            cat = int(rng.choice([2, 5, 9]))
            anns.append((image_id, cat, (x, y, w, h), 0))
            for _ in range(rng.integers(0, 4)):
                box = [x + rng.normal(0, w / 6), y + rng.normal(0, h / 6), w, h]
                c = cat if rng.random() < 0.8 else int(rng.choice([2, 5, 9]))
                results.append(det(image_id, c, box, 0.0))
        for _ in range(rng.integers(0, 3)):
            x, y = rng.uniform(0, 180, 2)
            results.append(det(image_id, int(rng.choice([2, 5, 9])), [x, y, 20, 20], 0.0))
    scores = rng.permutation(len(results)) + rng.uniform(0.1, 0.9, len(results))
    for r, s in zip(results, scores / scores.max()):
        r["score"] = float(s)
    coco = make_coco(anns, images=range(1, images + 1), cats=((2, "a"), (5, "b"), (9, "c")))
    return coco, results


@pytest.mark.parametrize("points", [0, 11, 101])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_matches_a_loop_transcription_of_validate_detector_map(seed, points):
    coco, results = generated(seed)
    aps, tp, fp, truth, avg_iou = darknet_loops(coco, results, 0.25, 0.5, points)
    report = darknet_map(coco, results, thresh=0.25, iou=0.5, points=points)
    assert report.names == ["a", "b", "c"]
    for k, name in enumerate(report.names):
        v = report.per_class[name]
        assert v["AP50"] == pytest.approx(aps[k], abs=1e-12), name
        assert (v["TP"], v["FP"], v["FN"], v["num_gt"]) == (
            tp[k],
            fp[k],
            truth[k] - tp[k],
            truth[k],
        )
        assert v["avg_iou"] == pytest.approx(avg_iou[k], abs=1e-9)
    assert report.mAP50 == pytest.approx(np.mean(aps), abs=1e-12)
    assert report.all["TP"] == sum(tp) and report.all["FP"] == sum(fp)
    assert 0 < report.mAP50 < 1 and sum(tp) > 0 and sum(fp) > 0  # a real comparison


def test_darknet_rules_on_a_hand_built_case():
    """Strict IoU >, no fall-back to a free box, crowd boxes as ordinary truth, classes
    without truth count as AP 0, TP / FP at conf > thresh in detection order."""
    gt = make_coco(
        [
            (100, CAT, (0, 0, 10, 10), 0),  # g0
            (100, CAT, (5, 0, 10, 10), 0),  # g1: IoU 1/3 with g0
            (101, CAT, (0, 0, 10, 10), 1),  # a crowd box: darknet has no such thing
        ],
        cats=((CAT, "cat"), (DOG, "dog")),
    )
    dets = [
        det(100, CAT, (0, 0, 10, 10), 0.9),  # TP on g0 (IoU 1)
        det(100, CAT, (2, 0, 10, 10), 0.8),  # IoU .67 g0 (taken), .54 g1: FP, never g1
        det(100, CAT, (5, 0, 10, 10), 0.2),  # TP on g1, below thresh 0.25
        det(101, CAT, (0, 0, 10, 10), 0.7),  # TP on the crowd box
    ]
    r = darknet_map(gt, dets, thresh=0.25, iou=0.5, points=101)
    cat = r.per_class["cat"]
    assert (cat["TP"], cat["FP"], cat["FN"], cat["num_gt"]) == (2, 1, 1, 3)
    assert cat["avg_iou"] == pytest.approx(2 / 3)  # (1 + 1 + 0) / (TP + FP)
    # score order: TP .9, FP .8, TP .7, TP .2 -> precision 1, 1/2, 2/3, 3/4 at recall 1/3..1
    expected = (34 * 1 + 33 * (3 / 4) + 34 * (3 / 4)) / 101  # recall points 0..0.33, ..0.66, ..1
    assert cat["AP50"] == pytest.approx(expected)
    assert r.per_class["dog"]["AP50"] == 0.0 and r.mAP50 == pytest.approx(expected / 2)
    # IoU exactly 0.5 is not a match (darknet: >); (0,0,10,10) vs (0,0,10,5) has IoU 0.5
    half = darknet_map(gt, [det(100, CAT, (0, 0, 10, 5), 0.9)], thresh=0.25, points=101)
    assert half.per_class["cat"]["TP"] == 0 and half.per_class["cat"]["AP50"] == 0.0


def test_area_mode_counts_the_first_ranks_step():
    """-points 0 (darknet's default) counts the recall step of the global rank 0 (darknet's
    "remaining area of PR curve", since 2020-07: older builds left it out, AP 0 for cat here)."""
    gt = make_coco([(100, CAT, (0, 0, 10, 10), 0), (100, DOG, (50, 0, 10, 10), 0)])
    dets = [det(100, CAT, (0, 0, 10, 10), 0.9), det(100, DOG, (50, 0, 10, 10), 0.8)]
    r = darknet_map(gt, dets, points=0)
    assert r.per_class["cat"]["AP50"] == 1.0 and r.per_class["dog"]["AP50"] == 1.0
    two = make_coco([(100, CAT, (0, 0, 10, 10), 0), (100, CAT, (50, 0, 10, 10), 0)])
    half = [det(100, CAT, (0, 0, 10, 10), 0.9), det(100, CAT, (90, 0, 10, 10), 0.8)]
    assert darknet_map(two, half, points=0).per_class["cat"]["AP50"] == 0.5  # recall .5 at p 1
    assert darknet_map(gt, dets, points=101).mAP50 == 1.0


def test_bad_points_is_a_clear_error():
    gt = make_coco([(100, CAT, (0, 0, 10, 10), 0)])
    with pytest.raises(ValueError, match=r"-points is one of \(0, 11, 101\), got 7"):
        darknet_map(gt, [], points=7)
