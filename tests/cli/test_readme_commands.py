"""Every command in the ```` ```bash ```` blocks of README.md and docs/**/*.md is checked against
the code: a command that names a key, option, flag, extra or file the project lost fails here,
not in a user's first hour.

The convention (what a docs author needs to know):

- Only ```` ```bash ```` blocks are commands. Output, logs and file trees go in ```` ```text ````
  (or ```` ```json ````) blocks, which are not read.
- Each line (``\\``-continued lines joined) is split at ``&&``, ``||``, ``;`` and ``|`` into simple
  commands; ``# comments``, ``VAR=value`` prefixes, ``[optional ...]`` synopsis tokens and
  ``<placeholders>`` / ``...`` are allowed.
- A project command is composed or parsed the way the app would: ``python train.py`` /
  ``evaluate.py`` / ``export.py`` / ``predict.py``, ``python -m yolov4 <app>``, ``yolov4-<app>``
  and ``python -m yolov4.cli.<app>`` compose with the shipped Hydra configs (every dotted key must
  land in the composed config); ``yolov4-serve`` and ``python -m yolov4.models`` go through their
  argparse parsers; ``python benchmarks/<x>.py --flag`` needs the script and each flag in it;
  ``pip install`` needs each extra in pyproject.toml; ``pytest -m`` needs declared markers;
  ``python -c`` must compile; launchers (``torchrun``, ``srun``) are stripped and the command
  they launch is checked.
- Commands of other programs are shown, not run: they are listed in ``SHOWN_NOT_RUN`` below with
  the reason. A first word that is neither a project command nor listed fails the test, so a new
  kind of command is classified on purpose.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest
from hydra import compose, initialize_config_module
from hydra.errors import HydraException

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[2]
APPS = ("train", "evaluate", "export", "predict")
# First words of commands that belong to other programs: shown in the docs, never run by tests.
SHOWN_NOT_RUN = {
    "curl": "an HTTP client against a running yolov4-serve (the serve tests make those requests)",
    "tensorboard": "TensorBoard's own viewer of the run's logs",
    "tritonserver": "NVIDIA Triton Inference Server, run on the user's machine",
    "docker": "container runtime on the user's machine",
    "sbatch": "SLURM's job submission (the script it submits is checked where it is shown)",
    "squeue": "SLURM's queue listing",
    "scancel": "SLURM's job cancellation",
    "nvidia-smi": "the GPU driver's status tool",
    "mlflow": "MLflow's own server / UI",
    "wandb": "Weights & Biases' own CLI",
    "optuna-dashboard": "Optuna's own dashboard",
    "cd": "shell navigation",
    "grep": "a shell tool (reading the CPU's flags from /proc/cpuinfo)",
    "sort": "a shell tool (the end of a pipe)",
    "export": "shell variable (an environment setting shown for the next command)",
    "mkdocs": "the documentation builder (tests/test_docs.py runs `mkdocs build --strict`)",
}
LAUNCHERS = {"torchrun", "srun"}


def doc_files() -> list[Path]:
    docs = sorted(p for p in (ROOT / "docs").rglob("*.md") if "hooks" not in p.parts)
    return [ROOT / "README.md", *docs]


def doc_commands() -> list[tuple[str, str]]:
    """``(where, simple command)`` for every command of every bash block."""
    found = []
    for path in doc_files():
        text = path.read_text()
        for block in re.finditer(r"```bash\n(.*?)```", text, flags=re.S):
            line_no = text[: block.start()].count("\n") + 2
            for offset, line in enumerate(block.group(1).replace("\\\n", " ").splitlines()):
                line = line.strip()
                if not line or line.startswith("#"):
                    continue
                where = f"{path.relative_to(ROOT)}:{line_no + offset}"
                for part in re.split(r"\s(?:&&|\|\||;|\|)\s", line):
                    found.append((where, part.strip()))
    return found


def tokens_of(command: str) -> list[str]:
    """Shell words, comments and env prefixes dropped, placeholders made concrete."""
    command = command.replace("<run>", "run").replace("...", "x")
    command = re.sub(r"<([^<>\s]*)>", r"\1", command)
    words = shlex.split(command, comments=True)
    while words and re.match(r"^[A-Za-z_][A-Za-z0-9_]*=", words[0]):
        words.pop(0)
    return words


def strip_launcher(words: list[str]) -> list[str]:
    """``torchrun --opt v ... train.py k=v`` -> ``python train.py k=v``; ``srun cmd`` -> cmd."""
    if words[0] == "srun":
        return words[1:]
    rest = words[1:]
    while rest and rest[0].startswith("-"):
        rest = rest[1:] if "=" in rest[0] else rest[2:]
    return ["python", *rest]


SWEEP = re.compile(r"^(?:choice|range|interval|tag|glob|shuffle|sort)\(|,(?![^\[]*\])")


def compose_app(name: str, words: list[str], tmp_path) -> None:
    """Compose ``name``'s config with the overrides among ``words``; each dotted key must land.
    Under ``-m``/``--multirun`` a sweep (``a=1,2``, ``a=interval(0,1)``) composes with its first
    value when it is a plain list, else its key must exist."""
    overrides = [t for t in words if "=" in t and not t.startswith(("[", "-"))]
    multirun = "-m" in words or "--multirun" in words
    sweeps = {o for o in overrides if multirun and SWEEP.search(o.split("=", 1)[1])}
    plain = [o for o in overrides if o not in sweeps]
    for o in sweeps:
        key, value = o.split("=", 1)
        if "(" not in value:
            plain.append(f"{key}={value.split(',')[0]}")
    hydra_cfg = any(o.lstrip("+~").startswith("hydra") for o in overrides)
    with initialize_config_module(config_module="yolov4.configs", version_base="1.3"):
        cfg = compose(
            name,
            overrides=[f"paths.output_dir={tmp_path}", *plain],
            return_hydra_config=hydra_cfg,
        )
    for override in overrides:
        key = override.split("=", 1)[0].lstrip("+~")
        if "." not in key or key.startswith("hydra") or "/" in key:
            continue
        node = cfg
        for part in key.split("."):
            assert part in node, f"{name}: {override}: {key} is not in the composed config"
            node = node[part]


def check_python(words: list[str], tmp_path) -> None:
    """``python ...``: an app script, ``-m <module>``, ``-c <code>`` or a benchmark script
    (after the interpreter's own ``-W <filter>`` / ``-X <option>``)."""
    while words[1] in ("-W", "-X"):
        words = [words[0], *words[3:]]
    if words[1] == "-c":
        compile(words[2], "<docs python -c>", "exec")
        return
    if words[1] == "-m":
        check_module(words[2], words[3:], tmp_path)
        return
    script = words[1]
    if script.removesuffix(".py") in APPS and "/" not in script:
        compose_app(script.removesuffix(".py"), words[2:], tmp_path)
        return
    path = ROOT / script
    assert path.is_file(), f"{script}: no such file in the repository"
    source = path.read_text()
    for flag in (w.strip("[]").split("=")[0] for w in words[2:] if w.lstrip("[").startswith("--")):
        assert f'"{flag}"' in source, f"{script}: the option {flag} is not defined there"


def check_module(module: str, args: list[str], tmp_path) -> None:
    if module == "yolov4":
        assert args and args[0] in (*APPS, "serve", "anchors", "check-data"), (
            f"python -m yolov4 {args[:1]}"
        )
        check_words([f"yolov4-{args[0]}", *args[1:]], tmp_path)
    elif module == "yolov4.anchors":
        compose_app("anchors", args, tmp_path)
    elif module == "yolov4.cli.check_data":
        check_words(["yolov4-check-data", *args], tmp_path)
    elif module.startswith("yolov4.cli."):
        compose_app(module.rsplit(".", 1)[1], args, tmp_path)
    elif module == "yolov4.models":
        from yolov4.models.__main__ import _parser

        _parser().parse_args([a.strip("[]") for a in args if a not in ("[", "]")])
    elif module == "yolov4.serve":
        check_words(["yolov4-serve", *args], tmp_path)
    elif module == "pip":
        check_words(["pip", *args], tmp_path)
    elif module == "pytest":
        check_words(["pytest", *args], tmp_path)
    else:
        raise AssertionError(f"python -m {module}: not a project command the test knows")


def check_pip(args: list[str]) -> None:
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    extras = set(extras["optional-dependencies"])
    for arg in args:
        for name in re.findall(r"(?:^|\.|yolov4)\[([\w,-]+)\]", arg):
            for extra in name.split(","):
                assert extra in extras, f"pip install {arg}: no extra {extra!r} in pyproject.toml"


def check_pytest(args: list[str]) -> None:
    ini = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["pytest"]["ini_options"]
    markers = {m.split(":")[0] for m in ini["markers"]}
    dev = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"][
        "dev"
    ]
    for i, arg in enumerate(args):
        if arg == "-m":
            names = set(re.findall(r"[A-Za-z_]\w*", args[i + 1])) - {"not", "and", "or"}
            assert names <= markers, f"pytest -m {args[i + 1]!r}: unknown markers"
        elif arg == "-n":  # pytest-xdist's worker count: a dev dependency
            assert args[i + 1] == "auto" or args[i + 1].isdigit(), f"pytest -n {args[i + 1]!r}"
            assert any(d.startswith("pytest-xdist") for d in dev), "pytest -n: no pytest-xdist"
        elif not arg.startswith("-") and (i == 0 or args[i - 1] not in ("-m", "-n")):
            assert (ROOT / arg.split("::")[0]).exists(), f"pytest {arg}: no such path"


