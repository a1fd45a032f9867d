"""Prediction over many image files with Lightning's ``Trainer.predict``: one process, or files
sharded over DDP ranks (GPUs, nodes, torchrun / SLURM as training runs).

    out = predict_files("run/weights/best.pt", "photos/", "run/predict",
                        trainer_kwargs={"accelerator": "gpu", "devices": 4, "strategy": "ddp"})

- :class:`ImageFiles` decodes (:func:`yolov4.core.images.decode_image`) and preprocesses
  (:func:`yolov4.core.preprocess.preprocess`, the checkpoint's parameters) in the DataLoader
  workers; a file that cannot be read or decoded becomes an error entry instead of a batch item.
- :class:`PredictModule` runs the checkpoint's network with darknet's decode
  (:class:`~yolov4.core.model.DecodedModel`), the postprocess settings
  (:class:`~yolov4.core.postprocess.PostprocessConfig`) and maps boxes back to each file's pixels.
- :class:`JsonlPredictionWriter` writes each rank's records
  (:func:`~yolov4.inference.sources.prediction_record`, those of ``predict.py``) to
  ``predictions.rank<k>.jsonl`` as batches finish; at the end rank 0 merges them, ordered by
  input index, into ``predictions.jsonl`` (one record per image) and the skipped files into
  ``skipped.jsonl`` (``index``, ``file``, ``error``: what is wrong with that file), then removes
  the parts.

Lightning's predict sampler gives every input to exactly one rank (no padding), so the merged
files hold each input once, whatever the number of processes. The merge streams (memory does not
grow with the number of files); ``out_dir`` must be a folder every node sees. Ctrl-C stops the
run with :class:`PredictInterrupted` after merging what the ranks had written (each rank's
finished batches; the files not reached are in neither file).
"""

from __future__ import annotations

import heapq
import json
import logging
import os
import signal
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import BasePredictionWriter
from lightning.pytorch.trainer.states import TrainerStatus
from torch.utils.data import DataLoader, Dataset

from yolov4.core.checkpoint import load_checkpoint
from yolov4.core.images import IMAGE_SUFFIXES, MAX_PIXELS, decode_image, images_under
from yolov4.core.model import DecodedModel
from yolov4.core.postprocess import SERVING, PostprocessConfig
from yolov4.core.preprocess import PreprocessConfig, preprocess
from yolov4.errors import ConfigError, InputError
from yolov4.inference.predictor import Detections
from yolov4.inference.sources import prediction_record
from yolov4.models import fuse_model
from yolov4.ops.letterbox import image_windows, unmap_detections
from yolov4.training.precision import AUTO

__all__ = [
    "IMAGE_SUFFIXES",
    "ImageFiles",
    "JsonlPredictionWriter",
    "PredictModule",
    "list_images",
    "postprocess_settings",
    "predict_files",
    "PredictInterrupted",
]

log = logging.getLogger(__name__)

PREDICTIONS = "predictions.jsonl"
SKIPPED = "skipped.jsonl"
PART = "predictions.rank{rank}.jsonl"


class PredictInterrupted(KeyboardInterrupt):
    """Ctrl-C stopped :func:`predict_files`; ``path``: the merged ``predictions.jsonl`` of the
    batches written before it."""

    def __init__(self, path: Path) -> None:
        super().__init__(f"interrupted; the predictions written so far are in {path}")
        self.path = path


def list_images(files: str | os.PathLike | Sequence[str | os.PathLike]) -> list[tuple[str, str]]:
    """``(source, file)`` pairs: a folder gives its images (recursive, by suffix, sorted) with the
    folder as source; a list gives each entry as its own source and file."""
    if isinstance(files, (str, os.PathLike)):
        folder = Path(files)
        if not folder.is_dir():
            raise InputError(f"expected a folder of images or a list of files, got {str(files)!r}")
        found = [str(p) for p in images_under(folder)]
        if not found:
            raise InputError(f"folder {str(files)!r} holds no image ({', '.join(IMAGE_SUFFIXES)})")
        return [(str(files), f) for f in found]
    entries = [str(f) for f in files]
    if not entries:
        raise InputError("expected at least one image file, got an empty list")
    return [(f, f) for f in entries]


class ImageFiles(Dataset):
    """Image files → ``{"index", "image" (3, H, W) float32, "params" (4,), "hw" (2,)}``, or
    ``{"index", "error"}`` for a file that cannot be read or decoded (``error`` says why, without
    the file's path, which ``index`` gives)."""

    def __init__(
        self, files: Sequence[str], config: PreprocessConfig, max_pixels: int | None = MAX_PIXELS
    ) -> None:
        self.files, self.config, self.max_pixels = list(files), config, max_pixels

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> dict[str, Any]:
        path = self.files[index]
        try:
            image = decode_image(Path(path).read_bytes(), path, self.max_pixels)
        except InputError as e:  # "<path>: what is wrong": the entry names the file apart
            return {"index": index, "error": str(e).removeprefix(f"{path}: ")}
        except OSError as e:
            return {"index": index, "error": f"cannot read it: {e.strerror or e}"}
        tensor, params = preprocess(image, self.config)
        return {
            "index": index,
            "image": tensor,
            "params": torch.tensor(params, dtype=torch.float64),
            "hw": torch.tensor(image.shape[:2]),
        }


