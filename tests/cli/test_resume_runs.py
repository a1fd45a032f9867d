"""Resumes of a real tiny run (train.py in-process): a run folder moved as a whole keeps its
best checkpoint, optim settings changed on resume reach the optimizer, a checkpoint outside its
run folder is checked against the config it records, the final evaluation is logged apart from
the epochs' curves, a run early stopping finished says so and is not resumed as it is, and a
resume with another batch size goes on with the lr schedule and the images seen it stopped at."""

from __future__ import annotations

import csv
import json
import logging
import os
import shutil
import signal

import lightning as L
import pytest
import torch
import yaml
from omegaconf import OmegaConf

from yolov4 import ConfigError
from yolov4.cli.resume import RESUME_LOG, resume_argv
from yolov4.cli.train import train
from yolov4.training.optim import lr_factor
from yolov4.training.requeue import Requeued

NO_EXPORT = ["export=null"]  # what these tests read is in the checkpoints and logs
BEST = "SharedCheckpoint{'monitor': 'val/mAP'"  # the state key of callbacks.best_checkpoint


@pytest.fixture(scope="module")
def first_run(tmp_path_factory, compose_cfg, tiny_run):
    """One epoch of two steps (tests/cli/conftest.py's TINY_RUN), CSV logger; read only."""
    run = tmp_path_factory.mktemp("first") / "run"
    train(compose_cfg("train", [*tiny_run, *NO_EXPORT], run))
    return run


def resume(compose_cfg, tiny_run, run, *overrides, callbacks=()):
    ckpt = f"ckpt_path={run}/checkpoints/last.ckpt"
    cfg = compose_cfg("train", [*tiny_run, *NO_EXPORT, ckpt, *overrides], run)
    return train(cfg, extra_callbacks=list(callbacks))


def csv_rows(run) -> list[dict[str, str]]:
    with open(run / "csv" / "metrics.csv", newline="") as f:
        return list(csv.DictReader(f))


def best_state(ckpt) -> dict:
    callbacks = torch.load(ckpt, weights_only=True)["callbacks"]
    return next(v for k, v in callbacks.items() if k.startswith(BEST))


def test_the_final_evaluation_is_logged_apart_from_the_epochs(first_run):
    """The final evaluation was logged in the val/* curves as an epoch after the last when it
    validated best.pt again (a resume below), and not at all when the last epoch had scored
    those weights: it is final/*, at the run's last step, in either case."""
    rows = csv_rows(first_run)
    assert [r["epoch"] for r in rows if r["val/mAP"]] == ["0"]
    (final,) = [r for r in rows if r.get("final/mAP")]
    written = json.loads((first_run / "metrics.json").read_text())
    assert (final["step"], final["epoch"]) == ("2", "")
    assert float(final["final/mAP"]) == pytest.approx(written["mAP"])
    assert float(final["final/mAP50"]) == pytest.approx(written["mAP50"])


def test_a_run_folder_moved_as_a_whole_keeps_its_best(first_run, tmp_path, compose_cfg, tiny_run):
    """`mv run moved; train.py ckpt_path=moved/checkpoints/last.ckpt trainer.max_epochs=...`:
    Lightning dropped the best score when its dirpath changed, and the next validation
    replaced best.ckpt with a worse epoch while weights/best.pt stayed the best one. The saved
    best score is raised here above anything the next epoch reaches, so that epoch must not
    replace either best file; the final evaluation of best.pt is logged as final/*, not as
    a val/* row of an epoch that never ran."""
    copy = tmp_path / "copy"
    shutil.copytree(first_run, copy)
    moved = shutil.move(copy, tmp_path / "moved")
    last = moved / "checkpoints/last.ckpt"
    data = torch.load(last, weights_only=True)
    state = next(v for k, v in data["callbacks"].items() if k.startswith(BEST))
    state["best_model_score"] = state["kth_value"] = torch.tensor(0.9)
    state["best_k_models"] = {state["best_model_path"]: torch.tensor(0.9)}
    data["callbacks"]["WeightsCallback"] = {"best": 0.9}
    torch.save(data, last)
    best_before = (moved / "checkpoints/best.ckpt").read_bytes()

    metrics = resume(compose_cfg, tiny_run, moved, "trainer.max_epochs=2")

    assert torch.load(last, weights_only=True)["epoch"] == 1  # the second epoch trained
    assert (moved / "checkpoints/best.ckpt").read_bytes() == best_before
    kept = best_state(last)
    assert float(kept["best_model_score"]) == pytest.approx(0.9)
    assert kept["best_model_path"] == str(moved / "checkpoints/best.ckpt")
    assert torch.load(moved / "weights/best.pt", weights_only=True)["trained"]["epoch"] == 0
    assert metrics["weights"]["epoch"] == 0  # the final evaluation: best.pt, epoch 0
    rows = csv_rows(moved)
    assert [r["epoch"] for r in rows if r["val/mAP"]] == ["0", "1"]  # the epochs that ran
    # each end's final evaluation at its last step: the first run's, then this one's
    finals = [r for r in rows if r.get("final/mAP")]
    assert [(r["step"], r["epoch"]) for r in finals] == [("2", ""), ("4", "")]
    assert float(finals[-1]["final/mAP"]) == pytest.approx(metrics["mAP"])
    written = json.loads((moved / "metrics.json").read_text())
    assert written["mAP"] == metrics["mAP"]