def check_words(words: list[str], tmp_path) -> None:
    first = words[0]
    if first in LAUNCHERS:
        check_words(strip_launcher(words), tmp_path)
    elif first in ("python", "python3"):
        check_python(words, tmp_path)
    elif first.startswith("yolov4-") and first[7:] in (*APPS, "anchors"):
        compose_app(first[7:], words[1:], tmp_path)
    elif first == "yolov4-check-data":
        compose_app("train", [w for w in words[1:] if not w.startswith("--")], tmp_path)
    elif first == "yolov4-serve":
        from yolov4.serve.__main__ import parse_args

        args = [w for w in words[1:] if not w.startswith("[")]
        if "--help" in args:  # prints the options and exits 0
            with pytest.raises(SystemExit) as done:
                parse_args(args)
            assert done.value.code == 0
            return
        parse_args(args if args else ["run/export"])
    elif first == "pip":
        check_pip(words[1:])
    elif first == "pytest":
        check_pytest(words[1:])
    elif first in (".ci/run", "bash"):
        script = ROOT / (words[1] if first == "bash" else first)
        assert script.is_file(), f"{script.relative_to(ROOT)}: no such file"
    else:
        assert first in SHOWN_NOT_RUN, (
            f"{first!r} is neither a project command this test checks nor listed in "
            f"SHOWN_NOT_RUN (add it there, with why it is shown but not run)"
        )


