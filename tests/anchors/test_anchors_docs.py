"""Every anchors and train command in docs/anchors.md composes with the package's configs."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest
from hydra import compose, initialize_config_module

DOC = Path(__file__).resolve().parents[2] / "docs" / "anchors.md"
COMMAND = re.compile(
    r"(python -m yolov4\.anchors|python -m yolov4 anchors|yolov4-anchors|python train\.py)\b(.*)"
)


def doc_commands() -> list[tuple[str, list[str]]]:
    found = []
    for block in re.findall(r"```bash\n(.*?)```", DOC.read_text(), flags=re.S):
        for line in block.splitlines():
            m = COMMAND.match(line.strip())
            if m:
                name = "train" if "train.py" in m.group(1) else "anchors"
                found.append((name, shlex.split(m.group(2).split(" #")[0])))
    return found


COMMANDS = doc_commands()


def test_the_page_has_both_commands():
    assert {n for n, _ in COMMANDS} == {"anchors", "train"} and len(COMMANDS) >= 6


@pytest.mark.parametrize("name, overrides", COMMANDS, ids=[f"{n}:{o}"[:70] for n, o in COMMANDS])
def test_doc_command_composes(tmp_path, name, overrides):
    with initialize_config_module(config_module="yolov4.configs", version_base="1.3"):
        cfg = compose(name, overrides=[f"paths.output_dir={tmp_path}", *overrides])
    for override in overrides:
        node = cfg
        for part in override.split("=", 1)[0].split("."):
            assert part in node, override
            node = node[part]
