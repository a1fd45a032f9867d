"""``python train.py ckpt_path=<run>/checkpoints/last.ckpt [hydra.run.dir=<run>] [key=value ...]``:
the resumed run is the run's own config (its ``.hydra/overrides.yaml`` composed again, which
gives its ``.hydra/config.yaml``) with the resume command's overrides, in the run's directory.

Before Hydra starts (it rewrites ``<run>/.hydra/`` as soon as it does), :func:`resume_argv`
finds the run directory (``hydra.run.dir``, or the folder above ``checkpoints/``), puts the
run's saved overrides under the command's (a key of the command wins), composes the result and
compares it with the saved config: a change that cannot be resumed
(:func:`yolov4.training.resume.unresumable`: model, data, optimizer kind) is refused with a
:class:`ConfigError` naming the keys and nothing in the run is touched; the others are logged
by ``train.py`` (:data:`RESUME_LOG`). A checkpoint without its run's saved config resumes on
the defaults with the command's overrides, compared by the same rules with the config the
checkpoint records (:func:`check_recorded_config`): it records the data, network, optimizer
and module settings only, not a whole config to start from.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from yolov4.cli.common import (
    INTERRUPTED_EXIT,
    check_override_syntax,
    hold_folder,
)
from yolov4.cli.model_option import check_resume_option_keys
from yolov4.cli.resume_checkpoint import read_state, recorded_changes
from yolov4.cli.resume_refusals import refuse_finished, refuse_trained_run_dir
from yolov4.errors import ConfigError
from yolov4.training.requeue import REQUEUE_FILE
from yolov4.training.resume import (
    config_changes,
    format_changes,
    restoring_overrides,
    unresumable,
)

__all__ = [
    "resume_argv", "merge_overrides", "run_directory", "refuse_finished", "check_recorded_config",
    "recorded_changes", "main", "RESUME_LOG",
]  # fmt: skip

log = logging.getLogger(__name__)

CONFIG_MODULE = "yolov4.configs"
CONFIG_NAME = "train"
SAVED_CONFIG = ".hydra/config.yaml"
SAVED_OVERRIDES = ".hydra/overrides.yaml"
# what resume_argv found, logged by train.py once Hydra has set up the log (train.log)
RESUME_LOG: list[str] = []


def _key(override: Any) -> tuple[str, str | None]:
    return override.key_or_group, override.package


def merge_overrides(saved: list[str], given: list[str]) -> list[str]:
    """``saved`` (a run's ``overrides.yaml``) then ``given``; a saved override whose key (or
    group) ``given`` sets again is dropped, so the command's value wins, and so is one under a
    key or group ``given`` sets (``data=coco`` replaces the saved ``data.num_train=16``). A
    given ``~key`` of a key a saved ``+key=...`` added removes that one and goes itself
    (``~callbacks.early_stop`` after ``+callbacks.early_stop={...}``)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parser = OverridesParser.create()
    parsed = parser.parse_overrides(given)
    keys = {_key(o) for o in parsed}
    nodes = tuple(f"{k}." for k, _ in keys)
    saved_parsed = parser.parse_overrides(saved)
    kept = [
        s
        for s, o in zip(saved, saved_parsed)
        if _key(o) not in keys and not o.key_or_group.startswith(nodes)
    ]
    # ~key of a key a saved +key= added: both go (the key is not there to delete without it)
    added = {_key(o) for o in saved_parsed if o.is_add() and _key(o) in keys}
    given = [g for g, o in zip(given, parsed) if not (o.is_delete() and _key(o) in added)]
    return [*kept, *given]


def _value(overrides: list[str], key: str) -> str | None:
    from hydra.core.override_parser.overrides_parser import OverridesParser

    found = None
    for o in OverridesParser.create().parse_overrides(overrides):
        if o.key_or_group == key and not o.is_delete():
            value = o.value()
            found = None if value is None else str(value)
    return found


def run_directory(ckpt_path: str, run_dir: str | None) -> Path | None:
    """The run whose config a resume continues: ``run_dir`` (``hydra.run.dir``) when it holds a
    saved config, else ``<run>`` of ``<run>/checkpoints/<name>.ckpt``; ``None`` when neither
    has ``.hydra/config.yaml``. A checkpoint of one run (its folder has a saved config) resumed
    in another run's ``run_dir`` is a :class:`ConfigError`."""
    candidates = [Path(run_dir)] if run_dir else []
    ckpt = Path(ckpt_path).expanduser().absolute()
    own = ckpt.parent.parent if ckpt.parent.name == "checkpoints" else None
    if own is not None:
        candidates.append(own)
    found = next((c for c in candidates if (c / SAVED_CONFIG).is_file()), None)
    if run_dir and found is not None and own is not None and (own / SAVED_CONFIG).is_file():
        if own.resolve() != Path(run_dir).expanduser().resolve():
            raise ConfigError(
                f"ckpt_path={ckpt_path} is the checkpoint of the run {own}, and "
                f"hydra.run.dir={run_dir} is another run: resuming it there would train {own}'s "
                f"network on that run's config and write over its checkpoints. Resume {own} "
                f"in its own folder (leave hydra.run.dir out), or start a new run from its "
                f"weights with module.pretrained={own / 'weights' / 'last.pt'}"
            )
    return found


