"""mkdocs hook: the configuration reference, generated from the Hydra configs at build time.

``docs/reference/configuration.md`` holds a marker line; this hook replaces it with one section
per entry-point config (``train.yaml``, ...) and per config group (``model/``, ``data/``, ...):
each option, its header comment, and every key with its default and its comment, read from the
yaml files the package ships (``src/yolov4/configs``). Nothing is copied by hand, so the page
cannot drift from the configs. ``render_reference(root)`` is importable (the tests call it).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import yaml

MARKER = "<!-- generated: configuration reference -->"
PAGE = "reference/configuration.md"
CONFIGS = Path("src") / "yolov4" / "configs"
_KEY = re.compile(r"^(\s*)([A-Za-z_][\w\-]*)\s*:(.*)$")


def _comments(text: str) -> tuple[str, dict[str, str]]:
    """The file's header comment and ``{dotted key: comment}`` from each key's line (a trailing
    ``# ...``) and the comment lines indented under it."""
    header: list[str] = []  # lines kept: a synopsis of commands reads as written
    found: dict[str, str] = {}
    stack: list[tuple[int, str]] = []
    last = None
    seen_key = False
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.startswith("#"):
            body = stripped.lstrip("#").strip()
            if not seen_key:
                if not body.startswith("@package"):
                    header.append(body)
            elif last is not None and line.index("#") > last[1]:
                found[last[0]] = f"{found.get(last[0], '')} {body}".strip()
            continue
        match = _KEY.match(line)
        if not match or stripped.startswith("-"):
            last = None
            continue
        seen_key = True
        indent, key, rest = len(match.group(1)), match.group(2), match.group(3)
        while stack and stack[-1][0] >= indent:
            stack.pop()
        dotted = ".".join([k for _, k in stack] + [key])
        stack.append((indent, key))
        comment = rest.split(" #", 1)[1].strip() if " #" in rest else ""
        if rest.strip().startswith("#"):
            comment = rest.strip().lstrip("#").strip()
        if comment:
            found[dotted] = comment
        last = (dotted, indent)
    return "\n".join(header).strip(), found


def _flatten(node: object, prefix: str = "") -> list[tuple[str, object]]:
    """Leaf ``(dotted key, value)`` pairs; an empty mapping or a list is one leaf."""
    if isinstance(node, dict) and node:
        out = []
        for key, value in node.items():
            out += _flatten(value, f"{prefix}.{key}" if prefix else str(key))
        return out
    return [(prefix, node)]


def _cell(text: str) -> str:
    """Text for a table cell: pipes and brackets escaped (``[net]`` is not a link)."""
    for char in "|[]":
        text = text.replace(char, "\\" + char)
    return text.replace("\n", " ")


def _option(path: Path, prefix: str) -> list[str]:
    """One option file: its header comment, its ``defaults`` and a table of its keys."""
    text = path.read_text()
    header, comments = _comments(text)
    data = yaml.safe_load(text) or {}
    lines = ["```text", header, "```", ""] if header else []
    defaults = data.pop("defaults", None) if isinstance(data, dict) else None
    if defaults:
        items = ", ".join(f"`{json.dumps(d) if isinstance(d, dict) else d}`" for d in defaults)
        lines += [f"Defaults list: {items}", ""]
    rows = _flatten(data) if isinstance(data, dict) else []
    # Hydra's own instantiation keys (_target_, _partial_, ...) are not settings
    rows = [(k, v) for k, v in rows if k and not k.rsplit(".", 1)[-1].startswith("_")]
    if rows:
        lines += ["| key | default | |", "| --- | --- | --- |"]
        for key, value in rows:
            shown = f"{prefix}.{key}" if prefix else key
            default = json.dumps(value, default=str)
            comment = comments.get(key, "")
            code = shown.replace("|", "\\|"), default.replace("|", "\\|")
            lines.append(f"| `{code[0]}` | `{code[1]}` | {_cell(comment)} |")
        lines.append("")
    return lines


def _takers(root: Path) -> dict[str, list[str]]:
    """``{group: [entry-point config, ...]}``: the entry points whose defaults list names the
    group (what each command's ``--help`` lists)."""
    takers: dict[str, list[str]] = {}
    for path in sorted(root.glob("*.yaml")):
        for entry in (yaml.safe_load(path.read_text()) or {}).get("defaults") or []:
            if isinstance(entry, dict):
                for group in entry:
                    takers.setdefault(group, []).append(path.name)
    return takers


def render_reference(root: Path) -> str:
    """The reference's markdown for the config tree at ``root``."""
    root = Path(root)
    out = ["## Entry points", ""]
    for path in sorted(root.glob("*.yaml")):
        out += [f"### `{path.name}`", "", *_option(path, "")]
    out += ["## Config groups", ""]
    groups = sorted(p for p in root.iterdir() if p.is_dir() and any(p.glob("*.yaml")))
    takers = _takers(root)
    for group in groups:
        options = sorted(group.glob("*.yaml"))
        names = ", ".join(f"`{p.stem}`" for p in options)
        used = ", ".join(f"`{name}`" for name in takers.get(group.name, [])) or "none"
        out += [f"### `{group.name}`", "", f"`{group.name}=<option>`, one of: {names}. "
                f"In the defaults list of: {used}.", ""]  # fmt: skip
        for path in options:
            text = path.read_text()
            prefix = "" if "@package _global_" in text else group.name
            out += [f"#### `{group.name}={path.stem}`", "", *_option(path, prefix)]
    return "\n".join(out)


def on_page_markdown(markdown: str, page, config, files) -> str:  # noqa: ARG001 (mkdocs API)
    if page.file.src_uri != PAGE:
        return markdown
    if MARKER not in markdown:
        raise ValueError(f"{PAGE}: expected the marker line {MARKER!r}, found none")
    root = Path(config["config_file_path"]).parent / CONFIGS
    return markdown.replace(MARKER, render_reference(root))
