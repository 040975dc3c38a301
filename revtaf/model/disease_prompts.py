"""Classification branch and disease prompts, inherited from PromptMRG (docs/method.md §4).

The pooled image feature queries a small DETR-style transformer over K retrieved report embeddings; the
result, concatenated with the pooled feature, is classified into 4 states (blank / positive / negative /
uncertain) for each of the 18 diseases. The argmax states become the decoder's 18 prompt tokens.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from revtaf.labels.constants import BLANK, NEGATIVE, POSITIVE, STATE_TOKENS
from revtaf.model.config import PromptConfig

NUM_DISEASES = 18
NUM_STATES = 4
NUM_CHEXPERT = 14  # base probabilities are estimated for these; the 4 auxiliary classes keep prior 1


class DiseasePromptClassifier(nn.Module):
    """forward(pooled [B,C], memory [B,K,dm]) -> logits [B,4,18] (state-major, as PromptMRG's view(-1,4,18)).

    Memory transformer: post-norm, ReLU, no positional encodings, 2 encoder layers over the K memory
    tokens, 2 decoder layers with one query and a final LayerNorm. DETR feeds the query as a positional
    embedding added to a zero target in every layer; with a single query we feed it as the target itself,
    so it still reaches every layer through the residual stream, and stock nn.Transformer layers suffice.
    """

    def __init__(self, config: PromptConfig, visual_dim: int, memory_dim: int):
        """`config` sizes the memory transformer; `visual_dim` is the pooled image width, `memory_dim` the retrieved
        report embeddings' (the text encoder's)."""
        super().__init__()
        self.config = config
        c = config
        d_model, nhead, dim_feedforward, dropout = c.d_model, c.nhead, c.dim_feedforward, c.dropout
        num_encoder_layers, num_decoder_layers = c.num_encoder_layers, c.num_decoder_layers
        self.query_proj = nn.Linear(visual_dim, d_model)
        # PromptMRG's memory is already d_model wide (512); other text encoders need a projection.
        self.memory_proj = nn.Linear(memory_dim, d_model) if memory_dim != d_model else nn.Identity()
        layer_args = dict(d_model=d_model, nhead=nhead, dim_feedforward=dim_feedforward, dropout=dropout,
                          batch_first=True)
        self.encoder = nn.TransformerEncoder(
            nn.TransformerEncoderLayer(**layer_args), num_encoder_layers, enable_nested_tensor=False
        )
        self.decoder = nn.TransformerDecoder(
            nn.TransformerDecoderLayer(**layer_args), num_decoder_layers, norm=nn.LayerNorm(d_model)
        )
        for module in (self.query_proj, self.memory_proj, self.encoder, self.decoder):
            for p in module.parameters():
                if p.dim() > 1:
                    nn.init.xavier_uniform_(p)
        self.cls_head = nn.Linear(visual_dim + d_model, NUM_STATES * NUM_DISEASES)
        # Near-zero logits at start: the logit adjustment alone sets the initial class balance.
        nn.init.normal_(self.cls_head.weight, std=1e-3)
        nn.init.zeros_(self.cls_head.bias)

    def forward(self, pooled: torch.Tensor, memory: torch.Tensor) -> torch.Tensor:
        if pooled.ndim != 2 or memory.ndim != 3 or memory.shape[0] != pooled.shape[0]:
            raise ValueError(f"expected pooled [B,C] and memory [B,K,dm], got {tuple(pooled.shape)}, "
                             f"{tuple(memory.shape)}")
        query = self.query_proj(pooled).unsqueeze(1)  # [B,1,d]
        encoded = self.encoder(self.memory_proj(memory))  # [B,K,d]
        hs = self.decoder(query, encoded).squeeze(1)  # [B,d]
        return self.cls_head(torch.cat([pooled, hs], dim=-1)).view(-1, NUM_STATES, NUM_DISEASES)


def cls_loss(logits: torch.Tensor, labels: torch.Tensor, base_probs: torch.Tensor) -> torch.Tensor:
    """Logit-adjusted CE: log(base_probs) [18] added to the positive-state logits, mean over B·18.

    logits [B,4,18], labels [B,18] in {0,1,2,3}.
    """
    adjust = torch.zeros_like(logits)
    adjust[:, POSITIVE] = torch.log(base_probs.to(logits))
    return F.cross_entropy(logits + adjust, labels.long())


def predict_states(
    logits: torch.Tensor, thresholds: Sequence[float | None] | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Inference (no adjustment): logits [B,4,18] -> (probs [B,18,4], states [B,18]).

    Without `thresholds` the state is the argmax (the paper). With them (18 entries, None = argmax for that
    disease, `NEVER_POSITIVE` = never positive), a disease is positive when P(positive) >= its threshold and otherwise takes the most probable
    of the other states: decision thresholds chosen on val (`choose_thresholds`), since the argmax of a
    classifier trained on 2,069 mostly normal studies almost never says positive. A disease its threshold holds
    back is not called negative where P(positive) > P(negative): it is left blank (unstated), since "the heart
    size is normal" beside the classifier's own P(cardiomegaly) .53 vs P(normal) .28 contradicts its odds.
    """
    probs = logits.softmax(dim=1).transpose(1, 2)
    states = probs.argmax(dim=-1)
    if thresholds is None:
        return probs, states
    if len(thresholds) != NUM_DISEASES:
        raise ValueError(f"expected {NUM_DISEASES} thresholds, got {len(thresholds)}")
    not_positive = probs.clone()
    not_positive[..., POSITIVE] = -1.0
    other = not_positive.argmax(dim=-1)
    other[(other == NEGATIVE) & (probs[..., NEGATIVE] < probs[..., POSITIVE])] = BLANK
    for d, t in enumerate(thresholds):
        if t is not None:
            states[:, d] = torch.where(probs[:, d, POSITIVE] >= t, POSITIVE, other[:, d])
    return probs, states


