"""``python predict.py ... track=`` end to end on the generated shapes video
(:func:`yolov4.data.synthetic_video.make_tracking_video` written as an mp4): ids measured with
the MOT metrics over the run's ``predictions.jsonl``, line and zone counts against the ground
truth, the annotated video, and the errors before any model loads.

No trained network ships with the tests, so the Predictor runs an oracle backend
(:class:`Oracle`): it recognises which frame of the video it is given (the nearest of the
rendered frames, on 8x8-pooled inputs, so mp4 compression does not matter) and returns that
frame's known detections (:func:`~yolov4.data.synthetic_video.noisy_detections`: ground truth
with box noise and dropped objects), mapped to network-input pixels as a network would output
them.
"""

from __future__ import annotations

import csv
import json
import time
from collections import Counter
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torchvision.ops import box_iou

from tests.inference.mjpeg_server import MjpegServer
from yolov4.core.preprocess import PreprocessConfig, preprocess
from yolov4.data.synthetic import SHAPES
from yolov4.data.synthetic_video import SCRIPT, make_tracking_video, noisy_detections, write_video
from yolov4.errors import ConfigError
from yolov4.evaluation.mot import mot_metrics
from yolov4.inference import Predictor
from yolov4.ops.letterbox import map_boxes

pytest.importorskip("trackers", reason="tracking needs the track extra")

FPS = 25
SIZE = 320
MAX_BOXES = 16
LINE = [[160, -10], [160, 250]]  # top to bottom: "in" is left to right
ZONE = [[40, 30], [200, 30], [200, 100], [40, 100]]  # where the triangle stops; no occlusion


class Oracle:
    """A backend whose output is known: frame ``t``'s ``detections[t]`` (see module docstring)."""

    def __init__(
        self, frames, detections, config, second: float = 0.0, neighbour: float = 0.0
    ) -> None:
        """``second``: the probability each box also gives the next class (a second label);
        ``neighbour``: the objectness, relative to the box's, of a second box beside each one
        (shifted by a tenth of its width: IoU about 0.8) whose best class is the next class,
        as a network's neighbouring anchor that sees the object as another class."""
        self.keys, self.rows = [], []
        for frame, (boxes, scores, class_ids) in zip(frames, detections):
            tensor, params = preprocess(frame, config)
            self.keys.append(self._key(tensor[None])[0])
            xyxy = map_boxes(boxes.astype(np.float64), params)
            rows = np.zeros((len(boxes), 5 + len(SHAPES)), np.float32)
            rows[:, :2] = (xyxy[:, :2] + xyxy[:, 2:]) / 2
            rows[:, 2:4] = xyxy[:, 2:] - xyxy[:, :2]
            rows[:, 4] = scores
            rows[np.arange(len(boxes)), 5 + (class_ids + 1) % len(SHAPES)] = second
            rows[np.arange(len(boxes)), 5 + class_ids] = 1.0
            if neighbour:
                beside = np.zeros_like(rows)
                beside[:, :4] = rows[:, :4] + [[0.1, 0, 0, 0]] * rows[:, [2, 2, 2, 2]]
                beside[:, 4] = neighbour * rows[:, 4]
                beside[np.arange(len(boxes)), 5 + (class_ids + 1) % len(SHAPES)] = 1.0
                rows = np.concatenate([rows, beside])
            self.rows.append(rows)
        self.keys = torch.stack(self.keys)
        self.seen: list[int] = []
        self.delay = 0.0  # seconds per call: a slow model

    @staticmethod
    def _key(images: torch.Tensor) -> torch.Tensor:
        return F.avg_pool2d(images, 8).flatten(1)

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        time.sleep(self.delay)
        out = torch.zeros(len(images), MAX_BOXES, 5 + len(SHAPES))
        for i, key in enumerate(self._key(images)):
            t = int((self.keys - key).abs().mean(1).argmin())
            self.seen.append(t)
            out[i, : len(self.rows[t])] = torch.from_numpy(self.rows[t])
        return out


