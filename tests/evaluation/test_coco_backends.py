"""module.coco_backend: faster-coco-eval gives pycocotools' numbers (the reference) on the same
inputs: the 12 numbers, per-class AP / AP50, the precision array of the PR plots and the summary
text; the key picks the backend end to end; a bad name or a missing library fails at start-up.

Tolerance: the two libraries compute precision as ``tp / (tp + fp)`` in different orders of
float64 operations, so a value may differ in its last bit (2.2e-16 seen); everything is held to
1e-12, far below the 3 decimals COCOeval prints."""

from __future__ import annotations

import contextlib
import copy
import io
import json
import os
import sys

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from pycocotools.coco import COCO

import yolov4.evaluation.coco as coco_module
from tests.cli.conftest import (  # noqa: F401 (the tests/cli fixtures, reused)
    compose_cfg,
    synthetic_cache,
    tiny_run,
)
from yolov4.errors import ConfigError
from yolov4.evaluation import METRIC_KEYS, CocoEvaluator, evaluate_coco
from yolov4.evaluation.coco import COCO_BACKENDS, check_coco_backend

TOL = 1e-12
CATEGORY_IDS = [1, 3, 7, 9, 20]  # gapped like COCO's; 20 never has ground truth
NAMES = ["cat", "dog", "bird", "fish", "ghost"]
CROWDED_IMAGE = 1  # image id with > 100 detections of one class: COCOeval's maxDets cut


def _box(rng: np.random.Generator, width: int, height: int) -> list[float]:
    side = float(np.exp(rng.normal(3.7, 1.1)))  # small, medium and large (32^2 / 96^2)
    w = min(max(side * rng.uniform(0.6, 1.6), 2.0), width - 1.0)
    h = min(max(side * rng.uniform(0.6, 1.6), 2.0), height - 1.0)
    return [float(rng.uniform(0, width - w)), float(rng.uniform(0, height - h)), w, h]


def _round(xywh: list[float]) -> list[float]:
    """As detections_to_coco writes boxes (3 decimals): the results survive CocoEvaluator."""
    return [round(float(v), 3) for v in xywh]


