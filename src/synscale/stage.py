"""Content-addressed stages on disk.

A stage is one step of a study: `fn(out_dir)` writes files into `out_dir`. Its directory is
`<root>/stages/<kind>/<id>`, where `id` hashes the stage's kind, params and the ids of its inputs, so
the same work is never done twice and every result is traceable to what produced it. The stage is
written into a temporary directory and renamed into place when complete (an atomic rename on one
filesystem), with `stage.json` recording params, inputs, library versions, wall seconds and device.
A stage killed half-way (even by SIGKILL) leaves only a temporary directory, which the next run removes
before it redoes the stage from scratch. A `resumable` stage (long generation) instead keeps its
partial directory, `.partial-<id>`, and hands it back to `fn`, which skips the parts it finds complete.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import platform
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from synscale.atomic import read_json

STAGE_FILE = "stage.json"


def canonical(obj: Any) -> str:
    """Stable JSON for hashing: sorted keys, no whitespace variation."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)


def stage_id(kind: str, params: dict[str, Any], inputs: dict[str, str]) -> str:
    blob = canonical({"kind": kind, "params": params, "inputs": inputs})
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class StageResult:
    kind: str
    id: str
    path: Path
    skipped: bool  # True when a complete stage was found and nothing ran

    @property
    def root(self) -> Path:
        """The workdir that holds this stage (`<root>/stages/<kind>/<id>`)."""
        return self.path.parents[2]

    def info(self) -> dict[str, Any]:
        return read_json(self.path / STAGE_FILE)


def versions() -> dict[str, str]:
    """Versions of the libraries whose behaviour shapes results (imported lazily; absent ones skipped)."""
    import importlib.metadata as md

    out = {"python": platform.python_version()}
    for pkg in ("synscale", "torch", "torchvision", "timm", "numpy", "pillow", "pandas", "pyarrow"):
        with contextlib.suppress(md.PackageNotFoundError):
            out[pkg] = md.version(pkg)
    return out


def device_name() -> str:
    import sys

    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available():
        return f"cuda:{torch.cuda.get_device_name()}"
    return f"cpu:{platform.machine()}:{os.cpu_count()}"


def complete(path: str | Path) -> bool:
    """Whether a stage directory is complete: its stage.json, written last before the directory is renamed into
    place. The one rule by which a run reuses a stage and `synscale status` counts it done."""
    return (Path(path) / STAGE_FILE).is_file()


@contextlib.contextmanager
def _locked(lock_path: Path) -> Iterator[None]:
    """An exclusive flock, released by the kernel if the holder dies (so SIGKILL never leaves it held)."""
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_path, "a+") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def run_stage(
    root: str | Path,
    kind: str,
    params: dict[str, Any],
    inputs: dict[str, str],
    fn: Callable[[Path], None],
    resumable: bool = False,
) -> StageResult:
    """Run `fn(tmp_dir)` unless the stage is complete; return where its output lives.

    resumable: keep what an interrupted run wrote (`fn` must then only trust parts it finished)."""
    sid = stage_id(kind, params, inputs)
    base = Path(root) / "stages" / kind
    out = base / sid
    if complete(out):
        return StageResult(kind, sid, out, skipped=True)
    with _locked(base / f".{sid}.lock"):
        if complete(out):  # another process finished it while we waited
            return StageResult(kind, sid, out, skipped=True)
        for stale in base.glob(f".tmp-{sid}-*"):  # left by a killed run; we hold the lock
            shutil.rmtree(stale)
        tmp = base / (f".partial-{sid}" if resumable else f".tmp-{sid}-{os.getpid()}")
        tmp.mkdir(parents=True, exist_ok=resumable)
        t0 = time.time()
        try:
            fn(tmp)
        except BaseException:
            if not resumable:  # an error (a full disk, bad data): nothing of it is kept; a kill leaves it to the next run
                shutil.rmtree(tmp, ignore_errors=True)
            raise
        info = {
            "kind": kind,
            "id": sid,
            "params": params,
            "inputs": inputs,
            "versions": versions(),
            "device": device_name(),
            "wall_seconds": round(time.time() - t0, 3),
            "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }
        (tmp / STAGE_FILE).write_text(json.dumps(info, indent=2, default=str) + "\n")
        _fsync_tree(tmp)
        os.rename(tmp, out)
    return StageResult(kind, sid, out, skipped=False)


@contextlib.contextmanager
def building_dir(final: Path) -> Iterator[Path]:
    """Build a directory that is rebuilt whole every time (a study's results, its report) beside `final` and
    put it in place only when complete, under a lock (two processes on one workdir take turns): a run killed
    while building leaves the previous one, never a half-written or half-stale one. Yields the directory to
    fill."""
    final = Path(final)
    parent = final.parent
    parent.mkdir(parents=True, exist_ok=True)
    with _locked(parent / f".{final.name}.lock"):
        recover_dir(final)
        for stale in parent.glob(f".{final.name}-*"):  # left by a killed run; we hold the lock
            shutil.rmtree(stale, ignore_errors=True)
        tmp = parent / f".{final.name}-new-{os.getpid()}"
        tmp.mkdir()
        try:
            yield tmp
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)  # e.g. a full disk: give the space back; the old one stays
            raise
        _fsync_tree(tmp)
        old = parent / f".{final.name}-old-{os.getpid()}"
        if final.exists():
            os.rename(final, old)
        os.rename(tmp, final)
        shutil.rmtree(old, ignore_errors=True)


def recover_dir(final: Path) -> None:
    """Put back the previous `final` when a run was killed between moving it aside and moving the new one in."""
    if not final.exists():
        olds = sorted(final.parent.glob(f".{final.name}-old-*"), key=lambda p: p.stat().st_mtime)
        if olds:
            os.rename(olds[-1], final)


def _fsync_tree(path: Path) -> None:
    """Flush the stage's files before the rename makes it visible as complete."""
    for p in sorted(path.rglob("*")):
        if p.is_file():
            fd = os.open(p, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)


@dataclass
class Context:
    """What a stage function runs with in one process: the workdir (where a stage without input stages is
    written), the study log, the process's array cache and objects built once for several stages (`memo`)."""

    workdir: Path
    quiet: bool = False
    cache: Any = None  # a synscale.data.cache.ArrayCache (study.plan.new_context): small sets decoded once per process

    def __post_init__(self) -> None:
        from synscale.progress import Log

        self.workdir = Path(self.workdir)
        self.log = Log(self.quiet)
        self.memo: dict[Any, Any] = {}  # objects a process builds once for several nodes (the metrics' reference)
