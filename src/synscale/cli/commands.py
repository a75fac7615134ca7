"""The commands: each reads its arguments and calls the study layer or a package (synscale.study, .data, .prompts,
.generate, .train, .analysis, .report); the rules they apply live there."""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path
from typing import Any

from synscale.atomic import read_json, write_text
from synscale.config import ConfigError, StudyConfig, find_study, load_study, to_dict
from synscale.schema import number


def cmd_recipes(args: argparse.Namespace) -> int:
    from synscale.train.recipes import RecipeError, recipe_names, recipe_text

    if args.name:
        try:
            print(recipe_text(args.name), end="")
        except RecipeError as e:
            raise ConfigError(str(e)) from None
        return 0
    for name in recipe_names():
        first = recipe_text(name).splitlines()[0].lstrip("# ")
        print(f"{name:16s} {first}")
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    import dataclasses

    from synscale.train.launch import train_sets

    cfg = load_study(find_study(args.study), args.size, args.overrides)
    train = cfg.clip.train if args.clip else cfg.train
    if args.clip and train.task != "contrastive":
        raise ConfigError(f"{args.study}: [clip.train] is not a CLIP recipe; add --set clip.train.recipe=miniature-clip")
    train = train if not args.nproc else dataclasses.replace(train, nproc=args.nproc)
    train = train if not args.nodes else dataclasses.replace(train, nodes=args.nodes)
    if args.mix_real_prob is not None and (not args.clip or len(args.sets) != 2 or not 0 <= args.mix_real_prob <= 1):
        raise ConfigError("--mix-real-prob P takes --clip, two pair sets (real, synthetic) and 0 <= P <= 1")
    if args.scale and len(args.sets) != 1 and args.mix_real_prob is None:
        raise ConfigError("--scale takes one set (a nested subset of it)")
    order, seed = ("caption", cfg.clip.order_seed) if args.clip else ("class", cfg.data.order_seed)
    meta, scale = train_sets(to_dict(train), args.sets, Path(args.out), args.scale, order, seed, args.mix_real_prob)
    if os.environ.get("RANK", "0") == "0":
        print(f"trained {train.model} on {scale:,} {'captions' if args.clip else 'images'} for {meta['steps']:,} steps "
              f"({meta['images_per_s']:.0f} img/s) -> {Path(args.out) / 'model.safetensors'}")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    """The shipped miniature study, two jobs at once where there are two cores (unless --jobs says otherwise)."""
    return run_study_command(args, load_study(find_study("fashion-mnist"), args.size, args.overrides),
                             default_jobs=min(2, os.cpu_count() or 1))


def cmd_study(args: argparse.Namespace) -> int:
    cfg = load_study(find_study(args.study), args.size, args.overrides)
    if args.dry_run:
        from synscale.study.dryrun import print_checks, print_plan, print_stages

        print_plan(cfg)
        print_stages(cfg)
        return 0 if args.no_checks else print_checks(cfg)
    return run_study_command(args, cfg, default_jobs=1)


def run_study_command(args: argparse.Namespace, cfg: StudyConfig, *, default_jobs: int) -> int:
    """Run `cfg` in the command's workdir with its executor, then print the summary, the report and the time."""
    from synscale.study import run_study
    from synscale.study.summary import print_summary

    workdir = Path(args.workdir or f"runs/{cfg.name}-{args.size}")
    t0 = time.time()
    if args.executor == "ray":
        options: dict[str, Any] = {"address": args.ray_address, "num_cpus": args.ray_cpus}
    else:
        options = {"jobs": args.jobs if args.jobs is not None else default_jobs}
    report = run_study(cfg, workdir, quiet=args.quiet, executor=args.executor, **options)
    print_summary(workdir)
    print(f"\nreport: {report.resolve()}")
    secs = time.time() - t0
    print(f"wall time: {int(secs // 60)} min {secs % 60:.0f} s ({workdir}; complete stages are reused on a rerun)")
    return 0