@pytest.fixture(scope="module")
def video(tmp_path_factory):
    video = make_tracking_video(fps=FPS)
    path = write_video(tmp_path_factory.mktemp("video") / "shapes.mp4", video.frames, FPS)
    return video, path


@pytest.fixture
def run(tmp_path, monkeypatch):
    """``run(detections, *overrides) -> (summary, out, oracle)``: predict.py's config composed
    and run in-process, the model source being the oracle over ``detections``."""
    from hydra import compose, initialize_config_module

    import yolov4.cli.predict as cli

    def _run(frames, detections, *overrides: str, second: float = 0.0, neighbour: float = 0.0):
        config = PreprocessConfig(input_size=(SIZE, SIZE))
        oracle = None
        if detections is not None:
            oracle = Oracle(frames, detections, config, second, neighbour)

        def load_predictor(cfg):
            if oracle is None:
                pytest.fail("the model was loaded")
            return Predictor(oracle, list(SHAPES), config)

        monkeypatch.setattr(cli, "load_predictor", load_predictor)
        out = tmp_path / f"out{len(list(tmp_path.glob('out*')))}"
        with initialize_config_module(config_module="yolov4.configs", version_base="1.3"):
            cfg = compose(
                "predict",
                overrides=[f"output={out}", "progress=false", "checkpoint=oracle.pt", *overrides],
            )
        return cli.predict(cfg), out, oracle

    return _run


def records(out: Path) -> list[dict]:
    return [json.loads(x) for x in (out / "predictions.jsonl").read_text().splitlines()]


def tracked(records: list[dict]) -> list[tuple[np.ndarray, np.ndarray]]:
    return [
        (
            np.array([d["track_id"] for d in r["detections"]], np.int64),
            np.array([d["box"] for d in r["detections"]], np.float32).reshape(-1, 4),
        )
        for r in records
    ]


def test_ids_are_stable_on_a_video(run, video):
    """Noisy detections (4% box noise, 10% dropped, objects under 30% visible missed)."""
    truth, path = video
    dets = noisy_detections(truth.truth, seed=0)
    summary, out, oracle = run(truth.frames, dets, f"source={path}", "track=bytetrack", "batch=4")
    assert oracle.seen == list(range(len(truth.truth)))  # the oracle saw each frame, in order
    recs = records(out)
    assert [r["frame"] for r in recs] == list(range(len(truth.truth)))
    assert all("track_id" in d for r in recs for d in r["detections"])
    metrics = mot_metrics([(gt.ids, gt.boxes) for gt in truth.truth], tracked(recs))
    assert metrics["idf1"] >= 0.8, metrics
    assert summary["tracking"]["tracker"] == "bytetrack"
    assert summary["tracking"]["sources"]["shapes.mp4"]["tracks"] >= len(SCRIPT)
    annotated = cv2.VideoCapture(str(out / "shapes.mp4"))
    assert int(annotated.get(cv2.CAP_PROP_FRAME_COUNT)) == len(truth.truth)
    annotated.release()


def weak_detections(truth, flicker: bool = False, seed: int = 0):
    """A weaker detector's view: :func:`noisy_detections` with scores in [0.3, 0.6], under the
    `trackers` package's own thresholds (0.6 to 0.7); ``flicker``: every 4th frame's in
    [0.12, 0.2], boxes barely seen (under the serving conf 0.25)."""
    rng = np.random.default_rng(seed + 100)
    out = []
    for t, (boxes, scores, class_ids) in enumerate(noisy_detections(truth, seed=seed)):
        low, high = (0.12, 0.2) if flicker and t % 4 == 3 else (0.3, 0.6)
        out.append((boxes, rng.uniform(low, high, len(scores)).astype(np.float32), class_ids))
    return out


