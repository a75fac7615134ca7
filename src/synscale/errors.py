"""What a user can fix: errors the command line prints as one line (the file, key or sample, what to do)
and a non-zero exit, never a traceback (`synscale --debug` shows it).

`UserError` is the base of every such error: a study file or flag that does not validate (ConfigError),
data on disk that is not what it says — truncated, edited, stale, mixed (DataError) — a dataset that
cannot be read (DatasetError) and a workdir in which another study runs (WorkdirBusy). Anything else
reaching the command line is a bug and keeps its traceback."""

from __future__ import annotations

from typing import Any


class UserError(Exception):
    """A mistake in what the user gave; the message names where and what to do."""


class ConfigError(UserError, ValueError):
    """A study file, override or flag that does not validate; the message says where and why."""


class DataError(UserError, ValueError):
    """Data on disk that does not match what describes it (a truncated shard, an edited manifest or
    checkpoint, a cache left from other data); the message names the file and, where there is one, the sample."""


class DatasetError(UserError, RuntimeError):
    """A dataset that cannot be read; the message says what to do about it."""


class BadSample(DatasetError):
    """One sample that cannot be read (its image, caption, label or JSON), in a source that is otherwise whole: what
    a dirty web-scale set holds now and then. Writing a set skips such samples within its error budget
    (max_bad_fraction, synscale.data.shards.write_dataset_split), each recorded with `where` and `reason`."""

    def __init__(self, where: str, reason: str, message: str) -> None:
        super().__init__(message)
        self.where, self.reason = where, reason

    def __reduce__(self) -> tuple[Any, ...]:  # raised in a worker process, re-raised whole in the parent
        return type(self), (self.where, self.reason, str(self))


class ResourceError(UserError):
    """The machine ran out of something (memory at a batch size, disk); the message names the setting."""


class WorkdirBusy(UserError):
    """Another study runs in the workdir (synscale.workdir.study_lock); the message names it, its process and
    host, and what to do (wait for it, or use another --workdir)."""


def os_error_line(e: OSError) -> str:
    """One line for an OSError a user can act on (the path and what to do)."""
    import errno

    path = e.filename if e.filename is not None else ""
    what = e.strerror or str(e)
    fix = {errno.ENOSPC: "free space there (complete stages are kept; rerun to resume)",
           errno.EDQUOT: "free space there (complete stages are kept; rerun to resume)",
           errno.EACCES: "choose a location you can write to, or fix its permissions",
           errno.EPERM: "choose a location you can write to, or fix its permissions",
           errno.EROFS: "choose a location on a writable file system",
           errno.ENOTDIR: "a part of the path is a file: choose another path",
           errno.EISDIR: "it is a directory: give a file",
           errno.ENOENT: "check the path",
           errno.EEXIST: "it exists already: choose another path or remove it"}.get(e.errno or 0, "")
    line = f"{path}: {what}" if path else what
    return f"{line}; {fix}" if fix else line


_INTERRUPTED: list[int] = []  # the signals `interrupt` took in this process (cleared by the CLI's main)


def interrupt(signum: int, frame: object) -> None:
    """The CLI's SIGINT and SIGTERM handler: a run ends as Ctrl-C ends it (KeyboardInterrupt: workers stopped, one
    line). The signal is recorded too: an interrupt that arrives inside a callback Python cannot raise from (an
    import's module-lock callback, a finaliser: "Exception ignored") would otherwise be lost and the run go on;
    `check_interrupt` raises it again at the next stage, and the CLI ends with the interrupted line."""
    _INTERRUPTED.append(signum)
    raise KeyboardInterrupt(f"signal {signum}")


def check_interrupt() -> None:
    """Raise KeyboardInterrupt if `interrupt` took a signal that did not end the run (see there)."""
    if _INTERRUPTED:
        raise KeyboardInterrupt(f"signal {_INTERRUPTED[-1]}")


def interrupted() -> bool:
    return bool(_INTERRUPTED)


def clear_interrupts() -> None:
    _INTERRUPTED.clear()


def image_error(e: BaseException) -> str:
    """Why an image did not decode, without the image library's object reprs and repeated paths."""
    text = str(e)
    if "cannot identify image file" in text:
        return "not an image format the image library reads"
    return text.split(" <_io.")[0] or type(e).__name__
