"""Tracker, Counter and the MOT metrics on the generated shapes video (no model)."""

from __future__ import annotations

import csv
import json
from importlib import resources

import numpy as np
import pytest
import yaml
from matplotlib.path import Path as MplPath

from yolov4.data.synthetic import SHAPES
from yolov4.data.synthetic_video import SCRIPT, make_tracking_video, noisy_detections, write_video
from yolov4.errors import ConfigError, InputError
from yolov4.evaluation.mot import mot_metrics
from yolov4.inference.counting import Counter
from yolov4.inference.predictor import Detections
from yolov4.inference.tracking import TRACKER_KEYS, TRACKERS, Tracker, TrackTrails

FPS = 25


def tracker_config(name: str) -> dict:
    text = resources.files("yolov4.configs").joinpath(f"tracker/{name}.yaml").read_text()
    return yaml.safe_load(text)


def as_dets(boxes, scores=None, class_ids=None, size=(240, 320)) -> Detections:
    boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
    k = len(boxes)
    scores = np.full(k, 0.9, np.float32) if scores is None else np.asarray(scores, np.float32)
    class_ids = np.zeros(k, np.int64) if class_ids is None else np.asarray(class_ids, np.int64)
    return Detections(boxes, scores, class_ids, [SHAPES[c] for c in class_ids], size)


def track(tracker: Tracker, frames, indices=None) -> list[tuple[np.ndarray, np.ndarray]]:
    out = []
    for i, (boxes, scores, class_ids) in zip(indices or range(len(frames)), frames):
        dets = tracker.update(as_dets(boxes, scores, class_ids), i)
        out.append((dets.track_ids, dets.boxes))
    return out


@pytest.fixture(scope="module")
def video():
    return make_tracking_video(render=False, fps=FPS)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_bytetrack_idf1_on_noisy_ground_truth(video, seed):
    """Ground truth with 4% box noise, objects under 30% visible missed, 10% dropped."""
    tracker = Tracker.from_config(tracker_config("bytetrack"), frame_rate=FPS)
    hyp = track(tracker, noisy_detections(video.truth, seed=seed))
    summary = mot_metrics([(gt.ids, gt.boxes) for gt in video.truth], hyp)
    assert summary["idf1"] >= 0.8, summary
    assert summary["num_unique_objects"] == len(SCRIPT)


def crossing(swap_at: int | None = None, n: int = 20):
    """Two boxes crossing horizontally (A left to right above B going right to left)."""
    truth, hyp = [], []
    for t in range(n):
        a = [10 + 12 * t, 100, 40 + 12 * t, 130]
        b = [250 - 12 * t, 110, 280 - 12 * t, 140]
        truth.append((np.array([1, 2]), np.array([a, b], np.float32)))
        ids = [8, 9] if swap_at is None or t < swap_at else [9, 8]
        hyp.append((np.array(ids), np.array([a, b], np.float32)))
    return truth, hyp


def test_id_switches_counted_on_a_hand_built_crossing():
    truth, hyp = crossing()
    assert mot_metrics(truth, hyp)["num_switches"] == 0
    truth, hyp = crossing(swap_at=11)  # both ids swap once after the crossing
    summary = mot_metrics(truth, hyp)
    assert summary["num_switches"] == 2
    assert summary["mota"] == pytest.approx(1 - 2 / 40)
    # one object re-identified under a new id for the last 5 frames: one switch
    truth, hyp = crossing()
    for ids, _ in hyp[15:]:
        ids[0] = 42
    assert mot_metrics(truth, hyp)["num_switches"] == 1


@pytest.mark.parametrize("name", TRACKERS)
def test_trackers_keep_ids_through_a_crossing(name):
    truth, _ = crossing()
    tracker = Tracker.from_config(tracker_config(name), frame_rate=FPS)
    hyp = track(tracker, [(boxes, np.full(2, 0.9), np.zeros(2, int)) for _, boxes in truth])
    summary = mot_metrics(truth, hyp)
    assert summary["num_switches"] == 0, summary
    assert all(np.all(ids >= 1) for ids, _ in hyp)


def test_ids_survive_skipped_frames(video):
    """Only every third frame reaches the tracker (a live source's newest-frame policy)."""
    kept = list(range(0, len(video.truth), 3))
    frames = [noisy_detections(video.truth, jitter=0.0, drop=0.0)[i] for i in kept]
    hyp = track(Tracker("bytetrack", frame_rate=FPS), frames, indices=kept)
    summary = mot_metrics([(video.truth[i].ids, video.truth[i].boxes) for i in kept], hyp)
    assert summary["num_switches"] == 0, summary
    assert summary["idf1"] >= 0.8, summary


