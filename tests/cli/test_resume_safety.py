"""Resume (``ckpt_path=``) never runs pickled code and says why it refuses a file."""

from __future__ import annotations

import pytest
import torch

import yolov4.cli.train as train_cli
from yolov4 import CheckpointError, ConfigError, build_model, save_checkpoint
from yolov4.cli.train import train


class Payload:
    """Unpickling this creates ``marker``: the proof that a load ran code from the file."""

    def __init__(self, marker) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def lightning_like(path, payload=None, num_classes: int = 4, class_names=None, net=None):
    """A file shaped like this project's last.ckpt (tiny network), optionally with a payload."""
    net = net or build_model("yolov4-tiny", num_classes=num_classes)
    hp = {"model": net.config.to_dict()}
    if class_names is not None:
        hp["class_names"] = list(class_names)
    data = {
        "pytorch-lightning_version": "2.6.0",
        "epoch": 0,
        "global_step": 2,
        "state_dict": {f"model.{k}": v for k, v in net.state_dict().items()},
        "hyper_parameters": hp,
    }
    if payload is not None:
        data["callbacks"] = {"evil": payload}
    torch.save(data, path)
    return path


@pytest.fixture
def force_unsafe_loads(monkeypatch):
    """The variable torch's own error message points users to."""
    monkeypatch.setenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")


@pytest.mark.parametrize(
    "url", ["https://127.0.0.1:9/last.ckpt", "http://127.0.0.1:9/last.ckpt", "s3://b/last.ckpt"]
)
def test_remote_ckpt_path_is_refused_before_any_work(compose_cfg, tiny_run, tmp_path, url):
    cfg = compose_cfg("train", [*tiny_run, f"ckpt_path={url}"], tmp_path)
    with pytest.raises(CheckpointError, match=r"resume reads local files only, not \w+://"):
        train(cfg)
    assert not (tmp_path / "checkpoints").exists()


def test_pickled_ckpt_is_refused_even_when_torch_is_told_to_allow_it(
    compose_cfg, tiny_run, tmp_path, force_unsafe_loads
):
    marker = tmp_path / "payload-ran"
    evil = lightning_like(tmp_path / "evil.ckpt", Payload(marker))
    cfg = compose_cfg("train", [*tiny_run, f"ckpt_path={evil}"], tmp_path / "run")
    with pytest.raises(CheckpointError) as e:
        train(cfg)
    msg = str(e.value)
    assert not marker.exists()
    assert "evil.ckpt holds pickled Python objects" in msg and "refusing to load" in msg
    assert "weights_only=False" not in msg


def test_lightning_itself_loads_with_weights_only(
    compose_cfg, tiny_run, tmp_path, monkeypatch, force_unsafe_loads
):
    """Second line of defence: even with the project's check bypassed, Lightning is told
    weights_only=True, which TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD cannot override."""
    marker = tmp_path / "payload-ran"
    evil = lightning_like(tmp_path / "evil.ckpt", Payload(marker))
    monkeypatch.setattr(train_cli, "read_resume_checkpoint", lambda p: (p, None), raising=False)
    monkeypatch.setattr(train_cli, "check_resume_fits", lambda *a: None, raising=False)
    cfg = compose_cfg("train", [*tiny_run, f"ckpt_path={evil}"], tmp_path / "run")
    with pytest.raises(Exception, match="Weights only load failed|Unsupported global"):
        train(cfg)
    assert not marker.exists()


def test_weights_file_is_not_a_resume_checkpoint(compose_cfg, tiny_run, tmp_path):
    weights = save_checkpoint(tmp_path / "best.pt", build_model("yolov4-tiny", num_classes=4))
    cfg = compose_cfg("train", [*tiny_run, f"ckpt_path={weights}"], tmp_path / "run")
    with pytest.raises(CheckpointError, match=r"not a Lightning checkpoint .* module\.pretrained="):
        train(cfg)


def test_checkpoint_of_another_model_is_named(compose_cfg, tiny_run, tmp_path):
    other = lightning_like(tmp_path / "other.ckpt", num_classes=3)  # the run's data has 4
    cfg = compose_cfg("train", [*tiny_run, f"ckpt_path={other}"], tmp_path / "run")
    with pytest.raises(
        CheckpointError, match=r"(?s)does not fit this run's model.*trained with num_classes=3"
    ):
        train(cfg)
    assert not (tmp_path / "run/checkpoints").exists()


def test_checkpoint_of_other_class_names_is_refused(compose_cfg, tiny_run, tmp_path):
    """The same class count, other names (or order): resume refuses it naming both lists
    instead of training the run's head on other classes."""
    names = [
        "circle",
        "rectangle",
        "cross",
        "star",
    ]  # the run's data: circle rectangle triangle cross
    other = lightning_like(tmp_path / "other.ckpt", class_names=names)
    cfg = compose_cfg("train", [*tiny_run, f"ckpt_path={other}"], tmp_path / "run")
    with pytest.raises(ConfigError) as e:
        train(cfg)
    msg = str(e.value)
    assert f"holds a network trained on classes {names}" in msg
    assert "['circle', 'rectangle', 'triangle', 'cross']" in msg
    assert "2: 'cross' -> 'triangle'" in msg and "module.pretrained=" in msg
    assert not (tmp_path / "run/checkpoints").exists()


def test_a_user_cfg_edited_or_deleted_since_the_run_is_refused(compose_cfg, tiny_run, tmp_path):
    """model=darknet: the network and [yolo] settings come from the cfg file; one edited since the
    run (other anchors) would resume another training silently, and one deleted fails naming
    where its text is."""
    from yolov4.models.cfg import read_zoo_cfg
    from yolov4.training.resume import check_resume_fits

    user = tmp_path / "mine.cfg"
    user.write_text(read_zoo_cfg("yolov4-tiny"))
    net = build_model(cfg=str(user), num_classes=4, input_size=[64, 64])
    ckpt = lightning_like(tmp_path / "last.ckpt", net=net)
    data = torch.load(ckpt, weights_only=True)
    check_resume_fits(ckpt, data, build_model(cfg=str(user), num_classes=4))  # unchanged: fits
    overrides = [*tiny_run, "model=darknet", f"model.cfg={user}", f"ckpt_path={ckpt}"]
    user.write_text(user.read_text().replace("anchors = 10,14,", "anchors = 5,5,"))
    with pytest.raises(ConfigError) as e:
        train(compose_cfg("train", overrides, tmp_path / "run"))
    msg = str(e.value)
    assert "the darknet cfg this run reads now differs from the one the run trained" in msg
    assert "'anchors = 5,5," in msg and "trained with 'anchors = 10,14," in msg
    assert "hyper_parameters.model.cfg" in msg and not (tmp_path / "run/checkpoints").exists()
    user.unlink()
    with pytest.raises(ConfigError, match=r"model.cfg=.*mine.cfg: no such file, .*restore"):
        train(compose_cfg("train", overrides, tmp_path / "run"))
