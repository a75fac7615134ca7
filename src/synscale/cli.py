"""The `synscale` command line."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from synscale.atomic import clear_partials, read_json, replacing, write_text
from synscale.config import SIZES, ConfigError, StudyConfig, find_study, load_study, to_dict
from synscale.schema import number


def _study_args(p: argparse.ArgumentParser, default_workdir: str | None, executors: bool = True) -> None:
    p.add_argument("--workdir", "-w", default=default_workdir, help="where stages, results and the report go")
    p.add_argument("--size", choices=SIZES, default="default", help="shrink or grow the study's grid")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override any study key, e.g. --set train.lr=0.001 (repeatable)")
    p.add_argument("--quiet", "-q", action="store_true", help="no progress output")
    if executors:
        _executor_args(p)


def _executor_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--executor", choices=("local", "ray"), default="local",
                   help="local: the stages here (--jobs at once); ray: every ready stage a task on a Ray cluster")
    p.add_argument("--jobs", "-j", type=number(int, 1), default=None,
                   help="local executor: stages run at once, each in a process with cores/jobs threads "
                        "(default: 1; the demo: 2 where there are 2 or more cores)")
    p.add_argument("--ray-address", default=None, help="the Ray cluster to join (default: RAY_ADDRESS, else a local "
                   "instance on this machine)")
    p.add_argument("--ray-cpus", type=number(int, 1), default=None, help="CPUs of a local Ray instance (default: all)")


def _prompt_args(p: argparse.ArgumentParser, per_class: int) -> None:
    p.add_argument("--labels", default="fashion-mnist", help="fashion-mnist, imagenet, or a file of class names")
    p.add_argument("--strategy", action="append", default=None,
                   help="a prompt strategy (repeatable for prompts; generate takes one); default: all / classname")
    p.add_argument("--per-class", type=number(int, 1), default=per_class, help="prompts (images) per class")
    p.add_argument("--seed", type=number(int, 0), default=0)
    p.add_argument("--captioner", default="attributes",
                   help="in-captions: 'attributes' (built-in), 'file:<captions.csv|jsonl>' or 'hf:<image-to-text model>'")
    p.add_argument("--word2sen-model", default=None,
                   help="word2sen: a seq2seq language model (local path or hub id); default: the offline composer")
    p.add_argument("--allow-model-download", action="store_true", help="let transformers fetch hub ids")
    p.add_argument("--data", default="fashion-mnist", help="in-captions: the real dataset whose images are captioned")
    p.add_argument("--data-root", default="")
    _column_args(p)
    p.add_argument("--wordnet", default="auto", help="auto, nltk, debian, or a WordNet 3.0 dict directory")


def _column_args(p: argparse.ArgumentParser) -> None:
    """An hf dataset's columns (the `image_column` / `label_column` keys of a study's data tables; defaults as
    synscale.data.datasets.DEFAULT_COLUMNS, not imported here: it would load numpy for every command)."""
    p.add_argument("--image-column", default="image", help="hf: the column that holds the images")
    p.add_argument("--label-column", default="label", help="hf: the column that holds the labels (a ClassLabel)")


def _data_parsers(sub: Any) -> None:
    """`synscale shards` and `synscale imagenet-val`: real data a user has, made into sets."""
    p = sub.add_parser("shards", help="write a real dataset split (or img2dataset image-text pairs) into synscale shards + manifest")
    p.add_argument("dataset", help="fashion-mnist, imagefolder, webdataset, img2dataset or hf")
    p.add_argument("--root", default="", help="the dataset's location (fashion-mnist: Debian's files by default; hf: a "
                   "directory save_to_disk wrote, or a hub dataset name in the local cache, NAME or NAME:CONFIG)")
    p.add_argument("--split", default="train")
    p.add_argument("--image-size", type=number(int, 0), default=0, help="resize + centre-crop to this size (0: native)")
    p.add_argument("--shard-size", type=number(int, 1), default=10000)
    p.add_argument("--limit", type=number(int, 0), default=0, help="write the first N samples only (0: all)")
    p.add_argument("--out", required=True, help="output directory (empty or new)")
    p.add_argument("--overwrite", action="store_true", help="replace the set that --out holds")
    p.add_argument("--workers", type=number(int, 0), default=0, help="processes that decode, resize and encode the images (1: "
                   "this one; default: the cores, at most 8, for splits of 5,000 images or more); the same bytes")
    p.add_argument("--max-bad-fraction", type=number(float, 0, 1, high_open=True), default=None, metavar="F",
                   help="skip up to this share of samples that cannot be read, recording each in the set (default: 0 "
                   "for labelled sets, 0.01 for img2dataset pairs)")
    _column_args(p)

    p = sub.add_parser("imagenet-val", help="link ImageNet's flat validation folder into <out>/val/<wnid>/ (no copies), "
                       "the layout the imagefolder source reads")
    p.add_argument("images", help="the folder of ILSVRC2012_val_*.JPEG")
    p.add_argument("--labels", required=True, help="the devkit's ILSVRC2012_validation_ground_truth.txt, or "
                   "Kaggle's LOC_val_solution.csv")
    p.add_argument("--meta", default=None, help="the devkit's meta.mat (default: beside the ground-truth file)")
    p.add_argument("--out", required=True, help="the imagefolder root; the split goes in <out>/<split>")
    p.add_argument("--split", default="val")
    p.add_argument("--overwrite", action="store_true", help="replace <out>/<split> if it exists")


class Parser(argparse.ArgumentParser):
    """argparse whose errors are ConfigErrors: a bad flag is one line like every other user error (the usage
    stays one `--help` away)."""

    def error(self, message: str) -> Any:
        import re

        message = re.sub(r"^argument (-[^/:\s]+)(?:/\S+)?: must", r"\1 must", message)
        raise ConfigError(f"{self.prog}: {message} (see {self.prog} --help)")


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="synscale",
        description="Scaling laws of synthetic (and real) images for model training.",
    )
    from synscale import __version__

    parser.add_argument("--version", action="version", version=f"synscale {__version__}")
    parser.add_argument("--debug", action="store_true", help="show the traceback of an error (also SYNSCALE_DEBUG=1)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    p = sub.add_parser("demo", help="run the miniature study on real Fashion-MNIST (minutes on a CPU)")
    _study_args(p, "synscale-demo")

    p = sub.add_parser("study", help="run a study file (TOML) end to end; complete stages are skipped")
    p.add_argument("study", help="a study file, or the name of a shipped study (e.g. fashion-mnist)")
    _study_args(p, None)
    p.add_argument("--dry-run", action="store_true", help="print the plan and the training budget, and check every "
                   "model, dataset and evaluation set the study names; run nothing")
    p.add_argument("--no-checks", action="store_true", help="with --dry-run: the plan only (no data or models needed, "
                   "no torch: plan a study for another machine)")

    p = sub.add_parser("config", help="print a study's validated config after --size and --set")
    p.add_argument("study")
    p.add_argument("--size", choices=SIZES, default="default")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")

    _data_parsers(sub)
    _generation_parsers(sub)

    p = sub.add_parser("metrics", help="recognizability, diversity, Fréchet distance, an LPIPS-style distance, "
                       "precision/recall, density/coverage and Vendi of any set (synthetic or real) against a study's real data")
    p.add_argument("set", help="a synscale set directory (shards + manifest.parquet), e.g. from `synscale generate`")
    p.add_argument("--study", default="fashion-mnist", help="the study whose real data, reference network and "
                   "[metrics] settings to use (a file or a shipped name)")
    _study_args(p, "synscale-metrics", executors=False)
    p.add_argument("--name", default=None, help="the configuration's name in the output (default: the set's directory name)")
    p.add_argument("--real-val", default=None, help="a real validation set directory (default: the study's test split)")
    p.add_argument("--real-train", default=None, help="a real training set directory (default: the study's train split)")
    p.add_argument("--out", default=None, help="write the row here (.json, .csv or .parquet); the per-class table "
                   "goes beside it as <name>_per_class.<ext>")

    _training_parsers(sub)
    _analysis_parsers(sub)
    return parser


def _generation_parsers(sub: Any) -> None:
    p = sub.add_parser("prompts", help="write a prompt set (class, prompt, seed) and show examples per strategy")
    _prompt_args(p, per_class=3)
    p.add_argument("--out", default=None, help="write the prompt set here (.parquet or .csv)")
    p.add_argument("--show", type=number(int, 0), default=3, help="examples to print per strategy")

    p = sub.add_parser("generate", help="generate a class-balanced synthetic set (resumable) as shards + manifest")
    p.add_argument("--model", required=True, help="builtin:<family>[@<weights dir>], a diffusers pipeline directory, "
                   "or a hub id with --allow-download")
    p.add_argument("--out", required=True, help="output set directory; rerun the same command to resume")
    p.add_argument("--prompts", default=None, help="a prompt set from `synscale prompts --out` (else built here)")
    _prompt_args(p, per_class=10)
    p.add_argument("--guidance", type=number(float, 0), default=2.0, help="classifier-free guidance scale")
    p.add_argument("--guidance-convention", choices=("diffusers", "muse"), default="diffusers",
                   help="how --guidance is stated: diffusers' scale s (guided above 1), or Muse's t = s - 1")
    p.add_argument("--safety-checker", action="store_true", help="keep the pipeline's safety checker: an image it "
                   "flags is generated again with the next seed (default: generated without it)")
    p.add_argument("--upscale", action="append", default=[], metavar="DIR[,guidance=G][,steps=N][,noise_level=L]",
                   help="a super-resolution stage run on the images (IF's stage II, then III), in order")
    p.add_argument("--steps", type=number(int, 0), default=0, help="sampling steps (0: the model's default; diffusers 50)")
    p.add_argument("--scheduler", default="default", help="default, ddim, dpm-solver++ or euler")
    p.add_argument("--dtype", default="auto", help="auto (bfloat16 on a GPU, float32 on a CPU), float32, float16 "
                   "or bfloat16")
    p.add_argument("--image-size", type=number(int, 1), default=None,
                   help="generation height = width (default: the pipeline's)")
    p.add_argument("--size", default=None, help=argparse.SUPPRESS)  # the old name: refused, with the new one
    p.add_argument("--resolution", type=number(int, 0), default=0, help="resize outputs to this size (0: keep)")
    p.add_argument("--channels", type=int, choices=(1, 3), default=3)
    p.add_argument("--batch-size", type=number(int, 0), default=0, help="images per sampling call (0: 64 on a GPU, 16 on a CPU)")
    p.add_argument("--compile", choices=("auto", "on", "off"), default="auto",
                   help="torch.compile the denoiser and the decoder, calls padded to the batch (auto: on a GPU)")
    p.add_argument("--channels-last", choices=("auto", "on", "off"), default="auto",
                   help="channels-last memory for the denoiser and the decoder (auto: on a GPU)")
    p.add_argument("--shard-size", type=number(int, 1), default=1000)
    p.add_argument("--allow-download", action="store_true", help="let diffusers fetch a hub id")
    p.add_argument("--executor", choices=("local", "ray"), default="local",
                   help="local: this process; ray: a Ray Data pool of generator actors (RAY_ADDRESS joins a cluster)")
    p.add_argument("--ray-actors", type=number(int, 1), default=None, help="ray: generator actors (one per GPU; "
                   "default 1)")
    p.add_argument("--ray-cpus", type=number(float, 0, low_open=True), default=None,
                   help="ray: CPUs per actor (fractional on a CPU machine; default 0.5)")
    p.add_argument("--ray-gpus", type=number(float, 0), default=None, help="ray: GPUs per actor (default 0)")
    p.add_argument("--threads", type=number(int, 0), default=0, help="torch threads while generating (0: default); "
                   "the same value under both executors gives byte-identical sets")
    p.add_argument("--quiet", "-q", action="store_true")
    _generator_parsers(sub)


def _generator_parsers(sub: Any) -> None:
    p = sub.add_parser("generator", help="built-in text-to-image models: train")
    gsub = p.add_subparsers(dest="generator_command", metavar="ACTION", required=True)
    t = gsub.add_parser("train", help="train a built-in family on real Fashion-MNIST with captions from every strategy")
    t.add_argument("--family", default="latent-diffusion", help="latent-diffusion, pixel-diffusion or masked-token")
    t.add_argument("--out", required=True, help="weights directory (family.json + safetensors)")
    t.add_argument("--data-root", default="", help="Fashion-MNIST files (default: Debian's)")
    t.add_argument("--ae-steps", type=number(int, 1), default=None,
                   help="autoencoder / VQ tokenizer steps (default: what the shipped weights used)")
    t.add_argument("--steps", type=number(int, 1), default=None, help="denoiser / transformer steps (default: as shipped)")
    t.add_argument("--batch-size", type=number(int, 1), default=None, help="default: as shipped")
    t.add_argument("--lr", type=number(float, 0, low_open=True), default=None, help="default: as shipped")
    t.add_argument("--seed", type=number(int, 0), default=0)
    t.add_argument("--per-strategy", type=number(int, 1), default=20, help="prompts per class and strategy in the caption pool")
    t.add_argument("--limit", type=number(int, 0), default=0, help="train on the first N images only (0: all)")
    t.add_argument("--quiet", "-q", action="store_true")
    e = gsub.add_parser("eval", help="recognizability (macro-F1 of a real-trained classifier) and diversity of a "
                        "generator's samples at several guidance scales")
    e.add_argument("--family", default=None, help="a built-in family (default: latent-diffusion)")
    e.add_argument("--weights", default=None, help="the family's weights dir (default: the shipped ones)")
    e.add_argument("--model", default=None, help="any diffusers model instead of a built-in family "
                   "(a pipeline dir for a 28x28 grayscale Fashion-MNIST generator)")
    e.add_argument("--guidance", default="1,2,4,7", help="comma-separated guidance scales")
    e.add_argument("--per-class", type=number(int, 1), default=100)
    e.add_argument("--strategy", default="classname", help="prompt strategy")
    e.add_argument("--steps", type=number(int, 0), default=0, help="sampling steps (0: the model's default)")
    e.add_argument("--seed", type=number(int, 0), default=0)
    e.add_argument("--workdir", default="synscale-eval", help="where the reference classifier is cached")
    e.add_argument("--data-root", default="", help="Fashion-MNIST files (default: Debian's)")
    e.add_argument("--grid", default=None, help="write a PNG grid of samples (classes x samples, per guidance)")
    e.add_argument("--out", default=None, help="write the table here (.csv or .parquet)")
    e.add_argument("--quiet", "-q", action="store_true")


def _training_parsers(sub: Any) -> None:
    p = sub.add_parser("recipes", help="list the training recipes, or print one (a [train] table)")
    p.add_argument("name", nargs="?", help="a recipe name, e.g. paper-vit-b16")

    p = sub.add_parser("train", help="train one classifier (or, with --clip, one CLIP) on synscale sets with a study's "
                                     "recipe; runs under torchrun as it is (multi-GPU, multi-node)")
    p.add_argument("sets", nargs="+", help="synscale set directories (shards + manifest.parquet), used together; with "
                                           "--mix-real-prob: a real and a synthetic pair set of the same captions")
    p.add_argument("--study", default="fashion-mnist", help="the study file whose [train] (or [clip.train]) table is used")
    p.add_argument("--size", choices=SIZES, default="default")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a study key, e.g. --set train.recipe=paper-vit-b16")
    p.add_argument("--clip", action="store_true", help="train CLIP with the study's [clip.train] recipe on image-text pairs")
    p.add_argument("--mix-real-prob", type=number(float, 0, 1), default=None, metavar="P",
                   help="CLIP's mixed pairs: each caption takes its real image (first set) with probability P, else its "
                        "synthetic one (second set)")
    p.add_argument("--scale", type=number(int, 0), default=0,
                   help="train on the nested subset of this size (class-balanced images; with --clip, captions) of the "
                        "set; default: every image; the schedule's iterations follow it")
    p.add_argument("--out", required=True, help="output directory: model.safetensors, train.json, checkpoints/")
    p.add_argument("--nproc", type=number(int, 0), default=0, help="launch torchrun with this many local processes")


def _analysis_parsers(sub: Any) -> None:
    p = sub.add_parser("fit", help="recompute the analysis from W/results (no training): Equation 2 fits with CIs, "
                                   "breaks, saturating fits, per-class fits and categories, correlations, k predictor")
    p.add_argument("workdir")
    p.add_argument("--bootstrap", type=number(int, 0), default=None, help="bootstrap replicates (default: the study's)")

    p = sub.add_parser("report", help="rebuild W/report/index.html and its figures from W/results alone "
                                      "(runs the analysis first if its tables are missing)")
    p.add_argument("workdir")

    p = sub.add_parser("doctor", help="what this environment holds for synscale (versions, device, optional pieces, "
                                      "weights, WordNet) and what is missing for the paper's world, with the fix")
    p.add_argument("--json", action="store_true", help="print it as JSON")

    p = sub.add_parser("status", help="a study's plan with each stage's state (done, running, pending, failed), the "
                                      "compute spent per stage kind and what is left")
    p.add_argument("workdir")


def main(argv: list[str] | None = None) -> int:
    """The one boundary of user errors: a UserError (raised wherever input is judged, flags included) is one
    line and exit 2; an OSError a user can act on is one line; anything else is a bug and keeps its traceback."""
    import signal

    from synscale.errors import UserError, interrupt, os_error_line

    argv = sys.argv[1:] if argv is None else argv
    debug = "--debug" in argv or os.environ.get("SYNSCALE_DEBUG", "") not in ("", "0")
    before = signal.signal(signal.SIGTERM, interrupt)  # SIGTERM ends like Ctrl-C: one line, resumable
    args = argparse.Namespace(command="")
    try:
        args = build_parser().parse_args(argv)
        check_flags(args)
        return COMMANDS[args.command](args)
    except KeyboardInterrupt:
        if debug:
            raise
        print(f"\nsynscale: interrupted; {_RESUME.get(args.command, 'nothing half-written is kept as complete')}",
              file=sys.stderr)
        return 130
    except (UserError, FileNotFoundError) as e:
        if debug:
            raise
        line = os_error_line(e) if isinstance(e, OSError) and e.errno is not None else str(e)
        print(f"synscale: error: {line}", file=sys.stderr)
        return 2
    except OSError as e:  # a path that cannot be written (permissions, a file in the way, a full disk)
        if debug:
            raise
        print(f"synscale: error: {os_error_line(e)}", file=sys.stderr)
        return 1
    finally:
        signal.signal(signal.SIGTERM, before)


_RESUME = {c: "complete stages are kept: rerun the same command to resume" for c in ("demo", "study", "metrics")} | {
    "generate": "finished shards are kept: rerun the same command to resume",
    "train": "the newest checkpoint is kept: rerun the same command to resume",
}


TABLE_OUTS = {"prompts": (".parquet", ".csv"), "generator eval": (".parquet", ".csv"),
              "metrics": (".json", ".parquet", ".csv")}  # commands whose --out is a table


def check_flags(args: argparse.Namespace) -> None:
    """Flags that would do nothing where they are given are refused, not ignored; a flag that only the Ray
    executor reads takes --executor ray."""
    flag = lambda name: "--" + name.replace("_", "-")  # noqa: E731
    given = [n for n in ("ray_address", "ray_cpus", "ray_actors", "ray_gpus") if getattr(args, n, None) is not None]
    executor = getattr(args, "executor", None)
    if executor == "local" and given:
        raise ConfigError(f"{flag(given[0])} is for the Ray executor: add --executor ray, or leave it out")
    if getattr(args, "jobs", None) is not None:
        if executor == "ray":
            raise ConfigError("--jobs is the local executor's; Ray runs every ready stage on the cluster's free "
                              "resources (--ray-cpus sizes a local instance)")
        from synscale.device import cores

        if args.jobs > cores():
            raise ConfigError(f"--jobs {args.jobs}: this machine has {cores()} cores and each job runs a stage in a "
                              f"process of its own; give at most --jobs {cores()}")
    if args.command in ("prompts", "generate"):
        _check_prompt_flags(args)
    if args.command == "generate" and args.size is not None:
        raise ConfigError("synscale generate: the image side is --image-size (--size is a study's size elsewhere)")
    kinds = TABLE_OUTS.get(args.command if args.command != "generator" else f"generator {args.generator_command}")
    if kinds and args.out and Path(args.out).suffix not in kinds:
        raise ConfigError(f"--out {args.out}: write a {' or '.join(kinds)} file (the table's format follows the name)")
    if getattr(args, "no_checks", False) and not args.dry_run:
        raise ConfigError("--no-checks is for --dry-run (a run always checks its inputs first)")


def _check_prompt_flags(args: argparse.Namespace) -> None:
    """The prompt flags that serve one strategy are refused where no strategy given uses them (prompts without
    --strategy makes every strategy; generate's default, classname, uses none of them)."""
    strategies = args.strategy or (["in-captions", "word2sen"] if args.command == "prompts" else ["classname"])
    serves = {"in-captions": (("--captioner", args.captioner != "attributes"), ("--data", args.data != "fashion-mnist"),
                              ("--data-root", bool(args.data_root))),
              "word2sen": (("--word2sen-model", args.word2sen_model is not None),)}
    for strategy, flags in serves.items():
        given = [flag for flag, set_ in flags if set_]
        if given and strategy not in strategies:
            raise ConfigError(f"{given[0]} is for the {strategy} strategy, which --strategy does not name; add "
                              f"--strategy {strategy}, or leave {given[0]} out")
    if args.allow_model_download and not (args.captioner.startswith("hf:") or args.word2sen_model):
        raise ConfigError("--allow-model-download lets an hf: captioner or a --word2sen-model be fetched; neither is "
                          "given")


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
    import os

    import pandas as pd

    from synscale.data.shards import read_labels, read_manifest
    from synscale.train.launch import make_spec, run_spec, save_indexes, torchrun

    cfg = load_study(find_study(args.study), args.size, args.overrides)
    train = cfg.clip.train if args.clip else cfg.train
    if args.clip and train.task != "contrastive":
        raise ConfigError(f"{args.study}: [clip.train] is not a CLIP recipe; add --set clip.train.recipe=miniature-clip")
    train = train if not args.nproc else dataclasses.replace(train, nproc=args.nproc)
    if args.mix_real_prob is not None and (not args.clip or len(args.sets) != 2 or not 0 <= args.mix_real_prob <= 1):
        raise ConfigError("--mix-real-prob P takes --clip, two pair sets (real, synthetic) and 0 <= P <= 1")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    labels = read_labels(args.sets[0])
    parts: list[tuple[str, str | None]] = [(s, None) for s in args.sets]
    mixed = args.mix_real_prob is not None
    scale = len(read_manifest(args.sets[0])) if mixed else sum(len(read_manifest(s)) for s in args.sets)
    rank = os.environ.get("RANK", "0")
    if args.scale:
        if len(args.sets) != 1 and not mixed:
            raise ConfigError("--scale takes one set (a nested subset of it)")
        keys = _subset_keys(args.sets[0], args.scale, labels, args.clip, cfg)
        with replacing(out / "subset.parquet") as tmp:  # under torchrun every process writes it: atomically
            pd.DataFrame({"key": keys}).to_parquet(tmp, index=False)
        parts, scale = [(s, str(out / "subset.parquet")) for s in args.sets], args.scale
    spec = make_spec(to_dict(train), parts, len(labels) if labels else 0, scale, out, args.mix_real_prob)
    if args.nproc > 1:  # the loader index built once, here, for every rank to memory-map
        write_text(out / "spec.json", json.dumps(save_indexes(spec, out), indent=1))
        torchrun(out / "spec.json", args.nproc)
        meta = read_json(out / "train.json")
    else:
        write_text(out / "spec.json", json.dumps(spec, indent=1))  # under torchrun every process writes it
        meta = run_spec(spec)
    if rank == "0":
        what = "captions" if args.clip else "images"
        print(f"trained {train.model} on {scale:,} {what} for {meta['steps']:,} steps "
              f"({meta['images_per_s']:.0f} img/s) -> {out / 'model.safetensors'}")
    return 0


def _subset_keys(set_dir: str, scale: int, labels: object, captions: bool, cfg: StudyConfig) -> list[str]:
    """The nested subset of `scale` captions (CLIP) or class-balanced images of a set."""
    from synscale.data.pairs import caption_subset
    from synscale.data.shards import read_manifest
    from synscale.data.subsets import subset_keys

    manifest = read_manifest(set_dir)
    try:
        if captions:
            return caption_subset(manifest, scale, cfg.clip.order_seed)
        return subset_keys(manifest, scale, len(labels), cfg.data.order_seed)  # type: ignore[arg-type]
    except ValueError as e:
        raise ConfigError(f"{set_dir}: {e}") from None


def cmd_demo(args: argparse.Namespace) -> int:
    """The shipped miniature study, two jobs at once where there are two cores (unless --jobs says otherwise)."""
    return run_study_command(args, load_study(find_study("fashion-mnist"), args.size, args.overrides),
                             default_jobs=min(2, os.cpu_count() or 1))


def cmd_study(args: argparse.Namespace) -> int:
    cfg = load_study(find_study(args.study), args.size, args.overrides)
    if args.dry_run:
        print_plan(cfg)
        print_stages(cfg)
        return 0 if args.no_checks else print_checks(cfg)
    return run_study_command(args, cfg, default_jobs=1)


def run_study_command(args: argparse.Namespace, cfg: StudyConfig, *, default_jobs: int) -> int:
    """Run `cfg` in the command's workdir with its executor, then print the summary, the report and the time."""
    from synscale.study import run_study

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


def print_checks(cfg: StudyConfig) -> int:
    """The checks a run makes before its first stage: 0 when all pass, else 2 (one line per problem)."""
    from synscale.study.preflight import problems

    found = problems(cfg)
    if not found:
        print("\nchecks: the data, every model and evaluation set the study names are there and load")
        return 0
    print(f"\nchecks: {len(found)} problem(s); the study would stop before its first stage:", file=sys.stderr)
    for line in found:
        print(f"synscale: error: {line}", file=sys.stderr)
    return 2


def print_plan(cfg: StudyConfig) -> None:
    if cfg.scales:
        print(f"study {cfg.name}: dataset {cfg.data.dataset}, model {cfg.train.model}, batch {cfg.train.batch_size}")
        every = sorted({s for n in cfg.classifier_sources() for s in cfg.source_scales(n)})
        _print_runs(every, cfg.train, "scale", "images seen")
        sources = cfg.classifier_sources()
        models = sum(len(cfg.source_scales(n)) for n in sources)
        own = "" if all(cfg.source_scales(n) == cfg.scales for n in sources) else ", by each source's scales"
        print(f"sources: {len(sources)} ({models} models in all{own})")
        print(f"  real: scales {_scale_text(cfg.source_scales('real'))}")
        for syn in cfg.synthetic:
            print(f"  {syn.name}: {syn.model}, {syn.strategy}, guidance {syn.guidance:g}, {syn.steps or 'default'} steps, "
                  f"{'per_class ' + str(syn.per_class) if syn.per_class else 'enough images for the largest scale'}"
                  f"; scales {_scale_text(cfg.source_scales(syn.name))}")
    cc = cfg.clip
    if cc.scales:
        pairs = (f"{cfg.data.dataset} {cfg.data.train_split} captioned by {cc.pairs.captioner}" if cc.pairs.dataset == "captioned"
                 else f"img2dataset shards {cc.pairs.root}")
        print(f"\nCLIP: {cc.train.model}, batch {cc.train.batch_size}; real pairs: {pairs}; zero-shot templates {cc.templates}")
        if cc.small_scales():
            _print_runs(cc.small_scales(), cc.train, "captions", "pairs seen")
        if cc.large_scales():
            print(f"from {cc.large_from:,} captions: {cc.train_large.model}, batch {cc.train_large.batch_size}")
            _print_runs(cc.large_scales(), cc.train_large, "captions", "pairs seen")
        sources = cc.sources()
        evals = 1 + len(cfg.evaluate.shifts) + len(cfg.evaluate.sets) + len(cfg.evaluate.zero_shot)
        print(f"CLIP sources: {', '.join(sources)} ({len(sources) * len(cc.scales)} models, each evaluated zero-shot on "
              f"{evals} set(s))")
        for g in cc.synthetic:
            print(f"  {g.name}: {g.model} regenerates the {max(cc.scales):,} captions' images at guidance {g.guidance:g}, "
                  f"{g.steps or 'default'} steps")
        for m in cc.mix:
            print(f"  {m.name}: each caption takes its real image with probability {m.real_prob:g}, else its {m.synthetic} image")


def print_stages(cfg: StudyConfig) -> None:
    """The plan's stages per kind (synscale.study.build_plan) and what they will cost (synscale.study.estimate)."""
    from synscale.study.estimate import print_estimate
    from synscale.study import build_plan

    sp = build_plan(cfg)
    counts = sp.plan.counts()
    print(f"\nplan: {len(sp.plan)} stages ({', '.join(f'{k} {n}' for k, n in counts.items())}); "
          "`synscale status W` shows their states while the study runs")
    print_estimate(sp, cfg)


def _scale_text(scales: list[int]) -> str:
    return ", ".join(f"{s / 1e6:g}M" if s >= 100_000 else f"{s:,}" for s in scales)


def _print_runs(scales: list[int], train: object, what: str, seen: str) -> None:
    """One line per data scale: steps, warm-up, samples through the model, epochs."""
    from synscale.train.schedule import floored, run_length, samples_seen

    print(f"{what:>10} {'iters':>8} {'warmup':>7} {seen:>12} {'epochs':>7}")
    total = 0
    for s in scales:
        it, wu = run_length(s, train)
        n = samples_seen(s, train)
        total += n
        floor = f"  (schedule.min_epochs floor: the log-scale rule gives {'none' if s <= train.schedule.zero_scale else 'fewer'})" \
            if floored(s, train) else ""  # type: ignore[attr-defined]
        print(f"{s:>10,} {it:>8,} {wu:>7,} {n:>12,} {n / s:>7.1f}{floor}")
    print(f"total {seen.split()[0]} through the model: {total:,} per source (one model per scale)")


def print_summary(workdir: Path) -> None:
    """The study's results on the terminal: the grid at its largest scale, the curves, the fits on the real
    test set, the per-class categories, the k predictor and the six findings (the rest is in the report)."""
    from synscale.results import read_table

    results = workdir / "results"
    scaling = read_table(results / "scaling.parquet", empty_ok=False)
    fits = read_table(results / "fits.parquet")
    if scaling is None or fits is None:
        raise FileNotFoundError(f"{results}: no scaling.parquet / fits.parquet: run the study (or synscale fit) first")
    val = scaling[scaling.eval_set == "val"]
    others = sorted(set(scaling.eval_set) - {"val"})
    print("\nloss (top-1) on the real test set (val)" + (f"; {', '.join(others)} are in the report" if others else "")
          + ": each curve per scale (CLIP: captions)")
    for task, t in val.groupby("task", sort=False):
        _print_curves(task, t, read_table(results / "metrics.parquet"))
    print("\nEquation 2 fits on val (linear_until: the power law holds up to this scale; break_at: it breaks there):")
    cols = [c for c in ("task", "source", "k", "k_lo", "k_hi", "perf_at_DI", "r2", "n_points", "linear_until", "break_at")
            if c in fits]
    shown = fits[fits.eval_set == "val"][cols].copy()
    for c in ("linear_until", "break_at"):
        if c in shown:
            shown[c] = ["–" if v != v else f"{int(v):,}" for v in shown[c]]
    print(shown.to_string(index=False, float_format="%.4f"))
    if (results / "analysis.json").exists():
        _print_analysis(read_json(results / "analysis.json"))
    if (results / "findings.json").exists():
        from synscale.analysis.findings import format_findings

        print("\nthe paper's findings on this run (W/results/findings.json, the report's last section):")
        for line in format_findings(read_json(results / "findings.json")):
            print("  " + line)


def _print_curves(task: str, t: Any, metrics: Any) -> None:
    """A task's curves (loss and top-1 per scale) and its grid at the largest scale, best first."""
    per = t.groupby(["source", "scale"], sort=False).agg(loss=("loss", "mean"), top1=("top1", "mean")).reset_index()
    counts = per.groupby("source", sort=False).size()
    curves = per[per.source.isin(counts[counts > 1].index)]
    if len(curves):
        cell = curves.assign(v=[f"{r.loss:.3f} ({r.top1:.2f})" for r in curves.itertuples()])
        table = cell.pivot(index="source", columns="scale", values="v").reindex(counts[counts > 1].index).fillna("")
        print(f"[{task}]\n" + table.to_string())
    configs = set(t.loc[(t.real_images == 0) & (t.source != "real"), "source"]) if task == "classification" else set()
    top = per.scale[per.source.isin(configs)].max() if configs else 0
    grid = per[per.source.isin(configs) & (per.scale == top)].sort_values("loss")  # every configuration
    if len(grid) > 1:
        if metrics is not None:
            grid = grid.merge(metrics[[c for c in ("config", "recognizability", "diversity") if c in metrics]],
                              left_on="source", right_on="config", how="left").drop(columns="config")
        print(f"\n[{task}] the grid at {int(grid.scale.max()):,} images, best first:\n"
              + grid.drop(columns="scale").to_string(index=False, float_format="%.3f"))


def _print_analysis(info: dict[str, Any]) -> None:
    """The per-class categories and the k predictor's skill (analysis.json)."""
    for config, cats in info.get("categories", {}).items():
        if config != "real":
            print(f"\nper-class categories of {config} (val): "
                  + "; ".join(f"{c}: {', '.join(cats[c]) or 'none'}" for c in ("scaling", "easy", "poor")))
    for level, what in (("class", "k_c per class, leave-one-configuration-out"),
                        ("config", "k per configuration, leave-one-out")):
        pred = info.get("predictor", {}).get(level, {})
        if "mae" in pred:
            print(f"\n{what} from recognizability + diversity: MAE {pred['mae']:.4f} vs {pred['mae_mean']:.4f} "
                  f"predicting the mean (skill {pred['skill']:+.3f}, {pred['n']} rows)")


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
    import pandas as pd

    from synscale.config import GenerationConfig
    from synscale.generate.runner import generate_set, generator_spec
    from synscale.generate.tuning import TUNED, identity
    from synscale.prompts.strategies import make_prompts
    from synscale.schema import IF_CHANGED, keys_by_rule

    strategy = (args.strategy or ["classname"])
    if len(strategy) != 1:
        raise ConfigError("generate takes one --strategy (a set is generated from one prompt strategy)")
    cfg = _check_generate_flags(args, strategy[0])
    ctx = prompt_context(args, strategy if not args.prompts else [])
    labels = ctx.labels
    if args.prompts:
        prompts = _read_prompts(Path(args.prompts))
        if prompts.strategy.nunique() != 1:
            raise ConfigError(f"{args.prompts} holds several strategies; write one set per strategy")
    else:
        prompts = make_prompts(strategy[0], ctx, args.per_class, args.seed)
    out = Path(args.out)
    spec = generator_spec(cfg, args.resolution, args.channels)
    settings = {k: getattr(args, k) for k in ("model", "guidance", "steps", "scheduler", "resolution", "channels",
                                               "shard_size", "threads")}
    settings["size"] = args.image_size  # the marker's key from before the flag was renamed: old sets still resume
    settings.update(identity({k: spec.kwargs[k] for k in TUNED}))  # as resolved on this machine
    added = keys_by_rule(GenerationConfig, IF_CHANGED)  # keys added later: recorded where they differ from the default
    settings.update({k: v for k, v in spec.kwargs.items() if k in added and added[k] != v})
    settings["prompts"] = pd.util.hash_pandas_object(prompts[["index", "prompt", "seed"]], index=False).sum().item()
    marker = out / "generate.json"
    clear_partials(out)  # what a run killed as it wrote left half-written
    if not marker.exists() and out.is_dir() and any(out.iterdir()):
        raise ConfigError(f"{out}: holds files that `synscale generate` did not write; choose an empty or new --out")
    if marker.exists() and read_json(marker) != settings:
        raise ConfigError(f"{out} holds a set generated with other settings ({marker}); choose another --out, "
                          "or delete it to start again")
    out.mkdir(parents=True, exist_ok=True)
    write_text(marker, json.dumps(settings, indent=1))
    n = generate_set(spec, prompts, labels, out, args.guidance, spec.kwargs["batch_size"], args.shard_size,
                     progress=not args.quiet, executor=args.executor, ray_actors=cfg.ray_actors,
                     ray_num_cpus=cfg.ray_cpus, ray_num_gpus=cfg.ray_gpus)
    print(f"wrote {n:,} images to {out}")
    return 0


PROMPT_COLUMNS = ("index", "class_index", "prompt", "strategy", "seed")


def _read_prompts(path: Path) -> Any:
    """A prompt set from `synscale prompts --out` (.parquet or .csv), checked: readable, its columns, rows."""
    import pandas as pd

    if not path.is_file():
        raise ConfigError(f"{path}: no such prompts file (write one with `synscale prompts --out FILE`)")
    try:
        prompts = pd.read_parquet(path) if path.suffix == ".parquet" else pd.read_csv(path)
    except (OSError, ValueError) as e:
        raise ConfigError(f"{path}: not a readable prompt set ({str(e).splitlines()[0]})") from None
    missing = [c for c in PROMPT_COLUMNS if c not in prompts.columns]
    if missing:
        raise ConfigError(f"{path}: no column {', '.join(map(repr, missing))}; a prompt set has "
                          f"{', '.join(PROMPT_COLUMNS)} (`synscale prompts --out FILE` writes one)")
    if not len(prompts):
        raise ConfigError(f"{path}: no prompts (the file has no rows)")
    return prompts


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
        from synscale.generate.quality import evaluate_family

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

    from synscale.metrics.run import SetRef, metrics_stage, reference, test_keys
    from synscale.data.cache import ArrayCache
    from synscale.data.stages import real_shards
    from synscale.progress import Log

    cfg = load_study(find_study(args.study), args.size, args.overrides)
    mc = cfg.metrics
    if mc.per_class == 0:
        raise ConfigError("metrics.per_class is 0: nothing to measure")
    workdir, log = Path(args.workdir), Log(args.quiet)
    sets = {}
    for role, given, split in (("train", args.real_train, cfg.data.train_split), ("val", args.real_val, cfg.data.test_split)):
        sets[role] = SetRef.of(given, workdir) if given else real_shards(cfg.data, workdir, split, log)
    test = SetRef.of(args.set, workdir)
    ref = reference(cfg, sets["train"], ArrayCache(), log)
    name = args.name or test.path.resolve().name
    st = metrics_stage(mc, ref, name, test=test, test_keys=test_keys(test.path, mc.per_class, mc.seed),
                       real_val=sets["val"], fd_set=test, real_train=sets["train"], quiet=args.quiet)
    log.stage(f"metrics {name}", st)
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
    from synscale.data.datasets import columns_of, create_dataset
    from synscale.data.shards import check_out_dir, read_manifest, skipped_record, write_dataset_split
    from synscale.stage import building_dir

    ds = create_dataset(args.dataset, args.root, args.image_size, **columns_of(args))
    from synscale.config import CAPTION_SETS_MAX_BAD

    budget = args.max_bad_fraction if args.max_bad_fraction is not None else (CAPTION_SETS_MAX_BAD if ds.labels is None
                                                                              else 0.0)
    out = Path(args.out)
    made = {"dataset": args.dataset, "root": args.root, "source": ds.fingerprint(), "split": args.split,
            "image_size": args.image_size, "shard_size": args.shard_size, "limit": args.limit, **columns_of(args),
            **({"max_bad_fraction": budget} if budget else {})}
    record = out / "shards.json"
    if not args.overwrite and (out / "manifest.parquet").exists() and record.exists():
        if read_json(record) == made:  # the same command again: the set is there
            print(f"{out} holds this set already ({len(read_manifest(out)):,} samples); nothing to do")
            return 0
    check_out_dir(out, args.overwrite)
    with building_dir(out) as tmp:  # the set appears whole, or (killed) not at all; a rerun starts again
        n = write_dataset_split(ds, args.split, tmp, args.shard_size, limit=args.limit, workers=args.workers,
                                max_bad_fraction=budget)
        (tmp / "shards.json").write_text(json.dumps(made, indent=1))
    skipped = skipped_record(out)["skipped"]
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
    import shutil

    from synscale.analysis.run import analyse, reference_sizes
    from synscale.config import FitConfig
    from synscale.stage import building_dir, recover_dir

    workdir = Path(args.workdir)
    results = workdir / "results"
    recover_dir(results)
    for need in (results / "scaling.parquet", results / "meta.json"):
        if not need.exists():
            raise FileNotFoundError(f"{need} does not exist: run the study first (synscale study ... --workdir {workdir})")
    study = read_json(workdir / "study.json", default={})
    d_ref = reference_sizes(read_json(results / "meta.json"))
    fc = FitConfig(**study.get("fit", {}))
    fc.check()
    from synscale.results import read_table

    for name in ("scaling", "scaling_per_class", "scaling_examples", "metrics", "metrics_per_class", "generation"):
        read_table(results / f"{name}.parquet", empty_ok=name != "scaling")  # a bad table named where it is
    with building_dir(results) as tmp:  # the analysis tables replace the old ones whole, or not at all
        for p in results.iterdir():
            if p.is_file():
                shutil.copy2(p, tmp / p.name)
        analyse(tmp, d_ref, fc, args.bootstrap)
    print_summary(workdir)
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


if __name__ == "__main__":
    raise SystemExit(main())
