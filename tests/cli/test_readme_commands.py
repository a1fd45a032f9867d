"""Every ``python train.py|evaluate.py|export.py|predict.py ...`` command in the README's bash
blocks composes with the package's configs: each group option and key it names exists (a README
command that names a key the code lost fails here, not in a user's first hour)."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest
from hydra import compose, initialize_config_module

README = (Path(__file__).resolve().parents[2] / "README.md").read_text()
COMMAND = re.compile(r"(?:.*&&\s*)?python (train|evaluate|export|predict)\.py\b(.*)")


def readme_commands() -> list[tuple[str, list[str]]]:
    """``(config name, overrides)`` of each command; ``[...]`` synopsis options, flags
    (``--cfg job``) and comments dropped; placeholders (``<run>``, ``...``) made concrete."""
    found = []
    for block in re.findall(r"```bash\n(.*?)```", README, flags=re.S):
        for line in block.replace("\\\n", " ").splitlines():
            m = COMMAND.match(line.strip())
            if not m:
                continue
            args = m.group(2).split(" #")[0].replace("<run>", "run").replace("...", "x")
            tokens = shlex.split(args)
            overrides = [t for t in tokens if "=" in t and not t.startswith(("[", "-"))]
            found.append((m.group(1), overrides))
    return found


COMMANDS = readme_commands()


def test_the_readme_has_the_commands_of_every_entry_point():
    assert {name for name, _ in COMMANDS} == {"train", "evaluate", "export", "predict"}
    assert len(COMMANDS) >= 20


@pytest.mark.parametrize(
    "name, overrides", COMMANDS, ids=[f"{n}:{' '.join(o)[:60]}" for n, o in COMMANDS]
)
def test_readme_command_composes(tmp_path, name, overrides):
    with initialize_config_module(config_module="yolov4.configs", version_base="1.3"):
        cfg = compose(name, overrides=[f"paths.output_dir={tmp_path}", *overrides])
    # Hydra refuses an unknown group option or key; a dotted key must also land where it says
    for override in overrides:
        key = override.split("=", 1)[0]
        if "." not in key:
            continue
        node = cfg
        for part in key.lstrip("+").split("."):
            assert part in node, f"{name}.py {override}: {key} is not in the composed config"
            node = node[part]
