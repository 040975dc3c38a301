"""The report decoder: a BERT LM head with cross-attention to the fused visual memory Fc (docs/method.md §7).

The paper's decoder is BLIP's BERT copy with cross-attention keys/values Linear(encoder_width=2048 → 768) on
Fc. HF's `BertLMHeadModel` instead expects hidden-size encoder states, so a Linear(2d → hidden) projects Fc
first; with the cross-attention K/V Linear(hidden → hidden) behind it this is the same map factorised
through `hidden` dimensions.

The sequence is [DEC] + 18 disease-state tokens (the prompt, §4.3) + report wordpieces + [SEP]. The prompt
tokens are either the paper's four shared state tokens ([POS] for every disease: the decoder must read the
disease from the token's position) or, `prompt_tokens="disease"` (ours), one token per disease and state
("[cardiomegaly:POS]"), so the embedding itself says which finding the report must state. Self-attention
is causal over all of it; prompt and padding positions are not targets.

Two training signals make the decoder read its prompt (ours, docs/method.md §13.5; both off in the paper
preset). Trained on the LM loss alone, the decoder wrote the normal template even for training studies
whose prompt said "cardiomegaly: positive" (0 of 24): the few finding words are a small share of the
loss and the template explains the rest. (1) `finding_weight`: the wordpieces of the sentences that state
a finding weigh more in the LM loss. (2) `prompt_contrast`: the same report under a prompt that calls the
study normal must be less likely, by a margin, on those finding tokens (a hinge on the NLL difference), ramped
in over the first training steps so that it does not compete with the LM while the decoder learns language.
"""

from __future__ import annotations

import warnings
from bisect import bisect_left
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from transformers import (
    BertConfig,
    BertLMHeadModel,
    DynamicCache,
    EncoderDecoderCache,
    GenerationConfig,
    PreTrainedTokenizerFast,
)

from revtaf.labels.constants import CHEXPERT_14, NEGATIVE, POSITIVE, STATE_TOKENS, UNCERTAIN
from revtaf.labels.topics import Topic
from revtaf.model.config import DecoderConfig
from revtaf.model.disease_prompts import NUM_DISEASES
from revtaf.model.tokenizer import disease_state_tokens

PROMPT_LENGTH = 1 + NUM_DISEASES  # [DEC] + 18 state tokens
IGNORE_INDEX = -100
# Settings that turn a BERT encoder checkpoint into our decoder.
_DECODER_OVERRIDES = ("is_decoder", "add_cross_attention", "pad_token_id", "bos_token_id", "eos_token_id",
                      "hidden_dropout_prob", "attention_probs_dropout_prob")


class BeamSearchCache(EncoderDecoderCache):
    """The two-part cache BERT's cross-attention needs in `generate`, minus one copy per step: beam search
    reorders the cache after every token, and HF's EncoderDecoderCache reorders the cross-attention keys/values
    too. Those are computed once per report from Fc and are the same for every beam of a study (a beam only ever
    takes over another beam of its own study), so reordering them copies identical rows: skipped. Exact
    (tests/test_decoder.py compares the sequences with HF's cache)."""

    def reorder_cache(self, beam_idx: torch.LongTensor) -> None:
        self.self_attention_cache.reorder_cache(beam_idx)


def state_token_ids(tokenizer: PreTrainedTokenizerFast) -> list[int]:
    """Ids of [BLA] [POS] [NEG] [UNC], indexed by label state."""
    ids = tokenizer.convert_tokens_to_ids(list(STATE_TOKENS))
    if tokenizer.unk_token_id in ids or tokenizer.bos_token != "[DEC]":
        raise ValueError("tokenizer lacks the REVTAF prompt tokens; build it with revtaf.model.tokenizer")
    return ids


def prompt_table(tokenizer: PreTrainedTokenizerFast, per_disease: bool = False) -> torch.Tensor:
    """Token ids [18,4] of each disease's prompt token in each state (the same 4 ids per row when shared)."""
    if not per_disease:
        return torch.tensor([state_token_ids(tokenizer)] * NUM_DISEASES)
    rows = [tokenizer.convert_tokens_to_ids(row) for row in disease_state_tokens()]
    if any(i in (None, tokenizer.unk_token_id) for row in rows for i in row):
        raise ValueError("tokenizer lacks the disease-state prompt tokens; build it with revtaf.model.tokenizer")
    return torch.tensor(rows)


