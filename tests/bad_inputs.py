"""The bad-input catalogue: every input a user can get wrong, with the one line synscale answers.

Each case builds its input under a temporary directory and gives the command line; tests/test_bad_inputs.py runs
each one (in this process, as `synscale` would) and checks: a non-zero exit, no traceback, one error line that
contains the case's `expect`. docs/reliability.md lists them; `python tests/bad_inputs.py` prints that table
from what the commands say now (run with the test environment: it runs every case).
"""

from __future__ import annotations

import json
import shutil
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

HERE = Path(__file__).parent
STUDY = """name = "bad"
scales = [1000, 2000]
train.recipe = "miniature-cnn"
metrics.per_class = 0
"""


@dataclass(frozen=True)
class Case:
    id: str
    area: str
    what: str  # the bad input, in words
    make: Callable[[Path, Fixtures], list[str]]  # (case dir, shared inputs) -> the command line
    expect: str  # a part of the error line
    code: int = 2


class Fixtures:
    """Inputs the cases share, made on first use: a small real set, a study file, a results directory."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def set(self) -> Path:
        """60 Fashion-MNIST test images as a synscale set in 3 shards of 20 (with its array cache)."""
        path = self.root / "set"
        if not path.exists():
            from synscale.cli import main

            assert main(["shards", "fashion-mnist", "--split", "test", "--limit", "60", "--shard-size", "20",
                         "--out", str(path)]) == 0
        return path

    def copy_set(self, d: Path) -> Path:
        out = d / "set"
        shutil.copytree(self.set(), out)
        return out

    def results(self, d: Path) -> Path:
        """A workdir whose results tables a study could have written (simulated, two configurations)."""
        sys.path.insert(0, str(HERE))
        from tests_helpers import simulate_results

        w = d / "w"
        simulate_results(w / "results", {"real": [0.3, 0.4], "syn": [0.2, 0.1]}, {"real": [1.0, 1.2], "syn": [0.5, 0.6]},
                         ["a", "b"], scales=(500, 1000, 2000), per_class_eval=20, shifted=False)
        (w / "study.json").write_text(json.dumps({"name": "sim", "fit": {"bootstrap": 20, "saturating_bootstrap": 5}}))
        return w


TINY = ("train.schedule.zero_scale=1", "scales=[4]")  # scales a few images allow


def study(d: Path, text: str = STUDY, extra: str = "") -> str:
    p = d / "study.toml"
    p.write_text(text + extra)
    return str(p)


def dry(d: Path, *sets: str, text: str = STUDY, extra: str = "") -> list[str]:
    args = ["study", study(d, text, extra), "--dry-run"]
    for s in sets:
        args += ["--set", s]
    return args


def dry_synthetic(d: Path, model: str, keys: str = "") -> list[str]:
    """A dry run of the study with one [[synthetic]] table of `model` (and more `keys` lines)."""
    return dry(d, extra=f'[[synthetic]]\nname = "s"\nmodel = "{model}"\n{keys}')


def image_folder(d: Path, classes: dict[str, list[tuple[int, int]]], bad: str | None = None) -> Path:
    """`d/images/{train,test}/<class>/<i>.png` with images of the given (width, height); `bad`: a class whose
    first training file is not an image."""
    from PIL import Image

    root = d / "images"
    rng = np.random.default_rng(0)
    for split in ("train", "test"):
        for name, sizes in classes.items():
            folder = root / split / name
            folder.mkdir(parents=True, exist_ok=True)
            for i, (w, h) in enumerate(sizes):
                Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(folder / f"{i}.png")
    if bad:
        (root / "train" / bad / "0.png").write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    return root


def two_classes(n: int = 3, size: tuple[int, int] = (8, 8)) -> dict[str, list[tuple[int, int]]]:
    return {"cat": [size] * n, "dog": [size] * n}


def pipeline_dir(d: Path, index: str | None, parts: tuple[str, ...] = ()) -> str:
    p = d / "pipe"
    p.mkdir()
    if index is not None:
        (p / "model_index.json").write_text(index)
    for part in parts:
        (p / part).mkdir()
    return str(p)


def truncate(path: Path, keep: int) -> None:
    data = path.read_bytes()
    path.write_bytes(data[:keep])


def sample_boundary(shard: Path, samples: int) -> int:
    """The byte offset in a tar after its first `samples` samples (two members each)."""
    import tarfile

    with tarfile.open(shard) as tar:
        members = tar.getmembers()
    nxt = members[2 * samples]
    return nxt.offset


def generate(d: Path) -> list[str]:
    """`synscale generate` of the built-in latent diffusion into d/g: the cases add the flag they test."""
    return ["generate", "--model", "builtin:latent-diffusion", "--out", str(d / "g")]


def train(set_dir: Path, d: Path) -> list[str]:
    return ["train", str(set_dir), "--out", str(d / "model"), "--set", "train.recipe=miniature-cnn"]


def edit_manifest(set_dir: Path, fn: Callable) -> Path:
    import pyarrow.parquet as pq

    path = set_dir / "manifest.parquet"
    table = fn(pq.read_table(path))
    pq.write_table(table, path)
    return set_dir


def corrupt_png_same_size(set_dir: Path) -> Path:
    """Flip bytes inside the first PNG of the first shard (the tar keeps its size), drop the array cache."""
    shard = set_dir / "shard-00000.tar"
    data = bytearray(shard.read_bytes())
    start = data.index(b"IHDR")
    data[start: start + 40] = b"\x00" * 40
    shard.write_bytes(bytes(data))
    (set_dir / "arrays.npy").unlink()
    # the manifest's record holds the shard's sha256, not checked on every read; its size still matches
    return set_dir


def results_edit(d: Path, f: Fixtures, name: str, fn: Callable) -> list[str]:
    import pandas as pd

    w = f.results(d)
    path = w / "results" / name
    fn(path, pd.read_parquet(path))
    return ["fit", str(w), "--bootstrap", "10"]


def webdataset_tar(d: Path, n: int) -> Path:
    """A labelled webdataset of n samples in d/wds/train-000.tar with classnames.txt."""
    import io
    import tarfile

    from PIL import Image

    root = d / "wds"
    root.mkdir()
    (root / "classnames.txt").write_text("cat\ndog\n")
    with tarfile.open(root / "train-000.tar", "w") as tar:
        for i in range(n):
            buf = io.BytesIO()
            Image.fromarray(np.full((8, 8, 3), i, np.uint8)).save(buf, format="PNG")
            for name, data in ((f"s{i:03d}.png", buf.getvalue()), (f"s{i:03d}.cls", str(i % 2).encode())):
                info = tarfile.TarInfo(name)
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    return root


def _wds_truncated(d: Path, at_boundary: bool) -> list[str]:
    root = webdataset_tar(d, 20)
    tar = root / "train-000.tar"
    truncate(tar, sample_boundary(tar, 8) if at_boundary else sample_boundary(tar, 8) + 700)
    return ["shards", "webdataset", "--root", str(root), "--split", "train", "--out", str(d / "out")]


def hf_saved(d: Path, class_label: bool = True) -> Path:
    """A Hugging Face Dataset of 4 images (columns image, label) saved with save_to_disk in d/hf; `class_label`
    False: the label column holds plain integers."""
    import datasets
    from PIL import Image

    label = datasets.ClassLabel(names=["cat", "dog"]) if class_label else datasets.Value("int64")
    features = datasets.Features({"image": datasets.Image(), "label": label})
    images = [Image.fromarray(np.full((8, 8, 3), 60 * i, np.uint8)) for i in range(4)]
    datasets.Dataset.from_dict({"image": images, "label": [0, 1, 0, 1]}, features=features).save_to_disk(str(d / "hf"))
    return d / "hf"


def imagenet_val(d: Path, extra_image: bool = False) -> list[str]:
    """`synscale imagenet-val` on 2 images with the devkit's ground truth but no meta.mat beside it (or, with
    `extra_image`, with Kaggle's LOC_val_solution.csv labelling one image of three)."""
    from PIL import Image

    (d / "val").mkdir()
    for i in range(1, 4 if extra_image else 3):
        Image.fromarray(np.full((8, 8, 3), i, np.uint8)).save(d / "val" / f"ILSVRC2012_val_{i:08d}.JPEG")
    labels = d / ("LOC_val_solution.csv" if extra_image else "ILSVRC2012_validation_ground_truth.txt")
    labels.write_text("ImageId,PredictionString\nILSVRC2012_val_00000001,n01440764 1 2 3 4\n"
                      "ILSVRC2012_val_00000002,n01443537 1 2 3 4\n" if extra_image else "1\n2\n")
    return ["imagenet-val", str(d / "val"), "--labels", str(labels), "--out", str(d / "in1k")]