@pytest.mark.parametrize("tracker", ["bytetrack", "botsort", "ocsort", "sort"])
def test_the_shipped_trackers_follow_a_weaker_detector(run, video, tracker):
    """The command as users type it, ``track=<name>``, on boxes scored 0.3 to 0.6: every shipped
    tracker config starts and keeps tracks (with the `trackers` package's own thresholds,
    ByteTrack, BoT-SORT and OC-SORT start none)."""
    truth, path = video
    summary, out, _ = run(truth.frames, weak_detections(truth.truth), f"source={path}",
                          f"track={tracker}", "save=false")  # fmt: skip
    metrics = mot_metrics([(gt.ids, gt.boxes) for gt in truth.truth], tracked(records(out)))
    assert metrics["idf1"] >= 0.6, metrics
    assert summary["tracking"]["sources"]["shapes.mp4"]["tracks"] >= len(SCRIPT)


def test_tracking_keeps_low_score_boxes_of_existing_tracks(run, video):
    """Under ``track=`` predict.py's conf defaults to 0.1: ByteTrack's second association matches
    the frames whose boxes score 0.12 to 0.2 to the tracks that exist (they are written, with
    their ids), which ``conf=0.25`` drops; only tracked boxes are written either way."""
    truth, path = video
    dets = weak_detections(truth.truth, flicker=True)
    gt = [(g.ids, g.boxes) for g in truth.truth]
    summary, out, _ = run(truth.frames, dets, f"source={path}", "track=bytetrack", "save=false")
    summary25, out25, _ = run(truth.frames, dets, f"source={path}", "track=bytetrack",
                              "save=false", "conf=0.25")  # fmt: skip
    assert (summary["postprocess"]["conf"], summary25["postprocess"]["conf"]) == (0.1, 0.25)
    default, at25 = records(out), records(out25)
    low = [d for r in default for d in r["detections"] if d["score"] < 0.25]
    assert low and all(d["track_id"] > 0 for d in low)
    assert all(d["score"] >= 0.25 for r in at25 for d in r["detections"])
    assert (
        mot_metrics(gt, tracked(default))["num_misses"]
        < mot_metrics(gt, tracked(at25))["num_misses"]
    )


def expected_line_counts(x_line: float) -> tuple[int, int]:
    """From the script's first and last keyframes: how many objects cross x = x_line each way."""
    xs = [(keys[0][1], keys[-1][1]) for *_, keys in SCRIPT]
    return sum(a < x_line < b for a, b in xs), sum(b < x_line < a for a, b in xs)


def expected_zone_counts(truth) -> list[int]:
    (x1, y1), (x2, y2) = ZONE[0], ZONE[2]
    out = []
    for gt in truth:
        cx, cy = (gt.boxes[:, 0] + gt.boxes[:, 2]) / 2, (gt.boxes[:, 1] + gt.boxes[:, 3]) / 2
        out.append(int(((cx >= x1) & (cx <= x2) & (cy >= y1) & (cy <= y2)).sum()))
    return out


def test_line_and_zone_counts_equal_the_ground_truth(run, video):
    truth, path = video
    dets = noisy_detections(truth.truth, jitter=0, drop=0)
    summary, out, _ = run(
        truth.frames, dets, f"source={path}", "tracker=bytetrack",
        f"count_line={json.dumps(LINE)}", f"count_zone={json.dumps(ZONE)}",
    )  # fmt: skip
    ins, outs = expected_line_counts(LINE[0][0])
    assert ins >= 2 and outs >= 2
    counts = summary["tracking"]["sources"]["shapes.mp4"]["counts"]
    assert (counts["line"]["in"], counts["line"]["out"]) == (ins, outs)
    rows = list(csv.DictReader(open(out / "counts.csv")))
    assert [int(r["frame"]) for r in rows] == list(range(len(truth.truth)))
    assert {r["video"] for r in rows} == {"shapes.mp4"}
    assert (rows[-1]["line_in"], rows[-1]["line_out"]) == (str(ins), str(outs))
    zone = expected_zone_counts(truth.truth)
    assert max(zone) >= 1 and [int(r["zone"]) for r in rows] == zone
    saved = json.loads((out / "summary.json").read_text())
    assert saved["tracking"]["sources"]["shapes.mp4"]["counts"] == counts


