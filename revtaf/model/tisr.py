"""TISR's textual inversion and self-supervised refinement, as a plug-in of REVTAF (`tisr.enabled`; docs/plugins.md).

TISR (Luo et al.) maps image features into the decoder's word-embedding space as "pseudo words", so the decoder
reads the image as if it were text, and pulls each image's pseudo words towards its own report with a
contrastive loss (the other studies of the batch are the negatives). Here `num_words` learned queries attend over
the visual patches; the pseudo words go into the decoder input after the 19 prompt tokens (decoder.py), and the
refinement loss compares their mean, projected to the text encoder's space, with the study's report embedding.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from revtaf.model.config import TISRConfig


class TextualInversion(nn.Module):
    """patches [B, L, visual_dim] -> pseudo words [B, num_words, hidden] (hidden = the decoder's word-embedding
    width), and the refinement loss against report embeddings [B, text_dim]."""

    def __init__(self, config: TISRConfig, visual_dim: int, hidden: int, text_dim: int):
        """`config`: the number of pseudo words and attention heads; `hidden` is the decoder's embedding width."""
        super().__init__()
        self.config = config
        num_words, heads = config.num_words, config.heads
        self.queries = nn.Parameter(torch.randn(num_words, hidden) * 0.02)
        self.attend = nn.MultiheadAttention(hidden, heads, kdim=visual_dim, vdim=visual_dim, batch_first=True)
        self.norm = nn.LayerNorm(hidden)
        self.to_text = nn.Linear(hidden, text_dim)
        self.log_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))  # CLIP's learned temperature, 0.07 at start

    def forward(self, patches: torch.Tensor) -> torch.Tensor:
        queries = self.queries.expand(patches.shape[0], -1, -1)
        words, _ = self.attend(queries, patches, patches, need_weights=False)
        return self.norm(words)

    def refinement_loss(self, pseudo_words: torch.Tensor, report_emb: torch.Tensor) -> torch.Tensor:
        """Symmetric InfoNCE between each study's mean pseudo word (projected to the text space) and its report
        embedding, the batch's other reports as negatives. A batch of one has no negative: 0."""
        if pseudo_words.shape[0] < 2:
            return pseudo_words.sum() * 0
        image = F.normalize(self.to_text(pseudo_words.mean(1)), dim=-1)
        logits = image @ F.normalize(report_emb.to(image.dtype), dim=-1).T * self.log_scale.exp().clamp(max=100)
        target = torch.arange(len(logits), device=logits.device)
        return (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target)) / 2