def collate(items: list[dict[str, Any]]) -> dict[str, Any]:
    """Good items stacked (``images`` ``None`` when none), errors listed apart."""
    good = [x for x in items if "error" not in x]
    return {
        "index": [x["index"] for x in good],
        "images": torch.stack([x["image"] for x in good]) if good else None,
        "params": torch.stack([x["params"] for x in good]) if good else None,
        "hw": torch.stack([x["hw"] for x in good]) if good else None,
        "errors": [(x["index"], x["error"]) for x in items if "error" in x],
    }


class PredictModule(L.LightningModule):
    """A checkpoint's network for ``Trainer.predict``: a batch from :func:`collate` → entries
    ``{"index", "detections": Detections}`` (boxes in original pixels) and ``{"index",
    "error"}``."""

    def __init__(
        self,
        model: DecodedModel,
        class_names: Sequence[str],
        input_size: Sequence[int],
        postprocess: PostprocessConfig,
        classes: Sequence[int] | None = None,
    ) -> None:
        super().__init__()
        self.model = model
        self.class_names = list(class_names)
        self.input_size = tuple(input_size)
        self.settings = postprocess
        self.classes = None if classes is None else torch.tensor(sorted(set(classes)))

    def predict_step(self, batch: dict[str, Any], batch_idx: int) -> list[dict[str, Any]]:
        out = [{"index": i, "error": e} for i, e in batch["errors"]]
        if batch["images"] is None:
            return out
        preds = self.model(batch["images"]).float()
        windows = image_windows(batch["params"].cpu(), batch["hw"].cpu())
        dets = self.settings(preds, self.input_size, classes=self.classes, windows=windows)
        dets = [d.cpu() for d in dets]
        dets = unmap_detections(dets, batch["params"].cpu(), batch["hw"].cpu())
        for index, det, (h, w) in zip(batch["index"], dets, batch["hw"].tolist()):
            out.append({"index": index, "detections": self._detections(det, h, w)})
        return sorted(out, key=lambda e: e["index"])

    def _detections(self, det: torch.Tensor, h: int, w: int) -> Detections:
        """``(K, 6)`` unmapped detections → :class:`Detections` (float32 boxes, as the
        Predictor's)."""
        ids = det[:, 5].long().numpy()
        return Detections(
            det[:, :4].float().numpy(),
            det[:, 4].float().numpy(),
            ids,
            [self.class_names[int(c)] for c in ids],
            (int(h), int(w)),
        )


class JsonlPredictionWriter(BasePredictionWriter):
    """Each rank appends its entries to ``predictions.rank<k>.jsonl`` per batch; rank 0 merges
    (module docstring). ``sources[i]`` and ``files[i]`` are input ``i``'s source and file."""

    def __init__(self, out_dir: str | os.PathLike, sources: Sequence[str], files: Sequence[str]):
        super().__init__(write_interval="batch")
        self.out_dir = Path(out_dir)
        self.sources, self.files = list(sources), list(files)
        self._part = None

    def on_predict_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self._part = open(self.out_dir / PART.format(rank=trainer.global_rank), "w")  # noqa: SIM115

    def write_on_batch_end(self, trainer, pl_module, prediction, batch_indices, batch, batch_idx,
                           dataloader_idx=0) -> None:  # fmt: skip
        for entry in prediction:
            i = entry["index"]
            if "error" not in entry:
                entry = {"index": i, **prediction_record(entry["detections"], self.sources[i], self.files[i])}  # fmt: skip
            self._part.write(json.dumps(entry) + "\n")
        self._part.flush()

    def on_exception(self, trainer: L.Trainer, pl_module: Any, exception: BaseException) -> None:
        if self._part is not None:
            self._part.close()  # its finished batches are on disk for the merge

    def on_predict_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._part.close()
        trainer.strategy.barrier("predictions written")
        if trainer.is_global_zero:
            self.merge(trainer.world_size)
        trainer.strategy.barrier("predictions merged")

    def merge(self, world_size: int) -> None:
        """Parts of ``world_size`` ranks → ``predictions.jsonl`` and ``skipped.jsonl``, by index.

        Streams: each part holds its rank's inputs in increasing index (Lightning's predict
        sampler gives rank ``r`` the indices ``r, r + world_size, ...`` of the unshuffled loader,
        and :meth:`PredictModule.predict_step` sorts each batch), so a heap merge of the parts
        keeps one line per rank in memory."""
        parts = [self.out_dir / PART.format(rank=r) for r in range(world_size)]
        parts = [p for p in parts if p.is_file()]  # an interrupted rank may have written none
        files = [open(part) for part in parts]  # noqa: SIM115
        count = skipped = 0
        last = -1
        try:
            with (
                open(self.out_dir / PREDICTIONS, "w") as good,
                open(self.out_dir / SKIPPED, "w") as bad,
            ):
                streams = [_entries(f) for f in files]
                for entry in heapq.merge(*streams, key=lambda e: e["index"]):
                    i = entry.pop("index")
                    if i <= last:
                        raise RuntimeError(f"prediction parts out of order at input {i}")
                    last, count = i, count + 1
                    if "error" in entry:
                        skipped += 1
                        bad.write(json.dumps({"index": i, "file": self.files[i], **entry}) + "\n")
                        continue
                    good.write(json.dumps(entry) + "\n")
        finally:
            for f in files:
                f.close()
        if skipped:
            log.warning("skipped %d of %d files (see %s)", skipped, count, self.out_dir / SKIPPED)
        for part in parts:
            part.unlink()


