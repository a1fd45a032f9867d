"""`python train.py -m hparams_search=synthetic_optuna`: the Optuna study in SQLite, the job's
trial found by its parameters, pruning from the per-epoch metric, a stopped search continued."""

from __future__ import annotations

import math
from types import SimpleNamespace

import optuna
import pytest
import torch
import yaml

from tests.cli.optuna_stub import SEQUENCES
from tests.cli.test_train_cli import run_cli
from yolov4.training.sweep import CLAIM_ATTR, BestMetric, OptunaPruning, find_trial, objective


def _trainer(metric: float, epoch: int) -> SimpleNamespace:
    return SimpleNamespace(
        sanity_checking=False,
        state=SimpleNamespace(fn="fit"),
        is_global_zero=True,
        world_size=1,
        current_epoch=epoch,
        callback_metrics={"val/mAP50": torch.tensor(metric)},
        should_stop=False,
    )


def _study(tmp_path) -> tuple[str, optuna.Study]:
    storage = f"sqlite:///{tmp_path}/optuna.db"
    study = optuna.create_study(study_name="s", storage=storage, direction="maximize")
    for curve in ([0.5, 0.6], [0.4, 0.5]):  # two finished trials the pruner compares with
        t = study.ask()
        t.suggest_float("optim.lr", 1e-4, 1e-2, log=True)
        for epoch, v in enumerate(curve):
            t.report(v, epoch)
        study.tell(t, curve[-1])
    return storage, study


def _pruning(storage, trial, run_dir, **kw) -> OptunaPruning:
    overrides = [f"optim.lr={trial.params['optim.lr']}", "trainer.max_epochs=2"]
    pruner = optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=0)
    return OptunaPruning(storage, "s", overrides, run_dir, pruner=pruner, **kw)


def test_a_trial_below_the_median_is_pruned_and_one_above_is_not(tmp_path):
    storage, study = _study(tmp_path)
    poor, good = study.ask(), study.ask()
    for t in (poor, good):
        t.suggest_float("optim.lr", 1e-4, 1e-2, log=True)
    callbacks = {}
    for name, trial, metric in (("poor", poor, 0.1), ("good", good, 0.7)):
        cb = _pruning(storage, trial, str(tmp_path / name))
        cb.on_fit_start(_trainer(0, 0), None)
        assert cb.trial.number == trial.number  # found by its parameters
        trainer = _trainer(metric, 0)
        cb.on_validation_end(trainer, None)
        callbacks[name] = (cb, trainer)
    assert callbacks["poor"][1].should_stop and callbacks["poor"][0].pruned_at == 0
    assert not callbacks["good"][1].should_stop and callbacks["good"][0].pruned_at is None
    frozen = {t.number: t for t in optuna.load_study(study_name="s", storage=storage).trials}
    assert frozen[poor.number].intermediate_values == {0: pytest.approx(0.1)}
    assert frozen[poor.number].user_attrs["pruned_at_epoch"] == 0
    assert frozen[good.number].system_attrs[CLAIM_ATTR] == str(tmp_path / "good")


def test_a_claimed_trial_is_not_taken_by_another_job_and_no_match_turns_pruning_off(tmp_path):
    storage, study = _study(tmp_path)
    trial = study.ask()
    trial.suggest_float("optim.lr", 1e-4, 1e-2, log=True)
    overrides = [f"optim.lr={trial.params['optim.lr']}"]
    assert find_trial(study, overrides, "a").number == trial.number
    assert find_trial(study, overrides, "a").number == trial.number  # its own claim
    assert find_trial(study, overrides, "b") is None  # another job's
    assert find_trial(study, ["optim.lr=0.123"], "c") is None
    cb = OptunaPruning(storage, "s", ["optim.lr=0.123"], "c")
    cb.on_fit_start(_trainer(0, 0), None)
    trainer = _trainer(0.0, 0)
    cb.on_validation_end(trainer, None)
    assert cb.trial is None and not trainer.should_stop