def _pairs_tar(d: Path, captions: list[bytes | None], jsons: dict[int, bytes] | None = None) -> str:
    """An img2dataset-style shard d/laion/00000.tar of 8-px PNGs with these captions (None: no .txt) and, for the
    samples `jsons` names, a .json; returns its path."""
    import io
    import tarfile

    from PIL import Image

    (d / "laion").mkdir(parents=True, exist_ok=True)
    with tarfile.open(d / "laion" / "00000.tar", "w") as tar:
        for i, text in enumerate(captions):
            buf = io.BytesIO()
            Image.fromarray(np.full((8, 8, 3), 10 * i, np.uint8)).save(buf, format="PNG")
            members = [("png", buf.getvalue()), ("txt", text), ("json", (jsons or {}).get(i))]
            for ext, data in [(e, m) for e, m in members if m is not None]:
                info = tarfile.TarInfo(f"{i:09d}.{ext}")
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    return str(d / "laion" / "00000.tar")


def odd_image(d: Path, kind: str) -> list[str]:
    """`synscale shards imagefolder` of a two-class folder with one more image: a float TIFF of values 0..255
    ("float"), a 32-bit TIFF beyond 16 bits ("int32") or a PNG whose header claims 20,000 x 20,000 px ("huge")."""
    import struct
    import zlib

    from PIL import Image

    root = image_folder(d, two_classes())
    if kind == "huge":
        def chunk(kind: bytes, data: bytes) -> bytes:
            return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

        ihdr = struct.pack(">IIBBBBB", 20000, 20000, 8, 0, 0, 0, 0)
        (root / "train" / "cat" / "3.png").write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) +
                                                     chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b""))
    else:
        values = np.arange(64, dtype=np.float32).reshape(8, 8) * (4.0 if kind == "float" else 1111)
        Image.fromarray(values if kind == "float" else values.astype(np.int32)).save(root / "train" / "cat" / "3.tif")
    return ["shards", "imagefolder", "--root", str(root), "--out", str(d / "o")]


def names_file(d: Path, text: str | bytes, wds: bool = False) -> list[str]:
    """`synscale shards` of a two-class image folder (or, `wds`, a webdataset) whose classnames.txt is `text`."""
    root = webdataset_tar(d, 4) if wds else image_folder(d, two_classes())
    path = root / "classnames.txt"
    path.write_bytes(text) if isinstance(text, bytes) else path.write_text(text)
    return ["shards", "webdataset" if wds else "imagefolder", "--root", str(root), "--split", "train", "--out",
            str(d / "o")]


CLIP = '[clip]\nscales = [100, 200]\n[clip.train]\nrecipe = "miniature-clip"\n'


def cut_workdir_file(d: Path, f: Fixtures, name: str, keep: int, command: str) -> list[str]:
    """A workdir whose `name` (a JSON file synscale wrote) is cut to its first `keep` bytes; `command` on it."""
    w = f.results(d)
    if name.startswith("plan/"):
        (w / "plan" / "nodes").mkdir(parents=True)
        (w / "plan" / "plan.json").write_text(json.dumps({"executor": "local", "nodes": [
            {"index": 0, "key": "a", "kind": "train", "deps": [], "info": {}}]}))
        (w / "plan" / "nodes" / "0.json").write_text(json.dumps({"key": "a", "state": "running", "pid": 1}))
    path = w / name
    path.write_bytes(path.read_bytes()[:keep])
    return [command, str(w)]


def captions_file(d: Path, name: str, data: bytes) -> list[str]:
    """`synscale prompts` of in-captions prompts captioned from the file `name` holding `data`."""
    (d / name).write_bytes(data)
    return ["prompts", "--strategy", "in-captions", "--captioner", f"file:{d / name}", "--per-class", "1"]


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def webdataset_bad_cls(d: Path) -> list[str]:
    """A labelled webdataset whose sample 3 has the label `cat` (not an integer), written by 2 worker processes."""
    root = webdataset_tar(d, 8)
    import io
    import tarfile

    tar_path = root / "train-000.tar"
    with tarfile.open(tar_path) as tar:
        members = [(m, tar.extractfile(m).read()) for m in tar.getmembers()]
    with tarfile.open(tar_path, "w") as tar:
        for m, data in members:
            data = b"cat" if m.name == "s003.cls" else data
            m.size = len(data)
            tar.addfile(m, io.BytesIO(data))
    return ["shards", "webdataset", "--root", str(root), "--split", "train", "--out", str(d / "out"), "--workers", "2"]


def _mixed_workdir(d: Path) -> list[str]:
    (d / "wfile").write_text("not a directory")
    return ["study", study(d), "--workdir", str(d / "wfile"), "-q"]


_HELD: list = []  # the study locks that cases hold as another study's run would, until their command has run


def _busy_workdir(d: Path) -> list[str]:
    """A workdir in which another study runs: its lock (W/study.lock) held here, as that study's run holds it."""
    from synscale.workdir import study_lock

    w = d / "w"
    w.mkdir()
    held = study_lock(w, "other-study", "0123456789abcdef")
    held.__enter__()
    _HELD.append(held)
    return ["study", study(d), "--workdir", str(w), "-q"]


