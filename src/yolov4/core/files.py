"""Files written atomically: a crash mid-write never leaves a half-written file in place, and the
leftovers of killed writes are cleaned up by the next write of the same file. Files and folders
made here get the modes of the process's umask (``0644`` / ``0755`` under ``0022``), as
``open`` and ``mkdir`` give them, not the owner-only modes of :mod:`tempfile`."""

from __future__ import annotations

import ctypes
import errno
import json
import logging
import os
import re
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path, PureWindowsPath
from typing import IO, Any

__all__ = [
    "files_under",
    "listed_path",
    "posix_form",
    "posix_note",
    "looked_for",
    "atomic_write",
    "write_json",
    "remove_stale_temporaries",
    "STALE_TMP_AGE_S",
    "current_umask",
    "umask_mode",
    "make_temp_dir",
    "new_dir",
    "lock_dir",
    "exchange_dirs",
]

log = logging.getLogger(__name__)


def files_under(root: str | os.PathLike, skip: Callable[[Path], bool] | None = None) -> list[Path]:
    """Every file under the folder ``root``, recursively, through symlinked folders too (each
    real folder once: a link back up does not loop), in no particular order. Python's
    ``Path.rglob`` (before 3.13) does not enter symlinked folders: a dataset assembled from
    links lost their images without a word. ``skip(folder)``: subfolders left out, whole."""
    found: list[Path] = []
    seen: set[tuple[int, int]] = set()
    for folder, dirs, files in os.walk(root, followlinks=True):
        st = os.stat(folder)
        if (st.st_dev, st.st_ino) in seen:
            dirs[:] = []
            continue
        seen.add((st.st_dev, st.st_ino))
        if skip is not None:
            dirs[:] = [d for d in dirs if not skip(Path(folder, d))]
        found.extend(Path(folder, f) for f in files if os.path.isfile(os.path.join(folder, f)))
    return found


def posix_form(text: str) -> str:
    """``text`` with a Windows path's separators as ``/`` when it is one written on Windows
    (relative, with ``\\`` and no ``/``: ``data\\obj\\a.jpg``) and this system's separator is
    ``/``; else ``text`` as it is."""
    windows = "\\" in text and "/" not in text and not PureWindowsPath(text).anchor
    return PureWindowsPath(text).as_posix() if windows and os.sep == "/" else text


def posix_note(source: str, written: list[str]) -> list[str]:
    """The note, one at most, on the paths of ``written`` (as written in the file ``source``)
    that :func:`posix_form` reads with ``/``: how many, and one as written and as read."""
    changed = [w for w in written if posix_form(w) != w]
    if not changed:
        return []
    return [
        f"{len(changed)} path(s) of {source} written with `\\` (on Windows) read with `/` "
        f"(e.g. {changed[0]} as {posix_form(changed[0])})"
    ]


def listed_path(
    entry: str | os.PathLike, list_file: str | os.PathLike, root: str | os.PathLike | None = None
) -> Path:
    """Where a path listed in the list file ``list_file`` (darknet's ``train.txt``, a
    predict.py source list) is: an absolute one as written; a relative one from the list's
    folder, else from the working directory when it exists there only (darknet reads its lists'
    paths from where it runs: ``data/obj/a.jpg`` in ``data/train.txt``), else from ``root`` when
    it exists there only (the folder a run read the list from, recorded for later runs); a path
    written on Windows (``data\\obj\\a.jpg``) read with ``/`` (:func:`posix_form`). A path
    that exists in none of them is given from the list's folder."""
    path = Path(posix_form(str(entry))).expanduser()
    if path.is_absolute():
        return path
    beside = Path(list_file).parent / path
    if beside.exists():
        return beside
    if path.exists():
        return path
    recorded = Path(root) / path if root is not None else None
    return recorded if recorded is not None and recorded.exists() else beside


def looked_for(path: str | os.PathLike) -> str:
    """Where a path that was not found was looked for, for messages: ``: looked for
    /abs/images/train (a relative path is read from the working directory /abs)``."""
    text = f": looked for {os.path.abspath(os.path.expanduser(path))}"
    if not os.path.isabs(os.path.expanduser(path)):
        text += f" (a relative path is read from the working directory {os.getcwd()})"
    return text


# A temporary file of atomic_write older than this (seconds) whose lock nobody holds was left by a
# killed write. A live writer holds the lock for the whole write and its file is seconds old; the
# age is the second guard where locks are unavailable (no fcntl) or not enforced.
STALE_TMP_AGE_S = 60.0


FILE_MODE, DIR_MODE = 0o666, 0o777  # what open() / mkdir() ask for before the umask
_UMASK_LOCK = threading.Lock()
_AT_FDCWD, _RENAME_EXCHANGE = -100, 2  # <fcntl.h>, <linux/fs.h>


