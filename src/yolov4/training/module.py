"""The LightningModule: YOLOv4 + its loss for training, decode + NMS + COCO mAP for validation.

Batches are :class:`yolov4.data.collate.Batch` dicts (images ``(B, 3, H, W)``, targets
``(M, 6)``, image ids, original sizes, letterbox parameters); they arrive with uint8 images that
:meth:`YoloModule.on_after_batch_transfer` turns into the model's input on the training device
(:func:`~yolov4.core.preprocess.batch_to_input`). Hyper-parameters are builtins
only, so Lightning ``.ckpt`` files load with ``torch.load(weights_only=True)`` and
:func:`yolov4.load_checkpoint` rebuilds the model from them (EMA weights under ``ema.module.``).

The hooks are short and hand their work to plain functions: the constructor's checks and
hyper-parameters (:mod:`yolov4.training.module_args`), validation's detections and scoring
(:mod:`yolov4.training.validation`), the epoch's log line (:mod:`yolov4.training.epoch_log`),
what ``.ckpt`` files carry and a resume's optimizer settings (:mod:`yolov4.training.run_state`),
the EMA's window over the run (:func:`~yolov4.training.ema.set_run_window`), ``class_balance``'s
counts (:func:`~yolov4.training.class_balance.balance_models`) and the errors a training step
stops on (:mod:`yolov4.training.step_errors`).
"""

from __future__ import annotations

import logging
import os
import time
import warnings
from collections.abc import Mapping
from typing import Any

import lightning as L
import torch

from yolov4.core.preprocess import PreprocessConfig, batch_to_input
from yolov4.core.pretrained import load_pretrained
from yolov4.errors import CheckpointError
from yolov4.evaluation import METRIC_KEYS, CocoEvaluator, EvaluationResult
from yolov4.evaluation.coco import DEFAULT_COCO_BACKEND
from yolov4.loss import YoloLoss, darknet_cost
from yolov4.models import YOLOv4
from yolov4.models.region import check_trainable
from yolov4.training.callbacks import last_checkpoint
from yolov4.training.class_balance import balance_models
from yolov4.training.ema import ModelEMA, set_run_window
from yolov4.training.epoch_log import EpochLine, log_multi_scale
from yolov4.training.module_args import module_hparams
from yolov4.training.optim import OptimConfig, build_optimizer, lr_factor
from yolov4.training.resume import check_lightning_file
from yolov4.training.run_state import (
    EPOCH_VAL_KEY,
    SCHEDULE_KEY,
    SavedRun,
    resume_optimizer,
    resumed_schedule,
    save_run_state,
    saved_run,
)
from yolov4.training.step_errors import diverged_error, out_of_memory_error
from yolov4.training.validation import (
    ValidationSample,
    batch_detections,
    log_validation,
    score_batch,
    validation_evaluator,
)
from yolov4.version import renamed_kwargs

__all__ = ["YoloModule", "ValidationSample", "SCHEDULE_KEY", "EPOCH_VAL_KEY"]

# keyword arguments renamed (they shadowed builtins), accepted for one more release
RENAMED_KWARGS = {"eval": "val_postprocess", "compile": "compile_model"}

log = logging.getLogger(__name__)
# The module, not the DataModule, finishes batches on the device (on_after_batch_transfer) so any
# loader of Batch dicts works; Lightning warns about that choice on every fit with a DataModule.
warnings.filterwarnings(
    "ignore", message="You have overridden `on_after_batch_transfer` in `LightningModule`"
)


