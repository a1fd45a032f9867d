"""The strict-loadable weights file: round trips through every wrapper, errors, atomic writes."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from yolov4 import CheckpointError, build_model
from yolov4.core.checkpoint import (
    FORMAT,
    clean_state_dict,
    load_checkpoint,
    load_state_dict_checked,
    save_checkpoint,
)
from yolov4.core.preprocess import PreprocessConfig

NAMES = ["circle", "square", "triangle"]


@pytest.fixture(scope="module")
def tiny3():
    torch.manual_seed(0)
    model = build_model("yolov4-tiny", num_classes=3)
    with torch.no_grad():  # non-default BN statistics so a lost buffer would show
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.5, 1.5)
    return model.eval()


def outputs(model, x):
    with torch.no_grad():
        return model.eval()(x)


def test_round_trip_reproduces_outputs(tmp_path, tiny3):
    path = save_checkpoint(
        tmp_path / "best.pt",
        tiny3,
        NAMES,
        preprocess={"input_size": [96, 96], "mode": "letterbox"},
        metrics={"mAP": np.float64(0.25), "mAP50": torch.tensor(0.5)},
        trained={"epoch": 3, "step": 120},
    )
    raw = torch.load(path, weights_only=True)
    assert raw["format"] == FORMAT and raw["metrics"] == {"mAP": 0.25, "mAP50": 0.5}
    assert list(raw["state_dict"]) == list(build_model(**raw["model"]).state_dict())
    strict = build_model(**raw["model"])
    strict.load_state_dict(raw["state_dict"], strict=True)

    ckpt = load_checkpoint(path)
    assert ckpt.class_names == NAMES and ckpt.trained == {"epoch": 3, "step": 120}
    assert ckpt.preprocess == PreprocessConfig(input_size=(96, 96))  # completed, typed
    assert not ckpt.model.training
    x = torch.rand(1, 3, 96, 96)
    for a, b in zip(outputs(ckpt.model, x), outputs(tiny3, x)):
        assert torch.equal(a, b)


class Wrapper(torch.nn.Module):
    """Stands in for the LightningModule: the network as an attribute."""

    def __init__(self, model):
        super().__init__()
        self.model = model


@pytest.mark.parametrize(
    "wrap",
    [
        lambda m: Wrapper(m).state_dict(),  # LightningModule attribute: model.
        lambda m: torch.nn.DataParallel(Wrapper(m)).state_dict(),  # module.model.
        lambda m: torch.compile(m).state_dict(),  # _orig_mod.
        lambda m: Wrapper(torch.compile(m)).state_dict(),  # model._orig_mod.
        lambda m: torch.optim.swa_utils.AveragedModel(m).state_dict(),  # EMA: module. + n_averaged
    ],
    ids=["lightning", "ddp", "compile", "lightning-compile", "ema"],
)
def test_wrapped_state_dicts_save_with_plain_keys(tmp_path, tiny3, wrap):
    sd = wrap(copy.deepcopy(tiny3))
    path = save_checkpoint(tmp_path / "w.pt", tiny3, NAMES, state_dict=sd)
    raw = torch.load(path, weights_only=True)
    assert list(raw["state_dict"]) == list(tiny3.state_dict())
    x = torch.rand(1, 3, 64, 64)
    for a, b in zip(outputs(load_checkpoint(path).model, x), outputs(tiny3, x)):
        assert torch.equal(a, b)


def test_lightning_ckpt_prefers_ema_weights(tmp_path, tiny3):
    other = build_model("yolov4-tiny", num_classes=3)
    sd = {f"model.{k}": v for k, v in other.state_dict().items()}
    sd.update({f"ema_model.{k}": v for k, v in tiny3.state_dict().items()})
    path = tmp_path / "last.ckpt"
    torch.save(
        {
            "pytorch-lightning_version": "2.6.0",
            "epoch": 4,
            "global_step": 99,
            "state_dict": sd,
            "hyper_parameters": {"model": tiny3.config.to_dict(), "class_names": NAMES},
        },
        path,
    )
    ckpt = load_checkpoint(path)
    assert ckpt.trained == {"epoch": 4, "step": 99} and ckpt.class_names == NAMES
    x = torch.rand(1, 3, 64, 64)
    for a, b in zip(outputs(ckpt.model, x), outputs(tiny3, x)):
        assert torch.equal(a, b)


def test_other_num_classes_is_named(tiny3):
    with pytest.raises(
        CheckpointError,
        match=r"(?s)shape mismatches 4.*trained with num_classes=3, the model has num_classes=5",
    ):
        load_state_dict_checked(build_model("yolov4-tiny", num_classes=5), tiny3.state_dict())


def test_other_model_is_named(tiny3):
    with torch.device("meta"):
        big = build_model("yolov4", num_classes=3)
    with pytest.raises(CheckpointError) as e:
        load_state_dict_checked(big, tiny3.state_dict())
    msg = str(e.value)
    assert "missing keys" in msg and "unexpected keys" in msg
    assert "the weights are for yolov4-tiny, the model is yolov4" in msg


def test_a_wrapped_state_dict_loads_every_tensor(tiny3):
    model = build_model("yolov4-tiny", num_classes=3)
    wrapped = {f"module.{k}": v for k, v in tiny3.state_dict().items()}  # DDP's prefix
    load_state_dict_checked(model, wrapped)
    want = tiny3.state_dict()
    assert model.state_dict().keys() == want.keys()
    assert all(torch.equal(v, want[k]) for k, v in model.state_dict().items())
    assert torch.equal(model.layers[0].conv.weight, tiny3.layers[0].conv.weight)


def test_save_refuses_wrong_class_names(tmp_path, tiny3):
    with pytest.raises(
        CheckpointError, match="class_names: 2 class names for a model with num_classes=3"
    ):
        save_checkpoint(tmp_path / "x.pt", tiny3, ["a", "b"])
    assert not (tmp_path / "x.pt").exists()


def test_truncated_and_foreign_files(tmp_path, tiny3):
    path = save_checkpoint(tmp_path / "best.pt", tiny3, NAMES)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated or not a checkpoint"):
        load_checkpoint(path)
    junk = tmp_path / "junk.pt"
    junk.write_bytes(np.random.default_rng(0).bytes(5000))
    with pytest.raises(CheckpointError, match="junk.pt"):
        load_checkpoint(junk)
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(tmp_path / "missing.pt")
    # a folder said "does not exist"; an export artifact's folder is named as one
    (tmp_path / "export").mkdir()
    with pytest.raises(CheckpointError, match=r"export is a folder; expected a checkpoint file"):
        load_checkpoint(tmp_path / "export")
    (tmp_path / "export" / "metadata.json").write_text("{}")
    with pytest.raises(CheckpointError, match=r"is an export artifact \(artifact= or"):
        load_checkpoint(tmp_path / "export")
    from yolov4.core.artifact import read_metadata
    from yolov4.errors import ExportError

    (tmp_path / "export" / "model.onnx").write_bytes(b"onnx")
    with pytest.raises(ExportError, match=r"model.onnx is a file of the artifact .*export: give"):
        read_metadata(tmp_path / "export" / "model.onnx")
    text, jpeg = tmp_path / "text.pt", tmp_path / "photo.pt"
    text.write_text("hello\n")  # torch.load: KeyError from its legacy reader
    jpeg.write_bytes(b"\xff\xd8\xff\xe0" + bytes(200))  # torch.load: "Weights only load failed"
    for path in (text, jpeg):
        with pytest.raises(CheckpointError, match="not a PyTorch checkpoint: neither a zip"):
            load_checkpoint(path)
    other = tmp_path / "other.pt"
    torch.save({"weights": torch.zeros(3)}, other)
    with pytest.raises(CheckpointError, match=r"format None, expected 'yolov4.weights/1'"):
        load_checkpoint(other)


def test_pickled_objects_are_refused(tmp_path):
    path = tmp_path / "evil.pt"
    torch.save({"format": FORMAT, "payload": np.float64(1.0)}, path)
    with pytest.raises(CheckpointError, match="refusing to load"):
        load_checkpoint(path)


def test_crash_during_write_keeps_previous_file(tmp_path, tiny3, monkeypatch):
    path = save_checkpoint(tmp_path / "best.pt", tiny3, NAMES, metrics={"mAP": 0.1})

    def crash(obj, f, *args, **kwargs):
        f.write(b"partial")
        raise KeyboardInterrupt("killed mid-write")

    monkeypatch.setattr(torch, "save", crash)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(path, tiny3, NAMES, metrics={"mAP": 0.9})
    monkeypatch.undo()
    assert load_checkpoint(path).metrics == {"mAP": 0.1}
    assert [p.name for p in tmp_path.iterdir()] == ["best.pt"]


def test_clean_state_dict_drops_non_tensors_and_nested_compile():
    sd = {"module._orig_mod.a.weight": torch.zeros(1), "module.n_averaged": torch.tensor(3)}
    assert list(clean_state_dict(sd)) == ["a.weight"]
    assert list(clean_state_dict({"x._orig_mod.y": torch.ones(1), "step": 5})) == ["x.y"]


# ---------------------------------------------------------------- what save accepts, all accept
BUILTIN_LEAVES = (bool, int, float, str, type(None))

ACCEPTED = {  # name -> save_checkpoint keyword arguments (beyond path, model)
    "nothing": {},
    "empty preprocess": {"preprocess": {}},
    "size only": {"preprocess": {"input_size": [64, 64]}},
    "non-square stretch": {"preprocess": {"input_size": (64, 96), "mode": "stretch"}},
    "numpy and tensor values": {
        "preprocess": {
            "input_size": np.array([96, 64]),
            "pad_value": np.int64(0),
            "scale": torch.tensor(1.0),
        }
    },
    "complete config": {
        "preprocess": PreprocessConfig((64, 64), "letterbox", 0, "bgr", 1 / 255).to_dict()
    },
    "tensor and numpy metrics": {
        "metrics": {
            "mAP": np.float32(0.5),
            "mAP50": torch.tensor(0.75),
            "per_class": {"circle": {"AP": np.float64(0.1), "n": np.int64(3)}},
            "curve": torch.linspace(0, 1, 3),
            "hist": np.arange(3),
            "best": np.bool_(True),
        },
        "trained": {"epoch": np.int64(3), "step": torch.tensor(7), "lr": np.float32(1e-3)},
    },
    "numpy class names": {"class_names": tuple(np.array(NAMES))},
}


def _leaves(value, where="payload"):
    """(where, leaf) over nested dicts and lists; containers must be exact dicts and lists."""
    if type(value) is dict:
        for k, v in value.items():
            assert type(k) is str, f"{where}: key {k!r} is a {type(k).__name__}"
            yield from _leaves(v, f"{where}.{k}")
    elif type(value) is list:
        for i, v in enumerate(value):
            yield from _leaves(v, f"{where}[{i}]")
    else:
        yield where, value


# the default suite's cases (each exports an artifact); the others run with -m slow
ACCEPTED_FAST = ("nothing", "non-square stretch", "numpy and tensor values")


@pytest.mark.parametrize(
    "name",
    [n if n in ACCEPTED_FAST else pytest.param(n, marks=pytest.mark.slow) for n in ACCEPTED],
)
def test_what_save_accepts_every_reader_accepts(tmp_path, tiny3, name):
    from yolov4.export import export_artifact
    from yolov4.inference import Predictor

    kwargs = {"class_names": NAMES, **ACCEPTED[name]}
    path = save_checkpoint(tmp_path / "best.pt", tiny3, **kwargs)

    raw = torch.load(path, map_location="cpu", weights_only=True)
    for where, leaf in _leaves({k: v for k, v in raw.items() if k != "state_dict"}):
        assert type(leaf) in BUILTIN_LEAVES, f"{where} is a {type(leaf).__name__}: {leaf!r:.60}"
    stored = PreprocessConfig.from_dict(raw["preprocess"])  # complete and valid
    assert raw["preprocess"] == stored.to_dict()

    ckpt = load_checkpoint(path)
    assert ckpt.class_names == NAMES and ckpt.preprocess == stored
    predictor = Predictor.from_checkpoint(path)
    assert predictor.preprocess_config == stored
    image = np.random.default_rng(0).integers(0, 256, (50, 70, 3), dtype=np.uint8)
    (dets,) = predictor(image, conf=0.0)
    assert dets.image_size == (50, 70)
    artifact = export_artifact(path, tmp_path / "export", formats=["torchscript"])
    assert Predictor.from_artifact(artifact, backend="torchscript").preprocess_config == stored


def test_metrics_are_stored_as_their_numbers(tmp_path, tiny3):
    kwargs = ACCEPTED["tensor and numpy metrics"]
    ckpt = load_checkpoint(save_checkpoint(tmp_path / "m.pt", tiny3, NAMES, **kwargs))
    assert ckpt.metrics == {
        "mAP": 0.5,
        "mAP50": 0.75,
        "per_class": {"circle": {"AP": pytest.approx(0.1), "n": 3}},
        "curve": [0.0, 0.5, 1.0],
        "hist": [0, 1, 2],
        "best": True,
    }
    assert type(ckpt.metrics["mAP"]) is float and type(ckpt.metrics["best"]) is bool
    assert ckpt.trained == {"epoch": 3, "step": 7, "lr": pytest.approx(1e-3)}


def test_builtins_only_check_bites_on_a_stored_tensor(tmp_path):
    """The leaf check of the round trip above fails on a payload holding a tensor (the file
    save_checkpoint would write if it stored a metric as it came)."""
    torch.save({"metrics": {"mAP": torch.tensor(0.5)}}, tmp_path / "t.pt")
    raw = torch.load(tmp_path / "t.pt", weights_only=True)
    assert [type(v) for _, v in _leaves(raw)] == [torch.Tensor]


@pytest.mark.parametrize(
    "preprocess,message",
    [
        ({"size": [64, 64]}, r"unknown preprocess key\(s\) \['size'\]"),
        (
            {"input_size": [100, 64]},
            r"preprocess.input_size: expected \(H, W\) positive multiples of 32",
        ),
        ({"input_size": 64}, "preprocess.input_size"),
        ({"input_size": [64.5, 64]}, "preprocess.input_size"),
        ({"mode": "fit"}, "preprocess.mode"),
        ({"pad_value": 300}, "preprocess.pad_value"),
        ({"pad_value": "114"}, "preprocess.pad_value"),
        ({"channel_order": "hsv"}, "preprocess.channel_order"),
        ({"scale": 0}, "preprocess.scale"),
        ("letterbox", "preprocess: expected a mapping"),
    ],
)
def test_save_refuses_what_a_reader_would(tmp_path, tiny3, preprocess, message):
    with pytest.raises(CheckpointError, match=f"save_checkpoint: {message}"):
        save_checkpoint(tmp_path / "x.pt", tiny3, NAMES, preprocess=preprocess)
    assert not (tmp_path / "x.pt").exists()


def test_save_refuses_what_load_would_refuse_or_misread(tmp_path, tiny3):
    path = tmp_path / "x.pt"
    with pytest.raises(CheckpointError, match="expected a list of class names, got str"):
        save_checkpoint(path, tiny3, "abc")
    with pytest.raises(CheckpointError, match=r"unique, \['a'\] repeat"):
        save_checkpoint(path, tiny3, ["a", "a", "c"])
    with pytest.raises(CheckpointError, match="expected a file path and a YOLOv4 network"):
        save_checkpoint(tiny3, path)  # arguments swapped
    nan = build_model("yolov4-tiny", num_classes=3)
    with torch.no_grad():
        next(nan.parameters()).view(-1)[0] = float("nan")
    with pytest.raises(CheckpointError, match="non-finite values"):
        save_checkpoint(path, nan, NAMES)
    assert not path.exists()
    with pytest.raises(CheckpointError, match=r"is a folder; give a file, e\.g\. .*best\.pt"):
        save_checkpoint(tmp_path, tiny3, NAMES)
    with pytest.raises(
        CheckpointError, match="load_checkpoint: expected a file path, got NoneType"
    ):
        load_checkpoint(None)
    wrapped = save_checkpoint(path, torch.nn.DataParallel(tiny3), NAMES)  # DataParallel's .module
    assert load_checkpoint(wrapped).class_names == list(NAMES)


def test_a_fused_networks_weights_are_named_as_such(tmp_path, tiny3):
    from yolov4 import fuse_model

    fused = fuse_model(tiny3)
    with pytest.raises(CheckpointError, match=r"the model is fused .* save the unfused model"):
        save_checkpoint(tmp_path / "f.pt", fused, NAMES)
    with pytest.raises(CheckpointError, match="likely cause: the weights are of a fused network"):
        save_checkpoint(tmp_path / "f.pt", tiny3, NAMES, state_dict=fused.state_dict())


def test_a_gpu_map_location_without_a_gpu_is_named(tmp_path, tiny3, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    path = save_checkpoint(tmp_path / "x.pt", tiny3, NAMES)
    with pytest.raises(CheckpointError, match=r"map_location='cuda:0'\): this machine has no CUDA"):
        load_checkpoint(path, map_location="cuda:0")


def test_the_images_trained_on_load_as_the_models_seen(tmp_path, tiny3):
    """trained.seen (weights file) and yolov4_seen (Lightning .ckpt) become model.seen, which
    save_darknet_weights writes into the .weights header; a file without them loads (strict)
    with 0, and a value that is no count is refused naming it."""
    from yolov4.darknet import load_darknet_weights, save_darknet_weights

    path = save_checkpoint(tmp_path / "w.pt", tiny3, NAMES, trained={"seen": 4096})
    model = load_checkpoint(path).model
    assert model.seen == 4096
    header = load_darknet_weights(build_model("yolov4-tiny", num_classes=3),
                                  save_darknet_weights(model, tmp_path / "w.weights"))  # fmt: skip
    assert header.seen == 4096
    assert load_checkpoint(save_checkpoint(tmp_path / "old.pt", tiny3, NAMES)).model.seen == 0
    sd = {f"model.{k}": v for k, v in tiny3.state_dict().items()}
    hp = {"model": tiny3.config.to_dict(), "class_names": NAMES}
    lightning = {"pytorch-lightning_version": "2.6.0", "epoch": 1, "global_step": 10,
                 "state_dict": sd, "hyper_parameters": hp}  # fmt: skip
    torch.save({**lightning, "yolov4_seen": 640}, tmp_path / "last.ckpt")
    ckpt = load_checkpoint(tmp_path / "last.ckpt")
    assert ckpt.trained["seen"] == 640 and ckpt.model.seen == 640
    torch.save(lightning, tmp_path / "old.ckpt")
    assert load_checkpoint(tmp_path / "old.ckpt").model.seen == 0
    bad = save_checkpoint(tmp_path / "bad.pt", tiny3, NAMES, trained={"seen": -3})
    with pytest.raises(CheckpointError, match=r"trained.seen \(the images trained on\) must be "
                                              r"an int >= 0, found -3"):  # fmt: skip
        load_checkpoint(bad)
