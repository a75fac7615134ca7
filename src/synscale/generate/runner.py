"""Write a class-balanced synthetic set from a prompt set, resumably, as synscale shards.

The set is cut into shards of `shard_size` samples and every shard into batches of `batch_size`
at fixed offsets, so a sample is always generated in the same batch with the same neighbours. A shard
is written to `shard-NNNNN.tar.tmp` and renamed when whole, then recorded in `shard-NNNNN.rows.json`;
a run that finds both skips the shard. Killed at any point and run again, the runner regenerates only
unfinished shards, and the final set is byte-identical to an uninterrupted run.

Executors: `local` (this process, one device, batched) and `ray` (Ray Data: the unfinished shards are
rows of a dataset mapped by a pool of generator actors, one per GPU, or with fractional CPUs on a CPU
machine, since a pool holding every CPU leaves Ray Data's read task none and deadlocks). Actors write
their shards straight into the output directory, which must therefore be on storage every node sees.
Both executors give byte-identical sets when they run the model with the same number of torch threads
(`threads`; floating-point reductions depend on it).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from synscale.atomic import clear_partials, read_json, write_text
from synscale.data.shards import ShardWriter
from synscale.errors import ConfigError
from synscale.labels import LabelSet
from synscale.progress import bar


def sample_meta(row: Any, generator_id: str, guidance: float, steps: int) -> dict[str, Any]:
    meta = {"index": int(row.index), "prompt": str(row.prompt), "strategy": str(row.strategy), "seed": int(row.seed),
            "generator": generator_id, "guidance_scale": float(guidance), "steps": int(steps)}
    if row.strategy == "captions":  # an image-text pair: its caption is its prompt
        meta["caption"] = str(row.prompt)
    return meta


def sample_key(row: Any) -> str:
    """A prompt row's sample key: its own (a caption set regenerated under the real pairs' keys), else
    from its index."""
    key = getattr(row, "key", None)
    return str(key) if key is not None else f"s{int(row.index):08d}"


def generate_shard(generator: Any, rows: Any, labels: LabelSet | None, out_dir: Path, shard: int, guidance: float,
                   batch_size: int, progress: Any = None) -> list[dict[str, Any]]:
    name = f"shard-{shard:05d}.tar"
    tmp = out_dir / f".{name}.inprogress"
    tmp.mkdir(exist_ok=True)
    writer = ShardWriter(tmp, labels, shard_size=len(rows) + 1, cache_arrays=False)  # the set's cache comes last

    def write(batch: Any, out: Any) -> None:  # PNG encoding and the tar, in sample order
        for row, img, extra in zip(batch.itertuples(index=False), out.images, out.meta, strict=True):
            writer.write(sample_key(row), img.squeeze(-1) if img.shape[-1] == 1 else img, int(row.class_index),
                         {**sample_meta(row, generator.id, guidance, generator.steps), **extra})
        if progress is not None:
            progress.update(len(batch))

    # Batch k is written on a worker thread while batch k + 1 samples, so the accelerator never waits on
    # PNG encoding or the disk; one writer keeps the order, so the bytes are those of a sequential run.
    with ThreadPoolExecutor(1, thread_name_prefix="synscale-write") as pool:
        written = None
        for start in range(0, len(rows), batch_size):
            batch = rows.iloc[start : start + batch_size]
            sampled = generator.sample(batch.prompt.tolist(), batch.seed.tolist(), guidance)
            if written is not None:
                written.result()  # the previous batch's write: its errors surface here
            written = pool.submit(write, batch, sampled)
        if written is not None:
            written.result()
    writer.close_shards()
    os.replace(tmp / "shard-00000.tar", out_dir / name)
    rows_out = [{**r, "shard": name} for r in writer.rows]
    # written whole or not at all: it marks the shard finished
    write_text(out_dir / f"shard-{shard:05d}.rows.json", json.dumps(rows_out))
    for p in tmp.iterdir():
        p.unlink()
    tmp.rmdir()
    return rows_out


_BUILT: dict[str, Any] = {}  # this process's generators, by their settings (oldest first)


@dataclass(frozen=True)
class GeneratorSpec:
    """How to build a generator anywhere (this process or a Ray actor): a `GENERATORS` name + kwargs."""

    backend: str
    kwargs: dict[str, Any]
    threads: int = 0  # torch threads while generating; 0 = leave torch's default

    def build(self) -> Any:
        """The generator; one built earlier in this process with the same settings is reused (a study
        generates several configurations of one model: loading it is seconds each time)."""
        from synscale.generate.base import create_generator

        key = repr((self.backend, sorted(self.kwargs.items())))
        if key not in _BUILT:
            while len(_BUILT) >= 3:  # a few models at most: large pipelines hold gigabytes
                _BUILT.pop(next(iter(_BUILT)))
            _BUILT[key] = create_generator(self.backend, **self.kwargs)
        return _BUILT[key]

    @staticmethod
    def release() -> None:
        """Free this process's generators that live on an accelerator. A pipeline left on the GPU after its stage
        takes the memory of the next one (a training run, under the local executor); those on the CPU stay for the
        study's next configuration of the same model."""
        import gc

        held = [k for k, g in _BUILT.items() if g.device != "cpu"]
        for key in held:
            del _BUILT[key]
        if held:
            gc.collect()
            import torch

            if torch.cuda.is_available():
                torch.cuda.empty_cache()

    @contextlib.contextmanager
    def thread_limit(self) -> Iterator[None]:
        """torch's thread count set to `threads` while generating, restored afterwards."""
        import torch

        before = torch.get_num_threads()
        if self.threads:
            torch.set_num_threads(self.threads)
        try:
            yield
        finally:
            torch.set_num_threads(before)


