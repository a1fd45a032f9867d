"""predict.py's sources on generated files: every kind a user may type, the errors raised before
any model is loaded, files that do not decode (skipped, not fatal), and live streams (newest
frame or a bounded queue, reconnection after a cut)."""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from tests.inference.mjpeg_server import MjpegServer, file_server, level
from yolov4.errors import InputError
from yolov4.inference.sources import ImageFiles, Stream, VideoFile, open_sources, prefetch

RNG = np.random.default_rng(0)


def write_image(path: Path, h: int = 40, w: int = 56) -> np.ndarray:
    path.parent.mkdir(parents=True, exist_ok=True)
    image = RNG.integers(0, 255, (h, w, 3), dtype=np.uint8)
    assert cv2.imwrite(str(path), image)
    return image


def write_video(path: Path, n: int = 7, fps: float = 12.0, size=(64, 48)) -> None:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, size)
    for k in range(n):
        writer.write(np.full((size[1], size[0], 3), 20 * k, np.uint8))
    writer.release()


def frames_of(sources) -> list:
    return [f for s in sources for f in s.frames()]


@pytest.fixture
def tree(tmp_path) -> Path:
    """A folder tree of mixed formats, a corrupt image, a video and files that are neither."""
    root = tmp_path / "photos"
    for rel in ("a.jpg", "b.png", "c.bmp", "sub/d.webp", "sub/deeper/e.tiff", "sub/F.JPG"):
        write_image(root / rel)
    (root / "sub" / "broken.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    (root / "notes.md").write_text("not an image")
    write_video(root / "clip.mp4")
    return root


def test_a_folder_is_read_recursively_by_extension(tree):
    sources = open_sources(str(tree))
    # sorted paths: a.jpg b.png c.bmp | clip.mp4 | sub/...
    assert [type(s).__name__ for s in sources] == ["ImageFiles", "VideoFile", "ImageFiles"]
    files = sorted(f.name for s in sources if isinstance(s, ImageFiles) for f in s.frames())
    assert files == sorted(
        [
            "a.jpg",
            "b.png",
            "c.bmp",
            "sub/broken.jpg",
            "sub/d.webp",
            "sub/deeper/e.tiff",
            "sub/F.JPG",
        ]
    )
    frames = frames_of(sources)
    broken = [f for f in frames if f.image is None]
    assert len(broken) == 1 and "broken.jpg" in broken[0].error  # skipped, not fatal
    decoded = [f for f in frames if f.image is not None and f.frame is None]
    assert len(decoded) == 6 and all(f.image.shape == (40, 56, 3) for f in decoded)
    assert sum(f.frame is not None for f in frames) == 7  # the video's frames


def test_run_folders_inside_a_source_folder_are_left_out(tree, caplog):
    """predict.py source=. in a photo folder, twice: the second run read the first one's
    annotated copies (outputs/predict/<time>/, a Hydra run) as inputs, 3 images then 6."""
    import logging

    run = tree / "outputs" / "predict" / "2026-12-06_10-00-00"
    (run / ".hydra").mkdir(parents=True)
    write_image(run / "a.jpg")
    other = tree / "mine"  # an output= folder of predict.py
    write_image(other / "a.jpg")
    (other / "predictions.jsonl").write_text("")
    with caplog.at_level(logging.WARNING, logger="yolov4"):
        names = [f.name for s in open_sources(str(tree)) if isinstance(s, ImageFiles) for f in s.files]  # fmt: skip
    assert not any("outputs" in n or "mine" in n for n in names) and len(names) == 7
    assert "left out 2 run folder(s)" in caplog.text
    assert [len(s) for s in open_sources(str(run))] == [1]  # named itself: read


def test_images_of_formats_not_read_are_named_not_left_out_silently(tmp_path, caplog):
    """A folder of GIFs and HEICs beside PNGs predicted the PNGs only, without a word."""
    write_image(tmp_path / "a.png")
    (tmp_path / "b.gif").write_bytes(b"GIF89a")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "c.HEIC").write_bytes(b"\0")
    (tmp_path / "labels.txt").write_text("0 0.5 0.5 0.1 0.1\n")  # not an image: no word
    for source in (str(tmp_path), str(tmp_path / "**" / "*")):
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="yolov4"):
            (images,) = open_sources(source)
        assert [f.name for f in images.files] == ["a.png"]
        assert "left out 2 image file(s) of a format it does not read (.gif, .heic)" in caplog.text