def postprocess_settings(
    conf: float | None = None, iou: float | None = None, max_det: int | None = None
) -> PostprocessConfig:
    """What :func:`predict_files` runs: the Predictor's serving postprocess with the values
    given (``None``: its own); :class:`InputError` for a value out of range."""
    try:
        return SERVING.replace(conf=conf, iou=iou, max_det=max_det)
    except ConfigError as e:
        raise InputError(str(e)) from None


def _postprocess(conf, iou, max_det, classes, num_classes: int) -> PostprocessConfig:
    settings = postprocess_settings(conf, iou, max_det)
    bad = [c for c in classes or () if not 0 <= int(c) < num_classes]
    if bad:
        raise InputError(f"classes {bad} out of range: the model has {num_classes} classes")
    return settings


def predict_files(
    checkpoint: str | os.PathLike,
    files: str | os.PathLike | Sequence[str | os.PathLike],
    out_dir: str | os.PathLike,
    trainer_kwargs: dict[str, Any] | None = None,
    batch_size: int = 8,
    num_workers: int = 0,
    conf: float | None = None,
    iou: float | None = None,
    max_det: int | None = None,
    classes: Sequence[int] | None = None,
    sources: Sequence[str] | None = None,
    max_pixels: int | None = MAX_PIXELS,
) -> Path:
    """Predict every image of a folder (recursive) or list with a project checkpoint; returns
    ``out_dir/predictions.jsonl`` (see the module docstring). ``trainer_kwargs`` go to
    ``lightning.Trainer`` (``accelerator``, ``devices``, ``strategy``, ``num_nodes``, ...);
    ``conf``, ``iou``, ``max_det``, ``classes`` as the Predictor's. ``sources``: a list's
    ``"source"`` of each file (as ``predict.py`` names them; default: each file itself).
    ``max_pixels``: a file decoding to more pixels is skipped (``None``: no limit)."""
    pairs = list_images(files)  # input errors before the model is loaded
    if sources is not None:
        if isinstance(files, (str, os.PathLike)) or len(sources) != len(pairs):
            raise InputError(
                f"sources: expected one per listed file ({len(pairs)}), got {len(sources)}"
            )
        pairs = [(str(s), f) for s, (_, f) in zip(sources, pairs)]
    for key, value in (("batch_size", batch_size), ("num_workers", num_workers)):
        if isinstance(value, bool) or not isinstance(value, int) or value < (key == "batch_size"):
            raise InputError(
                f"{key} must be an integer >= {int(key == 'batch_size')}, got {value!r}"
            )
    ckpt = load_checkpoint(checkpoint)
    config = ckpt.model.config
    settings = _postprocess(conf, iou, max_det, classes, config.num_classes)
    pre = ckpt.preprocess
    fused = DecodedModel(fuse_model(ckpt.model, inplace=True)).eval()  # loaded here: no copy
    module = PredictModule(fused, ckpt.class_names, pre.input_size, settings, classes)
    sources, paths = zip(*pairs)
    loader = DataLoader(
        ImageFiles(paths, pre, max_pixels),
        batch_size=batch_size,
        num_workers=num_workers,
        collate_fn=collate,
        shuffle=False,
    )
    kwargs = {"logger": False, "enable_checkpointing": False, "enable_model_summary": False,
              **(trainer_kwargs or {})}  # fmt: skip
    writer = JsonlPredictionWriter(out_dir, sources, paths)
    kwargs["callbacks"] = [*(kwargs.get("callbacks") or []), writer]
    if str(kwargs.get("precision")) == AUTO:  # the training's trainer group's default:
        kwargs["precision"] = "32-true"  # the Predictor's float32 records (a value given is kept)
    trainer = L.Trainer(**kwargs)
    handler = signal.getsignal(signal.SIGINT)
    try:
        trainer.predict(module, loader, return_predictions=False)
    except SystemExit:  # Lightning's exit after a KeyboardInterrupt (Ctrl-C)
        if trainer.state.status != TrainerStatus.INTERRUPTED:
            raise
        signal.signal(signal.SIGINT, handler)  # Lightning left it ignored
        if trainer.is_global_zero:
            writer.merge(trainer.world_size)
        raise PredictInterrupted(Path(out_dir) / PREDICTIONS) from None
    return Path(out_dir) / PREDICTIONS


def _entries(lines: Any) -> Any:
    """The JSON entries of a rank's part; a last line cut short (a rank stopped mid-write) is
    left out."""
    for line in lines:
        if not line.endswith("\n"):
            return
        yield json.loads(line)
