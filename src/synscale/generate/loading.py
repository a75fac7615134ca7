"""Loading a diffusers pipeline from a directory or the hub cache, quietly, lean, and without its safety checker
(synscale.generate.safety). Every pipeline synscale samples, a cascade's stages included, is loaded here."""

from __future__ import annotations

from typing import Any


def load_pipeline(model: str, dtype: Any, local_files_only: bool = True, **components: Any) -> Any:
    """`DiffusionPipeline.from_pretrained` quietly and lean: the dtype under the argument name this diffusers
    takes (`dtype` where `torch_dtype` is deprecated), weights loaded straight into empty modules by
    `accelerate` (diffusers' `low_cpu_mem_usage` default: one copy of the weights in memory, not two), and
    without the libraries' per-component progress bars and notices; their errors still raise. Without its
    safety checker, which blacks out what it flags (synscale.generate.safety loads it where a study keeps it);
    `components`: parts given instead of loaded (None: left out)."""
    from diffusers import DiffusionPipeline
    from diffusers.utils import deprecation_utils
    from diffusers.utils import logging as df_logging
    from transformers.utils import logging as hf_logging

    from synscale.generate.safety import CHECKER, model_index

    index = model_index(model)
    if index is None or index.get(CHECKER) is not None:
        components = {CHECKER: None, **components}
    name = "dtype" if hasattr(deprecation_utils, "_TORCH_DTYPE_DEPRECATION_MESSAGE") else "torch_dtype"
    levels = df_logging.get_verbosity(), hf_logging.get_verbosity()
    bars = df_logging.is_progress_bar_enabled(), hf_logging.is_progress_bar_enabled()
    df_logging.set_verbosity_error()
    hf_logging.set_verbosity_error()
    df_logging.disable_progress_bar()
    hf_logging.disable_progress_bar()
    try:
        return DiffusionPipeline.from_pretrained(model, **{name: dtype}, local_files_only=local_files_only,
                                                 **components)
    finally:
        df_logging.set_verbosity(levels[0])
        hf_logging.set_verbosity(levels[1])
        if bars[0]:
            df_logging.enable_progress_bar()
        if bars[1]:
            hf_logging.enable_progress_bar()
