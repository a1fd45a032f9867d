"""Metrics independent of the process count (2 CPU processes, gloo); resume after a kill ends
in the very state of an uninterrupted run."""

from __future__ import annotations

import lightning as L
import pytest
import torch

from tests.conftest import module_of, small_synthetic
from yolov4.cli.train import train
from yolov4.evaluation import METRIC_KEYS
from yolov4.models import build_model


def validate(module, datamodule, devices: int) -> dict[str, float]:
    trainer = L.Trainer(
        accelerator="cpu",
        devices=devices,
        strategy="ddp_fork" if devices > 1 else "auto",
        logger=False,
        enable_progress_bar=False,
        enable_checkpointing=False,
        enable_model_summary=False,
    )
    (metrics,) = trainer.validate(module, datamodule=datamodule, verbose=False)
    return {k: float(metrics[f"val/{k}"]) for k in METRIC_KEYS}


@pytest.mark.slow  # 2 spawned processes; the gather in one process: tests/evaluation/test_coco_backends.py
def test_two_processes_give_the_same_metrics_as_one(synthetic_cache, randomize):
    # 7 val images on 2 ranks: the DistributedSampler pads one image on rank 1. Batch 1 so that
    # every image's forward pass is bitwise the same whichever rank runs it.
    dm = small_synthetic(synthetic_cache)
    torch.manual_seed(0)
    # random BN statistics and head biases: varied scores, no ties whose order float noise of
    # another thread count could flip
    net = randomize(build_model("yolov4-tiny", num_classes=4))
    module = module_of(net, dm)
    one = validate(module, dm, devices=1)
    two = validate(module, dm, devices=2)
    assert one["AR100"] > 0  # a real comparison
    assert two == pytest.approx(one, abs=1e-9)


class KillAt(L.Callback):
    """Stands in for a crash (or SIGKILL) in the middle of an epoch."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_end(self, trainer, *args) -> None:
        if trainer.global_step == self.step:
            raise RuntimeError("killed")


@pytest.mark.slow  # two runs and a resume; resume config checks: test_resume_config.py
def test_resume_after_kill_reaches_the_same_step(compose_cfg, tiny_run, tmp_path):
    overrides = [
        *tiny_run,
        "trainer.max_epochs=3",
        "trainer.limit_train_batches=null",
    ]  # 4 steps/epoch
    full = compose_cfg("train", overrides, tmp_path / "full")
    train(full)
    uninterrupted = torch.load(tmp_path / "full/checkpoints/last.ckpt", weights_only=True)

    killed = compose_cfg("train", overrides, tmp_path / "killed")
    with pytest.raises(RuntimeError, match="killed"):
        train(killed, extra_callbacks=[KillAt(step=6)])  # mid-epoch 1; last.ckpt is from step 4
    assert (
        torch.load(tmp_path / "killed/checkpoints/last.ckpt", weights_only=True)["global_step"] == 4
    )
    resumed = compose_cfg(
        "train",
        [*overrides, f"ckpt_path={tmp_path}/killed/checkpoints/last.ckpt"],
        tmp_path / "killed",
    )
    train(resumed)
    final = torch.load(tmp_path / "killed/checkpoints/last.ckpt", weights_only=True)
    assert final["global_step"] == uninterrupted["global_step"] == 12
    assert final["epoch"] == uninterrupted["epoch"]
    assert (tmp_path / "killed/weights/best.pt").is_file()
    # Bit-equal on CPU: same data order, augmentation, weights, EMA, optimizer and lr schedule.
    assert_same_training_state(final, uninterrupted)


def _differences(a, b, where: str) -> list[str]:
    """Paths where two nested checkpoint values differ (tensors compared bit for bit)."""
    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        same = (
            isinstance(a, torch.Tensor)
            and isinstance(b, torch.Tensor)
            and a.dtype == b.dtype
            and a.shape == b.shape
            and torch.equal(a, b)
        )
        if same:
            return []
        if isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor) and a.shape == b.shape:
            return [f"{where} (max |diff| {(a.double() - b.double()).abs().max():.3g})"]
        return [where]
    if isinstance(a, dict) and isinstance(b, dict):
        if a.keys() != b.keys():
            return [f"{where}: keys {sorted(set(a) ^ set(b), key=str)[:5]} in one only"]
        return [d for k in a for d in _differences(a[k], b[k], f"{where}[{k!r}]")]
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        if len(a) != len(b):
            return [f"{where}: length {len(a)} != {len(b)}"]
        return [
            d for i, (x, y) in enumerate(zip(a, b)) for d in _differences(x, y, f"{where}[{i}]")
        ]
    return [] if a == b else [f"{where}: {a!r:.40} != {b!r:.40}"]


def assert_same_training_state(resumed: dict, uninterrupted: dict) -> None:
    """Weights, EMA weights (and its update count), optimizer state, lr schedule and current lr
    of two Lightning checkpoints, bit for bit."""
    weights = resumed["state_dict"]
    ema = [k for k in weights if k.startswith("ema.")]
    assert ema and any(k.startswith("model.") for k in weights)  # both are compared
    for key in ("state_dict", "optimizer_states", "lr_schedulers"):
        diff = _differences(resumed[key], uninterrupted[key], key)
        assert not diff, f"{len(diff)} differences, e.g. {diff[:5]}"
    lrs = [[g["lr"] for g in o["param_groups"]] for o in resumed["optimizer_states"]]
    assert lrs == [[g["lr"] for g in o["param_groups"]] for o in uninterrupted["optimizer_states"]]