def test_a_checkpoint_resumed_into_a_new_folder_starts_its_best_anew(
    first_run, tmp_path, compose_cfg, tiny_run
):
    """Resumed into a folder without the run's best files, both best files are written from
    the resumed epochs on (best.ckpt and best.pt of the same epoch)."""
    new = tmp_path / "new"
    (new / "checkpoints").mkdir(parents=True)
    shutil.copy(first_run / "checkpoints/last.ckpt", new / "checkpoints/last.ckpt")
    data = torch.load(new / "checkpoints/last.ckpt", weights_only=True)
    data["callbacks"]["WeightsCallback"] = {"best": 0.9}  # a best the new folder does not hold
    torch.save(data, new / "checkpoints/last.ckpt")
    resume(compose_cfg, tiny_run, new, "trainer.max_epochs=2")
    best_ckpt = torch.load(new / "checkpoints/best.ckpt", weights_only=True)["epoch"]
    best_pt = torch.load(new / "weights/best.pt", weights_only=True)["trained"]["epoch"]
    assert best_ckpt == best_pt == 1


class OptimizerProbe(L.Callback):
    """The optimizer's settings as each training step starts."""

    def __init__(self) -> None:
        self.seen: list[tuple] = []

    def on_train_batch_start(self, trainer, module, batch, batch_idx) -> None:
        groups = trainer.optimizers[0].param_groups
        self.seen.append(
            (trainer.global_step, [g["lr"] for g in groups],
             {g["name"]: g["weight_decay"] for g in groups}, groups[0]["betas"],
             module.optim_cfg, module._schedule_total)
        )  # fmt: skip


def test_optim_settings_changed_on_resume_reach_the_optimizer(
    first_run, tmp_path, compose_cfg, tiny_run, caplog
):
    """optim.lr, weight_decay and momentum given on a resume were logged as the run's config
    but Lightning restored the optimizer and scheduler as saved: the lr followed the old
    optim.lr, the groups kept the old weight decay and betas."""
    run = tmp_path / "run"
    shutil.copytree(first_run, run)
    probe = OptimizerProbe()
    changed = ["optim.lr=0.01", "optim.weight_decay=0.001", "optim.momentum=0.8"]
    with caplog.at_level(logging.INFO, logger="yolov4"):
        resume(compose_cfg, tiny_run, run, "trainer.max_epochs=2", *changed, callbacks=[probe])
    step, lrs, decay, betas, cfg, total = probe.seen[0]
    assert (step, cfg.lr, total) == (2, 0.01, 4)
    assert lrs == [0.01 * lr_factor(2, total, cfg)] * 3  # the schedule on the new lr
    assert decay == {"weights": 0.001, "bn": 0.0, "bias": 0.0} and betas[0] == 0.8
    step, lrs, *_ = probe.seen[1]
    assert lrs == [0.01 * lr_factor(3, total, cfg)] * 3
    assert "lr 0.002 -> 0.01" in caplog.text
    # the resumed checkpoint holds the settings it trained with
    saved = torch.load(run / "checkpoints/last.ckpt", weights_only=True)
    assert saved["hyper_parameters"]["optim"]["lr"] == 0.01
    assert saved["lr_schedulers"][0]["base_lrs"] == [0.01] * 3
    assert saved["optimizer_states"][0]["param_groups"][0]["weight_decay"] == 0.001


