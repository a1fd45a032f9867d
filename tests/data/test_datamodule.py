"""DataModule batches: documented shapes/dtypes at several multi-scale sizes, seeded
reproducibility, class checks, Hydra configs instantiating the constructors."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from omegaconf import OmegaConf

from yolov4.core.preprocess import PreprocessConfig, batch_to_input
from yolov4.data.collate import MultiScale, multi_scale_size
from yolov4.data.datamodule import DetectionDataModule, SyntheticDataModule
from yolov4.data.transforms import AugmentConfig
from yolov4.errors import ConfigError, DatasetError

CONFIGS = Path(__file__).resolve().parents[2] / "src" / "yolov4" / "configs"


def _dm(cache: Path, **kw) -> SyntheticDataModule:
    args = dict(
        num_train=16,
        num_val=6,
        image_size=96,
        cache_dir=str(cache),
        input_size=(96, 128),
        batch_size=4,
        num_workers=0,
        augment=AugmentConfig(),
    )
    return SyntheticDataModule(**{**args, **kw})


def _check_batch(raw: dict, batch_size: int) -> tuple[int, int]:
    """A DataLoader batch (uint8 images), then as the training device finishes it."""
    assert raw["images"].dtype == torch.uint8
    batch = batch_to_input(raw, PreprocessConfig())
    images, targets = batch["images"], batch["targets"]
    b, c, h, w = images.shape
    assert (b, c) == (batch_size, 3) and h % 32 == 0 and w % 32 == 0
    assert images.dtype == torch.float32 and 0.0 <= images.min() and images.max() <= 1.0
    assert targets.dtype == torch.float32 and targets.ndim == 2 and targets.shape[1] == 6
    assert torch.all(
        (targets[:, 0] >= 0) & (targets[:, 0] < b) & (targets[:, 0] == targets[:, 0].round())
    )
    assert torch.all((targets[:, 1] >= 0) & (targets[:, 1] < 4))
    x1, y1, x2, y2 = targets[:, 2:].T
    assert torch.all(
        (x1 >= 0) & (y1 >= 0) & (x2 <= w + 1e-3) & (y2 <= h + 1e-3) & (x2 > x1) & (y2 > y1)
    )
    assert batch["image_ids"].shape == (b,) and batch["image_ids"].dtype == torch.int64
    assert batch["original_sizes"].shape == (b, 2) and batch["original_sizes"].dtype == torch.int64
    assert batch["letterbox"].shape == (b, 4) and batch["letterbox"].dtype == torch.float32
    return h, w


def test_train_batches_have_documented_shapes_at_several_sizes(synth_cache: Path):
    torch.manual_seed(0)
    dm = _dm(synth_cache)
    dm.prepare_data()
    dm.setup("fit")
    sizes = set()
    step = 0
    for _ in range(4):
        for batch in dm.train_dataloader():  # as the training module finishes them
            sizes.add(_check_batch(dm.multi_scale.apply(batch, step), 4))
            step += 10
    assert len(sizes) >= 2, sizes  # multi-scale: sizes change between windows
    for h, w in sizes:
        assert w / h == pytest.approx(128 / 96, rel=0.35)


def test_val_batches_use_the_preprocess_function(synth_cache: Path):
    dm = _dm(synth_cache, val_batch_size=3)
    dm.setup("validate")
    batches = list(dm.val_dataloader())
    assert [tuple(b["images"].shape) for b in batches] == [(3, 3, 96, 128)] * 2
    for b in batches:
        _check_batch(b, 3)
    ids = torch.cat([b["image_ids"] for b in batches]).tolist()
    assert sorted(ids) == sorted(dm.val_coco.getImgIds())
    # the val targets are the COCO ground truth mapped by each image's letterbox params
    b = batches[0]
    i = int(b["targets"][0, 0])
    gt = dm.val_coco.loadAnns(dm.val_coco.getAnnIds(imgIds=[int(b["image_ids"][i])]))
    sx, sy, px, py = b["letterbox"][i].tolist()
    x, y, w, h = gt[0]["bbox"]
    expected = torch.tensor([x * sx + px, y * sy + py, (x + w) * sx + px, (y + h) * sy + py])
    torch.testing.assert_close(b["targets"][0, 2:], expected, atol=1e-3, rtol=0)


def test_multi_scale_sizes_are_darknets():
    """darknet's detector.c: round(side * f / 32 + 1) * 32 (half up), a factor below 1 never
    above the size, at least 32; at 416 and random=1 (1.4) from 320 to 608."""
    assert multi_scale_size((416, 416), 1.0) == (448, 448)  # the + 1: one step above
    assert multi_scale_size((416, 416), 1.4) == (608, 608)  # 19.2 -> 19
    assert multi_scale_size((416, 416), 1 / 1.4) == (320, 320)  # 10.29 -> 10
    assert multi_scale_size((416, 416), 0.99) == (416, 416)  # 448 > 416 for f < 1
    assert multi_scale_size((608, 608), 1.4) == (896, 896)  # 27.6 -> 28
    assert multi_scale_size((96, 128), 0.1) == (32, 32)
    assert multi_scale_size((64, 64), 0.75) == (64, 64)  # 2.5 -> 3 (half up): 96 > 64
    assert multi_scale_size((320, 320), 1.0, 64) == (384, 384)  # yolov4-p6's multiple


def _batch(size: int = 416) -> dict:
    return {
        "images": torch.randint(0, 256, (2, 3, size, size), dtype=torch.uint8),
        "input_size": (size, size),
        "targets": torch.tensor([[0, 1, 10.0, 20, 100, 200], [1, 0, 5, 5, 50, 60]]),
        "letterbox": torch.tensor([[1.0, 1.0, 0.0, 0.0]] * 2),
    }


def test_multi_scale_one_size_per_ten_steps_largest_first_and_last():
    ms = MultiScale(1.4, seed=3)
    total = 1000
    sizes = [ms.size((416, 416), step, total) for step in range(total)]
    windows = [sizes[i : i + 10] for i in range(0, total, 10)]
    assert all(len(set(w)) == 1 for w in windows)  # a size per 10 optimizer steps
    assert sizes[0] == sizes[9] == (608, 608)  # the first window at the largest
    # windows starting after step 900 (darknet: iteration > max_batches - 100) at the largest
    assert set(sizes[910:]) == {(608, 608)}
    middle = set(sizes[10:910])
    assert len(middle) >= 6 and all(s[0] == s[1] and s[0] % 32 == 0 for s in middle)
    assert min(middle)[0] >= 320 and max(middle)[0] <= 608
    # a function of (seed, step) alone: a resumed run (or another rank or worker) draws the same
    assert [MultiScale(1.4, seed=3).size((416, 416), s, total) for s in range(0, 900, 7)] == [
        sizes[s] for s in range(0, 900, 7)
    ]
    other = [MultiScale(1.4, seed=4).size((416, 416), s, total) for s in range(10, 900, 10)]
    assert other != [sizes[s] for s in range(10, 900, 10)]
    # no total (an open-ended run): no final window; the draw is a longer run's
    assert ms.size((416, 416), 995) == ms.size((416, 416), 995, 10_000)


def test_multi_scale_apply_scales_targets_and_letterbox():
    ms = MultiScale(1.4, seed=0, every=1, final=0)
    step = next(s for s in range(1, 50) if ms.size((416, 416), s, 100)[0] != 416)
    h = ms.size((416, 416), step, 100)[0]
    b = ms.apply(_batch(), step, 100)
    assert b["input_size"] == (h, h) and b["images"].shape[-2:] == (416, 416)
    gain = h / 416
    torch.testing.assert_close(b["targets"][:, 2:], _batch()["targets"][:, 2:] * gain)
    torch.testing.assert_close(b["targets"][:, :2], _batch()["targets"][:, :2])
    torch.testing.assert_close(b["letterbox"][:, :2], torch.full((2, 2), gain))
    images = batch_to_input(b, PreprocessConfig())["images"]
    assert images.shape[-2:] == (h, h) and images.dtype == torch.float32


def test_datamodule_multi_scale_follows_augment():
    dm = SyntheticDataModule(
        num_train=4,
        num_val=2,
        augment=AugmentConfig(multi_scale=1.4),
        seed=7,
        size_multiple=64,
        input_size=128,
    )
    assert dm.multi_scale == MultiScale(1.4, 64, 7)
    assert (
        SyntheticDataModule(num_train=4, num_val=2, augment=AugmentConfig.none()).multi_scale
        is None
    )
    with pytest.raises(ValueError, match="multi-scale coefficient"):
        MultiScale(0.5)


@pytest.mark.parametrize("num_workers", [0, 2])
def test_same_seed_same_batches(synth_cache: Path, num_workers: int):
    def first_batches(seed: int) -> list[torch.Tensor]:
        torch.manual_seed(123)
        dm = _dm(synth_cache, seed=seed, num_workers=num_workers, persistent_workers=False)
        dm.setup("fit")
        return [
            torch.cat([b["images"].flatten()[:500], b["targets"].flatten()])
            for b in dm.train_dataloader()
        ]

    a, b, c = first_batches(0), first_batches(0), first_batches(1)
    assert len(a) == 4 and all(torch.equal(x, y) for x, y in zip(a, b, strict=True))
    assert not all(x.shape == y.shape and torch.equal(x, y) for x, y in zip(a, c, strict=True))


def test_public_attributes_for_training_and_evaluation(synth_cache: Path):
    dm = _dm(synth_cache)
    assert dm.class_names == ["circle", "rectangle", "triangle", "cross"] and dm.num_classes == 4
    assert dm.category_ids == [1, 3, 5, 7]
    assert sorted(c["id"] for c in dm.val_coco.dataset["categories"]) == dm.category_ids
    assert dm.preprocess_config.to_dict()["input_size"] == [96, 128]


def test_class_count_mismatch_and_bad_settings_fail_at_setup(synth_cache: Path):
    with pytest.raises(DatasetError, match=r"4 classes .* model has 80; set model.num_classes=4"):
        _dm(synth_cache, num_classes=80).setup("fit")
    with pytest.raises(ConfigError, match="multiples of 32"):
        _dm(synth_cache, input_size=(100, 128))
    with pytest.raises(ConfigError, match="no val split"):
        _ = _dm(synth_cache, num_val=0).val_coco
    # where the split comes from, for the loader evaluate.py asks for too
    with pytest.raises(ConfigError, match=r"no val split \(data.val is null, or data.num_val=0 "):
        _dm(synth_cache, num_val=0).val_dataloader()


def test_hydra_configs_instantiate_the_constructors(synth_cache: Path):
    with initialize_config_dir(config_dir=str(CONFIGS), version_base="1.3"):
        cfg = compose(
            overrides=[
                "+data=synthetic",
                "+augment=none",
                f"data.cache_dir={synth_cache}",
                "data.num_train=8",
                "data.num_val=4",
                "data.image_size=96",
                "data.num_workers=0",
            ]
        )
        dm = instantiate(cfg.data, augment=cfg.augment)
        assert isinstance(dm, SyntheticDataModule) and dm.augment == AugmentConfig.none()
        assert isinstance(
            instantiate(compose(overrides=["+augment=darknet"]).augment), AugmentConfig
        )
        dm.setup("fit")
        _check_batch(next(iter(dm.train_dataloader())), 8)
        for name in ("coco", "yolo"):
            cfg = compose(overrides=[f"+data={name}"])
            assert cfg.data._target_.endswith("DetectionDataModule")
            assert OmegaConf.is_missing(cfg.data.train, "images")  # `???`: mandatory
    assert issubclass(SyntheticDataModule, DetectionDataModule)


def _one_image_twice_over(dm: SyntheticDataModule) -> None:
    """Make every train record the same image so any difference between samples comes from the
    augmentation RNG alone."""
    data = dm.split("train")
    with_boxes = next(r for r in data.records if len(r.labels))  # a split needs a box to train
    data.records[:] = [with_boxes] * 8


def test_worker_and_rank_rngs_differ_but_repeat_per_seed(synth_cache: Path):
    def batches(rank: int, seed: int = 0) -> list[torch.Tensor]:
        torch.manual_seed(0)
        dm = _dm(
            synth_cache,
            num_workers=2,
            persistent_workers=False,
            seed=seed,
            augment=AugmentConfig(mosaic=0.0, multi_scale=None),
        )
        _one_image_twice_over(dm)
        dm.trainer = type("FakeTrainer", (), {"global_rank": rank})()
        dm.setup("fit")
        return [b["images"] for b in dm.train_dataloader()]

    rank0 = batches(0)
    assert len(rank0) == 2  # batch 0 from worker 0, batch 1 from worker 1
    assert not torch.equal(rank0[0], rank0[1])  # the two workers are seeded differently
    assert all(torch.equal(a, b) for a, b in zip(rank0, batches(0), strict=True))  # reproducible
    assert not any(torch.equal(a, b) for a, b in zip(rank0, batches(1), strict=True))  # per rank


def test_evaluation_needs_only_a_val_split(synth_cache: Path):
    full = _dm(synth_cache)
    only_val = DetectionDataModule(val=full.sources["val"], input_size=96, num_workers=0)
    assert only_val.class_names == full.class_names and only_val.category_ids == [1, 3, 5, 7]
    assert len(next(iter(only_val.val_dataloader()))["images"]) > 0
    with pytest.raises(ConfigError, match="no train split"):
        only_val.train_dataloader()
    with pytest.raises(ConfigError, match="at least one of train, val, test"):
        DetectionDataModule()


def test_more_workers_than_cores_are_lowered_to_the_cores(synth_cache: Path, monkeypatch, caplog):
    """data=yolo's 4 workers (coco's 8) on a 2-core machine only compete, torch warning for each
    loader; lowered, logged."""
    import os

    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1}, raising=False)
    with caplog.at_level("INFO", logger="yolov4.data.datamodule"):
        assert _dm(synth_cache, num_workers=8).num_workers == 2
    assert "data.num_workers=8 lowered to 2" in caplog.text
    assert _dm(synth_cache, num_workers=1).num_workers == 1


def test_synthetic_settings_are_named_and_its_splits_are_its_own(synth_cache: Path):
    """data.num_val=abc failed in a comparison ("'>' not supported between 'str' and 'int'");
    evaluate.py checkpoint=<a synthetic run> data.val.images=... with "got multiple values for
    keyword argument 'val'"."""
    with pytest.raises(ConfigError, match=r"data.num_val: expected an integer >= 0, got 'abc'"):
        SyntheticDataModule(num_val="abc", cache_dir=str(synth_cache))
    with pytest.raises(ConfigError, match=r"data.val: the synthetic dataset generates its own "
                       r"splits; .* data=coco or data=yolo with data.val\.\*"):  # fmt: skip
        SyntheticDataModule(val={"images": "x"}, cache_dir=str(synth_cache))