def generator_spec(g: Any, resolution: int, channels: int) -> GeneratorSpec:
    """The diffusers generator of a generation config `g` (synscale.config.GenerationConfig), its outputs
    brought to `resolution` and `channels`, its tuned settings resolved for the device that generates."""
    from synscale.generate.tuning import settings_of

    tuned = settings_of(g)
    return GeneratorSpec("diffusers", {
        "model": g.model, "steps": g.steps, "scheduler": g.scheduler, **tuned, "resolution": resolution,
        "channels": channels, "height": g.size or None, "width": g.size or None,
        "local_files_only": not g.allow_download, "pipeline_kwargs": g.pipeline_kwargs,
        "guidance_convention": g.guidance_convention, "safety_checker": g.safety_checker,
        "upscale": [dataclasses.asdict(u) for u in g.upscale]}, threads=g.threads)


def prompts_hash(prompts: Any) -> int:
    """A prompt set as a set's identity holds it: its indices, prompts and seeds."""
    import pandas as pd

    return int(pd.util.hash_pandas_object(prompts[["index", "prompt", "seed"]], index=False).sum())


def generate_to_dir(g: Any, prompts: Any, labels: LabelSet | None, out: Path, resolution: int, channels: int,
                    progress: bool = True) -> int:
    """`synscale generate`: the set of generation config `g` (a synscale.config.SyntheticConfig) from `prompts`
    into the directory `out`, resumable. `out/generate.json` records what decides its images (the settings as
    resolved on this machine; keys added later only where they differ from their defaults; the prompts' hash):
    a directory written with other settings, or by something else, is refused. Returns the images written."""
    from synscale.config import GenerationConfig
    from synscale.generate.tuning import TUNED, identity
    from synscale.schema import IF_CHANGED, keys_by_rule

    spec = generator_spec(g, resolution, channels)
    settings = {"model": g.model, "guidance": g.guidance, "steps": g.steps, "scheduler": g.scheduler,
                "resolution": resolution, "channels": channels, "shard_size": g.shard_size, "threads": g.threads,
                "size": g.size or None}  # the image side under the marker's first key name: old sets still resume
    settings.update(identity({k: spec.kwargs[k] for k in TUNED}))  # as resolved on this machine
    added = keys_by_rule(GenerationConfig, IF_CHANGED)
    settings.update({k: v for k, v in spec.kwargs.items() if k in added and added[k] != v})
    settings["prompts"] = prompts_hash(prompts)
    marker = out / "generate.json"
    clear_partials(out)  # what a run killed as it wrote left half-written
    if not marker.exists() and out.is_dir() and any(out.iterdir()):
        raise ConfigError(f"{out}: holds files that `synscale generate` did not write; choose an empty or new --out")
    if marker.exists() and read_json(marker) != settings:
        raise ConfigError(f"{out} holds a set generated with other settings ({marker}); choose another --out, "
                          "or delete it to start again")
    out.mkdir(parents=True, exist_ok=True)
    write_text(marker, json.dumps(settings, indent=1))
    return generate_set(spec, prompts, labels, out, g.guidance, spec.kwargs["batch_size"], g.shard_size,
                        progress=progress, executor=g.executor, ray_actors=g.ray_actors, ray_num_cpus=g.ray_cpus,
                        ray_num_gpus=g.ray_gpus)


