"""Resume composes the run's saved config with the overrides given now (yolov4.cli.resume): the
merge, the diff, what is refused, the run directory, on a run directory written as Hydra does."""

from __future__ import annotations

import pytest
import torch
import yaml
from hydra import compose, initialize_config_module
from omegaconf import OmegaConf

from yolov4 import ConfigError
from yolov4.cli.resume import RESUME_LOG, merge_overrides, resume_argv, run_directory
from yolov4.training.resume import ABSENT, config_changes, unresumable

RUN_OVERRIDES = ["data.num_train=16", "data.data_seed=3", "trainer.max_epochs=2", "logger=csv"]


@pytest.fixture
def saved_run(tmp_path):
    """A run directory as `python train.py <RUN_OVERRIDES>` leaves it: .hydra/config.yaml (the
    composed config, unresolved) and .hydra/overrides.yaml, and checkpoints/last.ckpt."""
    run = tmp_path / "run"
    (run / ".hydra").mkdir(parents=True)
    (run / "checkpoints").mkdir()
    (run / "checkpoints/last.ckpt").write_bytes(b"")
    with initialize_config_module(config_module="yolov4.configs", version_base="1.3"):
        cfg = compose("train", overrides=RUN_OVERRIDES)
    OmegaConf.save(cfg, run / ".hydra/config.yaml")
    (run / ".hydra/overrides.yaml").write_text(yaml.safe_dump(RUN_OVERRIDES))
    return run


def test_given_overrides_replace_saved_ones_of_the_same_key():
    saved = ["data.num_train=16", "trainer.max_epochs=2", "model=yolov4-tiny", "ckpt_path=a"]
    given = ["trainer.max_epochs=3", "ckpt_path=b", "+trainer.profiler=simple"]
    assert merge_overrides(saved, given) == [
        "data.num_train=16",
        "model=yolov4-tiny",
        "trainer.max_epochs=3",
        "ckpt_path=b",
        "+trainer.profiler=simple",
    ]
    # a group given now replaces the saved keys under it
    assert merge_overrides(saved, ["data=coco"]) == [*saved[1:], "data=coco"]


def test_removing_a_key_the_run_added_drops_both_lines():
    """``~callbacks.early_stop`` on the resume of a run started with ``+callbacks.early_stop=``:
    the saved line went and Hydra refused the deletion of a key no longer there."""
    saved = ["+callbacks.early_stop={_target_: x}", "callbacks.early_stop.patience=3", "seed=1"]
    assert merge_overrides(saved, ["~callbacks.early_stop"]) == ["seed=1"]
    # a key of the configs themselves is deleted as given
    assert merge_overrides(saved[2:], ["~callbacks.lr_monitor"]) == [
        "seed=1",
        "~callbacks.lr_monitor",
    ]


def test_config_changes_and_what_cannot_be_resumed():
    old = {"model": {"name": "yolov4-tiny"}, "data": {"num_train": 16, "batch_size": 8},
           "trainer": {"max_epochs": 2}, "optim": {"optimizer": "adamw", "lr": 0.001},
           "ckpt_path": None}  # fmt: skip
    new = {"model": {"name": "yolov4"}, "data": {"batch_size": 4, "train": {"images": "x"}},
           "trainer": {"max_epochs": 3}, "optim": {"optimizer": "sgd", "lr": 0.01},
           "ckpt_path": "last.ckpt"}  # fmt: skip
    changes = config_changes(old, new)
    assert changes == {
        "data.batch_size": (8, 4),
        "data.num_train": (16, ABSENT),
        "data.train.images": (ABSENT, "x"),
        "model.name": ("yolov4-tiny", "yolov4"),
        "optim.lr": (0.001, 0.01),
        "optim.optimizer": ("adamw", "sgd"),
        "trainer.max_epochs": (2, 3),
    }
    assert unresumable(changes) == [
        "data.num_train",
        "data.train.images",
        "model.name",
        "optim.optimizer",
    ]
    assert unresumable({"data.input_size": 1, "model.input_size": 1, "data.num_workers": 1}) == []