def test_update_returns_the_input_detections_with_ids():
    tracker = Tracker("bytetrack", frame_rate=FPS, minimum_consecutive_frames=1)
    boxes = [[10, 10, 50, 50], [100, 100, 150, 160]]
    tracker.update(as_dets(boxes, class_ids=[1, 3]), 0)  # new tracks: ids from the next match
    first = tracker.update(as_dets(np.array(boxes) + 2, class_ids=[1, 3]), 1)
    second = tracker.update(as_dets(np.array(boxes) + 4, class_ids=[1, 3]), 2)
    np.testing.assert_array_equal(second.boxes, np.array(boxes, np.float32) + 4)
    assert second.class_names == ["rectangle", "cross"]
    assert second.track_ids.dtype == np.int64
    assert sorted(first.track_ids.tolist()) == [1, 2]
    assert second.track_ids.tolist() == first.track_ids.tolist()
    record = second.to_dict()["detections"]
    assert [d["track_id"] for d in record] == second.track_ids.tolist()
    assert "track_id" not in as_dets(boxes).to_dict()["detections"][0]
    # unconfirmed detections: dropped, or kept with id -1
    fresh = Tracker("bytetrack", frame_rate=FPS)  # minimum_consecutive_frames 2
    assert len(fresh.update(as_dets(boxes), 0)) == 0
    kept = Tracker("bytetrack", frame_rate=FPS, keep_unconfirmed=True).update(as_dets(boxes), 0)
    assert kept.track_ids.tolist() == [-1, -1]


def gt_dets(gt) -> Detections:
    dets = as_dets(gt.boxes, class_ids=gt.class_ids)
    dets.track_ids = gt.ids
    return dets


def expected_crossings(x_line: float) -> tuple[set[int], set[int]]:
    """From the script's first and last keyframes: which objects cross x = x_line, which way."""
    left_to_right, right_to_left = set(), set()
    for i, (*_, keys) in enumerate(SCRIPT, start=1):
        x0, x1 = keys[0][1], keys[-1][1]
        if x0 < x_line < x1:
            left_to_right.add(i)
        elif x1 < x_line < x0:
            right_to_left.add(i)
    return left_to_right, right_to_left


def test_line_counts_equal_the_ground_truth(video, tmp_path):
    line = [[160, -10], [160, 250]]  # top to bottom: "in" is left to right
    ltr, rtl = expected_crossings(160)
    assert len(ltr) >= 2 and len(rtl) >= 2
    counter = Counter(line=line)
    for t, gt in enumerate(video.truth):
        counter.update(gt_dets(gt), t)
    summary = counter.summary()
    assert set(summary["line"]["in_ids"]) == ltr
    assert set(summary["line"]["out_ids"]) == rtl
    # the same counts from the tracker's own ids, ground-truth boxes as detections
    tracker, counter = Tracker("bytetrack", frame_rate=FPS), Counter(line=line)
    for t, (boxes, scores, class_ids) in enumerate(noisy_detections(video.truth, 0, 0)):
        counter.update(tracker.update(as_dets(boxes, scores, class_ids), t), t)
    assert (counter.summary()["line"]["in"], counter.summary()["line"]["out"]) == (
        len(ltr),
        len(rtl),
    )
    path = counter.write(tmp_path / "counts.csv")
    rows = list(csv.DictReader(open(path)))
    assert len(rows) == len(video.truth) and rows[-1]["line_in"] == str(len(ltr))


def test_line_counts_only_through_the_segment(video):
    counter = Counter(line=[[160, 0], [160, 100]])  # upper part of the frame only
    for t, gt in enumerate(video.truth):
        counter.update(gt_dets(gt), t)
    # the diagonal circle (id 5) crosses x = 160 at y ~ 121 (below the segment): not counted
    y5 = np.interp(160, [40, 260], [200, 50])
    assert y5 > 100
    assert counter.summary()["line"] == {
        "points": [[160.0, 0.0], [160.0, 100.0]], "margin": 0.1, "in": 0, "out": 0, "in_ids": [],
        "out_ids": [],
    }  # fmt: skip


