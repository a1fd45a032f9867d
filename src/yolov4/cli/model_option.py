"""The model option of a command line: ``model.cfg=PATH`` belongs to ``model=darknet``.

Of the shipped model options only ``configs/model/darknet.yaml`` has a ``cfg`` key (a zoo option
is the network its name says), and no app's config or shipped experiment picks it: Hydra refuses
``model.cfg=PATH`` with any other ("Could not override 'model.cfg'", suggesting
``+model.cfg=``), and :func:`check_model_cfg_override` names ``model=darknet model.cfg=PATH``
instead, before Hydra runs.
"""

from __future__ import annotations

from importlib import resources
from typing import Any

from omegaconf import OmegaConf

from yolov4.errors import ConfigError

__all__ = ["DARKNET_MODEL", "check_model_cfg_override"]

DARKNET_MODEL = "darknet"  # configs/model/<this>.yaml: the model option of a cfg file


def check_model_cfg_override(overrides: list[Any]) -> None:
    """:class:`ConfigError` for ``model.cfg=PATH`` in Hydra's parsed ``overrides`` when the
    model option composed is not :data:`DARKNET_MODEL`: the one given (``model=``), else the
    ``experiment=``'s, else the app config's default (never ``darknet``). A sweep of options,
    or an experiment this package does not ship, is left to Hydra."""
    given = [o for o in overrides if o.key_or_group == "model.cfg" and o.type.name == "CHANGE"]
    if not given:
        return
    chosen = [o for o in overrides if o.key_or_group == "model" and not o.is_delete()]
    choice = chosen[-1].value() if chosen else _experiment_model(overrides)
    if choice == DARKNET_MODEL or not isinstance(choice, str | None):
        return
    path = given[-1].value()
    if choice is None:
        why = "no model= is given: the command's default model, a zoo network, has no cfg key"
    else:
        picked = "" if chosen else " (the experiment's)"
        why = f"model={choice}{picked} is the zoo network its name says, with no cfg key"
    raise ConfigError(
        f"model.cfg={path}: only model={DARKNET_MODEL} reads a cfg file ({why}): give "
        f"model={DARKNET_MODEL} model.cfg={path}"
    )


def _experiment_model(overrides: list[Any]) -> Any:
    """The model option the last ``experiment=`` of ``overrides`` picks (``override /model``
    in its defaults): None when it picks none or none is given, :data:`DARKNET_MODEL` (nothing
    to refuse) for a sweep or an experiment this package does not ship."""
    given = [o.value() for o in overrides if o.key_or_group == "experiment" and not o.is_delete()]
    if not given:
        return None
    file = resources.files("yolov4.configs").joinpath("experiment", f"{given[-1]}.yaml")
    if not isinstance(given[-1], str) or not file.is_file():
        return DARKNET_MODEL
    for entry in OmegaConf.to_container(OmegaConf.load(str(file))).get("defaults") or []:
        for key, value in entry.items() if isinstance(entry, dict) else ():
            if key.removeprefix("override").strip(" /") == "model":
                return value
    return None