def test_a_second_label_on_each_object_does_not_start_second_tracks(run, video):
    """Each box also scores 0.45 for another class (a darknet multi-label candidate above the
    tracking conf): under track= one box per object is tracked (multi_label false, and the
    NMS across classes), so the counts are the ground truth's; multi_label=true with a NMS per
    class gives each object a second track."""
    truth, path = video
    dets = noisy_detections(truth.truth, jitter=0, drop=0)
    line = f"count_line={json.dumps(LINE)}"
    summary, out, _ = run(truth.frames, dets, f"source={path}", "track=bytetrack", line,
                          "save=false", second=0.45)  # fmt: skip
    assert summary["postprocess"]["multi_label"] is False
    written = [Counter(d["class_id"] for d in r["detections"]) for r in records(out)]
    truth_classes = [Counter(c.tolist()) for _, _, c in dets]
    assert all(w <= t for w, t in zip(written, truth_classes, strict=True))  # no second labels
    assert sum(w.total() for w in written) >= 0.95 * sum(t.total() for t in truth_classes)
    counts = summary["tracking"]["sources"]["shapes.mp4"]["counts"]["line"]
    assert (counts["in"], counts["out"]) == expected_line_counts(LINE[0][0])
    both, _, _ = run(truth.frames, dets, f"source={path}", "track=bytetrack", line, "save=false",
                     "multi_label=true", "agnostic_nms=false", second=0.45)  # fmt: skip
    assert both["tracking"]["sources"]["shapes.mp4"]["tracks"] >= 2 * len(SCRIPT)


def overlapping_pairs(recs: list[dict], iou: float) -> int:
    """Frames with two written boxes overlapping more than ``iou`` (one object twice)."""
    boxes = [torch.tensor([d["box"] for d in r["detections"]]).reshape(-1, 4) for r in recs]
    return sum(bool((box_iou(b, b).triu(1) > iou).any()) for b in boxes)


def test_a_neighbouring_box_of_another_class_does_not_start_second_tracks(run, video):
    """Beside each box the network gives another (IoU about 0.8) whose best class differs:
    multi_label=false keeps both (the NMS is per class); under track= the NMS runs across
    classes (agnostic_nms), so no frame has two tracked boxes overlapping above iou."""
    truth, path = video
    dets = noisy_detections(truth.truth, jitter=0, drop=0)
    summary, out, _ = run(truth.frames, dets, f"source={path}", "track=bytetrack", "save=false",
                          neighbour=0.9)  # fmt: skip
    post = summary["postprocess"]
    assert (post["agnostic_nms"], post["multi_label"]) == (True, False)
    assert overlapping_pairs(records(out), post["iou"]) == 0
    tracks = summary["tracking"]["sources"]["shapes.mp4"]["tracks"]
    classwise, out2, _ = run(truth.frames, dets, f"source={path}", "track=bytetrack",
                             "save=false", "agnostic_nms=false", neighbour=0.9)  # fmt: skip
    assert overlapping_pairs(records(out2), post["iou"]) >= len(truth.truth) // 2
    assert classwise["tracking"]["sources"]["shapes.mp4"]["tracks"] >= tracks + len(SCRIPT)


