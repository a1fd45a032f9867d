"""Ctrl-C during training: the first SIGINT asks the run to stop after its step (the state is
saved, nothing requeued), a second stops it at once; DataLoader workers leave SIGINT to the main
process. The whole path through train.py: tests/cli/test_requeue.py."""

from __future__ import annotations

import os
import signal
from types import SimpleNamespace

import pytest

from yolov4.data.sampling import seed_worker
from yolov4.training.requeue import Requeue


def test_first_ctrl_c_asks_to_stop_after_the_step_the_second_stops_now(tmp_path, capfd):
    requeue = Requeue(str(tmp_path), signals=["SIGUSR1", "SIGINT"])
    before = signal.getsignal(signal.SIGINT)
    requeue.on_train_start(SimpleNamespace(), None)
    try:
        os.kill(os.getpid(), signal.SIGINT)
        assert requeue.received == signal.SIGINT  # noted; the step goes on
        assert "Ctrl-C: stopping after this optimizer step" in capfd.readouterr().err
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)
        assert signal.getsignal(signal.SIGINT) is before  # given back at the second
    finally:
        requeue._restore()


def test_under_ddp_only_rank_0_prints_the_ctrl_c_line_and_every_rank_stops(tmp_path, capfd):
    """Every DDP process gets Ctrl-C and printed the same line; rank 0 prints it, the others
    note the signal in silence."""
    requeue = Requeue(str(tmp_path), signals=["SIGINT"])
    requeue.on_train_start(SimpleNamespace(is_global_zero=False), None)
    try:
        os.kill(os.getpid(), signal.SIGINT)
        assert requeue.received == signal.SIGINT
        assert "Ctrl-C" not in capfd.readouterr().err
    finally:
        requeue._restore()
    requeue.on_train_start(SimpleNamespace(is_global_zero=True), None)
    try:
        os.kill(os.getpid(), signal.SIGINT)
        assert "Ctrl-C: stopping after this optimizer step" in capfd.readouterr().err
    finally:
        requeue._restore()


def test_another_signal_after_ctrl_c_keeps_ctrl_c_and_ctrl_c_never_requeues(tmp_path, fake_slurm):
    requeue = Requeue(str(tmp_path))
    requeue._handler(signal.SIGINT, None)
    requeue._handler(signal.SIGTERM, None)
    assert requeue.received == signal.SIGINT
    trainer = SimpleNamespace(is_global_zero=True)
    requeue._requeue_job(trainer, signal.SIGINT)
    assert not fake_slurm.exists()
    requeue._requeue_job(trainer, signal.SIGTERM)  # preemption: requeued
    assert fake_slurm.read_text().split() == ["requeue", "4242"]


def test_dataloader_workers_ignore_ctrl_c():
    before = signal.getsignal(signal.SIGINT)
    try:
        seed_worker(0)  # as a worker process starts
        assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
    finally:
        signal.signal(signal.SIGINT, before)


def test_the_default_callbacks_stop_on_ctrl_c():
    from hydra import compose, initialize_config_module

    with initialize_config_module(config_module="yolov4.configs", version_base="1.3"):
        cfg = compose("train")
    assert "SIGINT" in list(cfg.callbacks.requeue.signals)


def test_a_hard_linked_requeue_ckpt_is_the_checkpoint_resumed(tmp_path):
    """A requeue.ckpt made in the final phase is a hard link of last.ckpt: resuming last.ckpt
    warned that the steps since would be trained again (there are none)."""
    import os

    from yolov4.cli.train import _same_file

    (tmp_path / "last.ckpt").write_bytes(b"state")
    os.link(tmp_path / "last.ckpt", tmp_path / "requeue.ckpt")
    (tmp_path / "other.ckpt").write_bytes(b"state")
    assert _same_file(tmp_path / "last.ckpt", tmp_path / "requeue.ckpt")
    assert not _same_file(tmp_path / "other.ckpt", tmp_path / "requeue.ckpt")
    assert not _same_file(tmp_path / "absent.ckpt", tmp_path / "requeue.ckpt")


def test_a_second_ctrl_c_while_requeue_ckpt_is_written_waits_for_the_write(tmp_path, capfd):
    """A KeyboardInterrupt inside torch's writer came out as a RuntimeError (a traceback, exit
    1, no requeue.ckpt): while it is written, a second Ctrl-C only says that the run stops once
    the file is complete."""
    requeue = Requeue(str(tmp_path), signals=["SIGINT"])
    requeue.on_train_start(SimpleNamespace(), None)
    try:
        os.kill(os.getpid(), signal.SIGINT)
        requeue._saving = True
        os.kill(os.getpid(), signal.SIGINT)  # no KeyboardInterrupt
        assert "requeue.ckpt is being written; the run stops once it is" in capfd.readouterr().err
        requeue._saving = False
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)
    finally:
        requeue._restore()


def test_a_ctrl_c_turned_into_another_error_by_a_write_counts_as_ctrl_c():
    from lightning.pytorch.trainer.states import TrainerStatus

    from yolov4.cli.train import _stopped_by_ctrl_c
    from yolov4.training.requeue import Requeued

    def raised(error: BaseException, during: BaseException | None = None) -> BaseException:
        try:
            try:
                raise during or ValueError("unused")
            except BaseException:
                if during is None:
                    raise error from None
                raise error  # noqa: B904 (raised while `during` was handled, as torch's writer does)
        except BaseException as e:
            return e

    trainer = SimpleNamespace(state=SimpleNamespace(status=TrainerStatus.INTERRUPTED))
    write = raised(RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos"),
                   KeyboardInterrupt())  # fmt: skip
    assert _stopped_by_ctrl_c(write, trainer)
    assert _stopped_by_ctrl_c(raised(SystemExit(1), KeyboardInterrupt()), trainer)  # Lightning's
    assert not _stopped_by_ctrl_c(raised(RuntimeError("killed")), trainer)
    assert not _stopped_by_ctrl_c(raised(Requeued(130)), trainer)
    finished = SimpleNamespace(state=SimpleNamespace(status=TrainerStatus.FINISHED))
    assert not _stopped_by_ctrl_c(write, finished)


def test_every_rank_stops_on_the_signal_any_rank_received(tmp_path, caplog):
    """SIGTERM to rank 0 only: rank 1 logged "SIGUSR1 at step 10: saved ...". Every rank stops
    with the signal received (exit 143), and only rank 0, which writes the file, logs it."""
    import logging

    import torch

    from yolov4.training.requeue import Requeued

    class Strategy:  # two ranks: rank 0 received SIGTERM
        root_device = torch.device("cpu")

        def reduce(self, tensor, group=None, reduce_op="mean"):  # Lightning's Strategy.reduce
            assert group is None and reduce_op == "max"
            return torch.maximum(tensor, torch.tensor(int(signal.SIGTERM)))

    saved = []
    for rank in (1, 0):
        requeue = Requeue(str(tmp_path), requeue=False)
        trainer = SimpleNamespace(
            world_size=2, strategy=Strategy(), is_global_zero=rank == 0, global_step=10,
            save_checkpoint=lambda path, weights_only: saved.append(path),
        )  # fmt: skip
        caplog.clear()
        with caplog.at_level(logging.WARNING), pytest.raises(Requeued) as stopped:
            requeue._stop_if_signalled(trainer)
        assert stopped.value.code == 128 + signal.SIGTERM
        assert requeue.received == signal.SIGTERM
        assert caplog.text.count("SIGTERM at step 10: saved") == (rank == 0)
        assert "SIGUSR1" not in caplog.text
    assert len(saved) == 2  # every rank takes part in the save (rank 0 writes)
