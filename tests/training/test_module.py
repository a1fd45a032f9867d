"""YoloModule: clear failures (NaN, OOM), initial weights from darknet files or checkpoints, the
loss built for fitting only, and one typed evaluation result that callbacks read."""

from __future__ import annotations

import logging
import re
from types import SimpleNamespace

import pytest
import torch

from yolov4 import CheckpointError, ConfigError, build_model, save_checkpoint
from yolov4.darknet import save_darknet_weights
from yolov4.loss import LossOutput, darknet_cost
from yolov4.training.module import YoloModule


def tiny_module(**kwargs) -> YoloModule:
    return YoloModule(model=build_model("yolov4-tiny", num_classes=3).config.to_dict(), **kwargs)


def batch():
    return {
        "images": torch.rand(2, 3, 64, 64),
        "targets": torch.tensor([[0, 1, 5.0, 5.0, 30.0, 40.0]]),
    }


def test_nan_loss_stops_with_a_message(monkeypatch):
    module = tiny_module()
    nan = torch.tensor(float("nan"))
    monkeypatch.setattr(
        type(module.loss_fn),
        "forward",
        lambda self, maps, targets: LossOutput(nan, nan, torch.tensor(1.0), nan),
    )
    from yolov4.errors import DivergedError

    with pytest.raises(
        DivergedError, match=r"loss became nan at step 0 .*obj=1.*Lower optim.lr.*no checkpoint"
    ) as e:
        module.training_step(batch(), 0)
    assert isinstance(e.value, FloatingPointError)  # one line from the CLI (a YoloError)


def test_out_of_memory_names_batch_and_remedies(monkeypatch):
    module = tiny_module()

    def oom(self, images):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(type(module.model), "forward", oom)
    with pytest.raises(
        torch.OutOfMemoryError,
        match=r"batch size 2 at input \(64, 64\).*accumulate_grad_batches.*precision",
    ):
        module.training_step(batch(), 0)


def test_pretrained_darknet_backbone(tmp_path):
    torch.manual_seed(0)
    source = build_model("yolov4-tiny", num_classes=80)
    path = save_darknet_weights(source, tmp_path / "yolov4-tiny.conv.29", upto=29)
    module = tiny_module(pretrained=str(path))  # .conv.29: layers 0-28 from the file's name
    assert torch.equal(module.model.layers[0].conv.weight, source.layers[0].conv.weight)
    assert torch.equal(module.model.layers[28].conv.weight, source.layers[28].conv.weight)
    assert not torch.equal(module.model.layers[32].conv.weight, source.layers[32].conv.weight)
    # backbone_only: darknet's partial file for yolov4-tiny (yolov4-tiny.conv.29), layers 0-28
    only_backbone = tiny_module(pretrained=str(path), pretrained_backbone_only=True)
    assert only_backbone.model.backbone_layer_count() == 29
    assert torch.equal(only_backbone.model.layers[28].conv.weight, source.layers[28].conv.weight)
    assert not torch.equal(
        only_backbone.model.layers[32].conv.weight, source.layers[32].conv.weight
    )
    # the EMA starts from the loaded weights
    assert torch.equal(module.ema.module.layers[0].conv.weight, source.layers[0].conv.weight)


def test_pretrained_checkpoint_with_other_classes(tmp_path):
    torch.manual_seed(1)
    source = build_model("yolov4-tiny", num_classes=80)
    path = save_checkpoint(tmp_path / "coco.pt", source)
    module = tiny_module(pretrained=str(path))
    assert torch.equal(module.model.layers[32].conv.weight, source.layers[32].conv.weight)
    for conv in module.model.head_convs():  # the convs in front of the [yolo]s: not loaded
        assert conv.conv.weight.shape[0] == 3 * (5 + 3)


def hollow_weights_file(path, name: str, num_classes: int):
    """A ``yolov4.weights/1`` file of ``name`` whose tensors are stride-0 views of one number (3):
    the keys and shapes of the real network in a few KB."""
    from yolov4.core.checkpoint import FORMAT

    with torch.device("meta"):
        net = build_model(name, num_classes=num_classes)
    sd = {k: torch.full((), 3, dtype=v.dtype).expand(v.shape) for k, v in net.state_dict().items()}
    torch.save({"format": FORMAT, "model": net.config.to_dict(), "state_dict": sd}, path)
    return path


