"""Fine-grained Visual-Text Alignment and Fusion (FVTAF, docs/method.md §6.2, §6.7).

Patch features are projected to d_model and fused twice with MPSA: with the 75 local reference
prompts (LRPs, entity triplets) and with the N global reference prompts (GRPs, sentences of the
retrieved report). The decoder's cross-attention memory is Fc = cat(global_fused, local_fused).

As in the official code one vision projection serves both branches, and by default one MPSA layer
too (`share_branches`; the paper's figure suggests two). The residual inside MPSA is with the
projected visual features and "f_proj" is the FFN + LayerNorm (§6.7).

Branch ablation: pass `lrp=None` (or `grp=None`) to switch a branch off. Its slot of Fc is then
filled with the projected visual features, so Fc keeps its [B, L, 2d] shape and the decoder is
unchanged; its maps and text features are None and the FCC loss is zero.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
from torch import nn

from revtaf.model.fcc import FCCOutput, fcc_loss
from revtaf.model.config import FusionConfig
from revtaf.model.mpsa import MPSALayer

OFFICIAL_FCC_SIZE = 224  # the official code upsamples the 7×7 maps to the input resolution


class FVTAFOutput(NamedTuple):
    fc: torch.Tensor  # [B, L, 2d]  cat(global_fused, local_fused), global first
    local_maps: torch.Tensor | None  # [B, M, L]
    global_maps: torch.Tensor | None  # [B, N, L]
    tl: torch.Tensor | None  # [B, M, d]  projected LRPs
    tg: torch.Tensor | None  # [B, N, d]  projected GRPs
    lrp: torch.Tensor | None = None  # [B, M, lrp_dim]  LRPs as given (the anchored FCC's target side)
    grp: torch.Tensor | None = None  # [B, N, grp_dim]  GRPs as given


class FVTAF(nn.Module):
    def __init__(self, config: FusionConfig):
        super().__init__()
        self.config = config
        d = config.d_model
        self.vision_proj = nn.Linear(config.visual_dim, d)
        self.txt_proj_local = nn.Linear(config.lrp_dim, d)
        self.txt_proj_global = nn.Linear(config.grp_dim, d)
        # mpsa[0] serves the global branch, mpsa[-1] the local one: the same layer when shared. A list
        # rather than two attributes so shared weights appear once in the state dict.
        self.mpsa = nn.ModuleList(
            MPSALayer(d, config.dim_feedforward, config.dropout, config.mpsa_mode, config.eps, config.sinkhorn_iters,
                      config.dustbin)
            for _ in range(1 if config.share_branches else 2)
        )

    def forward(
        self,
        patches: torch.Tensor,
        lrp: torch.Tensor | None,
        grp: torch.Tensor | None,
        grp_mask: torch.Tensor | None = None,
    ) -> FVTAFOutput:
        """patches [B, L, visual_dim], lrp [B, M, lrp_dim] | None, grp [B, N, grp_dim] | None,
        grp_mask [B, N] bool (True = real sentence) | None (all real)."""
        if patches.dim() != 3 or patches.shape[2] != self.config.visual_dim:
            raise ValueError(f"patches must be [B, L, {self.config.visual_dim}], got {tuple(patches.shape)}")
        img = self.vision_proj(patches)  # [B, L, d]
        global_fused, global_maps, tg = self._branch(self.mpsa[0], self.txt_proj_global, img, grp, grp_mask, "grp")
        local_fused, local_maps, tl = self._branch(self.mpsa[-1], self.txt_proj_local, img, lrp, None, "lrp")
        return FVTAFOutput(torch.cat([global_fused, local_fused], dim=-1), local_maps, global_maps, tl, tg, lrp, grp)

    @staticmethod
    def _branch(
        layer: MPSALayer,
        proj: nn.Linear,
        img: torch.Tensor,
        txt: torch.Tensor | None,
        mask: torch.Tensor | None,
        name: str,
    ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        """-> (fused [B, L, d], maps [B, T, L] | None, projected text [B, T, d] | None)."""
        if txt is None:  # ablated branch: Fc keeps its shape with the projected visual features
            return img, None, None
        if txt.dim() != 3 or txt.shape[0] != img.shape[0] or txt.shape[2] != proj.in_features:
            raise ValueError(f"{name} must be [B={img.shape[0]}, T, {proj.in_features}], got {tuple(txt.shape)}")
        t = proj(txt)
        out = layer(img, t, mask)
        return out.fused, out.maps, t

    def loss(self, out: FVTAFOutput, grp_mask: torch.Tensor | None = None) -> FCCOutput:
        """FCC loss of a forward's output in the configured mode; zero if a branch is switched off."""
        if out.local_maps is None or out.global_maps is None:
            return FCCOutput(out.fc.new_zeros(()), None, None)
        L = out.local_maps.shape[2]
        grid = math.isqrt(L)
        official = self.config.fcc_mode == "official"
        if official and grid * grid != L:
            raise ValueError(f"official FCC upsamples a square patch grid; {L} patches are not one")
        return fcc_loss(
            out.local_maps,
            out.global_maps,
            out.tl,
            out.tg,
            grp_mask,
            mode=self.config.fcc_mode,
            grid=grid,
            upsample=OFFICIAL_FCC_SIZE if official else None,
            anchors=(out.lrp, out.grp) if self.config.fcc_mode == "anchored" else None,
            tau=self.config.fcc_tau,
            tau_overlap=self.config.fcc_tau_overlap,
        )


def position_loss(maps: torch.Tensor, cells: torch.Tensor) -> torch.Tensor:
    """Weak supervision of the entity maps by the position the report states (ours, docs/method.md §13.6):
    −log of the share of a map's mass inside the stated region (labels/regions.py), mean over the (study,
    entity) pairs that have one. Maps are min-max normalised first, as the grounding metrics and the demo read
    them (MPSA's maps are cosine-weighted and can be negative). maps [B,M,L], cells [B,M,L] bool -> scalar; 0
    without pairs."""
    rows = cells.any(-1)
    if not rows.any():
        return maps.sum() * 0
    m = maps[rows].float()
    lo, hi = m.min(-1, keepdim=True).values, m.max(-1, keepdim=True).values
    m = (m - lo) / (hi - lo).clamp_min(1e-6)
    inside = (m * cells[rows]).sum(-1) / m.sum(-1).clamp_min(1e-8)
    return -inside.clamp_min(1e-6).log().mean()

