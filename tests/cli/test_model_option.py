"""``model.cfg=PATH`` beside a zoo model: Hydra refuses it (suggesting ``+model.cfg=``); every
command names ``model=darknet model.cfg=PATH`` instead, and ``+model.cfg=`` trains the cfg's
network under its file's name, not the zoo model's. ``data.file=PATH`` beside another data
option than ``data=yolo`` is named the same way."""

from __future__ import annotations

import importlib

import pytest
from hydra import compose, initialize_config_module
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import ConfigCompositionException

from tests.models.test_zoo import user_cfg
from yolov4.cli.common import model_config, model_network
from yolov4.cli.model_option import (
    DARKNET_MODEL,
    _experiment_choice,
    check_option_keys,
    model_options,
)
from yolov4.errors import ConfigError
from yolov4.models import ModelConfig

APPS = ("train", "evaluate", "export", "predict", "anchors")
EXPERIMENTS = ["coco_yolov3", "coco_yolov4", "coco_yolov4_csp", "coco_yolov4_p5",
               "coco_yolov4_p6", "coco_yolov4_tiny", "coco_yolov4x_mish"]  # fmt: skip


def parsed(*overrides: str) -> list:
    return OverridesParser.create().parse_overrides(list(overrides))


def refused(app: str, override: str | list[str], monkeypatch, capsys) -> str:
    """What ``<app>.py <override>`` (one or a list) prints to stderr as it exits 1 before Hydra
    runs."""
    main = importlib.import_module(f"yolov4.cli.{app}").hydra_main
    given = [override] if isinstance(override, str) else override
    monkeypatch.setattr("sys.argv", [f"{app}.py", *given])
    with pytest.raises(SystemExit) as e:
        main()
    assert e.value.code == 1
    return capsys.readouterr().err


@pytest.mark.parametrize("app", APPS)
def test_model_cfg_without_the_darknet_model_names_it(app, monkeypatch, capsys):
    err = refused(app, "model.cfg=/d/my.cfg", monkeypatch, capsys)
    why = (
        "the command's default model=yolov4-tiny is the zoo network its name says, with no cfg key"
        if app in ("train", "anchors")
        else "and the command has no default model"
    )
    assert err == (
        "Error: ConfigError: model.cfg=/d/my.cfg: only model=darknet reads a cfg file (no "
        f"model= is given{':' if app in ('train', 'anchors') else ','} {why}): give "
        "model=darknet model.cfg=/d/my.cfg\n"
    )


def test_model_cfg_beside_a_named_zoo_model_names_it():
    """A zoo model named on the command line, or by the experiment, is named in the error."""
    with pytest.raises(ConfigError, match=r"\(model=yolov4-csp is the zoo network its name says"):
        check_option_keys(parsed("model=yolov4-csp", "model.cfg=/d/my.cfg"))
    with pytest.raises(ConfigError, match=r"\(model=yolov4 \(the experiment's\) is the zoo"):
        check_option_keys(parsed("experiment=coco_yolov4", "model.cfg=/d/my.cfg"))


def test_the_hint_is_given_where_hydra_refuses_the_override():
    """What the check reads of the configs is what Hydra composes: each app's default model and
    each shipped experiment's have no cfg key, and model=darknet takes one."""
    with initialize_config_module(config_module="yolov4.configs", version_base="1.3"):
        for name in APPS:
            with pytest.raises(ConfigCompositionException, match="Could not override 'model.cfg'"):
                compose(name, overrides=["model.cfg=/d/my.cfg"])
            assert compose(name, ["model=darknet", "model.cfg=/d/my.cfg"]).model.cfg == "/d/my.cfg"
        for experiment in EXPERIMENTS:
            given = [f"experiment={experiment}"]
            with pytest.raises(ConfigCompositionException, match="Could not override 'model.cfg'"):
                compose("train", overrides=[*given, "model.cfg=/d/my.cfg"])
            choices = compose("train", given, return_hydra_config=True).hydra.runtime.choices
            assert _experiment_choice(parsed(*given), "model", DARKNET_MODEL) == choices.model
    for fine in (["model=darknet", "model.cfg=/d/my.cfg"], ["+model.cfg=/d/my.cfg"],
                 ["experiment=mine", "model.cfg=/d/my.cfg"], ["model=darknet,yolov4"]):  # fmt: skip
        check_option_keys(parsed(*fine))
    with pytest.raises(ConfigError, match="give model=darknet model.cfg=/d/my.cfg"):
        check_option_keys(parsed("experiment=coco_yolov4", "model.cfg=/d/my.cfg"))