NEVER_POSITIVE = 1.0  # a threshold no P(positive) reaches in practice: the disease is never called positive


def choose_thresholds(p_pos: np.ndarray, positive: np.ndarray, min_positives: int = 5,
                      max_rate: float = 2.0) -> list[float | None]:
    """Per-disease decision thresholds on P(positive), from a held-out split: the F1-optimal one among those that
    call the disease positive in at most `max_rate` times as many studies as the split's reports state it.

    p_pos [n,18], positive [n,18] bool (reference labels == positive). The cap is there because a report written
    to the sentence plan states every positive state: for a rare finding the classifier barely separates (v7's
    lung lesion: val AUROC .52, 6 positives), the F1 optimum is near "call everyone" (126 of 296 val studies),
    and each call is a sentence. Diseases with fewer than `min_positives` positives get no fitted threshold (two
    cases are noise), only the cap: the argmax-like 0.5, raised so that at most the cap's count pass, and
    `NEVER_POSITIVE` when the split has no positive at all (v7 called pneumonia by argmax in 48 of 296 val
    studies, none of whose reports states one).
    """
    p_pos, positive = np.asarray(p_pos, dtype=np.float64), np.asarray(positive, dtype=bool)
    if p_pos.shape != positive.shape or p_pos.shape[1] != NUM_DISEASES:
        raise ValueError(f"expected p_pos and positive [n,{NUM_DISEASES}], got {p_pos.shape}, {positive.shape}")
    chosen: list[float | None] = []
    for d in range(NUM_DISEASES):
        p, y = p_pos[:, d], positive[:, d]
        cap = int(max_rate * y.sum())
        if cap == 0:
            chosen.append(NEVER_POSITIVE)
            continue
        ranked = np.sort(p)[::-1]
        lowest = float(ranked[min(cap, len(p)) - 1])  # below it, more than `cap` studies would be called
        if y.sum() < min_positives:
            chosen.append(max(0.5, lowest))
            continue
        best, best_t = -1.0, None
        for t in np.unique(p[p >= lowest]):
            pred = p >= t
            f1 = 2 * (pred & y).sum() / max(pred.sum() + y.sum(), 1)
            if f1 > best:
                best, best_t = f1, float(t)
        chosen.append(best_t)
    return chosen


def initial_base_probs(labels: torch.Tensor, floor: float = 1e-4) -> torch.Tensor:
    """Positive rate of the 14 CheXpert classes normalised by their max, plus four 1s: labels [n,18] -> [18].

    `floor` keeps log(base_prob) finite for a class without any positive training example.
    """
    rate = (labels[:, :NUM_CHEXPERT] == POSITIVE).float().mean(dim=0)
    rate = (rate / rate.max().clamp_min(1e-12)).clamp_min(floor)
    return torch.cat([rate, torch.ones(NUM_DISEASES - NUM_CHEXPERT)])


def update_base_probs(
    p_pos: torch.Tensor, labels: torch.Tensor, prev: torch.Tensor, floor: float = 1e-4
) -> torch.Tensor:
    """PromptMRG's per-epoch update from validation outputs (docs/method.md §4.2).

    p_pos [n,14]: softmax P(positive) per CheXpert class; labels [n,14]; prev [18] -> new [18].
    For each class, the mean P(positive) over its positive samples, divided by the max over classes, then
    four 1s. NaN guard (ours): a class with no positive sample keeps its previous value instead of 0/0.
    """
    if p_pos.shape != labels.shape or p_pos.shape[-1] != NUM_CHEXPERT or prev.shape != (NUM_DISEASES,):
        raise ValueError(f"expected p_pos/labels [n,14] and prev [18], got {tuple(p_pos.shape)}, "
                         f"{tuple(labels.shape)}, {tuple(prev.shape)}")
    positive = (labels == POSITIVE).float()
    count = positive.sum(dim=0)
    has_pos = count > 0
    new = prev.clone().float()
    if has_pos.any():
        mean = (p_pos.float() * positive).sum(dim=0) / count.clamp_min(1)
        new[:NUM_CHEXPERT][has_pos] = (mean / mean[has_pos].max().clamp_min(1e-12))[has_pos]
    new[:NUM_CHEXPERT] = new[:NUM_CHEXPERT].clamp_min(floor)
    new[NUM_CHEXPERT:] = 1.0
    return new


def prompt_text(states: Sequence[int] | torch.Tensor) -> str:
    """18 states -> "[BLA] [POS] ...", the decoder prompt after [DEC] (docs/method.md §4.3)."""
    states = [int(s) for s in (states.tolist() if isinstance(states, torch.Tensor) else states)]
    if len(states) != NUM_DISEASES or not all(0 <= s < NUM_STATES for s in states):
        raise ValueError(f"expected {NUM_DISEASES} states in 0..3, got {states}")
    return " ".join(STATE_TOKENS[s] for s in states)
