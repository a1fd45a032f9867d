"""Sharded prediction over files (``Trainer.predict``): the Predictor's detections, one record per
image ordered by input index, bad files skipped and reported, and the same records from 1 and 2
processes (gloo)."""

from __future__ import annotations

import json

import cv2
import lightning as L
import numpy as np
import pytest
import torch

from yolov4.core.checkpoint import save_checkpoint
from yolov4.errors import InputError
from yolov4.inference import Predictor
from yolov4.models import build_model
from yolov4.training.predict import list_images, predict_files

NAMES = ["a", "b", "c"]
CONF = 0.05  # a random network: low scores, enough boxes to compare


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory, randomize):
    torch.manual_seed(3)
    model = randomize(build_model("yolov4-tiny", num_classes=3), seed=3)
    path = tmp_path_factory.mktemp("ckpt") / "best.pt"
    return save_checkpoint(path, model, NAMES, {"input_size": [64, 96]})


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """Seven images of mixed sizes and formats in a tree, and one corrupt file among them."""
    root = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(0)
    (root / "sub").mkdir()
    for i, (h, w) in enumerate([(70, 90), (120, 64), (64, 64), (97, 203), (50, 80), (80, 60)]):
        image = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        cv2.rectangle(image, (5, 5), (w // 2, h // 2), (255, 255, 0), -1)
        ext = ".png" if i % 2 else ".jpg"
        cv2.imwrite(str(root / ("sub" if i > 3 else ".") / f"im{i}{ext}"), image)
    (root / "im9_corrupt.jpg").write_bytes(b"\xff\xd8 not a jpeg")
    (root / "notes.txt").write_text("not an image")
    return root


def read(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_records_are_the_predictors_detections_and_bad_files_are_skipped(
    checkpoint, folder, tmp_path
):
    out = predict_files(checkpoint, folder, tmp_path, batch_size=3, conf=CONF,
                        trainer_kwargs={"accelerator": "cpu", "enable_progress_bar": False})  # fmt: skip
    assert out == tmp_path / "predictions.jsonl"
    records = read(out)
    files = [f for _, f in list_images(folder)]
    good = [f for f in files if "corrupt" not in f]
    assert [r["file"] for r in records] == good  # one per image, input order
    skipped = read(tmp_path / "skipped.jsonl")
    assert [s["file"] for s in skipped] == [str(folder / "im9_corrupt.jpg")]
    assert skipped[0]["index"] == files.index(skipped[0]["file"]) and skipped[0]["error"]
    assert not list(tmp_path.glob("predictions.rank*.jsonl"))  # parts merged and removed

    predictor = Predictor.from_checkpoint(checkpoint)
    assert sum(len(r["detections"]) for r in records) > 10  # a real comparison
    for record, file in zip(records, good):
        assert list(record)[:4] == ["source", "file", "frame", "timestamp_ms"]
        assert (record["source"], record["frame"], record["timestamp_ms"]) == (
            str(folder),
            None,
            None,
        )
        [dets] = predictor(file, conf=CONF)
        want = dets.to_dict()
        assert record["image"] == want["image"]
        got, exp = record["detections"], want["detections"]
        assert [d["class_name"] for d in got] == [d["class_name"] for d in exp]
        np.testing.assert_allclose([d["box"] for d in got], [d["box"] for d in exp], atol=0.02)
        np.testing.assert_allclose([d["score"] for d in got], [d["score"] for d in exp], atol=2e-5)


class CountBatches(L.Callback):
    def __init__(self) -> None:
        self.batches = 0

    def on_predict_batch_end(self, *args) -> None:
        self.batches += 1


def test_options_filter_the_records(checkpoint, folder, tmp_path):
    counter = CountBatches()  # the caller's callbacks run next to the writer
    kwargs = {"accelerator": "cpu", "enable_progress_bar": False, "callbacks": [counter]}
    files = [str(f) for f in sorted(folder.rglob("*.png"))]
    out = predict_files(checkpoint, files, tmp_path, kwargs, batch_size=2, conf=CONF,
                        classes=[1], max_det=2)  # fmt: skip
    assert counter.batches == 2
    records = read(out)
    assert [r["source"] for r in records] == [r["file"] for r in records] == files
    assert all(len(r["detections"]) <= 2 for r in records)
    assert {d["class_id"] for r in records for d in r["detections"]} == {1}


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"files": "missing/"}, "expected a folder of images or a list of files, got 'missing/'"),
        ({"files": []}, "expected at least one image file"),
        ({"classes": [7]}, "classes \\[7\\] out of range: the model has 3 classes"),
        ({"conf": 1.5}, "conf must be a number in \\[0, 1\\]"),
        ({"batch_size": 0}, "batch_size must be an integer >= 1, got 0"),
    ],
)
def test_bad_arguments_are_input_errors(checkpoint, folder, tmp_path, kwargs, message):
    args = {"files": folder, **kwargs}
    with pytest.raises(InputError, match=message):
        predict_files(checkpoint, args.pop("files"), tmp_path, **args)
    assert not (tmp_path / "predictions.jsonl").exists()


