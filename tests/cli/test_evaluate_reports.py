"""The reports beside metrics.json (darknet_map.json, errors.json/.png, worst_images.json/.png)
for every data option and model source, end to end: data=coco with a checkpoint, data=yolo with
an export artifact, the synthetic set with darknet weights, and train.py with TensorBoard (the
worst images logged at validation end)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from tests.cli.test_compose_data import (  # noqa: F401 (fixtures)
    NAMES,
    compose_cfg,
    data_overrides,
    files,
)
from tests.conftest import module_of, small_synthetic
from yolov4 import build_model
from yolov4.cli.evaluate import evaluate
from yolov4.cli.train import train
from yolov4.darknet import save_darknet_weights
from yolov4.evaluation.tide import ERROR_TYPES

PNG = b"\x89PNG\r\n\x1a\n"


def check_reports(run: Path, category_ids: list[int] | None, figures: bool = False) -> None:
    """The report files exist and agree with metrics.json, detections.json (evaluate.py's, with
    ``category_ids`` the ids it may hold) and each other; their figures are drawn (``figures``,
    ``analysis.plots=true``) or absent."""
    metrics = json.loads((run / "metrics.json").read_text())
    cm = json.loads((run / "confusion_matrix.json").read_text())

    darknet = json.loads((run / "darknet_map.json").read_text())
    assert list(darknet["per_class"]) == NAMES
    assert darknet["coco_mAP50"] == metrics["mAP50"]
    num_gt = sum(c["TP"] + c["FN"] for c in cm["per_class"].values())
    assert darknet["all"]["num_gt"] == num_gt > 0
    if category_ids is not None:
        detections = json.loads((run / "detections.json").read_text())
        assert detections and {d["category_id"] for d in detections} <= set(category_ids)
        assert darknet["all"]["num_detections"] == len(detections)
    for name, v in darknet["per_class"].items():
        assert v["coco_AP50"] == metrics["per_class"][name]["AP50"]
        assert 0 <= v["AP50"] <= 1 and v["TP"] + v["FN"] == v["num_gt"]

    errors = json.loads((run / "errors.json").read_text())
    assert errors["AP50"] == pytest.approx(metrics["mAP50"], abs=1e-9)  # COCOeval's, before fixes
    assert errors["AP50_all_fixed"] == pytest.approx(1.0)
    assert set(errors["dAP50"]) == set(ERROR_TYPES) and sum(errors["counts"].values()) > 0

    worst = json.loads((run / "worst_images.json").read_text())
    assert (worst["conf"], worst["iou"]) == (cm["conf"], cm["iou"])
    images = worst["images"]
    assert images and [w["errors"] for w in images] == sorted(
        (w["errors"] for w in images), reverse=True
    )
    for w in images:
        assert Path(w["file_name"]).is_file() and w["errors"] == w["FP"] + w["FN"] > 0
    # fewer val images than analysis.worst_images: every image with an error is listed
    assert sum(w["FP"] for w in images) == cm["all"]["FP"]
    assert sum(w["FN"] for w in images) == cm["all"]["FN"]
    for png in ("errors.png", "worst_images.png", "confusion_matrix.png", "pr_f1.png"):
        assert (run / png).read_bytes()[:8] == PNG if figures else not (run / png).exists()


def test_data_coco_with_a_checkpoint(files, compose_cfg, seeded_checkpoint, tmp_path):  # noqa: F811
    overrides = [
        f"checkpoint={seeded_checkpoint[1]}",
        "batch_size=4",
        *data_overrides("coco", files, ("val",)),
        "data.num_workers=0",
        "analysis.plots=true",
    ]
    evaluate(compose_cfg("evaluate", overrides, tmp_path))
    check_reports(tmp_path, [1, 3, 5, 7], figures=True)  # the generated COCO json's gapped ids
    assert json.loads((tmp_path / "darknet_map.json").read_text())["points"] == 0  # darknet's
    worst = json.loads((tmp_path / "worst_images.json").read_text())["images"]
    assert {Path(w["file_name"]).parent for w in worst} == {files["val"] / "images"}


def test_data_yolo_with_an_artifact(files, compose_cfg, seeded_artifact, tmp_path):  # noqa: F811
    art = seeded_artifact
    overrides = [
        f"artifact={art}",
        "batch_size=4",
        *data_overrides("yolo", files, ("val",)),
        "data.num_workers=0",
    ]
    evaluate(compose_cfg("evaluate", overrides, tmp_path / "run"))
    check_reports(tmp_path / "run", [0, 1, 2, 3])  # YOLO: the class index is the id


def test_darknet_weights(compose_cfg, seeded_checkpoint, tiny_run, tmp_path):  # noqa: F811
    weights = save_darknet_weights(seeded_checkpoint[0], tmp_path / "m.weights")
    data = [o for o in tiny_run if o.startswith("data.")]
    overrides = [
        f"darknet_weights={weights}",
        "model=yolov4-tiny",
        "darknet_resize_mode=letterbox",
        "analysis.darknet_points=101",
        *data,
    ]
    evaluate(compose_cfg("evaluate", overrides, tmp_path / "run"))
    check_reports(tmp_path / "run", [1, 3, 5, 7])
    assert json.loads((tmp_path / "run" / "darknet_map.json").read_text())["points"] == 101


def test_validation_logs_the_worst_images_to_tensorboard(tmp_path, synthetic_cache, randomize):
    """ValidationImages at validation end: val/worst_images in the event file (read back) is
    the gallery of the module's gathered detections, drawn on the val images as validation
    reads them."""
    import io

    import numpy as np
    from lightning.pytorch.loggers import TensorBoardLogger
    from PIL import Image
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from tests.training.test_module import validation_run
    from yolov4.data.datamodule import SyntheticDataModule
    from yolov4.evaluation.analysis import analyze_detections
    from yolov4.evaluation.worst import val_image_files, worst_gallery, worst_images
    from yolov4.training.callbacks import ValidationImages

    tb = TensorBoardLogger(tmp_path / "tb", name="", version="")
    callback = ValidationImages(max_images=2, worst_images=3)
    module, _ = validation_run(tmp_path, synthetic_cache, randomize, [callback], tb)
    tb.experiment.flush()
    events = EventAccumulator(str(tmp_path / "tb")).Reload()
    logged = events.Images("val/worst_images")[-1].encoded_image_string
    # the same validation set, rebuilt: its gallery, drawn here
    dm = SyntheticDataModule(
        num_train=2, num_val=4, image_size=96, cache_dir=str(synthetic_cache), input_size=[64, 64]
    )
    result = module.evaluation
    a = analyze_detections(dm.val_coco, result.results, result.image_ids, conf=0.25)
    worst = worst_images(a, dm.val_coco, val_image_files(dm), top=3)
    assert len(worst) == 3
    grid = worst_gallery(worst, dm.val_coco, result.results, a.names, 0.25, read_image=dm.val_image)
    np.testing.assert_array_equal(
        np.asarray(Image.open(io.BytesIO(logged)).convert("RGB")), grid.permute(1, 2, 0).numpy()
    )


@pytest.mark.slow
def test_train_writes_the_reports_and_logs_the_worst_images(compose_cfg, tiny_run, tmp_path):  # noqa: F811
    """train.py with logger=tensorboard: the reports of the final validation in the run
    directory, and the same worst images in TensorBoard (val/worst_images, read back)."""
    import io

    import numpy as np
    from PIL import Image
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    overrides = [o for o in tiny_run if not o.startswith(("logger=", "export."))]
    overrides += ["logger=tensorboard", "export=null", "analysis.plots=true"]
    train(compose_cfg("train", overrides, tmp_path))
    check_reports(tmp_path, None, figures=True)  # train.py writes no detections.json
    events = EventAccumulator(str(tmp_path / "tensorboard")).Reload()
    assert "val/worst_images" in events.Tags()["images"]
    logged = Image.open(io.BytesIO(events.Images("val/worst_images")[-1].encoded_image_string))
    drawn = Image.open(tmp_path / "worst_images.png")  # 16 images at most, 6 here: the same
    np.testing.assert_array_equal(np.asarray(logged.convert("RGB")), np.asarray(drawn))


@pytest.mark.slow
def test_two_processes_log_the_same_worst_images_as_one(tmp_path, synthetic_cache, randomize):
    """Under DDP (2 CPU processes, gloo; 7 val images, the sampler pads one) the worst images
    come from the gathered, deduplicated detections on rank 0: TensorBoard gets the very image
    one process logs."""
    import io

    import lightning as L
    import numpy as np
    from lightning.pytorch.loggers import TensorBoardLogger
    from PIL import Image
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from yolov4.training.callbacks import ValidationImages

    dm = small_synthetic(synthetic_cache)
    torch.manual_seed(0)
    net = randomize(build_model("yolov4-tiny", num_classes=4))
    module = module_of(net, dm)

    def logged(devices: int) -> np.ndarray:
        log_dir = tmp_path / f"tb{devices}"
        trainer = L.Trainer(
            accelerator="cpu",
            devices=devices,
            strategy="ddp_fork" if devices > 1 else "auto",
            logger=TensorBoardLogger(log_dir, name="", version=""),
            callbacks=[ValidationImages(max_images=2, worst_images=7)],
            enable_progress_bar=False,
            enable_checkpointing=False,
            enable_model_summary=False,
        )
        trainer.validate(module, datamodule=dm, verbose=False)
        events = EventAccumulator(str(log_dir)).Reload()
        image = events.Images("val/worst_images")[-1].encoded_image_string
        return np.asarray(Image.open(io.BytesIO(image)).convert("RGB"))

    one, two = logged(1), logged(2)
    assert one.shape[1] > 2 * 64 and two.shape == one.shape  # the same images, several
    # the same boxes on the same pixels; the resized images may differ by one grey level (the
    # per-process thread count changes float rounding in the resize)
    diff = np.abs(two.astype(int) - one.astype(int))
    assert diff.max() <= 1 and (diff > 0).mean() < 1e-3


@pytest.mark.parametrize(
    "override, match",
    [
        ("analysis.darknet_points=7", r"analysis.darknet_points must be one of 0, 11, 101, got 7"),
        ("analysis.errors_tb=0.5", r"analysis.errors_tb must be a number in \[0, analysis.iou"),
        ("analysis.worst_images=-1", r"analysis.worst_images must be an integer >= 0, got -1"),
        ("analysis.conf=1.5", r"analysis.conf must be a number in \[0, 1\], got 1.5"),
        ("analysis.plots=maybe", r"analysis.plots must be true or false, got 'maybe'"),
    ],
)
def test_bad_analysis_values_fail_at_start_naming_the_key(
    compose_cfg,  # noqa: F811
    tiny_run,
    tmp_path,
    override,
    match,
):
    from yolov4 import ConfigError

    with pytest.raises(ConfigError, match=match):
        train(compose_cfg("train", [*tiny_run, override], tmp_path))
    assert not (tmp_path / "checkpoints").exists()  # before any training
    with pytest.raises(ConfigError, match=match):
        evaluate(compose_cfg("evaluate", ["checkpoint=never-read.pt", override], tmp_path / "e"))
