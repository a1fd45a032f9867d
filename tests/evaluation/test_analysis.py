"""Confusion matrix, TP / FP / FN and P / R / F1 against confidence, on hand-built cases with
known answers, and against COCOeval's own matching on generated data."""

from __future__ import annotations

import contextlib
import io
import json

import numpy as np
import pytest
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from yolov4.evaluation.analysis import analyze_detections

CAT, DOG = 1, 3  # gapped category ids: class index 0 = cat, 1 = dog, 2 = background


def make_coco(anns: list[tuple], images=(100, 101), cats=((CAT, "cat"), (DOG, "dog"))) -> COCO:
    """``anns``: ``(image_id, category_id, [x, y, w, h], iscrowd)``."""
    coco = COCO()
    coco.dataset = {
        "images": [{"id": i, "width": 100, "height": 100} for i in images],
        "annotations": [
            {
                "id": n + 1,
                "image_id": image_id,
                "category_id": cat,
                "bbox": list(box),
                "area": box[2] * box[3],
                "iscrowd": crowd,
            }
            for n, (image_id, cat, box, crowd) in enumerate(anns)
        ],
        "categories": [{"id": c, "name": n} for c, n in cats],
    }
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    return coco


def det(image_id: int, cat: int, box, score: float) -> dict:
    return {"image_id": image_id, "category_id": cat, "bbox": list(box), "score": score}


@pytest.fixture
def case():
    gt = make_coco(
        [
            (100, CAT, (0, 0, 10, 10), 0),  # g0: found
            (100, DOG, (20, 0, 10, 10), 0),  # g1: called a cat (class swap)
            (100, CAT, (40, 0, 10, 10), 0),  # g2: missed
            (100, DOG, (60, 0, 10, 10), 0),  # g3: found only below conf
            (100, CAT, (0, 40, 30, 30), 1),  # g4: crowd, matched -> its detection ignored
            (100, DOG, (60, 40, 30, 30), 1),  # g5: crowd, unmatched -> no miss
        ]
    )
    dets = [
        det(100, CAT, (0, 0, 10, 10), 0.9),  # TP on g0
        det(100, CAT, (0.5, 0, 10, 10), 0.8),  # duplicate of g0: FP (background)
        det(100, CAT, (20, 0, 10, 10), 0.7),  # cat on the dog g1: FP cat, FN dog
        det(100, DOG, (0, 80, 10, 10), 0.6),  # nothing there: FP (background)
        det(100, DOG, (60, 0, 10, 10), 0.1),  # TP on g3, but below conf 0.25
        det(100, CAT, (5, 45, 10, 10), 0.5),  # inside the cat crowd g4: ignored
        det(999, CAT, (0, 0, 10, 10), 0.9),  # an image not evaluated: left out
    ]
    return gt, dets


def test_confusion_matrix_and_counts_of_a_hand_built_case(case):
    gt, dets = case
    a = analyze_detections(gt, dets, image_ids=[100, 101], conf=0.25, iou=0.5)
    assert a.labels == ["cat", "dog", "background"]
    # rows: ground truth (cat, dog, background); columns: prediction
    np.testing.assert_array_equal(a.matrix, [[1, 0, 1], [1, 0, 1], [1, 1, 0]])
    assert a.counts() == {"cat": {"TP": 1, "FP": 2, "FN": 1}, "dog": {"TP": 0, "FP": 1, "FN": 2}}
    np.testing.assert_allclose(a.normalized, [[0.5, 0, 0.5], [0.5, 0, 0.5], [0.5, 0.5, 0]])
    out = a.confusion_dict()
    assert out["all"]["TP"] == 1 and out["all"]["FP"] == 3 and out["all"]["FN"] == 3
    assert out["per_class"]["cat"]["precision"] == pytest.approx(1 / 3)
    assert out["per_class"]["cat"]["recall"] == pytest.approx(0.5)
    assert (out["conf"], out["iou"], out["rows"]) == (0.25, 0.5, "ground truth")
    json.dumps(out, allow_nan=False)


def test_lower_conf_and_stricter_iou_change_the_matrix(case):
    gt, dets = case
    low = analyze_detections(gt, dets, conf=0.05)  # the dog at 0.1 now counts
    np.testing.assert_array_equal(low.matrix, [[1, 0, 1], [1, 1, 0], [1, 1, 0]])
    # the duplicate's IoU with g0 is 0.9: at iou 0.95 nothing matches but the exact boxes
    strict = analyze_detections(gt, dets, conf=0.25, iou=0.95)
    assert strict.counts()["cat"] == {"TP": 1, "FP": 2, "FN": 1}
    with pytest.raises(ValueError, match="conf"):
        analyze_detections(gt, dets, conf=1.5)


def test_pr_f1_curves_and_best_confidence_of_the_hand_built_case(case):
    gt, dets = case
    a = analyze_detections(gt, dets, image_ids=[100, 101])
    pr = a.pr_f1_dict()
    # cat (crowd-ignored detection left out): 0.9 TP, 0.8 FP, 0.7 FP over 2 cats
    cat = pr["per_class"]["cat"]
    assert (cat["num_gt"], cat["num_detections"]) == (2, 3)
    assert cat["best"] == pytest.approx({"conf": 0.9, "precision": 1.0, "recall": 0.5, "f1": 2 / 3})
    # dog: 0.6 FP, 0.1 TP over 2 dogs
    assert pr["best_f1"]["dog"] == pytest.approx(
        {"conf": 0.1, "precision": 0.5, "recall": 0.5, "f1": 0.5}
    )
    # pooled: 0.9 T, 0.8 F, 0.7 F, 0.6 F, 0.1 T over 4: F1 .4, .333, .286, .25, .444
    assert pr["best_f1"]["all"] == pytest.approx(
        {"conf": 0.1, "precision": 0.4, "recall": 0.5, "f1": 4 / 9}
    )
    grid = pr["confidence"]
    assert len(grid) == 101 and grid[0] == 0 and grid[-1] == 1
    i = grid.index(0.75)  # detections >= 0.75: the 0.9 TP and 0.8 FP
    assert pr["all"]["precision"][i] == pytest.approx(0.5)
    assert pr["all"]["recall"][i] == pytest.approx(0.25)
    assert pr["all"]["precision"][-1] == 1.0 and pr["all"]["recall"][-1] == 0.0  # none left
    json.dumps(pr, allow_nan=False)