def test_zone_counts_equal_the_ground_truth(video, tmp_path):
    zone = [[40.25, 40.25], [200.25, 40.25], [200.25, 160.25], [40.25, 160.25]]
    triangle = [[0.5, 0.5], [300.5, 0.5], [0.5, 230.5]]
    rect, tri = Counter(zone=zone), Counter(zone=triangle, anchor="bottom_center")
    for t, gt in enumerate(video.truth):
        cx, cy = (gt.boxes[:, 0] + gt.boxes[:, 2]) / 2, (gt.boxes[:, 1] + gt.boxes[:, 3]) / 2
        inside = (cx > 40.25) & (cx < 200.25) & (cy > 40.25) & (cy < 160.25)
        assert rect.update(gt_dets(gt), t)["zone"] == int(inside.sum())
        bottom = np.stack([cx, gt.boxes[:, 3]], 1)
        expected = int(MplPath(triangle).contains_points(bottom).sum()) if len(gt.ids) else 0
        assert tri.update(gt_dets(gt), t)["zone"] == expected
    summary = json.loads(rect.write(tmp_path / "zone.json").read_text())["summary"]
    assert summary["zone"]["max"] >= 2 and summary["zone"]["unique_ids"] >= 3


@pytest.mark.parametrize(
    ("kwargs", "named"),
    [
        ({"tracker": "deepsort"}, "deepsort"),
        ({"tracker": "bytetrack", "match_thresh": 0.8}, "match_thresh"),
        ({"tracker": "sort", "high_conf_det_threshold": 0.5}, "high_conf_det_threshold"),
        ({"tracker": "bytetrack", "lost_track_buffer": 2.5}, "lost_track_buffer"),
        ({"tracker": "bytetrack", "track_activation_threshold": 1.5}, "track_activation_threshold"),
        ({"tracker": "botsort", "cmc_method": "magic"}, "cmc_method"),
        ({"tracker": "ocsort", "frame_rate": 0}, "frame_rate"),
    ],
)
def test_bad_tracker_config_is_named(kwargs, named):
    with pytest.raises(ConfigError, match=named):
        Tracker(**kwargs)


def test_config_group_covers_every_key():
    for name in TRACKERS:
        cfg = tracker_config(name)
        assert cfg["tracker"] == name
        assert set(cfg) - {"tracker", "frame_rate"} == set(TRACKER_KEYS[name])
        assert Tracker.from_config(cfg, frame_rate=12.5).frame_rate == 12.5
    with pytest.raises(ConfigError, match="'tracker'"):
        Tracker.from_config({"lost_track_buffer": 3})
    tracker = Tracker.from_name("ocsort", frame_rate=10, delta_t=5)
    expected = {
        k: v for k, v in tracker_config("ocsort").items() if k not in ("tracker", "frame_rate")
    }
    assert tracker.options == {**expected, "delta_t": 5} and tracker.frame_rate == 10
    with pytest.raises(ConfigError, match="'deepsort'.*bytetrack"):
        Tracker.from_name("deepsort")
    with pytest.raises(ConfigError, match="delta"):
        Tracker.from_name("ocsort", delta=5)


def test_a_tracker_by_name_is_the_one_predict_runs():
    """``Tracker(name)`` in Python and ``predict.py track=<name>`` run the same settings, the
    packaged config's: a track starts from a box of 0.25 (the `trackers` package's own ByteTrack
    and BoT-SORT need 0.7)."""
    for name in TRACKERS:
        shipped = {
            k: v for k, v in tracker_config(name).items() if k not in ("tracker", "frame_rate")
        }
        assert Tracker(name).options == shipped
        assert Tracker(name, lost_track_buffer=7).options == {**shipped, "lost_track_buffer": 7}
        for key in ("track_activation_threshold", "high_conf_det_threshold"):
            assert shipped.get(key, 0.25) == 0.25, (name, key)
    for name in TRACKERS:  # a box scored 0.3 in every frame gets an id
        tracker = Tracker(name, frame_rate=FPS)
        ids = [tracker.update(as_dets([[10 + t, 10, 60 + t, 60]], scores=[0.3]), t).track_ids
               for t in range(5)]  # fmt: skip
        assert ids[-1].tolist() == [1], (name, ids)


