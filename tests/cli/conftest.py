"""Compose the real Hydra configs, shrunk to a few tiny images (tests/cli)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_module

from yolov4 import build_model, save_checkpoint

SYNTHETIC_NAMES = ["circle", "rectangle", "triangle", "cross"]  # data=synthetic's classes
# A run small enough for a unit test: 64-px images, a handful of them, no workers.
TINY_RUN = [
    "data.num_train=16",
    "data.num_val=6",
    "data.image_size=96",
    "data.input_size=[64,64]",
    "data.batch_size=4",
    "data.num_workers=0",
    "augment.multi_scale=null",
    "trainer.max_epochs=1",
    "trainer.limit_train_batches=2",
    "trainer.enable_progress_bar=false",
    "logger=csv",
    "export.formats=[onnx]",
]


@pytest.fixture(scope="session")
def seeded_checkpoint(tmp_path_factory, randomize) -> tuple[torch.nn.Module, Path]:
    """``(model, weights file)``: a seeded yolov4-tiny (random BN and head biases) with the
    synthetic data's four classes, at 64x64 letterbox."""
    torch.manual_seed(3)
    model = randomize(build_model("yolov4-tiny", num_classes=len(SYNTHETIC_NAMES)), seed=3)
    root = tmp_path_factory.mktemp("seeded-model")
    preprocess = {"input_size": [64, 64], "mode": "letterbox"}
    return model, save_checkpoint(root / "m.pt", model, SYNTHETIC_NAMES, preprocess)


@pytest.fixture(scope="session")
def seeded_artifact(seeded_checkpoint, tmp_path_factory) -> Path:
    """The ONNX export artifact of :func:`seeded_checkpoint`, exported once (read only)."""
    from yolov4.export.artifact import export_artifact

    out = tmp_path_factory.mktemp("seeded-artifact") / "export"
    return export_artifact(seeded_checkpoint[1], out, formats=["onnx"])


@pytest.fixture(scope="session")
def tiny_run() -> list[str]:
    return list(TINY_RUN)


@pytest.fixture(scope="session")
def synthetic_cache(tmp_path_factory):
    return tmp_path_factory.getbasetemp() / "synthetic-cache"


@pytest.fixture(scope="session")
def compose_cfg(synthetic_cache):
    """``compose_cfg(name, overrides)``: the config ``name`` with a temporary run directory and a
    shared synthetic cache. Configs whose data defaults to null (``evaluate``: the checkpoint's
    recorded data) get ``data=synthetic`` when ``overrides`` set ``data.*`` keys without a
    ``data=`` option, and the cache only with ``data=synthetic``. ``train`` and ``evaluate``
    write their reports without figures (``analysis.plots=false``, most of an evaluation's
    time on these few images) unless ``overrides`` set ``analysis.plots=true``."""
    cache = synthetic_cache

    def _compose(name: str, overrides: list[str], run_dir) -> object:
        overrides = list(overrides)
        group = any(o.startswith("data=") for o in overrides)
        if name != "train" and not group and any(o.startswith("data.") for o in overrides):
            overrides = ["data=synthetic", *overrides]
        synthetic = name == "train" or "data=synthetic" in overrides
        data = [f"data.cache_dir={cache}"] if synthetic else []
        figures = ["analysis.plots=false"] if name in ("train", "evaluate") else []
        defaults = [f"paths.output_dir={run_dir}", *figures, *data]
        with initialize_config_module(config_module="yolov4.configs", version_base="1.3"):
            return compose(name, overrides=[*defaults, *overrides])  # later overrides win

    return _compose


@pytest.fixture
def predict_cli(tmp_path):
    """``predict_cli(*overrides) -> (summary, output dir)``: predict.py's config composed and run
    in-process, each call into a new output folder under ``tmp_path``."""
    from yolov4.cli.predict import predict

    def _run(*overrides: str):
        out = tmp_path / f"out{len(list(tmp_path.glob('out*')))}"
        with initialize_config_module(config_module="yolov4.configs", version_base="1.3"):
            cfg = compose("predict", overrides=[f"output={out}", "progress=false", *overrides])
        return predict(cfg), out

    return _run


@pytest.fixture
def same_second(monkeypatch) -> None:
    """Hydra's ``${now:...}`` reads 2026-01-01 00:00:00 every time: runs started in one second."""
    import datetime as dt

    import hydra.core.utils

    class SameSecond(dt.datetime):
        @classmethod
        def now(cls, tz=None):
            return cls(2026, 1, 1, 0, 0, 0)

    monkeypatch.setattr(hydra.core.utils, "datetime", SameSecond)
