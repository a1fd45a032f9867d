"""evaluate.py says what it scored: the weights file, the backend and the precision, in its log
and in metrics.json (artifact: the model file, its runtime and precision; checkpoint and darknet
weights: the file and "pytorch"); the "wrote" line lists only the files it wrote; darknet
weights of other classes are refused rather than scored with re-initialised heads."""

from __future__ import annotations

import json
import logging

import pytest
import torch

from tests.cli.conftest import SYNTHETIC_NAMES
from yolov4 import build_model, save_checkpoint
from yolov4.cli.evaluate import evaluate
from yolov4.darknet import save_darknet_weights
from yolov4.errors import ConfigError
from yolov4.export.artifact import export_artifact

NAMES = SYNTHETIC_NAMES


def data(tiny_run):
    return [o for o in tiny_run if o.startswith("data.")]


def wrote_line(caplog) -> str:
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("wrote ")]
    assert len(lines) == 1
    return lines[0]


@pytest.mark.slow
def test_artifact_backend_precision_and_file(
    compose_cfg, seeded_checkpoint, tiny_run, tmp_path, caplog
):
    art = export_artifact(
        seeded_checkpoint[1], tmp_path / "export", formats=["onnx", "torchscript"]
    )
    run = tmp_path / "run"
    cfg = compose_cfg("evaluate", [f"artifact={art}", "backend=torchscript", *data(tiny_run)], run)
    with caplog.at_level(logging.INFO, logger="yolov4"):
        returned = evaluate(cfg)
    weights = {
        "file": str(art / "model.torchscript"),
        "backend": "torchscript",
        "precision": "fp32",
    }
    assert json.loads((run / "metrics.json").read_text())["weights"] == weights
    assert returned["weights"] == weights
    assert f"evaluating {art / 'model.torchscript'} in torchscript, fp32" in caplog.text
    wrote = wrote_line(caplog)
    for name in ("metrics.json", "detections.json", "pr_f1.json", "worst_images.json"):
        assert name in wrote.split(" in ")[0] and (run / name).is_file()


def test_checkpoint_is_pytorch_and_unwritten_files_are_not_listed(
    compose_cfg, seeded_checkpoint, tiny_run, tmp_path, caplog
):
    """analysis.worst_images=0: no gallery png is drawn, and the log does not claim it."""
    overrides = [f"checkpoint={seeded_checkpoint[1]}", "analysis.worst_images=0", *data(tiny_run)]
    overrides.append("analysis.plots=true")
    with caplog.at_level(logging.INFO, logger="yolov4"):
        evaluate(compose_cfg("evaluate", overrides, tmp_path))
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["weights"] == {
        "file": str(seeded_checkpoint[1]),
        "backend": "pytorch",
        "precision": "32-true",
    }
    assert not (tmp_path / "worst_images.png").exists()
    written, _, rest = wrote_line(caplog).partition(f" in {tmp_path}")
    assert "worst_images.png" not in written and "worst_images.json" in written
    assert "not written, no data for them: worst_images.png" in rest


def test_without_figures_every_json_report_is_written_and_no_png(
    compose_cfg, seeded_checkpoint, tiny_run, tmp_path, caplog
):
    """analysis.plots=false: the JSON reports as with figures, no .png, and the log says why
    rather than listing the figures as lacking data."""
    overrides = [f"checkpoint={seeded_checkpoint[1]}", "analysis.plots=false", *data(tiny_run)]
    with caplog.at_level(logging.INFO, logger="yolov4"):
        evaluate(compose_cfg("evaluate", overrides, tmp_path))
    assert not list(tmp_path.glob("*.png"))
    reports = ("metrics", "detections", "confusion_matrix", "pr_f1", "darknet_map", "errors")
    for name in (*reports, "worst_images"):
        assert json.loads((tmp_path / f"{name}.json").read_text())
    written, _, rest = wrote_line(caplog).partition(f" in {tmp_path}")
    assert ".png" not in written and "not written" not in rest
    assert rest == "; no figures (analysis.plots=false)"


