"""What the commands' configs ask of Hydra beyond its own: the resolvers they use, registered
when :mod:`yolov4.cli.common` is imported (every entry point imports it before Hydra composes),
and the callback that makes a run's folder.

``hydra.run.dir: ${yolov4.new_dir:outputs/predict/${now:...}}`` (predict, evaluate, export,
anchors): a folder no other run has, ``<date>_<time>`` or ``<date>_<time>_2``, ``_3``, ...
where that exists (:func:`yolov4.core.files.new_dir`). The resolver names the path and makes
nothing, so ``--cfg hydra --resolve`` and ``--help`` create no folder; :class:`NewRunDir`
(the config's ``hydra.callbacks.new_run_dir``) makes the folder as a run starts, before Hydra
writes ``.hydra/`` and the log there, and puts the folder made in ``hydra.run.dir``: the saved
``.hydra/hydra.yaml`` and ``HydraConfig`` (which Lightning's DDP launcher passes to the
processes it starts) name it. A ``hydra.run.dir=`` given on the command line is used as given.

``${yolov4.config_groups:}`` (``configs/hydra/help/yolov4.yaml``): ``--help``'s list of config
groups, those of the command's own defaults list with their options, where Hydra's
``$APP_CONFIG_GROUPS`` lists every folder of ``configs/``.
"""

from __future__ import annotations

from importlib import resources
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf, open_dict, read_write

from yolov4.core.files import new_dir

__all__ = ["NEW_DIR_RESOLVER", "CONFIG_GROUPS_RESOLVER", "NewRunDir", "config_groups"]

NEW_DIR_RESOLVER = "yolov4.new_dir"
CONFIG_GROUPS_RESOLVER = "yolov4.config_groups"


class NewRunDir(Callback):
    """Makes the run's folder (:func:`~yolov4.core.files.new_dir`) where ``hydra.run.dir`` is
    ``${yolov4.new_dir:<path>}``, and writes the folder made into ``hydra.run.dir``."""

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        raw = OmegaConf.to_container(config.hydra.run, resolve=False)["dir"]
        if not (isinstance(raw, str) and raw.startswith("${" + NEW_DIR_RESOLVER + ":")):
            return  # given on the command line, or a config's own path
        made = new_dir(config.hydra.run.dir)
        with read_write(config.hydra.run), open_dict(config.hydra.run):
            config.hydra.run.dir = str(made)


def config_groups(*, _root_: DictConfig) -> str:
    """One line per config group the composed config's defaults list chose from (Hydra's
    ``hydra.runtime.choices``; its own ``hydra/`` groups left out): ``group: option, ...``, the
    options being the group's files in the package's ``configs/``."""
    folder = resources.files("yolov4.configs")
    lines = []
    for group in sorted(g for g in _root_.hydra.runtime.choices if not g.startswith("hydra/")):
        options = sorted(p.name[: -len(".yaml")] for p in folder.joinpath(group).iterdir()
                         if p.name.endswith(".yaml"))  # fmt: skip
        lines.append(f"{group}: {', '.join(options)}")
    return "\n".join(lines)


OmegaConf.register_new_resolver(NEW_DIR_RESOLVER, str, replace=True)  # the path, made by NewRunDir
OmegaConf.register_new_resolver(CONFIG_GROUPS_RESOLVER, config_groups, replace=True)