def test_pretrained_of_another_architecture_is_refused(tmp_path):
    path = hollow_weights_file(tmp_path / "yolov4.pt", "yolov4", 80)
    with pytest.raises(CheckpointError) as e:
        tiny_module(pretrained=str(path))
    msg = str(e.value)
    assert "yolov4.pt does not fit yolov4-tiny: it holds yolov4 (num_classes=80) weights" in msg
    assert "missing keys" in msg and "unexpected keys" in msg and "layers.7.conv.weight" in msg
    assert "module.pretrained_strict=false" in msg
    with pytest.raises(CheckpointError, match=r"of layers 0-28 match by name and shape"):
        tiny_module(pretrained=str(path), pretrained_backbone_only=True)


def test_pretrained_not_strict_loads_what_fits_and_lists_the_rest(tmp_path, caplog):
    path = hollow_weights_file(tmp_path / "yolov4.pt", "yolov4", 80)
    with caplog.at_level(logging.WARNING):
        module = tiny_module(pretrained=str(path), pretrained_strict=False)
    (record,) = [r for r in caplog.records if "yolov4.pt" in r.getMessage()]
    msg = record.getMessage()
    assert record.levelno == logging.WARNING
    assert re.search(r"\d+ of \d+ tensors loaded; kept their initial values: \d+ \[", msg)
    assert "ignored from the file:" in msg and "layers.6.conv.weight" in msg
    loaded = int(re.search(r"(\d+) of", msg).group(1))
    # the tensors that fit now hold the file's 3s, the others kept their initial values
    own = module.model.state_dict()
    from_file = [k for k, v in own.items() if (v == 3).all()]
    assert 0 < loaded == len(from_file) < len(own) // 2
    assert module.hparams["pretrained_strict"] is False


def test_class_names_must_match_num_classes():
    with pytest.raises(ConfigError, match=r"2 class names for model.num_classes=3"):
        tiny_module(class_names=["a", "b"])


@pytest.mark.parametrize(
    ("kwargs", "named"),
    [
        ({"ema_decay": 1.5}, r"module.ema_decay must be a number in \(0, 1\) .* got 1.5"),
        ({"ema_decay": -0.1}, r"module.ema_decay must be a number in \(0, 1\)"),
        ({"ema_decay": "high"}, r"module.ema_decay must be a number"),
        ({"ema_tau": 0}, r"module.ema_tau must be a number > 0 \(null: a constant decay\), got 0"),
        ({"ema_start": 1.0}, r"module.ema_start must be a fraction .* in \[0, 1\) .* got 1.0"),
        ({"ema_apply_before_end": 0}, r"module.ema_apply_before_end must be .* >= 1 .* got 0"),
        ({"ema_apply_before_end": 1.5}, r"module.ema_apply_before_end must be .* got 1.5"),
        ({"label_smoothing": 5}, r"module.label_smoothing must be a number in \[0, 1\], got 5"),
        ({"optim": {"lrr": 1}}, r"unknown optim keys \['lrr'\]; expected some of .*'lr'"),
        ({"category_ids": [1, 2]}, r"2 category_ids for model.num_classes=3"),
    ],
)
def test_module_settings_out_of_range_are_refused_at_construction(kwargs, named):
    """An EMA decay over 1 diverges, and the EMA is what validation scores and weights/ hold."""
    with pytest.raises(ConfigError, match=named):
        tiny_module(**kwargs)


def test_model_may_be_a_zoo_name_or_a_model_config():
    config = build_model("yolov4-tiny", num_classes=3).config
    assert YoloModule(model="yolov4-tiny").model.num_classes == 80
    assert YoloModule(model=config).model.config == config
    assert tiny_module(ema_decay=None).ema is None and tiny_module(ema_decay=0).ema is None
    with pytest.raises(ConfigError, match=r"model must be a model config .* got int"):
        YoloModule(model=3)


def test_loss_is_built_for_fitting_only(monkeypatch):
    """Constructing and validating never build the loss; setup("fit") builds it with the
    module's label smoothing."""
    import yolov4.training.module as module_py

    built = []
    real = module_py.YoloLoss.from_config

    def record(config, label_smoothing=0.0, **kwargs):
        built.append(label_smoothing)
        return real(config, label_smoothing=label_smoothing, **kwargs)

    monkeypatch.setattr(module_py.YoloLoss, "from_config", staticmethod(record))
    module = tiny_module(label_smoothing=0.1, ema_decay=None)
    module.setup("validate")
    module.predict_batch(batch())
    assert built == []
    module.setup("fit")
    heads = len(module.model.config.strides)
    assert built == [0.1] and list(module.loss_fn.label_smooth_eps) == [0.1] * heads
    module.training_step(batch(), 0)
    assert built == [0.1]  # once