def test_a_checkpoint_outside_its_run_folder_is_checked_against_what_it_records(
    first_run, tmp_path, tiny_run, synthetic_cache
):
    """`cp run/checkpoints/last.ckpt copy/; train.py ckpt_path=copy/last.ckpt` resumed on the
    default config (another dataset, input size and warm-up) with an INFO line only."""
    ckpt = tmp_path / "copy" / "last.ckpt"
    ckpt.parent.mkdir()
    shutil.copy(first_run / "checkpoints/last.ckpt", ckpt)
    with pytest.raises(ConfigError, match="cannot be resumed") as e:
        resume_argv(["train.py", f"ckpt_path={ckpt}", "trainer.max_epochs=2"])
    refused, rest = str(e.value).split("cannot be resumed")
    # the keys with the checkpoint's values and the given ones, then how to give them back
    for said in ("data.num_train: 16 -> 500", "data.num_val: 6 -> 100", "data.image_size: 96"):
        assert said in refused, said
    assert "data.num_train=16 data.num_val=6" in rest and "data.image_size=96" in rest
    # the changes a resume may make are listed apart, as applying
    assert "data.input_size" not in refused
    assert "data.input_size: [64, 64] -> [256, 256]" in rest
    with pytest.raises(ConfigError, match=r"model.name: yolov4-tiny -> yolov3-tiny"):
        resume_argv(["train.py", f"ckpt_path={ckpt}", *tiny_run, "model=yolov3-tiny"])
    same = [*tiny_run, f"data.cache_dir={synthetic_cache}"]
    argv = ["train.py", f"ckpt_path={ckpt}", "trainer.max_epochs=2", *same, "optim.lr=0.01"]
    assert resume_argv(argv) == argv
    said = "differ from the config the checkpoint records in optim.lr: 0.002 -> 0.01"
    assert said in RESUME_LOG[0]


def test_a_run_early_stopping_ended_says_so_and_its_resume_is_refused(
    tmp_path, compose_cfg, tiny_run, caplog
):
    """Early stopping ended the run without a line in the log, and resuming the finished run
    trained one more epoch and rewrote metrics.json. The log names the callback, the epoch
    and why; the resume is refused naming the override that removes it, which resumes."""
    run = tmp_path / "run"
    stop = (
        "+callbacks.early_stop={_target_: lightning.pytorch.callbacks.EarlyStopping, "
        "monitor: val/mAP, mode: max, stopping_threshold: -1.0}"
    )  # any mAP passes the threshold: stops after the first validation
    overrides = [*tiny_run, *NO_EXPORT, "trainer.max_epochs=3", stop]
    cfg = compose_cfg("train", overrides, run)
    with caplog.at_level(logging.INFO, logger="yolov4"):
        train(cfg)
    assert "EarlyStopping stopped the run at epoch 1 (trainer.max_epochs=3)" in caplog.text
    assert "Stopping threshold reached" in caplog.text
    (run / ".hydra").mkdir()  # the run folder as Hydra leaves it
    OmegaConf.save(cfg, run / ".hydra/config.yaml")
    (run / ".hydra/overrides.yaml").write_text(yaml.safe_dump(overrides))
    ckpt = f"ckpt_path={run}/checkpoints/last.ckpt"
    with pytest.raises(ConfigError, match=r"EarlyStopping stopped the run at epoch 1") as e:
        resume_argv(["train.py", ckpt])
    assert "~callbacks.early_stop" in str(e.value)
    argv = resume_argv(["train.py", ckpt, "~callbacks.early_stop"])
    assert not any("callbacks.early_stop" in a for a in argv)  # both lines dropped