def test_a_folder_without_images_is_an_input_error(tmp_path):
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(InputError, match="holds no image"):
        list_images(tmp_path)


@pytest.mark.slow
def test_two_processes_write_the_same_records_as_one(checkpoint, folder, tmp_path):
    # batch 1: each image's forward pass is the same whichever rank runs it
    common = {"accelerator": "cpu", "enable_progress_bar": False}
    one = predict_files(checkpoint, folder, tmp_path / "one", {**common, "devices": 1},
                        batch_size=1, conf=CONF)  # fmt: skip
    two = predict_files(checkpoint, folder, tmp_path / "two",
                        {**common, "devices": 2, "strategy": "ddp_fork"}, batch_size=1, conf=CONF)  # fmt: skip
    assert len(read(one)) == 6
    assert two.read_text() == one.read_text()
    assert (tmp_path / "two/skipped.jsonl").read_text() == (
        tmp_path / "one/skipped.jsonl"
    ).read_text()
    assert not list((tmp_path / "two").glob("predictions.rank*.jsonl"))


class _CtrlCAt(L.Callback):
    """Ctrl-C as it lands: a KeyboardInterrupt as batch ``n`` starts."""

    def __init__(self, n: int) -> None:
        self.n = n

    def on_predict_batch_start(self, trainer, module, batch, batch_idx, *args) -> None:
        if batch_idx == self.n:
            raise KeyboardInterrupt


def test_ctrl_c_merges_the_batches_written_and_says_so(checkpoint, folder, tmp_path):
    """Ctrl-C exited 1 (Lightning's "Detected KeyboardInterrupt") leaving the ranks' part
    files and no predictions.jsonl: the finished batches are merged, and the caller is told."""
    import signal

    from yolov4.training.predict import PredictInterrupted

    def caller_handler(signum, frame):  # the caller's own handler, in place before the run
        raise KeyboardInterrupt

    before = signal.signal(signal.SIGINT, caller_handler)
    kwargs = {"accelerator": "cpu", "enable_progress_bar": False, "callbacks": [_CtrlCAt(2)]}
    try:
        with pytest.raises(PredictInterrupted) as stopped:
            predict_files(
                checkpoint, folder, tmp_path, batch_size=2, conf=CONF, trainer_kwargs=kwargs
            )
        after = signal.getsignal(signal.SIGINT)
    finally:
        signal.signal(signal.SIGINT, before)
    assert stopped.value.path == tmp_path / "predictions.jsonl"
    done = read(tmp_path / "predictions.jsonl") + read(tmp_path / "skipped.jsonl")
    assert len(done) == 4  # batches 0 and 1, two inputs each
    assert not list(tmp_path.glob("predictions.rank*.jsonl"))
    assert after is caller_handler  # Lightning left it ignored: the caller's is put back
