"""Config helpers shared by the entry points: building objects, failing early with the key."""

from __future__ import annotations

import difflib
import errno
import functools
import logging
import os
import sys
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from importlib import resources
from pathlib import Path
from typing import Any

from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import MissingMandatoryValue

import yolov4.cli.hydra_hooks  # noqa: F401  (registers the configs' resolvers)
from yolov4.cli.model_option import check_option_keys
from yolov4.core.files import lock_dir
from yolov4.errors import ConfigError, YoloError

__all__ = [
    "one_line_errors",
    "check_added_keys",
    "build",
    "build_all",
    "build_partial",
    "model_config",
    "model_network",
    "model_stride",
    "rank_log_argv",
    "check_override_syntax",
    "to_builtin",
    "warn_without_ground_truth",
    "hold_folder",
    "holding_folder",
    "release_folder",
    "launched_rank",
    "INTERRUPTED_EXIT",
    "NO_ACCUMULATION",
]

log = logging.getLogger(__name__)

# what a folder or file the user named can refuse (read-only, full, a file in the way, a name
# too long, no permission): one logged line, not Hydra's traceback
OUTPUT_ERRNOS = {
    errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOSPC, errno.EDQUOT, errno.ENOTDIR,
    errno.EISDIR, errno.EEXIST, errno.ENAMETOOLONG,
}  # fmt: skip
INTERRUPTED_EXIT = 130  # a run stopped by Ctrl-C (or SIGTERM) exits as a shell's Ctrl-C does
# configs/trainer/'s accumulate_grad_batches is null, for train.py to derive from nominal_batch
# once its Trainer knows its processes; a Trainer that validates or predicts takes Lightning's 1
NO_ACCUMULATION = {"accumulate_grad_batches": 1}


def _multirun() -> bool:
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


def one_line_errors(task: Callable[[DictConfig], Any]) -> Callable[[DictConfig], Any]:
    """A Hydra task whose :class:`~yolov4.errors.YoloError` (bad input: a missing file, a wrong
    option, a model that does not fit the data) ends the process with its message in one
    logged line and exit code 1, not Hydra's traceback: the message names what was expected and
    found. A value the config leaves to the user (``???``, e.g. a COCO recipe's annotation
    files) is named the same way, and so is an operating system's refusal of a place the user
    named (a read-only or full folder, a file in the way, a name too long: ``OUTPUT_ERRNOS``).
    ``HYDRA_FULL_ERROR=1``, and a job of a ``-m`` sweep, raise it as it is."""

    @functools.wraps(task)
    def run(cfg: DictConfig) -> Any:
        try:
            check_added_keys(cfg)
            return task(cfg)
        except (YoloError, MissingMandatoryValue, OSError) as e:
            if isinstance(e, OSError) and e.errno not in OUTPUT_ERRNOS:
                raise  # not a place the user named: the traceback is the news
            if os.environ.get("HYDRA_FULL_ERROR") == "1" or _multirun():
                raise  # a sweep's launcher records the failed job and goes on
            if isinstance(e, MissingMandatoryValue):  # a ??? the recipe leaves to the user
                key = e.full_key or "a key"
                e = ConfigError(f"{key} has no value (??? in the config): give {key}=...")
            logging.getLogger("yolov4").error("%s: %s", type(e).__name__, e)
            sys.exit(1)

    return run


def check_added_keys(cfg: DictConfig, overrides: list[str] | None = None) -> None:
    """A :class:`ConfigError` for a top-level key added with ``+key=value`` (or ``++``) that
    the config does not have and nothing reads: Hydra's own refusal of a mistyped key
    (``ckpt_pth=...``) suggests the ``+``, and the run then went on without it (a resume
    trained from scratch). A key an interpolation reads (``+lr0=0.1 'optim.lr=${lr0}'``) and a
    config group (``+augment=darknet``) are kept. ``overrides``: the command line's (default:
    the running Hydra app's)."""
    from yolov4.training.anchors import run_overrides

    overrides = run_overrides() if overrides is None else overrides
    groups = resources.files("yolov4.configs")
    added = [o.lstrip("+").split("=", 1)[0] for o in overrides if o.startswith("+") and "=" in o]
    # under a node (its consumer names unknown keys) or a config group: not this check's
    added = [
        k for k in added
        if not ("." in k or "/" in k or "@" in k or groups.joinpath(k).is_dir())
    ]  # fmt: skip
    if not added:
        return
    text = OmegaConf.to_yaml(cfg) + "\n".join(overrides)
    for key in added:
        if "${" + key in text:
            continue
        known = [str(k) for k in cfg.keys() if str(k) != key]
        close = difflib.get_close_matches(key, known, n=1)
        hint = f"; did you mean {close[0]}=...?" if close else ""
        raise ConfigError(
            f"+{key}=...: the config has no key {key!r} and nothing reads it (the run would go "
            f"on without it){hint} Its keys: {sorted(known)}"
        )


