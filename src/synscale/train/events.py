"""TensorBoard event files (the `tensorboard` package's writer, an optional dependency:
`pip install 'synscale[tracking]'`). A train stage writes `tensorboard/` beside its model: the logged
training loss, the learning rate and images/s every 50 steps; a study writes `W/tensorboard/` after every
run: each model's training events and every source's scaling curves (loss and top-1 per evaluation set,
step = data scale). `tensorboard --logdir W/tensorboard` shows them. Without the package nothing is written."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from synscale.atomic import read_json


def available() -> bool:
    try:
        import tensorboard  # noqa: F401 (torch's writer needs the package)
    except ImportError:
        return False
    return True


def writer(log_dir: str | Path) -> Any:
    """A SummaryWriter on `log_dir`, or None where tensorboard is not installed."""
    if not available():
        return None
    from torch.utils.tensorboard import SummaryWriter

    return SummaryWriter(log_dir=str(log_dir), flush_secs=30)


class TrainEvents:
    """The engine's scalars, every time it logs the training loss."""

    def __init__(self, log_dir: str | Path) -> None:
        self.w = writer(log_dir)

    def log(self, step: int, loss: float, lr: float, images_per_s: float) -> None:
        if self.w is None:
            return
        self.w.add_scalar("train/loss", loss, step)
        self.w.add_scalar("train/lr", lr, step)
        if images_per_s == images_per_s:  # not NaN
            self.w.add_scalar("train/images_per_s", images_per_s, step)

    def close(self) -> None:
        if self.w is not None:
            self.w.close()


def write_study_events(out_dir: Path, evals: list[Any]) -> bool:
    """W/tensorboard from scratch: `train/<source> D=<scale>[ run r]/` holds a copy of each model's training
    events; `scaling/<task>/<source>/` the loss and top-1 on every evaluation set at step = scale. `evals`:
    (synscale.results.TrainedModel, eval_set, evaluate stage). False where tensorboard is not installed."""
    import shutil

    if not available():
        return False
    shutil.rmtree(out_dir, ignore_errors=True)
    seen = set()
    curves: dict[tuple[str, str], Any] = {}
    for tm, eval_name, ev in evals:
        name = f"{tm.source} D={tm.scale}" + (f" run {tm.run}" if tm.run else "")
        events = tm.stage.path / "tensorboard"
        if name not in seen and events.is_dir():
            shutil.copytree(events, out_dir / "train" / tm.task / name)
        seen.add(name)
        if tm.run:
            continue
        key = (tm.task, tm.source)
        if key not in curves:
            curves[key] = writer(out_dir / "scaling" / tm.task / tm.source)
        summary = read_json(ev.path / "summary.json")
        curves[key].add_scalar(f"{eval_name}/loss", summary["loss"], tm.scale)
        curves[key].add_scalar(f"{eval_name}/top1", summary["top1"], tm.scale)
    for w in curves.values():
        w.close()
    return True