CASES: list[Case] = [
    # ---- the study file and --set
    Case("study-missing", "study file", "a study file that does not exist",
         lambda d, f: ["study", str(d / "nope.toml"), "--dry-run"], "no such study file"),
    Case("study-toml-syntax", "study file", "a TOML syntax error",
         lambda d, f: ["study", study(d, "name = 'x'\nscales = [100,\n"), "--dry-run"], "not valid TOML"),
    Case("study-unknown-key", "study file", "an unknown key (a typo)",
         lambda d, f: dry(d, extra="scalez = [1]\n"), "unknown key 'scalez'"),
    Case("study-wrong-type", "study file", "a value of the wrong type",
         lambda d, f: dry(d, text=STUDY.replace("[1000, 2000]", '"many"')), "'scales' must be"),
    Case("study-scales-unsorted", "study file", "scales not increasing",
         lambda d, f: dry(d, text=STUDY.replace("[1000, 2000]", "[200, 100]")), "scales"),
    Case("study-scales-negative", "study file", "a negative scale",
         lambda d, f: dry(d, text=STUDY.replace("[1000, 2000]", "[-100, 200]")), "scales"),
    Case("study-no-scales", "study file", "no scales and no CLIP scales",
         lambda d, f: dry(d, text=STUDY.replace("[1000, 2000]", "[]")), "at least one data scale"),
    Case("set-no-equals", "study file", "--set without '='", lambda d, f: dry(d, "train.lr"), "expected KEY=VALUE"),
    Case("set-unknown-key", "study file", "--set of an unknown key", lambda d, f: dry(d, "train.lrr=1"), "unknown key"),
    Case("set-bad-value", "study file", "--set of a value of the wrong type", lambda d, f: dry(d, "train.lr=fast"),
         "train.lr"),
    Case("unknown-recipe", "study file", "an unknown training recipe",
         lambda d, f: dry(d, text=STUDY.replace("miniature-cnn", "nope")), "nope"),
    Case("unknown-dataset", "data", "an unknown dataset", lambda d, f: dry(d, 'data.dataset="nope"'), "nope"),
    Case("unknown-strategy", "generation", "an unknown prompt strategy",
         lambda d, f: dry_synthetic(d, "builtin:latent-diffusion", 'strategy = "nope"\n'),
         "unknown prompt strategy 'nope'"),
    Case("unknown-shift", "evaluation", "an unknown distribution shift", lambda d, f: dry(d, 'evaluate.shifts=["nope"]'),
         "nope"),
    Case("unknown-metric", "metrics", "an unknown metric name", lambda d, f: dry(d, 'metrics.names=["nope"]'), "nope"),
    Case("unknown-curve", "study file", "a curve naming no configuration", lambda d, f: dry(d, 'curves=["nope"]'),
         "nope"),
    Case("grid-empty-list", "study file", "a [[grid]] table with an empty guidance list",
         lambda d, f: dry(d, extra='[[grid]]\nmodel = "builtin:latent-diffusion"\nstrategy = "classname"\nguidance = []\n'),
         "guidance"),
    Case("mix-unknown-synthetic", "study file", "a [[mix]] naming no synthetic configuration",
         lambda d, f: dry(d, extra='[[mix]]\nname = "m"\nsynthetic = "nope"\n'), "no [[synthetic]] configuration"),
    Case("jobs-zero", "command line", "--jobs 0",
         lambda d, f: ["study", study(d), "--jobs", "0", "--workdir", str(d / "w"), "-q"], "--jobs must be >= 1, got 0"),
    # ---- models, checked before the first stage
    Case("timm-model-unknown", "models", "a classifier architecture timm does not have",
         lambda d, f: dry(d, "train.model=resnet_nope"), "train.model: unknown model 'resnet_nope'"),
    Case("builtin-family-unknown", "models", "an unknown built-in text-to-image family",
         lambda d, f: dry_synthetic(d, "builtin:nope"), "unknown built-in family 'nope'"),
    Case("builtin-weights-missing", "models", "built-in weights from a directory without them",
         lambda d, f: dry_synthetic(d, f"builtin:latent-diffusion@{d}"),
         "no built-in latent-diffusion weights"),
    Case("pipeline-dir-missing", "models", "a diffusers pipeline directory that does not exist",
         lambda d, f: dry_synthetic(d, f"{d}/nope"), "no pipeline directory"),
    Case("pipeline-dir-empty", "models", "an empty pipeline directory (no model_index.json)",
         lambda d, f: dry_synthetic(d, pipeline_dir(d, None)),
         "no model_index.json"),
    Case("pipeline-index-corrupt", "models", "a model_index.json that is not JSON",
         lambda d, f: dry_synthetic(d, pipeline_dir(d, "{oops")),
         "is not readable JSON"),
    Case("pipeline-part-missing", "models", "a pipeline directory without a part its model_index.json lists",
         lambda d, f: dry_synthetic(d, pipeline_dir(
             d, '{"_class_name": "StableDiffusionPipeline", "unet": ["diffusers", "UNet2DConditionModel"]}')),
         "lacks the folder of its part 'unet'"),
    Case("hub-id-not-cached", "models", "a hub id that is not in the local cache, without allow_download",
         lambda d, f: dry_synthetic(d, "nobody/no-such-model"),
         "nor a hub id in the local cache"),
    Case("scheduler-unknown", "models", "an unknown scheduler",
         lambda d, f: dry_synthetic(d, "builtin:latent-diffusion", 'scheduler = "nope"\n'),
         "unknown scheduler 'nope'"),
    Case("scheduler-for-pipeline", "models", "a scheduler the pipeline's sampling loop cannot use (DDIM for IF)",
         lambda d, f: dry_synthetic(d, "builtin:pixel-diffusion", 'scheduler = "ddim"\n'),
         "scheduler 'ddim' cannot sample IFPipeline"),
    Case("dtype-unknown", "models", "an unknown dtype",
         lambda d, f: dry_synthetic(d, "builtin:latent-diffusion", 'dtype = "float8"\n'),
         "unknown dtype 'float8'"),
    # ---- data, checked before the first stage
    Case("scale-too-large", "data", "a scale larger than the training split allows",
         lambda d, f: dry(d, "scales=[1000,100000]"), "the largest balanced scale is 60,000"),
    Case("split-missing", "data", "a training split the dataset does not have", lambda d, f: dry(d, 'data.train_split="nope"'),
         "has no split 'nope'"),
    Case("fashion-mnist-root-missing", "data", "a Fashion-MNIST directory without its files",
         lambda d, f: dry(d, f'data.root="{d}"'), "not found in"),
    Case("imagefolder-root-missing", "data", "an image folder that does not exist",
         lambda d, f: dry(d, 'data.dataset="imagefolder"', f'data.root="{d}/nope"'), "is not a directory"),
    Case("imagefolder-one-class", "data", "an image folder with one class",
         lambda d, f: dry(d, 'data.dataset="imagefolder"', f'data.root="{image_folder(d, {"cat": [(8, 8)] * 4})}"',
                          *TINY), "a classifier needs at least 2"),
    Case("imagefolder-empty-split", "data", "an empty split folder",
         lambda d, f: (image_folder(d, two_classes()), (d / "images" / "aaa").mkdir(),
                       dry(d, 'data.dataset="imagefolder"', f'data.root="{d}/images"', *TINY))[-1],
         "no class folders"),
    Case("imagefolder-mixed-sizes", "data", "images of mixed sizes kept at native size",
         lambda d, f: dry(d, 'data.dataset="imagefolder"',
                          f'data.root="{image_folder(d, {"cat": [(8, 8)] * 3, "dog": [(8, 8), (9, 8), (8, 8)]})}"',
                          *TINY), "images of several sizes at native size"),
    Case("imagefolder-corrupt-image", "data", "an image file that is not an image (found by the header check)",
         lambda d, f: dry(d, 'data.dataset="imagefolder"', f'data.root="{image_folder(d, two_classes(), bad="cat")}"',
                          *TINY), "0.png: not a readable image"),
    Case("study-attributes-colour", "data", "an in-captions configuration with the attribute captioner on colour images",
         lambda d, f: dry(d, 'data.dataset="imagefolder"', f'data.root="{image_folder(d, two_classes())}"', *TINY,
                          extra='[[synthetic]]\nname = "s"\nmodel = "builtin:latent-diffusion"\nstrategy = "in-captions"\n'),
         "[[synthetic]] 's' captioner: the built-in 'attributes' captioner reads grayscale images, imagefolder's have 3"),
    Case("ood-root-missing", "evaluation", "an OOD evaluation set whose folder does not exist",
         lambda d, f: dry(d, extra=f'[[evaluate.sets]]\nname = "o"\nroot = "{d}/nope"\n'), "root"),
    Case("ood-class-subset-missing", "evaluation", "an OOD class subset file that does not exist",
         lambda d, f: dry(d, extra=f'[[evaluate.sets]]\nname = "o"\nroot = "{d}"\nclass_subset = "{d}/nope.txt"\n'),
         "class_subset"),
    Case("ood-class-subset-unknown-names", "evaluation", "an OOD class subset naming classes the study does not have",
         lambda d, f: ((d / "subset.txt").write_text("Trouser\nSpaceship\n"),
                       dry(d, extra=f'[[evaluate.sets]]\nname = "o"\nroot = "{d}"\nclass_subset = "{d}/subset.txt"\n'))[1],
         "classes are not in the study, e.g. ['Spaceship']"),
    # ---- the workdir
    Case("workdir-is-file", "workdir", "a workdir that is a regular file", lambda d, f: _mixed_workdir(d),
         "is a file, not a directory"),
    Case("workdir-under-file", "workdir", "a workdir under a regular file",
         lambda d, f: ((d / "wfile").write_text("x"), ["study", study(d), "--workdir", str(d / "wfile" / "w"), "-q"])[1],
         "Not a directory", 1),
    Case("workdir-read-only", "workdir", "a workdir on a read-only file system",
         lambda d, f: ["study", study(d), "--workdir", "/sys/synscale-w", "-q"], "/sys/synscale-w", 1),
    # ---- synscale shards
    Case("shards-out-holds-set", "shards", "shards --out into a directory that holds a set",
         lambda d, f: ["shards", "fashion-mnist", "--split", "test", "--limit", "10", "--out", str(f.copy_set(d))],
         "holds a set; choose an empty directory, or pass --overwrite"),
    Case("shards-out-holds-files", "shards", "shards --out into a directory with other files",
         lambda d, f: ((d / "o").mkdir(), (d / "o" / "notes.txt").write_text("x"),
                       ["shards", "fashion-mnist", "--split", "test", "--limit", "10", "--out", str(d / "o")])[-1],
         "holds other files (notes.txt)"),
    Case("shards-out-is-file", "shards", "shards --out naming a regular file",
         lambda d, f: ((d / "o").write_text("x"), ["shards", "fashion-mnist", "--limit", "10", "--out", str(d / "o")])[1],
         "is a file, not a directory"),
    Case("shards-bad-shard-size", "shards", "--shard-size 0",
         lambda d, f: ["shards", "fashion-mnist", "--shard-size", "0", "--out", str(d / "o")], "--shard-size must be >= 1"),
    Case("shards-corrupt-image", "shards", "an image folder with a file that is not an image",
         lambda d, f: ["shards", "imagefolder", "--root", str(image_folder(d, two_classes(), bad="dog")), "--out",
                       str(d / "o")], "dog/0.png: not a readable image"),
    Case("shards-mixed-sizes", "shards", "images of mixed sizes at native size",
         lambda d, f: ["shards", "imagefolder", "--root",
                       str(image_folder(d, {"cat": [(8, 8)] * 2, "dog": [(8, 8), (8, 12)]})), "--out", str(d / "o")],
         "set data.image_size (synscale shards: --image-size)"),
    Case("shards-empty-split", "shards", "an image folder whose split has no class folders",
         lambda d, f: ((d / "images" / "train").mkdir(parents=True),
                       ["shards", "imagefolder", "--root", str(d / "images"), "--out", str(d / "o")])[1],
         "no class folders"),
    Case("shards-corrupt-image-workers", "shards", "a file that is not an image, read by a worker process (--workers 2)",
         lambda d, f: ["shards", "imagefolder", "--root", str(image_folder(d, two_classes(), bad="dog")), "--out",
                       str(d / "o"), "--workers", "2"], "dog/0.png: not a readable image"),
    Case("shards-negative-workers", "shards", "--workers -1",
         lambda d, f: ["shards", "fashion-mnist", "--workers", "-1", "--out", str(d / "o")], "--workers must be >= 0"),
    Case("shards-columns-not-hf", "shards", "--image-column for a dataset without named columns",
         lambda d, f: ["shards", "imagefolder", "--root", str(image_folder(d, two_classes())), "--image-column", "img",
                       "--out", str(d / "o")], "dataset imagefolder has no named columns (image_column = 'img')"),
    Case("hf-root-missing", "shards", "an hf dataset directory that does not exist",
         lambda d, f: ["shards", "hf", "--root", str(d / "nope"), "--out", str(d / "o")], "nope does not exist"),
    Case("hf-not-saved", "shards", "an hf root that save_to_disk did not write",
         lambda d, f: ["shards", "hf", "--root", str(d), "--out", str(d / "o")], "not a directory that save_to_disk wrote"),
    Case("hf-not-cached", "shards", "an hf hub name that is not in the local datasets cache",
         lambda d, f: ["shards", "hf", "--root", "nobody/no-such-dataset", "--out", str(d / "o")],
         "nor a dataset in the Hugging Face datasets cache"),
    Case("hf-column-missing", "shards", "an hf image column the dataset does not have",
         lambda d, f: ["shards", "hf", "--root", str(hf_saved(d)), "--image-column", "picture", "--out", str(d / "o")],
         "no column 'picture' (it has: image, label); set image_column (on the command line: --image-column)"),
    Case("hf-label-not-classlabel", "shards", "an hf label column of plain integers (no class names)",
         lambda d, f: ["shards", "hf", "--root", str(hf_saved(d, class_label=False)), "--out", str(d / "o")],
         "label column 'label' is Value('int64'), not a ClassLabel"),
    Case("study-columns-not-hf", "data", "data.image_column for a dataset without named columns",
         lambda d, f: dry(d, 'data.image_column="img"'), "image_column: dataset 'fashion-mnist' has no named columns"),
    Case("imagenet-val-no-meta", "imagenet-val", "the devkit's ground truth without its meta.mat",
         lambda d, f: imagenet_val(d), "its ILSVRC2012 ids need the devkit's meta.mat"),
    Case("imagenet-val-unlabelled", "imagenet-val", "an image the labels file does not list",
         lambda d, f: imagenet_val(d, extra_image=True), "ILSVRC2012_val_00000003.JPEG: no label for it"),
    Case("webdataset-truncated-boundary", "shards", "a webdataset tar truncated at a sample boundary",
         lambda d, f: _wds_truncated(d, True), "train-000.tar: truncated"),
    Case("webdataset-truncated-member", "shards", "a webdataset tar truncated inside a member",
         lambda d, f: _wds_truncated(d, False), "train-000.tar: truncated"),
    # ---- a synscale set read by a later step
    Case("set-not-a-set", "sets", "a directory that is not a synscale set", lambda d, f: train(d, d),
         "is not a synscale set: no manifest.parquet"),
    Case("set-shard-truncated-boundary", "sets", "a shard truncated at a sample boundary",
         lambda d, f: (s := f.copy_set(d), truncate(s / "shard-00001.tar", sample_boundary(s / "shard-00001.tar", 7)),
                       train(s, d))[-1], "bytes, the manifest records"),
    Case("set-shard-truncated-member", "sets", "a shard truncated inside a member",
         lambda d, f: (s := f.copy_set(d), truncate(s / "shard-00002.tar", 5000), train(s, d))[-1],
         "shard-00002.tar: 5,000 bytes, the manifest records"),
    Case("set-shard-missing", "sets", "a shard deleted", lambda d, f: (s := f.copy_set(d), (s / "shard-00001.tar").unlink(),
                                                                       train(s, d))[-1], "shard-00001.tar: the shard is missing"),
    Case("set-manifest-column-removed", "sets", "a manifest without its label column",
         lambda d, f: train(edit_manifest(f.copy_set(d), lambda t: t.drop_columns(["label"])), d), "no column 'label'"),
    Case("set-manifest-rows-removed", "sets", "a manifest with rows removed",
         lambda d, f: train(edit_manifest(f.copy_set(d), lambda t: t.slice(0, 50)), d), "50 rows, its record says 60"),
    Case("set-manifest-garbage", "sets", "a manifest that is not parquet",
         lambda d, f: (s := f.copy_set(d), (s / "manifest.parquet").write_bytes(b"garbage"), train(s, d))[-1],
         "manifest.parquet: not a readable manifest"),
    Case("set-array-cache-edited", "sets", "an array cache edited (other pixels, same size)",
         lambda d, f: (s := f.copy_set(d), np.save(s / "arrays.npy", np.zeros((60, 1, 28, 28), np.uint8)), train(s, d))[-1],
         "arrays.npy: the array cache does not match the set's manifest"),
    Case("set-array-cache-stale", "sets", "an array cache of other data (another size)",
         lambda d, f: (s := f.copy_set(d), np.save(s / "arrays.npy", np.zeros((10, 1, 28, 28), np.uint8)), train(s, d))[-1],
         "arrays.npy: the array cache does not match the set's manifest"),
    Case("set-corrupt-png", "sets", "a PNG inside a shard damaged (the shard keeps its size)",
         lambda d, f: train(corrupt_png_same_size(f.copy_set(d)), d), "not a readable image"),
    Case("train-unknown-model", "sets", "synscale train with a model timm does not have",
         lambda d, f: [*train(f.set(), d), "--set", "train.model=resnet_nope"], "train.model: unknown model 'resnet_nope'"),
    Case("train-scale-too-large", "sets", "synscale train --scale larger than the set",
         lambda d, f: [*train(f.set(), d), "--scale", "1000"], "the largest balanced scale of this set is"),
    # ---- synscale prompts / generate
    Case("generate-negative-guidance", "generate", "--guidance -1",
         lambda d, f: [*generate(d), "--guidance", "-1"],
         "--guidance must be >= 0"),
    Case("generate-negative-steps", "generate", "--steps -3",
         lambda d, f: [*generate(d), "--steps", "-3"],
         "--steps must be >= 0"),
    Case("generate-negative-batch", "generate", "--batch-size -1",
         lambda d, f: [*generate(d), "--batch-size", "-1"],
         "--batch-size must be >= 0"),
    Case("generate-zero-per-class", "generate", "--per-class 0",
         lambda d, f: [*generate(d), "--per-class", "0"],
         "--per-class must be >= 1"),
    Case("generate-unknown-family", "generate", "--model builtin:<unknown family>",
         lambda d, f: ["generate", "--model", "builtin:nope", "--out", str(d / "g")], "unknown built-in family 'nope'"),
    Case("generate-pipeline-empty", "generate", "--model naming an empty directory",
         lambda d, f: ["generate", "--model", pipeline_dir(d, None), "--out", str(d / "g")], "no model_index.json"),
    Case("generate-out-holds-set", "generate", "--out into a directory holding a set generate did not write",
         lambda d, f: ["generate", "--model", "builtin:latent-diffusion", "--out", str(f.copy_set(d))],
         "holds files that `synscale generate` did not write"),
    Case("generate-prompts-empty", "generate", "a prompts file with no rows",
         lambda d, f: ((d / "p.csv").write_text("index,class_index,prompt,strategy,seed\n"),
                       ["generate", "--model", "builtin:latent-diffusion", "--prompts", str(d / "p.csv"), "--out",
                        str(d / "g")])[1], "p.csv: no prompts"),
    Case("generate-prompts-missing-column", "generate", "a prompts file without its seed column",
         lambda d, f: ((d / "p.csv").write_text("index,class_index,prompt,strategy\n0,0,a shirt,classname\n"),
                       ["generate", "--model", "builtin:latent-diffusion", "--prompts", str(d / "p.csv"), "--out",
                        str(d / "g")])[1], "p.csv: no column 'seed'"),
    Case("generate-prompts-missing-file", "generate", "a prompts file that does not exist",
         lambda d, f: ["generate", "--model", "builtin:latent-diffusion", "--prompts", str(d / "p.csv"), "--out",
                       str(d / "g")], "p.csv"),
    Case("labels-file-missing", "prompts", "--labels naming a file that does not exist",
         lambda d, f: ["prompts", "--labels", str(d / "names.txt")], "names.txt"),
    Case("prompts-attributes-colour", "prompts", "in-captions prompts captioned by the built-in attribute captioner "
         "from colour images",
         lambda d, f: (image_folder(d, two_classes()), (d / "names.txt").write_text("cat\ndog\n"),
                       ["prompts", "--labels", str(d / "names.txt"), "--strategy", "in-captions", "--data", "imagefolder",
                        "--data-root", str(d / "images"), "--per-class", "2"])[-1],
         "the attribute captioner reads grayscale images, these have 3 channels"),
    # ---- the paper's models, dirty web data
    Case("generate-guidance-no-effect", "generate", "--guidance 0.5 in diffusers' convention (guided only above 1)",
         lambda d, f: ["generate", "--model", "builtin:masked-token", "--out", str(d / "g"), "--guidance", "0.5"],
         "--guidance 0.5 has no effect in diffusers' convention"),
    Case("study-muse-guidance-no-effect", "generation", "Muse's guidance 0.3 (the paper's) without its convention",
         lambda d, f: dry_synthetic(d, "builtin:masked-token", "guidance = 0.3\n"),
         "guidance 0.3 has no effect in diffusers' convention"),
    Case("generate-safety-checker-none", "generate", "--safety-checker for a model that has none",
         lambda d, f: [*generate(d), "--safety-checker"],
         "has no safety checker to keep"),
    Case("generate-upscale-bad-spec", "generate", "an --upscale stage with an unknown setting",
         lambda d, f: [*generate(d), "--upscale",
                       f"{d},stepz=2"], "expected DIR[,guidance=G][,steps=N][,noise_level=L], got 'stepz=2'"),
    Case("study-upscale-builtin", "generation", "an upscale stage after a built-in family",
         lambda d, f: dry_synthetic(d, "builtin:pixel-diffusion", f'[[synthetic.upscale]]\nmodel = "{d}"\n'),
         "the built-in families are not cascades"),
    Case("shards-budget-out-of-range", "shards", "--max-bad-fraction 1.5",
         lambda d, f: ["shards", "fashion-mnist", "--out", str(d / "o"), "--max-bad-fraction", "1.5"],
         "--max-bad-fraction must be < 1, got 1.5"),
    Case("shards-pairs-over-budget", "shards", "img2dataset pairs with more empty captions than the budget allows",
         lambda d, f: ["shards", "img2dataset", "--root", _pairs_tar(d, [b"a cat"] * 7 + [b""] * 3), "--out",
                       str(d / "o"), "--max-bad-fraction", "0.1"],
         "3 of the 10 samples read could not be read (no caption: 3), more than --max-bad-fraction = 0.1 allows"),
    Case("shards-pairs-latin1", "shards", "an img2dataset caption in Latin-1, with no error budget",
         lambda d, f: ["shards", "img2dataset", "--root", _pairs_tar(d, [b"a cat", "un caf\u00e9".encode("latin-1")]),
                       "--out", str(d / "o"), "--max-bad-fraction", "0"],
         "sample '000000001': its caption (.txt) is not UTF-8 text"),
    # ---- results, fit and report
    Case("fit-no-results", "results", "synscale fit on a workdir without results",
         lambda d, f: ["fit", str(d)], "does not exist: run the study first"),
    Case("fit-results-garbage", "results", "a results table that is not parquet",
         lambda d, f: results_edit(d, f, "scaling.parquet", lambda p, t: p.write_bytes(b"garbage")),
         "scaling.parquet: not a readable results table"),
    Case("fit-results-column-removed", "results", "a results table without its loss column",
         lambda d, f: results_edit(d, f, "scaling.parquet", lambda p, t: t.drop(columns="loss").to_parquet(p)),
         "scaling.parquet: no column 'loss'"),
    Case("fit-results-zero-rows", "results", "a results table with no rows",
         lambda d, f: results_edit(d, f, "scaling.parquet", lambda p, t: t.iloc[:0].to_parquet(p)),
         "scaling.parquet: no rows"),
    Case("fit-per-class-column-removed", "results", "a per-class results table without its class column",
         lambda d, f: results_edit(d, f, "scaling_per_class.parquet",
                                   lambda p, t: t.drop(columns="class_index").to_parquet(p)), "no column 'class_index'"),
    Case("report-results-garbage", "results", "synscale report with a results table that is not parquet",
         lambda d, f: (w := f.results(d), (w / "results" / "metrics.parquet").write_bytes(b"x"), ["report", str(w)])[-1],
         "metrics.parquet: not a readable results table"),
    Case("report-no-results", "results", "synscale report on a directory that is not a workdir",
         lambda d, f: ["report", str(d)], "does not exist: run the study first"),
    # ---- issue 26: images and keys
    Case("imagefolder-classnames-count", "shards", "a classnames.txt with more names than class folders",
         lambda d, f: names_file(d, "cat\ndog\nemu\n"), "classnames.txt: 3 names for 2 class folders (cat, dog)"),
    Case("imagefolder-classnames-duplicate", "shards", "a classnames.txt that gives two class folders one name",
         lambda d, f: names_file(d, "pet\npet\n"),
         "classnames.txt: 'pet' is on lines 1 and 2; give each class folder its own name"),
    Case("imagefolder-classnames-not-text", "shards", "a classnames.txt that is not UTF-8 text",
         lambda d, f: names_file(d, b"\xffcat\n\xfedog\n"), "classnames.txt: not a UTF-8 text file of class names"),
    Case("webdataset-classnames-duplicate", "shards", "a webdataset's classnames.txt that repeats a name",
         lambda d, f: names_file(d, "cat\ncat\n", wds=True),
         "classnames.txt: 'cat' is on lines 1 and 2; give each label its own name"),
    Case("webdataset-classnames-empty", "shards", "a webdataset's classnames.txt with no names",
         lambda d, f: names_file(d, "\n", wds=True), "classnames.txt: no class names"),
    Case("labels-file-duplicate", "prompts", "--labels naming a file that repeats a class name",
         lambda d, f: ((d / "names.txt").write_text("cat\ndog\ncat\n"), ["prompts", "--labels", str(d / "names.txt")])[1],
         "names.txt: 'cat' is on lines 1 and 3; give each class its own name"),
    Case("shards-float-image", "shards", "a floating-point image whose values are not 0..1",
         lambda d, f: odd_image(d, "float"), "cat/3.tif: floating-point pixel values from 0 to 252"),
    Case("shards-int32-image", "shards", "a 32-bit integer image with values beyond 16 bits",
         lambda d, f: odd_image(d, "int32"), "cat/3.tif: integer pixel values from 0 to 69993"),
    Case("shards-image-too-large", "shards", "an image whose header claims more pixels than the image library decodes",
         lambda d, f: odd_image(d, "huge"), "cat/3.png: not a readable image (Image size (400000000 pixels) exceeds"),
    # ---- issue 26: errors raised below the command line, numbers and flags
    Case("train-clip-on-labelled", "train", "synscale train --clip on a labelled set (no captions)",
         lambda d, f: ["train", str(f.set()), "--clip", "--out", str(d / "m")], "contrastive training needs captions"),
    Case("train-negative-scale", "train", "synscale train --scale -5",
         lambda d, f: [*train(f.set(), d), "--scale", "-5"], "--scale must be >= 0, got -5"),
    Case("prompts-zero-per-class", "prompts", "synscale prompts --per-class 0",
         lambda d, f: ["prompts", "--per-class", "0"], "--per-class must be >= 1, got 0"),
    Case("labels-file-empty", "prompts", "--labels naming an empty file",
         lambda d, f: ((d / "names.txt").write_text(""), ["prompts", "--labels", str(d / "names.txt")])[1],
         "names.txt: no class names in it"),
    Case("fit-negative-bootstrap", "results", "synscale fit --bootstrap -1",
         lambda d, f: ["fit", str(f.results(d)), "--bootstrap", "-1"], "--bootstrap must be >= 0, got -1"),
    Case("flag-not-a-number", "command line", "a number flag given a word",
         lambda d, f: ["shards", "fashion-mnist", "--limit", "ten", "--out", str(d / "o")],
         "--limit must be an integer, got 'ten'"),
    Case("generate-guidance-nan", "generate", "--guidance nan",
         lambda d, f: [*generate(d), "--guidance", "nan"],
         "--guidance must be a finite number, got nan"),
    Case("generate-guidance-inf", "generate", "--guidance inf (it wrote all-black images)",
         lambda d, f: [*generate(d), "--guidance", "inf"],
         "--guidance must be a finite number, got inf"),
    Case("study-guidance-nan", "study file", "guidance = nan in a [[grid]]",
         lambda d, f: dry(d, extra='[[grid]]\nmodel = "builtin:latent-diffusion"\nstrategy = "classname"\n'
                                   'guidance = [1.5, nan]\n'), "'synthetic[1].guidance' must be a finite number"),
    Case("set-key-inf", "study file", "--set of an infinite number", lambda d, f: dry(d, "train.lr=inf"),
         "'train.lr' must be a finite number, got inf"),
    Case("ray-address-without-ray", "command line", "--ray-address without --executor ray (ignored before)",
         lambda d, f: ["study", study(d), "--ray-address", "10.0.0.1:6379", "-w", str(d / "w")],
         "--ray-address is for the Ray executor: add --executor ray"),
    Case("ray-cpus-without-ray", "command line", "--ray-cpus without --executor ray (ignored before)",
         lambda d, f: ["study", study(d), "--ray-cpus", "2", "-w", str(d / "w")], "--ray-cpus is for the Ray executor"),
    Case("generate-ray-actors-local", "generate", "--ray-actors without --executor ray (ignored before)",
         lambda d, f: [*generate(d), "--ray-actors", "4"],
         "--ray-actors is for the Ray executor"),
    Case("jobs-with-ray", "command line", "--jobs with the Ray executor (ignored before)",
         lambda d, f: ["study", study(d), "--executor", "ray", "--jobs", "2", "-w", str(d / "w")],
         "--jobs is the local executor's"),
    Case("jobs-beyond-cores", "command line", "--jobs 1000 on this machine (spawned without bound before)",
         lambda d, f: ["study", study(d), "--jobs", "1000", "-w", str(d / "w")], "--jobs 1000: this machine has"),
    Case("ray-cpus-zero", "command line", "a local Ray instance of 0 CPUs (ran until killed before)",
         lambda d, f: ["study", study(d), "--executor", "ray", "--ray-cpus", "0", "-w", str(d / "w")],
         "--ray-cpus must be >= 1, got 0"),
    Case("ray-address-nothing-listens", "command line", "--ray-address where nothing listens (ran until killed before)",
         lambda d, f: ["study", study(d), "--executor", "ray", "--ray-address",
                       f"127.0.0.1:{free_port()}", "-w", str(d / "w")], "nothing answers at 127.0.0.1:"),
    Case("no-checks-without-dry-run", "command line", "--no-checks without --dry-run (ignored before)",
         lambda d, f: ["study", study(d), "--no-checks", "-w", str(d / "w")], "--no-checks is for --dry-run"),
    Case("metrics-executor-flag", "command line", "synscale metrics --executor ray (a flag it never read)",
         lambda d, f: ["metrics", str(f.set()), "--executor", "ray"], "unrecognized arguments: --executor ray"),
    Case("train-nproc-crop", "train", "a crop larger than the images, found by the ranks of a torchrun (2 processes)",
         lambda d, f: [*train(f.set(), d), "--nproc", "2", "--set", "train.crop=64", "--set", "train.device=cpu"],
         "crop 64 is larger than the 28x28 images; set train.crop <= 28"),
    Case("train-device-cuda-none", "train", "train.device = cuda on a machine without a GPU",
         lambda d, f: [*train(f.set(), d), "--set", "train.device=cuda"], "device 'cuda', but torch sees no GPU here"),
    Case("prompts-out-suffix", "prompts", "--out naming a file of another kind (it was written as parquet)",
         lambda d, f: ["prompts", "--out", str(d / "p.txt")], "write a .parquet or .csv file"),
    Case("generate-upscale-nan", "generate", "an --upscale stage of guidance nan",
         lambda d, f: [*generate(d), "--upscale",
                       f"{d}/up,guidance=nan"], "guidance must be a finite number, got nan"),
    Case("generator-eval-guidance-nan", "generate", "synscale generator eval --guidance 1,nan",
         lambda d, f: ["generator", "eval", "--guidance", "1,nan", "--workdir", str(d / "w")],
         "--guidance '1,nan': 'nan' must be a finite number"),
    Case("prompts-captioner-unused", "prompts", "--captioner with a strategy that uses no captions (ignored before)",
         lambda d, f: ["prompts", "--strategy", "classname", "--captioner", "file:c.csv"],
         "--captioner is for the in-captions strategy, which --strategy does not name"),
    Case("generate-word2sen-model-unused", "generate", "--word2sen-model with generate's default strategy",
         lambda d, f: [*generate(d), "--word2sen-model",
                       "t5-small"], "--word2sen-model is for the word2sen strategy"),
    Case("study-file-latin1", "study file", "a study file in Latin-1",
         lambda d, f: ((d / "s.toml").write_bytes('name = "caf\u00e9"\nscales = [100]\n'.encode("latin-1")),
                       ["study", str(d / "s.toml"), "--dry-run"])[1], "s.toml: line 1 is not UTF-8 text"),
    Case("class-subset-latin1", "evaluation", "an OOD class-subset file in Latin-1",
         lambda d, f: ((d / "sub.txt").write_bytes("caf\u00e9\n".encode("latin-1")),
                       dry(d, extra=f'[[evaluate.sets]]\nname = "o"\nroot = "{d}"\nclass_subset = "{d}/sub.txt"\n'))[1],
         "sub.txt: line 1 is not UTF-8 class names"),
    Case("generate-size-old-name", "generate", "generate --size (the image side is --image-size: --size is a "
         "study's size on every other command)",
         lambda d, f: [*generate(d), "--size", "16"],
         "the image side is --image-size"),
    # ---- issue 26: files synscale wrote, read again
    Case("study-json-cut", "workdir", "a workdir's study.json cut short",
         lambda d, f: cut_workdir_file(d, f, "study.json", 10, "report"),
         "study.json: not readable JSON (Unterminated string starting at at line 1: cut short or edited); rerun the study"),
    Case("meta-json-empty", "workdir", "the results' meta.json emptied",
         lambda d, f: cut_workdir_file(d, f, "results/meta.json", 0, "fit"), "meta.json: empty; rerun the study in"),
    Case("plan-json-cut", "workdir", "the plan's plan.json cut short",
         lambda d, f: cut_workdir_file(d, f, "plan/plan.json", 20, "status"), "plan.json: not readable JSON"),
    Case("plan-node-json-empty", "workdir", "a plan node's record emptied",
         lambda d, f: cut_workdir_file(d, f, "plan/nodes/0.json", 0, "status"), "0.json: empty; delete"),
    # ---- issue 26: text a user supplies
    Case("captions-file-empty-caption", "prompts", "a captions file with an empty caption (prompts said 'nan')",
         lambda d, f: captions_file(d, "c.csv", b"key,caption\ntrain-00000,a shirt\ntrain-00001,\n"),
         "c.csv: line 3: the caption of 'train-00001' is empty"),
    Case("captions-file-latin1", "prompts", "a captions file in Latin-1",
         lambda d, f: captions_file(d, "c.csv", "key,caption\ntrain-00000,un caf\u00e9\n".encode("latin-1")),
         "c.csv: line 2 is not UTF-8 text"),
    Case("captions-file-list-caption", "prompts", "a JSONL captions file whose caption is a list",
         lambda d, f: captions_file(d, "c.jsonl", b'{"key": "train-00000", "caption": ["a", "shirt"]}\n'),
         "c.jsonl: line 1: the caption of 'train-00000' is list, not text"),
    Case("captions-file-not-json", "prompts", "a JSONL captions file with a line that is not JSON",
         lambda d, f: captions_file(d, "c.jsonl", b'{"key": "train-00000", "caption": "a shirt"}\n{oops\n'),
         "c.jsonl: line 2 is not JSON"),
    Case("shards-pairs-json-list-caption", "shards", "an img2dataset sample whose .json caption is a list",
         lambda d, f: ["shards", "img2dataset", "--root", _pairs_tar(d, [b"a cat", None], {1: b'{"caption": ["a", "b"]}'}),
                       "--out", str(d / "o"), "--max-bad-fraction", "0"], "the 'caption' of its .json is list"),
    Case("webdataset-cls-not-integer-workers", "shards", "a webdataset .cls that is not an integer, read by worker "
         "processes", lambda d, f: webdataset_bad_cls(d), "has label 'cat', not an integer"),
    # ---- issue 26: found at plan time, not after models trained
    Case("templates-two-fields", "study file", "a zero-shot templates file whose line has two {}",
         lambda d, f: ((d / "t.txt").write_text("a {} of a {}\n"), dry(d, f'clip.templates="{d}/t.txt"', extra=CLIP))[1],
         "template 1 'a {} of a {}' has 2 fields"),
    Case("templates-no-field", "study file", "a zero-shot templates file whose line has no {}",
         lambda d, f: ((d / "t.txt").write_text("a photo of a {}\na photo\n"),
                       dry(d, f'clip.templates="{d}/t.txt"', extra=CLIP))[1], "template 2 'a photo' has 0 fields"),
    Case("zero-shot-no-classes", "evaluation", "a zero-shot set without class names",
         lambda d, f: ((r := webdataset_tar(d, 4)), (r / "classnames.txt").unlink(),
                       dry(d, extra=CLIP + f'[[evaluate.zero_shot]]\nname = "z"\ndataset = "webdataset"\n'
                                         f'root = "{r}"\nsplit = "train"\n'))[-1], "evaluate.zero_shot 'z'"),
    Case("mix-more-real-than-data", "data", "a [[mix]] asking for more real images than the split has",
         lambda d, f: dry(d, extra='[[synthetic]]\nname = "s"\nmodel = "builtin:latent-diffusion"\n[[mix]]\n'
                                   'name = "m"\nsynthetic = "s"\nreal_images = 100000\n'),
         "[[mix]] 'm' at scale 1,000 needs 100,000 real images"),
    Case("clip-limit-below-scale", "data", "clip.pairs.limit below the largest CLIP scale",
         lambda d, f: dry(d, "clip.pairs.limit=150", extra=CLIP), "clip.pairs.limit 150 is below the largest"),
    Case("builtin-weights-truncated", "models", "built-in weights whose safetensors file is cut short",
         lambda d, f: (shutil.copytree(HERE.parent / "src/synscale/generate/weights/latent-diffusion", d / "wts"),
                       truncate(d / "wts" / "unet.safetensors", 5000),
                       dry_synthetic(d, f"builtin:latent-diffusion@{d / 'wts'}"))[-1],
         "unet.safetensors is not whole safetensors weights"),
    # ---- issue 26: the workdir
    Case("workdir-busy", "workdir", "a study started in a workdir where another study is running",
         lambda d, f: _busy_workdir(d), "another study, 'other-study' (identity 0123456789abcdef), is running in this "
         "workdir (pid "),
]


