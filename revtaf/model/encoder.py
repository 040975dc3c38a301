"""Visual encoder: a torchvision ResNet without avgpool/fc (method.md §3).

A small timm-like registry: `build_visual_encoder("resnet101", weights="resnet101-63fe2227.pth")` gives
the paper's encoder initialised from a local torchvision ImageNet file; `weights=None` gives a random
init (the offline default, trained on IU X-Ray). Nothing here ever downloads.

The module keeps torchvision's attribute names (conv1, bn1, layer1..layer4), so a torchvision state
dict loads as-is once its fc.* keys are dropped, and our own checkpoints stay torchvision-compatible.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn as nn
import torchvision

# name -> (torchvision constructor, channels after layer1..layer4)
_RESNETS = {
    "resnet18": (torchvision.models.resnet18, (64, 128, 256, 512)),
    "resnet34": (torchvision.models.resnet34, (64, 128, 256, 512)),
    "resnet50": (torchvision.models.resnet50, (256, 512, 1024, 2048)),
    "resnet101": (torchvision.models.resnet101, (256, 512, 1024, 2048)),
}
VISUAL_ENCODERS = frozenset(_RESNETS)


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


class VisualEncoder(nn.Module):
    """ResNet trunk up to `last_stage` (4 = C5, stride 32; 3 = C4, stride 16).

    forward(images [B,3,H,W]) -> (patches [B,L,C], pooled [B,C]) with L = (H/stride)·(W/stride),
    row-major (index = w_L·h + w, i.e. 7h + w for C5 at 224), pooled = mean over the L patches
    (= AvgPool2d(7) at 224). `out_dim` = C.
    """

    def __init__(self, name: str, last_stage: int = 4):
        super().__init__()
        if name not in _RESNETS:
            raise ValueError(f"unknown visual encoder {name!r}; choose one of {sorted(VISUAL_ENCODERS)}")
        if last_stage not in (3, 4):
            raise ValueError(f"last_stage must be 3 or 4, got {last_stage}")
        constructor, channels = _RESNETS[name]
        resnet = constructor(weights=None)
        self.name, self.last_stage = name, last_stage
        self.out_dim = channels[last_stage - 1]
        self.stride = 2 ** (last_stage + 1)
        self.conv1, self.bn1, self.relu, self.maxpool = resnet.conv1, resnet.bn1, resnet.relu, resnet.maxpool
        self.layer1, self.layer2, self.layer3 = resnet.layer1, resnet.layer2, resnet.layer3
        if last_stage == 4:
            self.layer4 = resnet.layer4

    def feature_map(self, images: torch.Tensor) -> torch.Tensor:
        """images [B,3,H,W] -> [B,C,H/stride,W/stride]."""
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"expected images [B,3,H,W], got {tuple(images.shape)}")
        x = self.maxpool(self.relu(self.bn1(self.conv1(images))))
        x = self.layer3(self.layer2(self.layer1(x)))
        return self.layer4(x) if self.last_stage == 4 else x

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        patches = self.feature_map(images).flatten(2).transpose(1, 2)  # [B,L,C], row-major
        return patches, patches.mean(dim=1)

    def load_torchvision_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        """Load a torchvision ResNet state dict (ImageNet file or our own); keys of dropped stages are ignored."""
        kept = {k: v for k, v in state.items() if not k.startswith("fc.")}
        if self.last_stage == 3:
            kept = {k: v for k, v in kept.items() if not k.startswith("layer4.")}
        missing, unexpected = self.load_state_dict(kept, strict=False)
        if missing or unexpected:
            raise KeyError(
                f"state dict does not match torchvision {self.name}: "
                f"missing {missing[:5]}{'…' if len(missing) > 5 else ''}, "
                f"unexpected {unexpected[:5]}{'…' if len(unexpected) > 5 else ''}"
            )


def build_visual_encoder(name: str, weights: str | Path | None = None, last_stage: int = 4) -> VisualEncoder:
    """A ResNet visual encoder; `weights` = a local torchvision state-dict file (.pth or .safetensors), or None."""
    encoder = VisualEncoder(name, last_stage)
    if weights is not None:
        encoder.load_torchvision_state_dict(load_state_dict_file(weights))
    return encoder