def test_plus_model_cfg_beside_a_zoo_model_is_named_after_the_file(compose_cfg, tmp_path):
    path = tmp_path / "my-tiny.cfg"
    path.write_text(user_cfg())
    cfg = compose_cfg("train", [f"+model.cfg={path}"], tmp_path)
    assert cfg.model.name == "yolov4-tiny"  # the default model option's
    assert model_network(cfg).name == "my-tiny"
    assert ModelConfig.from_dict(model_config(cfg, 4)).name == "my-tiny"


@pytest.mark.parametrize("app", ["train", "anchors"])
def test_data_file_without_the_yolo_data_names_it(app, monkeypatch, capsys):
    assert refused(app, "data.file=/d/x.data", monkeypatch, capsys) == (
        "Error: ConfigError: data.file=/d/x.data: only data=yolo reads a dataset file, darknet's "
        ".data or an ultralytics data yaml (no data= is given: the command's default "
        "data=synthetic has no file key): give data=yolo data.file=/d/x.data\n"
    )


def test_the_data_file_hint_is_given_where_hydra_refuses_the_override():
    """Hydra refuses data.file= beside train.py's default data and an experiment's; evaluate.py
    and export.py, whose data defaults to the checkpoint's record, take it (data_argv)."""
    with initialize_config_module(config_module="yolov4.configs", version_base="1.3"):
        for name, given in (("train", []), ("anchors", []), ("train", ["experiment=coco_yolov4"])):
            with pytest.raises(ConfigCompositionException, match="Could not override 'data.file'"):
                compose(name, overrides=[*given, "data.file=/d/x.data"])
            with pytest.raises(ConfigError, match="give data=yolo data.file=/d/x.data$"):
                check_option_keys(parsed(*given, "data.file=/d/x.data"), name)
    for app, fine in (("train", ["data=yolo", "data.file=/d/x.data"]),
                      ("evaluate", ["data.file=/d/x.data"]), ("export", ["data.file=/d/x.data"]),
                      ("train", ["ckpt_path=/r/last.ckpt", "data.file=/d/x.data"])):  # fmt: skip
        check_option_keys(parsed(*fine), app)
    with pytest.raises(ConfigError, match="give data=yolo data.file=/d/x.data$"):
        check_option_keys(parsed("data=coco", "data.file=/d/x.data"), "evaluate")


@pytest.mark.parametrize(
    "key, group, option, default",
    [("data.file=/d/x.data", "data", "yolo", "synthetic"),
     ("model.cfg=/d/my.cfg", "model", "darknet", "yolov4-tiny")],
)  # fmt: skip
def test_a_resume_of_a_copied_checkpoint_names_the_group_option(
    key, group, option, default, tmp_path, monkeypatch, capsys
):
    """A checkpoint without its run's saved config resumes on train.py's defaults: Hydra's
    `+key=` advice would train the default's data or network; the option is named instead."""
    ckpt = tmp_path / "copied.ckpt"
    ckpt.write_bytes(b"")
    err = refused("train", [f"ckpt_path={ckpt}", key], monkeypatch, capsys)
    name = key.split("=")[0]
    assert err.startswith(f"Error: ConfigError: resume of ckpt_path={ckpt}: {key}: only ")
    assert f"the command's default {group}={default}" in err
    assert err.endswith(
        f"give {group}={option} {key} (not +{name}=, which keeps {group}={default})\n"
    )
    assert "+" + name + "=" not in err.replace(f"(not +{name}=", "")


