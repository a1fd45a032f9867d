"""The documentation: the mkdocs site builds with ``--strict`` (no broken link, anchor, nav entry
or API reference), its configuration reference is generated from every shipped config, and the
README stays a short front page whose links resolve."""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "src" / "yolov4" / "configs"
README = (ROOT / "README.md").read_text()


def load_hook():
    path = ROOT / "docs" / "hooks" / "config_reference.py"
    spec = importlib.util.spec_from_file_location("config_reference", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_mkdocs_build_strict(tmp_path):
    done = subprocess.run(
        # not -q: mkdocs counts --strict's warnings only at the default log level
        [sys.executable, "-m", "mkdocs", "build", "--strict", "-d", str(tmp_path / "site")],
        cwd=ROOT,
        env={"NO_MKDOCS_2_WARNING": "1", "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=600,
    )
    log = done.stdout + done.stderr
    assert done.returncode == 0 and "WARNING" not in log, log
    page = (tmp_path / "site" / "reference" / "configuration" / "index.html").read_text()
    assert "module.ema_decay" in page and "experiment=coco_yolov4" in page
    api = (tmp_path / "site" / "reference" / "api" / "index.html").read_text()
    assert "load_checkpoint" in api and "Predictor" in api


def test_configuration_reference_lists_every_option_and_key():
    text = load_hook().render_reference(CONFIGS)
    for path in sorted(CONFIGS.glob("*/*.yaml")):
        assert f"#### `{path.parent.name}={path.stem}`" in text, path
    for path in sorted(CONFIGS.glob("*.yaml")):
        assert f"### `{path.name}`" in text, path
    # every leaf key of an option file appears under its group, with its default
    module = yaml.safe_load((CONFIGS / "module" / "default.yaml").read_text())
    assert f"| `module.ema_decay` | `{module['ema_decay']}` |" in text
    assert "| `module.val_postprocess.conf` |" in text
    # the comment beside a key is its description
    assert "EMA of the weights (null: off)" in text
    # instantiation keys are not settings
    assert "module._target_" not in text
    # each group names the entry points that take it (what their --help lists)
    assert "one of: `botsort`, `bytetrack`, `ocsort`, `sort`. In the defaults list of: " \
        "`predict.yaml`." in text  # fmt: skip
    assert "`adamw`, `sgd`. In the defaults list of: `train.yaml`." in text


def test_hook_refuses_a_page_without_its_marker():
    hook = load_hook()

    class Page:
        class file:
            src_uri = hook.PAGE

    with pytest.raises(ValueError, match="marker"):
        hook.on_page_markdown("# no marker", Page, {"config_file_path": "mkdocs.yml"}, None)


def test_readme_is_a_short_front_page_whose_links_resolve():
    assert len(README.splitlines()) <= 250
    for target in re.findall(r"\]\(([^)#]+)(?:#[^)]*)?\)", README):
        if "://" in target:
            continue
        assert (ROOT / target).exists(), f"README links to {target}, which does not exist"


@pytest.mark.parametrize(
    "path", [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))], ids=lambda p: p.name
)
def test_docs_name_no_path_outside_the_repository(path):
    text = path.read_text()
    assert not re.search(r"(?<![\w.])\.\./(?:\.\./)*shared|/work/", text), path


# history wording: the docs describe the code as it is, not how it changed
HISTORY = re.compile(r"\b(?:no longer|as before|previously|was changed|still works?)\b", re.I)


@pytest.mark.parametrize(
    "path", [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))], ids=lambda p: p.name
)
def test_docs_describe_the_code_as_it_is_not_its_history(path):
    found = [m.group(0) for m in HISTORY.finditer(path.read_text())]
    assert not found, f"{path.relative_to(ROOT)}: history wording {found}"
