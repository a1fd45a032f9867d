"""Keys of one config option typed beside another: ``model.cfg=PATH`` belongs to
``model=darknet``, ``data.file=PATH`` to ``data=yolo``.

Of the shipped options only ``configs/model/darknet.yaml`` has a ``cfg`` key (a zoo option is
the network its name says) and only ``configs/data/yolo.yaml`` a ``file`` key, and no app's
config or shipped experiment picks either by default: Hydra refuses ``model.cfg=PATH`` or
``data.file=PATH`` with any other ("Could not override 'model.cfg'", suggesting
``+model.cfg=``), and :func:`check_option_keys` names ``model=darknet model.cfg=PATH`` (or
``data=yolo data.file=PATH``) instead, before Hydra runs.

A ``model=NAME`` of no option (``model=yolov2-tiny``: darknet's YOLOv2 cfgs are no zoo network)
gets Hydra's "Could not find 'model/NAME'"; :func:`check_option_keys` names the options and
``model=darknet model.cfg=PATH`` instead.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources
from typing import Any

from omegaconf import OmegaConf

from yolov4.errors import ConfigError

__all__ = [
    "DARKNET_MODEL",
    "OPTION_KEYS",
    "OptionKey",
    "check_option_keys",
    "model_options",
    "check_resume_option_keys",
]

DARKNET_MODEL = "darknet"  # configs/model/<this>.yaml: the model option of a cfg file
RESUME_KEY = "ckpt_path"  # train.py's resume: the run's own options are composed (resume.py)


@dataclass(frozen=True)
class OptionKey:
    """``group.key`` (``key``), which only the ``option`` of its group has; ``reads``: what it
    reads and ``others``: what the group's other options are, for the message;
    ``null_default_takes_it``: an app whose ``group`` defaults to null
    takes the key as it is (evaluate.py and export.py lay ``data.<key>=`` over the data a
    checkpoint records: :func:`~yolov4.cli.data_config.data_argv`)."""

    key: str
    option: str
    reads: str
    others: str
    null_default_takes_it: bool = False

    @property
    def group(self) -> str:
        return self.key.split(".")[0]


OPTION_KEYS = (
    OptionKey(
        "model.cfg",
        DARKNET_MODEL,
        "a cfg file",
        "is the zoo network its name says, with no cfg key",
    ),
    OptionKey(
        "data.file",
        "yolo",
        "a dataset file, darknet's .data or an ultralytics data yaml",
        "has no file key",
        null_default_takes_it=True,
    ),
)


def check_option_keys(overrides: list[Any], app: str | None = None) -> None:
    """:class:`ConfigError` for a key of :data:`OPTION_KEYS` in Hydra's parsed ``overrides``
    when the option composed for its group is not the one that has it: the one given
    (``group=``), else the ``experiment=``'s, else the default of the app config ``app``
    (``configs/<app>.yaml``; none known: ``None``). A sweep of options or an experiment this
    package does not ship is left to Hydra; a resume (``ckpt_path=``) composes the run's options
    too, and is checked with them (:func:`check_resume_option_keys`). A ``model=NAME`` that is
    none of :func:`model_options` is a :class:`ConfigError` too."""
    _check_model_name(overrides)
    if any(o.key_or_group == RESUME_KEY for o in overrides):
        return
    found = _refused_key(overrides, app)
    if found is not None:
        row, choice, source, value = found
        raise ConfigError(
            f"{row.key}={value}: only {row.group}={row.option} reads {row.reads} "
            f"({_why(row, choice, source)}): give {row.group}={row.option} {row.key}={value}"
        )


def model_options() -> list[str]:
    """The shipped ``model=`` options (``configs/model/<name>.yaml``): the zoo and
    :data:`DARKNET_MODEL`."""
    folder = resources.files("yolov4.configs").joinpath("model")
    return sorted(
        f.name.removesuffix(".yaml") for f in folder.iterdir() if f.name.endswith(".yaml")
    )


def _check_model_name(overrides: list[Any]) -> None:
    """:class:`ConfigError` for a ``model=NAME`` (or ``+model=``) in Hydra's parsed
    ``overrides`` that is none of :func:`model_options`, naming them and
    ``model=darknet model.cfg=PATH``; a sweep, ``null`` or options added by
    ``hydra.searchpath`` are left to Hydra."""
    if any(o.key_or_group == "hydra.searchpath" for o in overrides):
        return
    options = model_options()
    for o in overrides:
        value = o.value() if o.key_or_group == "model" and not o.is_delete() else None
        if not isinstance(value, str) or value in options:
            continue
        cfg = value if value.endswith(".cfg") else f"path/to/{value}.cfg"
        raise ConfigError(
            f"model={value}: no model config of that name (the options: {', '.join(options)}); "
            f"a darknet cfg file loads with model={DARKNET_MODEL} model.cfg={cfg} (darknet's "
            "YOLOv2 [region] and Gaussian YOLOv3 [Gaussian_yolo] networks for inference only: "
            "predict.py, evaluate.py, export.py)"
        )


def check_resume_option_keys(overrides: list[Any], run: str | None, ckpt: str) -> None:
    """:func:`check_option_keys` for a resume of ``ckpt``: ``overrides`` (parsed) are those
    the resume composes, the run's saved ones under the command's when its run folder ``run``
    is known, else the command's (train.py's defaults with them, compared with what the
    checkpoint records). A key its group's composed option lacks is a :class:`ConfigError`
    saying what to write: with the run's options, leave the key out (a resume trains on the
    run's data and network) or start a new run from the run's weights; without them, give the
    group's option beside the key, as the checkpoint's run did."""
    found = _refused_key([o for o in overrides if o.key_or_group != RESUME_KEY], "train")
    if found is None:
        return
    row, choice, source, value = found
    head = (
        f"resume of ckpt_path={ckpt}: {row.key}={value}: only {row.group}={row.option} reads "
        f"{row.reads}"
    )
    if run is None:
        raise ConfigError(
            f"{head} ({_why(row, choice, source)}; a checkpoint without its run's saved config "
            f"resumes on the defaults with the command's overrides): give {row.group}="
            f"{row.option} {row.key}={value} (not +{row.key}=, which keeps {row.group}={choice})"
        )
    raise ConfigError(
        f"{head} ({_why(row, choice, source)}; a resume composes the run's saved options, "
        f"{run}/.hydra/overrides.yaml, under the command's): a resume trains on the run's "
        f"{row.group}; leave {row.key}= out, or start a new run from its weights: "
        f"{row.group}={row.option} {row.key}={value} module.pretrained={run}/weights/last.pt"
    )


def _refused_key(overrides: list[Any], app: str | None) -> tuple[OptionKey, Any, str, Any] | None:
    """The first key of :data:`OPTION_KEYS` in ``overrides`` that the option composed for its
    group lacks: the row, that option (``None``: none), where it came from (``given``,
    ``experiment``, ``default``) and the key's value; ``None`` when every key is read."""
    for row in OPTION_KEYS:
        given = [o for o in overrides if o.key_or_group == row.key and o.type.name == "CHANGE"]
        if not given:
            continue
        chosen = [o for o in overrides if o.key_or_group == row.group and not o.is_delete()]
        source = "given"
        if chosen:
            choice = chosen[-1].value()
        else:
            choice, source = _experiment_choice(overrides, row.group, row.option), "experiment"
            if choice is None and app is not None:
                choice = _defaults_choice(f"{app}.yaml", row.group, row.option)
                source = "default"
            if choice is None and row.null_default_takes_it:
                continue
        if choice == row.option or not isinstance(choice, str | None):
            continue
        return row, choice, source, given[-1].value()
    return None