def test_resume_argv_composes_the_runs_overrides_with_the_given_ones(saved_run):
    ckpt = f"ckpt_path={saved_run}/checkpoints/last.ckpt"
    argv = resume_argv(["train.py", ckpt, "trainer.max_epochs=3"])
    # the run's data keys, the new epoch count, written into the run's own directory
    assert argv == [
        "train.py",
        "data.num_train=16",
        "data.data_seed=3",
        "logger=csv",
        ckpt,
        "trainer.max_epochs=3",
        f"hydra.run.dir={saved_run}",
    ]
    assert len(RESUME_LOG) == 1 and "trainer.max_epochs: 2 -> 3" in RESUME_LOG[0]
    with initialize_config_module(config_module="yolov4.configs", version_base="1.3"):
        cfg = compose("train", overrides=argv[1:-1])
    assert (cfg.data.num_train, cfg.data.data_seed, cfg.trainer.max_epochs) == (16, 3, 3)


def test_resume_argv_leaves_other_commands_alone(saved_run, tmp_path):
    assert resume_argv(["train.py", "trainer.max_epochs=3"]) == ["train.py", "trainer.max_epochs=3"]
    elsewhere = tmp_path / "copied.ckpt"  # no run directory around it: composed as given
    argv = ["train.py", f"ckpt_path={elsewhere}"]
    assert resume_argv(argv) == argv and "no .hydra/config.yaml" in RESUME_LOG[0]
    # hydra.run.dir names the run when the checkpoint lies elsewhere
    assert run_directory(str(elsewhere), str(saved_run)) == saved_run
    assert run_directory(f"{saved_run}/checkpoints/last.ckpt", None) == saved_run


@pytest.mark.parametrize(
    "override, keys",
    [
        ("model=yolov4", ["model.name: yolov4-tiny -> yolov4"]),
        (
            "data=coco",
            [
                "data._target_: yolov4.data.datamodule.SyntheticDataModule -> ",
                "data.num_train: 16 -> <absent>",
                "data.train._target_",
            ],
        ),  # fmt: skip
        ("data.num_train=500", ["data.num_train: 16 -> 500"]),
        ("optim=sgd", ["optim.optimizer: adamw -> sgd"]),
    ],
)
def test_a_change_that_cannot_be_resumed_is_refused_naming_the_keys(saved_run, override, keys):
    before = (saved_run / ".hydra/config.yaml").read_bytes()
    ckpt = f"ckpt_path={saved_run}/checkpoints/last.ckpt"
    with pytest.raises(ConfigError, match="cannot be resumed") as e:
        resume_argv(["train.py", ckpt, override, f"hydra.run.dir={saved_run}"])
    for key in keys:
        assert key in str(e.value)
    assert "trainer.max_epochs" not in str(e.value)  # only what is refused
    assert (saved_run / ".hydra/config.yaml").read_bytes() == before


def test_a_saved_override_of_a_removed_key_is_named_with_its_file(saved_run):
    """A run saved with a key these configs do not have (augment.mosaic_impl, module.eval):
    the resume stops naming each stale line and the file to edit, and changes nothing; with the
    lines removed the same command resumes."""
    overrides = saved_run / ".hydra/overrides.yaml"
    stale = ["augment.mosaic_impl=legacy", "module.eval.max_det=1"]
    overrides.write_text(yaml.safe_dump([*RUN_OVERRIDES, *stale]))
    before = {p: p.read_bytes() for p in (overrides, saved_run / ".hydra/config.yaml")}
    argv = ["train.py", f"ckpt_path={saved_run}/checkpoints/last.ckpt", "trainer.max_epochs=3"]
    with pytest.raises(
        ConfigError, match="do not compose with the installed version's configs"
    ) as e:
        resume_argv(argv)
    message = str(e.value)
    for line in stale:
        assert repr(line) in message
    assert str(overrides) in message and "docs/renamed.md" in message
    for kept in RUN_OVERRIDES:  # only the stale lines are named
        assert repr(kept) not in message
    assert {p: p.read_bytes() for p in before} == before
    overrides.write_text(yaml.safe_dump(RUN_OVERRIDES))
    assert "trainer.max_epochs=3" in resume_argv(argv)


