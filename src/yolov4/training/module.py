"""The LightningModule: YOLOv4 + its loss for training, decode + NMS + COCO mAP for validation.

Batches are :class:`yolov4.data.collate.Batch` dicts (images ``(B, 3, H, W)``, targets
``(M, 6)``, image ids, original sizes, letterbox parameters); they arrive with uint8 images that
:meth:`YoloModule.on_after_batch_transfer` turns into the model's input on the training device
(:func:`~yolov4.core.preprocess.batch_to_input`). Hyper-parameters are builtins
only, so Lightning ``.ckpt`` files load with ``torch.load(weights_only=True)`` and
:func:`yolov4.load_checkpoint` rebuilds the model from them (EMA weights under ``ema.module.``).
"""

from __future__ import annotations

import logging
import math
import os
import time
import warnings
from collections.abc import Mapping
from typing import Any, NamedTuple

import lightning as L
import torch

from yolov4.core.checkpoint import read_checkpoint
from yolov4.core.model import DecodedModel
from yolov4.core.postprocess import PostprocessConfig
from yolov4.core.preprocess import PreprocessConfig, batch_to_input
from yolov4.core.pretrained import load_pretrained
from yolov4.errors import CheckpointError, ConfigError, DivergedError
from yolov4.evaluation import METRIC_KEYS, CocoEvaluator, EvaluationResult
from yolov4.evaluation.coco import DEFAULT_COCO_BACKEND
from yolov4.loss import YoloLoss, darknet_cost
from yolov4.models import YOLOv4
from yolov4.models.config import config_sections
from yolov4.ops.letterbox import image_windows, unmap_detections
from yolov4.training.callbacks import last_checkpoint
from yolov4.training.class_balance import balanced_config
from yolov4.training.ema import ModelEMA
from yolov4.training.module_args import module_hparams, optim_config
from yolov4.training.optim import OptimConfig, apply_settings, build_optimizer, lr_factor
from yolov4.training.resume import LIGHTNING_KEYS
from yolov4.version import renamed_kwargs

__all__ = ["YoloModule", "ValidationSample"]

# keyword arguments renamed (they shadowed builtins), accepted for one more release
RENAMED_KWARGS = {"eval": "val_postprocess", "compile": "compile_model"}

SCHEDULE_KEY = "yolov4_schedule_steps"  # in .ckpt files: the length the lr schedule spans

log = logging.getLogger(__name__)
# The module, not the DataModule, finishes batches on the device (on_after_batch_transfer) so any
# loader of Batch dicts works; Lightning warns about that choice on every fit with a DataModule.
warnings.filterwarnings(
    "ignore", message="You have overridden `on_after_batch_transfer` in `LightningModule`"
)