def to_builtin(cfg: Any) -> Any:
    """OmegaConf node -> plain dict/list (resolved); anything else unchanged."""
    return OmegaConf.to_container(cfg, resolve=True) if OmegaConf.is_config(cfg) else cfg


def build(cfg: DictConfig, key: str, **kwargs: Any) -> Any:
    """``instantiate(cfg[key])``; a bad value fails naming ``key`` and the constructor's message,
    a missing node (a group removed with ``~key``) naming the group to give."""
    if key not in cfg:
        raise ConfigError(
            f"{key}: the config has none (removed with ~{key}?); this command needs it: give "
            f"{key}=<option> (--help lists the options)"
        )
    try:
        return instantiate(cfg[key], **kwargs)
    except InstantiationException as e:
        cause = e.__cause__ if isinstance(e.__cause__, YoloError | TypeError | ValueError) else e
        raise ConfigError(f"{key}: {cause}") from e


def build_partial(cfg: DictConfig, key: str, **runtime: Any) -> Any:
    """A ``_partial_: true`` node (``configs/module/*.yaml``) called with ``runtime``: the values
    the run computes (model config, class names, ...), which override the node's keys. The
    constructor's own errors (:class:`~yolov4.errors.CheckpointError`, ...) pass through."""
    factory = build(cfg, key)
    if not callable(factory) or not cfg[key].get("_partial_", False):
        raise ConfigError(f"{key}: expected a node with _target_ and _partial_: true")
    try:
        return factory(**runtime)
    except TypeError as e:  # a key the constructor does not take
        raise ConfigError(f"{key}: {e}") from e


def build_all(cfg: DictConfig, key: str) -> list[Any]:
    """Instantiate every entry of a group such as ``callbacks`` or ``logger`` (may be empty)."""
    group = cfg.get(key) or {}
    return [build(group, name) for name in group if group[name] is not None]


def model_config(cfg: DictConfig, dataset_classes: int | None) -> dict[str, Any]:
    """``cfg.model`` as a dict, ``num_classes`` from the dataset when null, checked otherwise."""
    model = OmegaConf.to_container(cfg.model, resolve=True)
    assert isinstance(model, Mapping)
    model = dict(model)
    if model.get("num_classes") is None:
        if dataset_classes is None:
            raise ConfigError("model.num_classes is null and there is no dataset to take it from")
        model["num_classes"] = dataset_classes
    elif dataset_classes is not None and int(model["num_classes"]) != dataset_classes:
        raise ConfigError(
            f"model.num_classes={model['num_classes']} but the dataset has {dataset_classes} classes; "
            f"set model.num_classes={dataset_classes} (or null to take it from the data)"
        )
    return model


def model_network(cfg: DictConfig) -> Any:
    """The :class:`~yolov4.models.ModelConfig` of the network ``cfg.model`` names (zoo ``name``
    or ``cfg``), at the cfg's own size and classes: what follows from the network alone (its
    largest stride, ``letter_box``), read before the data is built."""
    from yolov4.models import ModelConfig

    model = to_builtin(cfg.model)
    assert isinstance(model, Mapping)
    return ModelConfig.load(model.get("name"), cfg=model.get("cfg"))


def model_stride(cfg: DictConfig) -> int:
    """The largest stride of the network ``cfg.model`` describes (``ModelConfig.max_stride``: 32,
    64 for yolov4-p6), before the data is built: the data's input sizes, multi-scale ones
    included, must be multiples of it (a bad size is then reported by the data, naming
    ``data.input_size``)."""
    return model_network(cfg).max_stride


def check_override_syntax(argv: list[str], app: str | None = None) -> None:
    """Exit with one line (status 1) when an argument of ``argv`` is not an override Hydra can
    parse, before any app runs: a value with spaces typed unquoted (``data.train.images=my
    data/images`` is three arguments) gets the quoted form as the hint, not a parser
    traceback. A ``model.cfg=PATH`` or ``data.file=PATH`` Hydra would refuse beside the options
    of the app config ``app`` (:func:`yolov4.cli.model_option.check_option_keys`) gets
    ``model=darknet model.cfg=PATH`` or ``data=yolo data.file=PATH`` as the hint."""
    from hydra._internal.utils import get_args_parser
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import OverrideParseException

    args = get_args_parser().parse_args(argv[1:])
    overrides = list(args.overrides or [])
    parser = OverridesParser.create()
    parsed = []
    for i, arg in enumerate(overrides):
        try:
            parsed += parser.parse_overrides([arg])
        except OverrideParseException as e:
            lines = [ln for ln in str(e).splitlines() if ln.strip()]
            said = [ln for ln in lines if not ln.startswith(("Error parsing", "See "))]
            reason = said[0] if said else "Hydra cannot parse it"
            message = f"{arg!r} is not a key=value override ({reason})"
            if "=" not in arg and i and "=" in overrides[i - 1]:
                joined = " ".join(overrides[i - 1 : i + 1 + _unparsed_run(overrides, i + 1)])
                message += f": a value with spaces is one argument when quoted: '{joined}'"
            elif "=" in arg:  # '=', ',' or brackets inside the value: Hydra's quotes around it
                key, value = arg.split("=", 1)
                message += (
                    f": a value holding = , [ ] or quotes is quoted inside: '{key}=\"{value}\"'"
                )
            print(f"Error: ConfigError: {message}", file=sys.stderr)
            raise SystemExit(1) from None
    if not (args.config_path or args.config_name or args.config_dir):  # the shipped configs
        try:
            check_option_keys(parsed, app)
        except ConfigError as e:
            print(f"Error: ConfigError: {e}", file=sys.stderr)
            raise SystemExit(1) from None