def test_an_image_url_is_one_image_not_a_stream_without_end(tmp_path):
    """http://host/a.jpg was opened as a stream: OpenCV reads the image as one frame, the
    stream 'ended', was reconnected, and the run predicted the same image until killed."""
    from yolov4.inference.images import load_image
    from yolov4.inference.sources import ImageURL, is_live_source

    write_image(tmp_path / "a.jpg")
    with file_server(tmp_path) as (url, requests):
        (source,) = open_sources(f"{url}/a.jpg?size=big")
        assert isinstance(source, ImageURL) and not is_live_source(f"{url}/a.jpg")
        (frame,) = frames_of([source])
    assert frame.error is None and frame.frame is None and frame.file == f"{url}/a.jpg?size=big"
    assert np.array_equal(frame.image, load_image(tmp_path / "a.jpg"))  # as the file
    assert requests == {"/a.jpg?size=big": 1}  # fetched when opened, its body kept on disk
    assert is_live_source("http://cam.local/video.mjpg")  # a stream stays one


def test_an_image_urls_body_waits_on_disk_and_goes_once_read(tmp_path, monkeypatch):
    """Each image URL's bytes (up to 256 MiB) were held in memory from the opening of the
    sources to the end of the run."""
    import tempfile

    temp = tmp_path / "temp"
    temp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(temp))
    write_image(tmp_path / "a.jpg")
    write_image(tmp_path / "b.png")
    with file_server(tmp_path) as (url, requests):
        a, b = open_sources([f"{url}/a.jpg", f"{url}/b.png"])
        with pytest.raises(InputError, match="HTTP 404"):
            open_sources(f"{url}/none.jpg")
    assert requests == {"/a.jpg": 1, "/b.png": 1, "/none.jpg": 1}
    assert not [k for k, v in vars(a).items() if isinstance(v, bytes | bytearray)]
    assert sorted(temp.iterdir()) == sorted([a.path, b.path])  # the 404 left no file
    assert a.path.read_bytes() == (tmp_path / "a.jpg").read_bytes()
    (frame,) = a.frames()
    assert frame.image is not None and not a.path.exists()  # read: its file is gone
    b.close()  # a run that ends before reading it
    assert not list(temp.iterdir())


def test_an_image_url_that_cannot_be_fetched_is_refused_when_opened(tmp_path):
    """A refused, missing (404) or unresolvable URL was one skipped image of a run that loaded
    the model and exited 0, where a camera or stream that refuses is an InputError."""
    with file_server(tmp_path) as (url, _):
        with pytest.raises(InputError, match=r"/none.png': cannot fetch the image \(HTTP 404 "):
            open_sources(f"{url}/none.png")
    with pytest.raises(InputError, match=r"^source 'http://127.0.0.1:9/a.jpg': cannot fetch"):
        open_sources("http://127.0.0.1:9/a.jpg")  # nothing listens on port 9 (discard)
    (tmp_path / "not-an-image.jpg").write_bytes(b"<html>")  # fetched: a decode error, skipped
    with file_server(tmp_path) as (url, _):
        (frame,) = frames_of(open_sources(f"{url}/not-an-image.jpg"))
    assert frame.image is None and frame.error.startswith(f"{url}/not-an-image.jpg: ")


def test_image_pixels_are_rgb_as_decoded(tmp_path):
    bgr = write_image(tmp_path / "x.png")
    [frame] = frames_of(open_sources(str(tmp_path / "x.png")))
    np.testing.assert_array_equal(frame.image, bgr[..., ::-1])
    assert (frame.file, frame.frame, frame.timestamp_ms) == (str(tmp_path / "x.png"), None, None)


