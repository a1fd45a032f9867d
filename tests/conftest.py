"""Shared fixtures: small, seeded models whose every tensor matters in a comparison."""

from __future__ import annotations

import os
import stat

import pytest
import torch

from yolov4 import build_model


@pytest.fixture(scope="session", autouse=True)
def one_intra_op_thread():
    """torch and OpenCV on one thread in the test process (restored at the end). The tests' tensors
    are small: a second thread gains little on them, and where other work shares the cores the
    thread pools wait for each other (forward passes up to 10x slower). Subprocesses (the
    commands as users run them) keep their defaults."""
    import cv2

    threads = torch.get_num_threads(), cv2.getNumThreads()
    torch.set_num_threads(1)
    cv2.setNumThreads(1)
    yield
    torch.set_num_threads(threads[0])
    cv2.setNumThreads(threads[1])


def randomize_(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Give BN statistics/affine and head biases non-trivial random values (in place), so that a
    comparison against another implementation exercises every weight a file carries."""
    g = torch.Generator().manual_seed(seed)

    def rand(t: torch.Tensor, lo: float, hi: float) -> None:
        t.copy_(torch.rand(t.shape, generator=g) * (hi - lo) + lo)

    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                rand(m.weight, 0.5, 1.5)
                rand(m.bias, -0.2, 0.2)
                rand(m.running_mean, -0.2, 0.2)
                rand(m.running_var, 0.5, 1.5)
            elif isinstance(m, torch.nn.Conv2d) and m.bias is not None:
                rand(m.bias, -1.0, 1.0)
    return model.eval()


@pytest.fixture(scope="session")
def randomize():
    """The :func:`randomize_` helper, for tests that build their own models."""
    return randomize_


@pytest.fixture(scope="session")
def tiny80() -> torch.nn.Module:
    torch.manual_seed(0)
    return randomize_(build_model("yolov4-tiny"))


@pytest.fixture(scope="session")
def yolov4_3cls() -> torch.nn.Module:
    torch.manual_seed(1)
    return randomize_(build_model("yolov4", num_classes=3), seed=1)


def small_synthetic(cache, cls=None, **overrides):
    """A prepared synthetic DataModule small enough for a test (96-px images, 64x64 input,
    no workers); ``cls`` a SyntheticDataModule subclass, ``overrides`` any of its arguments."""
    from yolov4.data.datamodule import SyntheticDataModule

    args = dict(num_train=4, num_val=7, image_size=96, cache_dir=str(cache), input_size=[64, 64],
                batch_size=2, num_workers=0, persistent_workers=False)  # fmt: skip
    dm = (cls or SyntheticDataModule)(**{**args, **overrides})
    dm.prepare_data()
    return dm


def module_of(net: torch.nn.Module, dm, **kwargs):
    """A YoloModule for ``dm``'s classes holding ``net``'s weights (no EMA unless asked)."""
    from yolov4.training.module import YoloModule

    module = YoloModule(
        **{
            "model": net.config.to_dict(),
            "class_names": dm.class_names,
            "category_ids": dm.category_ids,
            "preprocess": dm.preprocess_config.to_dict(),
            "ema_decay": None,
            **kwargs,
        }
    )
    module.model.load_state_dict(net.state_dict())
    return module


@pytest.fixture(scope="session")
def overfit(tmp_path_factory):
    """:class:`tests.overfit.Overfit`: yolov4-tiny overfit on four 64-px synthetic images."""
    from tests.overfit import overfit_run

    return overfit_run(tmp_path_factory.mktemp("overfit"))


@pytest.fixture(scope="session")
def int8_artifact(overfit, tmp_path_factory):
    """The overfit model's ONNX artifact with a calibrated, gated INT8 model as its default
    precision (read only)."""
    from tests.overfit import int8_export

    return int8_export(overfit, tmp_path_factory.mktemp("int8") / "export")


@pytest.fixture
def fake_slurm(tmp_path, monkeypatch):
    """``scontrol`` on PATH recording its arguments; the job id SLURM would set."""
    bin_dir, calls = tmp_path / "bin", tmp_path / "scontrol.calls"
    bin_dir.mkdir()
    script = bin_dir / "scontrol"
    script.write_text(f'#!/bin/sh\necho "$@" >> {calls}\n')
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("SLURM_JOB_ID", "4242")
    monkeypatch.delenv("SLURM_ARRAY_JOB_ID", raising=False)
    return calls