def test_a_run_without_a_study_trains_without_pruning(tmp_path, caplog):
    """hparams_search= without -m: the sweep's SQLite folder does not exist (it crashed in
    optuna.load_study)."""
    import logging

    storage = f"sqlite:///{tmp_path}/no-sweep-folder/optuna.db"
    cb = OptunaPruning(storage, "s", ["optim.lr=0.1"], "run")
    with caplog.at_level(logging.WARNING, logger="yolov4.training.sweep"):
        cb.on_fit_start(_trainer(0, 0), None)
    assert cb.trial is None and "pruning is off for this run (a search runs with -m)" in caplog.text
    trainer = _trainer(0.5, 0)
    cb.on_validation_end(trainer, None)
    assert not trainer.should_stop


def test_the_objective_is_the_best_epoch_of_the_monitored_metric():
    best = BestMetric("val/mAP50")
    for epoch, v in enumerate([0.2, 0.5, 0.3, float("nan")]):
        best.on_validation_end(_trainer(v, epoch), None)
    assert (best.value, best.epoch) == (pytest.approx(0.5), 1)
    assert objective({"mAP50": 0.4}, best) == pytest.approx(0.5)
    assert objective({"mAP50": 0.6}, best) == pytest.approx(0.6)  # the final evaluation's
    assert objective({"mAP50": None}, BestMetric()) == 0.0


SWEEP = [
    "-m",
    "hparams_search=synthetic_optuna",
    "data.num_train=8",
    "data.num_val=4",
    "data.image_size=96",
    "data.batch_size=4",
    "input_side=64",  # fixed: taken out of the search space
    "trainer.max_epochs=2",
    "objective=stub/mAP50",
    "+callbacks.stub._target_=tests.cli.optuna_stub.StubMetric",
    "callbacks.optuna_pruning.pruner.n_warmup_steps=0",
]


@pytest.mark.slow
def test_sweep_prunes_a_trial_resumes_from_sqlite_and_writes_the_best_params(
    tmp_path, synthetic_cache
):
    sweep = tmp_path / "sweep"
    args = [*SWEEP, f"data.cache_dir={synthetic_cache}", f"hydra.sweep.dir={sweep}"]
    first = run_cli("train.py", *args, "hydra.sweeper.n_trials=2")
    assert first.returncode == 0, first.stderr[-3000:]
    storage = f"sqlite:///{sweep}/optuna.db"
    assert len(optuna.load_study(study_name="synthetic_optuna", storage=storage).trials) == 2

    # the search stopped after 2 trials; the same command continues the study in optuna.db,
    # and a trial that diverges (3) is recorded as failed while the search goes on (4)
    second = run_cli("train.py", *args, "hydra.sweeper.n_trials=3")
    assert second.returncode == 0, second.stderr[-3000:]
    trials = optuna.load_study(study_name="synthetic_optuna", storage=storage).trials
    assert [t.number for t in trials] == [0, 1, 2, 3, 4]
    assert trials[3].state == optuna.trial.TrialState.FAIL
    assert "a diverged trial" in second.stderr + second.stdout
    del trials[3]
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in trials)
    for t in trials[:2]:  # trained both epochs, each reported
        assert t.intermediate_values == pytest.approx(dict(enumerate(SEQUENCES[t.number])))
        assert t.value == pytest.approx(max(SEQUENCES[t.number]))
        assert "pruned_at_epoch" not in t.user_attrs
    pruned = trials[2]  # 0.05 after epoch 0, below the median 0.45 of the others
    assert pruned.user_attrs["pruned_at_epoch"] == 0
    assert pruned.intermediate_values == {0: pytest.approx(0.05)}  # epoch 1 never ran
    assert pruned.value == pytest.approx(0.05)
    run_dir = pruned.system_attrs["yolov4:run_dir"]
    last = torch.load(f"{run_dir}/checkpoints/last.ckpt", weights_only=True)
    assert last["epoch"] == 0
    assert len([d for d in sweep.iterdir() if d.is_dir()]) == 5  # one directory per trial

    results = yaml.safe_load((sweep / "optimization_results.yaml").read_text())
    assert results["best_value"] == pytest.approx(0.6)
    assert results["best_params"] == trials[0].params
    assert not math.isnan(results["best_params"]["optim.lr"])
