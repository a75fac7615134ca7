"""Progress bars: live on a terminal, a line every 15 s when stderr is a file or a CI log."""

from __future__ import annotations

import sys
from typing import Any


def bar(iterable: Any = None, *, total: int | None = None, desc: str = "", unit: str = "it", disable: bool = False) -> Any:
    from tqdm.auto import tqdm

    tty = sys.stderr.isatty()
    return tqdm(iterable, total=total, desc=desc, unit=unit, disable=disable, leave=False,
                mininterval=0.1 if tty else 15.0, dynamic_ncols=tty)
