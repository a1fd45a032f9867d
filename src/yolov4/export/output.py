"""Where an artifact is written, and how it replaces the one there.

:func:`check_output` runs before any export work: ``output`` must be a folder that is missing,
empty, or an artifact this project wrote (a valid ``metadata.json``); another folder only with
``overwrite=True`` and only while it holds no file of an artifact file's name (which the export
would replace); never a file, ``/``, the home folder, the working directory, a folder above
it, or a git checkout. The export is built in a temporary folder beside ``output``
(``.<name>.export-XXXXXXXX``, :func:`temp_dir`) and :func:`install` swaps it in:

1. every entry of the old folder the old artifact does not own (owned: the files its
   ``metadata.json`` lists, and ``metadata.json``) is hard-linked (copied where links are
   impossible) into the new folder, unless the new artifact has a file of that name;
2. the two folders are exchanged in one ``renameat2(RENAME_EXCHANGE)``: a reader finds the
   complete old artifact or the complete new one at ``output``, never neither;
3. the old folder (under the temporary name after the exchange) loses its artifact files, and entries the new
   folder lacks (made meanwhile) are moved over.

A SIGKILL before step 2 leaves the old artifact in place, after it the new one; what is left
under a temporary name holds only artifact files and the duplicates of user files, and a later
export removes it (:func:`remove_stale_exports`: older than
:data:`~yolov4.core.files.STALE_TMP_AGE_S` and not locked by a live export), moving any user
file ``output`` lacks back into it (a file that differs from ``output``'s of the same name is
kept, with its folder). Where the exchange is unavailable (not Linux, or a file
system without it), the old folder is renamed away and the new one renamed in: a kill between
the two renames leaves no folder at ``output``, and the next export puts the old artifact back
before it starts.
"""

from __future__ import annotations

import filecmp
import logging
import os
import re
import secrets
import shutil
import time
from pathlib import Path, PurePosixPath

from yolov4.core import files
from yolov4.core.artifact import FORMATS, METADATA, MODEL_INT8_BIN, MODEL_INT8_XML, read_metadata
from yolov4.core.files import exchange_dirs, lock_dir, make_temp_dir
from yolov4.errors import ExportError, YoloError

__all__ = [
    "check_output",
    "temp_dir",
    "install",
    "remove_stale_exports",
    "owned_files",
    "artifact_files",
]

log = logging.getLogger(__name__)

TMP_TAG = "export"  # temporary folders: .<output name>.export-XXXXXXXX


def artifact_files() -> set[str]:
    """Every file an export writes (the formats table's, the reduced precisions', the
    metadata): what a temporary folder of ours may hold besides user files."""
    return {
        *(f for fmt in FORMATS.values() for f in fmt.files),
        MODEL_INT8_XML,
        MODEL_INT8_BIN,
        METADATA,
    }


def _folders(names: set[str]) -> set[str]:
    """The top-level folders of the artifact paths ``names`` (e.g. ``triton``)."""
    return {PurePosixPath(n).parts[0] for n in names if len(PurePosixPath(n).parts) > 1}


def _tmp_pattern(out: Path) -> re.Pattern[str]:
    """Our temporary folders' names; ``.<name>.XXXXXXXX`` (:func:`tempfile.mkdtemp`'s) too, what
    exports of earlier versions left, which only ever held artifact files."""
    return re.compile(rf"\.{re.escape(out.name)}\.({TMP_TAG}-)?[a-z0-9_]{{8}}")


def owned_files(folder: Path) -> set[str] | None:
    """The names an artifact in ``folder`` owns (its listed files and ``metadata.json``); None
    when ``folder`` holds no valid ``metadata.json`` (not an artifact this project wrote)."""
    try:
        meta = read_metadata(folder, verify=False)
    except (YoloError, OSError):
        return None
    return {*meta["files"], METADATA}


def _checkout_root(start: Path) -> Path | None:
    for p in (start, *start.parents):
        if (p / ".git").exists():
            return p
    return None


