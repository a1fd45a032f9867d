"""darknet's `detector map` report against a loop transcription of `validate_detector_map`
(AlexeyAB/darknet src/detector.c) on generated detections, and on hand-built cases."""

from __future__ import annotations

import numpy as np
import pytest

from tests.evaluation.test_analysis import CAT, DOG, det, make_coco
from yolov4.evaluation.darknet_map import darknet_map


def _iou(a, b) -> float:
    """IoU of two COCO xywh boxes (darknet's box_iou, in pixels)."""
    ax2, ay2, bx2, by2 = a[0] + a[2], a[1] + a[3], b[0] + b[2], b[1] + b[3]
    w = min(ax2, bx2) - max(a[0], b[0])
    h = min(ay2, by2) - max(a[1], b[1])
    inter = w * h if w > 0 and h > 0 else 0.0
    union = a[2] * a[3] + b[2] * b[3] - inter
    return inter / union if union > 0 else 0.0


def darknet_loops(coco, results, thresh, iou_thresh, map_points):
    """validate_detector_map step by step, as plain loops over images, detections and ranks."""
    cats = sorted(coco.getCatIds())
    classes = len(cats)
    detections = []  # [p, class_id, truth_flag, unique_truth_index]
    unique_truth_count = 0
    truth_classes_count = [0] * classes
    tp_for_thresh = [0] * classes
    fp_for_thresh = [0] * classes
    avg_iou = [0.0] * classes
    for image_id in sorted(coco.getImgIds()):
        truth = [(cats.index(a["category_id"]), a["bbox"]) for a in coco.imgToAnns[image_id]]
        for t in truth:
            truth_classes_count[t[0]] += 1
        checkpoint = len(detections)
        for d in [r for r in results if r["image_id"] == image_id]:
            class_id, prob = cats.index(d["category_id"]), d["score"]
            truth_index, max_iou = -1, 0.0
            for j, (tid, tbox) in enumerate(truth):
                current = _iou(d["bbox"], tbox)
                if current > iou_thresh and class_id == tid and current > max_iou:
                    max_iou, truth_index = current, unique_truth_count + j
            detections.append([prob, class_id, int(truth_index > -1), truth_index])
            if prob > thresh:
                found = any(
                    detections[z][3] == truth_index for z in range(checkpoint, len(detections) - 1)
                )
                if truth_index > -1 and not found:
                    avg_iou[class_id] += max_iou
                    tp_for_thresh[class_id] += 1
                else:
                    fp_for_thresh[class_id] += 1
        unique_truth_count += len(truth)
    detections.sort(key=lambda x: -x[0])
    n = len(detections)
    pr = [[{"tp": 0, "fp": 0, "p": 0.0, "r": 0.0} for _ in range(n)] for _ in range(classes)]
    truth_flags = [0] * unique_truth_count
    for rank in range(n):
        if rank > 0:
            for c in range(classes):
                pr[c][rank]["tp"], pr[c][rank]["fp"] = pr[c][rank - 1]["tp"], pr[c][rank - 1]["fp"]
        p, c, flag, ti = detections[rank]
        if flag == 1 and truth_flags[ti] == 0:
            truth_flags[ti] = 1
            pr[c][rank]["tp"] += 1
        else:
            pr[c][rank]["fp"] += 1
        for i in range(classes):
            tp, fp = pr[i][rank]["tp"], pr[i][rank]["fp"]
            fn = truth_classes_count[i] - tp
            pr[i][rank]["p"] = tp / (tp + fp) if tp + fp > 0 else 0.0
            pr[i][rank]["r"] = tp / (tp + fn) if tp + fn > 0 else 0.0
    aps = []
    for i in range(classes):
        ap = 0.0
        if map_points == 0:
            last_recall, last_precision = pr[i][n - 1]["r"], pr[i][n - 1]["p"]
            for rank in range(n - 2, -1, -1):
                delta = last_recall - pr[i][rank]["r"]
                last_recall = pr[i][rank]["r"]
                if pr[i][rank]["p"] > last_precision:
                    last_precision = pr[i][rank]["p"]
                ap += delta * last_precision
        else:
            for point in range(map_points):
                cur_recall = point * 1.0 / (map_points - 1)
                cur_precision = 0.0
                for rank in range(n):
                    if pr[i][rank]["r"] >= cur_recall and pr[i][rank]["p"] > cur_precision:
                        cur_precision = pr[i][rank]["p"]
                ap += cur_precision
            ap /= map_points
        aps.append(ap)
    for i in range(classes):
        if tp_for_thresh[i] + fp_for_thresh[i] > 0:
            avg_iou[i] /= tp_for_thresh[i] + fp_for_thresh[i]
    return aps, tp_for_thresh, fp_for_thresh, truth_classes_count, avg_iou


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


def test_area_mode_skips_the_first_ranks_step():
    """-points 0 (darknet's default) never counts the recall step of the global rank 0."""
    gt = make_coco([(100, CAT, (0, 0, 10, 10), 0), (100, DOG, (50, 0, 10, 10), 0)])
    dets = [det(100, CAT, (0, 0, 10, 10), 0.9), det(100, DOG, (50, 0, 10, 10), 0.8)]
    r = darknet_map(gt, dets, points=0)
    assert r.per_class["cat"]["AP50"] == 0.0 and r.per_class["dog"]["AP50"] == 1.0
    assert darknet_map(gt, dets, points=101).mAP50 == 1.0


def test_bad_points_is_a_clear_error():
    gt = make_coco([(100, CAT, (0, 0, 10, 10), 0)])
    with pytest.raises(ValueError, match=r"-points is one of \(0, 11, 101\), got 7"):
        darknet_map(gt, [], points=7)
