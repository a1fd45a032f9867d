"""A run stopped by SIGUSR1 (SLURM's warning before the time limit) saves requeue.ckpt, asks
SLURM to requeue it, and the same command in the same run directory resumes from it and ends
with the same training state as a run never stopped, bit for bit on CPU."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import lightning as L
import pytest
import torch

from tests.cli.test_ddp_resume import assert_same_training_state
from yolov4.cli.train import train
from yolov4.training.requeue import REQUEUE_FILE, Requeued

pytestmark = pytest.mark.slow


class SignalAt(L.Callback):
    """Stands in for SLURM: sends the process ``signum`` at the end of step ``step`` (before
    Requeue's hook, which Lightning runs last)."""

    def __init__(self, step: int, signum: int = signal.SIGUSR1) -> None:
        self.step, self.signum = step, signum

    def on_train_batch_end(self, trainer, *args) -> None:
        if trainer.global_step == self.step:
            os.kill(os.getpid(), self.signum)


def test_a_signal_in_an_epochs_last_step_stops_at_its_end_and_resumes_the_next_epoch_whole(
    compose_cfg, tiny_run, tmp_path, caplog
):
    """A signal in epoch 0's last step: the epoch ends as in any run (its validation, its line
    in the log, last.ckpt), the run stops there, and the resume trains epoch 1 whole."""
    overrides = [*tiny_run, "trainer.max_epochs=2", "trainer.limit_train_batches=null",
                 "callbacks.requeue.requeue=false"]  # fmt: skip
    train(compose_cfg("train", overrides, tmp_path / "full"))
    uninterrupted = torch.load(tmp_path / "full/checkpoints/last.ckpt", weights_only=True)
    job = compose_cfg("train", overrides, tmp_path / "job")
    with caplog.at_level(logging.INFO, logger="yolov4"), pytest.raises(Requeued):
        train(job, extra_callbacks=[SignalAt(step=4)])  # epoch 0's last
    assert "epoch 1/2 step 4: train loss" in caplog.text
    saved = torch.load(tmp_path / "job/checkpoints" / REQUEUE_FILE, weights_only=True)
    assert saved["global_step"] == 4 and saved["yolov4_requeue"] == {"samples": 0}
    last = torch.load(tmp_path / "job/checkpoints/last.ckpt", weights_only=True)
    assert last["global_step"] == 4
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="yolov4"):
        train(compose_cfg("train", overrides, tmp_path / "job"))
    assert "skipping the" not in caplog.text
    final = torch.load(tmp_path / "job/checkpoints/last.ckpt", weights_only=True)
    assert final["global_step"] == uninterrupted["global_step"] == 8
    assert_same_training_state(final, uninterrupted)


def test_sigusr1_checkpoints_requeues_and_the_resubmitted_job_ends_bit_equal(
    compose_cfg, tiny_run, tmp_path, fake_slurm, caplog
):
    overrides = [*tiny_run, "trainer.max_epochs=2", "trainer.limit_train_batches=null"]
    full = compose_cfg("train", overrides, tmp_path / "full")  # 4 steps per epoch
    train(full)
    uninterrupted = torch.load(tmp_path / "full/checkpoints/last.ckpt", weights_only=True)
    assert not (tmp_path / "full/checkpoints" / REQUEUE_FILE).exists()

    job = compose_cfg("train", overrides, tmp_path / "job")
    with pytest.raises(Requeued) as stopped:
        train(job, extra_callbacks=[SignalAt(step=6)])  # mid-epoch 1
    assert stopped.value.code == 128 + signal.SIGUSR1
    assert fake_slurm.read_text().split() == ["requeue", "4242"]
    saved = torch.load(tmp_path / "job/checkpoints" / REQUEUE_FILE, weights_only=True)
    assert saved["global_step"] == 6  # last.ckpt is from step 4
    assert signal.getsignal(signal.SIGUSR1) is signal.SIG_DFL  # the handlers are given back

    # SLURM runs the same job again: same config, same run directory, no ckpt_path
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="yolov4"):
        train(compose_cfg("train", overrides, tmp_path / "job"))
    epoch_1 = next(
        r.getMessage() for r in caplog.records if r.getMessage().startswith("epoch 2/2 ")
    )
    assert float(epoch_1.rsplit("| ", 1)[1].removesuffix(" s")) < 600  # not since the boot
    assert "(resumed mid-epoch: the loss and time above are of the 2 batches since)" in caplog.text
    final = torch.load(tmp_path / "job/checkpoints/last.ckpt", weights_only=True)
    assert final["global_step"] == uninterrupted["global_step"] == 8
    assert final["epoch"] == uninterrupted["epoch"]
    assert_same_training_state(final, uninterrupted)
    assert not (tmp_path / "job/checkpoints" / REQUEUE_FILE).exists()  # a finished run


