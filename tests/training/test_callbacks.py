"""WeightsCallback: weights/last.pt and best.pt are strict-loadable files; weights that diverged
to NaN are not written over them, and training stops saying why."""

from __future__ import annotations

import logging
from types import SimpleNamespace

import pytest
import torch

from yolov4 import build_model, load_checkpoint
from yolov4.training.callbacks import WeightsCallback


def test_diverged_weights_keep_the_last_finite_file_and_stop_training(tmp_path, caplog):
    model = build_model("yolov4-tiny", num_classes=2, input_size=[64, 64])
    hparams = {"class_names": ["a", "b"], "preprocess": {"input_size": [64, 64]}}
    module = SimpleNamespace(
        eval_model=model, evaluation=None, ema=None, hparams={**hparams, "category_ids": [0, 1]}
    )
    trainer = SimpleNamespace(current_epoch=0, global_step=5, should_stop=False)
    callback = WeightsCallback(tmp_path)
    path = callback.save(trainer, module, "last.pt")
    before = path.read_bytes()
    with torch.no_grad():
        next(model.parameters()).view(-1)[0] = float("nan")
    trainer.global_step = 9
    with caplog.at_level(logging.ERROR):
        assert callback.save(trainer, module, "last.pt") is None
    assert trainer.should_stop and path.read_bytes() == before
    assert load_checkpoint(path).trained["step"] == 5
    assert "training diverged" in caplog.text and "step 9" in caplog.text


def test_a_checkpoint_save_never_writes_into_a_linked_file(tmp_path, monkeypatch):
    """best.ckpt and last.ckpt share one file while they hold the same state. Lightning's
    writer moves a temporary from $TMPDIR, which across filesystems (os.rename: EXDEV) copies
    INTO the existing last.ckpt, rewriting best.ckpt too; ours renames a file written beside."""
    import errno
    import os

    from lightning.pytorch.plugins.io import TorchCheckpointIO

    from yolov4.training.callbacks import AtomicCheckpointIO

    real_rename = os.rename

    def cross_device(src, dst, *a, **k):  # what a rename across filesystems does
        if str(dst).endswith("last.ckpt"):
            raise OSError(errno.EXDEV, "Invalid cross-device link")
        return real_rename(src, dst, *a, **k)

    monkeypatch.setattr(os, "rename", cross_device)
    for writer, best_kept in ((TorchCheckpointIO(), False), (AtomicCheckpointIO(), True)):
        folder = tmp_path / type(writer).__name__
        folder.mkdir()
        torch.save({"epoch": 0}, folder / "best.ckpt")
        os.link(folder / "best.ckpt", folder / "last.ckpt")  # SharedCheckpoint's link
        writer.save_checkpoint({"epoch": 1}, folder / "last.ckpt")
        assert torch.load(folder / "last.ckpt", weights_only=True) == {"epoch": 1}
        best = torch.load(folder / "best.ckpt", weights_only=True)
        assert (best == {"epoch": 0}) == best_kept, type(writer).__name__
    assert sorted(p.name for p in (tmp_path / "AtomicCheckpointIO").iterdir()) == [
        "best.ckpt",
        "last.ckpt",
    ]  # no temporary left


def test_best_weights_follow_the_best_checkpoints_monitor():
    """weights/best.pt was chosen by mAP whatever callbacks.best_checkpoint.monitor said:
    with val/mAP50 (or a train metric, mode min) best.ckpt and best.pt were other epochs."""
    from types import SimpleNamespace

    from yolov4.training.callbacks import WeightsCallback

    last = SimpleNamespace(monitor=None, mode="min")
    best = SimpleNamespace(monitor="val/mAP50", mode="max")
    trainer = SimpleNamespace(checkpoint_callbacks=[last, best])
    assert WeightsCallback.monitor(trainer) == ("val/mAP50", "max")
    best.monitor, best.mode = "train/loss", "min"
    assert WeightsCallback.monitor(trainer) == ("train/loss", "min")
    assert WeightsCallback.monitor(SimpleNamespace(checkpoint_callbacks=[last])) == (
        "val/mAP",
        "max",
    )


def test_last_checkpoint_finds_train_pys_last_ckpt(tmp_path):
    """train.py's last.ckpt is a checkpoint named "last" (no save_last): the DivergedError and
    Ctrl-C messages read ``last_model_path`` (empty) and said no checkpoint was written."""
    from types import SimpleNamespace

    from lightning.pytorch.callbacks import ModelCheckpoint

    from yolov4.training.callbacks import last_checkpoint

    best = ModelCheckpoint(dirpath=tmp_path, filename="best")
    last = ModelCheckpoint(dirpath=tmp_path, filename="last")
    trainer = SimpleNamespace(checkpoint_callbacks=[best, last])
    assert last_checkpoint(trainer) == "" and last_checkpoint(None) == ""
    (tmp_path / "last.ckpt").write_bytes(b"x")
    assert last_checkpoint(trainer) == str(tmp_path / "last.ckpt")


def _scored_module(model):
    hparams = {"class_names": ["a", "b"], "preprocess": {"input_size": [64, 64]}}
    return SimpleNamespace(
        eval_model=model,
        evaluation=SimpleNamespace(scalars={}),
        ema=None,
        hparams={**hparams, "category_ids": [0, 1]},
    )


