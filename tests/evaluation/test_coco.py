"""COCO evaluation: against pycocotools run directly, category ids, rank gathering."""

from __future__ import annotations

import contextlib
import io
import json
import os

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from yolov4.evaluation import METRIC_KEYS, CocoEvaluator, EvaluationResult, detections_to_coco
from yolov4.evaluation.plots import plot_pr_curves

CATEGORY_IDS = [1, 3, 7]  # gapped, like COCO's 1..90
NAMES = ["cat", "dog", "bird"]


def make_gt(num_images: int = 12, seed: int = 0) -> COCO:
    rng = np.random.default_rng(seed)
    images, anns = [], []
    for i in range(num_images):
        images.append({"id": 100 + i, "width": 200, "height": 160, "file_name": f"{i}.jpg"})
        for _ in range(rng.integers(0, 4)):
            x, y = rng.uniform(0, 120), rng.uniform(0, 90)
            w, h = rng.uniform(8, 70), rng.uniform(8, 60)
            anns.append(
                {
                    "id": len(anns) + 1,
                    "image_id": 100 + i,
                    "category_id": int(rng.choice(CATEGORY_IDS)),
                    "bbox": [x, y, w, h],
                    "area": w * h,
                    "iscrowd": 0,
                }
            )
    coco = COCO()
    coco.dataset = {
        "images": images,
        "annotations": anns,
        "categories": [{"id": c, "name": n} for c, n in zip(CATEGORY_IDS, NAMES)],
    }
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    return coco


def noisy_detections(coco: COCO, seed: int = 1) -> dict[int, torch.Tensor]:
    """Per image (K, 6) [x1, y1, x2, y2, score, class_index]: jittered truths plus false positives."""
    rng = np.random.default_rng(seed)
    index = {c: i for i, c in enumerate(CATEGORY_IDS)}
    out = {}
    for image_id in coco.getImgIds():
        rows = []
        for ann in coco.imgToAnns[image_id]:
            x, y, w, h = ann["bbox"]
            j = rng.normal(0, 3, 4)
            rows.append(
                [
                    x + j[0],
                    y + j[1],
                    x + w + j[2],
                    y + h + j[3],
                    rng.uniform(0.3, 1),
                    index[ann["category_id"]],
                ]
            )
        for _ in range(rng.integers(0, 3)):
            x, y = rng.uniform(0, 150), rng.uniform(0, 120)
            rows.append([x, y, x + 20, y + 20, rng.uniform(0, 0.5), rng.integers(0, 3)])
        out[image_id] = torch.tensor(rows, dtype=torch.float32).reshape(-1, 6)
    return out


def direct_stats(coco: COCO, dets: dict[int, torch.Tensor]) -> np.ndarray:
    """pycocotools on hand-built results: the independent reference."""
    results = []
    for image_id, d in dets.items():
        for x1, y1, x2, y2, s, c in d.tolist():
            results.append(
                {
                    "image_id": image_id,
                    "category_id": CATEGORY_IDS[int(c)],
                    "bbox": [x1, y1, x2 - x1, y2 - y1],
                    "score": s,
                }
            )
    with contextlib.redirect_stdout(io.StringIO()):
        ev = COCOeval(coco, coco.loadRes(results), "bbox")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return ev.stats


def test_metrics_equal_pycocotools_directly(tmp_path):
    coco = make_gt()
    dets = noisy_detections(coco)
    ev = CocoEvaluator(coco, CATEGORY_IDS, NAMES)
    ids = list(dets)
    ev.update([dets[i] for i in ids[:5]], torch.tensor(ids[:5]))
    ev.update([dets[i] for i in ids[5:]], ids[5:])
    result = ev.compute()
    ref = direct_stats(coco, dets)
    np.testing.assert_allclose([result[k] for k in METRIC_KEYS], ref, atol=1e-4)
    assert 0.2 < result["mAP50"] < 1.0 and "Average Precision" in result.summary
    assert set(result.per_class) == set(NAMES) and result.num_images == len(ids)
    assert {r["category_id"] for r in result.results} <= set(CATEGORY_IDS)
    png = plot_pr_curves(result.precision, NAMES, tmp_path / "pr.png")
    assert png.stat().st_size > 1000


def test_perfect_detections_score_one_and_swapped_ids_score_low():
    coco = make_gt()
    perfect = {}
    for image_id in coco.getImgIds():
        rows = [
            [
                a["bbox"][0],
                a["bbox"][1],
                a["bbox"][0] + a["bbox"][2],
                a["bbox"][1] + a["bbox"][3],
                0.9,
                CATEGORY_IDS.index(a["category_id"]),
            ]
            for a in coco.imgToAnns[image_id]
        ]
        perfect[image_id] = torch.tensor(rows).reshape(-1, 6)
    ev = CocoEvaluator(coco, CATEGORY_IDS)
    ev.update(list(perfect.values()), list(perfect))
    assert ev.compute()["mAP"] == pytest.approx(1.0)
    shifted = CocoEvaluator(coco, [3, 7, 1])  # each class scored as another's category
    shifted.update(list(perfect.values()), list(perfect))
    assert shifted.compute()["mAP"] < 0.5