def test_a_signal_in_the_final_evaluation_requeues_a_job_that_finishes_the_run(
    compose_cfg, tiny_run, tmp_path, fake_slurm, monkeypatch
):
    """SLURM's warning while the run evaluated and exported its weights (after training, where
    the requeue handlers were gone) killed the job: no metrics.json or export, nothing requeued.
    It is requeued with requeue.ckpt the fit's last checkpoint, and the same job trains nothing
    and writes the final phase."""
    import yolov4.cli.train as train_cli

    overrides = [*tiny_run, "trainer.max_epochs=1", "export.formats=[onnx]"]
    job = compose_cfg("train", overrides, tmp_path / "job")
    analysis = train_cli.write_analysis

    def signalled(*args, **kwargs):
        os.kill(os.getpid(), signal.SIGUSR1)  # the handler raises before this returns

    monkeypatch.setattr(train_cli, "write_analysis", signalled)
    with pytest.raises(Requeued) as stopped:
        train(job)
    assert stopped.value.code == 128 + signal.SIGUSR1
    assert fake_slurm.read_text().split() == ["requeue", "4242"]
    checkpoints = tmp_path / "job/checkpoints"
    assert os.path.samefile(checkpoints / REQUEUE_FILE, checkpoints / "last.ckpt")
    assert not (tmp_path / "job/metrics.json").exists()
    assert signal.getsignal(signal.SIGUSR1) is signal.SIG_DFL  # the handlers are given back
    last = (checkpoints / "last.ckpt").read_bytes()

    monkeypatch.setattr(train_cli, "write_analysis", analysis)
    metrics = train(compose_cfg("train", overrides, tmp_path / "job"))  # SLURM's rerun
    assert (checkpoints / "last.ckpt").read_bytes() == last  # nothing trained
    assert json.loads((tmp_path / "job/metrics.json").read_text())["weights"] == metrics["weights"]
    assert (tmp_path / "job/export/model.onnx").is_file()
    assert not (checkpoints / REQUEUE_FILE).exists()  # a finished run