def prompt_context(args: argparse.Namespace, strategies: list[str]) -> object:
    """The label set, WordNet source and (for in-captions) captions of real images named by the args."""
    from synscale.labels import named_label_set
    from synscale.prompts.strategies import PROMPTS, make_context

    labels = named_label_set(args.labels)
    for name in strategies:
        PROMPTS.get(name)  # unknown names fail before any work
    captions = None
    if "in-captions" in strategies:
        from synscale.data.datasets import columns_of, create_dataset
        from synscale.prompts.captioners import captions_per_class

        ds = create_dataset(args.data, args.data_root, **columns_of(args))
        if ds.labels.names != labels.names:
            raise ConfigError(f"in-captions: dataset {args.data} has other classes than label set {args.labels}")
        captions = captions_per_class(ds, "train", args.captioner, pool=200, seed=args.seed,
                                      local_files_only=not args.allow_model_download)
    sentences = None
    if args.word2sen_model and "word2sen" in strategies:
        from synscale.prompts.hf_backends import Seq2SeqSentences

        sentences = Seq2SeqSentences(args.word2sen_model, local_files_only=not args.allow_model_download)
    return make_context(labels, args.labels, captions=captions, wordnet_source=args.wordnet, sentence_model=sentences)


def cmd_prompts(args: argparse.Namespace) -> int:
    import pandas as pd

    from synscale.prompts.strategies import PROMPTS, make_prompts

    strategies = args.strategy or PROMPTS.names()
    ctx = prompt_context(args, strategies)
    sets = [make_prompts(name, ctx, args.per_class, args.seed) for name in strategies]
    for df in sets:
        print(f"\n[{df.strategy.iloc[0]}]")
        step = max(1, len(df) // max(1, args.show))
        for _, row in df.iloc[::step].head(args.show).iterrows():
            print(f"  {row.class_name:>14} | {row.prompt}")
    if args.out:
        out = pd.concat(sets, ignore_index=True)
        (out.to_csv(args.out, index=False) if args.out.endswith(".csv") else out.to_parquet(args.out, index=False))
        print(f"\nwrote {len(out):,} prompts to {args.out}")
    return 0


def cmd_generate(args: argparse.Namespace) -> int:
    from synscale.generate.runner import generate_to_dir
    from synscale.prompts.strategies import make_prompts, read_prompt_set

    strategy = (args.strategy or ["classname"])
    if len(strategy) != 1:
        raise ConfigError("generate takes one --strategy (a set is generated from one prompt strategy)")
    cfg = _check_generate_flags(args, strategy[0])
    ctx = prompt_context(args, strategy if not args.prompts else [])
    labels = ctx.labels
    if args.prompts:
        prompts = read_prompt_set(Path(args.prompts))
        if prompts.strategy.nunique() != 1:
            raise ConfigError(f"{args.prompts} holds several strategies; write one set per strategy")
    else:
        prompts = make_prompts(strategy[0], ctx, args.per_class, args.seed)
    out = Path(args.out)
    n = generate_to_dir(cfg, prompts, labels, out, args.resolution, args.channels, progress=not args.quiet)
    print(f"wrote {n:,} images to {out}")
    return 0


def _check_generate_flags(args: argparse.Namespace, strategy: str) -> Any:
    """The flags under the rules of a study's [[synthetic]] keys, and the model as a study checks it; returns
    them as a synscale.config.SyntheticConfig."""
    from synscale.config import SyntheticConfig
    from synscale.study.preflight import check_cascade, check_generator
    from synscale.schema import from_dict

    import re

    flags = {"guidance": args.guidance, "guidance_convention": args.guidance_convention,
             "safety_checker": args.safety_checker, "upscale": [_upscale_stage(u) for u in args.upscale],
             "steps": args.steps, "size": args.image_size or 0, "seed": args.seed,
             "batch_size": args.batch_size, "shard_size": args.shard_size, "threads": args.threads,
             "per_class": args.per_class, "executor": args.executor, "allow_download": args.allow_download,
             "compile": ON_OFF[args.compile], "channels_last": ON_OFF[args.channels_last],
             **{k: getattr(args, k) for k in ("ray_actors", "ray_cpus", "ray_gpus") if getattr(args, k) is not None}}
    try:
        cfg = from_dict(SyntheticConfig, {"name": "generate", "model": args.model, "scheduler": args.scheduler,
                                    "dtype": args.dtype, "strategy": strategy, **flags}, "synscale generate")
    except ConfigError as e:
        msg = re.sub(rf"'?\b({'|'.join(flags)})\b'?", lambda m: GENERATE_FLAGS.get(m.group(1), "--" + m.group(1).replace("_", "-")),
                     str(e).replace("[study] ", ""))
        msg = msg.replace("set --guidance-convention = 'muse'", "add --guidance-convention muse")
        raise ConfigError(msg) from None
    check_generator(args.model, args.scheduler, args.dtype, args.allow_download, "synscale generate --model")
    check_cascade(cfg, "synscale generate")
    return cfg


def _upscale_stage(spec: str) -> dict[str, Any]:
    """`--upscale DIR[,guidance=G][,steps=N][,noise_level=L]` as an [[synthetic.upscale]] table."""
    model, *rest = spec.split(",")
    out: dict[str, Any] = {"model": model}
    for item in rest:
        key, eq, value = item.partition("=")
        if not eq or key not in ("guidance", "steps", "noise_level"):
            raise ConfigError(f"--upscale {spec!r}: expected DIR[,guidance=G][,steps=N][,noise_level=L], got {item!r}")
        try:
            out[key] = number(float, 0)(value) if key == "guidance" else number(int, 0)(value)
        except argparse.ArgumentTypeError as e:
            raise ConfigError(f"--upscale {spec!r}: {key} {e}") from None
    return out


ON_OFF = {"auto": "auto", "on": True, "off": False}
GENERATE_FLAGS = {"size": "--image-size"}  # [[synthetic]] keys whose flag has another name


def _guidance_item(text: str, given: str) -> float:
    """One guidance of `generator eval --guidance G1,G2,...`, under the rule of every number flag."""
    try:
        return number(float, 0)(text)
    except argparse.ArgumentTypeError as e:
        raise ConfigError(f"synscale generator eval: --guidance {given!r}: {text.strip()!r} {e}") from None


def cmd_generator(args: argparse.Namespace) -> int:
    from synscale.generate.builtin import DEFAULT_FAMILY, FAMILIES
    from synscale.generate.train_builtin import train_family

    if args.generator_command == "eval":
        from synscale.study.reference import evaluate_family

        if args.model and (args.family or args.weights):
            raise ConfigError("give --model or --family/--weights, not both")
        family = args.family or DEFAULT_FAMILY
        if not args.model and family not in FAMILIES:
            raise ConfigError(f"unknown built-in family {family!r}; available: {', '.join(FAMILIES.names())}")
        model = args.model or f"builtin:{family}" + (f"@{args.weights}" if args.weights else "")
        guidances = [_guidance_item(g, args.guidance) for g in args.guidance.split(",")]
        table = evaluate_family(model, guidances, args.per_class, args.workdir, args.strategy, args.steps, args.seed,
                                args.grid, data_root=args.data_root, quiet=args.quiet)
        print(f"{model}: {table.steps.iloc[0]} steps, prompts {args.strategy}, {args.per_class} images per class; "
              f"reference classifier's macro-F1 on real test images {table.real_test_macro_f1.iloc[0]:.3f}")
        print(table[["guidance", "macro_f1", "within_class_std"]].to_string(index=False, float_format="%.3f"))
        if args.out:
            (table.to_parquet if args.out.endswith(".parquet") else table.to_csv)(args.out, index=False)
        if args.grid:
            print(f"sample grid -> {args.grid}")
        return 0
    if args.family not in FAMILIES:
        raise ConfigError(f"unknown built-in family {args.family!r}; available: {', '.join(FAMILIES.names())}")
    out = train_family(args.family, args.out, "fashion-mnist", args.data_root, args.limit, args.ae_steps, args.steps,
                       args.batch_size, args.lr, args.seed, args.per_strategy, progress=not args.quiet)
    print(f"wrote {args.family} weights to {out}")
    return 0


def cmd_metrics(args: argparse.Namespace) -> int:
    import pandas as pd

    from synscale.study.reference import measure_set

    cfg = load_study(find_study(args.study), args.size, args.overrides)
    st = measure_set(cfg, Path(args.set), Path(args.workdir), args.name, args.real_train, args.real_val, args.quiet)
    row = read_json(st.path / "summary.json")
    per_class = pd.read_parquet(st.path / "per_class.parquet")
    print("\n".join(f"{k:>16}: {v:.4f}" if isinstance(v, float) else f"{k:>16}: {v}" for k, v in row.items()))
    print(per_class.round(4).to_string(index=False))
    if args.out:
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        pc_out = out.with_name(f"{out.stem}_per_class{out.suffix}")
        if out.suffix == ".json":
            write_text(out, json.dumps(row, indent=1))
            write_text(pc_out, per_class.to_json(orient="records", indent=1))
        else:
            for table, path in ((pd.DataFrame([row]), out), (per_class, pc_out)):
                table.to_parquet(path, index=False) if path.suffix == ".parquet" else table.to_csv(path, index=False)
        print(f"wrote {out} and {pc_out}")
    return 0


def cmd_config(args: argparse.Namespace) -> int:
    cfg = load_study(find_study(args.study), args.size, args.overrides)
    print(json.dumps(to_dict(cfg), indent=2))
    return 0


def cmd_shards(args: argparse.Namespace) -> int:
    from synscale.data.datasets import columns_of
    from synscale.data.encoding import ImageEncoding
    from synscale.data.shards import read_manifest
    from synscale.data.stages import shards_to_dir

    out = Path(args.out)
    done = shards_to_dir(args.dataset, args.root, args.image_size, args.shard_size, args.split, out, limit=args.limit,
                         columns=columns_of(args), workers=args.workers, max_bad_fraction=args.max_bad_fraction,
                         overwrite=args.overwrite, encoding=ImageEncoding(args.image_format, args.image_quality))
    if done is None:
        print(f"{out} holds this set already ({len(read_manifest(out)):,} samples); nothing to do")
        return 0
    n, skipped = done
    print(f"wrote {n:,} samples of {args.dataset} [{args.split}] to {args.out}"
          + (f" (skipped {skipped:,} that could not be read: {out / 'skipped.parquet'})" if skipped else ""))
    return 0


def cmd_imagenet_val(args: argparse.Namespace) -> int:
    from synscale.data.imagenet_val import arrange_val, val_labels, write_classnames

    out = Path(args.out) / args.split
    if out.exists() and not args.overwrite:
        raise ConfigError(f"{out} exists; choose another --out, or pass --overwrite to replace it")
    labels = val_labels(Path(args.labels), Path(args.meta) if args.meta else None)
    n = arrange_val(Path(args.images), labels, out)
    names = write_classnames(Path(args.out), sorted(set(labels.values())))
    print(f"linked {n:,} images of {len(set(labels.values())):,} classes into {out}/<wnid>/"
          + (f" (readable class names in {names})" if names else "") + "; read them with "
          f"--set data.dataset=imagefolder --set data.root={args.out} --set data.test_split={args.split}")
    return 0


def cmd_fit(args: argparse.Namespace) -> int:
    from synscale.analysis.run import refit
    from synscale.study.summary import print_summary

    refit(Path(args.workdir), args.bootstrap)
    print_summary(Path(args.workdir))
    return 0


def cmd_doctor(args: argparse.Namespace) -> int:
    from synscale import doctor

    report = doctor.collect()
    print(json.dumps(report, indent=1) if args.json else doctor.render(report))
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    from synscale.study.status import print_status

    print_status(Path(args.workdir))
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from synscale.report.html import write_report

    workdir = Path(args.workdir)
    study = read_json(workdir / "study.json", default={"name": workdir.name})
    print(write_report(workdir, study["name"]).resolve())
    return 0


COMMANDS = {"demo": cmd_demo, "metrics": cmd_metrics, "study": cmd_study, "config": cmd_config, "shards": cmd_shards,
            "imagenet-val": cmd_imagenet_val, "prompts": cmd_prompts,
            "generate": cmd_generate, "generator": cmd_generator,
            "recipes": cmd_recipes, "train": cmd_train, "fit": cmd_fit, "report": cmd_report, "status": cmd_status,
            "doctor": cmd_doctor}
