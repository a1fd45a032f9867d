"""``python predict.py`` end to end on generated files, as a user runs it: the composed config,
the Predictor's exact detections, the outputs (annotated images and videos, predictions.jsonl,
YOLO labels read back by ``data=yolo``'s loader, crops, summary), errors before the model loads,
darknet's files against OpenCV (and an export made from them), a live stream."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from tests.conftest import randomize_
from tests.inference.mjpeg_server import MjpegServer
from tests.inference.predict_cases import (
    as_rows,
    assert_same_detections,
    calibrate_heads_,
    darknet_model,
    opencv_detections,
)
from yolov4 import build_model, save_checkpoint
from yolov4.core.postprocess import SERVING
from yolov4.darknet import save_darknet_weights
from yolov4.data.problems import ProblemReport
from yolov4.data.yolo_txt import load_yolo
from yolov4.errors import ConfigError, InputError
from yolov4.inference import Predictor
from yolov4.inference.darknet import COCO_NAMES
from yolov4.models.cfg import CFG_DIR

ROOT = Path(__file__).resolve().parents[2]
NAMES = ["cat", "dog", "fish"]
SIZE = 96
CONF = 0.5
RNG = np.random.default_rng(0)


def _image(h: int, w: int) -> np.ndarray:
    """Smooth random shapes (a random network scores them more diversely than noise)."""
    return cv2.resize(RNG.integers(0, 255, (h // 8, w // 8, 3), dtype=np.uint8), (w, h))


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    """yolov4-tiny, 3 classes at 96x96, random weights calibrated to find a few boxes."""
    torch.manual_seed(0)
    model = randomize_(build_model("yolov4-tiny", num_classes=3, input_size=[SIZE, SIZE]))
    calibrate_heads_(model, _image(120, 160), mode="letterbox", mean=-2.0)
    path = tmp_path_factory.mktemp("ckpt") / "best.pt"
    return save_checkpoint(path, model, NAMES, {"input_size": [SIZE, SIZE]})


@pytest.fixture
def run(predict_cli):
    """``run(overrides) -> (summary, output dir)``: predict.py run in-process."""
    return predict_cli


def records(out: Path) -> list[dict]:
    return [json.loads(x) for x in (out / "predictions.jsonl").read_text().splitlines()]


def write_video(path: Path, n: int, fps: float, size: tuple[int, int]) -> None:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, size)
    for _ in range(n):
        writer.write(_image(size[1], size[0]))
    writer.release()


def test_an_image_gives_exactly_the_predictors_detections(run, checkpoint, tmp_path):
    path = tmp_path / "photo.jpg"
    cv2.imwrite(str(path), _image(120, 160))
    summary, out = run(f"source={path}", f"checkpoint={checkpoint}", f"conf={CONF}")
    [record] = records(out)
    [dets] = Predictor.from_checkpoint(checkpoint)(str(path), conf=CONF)
    expected = {"source": str(path), "file": str(path), "frame": None, "timestamp_ms": None}
    assert record == {**expected, **dets.to_dict()} and len(dets) > 0
    assert list(record) == ["source", "file", "frame", "timestamp_ms", "detections", "image"]
    annotated = cv2.imread(str(out / "photo.jpg"))
    assert annotated.shape == (120, 160, 3)
    assert summary["images"] == 1 and sum(summary["detections"].values()) == len(dets)
    saved = json.loads((out / "summary.json").read_text())
    assert saved["images"] == 1
    # the thresholds the run used: conf= given, the others the Predictor's serving defaults
    assert saved["postprocess"] == {**SERVING.replace(conf=CONF).to_dict(), "classes": None}


def test_a_folder_tree_with_a_corrupt_image_is_skipped_and_reported(run, checkpoint, tmp_path):
    src = tmp_path / "photos"
    for rel in ("a.jpg", "b.png", "sub/c.bmp", "sub/deep/d.webp"):
        (src / rel).parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(src / rel), _image(64 + 8 * len(rel), 100))
    (src / "sub" / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    summary, out = run(f"source={src}", f"checkpoint={checkpoint}", "batch=3")
    assert summary["images"] == 4 and summary["skipped_count"] == len(summary["skipped"]) == 1
    assert summary["postprocess"]["conf"] == SERVING.conf  # no conf= given
    assert "bad.png" in summary["skipped"][0]
    assert sorted(Path(r["file"]).name for r in records(out)) == [
        "a.jpg",
        "b.png",
        "c.bmp",
        "d.webp",
    ]
    for rel in ("a.jpg", "b.png", "sub/c.bmp", "sub/deep/d.webp"):  # the tree is kept
        assert (out / rel).is_file()


def test_a_run_that_reads_nothing_is_an_error_naming_the_skipped_list(run, checkpoint, tmp_path):
    """A broken image named on its own (or a folder of broken files) printed "0 images" and
    exited 0; a folder with a broken file among good ones still runs (above)."""
    (tmp_path / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 cut short")
    (tmp_path / "photos").mkdir()
    (tmp_path / "photos" / "a.png").write_bytes(b"not an image")
    (tmp_path / "photos" / "b.jpg").write_bytes(b"")
    for source, n in ((tmp_path / "broken.jpg", "the 1 input was"), (tmp_path / "photos", "all 2 inputs were")):  # fmt: skip
        with pytest.raises(InputError, match=rf"^nothing could be read: {n} skipped \(") as e:
            run(f"source={source}", f"checkpoint={checkpoint}")
        out = Path(str(e.value).rsplit(" is in ", 1)[1])
        saved = json.loads(out.read_text())  # summary.json: the list the message points to
        assert out.name == "summary.json" and saved["images"] == 0
        assert saved["skipped_count"] == len(saved["skipped"]) == int(n.split()[1])


def test_an_image_url_that_cannot_be_fetched_fails_before_the_model_loads(run, tmp_path, monkeypatch):  # fmt: skip
    """A 404 (or refused) image URL loaded the model, skipped the image and exited 0."""
    import yolov4.cli.predict as cli
    from tests.inference.mjpeg_server import file_server

    def never(*a, **k):
        raise AssertionError("the model was loaded")

    monkeypatch.setattr(cli, "load_predictor", never)
    with file_server(tmp_path) as (url, requests):
        with pytest.raises(InputError, match=r"cannot fetch the image \(HTTP 404 "):
            run(f"source={url}/gone.jpg", f"checkpoint={tmp_path / 'absent.pt'}")
    assert requests == {"/gone.jpg": 1}


def test_a_video_keeps_frame_count_fps_and_size(run, checkpoint, tmp_path):
    video = tmp_path / "clip.mp4"
    write_video(video, n=12, fps=15.0, size=(128, 72))
    summary, out = run(f"source={video}", f"checkpoint={checkpoint}", "batch=4", f"conf={CONF}")
    recs = records(out)
    assert [r["frame"] for r in recs] == list(range(12)) and summary["frames"] == 12
    assert [r["timestamp_ms"] for r in recs] == pytest.approx(
        [1000 * k / 15 for k in range(12)], abs=1e-3
    )
    assert all(r["image"] == {"width": 128, "height": 72} for r in recs)
    cap = cv2.VideoCapture(str(out / "clip.mp4"))
    got = (cap.get(cv2.CAP_PROP_FRAME_COUNT), cap.get(cv2.CAP_PROP_FPS))
    size = (cap.get(cv2.CAP_PROP_FRAME_WIDTH), cap.get(cv2.CAP_PROP_FRAME_HEIGHT))
    cap.release()
    assert got == (12, pytest.approx(15.0)) and size == (128, 72)


def test_txt_labels_load_back_through_the_yolo_loader(run, checkpoint, tmp_path):
    images = tmp_path / "data" / "images"
    for name, (h, w) in {"a.jpg": (120, 160), "b.png": (90, 70), "c.jpg": (64, 200)}.items():
        images.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(images / name), _image(h, w))
    _, out = run(f"source={images}", f"checkpoint={checkpoint}", "save_txt=true",
                 "save_crops=true", f"conf={CONF}")  # fmt: skip
    names = tmp_path / "classes.names"
    names.write_text("\n".join(NAMES) + "\n")
    data = load_yolo(images, str(names), labels=out / "labels", report=ProblemReport(strict=True))
    by_file = {Path(r["file"]).name: r for r in records(out)}
    total = 0
    for rec in data.records:
        pred = by_file[Path(rec.file).name]["detections"]
        assert rec.labels.tolist() == [d["class_id"] for d in pred]
        np.testing.assert_allclose(rec.boxes, [d["box"] for d in pred], atol=0.02)
        total += len(pred)
    assert total > 0
    crops = sorted((out / "crops").rglob("*.jpg"))
    assert len(crops) == total and {c.parent.name for c in crops} <= set(NAMES)


def test_max_pixels_sets_the_image_size_limit(run, checkpoint, tmp_path):
    """An image over 100 MP could not be predicted at all (the guard had no option): a smaller
    limit skips and reports, null lifts it."""
    src = tmp_path / "photos"
    src.mkdir()
    cv2.imwrite(str(src / "big.png"), _image(80, 100))  # 8,000 pixels
    cv2.imwrite(str(src / "small.png"), _image(40, 50))
    summary, _ = run(f"source={src}", f"checkpoint={checkpoint}", "max_pixels=5000")
    assert summary["images"] == 1 and "big.png" in summary["skipped"][0]
    assert "over the limit of 5,000" in summary["skipped"][0]
    summary, _ = run(f"source={src}", f"checkpoint={checkpoint}", "max_pixels=null")
    assert summary["images"] == 2 and not summary["skipped"]
    with pytest.raises(ConfigError, match=r"max_pixels must be an integer >= 1 or null"):
        run(f"source={src}", f"checkpoint={checkpoint}", "max_pixels=0")


def test_bad_sources_and_options_fail_before_the_model_loads(run, tmp_path, monkeypatch):
    import yolov4.cli.predict as cli

    def never(*a, **k):
        raise AssertionError("the model was loaded")

    monkeypatch.setattr(cli, "load_predictor", never)
    ckpt = f"checkpoint={tmp_path / 'absent.pt'}"
    with pytest.raises(InputError, match="no such file or folder"):  # iou=0 is the Predictor's
        run(f"source={tmp_path / 'nothere.jpg'}", ckpt, "iou=0")
    with pytest.raises(ConfigError, match=r"iou must be a number in \[0, 1\]"):
        run(f"source={tmp_path}", ckpt, "iou=1.5")
    with pytest.raises(InputError, match="glob matches no image"):
        run(f"source={tmp_path}/*.jpg", ckpt)
    (tmp_path / "v.mp4").write_bytes(b"not a video")
    with pytest.raises(InputError, match="cannot read the video"):
        run(f"source={tmp_path / 'v.mp4'}", ckpt)
    with pytest.raises(InputError, match="cannot be opened"):
        run("source=http://127.0.0.1:9/cam.mjpg", ckpt)
    with pytest.raises(ConfigError, match="give exactly one of checkpoint="):
        run(f"source={tmp_path}")
    with pytest.raises(ConfigError, match="conf must be a number in"):
        run(f"source={tmp_path}", ckpt, "conf=2")
    with pytest.raises(ConfigError, match=r"^conf must be a number in \[0, 1\] or null, got NaN$"):
        run(f"source={tmp_path}", ckpt, "conf=nan")
    with pytest.raises(ConfigError, match="batch must be an integer >= 1"):
        run(f"source={tmp_path}", ckpt, "batch=0")
    with pytest.raises(ConfigError, match="classes must be class ids or names, e.g. "):
        run(f"source={tmp_path}", ckpt, "classes=true")
    with pytest.raises(ConfigError, match=r"classes=\[\] would keep no class; leave classes out"):
        run(f"source={tmp_path}", ckpt, "classes=[]")
    with pytest.raises(ConfigError, match=r"classes=\[\] would keep no class"):
        run(f"source={tmp_path}", ckpt, "classes=[]", "trainer=default")  # sharded mode too
    with pytest.raises(ConfigError, match="multi_label must be true, false or null, got 'maybe'"):
        run(f"source={tmp_path}", ckpt, "multi_label=maybe")
    with pytest.raises(ConfigError, match="agnostic_nms must be true, false or null, got 'no'"):
        run(f"source={tmp_path}", ckpt, "agnostic_nms='no'")
    with pytest.raises(ConfigError, match="agnostic_nms=True is not available with it"):
        run(f"source={tmp_path}", ckpt, "agnostic_nms=true", "trainer=default")  # sharded mode
    assert not list(tmp_path.glob("out*/predictions.jsonl"))  # nothing written


@pytest.mark.parametrize(
    ("given", "kept"), [("2", [2]), ("circle", ["circle"]), ("[0,b]", [0, "b"])]
)
def test_one_class_is_a_list_of_one(given, kept):
    from hydra import compose, initialize_config_module

    from yolov4.cli.predict import check_options

    with initialize_config_module(config_module="yolov4.configs", version_base="1.3"):
        cfg = compose("predict", overrides=["source=x", f"classes={given}"])
    check_options(cfg)
    assert list(cfg.classes) == kept


def test_darknet_weights_of_a_zoo_cfg_give_opencvs_detections(run, tmp_path):
    """predict.py darknet_weights= model=yolov3-tiny (COCO names shipped) == OpenCV DNN."""
    image = _image(240, 320)
    path = tmp_path / "street.png"
    cv2.imwrite(str(path), image[..., ::-1])
    weights = save_darknet_weights(darknet_model("yolov3-tiny", image), tmp_path / "y.weights")
    _, out = run(f"source={path}", f"darknet_weights={weights}", "model=yolov3-tiny", "conf=0.95")
    [record] = records(out)
    ref = opencv_detections(CFG_DIR / "yolov3-tiny.cfg", weights, image, (416, 416), 0.95)
    assert_same_detections(as_rows(record["detections"]), ref)
    assert {d["class_name"] for d in record["detections"]} <= set(COCO_NAMES)
    with pytest.raises(ConfigError, match="darknet_weights= needs its network"):
        run(f"source={path}", f"darknet_weights={weights}")


@pytest.mark.slow
def test_an_export_of_darknet_weights_gives_opencvs_detections(run, tmp_path):
    """export.py darknet_weights= model=... names=... -> an artifact; predict.py artifact= on it
    == OpenCV DNN on the same cfg and weights."""
    from hydra import compose, initialize_config_module

    from yolov4.cli.export import export

    image = _image(240, 320)
    path = tmp_path / "street.png"
    cv2.imwrite(str(path), image[..., ::-1])
    model = darknet_model("yolov4-tiny", image, mean=-3.0, num_classes=2)
    weights = save_darknet_weights(model, tmp_path / "t.weights")
    names = tmp_path / "data.yaml"
    names.write_text("names:\n  0: car\n  1: bike\n")
    with initialize_config_module(config_module="yolov4.configs", version_base="1.3"):
        cfg = compose("export", overrides=[f"darknet_weights={weights}", "model=yolov4-tiny",
                                            f"names={names}", f"output={tmp_path / 'art'}",
                                            "formats=[onnx]"])  # fmt: skip
    art = export(cfg)
    meta = json.loads((art / "metadata.json").read_text())
    assert meta["class_names"] == ["car", "bike"] and meta["preprocess"]["mode"] == "stretch"
    _, out = run(f"source={path}", f"artifact={art}", "conf=0.8")
    [record] = records(out)
    cfg_file = tmp_path / "t.cfg"
    cfg_file.write_text((CFG_DIR / "yolov4-tiny.cfg").read_text().replace("classes=80", "classes=2")
                        .replace("filters=255", "filters=21"))  # fmt: skip
    ref = opencv_detections(cfg_file, weights, image, (416, 416), 0.8)
    # onnxruntime's float32 differs from PyTorch's by up to ~5e-5 (the export's parity check)
    assert_same_detections(as_rows(record["detections"]), ref, box_atol=0.1, score_atol=1e-4)


def test_a_stream_runs_through_reconnects_into_a_playable_video(run, checkpoint):
    server = MjpegServer(per_connection=12, fps=40, size=(64, 96)).start()
    try:
        summary, out = run(f"source={server.url}", f"checkpoint={checkpoint}",
                           "reconnect_timeout=1.5", "stream_buffer=true")  # fmt: skip
    finally:
        server.stop()
    recs = records(out)
    assert summary["reconnects"] >= 1 and summary["frames"] == len(recs) >= 20
    assert [r["frame"] for r in recs] == list(range(len(recs)))
    [video] = out.glob("*.mp4")
    cap = cv2.VideoCapture(str(video))
    assert cap.get(cv2.CAP_PROP_FRAME_COUNT) == len(recs)
    assert (cap.get(cv2.CAP_PROP_FRAME_WIDTH), cap.get(cv2.CAP_PROP_FRAME_HEIGHT)) == (96, 64)


@pytest.mark.slow
def test_sigterm_ends_a_live_run_with_complete_files(checkpoint, tmp_path):
    """python predict.py on an endless stream, stopped by SIGTERM: exit 0, the video playable
    with one frame per record, summary.json written."""
    server = MjpegServer(per_connection=100_000, fps=25, size=(64, 96)).start()
    out = tmp_path / "live"
    cmd = [sys.executable, str(ROOT / "predict.py"), f"source={server.url}",
           f"checkpoint={checkpoint}", f"output={out}", f"hydra.run.dir={tmp_path / 'hydra'}"]  # fmt: skip
    proc = subprocess.Popen(cmd, cwd=tmp_path, env=os.environ.copy(), stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            jsonl = out / "predictions.jsonl"
            if jsonl.is_file() and len(jsonl.read_text().splitlines()) >= 10:
                break
            assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
            time.sleep(0.2)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0
    finally:
        proc.kill()
        server.stop()
    recs = records(out)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["interrupted"] and summary["frames"] == len(recs) >= 10
    cap = cv2.VideoCapture(str(next(out.glob("*.mp4"))))
    n = 0
    while cap.read()[0]:
        n += 1
    assert n == len(recs)


def test_ctrl_c_on_a_video_exits_130_with_complete_files(checkpoint, tmp_path):
    """A run over files stopped before their end: the files written are complete and the exit
    status is 130, so a script can tell it from a finished run (a live run stopped exits 0)."""
    video = tmp_path / "long.avi"
    write_video(video, 2000, 25.0, (96, 64))
    out = tmp_path / "out"
    cmd = [sys.executable, str(ROOT / "predict.py"), f"source={video}", f"checkpoint={checkpoint}",
           f"output={out}", "batch=1", f"hydra.run.dir={tmp_path / 'hydra'}"]  # fmt: skip
    proc = subprocess.Popen(cmd, cwd=tmp_path, env=os.environ.copy(), stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 120
        jsonl = out / "predictions.jsonl"
        while not (jsonl.is_file() and len(jsonl.read_text().splitlines()) >= 5):
            assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read()[-2000:]
            time.sleep(0.2)
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=60) == 130
    finally:
        proc.kill()
    summary = json.loads((out / "summary.json").read_text())
    assert summary["interrupted"] and 5 <= summary["frames"] == len(records(out)) < 2000


def test_the_progress_line_has_rate_and_eta(capsys, monkeypatch):
    from yolov4.cli import predict as cli

    monkeypatch.setattr(cli, "PROGRESS_EVERY_S", 0.0)
    progress = cli.Progress(total=10)
    progress.update(4)
    progress.close()
    err = capsys.readouterr().err
    assert "4/10" in err and "/s ETA" in err
    unknown = cli.Progress(total=None)  # a live source: count and rate, no ETA
    unknown.update(3)
    unknown.close()
    err = capsys.readouterr().err
    assert "3 " in err and "/s" in err and "ETA" not in err


def test_the_final_progress_line_is_printed_once_with_the_frames_read(
    checkpoint, tmp_path, capsys, monkeypatch
):
    """A tracked video ended with "30/30 5.3/s ETA 0 s" twice; a truncated AVI of 120 frames
    of which 57 were read ended with "58/120" (its unreadable tail counted as a frame)."""
    from hydra import compose, initialize_config_module

    from yolov4.cli import predict as cli

    progress = cli.Progress(total=30)
    progress.tty = False
    monkeypatch.setattr(cli, "PROGRESS_EVERY_S", 0.0)
    progress.update(30)  # the writer's last chunk printed the line
    progress.close()
    assert [x.split()[0] for x in capsys.readouterr().err.splitlines()] == ["30/30"]
    monkeypatch.setattr(cli, "PROGRESS_EVERY_S", 1e9)  # the final line only
    path = tmp_path / "t.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 25, (64, 48))
    for _ in range(40):
        writer.write(_image(48, 64))
    writer.release()
    cut = tmp_path / "cut.avi"
    cut.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with initialize_config_module(config_module="yolov4.configs", version_base="1.3"):
        cfg = compose("predict", overrides=[f"source={cut}", f"checkpoint={checkpoint}",
                                            f"output={tmp_path / 'out'}"])  # fmt: skip
    summary = cli.predict(cfg)
    assert 0 < summary["frames"] < 40 and summary["skipped_count"] == 1
    [line] = [x for x in capsys.readouterr().err.splitlines() if "/40 " in x]
    assert line.startswith(f"{summary['frames']}/40 ") and "ETA" not in line


def test_tile_runs_predict_tiled_on_each_image(run, checkpoint, tmp_path):
    from yolov4.inference.tiling import predict_tiled

    path = tmp_path / "large.png"
    cv2.imwrite(str(path), _image(200, 330))
    _, out = run(f"source={path}", f"checkpoint={checkpoint}", "tile=true", "tile_size=96",
                 "tile_overlap=0.25", f"conf={CONF}")  # fmt: skip
    [record] = records(out)
    rgb = cv2.imread(str(path))[..., ::-1].copy()
    dets = predict_tiled(Predictor.from_checkpoint(checkpoint), rgb, 96, 0.25, conf=CONF)
    assert record["detections"] == dets.to_dict()["detections"] and len(dets) > 0


def test_an_image_needing_too_many_tiles_is_skipped_and_reported(run, checkpoint, tmp_path):
    from yolov4.inference.tiling import MAX_TILES, check_tile_count

    src = tmp_path / "photos"
    src.mkdir()
    cv2.imwrite(str(src / "small.png"), _image(98, 100))  # 3x5 tiles of 96 at a 1-px step
    cv2.imwrite(str(src / "large.png"), _image(200, 330))
    assert check_tile_count((200, 330), (96, 96), 0.99, 10**9) > MAX_TILES
    summary, out = run(f"source={src}", f"checkpoint={checkpoint}", "tile=true", "tile_size=96",
                       "tile_overlap=0.99")  # fmt: skip
    assert [Path(r["file"]).name for r in records(out)] == ["small.png"]
    [skipped] = summary["skipped"]
    assert "large.png" in skipped and "24,675 tiles" in skipped and "smaller overlap" in skipped