class YoloModule(L.LightningModule):
    """Train and validate a YOLOv4-family network.

    Built by Hydra from ``configs/module/default.yaml`` (``_partial_``) with the run's values
    (``model``, ``optim``, ``class_names``, ``category_ids``, ``preprocess``) added by
    ``train.py`` and ``evaluate.py``. The loss is built for fitting only (:meth:`setup` with
    ``stage="fit"``, or the first :attr:`loss_fn` access) and the optimizer in
    :meth:`configure_optimizers`: validating a checkpoint builds neither. After each validation
    :attr:`evaluation` holds the :class:`~yolov4.evaluation.EvaluationResult`.

    Args:
        model: model config dict (``ModelConfig.to_dict()`` or ``configs/model/*.yaml``), a
            :class:`ModelConfig`, or a zoo name (``"yolov4-tiny"``, 80 classes).
        optim: optimiser/schedule settings.
        class_names: one name per class (from the DataModule).
        category_ids: original category id per class index (results carry these).
        preprocess: the DataModule's ``preprocess_config.to_dict()``; stored in checkpoints.
        data: the run's resolved data config (``cfg.data``, builtins); stored in checkpoints, so
            that ``evaluate.py checkpoint=`` scores the data the run validated on.
        ema_decay: EMA of the weights, in (0, 1) (``None`` or 0: off); ``ema_tau`` its ramp in
            optimizer steps (``None``: a constant decay).
        ema_start: the fraction of the run's optimizer steps after which the EMA averages (up
            to there it is the weights); darknet's ``ema_alpha`` starts at 0.5.
        ema_apply_before_end: copy the EMA into the weights this many optimizer steps before
            the end, and train on from there (darknet: 1000); ``None``: never.
        label_smoothing: class-target smoothing of the loss, in [0, 1]; 0 keeps the cfg's per-head
            ``[yolo] label_smooth_eps``, any other value replaces it on every head.
        box_gradient: the box term's gradient, ``darknet`` (darknet's ``dx_box_iou``, what its
            recipes were tuned with) or ``exact`` (the true derivative); see :mod:`yolov4.loss`.
        class_balance: ``off`` or ``darknet``: at fit start, the training split's boxes per class
            become the model's ``counters_per_class`` (:mod:`yolov4.training.class_balance`).
        val_postprocess: validation postprocess settings over
            :data:`~yolov4.core.postprocess.DARKNET_VALID`
            (:class:`~yolov4.core.postprocess.PostprocessConfig` keys).
        pretrained: darknet ``.weights``/``.conv.N`` file or project checkpoint to start from
            (:func:`~yolov4.core.pretrained.load_pretrained`).
        pretrained_backbone_only: load only the backbone from ``pretrained``.
        pretrained_strict: a project checkpoint in ``pretrained`` must be of this architecture
            (only the head prediction layers, which follow ``num_classes``, may differ);
            ``False`` loads whichever tensors match by name and shape and logs the rest.
        compile_model: run the network's forward through ``torch.compile``.
        coco_backend: what runs COCOeval in validation, ``pycocotools`` (the reference) or
            ``faster_coco_eval`` (same numbers, faster; :mod:`yolov4.evaluation.coco`).
        **renamed: ``eval`` and ``compile``, the old names of ``val_postprocess`` and
            ``compile_model``, accepted with a :class:`DeprecationWarning` for one release.
    """

    def __init__(
        self,
        *,
        model: Mapping[str, Any],
        optim: OptimConfig | Mapping[str, Any] | None = None,
        class_names: list[str] | None = None,
        category_ids: list[int] | None = None,
        preprocess: Mapping[str, Any] | None = None,
        data: Mapping[str, Any] | None = None,
        ema_decay: float | None = 0.9999,
        ema_tau: float | None = 2000.0,
        ema_start: float = 0.0,
        ema_apply_before_end: int | None = None,
        label_smoothing: float = 0.0,
        box_gradient: str = "darknet",
        class_balance: str | None = "off",
        val_postprocess: Mapping[str, Any] | None = None,
        pretrained: str | None = None,
        pretrained_backbone_only: bool = False,
        pretrained_strict: bool = True,
        compile_model: bool = False,
        coco_backend: str = DEFAULT_COCO_BACKEND,
        **renamed: Any,
    ) -> None:
        super().__init__()
        new = renamed_kwargs(renamed, RENAMED_KWARGS, "YoloModule")
        config, self.optim_cfg, hparams = module_hparams(
            model=model, optim=optim, class_names=class_names, category_ids=category_ids,
            preprocess=preprocess, data=data, ema_decay=ema_decay, ema_tau=ema_tau,
            ema_start=ema_start, ema_apply_before_end=ema_apply_before_end,
            label_smoothing=label_smoothing, box_gradient=box_gradient,
            class_balance=class_balance, pretrained=pretrained,
            pretrained_backbone_only=pretrained_backbone_only,
            pretrained_strict=pretrained_strict, coco_backend=coco_backend,
            val_postprocess=new.get("val_postprocess", val_postprocess),
            compile_model=new.get("compile_model", compile_model),
        )  # fmt: skip
        self.save_hyperparameters(hparams)
        self.model = YOLOv4(config)
        if pretrained:
            load_pretrained(
                self.model,
                pretrained,
                strict=pretrained_strict,
                backbone_only=pretrained_backbone_only,
            )
        self._loss: YoloLoss | None = None  # fitting only: see loss_fn
        self.ema = ModelEMA(self.model, ema_decay, ema_tau) if ema_decay else None
        self._forward = torch.compile(self.model) if hparams["compile_model"] else self.model
        self._init_run_state()

    @classmethod
    def load_from_checkpoint(  # type: ignore[override]
        cls, checkpoint_path: Any, *args: Any, **kwargs: Any
    ) -> YoloModule:
        """Lightning's, after the file is checked: a missing, truncated or foreign file, or a
        weights file of this project (``weights/*.pt``, which :func:`~yolov4.load_checkpoint`
        and the Predictor read), is a :class:`CheckpointError` naming it; so are weights that
        do not fit the module the arguments build (``model=`` of another network)."""
        if isinstance(checkpoint_path, str | os.PathLike) and "://" not in str(checkpoint_path):
            check_lightning_file(checkpoint_path)
        try:
            return super().load_from_checkpoint(checkpoint_path, *args, **kwargs)
        except RuntimeError as e:
            if "state_dict" not in str(e):
                raise
            first = str(e).strip().splitlines()[0]
            raise CheckpointError(
                f"{checkpoint_path}: its weights do not fit the module built from the arguments "
                f"given ({sorted(kwargs)}): {first}; leave model= out to build the checkpoint's "
                "own network"
            ) from None

    def forward(self, images: torch.Tensor) -> list[torch.Tensor]:
        """The network's raw head maps of ``images`` (``module(images)``, as ``self.model``)."""
        return self._forward(images)

    def _init_run_state(self) -> None:
        """What validation and the epoch log fill in while running (nothing yet)."""
        self.evaluator: CocoEvaluator | None = None
        self.evaluation: EvaluationResult | None = None  # of the latest validation
        self.evaluated_step: int | None = None  # the global step of the weights it scored
        self.validation_sample: ValidationSample | None = None
        self._preprocess: PreprocessConfig | None = None  # from hparams, on the first batch
        self._epoch = EpochLine()  # the epoch line of train.log
        self._schedule_total: int | None = None  # optimizer steps this run's lr schedule spans
        self._schedule_resumed: tuple[int, int] | None = None  # lr_factor's ``resumed``
        self._resumed: SavedRun | None = None  # what the resumed checkpoint says of its run
        self._compile_start: float | None = None  # set while the first compiled step runs

    # -- loss -----------------------------------------------------------------------------------
    @property
    def loss_fn(self) -> YoloLoss:
        """The training loss, built on first use (validation and evaluation never build it)."""
        if self._loss is None:
            self._loss = YoloLoss.from_config(
                self.model.config,
                label_smoothing=self.hparams["label_smoothing"],
                box_gradient=self.hparams["box_gradient"],
            ).to(self.device)
        return self._loss

    def setup(self, stage: str) -> None:
        if stage == "fit":  # before Lightning moves the module to its device
            check_trainable(self.model.config)  # [region], [Gaussian_yolo]: inference only
            if self.hparams.get("class_balance") == "darknet":
                self._balance_classes()
            self.loss_fn  # noqa: B018

    def _balance_classes(self) -> None:
        """``class_balance=darknet``: the training split's counts into the model config (the
        network's, its EMA copy's and the hyper-parameters', so checkpoints carry them)."""
        models = [self.model, *([self.ema.module] if self.ema is not None else [])]
        config = balance_models(self._trainer, models)
        self.hparams["model"] = config.to_dict()
        self._loss = None  # rebuilt with the counts

    @property
    def eval_model(self) -> YOLOv4:
        """The weights validation and export use: the EMA when it is on."""
        return self.ema.module if self.ema is not None else self.model

    def optimizer_step(self, *args: Any, **kwargs: Any) -> None:
        """The optimizer step, then the EMA of the weights it made (``on_before_zero_grad``
        runs inside the step's closure, before the update: an EMA updated there lags one step
        and never holds the last one)."""
        super().optimizer_step(*args, **kwargs)
        if self.ema is not None:
            self.ema.update(self.model)

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        """uint8 batches become the model's input here, on the training device; training
        batches at the DataModule's multi-scale size of this optimizer step (``multi_scale``:
        a :class:`~yolov4.data.collate.MultiScale`, darknet's ``random``)."""
        if isinstance(batch, Mapping) and "images" in batch:
            if self._preprocess is None:
                self._preprocess = PreprocessConfig.from_dict(self.hparams["preprocess"])
            trainer = self._trainer
            if trainer is not None and trainer.training:
                multi_scale = getattr(trainer.datamodule, "multi_scale", None)
                if multi_scale is not None:
                    batch = multi_scale.apply(batch, self.global_step, self._schedule_total)
            return batch_to_input(batch, self._preprocess)
        return batch

    # -- training -------------------------------------------------------------------------------
    def training_step(self, batch: Mapping[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        images, targets = batch["images"], batch["targets"]
        # darknet's iteration (optimizer steps) for [convolutional] stopbackward=N in the cfg
        self.model.iteration = self.global_step
        try:
            maps = self._forward(images)
            with torch.autocast(images.device.type, enabled=False):  # float32 (maps cast in it)
                loss = self.loss_fn(maps, targets)
        except torch.OutOfMemoryError as e:
            raise out_of_memory_error(e, images) from e
        if not torch.isfinite(loss.total):
            # no trainer outside a fit (a user's own loop)
            raise diverged_error(loss, self.global_step, last_checkpoint(self._trainer))
        bs = images.shape[0]
        parts = torch.stack([loss.total, loss.box, loss.obj, loss.cls]).detach().float()
        self._epoch.add(parts)
        self.log("train/loss", loss.total, prog_bar=True, batch_size=bs)
        self.log_dict(
            {"train/box": loss.box, "train/obj": loss.obj, "train/cls": loss.cls}, batch_size=bs
        )
        self.log("train/size", float(images.shape[-1]), batch_size=bs)
        if self._darknet_cost_due():  # darknet's charted loss, beside ours (comparable curves)
            cost = darknet_cost(self.loss_fn, [m.detach() for m in maps], targets)
            self.log("train/darknet_cost", cost, batch_size=bs)
        if self._trainer is not None and self.trainer.optimizers:  # lr in the progress bar
            lr = self.trainer.optimizers[0].param_groups[0]["lr"]
            self.log("lr", lr, prog_bar=True, logger=False, batch_size=bs)
        return loss.total

    def on_train_start(self) -> None:
        # a resume mid-epoch (requeue.ckpt) enters its epoch without on_train_epoch_start
        self._epoch.begin(resumed=True)
        self._resume_optimizer()
        log_multi_scale(self.trainer, self.hparams["preprocess"], self._schedule_total)

    @property
    def seen_from(self) -> tuple[int, int] | None:
        """``(step, seen)`` of the resumed checkpoint, to count the images trained from."""
        return self._resumed.seen_from if self._resumed is not None else None

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        epoch_val = self._epoch.saved()
        save_run_state(checkpoint, self._schedule_total, epoch_val, self._trainer, self.seen_from)

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self._resumed = saved_run(checkpoint)
        self._epoch.restore(self._resumed.epoch_val)

    def _resume_optimizer(self) -> None:
        """After a resume: the steps the schedule spans, the steps taken and those left
        (:func:`~yolov4.training.run_state.resumed_schedule`), and this run's ``optim``
        settings and length applied to the restored optimizer and lr scheduler
        (:func:`~yolov4.training.run_state.resume_optimizer`)."""
        if self._resumed is None:
            return
        total, self._schedule_resumed = resumed_schedule(
            self._trainer, self._resumed, self._schedule_total
        )
        if total != self._schedule_total:
            self._schedule_total = total
            self._set_ema_window()
        saved = (self._resumed.optim or self.optim_cfg, self._resumed.total)
        run = (self.optim_cfg, self._schedule_total)
        resume_optimizer(self._trainer, self.global_step, saved, run, self._schedule_resumed)

    def on_train_epoch_start(self) -> None:
        self._epoch.new_epoch()

    def on_train_batch_start(self, batch: Any, batch_idx: int) -> None:
        if self.hparams["compile_model"] and self._compile_start is None and self.global_step == 0:
            log.info(
                "compiling the network with torch.compile at the first training step (on a CPU "
                "this takes minutes; each new input size compiles again)"
            )
            self._compile_start = time.perf_counter()

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        if self._compile_start is not None and self._compile_start > 0:
            log.info(
                "torch.compile: the first step (compilation, forward and backward) took %.1f s",
                time.perf_counter() - self._compile_start,
            )
            self._compile_start = 0.0  # logged once

    def on_train_epoch_end(self) -> None:
        """One line per epoch in the log (:class:`~yolov4.training.epoch_log.EpochLine`)."""
        self._epoch.log(self.trainer, self.current_epoch, self.global_step)

    def _darknet_cost_due(self) -> bool:
        """Whether this step logs ``train/darknet_cost`` (:func:`~yolov4.loss.darknet_cost`, one more
        loss forward/backward): on the steps the trainer logs, every step without a trainer."""
        if self._trainer is None:
            return True
        every = max(int(getattr(self.trainer, "log_every_n_steps", 1) or 1), 1)
        return (self.global_step + 1) % every == 0  # as Lightning's _should_update_logs

    def configure_optimizers(self) -> dict[str, Any]:
        optimizer = build_optimizer(self.model, self.optim_cfg)
        total = int(self.trainer.estimated_stepping_batches) if self.trainer is not None else 1
        self._schedule_total = total  # a resume's on_train_start may set another
        self._set_ema_window()
        cfg = self.optim_cfg
        scheduler = torch.optim.lr_scheduler.LambdaLR(
            optimizer,
            lambda step: lr_factor(step, self._schedule_total, cfg, self._schedule_resumed),
        )
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "interval": "step"},
        }

    def _set_ema_window(self) -> None:
        """The EMA's window over the run's steps (``module.ema_start``, ...)."""
        if self.ema is not None:
            fraction = self.hparams.get("ema_start") or 0.0
            before_end = self.hparams.get("ema_apply_before_end")
            set_run_window(self.ema, self._schedule_total, fraction, before_end)

    # -- validation -----------------------------------------------------------------------------
    def predict_batch(
        self, batch: Mapping[str, torch.Tensor], model: YOLOv4 | None = None
    ) -> list[torch.Tensor]:
        """Detections per image ``(K_i, 6)`` ``[x1, y1, x2, y2, score, class]`` in INPUT pixels
        of ``model`` (default :attr:`eval_model`) with the module's ``val_postprocess``
        (:func:`~yolov4.training.validation.batch_detections`);
        :func:`~yolov4.ops.letterbox.unmap_detections` maps them to the originals."""
        model = model or self.eval_model
        return batch_detections(model, batch, self.hparams["val_postprocess"])

    def on_validation_epoch_start(self) -> None:
        dm = self.trainer.datamodule if self.trainer is not None else None
        self.evaluator = validation_evaluator(dm, self.hparams)
        self.validation_sample = None

    def validation_step(self, batch: Mapping[str, torch.Tensor], batch_idx: int) -> None:
        dets = self.predict_batch(batch)
        if batch_idx == 0:  # for the validation image grid (ValidationImages callback)
            self.validation_sample = ValidationSample(batch["images"], batch["targets"], dets)
        score_batch(self.evaluator, batch, dets)

    def on_validation_epoch_end(self) -> None:
        result = self.evaluator.compute()
        if not self.trainer.sanity_checking:  # a few sanity batches are no evaluation
            self.evaluation, self.evaluated_step = result, self.global_step
        # identical on every rank (gathered before COCOeval): averaging across ranks is a no-op
        self.log_dict({f"val/{k}": result.metrics[k] for k in METRIC_KEYS}, sync_dist=True)
        if self.trainer.sanity_checking:
            return
        if self.trainer.state.fn == "fit":  # the epoch's line (on_train_epoch_end) reports it
            self._epoch.validated(result, self.global_step)
        log_validation(self.trainer, self.current_epoch, self.global_step, result)
