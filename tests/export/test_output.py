"""Where export.py writes: a user's files survive every ``output=`` misuse, an artifact is
replaced in one folder exchange (a SIGKILL at any point leaves the old or the new one), stale
temporary folders are removed, the files have the umask's modes, the numeric options are
checked before anything is loaded, and an artifact's files are regular files of its folder."""

from __future__ import annotations

import os
import random
import shutil
import signal
import stat
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest
from hydra import compose, initialize_config_module

from yolov4 import build_model, save_checkpoint
from yolov4.cli.export import export
from yolov4.core import files
from yolov4.core.artifact import read_metadata
from yolov4.errors import ConfigError, ExportError
from yolov4.export import output as output_mod
from yolov4.export.artifact import export_artifact
from yolov4.inference import Predictor
from yolov4.inference.backends import OpenVinoBackend

SIZE = 64
SWAPS = 40  # artifact swaps while a reader polls
USER_FILES = {"notes.txt": "my notes", "sub/data.csv": "a,b\n1,2\n"}


def _user_folder(d: Path) -> Path:
    d.mkdir(parents=True, exist_ok=True)
    for name, text in USER_FILES.items():
        (d / name).parent.mkdir(parents=True, exist_ok=True)
        (d / name).write_text(text)
    return d


def _assert_user_files(d: Path) -> None:
    for name, text in USER_FILES.items():
        assert (d / name).read_text() == text, name


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A yolov4-tiny checkpoint at 64 px and one onnx-only artifact of it (no OpenVINO check:
    the swap, not the runtimes, is tested here)."""
    d = tmp_path_factory.mktemp("tiny")
    model = build_model("yolov4-tiny", num_classes=2, input_size=[SIZE, SIZE])
    ckpt = save_checkpoint(
        d / "weights" / "best.pt", model, ["a", "b"], {"input_size": [SIZE, SIZE]}
    )
    with pytest.MonkeyPatch.context() as m:
        m.setattr(OpenVinoBackend, "available", staticmethod(lambda: False))
        art = export_artifact(ckpt, d / "artifact", formats=["onnx"])
    return ckpt, art


@pytest.fixture
def no_openvino(monkeypatch):
    monkeypatch.setattr(OpenVinoBackend, "available", staticmethod(lambda: False))


MISSING_CKPT = "no-such-checkpoint.pt"  # the output is refused before the checkpoint is read


def test_output_misuse_keeps_the_users_files(tmp_path, monkeypatch):
    user = _user_folder(tmp_path / "mine")
    missing = tmp_path / MISSING_CKPT
    # a folder that is not an artifact
    with pytest.raises(ExportError, match="not an export artifact.*overwrite=true"):
        export_artifact(missing, user)
    # a file
    for out in (user / "notes.txt", user / "notes.txt" / "export"):
        with pytest.raises(ExportError, match="notes.txt is a file"):
            export_artifact(missing, out, overwrite=True)
    # the working directory and a folder above it, home, /, a checkout: even with overwrite
    monkeypatch.chdir(user / "sub")
    for out, why in ((".", "working directory"), ("..", "above the working directory")):
        with pytest.raises(ExportError, match=why):
            export_artifact(missing, out, overwrite=True)
    with pytest.raises(ExportError, match="root folder"):
        export_artifact(missing, "/", overwrite=True)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HOME", str(user))
    with pytest.raises(ExportError, match="home folder"):
        export_artifact(missing, user, overwrite=True)
    monkeypatch.setenv("HOME", str(tmp_path / "elsewhere"))
    (user / ".git").mkdir()
    with pytest.raises(ExportError, match="git checkout"):
        export_artifact(missing, user, overwrite=True)
    (user / ".git").rmdir()
    _assert_user_files(user)
    assert sorted(p.name for p in user.iterdir()) == ["notes.txt", "sub"]
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_cli_refuses_a_file_before_loading_anything(tmp_path):
    user = _user_folder(tmp_path / "mine")
    cfg = _cfg(tmp_path, [f"output={user / 'notes.txt'}"])
    with pytest.raises(ExportError, match="is a file"):
        export(cfg)
    cfg = _cfg(tmp_path, [f"output={user}"])
    with pytest.raises(ExportError, match="not an export artifact"):
        export(cfg)
    _assert_user_files(user)


def test_overwrite_keeps_the_users_files(tiny, tmp_path, no_openvino):
    ckpt, _ = tiny
    user = _user_folder(tmp_path / "mine")
    (user / "model.onnx").write_text("the user's own file of an artifact's name")
    with pytest.raises(ExportError, match="holds model.onnx, not an artifact's"):
        export_artifact(ckpt, user, formats=["onnx"], overwrite=True)
    assert (user / "model.onnx").read_text() == "the user's own file of an artifact's name"
    (user / "model.onnx").unlink()
    art = export_artifact(ckpt, user, formats=["onnx"], overwrite=True)
    assert art == user.resolve()
    read_metadata(art)  # complete: every file matches its sha256
    _assert_user_files(art)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mine"]  # no temporary folder left


@pytest.mark.slow
def test_reexport_replaces_only_the_artifacts_files(tiny, tmp_path, no_openvino):
    ckpt, original = tiny
    art = tmp_path / "mine"
    shutil.copytree(original, art)
    _user_folder(art)
    first = read_metadata(art)["created"]
    (art / "later.txt").write_text("added after the export")
    art = export_artifact(ckpt, art, formats=["onnx", "torchscript"])
    meta = read_metadata(art)
    assert set(meta["files"]) == {"model.onnx", "model.torchscript"} and meta["created"] >= first
    _assert_user_files(art)
    assert (art / "later.txt").read_text() == "added after the export"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mine"]  # no temporary folder left


def test_readers_always_find_a_complete_artifact(tiny, tmp_path):
    """A reader polling ``output`` during repeated swaps never finds it missing or partial."""
    _, art = tiny
    out = tmp_path / "export"
    shutil.copytree(art, out, copy_function=os.link)
    _user_folder(out)
    done, reads, misses = threading.Event(), [0], []

    def reader() -> None:
        while not done.is_set():
            try:
                meta = read_metadata(out, verify=False)
                missing = [n for n in meta["files"] if not (out / n).is_file()]
                if missing:
                    misses.append(missing)
            except (ExportError, OSError) as e:
                misses.append(e)
            reads[0] += 1

    thread = threading.Thread(target=reader)
    thread.start()
    try:
        for k in range(SWAPS):
            new = tmp_path / f".export.export-swap{k:04d}"
            shutil.copytree(art, new, copy_function=os.link)  # a new artifact, cheaply
            output_mod.install(new, out)
            time.sleep(0.002)
    finally:
        done.set()
        thread.join()
    assert misses == [] and reads[0] > SWAPS
    _assert_user_files(out)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["export"]


def test_the_fallback_without_a_folder_exchange(tiny, tmp_path, monkeypatch):
    _, art = tiny
    out = tmp_path / "export"
    shutil.copytree(art, out)
    _user_folder(out)
    new = tmp_path / ".export.export-newnewnw"
    shutil.copytree(art, new)
    monkeypatch.setattr(output_mod, "exchange_dirs", lambda a, b: False)
    output_mod.install(new, out)
    read_metadata(out)
    _assert_user_files(out)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["export"]
    # a kill between its two renames leaves no folder at output: the next export restores it
    os.rename(out, tmp_path / ".export.export-0ld0ld0l")
    output_mod.remove_stale_exports(out)
    read_metadata(out)
    _assert_user_files(out)


def _stale(tmp_path: Path, art: Path, name: str, age_s: float, user: bool = False) -> Path:
    d = tmp_path / name
    shutil.copytree(art, d)
    if user:  # the user's files, and one ``out`` lacks (made during the export)
        _user_folder(d)
        (d / "made-meanwhile.txt").write_text("keep me")
    then = time.time() - age_s
    os.utime(d, (then, then))
    return d


def test_stale_temporary_folders_are_removed(tiny, tmp_path):
    ckpt, art = tiny
    out = tmp_path / "export"
    shutil.copytree(art, out)
    _user_folder(out)
    old_age = files.STALE_TMP_AGE_S + 60
    # a killed export's folder after the exchange: the old artifact and the user's files, of
    # which ``out`` lacks one (made during the export): it is moved back, not deleted
    killed = _stale(tmp_path, art, ".export.export-k1ll3d00", old_age, user=True)
    recent = _stale(tmp_path, art, ".export.export-r3c3nt00", 1)  # perhaps a live export
    locked = _stale(tmp_path, art, ".export.export-l0ck3d00", old_age)
    other = _stale(tmp_path, art, ".export.backup", old_age)  # not a name of ours
    legacy = _stale(tmp_path, art, ".export.ab12cd34", old_age)  # mkdtemp's, artifact only
    # a file that differs from out's of the same name: kept, with its folder
    differs = tmp_path / ".export.export-d1ff3r00"
    (differs / "sub").mkdir(parents=True)
    (differs / "sub" / "data.csv").write_text("another table")
    (differs / "model.onnx").write_bytes(b"an artifact file")
    os.utime(differs, (time.time() - old_age,) * 2)
    fd = files.lock_dir(locked)  # a live export holds its folder's lock
    try:
        removed = output_mod.remove_stale_exports(out)
    finally:
        os.close(fd)
    assert set(removed) == {killed, legacy} and not killed.exists() and not legacy.exists()
    assert recent.is_dir() and locked.is_dir() and other.is_dir()
    assert [p.name for p in differs.rglob("*")] == ["sub", "data.csv"]
    assert (differs / "sub" / "data.csv").read_text() == "another table"
    assert (out / "made-meanwhile.txt").read_text() == "keep me"
    _assert_user_files(out)
    read_metadata(out)


def test_files_have_the_umasks_modes(tiny, tmp_path, no_openvino):
    from yolov4.darknet import save_darknet_weights
    from yolov4.data.synthetic import generate_split
    from yolov4.training.callbacks import write_json

    ckpt, _ = tiny
    old = os.umask(0o022)
    try:
        art = export_artifact(ckpt, tmp_path / "run" / "export", formats=["onnx"])
        weights = save_checkpoint(
            tmp_path / "run" / "weights" / "last.pt",
            build_model("yolov4-tiny", num_classes=2),
            ["a", "b"],
            {"input_size": [SIZE, SIZE]},
        )
        report = write_json(tmp_path / "run" / "metrics.json", {"mAP": 0.5})
        darknet = save_darknet_weights(
            build_model("yolov4-tiny", num_classes=2), tmp_path / "t.weights"
        )
        split = generate_split(tmp_path / "synthetic", "val", num_images=1, image_size=SIZE)
        for p in (art / "model.onnx", art / "metadata.json", weights, report, darknet):
            assert stat.S_IMODE(p.stat().st_mode) == 0o644, p
        for p in (art, split, split / "images"):
            assert stat.S_IMODE(p.stat().st_mode) == 0o755, p
        os.umask(0o027)  # the umask is read, not assumed
        report = write_json(tmp_path / "run" / "other.json", {"mAP": 0.5})
        assert stat.S_IMODE(report.stat().st_mode) == 0o640
        assert files.umask_mode(directory=True) == 0o750
    finally:
        os.umask(old)


def _cfg(tmp_path, overrides):
    with initialize_config_module(config_module="yolov4.configs", version_base="1.3"):
        return compose(
            "export",
            overrides=[
                f"paths.output_dir={tmp_path}",
                f"checkpoint={tmp_path / MISSING_CKPT}",
                "formats=[onnx]",
                *overrides,
            ],
        )


@pytest.mark.parametrize(
    ("override", "key", "expected"),
    [
        ("calibration_images=-5", "calibration_images", "an integer >= 1"),
        ("calibration_images=0", "calibration_images", "an integer >= 1"),
        ("calibration_images=2.5", "calibration_images", "an integer >= 1"),
        ("val_images=0", "val_images", "null .* or an integer >= 1"),
        ("val_images=-1", "val_images", "null .* or an integer >= 1"),
        ("batch_size=0", "batch_size", "an integer >= 1"),
        ("opset=9", "opset", r"an integer in \[17, "),
        ("opset=99", "opset", r"an integer in \[17, "),
        ("opset=seventeen", "opset", r"an integer in \[17, "),
        ("map50_gate=-1", "map50_gate", "a number .*>= 0"),
        ("map50_gate=nan", "map50_gate", "a number .*>= 0"),
        ("input_size=[64]", "input_size", r"null or \[H, W\]"),
        ("input_size=[0,64]", "input_size", r"null or \[H, W\]"),
        ("input_size=[64.5,64]", "input_size", r"null or \[H, W\]"),
        ("overwrite=yes", "overwrite", "true or false"),
    ],
)
def test_numeric_options_are_checked_before_loading(tmp_path, override, key, expected):
    # the checkpoint does not exist: the option is refused before it is read
    with pytest.raises(ConfigError, match=rf"^{key}: expected {expected}.*found"):
        export(_cfg(tmp_path, [override]))


def test_an_input_size_off_the_models_stride_is_refused_once_the_model_is_read(tiny, tmp_path):
    """The stride is the model's: [100, 100] passes the start-up check of input_size's form and
    is an ExportError naming input_size once the checkpoint is read, before any file is written."""
    ckpt, _ = tiny
    out = tmp_path / "export"
    cfg = _cfg(tmp_path, [f"checkpoint={ckpt}", f"output={out}", "input_size=[100,100]"])
    with pytest.raises(
        ExportError, match=r"^input_size: expected .* multiples of 32 .* got \[100, 100\]"
    ):
        export(cfg)
    assert not out.exists()


def test_symlinked_artifact_files_are_refused(tiny, tmp_path):
    _, art = tiny
    outside = tmp_path / "outside"
    outside.mkdir()
    for name in ("model.onnx", "metadata.json"):
        copy = tmp_path / f"copy-{name}"
        shutil.copytree(art, copy)
        shutil.move(copy / name, outside / name)  # same bytes: the sha256 still matches
        (copy / name).symlink_to(outside / name)
        with pytest.raises(ExportError, match=rf"{name} is a symbolic link .*regular files"):
            Predictor.from_artifact(copy)
        (copy / name).unlink()
        (copy / name).mkdir()
        with pytest.raises(ExportError, match=f"{name} is not a regular file|no metadata"):
            read_metadata(copy)
        (outside / name).unlink()


# The child: imports once, then forks a worker per request that re-exports into ``out`` in a
# loop, announcing each swap (install) on stdout; its file operations are slowed so that the
# kills land inside the swap too
CHILD = textwrap.dedent(
    """
    import os, sys, time
    import torch
    from yolov4.export import artifact as artifact_mod, output as output_mod
    ckpt, out = sys.argv[1], sys.argv[2]

    def slow(f):
        def g(*a, **k):
            time.sleep(0.02)
            return f(*a, **k)
        return g

    from yolov4.inference.backends import OpenVinoBackend
    OpenVinoBackend.available = staticmethod(lambda: False)
    install = output_mod.install
    def announced(tmp, dst):
        os.write(1, b"S\\n")
        install(tmp, dst)
    artifact_mod.install = announced
    print("ready", flush=True)
    for line in sys.stdin:
        pid = os.fork()
        if pid == 0:
            torch.set_num_threads(1)
            for name in ("link", "rename", "unlink", "rmdir", "replace"):
                setattr(os, name, slow(getattr(os, name)))
            while True:
                artifact_mod.export_artifact(ckpt, out, formats=["onnx"])
        print(pid, flush=True)
        os.waitpid(pid, 0)
        print("dead", flush=True)
    """
)
KILLS = 8


@pytest.mark.slow
def test_sigkill_during_reexport_leaves_an_artifact(tiny, tmp_path, no_openvino, monkeypatch):
    ckpt, art = tiny
    out = tmp_path / "export"
    shutil.copytree(art, out)
    _user_folder(out)
    rng = random.Random(0)
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(ckpt), str(out)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    try:
        assert child.stdout.readline().strip() == "ready"
        created = {read_metadata(out)["created"]}
        for k in range(KILLS):
            child.stdin.write("go\n")
            child.stdin.flush()
            pid = int(child.stdout.readline())
            if k % 2:  # inside the swap: after the worker announces it
                assert child.stdout.readline().strip() == "S"
                time.sleep(rng.uniform(0.0, 0.3))
            else:  # anywhere in the export
                time.sleep(rng.uniform(0.2, 4.0))
            os.kill(pid, signal.SIGKILL)
            line = child.stdout.readline().strip()
            while line == "S":
                line = child.stdout.readline().strip()
            assert line == "dead"
            created.add(read_metadata(out)["created"])  # the old or the new one, complete
            _assert_user_files(out)
        child.stdin.close()
        child.wait(timeout=60)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    assert len(created) > 1  # some exports were swapped in between the kills
    assert any(output_mod._tmp_pattern(out).fullmatch(p.name) for p in tmp_path.iterdir())
    # a later export removes what the kills left
    monkeypatch.setattr(files, "STALE_TMP_AGE_S", 0.0)
    export_artifact(ckpt, out, formats=["onnx"])
    read_metadata(out)
    _assert_user_files(out)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["export"]