def test_darknet_weights_of_other_classes_are_refused(compose_cfg, tiny_run, tmp_path):
    """A COCO (80-class) file on the 4-class synthetic set: module.pretrained= would fine-tune
    it (heads re-initialised), evaluate refuses it naming both class counts."""
    weights = save_darknet_weights(build_model("yolov4-tiny"), tmp_path / "coco.weights")
    cfg = compose_cfg(
        "evaluate", [f"darknet_weights={weights}", "model=yolov4-tiny", *data(tiny_run)], tmp_path
    )
    with pytest.raises(
        ConfigError, match=r"holds yolov4-tiny weights for 80 classes but data has 4"
    ):
        evaluate(cfg)


def test_a_checkpoint_of_other_class_names_is_scored_with_a_warning(
    compose_cfg, tiny_run, tmp_path, caplog
):
    """Same class count, other names (another dataset): scored index for index, and the log
    names the differing classes."""
    model = build_model("yolov4-tiny", num_classes=4)
    other = save_checkpoint(tmp_path / "pets.pt", model, ["dog", "cat", "cow", "pig"])
    cfg = compose_cfg("evaluate", [f"checkpoint={other}", *data(tiny_run)], tmp_path / "run")
    with caplog.at_level(logging.WARNING, logger="yolov4"):
        evaluate(cfg)
    assert "class names differ from the data's" in caplog.text
    assert "0: 'dog' vs 'circle'" in caplog.text


def test_an_unreadable_val_image_is_not_scored_by_either_path(
    compose_cfg, seeded_checkpoint, seeded_artifact, tmp_path
):
    """The log said "skipped" while the checkpoint path scored a blank image (its boxes
    missed), and the artifact path stopped on it: both leave it out, as a missing file."""
    import shutil

    from yolov4.data.synthetic import generate_split

    split = generate_split(tmp_path / "gen", "val", 6, 96, 0)
    root = tmp_path / "val"
    shutil.copytree(split, root)
    broken = sorted((root / "images").iterdir())[2]
    broken.write_bytes(b"not a jpeg at all")
    coco = [
        "data=coco",
        f"data.val.annotations={root / 'annotations.json'}",
        f"data.val.images={root / 'images'}",
        "data.num_workers=0",
    ]
    art = seeded_artifact
    by_ckpt = evaluate(
        compose_cfg("evaluate", [f"checkpoint={seeded_checkpoint[1]}", *coco], tmp_path / "a")
    )
    by_art = evaluate(compose_cfg("evaluate", [f"artifact={art}", *coco], tmp_path / "b"))
    ids = {
        run: sorted(
            {d["image_id"] for d in json.loads((tmp_path / run / "detections.json").read_text())}
        )
        for run in ("a", "b")
    }
    assert by_ckpt["num_images"] == by_art["num_images"] == 5
    assert ids["a"] == ids["b"] and len(ids["a"]) > 0
    assert by_ckpt["mAP50"] == pytest.approx(by_art["mAP50"], abs=0.02)


@pytest.mark.parametrize("batch", [0, -1, "x"])
def test_a_batch_size_below_one_is_refused(
    compose_cfg, seeded_checkpoint, tiny_run, tmp_path, batch
):
    """batch_size=-1 scored nothing and wrote an all-zero metrics.json (artifact path)."""
    cfg = compose_cfg("evaluate", [f"checkpoint={seeded_checkpoint[1]}", f"batch_size={batch}",
                                   *data(tiny_run)], tmp_path)  # fmt: skip
    with pytest.raises(ConfigError, match=r"batch_size must be an integer >= 1"):
        evaluate(cfg)


def test_another_input_size_for_a_checkpoint_is_named_as_not_used(
    compose_cfg, seeded_checkpoint, tiny_run, tmp_path, caplog, monkeypatch
):
    """Named when the command gives it; a data group's default (data=yolo's 416) is not."""
    import yolov4.cli.evaluate as cli

    overrides = [f"checkpoint={seeded_checkpoint[1]}", *data(tiny_run), "data.input_size=[128,128]"]
    for given, warned in (([], False), (["data.input_size=[128,128]"], True)):
        monkeypatch.setattr(cli, "run_overrides", lambda given=given: given)
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="yolov4"):
            evaluate(compose_cfg("evaluate", overrides, tmp_path / str(warned)))
        assert ("data.input_size=[128, 128]: not used;" in caplog.text) == warned
    assert "scored with its own preprocessing (input 64x64, letterbox)" in caplog.text


