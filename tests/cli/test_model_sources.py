"""The model-source vocabulary shared by predict.py, evaluate.py and export.py
(``yolov4.cli.sources``): exactly one source, darknet's network named, names read from files."""

from __future__ import annotations

import pytest
from omegaconf import OmegaConf

from yolov4 import build_model
from yolov4.cli.sources import class_names, load_predictor, model_checkpoint, model_source
from yolov4.darknet import save_darknet_weights
from yolov4.errors import ConfigError, DatasetError


def cfg(**values):
    base = {"checkpoint": None, "artifact": None, "darknet_weights": None, "names": None}
    return OmegaConf.create({**base, **values})


def test_exactly_one_source_is_given():
    assert model_source(cfg(checkpoint="a.pt")) == "checkpoint"
    assert model_source(cfg(artifact="run/export")) == "artifact"
    with pytest.raises(ConfigError, match="exactly one of .* got none"):
        model_source(cfg())
    with pytest.raises(ConfigError, match="got checkpoint=a.pt, artifact=x"):
        model_source(cfg(checkpoint="a.pt", artifact="x"))
    with pytest.raises(ConfigError, match="exactly one of checkpoint=... or darknet_weights=..."):
        model_source(cfg(artifact="x"), ("checkpoint", "darknet_weights"))  # export.py


def test_darknet_weights_need_their_network_and_read_names_files(tmp_path):
    weights = save_darknet_weights(build_model("yolov3-tiny", num_classes=2), tmp_path / "w")
    (tmp_path / "two.names").write_text("car\nbike\n")
    with pytest.raises(ConfigError, match="needs its network: model=<zoo name>"):
        model_checkpoint(cfg(darknet_weights=str(weights), model={"num_classes": None}))
    zoo = {"name": "yolov3-tiny", "num_classes": None}
    ckpt = model_checkpoint(
        cfg(darknet_weights=str(weights), model=zoo, names=str(tmp_path / "two.names"))
    )
    assert ckpt.class_names == ["car", "bike"] and ckpt.preprocess.mode == "stretch"
    predictor = load_predictor(
        cfg(
            darknet_weights=str(weights),
            model=zoo,
            names=["a", "b"],
            darknet_resize_mode="letterbox",
        )
    )
    assert predictor.preprocess_config.mode == "letterbox"
    assert predictor.metadata["source"] == str(weights)
    assert class_names(cfg()) is None
    with pytest.raises(DatasetError, match="not found"):
        class_names(cfg(names=str(tmp_path / "none.names")))


def test_model_darknet_without_its_cfg_names_model_cfg(tmp_path):
    """predict.py / export.py darknet_weights=w model=darknet without model.cfg= said "'???' is
    neither a zoo network nor a cfg file"; the message is evaluate.py's and train.py's."""
    from yolov4.cli.sources import check_no_network

    weights = save_darknet_weights(build_model("yolov3-tiny", num_classes=2), tmp_path / "w")
    darknet = OmegaConf.create({"name": None, "cfg": "???", "num_classes": None})  # darknet.yaml
    given = cfg(darknet_weights=str(weights), model=darknet, names=["a", "b"])
    message = "^model=darknet needs the cfg file: model.cfg=path/to/your.cfg$"
    for check in (check_no_network, model_checkpoint, load_predictor):
        with pytest.raises(ConfigError, match=message):
            check(given)
    with pytest.raises(ConfigError, match=message):  # the model config's own path (train.py)
        build_model(cfg="???")