def check_output(output: str | os.PathLike, overwrite: bool = False) -> Path:
    """The resolved folder an export may write to, or :class:`ExportError` naming ``output``
    and why not (see the module's docstring); reads nothing but ``output`` itself."""
    given = os.fspath(output)
    if not given.strip():
        raise ExportError("output: expected a folder path, found an empty string")
    out = Path(given).expanduser().resolve()
    for p in (out, *out.parents):
        if p.exists() and not p.is_dir():
            raise ExportError(
                f"output={given}: {p} is a file, expected a folder for the artifact "
                "(a new or empty folder, or an earlier export)"
            )
    cwd, home = Path.cwd().resolve(), Path.home().resolve()
    protected = {"the root folder": Path(out.anchor), "the home folder": home}
    protected["the working directory"] = cwd
    checkout = _checkout_root(cwd)
    if checkout is not None:
        protected["the git checkout"] = checkout
    for what, p in protected.items():
        if out == p or out in p.parents:
            inside = "" if out == p else f" (a folder above {what}, {p})"
            raise ExportError(
                f"output={given}: {out} is {what if out == p else 'not allowed'}{inside}; "
                "an artifact needs a folder of its own (e.g. output=export)"
            )
    if (out / ".git").exists():
        raise ExportError(
            f"output={given}: {out} is a git checkout; choose a folder of its own for the artifact"
        )
    if out.is_dir() and any(out.iterdir()) and owned_files(out) is None:
        if not overwrite:
            raise ExportError(
                f"output={given}: {out} holds files and is not an export artifact (no valid "
                f"{METADATA}); choose a new or empty folder, or pass overwrite=true (the "
                "artifact's files are added, every other file in the folder is kept)"
            )
        taken = sorted(n for n in artifact_files() if os.path.lexists(out / n))
        if taken:
            raise ExportError(
                f"output={given}: {out} holds {', '.join(taken)}, not an artifact's (no valid "
                f"{METADATA}); overwrite=true replaces only an artifact's own files: move "
                "them away or choose another folder"
            )
    return out


def temp_dir(out: Path) -> tuple[Path, int]:
    """A fresh temporary folder beside ``out`` (the umask's mode) and the descriptor holding
    its lock (close it when the export ends): the folder is in use while it is held."""
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = make_temp_dir(out.parent, f".{out.name}.{TMP_TAG}-")
    fd = lock_dir(tmp)
    return tmp, -1 if fd is None else fd


def _close(fd: int | None) -> None:
    if fd is not None and fd >= 0:
        os.close(fd)


def _link_tree(src: Path, dst: Path) -> None:
    """``dst``: the same entries as ``src``, its files hard links (copies where not possible)."""

    def link(a: str, b: str) -> None:
        try:
            os.link(a, b)
        except OSError:
            shutil.copy2(a, b)

    if src.is_dir() and not src.is_symlink():
        shutil.copytree(src, dst, symlinks=True, copy_function=link)
    elif src.is_symlink():
        os.symlink(os.readlink(src), dst)
    else:
        link(str(src), str(dst))


def _duplicate(entry: Path, target: Path) -> bool:
    """Is ``entry`` what ``target`` holds (the same file or link, or the same bytes)?"""
    try:
        if entry.is_symlink() or target.is_symlink():
            return (
                entry.is_symlink()
                and target.is_symlink()
                and (os.readlink(entry) == os.readlink(target))
            )
        return entry.is_file() and (
            os.path.samefile(entry, target) or filecmp.cmp(entry, target, shallow=False)
        )
    except OSError:
        return False


def _merge(src: Path, dst: Path) -> bool:
    """Move each entry of ``src`` that ``dst`` lacks into ``dst`` (folders merged), drop the
    ones ``dst`` holds a duplicate of, and remove ``src`` if nothing else is left in it (an
    entry that differs from ``dst``'s of the same name stays). True when ``src`` is gone."""
    kept = False
    for entry in src.iterdir():
        target = dst / entry.name
        if not os.path.lexists(target):
            os.rename(entry, target)
        elif entry.is_dir() and not entry.is_symlink() and target.is_dir():
            kept |= not _merge(entry, target)
        elif _duplicate(entry, target):
            entry.unlink()
        else:
            kept = True
    if kept:
        log.warning("kept %s: files that differ from those of the same name in %s", src, dst)
    else:
        src.rmdir()
    return not kept


