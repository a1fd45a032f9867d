"""The data pipeline feeds the network exactly what ``preprocess()`` makes of an image file:
the val loader and the train loader with no augmentation give, for the same file, the very
tensor :func:`yolov4.core.preprocess.preprocess` returns, with its letterbox parameters and its
box mapping, for letterbox and stretch, square and non-square inputs and odd image sizes; and
the DataModule takes the whole preprocessing config."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from yolov4.core.preprocess import PreprocessConfig, batch_to_input, preprocess
from yolov4.data.coco import CocoSource
from yolov4.data.datamodule import DetectionDataModule
from yolov4.data.transforms import AugmentConfig
from yolov4.errors import ConfigError
from yolov4.ops.letterbox import map_boxes

# (H0, W0): odd sides, portrait, landscape, one already at an input size, one tiny
IMAGE_SIZES = [(37, 53), (101, 29), (64, 96), (33, 97), (7, 5), (64, 64)]
# Boxes cross albumentations' normalised [0, 1] float storage on the train path: equal to
# map_boxes up to float32 rounding of coordinates of at most ~100 px.
BOX_ATOL_PX = 1e-3

CONFIGS = {
    "letterbox-square": PreprocessConfig(input_size=(64, 64), mode="letterbox"),
    "letterbox-wide": PreprocessConfig(input_size=(64, 96), mode="letterbox"),
    "stretch-tall": PreprocessConfig(input_size=(96, 64), mode="stretch"),
    "stretch-square": PreprocessConfig(input_size=(64, 64), mode="stretch"),
    # every other field off its default: pad value, BGR input, no scaling
    "letterbox-bgr-unscaled": PreprocessConfig(
        input_size=(32, 64), mode="letterbox", pad_value=0, channel_order="bgr", scale=1.0
    ),
}


def _boxes(rng: np.random.Generator, h: int, w: int) -> list[list[float]]:
    """COCO ``[x, y, w, h]`` boxes inside the image, sub-pixel corners, some tiny."""
    out = []
    for _ in range(3):
        x1, x2 = sorted(rng.uniform(0, w, 2))
        y1, y2 = sorted(rng.uniform(0, h, 2))
        out.append([float(x1), float(y1), float(max(x2 - x1, 0.5)), float(max(y2 - y1, 0.5))])
    return out


@pytest.fixture(scope="module")
def coco_split(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Lossless PNGs of random noise (every pixel matters) with boxes, as a COCO split."""
    root = tmp_path_factory.mktemp("parity")
    rng = np.random.default_rng(0)
    images, annotations = [], []
    for i, (h, w) in enumerate(IMAGE_SIZES, start=1):
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(root / f"{i}.png")
        images.append({"id": i, "file_name": f"{i}.png", "height": h, "width": w})
        for bbox in _boxes(rng, h, w):
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": i,
                    "category_id": 1 + len(annotations) % 2,
                    "bbox": bbox,
                    "area": bbox[2] * bbox[3],
                    "iscrowd": 0,
                }
            )
    categories = [{"id": 1, "name": "a"}, {"id": 2, "name": "b"}]
    doc = {"images": images, "annotations": annotations, "categories": categories}
    (root / "annotations.json").write_text(json.dumps(doc))
    return root


def _datamodule(root: Path, config: PreprocessConfig) -> DetectionDataModule:
    source = CocoSource(str(root / "annotations.json"), str(root))
    return DetectionDataModule(
        train=source,
        val=source,
        preprocess=config.to_dict(),  # the whole config, as data.preprocess gives it
        augment=AugmentConfig.none(),
        batch_size=2,
        num_workers=0,
    )


def _reference(root: Path, file_name: str, config: PreprocessConfig):
    image = np.asarray(Image.open(root / file_name).convert("RGB"))
    return preprocess(image, config)