def test_bad_frame_index_and_counter_input():
    tracker = Tracker("bytetrack")
    tracker.update(as_dets([[0, 0, 10, 10]]), 5)
    with pytest.raises(InputError, match="frame_index 5 after 5"):
        tracker.update(as_dets([[0, 0, 10, 10]]), 5)
    tracker.reset()
    with pytest.raises(InputError, match=r"frame_index: expected an int >= 0, got -1"):
        tracker.update(as_dets([[0, 0, 10, 10]]), -1)
    with pytest.raises(InputError, match=r"dets: expected one image's Detections, got ndarray$"):
        tracker.update(np.zeros((2, 6)), 0)
    with pytest.raises(
        InputError, match=r"got list \(the Predictor returns one per image: pass \[0\]\)"
    ):
        tracker.update([as_dets([[0, 0, 10, 10]])], 0)
    tracker.update(as_dets([[0, 0, 10, 10]]), 0)
    with pytest.raises(ConfigError, match="count_line"):
        Counter(line=[[0, 0], [0, 0]])
    with pytest.raises(ConfigError, match="count_zone"):
        Counter(zone=[[0, 0], [1, 1]])
    with pytest.raises(ConfigError, match="count_line"):
        Counter(line="0,0,1,1")
    with pytest.raises(InputError, match="track ids"):
        Counter(line=[[0, 0], [1, 1]]).update(as_dets([[0, 0, 10, 10]]), 0)


def test_generated_video_frames_and_mp4(tmp_path):
    video = make_tracking_video(num_frames=50, fps=FPS)
    assert len(video.frames) == len(video.truth) == 50
    assert video.frames[0].shape == (240, 320, 3) and video.frames[0].dtype == np.uint8
    # the rectangle (id 1) passes fully behind the circle (id 2) around frame 40
    occluded = [gt.visible[gt.ids == 1] for gt in video.truth if 1 in gt.ids]
    assert min(v.min() for v in occluded) == 0.0
    # a shape's box matches its pixels: the stopped triangle's colour fills its box's centre
    gt = video.truth[45]
    x1, y1, x2, y2 = gt.boxes[gt.ids == 3][0].astype(int)
    centre = video.frames[45][(y1 + y2) // 2, (x1 + x2) // 2].astype(int)
    assert np.abs(centre - SCRIPT[2][1]).sum() < 40
    path = write_video(tmp_path / "v.mp4", video.frames, fps=FPS)
    import cv2

    cap = cv2.VideoCapture(str(path))
    assert int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) == 50
    cap.release()
    with pytest.raises(InputError, match="at least one frame"):
        write_video(tmp_path / "empty.mp4", [])
    with pytest.raises(ConfigError, match="num_frames"):
        make_tracking_video(num_frames=0)


def test_trails_follow_each_track_and_are_drawn():
    video = make_tracking_video(num_frames=30, fps=FPS)
    tracker, trails = Tracker("bytetrack", frame_rate=FPS), TrackTrails(length=5)
    for t, (boxes, scores, class_ids) in enumerate(noisy_detections(video.truth, 0, 0)):
        dets = tracker.update(as_dets(boxes, scores, class_ids), t)
        trails.update(dets)
    image = video.frames[-1].copy()
    trails.draw(image, dets)
    assert len(dets) >= 3 and all(len(trails.points[i]) == 5 for i in dets.track_ids.tolist())
    # the trail of the shape entering from the top (moving down) runs down its column
    [tid] = dets.track_ids[np.isclose((dets.boxes[:, 0] + dets.boxes[:, 2]) / 2, 80, atol=3)]
    xs, ys = zip(*trails.points[int(tid)])
    assert max(xs) - min(xs) <= 2 and list(ys) == sorted(ys) and ys[-1] > ys[0]
    assert not np.array_equal(image, video.frames[-1])  # something drawn
    changed = np.any(image != video.frames[-1], axis=2)
    x, y = trails.points[int(tid)][0]
    assert changed[y - 2 : y + 3, x - 2 : x + 3].any()  # at the trail's start
    with pytest.raises(ConfigError, match="trail length"):
        TrackTrails(length=0)


def _one_box(box: list[float], tid: int) -> Detections:
    """One tracked box of class 0 in a 320x240 frame."""
    return Detections(
        np.array([box], np.float32),
        np.array([0.9], np.float32),
        np.array([0]),
        ["circle"],
        (240, 320),
        track_ids=np.array([tid]),
    )


def _one_new_track(frame: int) -> Detections:
    x = float(frame % 200)
    return _one_box([x, 10, x + 20, 30], frame)


