"""Models by timm name.

Any `timm.create_model` name works (`vit_base_patch16_224`, `resnet50`, ...; kwargs such as
`img_size=28, in_chans=1` via `train.model_kwargs`). synscale registers, in timm's own registry, small
CNNs sized for 28x28 images on a CPU, so the miniature study trains a model per scale in seconds.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from synscale.atomic import read_json
from synscale.errors import ConfigError


class SmallConvNet(nn.Module):
    """conv3x3/2 - conv3x3/2 - conv3x3 (each BN + ReLU), then a two-layer head: a CNN sized for 28x28
    images on a CPU (~9k training images/s on 2 cores at width 16).

    Follows timm's model interface: num_classes, in_chans, num_features, forward_features /
    forward_head(pre_logits=...), reset_classifier, pretrained_cfg.
    """

    def __init__(
        self,
        num_classes: int = 10,
        in_chans: int = 1,
        width: int = 16,
        hidden: int = 128,
        drop_rate: float = 0.2,
        img_size: int = 28,
        **_: Any,
    ) -> None:
        super().__init__()
        self.num_classes, self.in_chans = num_classes, in_chans

        def conv(cin: int, cout: int, stride: int) -> list[nn.Module]:
            return [nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]

        self.stages = nn.Sequential(*conv(in_chans, width, 2), *conv(width, 2 * width, 2), *conv(2 * width, 2 * width, 1))
        side = (img_size + 3) // 4
        self.num_features = 2 * width * side * side
        self.pre_logits = nn.Sequential(
            nn.Flatten(), nn.Linear(self.num_features, hidden), nn.ReLU(inplace=True), nn.Dropout(drop_rate)
        )
        self.head_hidden = hidden
        self.head = nn.Linear(hidden, num_classes) if num_classes else nn.Identity()

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.stages(x)

    def forward_intermediates(self, x: torch.Tensor, intermediates_only: bool = True) -> list[torch.Tensor]:
        """The output of each conv block (BN + ReLU), as timm's `forward_intermediates` gives them."""
        if not intermediates_only:
            raise ValueError("SmallConvNet.forward_intermediates supports intermediates_only=True only")
        maps = []
        for i, layer in enumerate(self.stages):
            x = layer(x)
            if i % 3 == 2:
                maps.append(x)
        return maps

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = self.pre_logits(x)
        return x if pre_logits else self.head(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    def get_classifier(self) -> nn.Module:
        return self.head

    def reset_classifier(self, num_classes: int, **_: Any) -> None:
        self.num_classes = num_classes
        self.head = nn.Linear(self.head_hidden, num_classes) if num_classes else nn.Identity()


def _register() -> None:
    import timm
    from timm.models import register_model

    def make(width: int, hidden: int, name: str) -> None:
        if timm.is_model(name):  # module reloaded
            return

        def fn(pretrained: bool = False, **kwargs: Any) -> SmallConvNet:
            if pretrained:
                raise ConfigError(f"{name} has no pretrained weights")
            kwargs.pop("pretrained_cfg", None), kwargs.pop("pretrained_cfg_overlay", None)
            model = SmallConvNet(width=kwargs.pop("width", width), hidden=kwargs.pop("hidden", hidden), **kwargs)
            model.pretrained_cfg = {"input_size": (model.in_chans, 28, 28), "num_classes": model.num_classes}
            return model

        fn.__name__ = name
        fn.__module__ = __name__
        register_model(fn)

    make(16, 128, "synscale_cnn_small")
    make(32, 256, "synscale_cnn_base")


_register()


def check_model_name(name: str, key: str = "train.model") -> None:
    """A classifier architecture timm can build (synscale's own are registered there); a ConfigError naming
    `key` with the closest names otherwise."""
    import difflib

    import timm

    if not timm.is_model(name):
        from synscale.schema import ConfigError

        close = difflib.get_close_matches(name, timm.list_models(), n=5, cutoff=0.6)
        raise ConfigError(f"{key}: unknown model {name!r} (timm's names, or synscale's synscale_cnn_small / "
                          f"synscale_cnn_base); similar: {', '.join(close) or 'none'}")


def create_model(name: str, num_classes: int, in_chans: int, img_size: int, **kwargs: Any) -> nn.Module:
    """A timm model with the task's classes, channels and (where the model takes it) image size."""
    import timm

    check_model_name(name)
    kw = {"num_classes": num_classes, "in_chans": in_chans, **kwargs}
    if "img_size" not in kw and (name.startswith(("vit", "deit", "synscale_", "mixer", "swin", "beit", "eva"))):
        kw["img_size"] = img_size
    return timm.create_model(name, pretrained=False, **kw)


def load_trained(stage_dir: Any, train_cfg: dict[str, Any]) -> tuple[nn.Module, dict[str, Any]]:
    """The model a synscale train directory holds (model.safetensors + train.json), in eval mode, and
    its train.json; `train_cfg` is the `[train]` table it was trained with. A CLIP model (task
    contrastive) is the open_clip model itself."""
    from pathlib import Path

    from safetensors.torch import load_file

    stage_dir = Path(stage_dir)
    meta = read_json(stage_dir / "train.json")
    if train_cfg.get("task", "classification") == "contrastive":
        from synscale.train.clip import create_clip

        model = create_clip(train_cfg["model"], **train_cfg.get("model_kwargs", {}))
    else:
        model = create_model(train_cfg["model"], meta["num_classes"], meta["in_chans"],
                             meta.get("model_img_size", meta["img_size"]), **train_cfg.get("model_kwargs", {}))
    model.load_state_dict(load_file(str(stage_dir / "model.safetensors")))
    return model.eval(), meta
