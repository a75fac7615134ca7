"""The report's generated images (the paper's figure 5 and appendix F): per synthetic configuration, a
grid with a row per class — real training images on the left, the configuration's own on the right — each
row labelled with the class's category where the configuration has per-class fits (scaling / easy / poor)
and its recognizability, so a reader sees why a class is poor: the model does not render the concept.
Written as small PNGs under W/report/samples/ and embedded in the page."""

from __future__ import annotations

import base64
import math
from pathlib import Path
from typing import Any

import numpy as np

from synscale.report.parts import esc

REAL, GENERATED, CELL, LABEL_W = 3, 6, 40, 190


def _picks(set_dir: Path, per_class: int, seed: int = 0) -> dict[int, list[str]]:
    """`per_class` keys of every class of a set (a fixed seeded draw)."""
    from synscale.data.shards import read_manifest

    m = read_manifest(set_dir)
    rng = np.random.default_rng(seed)
    out = {}
    for label, g in m.groupby("label"):
        keys = g["key"].to_numpy()
        out[int(label)] = list(rng.choice(keys, size=min(per_class, len(keys)), replace=False))
    return out


def _images(set_dir: Path, keys: list[str]) -> dict[str, np.ndarray]:
    from synscale.data.shards import load_arrays

    images, _, got = load_arrays(set_dir, keys)
    return dict(zip(got, images, strict=True))


def _tile(img: np.ndarray) -> Any:
    from PIL import Image

    a = img[0] if img.shape[0] == 1 else np.transpose(img, (1, 2, 0))
    return Image.fromarray(a).convert("RGB").resize((CELL, CELL), Image.NEAREST)


def sample_grid(real_dir: Path, set_dir: Path, names: list[str], labels: dict[int, str], out: Path) -> Path:
    """The PNG: a row per class, `REAL` real images | `GENERATED` generated ones, with `labels[class]`."""
    from PIL import Image, ImageDraw

    real, gen = _picks(real_dir, REAL), _picks(set_dir, GENERATED)
    real_img = _images(real_dir, [k for v in real.values() for k in v])
    gen_img = _images(set_dir, [k for v in gen.values() for k in v])
    rows = sorted(set(real) | set(gen))
    gap = 10
    width = LABEL_W + REAL * CELL + gap + GENERATED * CELL
    head = 16
    canvas = Image.new("RGB", (width, head + len(rows) * (CELL + 2)), "white")
    draw = ImageDraw.Draw(canvas)
    draw.text((LABEL_W, 2), "real", fill="black")
    draw.text((LABEL_W + REAL * CELL + gap, 2), "generated", fill="black")
    for i, c in enumerate(rows):
        y = head + i * (CELL + 2)
        name = names[c] if c < len(names) else str(c)
        draw.text((4, y + 6), name[:30], fill="black")
        draw.text((4, y + 20), labels.get(c, "")[:32], fill=(90, 90, 90))
        for j, k in enumerate(real.get(c, [])):
            canvas.paste(_tile(real_img[k]), (LABEL_W + j * CELL, y))
        for j, k in enumerate(gen.get(c, [])):
            canvas.paste(_tile(gen_img[k]), (LABEL_W + REAL * CELL + gap + j * CELL, y))
    out.parent.mkdir(parents=True, exist_ok=True)
    canvas.save(out, optimize=True)
    return out


def _row_labels(config: str, per_class: Any, metrics_pc: Any) -> dict[int, str]:
    labels: dict[int, str] = {}
    pc = per_class[(per_class.config == config) & (per_class.eval_set == "val")] if per_class is not None and len(per_class) else None
    mp = metrics_pc[metrics_pc.config == config] if metrics_pc is not None and len(metrics_pc) else None
    classes = set()
    if pc is not None:
        classes |= set(pc.class_index.astype(int))
    if mp is not None and "class_index" in mp:
        classes |= set(mp.class_index.astype(int))
    for c in classes:
        bits = []
        if pc is not None:
            row = pc[pc.class_index == c]
            if len(row) and isinstance(row.category.iloc[0], str) and row.category.iloc[0] != "other":
                bits.append(row.category.iloc[0])
        if mp is not None and "recognizability" in mp:
            row = mp[mp.class_index == c]
            if len(row) and not math.isnan(float(row.recognizability.iloc[0])):
                bits.append(f"recog. {float(row.recognizability.iloc[0]):.2f}")
        labels[c] = ", ".join(bits)
    return labels


def samples_section(results: Path, out_dir: Path, generation: Any, per_class: Any, metrics_pc: Any,
                    real_dir: str | None, open_configs: tuple[str, ...] = ()) -> str:
    """The report's "Generated images" section (empty where the study generated nothing). `real_dir` and the
    generation table's `set_path` are as the results hold them: relative to the workdir, `results`' parent."""
    from synscale.data.shards import read_labels
    from synscale.workdir import resolve

    if generation is None or not len(generation):
        return ""
    workdir = Path(results).parent
    real_dir_p = resolve(real_dir, workdir)
    if real_dir_p is None or not (real_dir_p / "manifest.parquet").exists():
        return ('<section id="samples"><h2>Generated images</h2><p class="missing" id="missing-samples">The sample grids '
                "are left out: the real training set named in results/meta.json is not on this machine.</p></section>")
    labels = read_labels(real_dir_p)
    names = labels.names if labels is not None else []
    parts = []
    for row in generation.itertuples():
        set_dir = resolve(row.set_path, workdir)
        if set_dir is None or not (set_dir / "manifest.parquet").exists():
            parts.append(f'<p class="missing">{esc(row.config)}: its set {esc(str(set_dir or row.set_path))} is not on '
                         "this machine.</p>")
            continue
        png = sample_grid(real_dir_p, set_dir, names, _row_labels(row.config, per_class, metrics_pc),
                          out_dir / "samples" / f"{row.config}.png")
        data = base64.b64encode(png.read_bytes()).decode()
        title = f"{row.config}: {row.family}, {row.strategy}, guidance {row.guidance_scale:g}, {row.steps} steps"
        is_open = " open" if row.config in open_configs else ""
        parts.append(f'<details class="samples"{is_open}><summary>{esc(title)}</summary>'
                     f'<img class="samples" alt="samples of {esc(row.config)}" src="data:image/png;base64,{data}"></details>')
    return f"""<section id="samples"><h2>Generated images</h2>
<p>For every configuration, {REAL} real training images of each class (left) beside {GENERATED} of its own (right; a fixed
random draw). Each row names the class, its category where the configuration was trained at several scales (<i>scaling</i>:
large k; <i>easy</i>: good at every scale, small k; <i>poor</i>: bad and not improving) and its recognizability (the
reference classifier's F1 on the configuration's images of the class). A poor class is often one the model does not
render: compare its generated images with the real ones. The best and the worst configuration are open.</p>
{"".join(parts)}</section>"""
