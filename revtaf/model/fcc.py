"""Fine-grained Cross-modal Consistency loss (FCC, docs/method.md §6.5).

For every (LRP m, GRP n) pair of an image, the overlap O of their MPSA maps weights how strongly the
two projected text features must agree: L_fcc = mean(1 − S·O), S = sigmoid(cos(tl_m, tg_n)).

Two modes (docs/method.md §13.1):
- `soft` (the paper): each map min-max normalised over its own spatial positions, soft IoU
  O = Σ min(Ml, Mg) / Σ max(Ml, Mg), computed at the map grid (7×7) unless `upsample` is given,
  padded GRP rows excluded from the mean. Gradient reaches the maps and through them Wq/Wk.
- `official` (the authors' code): one min-max over the whole batch tensor, hard threshold ≥ 0.5,
  binary IoU with +1e-8, maps usually bilinearly upsampled to 224² first, no mask. The threshold has
  no gradient, so only S (the text projections) is trained by this loss.
- `anchored` (ours, the default of the small preset): the soft form has a trivial minimum — every map
  identical (O = 1) and every projected text feature identical (S = sigmoid(1)) — and a trained model sat in
  it (mean S .7303, O 1.000, all 75 maps one map). Here the target comes from the FROZEN text encoder, which
  the loss cannot move: for each LRP m, P_m = softmax_n(cos(lrp_m, grp_n) / tau) over the valid GRPs, and the
  maps must distribute their overlap the same way, Q_m = softmax_n(O_mn / tau_o); L = mean_m KL(P_m || Q_m).
  Identical maps give a uniform Q, which is far from any P with contrast, so collapse is no longer a
  minimum: entities whose sentences are alike must overlap, the others must not.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F

MODES = ("soft", "official", "anchored")


class FCCOutput(NamedTuple):
    loss: torch.Tensor  # scalar
    similarity: torch.Tensor | None  # S [B, M, N]
    overlap: torch.Tensor | None  # O [B, M, N]


def _upsample(maps: torch.Tensor, grid: int, size: int) -> torch.Tensor:
    """[B, T, grid²] -> [B, T, size²], bilinear with align_corners=False as the official code."""
    B, T, P = maps.shape
    if P != grid * grid:
        raise ValueError(f"maps have {P} positions, not a {grid}×{grid} grid")
    up = F.interpolate(maps.reshape(B * T, 1, grid, grid), size=(size, size), mode="bilinear", align_corners=False)
    return up.reshape(B, T, size * size)


def _per_map_minmax(maps: torch.Tensor) -> torch.Tensor:
    lo = maps.amin(-1, keepdim=True)
    hi = maps.amax(-1, keepdim=True)
    return (maps - lo) / (hi - lo + 1e-6)


def _global_minmax(maps: torch.Tensor) -> torch.Tensor:
    return (maps - maps.min()) / (maps.max() - maps.min() + 1e-6)


def fcc_loss(
    maps_local: torch.Tensor,
    maps_global: torch.Tensor,
    tl: torch.Tensor,
    tg: torch.Tensor,
    grp_mask: torch.Tensor | None = None,
    mode: str = "soft",
    grid: int = 7,
    upsample: int | None = None,
    anchors: tuple[torch.Tensor, torch.Tensor] | None = None,
    tau: float = 0.05,
    tau_overlap: float = 0.1,
) -> FCCOutput:
    """maps_local [B, M, L], maps_global [B, N, L], tl [B, M, d], tg [B, N, d], grp_mask [B, N] bool.

    Returns the loss, S [B, M, N] and O [B, M, N]. `upsample` (e.g. 224) resizes the L = grid² maps
    before the overlap. Soft mode: the loss averages 1 − S·O over each image's M × N_valid pairs, then
    over the images that have at least one valid GRP. Official mode averages over all pairs, mask ignored.
    Memory: soft mode holds a [B, M, N, L'] tensor (L' = upsampled positions), so keep it at 7×7.
    Anchored mode needs `anchors` = (lrp [B, M, e], grp [B, N, e]), the text embeddings before projection.
    """
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    shapes = f"{tuple(maps_local.shape)}, {tuple(maps_global.shape)}, {tuple(tl.shape)}, {tuple(tg.shape)}"
    if not maps_local.dim() == maps_global.dim() == tl.dim() == tg.dim() == 3:
        raise ValueError(f"need maps_local [B, M, L], maps_global [B, N, L], tl [B, M, d], tg [B, N, d]; got {shapes}")
    B, M, P = maps_local.shape
    N = maps_global.shape[1]
    if maps_global.shape != (B, N, P) or tl.shape[:2] != (B, M) or tg.shape[:2] != (B, N) or tl.shape[2] != tg.shape[2]:
        raise ValueError(f"need maps_local [B, M, L], maps_global [B, N, L], tl [B, M, d], tg [B, N, d]; got {shapes}")
    if grp_mask is not None:
        if grp_mask.dtype != torch.bool:
            raise TypeError(f"grp_mask must be bool (True = valid), got {grp_mask.dtype}")
        if grp_mask.shape != (B, N):
            raise ValueError(f"grp_mask must be [B, N] = {(B, N)}, got {tuple(grp_mask.shape)}")

    if mode == "anchored":
        if anchors is None or anchors[0].shape[:2] != (B, M) or anchors[1].shape[:2] != (B, N):
            raise ValueError("anchored FCC needs anchors = (lrp [B, M, e], grp [B, N, e]) before projection")
        anchors = (anchors[0].float(), anchors[1].float())

    # Sums over up to 224² positions and min-max ratios: float32 even under autocast.
    with torch.autocast(device_type=tl.device.type, enabled=False):
        return _fcc(maps_local.float(), maps_global.float(), tl.float(), tg.float(), grp_mask, mode, grid, upsample,
                    anchors, tau, tau_overlap)


def _fcc(
    maps_local: torch.Tensor,
    maps_global: torch.Tensor,
    tl: torch.Tensor,
    tg: torch.Tensor,
    grp_mask: torch.Tensor | None,
    mode: str,
    grid: int,
    upsample: int | None,
    anchors: tuple[torch.Tensor, torch.Tensor] | None = None,
    tau: float = 0.05,
    tau_overlap: float = 0.1,
) -> FCCOutput:
    B, M, N = maps_local.shape[0], maps_local.shape[1], maps_global.shape[1]
    S = torch.sigmoid(F.normalize(tl, dim=-1) @ F.normalize(tg, dim=-1).transpose(1, 2))  # [B, M, N]

    if mode == "official":
        with torch.no_grad():  # the ≥ 0.5 threshold is piecewise constant: no gradient to the maps
            Ml, Mg = maps_local, maps_global
            if upsample is not None:
                Ml, Mg = _upsample(Ml, grid, upsample), _upsample(Mg, grid, upsample)
            bl = (_global_minmax(Ml) >= 0.5).float()
            bg = (_global_minmax(Mg) >= 0.5).float()
            inter = bl @ bg.transpose(1, 2)  # [B, M, N]; counts ≤ 224² are exact in float32
            union = bl.sum(-1)[:, :, None] + bg.sum(-1)[:, None, :] - inter
            O = inter / (union + 1e-8)
        return FCCOutput((1 - S * O).mean(), S, O)

    Ml, Mg = maps_local, maps_global
    if upsample is not None:
        Ml, Mg = _upsample(Ml, grid, upsample), _upsample(Mg, grid, upsample)
    Ml, Mg = _per_map_minmax(Ml), _per_map_minmax(Mg)
    inter = torch.minimum(Ml[:, :, None, :], Mg[:, None, :, :]).sum(-1)  # [B, M, N]
    union = Ml.sum(-1)[:, :, None] + Mg.sum(-1)[:, None, :] - inter  # Σmax = Σa + Σb − Σmin
    O = inter / (union + 1e-8)  # two all-zero (constant) maps: O = 0

    valid = grp_mask if grp_mask is not None else torch.ones(B, N, dtype=torch.bool, device=S.device)
    n_valid = valid.sum(1)  # [B]
    has_grp = n_valid > 0
    if mode == "anchored":
        with torch.no_grad():  # the target: the frozen encoder's similarities, sharpened per LRP over the GRPs
            cos = F.normalize(anchors[0], dim=-1) @ F.normalize(anchors[1], dim=-1).transpose(1, 2)
            target = (cos / tau).masked_fill(~valid[:, None, :], float("-inf")).softmax(-1)
            target = target.nan_to_num(0.0)  # images without any GRP: all-masked rows
        log_q = (O / tau_overlap).masked_fill(~valid[:, None, :], float("-inf")).log_softmax(-1)
        kl = (target * (target.clamp_min(1e-12).log() - log_q.clamp_min(-1e4))).sum(-1)  # [B, M]
        loss = kl[has_grp].mean() if has_grp.any() else O.sum() * 0
        return FCCOutput(loss, S, O)
    per_image = ((1 - S * O) * valid[:, None, :]).sum((1, 2)) / (M * n_valid).clamp_min(1)
    loss = per_image[has_grp].mean() if has_grp.any() else per_image.sum() * 0  # zero, still on the graph
    return FCCOutput(loss, S, O)