def validation_run(tmp_path, synthetic_cache, randomize, callbacks=(), logger=False):
    """``Trainer.validate`` of a randomised tiny model on 4 synthetic images."""
    import lightning as L

    from yolov4.data.datamodule import SyntheticDataModule

    dm = SyntheticDataModule(
        num_train=2,
        num_val=4,
        image_size=96,
        cache_dir=str(synthetic_cache),
        input_size=[64, 64],
        batch_size=2,
        num_workers=0,
        persistent_workers=False,
    )
    dm.prepare_data()
    net = randomize(build_model("yolov4-tiny", num_classes=dm.num_classes), seed=2)
    module = YoloModule(
        model=net.config.to_dict(),
        class_names=dm.class_names,
        category_ids=dm.category_ids,
        preprocess=dm.preprocess_config.to_dict(),
        ema_decay=None,
    )
    module.model.load_state_dict(net.state_dict())
    trainer = L.Trainer(
        accelerator="cpu",
        logger=logger,
        callbacks=list(callbacks),
        enable_progress_bar=False,
        enable_checkpointing=False,
        enable_model_summary=False,
        default_root_dir=tmp_path,
    )
    (logged,) = trainer.validate(module, datamodule=dm, verbose=False)
    return module, logged


@pytest.fixture
def synthetic_cache(tmp_path_factory):
    return tmp_path_factory.getbasetemp() / "synthetic-cache"


def test_validation_result_is_one_typed_object(tmp_path, synthetic_cache, randomize):
    from yolov4.evaluation import METRIC_KEYS, EvaluationResult

    module, logged = validation_run(tmp_path, synthetic_cache, randomize)
    result = module.evaluation
    assert isinstance(result, EvaluationResult)
    assert {f"val/{k}": result[k] for k in METRIC_KEYS} == pytest.approx(logged)
    assert result.num_images == 4 and set(result.per_class) == set(module.hparams["class_names"])
    assert result.results and result.precision is not None  # the randomised model detects
    assert module.validation_sample.images.shape == (2, 3, 64, 64)
    assert len(module.validation_sample.detections) == 2
    assert module._loss is None  # validation built no loss


def test_validation_images_logs_the_grid_and_pr_curve(tmp_path, synthetic_cache, randomize):
    """The ValidationImages callback reads the module's typed result: TensorBoard gets the image
    grid and the precision-recall figure."""
    from lightning.pytorch.loggers import TensorBoardLogger
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from yolov4.training.callbacks import ValidationImages

    tb = TensorBoardLogger(tmp_path / "tb", name="", version="")
    validation_run(tmp_path, synthetic_cache, randomize, [ValidationImages(max_images=2)], tb)
    tb.experiment.flush()
    events = EventAccumulator(str(tmp_path / "tb")).Reload()
    assert {"val/predictions", "val/pr_curve"} <= set(events.Tags()["images"])


def test_module_config_mirrors_the_constructor():
    """configs/module/default.yaml holds every YoloModule argument except those the CLIs take
    from the run (model, optim, the data's classes, category ids, preprocess and config), with
    the constructor's defaults."""
    import inspect
    from pathlib import Path

    import yaml

    import yolov4.configs

    configs = Path(yolov4.configs.__file__).parent
    node = yaml.safe_load((configs / "module" / "default.yaml").read_text())
    assert node["_target_"] == "yolov4.training.module.YoloModule" and node["_partial_"] is True
    params = inspect.signature(YoloModule).parameters
    # ``renamed``: the old keyword names (YoloModule(eval=, compile=)), accepted with a warning
    runtime = {"model", "optim", "class_names", "category_ids", "preprocess", "data", "renamed"}
    keys = {k for k in node if not k.startswith("_")}
    assert keys == set(params) - runtime
    for k in keys - {"val_postprocess"}:
        assert node[k] == params[k].default, k


@pytest.mark.parametrize("mode", ["darknet", "exact"])
def test_box_gradient_reaches_the_loss(mode):
    module = tiny_module(ema_decay=None, box_gradient=mode)
    assert module.loss_fn.box_gradient == mode


