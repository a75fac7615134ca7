"""transformers backends for two strategies, by hub id or local path (local files only unless the user
allows downloads):

- `Seq2SeqSentences` for `word2sen`: a seq2seq language model (the paper used T5) writes a sentence
  around the class name, sampled with the prompt's own seed.
- `ImageToTextCaptioner` for `in-captions`: an image-to-text model (BLIP-2 in the paper, or any
  vision-encoder-decoder) captions real training images.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np


def _dtype_arg() -> str:
    """from_pretrained's name for the weights' dtype: `dtype` from transformers 4.56 on (`torch_dtype` before)."""
    import importlib.metadata

    major, minor = (int(x) for x in importlib.metadata.version("transformers").split(".")[:2])
    return "dtype" if (major, minor) >= (4, 56) else "torch_dtype"



def _device(device: str) -> str:
    from synscale.device import resolve_device

    return resolve_device(device)


@dataclass
class Seq2SeqSentences:
    model: str
    template: str = "generate a sentence with: {name}"
    max_new_tokens: int = 32
    top_p: float = 0.9
    device: str = "auto"
    local_files_only: bool = True

    def __post_init__(self) -> None:
        from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

        self._dev = _device(self.device)
        self.tokenizer = AutoTokenizer.from_pretrained(self.model, local_files_only=self.local_files_only)
        self.net = AutoModelForSeq2SeqLM.from_pretrained(self.model, local_files_only=self.local_files_only).to(self._dev).eval()

    def __call__(self, name: str, rng: np.random.Generator) -> str:
        import torch

        inputs = self.tokenizer([self.template.format(name=name)], return_tensors="pt").to(self._dev)
        with torch.random.fork_rng(devices=[] if self._dev == "cpu" else None), torch.inference_mode():
            torch.manual_seed(int(rng.integers(2**31)))  # sampling draws from the prompt's own seed
            out = self.net.generate(**inputs, do_sample=True, top_p=self.top_p, max_new_tokens=self.max_new_tokens)
        text = " ".join(self.tokenizer.decode(out[0], skip_special_tokens=True).split())
        return text if name.lower() in text.lower() else f"{name}, {text}".rstrip(", ")


@dataclass
class ImageToTextCaptioner:
    model: str
    max_new_tokens: int = 30
    batch_size: int = 32
    device: str = "auto"
    local_files_only: bool = True
    dtype: str = "auto"  # auto: bfloat16 on a GPU (BLIP-2 OPT-2.7B: 7.7 GB, not 15), float32 on a CPU

    def __post_init__(self) -> None:
        import torch
        from transformers import AutoImageProcessor, AutoModelForImageTextToText, AutoTokenizer

        self._dev = _device(self.device)
        dtype = getattr(torch, self.dtype) if self.dtype != "auto" else (
            torch.bfloat16 if self._dev.startswith("cuda") else torch.float32)
        kw = {"local_files_only": self.local_files_only}
        self.image_processor = AutoImageProcessor.from_pretrained(self.model, **kw)
        self.tokenizer = AutoTokenizer.from_pretrained(self.model, **kw)
        self.net = AutoModelForImageTextToText.from_pretrained(self.model, **{_dtype_arg(): dtype}, **kw).to(self._dev).eval()
        self._dtype = dtype

    def __call__(self, images: np.ndarray, keys: list[str]) -> list[str]:
        """Greedy captions of uint8 images (N, H, W) / (N, 1, H, W) / (N, H, W, 3)."""
        import torch
        from PIL import Image

        out: list[str] = []
        for i in range(0, len(images), self.batch_size):
            batch = [Image.fromarray(_hwc(im)).convert("RGB") for im in images[i : i + self.batch_size]]
            pixels = self.image_processor(batch, return_tensors="pt")["pixel_values"].to(self._dev, self._dtype)
            with torch.inference_mode():
                ids = self.net.generate(pixel_values=pixels, do_sample=False, max_new_tokens=self.max_new_tokens)
            out += [" ".join(t.split()) for t in self.tokenizer.batch_decode(ids, skip_special_tokens=True)]
        return out


def _hwc(im: np.ndarray) -> Any:
    if im.ndim == 3 and im.shape[0] in (1, 3):
        im = im.transpose(1, 2, 0)
    return im.squeeze(-1) if im.ndim == 3 and im.shape[-1] == 1 else im
