"""Files written atomically: a crash mid-write never leaves a half-written file in place, and the
leftovers of killed writes are cleaned up by the next write of the same file."""

from __future__ import annotations

import logging
import os
import re
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO

__all__ = ["atomic_write", "remove_stale_temporaries", "STALE_TMP_AGE_S"]

log = logging.getLogger(__name__)

# A temporary file of atomic_write older than this (seconds) whose lock nobody holds was left by a
# killed write. A live writer holds the lock for the whole write and its file is seconds old; the
# age is the second guard where locks are unavailable (no fcntl) or not enforced.
STALE_TMP_AGE_S = 60.0


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
            _lock(f)  # held until closed: tells remove_stale_temporaries this write is alive
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path