def _unparsed_run(overrides: list[str], start: int) -> int:
    """How many arguments from ``start`` on hold no ``=`` (the rest of a split value)."""
    n = 0
    while start + n < len(overrides) and "=" not in overrides[start + n]:
        n += 1
    return n


# what Lightning's DDP launcher adds to the command of each process it starts under Hydra (a
# job name of its own, whatever the command): the process's log file, <job name>.log
LIGHTNING_RANK_JOB = "hydra.job.name=train_ddp_process_"


def rank_log_argv(argv: list[str], job: str) -> list[str]:
    """``argv`` of a DDP process that Lightning started for the command ``job`` (``evaluate``,
    ``predict``) with the job name it gives every command's processes,
    ``train_ddp_process_<rank>``: named ``<job>_ddp_process_<rank>`` (its log file in the run's
    folder, ``<job>_ddp_process_<rank>.log``); any other ``argv`` unchanged."""
    named = f"hydra.job.name={job}_ddp_process_"
    return [named + a[len(LIGHTNING_RANK_JOB) :] if a.startswith(LIGHTNING_RANK_JOB) else a
            for a in argv]  # fmt: skip


def _rank_zero_log() -> logging.LoggerAdapter:
    """This module's logger on rank 0 only (:func:`yolov4.training.noise.rank_zero_logger`),
    for the lines every process of a DDP run would log alike; imported when first logged, as
    it imports Lightning (which predict.py and export.py do without)."""
    from yolov4.training.noise import rank_zero_logger

    return rank_zero_logger(__name__)


def warn_without_ground_truth(datamodule: Any, training: bool = False) -> None:
    """A val split without a single box: COCO's mAP is undefined there (-1), said once; in
    training, what it leaves meaningless (validation's mAP, the choice of ``best.pt``)."""
    val = datamodule.split("val")
    if val is not None and val.num_boxes == 0:
        _rank_zero_log().warning(
            "data.val has no ground-truth box: COCO mAP is undefined (reported as -1)%s",
            "; validation logs mAP 0 every epoch and best.pt is not chosen by it: give a val "
            "split with boxes"
            if training
            else "",
        )


# folders this process holds the lock of (yolov4.core.files.lock_dir), for its lifetime
_HELD: dict[Path, int] = {}
RANK_VARIABLES = ("RANK", "LOCAL_RANK", "NODE_RANK", "SLURM_PROCID")


def launched_rank() -> bool:
    """A process a launcher started after rank 0 (``RANK``, ``LOCAL_RANK``, ``NODE_RANK`` or
    ``SLURM_PROCID`` not 0): it shares rank 0's run folder and leaves its checks to rank 0."""
    return any(os.environ.get(k, "0") != "0" for k in RANK_VARIABLES)


def hold_folder(folder: str | os.PathLike, what: str) -> None:
    """Lock ``folder`` (made if missing) for the rest of this process: a second run writing
    into the same folder at the same time (``what``: how it was named, e.g. ``hydra.run.dir=``)
    is a :class:`ConfigError` before it writes anything, where the two mixed their files. The
    processes a launcher starts after rank 0 (``RANK``, ``LOCAL_RANK``, ``NODE_RANK``,
    ``SLURM_PROCID`` not 0) share rank 0's folder and do not lock it."""
    if launched_rank():
        return
    path = Path(folder).expanduser().resolve()
    if path in _HELD:
        return
    path.mkdir(parents=True, exist_ok=True)
    fd = lock_dir(path, blocking=False)
    if fd is None:
        raise ConfigError(
            f"{what}{folder} is in use by another run writing there now (it holds the folder's "
            "lock); wait for it to end, or give another folder"
        )
    _HELD[path] = fd


@contextmanager
def holding_folder(folder: str | os.PathLike, what: str) -> Iterator[None]:
    """:func:`hold_folder` for the block; given back as it ends unless this process held
    ``folder`` before (the command's own checks hold it for the process)."""
    held = Path(folder).expanduser().resolve() in _HELD
    hold_folder(folder, what)
    try:
        yield
    finally:
        if not held:
            release_folder(folder)


def release_folder(folder: str | os.PathLike) -> None:
    """Give back :func:`hold_folder`'s lock of ``folder`` (a no-op when not held)."""
    fd = _HELD.pop(Path(folder).expanduser().resolve(), None)
    if fd is not None and fd >= 0:
        os.close(fd)
