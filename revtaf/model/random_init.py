"""A randomly initialised REVTAF of a preset, with a synthetic tokenizer and a random reference bank.

Random weights have the preset's exact shapes, so this is what latency benchmarks, robustness checks and
tests run when no trained model is wanted (or none exists yet). It never stands in for a trained model.
"""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from pathlib import Path

import torch

from revtaf.model.config import REVTAFConfig, with_plugins
from revtaf.model.revtaf import REVTAF
from revtaf.model.tokenizer import add_disease_state_tokens, add_topic_tokens, load_tokenizer

PRESETS = ("cpu", "paper")
BERT_VOCAB = 30522  # bert-base-uncased, the paper's tokenizer
CPU_VOCAB = 3000  # the offline WordPiece of the cpu preset


def synthetic_tokenizer(vocab_size: int, directory: str | Path):
    """A BERT-layout tokenizer with "." and placeholder wordpieces, `vocab_size` in all (+ [DEC] and the 4 state
    tokens)."""
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    words = ["."] + [f"w{i}" for i in range(vocab_size - len(specials) - 1)]  # "." ends a planned sentence
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "vocab.txt").write_text("\n".join(specials + words) + "\n")
    (directory / "tokenizer_config.json").write_text('{"tokenizer_class": "BertTokenizer", "do_lower_case": true}')
    return load_tokenizer(directory)


def random_model(preset: str, bank_size: int = 2069, max_sentences: int = 18, seed: int = 0,
                 plugins: Sequence[str] = ()) -> REVTAF:
    """A randomly initialised REVTAF of `preset` (with the `plugins` switched on) and a random bank of
    `bank_size` rows, in eval mode."""
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}: expected one of {PRESETS}")
    torch.manual_seed(seed)
    cfg = with_plugins(getattr(REVTAFConfig, preset)(), plugins)
    with tempfile.TemporaryDirectory() as tmp:
        tokenizer = synthetic_tokenizer(CPU_VOCAB if preset == "cpu" else BERT_VOCAB, tmp)
    if cfg.decoder.prompt_tokens == "disease":
        add_disease_state_tokens(tokenizer)
    if cfg.decoder.sentence_plan:
        add_topic_tokens(tokenizer)
    d = cfg.text.dim
    model = REVTAF(cfg, tokenizer, triplet_table=torch.randn(75, 51, 2, d))
    g = torch.Generator().manual_seed(seed)
    mask = torch.arange(max_sentences)[None] < torch.randint(1, max_sentences + 1, (bank_size, 1), generator=g)
    # A few hundred distinct sentences, as in real report corpora.
    sentences = torch.randn(400, d, generator=g)
    emb = sentences[torch.randint(0, 400, (bank_size, max_sentences), generator=g)] * mask[..., None]
    model.set_bank(
        ids=[f"study{i}" for i in range(bank_size)],
        scores=torch.rand(bank_size, 75, generator=g),
        sentence_emb=emb,
        sentence_mask=mask,
        report_emb=torch.randn(bank_size, d, generator=g),
        labels=torch.randint(0, 4, (bank_size, 18), generator=g),
    )
    return model.eval()
