"""Files written whole or not at all, and what a killed writer leaves behind.

A file that a rerun or another command reads is written beside its final name, as `.NAME.PID.tmp`, and
renamed into place (os.replace is atomic on POSIX): a run killed while writing leaves the old file or none,
never half of one. What it leaves is a `.tmp` of a process that is gone; work that resumes in a directory
(a generated set, a training run) removes those first (`clear_partials`), so a finished directory holds
nothing but its own files.
"""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Iterator
from pathlib import Path

_TMP = re.compile(r"\..+\.(\d+)\.tmp")


def tmp_for(path: str | Path) -> Path:
    """Where this process writes `path` before renaming it into place."""
    path = Path(path)
    return path.with_name(f".{path.name}.{os.getpid()}.tmp")


@contextlib.contextmanager
def replacing(path: str | Path) -> Iterator[Path]:
    """Yields the temporary path to write; renamed to `path` when the block ends without an error (removed
    when it raises)."""
    tmp = tmp_for(path)
    try:
        yield tmp
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    os.replace(tmp, path)


def write_text(path: str | Path, text: str) -> None:
    with replacing(path) as tmp:
        tmp.write_text(text)


def alive(pid: int) -> bool:
    """Whether process `pid` runs on this machine (the one test for it: stale files, journal records, locks)."""
    if pid <= 0:  # no process recorded (kill would signal a group, or every process)
        return False
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, OverflowError):
        return False
    except PermissionError:  # another user's process
        return True
    return True


def clear_partials(directory: str | Path) -> list[Path]:
    """Remove the `.NAME.PID.tmp` files in `directory` (not below it) of processes that are no longer running
    on this machine (killed writers); returns them. A live process's file, ours included, is left alone."""
    directory = Path(directory)
    removed = []
    if not directory.is_dir():
        return removed
    for p in directory.iterdir():
        m = _TMP.fullmatch(p.name)
        if m and p.is_file() and int(m.group(1)) != os.getpid() and not alive(int(m.group(1))):
            p.unlink(missing_ok=True)
            removed.append(p)
    return removed
