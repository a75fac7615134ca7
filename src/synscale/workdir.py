"""What a workdir holds about itself: the paths synscale writes into its files.

Every path synscale writes into a workdir's files (the results tables' `set_path`, results/meta.json)
is relative to the workdir where it points inside it, so a workdir that is moved or copied (`mv W W2`, another
machine's mount point) keeps its references; a path outside it (a user's data or model) stays absolute.
`relative` writes one, `resolve` reads one back against the workdir it was read from; an absolute path an
older synscale wrote is taken as it is where it exists, else as the same stage in this workdir.
"""

from __future__ import annotations

from pathlib import Path


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
