"""``python predict.py source=... checkpoint=... trainer=...``: image files through
``Trainer.predict`` (``yolov4.training.predict.predict_files``), composed and run as a user runs
it: the records equal ``predict_files``' own and the in-process predictor's, and what the sharded
mode does not offer fails before the model loads."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from tests.conftest import randomize_
from yolov4 import build_model, save_checkpoint
from yolov4.core.postprocess import SWITCHES
from yolov4.errors import ConfigError
from yolov4.training.predict import predict_files

NAMES = ["a", "b", "c"]
CONF = 0.05  # a random network: low scores, enough boxes to compare


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    torch.manual_seed(3)
    model = randomize_(build_model("yolov4-tiny", num_classes=3), seed=3)
    path = tmp_path_factory.mktemp("ckpt") / "best.pt"
    return save_checkpoint(path, model, NAMES, {"input_size": [64, 96]})


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    """Five images in a tree (mixed sizes and formats) and a corrupt one."""
    root = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(0)
    (root / "sub").mkdir()
    for i, (h, w) in enumerate([(70, 90), (120, 64), (64, 64), (97, 203), (50, 80)]):
        image = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        cv2.rectangle(image, (5, 5), (w // 2, h // 2), (255, 255, 0), -1)
        cv2.imwrite(str(root / ("sub" if i > 2 else ".") / f"im{i}{'.png' if i % 2 else '.jpg'}"), image)  # fmt: skip
    (root / "bad.jpg").write_bytes(b"\xff\xd8 not a jpeg")
    return root


@pytest.fixture
def run(predict_cli):
    """``run(overrides) -> (summary, output dir)``: predict.py run in-process."""
    return predict_cli


def read(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text().splitlines()]


def test_trainer_runs_predict_files_with_the_same_records(run, checkpoint, folder, tmp_path):
    summary, out = run(f"source={folder}", f"checkpoint={checkpoint}", "trainer=default",
                       f"conf={CONF}", "batch=2")  # fmt: skip
    files = sorted(str(p) for p in folder.rglob("*") if p.name != "bad.jpg")
    direct = predict_files(checkpoint, files, tmp_path / "direct", batch_size=2, conf=CONF,
                           trainer_kwargs={"enable_progress_bar": False},
                           sources=[str(folder)] * len(files))  # fmt: skip
    sharded = (out / "predictions.jsonl").read_text()
    assert sharded == direct.read_text()
    records = read(out / "predictions.jsonl")
    assert len(records) == summary["images"] == 5 and summary["skipped_count"] == 1
    assert sum(summary["detections"].values()) == sum(len(r["detections"]) for r in records) > 5
    assert [s["file"] for s in read(out / "skipped.jsonl")] == [str(folder / "bad.jpg")]
    assert json.loads((out / "summary.json").read_text())["images"] == 5
    # the same sources, files, order and detections as predict.py without trainer=
    summary_plain, plain = run(f"source={folder}", f"checkpoint={checkpoint}", f"conf={CONF}",
                               "save=false")  # fmt: skip
    assert summary["postprocess"]["conf"] == CONF
    assert summary["postprocess"] == summary_plain["postprocess"]  # the same settings, stated
    # the skipped file named once, as without trainer= (not "bad.jpg: bad.jpg: not an image")
    assert (
        summary["skipped"]
        == summary_plain["skipped"]
        == [
            f"{folder / 'bad.jpg'}: 13 bytes that are not an image in a supported format "
            "(JPEG, PNG, BMP, TIFF, WebP)"
        ]
    )
    assert read(out / "skipped.jsonl")[0]["error"] == summary["skipped"][0].split(": ", 1)[1]
    expected = read(plain / "predictions.jsonl")
    assert [(r["source"], r["file"]) for r in records] == [
        (r["source"], r["file"]) for r in expected
    ]
    for got, want in zip(records, expected):
        assert got["image"] == want["image"]
        assert [d["class_id"] for d in got["detections"]] == [
            d["class_id"] for d in want["detections"]
        ]
        for g, w in zip(got["detections"], want["detections"]):
            np.testing.assert_allclose(g["box"], w["box"], atol=0.02)
            assert g["score"] == pytest.approx(w["score"], abs=2e-5)


def test_a_list_keeps_each_entrys_source(run, checkpoint, folder):
    files = sorted(str(p) for p in folder.rglob("*.png"))
    _, out = run(f"source=[{','.join(files)}]", f"checkpoint={checkpoint}", "trainer=default")
    assert [(r["source"], r["file"]) for r in read(out / "predictions.jsonl")] == [
        (f, f) for f in files
    ]


@pytest.mark.parametrize(
    ("overrides", "named"),
    [
        (["track=bytetrack"], "track=bytetrack"),
        (["tile=true"], "tile=True"),
        (["save_txt=true"], "save_txt"),
        (["workers=-1"], "workers"),
        (["classes=[a]"], "class ids"),
    ],
)
def test_what_sharded_mode_does_not_offer_fails_first(run, folder, monkeypatch, overrides, named):
    import yolov4.training.predict as sharded

    monkeypatch.setattr(sharded, "load_checkpoint", lambda *a: pytest.fail("model loaded"))
    with pytest.raises(ConfigError, match=named):
        run(f"source={folder}", "checkpoint=best.pt", "trainer=default", *overrides)


def test_a_video_is_refused(run, tmp_path):
    path = tmp_path / "clip.mp4"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 10, (64, 48))
    for _ in range(3):
        writer.write(np.zeros((48, 64, 3), np.uint8))
    writer.release()
    with pytest.raises(ConfigError, match="VideoFile"):
        run(f"source={path}", "checkpoint=best.pt", "trainer=default")


def test_urls_are_refused_without_a_request(run, tmp_path):
    """An image URL was fetched (and a stream opened) before sharded mode refused it."""
    from tests.inference.mjpeg_server import file_server

    (tmp_path / "a.jpg").write_bytes(cv2.imencode(".jpg", np.zeros((8, 8, 3), np.uint8))[1])
    with file_server(tmp_path) as (url, requests):
        for source, kind in ((f"{url}/a.jpg", "an image URL"), (f"{url}/live.mjpg", "a stream")):
            with pytest.raises(ConfigError) as e:
                run(f"source=[{tmp_path / 'a.jpg'},{source}]", "checkpoint=best.pt",
                    "trainer=default")  # fmt: skip
            assert not requests, source  # refused unopened
            assert str(e.value).endswith(f"image files (a folder, glob or list); source '{source}' is {kind}")  # fmt: skip


def test_ctrl_c_writes_the_summary_of_what_was_done(run, checkpoint, folder, monkeypatch):
    """Ctrl-C exited 1 without summary.json: the summary counts the records merged so far and
    says the run was interrupted (predict.py then exits 130)."""
    import yolov4.training.predict as sharded_predict

    real = sharded_predict.predict_files

    def stopped(*args, **kwargs):
        path = real(*args, **kwargs)
        lines = path.read_text().splitlines()
        path.write_text("\n".join(lines[:2]) + "\n")  # two records when Ctrl-C came
        raise sharded_predict.PredictInterrupted(path)

    monkeypatch.setattr(sharded_predict, "predict_files", stopped)
    summary, out = run(f"source={folder}", f"checkpoint={checkpoint}", "trainer=default")
    assert summary["interrupted"] is True and summary["images"] == 2
    assert json.loads((out / "summary.json").read_text())["interrupted"] is True


def test_max_pixels_holds_for_the_sharded_mode_too(run, checkpoint, folder):
    """max_pixels= was the default 100 MP with trainer=, whatever was given."""
    summary, out = run(f"source={folder}", f"checkpoint={checkpoint}", "trainer=default",
                       "max_pixels=5000")  # fmt: skip
    assert summary["images"] == 2  # 64x64 and 50x80; 70x90, 120x64, 97x203 are over 5,000
    over = [s["error"] for s in read(out / "skipped.jsonl") if "bad.jpg" not in s["file"]]
    assert len(over) == 3 and all("over the limit of 5,000" in e for e in over)


@pytest.mark.parametrize("key", SWITCHES)
def test_every_postprocess_switch_is_refused_by_the_sharded_mode(run, folder, monkeypatch, key):
    """predict.py's postprocess switches (core.postprocess.SWITCHES, which predict.py reads)
    are each refused by trainer=, naming the key, before the model loads."""
    import yolov4.training.predict as sharded

    monkeypatch.setattr(sharded, "load_checkpoint", lambda *a: pytest.fail("model loaded"))
    with pytest.raises(ConfigError, match=f"{key}=False is not available"):
        run(f"source={folder}", "checkpoint=best.pt", "trainer=default", f"{key}=false")