def test_best_f1_confidence_treats_tied_scores_together():
    """Splitting the tie at 0.6 (TP before FP) would give F1 0.857; the threshold cannot."""
    gts = [(100, CAT, (20 * i, 0, 10, 10), 0) for i in range(4)]
    gt = make_coco(gts, images=(100,), cats=((CAT, "cat"),))
    far = (50, 80, 10, 10)
    dets = [
        det(100, CAT, (0, 0, 10, 10), 0.9),
        det(100, CAT, (20, 0, 10, 10), 0.8),
        det(100, CAT, (40, 0, 10, 10), 0.6),
        det(100, CAT, far, 0.6),
        det(100, CAT, far, 0.3),
        det(100, CAT, (60, 0, 10, 10), 0.2),
    ]
    a = analyze_detections(gt, dets)
    # F1 by threshold: .9 -> .4, .8 -> .667, .6 -> .75, .3 -> .667, .2 -> .8
    assert a.overall_curves["best"] == pytest.approx(
        {"conf": 0.2, "precision": 4 / 6, "recall": 1.0, "f1": 0.8}
    )
    assert a.per_class_curves["cat"]["best"] == a.overall_curves["best"]
    no_hits = analyze_detections(gt, [det(100, CAT, far, 0.9)])
    assert no_hits.overall_curves["best"]["conf"] is None
    empty = analyze_detections(gt, [])
    assert empty.matrix.tolist() == [[0, 4], [0, 0]]
    assert empty.overall_curves["f1"] == [0.0] * 101


def random_case(seed: int = 0):
    rng = np.random.default_rng(seed)
    anns, dets = [], []
    for image_id in range(30):
        for _ in range(rng.integers(0, 6)):
            x, y, w, h = *rng.uniform(0, 60, 2), *rng.uniform(5, 40, 2)
            cat = int(rng.choice([CAT, DOG]))
            anns.append((image_id, cat, (x, y, w, h), int(rng.random() < 0.15)))
            for _ in range(rng.integers(0, 3)):  # jittered, sometimes the other class
                j = rng.normal(0, 3, 4)
                c = cat if rng.random() < 0.8 else ({CAT, DOG} - {cat}).pop()
                box = (x + j[0], y + j[1], max(w + j[2], 1), max(h + j[3], 1))
                dets.append(det(image_id, c, box, round(float(rng.random()), 3)))
        for _ in range(rng.integers(0, 3)):  # background
            box = (*rng.uniform(0, 80, 2), *rng.uniform(5, 20, 2))
            dets.append(det(image_id, int(rng.choice([CAT, DOG])), box, float(rng.random())))
    return make_coco(anns, images=range(30)), dets


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_tp_fp_fn_are_cocoevals_matches_at_the_confidence(seed):
    """Per class TP / FP / FN at conf equal COCOeval's own matching at IoU 0.5 (crowd boxes
    included), read from its evalImgs."""
    gt, dets = random_case(seed)
    conf = 0.4
    with contextlib.redirect_stdout(io.StringIO()):
        ev = COCOeval(gt, gt.loadRes(dets), "bbox")
        ev.params.maxDets = [1000]
        ev.params.areaRng, ev.params.areaRngLbl = [[0, 1e10]], ["all"]
        ev.evaluate()
    expected = {}
    for e in ev.evalImgs:
        if e is None:
            continue
        name = gt.cats[e["category_id"]]["name"]
        c = expected.setdefault(name, {"TP": 0, "FP": 0, "FN": 0})
        score = np.asarray(e["dtScores"])
        keep = (score >= conf) & ~e["dtIgnore"][0].astype(bool)
        hit = e["dtMatches"][0] > 0
        c["TP"] += int((hit & keep).sum())
        c["FP"] += int((~hit & keep).sum())
        real = ~np.asarray(e["gtIgnore"], bool)
        c["FN"] += int(real.sum()) - int((hit & keep).sum())
    a = analyze_detections(gt, dets, conf=conf)
    assert a.counts() == expected
    assert sum(c["TP"] for c in expected.values()) > 5  # a real comparison
    # the pooled curve at the grid's 0.4 agrees
    i = int(np.argmin(np.abs(a.confidence - conf)))
    tp = sum(c["TP"] for c in expected.values())
    fp = sum(c["FP"] for c in expected.values())
    assert a.overall_curves["precision"][i] == pytest.approx(tp / (tp + fp))


def test_plots_are_pngs_and_leave_the_matplotlib_backend(case, tmp_path):
    import matplotlib

    from yolov4.evaluation.plots import plot_confusion_matrix, plot_pr_f1

    gt, dets = case
    a = analyze_detections(gt, dets)
    before = matplotlib.get_backend()
    matplotlib.rcParams["backend"] = "svg"
    try:
        for path in (
            plot_confusion_matrix(a, tmp_path / "cm.png"),
            plot_pr_f1(a, tmp_path / "prf1.png"),
        ):
            assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert matplotlib.get_backend() == "svg"
    finally:
        matplotlib.rcParams["backend"] = before
