"""Learnable Retrieval Enhancer (LRE, docs/method.md §5).

A two-layer hyperbolic MLP maps each image's 75 MedKLIP-style entity scores into a Poincaré ball
(c = 0.01, radius 10). It is trained with a ranking loss that makes the ball's nearest neighbour
the label-nearest study of the batch, and at inference it retrieves the training study whose
report sentences become the global reference prompts (GRPs).

The manifold operations (Möbius mat-vec and addition, exp/log maps at 0, projection) come from
geoopt. Only the all-pairs distance has its own closed form here, because geoopt's pairwise `dist`
needs a [B, M, D] broadcast that does not fit for a 270,790-row database.
"""

from __future__ import annotations

import json
import math
import warnings
from pathlib import Path

import geoopt
import torch
import torch.nn.functional as F
from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn

NUM_DISEASES = 18  # PromptMRG's 18 disease prompts
NUM_STATES = 4  # blank / positive / negative / uncertain


def _attach_ball(module: nn.Module, c: float) -> None:
    module.c = float(c)  # exact; geoopt keeps c as a float32 tensor (0.01 -> 0.0100000110)
    # geoopt stores the curvature as a frozen nn.Parameter. Registered as a submodule it would show up
    # in parameters() and state_dict, follow .half() casts, and become learnable after a blanket
    # requires_grad_(True). c is a fixed hyper-parameter (config), so the ball lives outside the tree.
    object.__setattr__(module, "_ball", geoopt.PoincareBall(c=c))


