"""A user's mistake in train.py, predict.py, evaluate.py or export.py ends the run with its
message in one line and exit code 1, not a traceback."""

from __future__ import annotations

from pathlib import Path

import pytest

from yolov4.errors import ConfigError


@pytest.mark.parametrize(
    "script, args, message",
    [
        ("predict.py", ["source={tmp}/none.jpg", "checkpoint={tmp}/none.pt"],
         "InputError: source '{tmp}/none.jpg': no such file or folder"),
        pytest.param("train.py", ["optim.lr=-0.01", "data.num_train=4", "data.num_val=2",
                                  "data.cache_dir={tmp}/cache"], "ConfigError: ",
                     marks=pytest.mark.slow),
    ],
)  # fmt: skip
def test_a_user_error_is_one_line_and_exit_code_1(tmp_path, script, args, message):
    import os
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[2]
    env = {k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR"}
    args = [a.format(tmp=tmp_path) for a in args]
    r = subprocess.run(
        [sys.executable, str(root / script), *args, f"hydra.run.dir={tmp_path / 'run'}"],
        capture_output=True, text=True, timeout=300, env=env,
    )  # fmt: skip
    out = r.stdout + r.stderr  # Hydra's console log goes to stdout
    assert r.returncode == 1, out[-2000:]
    assert message.format(tmp=tmp_path) in out
    assert "Traceback" not in out and "Error executing job" not in out


@pytest.mark.parametrize("app", ["train", "evaluate", "export", "predict"])
def test_a_value_split_at_its_spaces_is_one_line_with_the_quoted_form(app, monkeypatch, capsys):
    """An unquoted path with spaces is three arguments: train.py printed the parser's
    25-line traceback; every app names the argument and the quoted form before Hydra runs."""
    import importlib

    main = importlib.import_module(f"yolov4.cli.{app}").hydra_main
    argv = [f"{app}.py", "data=yolo", "data.train.images=/d/my", "data", "set/images"]
    monkeypatch.setattr("sys.argv", argv)
    with pytest.raises(SystemExit) as e:
        main()
    assert e.value.code == 1
    assert (
        "Error: ConfigError: 'data' is not a key=value override (missing EQUAL at '<EOF>'): a "
        "value with spaces is one argument when quoted: 'data.train.images=/d/my data "
        "set/images'" in capsys.readouterr().err
    )


def test_a_value_holding_an_equals_sign_gets_the_inner_quotes_as_the_hint(monkeypatch, capsys):
    """A quoted path holding ``=`` and ``,`` still trips Hydra's parser: the hint is the form
    Hydra reads, the value in double quotes inside the argument."""
    from yolov4.cli.train import hydra_main

    monkeypatch.setattr("sys.argv", ["train.py", "data.train.annotations=/d/my data=1,2/a.json"])
    with pytest.raises(SystemExit) as e:
        hydra_main()
    assert e.value.code == 1
    err = capsys.readouterr().err
    assert "is not a key=value override" in err
    assert """'data.train.annotations="/d/my data=1,2/a.json"'""" in err


def test_a_removed_group_is_named_with_the_way_to_give_it(compose_cfg, tiny_run, tmp_path):
    """``~optim``: OmegaConf's "Key 'optim' is not in struct" traceback after the data set-up."""
    from yolov4.cli.train import run_objective

    with pytest.raises(ConfigError, match=r"optim: the config has none \(removed with ~optim\?\)"):
        run_objective(compose_cfg("train", [*tiny_run, "~optim"], tmp_path))


def test_a_top_level_key_added_with_plus_that_nothing_reads_is_refused(compose_cfg, tmp_path):
    """Hydra refuses ckpt_pth=... suggesting +ckpt_pth=...; with the + the run trained from
    scratch, the resume silently lost. Keys an interpolation reads, and groups, are kept."""
    from yolov4.cli.common import check_added_keys
    from yolov4.errors import ConfigError

    typo = ["+ckpt_pth=a.ckpt"]
    with pytest.raises(ConfigError, match=r"\+ckpt_pth=\.\.\.: the config has no key 'ckpt_pth' "
                       r"and nothing reads it .*did you mean ckpt_path=\.\.\.\?"):  # fmt: skip
        check_added_keys(compose_cfg("train", typo, tmp_path), typo)
    read = ["+lr0=0.002", "optim.lr=${lr0}"]
    cfg = compose_cfg("train", read, tmp_path)
    check_added_keys(cfg, read)
    assert cfg.optim.lr == 0.002
    group = ["+augment=darknet"]  # evaluate.py's config has no augment group: an append
    check_added_keys(compose_cfg("evaluate", group, tmp_path), group)


def test_training_a_region_network_is_refused_before_the_data_is_built(
    compose_cfg, tmp_path, monkeypatch
):
    """``train.py model=darknet model.cfg=<a YOLOv2 cfg>``: the [region] network is refused with
    why (inference only), before the data or any checkpoint."""
    from tests.models.test_region import shrunk
    from yolov4.cli.train import train

    def no_data(*args, **kwargs):
        raise AssertionError("the data was built for a network that cannot train")

    monkeypatch.setattr("yolov4.cli.train.build_data", no_data)
    cfg = tmp_path / "yolov2-tiny.cfg"
    cfg.write_text(shrunk("yolov2-tiny"))
    run = tmp_path / "run"
    overrides = ["model=darknet", f"model.cfg={cfg}"]
    with pytest.raises(ConfigError) as e:
        train(compose_cfg("train", overrides, run))
    assert "region (YOLOv2) networks are built for inference (predict, evaluate, export)" in str(
        e.value
    )
    assert not (run / "checkpoints").exists()
