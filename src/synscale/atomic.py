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
from typing import Any
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


_MISSING: Any = object()


def read_json(path: str | Path, default: Any = _MISSING, fix: str | None = None) -> Any:
    """A JSON file synscale wrote and reads again (a workdir's study.json, a stage's files, the results'
    metadata, the plan and its nodes): its content, or a DataError that names the file and what to do when it
    is cut short, emptied or not JSON (`fix`, else what fits where the file lies: synscale.atomic.fix_for).
    A file that does not exist gives `default` where one is given, else FileNotFoundError."""
    import json

    from synscale.errors import DataError

    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        if default is not _MISSING:
            return default
        raise
    except UnicodeDecodeError:
        raise DataError(f"{path}: not UTF-8 text (damaged); {fix or fix_for(path)}") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        what = "empty" if not text.strip() else f"not readable JSON ({e.msg} at line {e.lineno}: cut short or edited)"
        raise DataError(f"{path}: {what}; {fix or fix_for(path)}") from None


def read_text(path: str | Path, what: str = "text") -> str:
    """A text file a user gave (a class subset, a ground-truth list): UTF-8, or a DataError naming the file and the
    line where it is not."""
    from synscale.errors import DataError

    data = Path(path).read_bytes()
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data[: e.start].count(b"\n") + 1
        raise DataError(f"{path}: line {line} is not UTF-8 {what} ({e.reason}); save the file as UTF-8") from None


def fix_for(path: Path) -> str:
    """What to do about a damaged file synscale wrote, from where it lies in a workdir."""
    parts = path.parts
    if "stages" in parts[:-1]:
        i = len(parts) - 1 - parts[::-1].index("stages")
        if len(parts) > i + 2:
            stage = Path(*parts[: i + 3])
            return f"delete the stage {stage} and rerun: it is redone"
    if path.name == "study.json":
        return "rerun the study (it writes the file again)"
    if path.parent.name == "results":
        workdir = path.parent.parent
        return (f"rerun `synscale fit {workdir}` (it writes the file again)" if path.name != "meta.json"
                else f"rerun the study in {workdir} (complete stages are reused)")
    if path.parent.name == "plan" or path.parent.parent.name == "plan":
        plan = path.parent if path.parent.name == "plan" else path.parent.parent
        return f"delete {plan} and rerun the study (the plan is rebuilt; complete stages are reused)"
    return "delete it and rerun the command that wrote it"