def test_a_bad_override_given_now_is_left_to_hydra(saved_run):
    """An unknown key on the command line is the command's mistake, not the run's: resume_argv
    passes it through and Hydra's own message reports it."""
    argv = ["train.py", f"ckpt_path={saved_run}/checkpoints/last.ckpt", "trainer.no_such_key=1"]
    assert resume_argv(argv)[-2:] == ["trainer.no_such_key=1", f"hydra.run.dir={saved_run}"]


def test_saved_lines_that_need_their_group_are_not_named(saved_run):
    """``data.train.images=`` composes only with the ``data=yolo`` saved beside it (written after
    it here): only the removed key is named."""
    overrides = saved_run / ".hydra/overrides.yaml"
    saved = ["data.train.images=/data/img", "data=yolo", "augment.mosaic_impl=legacy"]
    overrides.write_text(yaml.safe_dump(saved))
    with pytest.raises(
        ConfigError, match="do not compose with the installed version's configs"
    ) as e:
        resume_argv(["train.py", f"ckpt_path={saved_run}/checkpoints/last.ckpt"])
    assert "'augment.mosaic_impl=legacy'" in str(e.value)
    assert "data.train.images" not in str(e.value) and "'data=yolo'" not in str(e.value)


def test_a_new_run_in_a_trained_runs_folder_is_refused_before_anything_is_written(
    tmp_path, monkeypatch
):
    run = tmp_path / "run"
    (run / "weights").mkdir(parents=True)
    (run / "weights" / "last.pt").write_bytes(b"trained")
    argv = ["train.py", "trainer.max_epochs=1", f"hydra.run.dir={run}"]
    with pytest.raises(ConfigError, match=r"stopped before its first checkpoint .*pretrained="):
        resume_argv(argv)  # weights only: the resume it suggested had no last.ckpt to read
    (run / "checkpoints").mkdir()
    (run / "checkpoints" / "last.ckpt").write_bytes(b"")
    with pytest.raises(ConfigError, match=r"holds a trained run .*ckpt_path=.*last\.ckpt"):
        resume_argv(argv)
    (run / "checkpoints" / "last.ckpt").unlink()
    assert sorted(p.name for p in run.iterdir()) == ["checkpoints", "weights"]  # no .hydra/
    assert resume_argv(["train.py", f"hydra.run.dir={tmp_path / 'new'}"])  # an unused folder
    (run / "checkpoints" / "requeue.ckpt").write_bytes(b"")  # a requeued job resumes by itself
    assert resume_argv(argv) == argv
    (run / "checkpoints" / "requeue.ckpt").unlink()
    monkeypatch.setenv("LOCAL_RANK", "1")  # a process the launcher started after rank 0
    assert resume_argv(argv) == argv


def test_resuming_another_checkpoint_than_a_stopped_runs_requeue_ckpt_warns(
    compose_cfg, tiny_run, tmp_path, caplog
):
    import logging

    from yolov4 import CheckpointError
    from yolov4.cli.train import train

    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / "requeue.ckpt").write_bytes(b"")
    last = tmp_path / "checkpoints" / "last.ckpt"
    last.write_bytes(b"")
    cfg = compose_cfg("train", [*tiny_run, f"ckpt_path={last}"], tmp_path)
    with caplog.at_level(logging.WARNING), pytest.raises(CheckpointError):
        train(cfg)  # the empty last.ckpt is refused after the warning
    assert "requeue.ckpt, saved when the run was stopped mid-epoch" in caplog.text
    assert f"ckpt_path={tmp_path / 'checkpoints' / 'requeue.ckpt'} resumes" in caplog.text


def _progress_ckpt(path, epochs: int, steps: int) -> None:
    """The fit-loop counters of a Lightning checkpoint (no network: only they are read)."""
    progress = {"ready": epochs, "completed": epochs, "started": epochs, "processed": epochs}
    loops = {"fit_loop": {"epoch_progress": {"total": progress, "current": progress}}}
    torch.save({"epoch": epochs - 1, "global_step": steps, "loops": loops}, path)


