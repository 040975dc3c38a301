"""CheXbert backend of the labeler, for users who have Stanford's `chexbert.pth` (docs/method.md §9.2).

Architecture as the checkpoint expects it: BERT-base (uncased) -> [CLS] vector -> dropout -> 13 linear heads with
4 classes and one "No Finding" head with 2 classes. CheXbert's raw class indices are 0 blank, 1 positive,
2 negative, 3 uncertain (its CSV writer only renames them to NaN/1/0/-1 afterwards); "No Finding" is 0 blank,
1 positive. That is exactly our state convention, so the argmax is returned unchanged.

Inputs are prepared as CheXbert does: whitespace collapsed, WordPiece-tokenised with the bert-base-uncased vocab,
cut at 512 tokens ([SEP] kept), an empty report becomes [CLS] [SEP]; batches are padded to their longest report.
Nothing is downloaded: the checkpoint and the tokenizer folder are local paths.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np
import torch
from torch import nn
from transformers import BertConfig, BertModel, BertTokenizer

from revtaf.labels.constants import CHEXPERT_14

MAX_TOKENS = 512


def bert_base_uncased_config() -> BertConfig:
    """The published bert-base-uncased configuration, so the model can be built without its config.json."""
    return BertConfig(
        vocab_size=30522, hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072,
        hidden_act="gelu", hidden_dropout_prob=0.1, attention_probs_dropout_prob=0.1, max_position_embeddings=512,
        type_vocab_size=2, initializer_range=0.02, layer_norm_eps=1e-12, pad_token_id=0,
    )


class CheXbert(nn.Module):
    """BERT + 14 classification heads on [CLS]; parameter names match `chexbert.pth` (`bert.*`, `linear_heads.*`)."""

    def __init__(self, config: BertConfig, dropout: float = 0.1):
        super().__init__()
        self.bert = BertModel(config)
        self.dropout = nn.Dropout(dropout)
        n_four_way = len(CHEXPERT_14) - 1
        self.linear_heads = nn.ModuleList(
            [nn.Linear(config.hidden_size, 4) for _ in range(n_four_way)] + [nn.Linear(config.hidden_size, 2)]
        )

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> list[torch.Tensor]:
        """input_ids, attention_mask [B, T] -> 14 logit tensors, [B, 4] x 13 then [B, 2] ("No Finding")."""
        cls = self.dropout(self.bert(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state[:, 0])
        return [head(cls) for head in self.linear_heads]


def load_chexbert_state(checkpoint_path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """`model_state_dict` of a CheXbert checkpoint with the DataParallel `module.` prefix stripped."""
    path = Path(checkpoint_path)
    if not path.is_file():
        raise FileNotFoundError(f"CheXbert checkpoint not found: {path}")
    checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(checkpoint, dict) or "model_state_dict" not in checkpoint:
        raise ValueError(f"{path} is not a CheXbert checkpoint: expected a dict with 'model_state_dict'")
    state = {k.removeprefix("module."): v for k, v in checkpoint["model_state_dict"].items()}
    # Buffers that some transformers versions saved and current ones rebuild (not weights).
    return {k: v for k, v in state.items() if not k.endswith(("embeddings.position_ids", "embeddings.token_type_ids"))}


def _prepare(report: str) -> str:
    if not isinstance(report, str):
        raise TypeError(f"report must be a str, got {type(report).__name__}")
    return re.sub(r"\s+", " ", report.replace("\n", " ")).strip()


class CheXbertLabeler:
    """Reports -> int8 [n, 14] CheXpert states with the CheXbert model (0 blank, 1 pos, 2 neg, 3 uncertain)."""

    names = CHEXPERT_14

    def __init__(self, checkpoint_path: str | os.PathLike, bert_dir: str | os.PathLike | None = None,
                 device: str | torch.device = "cpu", batch_size: int = 18):
        if bert_dir is None:
            raise ValueError(
                "bert_dir is required: a local folder with the bert-base-uncased tokenizer (vocab.txt), "
                "optionally its config.json; nothing is downloaded"
            )
        bert_dir = Path(bert_dir)
        if not (bert_dir / "vocab.txt").is_file():
            raise FileNotFoundError(f"{bert_dir} has no vocab.txt (the bert-base-uncased WordPiece vocab)")
        has_config = (bert_dir / "config.json").is_file()
        config = BertConfig.from_pretrained(bert_dir) if has_config else bert_base_uncased_config()
        self.tokenizer = BertTokenizer.from_pretrained(bert_dir, do_lower_case=True)
        self.device = torch.device(device)
        self.batch_size = batch_size
        self.model = CheXbert(config)
        state = load_chexbert_state(checkpoint_path)
        missing, unexpected = self.model.load_state_dict(state, strict=False)
        if missing or unexpected:
            raise ValueError(
                f"{checkpoint_path} does not fit the CheXbert layout for this BertConfig: "
                f"missing {missing[:5]}{'...' if len(missing) > 5 else ''}, "
                f"unexpected {unexpected[:5]}{'...' if len(unexpected) > 5 else ''}"
            )
        self.model.to(self.device).eval()

    @torch.no_grad()
    def __call__(self, reports: list[str]) -> np.ndarray:
        """list of n reports -> int8 [n, 14] in CHEXPERT_14 order."""
        if isinstance(reports, str):
            raise TypeError("expected a list of reports, got a single str; wrap it in a list")
        out = np.zeros((len(reports), len(CHEXPERT_14)), dtype=np.int8)
        for lo in range(0, len(reports), self.batch_size):
            batch = [_prepare(r) for r in reports[lo : lo + self.batch_size]]
            enc = self.tokenizer(batch, padding="longest", truncation=True, max_length=MAX_TOKENS, return_tensors="pt")
            logits = self.model(enc["input_ids"].to(self.device), enc["attention_mask"].to(self.device))
            out[lo : lo + len(batch)] = torch.stack([l.argmax(dim=1) for l in logits], dim=1).cpu().numpy()
        return out