class ValidationSample(NamedTuple):
    """The first validation batch and its detections, for the image grid callback. ``images``
    ``(B, 3, H, W)``; ``targets`` ``(M, 6)`` and ``detections[i]`` ``(K_i, 6)`` in input pixels."""

    images: torch.Tensor
    targets: torch.Tensor
    detections: list[torch.Tensor]


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
            data = read_checkpoint(checkpoint_path)
            missing = [k for k in LIGHTNING_KEYS if k not in data]
            if missing:
                what = (
                    "a yolov4 weights file" if data.get("format") else "not a Lightning checkpoint"
                )
                raise CheckpointError(
                    f"{checkpoint_path} is {what} (no {missing}): YoloModule.load_from_checkpoint "
                    "takes <run>/checkpoints/*.ckpt; load_checkpoint(path) and "
                    "Predictor.from_checkpoint(path) read weights files"
                )
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
        # the epoch line of train.log: [total, box, obj, cls] loss sums and batches (this rank's),
        # the epoch's start time, and the validation run during the epoch
        self._epoch_loss: torch.Tensor | None = None
        # optimizer steps the lr schedule spans: this run's, and the resumed checkpoint's
        self._schedule_total: int | None = None
        self._resumed_total: int | None = None
        self._resumed_optim: OptimConfig | None = None  # the resumed checkpoint's optim settings
        self._epoch_batches = 0
        self._epoch_start = 0.0
        self._epoch_resumed = False  # this epoch began before a mid-epoch resume
        self._epoch_val: EvaluationResult | None = None
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
            if self.hparams.get("class_balance") == "darknet":
                self._balance_classes()
            self.loss_fn  # noqa: B018

    def _balance_classes(self) -> None:
        """``class_balance=darknet``: the training split's counts into the model config (the
        network's, its EMA copy's and the hyper-parameters', so checkpoints carry them)."""
        dm = self.trainer.datamodule if self._trainer is not None else None
        train = dm.split("train") if dm is not None and hasattr(dm, "split") else None
        if train is None:
            raise ConfigError(
                "module.class_balance=darknet counts the boxes of the training split: it needs "
                "a DataModule with data.train"
            )
        config = balanced_config(self.model.config, train)
        for model in (self.model, self.ema.module if self.ema is not None else None):
            if model is not None:
                model.config, model.sections = config, config_sections(config)
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

    def _set_ema_window(self, total: int) -> None:
        """The EMA's window over this run's ``total`` optimizer steps (``module.ema_start``,
        ``module.ema_apply_before_end``), said in the log when it is not the whole run."""
        if self.ema is None:
            return
        fraction = self.hparams.get("ema_start") or 0.0
        before_end = self.hparams.get("ema_apply_before_end")
        start = int(total * fraction)
        apply_at = total - before_end if before_end else None
        if apply_at is not None and apply_at <= start:
            log.warning(
                "module.ema_apply_before_end=%d: the run's %d optimizer steps leave no average "
                "to copy into the weights (the EMA starts after step %d): the EMA is kept, "
                "validated and saved as it is",
                before_end, total, start,
            )  # fmt: skip
            apply_at = None
        self.ema.set_window(start, apply_at)
        if start or apply_at is not None:
            log.info(
                "EMA (module.ema_decay=%g): averages after optimizer step %d of %d%s",
                self.ema.decay, start, total,
                f", copied into the weights at step {apply_at}" if apply_at is not None else "",
            )  # fmt: skip

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
            raise torch.OutOfMemoryError(
                f"out of memory with batch size {images.shape[0]} at input {tuple(images.shape[-2:])}: "
                f"lower data.batch_size (keep the nominal batch with trainer.accumulate_grad_batches), "
                f"use trainer.precision=16-mixed or bf16-mixed, or a smaller data.input_size. ({e})"
            ) from e
        if not torch.isfinite(loss.total):
            last = last_checkpoint(self._trainer)  # no trainer outside a fit (a user's own loop)
            raise DivergedError(
                f"the loss became {loss.total.item()} at step {self.global_step} (box={loss.box.item():.4g} "
                f"obj={loss.obj.item():.4g} cls={loss.cls.item():.4g}); stopping instead of training on NaN. "
                f"Lower optim.lr, lengthen optim.burn_in, set trainer.gradient_clip_val, or use "
                f"trainer.precision=32; "
                + (
                    f"resume from the last good checkpoint with ckpt_path={last}"
                    if last
                    else "no checkpoint was written before it: start the run again"
                )
            )
        bs = images.shape[0]
        parts = torch.stack([loss.total, loss.box, loss.obj, loss.cls]).detach().float()
        self._epoch_loss = parts if self._epoch_loss is None else self._epoch_loss + parts
        self._epoch_batches += 1
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
        self._epoch_start, self._epoch_resumed = time.perf_counter(), True
        self._resume_optimizer()
        self._log_multi_scale()

    def _log_multi_scale(self) -> None:
        """The multi-scale sizes this run trains at (and when a run is too short to change)."""
        multi_scale = getattr(self.trainer.datamodule, "multi_scale", None)
        if multi_scale is None or not self.trainer.is_global_zero:
            return
        size = tuple(self.hparams["preprocess"]["input_size"])
        low, high = multi_scale.smallest(size), multi_scale.largest(size)
        total = self._schedule_total
        log.info(
            "multi-scale (augment.multi_scale=%g): %s to %s, a new size every %d optimizer "
            "steps; the first %d and the windows starting in the last %d at the largest%s",
            multi_scale.coefficient, "x".join(map(str, low)), "x".join(map(str, high)),
            multi_scale.every, multi_scale.every, multi_scale.final,
            f" (this run's {total} steps all train at it)"
            if total is not None and total <= multi_scale.every + multi_scale.final
            else "",
        )  # fmt: skip

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint[SCHEDULE_KEY] = self._schedule_total  # the length the lr schedule spans

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self._resumed_total = checkpoint.get(SCHEDULE_KEY)
        saved = (checkpoint.get("hyper_parameters") or {}).get("optim")
        try:
            self._resumed_optim = optim_config(saved) if saved is not None else None
        except (ConfigError, TypeError):  # a checkpoint of other optim keys: its values unknown
            self._resumed_optim = None

    def _resume_optimizer(self) -> None:
        """After a resume, whose optimizer and lr scheduler Lightning restored as saved: this
        run's ``optim`` settings (lr, weight decay, momentum) applied to them when they differ
        from the checkpoint's, or the schedule spans another length, so that the optimizer
        follows the config the log names (:func:`~yolov4.training.optim.apply_settings`)."""
        old_total, total = self._resumed_total, self._schedule_total
        if not old_total or not total:
            return
        old = self._resumed_optim or self.optim_cfg
        step, new = self.global_step, self.optim_cfg
        before = old.lr * lr_factor(step, old_total, old)
        after = new.lr * lr_factor(step, total, new)
        optimizers = self.trainer.optimizers if self._trainer is not None else []
        if (vars(old) != vars(new) or old_total != total) and optimizers:
            scheduler = self.trainer.lr_scheduler_configs[0].scheduler
            apply_settings(optimizers[0], scheduler, new, after)
        if vars(old) != vars(new):
            log.info(
                "resume: the optimizer restored from the checkpoint follows this run's optim "
                "settings (%s): at step %d the lr is %.3g (the checkpoint's settings: %.3g)",
                ", ".join(f"{k} {getattr(old, k)} -> {v}" for k, v in vars(new).items()
                          if getattr(old, k) != v),
                step, after, before,
            )  # fmt: skip
        self._warn_stretched_schedule(step, before, after)

    def _warn_stretched_schedule(self, step: int, before: float, after: float) -> None:
        """A resume with another length (``trainer.max_epochs`` raised to train longer) lays
        the lr schedule, fractions of the run's optimizer steps, over the new length: a decayed
        lr goes back up (darknet's ``steps`` are absolute iterations). Said with the numbers
        (``before``: the lr the checkpoint's schedule gives at ``step``, ``after``: this run's)
        when they differ."""
        old, new = self._resumed_total, self._schedule_total
        if not old or not new or old == new or math.isclose(before, after, rel_tol=1e-9):
            return
        log.warning(
            "resume: the lr schedule (optim.schedule=%s) spans the run's optimizer steps, %d when "
            "the checkpoint was saved and %d now: at step %d the lr is %.3g (it was %.3g), the "
            "schedule's decay laid over the new length. To keep training at the decayed lr, "
            "start a new run from the weights (module.pretrained=<run>/weights/last.pt, "
            "optim.lr=%.3g optim.burn_in=0)",
            self.optim_cfg.schedule, old, new, step, after, before, before,
        )  # fmt: skip

    def on_train_epoch_start(self) -> None:
        self._epoch_loss, self._epoch_batches, self._epoch_val = None, 0, None
        self._epoch_start, self._epoch_resumed = time.perf_counter(), False

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

    def _last_epoch(self) -> int | None:
        """The run's last epoch (0-based): ``trainer.max_epochs``'s, or the one ``max_steps``
        ends in (the experiment recipes give steps, as darknet's ``max_batches``); ``None``
        when neither bounds the run."""
        trainer = self.trainer
        ends = []
        if trainer.max_epochs is not None and trainer.max_epochs > 0:
            ends.append(trainer.max_epochs - 1)
        batches = trainer.num_training_batches
        if trainer.max_steps > 0 and isinstance(batches, int) and batches > 0:
            per_epoch = math.ceil(batches / max(1, trainer.accumulate_grad_batches))
            ends.append(math.ceil(trainer.max_steps / per_epoch) - 1)
        return min(ends) if ends else None

    def on_train_epoch_end(self) -> None:
        """One line per epoch in the log: the mean training loss of this rank's batches, its
        parts, the validation of the epoch (when one ran), the learning rate and the time."""
        if not self.trainer.is_global_zero or not self._epoch_batches:
            return
        total, box, obj, cls = (self._epoch_loss / self._epoch_batches).tolist()
        val = (
            f"val mAP {self._epoch_val['mAP']:.4f} mAP50 {self._epoch_val['mAP50']:.4f}"
            if self._epoch_val is not None
            else "no validation"
        )
        lr = self.trainer.optimizers[0].param_groups[0]["lr"] if self.trainer.optimizers else 0.0
        last = self._last_epoch()
        log.info(
            "epoch %d%s step %d: train loss %.4f (box %.4f obj %.4f cls %.4f) | %s | lr %.3g | %.1f s",
            self.current_epoch,
            "" if last is None else f"/{max(last, self.current_epoch)}",
            self.global_step,
            total,
            box,
            obj,
            cls,
            val,
            lr,
            time.perf_counter() - self._epoch_start,
        )
        if self._epoch_resumed:
            log.info(
                "  (resumed mid-epoch: the loss and time above are of the %d batches since)",
                self._epoch_batches,
            )

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
        self._schedule_total = total
        self._set_ema_window(total)
        cfg = self.optim_cfg
        scheduler = torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda step: lr_factor(step, total, cfg)
        )
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "interval": "step"},
        }

    # -- validation -----------------------------------------------------------------------------
    def predict_batch(
        self, batch: Mapping[str, torch.Tensor], model: YOLOv4 | None = None
    ) -> list[torch.Tensor]:
        """Detections per image ``(K_i, 6)`` ``[x1, y1, x2, y2, score, class]`` in INPUT pixels
        (the network's letterboxed image); :func:`unmap_detections` maps them to the originals.
        On the CPU the network runs in float32 whatever the training precision (bf16-mixed),
        so that validation scores what ``evaluate.py`` and the Predictor score."""
        model = model or self.eval_model
        images = batch["images"]
        c = model.config
        was_training = model.training
        model.eval()  # BN statistics, never batch statistics
        try:
            with torch.autocast("cpu", enabled=False):  # a CUDA autocast is left as it is
                preds = DecodedModel(model)(images)
        finally:
            model.train(was_training)
        settings = PostprocessConfig(**self.hparams["val_postprocess"]).resolve(c)
        windows = None  # where the images lie inside the padding: no box of the padding counts
        if "letterbox" in batch and "original_sizes" in batch:
            windows = image_windows(batch["letterbox"].cpu(), batch["original_sizes"].cpu())
        return settings(preds.float(), tuple(images.shape[-2:]), windows=windows)

    def on_validation_epoch_start(self) -> None:
        dm = self.trainer.datamodule if self.trainer is not None else None
        if dm is None or not hasattr(dm, "val_coco"):
            raise RuntimeError(
                "validation needs a DataModule with val_coco (the COCO ground truth)"
            )
        self.evaluator = CocoEvaluator(
            dm.val_coco,
            self.hparams["category_ids"],
            self.hparams["class_names"],
            backend=self.hparams.get("coco_backend", DEFAULT_COCO_BACKEND),
        )
        self.validation_sample = None

    def validation_step(self, batch: Mapping[str, torch.Tensor], batch_idx: int) -> None:
        dets = self.predict_batch(batch)
        if batch_idx == 0:  # for the validation image grid (ValidationImages callback)
            self.validation_sample = ValidationSample(batch["images"], batch["targets"], dets)
        original = unmap_detections(dets, batch["letterbox"], batch["original_sizes"])
        ids = batch["image_ids"].tolist()
        if "decoded" in batch and not bool(batch["decoded"].all()):  # unreadable: not scored
            kept = batch["decoded"].tolist()
            original = [d for d, k in zip(original, kept, strict=True) if k]
            ids = [i for i, k in zip(ids, kept, strict=True) if k]
        self.evaluator.update(original, ids)

    def on_validation_epoch_end(self) -> None:
        result = self.evaluator.compute()
        if not self.trainer.sanity_checking:  # a few sanity batches are no evaluation
            self.evaluation, self.evaluated_step = result, self.global_step
        # identical on every rank (gathered before COCOeval): averaging across ranks is a no-op
        self.log_dict({f"val/{k}": result.metrics[k] for k in METRIC_KEYS}, sync_dist=True)
        if self.trainer.sanity_checking:
            return
        fitting = self.trainer.state.fn == "fit"
        if fitting:  # the epoch's line (on_train_epoch_end) reports it
            self._epoch_val = result
        mid_epoch = fitting and not self.trainer.fit_loop.epoch_loop.batch_progress.is_last_batch
        if self.trainer.is_global_zero and mid_epoch:
            log.info(
                "epoch %d step %d: mAP %.4f mAP50 %.4f",
                self.current_epoch,
                self.global_step,
                result["mAP"],
                result["mAP50"],
            )
        elif self.trainer.is_global_zero and not fitting:  # the weights loaded, whatever epoch
            log.info("validation: mAP %.4f mAP50 %.4f", result["mAP"], result["mAP50"])