def _by_image(loader, config) -> dict[int, tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """image_id → (image, letterbox (4,), targets (N, 6) sorted) over a whole loader, each batch
    finished as the training device does (uint8 → float: ``batch_to_input``)."""
    out = {}
    for raw in loader:
        assert raw["images"].dtype == torch.uint8  # 4x fewer bytes out of the workers
        batch = batch_to_input(raw, config)
        for i, image_id in enumerate(batch["image_ids"].tolist()):
            t = batch["targets"][batch["targets"][:, 0] == i]
            out[image_id] = (batch["images"][i], batch["letterbox"][i], t[:, 1:])
    return out


@pytest.mark.parametrize("name", list(CONFIGS))
def test_val_and_unaugmented_train_samples_are_preprocess_output(coco_split: Path, name: str):
    config = CONFIGS[name]
    dm = _datamodule(coco_split, config)
    assert dm.preprocess_config == config
    dm.setup("fit")
    records = {rec.image_id: rec for rec in dm.split("val").records}
    paths = {
        "val": _by_image(dm.val_dataloader(), config),
        "train (augment none)": _by_image(dm.train_dataloader(), config),
    }
    for path, samples in paths.items():
        assert sorted(samples) == sorted(records), path
        for image_id, (image, letterbox, targets) in samples.items():
            rec = records[image_id]
            expected, params = _reference(coco_split, Path(rec.file).name, config)
            where = f"{path}, image {rec.height}x{rec.width}, {name}"
            assert image.dtype == expected.dtype and image.shape == expected.shape, where
            assert torch.equal(image, expected), (
                f"{where}: max |diff| {(image - expected).abs().max():.4g}"
            )
            assert torch.equal(letterbox, torch.tensor(tuple(params), dtype=torch.float32)), where
            mapped = torch.as_tensor(map_boxes(rec.boxes.astype(np.float64), params))
            assert targets.shape == (len(rec.boxes), 5), f"{where}: boxes were dropped"
            assert torch.equal(targets[:, 0].long(), torch.as_tensor(rec.labels)), where
            torch.testing.assert_close(
                targets[:, 1:].double(), mapped, atol=BOX_ATOL_PX, rtol=0, msg=where
            )


def test_datamodule_takes_the_whole_config_with_the_shorthands_checked(coco_split: Path):
    source = CocoSource(str(coco_split / "annotations.json"), str(coco_split))
    full = {"input_size": [64, 96], "mode": "stretch", "pad_value": 7, "channel_order": "bgr"}
    dm = DetectionDataModule(val=source, preprocess=full)
    assert dm.preprocess_config.to_dict() == {**PreprocessConfig().to_dict(), **full}
    # the shorthands (data.input_size, data.resize_mode) fill the config ...
    dm = DetectionDataModule(val=source, input_size=64, resize_mode="stretch")
    assert dm.preprocess_config == PreprocessConfig(input_size=(64, 64), mode="stretch")
    # ... agree with it when both are given, and a contradiction names both keys
    assert DetectionDataModule(val=source, preprocess=full, input_size=[64, 96]).preprocess_config
    with pytest.raises(
        ConfigError, match=r"data.input_size=\[64, 64\].*data.preprocess.input_size"
    ):
        DetectionDataModule(val=source, preprocess=full, input_size=[64, 64])
    with pytest.raises(ConfigError, match=r"data.resize_mode=letterbox.*data.preprocess.mode"):
        DetectionDataModule(val=source, preprocess=full, resize_mode="letterbox")
    with pytest.raises(ConfigError, match="multiples of 32"):
        DetectionDataModule(val=source, preprocess={"input_size": [64, 100]})
    with pytest.raises(ConfigError, match=r"unknown preprocess key\(s\) \['size'\]"):
        DetectionDataModule(val=source, preprocess={"size": [64, 64]})
    with pytest.raises(ConfigError, match="preprocess.channel_order"):
        DetectionDataModule(val=source, preprocess={"channel_order": "hsv"})