def prompt_ids(tokenizer: PreTrainedTokenizerFast, states: torch.Tensor, per_disease: bool = False) -> torch.Tensor:
    """states [B,18] in 0..3 -> [DEC] + one prompt token per disease, [B,19] (long)."""
    if states.ndim != 2 or states.shape[1] != NUM_DISEASES:
        raise ValueError(f"expected states [B,{NUM_DISEASES}], got {tuple(states.shape)}")
    table = prompt_table(tokenizer, per_disease).to(states.device)
    dec = torch.full((states.shape[0], 1), tokenizer.bos_token_id, dtype=torch.long, device=states.device)
    tokens = table[torch.arange(NUM_DISEASES, device=states.device), states.long()]  # [B,18]
    return torch.cat([dec, tokens], dim=1)


def encode_reports(
    tokenizer: PreTrainedTokenizerFast, states: torch.Tensor, reports: Sequence[str], max_length: int,
    per_disease: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Teacher-forcing inputs: [DEC] + 18 state tokens + report + [SEP], right-padded with [PAD].

    states [B,18], reports B cleaned texts -> (input_ids [B,T], attention_mask [B,T]), T <= max_length.
    Long reports are truncated so that [SEP] stays last (it is a target: the model must learn to stop).
    """
    if len(reports) != states.shape[0]:
        raise ValueError(f"{len(reports)} reports for {states.shape[0]} label rows")
    budget = max_length - PROMPT_LENGTH - 1
    if budget < 1:
        raise ValueError(f"max_length={max_length} leaves no room for report tokens")
    body = tokenizer(list(reports), add_special_tokens=False)["input_ids"]
    prompts = prompt_ids(tokenizer, states, per_disease).tolist()
    rows = [p + b[:budget] + [tokenizer.sep_token_id] for p, b in zip(prompts, body)]
    width = max(len(r) for r in rows)
    input_ids = torch.full((len(rows), width), tokenizer.pad_token_id, dtype=torch.long)
    attention_mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, row in enumerate(rows):
        input_ids[i, : len(row)] = torch.tensor(row)
        attention_mask[i, : len(row)] = 1
    return input_ids, attention_mask


def encode_planned_reports(
    tokenizer: PreTrainedTokenizerFast, states: torch.Tensor, tagged: Sequence[Sequence[tuple[str, Topic]]],
    max_length: int, per_disease: bool = False,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, list[list[tuple[Topic, int, int]]]]:
    """Teacher-forcing inputs of a decoder trained to a sentence plan: the prompt, then each sentence behind its
    topic tokens ("[t:cardiomegaly:pos] the heart is enlarged ."), then [SEP]. Topic tokens are targets: the
    decoder learns which topic comes next as well as each sentence's words.

    states [B,18]; tagged B lists of (sentence, Topic) (`revtaf.labels.topics.tag_report`) -> (input_ids [B,T],
    attention_mask [B,T], finding_mask [B,T] (the topic and words of sentences that state a positive finding),
    spans: per report, (topic, start, end) of each sentence kept, topic tokens included). T <= max_length;
    sentences that do not fit whole are dropped.
    """
    if len(tagged) != states.shape[0]:
        raise ValueError(f"{len(tagged)} reports for {states.shape[0]} label rows")
    budget = max_length - PROMPT_LENGTH - 1
    sentences = [s for report in tagged for s, _ in report]
    words = iter(tokenizer(sentences, add_special_tokens=False)["input_ids"] if sentences else [])
    prompts = prompt_ids(tokenizer, states, per_disease).tolist()
    rows, spans = [], []
    for prompt, report in zip(prompts, tagged):
        row, kept = list(prompt), []
        for _, topic in report:
            piece = tokenizer.convert_tokens_to_ids(topic.tokens) + next(words)
            if len(row) - PROMPT_LENGTH + len(piece) <= budget:
                kept.append((topic, len(row), len(row) + len(piece)))
                row += piece
        rows.append(row + [tokenizer.sep_token_id])
        spans.append(kept)
    width = max(len(r) for r in rows)
    input_ids = torch.full((len(rows), width), tokenizer.pad_token_id, dtype=torch.long)
    attention_mask = torch.zeros((len(rows), width), dtype=torch.long)
    finding = torch.zeros((len(rows), width), dtype=torch.bool)
    for i, row in enumerate(rows):
        input_ids[i, : len(row)] = torch.tensor(row)
        attention_mask[i, : len(row)] = 1
        for topic, start, end in spans[i]:
            if topic.positives:
                finding[i, start:end] = True
    return input_ids, attention_mask, finding, spans


def one_finding_contrast(
    states: torch.Tensor, spans: Sequence[Sequence[tuple[Topic, int, int]]], shape: torch.Size, seed: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The per-disease prompt contrast's inputs: per study one finding its report states positive, chosen at
    random, flipped to negative in the prompt (everything else, No Finding included, as it is), and the tokens of
    the sentences stating it. states [B,18] -> (contrast states [B,18], focus [B,T] bool; all False for a study
    whose report states no finding)."""
    rng = np.random.default_rng(seed)
    out, focus = states.clone(), torch.zeros(shape, dtype=torch.bool)
    for b, report in enumerate(spans):
        positives = sorted({i for topic, _, _ in report for i in topic.positives})
        if not positives:
            continue
        label = positives[rng.integers(len(positives))]
        out[b, label] = NEGATIVE
        for topic, start, end in report:
            if label in topic.positives:
                focus[b, start:end] = True
    return out, focus


def finding_token_mask(
    tokenizer: PreTrainedTokenizerFast, reports: Sequence[str], finding: Sequence[Sequence[bool]], shape: torch.Size,
) -> torch.Tensor:
    """[B,T] bool, aligned with `encode_reports`: True on the wordpieces of sentence i of report b when
    finding[b][i] (sentences end at each "."; the period belongs to the sentence it ends)."""
    mask = torch.zeros(shape, dtype=torch.bool)
    budget = shape[1] - PROMPT_LENGTH - 1
    offsets = tokenizer(list(reports), add_special_tokens=False, return_offsets_mapping=True)["offset_mapping"]
    for b, (text, spans) in enumerate(zip(reports, offsets)):
        periods = [i for i, ch in enumerate(text) if ch == "."]
        for j, (start, _) in enumerate(spans[:budget]):
            sentence = bisect_left(periods, start)  # periods strictly before the token
            if sentence < len(finding[b]) and finding[b][sentence]:
                mask[b, PROMPT_LENGTH + j] = True
    return mask


def normal_states(states: torch.Tensor) -> torch.Tensor:
    """The prompt that calls a study normal: every positive or uncertain CheXpert finding negative, No Finding
    positive. states [B,18] -> [B,18]; the 4 labels beyond CheXpert's 14 are kept."""
    no_finding = CHEXPERT_14.index("No Finding")
    out = states.clone()
    findings = out[:, :no_finding]
    findings[(findings == POSITIVE) | (findings == UNCERTAIN)] = NEGATIVE
    out[:, no_finding] = POSITIVE
    return out


def lm_labels(input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """Targets [B,T]: the input ids, with the 19 prompt positions and padding set to -100."""
    labels = input_ids.masked_fill(attention_mask == 0, IGNORE_INDEX)
    labels[:, :PROMPT_LENGTH] = IGNORE_INDEX
    return labels


class ReportDecoder(nn.Module):
    """BertLMHeadModel (is_decoder, cross-attention in every layer) + Linear memory projection.

    memory = Fc [B,L,memory_dim]; token tensors [B,T]; logits [B,T,V] with V = len(tokenizer).
    """

    def __init__(self, cfg: DecoderConfig, tokenizer: PreTrainedTokenizerFast, memory_dim: int,
                 tir_memory_length: int | None = None):
        """`tir_memory_length`: give the cross-attention UAR's TIR mask over that many memory positions
        (uar.py); None = the plain decoder."""
        super().__init__()
        self.cfg, self.tokenizer = cfg, tokenizer
        self.per_disease = cfg.prompt_tokens == "disease"
        # Prompt tokens are inputs only: never generated into a report.
        self._prompt_token_ids = sorted(set(prompt_table(tokenizer, self.per_disease).flatten().tolist()))
        if cfg.sentence_plan:
            self._init_topics(tokenizer)
        bert_config = cfg.bert_config(len(tokenizer), tokenizer)
        if cfg.init_dir is None:
            self.lm = BertLMHeadModel(bert_config)
        else:
            self.lm = self._from_bert_dir(Path(cfg.init_dir), bert_config)
        self.memory_proj = nn.Linear(memory_dim, cfg.hidden_size)
        if tir_memory_length is not None:
            from revtaf.model.uar import add_text_to_image_refiner

            add_text_to_image_refiner(self.lm, tir_memory_length)

    def _init_topics(self, tokenizer: PreTrainedTokenizerFast) -> None:
        """Ids the sentence-plan loop needs: each topic token's, the sentence end ".", and `not_words` [V] bool,
        every token a sentence may not contain (prompt, topic and special tokens)."""
        from revtaf.labels.topics import CLAUSE_WORDS, HEDGE_WORDS, STATEMENT_PHRASES, TOPIC_TOKENS, mention_words

        ids = tokenizer.convert_tokens_to_ids(list(TOPIC_TOKENS))
        end = tokenizer.convert_tokens_to_ids(".")
        if tokenizer.unk_token_id in ids or end == tokenizer.unk_token_id:
            raise ValueError("decoder.sentence_plan needs the topic tokens and '.' in the tokenizer "
                             "(revtaf.model.tokenizer.add_topic_tokens)")
        self.topic_token_ids = dict(zip(TOPIC_TOKENS, ids))
        self.sentence_end_id = end
        not_words = torch.zeros(len(tokenizer), dtype=torch.bool)
        not_words[self._prompt_token_ids + ids + tokenizer.all_special_ids] = True
        self.register_buffer("not_words", not_words, persistent=False)
        # The plan's last try at a required finding: its statement phrases as token lists (a phrase with a word the
        # vocabulary lacks, e.g. the random model's, left out), and the cue words banned from that sentence (those
        # the vocabulary holds whole; the labeler's check catches any other).
        phrase_ids = {label: [tokenizer(p, add_special_tokens=False)["input_ids"] for p in phrases]
                      for label, phrases in STATEMENT_PHRASES.items()}
        self.statement_ids = {label: [p for p in ids if tokenizer.unk_token_id not in p]
                              for label, ids in phrase_ids.items()}
        cues = [i for i in tokenizer.convert_tokens_to_ids(list(HEDGE_WORDS + CLAUSE_WORDS))
                if i != tokenizer.unk_token_id]
        self.mention_word_ids = {label: [i for i in tokenizer.convert_tokens_to_ids(list(mention_words(label)))
                                         if i != tokenizer.unk_token_id] for label in STATEMENT_PHRASES}
        hedged = not_words.clone()
        hedged[cues] = True
        self.register_buffer("not_words_or_hedges", hedged, persistent=False)

    @staticmethod
    def _from_bert_dir(path: Path, target: BertConfig) -> BertLMHeadModel:
        """BERT weights from a local directory; cross-attention blocks and new token rows are freshly initialised."""
        if not (path / "config.json").is_file():
            raise FileNotFoundError(f"{path} is not a BERT checkpoint directory (no config.json)")
        overrides = {k: getattr(target, k) for k in _DECODER_OVERRIDES}
        lm = BertLMHeadModel.from_pretrained(str(path), local_files_only=True, **overrides)
        fields = ("hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size",
                  "max_position_embeddings", "type_vocab_size")
        mismatch = {f: (getattr(lm.config, f), getattr(target, f)) for f in fields
                    if getattr(lm.config, f) != getattr(target, f)}
        if mismatch:
            raise ValueError(f"{path} does not match the decoder config (checkpoint, config): {mismatch}")
        lm.resize_token_embeddings(target.vocab_size)
        return lm

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, memory: torch.Tensor,
                pseudo_words: torch.Tensor | None = None) -> torch.Tensor:
        """logits [B,T,V]. `pseudo_words` [B,P,hidden] (TISR, tisr.py) are read as P more words after the prompt;
        their own positions are dropped from the logits, so position t still predicts input_ids[t + 1]."""
        if pseudo_words is None:
            return self.lm(input_ids=input_ids, attention_mask=attention_mask,
                           encoder_hidden_states=self.memory_proj(memory), use_cache=False).logits
        inputs = self._with_pseudo_words(input_ids, attention_mask, pseudo_words)
        logits = self.lm(**inputs, encoder_hidden_states=self.memory_proj(memory), use_cache=False).logits
        # the last pseudo word predicts the first report token: keep it in the place of the last prompt token
        P = pseudo_words.shape[1]
        return torch.cat([logits[:, : PROMPT_LENGTH - 1], logits[:, PROMPT_LENGTH - 1 + P:]], 1)

    def _with_pseudo_words(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                           pseudo_words: torch.Tensor) -> dict[str, torch.Tensor]:
        """{"inputs_embeds", "attention_mask"}: the word embeddings of input_ids [B,T] with pseudo_words [B,P,H]
        inserted after the prompt -> [B,T+P,H] and its mask [B,T+P]."""
        words = self.lm.get_input_embeddings()(input_ids)
        embeds = torch.cat([words[:, :PROMPT_LENGTH], pseudo_words.to(words.dtype), words[:, PROMPT_LENGTH:]], 1)
        mask = torch.cat([attention_mask[:, :PROMPT_LENGTH], attention_mask.new_ones(pseudo_words.shape[:2]),
                          attention_mask[:, PROMPT_LENGTH:]], 1)
        return {"inputs_embeds": embeds, "attention_mask": mask}

    def loss(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, memory: torch.Tensor, labels: torch.Tensor,
        weights: torch.Tensor | None = None, pseudo_words: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Label-smoothed next-token CE: logits[:, :-1] vs labels[:, 1:], mean over non-ignored targets,
        weighted by `weights` [B,T] (the weight of each position as a target) when given."""
        logits = self(input_ids, attention_mask, memory, pseudo_words)
        ce = F.cross_entropy(
            logits[:, :-1].transpose(1, 2), labels[:, 1:], ignore_index=IGNORE_INDEX,
            label_smoothing=self.cfg.label_smoothing, reduction="none",
        )  # [B,T-1], 0 where ignored
        valid = (labels[:, 1:] != IGNORE_INDEX).to(ce.dtype)
        w = valid if weights is None else valid * weights[:, 1:].to(ce.dtype)
        return (ce * w).sum() / w.sum().clamp_min(1e-8)

    def prompt_contrast(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, memory: torch.Tensor, labels: torch.Tensor,
        contrast: torch.Tensor, focus: torch.Tensor, margin: float, pseudo_words: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Hinge on how much less likely the focus tokens become under the `contrast` prompt [B,18]: the study
        called normal (`normal_states`), or one finding flipped (`one_finding_contrast`).

        input_ids / attention_mask / labels [B,T] under the true states; focus [B,T] bool (the tokens that
        should depend on the flipped states). Per study with focus tokens: relu(margin − mean_focus (NLL_normal − NLL_true)), `margin` in nats
        per token, mean over those studies; 0 when the batch has none. A mean, not a sum, over the tokens: summed,
        the hinge's gradient outweighed the token-averaged LM loss tenfold and slowed language learning (probe
        NLL 6.69 against 4.97 after 60 steps).
        """
        rows = focus.any(1)
        if not rows.any():
            return memory.new_zeros(())
        ids, mask, lab, mem, foc = input_ids[rows], attention_mask[rows], labels[rows], memory[rows], focus[rows]
        pseudo = pseudo_words[rows] if pseudo_words is not None else None
        normal = ids.clone()
        normal[:, :PROMPT_LENGTH] = prompt_ids(self.tokenizer, contrast[rows], self.per_disease)

        def nll(x: torch.Tensor) -> torch.Tensor:
            logits = self(x, mask, mem, pseudo)
            return F.cross_entropy(logits[:, :-1].transpose(1, 2), lab[:, 1:], ignore_index=IGNORE_INDEX,
                                   reduction="none")

        weight = foc[:, 1:].to(mem.dtype)
        gap = ((nll(normal) - nll(ids)) * weight).sum(1) / weight.sum(1)
        return F.relu(margin - gap).mean()

    def quantize_int8(self) -> None:
        """Dynamic int8 quantisation of the BERT's Linear layers, in place, for CPU inference only.

        Generation on a CPU reads every decoder weight once per token (the paper preset: ~490 MB a step, 79 % of
        its time in the Linear layers, bound by memory bandwidth); int8 weights are a quarter of that. Approximate:
        the reports it changes are measured in docs/training.md. `torch.ao.quantization` is deprecated in favour of
        torchao, whose CPU int8 path needs torch.compile; it is still in torch 2.14 and runs on fbgemm kernels."""
        import torch.ao.quantization as tq

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the deprecation notice above, on every call
            quantized = tq.quantize_dynamic(self.lm.eval(), {nn.Linear}, dtype=torch.qint8)  # a copy
        # The fp32 LM stays, outside the module tree (a tuple: not registered, never in the state dict): the
        # sentence plan rewrites with it a report whose int8 decoding left a positive finding unstated.
        self._exact = (self.lm,)
        self.lm = quantized

    @property
    def exact_lm(self) -> BertLMHeadModel | None:
        """The fp32 LM of an int8 decoder (None when not quantised)."""
        return self._exact[0] if hasattr(self, "_exact") else None

    @torch.no_grad()
    def generate(
        self,
        prompt: torch.Tensor,
        memory: torch.Tensor,
        num_beams: int = 3,
        max_new_tokens: int = 110,
        min_length: int = 60,
        no_repeat_ngram_size: int = 0,
        pseudo_words: torch.Tensor | None = None,
    ) -> list[str]:
        """Beam search from the prompt: prompt [B,19], memory [B,L,memory_dim] -> B report strings.

        `min_length` counts the 19 prompt tokens (HF decoder-only semantics, as in the official code).
        Memory is passed un-expanded: current transformers repeats model kwargs per beam itself.
        The prompt is stripped by token count before decoding. With `pseudo_words` [B,P,hidden] (TISR) the
        search starts from the embeddings of prompt + pseudo words and returns only the new tokens.
        """
        if prompt.ndim != 2 or prompt.shape[1] != PROMPT_LENGTH or memory.shape[0] != prompt.shape[0]:
            raise ValueError(f"expected prompt [B,{PROMPT_LENGTH}] and memory [B,L,C], got "
                             f"{tuple(prompt.shape)}, {tuple(memory.shape)}")
        P = 0 if pseudo_words is None else pseudo_words.shape[1]
        max_new_tokens = min(max_new_tokens, self.cfg.max_positions - PROMPT_LENGTH - P)
        min_new_tokens = max(0, min(min_length, PROMPT_LENGTH + max_new_tokens) - PROMPT_LENGTH)
        config = GenerationConfig(
            num_beams=num_beams,
            do_sample=False,
            max_new_tokens=max_new_tokens,
            # min_length counts what generate() was given: the prompt ids, or nothing when it starts from embeddings
            min_length=PROMPT_LENGTH + min_new_tokens if pseudo_words is None else min_new_tokens,
            eos_token_id=self.tokenizer.sep_token_id,
            pad_token_id=self.tokenizer.pad_token_id,
            bos_token_id=self.tokenizer.bos_token_id,
            repetition_penalty=1.0,
            length_penalty=1.0,
            suppress_tokens=self._prompt_token_ids,
            no_repeat_ngram_size=no_repeat_ngram_size,
        )
        start = {"input_ids": prompt, "attention_mask": torch.ones_like(prompt)}
        if pseudo_words is not None:
            start = self._with_pseudo_words(prompt, start["attention_mask"], pseudo_words)
        sequences = self.lm.generate(
            **start,
            encoder_hidden_states=self.memory_proj(memory),
            # generate() would build a self-attention-only DynamicCache for a decoder-only model, which
            # BERT's cross-attention cannot use; give it the two-part cache BERT's own forward would create.
            cache=BeamSearchCache(DynamicCache(config=self.lm.config), DynamicCache(config=self.lm.config)),
            generation_config=config,
        )
        new_tokens = sequences[:, PROMPT_LENGTH:] if pseudo_words is None else sequences
        return self.tokenizer.batch_decode(new_tokens, skip_special_tokens=True)