def test_resuming_a_finished_run_is_refused_saying_how_to_train_longer(saved_run):
    """The saved run trained trainer.max_epochs=2 and finished (metrics.json): resuming without
    a larger limit would train nothing and rewrite the run's config; refused with the override
    to add."""
    ckpt = saved_run / "checkpoints/last.ckpt"
    _progress_ckpt(ckpt, epochs=2, steps=8)
    (saved_run / "metrics.json").write_text("{}")
    before = (saved_run / ".hydra/config.yaml").read_text()
    with pytest.raises(ConfigError) as e:
        resume_argv(["train.py", f"ckpt_path={ckpt}", "data.input_size=[96,96]"])
    msg = str(e.value)
    assert "has already reached trainer.max_epochs=2 (it has trained 2 epochs)" in msg
    assert "trainer.max_epochs=3" in msg and "nothing would train" in msg
    assert (saved_run / ".hydra/config.yaml").read_text() == before
    assert resume_argv(["train.py", f"ckpt_path={ckpt}", "trainer.max_epochs=4"])
    with pytest.raises(ConfigError, match=r"trainer.max_steps=8 \(it has trained 8 steps\)"):
        resume_argv(
            ["train.py", f"ckpt_path={ckpt}", "trainer.max_epochs=4", "trainer.max_steps=8"]
        )
    _progress_ckpt(ckpt, epochs=1, steps=4)  # stopped after its first epoch: resumable
    assert resume_argv(["train.py", f"ckpt_path={ckpt}"])
    ckpt.write_bytes(b"")  # unreadable: left to train.py's checkpoint reader to name
    assert resume_argv(["train.py", f"ckpt_path={ckpt}"])


def test_a_run_stopped_after_its_last_epoch_is_finished_by_its_resume(saved_run):
    """Killed after its last epoch, before the final evaluation and export (no metrics.json,
    written last): the resume was refused as finished and nothing wrote the run's export or
    reports. It now passes, saying what it does; a new run in that folder names the resume."""
    ckpt = saved_run / "checkpoints/last.ckpt"
    _progress_ckpt(ckpt, epochs=2, steps=8)
    argv = resume_argv(["train.py", f"ckpt_path={ckpt}"])
    assert f"hydra.run.dir={saved_run}" in argv
    assert any(
        "has reached trainer.max_epochs=2" in line and "no metrics.json): nothing trains" in line
        for line in RESUME_LOG
    ), RESUME_LOG
    with pytest.raises(ConfigError, match=r"stopped before its end, no metrics.json: the resume"):
        resume_argv(["train.py", f"hydra.run.dir={saved_run}"])
    (saved_run / "metrics.json").write_text("{}")
    with pytest.raises(ConfigError, match=r"add trainer.max_epochs=\.\.\. to train longer"):
        resume_argv(["train.py", f"hydra.run.dir={saved_run}"])


def test_a_requeued_jobs_command_is_checked_before_hydra_rewrites_the_run(saved_run):
    """A requeued job resumes checkpoints/requeue.ckpt by itself: its command with another
    model was refused only after Hydra had rewritten .hydra/, and then the documented
    ckpt_path= resume composed the wrong model too."""
    (saved_run / "checkpoints" / "requeue.ckpt").write_bytes(b"")
    before = {p.name: p.read_bytes() for p in (saved_run / ".hydra").iterdir()}
    same = ["train.py", *RUN_OVERRIDES, f"hydra.run.dir={saved_run}"]
    assert resume_argv(same) == same  # the same command: it resumes as it is
    with pytest.raises(ConfigError, match=r"model.name: yolov4-tiny -> yolov3-tiny.*cannot be"):
        resume_argv([*same, "model=yolov3-tiny"])
    assert {p.name: p.read_bytes() for p in (saved_run / ".hydra").iterdir()} == before


def test_one_runs_checkpoint_is_not_resumed_in_another_runs_folder(saved_run, tmp_path):
    """It trained one run's network on the other's config and wrote over its checkpoints."""
    other = tmp_path / "other"
    (other / ".hydra").mkdir(parents=True)
    (other / ".hydra/config.yaml").write_text((saved_run / ".hydra/config.yaml").read_text())
    ckpt = f"{saved_run}/checkpoints/last.ckpt"
    with pytest.raises(ConfigError, match=r"is the checkpoint of the run .*run, and hydra.run"):
        resume_argv(["train.py", f"ckpt_path={ckpt}", f"hydra.run.dir={other}"])
    assert run_directory(ckpt, str(saved_run)) == saved_run  # its own folder, named: fine


