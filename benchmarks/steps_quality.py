"""Fewer sampling steps at equal quality: recognizability and Fréchet distance against the number of steps,
for each scheduler the diffusers backend offers, on a built-in family.

Every step count samples the same class-balanced prompts and seeds (class names, guidance 2 by default),
so the differences between step counts are not sampling noise of different seeds. Recognizability is the
macro-F1 of the reference classifier (`synscale generator eval`'s: trained on all 60,000 real Fashion-MNIST
training images, cached in `--workdir`); the Fréchet distance is between the classifier's penultimate
features of the samples and of the 10,000 real test images. The last lines name, per scheduler, the fewest
steps whose macro-F1 is within 1% of the 50-step macro-F1 and whose Fréchet distance is within 1% of (or
below) the 50-step distance.

    .venv/bin/python benchmarks/steps_quality.py --family latent-diffusion
    .venv/bin/python benchmarks/steps_quality.py --family pixel-diffusion --schedulers default,ddim --per-class 30
    .venv/bin/python benchmarks/steps_quality.py --family masked-token --steps 4,6,8,12,16,24,32,50
"""

from __future__ import annotations

import argparse
import time

import numpy as np

DEFAULT_STEPS = {"latent-diffusion": "2,3,4,5,6,8,10,15,20,30,50", "pixel-diffusion": "5,8,10,15,20,30,50",
                 "masked-token": "4,6,8,12,16,24,32,50"}


def penultimate(model, images: np.ndarray, batch: int = 1000) -> np.ndarray:
    """The classifier's pooled features before its last layer (timm's forward_head(pre_logits=True))."""
    import torch

    from synscale.train.engine import normalize

    model = model.eval()
    out = []
    with torch.inference_mode():
        for i in range(0, len(images), batch):
            x = normalize(torch.from_numpy(np.ascontiguousarray(images[i : i + batch])))
            out.append(model.forward_head(model.forward_features(x), pre_logits=True).float().numpy())
    return np.concatenate(out)


def within(value: float, best: float, higher_is_better: bool) -> bool:
    return value >= 0.99 * best if higher_is_better else value <= 1.01 * best


def main() -> None:
    import pandas as pd
    import torch

    from synscale.evaluate.classification import predict
    from synscale.generate.builtin import FAMILIES
    from synscale.generate.diffusers_backend import DiffusersGenerator
    from synscale.generate.quality import sample_set
    from synscale.study.reference import reference_classifier
    from synscale.metrics.core import frechet_distance, macro_f1

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--family", default="latent-diffusion", choices=FAMILIES.names())
    ap.add_argument("--schedulers", default=None, help="comma-separated (default: every one for diffusion families)")
    ap.add_argument("--steps", default=None, help="comma-separated step counts (the last is the reference)")
    ap.add_argument("--per-class", type=int, default=50)
    ap.add_argument("--guidance", type=float, default=2.0)
    ap.add_argument("--batch-size", type=int, default=250)
    ap.add_argument("--workdir", default="synscale-eval", help="where the reference classifier is cached")
    ap.add_argument("--out", default=None, help="write the table here (.csv)")
    args = ap.parse_args()

    steps = [int(s) for s in (args.steps or DEFAULT_STEPS[args.family]).split(",")]
    masked = args.family == "masked-token"
    schedulers = (args.schedulers or ("default" if masked else "default,ddim,euler")).split(",")
    ref = reference_classifier(args.workdir, quiet=True)
    n = len(ref.class_names)
    real_feats = penultimate(ref.model, ref.test_images)
    rows = []
    print(f"family {args.family}, guidance {args.guidance:g}, {args.per_class * n} images per point, class-name "
          f"prompts, torch threads {torch.get_num_threads()}")
    for sched in schedulers:
        for s in steps:
            gen = DiffusersGenerator(f"builtin:{args.family}", steps=s, scheduler=sched,
                                     resolution=ref.test_images.shape[-1], channels=ref.test_images.shape[1])
            t0 = time.perf_counter()
            images, labels = sample_set(gen, ref.class_names, args.per_class, args.guidance,
                                        batch_size=args.batch_size, progress=False)
            dt = time.perf_counter() - t0
            f1, _ = macro_f1(predict(ref.model, images, labels)["pred"], labels, n)
            fd = frechet_distance(penultimate(ref.model, images), real_feats)
            rows.append({"family": args.family, "scheduler": sched if not masked else "amused",
                         "resolved": type(gen.pipe.scheduler).__name__, "steps": s, "macro_f1": f1, "fd": fd,
                         "images_per_s": len(images) / dt})
            print(f"  {rows[-1]['scheduler']:>12} ({rows[-1]['resolved']}) {s:>3} steps: macro-F1 {f1:.3f}  "
                  f"FD {fd:8.2f}  {len(images) / dt:7.1f} images/s", flush=True)
    table = pd.DataFrame(rows)
    if args.out:
        table.to_csv(args.out, index=False)
    print("\nfewest steps within 1% of the last step count's quality:")
    for sched, t in table.groupby("scheduler", sort=False):
        ref_row = t[t.steps == max(steps)].iloc[0]
        ok_f1 = t[[within(v, ref_row.macro_f1, True) for v in t.macro_f1]].steps.min()
        ok_fd = t[[within(v, ref_row.fd, False) for v in t.fd]].steps.min()
        both = t[[within(a, ref_row.macro_f1, True) and within(b, ref_row.fd, False)
                  for a, b in zip(t.macro_f1, t.fd, strict=True)]].steps.min()
        print(f"  {sched:>12}: {max(steps)} steps: macro-F1 {ref_row.macro_f1:.3f}, FD {ref_row.fd:.2f}; "
              f"macro-F1 within 1% from {ok_f1} steps, FD from {ok_fd}, both from {both}")


if __name__ == "__main__":
    main()