def test_counter_and_trails_stay_flat_on_an_endless_stream():
    """A new track every frame for 5,000 frames: the per-id state of the counter and the trails
    stays bounded by how long a lost id is kept, and the counts stay whole."""
    counter = Counter(zone=[[0, 0], [400, 0], [400, 400], [0, 400]], keep_rows=False,
                      forget_after=50)  # fmt: skip
    trails = TrackTrails(length=5, forget_after=50)
    for frame in range(5000):
        dets = _one_new_track(frame)
        counter.update(dets, frame)
        trails.update(dets)
    summary = counter.summary()
    assert summary["frames"] == 5000 and summary["zone"]["max"] == 1
    assert summary["zone"]["unique_ids"] == 5000 and summary["zone"]["mean"] == 1.0
    assert len(counter._seen) <= 150 and not counter.rows
    assert len(trails.points) <= 150
    assert list(trails.points[4999]) == [(round(4999 % 200 + 10), 20)]
    with pytest.raises(ConfigError, match="keep_rows=False"):
        counter.write("counts.csv")


def test_csv_has_every_rows_columns_when_ids_appear_after_the_first_frame(tmp_path):
    """A zone counter's first frame without track ids, later ones with them: one header."""
    counter = Counter(zone=[[0, 0], [60, 0], [60, 100], [0, 100]])
    box = np.array([[10.0, 10.0, 30.0, 30.0]])
    untracked = as_dets(box, np.array([0.9]), np.array([0]))
    counter.update(untracked, 0)
    tracked = as_dets(box, np.array([0.9]), np.array([0]))
    tracked.track_ids = np.array([7])
    counter.update(tracked, 1)
    rows = list(csv.DictReader(open(counter.write(tmp_path / "c.csv"))))
    assert len(rows) == 2 and "zone_ids" in rows[0] and rows[1]["zone_ids"] == "7"


def test_bad_detections_name_the_frame_and_the_field():
    tracker = Tracker("bytetrack", frame_rate=FPS)
    box = [[10.0, 10.0, 30.0, 30.0]]
    tracker.update(as_dets(box), 0)
    nan = as_dets([[float("nan"), 10.0, 30.0, 30.0]])
    with pytest.raises(InputError, match="frame 1: boxes hold NaN or infinite values"):
        tracker.update(nan, 1)
    short = as_dets(box)
    short.scores = np.array([0.9, 0.8], np.float32)
    with pytest.raises(InputError, match=r"frame 2: expected boxes \(N, 4\), scores \(N,\)"):
        tracker.update(short, 2)
    listed = as_dets(box)
    listed.boxes, listed.scores, listed.class_ids = box, [0.9], [0]  # plain lists are fine
    assert tracker.update(listed, 3).boxes.shape == (1, 4)
    # x, y, w, h passed as corners were never tracked, and scores of 5 were taken, silently
    with pytest.raises(InputError, match=r"frame 4: 1 boxes with x2 < x1 or y2 < y1, e.g. \[30"):
        tracker.update(as_dets([[30.0, 30.0, 10.0, 10.0]]), 4)
    loud = as_dets(box)
    loud.scores = np.array([5.0], np.float32)
    with pytest.raises(InputError, match=r"frame 5: scores outside \[0, 1\], e.g. 5.0"):
        tracker.update(loud, 5)
    cmc = Tracker("botsort", enable_cmc=True, frame_rate=FPS)  # OpenCV's raw channel error
    with pytest.raises(
        InputError, match=r"frame: expected an \(H, W, 3\) image array, got \(5, 5\)"
    ):
        cmc.update(as_dets(box), 0, frame=np.zeros((5, 5), np.uint8))
    assert Tracker("bytetrack", lost_track_buffer=np.int64(20)).options["lost_track_buffer"] == 20


def test_counter_names_the_frame_of_a_nan_box_or_missing_ids():
    """A NaN box has no side of the line: refused, not dropped from the crossings silently."""
    counter = Counter(line=[[50, 0], [50, 100]], zone=[[0, 0], [60, 0], [60, 100], [0, 100]])
    dets = as_dets([[10.0, 10.0, 30.0, 30.0]])
    dets.track_ids = np.array([1])
    counter.update(dets, 0)
    nan = as_dets([[float("nan"), 10.0, 30.0, 30.0]])
    nan.track_ids = np.array([1])
    with pytest.raises(InputError, match="frame 1: boxes hold NaN or infinite values"):
        counter.update(nan, 1)
    fewer = as_dets([[60.0, 10.0, 80.0, 30.0], [0.0, 0.0, 5.0, 5.0]])
    fewer.track_ids = np.array([1])
    with pytest.raises(InputError, match=r"frame 2: expected one track id per box \(2\), got 1"):
        counter.update(fewer, 2)
    flat = as_dets([[60.0, 10.0, 80.0, 30.0]])
    flat.boxes, flat.track_ids = np.zeros((2, 3)), [1, 2]
    with pytest.raises(InputError, match=r"frame 3: expected boxes \(N, 4\), got shape \(2, 3\)"):
        counter.update(flat, 3)
    moved = as_dets([[60.0, 10.0, 80.0, 30.0]])
    moved.track_ids = [1]  # a list is fine
    assert counter.update(moved, 4)["crossed_out"] + counter.rows[-1]["crossed_in"] == [1]
    assert counter.frames == 2  # the refused frames left no row