def test_videos_of_one_name_in_two_folders_keep_their_own_tracks_and_counts(run, video, tmp_path):
    """``a/shapes.mp4`` and ``b/shapes.mp4``: written as shapes.mp4 and shapes_1.mp4, and their
    tracks and counts are under those names (one entry overwrote the other); a video listed
    twice is read once (its tracker would see frame 0 again)."""
    truth, path = video
    for d in ("a", "b"):
        (tmp_path / d).mkdir()
        (tmp_path / d / "shapes.mp4").write_bytes(path.read_bytes())
    dets = noisy_detections(truth.truth, jitter=0, drop=0)
    listed = [str(tmp_path / "a/shapes.mp4"), str(tmp_path / "b/shapes.mp4"), str(path), str(path)]
    summary, out, _ = run(truth.frames, dets, f"source={json.dumps(listed)}", "track=bytetrack",
                          f"count_line={json.dumps(LINE)}")  # fmt: skip
    sources = summary["tracking"]["sources"]
    assert sorted(sources) == ["shapes.mp4", "shapes_1.mp4", "shapes_2.mp4"]
    expected = expected_line_counts(LINE[0][0])
    for counts in sources.values():
        assert (counts["counts"]["line"]["in"], counts["counts"]["line"]["out"]) == expected
    rows = list(csv.DictReader(open(out / "counts.csv")))
    n = len(truth.truth)
    assert [r["video"] for r in rows] == ["shapes.mp4"] * n + ["shapes_1.mp4"] * n + [
        "shapes_2.mp4"
    ] * n
    assert sorted(p.name for p in out.glob("*.mp4")) == [
        "shapes.mp4",
        "shapes_1.mp4",
        "shapes_2.mp4",
    ]


def test_a_folder_of_frames_is_one_sequence(run, video, tmp_path):
    truth, _ = video
    n = 30
    folder = tmp_path / "frames"
    folder.mkdir()
    for t in range(n):
        cv2.imwrite(str(folder / f"{t:04d}.png"), cv2.cvtColor(truth.frames[t], cv2.COLOR_RGB2BGR))
    dets = noisy_detections(truth.truth[:n], jitter=0, drop=0)
    summary, out, _ = run(truth.frames[:n], dets, f"source={folder}", "track=sort")
    recs = records(out)
    assert [Path(r["file"]).name for r in recs] == [f"{t:04d}.png" for t in range(n)]
    # the frame numbers the tracker (and counts.csv) gave them, not null
    assert [r["frame"] for r in recs] == list(range(n))
    metrics = mot_metrics([(gt.ids, gt.boxes) for gt in truth.truth[:n]], tracked(recs))
    assert metrics["num_switches"] == 0 and metrics["idf1"] >= 0.8, metrics
    assert summary["tracking"]["sources"][str(folder)]["tracks"] == metrics["num_unique_objects"]


@pytest.mark.slow
def test_a_stream_keeps_ids_across_dropped_frames_and_a_reconnect(run, video, monkeypatch):
    """The video served as MJPEG, cut after 60 frames and served on from there; the model is
    slower than the stream, so the newest-frame policy drops frames."""
    truth, _ = video
    n = len(truth.truth) // 2
    dets = noisy_detections(truth.truth, jitter=0.02, drop=0)
    oracles = []  # the server keeps at most 4 frames ahead of the oracle, however loaded

    def last_seen():
        return oracles[0].seen[-1] if oracles and oracles[0].seen else -1

    server = MjpegServer(n, fps=50, size=truth.image_size, frames=truth.frames, pace=last_seen)
    server.start()
    real = Oracle.__init__

    def slow(self, *args):
        real(self, *args)
        self.delay = 0.03
        oracles.append(self)

    monkeypatch.setattr(Oracle, "__init__", slow)
    try:
        summary, out, oracle = run(
            truth.frames, dets, f"source={server.url}", "track=bytetrack", "reconnect_timeout=2"
        )
    finally:
        server.stop()
    recs = records(out)
    assert summary["reconnects"] >= 1 and summary["dropped_frames"] >= 5, summary
    seen = oracle.seen  # the video frame of each record (the stream's frame index differs)
    assert len(seen) == len(recs) and seen == sorted(seen) and seen[-1] > n
    gaps = np.diff([r["frame"] for r in recs])
    assert gaps.min() >= 1 and gaps.max() >= 2  # the tracker's clock saw the dropped frames
    gt = [(truth.truth[t].ids, truth.truth[t].boxes) for t in seen]
    metrics = mot_metrics(gt, tracked(recs))
    assert metrics["idf1"] >= 0.8 and metrics["num_switches"] <= 1, metrics
    # the objects seen on both sides of the cut keep their ids
    before, after = (
        max(i for i, t in enumerate(seen) if t < n),
        min(i for i, t in enumerate(seen) if t >= n),
    )
    ids = [{d["track_id"] for d in recs[i]["detections"]} for i in (before, after)]
    assert len(ids[0] & ids[1]) >= 2, ids


