"""predict.py on images, video frames and stream frames 1, 3 or 4 pixels high: decoded, so read
as (H, W, C) whatever their shape, with the Predictor API's detections; and ``max_frames``,
which stops live sources only, said so when no source is live."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from tests.conftest import randomize_
from tests.inference.mjpeg_server import MjpegServer
from tests.inference.predict_cases import as_rows, assert_same_detections, calibrate_heads_
from yolov4 import build_model, save_checkpoint
from yolov4.inference import Predictor
from yolov4.inference.tiling import predict_tiled

NAMES = ["cat", "dog", "fish"]
SIZE = 64
CONF = 0.3
TILE = 32
# (file, height, width): a 1x1 PNG, a 640x3 PNG, a 300x4 JPEG
THIN = [("one.png", 1, 1), ("wide.png", 3, 640), ("strip.jpg", 4, 300)]


def _image(h: int, w: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return cv2.resize(rng.integers(0, 255, (8, 8, 3), dtype=np.uint8), (w, h))


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    """yolov4-tiny, 3 classes at 64x64, random weights calibrated to find boxes."""
    torch.manual_seed(0)
    model = randomize_(build_model("yolov4-tiny", num_classes=3, input_size=[SIZE, SIZE]))
    calibrate_heads_(model, _image(SIZE, SIZE), mode="letterbox", mean=-2.0)
    path = tmp_path_factory.mktemp("ckpt") / "best.pt"
    return save_checkpoint(path, model, NAMES, {"input_size": [SIZE, SIZE]})


def records(out: Path) -> list[dict]:
    return [json.loads(x) for x in (out / "predictions.jsonl").read_text().splitlines()]


def assert_same(recorded: list[dict], dets) -> None:
    """A record's detections and the Predictor's (batched otherwise: scores to float noise)."""
    expected = dets.to_dict()["detections"]
    if recorded or expected:
        assert_same_detections(as_rows(recorded), as_rows(expected))


def _thin_folder(folder: Path) -> list[Path]:
    folder.mkdir()
    paths = []
    for i, (name, h, w) in enumerate(THIN):
        cv2.imwrite(str(folder / name), _image(h, w, i))
        paths.append(folder / name)
    return paths


def test_images_1_3_and_4_pixels_high_give_the_predictors_detections(
    predict_cli, checkpoint, tmp_path
):
    paths = _thin_folder(tmp_path / "thin")
    predictor = Predictor.from_checkpoint(checkpoint)
    summary, out = predict_cli(f"source={tmp_path / 'thin'}", f"checkpoint={checkpoint}",
                               f"conf={CONF}")  # fmt: skip
    assert summary["skipped_count"] == 0 and summary["images"] == len(THIN)
    got = {Path(r["file"]).name: r for r in records(out)}
    found = 0
    for path, (name, h, w) in zip(paths, THIN):
        [dets] = predictor(str(path), conf=CONF)
        assert got[name]["image"] == {"width": w, "height": h}
        assert_same(got[name]["detections"], dets)
        found += len(dets)
    assert found > 0  # detections compared, not only empty lists
    # tiled: each image as predict_tiled reads its file
    summary, out = predict_cli(f"source={tmp_path / 'thin'}", f"checkpoint={checkpoint}",
                               f"conf={CONF}", "tile=true", f"tile_size={TILE}")  # fmt: skip
    assert summary["skipped_count"] == 0
    got = {Path(r["file"]).name: r for r in records(out)}
    for path, (name, _, _) in zip(paths, THIN):
        assert_same(got[name]["detections"], predict_tiled(predictor, str(path), TILE, conf=CONF))


def _thin_video(path: Path, n: int = 3, size: tuple[int, int] = (640, 4)) -> list[np.ndarray]:
    """An ``n``-frame video of ``size`` (w, h); its frames as OpenCV reads them back, RGB."""
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 10, size)
    for i in range(n):
        writer.write(_image(size[1], size[0], i))
    writer.release()
    cap = cv2.VideoCapture(str(path))
    frames = []
    while (read := cap.read())[0]:
        frames.append(cv2.cvtColor(read[1], cv2.COLOR_BGR2RGB))
    cap.release()
    assert len(frames) == n and frames[0].shape == (size[1], size[0], 3)
    return frames


def test_video_frames_4_pixels_high_give_the_predictors_detections(
    predict_cli, checkpoint, tmp_path, caplog
):
    video = tmp_path / "strip.mp4"
    frames = _thin_video(video)
    with caplog.at_level(logging.WARNING, logger="yolov4"):
        summary, out = predict_cli(f"source={video}", f"checkpoint={checkpoint}",
                                   f"conf={CONF}", "max_frames=2")  # fmt: skip
    # max_frames stops live sources only: the video is read to its end, and a warning says so
    assert summary["skipped_count"] == 0 and summary["frames"] == len(frames)
    warnings = [r.getMessage() for r in caplog.records if "max_frames" in r.getMessage()]
    assert warnings == [
        "max_frames=2 stops live sources (cameras, streams) only; these sources are files and "
        "videos, read to their end"
    ]
    predictor = Predictor.from_checkpoint(checkpoint)
    expected = predictor(frames, conf=CONF, decoded=True)
    recs = records(out)
    assert [r["frame"] for r in recs] == list(range(len(frames)))
    for r, dets in zip(recs, expected):
        assert_same(r["detections"], dets)
    assert sum(len(d) for d in expected) > 0


def test_stream_frames_3_pixels_high_are_read_and_max_frames_stops_them(
    predict_cli, checkpoint, caplog
):
    server = MjpegServer(per_connection=20, fps=20, size=(3, 640)).start()
    try:
        with caplog.at_level(logging.WARNING, logger="yolov4"):
            summary, out = predict_cli(f"source={server.url}", f"checkpoint={checkpoint}",
                                       "max_frames=3", "stream_buffer=true", "save=false")  # fmt: skip
    finally:
        server.stop()
    assert summary["skipped_count"] == 0 and summary["frames"] == 3
    assert [r["image"] for r in records(out)] == [{"width": 640, "height": 3}] * 3
    assert "max_frames" not in caplog.text  # a live source: max_frames applies


def test_a_users_array_of_such_a_shape_is_still_refused_unless_decoded(checkpoint):
    """The (C, H, W) ambiguity check stays for arrays a user passes; ``decoded=True`` (a
    decoder's frames) takes them as (H, W, C), as the file itself is read."""
    from yolov4.errors import InputError

    predictor = Predictor.from_checkpoint(checkpoint)
    array = _image(3, 640)
    with pytest.raises(InputError, match=r"is ambiguous: .* or decoded=True for an \(H, W, C\)"):
        predictor(array)
    _, buf = cv2.imencode(".png", cv2.cvtColor(array, cv2.COLOR_RGB2BGR))
    [from_file] = predictor(buf.tobytes(), conf=CONF)
    [from_array] = predictor(array, conf=CONF, decoded=True)
    assert from_array.to_dict() == from_file.to_dict()
