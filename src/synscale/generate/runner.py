"""Write a class-balanced synthetic set from a prompt set, resumably, as synscale shards.

The set is cut into shards of `shard_size` samples and every shard into batches of `batch_size`
at fixed offsets, so a sample is always generated in the same batch with the same neighbours. A shard
is written to `shard-NNNNN.tar.tmp` and renamed when whole, then recorded in `shard-NNNNN.rows.json`;
a run that finds both skips the shard. Killed at any point and run again, the runner regenerates only
unfinished shards, and the final set is byte-identical to an uninterrupted run.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from synscale.data.shards import ShardWriter
from synscale.labels import LabelSet
from synscale.progress import bar


def sample_meta(row: Any, generator_id: str, guidance: float, steps: int) -> dict[str, Any]:
    return {"index": int(row.index), "prompt": str(row.prompt), "strategy": str(row.strategy), "seed": int(row.seed),
            "generator": generator_id, "guidance_scale": float(guidance), "steps": int(steps)}


def generate_shard(generator: Any, rows: Any, labels: LabelSet, out_dir: Path, shard: int, guidance: float,
                   batch_size: int, progress: Any = None) -> list[dict[str, Any]]:
    name = f"shard-{shard:05d}.tar"
    tmp = out_dir / f".{name}.inprogress"
    tmp.mkdir(exist_ok=True)
    writer = ShardWriter(tmp, labels, shard_size=len(rows) + 1)
    for start in range(0, len(rows), batch_size):
        batch = rows.iloc[start : start + batch_size]
        images = generator(batch.prompt.tolist(), batch.seed.tolist(), guidance)
        for row, img in zip(batch.itertuples(index=False), images, strict=True):
            writer.write(f"s{int(row.index):08d}", img.squeeze(-1) if img.shape[-1] == 1 else img, int(row.class_index),
                         sample_meta(row, generator.id, guidance, generator.steps))
        if progress is not None:
            progress.update(len(batch))
    writer.close()
    os.replace(tmp / "shard-00000.tar", out_dir / name)
    rows_out = [{**r, "shard": name} for r in writer.rows]
    (out_dir / f"shard-{shard:05d}.rows.json").write_text(json.dumps(rows_out))
    for p in tmp.iterdir():
        p.unlink()
    tmp.rmdir()
    return rows_out


def generate_set(generator: Any, prompts: Any, labels: LabelSet, out_dir: str | Path, guidance: float,
                 batch_size: int = 64, shard_size: int = 1000, progress: bool = True) -> int:
    """Generate every row of `prompts` (index, class_index, prompt, strategy, seed) into `out_dir`."""
    import pandas as pd

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    prompts = prompts.sort_values("index").reset_index(drop=True)
    n_shards = (len(prompts) + shard_size - 1) // shard_size
    done = {j for j in range(n_shards) if (out_dir / f"shard-{j:05d}.rows.json").exists()}
    all_rows: list[dict[str, Any]] = []
    with bar(total=len(prompts), desc=f"generate cfg={guidance:g}", unit="img", disable=not progress) as pbar:
        pbar.update(sum(min(shard_size, len(prompts) - j * shard_size) for j in done))
        for j in range(n_shards):
            if j in done:
                all_rows += json.loads((out_dir / f"shard-{j:05d}.rows.json").read_text())
                continue
            rows = prompts.iloc[j * shard_size : (j + 1) * shard_size]
            all_rows += generate_shard(generator, rows, labels, out_dir, j, guidance, batch_size, pbar)
    pd.DataFrame(all_rows).to_parquet(out_dir / "manifest.parquet", index=False)
    labels.save(out_dir / "labels.json")
    for j in range(n_shards):
        (out_dir / f"shard-{j:05d}.rows.json").unlink()
    _write_array_cache(out_dir)
    return len(all_rows)


def _write_array_cache(out_dir: Path) -> None:
    """The decoded-array cache of small sets, as the real-data writer makes it."""
    from synscale.data.shards import ARRAY_CACHE_MAX_SIDE, decode_png, iter_samples, load_arrays

    first = next(iter_samples(out_dir), None)
    if first is not None and max(decode_png(first[1]).shape[:2]) <= ARRAY_CACHE_MAX_SIDE:
        np.save(out_dir / "arrays.npy", load_arrays(out_dir)[0])
