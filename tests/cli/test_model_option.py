"""``model.cfg=PATH`` beside a zoo model: Hydra refuses it (suggesting ``+model.cfg=``); every
command names ``model=darknet model.cfg=PATH`` instead, and ``+model.cfg=`` trains the cfg's
network under its file's name, not the zoo model's."""

from __future__ import annotations

import importlib

import pytest
from hydra import compose, initialize_config_module
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import ConfigCompositionException

from tests.models.test_zoo import user_cfg
from yolov4.cli.common import model_config, model_network
from yolov4.cli.model_option import _experiment_model, check_model_cfg_override
from yolov4.errors import ConfigError
from yolov4.models import ModelConfig

APPS = ("train", "evaluate", "export", "predict", "anchors")
EXPERIMENTS = ["coco_yolov3", "coco_yolov4", "coco_yolov4_csp", "coco_yolov4_p5",
               "coco_yolov4_p6", "coco_yolov4_tiny", "coco_yolov4x_mish"]  # fmt: skip


def parsed(*overrides: str) -> list:
    return OverridesParser.create().parse_overrides(list(overrides))


@pytest.mark.parametrize("app", APPS)
def test_model_cfg_without_the_darknet_model_names_it(app, monkeypatch, capsys):
    main = importlib.import_module(f"yolov4.cli.{app}").hydra_main
    monkeypatch.setattr("sys.argv", [f"{app}.py", "model.cfg=/d/my.cfg"])
    with pytest.raises(SystemExit) as e:
        main()
    assert e.value.code == 1
    assert capsys.readouterr().err == (
        "Error: ConfigError: model.cfg=/d/my.cfg: only model=darknet reads a cfg file (no "
        "model= is given: the command's default model, a zoo network, has no cfg key): give "
        "model=darknet model.cfg=/d/my.cfg\n"
    )


def test_model_cfg_beside_a_named_zoo_model_names_it():
    """A zoo model named on the command line, or by the experiment, is named in the error."""
    with pytest.raises(ConfigError, match=r"\(model=yolov4-csp is the zoo network its name says"):
        check_model_cfg_override(parsed("model=yolov4-csp", "model.cfg=/d/my.cfg"))
    with pytest.raises(ConfigError, match=r"\(model=yolov4 \(the experiment's\) is the zoo"):
        check_model_cfg_override(parsed("experiment=coco_yolov4", "model.cfg=/d/my.cfg"))


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
            assert _experiment_model(parsed(*given)) == choices.model
    for fine in (["model=darknet", "model.cfg=/d/my.cfg"], ["+model.cfg=/d/my.cfg"],
                 ["experiment=mine", "model.cfg=/d/my.cfg"], ["model=darknet,yolov4"]):  # fmt: skip
        check_model_cfg_override(parsed(*fine))
    with pytest.raises(ConfigError, match="give model=darknet model.cfg=/d/my.cfg"):
        check_model_cfg_override(parsed("experiment=coco_yolov4", "model.cfg=/d/my.cfg"))


def test_plus_model_cfg_beside_a_zoo_model_is_named_after_the_file(compose_cfg, tmp_path):
    path = tmp_path / "my-tiny.cfg"
    path.write_text(user_cfg())
    cfg = compose_cfg("train", [f"+model.cfg={path}"], tmp_path)
    assert cfg.model.name == "yolov4-tiny"  # the default model option's
    assert model_network(cfg).name == "my-tiny"
    assert ModelConfig.from_dict(model_config(cfg, 4)).name == "my-tiny"
