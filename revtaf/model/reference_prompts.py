"""Reference prompts of the paper (docs/method.md §5.4, §6.1): how they are built, embedded and gathered.

- Local reference prompts (LRPs): one (entity, position, exists) triplet sentence per MedKLIP entity,
  "effusion left pleural present". Every possible triplet is embedded once into a table [75,51,2,d]; an
  image's 75 LRPs are then a gather by its predicted (position, exists) ids (`gather_lrp`).
- Global reference prompts (GRPs): the sentences of the retrieved training report, each embedded by the text
  encoder ([N,d], padded with a mask); their masked mean is the report feature of the classifier's memory.
  The bank stores each distinct sentence once ([S,d]) and an index per report ([Ndb,N], -1 = padding), so a
  retrieved report's GRPs are a gather too (`gather_grp`).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from revtaf.data.clean import split_sentences
from revtaf.labels import triplet_sentence
from revtaf.labels.constants import ANATOMIES_51, ENTITIES_75
from revtaf.model.text_encoder import TextEncoder


def build_triplet_table(encoder: TextEncoder, template: str | None = None, batch_size: int = 256) -> torch.Tensor:
    """Embeddings of every (entity, position, exists) triplet sentence: [75,51,2,dim], [..., 1] = present.

    7,650 short sentences; an image's 75 LRPs are then a gather by its (position, exist) ids (docs/method.md §6.1).
    template: a `triplet_sentence` template ("{entity} {position} {exist}" when None).
    """
    extra = {} if template is None else {"template": template}
    sentences = [
        triplet_sentence(m, p, bool(e), **extra)
        for m in range(len(ENTITIES_75))
        for p in range(len(ANATOMIES_51))
        for e in (0, 1)
    ]
    return encoder.encode(sentences, batch_size).view(len(ENTITIES_75), len(ANATOMIES_51), 2, encoder.dim)


def sentence_embeddings(
    encoder: TextEncoder, reports: Sequence[str], max_sentences: int, batch_size: int = 64
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-sentence embeddings of cleaned reports: (emb [n,N,dim] float, mask [n,N] bool), N = max_sentences.

    Sentences beyond N are dropped, missing slots are zero with mask False. Identical sentences
    ("no pneumothorax") recur across thousands of reports, so each distinct one is encoded once.
    """
    if max_sentences < 1:
        raise ValueError(f"max_sentences must be >= 1, got {max_sentences}")
    per_report = [split_sentences(r)[:max_sentences] for r in reports]
    unique = sorted({s for sents in per_report for s in sents})
    row = {s: i for i, s in enumerate(unique)}
    table = encoder.encode(unique, batch_size)
    emb = torch.zeros(len(reports), max_sentences, encoder.dim)
    mask = torch.zeros(len(reports), max_sentences, dtype=torch.bool)
    for i, sents in enumerate(per_report):
        if sents:
            emb[i, : len(sents)] = table[[row[s] for s in sents]]
            mask[i, : len(sents)] = True
    return emb, mask


def report_embeddings(emb: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Masked mean of sentence embeddings: emb [n,N,dim], mask [n,N] -> [n,dim] (zeros for a report with no sentence)."""
    if emb.shape[:2] != mask.shape:
        raise ValueError(f"mask {tuple(mask.shape)} does not match emb {tuple(emb.shape)}")
    weights = mask.to(emb.dtype).unsqueeze(-1)
    return (emb * weights).sum(1) / weights.sum(1).clamp(min=1.0)


def gather_lrp(table: torch.Tensor, position: torch.Tensor, exists: torch.Tensor) -> torch.Tensor:
    """LRPs of a batch: table [75,51,2,d], position [B,75] int, exists [B,75] bool -> [B,75,d]."""
    entity = torch.arange(len(ENTITIES_75), device=position.device)
    return table[entity[None], position.long(), exists.long()]


def gather_grp(sentence_table: torch.Tensor, sentence_index: torch.Tensor, rows: torch.Tensor
               ) -> tuple[torch.Tensor, torch.Tensor]:
    """GRPs of bank rows: sentence_table [S,d], sentence_index [Ndb,N] (-1 = padding), rows [B]
    -> (sentence embeddings [B,N,d] with zeros at padding, mask [B,N] bool)."""
    index = sentence_index[rows]
    mask = index >= 0
    return sentence_table[index.clamp_min(0)] * mask.unsqueeze(-1), mask