def test_the_same_classes_in_another_order_are_scored_by_name(
    compose_cfg, seeded_checkpoint, tiny_run, tmp_path, caplog
):
    """A checkpoint whose classes are the data's in another order (a dataset re-exported with
    other category ids): scored by name, the same numbers as the model in the data's order
    (index for index it scored the wrong classes)."""
    model, original = seeded_checkpoint
    order = [2, 0, 3, 1]  # the permuted model's class k is the original's class order[k]
    permuted = build_model("yolov4-tiny", num_classes=4)
    permuted.load_state_dict(model.state_dict())
    c = 4 + 5
    with torch.no_grad():
        for i in permuted.head_layers:
            conv = permuted.layers[i].conv  # the head's prediction convolution
            rows = [
                a * c + (r if r < 5 else 5 + order[r - 5])
                for a in range(conv.out_channels // c)
                for r in range(c)
            ]
            conv.weight.copy_(conv.weight[rows])
            conv.bias.copy_(conv.bias[rows])
    names = [NAMES[k] for k in order]
    path = save_checkpoint(tmp_path / "p.pt", permuted, names, {"input_size": [64, 64]})
    by_order = evaluate(compose_cfg("evaluate", [f"checkpoint={original}", *data(tiny_run)],
                                    tmp_path / "a"))  # fmt: skip
    with caplog.at_level(logging.INFO, logger="yolov4"):
        by_name = evaluate(compose_cfg("evaluate", [f"checkpoint={path}", *data(tiny_run)],
                                       tmp_path / "b"))  # fmt: skip
    assert "classes are the data's in another order: scored by name" in caplog.text
    assert by_order["mAP50"] > 0
    assert by_name["mAP50"] == pytest.approx(by_order["mAP50"], abs=1e-6)
    for name, ap in by_order["per_class"].items():
        assert by_name["per_class"][name] == pytest.approx(ap, abs=1e-6), name
    art = export_artifact(path, tmp_path / "export", formats=["onnx"])
    by_artifact = evaluate(compose_cfg("evaluate", [f"artifact={art}", *data(tiny_run)],
                                       tmp_path / "c"))  # fmt: skip
    assert by_artifact["mAP50"] == pytest.approx(by_order["mAP50"], abs=0.01)


def test_an_artifact_is_scored_at_its_own_size_whatever_data_asks(
    compose_cfg, seeded_artifact, tiny_run, tmp_path, caplog, monkeypatch
):
    """The run's recorded data holds its resolved preprocess.input_size: another
    data.input_size stopped evaluate.py artifact= with "data.input_size=[96, 96] contradicts
    data.preprocess.input_size=[64, 64]; set data.input_size", which it was. As for a
    checkpoint: a warning, and the artifact's own preprocessing."""
    art = seeded_artifact
    overrides = [
        f"artifact={art}", *data(tiny_run), "data.preprocess.input_size=[64,64]",
        "data.input_size=[96,96]",
    ]  # fmt: skip
    import yolov4.cli.evaluate as evaluate_cli

    monkeypatch.setattr(evaluate_cli, "run_overrides", lambda: overrides)  # the command line
    with caplog.at_level(logging.INFO, logger="yolov4"):
        evaluate(compose_cfg("evaluate", overrides, tmp_path / "run"))
    assert f"data.input_size=[96, 96]: not used; {art} is scored with its own preprocessing " \
        "(input 64x64, letterbox)" in caplog.text  # fmt: skip
    assert (tmp_path / "run" / "metrics.json").is_file()


def test_data_keys_go_over_the_recorded_data_without_a_plus():
    """evaluate.py / export.py checkpoint=... data.input_size=... failed with Hydra's "Key
    'data' is not in struct" (the data group defaults to null: +data.input_size was needed)."""
    from yolov4.cli.data_config import data_argv

    argv = [
        "evaluate.py",
        "checkpoint=a.pt",
        "data.val.images=x",
        "+data.num_val=3",
        "batch_size=2",
    ]
    assert data_argv(argv) == [
        "evaluate.py", "checkpoint=a.pt", "+data.val.images=x", "+data.num_val=3", "batch_size=2"
    ]  # fmt: skip
    chosen = ["evaluate.py", "data=coco", "data.val.images=x"]
    assert data_argv(chosen) == chosen  # the group is there: its keys override as they are