def test_a_glob_and_a_list_file(tree, tmp_path):
    found = frames_of(open_sources(str(tree / "**" / "*.png")))
    assert [Path(f.file).name for f in found] == ["b.png"]
    found = frames_of(open_sources(str(tree / "sub" / "*")))
    assert sorted(Path(f.file).name for f in found) == ["F.JPG", "broken.jpg", "d.webp"]
    listing = tmp_path / "list.txt"
    listing.write_text(f"photos/a.jpg\n\n# a comment\n{tree / 'sub' / 'd.webp'}\nphotos/clip.mp4\n")
    sources = open_sources(str(listing))
    names = [Path(f.file).name for f in frames_of(sources)]
    assert names[:2] == ["a.jpg", "d.webp"] and names[2:] == ["clip.mp4"] * 7
    listing.write_text("photos/a.jpg\n\n# a comment\nphotos/gone.jpg\n")
    with pytest.raises(InputError, match=r"1 listed path\(s\) do not exist, .* first line 4: "):
        open_sources(str(listing))  # the file's line, not the entry's 0-based index
    listing.write_text("photos/a.jpg\nhttp://example.com/b.jpg\n")  # read as a path: "http:/..."
    with pytest.raises(InputError, match=r"not URLs \(line 2: http://example.com/b.jpg\)"):
        open_sources(str(listing))


def test_globs_and_lists_keep_the_tree_below_their_fixed_folder(tree, tmp_path, monkeypatch):
    """Output names: a glob's relative to its folders before the first wildcard, a list's
    relative to the list's folder; a file outside (or a glob's "..") by its file name."""
    from yolov4.inference.sources import glob_root

    assert glob_root("in/**/*.jpg") == Path("in") and glob_root("*.jpg") == Path(".")
    assert glob_root("/a/b/[xy]/c/*.png") == Path("/a/b")
    names = sorted(f.name for f in frames_of(open_sources(str(tree / "**" / "*.[jJ]*"))))
    assert names == ["a.jpg", "sub/F.JPG", "sub/broken.jpg"]
    names = [f.name for f in frames_of(open_sources(str(tree / "s*" / "d*")))]
    assert names == ["sub/d.webp"]
    escape = frames_of(open_sources(str(tree / "s*" / ".." / "a.jpg")))
    assert [f.name for f in escape] == ["a.jpg"]  # not sub/../a.jpg
    write_image(tmp_path / "elsewhere" / "e.png")
    listing = tree / "list.txt"
    listing.write_text(
        f"sub/deeper/e.tiff\n{tmp_path / 'elsewhere' / 'e.png'}\n../photos/c.bmp\n"
        f"{tree / 'sub' / 'd.webp'}\n"
    )
    monkeypatch.chdir(tmp_path)  # the list named by a relative path, an entry by an absolute one
    names = [f.name for f in frames_of(open_sources("photos/list.txt"))]
    assert names == ["sub/deeper/e.tiff", "e.png", "c.bmp", "sub/d.webp"]


def test_a_darknet_list_from_its_root_is_read_as_the_datasets_read_it(tmp_path, monkeypatch):
    """darknet's data/valid.txt lists data/obj/v0.jpg, relative to darknet's root (the working
    directory): train.py read it, predict.py looked for data/data/obj/v0.jpg."""
    from yolov4.data.yolo_txt import load_yolo

    for name in ("v0.jpg", "v1.jpg"):
        write_image(tmp_path / "data" / "obj" / name)
    write_image(tmp_path / "data" / "here.jpg")  # beside the list: read from the list's folder
    write_image(tmp_path / "here.jpg")  # the same entry from the working directory: not read
    listing = tmp_path / "data" / "valid.txt"
    listing.write_text("data/obj/v0.jpg\ndata/obj/v1.jpg\nhere.jpg\n")
    monkeypatch.chdir(tmp_path)
    sources = open_sources("data/valid.txt")
    files = [Path(f).resolve() for s in sources for f in s.files]
    want = [tmp_path / "data" / "obj" / "v0.jpg", tmp_path / "data" / "obj" / "v1.jpg"]
    assert files == [*want, tmp_path / "data" / "here.jpg"]
    read = load_yolo("data/valid.txt", ["a"]).records  # the datasets' reading of the list
    assert [Path(r.file).resolve() for r in read] == files
    # outputs keep the tree below the folder each entry was found from
    names = [f.name for f in frames_of(sources)]
    assert names == ["data/obj/v0.jpg", "data/obj/v1.jpg", "here.jpg"]
    monkeypatch.chdir(tmp_path / "data")  # darknet's root is elsewhere now: a clear error
    with pytest.raises(InputError, match=r"neither from the list's folder .* first line 1: data/"):
        open_sources("valid.txt")