def test_ctrl_c_saves_stops_with_130_and_the_printed_command_finishes_the_run(
    synthetic_cache, tmp_path, fake_slurm
):
    """Ctrl-C in a terminal (SIGINT to the process group: DataLoader workers too) exited 1 after
    Lightning's "Detected KeyboardInterrupt", the epoch's steps lost and no word on resuming.
    The step ends, requeue.ckpt is saved (never requeued), exit 130, and the printed
    ckpt_path= command finishes the run."""
    root = Path(__file__).resolve().parents[2]
    run = tmp_path / "run"
    args = [
        sys.executable, str(root / "train.py"), f"hydra.run.dir={run}", "data.num_train=32",
        "data.num_val=4", "data.image_size=96", "data.input_size=[64,64]", "data.batch_size=4",
        "data.num_workers=2", "trainer.max_epochs=3", "trainer.enable_progress_bar=false",
        "logger=csv", "export=null", f"data.cache_dir={synthetic_cache}",
    ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(
        args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
        start_new_session=True,
    )  # fmt: skip
    last = run / "checkpoints" / "last.ckpt"
    deadline = time.monotonic() + 300
    while not last.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.1)
    time.sleep(0.5)  # into epoch 1
    os.killpg(proc.pid, signal.SIGINT)
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode == 130, out[-3000:]
    assert "Ctrl-C: stopping after this optimizer step" in out
    saved = run / "checkpoints" / REQUEUE_FILE
    assert f"python train.py ckpt_path={saved} resumes the run" in out
    assert "Traceback" not in out and not fake_slurm.exists()
    step = torch.load(saved, weights_only=True)["global_step"]
    assert step > torch.load(last, weights_only=True)["global_step"] == 8

    done = subprocess.run(
        [sys.executable, str(root / "train.py"), f"ckpt_path={saved}"], capture_output=True,
        text=True, env=env, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    assert torch.load(last, weights_only=True)["global_step"] == 24
    assert (run / "metrics.json").is_file() and not saved.exists()


class SignalInValidation(L.Callback):
    """Ctrl-C during the fit's first validation (after the sanity check)."""

    sent = False

    def on_validation_batch_start(self, trainer, *args) -> None:
        if not trainer.sanity_checking and not self.sent:
            self.sent = True
            os.kill(os.getpid(), signal.SIGINT)


def test_ctrl_c_in_validation_stops_at_the_epochs_end_without_another_step(
    compose_cfg, tiny_run, tmp_path, caplog, recwarn
):
    """Ctrl-C during an epoch's validation waited for its end and then trained one more step;
    stopped at the validation's end instead, the epoch had no line in train.log, no last.ckpt,
    and the resume warned that ModelCheckpoint found no val/mAP. The epoch ends (its line,
    last.ckpt) and the run stops there; the resume trains the next epoch, without the warning."""
    overrides = [*tiny_run, "trainer.max_epochs=2", "trainer.limit_train_batches=null",
                 "trainer.num_sanity_val_steps=0"]  # fmt: skip
    job = compose_cfg("train", overrides, tmp_path / "job")
    before = signal.getsignal(signal.SIGINT)  # SIG_IGN in a job a shell started in the background
    with caplog.at_level(logging.INFO, logger="yolov4"), pytest.raises(Requeued) as stopped:
        train(job, extra_callbacks=[SignalInValidation()])
    assert stopped.value.code == 128 + signal.SIGINT
    assert "epoch 1/2 step 4: train loss" in caplog.text
    saved = torch.load(tmp_path / "job/checkpoints" / REQUEUE_FILE, weights_only=True)
    assert saved["global_step"] == 4 and saved["yolov4_requeue"] == {"samples": 0}
    assert torch.load(tmp_path / "job/checkpoints/last.ckpt", weights_only=True)["global_step"] == 4
    assert signal.getsignal(signal.SIGINT) is before  # the handler is given back
    train(compose_cfg("train", [*overrides, f"ckpt_path={tmp_path / 'job/checkpoints' / REQUEUE_FILE}"], tmp_path / "job"))  # fmt: skip
    assert torch.load(tmp_path / "job/checkpoints/last.ckpt", weights_only=True)["global_step"] == 8
    assert not [w for w in recwarn if "could not find the monitored key" in str(w.message)]


def test_a_resume_after_a_mid_epoch_validation_names_it_in_the_epochs_line(
    compose_cfg, tiny_run, tmp_path, caplog
):
    """trainer.val_check_interval=3 in an epoch of 4 steps validates at step 3 only; a run
    stopped right after that validation and resumed says in the epoch's line which validation
    ran in the epoch, before the stop, as the run never stopped reports it."""
    overrides = [*tiny_run, "trainer.limit_train_batches=null", "trainer.val_check_interval=3",
                 "callbacks.requeue.requeue=false"]  # fmt: skip
    with caplog.at_level(logging.INFO, logger="yolov4"):
        train(compose_cfg("train", overrides, tmp_path / "full"))
    (whole,) = [r.getMessage() for r in caplog.records if r.getMessage().startswith("epoch 1/1 ")]
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="yolov4"), pytest.raises(Requeued):
        train(compose_cfg("train", overrides, tmp_path / "job"), extra_callbacks=[SignalAt(3)])
    assert "epoch 1 step 3: mAP" in caplog.text and "epoch 1/1 " not in caplog.text
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="yolov4"):
        train(compose_cfg("train", overrides, tmp_path / "job"))
    (line,) = [r.getMessage() for r in caplog.records if r.getMessage().startswith("epoch 1/1 ")]
    val = whole.split(" | ")[1]
    assert val.startswith("val mAP ")
    assert line.split(" | ")[1] == f"{val} (step 3, before the stop)"


class CtrlCTwice(L.Callback):
    def on_train_batch_end(self, trainer, *args) -> None:
        if trainer.global_step == 6:
            os.kill(os.getpid(), signal.SIGINT)
            os.kill(os.getpid(), signal.SIGINT)  # the second: stop now


def test_a_second_ctrl_c_exits_130_naming_the_last_checkpoint(
    compose_cfg, tiny_run, tmp_path, caplog
):
    """The second Ctrl-C exited 1 after Lightning's "Detected KeyboardInterrupt", silently."""
    overrides = [*tiny_run, "trainer.max_epochs=3", "trainer.limit_train_batches=null"]
    with caplog.at_level(logging.WARNING, logger="yolov4"), pytest.raises(SystemExit) as e:
        train(compose_cfg("train", overrides, tmp_path / "job"), extra_callbacks=[CtrlCTwice()])
    assert e.value.code == 130 and not isinstance(e.value, Requeued)
    last = tmp_path / "job/checkpoints/last.ckpt"
    assert (
        f"stopped (Ctrl-C) at step 6 without saving: python train.py ckpt_path={last}"
        in caplog.text
    )
    assert not (tmp_path / "job/checkpoints" / REQUEUE_FILE).exists()
    signal.signal(signal.SIGINT, signal.default_int_handler)  # Lightning left it ignored


def test_unknown_signal_name_is_a_config_error(tmp_path):
    from yolov4.errors import ConfigError
    from yolov4.training.requeue import Requeue

    with pytest.raises(ConfigError, match="SIGFOO"):
        Requeue(str(tmp_path), signals=["SIGFOO"])