def current_umask() -> int:
    """The process's umask, read without changing it (``/proc/self/status``); elsewhere set and
    restored at once under a lock, to ``0o077`` meanwhile so that a file another thread makes in
    that instant is private rather than world-writable."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    with _UMASK_LOCK:
        old = os.umask(0o077)
        os.umask(old)
    return old


def umask_mode(directory: bool = False) -> int:
    """The mode ``open`` (``directory``: ``mkdir``) gives a new file under the current umask."""
    return (DIR_MODE if directory else FILE_MODE) & ~current_umask()


def make_temp_dir(parent: str | os.PathLike, prefix: str) -> Path:
    """:func:`tempfile.mkdtemp` in ``parent`` with the umask's folder mode instead of ``0700``."""
    tmp = Path(tempfile.mkdtemp(dir=parent, prefix=prefix))
    os.chmod(tmp, umask_mode(directory=True))
    return tmp


def new_dir(path: str | os.PathLike) -> Path:
    """The first of ``path``, ``path_2``, ``path_3``, ... that does not exist, made by this call
    (its parents as needed): each ``mkdir`` either makes the folder or fails because it exists,
    so processes asking for the same ``path`` at the same moment each get a folder of their own
    (ultralytics numbers its runs ``predict``, ``predict2``, ... the same way)."""
    base = Path(path)
    base.parent.mkdir(parents=True, exist_ok=True)
    candidate, k = base, 2
    while True:
        try:
            candidate.mkdir()
            return candidate
        except FileExistsError:
            candidate, k = base.with_name(f"{base.name}_{k}"), k + 1


def lock_dir(path: str | os.PathLike, blocking: bool = True) -> int | None:
    """An open descriptor of folder ``path`` holding an exclusive ``flock`` (released when it is
    closed); None when another process holds it; -1 (nothing to close) without ``fcntl``."""
    try:
        import fcntl
    except ImportError:
        return -1
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
    except BlockingIOError:
        os.close(fd)
        return None
    except OSError:  # a file system without locks: the age is the only guard
        pass
    return fd


def exchange_dirs(a: str | os.PathLike, b: str | os.PathLike) -> bool:
    """Swap the folders ``a`` and ``b`` in one step (Linux ``renameat2(RENAME_EXCHANGE)``):
    every lookup of either name finds one of the two, never nothing. False where the system or
    the file system cannot (nothing is changed then)."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        renameat2 = ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError):  # glibc < 2.28, musl without it
        return False
    renameat2.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p]
    renameat2.argtypes += [ctypes.c_uint]
    if renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP, errno.ENOTSUP):
        return False
    raise OSError(err, os.strerror(err), os.fspath(a), None, os.fspath(b))


def _tmp_name(path: Path) -> re.Pattern[str]:
    """Names :func:`tempfile.mkstemp` gives ``atomic_write``'s files for ``path``."""
    return re.compile(rf"\.{re.escape(path.name)}\.[A-Za-z0-9_]{{8}}\.tmp")


def _lock(f: IO[bytes], blocking: bool = True) -> bool:
    """``flock`` ``f`` exclusively; False if another open file holds it (never without fcntl)."""
    try:
        import fcntl
    except ImportError:  # Windows: the age of a file is the only guard
        return True
    try:
        fcntl.flock(f, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
    except BlockingIOError:
        return False
    except OSError:  # a file system without locks: the age is the only guard
        return True
    return True


def remove_stale_temporaries(path: str | os.PathLike) -> list[Path]:
    """Remove the temporary files that killed :func:`atomic_write` calls for ``path`` left: older
    than :data:`STALE_TMP_AGE_S` and locked by nobody. Returns the paths removed."""
    path = Path(path)
    pattern, now, removed = _tmp_name(path), time.time(), []
    if not path.parent.is_dir():
        return removed
    for tmp in path.parent.iterdir():
        if not pattern.fullmatch(tmp.name):
            continue
        try:
            if now - tmp.stat().st_mtime < STALE_TMP_AGE_S:
                continue
            with open(tmp, "rb") as f:
                if _lock(f, blocking=False):  # nobody writes it: remove while holding the lock
                    tmp.unlink()
                    removed.append(tmp)
        except OSError:  # gone meanwhile, or not ours to remove
            continue
    if removed:
        log.warning(
            "removed %d temporary file(s) left by an interrupted write: %s",
            len(removed),
            ", ".join(p.name for p in removed),
        )
    return removed


def atomic_write(path: str | os.PathLike, write: Callable[[IO[bytes]], None]) -> Path:
    """``write(f)`` into a locked temporary file next to ``path``, fsync, then rename over
    ``path``: a crash mid-write leaves any previous file intact. The leftovers of earlier killed
    writes of ``path`` are removed first (:func:`remove_stale_temporaries`)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            os.chmod(tmp, umask_mode())  # mkstemp's 0600 would make the file private
            _lock(f)  # held until closed: tells remove_stale_temporaries this write is alive
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def write_json(path: str | os.PathLike, payload: Any) -> Path:
    """Write JSON atomically (temporary file + rename; see :func:`atomic_write`)."""
    text = json.dumps(payload, indent=2).encode()
    return atomic_write(path, lambda f: f.write(text))
