"""What a workdir holds about itself: the paths synscale writes into its files, and which study runs in it.

Paths. Every path synscale writes into a workdir's files (the results tables' `set_path`, results/meta.json)
is relative to the workdir where it points inside it, so a workdir that is moved or copied (`mv W W2`, another
machine's mount point) keeps its references; a path outside it (a user's data or model) stays absolute.
`relative` writes one, `resolve` reads one back against the workdir it was read from; an absolute path an
older synscale wrote is taken as it is where it exists, else as the same stage in this workdir.

The study lock. One study at a time per workdir: two different studies at once would each write study.json,
the results and the report, and leave them naming different studies. A run holds `W/study.lock` with a
shared `flock` for its whole run and records there the study's name, identity (synscale.config.study_identity),
process and host. A run of the same study joins (concurrent runs of one study share its stages: stage locks
and the journal); a run of another study is refused with `WorkdirBusy`. Joining or refusing is decided under
an exclusive lock on a second file, `W/.study.lock.guard`, held for a moment only, so two different studies
started at once never both pass. The kernel releases a killed run's lock; its record stays in the file but
counts only while some run still holds the lock. `synscale report`, `fit` and `status` only read and take no
lock.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from synscale.atomic import alive
from synscale.errors import WorkdirBusy

LOCK = "study.lock"
GUARD = ".study.lock.guard"


def relative(path: str | Path, workdir: str | Path) -> str:
    """`path` as synscale writes it into a workdir's files: relative to `workdir` where it lies inside it,
    else absolute."""
    p, w = Path(path).resolve(), Path(workdir).resolve()
    return p.relative_to(w).as_posix() if p.is_relative_to(w) else str(p)


def resolve(path: str | Path | None, workdir: str | Path) -> Path | None:
    """A path read from a workdir's files: a relative one against `workdir`; an absolute one as it is where it
    exists, else, where it named a stage (`.../stages/<kind>/<id>[/...]`, an older workdir moved since), that
    stage of `workdir` if it is there (a stage's id names its content). None for an empty path."""
    if path is None or str(path) == "":
        return None
    p = Path(path)
    if not p.is_absolute():
        return Path(workdir) / p
    if not p.exists() and "stages" in p.parts:
        at = len(p.parts) - 1 - p.parts[::-1].index("stages")
        here = Path(workdir).joinpath(*p.parts[at:])
        if here.exists():
            return here
    return p


@contextlib.contextmanager
def study_lock(workdir: str | Path, name: str, identity: str) -> Iterator[None]:
    """Hold `W/study.lock` for study `name` (`identity`) while the block runs; raises WorkdirBusy where a run
    of another study holds it. Runs of the same identity hold it together."""
    workdir = Path(workdir)
    with _guard(workdir):
        fh = open(workdir / LOCK, "a+")  # noqa: SIM115 (held past this block: closed in the finally below)
        try:
            _join(fh, workdir, name, identity)
        except BaseException:
            fh.close()
            raise
    try:
        yield
    finally:
        try:
            with _guard(workdir):
                _leave(fh)
        except OSError:  # the workdir went away under the run: nothing left to tidy
            pass
        fh.close()  # closing releases the flock


@contextlib.contextmanager
def _guard(workdir: Path) -> Iterator[None]:
    """The exclusive lock under which a run joins, is refused or leaves (a moment each)."""
    with open(workdir / GUARD, "a+") as g:
        fcntl.flock(g, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(g, fcntl.LOCK_UN)


def _join(fh: IO[str], workdir: Path, name: str, identity: str) -> None:
    """Under the guard: take the lock free (nobody holds it: write a new record) or join a run of the same
    identity (add this process to its record); a run of another identity raises WorkdirBusy."""
    me = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.time()}
    try:
        fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:  # held (shared) by a live run: whose?
        record = _read(fh)
        if record.get("identity") != identity:
            raise WorkdirBusy(_busy_line(workdir, record)) from None
        fcntl.flock(fh, fcntl.LOCK_SH)  # the holders hold it shared; nobody else is between (the guard)
        _write(fh, {**record, "holders": [*_live(record.get("holders", [])), me]})
        return
    _write(fh, {"study": name, "identity": identity, "holders": [me]})
    fcntl.flock(fh, fcntl.LOCK_SH)  # shared from now on: runs of the same study join


def _leave(fh: IO[str]) -> None:
    """Under the guard: take this process out of the record (a killed run's entry stays; it is dropped when
    another joins, and never counts once no run holds the lock)."""
    record = _read(fh)
    holders = [h for h in record.get("holders", []) if (h.get("pid"), h.get("host")) != (os.getpid(), socket.gethostname())]
    _write(fh, {**record, "holders": holders})


def _live(holders: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The holders that may still run: all those on other hosts, and those whose process lives on this one."""
    host = socket.gethostname()
    return [h for h in holders if h.get("host") != host or alive(int(h.get("pid", -1)))]


def _busy_line(workdir: Path, record: dict[str, Any]) -> str:
    holders = _live(record.get("holders", [])) or record.get("holders", [])
    who = ", ".join(f"pid {h.get('pid')} on {h.get('host')}" for h in holders) or "a process"
    since = min((h.get("started", 0.0) for h in holders), default=0.0)
    when = f", since {time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(since))}" if since else ""
    return (f"{workdir}: another study, {record.get('study', '?')!r} (identity {record.get('identity', '?')}), is "
            f"running in this workdir ({who}{when}); wait for it, or use another --workdir")


def _read(fh: IO[str]) -> dict[str, Any]:
    fh.seek(0)
    try:
        return json.loads(fh.read() or "{}")
    except ValueError:  # a record cut short (a full disk): nobody can be named
        return {}


def _write(fh: IO[str], record: dict[str, Any]) -> None:
    """Rewrite the record in place (not by rename: the flock belongs to this file)."""
    fh.seek(0)
    fh.truncate()
    fh.write(json.dumps(record, indent=1) + "\n")
    fh.flush()
