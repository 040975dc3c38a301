"""Multi-Prompt Sinkhorn Attention (MPSA, docs/method.md §6.3, §6.4, §6.6).

Image patches are the queries, text prompts (75 LRPs or N GRP sentences) the keys and values. The
attention weights are an optimal-transport plan between patches and texts, solved with log-domain
Sinkhorn on the cost 1 − cos(q, k).

Two modes (docs/method.md §13.1):
- `ot` (default, §6.6): one L × T_valid transport problem per image, mu = 1/L over patches,
  nu = 1/T_valid over the valid texts. A = L·P, so each patch's weights over the texts sum to 1
  and are shaped by the cost: query/key projections matter and receive gradient.
- `official` (§6.3): what the authors' code computes. Its Sinkhorn runs on [L × 1] problems (one
  per text), whose plan is 1/L whatever the cost; every patch therefore receives (1/L)·Σ_t v_t and
  Wq/Wk get no gradient through the fused output. The closed form is used directly (the test suite
  checks it equals `sinkhorn` on singleton columns). The official code has no padding mask, so
  this mode ignores `txt_mask`: padded rows (bias-only after the projection) are attended too.

`dustbin` (ours, off by default; docs/method.md §13.6): the balanced `ot` problem forces every text to take
1/T of the mass, so the 60-odd LRPs of entities absent from an image must land somewhere; on the trained
model they landed on the image border (84 % of the LRP map mass on the outer ring of a 7×7 grid, which is
49 % of its cells). As SuperGlue does for unmatched keypoints, one extra row and one extra column ("nothing here")
with a learned cost take the mass that has no match: the maps then show only what was matched, a patch's
weights over the texts sum to at most 1, and an absent entity's map may be empty.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

MODES = ("ot", "official")
_MASKED_LOGIT = -1e9  # finite stand-in for −inf: exp() underflows to 0 and logsumexp stays NaN-free


def sinkhorn(
    cost: torch.Tensor,
    mu: torch.Tensor,
    nu: torch.Tensor,
    eps: float = 0.05,
    max_iter: int = 100,
    tol: float = 1e-6,
) -> torch.Tensor:
    """Entropic OT plans for P problems at once, log domain with scaled potentials (§6.4).

    cost [P, R, S], mu [P, R], nu [P, S] -> plan [P, R, S] with rows summing to mu, columns to nu.

    Iterates u ← ε(log μ − LSE_S K) + u, v ← ε(log ν − LSE_R K) + v with K = (−C + u + v)/ε, stopping
    when mean|Δu| < tol. A zero marginal entry removes that row/column from the problem (its logits
    are masked, its potential stays 0, its plan entries are exactly 0) instead of relying on
    log(0 + 1e-8). Always computed in float32, also under autocast. Iterations are unrolled in
    autograd, so gradients reach the cost.
    """
    if cost.dim() != 3 or mu.shape != cost.shape[:2] or nu.shape != (cost.shape[0], cost.shape[2]):
        raise ValueError(
            f"need cost [P, R, S], mu [P, R], nu [P, S]; got {tuple(cost.shape)}, {tuple(mu.shape)}, {tuple(nu.shape)}"
        )
    with torch.autocast(device_type=cost.device.type, enabled=False):
        cost, mu, nu = cost.float(), mu.float(), nu.float()
        if (mu < 0).any() or (nu < 0).any():
            raise ValueError("marginals must be non-negative")
        if not ((mu > 0).any(1) & (nu > 0).any(1)).all():
            raise ValueError("every problem needs at least one row and one column with positive mass")
        if not torch.allclose(mu.sum(1), nu.sum(1), rtol=1e-4, atol=1e-6):
            raise ValueError("mu and nu must carry the same total mass in every problem")

        row_live, col_live = mu > 0, nu > 0
        live = row_live[:, :, None] & col_live[:, None, :]
        log_mu = mu.clamp_min(1e-30).log()  # clamped entries are dead and never selected below
        log_nu = nu.clamp_min(1e-30).log()

        def logits(u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
            return ((-cost + u[:, :, None] + v[:, None, :]) / eps).masked_fill(~live, _MASKED_LOGIT)

        u = cost.new_zeros(mu.shape)
        v = cost.new_zeros(nu.shape)
        for _ in range(max_iter):
            u_prev = u
            u = torch.where(row_live, eps * (log_mu - logits(u, v).logsumexp(2)) + u, 0.0)
            v = torch.where(col_live, eps * (log_nu - logits(u, v).logsumexp(1)) + v, 0.0)
            if (u - u_prev).abs().mean() < tol:
                break
        return logits(u, v).exp()


class MPSAOutput(NamedTuple):
    fused: torch.Tensor  # [B, L, d]  patches after attention, residual + LN, FFN + LN
    maps: torch.Tensor  # [B, T, L]  per-text score map over the patches (rows of padded texts = 0 in `ot`)
    plan: torch.Tensor  # [B, L, T]  transport plan (rows sum to 1/L)


class MPSALayer(nn.Module):
    """One MPSA block: OT cross-attention (patches -> texts), then the post-norm transformer tail.

    fused = LN(img + dropout(Wproj(dropout_attn(A) · Wv txt)));  fused = LN(fused + FFN(fused)),
    FFN = dropout(W2 dropout(ReLU(W1 x))), as torch's post-norm TransformerDecoderLayer that the
    official code wraps. The official layer's self-attention is never called and is not built here.
    """

    def __init__(
        self,
        d_model: int,
        dim_feedforward: int,
        dropout: float = 0.1,
        mode: str = "ot",
        eps: float = 0.05,
        max_iter: int = 100,
        dustbin: bool = False,
    ):
        super().__init__()
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        if dustbin and mode != "ot":
            raise ValueError("the dustbin belongs to the `ot` transport problem; the official mode has none")
        self.mode, self.eps, self.max_iter = mode, eps, max_iter
        # Cost of sending mass to "nothing here", in the units of 1 − cos; learned. 1.0 = an orthogonal pair.
        self.dustbin_cost = nn.Parameter(torch.tensor(1.0)) if dustbin else None
        self.q_proj = nn.Linear(d_model, d_model)
        self.k_proj = nn.Linear(d_model, d_model)
        self.v_proj = nn.Linear(d_model, d_model)
        self.out_proj = nn.Linear(d_model, d_model)
        self.attn_dropout = nn.Dropout(dropout)  # on the plan weights (AttentionOT's attn_drop)
        self.dropout_attn = nn.Dropout(dropout)  # on the attention output before the residual
        self.norm_attn = nn.LayerNorm(d_model)
        self.linear1 = nn.Linear(d_model, dim_feedforward)
        self.linear2 = nn.Linear(dim_feedforward, d_model)
        self.dropout_ffn_inner = nn.Dropout(dropout)
        self.dropout_ffn = nn.Dropout(dropout)
        self.norm_ffn = nn.LayerNorm(d_model)

    def extra_repr(self) -> str:
        return f"mode={self.mode!r}, eps={self.eps}, max_iter={self.max_iter}, dustbin={self.dustbin_cost is not None}"

    def forward(self, img: torch.Tensor, txt: torch.Tensor, txt_mask: torch.Tensor | None = None) -> MPSAOutput:
        """img [B, L, d], txt [B, T, d], txt_mask [B, T] bool (True = valid) or None (all valid)."""
        message, maps, plan = self.attend(img, txt, txt_mask)
        x = self.norm_attn(img + self.dropout_attn(message))
        x = self.norm_ffn(x + self.dropout_ffn(self.linear2(self.dropout_ffn_inner(F.relu(self.linear1(x))))))
        return MPSAOutput(x, maps, plan)

    def attend(
        self, img: torch.Tensor, txt: torch.Tensor, txt_mask: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The attention alone: -> (message [B, L, d] after Wproj, maps [B, T, L], plan [B, L, T])."""
        B, L, d = self._check(img, txt, txt_mask)
        T = txt.shape[1]
        q = F.normalize(self.q_proj(img), dim=-1)
        k = F.normalize(self.k_proj(txt), dim=-1)
        v = self.v_proj(txt)
        sim = q @ k.transpose(1, 2)  # [B, L, T] cosine

        if self.mode == "official":
            # Closed form of the official singleton-column Sinkhorn: T_plan ≡ 1/L, map = L·sim·T_plan = sim.
            plan = sim.new_full((B, L, T), 1.0 / L)
            attn, maps = plan, sim.transpose(1, 2)
        else:
            mask = txt_mask if txt_mask is not None else torch.ones(B, T, dtype=torch.bool, device=txt.device)
            n_valid = mask.sum(1)  # [B]
            has_txt = n_valid > 0  # an image without any valid text attends to nothing (message = bias)
            nu = mask.float() / n_valid.clamp_min(1)[:, None]
            mu = torch.full((B, L), 1.0 / L, device=sim.device)
            plan = sim.new_zeros(B, L, T, dtype=torch.float32)
            if has_txt.any():
                cost, mu_, nu_ = (1 - sim)[has_txt], mu[has_txt], nu[has_txt]
                if self.dustbin_cost is not None:
                    solved = self._with_dustbin(cost, mu_, nu_)
                else:
                    solved = sinkhorn(cost, mu_, nu_, self.eps, self.max_iter)
                plan = plan.index_put((has_txt,), solved)
            plan = plan.to(sim.dtype)
            attn = L * plan  # each patch's weights over the valid texts sum to 1 (at most 1 with the dustbin)
            # OTSeg-style score map: the cosine reweighted by the transport density L·T_valid·P, whose
            # mean over the patches is 1 per text. Padded texts have P = 0, hence an all-zero map.
            maps = (sim * plan * (L * n_valid.clamp_min(1)[:, None, None])).transpose(1, 2)

        message = self.out_proj(self.attn_dropout(attn) @ v)
        return message, maps, plan

    def _with_dustbin(self, cost: torch.Tensor, mu: torch.Tensor, nu: torch.Tensor) -> torch.Tensor:
        """cost [P, L, T], mu [P, L], nu [P, T] (each summing to 1) -> the patch × text block [P, L, T] of the plan
        of the problem augmented with a dustbin row and column, each of mass 1 (SuperGlue's marginals)."""
        P, L, T = cost.shape
        z = self.dustbin_cost.to(cost.dtype)
        full = torch.cat([cost, z.expand(P, L, 1)], dim=2)
        full = torch.cat([full, z.expand(P, 1, T + 1)], dim=1)  # [P, L+1, T+1]
        one = cost.new_ones(P, 1)
        plan = sinkhorn(full, torch.cat([mu, one], 1), torch.cat([nu, one], 1), self.eps, self.max_iter)
        return plan[:, :L, :T]

    @staticmethod
    def _check(img: torch.Tensor, txt: torch.Tensor, txt_mask: torch.Tensor | None) -> tuple[int, int, int]:
        if img.dim() != 3 or txt.dim() != 3 or img.shape[0] != txt.shape[0] or img.shape[2] != txt.shape[2]:
            raise ValueError(f"need img [B, L, d] and txt [B, T, d], got {tuple(img.shape)} and {tuple(txt.shape)}")
        if txt_mask is not None:
            if txt_mask.dtype != torch.bool:
                raise TypeError(f"txt_mask must be bool (True = valid), got {txt_mask.dtype}")
            if txt_mask.shape != txt.shape[:2]:
                raise ValueError(f"txt_mask must be [B, T] = {tuple(txt.shape[:2])}, got {tuple(txt_mask.shape)}")
        return img.shape