def test_train_batches_count_one_process_of_a_ddp_run(synth_cache: Path):
    """The steps train.py plans with (warm-up warning, logging interval) are one rank's: DDP's
    sampler gives each of 2 processes 8 of the 16 images, 2 batches of 4, as its loader yields."""
    from torch.utils.data import DataLoader, DistributedSampler

    dm = _dm(synth_cache)
    dm.prepare_data()
    dm.setup("fit")
    assert (dm.train_batches(), dm.train_batches(2), dm.train_batches(3)) == (4, 2, 1)
    loader = dm.train_dataloader()
    sampler = DistributedSampler(loader.dataset, num_replicas=2, rank=1, shuffle=False)
    ddp = DataLoader(loader.dataset, batch_size=4, sampler=sampler, drop_last=loader.drop_last)
    assert len(ddp) == dm.train_batches(2)


def test_a_process_share_under_a_batch_keeps_its_last_batch(synth_cache: Path):
    """12 images, batches of 8, 2 processes: each reads 6, one batch (dropping the last partial
    batch of a 6-image share left no batch at all: Lightning stopped, "No training batches")."""
    from types import SimpleNamespace

    dm = _dm(synth_cache, num_train=12, batch_size=8)
    dm.prepare_data()
    dm.setup("fit")
    assert dm.train_batches() == 1 and dm.train_batches(2) == 1
    dm.trainer = SimpleNamespace(world_size=2, global_rank=0)  # what Lightning attaches
    assert dm.train_dataloader().drop_last is False
    dm.trainer = SimpleNamespace(world_size=1, global_rank=0)
    assert dm.train_dataloader().drop_last is True
