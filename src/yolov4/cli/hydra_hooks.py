"""What the commands' configs ask of Hydra beyond its own: the resolvers they use, registered
when :mod:`yolov4.cli.common` is imported (every entry point imports it before Hydra composes).

``${yolov4.config_groups:}`` (``configs/hydra/help/yolov4.yaml``): ``--help``'s list of config
groups, those of the command's own defaults list with their options, where Hydra's
``$APP_CONFIG_GROUPS`` lists every folder of ``configs/``.
"""

from __future__ import annotations

from importlib import resources

from omegaconf import DictConfig, OmegaConf

__all__ = ["CONFIG_GROUPS_RESOLVER", "config_groups"]

CONFIG_GROUPS_RESOLVER = "yolov4.config_groups"


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


OmegaConf.register_new_resolver(CONFIG_GROUPS_RESOLVER, config_groups, replace=True)