def test_a_second_run_into_a_folder_in_use_is_refused_before_it_writes(tmp_path, monkeypatch):
    """Two train.py with one hydra.run.dir (or two predict.py with one output=) started
    together both ran and mixed their checkpoints and files."""
    import os

    from yolov4.cli.common import hold_folder, release_folder
    from yolov4.core.files import lock_dir

    run = tmp_path / "run"
    run.mkdir()
    other = lock_dir(run)  # another run's lock (flock: per open file, as another process's)
    try:
        with pytest.raises(ConfigError, match=r"hydra.run.dir=.*run is in use by another run"):
            resume_argv(["train.py", f"hydra.run.dir={run}"])
        assert sorted(p.name for p in run.iterdir()) == []  # nothing written
        monkeypatch.setenv("LOCAL_RANK", "1")  # a launcher's later process shares rank 0's
        hold_folder(run, "output=")
        monkeypatch.delenv("LOCAL_RANK")
    finally:
        os.close(other)
    hold_folder(run, "output=")  # free again: held by this process, twice is once
    hold_folder(run, "output=")
    release_folder(run)
    printed = tmp_path / "printed"  # --cfg job prints and runs nothing: no folder made
    assert resume_argv(["train.py", f"hydra.run.dir={printed}", "--cfg", "job"])
    assert not printed.exists()


def test_a_running_runs_folder_is_said_in_use_before_anything_else(saved_run):
    """A second train.py into a run's folder while the run writes there was told it holds a
    trained run to resume, and that resume was then told the folder is in use."""
    import os

    from yolov4.core.files import lock_dir

    (saved_run / "weights").mkdir()
    (saved_run / "weights" / "last.pt").write_bytes(b"trained")
    ckpt = saved_run / "checkpoints" / "last.ckpt"
    _progress_ckpt(ckpt, epochs=2, steps=8)  # at its max_epochs, with metrics.json: finished
    (saved_run / "metrics.json").write_text("{}")
    other = lock_dir(saved_run)  # the run writing there (flock: as another process's)
    try:
        for argv in (
            ["train.py", f"hydra.run.dir={saved_run}"],
            ["train.py", f"ckpt_path={ckpt}"],
        ):
            with pytest.raises(ConfigError, match="is in use by another run writing there now"):
                resume_argv(argv)
    finally:
        os.close(other)


def test_a_run_in_hydras_timestamped_folder_is_in_use_while_it_runs(
    compose_cfg, tiny_run, tmp_path, monkeypatch
):
    """A run started without hydra.run.dir held no lock on its folder: a resume of it
    (ckpt_path=) while it still ran went ahead, the two writing the same checkpoints."""
    import os

    import lightning as L

    from yolov4.cli import common
    from yolov4.cli.train import train
    from yolov4.core.files import lock_dir

    run = tmp_path / "outputs" / "train" / "2025-01-01_00-00-00"  # as Hydra names it
    (run / ".hydra").mkdir(parents=True)  # Hydra writes the run's config before it runs
    (run / ".hydra/config.yaml").write_text("{}\n")
    (run / ".hydra/overrides.yaml").write_text("[]\n")

    class Stop(Exception):
        pass

    class ResumeMeanwhile(L.Callback):
        def on_train_start(self, trainer, pl_module) -> None:
            with monkeypatch.context() as m:
                m.setattr(common, "_HELD", {})  # the resume as another process: no lock held
                with pytest.raises(ConfigError, match=r"folder .*2025-01-01_00-00-00 is in use"):
                    resume_argv(["train.py", f"ckpt_path={run}/checkpoints/last.ckpt"])
            raise Stop

    cfg = compose_cfg("train", tiny_run, run)
    with pytest.raises(Stop):
        train(cfg, extra_callbacks=[ResumeMeanwhile()])
    fd = lock_dir(run, blocking=False)  # the run ended: the folder is free
    assert fd is not None
    os.close(fd)