def make_case(seed: int, num_images: int = 40) -> tuple[COCO, list[dict]]:
    """Ground truth and COCO results with every case that takes a branch in COCOeval: crowd
    boxes, images without ground truth, images without detections, a class without ground
    truth (detected anyway), a class-swapped and a duplicate detection, tied scores, and one
    image with 130 detections of one class (past maxDets=100)."""
    rng = np.random.default_rng(seed)
    images, anns, results = [], [], []
    for image_id in range(1, num_images + 1):
        width, height = (640, 480) if rng.random() < 0.5 else (320, 400)
        images.append({"id": image_id, "width": width, "height": height, "file_name": "x.jpg"})
        n_gt = 0 if image_id % 7 == 0 else int(rng.integers(1, 9))  # some images empty
        for _ in range(n_gt):
            bbox = _box(rng, width, height)
            cat = (
                CATEGORY_IDS[0] if image_id == CROWDED_IMAGE else int(rng.choice(CATEGORY_IDS[:4]))
            )
            crowd = int(rng.random() < 0.1)
            anns.append(
                {
                    "id": len(anns) + 1,
                    "image_id": image_id,
                    "category_id": cat,
                    "bbox": bbox,
                    "area": bbox[2] * bbox[3] * (0.7 if crowd else 1.0),
                    "iscrowd": crowd,
                }
            )
            if image_id % 5 == 0:  # some images without detections
                continue
            for _ in range(int(rng.integers(0, 3))):  # found 0-2 times (duplicates)
                x, y, w, h = bbox
                j = rng.normal(0, 0.08, 4) * [w, h, w, h]
                swapped = rng.random() < 0.1
                results.append(
                    {
                        "image_id": image_id,
                        "category_id": int(rng.choice(CATEGORY_IDS)) if swapped else cat,
                        "bbox": _round([x + j[0], y + j[1], max(w + j[2], 1), max(h + j[3], 1)]),
                        # two decimals: tied scores, whose order both libraries must keep
                        "score": round(float(rng.uniform(0.05, 1.0)), 2),
                    }
                )
        if image_id % 5 == 0:
            continue
        n_fp = 130 if image_id == CROWDED_IMAGE else int(rng.integers(0, 25))
        for _ in range(n_fp):
            results.append(
                {
                    "image_id": image_id,
                    "category_id": CATEGORY_IDS[0]
                    if image_id == CROWDED_IMAGE
                    else int(rng.choice(CATEGORY_IDS)),
                    "bbox": _round(_box(rng, width, height)),
                    # the crowded image's false positives outrank its true boxes: cut at 100
                    "score": round(
                        float(
                            rng.uniform(0.6, 1.0)
                            if image_id == CROWDED_IMAGE
                            else rng.uniform(0.001, 0.4)
                        ),
                        3,
                    ),  # fmt: skip
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
    return coco, results


def assert_same(ref, got) -> None:
    """Two EvaluationResults agree to TOL: numbers, per class, precision, summary text."""
    np.testing.assert_allclose(
        [got[k] for k in METRIC_KEYS], [ref[k] for k in METRIC_KEYS], rtol=0, atol=TOL
    )
    assert list(got.per_class) == list(ref.per_class)
    for name, v in ref.per_class.items():
        if v["AP"] is None:  # no ground truth: undefined in both
            assert got.per_class[name] == v, name
        else:
            assert got.per_class[name] == pytest.approx(v, abs=TOL), name
    assert got.precision.shape == ref.precision.shape
    assert np.array_equal(got.precision == -1, ref.precision == -1)  # classes / areas without gt
    np.testing.assert_allclose(got.precision, ref.precision, rtol=0, atol=TOL)
    assert got.summary == ref.summary
    assert (got.num_images, got.image_ids) == (ref.num_images, ref.image_ids)


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_faster_coco_eval_gives_pycocotools_numbers(seed):
    coco, results = make_case(seed)
    ref = evaluate_coco(coco, results, backend="pycocotools")
    got = evaluate_coco(coco, results, backend="faster_coco_eval")
    assert_same(ref, got)
    # the case is what it claims: every branch is exercised
    assert 0.05 < ref["mAP"] < 0.95 and ref["AR1"] < ref["AR10"] <= ref["AR100"]
    assert ref.per_class["ghost"] == {"AP": None, "AP50": None}  # no gt: undefined, not 0
    assert (ref.precision[:, :, NAMES.index("ghost")] == -1).all()  # no gt: -1, not 0
    crowded = sorted(r["score"] for r in results if r["image_id"] == CROWDED_IMAGE)
    assert len(crowded) > 100 and crowded[-101] >= 0.6  # the true boxes' detections are cut
    assert coco.imgToAnns[CROWDED_IMAGE] and any(a["iscrowd"] for a in coco.dataset["annotations"])
    assert any(not coco.imgToAnns[i] for i in coco.getImgIds())
    assert {r["image_id"] for r in results} < set(coco.getImgIds())


def test_backends_agree_on_a_subset_of_images_and_leave_inputs_alone():
    coco, results = make_case(4)
    gt_before = copy.deepcopy(coco.dataset)
    results_before = copy.deepcopy(results)
    subset = coco.getImgIds()[::3]
    got = evaluate_coco(coco, results, subset, {1: "Cat"}, backend="faster_coco_eval")
    # faster-coco-eval indexes copies: the ground truth stays as the DataModule built it
    # (pycocotools, the reference, writes `ignore` / `_ignore` into it, as it always has)
    assert coco.dataset == gt_before
    ref = evaluate_coco(coco, results, subset, {1: "Cat"}, backend="pycocotools")
    assert_same(ref, got)
    assert ref.num_images == len(subset) and list(ref.per_class)[0] == "Cat"
    # neither library leaves its keys (segmentation, area, id, iscrowd) in the results:
    # detections.json stays in COCO results format
    assert results == results_before
    assert got.results == results_before and ref.results == results_before


def _as_tensors(coco: COCO, results: list[dict]) -> dict[int, torch.Tensor]:
    """Per image id the ``(K, 6)`` ``[x1, y1, x2, y2, score, class_index]`` CocoEvaluator takes
    (float64: detections_to_coco gives the results back to their 3 / 5 decimals)."""
    index = {c: k for k, c in enumerate(CATEGORY_IDS)}
    per_image: dict[int, list[list[float]]] = {i: [] for i in coco.getImgIds()}
    for r in results:
        x, y, w, h = r["bbox"]
        per_image[r["image_id"]].append([x, y, x + w, y + h, r["score"], index[r["category_id"]]])
    return {i: torch.tensor(v, dtype=torch.float64).reshape(-1, 6) for i, v in per_image.items()}


def test_coco_evaluator_backend_through_update_and_compute():
    coco, results = make_case(5)
    dets = _as_tensors(coco, results)
    out = {}
    for backend in COCO_BACKENDS:
        ev = CocoEvaluator(coco, CATEGORY_IDS, NAMES, backend=backend)
        ev.update(list(dets.values()), list(dets))
        out[backend] = ev.compute()
    assert_same(out["pycocotools"], out["faster_coco_eval"])
    assert out["pycocotools"]["mAP"] > 0.05


def _rank_main(rank: int, world: int, port: int, shards: list[list[int]], queue) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        coco, dets = make_case(6, num_images=14)[0], _as_tensors(*make_case(6, num_images=14))
        ev = CocoEvaluator(coco, CATEGORY_IDS, NAMES, backend="faster_coco_eval")
        ev.update([dets[i] for i in shards[rank]], shards[rank])
        result = ev.compute()
        queue.put((rank, [result[k] for k in METRIC_KEYS], result.per_class, result.num_images))
    finally:
        dist.destroy_process_group()


def test_gathered_ranks_with_the_faster_backend_equal_pycocotools(monkeypatch):
    """CocoEvaluator.compute under DDP, in one process: torch.distributed reports 2 ranks and
    all_gather_object hands back this rank's images and the other's (with the sampler's
    repeated images); the faster backend then scores them once each, as pycocotools does."""
    coco, results = make_case(6, num_images=14)
    dets = _as_tensors(coco, results)
    ids = coco.getImgIds()
    padded = ids + ids[:2]  # DistributedSampler's wrap-around padding: 2 ranks x 8
    ranks = []
    for shard in (padded[0::2], padded[1::2]):
        ev = CocoEvaluator(coco, CATEGORY_IDS, NAMES, backend="faster_coco_eval")
        ev.update([dets[i] for i in shard], shard)
        ranks.append(ev)

    def all_gather_object(parts, obj):
        parts[:] = [r.per_image for r in ranks]

    monkeypatch.setattr(dist, "is_initialized", lambda: True)
    monkeypatch.setattr(dist, "get_world_size", lambda: 2)
    monkeypatch.setattr(dist, "all_gather_object", all_gather_object)
    ref = evaluate_coco(coco, results, backend="pycocotools")
    for ev in ranks:
        assert_same(ref, ev.compute())


@pytest.mark.slow  # two spawned processes: ~15 s alone, minutes on busy cores
def test_two_ranks_with_the_faster_backend_equal_pycocotools_in_one_process():
    """Under DDP the backend changes nothing: each rank gathers every rank's images (the
    sampler's repeated images once) and evaluates them; the faster backend on 2 ranks gives
    pycocotools' numbers of one process."""
    coco, results = make_case(6, num_images=14)
    ids = coco.getImgIds()
    padded = ids + ids[:2]  # DistributedSampler's wrap-around padding: 2 ranks x 8
    shards = [padded[0::2], padded[1::2]]
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    port = 29500 + (os.getpid() + 7) % 1000
    mp.start_processes(_rank_main, args=(2, port, shards, queue), nprocs=2, start_method="spawn")
    got = [queue.get(timeout=120) for _ in range(2)]
    ref = evaluate_coco(coco, results, backend="pycocotools")
    for _rank, stats, per_class, n in got:
        assert n == len(ids)
        np.testing.assert_allclose(stats, [ref[k] for k in METRIC_KEYS], rtol=0, atol=TOL)
        for name, v in ref.per_class.items():
            assert per_class[name] == pytest.approx(v, abs=TOL)


def test_detections_to_coco_rounds_float32_as_python_round():
    """The numpy rounding of detections_to_coco gives Python's ``round`` on float32 detections
    (the network's), exact ties (0.0625 -> 0.062, half to even) included."""
    rng = np.random.default_rng(0)
    xy = rng.uniform(0, 1000, (20000, 2))
    d = np.concatenate(
        [xy, xy + rng.uniform(0, 300, (20000, 2)), rng.uniform(0.001, 1, (20000, 1)),
         rng.integers(0, 5, (20000, 1))], 1)  # fmt: skip
    d[:4, :5] = [[0.0625, 100.0625, 0.1875, 100.5625, 0.5], [1, 2, 3, 4, 0.0000125],
                 [0, 0, 1e-4, 5e-4, 0.00001525878906], [2.5, 3.0005, 7, 9, 1.0]]  # fmt: skip
    det = torch.from_numpy(d).float()
    got = coco_module.detections_to_coco(det, 5, CATEGORY_IDS)
    ref = [  # the former loop, with Python's round
        {
            "image_id": 5,
            "category_id": CATEGORY_IDS[int(c)],
            "bbox": [round(x1, 3), round(y1, 3), round(x2 - x1, 3), round(y2 - y1, 3)],
            "score": round(s, 5),
        }
        for x1, y1, x2, y2, s, c in det.double().tolist()
    ]
    assert got == ref
    assert got[0]["bbox"][:2] == [0.062, 100.062]  # half to even, as Python
    assert coco_module.detections_to_coco(torch.zeros(0, 6), 5, CATEGORY_IDS) == []


def test_no_detections_give_cocoevals_numbers_for_none_with_either_backend():
    """COCOeval cannot load an empty result list; the numbers for none were all 0, also for a
    class without ground truth (null with detections) and an area without boxes (-1). The
    reference: COCOeval itself with one detection on nothing, which changes none of them."""
    from tests.evaluation.test_analysis import det, make_coco

    small, medium = (0, 0, 20, 20), (10, 10, 50, 50)
    coco = make_coco(
        [(100, 1, small, 0), (101, 1, medium, 0), (101, 2, medium, 1)],  # 2: a crowd box only
        cats=((1, "a"), (2, "b"), (7, "c")),
    )
    for backend in COCO_BACKENDS:
        none = evaluate_coco(coco, [], backend=backend)
        stray = evaluate_coco(coco, [det(100, 1, (90, 90, 5, 5), 0.01)], backend=backend)
        assert none.metrics == pytest.approx(stray.metrics) and none.per_class == stray.per_class
        assert none["mAP"] == 0.0 and none["mAP_large"] == -1.0 and none["AR_large"] == -1.0
        assert none.per_class == {
            "a": {"AP": 0.0, "AP50": 0.0}, "b": {"AP": None, "AP50": None},
            "c": {"AP": None, "AP50": None},
        }  # fmt: skip
        np.testing.assert_array_equal(none.precision, stray.precision)
    nothing = make_coco([(100, 1, small, 1)], cats=((1, "a"),))  # no box that counts
    assert set(evaluate_coco(nothing, []).metrics.values()) == {-1.0}


def test_unknown_backend_is_refused_naming_the_choices():
    coco, _ = make_case(0, num_images=3)
    with pytest.raises(ConfigError, match=r"coco_backend must be one of \['pycocotools', 'faster"):
        check_coco_backend("fast_coco")
    with pytest.raises(ConfigError, match="got 'fast_coco'"):
        CocoEvaluator(coco, CATEGORY_IDS, backend="fast_coco")  # at construction, not at compute
    with pytest.raises(ConfigError, match="coco_backend"):
        evaluate_coco(coco, [], backend="fast_coco")
    from yolov4.models import build_model
    from yolov4.training.module import YoloModule

    with pytest.raises(ConfigError, match="got 'fast_coco'"):
        YoloModule(model=build_model("yolov4-tiny", num_classes=5).config.to_dict(),
                   coco_backend="fast_coco")  # fmt: skip


def test_missing_library_says_what_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "faster_coco_eval", None)  # `import` now raises ImportError
    with pytest.raises(ConfigError, match="pip install faster-coco-eval"):
        check_coco_backend("faster_coco_eval")
    assert check_coco_backend("pycocotools") == "pycocotools"  # the reference needs nothing else


# the artifact path (an ONNX export, then the Predictor) costs ~30 s on 2 busy cores: slow
@pytest.mark.parametrize("source", ["checkpoint", pytest.param("artifact", marks=pytest.mark.slow)])
def test_evaluate_cli_selects_the_backend(
    source,
    compose_cfg,  # noqa: F811 (the imported fixture)
    tiny_run,  # noqa: F811
    randomize,
    tmp_path,
    monkeypatch,
):
    """`python evaluate.py checkpoint=...|artifact=... module.coco_backend=faster_coco_eval`:
    the faster backend runs (spied), and its metrics.json is what pycocotools makes of the
    detections.json it wrote."""
    from yolov4.cli.evaluate import evaluate
    from yolov4.core.checkpoint import save_checkpoint
    from yolov4.evaluation.reports import DETECTIONS_FILE
    from yolov4.models import build_model

    torch.manual_seed(3)
    model = randomize(build_model("yolov4-tiny", num_classes=4), seed=3)
    ckpt = save_checkpoint(
        tmp_path / "m.pt",
        model,
        ["circle", "rectangle", "triangle", "cross"],
        {"input_size": [64, 64], "mode": "letterbox"},
    )
    if source == "artifact":
        from yolov4.export.artifact import export_artifact

        ckpt = export_artifact(ckpt, tmp_path / "export", formats=["onnx"])
    used = []
    real = coco_module.cocoeval

    def spy(coco_gt, results, image_ids, backend):
        used.append(backend)
        return real(coco_gt, results, image_ids, backend)

    monkeypatch.setattr(coco_module, "cocoeval", spy)
    data = [o for o in tiny_run if o.startswith("data.") and "input_size" not in o]
    run = tmp_path / "run"
    cfg = compose_cfg(
        "evaluate", [f"{source}={ckpt}", "module.coco_backend=faster_coco_eval", *data], run
    )
    metrics = evaluate(cfg)
    assert used == ["faster_coco_eval"]
    detections = json.loads((run / DETECTIONS_FILE).read_text())
    assert len(detections) > 0 and set(detections[0]) == {
        "image_id",
        "category_id",
        "bbox",
        "score",
    }
    from yolov4.data.problems import ProblemReport
    from yolov4.data.synthetic import SyntheticSource

    gt = (
        SyntheticSource(split="val", num_images=6, image_size=96, cache_dir=str(cfg.data.cache_dir))
        .load(ProblemReport())
        .coco
    )
    ref = evaluate_coco(gt, detections, backend="pycocotools")
    assert metrics["AR100"] > 0
    np.testing.assert_allclose(
        [metrics[k] for k in METRIC_KEYS], [ref[k] for k in METRIC_KEYS], rtol=0, atol=TOL
    )
    for name, v in ref.per_class.items():
        assert metrics["per_class"][name] == pytest.approx(v, abs=TOL)


def test_ap_at_an_iou_is_cocoevals_at_that_threshold():
    """The darknet report's COCO column follows analysis.iou (it showed AP50 at any IoU)."""
    from yolov4.evaluation.analysis_config import ap_label
    from yolov4.evaluation.coco import ap_at_iou

    coco, results = make_case(0)
    ref = evaluate_coco(coco, results, backend="pycocotools")
    names = list(ref.per_class)
    for iou, key in ((0.5, "mAP50"), (0.75, "mAP75")):
        per_class, mean = ap_at_iou(ref.precision, iou, names)
        assert mean == ref[key]
    per_class, _ = ap_at_iou(ref.precision, 0.5, names)
    assert per_class == {n: v["AP50"] for n, v in ref.per_class.items()}
    assert ap_at_iou(ref.precision, 0.3, names) is None  # not a COCOeval threshold
    assert (ap_label(0.5), ap_label(0.75), ap_label(0.625)) == ("AP50", "AP75", "AP62.5")