class HypLinear(nn.Module):
    """Hyperbolic linear layer: proj((W ⊗_c x) ⊕_c expmap0(b)), with a projection after each step.

    Shapes: x [..., in_dim] on the ball -> [..., out_dim] on the ball.
    """

    def __init__(self, in_dim: int, out_dim: int, c: float):
        super().__init__()
        _attach_ball(self, c)
        self.weight = nn.Parameter(torch.empty(out_dim, in_dim))
        self.bias = nn.Parameter(torch.empty(out_dim))
        # As in the official Post_HNN: Xavier-uniform with gain √2, zero bias.
        nn.init.xavier_uniform_(self.weight, gain=math.sqrt(2))
        nn.init.zeros_(self.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        ball = self._ball
        h = ball.mobius_matvec(self.weight, x)  # project=True (geoopt default)
        return ball.mobius_add(h, ball.expmap0(self.bias))  # bias moved onto the ball, result projected

    def extra_repr(self) -> str:
        return f"in_dim={self.weight.shape[1]}, out_dim={self.weight.shape[0]}, c={self.c}"


class HypAct(nn.Module):
    """Hyperbolic activation: proj(expmap0(act(logmap0(x)))). Shapes: [..., D] -> [..., D]."""

    def __init__(self, c: float, act: nn.Module | None = None):
        super().__init__()
        _attach_ball(self, c)
        self.act = act if act is not None else nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._ball.expmap0(self.act(self._ball.logmap0(x)))  # expmap0 projects


class LearnableRetrievalEnhancer(nn.Module):
    """Entity scores [B, in_dim] -> points H [B, hidden_dim] in the Poincaré ball of curvature c.

    h0 = proj(expmap0(scores)), then `num_layers` × (HypLinear, HypAct): 75 -> 512 -> 512 by default. With
    `standardize`, the scores are first turned into per-entity z-scores against the bank's statistics.
    Runs in float32 even under autocast: near the boundary (radius 10) half precision loses the
    distances the ranking depends on.
    """

    def __init__(self, in_dim: int = 75, hidden_dim: int = 512, num_layers: int = 2, c: float = 0.01,
                 standardize: bool = False):
        super().__init__()
        if num_layers < 1:
            raise ValueError(f"num_layers must be >= 1, got {num_layers}")
        if c <= 0:
            raise ValueError(f"curvature c must be > 0, got {c}")
        _attach_ball(self, c)
        self.in_dim, self.hidden_dim = in_dim, hidden_dim
        dims = [in_dim] + [hidden_dim] * num_layers
        self.layers = nn.Sequential(
            *(m for i in range(num_layers) for m in (HypLinear(dims[i], dims[i + 1], c), HypAct(c)))
        )
        self.standardize = standardize
        if standardize:  # fixed statistics of the reference scores, set with the bank (set_input_stats)
            self.register_buffer("input_mean", torch.zeros(in_dim))
            self.register_buffer("input_std", torch.ones(in_dim))

    def set_input_stats(self, scores: torch.Tensor) -> None:
        """Per-entity mean and std of reference scores [N, in_dim] (N >= 2), used when `standardize`."""
        if not self.standardize:
            raise RuntimeError("this LRE was built with standardize=False")
        if scores.dim() != 2 or scores.shape[1] != self.in_dim or scores.shape[0] < 2:
            raise ValueError(f"need scores [N >= 2, {self.in_dim}], got {tuple(scores.shape)}")
        scores = scores.detach().float()
        self.input_mean.copy_(scores.mean(0))
        self.input_std.copy_(scores.std(0).clamp_min(1e-6))  # an entity constant over the bank maps to 0

    @property
    def ball(self) -> geoopt.PoincareBall:
        return self._ball

    def forward(self, scores: torch.Tensor) -> torch.Tensor:
        if scores.dim() != 2 or scores.shape[1] != self.in_dim:
            raise ValueError(f"scores must be [B, {self.in_dim}], got {tuple(scores.shape)}")
        with torch.autocast(device_type=scores.device.type, enabled=False):
            x = scores.float()
            if self.standardize:
                x = (x - self.input_mean) / self.input_std
            h = self._ball.expmap0(x)
            return self.layers(h)


# --------------------------------------------------------------------------------------------
# Distances


def _dist_from_scalars(
    xx: torch.Tensor, yy: torch.Tensor, xy: torch.Tensor, c: float, diff2: torch.Tensor | None = None
) -> torch.Tensor:
    """Poincaré distance from ‖x‖², ‖y‖² and ⟨x, y⟩ (all broadcastable to the output shape).

    d = (2/√c)·artanh(√c·‖(−x) ⊕_c y‖) and, expanding Möbius addition,
    ‖(−x) ⊕_c y‖² = ‖x − y‖² / (1 − 2c⟨x,y⟩ + c²‖x‖²‖y‖²).
    Pass `diff2` = ‖x − y‖² when it was summed directly (exact for close points); otherwise it is
    ‖x‖² + ‖y‖² − 2⟨x,y⟩. Both clamps keep forward and backward finite for coincident points (sqrt at 0)
    and near-antipodal boundary points (artanh at 1).
    """
    sqrt_c = math.sqrt(c)
    diff2 = (xx + yy - 2 * xy if diff2 is None else diff2).clamp_min(1e-15)
    denom = (1 - 2 * c * xy + c * c * xx * yy).clamp_min(1e-15)
    arg = (sqrt_c * (diff2 / denom).sqrt()).clamp_max(1 - torch.finfo(xy.dtype).eps)
    return (2 / sqrt_c) * torch.atanh(arg)


def poincare_dist_matrix(
    x: torch.Tensor, y: torch.Tensor, c: float, dtype: torch.dtype = torch.float32
) -> torch.Tensor:
    """All-pairs Poincaré distances, x [B, D] and y [M, D] -> [B, M], computed in `dtype`.

    Memory is O(B·M + (B + M)·D): only norms and one matmul, never a [B, M, D] tensor.
    Pass dtype=torch.float64 to resolve near-ties that float32's cancellation in ‖x‖² + ‖y‖² − 2⟨x,y⟩
    would blur (absolute error ~1e-6·‖x‖² before the square root).
    """
    if x.dim() != 2 or y.dim() != 2 or x.shape[1] != y.shape[1]:
        raise ValueError(f"need x [B, D] and y [M, D], got {tuple(x.shape)} and {tuple(y.shape)}")
    with torch.autocast(device_type=x.device.type, enabled=False):
        x, y = x.to(dtype), y.to(dtype)
        xx = (x * x).sum(-1, keepdim=True)  # [B, 1]
        yy = (y * y).sum(-1)[None]  # [1, M]
        return _dist_from_scalars(xx, yy, x @ y.T, c)


# --------------------------------------------------------------------------------------------
# Ranking loss (§5.4)


def label_hamming(labels: torch.Tensor) -> torch.Tensor:
    """Hamming distances between the one-hot state vectors of labels [B, 18] -> [B, B] (int64).

    The one-hot vectors are 18 × 4 = 72 bits; a disease whose state differs flips two bits, so each
    disagreeing disease counts 2 (as the official popcount of v_i XOR v_j).
    """
    _check_labels(labels)
    return 2 * (labels[:, None, :] != labels[None, :, :]).sum(-1)


def _check_labels(labels: torch.Tensor) -> None:
    if labels.dim() != 2 or labels.shape[1] != NUM_DISEASES:
        raise ValueError(f"labels must be [B, {NUM_DISEASES}], got {tuple(labels.shape)}")
    if labels.dtype.is_floating_point or labels.dtype == torch.bool:
        raise TypeError(f"labels must be an integer tensor of states 0..3, got {labels.dtype}")
    if labels.numel() and (labels.min() < 0 or labels.max() >= NUM_STATES):
        raise ValueError(f"label states must lie in 0..{NUM_STATES - 1}")


def rank_loss(H: torch.Tensor, labels: torch.Tensor, c: float, multi_positive: bool = False) -> torch.Tensor:
    """In-batch ranking loss of the LRE (§5.4), H [B, D] on the ball, labels [B, 18] -> scalar.

    For each i, the candidates are the B−1 other samples (original order). The target is the candidate
    with the smallest label Hamming distance, lowest index on ties (as the official code), and the loss
    is CrossEntropy(−D̂[i], target) with temperature 1. With `multi_positive`, every minimiser is a
    positive: −log Σ_{j ∈ argmin} softmax(−D̂[i])_j (the tie-aware ablation).
    """
    if H.dim() != 2 or labels.shape[:1] != H.shape[:1]:
        raise ValueError(
            f"need H [B, D] and labels [B, {NUM_DISEASES}], got {tuple(H.shape)} and {tuple(labels.shape)}"
        )
    B = H.shape[0]
    if B < 2:
        raise ValueError("rank_loss needs a batch of at least 2 samples")
    off = ~torch.eye(B, dtype=torch.bool, device=H.device)
    ham = label_hamming(labels)[off].view(B, B - 1)  # validates labels

    # The diagonal (a point's distance to itself) is dropped before any sqrt/artanh; ‖x − y‖² is summed
    # directly (a small [B, B−1, D] tensor) so duplicate rows give exactly 0, not cancellation noise.
    with torch.autocast(device_type=H.device.type, enabled=False):
        h = H.float()
        sq = (h * h).sum(-1)
        xy = (h @ h.T)[off].view(B, B - 1)
        yy = sq[None].expand(B, B)[off].view(B, B - 1)
        diff2 = (h[:, None, :] - h[None, :, :]).pow(2).sum(-1)[off].view(B, B - 1)
        logits = -_dist_from_scalars(sq[:, None], yy, xy, c, diff2)  # [B, B−1]

    if multi_positive:
        positives = ham == ham.min(dim=1, keepdim=True).values
        return (logits.logsumexp(1) - logits.masked_fill(~positives, float("-inf")).logsumexp(1)).mean()
    return F.cross_entropy(logits, ham.argmin(dim=1))  # argmin returns the first minimiser


# --------------------------------------------------------------------------------------------
# Retrieval database (§5.5)


class ReferenceDatabase:
    """LRE embeddings of the reference (training) studies plus their ids, searched in chunks.

    `embeddings` [Ndb, D] may be stored in any float dtype (fp16 halves a MIMIC-size DB to 277 MB);
    distances are computed in float32 one chunk at a time, keeping a running top-k, so memory stays
    O(chunk_size·D + B·chunk_size) whatever Ndb is.
    """

    def __init__(self, embeddings: torch.Tensor, ids: list[str], c: float = 0.01):
        if embeddings.dim() != 2 or not embeddings.dtype.is_floating_point:
            raise ValueError(
                f"embeddings must be a float [Ndb, D] tensor, got {embeddings.dtype} {tuple(embeddings.shape)}"
            )
        if len(ids) != embeddings.shape[0]:
            raise ValueError(f"{len(ids)} ids for {embeddings.shape[0]} embeddings")
        self.embeddings, self.ids, self.c = embeddings, list(ids), float(c)
        # ‖y‖² [Ndb] once per database rather than once per search; chunked, so an fp16 DB is never
        # copied to float32 as a whole
        parts = [e.float().pow(2).sum(-1) for e in embeddings.split(65536)]
        self.sq_norms = torch.cat(parts + [embeddings.new_zeros(0, dtype=torch.float32)])
        self._int8: list[nn.Module] | None = None  # build_int8_index: the scan's products from int8 rows

    INT8_CHUNK = 65536
    INT8_SHORTLIST = 64  # extra candidates the int8 scan hands to the exact float32 re-scoring

    def build_int8_index(self) -> ReferenceDatabase:
        """Scan with an int8 copy of the rows (per-row scales, fbgemm's int8 GEMM; CPU): one query reads a quarter
        of the bytes, and at MIMIC-CXR's 270,790 rows the bank's products take 5 ms instead of 49. The scan only
        chooses the shortlist (k + 64 rows), which is re-scored exactly in float32 as always, so a result differs
        from the exact search only if a true neighbour falls outside that shortlist (`revtaf bench --retrieval`
        counts how often: 0 of 64 queries). Costs another quarter of the bank's memory. Returns self."""
        from torch.ao.quantization import per_channel_dynamic_qconfig, quantize_dynamic

        if self.embeddings.device.type != "cpu":
            raise RuntimeError("the int8 index is for CPU search; this bank is on " + str(self.embeddings.device))
        chunks = []
        for rows in self.embeddings.split(self.INT8_CHUNK):
            linear = nn.Linear(rows.shape[1], rows.shape[0], bias=False)
            linear.weight.data = rows.float().contiguous()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # torch.ao.quantization's deprecation notice (see decoder.py)
                chunks.append(quantize_dynamic(nn.Sequential(linear), {nn.Linear: per_channel_dynamic_qconfig},
                                               dtype=torch.qint8).eval())
        self._int8 = chunks
        return self

    def __len__(self) -> int:
        return self.embeddings.shape[0]

    @classmethod
    @torch.no_grad()
    def build(
        cls,
        lre: LearnableRetrievalEnhancer,
        scores: torch.Tensor,
        ids: list[str],
        batch_size: int = 4096,
        dtype: torch.dtype = torch.float32,
    ) -> ReferenceDatabase:
        """Embed scores [Ndb, 75] with `lre` in batches; stores the result in `dtype`."""
        device = next(lre.parameters()).device
        parts = [lre(scores[i : i + batch_size].to(device)).to(dtype) for i in range(0, scores.shape[0], batch_size)]
        embeddings = torch.cat(parts) if parts else scores.new_zeros(0, lre.hidden_dim, dtype=dtype)
        return cls(embeddings, ids, c=lre.c)

    @torch.no_grad()
    def search(
        self,
        queries: torch.Tensor,
        k: int = 5,
        chunk_size: int = 65536,
        exclude: list[set[int]] | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Nearest DB rows of each query, queries [B, D] -> (distances [B, k], indices [B, k]), ascending.

        `exclude[b]` holds DB indices query b may not return (e.g. itself or its own study). If fewer
        than k rows remain, the unfilled slots have distance inf.

        The chunk scan uses the matmul form of ‖x − y‖², whose float32 cancellation blurs distances
        below ~1e-2; it keeps k + 16 candidates, which are then re-scored with ‖x − y‖² summed
        directly and re-sorted, so the returned order and distances are exact to float32.
        """
        if queries.dim() != 2 or queries.shape[1] != self.embeddings.shape[1]:
            raise ValueError(f"queries must be [B, {self.embeddings.shape[1]}], got {tuple(queries.shape)}")
        if not 1 <= k <= len(self):
            raise ValueError(f"k must lie in 1..{len(self)}, got {k}")
        if chunk_size < 1:
            raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
        B = queries.shape[0]
        if exclude is not None and len(exclude) != B:
            raise ValueError(f"exclude needs one set per query ({B}), got {len(exclude)}")

        q = queries.float().to(self.embeddings.device)
        qq = (q * q).sum(-1, keepdim=True)
        excluded = [torch.tensor(sorted(s), dtype=torch.long) for s in exclude] if exclude is not None else None
        if self._int8 is not None:
            chunk_size = self.INT8_CHUNK
        shortlist = min(k + (16 if self._int8 is None else self.INT8_SHORTLIST), len(self))
        best_d = q.new_empty(B, 0)
        best_i = torch.empty(B, 0, dtype=torch.long, device=q.device)
        for start in range(0, len(self), chunk_size):
            yy = self.sq_norms[None, start : start + chunk_size]
            xy = (q @ self.embeddings[start : start + chunk_size].float().T if self._int8 is None
                  else self._int8[start // chunk_size](q))
            d = _dist_from_scalars(qq, yy, xy, self.c)  # [B, chunk]
            if excluded is not None:
                for b, ex in enumerate(excluded):
                    local = ex[(ex >= start) & (ex < start + d.shape[1])] - start
                    d[b, local] = float("inf")
            d, i = d.topk(min(shortlist, d.shape[1]), dim=1, largest=False)
            best_d, best_i = torch.cat([best_d, d], 1), torch.cat([best_i, i + start], 1)
            best_d, order = best_d.topk(min(shortlist, best_d.shape[1]), dim=1, largest=False)
            best_i = best_i.gather(1, order)

        cand = self.embeddings[best_i].float()  # [B, shortlist, D]
        exact = _dist_from_scalars(
            qq, (cand * cand).sum(-1), (cand @ q[:, :, None]).squeeze(-1), self.c, (cand - q[:, None, :]).pow(2).sum(-1)
        ).masked_fill(best_d.isinf(), float("inf"))  # excluded rows stay excluded
        d, order = exact.topk(k, dim=1, largest=False)
        return d, best_i.gather(1, order)

    def save(self, path: str | Path) -> None:
        """Write embeddings, ids and c to one safetensors file."""
        metadata = {"ids": json.dumps(self.ids), "c": repr(self.c)}
        save_file({"embeddings": self.embeddings.contiguous()}, str(path), metadata=metadata)

    @classmethod
    def load(cls, path: str | Path) -> ReferenceDatabase:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata()
            return cls(f.get_tensor("embeddings"), json.loads(meta["ids"]), c=float(meta["c"]))
