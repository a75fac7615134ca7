"""The command line's arguments: every subcommand's flags, argparse's errors as one line, and the flags refused
where they would do nothing."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from synscale.config import SIZES, ConfigError
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
    p.add_argument("--image-format", choices=["auto", "png", "jpeg", "webp"], default="auto",
                   help="how the shards store the images: auto keeps the source's JPEG/WebP/PNG bytes where they decode "
                   "to exactly the set's pixels (img2dataset's as they came), else PNG; png: always PNG; jpeg, webp: "
                   "re-encoded at --image-quality (lossy)")
    p.add_argument("--image-quality", type=number(int, 1, 100), default=95, help="JPEG / WebP quality (default 95)")
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
    p.add_argument("--nodes", type=number(int, 0), default=0, help="run --nproc processes on each of this many "
                   "machines of the Ray cluster through Ray Train (docs/cluster.md)")


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