def test_list_lines_written_on_windows_are_read_with_slashes_and_noted_once(
    tmp_path, monkeypatch, caplog
):
    """darknet's data/valid.txt saved on Windows (`data\\obj\\v0.jpg`): read as its `/` twin
    is (the same files, output names and folders), with one note for the list."""
    for name in ("v0.jpg", "v1.jpg"):
        write_image(tmp_path / "data" / "obj" / name)
    (tmp_path / "data" / "posix.txt").write_text("data/obj/v0.jpg\ndata/obj/v1.jpg\n")
    (tmp_path / "data" / "win.txt").write_text("data\\obj\\v0.jpg\r\ndata\\obj\\v1.jpg\r\n")
    monkeypatch.chdir(tmp_path)
    with caplog.at_level(logging.INFO, logger="yolov4"):
        posix = frames_of(open_sources("data/posix.txt"))
        assert "written with" not in caplog.text
        win = frames_of(open_sources("data/win.txt"))
    assert [(f.file, f.name) for f in win] == [(f.file, f.name) for f in posix]
    assert [f.name for f in win] == ["data/obj/v0.jpg", "data/obj/v1.jpg"]
    note = (
        "source 'data/win.txt': 2 path(s) of data/win.txt written with `\\` (on Windows) read "
        "with `/` (e.g. data\\obj\\v0.jpg as data/obj/v0.jpg)"
    )
    assert [r.getMessage() for r in caplog.records] == [note]


def test_a_list_of_sources_keeps_its_order(tree):
    sources = open_sources([str(tree / "clip.mp4"), str(tree / "a.jpg")])
    assert [type(s).__name__ for s in sources] == ["VideoFile", "ImageFiles"]


def test_a_video_keeps_its_frames_fps_and_timestamps(tmp_path):
    write_video(tmp_path / "v.mp4", n=9, fps=15.0)
    [video] = open_sources(str(tmp_path / "v.mp4"))
    assert isinstance(video, VideoFile) and video.fps == pytest.approx(15.0) and len(video) == 9
    frames = list(video.frames())
    assert [f.frame for f in frames] == list(range(9))
    assert [f.timestamp_ms for f in frames] == pytest.approx([1000 * k / 15 for k in range(9)])
    assert all(f.image.shape == (48, 64, 3) for f in frames)
    assert abs(int(frames[3].image.mean()) - 60) <= 3  # the grey level written, RGB


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda d: str(d / "missing.jpg"), "no such file or folder"),
        (lambda d: str(d / "*.jpg"), "the glob matches no image or video"),
        (lambda d: (d / "empty").mkdir() or str(d / "empty"), "the folder holds no image"),
        (
            lambda d: (d / "x.mp4").write_bytes(b"junk") and str(d / "x.mp4"),
            "cannot read the video",
        ),
        (lambda d: (d / "l.txt").write_text("nothere.jpg\n") and str(d / "l.txt"), "do not exist"),
        (lambda d: (d / "a.csv").write_text("1") and str(d / "a.csv"), "got a .csv file"),
        (lambda d: "http://127.0.0.1:9/refused.mjpg", "cannot be opened"),
        (lambda d: "rtsp://127.0.0.1:9/none", "cannot be opened"),
    ],
)
def test_bad_sources_are_one_clear_error(tmp_path, make, match):
    with pytest.raises(InputError, match=match):
        open_sources(make(tmp_path))


def test_prefetch_yields_in_order_and_passes_errors_on():
    stop = threading.Event()
    assert list(prefetch(iter(range(50)), 3, stop)) == list(range(50))

    def broken():
        yield 1
        raise OSError("disk gone")

    with pytest.raises(OSError, match="disk gone"):
        list(prefetch(broken(), 3, stop))