@pytest.mark.parametrize(
    ("overrides", "named"),
    [
        (["track=deepsort"], "deepsort"),
        (
            ["tracker=bytetrack", "tracker.track_activation_threshold=1.5"],
            "track_activation_threshold",
        ),  # fmt: skip
        (["tracker=sort", "+tracker.high_conf_det_threshold=0.5"], "high_conf_det_threshold"),
        (["track=ocsort", "tracker=sort"], "different trackers"),
        (["count_line=[[0,0],[10,10]]"], "track="),
        (["track=bytetrack", "count_zone=[[0,0],[1,1]]"], "count_zone"),
        (["track=bytetrack", "count_anchor=top"], "anchor"),
        (["track=bytetrack", "count_margin=-1"], r"count_margin: expected .* got -1"),  # no line
        (["count_margin=abc"], r"count_margin: expected a fraction .* got 'abc'"),  # no track=
    ],
)
def test_bad_tracking_options_fail_before_the_model_loads(run, video, overrides, named):
    _, path = video
    with pytest.raises(ConfigError, match=named):
        run(None, None, f"source={path}", *overrides)  # the oracle would fail: it is None


def test_an_unknown_tracker_key_is_named_by_hydra(run, video):
    from hydra.errors import ConfigCompositionException

    _, path = video
    with pytest.raises(ConfigCompositionException, match="match_thresh"):
        run(None, None, f"source={path}", "tracker=bytetrack", "tracker.match_thresh=0.8")


def test_track_with_tracker_keys_selects_that_trackers_settings(run, video):
    """`track=ocsort tracker.lost_track_buffer=60` was Hydra's "Key 'tracker' is not in
    struct": the keys need the tracker group, which predict.py now selects from track=."""
    from yolov4.cli.tracking import track_argv

    argv = ["predict.py", "source=v.mp4", "track=ocsort", "tracker.lost_track_buffer=60"]
    assert track_argv(argv) == [*argv, "tracker=ocsort"]
    for same in (argv[:3], [*argv, "tracker=ocsort"], ["predict.py", "tracker.x=1"]):
        assert track_argv(same) == same  # no keys, the group given, or no track=
    _, path = video
    with pytest.raises(ConfigError, match="lost_track_buffer"):  # composed: the value is checked
        run(
            None,
            None,
            f"source={path}",
            *track_argv([*argv[:3], "tracker.lost_track_buffer=-1"])[2:],
        )


def test_unrelated_images_are_refused(run, video, tmp_path):
    truth, path = video
    image = tmp_path / "one.png"
    cv2.imwrite(str(image), truth.frames[0])
    with pytest.raises(ConfigError, match="single image"):
        run(None, None, f"source={image}", "track=bytetrack")
    with pytest.raises(ConfigError, match="unrelated images"):
        run(None, None, f"source=[{image},{path}]", "track=bytetrack")


def test_tracked_labels_carry_the_id():
    from dataclasses import replace

    from yolov4.inference.drawing import draw_detections
    from yolov4.inference.predictor import Detections

    image = np.full((120, 160, 3), 128, np.uint8)
    dets = Detections(np.array([[20, 40, 90, 100]], np.float32), np.array([0.9], np.float32),
                      np.array([0]), ["circle"], (120, 160))  # fmt: skip
    plain = draw_detections(image, dets)
    tracked = draw_detections(image, replace(dets, track_ids=np.array([7])))
    assert (plain[44:] == tracked[44:]).all()  # the same box
    assert (plain[:40] != tracked[:40]).any()  # a longer label above it: "#7 circle 0.90"
    assert (draw_detections(image, replace(dets, track_ids=np.array([-1]))) == plain).all()
