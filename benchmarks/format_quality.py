"""Does storing a generated set as JPEG change what the study measures? Recognizability and Fréchet distance of
a built-in family's set stored as PNG (exact pixels) against the same images stored as JPEG (and WebP, colour
sets only), beside the same measures' noise: a second sample of the same prompts with other seeds.

Recognizability is the macro-F1 of `synscale generator eval`'s reference classifier (trained on all 60,000 real
Fashion-MNIST training images, cached in `--workdir`); the Fréchet distance is between the classifier's
penultimate features of the samples and of the 10,000 real test images. A format whose differences from PNG are
well inside the seed-to-seed differences does not change the study's measurements at this size.

    .venv/bin/python benchmarks/format_quality.py --family latent-diffusion --per-class 100
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from steps_quality import penultimate


def stored(images: np.ndarray, fmt: str, quality: int) -> tuple[np.ndarray, float]:
    """The images as a set of `fmt` stores and the loader decodes them, and the stored bytes per image."""
    from synscale.data.encoding import ImageEncoding, decode_stored

    enc = ImageEncoding(fmt, quality)
    out, total = np.empty_like(images), 0
    for i, img in enumerate(images):
        hwc = img[0] if img.shape[0] == 1 else img.transpose(1, 2, 0)
        _, data = enc.encode(np.ascontiguousarray(hwc))
        total += len(data)
        dec = decode_stored(data)
        out[i] = dec[None] if dec.ndim == 2 else dec.transpose(2, 0, 1)
    return out, total / len(images)


def main() -> None:
    from synscale.evaluate.classification import predict
    from synscale.generate.builtin import FAMILIES
    from synscale.generate.diffusers_backend import DiffusersGenerator
    from synscale.generate.quality import sample_set
    from synscale.metrics.core import frechet_distance, macro_f1
    from synscale.study.reference import reference_classifier

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--family", default="latent-diffusion", choices=FAMILIES.names())
    ap.add_argument("--per-class", type=int, default=100)
    ap.add_argument("--qualities", default="95,90,75", help="JPEG qualities to measure")
    ap.add_argument("--workdir", default="synscale-eval", help="where the reference classifier is cached")
    args = ap.parse_args()

    ref = reference_classifier(args.workdir, quiet=True)
    n = len(ref.class_names)
    real = penultimate(ref.model, ref.test_images)
    gen = DiffusersGenerator(f"builtin:{args.family}", resolution=ref.test_images.shape[-1],
                             channels=ref.test_images.shape[1])

    def measure(images: np.ndarray, labels: np.ndarray) -> tuple[float, float]:
        f1, _ = macro_f1(predict(ref.model, images, labels)["pred"], labels, n)
        return f1, frechet_distance(penultimate(ref.model, images), real)

    t0 = time.perf_counter()
    images, labels = sample_set(gen, ref.class_names, args.per_class, 2.0, seed=0, progress=False)
    other, other_labels = sample_set(gen, ref.class_names, args.per_class, 2.0, seed=1, progress=False)
    print(f"{args.family}: {len(images):,} images per set ({images.shape[1]}x{images.shape[2]}x{images.shape[3]}), "
          f"class-name prompts, guidance 2; sampled in {time.perf_counter() - t0:.0f} s")
    f1_png, fd_png = measure(images, labels)
    f1_seed, fd_seed = measure(other, other_labels)
    _, png_bytes = stored(images, "png", 95)
    print(f"{'stored as':<14}{'bytes/image':>12}{'macro-F1':>10}{'FD':>9}{'|ΔF1| vs PNG':>14}{'|ΔFD| vs PNG':>14}")
    print(f"{'PNG':<14}{png_bytes:>12.0f}{f1_png:>10.4f}{fd_png:>9.3f}{'':>14}{'':>14}")
    print(f"{'PNG, seeds 1':<14}{png_bytes:>12.0f}{f1_seed:>10.4f}{fd_seed:>9.3f}{abs(f1_seed - f1_png):>14.4f}"
          f"{abs(fd_seed - fd_png):>14.3f}   <- the seed-to-seed noise")
    formats = [("jpeg", int(q)) for q in args.qualities.split(",")] + ([("webp", 95)] if images.shape[1] == 3 else [])
    for fmt, q in formats:
        twin, nbytes = stored(images, fmt, q)
        f1, fd = measure(twin, labels)
        print(f"{fmt.upper() + '-' + str(q):<14}{nbytes:>12.0f}{f1:>10.4f}{fd:>9.3f}{abs(f1 - f1_png):>14.4f}"
              f"{abs(fd - fd_png):>14.3f}   mean |pixel change| {np.abs(twin.astype(int) - images).mean():.2f}")


if __name__ == "__main__":
    main()