def _compose(overrides: list[str]) -> dict[str, Any]:
    from hydra import compose, initialize_config_module

    with initialize_config_module(config_module=CONFIG_MODULE, version_base="1.3"):
        task = [o for o in overrides if not o.startswith(("hydra.", "hydra/"))]
        cfg = compose(CONFIG_NAME, overrides=task)
    return OmegaConf.to_container(cfg, resolve=False)


def _stale_overrides(saved: list[str]) -> dict[str, str]:
    """Each of ``saved`` that does not compose with the shipped configs on top of the saved
    overrides before it that do (group selections first: ``data.train.images=`` needs the
    ``data=yolo`` beside it), with the first line of Hydra's reason."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parsed = OverridesParser.create().parse_overrides(saved)
    ordered = sorted(zip(saved, parsed), key=lambda so: "." in so[1].key_or_group)
    accepted: list[str] = []
    stale = {}
    for override, _ in ordered:
        if override.startswith(("hydra.", "hydra/")):
            continue
        try:
            _compose([*accepted, override])
        except Exception as e:  # noqa: BLE001 - the reason is reported, not handled
            stale[override] = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        else:
            accepted.append(override)
    return stale


def _format_stale(stale: dict[str, str]) -> str:
    return "; ".join(f"{o!r} ({why})" for o, why in stale.items())


def resume_argv(argv: list[str]) -> list[str]:
    """``argv`` (``sys.argv``) for Hydra: unchanged unless it resumes (``ckpt_path=``) a run
    with a saved config (a new run in a trained run's ``hydra.run.dir`` is refused:
    :func:`refuse_trained_run_dir`); then the run's overrides merged with the given ones
    (:func:`merge_overrides`) and ``hydra.run.dir=<run>``. Raises :class:`ConfigError` naming
    the keys when the resumed config changes what a resume cannot."""
    from hydra._internal.utils import get_args_parser

    RESUME_LOG.clear()
    args = get_args_parser().parse_args(argv[1:])
    given = list(args.overrides or [])
    ckpt = _value(given, "ckpt_path")
    run_dir = _value(given, "hydra.run.dir")
    if ckpt is None and run_dir is not None and not args.multirun:
        if not _prints_only(args) and Path(run_dir).is_dir():
            hold_folder(run_dir, "hydra.run.dir=")  # a run writing there now: said first
        refuse_trained_run_dir(Path(run_dir))
        requeued = Path(run_dir) / "checkpoints" / REQUEUE_FILE
        if requeued.is_file() and (Path(run_dir) / SAVED_CONFIG).is_file():
            # a requeued job's command resumes requeue.ckpt by itself (train.py): the same
            # checks, before Hydra rewrites the run's saved config with this command's
            _check_resumable(Path(run_dir), given, given, str(requeued))
        if not _prints_only(args):  # a second train.py there now: refused
            hold_folder(run_dir, "hydra.run.dir=")
        return argv
    if ckpt is None or args.multirun:
        return argv
    run = run_directory(ckpt, run_dir)
    if run is None:
        _check_option_keys(given, None, ckpt)
        check_recorded_config(ckpt, given)
        return argv
    saved = OmegaConf.to_container(OmegaConf.load(run / SAVED_OVERRIDES)) or []
    merged = merge_overrides([str(s) for s in saved], given)
    if not _prints_only(args):  # the run still writing there: said before any other check
        hold_folder(run, "the resumed run's folder ")
    _check_option_keys(merged, run, ckpt)
    _check_resumable(run, merged, given, ckpt)
    flags = [a for a in argv[1:] if a not in set(given)]
    extra = [] if run_dir else [f"hydra.run.dir={run}"]
    return [argv[0], *flags, *merged, *extra]


def _check_option_keys(overrides: list[str], run: Path | None, ckpt: str) -> None:
    """``model.cfg=`` / ``data.file=`` among the ``overrides`` a resume composes, beside an
    option of their group that lacks them (:func:`check_resume_option_keys`); overrides
    Hydra cannot parse are left to it."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import OverrideParseException

    try:
        parsed = OverridesParser.create().parse_overrides(overrides)
    except OverrideParseException:
        return
    check_resume_option_keys(parsed, None if run is None else str(run), ckpt)


def _prints_only(args: Any) -> bool:
    """``--cfg``, ``--help``, ``--hydra-help``, ``--info``: Hydra prints and runs nothing."""
    return bool(args.cfg or args.help or args.hydra_help or args.info)