def generate_set(spec: GeneratorSpec, prompts: Any, labels: LabelSet | None, out_dir: str | Path, guidance: float,
                 batch_size: int = 64, shard_size: int = 1000, progress: bool = True, executor: str = "local",
                 ray_actors: int = 1, ray_num_cpus: float = 0.5, ray_num_gpus: float = 0.0) -> int:
    """Generate every row of `prompts` (index, class_index, prompt, strategy, seed; optionally key) into
    `out_dir`; `labels` None: an unlabelled caption set (class_index -1)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    prompts = prompts.sort_values("index").reset_index(drop=True)
    n_shards = (len(prompts) + shard_size - 1) // shard_size
    finished = _finished_rows(out_dir, n_shards, len(prompts))
    done = (out_dir / "manifest.parquet").exists() and not list(out_dir.glob("shard-*.rows.json"))
    if done and len(finished) == n_shards:
        return len(prompts)  # complete: nothing to do, nothing rewritten
    pending = [j for j in range(n_shards) if j not in finished]
    _clear_killed(out_dir)
    shard_rows = {j: prompts.iloc[j * shard_size : (j + 1) * shard_size] for j in pending}
    with bar(total=len(prompts), desc=f"generate cfg={guidance:g}", unit="img", disable=not progress) as pbar:
        pbar.update(len(prompts) - sum(len(r) for r in shard_rows.values()))
        if executor == "local":
            generator = spec.build() if pending else None
            try:
                with spec.thread_limit():
                    for j in pending:
                        generate_shard(generator, shard_rows[j], labels, out_dir, j, guidance, batch_size, pbar)
            finally:
                del generator
                spec.release()
        elif executor == "ray":
            _generate_with_ray(spec, shard_rows, labels, out_dir, guidance, batch_size, pbar,
                               ray_actors, ray_num_cpus, ray_num_gpus)
        else:
            raise ConfigError(f"unknown executor {executor!r}; choose local or ray")
    finished = _finished_rows(out_dir, n_shards, len(prompts))
    all_rows = [r for j in range(n_shards) for r in finished[j]]
    from synscale.data.shards import finalize_set

    finalize_set(out_dir, all_rows, labels, _array_cache(out_dir, all_rows))
    for j in range(n_shards):
        (out_dir / f"shard-{j:05d}.rows.json").unlink(missing_ok=True)
    return len(all_rows)


def _clear_killed(out_dir: Path) -> None:
    """What a killed run left: its half-written files, and the work folders of the shards it was writing
    (a finished shard's, when it was killed as it tidied up; an unfinished one's is written again)."""
    import shutil

    clear_partials(out_dir)
    for tmp in out_dir.glob(".shard-*.tar.inprogress"):
        shutil.rmtree(tmp, ignore_errors=True)


def _finished_rows(out_dir: Path, n_shards: int, n_prompts: int) -> dict[int, list[dict[str, Any]]]:
    """The manifest rows of every finished shard: from its `rows.json`, or from the set's manifest when a run
    that completed it was stopped while it tidied up."""
    from synscale.data.shards import read_manifest, set_meta

    out: dict[int, list[dict[str, Any]]] = {}
    if (out_dir / "manifest.parquet").exists() and set_meta(out_dir) is not None:
        manifest = read_manifest(out_dir)
        if len(manifest) == n_prompts:  # complete (the manifest is written last, atomically)
            for name, rows in manifest.groupby("shard", sort=False):
                out[int(name[len("shard-"):-len(".tar")])] = rows.to_dict("records")
    for j in range(n_shards):
        p = out_dir / f"shard-{j:05d}.rows.json"
        if p.exists() and (out_dir / f"shard-{j:05d}.tar").exists():
            out[j] = read_json(p)
    return out


def _array_cache(out_dir: Path, rows: list[dict[str, Any]]) -> np.ndarray | None:
    """The decoded-array cache of small sets (N x C x H x W uint8, manifest order), as the real-data writer
    makes it; None for a set that is not small (synscale.data.shards.array_cacheable)."""
    from synscale.data.shards import array_cacheable, decode_png, iter_tar_samples, stored_image

    images, total = [], 0
    for shard in dict.fromkeys(r["shard"] for r in rows):
        for key, files in iter_tar_samples(out_dir / shard):
            img = decode_png(stored_image(files)[1], f"{out_dir / shard}: sample {key!r}")
            total += img.nbytes
            if not array_cacheable(img, total):
                return None
            images.append(img[None] if img.ndim == 2 else img.transpose(2, 0, 1))
    return np.stack(images) if images else None


class _ShardActor:
    """A Ray Data actor: builds the generator once, then generates whole shards."""

    def __init__(self, spec: GeneratorSpec, labels: LabelSet, out_dir: str, guidance: float, batch_size: int) -> None:
        import torch

        if spec.threads:  # the actor's process is ours alone
            torch.set_num_threads(spec.threads)
        self.generator = spec.build()
        self.labels, self.out_dir, self.guidance, self.batch_size = labels, Path(out_dir), guidance, batch_size

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        import pandas as pd

        for shard, rows in zip(batch["shard"], batch["rows"], strict=True):
            generate_shard(self.generator, pd.DataFrame(json.loads(rows)), self.labels, self.out_dir, int(shard),
                           self.guidance, self.batch_size)
        return {"shard": batch["shard"], "n": np.array([len(json.loads(r)) for r in batch["rows"]])}


def _generate_with_ray(spec: GeneratorSpec, shard_rows: dict[int, Any], labels: LabelSet, out_dir: Path,
                       guidance: float, batch_size: int, pbar: Any, actors: int, num_cpus: float, num_gpus: float) -> None:
    """Shards as rows of a Ray dataset, mapped by a pool of `actors` generator actors."""
    from synscale.extras import require

    require("ray", "generation with --executor ray")
    import ray

    if not shard_rows:
        return
    if not ray.is_initialized():  # RAY_ADDRESS joins a cluster; else a local instance on this machine
        from synscale.ray_init import init_ray

        init_ray(quiet=True)
    items = [{"shard": j, "rows": rows.to_json(orient="records")} for j, rows in shard_rows.items()]
    ds = ray.data.from_items(items).map_batches(
        _ShardActor, fn_constructor_args=(spec, labels, str(out_dir), guidance, batch_size),
        batch_size=1, concurrency=actors, num_cpus=num_cpus, num_gpus=num_gpus or None,
    )
    for row in ds.iter_rows():
        pbar.update(int(row["n"]))