def test_closing_a_prefetch_waits_for_its_thread_to_leave_the_decoder():
    """predict.py stopped by Ctrl-C on a video aborted ("terminate called without an active
    exception") now and then: its decode thread was still inside OpenCV's reader when the
    video was released and the process ended. Closing the prefetch (as the interrupted run does)
    returns only once the thread has finished its frame and the source's frames are closed."""
    entered, events = threading.Event(), []

    def decoding():
        try:
            for i in range(1000):
                if i == 3:
                    entered.set()
                    time.sleep(0.5)  # a slow frame in the decoder
                    events.append("decoded")
                yield i
        finally:
            events.append("closed")

    frames = prefetch(decoding(), 8, threading.Event())
    assert next(frames) == 0
    assert entered.wait(10)
    frames.close()  # what an interrupted run does
    assert events == ["decoded", "closed"]
    assert not [t for t in threading.enumerate() if t.name == "decode"]


# -- live streams: MJPEG over HTTP from a server on 127.0.0.1 -------------------------------------
def _consume(stream: Stream, delay: float = 0.0) -> list:
    out = []
    for f in stream.frames():
        out.append(f)
        time.sleep(delay)
    return out


def test_a_stream_cut_mid_frame_and_restarted_is_reconnected():
    server = MjpegServer(per_connection=15, fps=60).start()
    try:
        stream = open_sources(server.url, buffer=True, reconnect_timeout=2.5)[0]
        got: list = []
        reader = threading.Thread(target=lambda: got.extend(_consume(stream)))
        reader.start()
        time.sleep(0.6)  # the first connection's 15 frames went out and it was cut mid-frame
        server.stop()
        time.sleep(0.8)  # refused while down: the reader backs off and retries
        server.start()
        reader.join(timeout=30)  # the second connection, then the reconnect timeout ends it
    finally:
        server.stop()
    assert not reader.is_alive()
    assert stream.reconnects >= 1 and server.connections >= 2
    levels = {int(np.median(f.image)) for f in got}
    first = {level(0, k) for k in range(15)}
    second = {level(1, k) for k in range(15)}
    assert len(levels & first) >= 12 and len(levels & second) >= 12  # frames of both connections
    assert [f.frame for f in got] == list(range(len(got)))  # one counter across reconnects


def test_a_stream_given_twice_is_opened_once(caplog):
    """Two readers of one stream would write their frames to one output video (one name)."""
    server = MjpegServer(per_connection=5, fps=60).start()
    try:
        with caplog.at_level(logging.WARNING, logger="yolov4"):
            sources = open_sources([server.url, f" {server.url}"], reconnect_timeout=0.5)
        try:
            assert len(sources) == 1 and server.connections == 1
        finally:
            sources[0].close()
    finally:
        server.stop()
    said = f"1 URL(s) or camera(s) given more than once, read once: stream {server.url}"
    assert said in caplog.text


def test_no_temporary_folder_for_an_image_url_is_an_input_error(tmp_path, monkeypatch):
    import tempfile

    write_image(tmp_path / "a.jpg")
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "gone"))
    with file_server(tmp_path) as (url, requests):
        with pytest.raises(InputError, match=r"no temporary file for the fetched image in .*gone"):
            open_sources(f"{url}/a.jpg")
    assert requests == {}  # refused before the fetch


@pytest.mark.parametrize("buffer", [False, True])
def test_newest_frame_policy_drops_frames_instead_of_lagging(buffer):
    """A consumer 5x slower than the stream: with the newest-frame policy it sees few frames,
    the last of them near the stream's end; with the buffer it sees every frame, late."""
    server = MjpegServer(per_connection=60, fps=100).start()
    try:
        stream = open_sources(server.url, buffer=buffer, reconnect_timeout=0.0)[0]
        got = _consume(stream, delay=0.05)
    finally:
        server.stop()
        stream.close()
    if buffer:
        assert len(got) >= 55 and stream.dropped == 0
    else:
        assert len(got) <= 20 and stream.dropped >= 40
        assert got[-1].frame >= 55  # it kept up with the scene: the last frame is current


def test_several_live_sources_are_read_together():
    from yolov4.inference.streams import interleave_live

    servers = [MjpegServer(per_connection=10, fps=50, max_connections=1).start() for _ in range(2)]
    try:
        streams = open_sources([s.url for s in servers], buffer=True, reconnect_timeout=0.0)
        got = list(interleave_live(streams))
    finally:
        for s in servers:
            s.stop()
    by_source = {s.url: [f.frame for f in got if f.source == s.url] for s in servers}
    assert all(frames == list(range(10)) for frames in by_source.values())
    first_of_second = next(i for i, f in enumerate(got) if f.source == servers[1].url)
    assert first_of_second < 10  # interleaved, not one stream after the other
    # a source that dropped and did not come back said nothing: the run just ended
    for stream in streams:
        assert "lost after frame 9, not back within reconnect_timeout=0 s" in stream.lost