def test_counter_draws_its_line_and_zone_with_the_counts():
    from yolov4.inference.counting import LINE_COLOUR, ZONE_COLOUR

    counter = Counter(line=[[50, 0], [50, 99]], zone=[[60, 60], [90, 60], [90, 90], [60, 90]])
    for index, x in enumerate((20.0, 70.0)):  # track 1 crosses the line left to right: in
        dets = as_dets([[x, 65.0, x + 10, 75.0]])
        dets.track_ids = np.array([1])
        counter.update(dets, index)
    image = counter.draw(np.zeros((100, 120, 3), np.uint8))
    assert (image[30:99, 50] == LINE_COLOUR).all(1).mean() > 0.9  # the line, below its label
    assert (image[60, 62:89] == ZONE_COLOUR).all()  # the zone's top edge
    ink = lambda colour: (image == colour).all(2)  # noqa: E731
    assert ink(LINE_COLOUR)[:25, 54:].any() and ink(ZONE_COLOUR)[62:80, 62:89].any()  # labels
    assert counter.summary()["line"]["in"] == 1 and counter.rows[-1]["zone"] == 1


def _track_at(x: float, frame: int, tid: int = 1) -> Detections:
    """One tracked 40-px-tall box whose centre is at ``x``."""
    return _one_box([x - 10, 100, x + 10, 140], tid)


def test_a_box_jittering_on_the_line_crosses_once():
    """A box that crosses in and then jitters about the line (detections move a few pixels
    frame to frame) counted a false "out" (and would have counted again, but for the ids kept
    per direction): the side is kept in a band of count_margin x box height (4 px here)."""
    path = [150, 155, 161, 158, 162, 159, 161, 157, 163, 170, 180]  # in once, then jitter
    line = [[160, 0], [160, 240]]
    counter = Counter(line=line)
    for t, x in enumerate(path):
        counter.update(_track_at(x, t), t)
    assert (counter.summary()["line"]["in"], counter.summary()["line"]["out"]) == (1, 0)
    loose = Counter(line=line, margin=0)  # any change of side
    for t, x in enumerate(path):
        loose.update(_track_at(x, t), t)
    assert (loose.summary()["line"]["in"], loose.summary()["line"]["out"]) == (1, 1)
    # a real return (beyond the band) is a crossing out; a fast object jumping over it counts
    back = Counter(line=line)
    for t, x in enumerate([150, 170, 150, 120]):
        back.update(_track_at(x, t), t)
    assert (back.summary()["line"]["in_ids"], back.summary()["line"]["out_ids"]) == ([1], [1])
    with pytest.raises(ConfigError, match=r"count_margin: expected a fraction .* got -1"):
        Counter(line=line, margin=-1)


def test_counter_refuses_frames_out_of_order_and_settings_that_count_nothing():
    """A Counter fed frame 5 after frame 9 (two videos through one Counter), forget_after=-1
    (every id forgotten at once: counted again) and a zone on a line (nothing is ever in it)
    went on silently."""
    counter = Counter(line=[[160, 0], [160, 240]])
    counter.update(_track_at(150, 9), 9)
    with pytest.raises(
        InputError, match=r"frame 5: expected frames in increasing order, after frame 9"
    ):
        counter.update(_track_at(170, 5), 5)
    with pytest.raises(InputError, match=r"frame_index: expected an int >= 0, got -1"):
        Counter(line=[[160, 0], [160, 240]]).update(_track_at(150, -1), -1)
    with pytest.raises(ConfigError, match=r"forget_after: expected frames >= 1, got -1"):
        Counter(line=[[160, 0], [160, 240]], forget_after=-1)
    with pytest.raises(ConfigError, match=r"count_zone: expected a polygon with an area"):
        Counter(zone=[[0, 0], [10, 10], [20, 20]])
