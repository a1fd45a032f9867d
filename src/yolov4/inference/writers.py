"""What predict.py writes for each image or frame, in one run directory:

    <name>                 annotated images (the input's own format and relative path:
                           :func:`~yolov4.inference.sources.output_name`)
    <stem>.mp4             annotated videos and streams (the input's fps and frame size, an
                           odd width or height padded by one black column / row; mp4v)
    predictions.jsonl      one :func:`~yolov4.inference.sources.prediction_record` per image or frame
    labels/<stem>.txt      save_txt: darknet/YOLO labels ``class cx cy w h`` (normalised), which
                           ``data=yolo`` reads back (``labels/<stem>_<frame>.txt`` for video frames)
    crops/<class>/<stem>_<k>.jpg   save_crops: each detection cut from the original image
                           (``<stem>`` keeps the input's relative path, as the labels do)
    summary.json           :class:`~yolov4.inference.summary.Summary` (re-exported here):
                           images, frames, detections per class, skipped, time
                           (and with track=: tracks and line / zone counts per source)
    counts.csv             track= with count_line / count_zone: one row per frame
                           (predict.py's ``track=``)

Files are flushed as they are written; :meth:`PredictionWriter.close` (called in a ``finally``)
finalises every video, so an interrupted run leaves complete, playable files. An output file
that cannot be written (a name over the file system's limit, a full disk) is logged and counted
in ``summary.json`` (``unwritten``); the run goes on.
"""

from __future__ import annotations

import contextlib
import json
import logging
import queue
import threading
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from yolov4.core.files import write_json
from yolov4.inference.drawing import draw_detections
from yolov4.inference.sources import Frame, prediction_record
from yolov4.inference.summary import MAX_SKIPPED_LISTED, Summary

__all__ = [
    "PredictionWriter",
    "Summary",
    "WriteBehind",
    "yolo_label_lines",
    "PREDICTIONS",
]

log = logging.getLogger(__name__)

PREDICTIONS = "predictions.jsonl"
SUMMARY = "summary.json"
UNWRITTEN_LOGGED = 5  # output files that cannot be written: the first few are logged one by one
LABELS, CROPS = "labels", "crops"
VIDEO_SUFFIX, VIDEO_FOURCC = ".mp4", "mp4v"
# an odd-sized video's added column / row (BGR): OpenCV's FFmpeg writer rounds odd sizes down
# (a pixel column or row lost), so odd frames are padded to the next even size instead
VIDEO_PAD = (0, 0, 0)


def yolo_label_lines(dets: Any) -> list[str]:
    """``class cx cy w h`` per detection, normalised by the image size (darknet/YOLO txt)."""
    h, w = dets.image_size
    lines = []
    for (x1, y1, x2, y2), cid in zip(dets.boxes.astype(np.float64), dets.class_ids):
        x1, x2 = np.clip([x1, x2], 0, w)
        y1, y2 = np.clip([y1, y2], 0, h)
        cx, cy, bw, bh = (x1 + x2) / 2 / w, (y1 + y2) / 2 / h, (x2 - x1) / w, (y2 - y1) / h
        lines.append(f"{int(cid)} {cx:.6f} {cy:.6f} {bw:.6f} {bh:.6f}")
    return lines


