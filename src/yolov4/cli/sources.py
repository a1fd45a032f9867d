"""Where a model comes from, one vocabulary for predict.py, evaluate.py and export.py:

    checkpoint=<weights/best.pt | .ckpt>                 a project checkpoint
    artifact=<export dir> [backend=...] [precision=...]  an export artifact
    darknet_weights=<file.weights> model=<zoo name> [names=<.names | data.yaml>]
    darknet_weights=<file.weights> model=darknet model.cfg=<my.cfg> [names=<.names | data.yaml>]

A darknet network is resized as its cfg trained it (``darknet_resize_mode=`` overrides); the
zoo's COCO weights need no names file, and without ``names=`` the ``<weights stem>.names`` or
``<cfg stem>.names`` beside the files gives the class names (as a train run and export.py write
them: :func:`yolov4.inference.darknet.darknet_checkpoint`).

Where export.py's images come from: ``calibration=<folder>``, the images under a folder
(:func:`image_folder`) of which those that decode calibrate and gate the reduced precisions
(:func:`readable_images`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from yolov4.cli.common import to_builtin
from yolov4.core.artifact import AUTO_PRECISION, PRECISIONS, backend_names
from yolov4.core.checkpoint import Checkpoint, load_checkpoint
from yolov4.core.images import IMAGE_SUFFIXES, images_under
from yolov4.errors import ConfigError
from yolov4.export.quantize import MIN_CALIBRATION_IMAGES, decoded_images, warn_skipped
from yolov4.inference import Predictor
from yolov4.inference.darknet import darknet_checkpoint
from yolov4.models.cfg import ZOO
from yolov4.models.config import check_cfg_given

__all__ = [
    "MODEL_SOURCES",
    "model_source",
    "source_file",
    "class_names",
    "model_checkpoint",
    "load_predictor",
    "check_no_network",
    "check_runtime_keys",
    "image_folder",
    "readable_images",
]

MODEL_SOURCES = ("checkpoint", "darknet_weights", "artifact")
_HOW = {
    "checkpoint": "checkpoint=<weights/best.pt | .ckpt>",
    "artifact": "artifact=<export dir>",
    "darknet_weights": "darknet_weights=<file.weights> model=<zoo name | darknet model.cfg=...>",
}


def model_source(cfg: DictConfig, allowed: Sequence[str] = MODEL_SOURCES) -> str:
    """The one model source key ``cfg`` gives (``checkpoint``, ``artifact`` or
    ``darknet_weights``); none, several or one not in ``allowed`` is a :class:`ConfigError`."""
    given = [k for k in MODEL_SOURCES if cfg.get(k)]
    wrong = [k for k in given if k not in allowed]
    if len(given) != 1 or wrong:
        keys = [f"{k}=..." for k in allowed]
        one = ", ".join(keys[:-1]) + " or " + keys[-1] if len(keys) > 1 else keys[0]
        found = ", ".join(f"{k}={cfg.get(k)}" for k in given) or "none"
        raise ConfigError(
            f"give exactly one of {one} ({'; '.join(_HOW[k] for k in allowed)}), got {found}"
        )
    if given[0] != "darknet_weights":
        _refuse_darknet_keys(cfg, given[0], check_network=False)
    return given[0]


def check_runtime_keys(cfg: DictConfig) -> None:
    """predict.py and evaluate.py: ``backend=`` and ``precision=`` choose an artifact's runtime
    and model file; beside a ``checkpoint=`` or ``darknet_weights=`` (PyTorch) they would be
    ignored, and a value that is none of the formats table's runtimes or of the precisions
    would fail at load: a :class:`ConfigError` naming the key (export.py's ``precision`` is
    its list to export)."""
    source = model_source(cfg)
    given = [f"{k}={cfg.get(k)}" for k in ("backend", "precision") if cfg.get(k) is not None]
    if source != "artifact" and given:
        raise ConfigError(
            f"{', '.join(given)} choose{'s' if len(given) == 1 else ''} an artifact's runtime "
            f"and precision (artifact=<export dir>); {source}= runs in PyTorch (device=). "
            "export.py makes an artifact with its precisions (precision=[fp32,int8])"
        )
    allowed = {
        "backend": (backend_names(), "the artifact's runtime; null: the precision's first"),
        "precision": ((*PRECISIONS, AUTO_PRECISION), "null: the artifact's default_precision"),
    }
    for key, (values, default) in allowed.items():
        value = cfg.get(key)
        if value is not None and value not in values:
            raise ConfigError(
                f"{key}={value}: expected one of {', '.join(values)} ({default}), got {value!r}"
            )


def _refuse_darknet_keys(cfg: DictConfig, source: str, check_network: bool) -> None:
    """A ``checkpoint=`` or ``artifact=`` carries its network, classes and preprocessing:
    ``names=``, ``darknet_resize_mode=``, ``model.num_classes=`` (and with ``check_network``
    ``model=``) describe ``darknet_weights=`` and would be ignored, so they are refused."""
    model = to_builtin(cfg.get("model")) or {}
    model = model if isinstance(model, Mapping) else {"name": model}
    given = [f"{k}={cfg.get(k)}" for k in ("names", "darknet_resize_mode") if cfg.get(k)]
    if model.get("num_classes") is not None:
        given.append(f"model.num_classes={model['num_classes']}")
    if check_network and (model.get("name") or model.get("cfg")):
        given.append(f"model={model.get('name') or model.get('cfg')}")
    if given:
        raise ConfigError(
            f"{', '.join(given)} describe darknet_weights=; "
            f"{'an' if source == 'artifact' else 'a'} {source}= carries its own "
            f"network, class names and preprocessing. Remove {'them' if len(given) > 1 else 'it'}"
        )


def check_no_network(cfg: DictConfig) -> None:
    """For the apps whose ``model`` is unset unless ``darknet_weights=`` needs it (predict.py,
    evaluate.py, export.py): ``model=`` beside a ``checkpoint=`` or ``artifact=`` is refused, and
    ``darknet_weights=`` without its network names what to give."""
    source = model_source(cfg)
    if source != "darknet_weights":
        _refuse_darknet_keys(cfg, source, check_network=True)
    else:
        _darknet_model(cfg)


def source_file(cfg: DictConfig) -> str:
    """The path the model source names (the checkpoint, artifact or darknet weights)."""
    return str(cfg.get(model_source(cfg)))


def class_names(cfg: DictConfig) -> list[str] | None:
    """``names=``: a darknet ``.names`` or ``.data`` file, a data yaml with ``names:``, or a
    list; None when not given."""
    names = to_builtin(cfg.get("names"))
    if not names:
        return None
    from yolov4.data.data_yaml import read_class_names

    return read_class_names(names)


def _darknet_model(cfg: DictConfig) -> tuple[str, dict[str, Any]]:
    """``(zoo name or cfg path, model config overrides)`` from ``cfg.model``."""
    model = to_builtin(cfg.get("model")) or {}
    if not isinstance(model, Mapping):
        raise ConfigError(f"model: expected a model config, got {model!r}")
    model = dict(model)
    name, path = model.pop("name", None), model.pop("cfg", None)
    if path is not None:
        check_cfg_given(path)
    model.pop("num_classes", None)
    if path is None and name not in ZOO:
        found = f"model.name={name!r}" if name else "no model"
        raise ConfigError(
            f"darknet_weights= needs its network: model=<zoo name> (one of {', '.join(ZOO)}) or "
            f"model=darknet model.cfg=path/to/model.cfg; got {found}"
        )
    if path is not None and name is not None:
        model["name"] = name
    return str(path if path is not None else name), model


def model_checkpoint(cfg: DictConfig) -> Checkpoint:
    """The network and weights of ``checkpoint=`` or ``darknet_weights=`` (with ``model``,
    ``names``, ``darknet_resize_mode``) as a :class:`Checkpoint`."""
    if model_source(cfg, ("checkpoint", "darknet_weights")) == "checkpoint":
        return load_checkpoint(cfg.checkpoint)
    network, overrides = _darknet_model(cfg)
    num_classes = (to_builtin(cfg.get("model")) or {}).get("num_classes")
    return darknet_checkpoint(
        network,
        cfg.darknet_weights,
        class_names(cfg),
        num_classes=num_classes,
        resize_mode=cfg.get("darknet_resize_mode") or None,
        **overrides,
    )


def load_predictor(cfg: DictConfig, **kwargs: Any) -> Predictor:
    """The :class:`Predictor` of ``cfg``'s model source (``device=``, ``threads=`` for artifacts;
    ``kwargs`` go to the Predictor: ``thresholds``, ``max_pixels``)."""
    device = cfg.get("device") or "cpu"
    if model_source(cfg) == "artifact":
        return Predictor.from_artifact(
            cfg.artifact,
            backend=cfg.get("backend"),
            device=device,
            precision=cfg.get("precision"),
            **kwargs,
        )
    ckpt = model_checkpoint(cfg)  # the command's own: fused in place, not copied
    predictor = Predictor.from_checkpoint(ckpt, device, inplace=True, **kwargs)
    predictor.metadata["source"] = source_file(cfg)
    return predictor


def image_folder(folder: str | Path) -> list[Path]:
    """The image files under ``folder`` (recursively, by extension: ``IMAGE_SUFFIXES``),
    sorted; :class:`ConfigError` naming the folder when there is none."""
    root = Path(folder)
    if not root.is_dir():
        raise ConfigError(f"calibration={folder}: not a folder (expected a folder of images)")
    files = images_under(root)
    if not files:
        raise ConfigError(
            f"calibration={folder}: no image files ({', '.join(IMAGE_SUFFIXES)}) in the folder"
        )
    return files


def readable_images(folder: str | Path, wanted: int | None) -> list[Path]:
    """The first ``wanted`` (``None``: all) image files of ``calibration=<folder>``
    (:func:`image_folder`) that decode; those that do not (truncated, over the pixel limit, not
    an image) are skipped with one warning. :class:`ConfigError` naming the folder when fewer
    than :data:`MIN_CALIBRATION_IMAGES` can be read."""
    files, kept, skipped = image_folder(folder), [], []
    for file, array, why in decoded_images(files):
        if array is None:
            skipped.append(why)
            continue
        kept.append(file)
        if wanted is not None and len(kept) >= wanted:
            break
    warn_skipped(f"calibration={folder}", skipped, len(kept) + len(skipped))
    if len(kept) < MIN_CALIBRATION_IMAGES:
        raise ConfigError(
            f"calibration={folder}: {len(kept)} of its {len(files)} image files can be read, "
            f"at least {MIN_CALIBRATION_IMAGES} needed ({'; '.join(skipped[:5])})"
        )
    return kept
