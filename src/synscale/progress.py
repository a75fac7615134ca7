"""Progress bars: live on a terminal, a line every 15 s when stderr is a file or a CI log."""

from __future__ import annotations

import sys
from typing import Any


def bar(iterable: Any = None, *, total: int | None = None, desc: str = "", unit: str = "it", disable: bool = False) -> Any:
    from tqdm.auto import tqdm

    import os

    tty = sys.stderr.isatty()
    disable = disable or bool(os.environ.get("TQDM_DISABLE"))  # parallel workers: stage lines only
    return tqdm(iterable, total=total, desc=desc, unit=unit, disable=disable, leave=False,
                mininterval=0.1 if tty else 15.0, dynamic_ncols=tty)


class Log:
    """A study's progress on stderr: one line per stage, cached ones marked."""

    def __init__(self, quiet: bool = False) -> None:
        import time

        self.quiet = quiet
        self.t0 = time.time()

    def __call__(self, msg: str) -> None:
        import time

        if not self.quiet:
            print(f"[{time.time() - self.t0:6.1f}s] {msg}", file=sys.stderr, flush=True)

    def stage(self, what: str, res: Any) -> None:
        """`res`: a synscale.stage.StageResult."""
        secs = res.info()["wall_seconds"]
        self(f"{what}: {'cached' if res.skipped else f'done in {secs:.1f}s'}  ({res.kind}/{res.id})")