def test_a_lost_live_source_is_in_the_summary():
    from yolov4.inference.summary import Summary

    summary = Summary(lost=["http://cam/x: lost after frame 41, not back within 60 s"])
    assert summary.to_dict()["lost"] == summary.lost
    assert "ended: http://cam/x: lost after frame 41" in summary.text()


def test_a_truncated_video_is_one_report_and_a_bad_frame_inside_is_one_each(tmp_path, monkeypatch):
    path = tmp_path / "t.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 25, (64, 48))
    for _ in range(40):
        writer.write(RNG.integers(0, 255, (48, 64, 3), dtype=np.uint8))
    writer.release()
    cut = tmp_path / "cut.avi"
    cut.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    cap = cv2.VideoCapture(str(cut))  # OpenCV's own count and readable frames: the reference
    count, readable = int(cap.get(cv2.CAP_PROP_FRAME_COUNT)), 0
    while cap.read()[0]:
        readable += 1
    cap.release()
    assert count == 40 and 0 < readable < count
    [video] = open_sources(str(cut))
    frames = list(video.frames())
    assert [f.frame for f in frames] == list(range(readable + 1))
    assert all(f.image is not None for f in frames[:-1])
    assert frames[-1].image is None and frames[-1].error == (
        f"{cut}: frames {readable} to 39 of 40 cannot be decoded; the readable video ends "
        f"after frame {readable - 1} (a truncated or damaged file)"
    )  # frames 0 to readable - 1 were read

    class Capture:  # frames 2 and 3 of 6 do not decode, the others do
        def __init__(self, _path) -> None:
            self.index = 0

        def read(self):
            self.index += 1
            ok = self.index <= 6 and self.index - 1 not in (2, 3)
            return ok, (np.zeros((8, 8, 3), np.uint8) if ok else None)

        def release(self) -> None:
            pass

    import yolov4.inference.media as media

    monkeypatch.setattr(media.cv2, "VideoCapture", Capture)
    video.count = 6
    frames = list(video.frames())
    assert [(f.frame, f.image is None) for f in frames] == [
        (0, False), (1, False), (2, True), (3, True), (4, False), (5, False)
    ]  # fmt: skip
    assert frames[2].error == f"{cut}: frame 2 cannot be decoded"


def test_a_file_given_twice_is_read_once(tmp_path, caplog):
    write_video(tmp_path / "v.mp4")
    write_image(tmp_path / "imgs" / "a.png")
    write_image(tmp_path / "imgs" / "b.png")
    given = [str(tmp_path / "v.mp4"), str(tmp_path / "imgs" / "a.png"), str(tmp_path / "imgs"),
             str(tmp_path / "v.mp4")]  # fmt: skip
    with caplog.at_level("WARNING"):
        sources = open_sources(given)
    assert [type(s).__name__ for s in sources] == ["VideoFile", "ImageFiles", "ImageFiles"]
    assert [f.name for f in sources[2].files] == ["b.png"]
    assert "2 file(s) given more than once, read once" in caplog.text
    assert open_sources([str(tmp_path / "imgs" / "a.png")] * 2)[0].files == [
        tmp_path / "imgs" / "a.png"
    ]


def test_numbered_frames_are_read_in_natural_order(tmp_path):
    """f2 before f10: a folder of frames numbered without leading zeros is one sequence in the
    order they were taken (plain sorting reads f1, f10, f11, f2, ...)."""
    for k in (1, 2, 10, 11, 3):
        write_image(tmp_path / "frames" / f"f{k}.png")
    write_image(tmp_path / "frames" / "f0020b.png")
    [source] = open_sources(str(tmp_path / "frames"))
    assert [f.name for f in source.files] == [
        "f1.png", "f2.png", "f3.png", "f10.png", "f11.png", "f0020b.png"
    ]  # fmt: skip
