"""Resumable training checkpoints without pickle.

A checkpoint is a directory `step-<n>/` holding:
    model.safetensors       the model's state dict (weights and buffers)
    optimizer.safetensors   the optimizer's per-parameter tensors (`state.<param>.<name>`)
    rng-<rank>.safetensors  each process's torch RNG state (CPU, and CUDA where used)
    state.json              step, the optimizer's param groups, the loss log, anything else JSON
and `latest.json` names the newest complete one (written last, atomically), so a run killed while
writing a checkpoint resumes from the one before.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from synscale.atomic import read_json, write_text


def _tensors(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu().contiguous() for k, v in state.items()}


def save_rng(ckpt: Path, rank: int, device: torch.device) -> None:
    ckpt.mkdir(parents=True, exist_ok=True)
    rng = {"cpu": torch.get_rng_state()}
    if device.type == "cuda":
        rng["cuda"] = torch.cuda.get_rng_state(device)
    save_file(rng, str(ckpt / f"rng-{rank}.safetensors"))


def save(ckpt_dir: Path, step: int, model: torch.nn.Module, opt: torch.optim.Optimizer, state: dict[str, Any]) -> Path:
    """Write `step-<step>/` (model, optimizer, state.json); the caller adds RNG files, then `commit`."""
    ckpt = ckpt_dir / f"step-{step:08d}"
    if ckpt.exists():
        shutil.rmtree(ckpt)
    ckpt.mkdir(parents=True)
    save_file(_tensors(model.state_dict()), str(ckpt / "model.safetensors"))
    osd = opt.state_dict()
    tensors, scalars = {}, {}
    for pid, pstate in osd["state"].items():
        for name, value in pstate.items():
            if torch.is_tensor(value):
                tensors[f"state.{pid}.{name}"] = value
            else:
                scalars[f"{pid}.{name}"] = value
    save_file(_tensors(tensors), str(ckpt / "optimizer.safetensors"))
    (ckpt / "state.json").write_text(json.dumps(
        {"step": step, "param_groups": osd["param_groups"], "optimizer_scalars": scalars, **state}, indent=1))
    return ckpt


def commit(ckpt_dir: Path, step: int, keep: int = 1) -> None:
    """Point latest.json at `step-<step>` and drop older checkpoints (all but the newest `keep`)."""
    write_text(ckpt_dir / "latest.json", json.dumps({"step": step, "dir": f"step-{step:08d}"}))
    done = sorted(p for p in ckpt_dir.glob("step-*") if p.name != f"step-{step:08d}")
    for old in done[: max(0, len(done) - keep + 1)]:
        shutil.rmtree(old, ignore_errors=True)


def latest(ckpt_dir: Path | None) -> Path | None:
    if ckpt_dir is None or not (ckpt_dir / "latest.json").exists():
        return None
    try:
        path = ckpt_dir / read_json(ckpt_dir / "latest.json")["dir"]
    except (ValueError, KeyError, TypeError) as e:
        from synscale.errors import DataError

        raise DataError(f"{ckpt_dir / 'latest.json'}: not readable ({e}); delete {ckpt_dir} to train from the start") from None
    if not path.is_dir():
        from synscale.errors import DataError

        raise DataError(f"{ckpt_dir / 'latest.json'} names {path.name}, which is not there; delete {ckpt_dir} to train "
                        "from the start")
    return path


def load(ckpt: Path, model: torch.nn.Module, opt: torch.optim.Optimizer, rank: int, device: torch.device) -> dict[str, Any]:
    """Restore model, optimizer and this rank's RNG from `ckpt`; returns state.json. A checkpoint that does
    not fit (edited, truncated, of another model) is a DataError naming it."""
    try:
        return _load(ckpt, model, opt, rank, device)
    except (RuntimeError, ValueError, KeyError, TypeError, OSError, SafetensorError) as e:
        from synscale.errors import DataError

        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise DataError(f"{ckpt}: not a checkpoint of this run ({first[:200]}); delete {ckpt.parent} to train "
                        "from the start") from None


def _load(ckpt: Path, model: torch.nn.Module, opt: torch.optim.Optimizer, rank: int, device: torch.device) -> dict[str, Any]:
    state = read_json(ckpt / "state.json")
    model.load_state_dict(load_file(str(ckpt / "model.safetensors"), device=str(device)))
    tensors = load_file(str(ckpt / "optimizer.safetensors"), device=str(device))
    opt_state: dict[int, dict[str, Any]] = {}
    for key, value in tensors.items():
        _, pid, name = key.split(".", 2)
        opt_state.setdefault(int(pid), {})[name] = value
    for key, value in state["optimizer_scalars"].items():
        pid, name = key.split(".", 1)
        opt_state.setdefault(int(pid), {})[name] = value
    for group in state["param_groups"]:
        if "betas" in group:
            group["betas"] = tuple(group["betas"])
    opt.load_state_dict({"state": opt_state, "param_groups": state["param_groups"]})
    rng_file = ckpt / f"rng-{rank}.safetensors"
    if not rng_file.exists():
        raise FileNotFoundError(f"no RNG state for process {rank}: resume with the same number of processes")
    rng = load_file(str(rng_file))
    torch.set_rng_state(rng["cpu"])
    if "cuda" in rng and device.type == "cuda":
        torch.cuda.set_rng_state(rng["cuda"], device)
    return state