def run_case(case: Case, d: Path, f: Fixtures) -> tuple[int, str]:
    """(exit code, stderr) of the case's command, run in this process as `synscale` would run it."""
    import contextlib
    import io

    from synscale.cli import main

    d.mkdir(parents=True, exist_ok=True)
    err = io.StringIO()
    with contextlib.redirect_stdout(io.StringIO()):
        argv = case.make(d, f)
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try:
            code = main(argv)
        except SystemExit as e:  # argparse's own errors
            code = int(e.code or 0)
        finally:
            while _HELD:  # locks a case held as another process would: released when its command has run
                _HELD.pop().__exit__(None, None, None)
    return code, err.getvalue()


if __name__ == "__main__":  # the table of docs/reliability.md
    import os
    import tempfile

    os.environ["TQDM_DISABLE"] = "1"
    with tempfile.TemporaryDirectory() as tmp:
        fx = Fixtures(Path(tmp) / "shared")
        fx.root.mkdir()
        print("| # | area | bad input | what synscale says (exit code) |\n|---|---|---|---|")
        for i, c in enumerate(CASES, 1):
            code, err = run_case(c, Path(tmp) / c.id, fx)
            line = err.strip().splitlines()[-1].replace(tmp, "…").replace("|", "\\|")
            print(f"| {i} | {c.area} | {c.what} (`{c.id}`) | `{line}` ({code}) |")