def _why(row: OptionKey, choice: str | None, source: str) -> str:
    """Why ``row.key`` is not read: the ``row.group`` option ``choice`` composed, named with
    where it came from (``given``, the ``experiment``'s, the app's ``default``)."""
    if choice is None:
        return f"no {row.group}= is given, and the command has no default {row.group}"
    if source == "default":
        return f"no {row.group}= is given: the command's default {row.group}={choice} {row.others}"
    picked = " (the experiment's)" if source == "experiment" else ""
    return f"{row.group}={choice}{picked} {row.others}"


def _experiment_choice(overrides: list[Any], group: str, fine: str) -> Any:
    """The ``group`` option the last ``experiment=`` of ``overrides`` picks (``override
    /<group>`` in its defaults): None when it picks none or none is given, ``fine`` (nothing to
    refuse) for a sweep or an experiment this package does not ship."""
    given = [o.value() for o in overrides if o.key_or_group == "experiment" and not o.is_delete()]
    if not given:
        return None
    if not isinstance(given[-1], str):
        return fine
    return _defaults_choice(f"experiment/{given[-1]}.yaml", group, fine)


def _defaults_choice(config: str, group: str, fine: str) -> Any:
    """The ``group`` option the ``defaults:`` of the shipped config ``config`` (a path below
    ``configs/``) picks (``group: x`` or ``override /group: x``): None when it picks none,
    ``fine`` for a config that is not shipped."""
    file = resources.files("yolov4.configs").joinpath(*config.split("/"))
    if not file.is_file():
        return fine
    for entry in OmegaConf.to_container(OmegaConf.load(str(file))).get("defaults") or []:
        for key, value in entry.items() if isinstance(entry, dict) else ():
            if key.removeprefix("override").strip(" /") == group:
                return value
    return None