def test_best_weights_go_to_the_later_of_equal_scores(tmp_path):
    """Validations scoring alike (mAP 0 early on, a plateau): best.pt holds the later, more
    trained weights; a lower score never replaces it."""
    module = _scored_module(build_model("yolov4-tiny", num_classes=2, input_size=[64, 64]))
    _validate(WeightsCallback(tmp_path), module, [0.1, 0.1, 0.05])
    assert load_checkpoint(tmp_path / "weights/best.pt").trained["epoch"] == 1
    assert load_checkpoint(tmp_path / "weights/last.pt").trained["epoch"] == 2


def test_best_checkpoint_goes_to_the_later_of_equal_scores(tmp_path):
    """checkpoints/best.ckpt (SharedCheckpoint, a real Lightning fit) follows the same rule as
    best.pt: of equal scores the later epoch, never a lower one."""
    import lightning as L

    from yolov4.training.callbacks import SharedCheckpoint

    scores = [0.0, 0.0, 0.0, -1.0]  # val/mAP of epochs 0..3

    class Constant(L.LightningModule):
        def __init__(self):
            super().__init__()
            self.net = torch.nn.Linear(1, 1)

        def training_step(self, batch, batch_idx):
            return self.net(batch[0]).sum()

        def validation_step(self, batch, batch_idx):
            self.log("val/mAP", scores[self.current_epoch])

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.1)

    data = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.ones(2, 1)))
    best = SharedCheckpoint(
        dirpath=tmp_path, filename="best", monitor="val/mAP", mode="max", save_top_k=1,
        enable_version_counter=False,
    )  # fmt: skip
    trainer = L.Trainer(
        max_epochs=len(scores), callbacks=[best], logger=False, enable_progress_bar=False,
        enable_model_summary=False, limit_train_batches=1, limit_val_batches=1,
        num_sanity_val_steps=0, accelerator="cpu", devices=1,
    )  # fmt: skip
    trainer.fit(Constant(), data, data)
    assert torch.load(tmp_path / "best.ckpt", weights_only=True)["epoch"] == 2
    assert best.best_model_path == str(tmp_path / "best.ckpt")


def test_weights_files_record_the_images_trained_on(tmp_path):
    """best.pt and last.pt record darknet's seen: optimizer steps times data.batch_size x
    trainer.accumulate_grad_batches x processes, which the loaded model keeps as model.seen."""
    module = _scored_module(build_model("yolov4-tiny", num_classes=2, input_size=[64, 64]))
    trainer = SimpleNamespace(
        current_epoch=0, global_step=5, should_stop=False, accumulate_grad_batches=2,
        world_size=3, datamodule=SimpleNamespace(batch_size=4),
    )  # fmt: skip
    ckpt = load_checkpoint(WeightsCallback(tmp_path).save(trainer, module, "last.pt"))
    assert ckpt.trained["seen"] == ckpt.model.seen == 5 * 4 * 2 * 3


def _validate(callback, module, scores):
    """Run ``callback``'s after-validation step once per score (val/mAP), epoch by epoch."""
    for epoch, score in enumerate(scores):
        trainer = SimpleNamespace(
            state=SimpleNamespace(fn="fit"),
            sanity_checking=False,
            is_global_zero=True,
            current_epoch=epoch,
            global_step=10 * (epoch + 1),
            should_stop=False,
            checkpoint_callbacks=[],
            callback_metrics={"val/mAP": torch.tensor(score)},
        )
        callback.on_validation_end(trainer, module)


def test_a_nan_score_ranks_below_every_finite_score(tmp_path):
    """A validation scoring NaN (no detections evaluated, a diverged step) is the worst score, as
    Lightning ranks it for best.ckpt: a later finite score replaces it in best.pt, and it never
    replaces an earlier finite one."""
    module = _scored_module(build_model("yolov4-tiny", num_classes=2, input_size=[64, 64]))
    for scores, best_epoch in (([float("nan"), 0.1], 1), ([0.1, float("nan")], 0)):
        folder = tmp_path / str(best_epoch)
        callback = WeightsCallback(folder)
        _validate(callback, module, scores)
        assert callback.best == pytest.approx(0.1)
        assert load_checkpoint(folder / "weights/best.pt").trained["epoch"] == best_epoch
        assert load_checkpoint(folder / "weights/last.pt").trained["epoch"] == 1


def test_a_nan_best_gives_way_to_any_score_and_nan_to_none(tmp_path):
    """The rule both best files follow, in either mode: a NaN best (also one restored from a
    checkpoint's callback state) is replaced by any finite score, a NaN score replaces nothing;
    a run scoring only NaN keeps its first epoch in best.pt, as Lightning keeps best.ckpt."""
    from yolov4.training.callbacks import at_least_as_good

    nan = float("nan")
    for mode in ("max", "min"):
        assert at_least_as_good(0.1, nan, mode) and at_least_as_good(torch.tensor(-5.0), nan, mode)
        assert not at_least_as_good(nan, 0.1, mode) and not at_least_as_good(nan, nan, mode)
    assert at_least_as_good(0.1, 0.1, "max") and not at_least_as_good(0.05, 0.1, "max")
    module = _scored_module(build_model("yolov4-tiny", num_classes=2, input_size=[64, 64]))
    callback = WeightsCallback(tmp_path)
    _validate(callback, module, [nan, nan])
    assert load_checkpoint(tmp_path / "weights/best.pt").trained["epoch"] == 0
