"""``module.class_balance=darknet``: boxes per class of the training split (checked against the
split's pycocotools ground truth) become the model's ``counters_per_class`` at fit start, reach
the loss, and travel in checkpoints; bad settings fail naming the key."""

from __future__ import annotations

import logging
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from yolov4 import ConfigError, build_model, load_checkpoint, save_checkpoint
from yolov4.data.datamodule import SyntheticDataModule
from yolov4.data.records import DetectionData, ImageRecord
from yolov4.errors import DatasetError
from yolov4.models.class_balance import class_multipliers
from yolov4.training.class_balance import balanced_config, class_counts
from yolov4.training.module import YoloModule


@pytest.fixture
def datamodule(tmp_path_factory):
    dm = SyntheticDataModule(
        num_train=6,
        num_val=2,
        image_size=64,
        data_seed=3,
        cache_dir=str(tmp_path_factory.getbasetemp() / "synthetic-balance"),
        input_size=[64, 64],
        batch_size=2,
        num_workers=0,
        persistent_workers=False,
    )
    dm.prepare_data()
    return dm


def coco_counts(dm) -> list[int]:
    """Boxes per class index from the split's COCO ground truth (pycocotools' own index)."""
    data = dm.split("train")
    coco = data.coco
    return [len(coco.getAnnIds(catIds=[cat])) for cat in data.category_ids]


def module_for(dm, **kwargs) -> YoloModule:
    model = build_model("yolov4-tiny", num_classes=dm.num_classes).config.to_dict()
    module = YoloModule(model=model, class_names=dm.class_names, **kwargs)
    module.trainer = SimpleNamespace(datamodule=dm)  # what Lightning attaches before setup
    return module


def test_counts_of_a_synthetic_split_match_its_coco_ground_truth(datamodule):
    data = datamodule.split("train")
    counts = class_counts((r.labels for r in data.records), data.num_classes)
    assert counts == coco_counts(datamodule)
    assert sum(counts) > len(data.records)  # several boxes per image, more than one class
    assert sum(c > 0 for c in counts) >= 2


def test_fit_setup_puts_the_counts_in_the_model_and_the_loss(datamodule, tmp_path):
    module = module_for(datamodule, class_balance="darknet", ema_decay=0.99)
    want = tuple(max(c, 1) for c in coco_counts(datamodule))
    module.setup("fit")
    heads = len(module.model.config.strides)
    assert module.model.config.counters_per_class == (want,) * heads
    assert module.ema.module.config == module.model.config
    assert module.hparams["model"]["counters_per_class"] == [list(want)] * heads
    mult = torch.from_numpy(class_multipliers(want))
    assert torch.equal(module.loss_fn.class_multipliers, mult.expand(heads, -1))
    assert any(m > 1 for m in mult.tolist())  # the split is not balanced already
    # the darknet cfg a checkpoint or artifact writes carries them
    assert f"counters_per_class={','.join(map(str, want))}" in "\n".join(
        f"{k}={v}" for s in module.model.sections for k, v in s.options.items()
    )
    # strict round trip through a weights file
    path = save_checkpoint(tmp_path / "w.pt", module.eval_model, module.hparams["class_names"])
    loaded = load_checkpoint(path)
    assert loaded.model.config == module.model.config
    rebuilt = YoloModule(**{k: v for k, v in module.hparams.items()})
    assert rebuilt.model.config == module.model.config


def test_off_leaves_the_model_alone(datamodule):
    module = module_for(datamodule, ema_decay=None)
    module.setup("fit")
    assert module.model.config.counters_per_class == (None, None)
    assert module.loss_fn.balanced == [False, False]


def test_bad_settings_fail_naming_the_key(datamodule):
    with pytest.raises(
        ConfigError, match=r"module.class_balance must be one of \['off', 'darknet'\]"
    ):
        module_for(datamodule, class_balance="inverse")
    module = module_for(datamodule, class_balance="darknet", ema_decay=None)
    module.trainer = SimpleNamespace(datamodule=None)
    with pytest.raises(ConfigError, match="module.class_balance=darknet .* needs a DataModule"):
        module.setup("fit")
    other = build_model("yolov4-tiny", num_classes=datamodule.num_classes).config.to_dict()
    other["counters_per_class"] = [1] * datamodule.num_classes
    module = YoloModule(model=other, class_names=datamodule.class_names, class_balance="darknet")
    module.trainer = SimpleNamespace(datamodule=datamodule)
    with pytest.raises(ConfigError, match="the model already has"):
        module.setup("fit")


def split_of(labels: list[list[int]], names: list[str]) -> DetectionData:
    records = [
        ImageRecord(i, f"{i}.png", 32, 32, np.zeros((len(la), 4), np.float32), np.asarray(la))
        for i, la in enumerate(labels)
    ]
    return DetectionData(records, names, list(range(len(names))), coco=None)


def test_a_class_without_boxes_counts_as_one_and_no_boxes_fails(caplog):
    config = build_model("yolov4-tiny", num_classes=3).config
    with caplog.at_level(logging.WARNING):
        out = balanced_config(config, split_of([[0, 0, 2], [0]], ["a", "b", "c"]))
    assert out.counters_per_class == ((3, 1, 1), (3, 1, 1))
    assert "no training box of class(es) ['b']" in caplog.text
    with pytest.raises(DatasetError, match="the training split has no boxes"):
        balanced_config(config, split_of([[], []], ["a", "b", "c"]))