def _check_resumable(run: Path, merged: list[str], given: list[str], ckpt: str) -> None:
    """``merged`` (the run's saved overrides under the command's, ``given``) against the run's
    saved config: a :class:`ConfigError` for overrides that do not compose, a change a
    resume cannot make, or a run ``ckpt`` has finished; else the change, in :data:`RESUME_LOG`."""
    old = OmegaConf.to_container(OmegaConf.load(run / SAVED_CONFIG), resolve=False)
    try:
        new = _compose(merged)
    except Exception:  # noqa: BLE001 - Hydra reports the same composition error itself
        new = None
        stale = _stale_overrides([s for s in merged if s not in given])
        if stale:
            raise ConfigError(
                f"resume of {run}: the run's saved overrides ({run / SAVED_OVERRIDES}) "
                f"{_format_stale(stale)} do not compose with the installed version's configs "
                f"(keys they do not have: docs/renamed.md says what to use); remove or rename "
                f"those lines in "
                f"{run / SAVED_OVERRIDES} and run the same command again (the checkpoint and "
                f"{run / SAVED_CONFIG} are untouched)"
            ) from None
    if new is not None:
        changes = config_changes(old, new)
        refused = unresumable(changes)
        if refused:
            raise ConfigError(
                f"resume of {run}: {format_changes(changes, refused)} cannot be resumed "
                f"(the checkpoint's network, data and optimizer are the run's: "
                f"{run / SAVED_CONFIG}); resume with the run's model and data keys, or start a "
                f"new run from its weights with module.pretrained={run}/weights/last.pt"
            )
        RESUME_LOG.extend(
            refuse_finished(run, ckpt, new.get("trainer") or {}, new.get("callbacks"))
        )
        RESUME_LOG.append(
            f"resume of {run} from {ckpt}: the run's config ({run / SAVED_CONFIG}) "
            + (f"with {format_changes(changes)}" if changes else "unchanged")
        )


def check_recorded_config(ckpt: str, given: list[str]) -> None:
    """A resume of a checkpoint without its run's saved config (a checkpoint copied out of
    ``<run>/checkpoints/``, or a run folder without ``.hydra/``): the config is the defaults with
    ``given``, compared with the config the checkpoint records by the rules of a resume in
    place (:func:`unresumable`). A refused change is a :class:`ConfigError` naming the keys,
    the checkpoint's values and the given ones, and the overrides that give the checkpoint's
    back; the others are logged (:data:`RESUME_LOG`). A file that cannot be read or composed
    is left to ``train.py`` and Hydra to report."""
    where = f"resume of ckpt_path={ckpt}: no {SAVED_CONFIG} beside it or in hydra.run.dir"
    hparams = (read_state(ckpt) or {}).get("hyper_parameters")
    changes = new = None
    if isinstance(hparams, dict):
        try:
            new = _compose(given)
            changes = recorded_changes(hparams, new)
        except Exception:  # noqa: BLE001 - Hydra, the model config or train.py report it
            changes = None
    if changes is None:
        RESUME_LOG.append(f"{where}: the config is the defaults with the command's overrides")
        return
    refused = unresumable(changes)
    if refused:
        other = [k for k in changes if k not in refused]
        raise ConfigError(
            f"{where}: the config is the defaults with this command's overrides, compared with "
            f"the config the checkpoint records (hyper_parameters; checkpoint -> given): "
            f"{format_changes(changes, refused)} cannot be resumed (the checkpoint's network, "
            f"data and optimizer are its run's). Give the checkpoint's values: "
            f"{restoring_overrides(changes, refused, new)}"
            + (f" (these differ too, and would apply: {format_changes(changes, other)})"
               if other else "")
            + f"; or start a new run from its weights with module.pretrained={ckpt}"
        )  # fmt: skip
    RESUME_LOG.append(
        f"{where}: the config is the defaults with the command's overrides, "
        + (
            f"which differ from the config the checkpoint records in {format_changes(changes)}"
            if changes
            else "the data, model and optimizer the checkpoint records"
        )
    )


def main(app: Any) -> Any:
    """Run the Hydra ``app`` on :func:`resume_argv`'s arguments; a refused resume exits with its
    message (status 1) before anything is written."""
    check_override_syntax(sys.argv, "train")
    try:
        sys.argv = resume_argv(sys.argv)
    except ConfigError as e:
        print(f"Error: ConfigError: {e}", file=sys.stderr)
        raise SystemExit(1) from e
    try:
        return app()
    except KeyboardInterrupt:  # Ctrl-C before the fit (set-up, data, model): nothing to save
        print("\nstopped (Ctrl-C) before training started: nothing was saved", file=sys.stderr)
        raise SystemExit(INTERRUPTED_EXIT) from None