def test_a_run_killed_after_its_early_stop_before_its_end_is_finished_training_nothing(
    tmp_path, compose_cfg, tiny_run, caplog
):
    """Killed after early stopping's decision, before metrics.json: the resume trained one
    more epoch (Lightning restores the callback's state, not its stop) and only then wrote
    the run's end. It trains nothing and writes metrics.json of the stopped run's weights."""
    stop = (
        "+callbacks.early_stop={_target_: lightning.pytorch.callbacks.EarlyStopping, "
        "monitor: val/mAP, mode: max, stopping_threshold: -1.0}"
    )
    overrides = [*tiny_run, *NO_EXPORT, "trainer.max_epochs=3", stop]
    run = tmp_path / "run"
    cfg = compose_cfg("train", overrides, run)
    train(cfg)
    (run / "metrics.json").unlink()  # the kill, before the run's end
    (run / ".hydra").mkdir()
    OmegaConf.save(cfg, run / ".hydra/config.yaml")
    (run / ".hydra/overrides.yaml").write_text(yaml.safe_dump(overrides))
    last = run / "checkpoints/last.ckpt"
    before = torch.load(last, weights_only=True)["global_step"]
    resume_argv(["train.py", f"ckpt_path={last}"])  # not refused
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="yolov4"):
        train(compose_cfg("train", [*overrides, f"ckpt_path={last}"], run))
    assert torch.load(last, weights_only=True)["global_step"] == before == 2
    assert "resume: EarlyStopping stopped the run at epoch 1: Stopping threshold" in caplog.text
    assert json.loads((run / "metrics.json").read_text())["weights"]["step"] == 2


class StopAt(L.Callback):
    """Ctrl-C at the end of optimizer step ``step`` (before Requeue's hook, which runs last)."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_end(self, trainer, *args) -> None:
        if trainer.global_step == self.step:
            os.kill(os.getpid(), signal.SIGINT)


def test_a_resume_with_another_batch_size_keeps_the_lr_schedule_and_the_images_seen(
    tmp_path, compose_cfg, tiny_run
):
    """Stopped mid-epoch at step 6 of 12 (16 images in batches of 4, 3 epochs) and resumed
    with data.batch_size=8, the run lasts 9 steps (6, 1 to end its epoch, 2 in the last), not
    3 epochs of the new 2 steps (6, over which the lr would sit at its floor from the resume
    on), and has trained 48 images, not 9 steps of 8 (72). The resumed run goes on from the
    checkpoint's lr, ends at the cosine's final lr, and counts 48."""
    run = tmp_path / "run"
    overrides = [*tiny_run, *NO_EXPORT, "trainer.limit_train_batches=null",
                 "trainer.max_epochs=3", "optim.schedule=cosine", "optim.burn_in=2"]  # fmt: skip
    with pytest.raises(Requeued):
        train(compose_cfg("train", overrides, run), extra_callbacks=[StopAt(6)])
    saved = torch.load(run / "checkpoints/requeue.ckpt", weights_only=True)
    assert saved["global_step"] == 6 and saved["yolov4_schedule_steps"] == 12
    probe = OptimizerProbe()
    ckpt = f"ckpt_path={run}/checkpoints/requeue.ckpt"
    cfg = compose_cfg("train", [*overrides, ckpt, "data.batch_size=8"], run)
    train(cfg, extra_callbacks=[probe])
    steps = [seen[0] for seen in probe.seen]
    assert steps == [6, 7, 8]
    optim = probe.seen[0][4]
    assert probe.seen[0][1][0] == pytest.approx(saved["lr_schedulers"][0]["_last_lr"][0])
    last = torch.load(run / "checkpoints/last.ckpt", weights_only=True)
    assert last["global_step"] == 9
    final = optim.lr * optim.final_lr_ratio  # the lr after the run's last step
    assert last["lr_schedulers"][0]["_last_lr"] == pytest.approx([final] * 3)
    lrs = [seen[1][0] for seen in probe.seen]
    assert lrs[0] > lrs[1] > lrs[2] > final  # the cosine's rest, not its floor
    assert last["yolov4_seen"] == 6 * 4 + 3 * 8
    assert torch.load(run / "weights/last.pt", weights_only=True)["trained"]["seen"] == 48