class WriteBehind:
    """Calls ``write(*item)`` for each :meth:`put` item on a thread of its own, in order, so that
    drawing, video encoding and records overlap the model; at most ``depth`` items wait (the
    model blocks, and memory stays flat, when writing is the slower). An exception raised by
    ``write`` is raised again in the caller at its next :meth:`put` or at :meth:`close`."""

    def __init__(self, write: Callable[..., None], depth: int = 2) -> None:
        self._write, self.error, self._failed = write, None, False
        self._queue: queue.Queue[Any] = queue.Queue(max(1, depth))
        self._cancel, self._end = threading.Event(), object()
        self._thread = threading.Thread(target=self._loop, name="predict-writer", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while not self._cancel.is_set():
            try:
                item = self._queue.get(timeout=0.05)
            except queue.Empty:
                continue
            if item is self._end:
                return
            if not self._failed:  # after an error nothing more is written
                try:
                    self._write(*item)
                except BaseException as e:  # noqa: BLE001 - handed to the caller
                    self.error, self._failed = e, True

    def _raise(self) -> None:
        if self.error is not None:
            error, self.error = self.error, None
            raise error

    def put(self, *item: Any) -> None:
        self._raise()
        self._offer(item)

    def _offer(self, item: Any) -> None:
        while self._thread.is_alive():
            try:
                self._queue.put(item, timeout=0.05)
                return
            except queue.Full:
                continue

    def close(self, finish: bool = True) -> None:
        """Wait for the thread: after every queued item (``finish``), or after the item being
        written. Interrupted (a second Ctrl-C), it still stops the thread before returning."""
        try:
            if finish:
                self._offer(self._end)
                self._thread.join()
        finally:
            self._cancel.set()
            self._thread.join()
        self._raise()


def _stem(name: str) -> str:
    return str(Path(name).with_suffix(""))


class PredictionWriter:
    """Writes each image's or frame's outputs into ``out`` (see the module docstring)."""

    def __init__(
        self,
        out: Path,
        save: bool = True,
        save_txt: bool = False,
        save_crops: bool = False,
        reserved: Iterable[str] = (),
    ) -> None:
        self.out, self.save, self.save_txt, self.save_crops = Path(out), save, save_txt, save_crops
        self.out.mkdir(parents=True, exist_ok=True)
        self._jsonl = (self.out / PREDICTIONS).open("w", encoding="utf-8")
        self._videos: dict[tuple[str, str], tuple[cv2.VideoWriter | None, tuple[int, int]]] = {}
        self._names: dict[tuple[str, str], str] = {}  # (source, input) -> unique output name
        # the stems of those names -> the input writing under each (a lookup per new input)
        self._name_stems: dict[str, str] = {}
        # the output names of the run's inputs known up front (a folder's files): a renamed
        # output takes none of them, so each input's labels keep its own name where they can
        self._reserved = {_stem(n): n for n in reserved}
        # label and crop stem -> the image or frame written under it (unique in the run)
        self._stems: dict[str, tuple[str, str, int | None]] = {}
        self.files: list[Path] = []  # annotated images and videos written
        self.unwritten: list[str] = []  # "<path>: <why>", the first MAX_SKIPPED_LISTED
        self.unwritten_count = 0

    def _failed(self, path: Path, why: str) -> None:
        """An output file that cannot be written: logged (the first few), counted, listed."""
        self.unwritten_count += 1
        message = f"{path}: {why}"
        if len(self.unwritten) < MAX_SKIPPED_LISTED:
            self.unwritten.append(message)
        if self.unwritten_count <= UNWRITTEN_LOGGED:
            more = " (further ones are counted in summary.json)"
            log.warning(
                "not written: %s%s",
                message,
                more if self.unwritten_count == UNWRITTEN_LOGGED else "",
            )

    def _records_failed(self, error: OSError) -> None:
        """``predictions.jsonl`` cannot take more (a full disk): reported once, closed; the
        records from here on are not written (its last line may be cut short)."""
        self._failed(self.out / PREDICTIONS, f"{error.strerror or error}; later records lost")
        with contextlib.suppress(OSError):
            self._jsonl.close()
        self._jsonl = None

    def _write_image(self, path: Path, rgb: np.ndarray) -> bool:
        """``rgb`` to ``path`` (its folders made); False, reported, when it cannot be written."""
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            if cv2.imwrite(str(path), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)):
                return True
            why = "OpenCV could not write it"
        except (OSError, cv2.error) as e:
            why = str(e).strip().splitlines()[-1] if str(e).strip() else type(e).__name__
        self._failed(path, why)
        return False

    def name_of(self, frame: Frame) -> str:
        """The output name of ``frame``'s input: its own, or with ``_1``, ``_2``, ... when an
        earlier input already writes under that name without its suffix (the annotated video,
        the label file and the crops of ``clip.mp4`` and ``clip.avi`` would be one file), or a
        frame's labels do; a renamed output takes no other input's name (logged)."""
        key = (frame.source, frame.file or frame.name)
        if key not in self._names:
            image = frame.frame is None  # an image's labels are <name>.txt: not a frame's
            name, stem, k, taken_by = frame.name, Path(frame.name), 1, None
            while (holder := self._holder(_stem(name), image, k > 1)) is not None:
                if k == 1:
                    taken_by = holder
                name = str(stem.with_name(f"{stem.stem}_{k}{stem.suffix}"))
                k += 1
            if name != frame.name:
                log.info(
                    "%s: its outputs are named %s (%s already writes under %s)",
                    key[1], _stem(name), taken_by, _stem(frame.name),
                )  # fmt: skip
            self._names[key] = name
            self._name_stems[_stem(name)] = key[1]
        return self._names[key]

    def _holder(self, stem: str, image: bool, renamed: bool) -> str | None:
        """What already writes under ``stem`` (an input, a frame's labels, or, for a renamed
        output, an input of the run still to come), or None."""
        if stem in self._name_stems:
            return self._name_stems[stem]
        if image and stem in self._stems:
            _, file, index = self._stems[stem]
            return f"{file} frame {index}" if index is not None else file
        if renamed and stem in self._reserved:
            return f"the run's input {self._reserved[stem]}"
        return None

    def _label_stem(self, frame: Frame, name: str) -> str:
        """The stem of ``frame``'s label file and crops: its output name's (a video frame's
        with ``_<frame>``), made unique in the run: a frame's ``clip_3`` is not the image
        ``clip_3.jpg``'s (one file would hold the other's boxes)."""
        owner = (frame.source, frame.file or frame.name, frame.frame)
        base = _stem(name) if frame.frame is None else f"{_stem(name)}_{frame.frame}"
        stem, k = base, 1
        while self._stems.get(stem, owner) != owner or (
            frame.frame is not None and stem in self._reserved
        ):
            stem, k = f"{base}_{k}", k + 1
        self._stems[stem] = owner
        return stem

    def write(
        self,
        frame: Frame,
        dets: Any,
        overlay: Callable[[np.ndarray, Any], np.ndarray] | None = None,
        sequence_index: int | None = None,
    ) -> dict[str, Any]:
        """The outputs of one decoded image or frame and its detections; returns its record.
        ``overlay(image, dets)`` draws on a copy of the image under the boxes (track trails).
        ``sequence_index``: an image's frame number in a tracked sequence (a folder tracked as
        frames: ``counts.csv`` numbers them so), its record's ``frame``."""
        index = frame.frame if frame.frame is not None else sequence_index
        record = prediction_record(dets, frame.source, frame.file, index, frame.timestamp_ms)
        if self._jsonl is not None:
            try:
                self._jsonl.write(json.dumps(record) + "\n")
                self._jsonl.flush()
            except OSError as e:  # a full disk: the run goes on, the file is reported
                self._records_failed(e)
        name = self.name_of(frame)
        # one stem a record only where files are named by it (an endless stream otherwise)
        stem = self._label_stem(frame, name) if self.save_txt or self.save_crops else ""
        if self.save:
            image = frame.image if overlay is None else overlay(frame.image.copy(), dets)
            drawn = draw_detections(image, dets)
            if frame.frame is None:
                self._image(self.out / name, drawn)
            else:
                self._video((frame.source, name), drawn, frame.fps)
        if self.save_txt:
            path = self.out / LABELS / f"{stem}.txt"
            lines = yolo_label_lines(dets)
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text("".join(f"{x}\n" for x in lines))
            except OSError as e:
                self._failed(path, e.strerror or str(e))
        if self.save_crops:
            self._crops(frame.image, dets, stem)
        return record

    def _image(self, path: Path, rgb: np.ndarray) -> None:
        if not cv2.haveImageWriter(str(path)):  # a format OpenCV reads but cannot write: JPEG
            path = path.with_suffix(".jpg")
        if self._write_image(path, rgb):
            self.files.append(path)

    def _video(self, key: tuple[str, str], rgb: np.ndarray, fps: float | None) -> None:
        if key not in self._videos:
            self._videos[key] = self._open_video(key, (rgb.shape[1], rgb.shape[0]), fps)
        writer, size = self._videos[key]
        if writer is None:
            return
        if (rgb.shape[1], rgb.shape[0]) != size:  # a stream that came back at another size
            rgb = cv2.resize(rgb, size)
        bgr = cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)
        w, h = size
        if w % 2 or h % 2:  # to the even size the writer was opened at, every pixel kept
            bgr = cv2.copyMakeBorder(bgr, 0, h % 2, 0, w % 2, cv2.BORDER_CONSTANT, value=VIDEO_PAD)
        writer.write(bgr)

    def _open_video(
        self, key: tuple[str, str], size: tuple[int, int], fps: float | None
    ) -> tuple[cv2.VideoWriter | None, tuple[int, int]]:
        """The writer of ``key``'s annotated video, opened at ``size = (W, H)`` rounded up to
        even sides (the frames are padded to it), and ``size``; ``None`` (reported) when it
        cannot be opened."""
        path = (self.out / key[1]).with_suffix(VIDEO_SUFFIX)
        w, h = size
        even = (w + w % 2, h + h % 2)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            writer = cv2.VideoWriter(
                str(path), cv2.VideoWriter_fourcc(*VIDEO_FOURCC), fps or 30.0, even
            )
            why = "OpenCV could not open a video writer for it"
        except OSError as e:
            writer, why = None, e.strerror or str(e)
        if writer is None or not writer.isOpened():  # reported once; its frames are not written
            self._failed(path, why)
            return None, size
        self.files.append(path)
        if even != size:
            added = [
                what
                for what, odd in (("column at the right", w % 2), ("row at the bottom", h % 2))
                if odd
            ]
            log.info(
                "%s: written at %dx%d, the input's %dx%d with one black %s (the %s encoder takes "
                "even sizes only; no pixel is lost)",
                path, *even, w, h, " and one black ".join(added), VIDEO_FOURCC,
            )  # fmt: skip
        return writer, size

    def _crops(self, rgb: np.ndarray, dets: Any, stem: str) -> None:
        h, w = rgb.shape[:2]
        for k, (box, name) in enumerate(zip(dets.boxes, dets.class_names)):
            x1, y1 = max(0, int(np.floor(box[0]))), max(0, int(np.floor(box[1])))
            x2, y2 = min(w, int(np.ceil(box[2]))), min(h, int(np.ceil(box[3])))
            if x2 <= x1 or y2 <= y1:
                continue
            self._write_image(self.out / CROPS / name / f"{stem}_{k}.jpg", rgb[y1:y2, x1:x2])

    def close(self, summary: Summary | None = None) -> None:
        """Finalise every video and the jsonl (and write ``summary.json``, with the output files
        that could not be written)."""
        for writer, _ in self._videos.values():
            if writer is not None:
                writer.release()
        self._videos.clear()
        if self._jsonl is not None:
            try:
                self._jsonl.close()
            except OSError as e:
                self._jsonl = None  # close() failed but the file object is done
                self._failed(self.out / PREDICTIONS, f"{e.strerror or e}; its last records lost")
        if summary is not None:
            summary.unwritten, summary.unwritten_count = self.unwritten, self.unwritten_count
            try:  # atomic: a stale or half summary never sits beside the new records
                write_json(self.out / SUMMARY, summary.to_dict())
            except OSError as e:
                log.error("%s not written: %s", self.out / SUMMARY, e.strerror or e)