def test_bad_box_gradient_fails_at_construction():
    with pytest.raises(
        ConfigError, match=r"module.box_gradient must be one of \['darknet', 'exact'\]"
    ):
        tiny_module(ema_decay=None, box_gradient="autograd")


def test_training_step_logs_darknet_cost(monkeypatch):
    module = tiny_module()
    logged = {}
    monkeypatch.setattr(module, "log", lambda name, value, **kw: logged.__setitem__(name, value))
    b = batch()
    module.training_step(b, 0)
    cost = logged["train/darknet_cost"]
    assert not cost.requires_grad
    with torch.no_grad():
        want = darknet_cost(module.loss_fn, module.model(b["images"]), b["targets"])
    assert float(cost) == pytest.approx(float(want), rel=1e-5)


def test_load_from_checkpoint_names_what_the_file_is(tmp_path):
    """Lightning's raw KeyError / EOFError / RuntimeError on a weights file, an empty file or
    a checkpoint of another network became CheckpointErrors naming the file and the reader."""
    import lightning as L

    module = tiny_module(class_names=["a", "b", "c"])
    ckpt = tmp_path / "last.ckpt"
    torch.save(
        {
            "pytorch-lightning_version": L.__version__,
            "state_dict": module.state_dict(),
            "hyper_parameters": dict(module.hparams),
        },
        ckpt,
    )
    loaded = YoloModule.load_from_checkpoint(ckpt, weights_only=True)
    images = torch.rand(1, 3, 64, 64)
    for a, b in zip(loaded.eval()(images), module.eval()(images)):  # forward: the head maps
        torch.testing.assert_close(a, b)
    weights = save_checkpoint(tmp_path / "best.pt", module.model, ["a", "b", "c"])
    with pytest.raises(CheckpointError, match=r"is a yolov4 weights file .* Predictor"):
        YoloModule.load_from_checkpoint(weights)
    (tmp_path / "empty.ckpt").write_bytes(b"")
    with pytest.raises(CheckpointError, match=r"empty.ckpt .* is not a PyTorch checkpoint"):
        YoloModule.load_from_checkpoint(tmp_path / "empty.ckpt")
    other = build_model("yolov3-tiny", num_classes=3).config.to_dict()
    with pytest.raises(CheckpointError, match=r"do not fit the module built from the arguments"):
        YoloModule.load_from_checkpoint(ckpt, model=other, weights_only=True)


@pytest.mark.parametrize(
    "max_epochs, max_steps, batches, accumulate, count",
    [
        (3, -1, 10, 1, 3),  # max_epochs=3
        (-1, 25, 10, 1, 3),  # a recipe's max_steps (max_epochs null): 25 steps take 3 epochs
        (-1, 25, 10, 4, 9),  # 3 optimizer steps per epoch (the last one partial)
        (2, 25, 10, 1, 2),  # whichever ends first
        (-1, -1, 10, 1, None),  # unbounded: no total
    ],
)
def test_the_epoch_line_counts_1_based_to_the_runs_epoch_count(
    max_epochs, max_steps, batches, accumulate, count, caplog
):
    """The epoch's line in train.log reads ``epoch 1/3`` ... ``epoch 3/3`` for a run of 3
    epochs (Lightning's 0-based epochs shown 1-based over the count), the total fixed by
    max_epochs or the recipes' max_steps, not following the current epoch."""
    from types import SimpleNamespace

    from yolov4.training.epoch_log import EpochLine, epoch_count

    trainer = SimpleNamespace(
        max_epochs=max_epochs,
        max_steps=max_steps,
        num_training_batches=batches,
        accumulate_grad_batches=accumulate,
        is_global_zero=True,
        optimizers=[],
    )
    assert epoch_count(trainer) == count
    line = EpochLine()
    line.new_epoch()
    line.add(torch.ones(4))
    last = (count or 5) - 1  # Lightning's index of the run's last epoch
    with caplog.at_level(logging.INFO, logger="yolov4"):
        line.log(trainer, epoch=0, step=1)
        line.log(trainer, epoch=last, step=7)
    first, final = (r.getMessage() for r in caplog.records)
    total = "" if count is None else f"/{count}"
    assert first.startswith(f"epoch 1{total} step 1: train loss 1.0000")
    assert final.startswith(f"epoch {last + 1}{total} step 7: ")