def test_a_resume_in_its_run_folder_is_checked_with_the_runs_options(tmp_path, monkeypatch, capsys):
    """The run's saved options decide: its data=yolo takes data.file=, and a run trained on
    another data option is told to leave the key out or start a new run from its weights."""
    run = tmp_path / "run"
    (run / ".hydra").mkdir(parents=True)
    (run / "checkpoints").mkdir()
    (run / ".hydra/config.yaml").write_text("{}\n")
    (run / ".hydra/overrides.yaml").write_text("- model=yolov4-csp\n")
    ckpt = run / "checkpoints/last.ckpt"
    ckpt.write_bytes(b"")
    err = refused("train", [f"ckpt_path={ckpt}", "model.cfg=/d/my.cfg"], monkeypatch, capsys)
    assert err == (
        f"Error: ConfigError: resume of ckpt_path={ckpt}: model.cfg=/d/my.cfg: only model=darknet "
        "reads a cfg file (model=yolov4-csp is the zoo network its name says, with no cfg key; "
        f"a resume composes the run's saved options, {run}/.hydra/overrides.yaml, under the "
        "command's): a resume trains on the run's model; leave model.cfg= out, or start a new "
        f"run from its weights: model=darknet model.cfg=/d/my.cfg "
        f"module.pretrained={run}/weights/last.pt\n"
    )
    from yolov4.cli.model_option import check_resume_option_keys
    from yolov4.cli.resume import merge_overrides

    merged = merge_overrides(["data=yolo", "data.file=/d/x.data"], ["data.file=/d/y.data"])
    check_resume_option_keys(parsed(*merged), str(run), str(ckpt))  # data=yolo reads it


@pytest.mark.parametrize("app", APPS)
def test_a_model_name_of_no_option_names_the_options_and_the_darknet_model(
    app, monkeypatch, capsys
):
    """darknet's YOLOv2 cfgs are no zoo network: ``model=yolov2-tiny`` names the options and
    ``model=darknet model.cfg=`` in one line, where Hydra prints its search path."""
    err = refused(app, "model=yolov2-tiny", monkeypatch, capsys)
    assert err.count("\n") == 1 and err.startswith(
        "Error: ConfigError: model=yolov2-tiny: no model config of that name (the options: "
    )
    assert "model=darknet model.cfg=path/to/yolov2-tiny.cfg (darknet's YOLOv2 [region]" in err
    listed = err.split("(the options: ")[1].split(")")[0].split(", ")
    assert listed == model_options()
    with initialize_config_module(config_module="yolov4.configs", version_base="1.3"):
        with pytest.raises(ConfigCompositionException, match="Could not find 'model/yolov2-tiny'"):
            compose(app, overrides=["model=yolov2-tiny"])


def test_the_options_named_are_those_hydra_composes():
    assert {"darknet", "yolov4", "yolov4-tiny"} <= set(model_options())
    with initialize_config_module(config_module="yolov4.configs", version_base="1.3"):
        for option in model_options():
            cfg = compose("train", [f"model={option}"], return_hydra_config=True)
            assert cfg.hydra.runtime.choices.model == option


def test_a_cfg_file_given_as_the_model_name_is_given_as_model_cfg():
    with pytest.raises(ConfigError, match=r"model=darknet model\.cfg=/d/my\.cfg \("):
        check_option_keys(parsed("model=/d/my.cfg"))
    for fine in (["model=darknet"], ["model=null"], ["~model"], ["model=yolov4,yolov2"],
                 ["hydra.searchpath=[file:///mine]", "model=mine"]):  # fmt: skip
        check_option_keys(parsed(*fine))
