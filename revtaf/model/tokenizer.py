"""The report tokenizer: BERT-style WordPiece plus the decoder's prompt tokens (docs/method.md §1.4).

The paper uses `bert-base-uncased` with `[DEC]` added as bos and four regular tokens `[BLA] [POS] [NEG] [UNC]`
for the disease-prompt states. Offline we train the same kind of WordPiece on the cleaned training reports
(`build_tokenizer`); a real `bert-base-uncased` directory is upgraded to the same layout by `load_tokenizer`.

Both decode without the BERT "clean-up" that glues " ." to the previous word, so generated text keeps the
"word . word" spacing of the cleaned references the metrics compare against.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

from tokenizers import AddedToken, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
from transformers import AutoTokenizer, PreTrainedTokenizerFast

from revtaf.labels.constants import STATE_TOKENS

SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")  # ids 0..4, [PAD] = 0 as in BERT
BOS_TOKEN = "[DEC]"


def _finish(tokenizer: PreTrainedTokenizerFast) -> PreTrainedTokenizerFast:
    """Add [DEC] (special, bos) and the 4 state tokens (regular, so `skip_special_tokens` keeps them)."""
    if tokenizer.convert_tokens_to_ids(BOS_TOKEN) in (None, tokenizer.unk_token_id):
        tokenizer.add_special_tokens({"bos_token": BOS_TOKEN})
    else:
        tokenizer.bos_token = BOS_TOKEN
    missing = [t for t in STATE_TOKENS if tokenizer.convert_tokens_to_ids(t) in (None, tokenizer.unk_token_id)]
    # normalized=False: the tokens are matched on the raw text, before lowercasing would turn them into "[bla]".
    tokenizer.add_tokens([AddedToken(t, normalized=False) for t in missing])
    tokenizer.backend_tokenizer.decoder = decoders.WordPiece(prefix="##", cleanup=False)
    tokenizer.clean_up_tokenization_spaces = False
    return tokenizer


def disease_state_tokens() -> list[list[str]]:
    """[18][4] prompt tokens that name their disease, e.g. "[cardiomegaly:POS]" (`DecoderConfig.prompt_tokens`
    = "disease"): the state and the disease in one embedding, instead of a shared [POS] whose disease the
    decoder must infer from its position."""
    from revtaf.labels import LABEL_NAMES_18

    return [[f"[{name.lower().replace(' ', '_')}:{token[1:-1]}]" for token in STATE_TOKENS] for name in LABEL_NAMES_18]


def add_topic_tokens(tokenizer: PreTrainedTokenizerFast) -> PreTrainedTokenizerFast:
    """Append the sentence-topic tokens ("[t:cardiomegaly:pos]", "[t:other]", revtaf.labels.topics) that are not
    there yet: regular tokens matched on the raw text, read and written by a decoder trained to a sentence plan."""
    from revtaf.labels.topics import TOPIC_TOKENS

    missing = [t for t in TOPIC_TOKENS if tokenizer.convert_tokens_to_ids(t) in (None, tokenizer.unk_token_id)]
    tokenizer.add_tokens([AddedToken(t, normalized=False) for t in missing])
    return tokenizer


def build_tokenizer(texts: Iterable[str], vocab_size: int = 3000, disease_tokens: bool = True,
                    topic_tokens: bool = False) -> PreTrainedTokenizerFast:
    """Train a lowercase WordPiece (BERT normaliser, whitespace pre-tokeniser) on `texts` (cleaned training
    reports) and add the REVTAF prompt tokens.

    Ids: [PAD]=0, [UNK]=1, [CLS]=2, [SEP]=3, [MASK]=4, [DEC]=5, then the learned vocabulary, then
    [BLA] [POS] [NEG] [UNC], then the 72 disease-state tokens (and the sentence-topic tokens with `topic_tokens`).
    Encoding wraps text as "[CLS] ... [SEP]".
    """
    if vocab_size < len(SPECIAL_TOKENS) + 1 + 100:
        raise ValueError(f"vocab_size={vocab_size} is too small for a WordPiece vocabulary")
    texts = [t for t in texts if t and t.strip()]
    if not texts:
        raise ValueError("build_tokenizer needs at least one non-empty text")
    backend = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    backend.normalizer = normalizers.BertNormalizer(lowercase=True)
    # Whitespace only (not BERT's punctuation split): cleaned reports keep hyphens ("one-third"), and a
    # punctuation split would decode them as "one - third"; cleaned text already spaces out its periods.
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    trainer = trainers.WordPieceTrainer(
        vocab_size=vocab_size, special_tokens=[*SPECIAL_TOKENS, BOS_TOKEN], show_progress=False
    )
    backend.train_from_iterator(texts, trainer)
    cls_id, sep_id = backend.token_to_id("[CLS]"), backend.token_to_id("[SEP]")
    backend.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", special_tokens=[("[CLS]", cls_id), ("[SEP]", sep_id)]
    )
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        pad_token="[PAD]",
        unk_token="[UNK]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        mask_token="[MASK]",
        bos_token=BOS_TOKEN,
        model_max_length=512,
    )
    tokenizer = _finish(tokenizer)
    if disease_tokens:
        add_disease_state_tokens(tokenizer)
    return add_topic_tokens(tokenizer) if topic_tokens else tokenizer


def add_disease_state_tokens(tokenizer: PreTrainedTokenizerFast) -> PreTrainedTokenizerFast:
    """Append the 72 disease-state prompt tokens (regular, matched on the raw text) that are not there yet."""
    missing = [t for row in disease_state_tokens() for t in row
               if tokenizer.convert_tokens_to_ids(t) in (None, tokenizer.unk_token_id)]
    tokenizer.add_tokens([AddedToken(t, normalized=False) for t in missing])
    return tokenizer


def load_tokenizer(path: str | os.PathLike) -> PreTrainedTokenizerFast:
    """Load a tokenizer saved by `save_pretrained` or a `bert-base-uncased` directory (local files only)."""
    path = Path(path)
    if not path.is_dir():
        raise FileNotFoundError(f"tokenizer directory not found: {path}")
    tokenizer = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
    if not isinstance(tokenizer, PreTrainedTokenizerFast):
        raise TypeError(f"{path} did not load as a fast tokenizer (got {type(tokenizer).__name__})")
    if tokenizer.pad_token_id is None or tokenizer.sep_token_id is None or tokenizer.cls_token_id is None:
        raise ValueError(f"{path}: a BERT-style tokenizer needs [PAD], [CLS] and [SEP] tokens")
    return _finish(tokenizer)
