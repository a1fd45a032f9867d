"""predict.py's outputs never replace its inputs, never collide, and one unreadable video in a
folder is skipped like an unreadable image."""

from __future__ import annotations

import hashlib
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_module

from yolov4 import build_model, save_checkpoint
from yolov4.cli.predict import predict
from yolov4.errors import ConfigError, InputError

SIZE = 64


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    model = build_model("yolov4-tiny", num_classes=2, input_size=[SIZE, SIZE])
    path = tmp_path_factory.mktemp("ckpt") / "best.pt"
    return save_checkpoint(path, model, ["a", "b"], {"input_size": [SIZE, SIZE]})


def _predict(*overrides: str) -> dict:
    with initialize_config_module(config_module="yolov4.configs", version_base="1.3"):
        cfg = compose("predict", overrides=["progress=false", *overrides])
    return predict(cfg)


def _video(path: Path, frames: int = 3) -> Path:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10.0, (48, 32))
    for k in range(frames):
        writer.write(np.full((32, 48, 3), 40 * k, np.uint8))
    writer.release()
    return path


def _digest(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.md5(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


def test_output_over_the_inputs_is_refused_before_anything_is_written(checkpoint, tmp_path):
    photos = tmp_path / "photos"
    photos.mkdir()
    for name in ("a.jpg", "B.JPG"):
        cv2.imwrite(str(photos / name), np.full((40, 60, 3), 90, np.uint8))
    before = _digest(photos)
    for source in (photos, photos / "a.jpg"):
        with pytest.raises(ConfigError, match=r"would overwrite .* input file.*save=false"):
            _predict(f"source={source}", f"checkpoint={checkpoint}", f"output={photos}")
        assert _digest(photos) == before  # not even predictions.jsonl
    summary = _predict(
        f"source={photos}", f"checkpoint={checkpoint}", f"output={photos}", "save=false"
    )
    assert summary["images"] == 2 and _digest(photos)["a.jpg"] == before["a.jpg"]


def test_output_that_is_a_file_is_named(checkpoint, tmp_path):
    image = tmp_path / "a.jpg"
    cv2.imwrite(str(image), np.full((40, 60, 3), 90, np.uint8))
    with pytest.raises(ConfigError, match="is a file; expected a folder"):
        _predict(f"source={image}", f"checkpoint={checkpoint}", f"output={image}")


def test_videos_of_one_name_write_two_videos_and_two_label_sets(checkpoint, tmp_path):
    mp4, avi = _video(tmp_path / "clip.mp4", 3), _video(tmp_path / "clip.avi", 2)
    out = tmp_path / "out"
    _predict(f"source=[{mp4},{avi}]", f"checkpoint={checkpoint}", f"output={out}", "save_txt=true")
    counts = {}
    for name in ("clip.mp4", "clip_1.mp4"):
        cap = cv2.VideoCapture(str(out / name))
        counts[name] = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
        cap.release()
    assert counts == {"clip.mp4": 3, "clip_1.mp4": 2}
    labels = {p.name for p in (out / "labels").iterdir()}
    assert labels == {f"clip_{k}.txt" for k in range(3)} | {f"clip_1_{k}.txt" for k in range(2)}


def test_an_unreadable_video_in_a_folder_is_skipped_and_reported(checkpoint, tmp_path):
    folder = tmp_path / "media"
    folder.mkdir()
    cv2.imwrite(str(folder / "a.jpg"), np.full((40, 60, 3), 90, np.uint8))
    _video(folder / "ok.avi", 2)
    (folder / "fake.mp4").write_bytes(b"not a video at all" * 10)
    summary = _predict(f"source={folder}", f"checkpoint={checkpoint}", f"output={tmp_path / 'o'}")
    assert summary["images"] == 1 and summary["frames"] == 2
    assert summary["skipped_count"] == 1 and "fake.mp4" in summary["skipped"][0]
    with pytest.raises(InputError, match="cannot read the video"):  # named alone: refused
        _predict(f"source={folder / 'fake.mp4'}", f"checkpoint={checkpoint}")


def test_crops_of_one_name_in_two_folders_keep_the_tree(checkpoint, tmp_path):
    tree = tmp_path / "tree"
    for sub in ("s1", "s2"):
        (tree / sub).mkdir(parents=True)
        cv2.imwrite(str(tree / sub / "x.jpg"), np.random.default_rng(0).integers(0, 255, (64, 64, 3), np.uint8))  # fmt: skip
    out = tmp_path / "out"
    _predict(f"source={tree}", f"checkpoint={checkpoint}", f"output={out}", "save_crops=true",
             "conf=0.0001", "max_det=2")  # fmt: skip
    crops = sorted(str(p.relative_to(out / "crops")).split("/", 1)[1] for p in (out / "crops").rglob("*.jpg"))  # fmt: skip
    assert crops == ["s1/x_0.jpg", "s1/x_1.jpg", "s2/x_0.jpg", "s2/x_1.jpg"]


def test_a_glob_keeps_the_tree_below_its_fixed_folders_and_a_rename_names_its_cause(
    checkpoint, tmp_path, caplog
):
    """'g/**/k.*' wrote k.png, k_1.jpg and k_2.jpg (flat, out of the docs' "folder tree"), and
    the log said "k.jpg is taken" where k.png had taken the name."""
    import logging

    for rel in ("g/k.png", "g/x/k.jpg", "g/y/k.jpg", "g/k.jpg"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(tmp_path / rel), np.full((40, 60, 3), 90, np.uint8))
    out = tmp_path / "out"
    with caplog.at_level(logging.INFO, logger="yolov4"):
        _predict(f"source={tmp_path / 'g' / '**' / 'k.*'}", f"checkpoint={checkpoint}",
                 f"output={out}", "save_txt=true")  # fmt: skip
    # k.jpg and k.png, one folder, would share labels/k.txt: the one read second is renamed
    first, second = tmp_path / "g" / "k.jpg", tmp_path / "g" / "k.png"  # in path order
    written = sorted(str(p.relative_to(out)) for p in out.rglob("k*.*"))
    assert written == sorted(["k.jpg", "k_1.png", "x/k.jpg", "y/k.jpg", "labels/k.txt",
                              "labels/k_1.txt", "labels/x/k.txt", "labels/y/k.txt"])  # fmt: skip
    assert f"{second}: its outputs are named k_1 ({first} already writes under k)" in caplog.text  # fmt: skip


def test_an_image_url_given_twice_is_read_once_as_a_file_is(checkpoint, tmp_path, caplog):
    """The same image URL given twice is fetched, predicted and written once, said (read
    twice, its second annotated copy would be written over the first)."""
    import json
    import logging

    from tests.inference.mjpeg_server import file_server

    for rel in ("x/a.jpg", "y/a.jpg"):
        (tmp_path / rel).parent.mkdir()
        cv2.imwrite(str(tmp_path / rel), np.full((40, 60, 3), 90, np.uint8))
    out = tmp_path / "out"
    with file_server(tmp_path) as (url, requests), caplog.at_level(logging.INFO, logger="yolov4"):
        x, y = f"{url}/x/a.jpg", f"{url}/y/a.jpg"
        summary = _predict(f"source=[{x},{x},{y}]", f"checkpoint={checkpoint}", f"output={out}")
    assert requests == {"/x/a.jpg": 1, "/y/a.jpg": 1}
    assert f"1 URL(s) or camera(s) given more than once, read once: image URL {x}" in caplog.text
    records = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    assert [r["file"] for r in records] == [x, y] and summary["images"] == 2
    assert len(list(out.glob("*a.jpg"))) == 2  # one annotated copy each (the host in its name)


def test_output_files_that_cannot_be_written_are_reported_and_the_run_goes_on(checkpoint, tmp_path):
    """A name too long for the file system once the frame and box numbers are added: the crops,
    labels that cannot be written are counted and listed, the records are complete."""
    video = _video(tmp_path / ("v" * 250 + ".avi"), 3)
    out = tmp_path / "out"
    summary = _predict(f"source={video}", f"checkpoint={checkpoint}", f"output={out}",
                       "save_crops=true", "save_txt=true", "conf=0.0001", "max_det=1")  # fmt: skip
    assert summary["frames"] == 3 and len((out / "predictions.jsonl").read_text().splitlines()) == 3
    unwritten = summary["unwritten"]
    assert summary["unwritten_count"] == len(unwritten) == 6  # 3 label files, 3 crops
    labels = [u for u in unwritten if ".txt: " in u]
    crops = [u for u in unwritten if "_0.jpg: " in u]
    assert len(labels) == len(crops) == 3
    assert all(u.endswith("File name too long") for u in labels)
    assert all(u.endswith("OpenCV could not write it") for u in crops)
    assert (out / ("v" * 250 + ".mp4")).is_file()  # the video's own name fits


def test_an_output_holding_an_earlier_run_is_refused_before_anything_is_read(checkpoint, tmp_path):
    """A second run into one output= replaced the first's predictions.jsonl and summary.json;
    it is refused up front (a missing source and checkpoint are never reached), naming the
    folder, what it holds and both ways out; overwrite=true writes there, keeping other files."""
    images = [tmp_path / f"{n}.jpg" for n in ("a", "b")]
    for image in images:
        cv2.imwrite(str(image), np.full((40, 60, 3), 90, np.uint8))
    out = tmp_path / "out"
    _predict(f"source=[{images[0]},{images[1]}]", f"checkpoint={checkpoint}", f"output={out}")
    before = _digest(out)
    missing = tmp_path / "missing"
    with pytest.raises(ConfigError) as refused:
        _predict(f"source={missing}.jpg", f"checkpoint={missing}.pt", f"output={out}")
    message = str(refused.value)
    assert message.startswith(f"output={out} holds the outputs of an earlier run")
    assert "summary.json" in message and "predictions.jsonl" in message
    assert "another output=" in message and "overwrite=true" in message
    assert _digest(out) == before
    with pytest.raises(ConfigError, match="overwrite must be true or false, got 'yes'"):
        _predict(f"source={images[0]}", f"checkpoint={checkpoint}", f"output={out}",
                 "overwrite=yes")  # fmt: skip
    _predict(f"source={images[1]}", f"checkpoint={checkpoint}", f"output={out}", "overwrite=true")
    records = (out / "predictions.jsonl").read_text().splitlines()
    assert len(records) == 1 and '"file": "' + str(images[1]) in records[0]
    assert _digest(out)["a.jpg"] == before["a.jpg"]  # the earlier run's other file stays


def test_runs_started_in_one_second_each_write_only_their_own_folder(
    checkpoint, tmp_path, monkeypatch, same_second
):
    """Two ``python predict.py`` runs without output= started in the same second: the second
    gets ``<date>_<time>_2`` before Hydra writes anything, so each folder holds its own
    ``.hydra/`` config, ``predict.log`` and predictions, and nothing of the other run."""
    from yolov4.cli.predict import hydra_main

    monkeypatch.chdir(tmp_path)
    images = {}
    for name in ("first", "second"):
        images[name] = tmp_path / f"{name}.jpg"
        cv2.imwrite(str(images[name]), np.full((40, 60, 3), 90, np.uint8))
        argv = ["predict.py", f"source={images[name]}", f"checkpoint={checkpoint}"]
        monkeypatch.setattr("sys.argv", [*argv, "progress=false"])
        hydra_main()
    root = tmp_path / "outputs" / "predict"
    folders = {"first": root / "2026-01-01_00-00-00", "second": root / "2026-01-01_00-00-00_2"}
    assert sorted(root.iterdir()) == sorted(folders.values())
    for name, folder in folders.items():
        other = "second" if name == "first" else "first"
        overrides = (folder / ".hydra" / "overrides.yaml").read_text()
        assert f"source={images[name]}" in overrides and str(images[other]) not in overrides
        log = (folder / "predict.log").read_text().splitlines()
        assert [line.split(" - wrote ")[1] for line in log if " - wrote " in line] == [str(folder)]
        records = (folder / "predictions.jsonl").read_text().splitlines()
        assert len(records) == 1 and f'"file": "{images[name]}"' in records[0]


def test_a_run_directory_holding_an_earlier_run_is_refused(checkpoint, tmp_path):
    """A run directory given again (hydra.run.dir=) that holds an earlier run's outputs is
    refused like such an output=, naming both ways out; overwrite=true writes there."""
    image = tmp_path / "a.jpg"
    cv2.imwrite(str(image), np.full((40, 60, 3), 90, np.uint8))
    run_dir = tmp_path / "run"
    given = [f"source={image}", f"checkpoint={checkpoint}", f"paths.output_dir={run_dir}"]
    _predict(*given)
    with pytest.raises(ConfigError) as refused:
        _predict(*given)
    message = str(refused.value)
    assert message.startswith(f"the run directory {run_dir} holds the outputs of an earlier run")
    assert "another hydra.run.dir=" in message and "overwrite=true" in message
    _predict(*given, "overwrite=true")
    assert len((run_dir / "predictions.jsonl").read_text().splitlines()) == 1


def test_a_full_disk_for_the_records_is_reported_and_the_run_ends_cleanly(
    checkpoint, tmp_path, monkeypatch
):
    """predictions.jsonl on a full disk: closing it raised ENOSPC through predict.py, with no
    summary.json; the records file is now reported unwritten and the summary says so."""
    import errno
    import io

    import yolov4.inference.writers as writers

    class FullDisk(io.StringIO):
        def __init__(self, room: int) -> None:
            super().__init__()
            self.room = room

        def flush(self) -> None:
            if len(self.getvalue()) > self.room:
                raise OSError(errno.ENOSPC, "No space left on device")

        def close(self) -> None:
            self.flush()

    real_open = Path.open

    def opened(path, *args, **kwargs):
        if path.name == writers.PREDICTIONS:
            return FullDisk(room=300)  # a record or so, then full
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(Path, "open", opened)
    video = _video(tmp_path / "clip.avi", 4)
    out = tmp_path / "out"
    summary = _predict(f"source={video}", f"checkpoint={checkpoint}", f"output={out}",
                       "save=false")  # fmt: skip
    assert summary["frames"] == 4
    [failed] = summary["unwritten"]
    assert failed.startswith(str(out / "predictions.jsonl")) and "No space left" in failed
    assert "later records lost" in failed
    assert (out / "summary.json").is_file()


def test_labels_and_crops_of_frames_and_images_never_share_a_name(checkpoint, tmp_path):
    """Frame 3 of clip.mp4 wrote labels/clip_3.txt, as did the image clip_3.jpg (one lost the
    other's boxes, unreported); x.png, renamed x_1 beside x.jpg, took the name of the real
    x_1.jpg, whose labels then read as x.png's."""
    folder = tmp_path / "media"
    folder.mkdir()
    _video(folder / "clip.mp4", 5)
    rng = np.random.default_rng(0)
    for name in ("clip_3.jpg", "x.jpg", "x.png", "x_1.jpg"):
        cv2.imwrite(str(folder / name), rng.integers(0, 255, (40, 60, 3), np.uint8))
    out = tmp_path / "out"
    summary = _predict(f"source={folder}", f"checkpoint={checkpoint}", f"output={out}",
                       "save_txt=true", "save_crops=true", "conf=0.0001", "max_det=2")  # fmt: skip
    assert summary["images"] == 4 and summary["frames"] == 5 and summary["unwritten"] == []
    labels = sorted(p.stem for p in (out / "labels").iterdir())
    assert len(labels) == 9  # one file per image and frame
    assert {"clip_3", "x", "x_1"} <= set(labels)  # the images keep their own names
    assert "clip_3_1" in labels  # the frame gave way to the image clip_3.jpg
    assert (out / "x_1.jpg").is_file() and (out / "x_2.png").is_file()  # x.png: not x_1
    crops = [p.stem for p in (out / "crops").rglob("*.jpg")]
    assert len(crops) == len(set(crops)) == 2 * 9


def test_a_list_written_on_windows_is_noted_once_in_the_predict_log(
    checkpoint, tmp_path, monkeypatch
):
    """``python predict.py source=data/valid.txt`` whose lines were written on Windows: the
    images are read and ``predict.log`` says once how their paths were read."""
    from yolov4.cli.predict import hydra_main

    (tmp_path / "data" / "obj").mkdir(parents=True)
    for name in ("a.jpg", "b.jpg"):
        cv2.imwrite(str(tmp_path / "data" / "obj" / name), np.full((40, 60, 3), 90, np.uint8))
    (tmp_path / "data" / "valid.txt").write_text("data\\obj\\a.jpg\ndata\\obj\\b.jpg\n")
    monkeypatch.chdir(tmp_path)
    argv = ["predict.py", "source=data/valid.txt", f"checkpoint={checkpoint}", "progress=false"]
    monkeypatch.setattr("sys.argv", argv)
    hydra_main()
    (out,) = (tmp_path / "outputs" / "predict").iterdir()  # the run's folder
    assert len((out / "predictions.jsonl").read_text().splitlines()) == 2
    log = (out / "predict.log").read_text()
    note = (
        "2 path(s) of data/valid.txt written with `\\` (on Windows) read with `/` "
        "(e.g. data\\obj\\a.jpg as data/obj/a.jpg)"
    )
    assert log.count(note) == 1, log
