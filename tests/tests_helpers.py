"""Small helpers shared by tests."""

import json
from pathlib import Path


def stage_dirs(workdir: Path, kind: str, **params: object) -> list[Path]:
    """Complete stage directories of `kind` whose params include `params`."""
    out = []
    for d in sorted((workdir / "stages" / kind).glob("[!.]*")):
        p = json.loads((d / "stage.json").read_text())["params"]
        if all(p.get(k) == v for k, v in params.items()):
            out.append(d)
    return out