def test_the_commands_own_model_is_fused_in_place_not_copied(tmp_path, monkeypatch):
    """predict.py's Checkpoint (a project file's or darknet's) is its own: the Predictor serves
    that very model, fused, and no network is deep-copied on the way."""
    import copy

    import torch

    from yolov4 import save_checkpoint
    from yolov4.cli import sources

    model = build_model("yolov4-tiny", num_classes=2)
    path = save_checkpoint(tmp_path / "m.pt", model, ["a", "b"], {"input_size": [64, 64]})
    weights = save_darknet_weights(build_model("yolov3-tiny", num_classes=2), tmp_path / "w")
    built, copied = [], []
    deepcopy, checkpoint = copy.deepcopy, sources.model_checkpoint

    def spy_copy(value, *args, **kwargs):
        if isinstance(value, torch.nn.Module):
            copied.append(type(value).__name__)
        return deepcopy(value, *args, **kwargs)

    monkeypatch.setattr(copy, "deepcopy", spy_copy)
    monkeypatch.setattr(
        sources, "model_checkpoint", lambda c: built.append(checkpoint(c)) or built[-1]
    )
    darknet = {"name": "yolov3-tiny", "num_classes": None}
    for given in (cfg(checkpoint=str(path)), cfg(darknet_weights=str(weights), model=darknet,
                                                 names=["a", "b"])):  # fmt: skip
        served = load_predictor(given).backend.model.model
        assert served is built[-1].model and served.is_fused
    assert copied == []


def test_darknet_only_keys_beside_a_checkpoint_or_artifact_are_refused():
    from yolov4.cli.sources import check_no_network

    for given, named in (
        ({"names": "coco.names"}, "names=coco.names"),
        ({"darknet_resize_mode": "letterbox"}, "darknet_resize_mode=letterbox"),
        ({"model": {"num_classes": 80}}, "model.num_classes=80"),
    ):
        with pytest.raises(ConfigError, match=f"{named} describe darknet_weights=; an artifact="):
            model_source(cfg(artifact="run/export", **given))
    zoo = {"name": "yolov4", "num_classes": None}
    assert model_source(cfg(checkpoint="a.pt", model=zoo)) == "checkpoint"  # evaluate.py's default
    with pytest.raises(ConfigError, match="model=yolov4 describe darknet_weights=; a checkpoint="):
        check_no_network(cfg(checkpoint="a.pt", model=zoo))  # predict.py, export.py
    check_no_network(cfg(checkpoint="a.pt", model={"num_classes": None}))


def test_an_artifacts_backend_or_precision_beside_a_checkpoint_is_refused():
    """predict.py checkpoint=best.pt precision=int8 backend=openvino (even precision=banana)
    ran fp32 in PyTorch with no word; export.py's own precision list is not this key."""
    from yolov4.cli.sources import check_no_network, check_runtime_keys

    for given in ({"precision": "int8"}, {"backend": "openvino", "precision": "bf16"}):
        for source in ({"checkpoint": "a.pt"}, {"darknet_weights": "a.weights"}):
            with pytest.raises(ConfigError, match=r"an artifact's runtime and precision .* runs"):
                check_runtime_keys(cfg(**source, **given))
    check_runtime_keys(cfg(artifact="run/export", precision="int8"))
    export = cfg(checkpoint="a.pt", precision=["fp32", "int8"], model={"num_classes": None})
    check_no_network(export)  # export.py's list of precisions to export
    assert model_source(export, ("checkpoint", "darknet_weights")) == "checkpoint"


@pytest.mark.parametrize(
    ("key", "value"), [("backend", "tensorrt"), ("precision", "fp8"), ("backend", "ONNXRUNTIME")]
)
def test_an_unknown_backend_or_precision_is_a_config_error_naming_the_key(key, value):
    """predict.py artifact=art backend=tensorrt ended in the loader's ExportError without the
    key; it is refused before the artifact is read, naming key, allowed values and the value."""
    from yolov4.cli.sources import check_runtime_keys
    from yolov4.core.artifact import AUTO_PRECISION, PRECISIONS, backend_names

    allowed = backend_names() if key == "backend" else (*PRECISIONS, AUTO_PRECISION)
    with pytest.raises(ConfigError) as refused:
        check_runtime_keys(cfg(artifact="no/such/export", **{key: value}))
    message = str(refused.value)
    assert message.startswith(f"{key}={value}: expected one of {', '.join(allowed)}")
    assert message.endswith(f"got {value!r}")
    for good in allowed:
        check_runtime_keys(cfg(artifact="no/such/export", **{key: good}))