def test_no_detections_and_duplicates():
    coco = make_gt()
    ev = CocoEvaluator(coco, CATEGORY_IDS)
    ev.update([torch.zeros(0, 6)] * 3, [100, 101, 102])
    result = ev.compute()
    assert result["mAP"] == 0.0 and result.num_images == 3
    assert result.results == [] and result.precision.max() == 0.0
    first = torch.tensor([[0, 0, 10, 10, 0.9, 0]])
    ev.update([first], [103])
    ev.update([torch.zeros(0, 6)], [103])  # sampler padding repeats an image: first one counts
    assert len(ev.per_image[103]) == 1


def test_detections_to_coco_maps_ids_and_xywh():
    rows = detections_to_coco(torch.tensor([[10.0, 20.0, 40.0, 60.0, 0.5, 2.0]]), 7, CATEGORY_IDS)
    assert rows == [
        {"image_id": 7, "category_id": 7, "bbox": [10.0, 20.0, 30.0, 40.0], "score": 0.5}
    ]


def _rank_main(rank: int, world: int, port: int, shards: list[list[int]], queue) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        coco = make_gt()
        dets = noisy_detections(coco)
        ev = CocoEvaluator(coco, CATEGORY_IDS, NAMES)
        ev.update([dets[i] for i in shards[rank]], shards[rank])
        result = ev.compute()
        queue.put((rank, [result[k] for k in METRIC_KEYS], result.num_images))
    finally:
        dist.destroy_process_group()


@pytest.mark.slow  # 2 spawned processes; the gather in one process: test_coco_backends.py
def test_two_ranks_with_sampler_padding_equal_one_process():
    coco = make_gt()
    ids = coco.getImgIds()  # 12 images; 2 ranks x 7 with the sampler's wrap-around padding
    padded = ids + ids[:2]
    shards = [padded[0::2], padded[1::2]]
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    port = 29500 + os.getpid() % 1000
    mp.start_processes(_rank_main, args=(2, port, shards, queue), nprocs=2, start_method="spawn")
    got = [queue.get(timeout=60) for _ in range(2)]
    ref = direct_stats(coco, noisy_detections(coco))
    for _rank, stats, n in got:
        assert n == len(ids)
        np.testing.assert_allclose(stats, ref, atol=1e-4)


def test_draw_detections_grid():
    from yolov4.evaluation.plots import draw_detections

    images = torch.zeros(3, 3, 64, 64)
    targets = torch.tensor([[0, 1, 4.0, 4.0, 30.0, 30.0], [2, 0, 10.0, 10.0, 50.0, 40.0]])
    dets = [
        torch.tensor([[5.0, 5.0, 31.0, 29.0, 0.9, 1.0]]),
        torch.zeros(0, 6),
        torch.tensor([[1.0, 1, 2, 2, 0.1, 0]]),
    ]
    grid = draw_detections(images, targets, dets, NAMES)
    assert grid.dtype == torch.uint8 and grid.shape[0] == 3
    # green truth and red prediction pixels exist on the first image only
    first = grid[:, 2:66, 2:66]
    assert (first[1] == 255).any() and (first[0] == 255).any()
    third = grid[:, 2:66, 2 + 2 * 66 : 66 + 2 * 66]
    assert not (third[0] == 255).any()  # the 0.1 score prediction is not drawn


def test_result_is_builtins_for_metrics_json_and_weights_files():
    """metrics.json and the weights files get plain numbers from one typed result; a metric left
    as a numpy or torch scalar would be refused by the weights file ("builtins only")."""
    coco = make_gt()
    dets = noisy_detections(coco)
    ev = CocoEvaluator(coco, CATEGORY_IDS, NAMES)
    ev.update(list(dets.values()), list(dets))
    result = ev.compute()
    payload = result.to_dict()
    assert list(payload)[: len(METRIC_KEYS)] == list(METRIC_KEYS)
    assert set(payload) == {*METRIC_KEYS, "per_class", "num_images"}
    assert json.loads(json.dumps(payload)) == payload
    assert all(type(v) is float for k, v in result.scalars.items() if k != "num_images")
    assert type(result.scalars["num_images"]) is int
    with pytest.raises(ValueError, match="lacks"):
        EvaluationResult(metrics={"mAP": 0.5}, per_class={}, num_images=1, summary="")


def test_draw_detections_grid_draws_the_best_last(monkeypatch):
    """Two classes on one box (multi-label): the better is drawn last, its label on top."""
    import torchvision.utils

    from yolov4.evaluation.plots import draw_detections

    drawn = []
    real = torchvision.utils.draw_bounding_boxes

    def record(image, boxes, labels=None, **kwargs):
        drawn.append(labels)
        return real(image, boxes, labels=labels, **kwargs)

    monkeypatch.setattr(torchvision.utils, "draw_bounding_boxes", record)
    box = [5.0, 5.0, 31.0, 29.0]
    dets = [torch.tensor([[*box, 0.9, 1.0], [*box, 0.5, 0.0]])]
    draw_detections(torch.zeros(1, 3, 64, 64), torch.zeros(0, 6), dets, NAMES)
    assert drawn == [[f"{NAMES[0]} 0.50", f"{NAMES[1]} 0.90"]]