def resumed(module: YoloModule, saved_optim, saved_total: int, total: int, step: int):
    """``module`` as a fit resuming a checkpoint of ``saved_optim`` (the run's optim settings)
    and ``saved_total`` schedule steps finds it in ``on_train_start``: the optimizer and lr
    scheduler its settings build for ``total`` steps, with the state that run saved at
    ``step`` loaded into them (as Lightning restores them)."""
    from yolov4.training.module import SCHEDULE_KEY
    from yolov4.training.optim import build_optimizer, lr_factor

    def built(cfg, length):
        optimizer = build_optimizer(module.model, cfg)
        lambdas = torch.optim.lr_scheduler.LambdaLR
        return optimizer, lambdas(optimizer, lambda s: lr_factor(s, length, cfg))

    saved_optimizer, saved_scheduler = built(saved_optim, saved_total)
    for _ in range(step):  # the saved run's steps
        saved_optimizer.step()
        saved_scheduler.step()
    optimizer, scheduler = built(module.optim_cfg, total)
    optimizer.load_state_dict(saved_optimizer.state_dict())
    scheduler.load_state_dict(saved_scheduler.state_dict())
    module.on_load_checkpoint(
        {SCHEDULE_KEY: saved_total, "hyper_parameters": {"optim": dict(vars(saved_optim))}}
    )
    module._trainer = SimpleNamespace(
        global_step=step,
        optimizers=[optimizer],
        lr_scheduler_configs=[SimpleNamespace(scheduler=scheduler)],
    )
    module._schedule_total = total
    return optimizer, scheduler


def test_a_resume_that_stretches_the_lr_schedule_says_so(caplog):
    """Resumed with trainer.max_epochs 2 -> 4 (the documented way to train longer), the
    steps schedule, fractions of the run's length, sent the decayed lr back up to optim.lr
    without a word; the warning gives the lr the optimizer then really uses."""
    from yolov4.training.optim import OptimConfig

    optim = OptimConfig(optimizer="sgd", lr=0.01, burn_in=2, steps=(0.8, 0.9))
    module = tiny_module(optim=optim)
    optimizer, _ = resumed(module, optim, saved_total=16, total=32, step=16)
    with caplog.at_level(logging.WARNING, logger="yolov4"):
        module._resume_optimizer()
    assert (
        "16 when the checkpoint was saved and 32 now: at step 16 the lr is 0.01 (it was 0.0001)"
        in caplog.text
    )
    assert [g["lr"] for g in optimizer.param_groups] == pytest.approx([0.01] * 3)
    # another length whose schedule gives the same lr at the resume step: nothing to say
    caplog.clear()
    module = tiny_module(optim=optim)
    optimizer, _ = resumed(module, optim, saved_total=16, total=18, step=10)
    module._resume_optimizer()
    assert caplog.text == ""
    # the same length: nothing changes, nothing to say
    module = tiny_module(optim=optim)
    optimizer, _ = resumed(module, optim, saved_total=16, total=16, step=14)
    before = [dict(g, params=None) for g in optimizer.param_groups]
    module._resume_optimizer()
    assert [dict(g, params=None) for g in optimizer.param_groups] == before
    assert caplog.text == ""


@pytest.mark.parametrize("kind", ["adamw", "sgd"])
def test_a_resume_with_other_optim_settings_applies_them(kind, caplog):
    """optim.lr, weight_decay and momentum given on a resume were logged but not applied:
    Lightning restores the optimizer and scheduler as saved, so the lr followed the old
    optim.lr and the groups kept the old weight decay and momentum."""
    from yolov4.training.optim import OptimConfig, lr_factor

    old = OptimConfig(optimizer=kind, lr=0.002, momentum=0.9, weight_decay=5e-4, burn_in=4)
    new = OptimConfig(optimizer=kind, lr=0.01, momentum=0.8, weight_decay=1e-3, burn_in=4)
    module = tiny_module(optim=new)
    optimizer, scheduler = resumed(module, old, saved_total=16, total=16, step=2)
    with caplog.at_level(logging.INFO, logger="yolov4"):
        module._resume_optimizer()
    assert [g["lr"] for g in optimizer.param_groups] == [0.01 * lr_factor(2, 16, new)] * 3
    decay = {g["name"]: g["weight_decay"] for g in optimizer.param_groups}
    assert decay == {"weights": 1e-3, "bn": 0.0, "bias": 0.0}
    for group in optimizer.param_groups:
        assert (group["momentum"] if kind == "sgd" else group["betas"][0]) == 0.8
    assert "lr 0.002 -> 0.01" in caplog.text and "weight_decay 0.0005 -> 0.001" in caplog.text
    optimizer.step()
    scheduler.step()  # the next steps follow the schedule on the new lr
    assert [g["lr"] for g in optimizer.param_groups] == [0.01 * lr_factor(3, 16, new)] * 3


