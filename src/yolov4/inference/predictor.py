"""The Predictor: images in, detections in each image's own pixels out.

    predictor = Predictor.from_artifact("run/export")            # the artifact's default precision
    predictor = Predictor.from_artifact("run/export", backend="openvino", precision="int8")
    predictor = Predictor.from_checkpoint("run/weights/best.pt")  # PyTorch, any device
    predictor = Predictor.from_darknet("yolov4-tiny", "yolov4-tiny.weights")  # COCO names
    [dets] = predictor("photo.jpg")
    dets.boxes, dets.scores, dets.class_ids, dets.class_names, dets.to_dict()

Preprocessing is :func:`yolov4.core.preprocess.preprocess` with the parameters stored in
the checkpoint or artifact, the same function validation uses; NMS is
:func:`yolov4.ops.postprocess.postprocess`; boxes go back through
:func:`yolov4.ops.letterbox.unmap_boxes`.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from yolov4.core.artifact import (
    AUTO_PRECISION,
    FORMATS,
    PRECISIONS,
    artifact_precisions,
    backend_names,
    model_file,
    read_metadata,
    verify_files,
)
from yolov4.core.checkpoint import Checkpoint, load_checkpoint
from yolov4.core.images import MAX_PIXELS
from yolov4.core.model import DecodedModel, running_config
from yolov4.core.postprocess import SERVING, PostprocessConfig
from yolov4.core.preprocess import PreprocessConfig, preprocess
from yolov4.errors import CheckpointError, ConfigError, ExportError, InputError
from yolov4.inference.backends import TorchBackend, load_backend
from yolov4.inference.darknet import darknet_checkpoint
from yolov4.inference.detections import Detections, class_ids
from yolov4.inference.images import load_images
from yolov4.inference.precision import resolve_precision
from yolov4.models import fuse_model
from yolov4.ops.letterbox import image_windows, unmap_detections

__all__ = ["Predictor", "Detections", "class_ids"]

# one image ready for the network: (3, H, W) input, its LetterboxParams, original (H, W)
Prepared = tuple[torch.Tensor, Any, tuple[int, int]]


def _output_channels(backend: Any, input_size: Sequence[int], where: str) -> int:
    """``5 + C`` of a backend's predictions: the ONNX graph's static output shape, else one
    forward pass on a blank image. A graph of another input size than metadata's
    ``input_size`` (``where``: the artifact's file) is an :class:`ExportError`."""
    want = [int(s) for s in input_size]
    session = getattr(backend, "session", None)
    if session is not None:
        graph = list(session.get_inputs()[0].shape[2:])
        if all(isinstance(d, int) for d in graph) and graph != want:
            raise ExportError(
                f"{where} takes {graph[1]}x{graph[0]} (WxH) images but metadata.json says "
                f"input_size {want} (H, W): metadata.json was edited or belongs to another "
                "export; re-export it"
            )
        last = session.get_outputs()[0].shape[-1]
        if isinstance(last, int):
            return last
    try:
        return int(backend(torch.zeros(1, 3, *want)).shape[-1])
    except Exception as e:  # noqa: BLE001 - any runtime's refusal of the input is the same fault
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ExportError(
            f"{where} does not run on metadata.json's input_size {want} ({first}): "
            "metadata.json was edited or belongs to another export; re-export it"
        ) from None


def missing_model(artifact_dir: str | os.PathLike, meta: dict[str, Any], name: str) -> ExportError:
    """The error for an artifact without the model file ``name`` a Predictor would run: the
    formats that write it, and for an artifact with darknet files (``formats=[darknet]``) how
    ``darknet_weights=`` and :meth:`Predictor.from_darknet` read them."""
    writers = [f.name for f in FORMATS.values() if f.model_file == name] or ["..."]
    message = (
        f"{artifact_dir} has no {name} (files: {sorted(meta['files'])}); export it with "
        f"formats=[{','.join(writers)}]"
    )
    darknet = meta.get("darknet")
    if isinstance(darknet, Mapping) and {"cfg", "weights"} <= set(darknet):
        cfg, weights = (str(Path(artifact_dir) / darknet[k]) for k in ("cfg", "weights"))
        names = meta["class_names"]
        simple = len(names) <= 10 and all(re.fullmatch(r"[\w.-]+", n) for n in names)
        given = f"[{','.join(names)}]" if simple else "<a .names file of its class names>"
        message += (
            f". Its {darknet['cfg']} and {darknet['weights']} are darknet's files, which run "
            f"as darknet_weights={weights} model=darknet model.cfg={cfg} names={given} "
            f"(metadata.json's class_names), or Predictor.from_darknet({cfg!r}, {weights!r}, "
            "names=...)"
        )
    return ExportError(message)


class Predictor:
    """Run a model on user images (see module docstring).

    OpenCV frames are BGR: pass ``color="bgr"`` (``predictor(frame, color="bgr")``). Classes
    are kept by id or name: ``predictor(image, classes=["person", 2])``.

    Args:
        backend: ``backend(images (B, 3, H, W) float32) -> (B, N, 5 + C)`` decoded predictions.
        class_names: one per class.
        preprocess: the model's :class:`PreprocessConfig`.
        thresholds: postprocess defaults over :data:`~yolov4.core.postprocess.SERVING`
            (:class:`~yolov4.core.postprocess.PostprocessConfig` keys); a call's ``conf``,
            ``iou``, ``max_det`` override them. Held as :attr:`postprocess`.
        metadata: what the model came with (artifact metadata or checkpoint info).
    """

    def __init__(
        self,
        backend: Any,
        class_names: Sequence[str],
        preprocess: PreprocessConfig,
        thresholds: dict[str, Any] | None = None,
        metadata: dict[str, Any] | None = None,
        max_pixels: int | None = MAX_PIXELS,
    ) -> None:
        self.backend = backend
        self.class_names = list(class_names)
        self.preprocess_config = preprocess
        try:  # SERVING with the artifact's or caller's values on top; "model" NMS resolved
            settings = SERVING.update(thresholds)
            model = (metadata or {}).get("model")
            if settings.nms_kind == "model" and isinstance(model, dict):
                from yolov4.models import ModelConfig

                settings = settings.resolve(ModelConfig.from_dict(model))
            if settings.nms_kind == "model":
                raise ConfigError("nms_kind='model' needs the model's config (metadata 'model')")
            self.postprocess = settings
        except ConfigError as e:
            raise InputError(f"thresholds: {e}") from None
        self.metadata = metadata or {}
        self.max_pixels = max_pixels
        self.model_file: str | None = None  # the artifact file the backend runs
        self.precision_reason: str | None = None  # why from_artifact chose it (precision auto)

    @property
    def precision(self) -> str:
        """The precision the backend runs: fp32, bf16 or int8."""
        return getattr(self.backend, "precision", "fp32")

    @classmethod
    def from_artifact(
        cls,
        artifact_dir: str | os.PathLike,
        backend: str | None = None,
        device: str = "cpu",
        precision: str | None = None,
        threads: int | None = None,
        **kwargs: Any,
    ) -> Predictor:
        """An export artifact; the files the chosen backend reads (its model file, and an
        OpenVINO IR's ``.bin``) are checked against their sha256 before they are loaded. Other
        files are not checked, so an artifact shipped with only the files one backend reads
        (e.g. ``model.torchscript`` + ``metadata.json``) loads for that backend.

        ``precision`` (fp32, bf16, int8, int8_bf16, or ``auto``: the fastest the artifact holds
        for this CPU, :func:`~yolov4.inference.precision.choose_precision`, logged and kept in
        :attr:`precision_reason`) defaults to the artifact's ``default_precision``;
        ``backend`` (a runtime of the formats table, :mod:`yolov4.export.formats`:
        onnxruntime, openvino, torchscript) to the first runtime that precision lists (fp32:
        onnxruntime; bf16, int8: openvino); the file it runs is the table's
        (:func:`yolov4.core.artifact.model_file`). ``threads``: the runtime's intra-op pool
        (:mod:`yolov4.inference.backends`)."""
        meta = read_metadata(artifact_dir, verify=False)
        if backend is not None and backend not in backend_names():
            raise ExportError(f"backend must be one of {backend_names()}, got {backend!r}")
        precisions = artifact_precisions(meta)
        # auto: the fastest gated precision for this CPU, logged with why
        precision, reason = resolve_precision(meta, precision, artifact_dir, backend)
        if precision not in PRECISIONS:
            raise ExportError(
                f"precision must be one of {(*PRECISIONS, AUTO_PRECISION)}, got {precision!r}"
            )
        if not precisions:  # darknet files or an NMS graph alone: no model a backend loads
            fp32 = next(f.model_file for f in FORMATS.values() if f.precisions.get("fp32"))
            raise missing_model(artifact_dir, meta, fp32)
        if precision not in precisions:
            raise ExportError(
                f"{artifact_dir} has no {precision} model (precisions: {sorted(precisions)}); "
                f"export it with precision=[...,{precision}]"
            )
        entry = precisions[precision]
        backend = backend or entry["backends"][0]
        name = model_file(meta, precision, backend)
        if name not in meta["files"]:
            raise missing_model(artifact_dir, meta, name)
        if backend not in entry["backends"]:
            raise ExportError(
                f"{artifact_dir}: its {precision} model runs in {entry['backends']}, "
                f"not {backend!r}"
            )
        read = entry.get("files", [name]) if name == entry["file"] else [name]
        verify_files(artifact_dir, meta, read)
        loaded = load_backend(Path(artifact_dir) / name, backend, device, precision, threads)
        channels = _output_channels(loaded, meta["input_size"], str(Path(artifact_dir) / name))
        if channels != 5 + len(meta["class_names"]):
            raise ExportError(
                f"{artifact_dir}: {len(meta['class_names'])} class names in metadata.json, but "
                f"{name} predicts {channels - 5} classes ({channels} output channels); "
                "re-export the artifact"
            )
        predictor = cls(
            loaded,
            meta["class_names"],
            PreprocessConfig.from_dict(meta["preprocess"]),
            meta.get("thresholds"),
            meta,
            **kwargs,
        )
        predictor.model_file = name
        predictor.precision_reason = reason
        return predictor

    @classmethod
    def from_checkpoint(
        cls,
        path: str | os.PathLike | Checkpoint,
        device: str | torch.device = "cpu",
        *,
        inplace: bool = False,
        **kwargs: Any,
    ) -> Predictor:
        """A project checkpoint (``weights/*.pt`` or ``.ckpt``, or a loaded :class:`Checkpoint`),
        fused, on ``device``. A given :class:`Checkpoint`'s model is fused in a copy, leaving
        the caller's model as it was; ``inplace=True`` fuses it in place instead (no copy: half
        the memory and time for a large model, for a caller that has no further use for the
        model, as the command line's; the model is then the Predictor's)."""
        given = isinstance(path, Checkpoint)
        ckpt = path if given else load_checkpoint(path)
        path = ckpt.path if given else path
        if len(ckpt.class_names) != ckpt.model.config.num_classes:
            raise CheckpointError(
                f"{path}: {len(ckpt.class_names)} class names for a model with "
                f"num_classes={ckpt.model.config.num_classes}"
            )
        model = running_config(ckpt.model.config, ckpt.preprocess)  # as an export records it
        meta = {"model": model.to_dict(), "source": str(path), "metrics": ckpt.metrics}
        fused = fuse_model(ckpt.model, inplace=inplace or not given)  # a loaded file's: its own
        backend = TorchBackend(DecodedModel(fused), device)
        return cls(
            backend,
            ckpt.class_names,
            ckpt.preprocess,
            kwargs.pop("thresholds", None),
            meta,
            **kwargs,
        )

    @classmethod
    def from_darknet(
        cls,
        model: str | os.PathLike,
        weights: str | os.PathLike,
        names: Sequence[str] | None = None,
        device: str | torch.device = "cpu",
        num_classes: int | None = None,
        input_size: Sequence[int] | None = None,
        resize_mode: str | None = None,
        **kwargs: Any,
    ) -> Predictor:
        """Darknet's files: ``model`` a zoo name (``yolov3-tiny``) or a ``.cfg`` path, its
        ``.weights``, and one class name per class (``names``; without them the
        ``<weights stem>.names`` or ``<cfg stem>.names`` beside the files, as a train run and
        export.py write them, else COCO's for a zoo cfg with 80 classes; a ``.names`` file or
        data yaml reads with :func:`yolov4.data.data_yaml.read_class_names`). Images are resized
        as the cfg trained the network (``letter_box=1``: letterbox, else stretch) unless
        ``resize_mode`` says otherwise. See :func:`yolov4.inference.darknet.darknet_checkpoint`."""
        ckpt = darknet_checkpoint(model, weights, names, num_classes, input_size, resize_mode)
        return cls.from_checkpoint(ckpt, device, inplace=True, **kwargs)

    @property
    def thresholds(self) -> dict[str, Any]:
        """The default postprocess settings (:attr:`postprocess`) as a dict."""
        return self.postprocess.to_dict()

    @property
    def input_size(self) -> tuple[int, int]:
        return tuple(self.preprocess_config.input_size)

    def __call__(
        self,
        images: Any,
        conf: float | None = None,
        iou: float | None = None,
        max_det: int | None = None,
        classes: int | str | Sequence[int | str] | None = None,
        color: str = "rgb",
        postprocess: PostprocessConfig | Mapping[str, Any] | None = None,
        decoded: bool = False,
    ) -> list[Detections]:
        """One image or a list (mixed sizes and kinds allowed) -> one :class:`Detections` each.

        Args:
            images: a path, encoded bytes, a PIL image, an ``(H, W, 3)`` uint8 array, or a list
                of them (:func:`yolov4.inference.images.load_images`).
            conf, iou, max_det: override the default thresholds (:attr:`postprocess`).
            classes: the classes to keep, by id (``2``) or name (``"person"``), mixed, or one
                of either; filtered before ``max_det`` and NMS. An unknown name or an id out
                of range is an :class:`~yolov4.errors.InputError`.
            color: channel order of array inputs: ``"rgb"``, or ``"bgr"`` for OpenCV frames
                (``cv2.imread``, ``cv2.VideoCapture``), which are BGR; without it their red and
                blue are swapped and detections suffer. Files, bytes and PIL images are
                decoded to RGB whatever ``color`` says.
            postprocess: settings used for this call in place of :attr:`postprocess` (e.g.
                the validation settings :data:`~yolov4.core.postprocess.DARKNET_VALID`, resolved
                for the model), or a dict of its keys over :attr:`postprocess`; ``conf``,
                ``iou``, ``max_det`` still apply on top.
            decoded: numpy arrays are a decoder's ``(H, W, C)`` output (image files, video and
                stream frames): taken as such whatever their shape, where a user's array whose
                shape also reads as ``(C, H, W)`` (e.g. an image 1, 3 or 4 pixels high) is
                refused as ambiguous.
        """
        settings, wanted = self._settings(conf, iou, max_det, classes, postprocess)
        start = time.perf_counter()
        inputs = self.prepare(images, color, decoded)  # every check before any model code
        return self._detect(inputs, settings, wanted, start, time.perf_counter())

    def prepare(self, images: Any, color: str = "rgb", decoded: bool = False) -> list[Prepared]:
        """Decode and preprocess ``images`` (as :meth:`__call__` takes them) without running the
        model: CPU work a reader thread can do ahead of it; :meth:`predict_prepared` finishes."""
        arrays = load_images(images, color, self.max_pixels, decoded)
        return [(*preprocess(a, self.preprocess_config), a.shape[:2]) for a in arrays]

    def predict_prepared(
        self,
        inputs: Sequence[Prepared],
        conf: float | None = None,
        iou: float | None = None,
        max_det: int | None = None,
        classes: int | str | Sequence[int | str] | None = None,
    ) -> list[Detections]:
        """:meth:`__call__` on :meth:`prepare` 's output (the same detections)."""
        settings, wanted = self._settings(conf, iou, max_det, classes)
        now = time.perf_counter()
        return self._detect(list(inputs), settings, wanted, now, now)

    def _settings(
        self, conf: Any, iou: Any, max_det: Any, classes: Any, base: Any = None
    ) -> tuple[Any, torch.Tensor | None]:
        try:
            base = self.postprocess if base is None else base
            if isinstance(base, Mapping):  # postprocess={"conf": 0.5}: over the Predictor's
                base = self.postprocess.replace(**base)
            elif not isinstance(base, PostprocessConfig):
                raise ConfigError(
                    "postprocess: expected a PostprocessConfig or a dict of its keys, got "
                    f"{type(base).__name__}"
                )
            settings = base.replace(conf=conf, iou=iou, max_det=max_det)
        except ConfigError as e:
            raise InputError(str(e)) from None
        wanted = None
        if classes is not None:
            wanted = torch.tensor(sorted(set(class_ids(classes, self.class_names))))
        return settings, wanted

    def _detect(
        self, inputs: list[Prepared], settings: Any, wanted: Any, start: float, t_pre: float
    ) -> list[Detections]:
        if not inputs:
            raise InputError("expected at least one image, got an empty list")
        batch = torch.stack([x for x, _, _ in inputs])
        preds = self.backend(batch).float().cpu()
        t_model = time.perf_counter()
        windows = image_windows([p for _, p, _ in inputs], [hw for _, _, hw in inputs])
        # classes and the images' windows (no box of the padding): before max_det and NMS
        dets = settings(preds, self.input_size, classes=wanted, windows=windows)
        out = []
        for det, (_, params, (h, w)) in zip(dets, inputs):
            det = unmap_detections([det], [params], [(h, w)])[0]  # boxes in the padding dropped
            boxes = det[:, :4].numpy().astype(np.float32)
            ids = det[:, 5].long().numpy()
            if len(ids) and ids.max() >= len(self.class_names):
                raise ExportError(
                    f"the model predicted class index {int(ids.max())}, but the Predictor has "
                    f"{len(self.class_names)} class names; the names do not fit the model"
                )
            out.append(
                Detections(
                    boxes,
                    det[:, 4].numpy().astype(np.float32),
                    ids,
                    [self.class_names[i] for i in ids],
                    (h, w),
                )
            )
        t_post = time.perf_counter()
        timing = {
            "preprocess": 1e3 * (t_pre - start),
            "model": 1e3 * (t_model - t_pre),
            "postprocess": 1e3 * (t_post - t_model),
        }
        for d in out:  # the batch's times, one dict each (a caller may edit its own)
            d.timing_ms = dict(timing)
        return out
