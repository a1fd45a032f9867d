"""PredictionWriter's annotated videos: every frame, every pixel, at a size the encoder takes."""

from __future__ import annotations

import logging

import cv2
import numpy as np
import pytest

from yolov4.inference.predictor import Detections
from yolov4.inference.streams import Frame
from yolov4.inference.writers import PredictionWriter

W, H, FRAMES = 33, 19, 5  # odd both ways: OpenCV's FFmpeg writer would round to 32x18


def _no_boxes(h: int, w: int) -> Detections:
    return Detections(
        np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros(0, np.int64), [], (h, w)
    )


def _frames(path) -> list[np.ndarray]:
    cap = cv2.VideoCapture(str(path))
    frames = []
    while True:
        ok, bgr = cap.read()
        if not ok:
            break
        frames.append(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
    cap.release()
    return frames


@pytest.mark.parametrize("size", [(W, H), (W, H + 1), (W + 1, H)])
def test_an_odd_sized_video_is_padded_to_even_sides_keeping_every_pixel(tmp_path, caplog, size):
    """A generated odd-sized video read back and written: as many frames, the size rounded up
    to even sides, the input's pixels (its last column and row included) in place and the
    added column / row black; the log says so once."""
    w, h = size
    source = tmp_path / "odd.avi"
    # OpenCV's own MJPEG writer keeps an odd size (its FFmpeg writers round it down)
    fourcc = cv2.VideoWriter_fourcc(*"MJPG")
    writer = cv2.VideoWriter(str(source), cv2.CAP_OPENCV_MJPEG, fourcc, 10.0, (w, h))
    for k in range(FRAMES):
        bgr = np.full((h, w, 3), 60 + 10 * k, np.uint8)
        bgr[:, -1] = bgr[-1, :] = 220  # the column and row a rounded-down size would lose
        writer.write(bgr)
    writer.release()
    inputs = _frames(source)
    assert len(inputs) == FRAMES and inputs[0].shape == (h, w, 3)

    out = PredictionWriter(tmp_path / "out")
    with caplog.at_level(logging.INFO, logger="yolov4.inference.writers"):
        for k, image in enumerate(inputs):
            out.write(Frame("odd.avi", "odd.avi", image, "odd.avi", k, fps=10.0), _no_boxes(h, w))
        out.close()
    written = _frames(tmp_path / "out" / "odd.mp4")
    even = (h + h % 2, w + w % 2)
    assert len(written) == FRAMES
    assert all(f.shape == (*even, 3) for f in written)
    for original, frame in zip(inputs, written):  # mp4v is lossy: within a few levels
        error = np.abs(frame[:h, :w].astype(int) - original.astype(int))
        assert error.mean() < 4, error.mean()
        assert frame[:h, w - 1].mean() > 180 and frame[h - 1, :w].mean() > 180  # kept
        for added in (frame[h:, :], frame[:, w:]):  # the added black row / column, if any
            assert added.size == 0 or added.mean() < 40
    padded = [r.getMessage() for r in caplog.records if "even sizes only" in r.getMessage()]
    assert len(padded) == 1 and f"{even[1]}x{even[0]}, the input's {w}x{h}" in padded[0]


def test_an_even_sized_video_is_written_at_its_own_size(tmp_path, caplog):
    image = np.full((H + 1, W + 1, 3), 90, np.uint8)
    out = PredictionWriter(tmp_path / "out")
    with caplog.at_level(logging.INFO, logger="yolov4.inference.writers"):
        for k in range(3):
            out.write(Frame("e.avi", "e.avi", image, "e.avi", k, fps=10.0), _no_boxes(H + 1, W + 1))
        out.close()
    written = _frames(tmp_path / "out" / "e.mp4")
    assert len(written) == 3 and written[0].shape == image.shape
    assert "even sizes only" not in caplog.text