COMMANDS = doc_commands()


def test_the_docs_have_the_commands_of_every_entry_point():
    firsts = [tokens_of(c)[:2] for _, c in COMMANDS]
    apps = {w[1].removesuffix(".py") for w in firsts if w[0] == "python" and len(w) > 1}
    assert set(APPS) <= apps
    assert any(w[0] == "yolov4-serve" for w in firsts)
    assert len(COMMANDS) >= 60


def test_the_readme_names_both_test_commands():
    readme = (ROOT / "README.md").read_text()
    assert "pytest -n auto" in readme and "pytest -m slow" in readme and ".ci/run" in readme
    ci = (ROOT / ".ci" / "run").read_text().splitlines()
    assert "pytest -n auto" in ci and "pytest -m slow" in ci  # every test, in two runs


@pytest.mark.parametrize("where, command", COMMANDS, ids=[f"{w}" for w, _ in COMMANDS])
def test_docs_command_composes(tmp_path, where, command):
    check_words(tokens_of(command), tmp_path)


def test_a_multirun_sweep_composes_with_its_first_value(tmp_path):
    words = tokens_of("python train.py -m model=yolov4-tiny,yolov4 'optim.lr=interval(0.001,0.1)'")
    check_words(words, tmp_path)


@pytest.mark.parametrize(
    "command, error",
    [
        ("python train.py modell=yolov4", HydraException),  # an unknown group
        ("python train.py module.ema_decayy=0.9", HydraException),  # an unknown key
        ("python evaluate.py model=yolov9", HydraException),  # an unknown option
        ("yolov4-serve run/export --no-such-flag 1", SystemExit),  # argparse refuses it
        ("python benchmarks/predict.py --no-such-flag", AssertionError),
        ('pip install -e ".[no-such-extra]"', AssertionError),
        ("pytest -m fast", AssertionError),
        ("pytest -n many", AssertionError),
        ("frobnicate --now", AssertionError),  # neither a project command nor shown-only
        ("python train.py -m module.ema_decayy=0.9,0.99", HydraException),  # a swept unknown key
        ("python train.py -m optim.lrr='interval(0.001,0.1)'", AssertionError),
    ],
)
def test_a_broken_command_fails_the_check(tmp_path, command, error):
    with pytest.raises(error):
        check_words(tokens_of(command), tmp_path)


def options_table(page: Path) -> set[str]:
    """The option names of ``page``'s table headed ``| option | default |``: the backticked
    names of its first column (``model.num_classes`` counted as ``model``)."""
    lines = page.read_text().splitlines()
    start = next(i for i, ln in enumerate(lines) if ln.startswith("| option | default |"))
    names = set()
    for line in lines[start + 2 :]:
        if not line.startswith("|"):
            break
        names |= {n.split(".")[0] for n in re.findall(r"`([\w.]+)`", line.split("|")[1])}
    return names


def test_the_predict_options_table_lists_every_key_of_predict_yaml():
    """docs/guides/predict.md's options table against configs/predict.yaml: every key of the
    config is a row, and every row is a key or a config group of its defaults list."""
    import yaml

    config = yaml.safe_load((ROOT / "src/yolov4/configs/predict.yaml").read_text())
    groups = {next(iter(d)) for d in config.pop("defaults") if isinstance(d, dict)}
    keys = set(config) - {"hydra"}
    table = options_table(ROOT / "docs/guides/predict.md")
    assert keys - table == set(), "predict.yaml keys missing from the table"
    assert table - keys - groups == set(), "table rows that are not predict.yaml keys"
