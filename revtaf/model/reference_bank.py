"""The reference bank (§5): the training studies REVTAF retrieves from, kept in the model as buffers (ids, entity
scores, labels, report embeddings, GRP sentence embeddings deduplicated into a [S,d] table and a [Ndb,N] index),
so a saved model retrieves without the dataset. Report texts are never stored.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from revtaf.labels import LABEL_NAMES_18
from revtaf.labels.constants import ENTITIES_75
from revtaf.model.lre import ReferenceDatabase
from revtaf.model.reference_prompts import gather_grp

# The bank's buffers, whose sizes a saved model's file decides.
BANK_BUFFERS = ("bank_scores", "bank_labels", "bank_group", "bank_report_emb", "bank_sentence_table",
                 "bank_sentence_index")


class ReferenceBank:
    """The bank's part of REVTAF (a mixin of the nn.Module: it registers buffers and reads `cfg`, `lre`)."""

    def _init_empty_bank(self) -> None:
        d, n = self.cfg.text.dim, self.cfg.max_sentences or 1
        self.bank_ids: list[str] = []
        self.bank_groups: list[str] = []
        self.register_buffer("bank_scores", torch.zeros(0, len(ENTITIES_75)))
        self.register_buffer("bank_labels", torch.zeros(0, len(LABEL_NAMES_18), dtype=torch.int8))
        self.register_buffer("bank_group", torch.zeros(0, dtype=torch.long))  # group (study) index per row
        self.register_buffer("bank_report_emb", torch.zeros(0, d))
        self.register_buffer("bank_sentence_table", torch.zeros(0, d))  # distinct sentence embeddings [S,d]
        self.register_buffer("bank_sentence_index", torch.zeros(0, n, dtype=torch.long))  # [Ndb,N], -1 = pad
        self._invalidate_bank()

    def set_bank(
        self,
        ids: Sequence[str],
        scores: torch.Tensor,
        sentence_emb: torch.Tensor,
        sentence_mask: torch.Tensor,
        report_emb: torch.Tensor,
        labels: torch.Tensor,
        groups: Sequence[str] | None = None,
    ) -> None:
        """Attach the reference (training) studies.

        ids (Ndb); scores [Ndb,75] entity scores; sentence_emb [Ndb,N,d] + sentence_mask [Ndb,N] the GRP
        sentences; report_emb [Ndb,d] the memory features; labels [Ndb,18]; groups (Ndb) the study of each
        row (rows of one study are never each other's memory at training time), default = ids.
        """
        n_db, d = len(ids), self.cfg.text.dim
        groups = list(ids) if groups is None else list(groups)
        shapes = {
            "scores": (scores, (n_db, len(ENTITIES_75))),
            "sentence_emb": (sentence_emb, (n_db, sentence_emb.shape[1] if sentence_emb.ndim == 3 else -1, d)),
            "sentence_mask": (sentence_mask, tuple(sentence_emb.shape[:2])),
            "report_emb": (report_emb, (n_db, d)),
            "labels": (labels, (n_db, len(LABEL_NAMES_18))),
        }
        for name, (tensor, shape) in shapes.items():
            if tuple(tensor.shape) != shape:
                raise ValueError(f"{name} must be {list(shape)}, got {list(tensor.shape)}")
        if len(groups) != n_db or len(set(ids)) != n_db:
            raise ValueError("ids must be unique and groups must have one entry per id")
        if n_db <= self.cfg.prompts.k_memory:
            raise ValueError(f"the bank needs more than k_memory={self.cfg.prompts.k_memory} studies, got {n_db}")
        mask = sentence_mask.bool()
        empty = (~mask.any(1)).nonzero().flatten().tolist()
        if empty:  # the GRP transport problem of such a row would have no column
            raise ValueError(f"bank rows without any sentence: {[ids[i] for i in empty[:5]]}")
        # Identical sentences ("no pneumothorax") have identical embeddings: store each once.
        table, inverse = torch.unique(sentence_emb[mask].float(), dim=0, return_inverse=True)
        index = torch.full(mask.shape, -1, dtype=torch.long)
        index[mask] = inverse
        group_ids = {g: i for i, g in enumerate(dict.fromkeys(groups))}
        device = self.triplet_table.device
        self.bank_ids, self.bank_groups = list(ids), groups
        self.bank_scores = scores.detach().float().to(device)
        if self.lre.standardize:
            self.lre.set_input_stats(self.bank_scores)
        self.bank_labels = labels.detach().to(torch.int8).to(device)
        self.bank_group = torch.tensor([group_ids[g] for g in groups], dtype=torch.long, device=device)
        self.bank_report_emb = report_emb.detach().float().to(device)
        self.bank_sentence_table = table.to(device)
        self.bank_sentence_index = index.to(device)
        self.cfg.max_sentences = int(mask.shape[1])
        self._invalidate_bank()

    def _invalidate_bank(self) -> None:
        self._db: ReferenceDatabase | None = None
        self._db_step = -1
        self._train_steps = 0
        self._rows_of_group: dict[int, set[int]] | None = None

    def refresh_bank(self) -> ReferenceDatabase:
        """Re-embed the bank's entity scores with the current LRE (call after the LRE changed)."""
        self._db = ReferenceDatabase.build(self.lre, self.bank_scores, self.bank_ids, batch_size=4096)
        self._db_step = self._train_steps
        return self._db

    def reference_db(self) -> ReferenceDatabase:
        """The bank's LRE embeddings: rebuilt every `bank_refresh_steps` training steps, and before inference
        whenever the LRE was trained since the last build."""
        if len(self.bank_ids) == 0:
            raise RuntimeError("REVTAF has no reference bank: call set_bank(...) first")
        stale = self._train_steps - self._db_step
        if self._db is None or (stale >= self.cfg.bank_refresh_steps if self.training else stale > 0):
            self.refresh_bank()
        return self._db

    def _exclusions(self, bank_index: torch.Tensor) -> list[set[int]]:
        """For each query row of the bank, every row of the same study."""
        if self._rows_of_group is None:
            rows: dict[int, set[int]] = {}
            for row, g in enumerate(self.bank_group.tolist()):
                rows.setdefault(g, set()).add(row)
            self._rows_of_group = rows
        return [self._rows_of_group[g] for g in self.bank_group[bank_index].tolist()]

    def bank_grp(self, index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """GRPs of bank rows: index [B] -> (sentence embeddings [B,N,d], mask [B,N] bool)."""
        return gather_grp(self.bank_sentence_table, self.bank_sentence_index, index)