def _discard(old: Path, out: Path, owned: set[str]) -> None:
    """Remove the artifact files ``owned`` from ``old``, move what ``out`` lacks into it."""
    for name in owned:
        p = old / name
        if p.is_file() or p.is_symlink():
            p.unlink()
    nested = {PurePosixPath(n).parent for n in owned if len(PurePosixPath(n).parts) > 1}
    for folder in sorted({q for n in nested for q in (n, *n.parents)}, key=str, reverse=True):
        if str(folder) != "." and (old / folder).is_dir() and not any((old / folder).iterdir()):
            (old / folder).rmdir()  # deepest first: a folder the artifact's files emptied
    if out.is_dir():
        _merge(old, out)
    elif not any(old.iterdir()):
        old.rmdir()


def install(tmp: Path, out: Path) -> None:
    """Swap the complete artifact in ``tmp`` into ``out`` (the module's steps 1-3)."""
    if not out.exists():
        try:
            os.rename(tmp, out)  # also replaces an empty folder made meanwhile
            return
        except OSError:
            if not out.is_dir():
                raise
    owned = owned_files(out) or set()  # overwrite=True of another folder: nothing in it is ours
    for entry in out.iterdir():
        if entry.name in _folders(owned):  # the old artifact's folder (user files in it: step 3)
            continue
        if entry.name not in owned and not os.path.lexists(tmp / entry.name):
            _link_tree(entry, tmp / entry.name)
    try:
        os.chmod(tmp, out.stat().st_mode & 0o7777)  # the folder keeps its permissions
    except OSError:
        pass
    held = lock_dir(out)  # the old folder, under the temporary name, stays ours until removed
    try:
        if exchange_dirs(tmp, out):
            old = tmp
        else:
            old = out.parent / f".{out.name}.{TMP_TAG}-{secrets.token_hex(4)}"
            os.rename(out, old)
            try:
                os.rename(tmp, out)
            except BaseException:
                os.rename(old, out)
                raise
        try:  # the new artifact is in place: what is left is the next export's to remove
            _discard(old, out, owned)
        except OSError as e:
            log.warning("could not remove the previous artifact in %s: %s", old, e)
    finally:
        _close(held)


def _recover(out: Path) -> None:
    """No folder at ``out`` but a complete artifact under a temporary name (a kill between the
    two renames of the fallback): put it back."""
    for stale in sorted(out.parent.glob(f".{out.name}.{TMP_TAG}-*")):
        if not _tmp_pattern(out).fullmatch(stale.name) or os.path.lexists(out):
            continue
        fd = lock_dir(stale, blocking=False)
        if fd is None:  # a live export between its two renames
            continue
        try:
            read_metadata(stale)
            os.rename(stale, out)
        except (YoloError, OSError):
            continue
        finally:
            _close(fd)
        log.warning("restored the artifact %s from %s (left by a killed export)", out, stale.name)


def remove_stale_exports(out: Path) -> list[Path]:
    """Remove the temporary folders killed exports into ``out`` left (older than
    :data:`~yolov4.core.files.STALE_TMP_AGE_S`, locked by no live export): their artifact files
    are deleted, any other file ``out`` lacks is moved into it. Returns the folders removed."""
    if not out.parent.is_dir():
        return []
    _recover(out)
    pattern, now, removed = _tmp_pattern(out), time.time(), []
    for stale in out.parent.iterdir():
        if not pattern.fullmatch(stale.name) or stale.is_symlink() or not stale.is_dir():
            continue
        try:
            if now - stale.stat().st_mtime < files.STALE_TMP_AGE_S:
                continue
            fd = lock_dir(stale, blocking=False)
            if fd is None:  # a live export
                continue
            try:
                _discard(stale, out, artifact_files() | (owned_files(stale) or set()))
            finally:
                _close(fd)
        except OSError as e:
            log.warning("could not remove %s: %s", stale, e)
            continue
        if not stale.exists():
            removed.append(stale)
    if removed:
        log.warning(
            "removed %d temporary folder(s) left by interrupted exports: %s",
            len(removed),
            ", ".join(p.name for p in removed),
        )
    return removed