@pytest.mark.parametrize(
    ("total", "fraction", "before_end", "window"),
    [(500500, 0.5, 1000, (250250, 499500)), (10, 0.0, None, (0, None)), (100, 0.5, 60, (50, None))],
)
def test_ema_window_is_laid_over_the_run(total, fraction, before_end, window, caplog):
    """darknet's ema_alpha: average from max_batches / 2, copy at max_batches - 1000; a run too
    short for the copy keeps its average and says so."""
    module = tiny_module(ema_decay=0.9998, ema_start=fraction, ema_apply_before_end=before_end)
    module.trainer = SimpleNamespace(estimated_stepping_batches=total)  # the run's length
    with caplog.at_level("INFO", logger="yolov4.training.ema"):
        module.configure_optimizers()
    assert (module.ema.start, module.ema.apply_at) == window
    short = "leave no average to copy into the weights" in caplog.text
    assert short == (window == (50, None))


def test_lightning_checkpoints_record_the_images_trained_on(tmp_path):
    """A .ckpt records darknet's seen (steps times batch x accumulation x processes), which
    load_checkpoint (evaluate.py, export.py checkpoint=<.ckpt>) keeps as model.seen."""
    import lightning as L

    from yolov4 import load_checkpoint

    module = tiny_module(class_names=["a", "b", "c"])
    module._trainer = SimpleNamespace(
        global_step=7, accumulate_grad_batches=2, world_size=1,
        datamodule=SimpleNamespace(batch_size=4),
    )  # fmt: skip
    checkpoint = {
        "pytorch-lightning_version": L.__version__,
        "global_step": 7,
        "state_dict": module.state_dict(),
        "hyper_parameters": dict(module.hparams),
    }
    module.on_save_checkpoint(checkpoint)
    torch.save(checkpoint, tmp_path / "last.ckpt")
    assert load_checkpoint(tmp_path / "last.ckpt").model.seen == 7 * 4 * 2


def test_a_resumed_run_counts_its_images_from_the_checkpoints_seen():
    """A resume at step 6 of a run of 4 images per step, at 8 per step after it: seen goes
    on from the checkpoint's 24 (48 at step 9, not the steps times this run's images per step,
    72). A checkpoint without a count counts every step at this run's images per step."""
    from yolov4.core.checkpoint import CKPT_SEEN_KEY

    def saved_at(step, resumed):
        module = tiny_module(class_names=["a", "b", "c"])
        module.on_load_checkpoint(resumed)
        module._trainer = SimpleNamespace(
            global_step=step, accumulate_grad_batches=1, world_size=2,
            datamodule=SimpleNamespace(batch_size=4),
        )  # fmt: skip
        checkpoint: dict = {}
        module.on_save_checkpoint(checkpoint)
        return checkpoint[CKPT_SEEN_KEY]

    assert saved_at(9, {"global_step": 6, CKPT_SEEN_KEY: 24}) == 24 + 3 * 8
    assert saved_at(9, {"global_step": 6}) == 9 * 8


def test_a_resume_that_shortens_the_lr_schedule_says_how_to_keep_it(caplog):
    """Resumed with a lower trainer.max_epochs the decay comes sooner and the lr falls: the
    warning's advice is to keep the checkpoint's length, not to train on at a decayed lr."""
    from yolov4.training.optim import OptimConfig

    optim = OptimConfig(optimizer="sgd", lr=0.01, burn_in=2, steps=(0.8, 0.9))
    module = tiny_module(optim=optim)
    resumed(module, optim, saved_total=32, total=16, step=14)
    with caplog.at_level(logging.WARNING, logger="yolov4"):
        module._resume_optimizer()
    assert "32 when the checkpoint was saved and 16 now: at step 14 the lr is 0.0001" in caplog.text
    assert "The checkpoint's trainer.max_epochs (or max_steps) keeps its schedule" in caplog.text
    assert "To keep training at the decayed lr" not in caplog.text
