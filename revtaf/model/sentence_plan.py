"""Writing a report to a plan of sentence topics (ours, not in REVTAF; docs/method.md §13.7).

A decoder trained with `DecoderConfig.sentence_plan` reads every training sentence behind its topic tokens
("[t:cardiomegaly:pos] the heart is enlarged ."). At inference this loop writes one sentence at a time:

1. **Topic.** The decoder proposes the next topic tokens; with the plan on, only those the study's states allow
   (`labels.topics.TopicPlan`: a positive finding's topic until it has its sentence, a negative topic only for a
   negative state, each label once, no all-clear topic beside a positive finding), and [SEP] only once every
   positive finding has had its sentence. The order is the decoder's, learned from the reports.
2. **Words.** Beam search inside the sentence, from the image (the fused memory Fc), until "."; no 3-gram twice
   in a sentence, no `no_repeat_ngram_size`-gram twice in the report.
3. **Check.** The best beam whose words state exactly its topic (the labeler on the sentence alone) is kept; a
   sentence that would state something else, repeat an earlier one or sit as an all-clear beside a positive
   finding is not. If no beam passes, a wider search is tried; a topic with no passing sentence is dropped. A
   required one (a positive finding) gets a last try whose beams must hold one of its statement phrases
   (`_write_required`); if that fails too it is listed in `PlannedReport.missed`, and the page names it as not
   stated. After 3 dropped in a row only required topics are tried.

With the plan off (`GenerationSettings.plan = False`) the decoder chooses topics freely and nothing is
checked: the ablation. Steps run on a static KV cache (decoding.py: the self-attention K/V grown in place, the
cross-attention K/V of Fc computed once); a sentence's beams copy the committed cache; a test holds the beam
search to `generate` where both apply.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np
import torch
from transformers import BertLMHeadModel

from revtaf.labels.topics import (PLAIN_TOPICS, TOKEN_ORDER, TOPIC_TOKENS, Topic, TopicPlan, sentence_topic,
                                  topic_from_tokens, topic_token)
from revtaf.labels.triplets import sentence_mentions
from revtaf.model.config import GenerationSettings
from revtaf.model.decoder import ReportDecoder
from revtaf.model.decoding import DecoderStep, StaticCache

WIDE_BEAMS = 8  # the second, wider search for a sentence no beam of the first wrote to its topic
SENTENCE_TOKENS = 40  # longest sentence searched
# Longest sentence of a required finding's constrained last try: the decoder that would not write the finding
# wanders when made to (v7: 40-token rambles ending in "mediastinal widening"); a short one, or none (the finding
# is then listed as missed), reads better. 95 % of the training reports' 2,084 positive-finding sentences are
# under 20 wordpieces.
CONSTRAINED_TOKENS = 20
MAX_DROPPED = 3  # optional topics dropped in a row before the plan tries only its required ones
# No 3-gram of wordpieces twice within a sentence: the small decoder loops ("in the right upper lobe with tip in
# the right upper lobe"), most in a required finding's constrained last try; the reports almost never do (7 of
# IU's 9,690 training sentences, e.g. "arthritic changes of the ... arthritic changes of the thoracic spine").
SENTENCE_NO_REPEAT = 3
PLAIN_TOKENS = frozenset(topic_token(t) for t in PLAIN_TOPICS)


@dataclass
class PlannedSentence:
    """One written sentence: its text ("the heart is enlarged ."), the topic it was written to and its mean
    log-probability per token."""

    text: str
    topic: Topic
    log_prob: float


@dataclass
class PlannedReport:
    """The sentences written, and `missed`: the required topics (positive findings) no beam wrote to."""

    sentences: list[PlannedSentence]
    missed: list[Topic] = field(default_factory=list)

    @property
    def text(self) -> str:
        return " ".join(s.text for s in self.sentences)


class _Writer:
    """One study's decoding state: the committed tokens' static cache and the next-token log-probabilities.

    `no_repeat`: no n-gram of this many wordpieces twice in the report (GenerationSettings.no_repeat_ngram_size,
    0 = off), over the committed tokens and the sentence; and no SENTENCE_NO_REPEAT-gram twice in a sentence."""

    def __init__(self, decoder: ReportDecoder, prompt: torch.Tensor, memory: torch.Tensor,
                 pseudo_words: torch.Tensor | None, no_repeat: int = 0, lm: BertLMHeadModel | None = None):
        self.decoder, self.lm = decoder, lm or decoder.lm
        self.no_repeat = no_repeat
        self.ids: list[int] = []  # the committed tokens after the prompt
        enc = decoder.memory_proj(memory)  # [1,L,H]
        self.step = DecoderStep(self.lm, enc)
        self.max_len = decoder.cfg.max_positions
        self.cache = StaticCache.empty(self.lm, 1, self.max_len, enc)
        if pseudo_words is None:
            self.logp = self._logp(self.cache, ids=prompt)[0]
        else:
            start = decoder._with_pseudo_words(prompt, torch.ones_like(prompt), pseudo_words)
            self.logp = self._logp(self.cache, embeds=start["inputs_embeds"])[0]

    @property
    def length(self) -> int:
        return self.cache.length

    def _logp(self, cache: StaticCache, **inputs) -> torch.Tensor:
        return self.step(cache, **inputs).float().log_softmax(-1)

    def commit(self, ids: list[int]) -> None:
        self.logp = self._logp(self.cache, ids=torch.tensor([ids], device=self.logp.device))[0]
        self.ids += ids

    def rollback(self, length: int, logp: torch.Tensor) -> None:
        del self.ids[len(self.ids) - (self.cache.length - length):]
        self.cache.length, self.logp = length, logp  # what lies beyond `length` is overwritten as it grows

    def _no_repeats(self, logp: torch.Tensor, seqs: list[list[int]]) -> torch.Tensor:
        """logp [k,V] of the rows continuing `seqs`, with -inf on each token that would repeat an n-gram."""
        for r, seq in enumerate(seqs):
            blocked = _repeating(self.ids + seq, self.no_repeat) + _repeating(seq, SENTENCE_NO_REPEAT)
            if blocked:
                logp[r, blocked] = -float("inf")
        return logp

    def beams(self, k: int, banned: torch.Tensor, end_id: int, max_tokens: int) -> list[tuple[list[int], float]]:
        """Beam search of one sentence from the committed state -> up to k finished (tokens ending in `end_id`, or
        cut at `max_tokens`; score = log-probability / length), best first. `banned` [V] bool are never written.

        The search is `generate`'s (length penalty 1, early_stopping False): each step keeps the top 2k
        continuations, those among the top k that end the sentence finish, the best k others run on; it stops
        when k have finished and the best running beam, at its current length, cannot beat the worst of them."""
        cache, seqs, scores, logp = self._start(k, banned)
        finished: list[tuple[list[int], float]] = []
        V = logp.shape[1]
        for n in range(1, max_tokens + 1):  # n tokens written after this step
            top, index = (scores[:, None] + logp).flatten().topk(min(2 * k, k * V))
            rows, cols = (index // V).tolist(), (index % V).tolist()
            last = n == max_tokens
            running = []
            for rank, (total, r, c) in enumerate(zip(top.tolist(), rows, cols)):
                if total == -float("inf"):
                    break
                if c == end_id or last:
                    if rank < k:
                        finished.append((seqs[r] + [c], total / n))
                elif len(running) < k:
                    running.append((r, c, total))
            finished = sorted(finished, key=lambda f: -f[1])[:k]
            if last or not running:
                break
            if len(finished) == k and running[0][2] / n <= finished[-1][1]:
                break
            running += [running[-1][:2] + (-1e9,)] * (k - len(running))  # keep k rows (a tiny vocabulary)
            if cache.length + 1 >= self.max_len:  # no position left for another token
                finished += [(seqs[r] + [c], t / n) for r, c, t in running[:k] if t > -1e9]
                break
            seqs, scores, logp = self._advance(cache, seqs, running, banned)
        return finished

    def _start(self, k: int, banned: torch.Tensor) -> tuple[StaticCache, list[list[int]], torch.Tensor, torch.Tensor]:
        """A sentence search's k rows: copies of the committed cache, empty sequences, scores with row 0 alone live
        (every row starts from the same state: the first step expands row 0 only) and the next-token
        log-probabilities [k,V] with `banned` and repeats at -inf."""
        scores = torch.full((k,), -1e9, device=self.logp.device)
        scores[0] = 0.0
        logp = self._no_repeats(self.logp.masked_fill(banned, -float("inf"))[None], [[]]).expand(k, -1)
        return self.cache.repeat(k), [[] for _ in range(k)], scores, logp

    def _advance(self, cache: StaticCache, seqs: list[list[int]], running: list[tuple[int, int, float]],
                 banned: torch.Tensor) -> tuple[list[list[int]], torch.Tensor, torch.Tensor]:
        """One step of a search: the k continuations kept, (row, token, score) each -> their sequences, scores and
        next-token log-probabilities [k,V] (one decoder step on the reordered cache)."""
        device = self.logp.device
        cache.select(torch.tensor([r for r, _, _ in running], device=device))
        seqs = [seqs[r] + [c] for r, c, _ in running]
        scores = torch.tensor([t for _, _, t in running], device=device)
        ids = torch.tensor([[c] for _, c, _ in running], device=device)
        return seqs, scores, self._no_repeats(self._logp(cache, ids=ids).masked_fill(banned, -float("inf")), seqs)

    def constrained_beams(self, k: int, banned: torch.Tensor, end_id: int, max_tokens: int,
                          phrases: list[list[int]]) -> list[tuple[list[int], float]]:
        """Beam search of one sentence that must hold one of `phrases` (token lists; a disjunctive constraint, as in
        the grid beam search of Hokamp & Liu 2017) -> up to k finished, each holding a phrase, best first.

        `end_id` is banned until a beam holds a phrase. Besides its top continuations, each beam that holds none
        is offered the next token of every phrase it could be writing (a phrase's first token, or the one after
        the phrase prefix its last tokens are). The k beams that run on are taken in turn from banks of progress
        (holding a phrase, then the longest prefix written, ..., none), best first in each, so a beam that has
        started a phrase is not crowded out by likelier ones that have not. The words around the phrase, and where
        it goes, are the decoder's."""
        done = len(max(phrases, key=len)) + 1

        def progress(seq: list[int]) -> int:  # `done` when seq holds a phrase, else the longest prefix it ends in
            best = 0
            for p in phrases:
                if any(seq[j:j + len(p)] == p for j in range(len(seq) - len(p) + 1)):
                    return done
                best = max([best] + [m for m in range(1, len(p)) if seq[-m:] == p[:m]])
            return best

        def nexts(seq: list[int]) -> set[int]:
            return {p[m] for p in phrases for m in range(len(p)) if m == 0 or seq[-m:] == p[:m]}

        cache, seqs, scores, logp = self._start(k, banned)
        finished: list[tuple[list[int], float]] = []
        V = logp.shape[1]
        for n in range(1, max_tokens + 1):
            holds = [progress(s) == done for s in seqs]
            total = scores[:, None] + logp
            total[[r for r in range(k) if not holds[r]], end_id] = -float("inf")
            top, index = total.flatten().topk(min(2 * k, k * V))
            candidates = dict.fromkeys(zip((index // V).tolist(), (index % V).tolist()))
            for r in range(k):
                if scores[r] > -1e8 and not holds[r]:
                    candidates.update(dict.fromkeys((r, c) for c in nexts(seqs[r])))
            values = total[[r for r, _ in candidates], [c for _, c in candidates]].tolist()
            banks: dict[int, list[tuple[float, int, int]]] = {}
            for (r, c), t in zip(candidates, values):
                if t == -float("inf") or t < -1e8:
                    continue
                if c == end_id:
                    finished.append((seqs[r] + [c], t / n))
                elif n == max_tokens:  # cut here: one that holds a phrase ends with the sentence's end
                    if progress(seqs[r] + [c]) == done:
                        finished.append((seqs[r] + [c, end_id], t / n))
                else:
                    banks.setdefault(progress(seqs[r] + [c]), []).append((t, r, c))
            finished = sorted(finished, key=lambda f: -f[1])[:k]
            queues = [sorted(banks[level], reverse=True) for level in sorted(banks, reverse=True)]
            running: list[tuple[int, int, float]] = []
            while len(running) < k and any(queues):
                for q in queues:
                    if q and len(running) < k:
                        t, r, c = q.pop(0)
                        running.append((r, c, t))
            if not running or cache.length + 1 >= self.max_len:
                break
            if len(finished) == k and max(t for _, _, t in running) / n <= finished[-1][1]:
                break
            running += [running[-1][:2] + (-1e9,)] * (k - len(running))
            seqs, scores, logp = self._advance(cache, seqs, running, banned)
        return finished


@torch.no_grad()
def write_planned(decoder: ReportDecoder, prompt: torch.Tensor, memory: torch.Tensor, states: np.ndarray,
                  settings: GenerationSettings, pseudo_words: torch.Tensor | None = None) -> PlannedReport:
    """One study's report, sentence by sentence (`_write`). An int8 decoder's report that left a positive finding
    unstated is written again by its fp32 LM (`ReportDecoder.exact_lm`), which is kept if it misses fewer (on v7's
    test split: 1 report of 590). A plan under which no sentence passes its check (a decoder that cannot write
    any allowed topic, e.g. untrained) gives the decoder's free report instead of an empty one, with the plan's
    missed topics kept."""
    report = _write(decoder, prompt, memory, states, settings, pseudo_words)
    if report.missed and settings.plan and decoder.exact_lm is not None:
        exact = _write(decoder, prompt, memory, states, settings, pseudo_words, lm=decoder.exact_lm)
        if len(exact.missed) < len(report.missed):
            report = exact
    if report.sentences or not settings.plan:
        return report
    free = _write(decoder, prompt, memory, states, replace(settings, plan=False), pseudo_words)
    return PlannedReport(free.sentences, report.missed)


def _write(decoder: ReportDecoder, prompt: torch.Tensor, memory: torch.Tensor, states: np.ndarray,
           settings: GenerationSettings, pseudo_words: torch.Tensor | None = None,
           lm: BertLMHeadModel | None = None) -> PlannedReport:
    """One study's report, sentence by sentence. prompt [1,19]; memory [1,L,C] (Fc); states [18] (the prompt's);
    `settings.plan` switches the plan's constraints and check on; `settings.num_beams` beams per sentence;
    `lm`: the LM that writes (default the decoder's own)."""
    tok = decoder.tokenizer
    topic_ids = decoder.topic_token_ids
    writer = _Writer(decoder, prompt, memory, pseudo_words, settings.no_repeat_ngram_size, lm)
    plan = TopicPlan(np.asarray(states)) if settings.plan else None
    end_id, sep_id = decoder.sentence_end_id, tok.sep_token_id
    budget = min(settings.max_new_tokens, decoder.cfg.max_positions - writer.length)
    start = writer.length
    sentences: list[PlannedSentence] = []
    written: set = set()  # what the sentences said (_said)
    missed: list[Topic] = []
    dropped = 0  # optional topics in a row that no beam wrote to: after MAX_DROPPED only required ones are tried
    while len(sentences) < settings.max_sentences:
        left = budget - (writer.length - start)
        if left < 3:
            break
        mark, mark_logp = writer.length, writer.logp
        chosen: list[str] = []
        while True:  # the topic: one or more topic tokens, then the first word
            if plan is None:
                after = max((TOKEN_ORDER[t] for t in chosen), default=-1)
                options = [t for t in TOPIC_TOKENS[after + 1:] if not chosen or t not in PLAIN_TOKENS]
            else:
                options = plan.allowed_tokens(chosen)
                short = (left < 12 * len(plan.missing) or dropped >= MAX_DROPPED
                         or len(sentences) + len(plan.missing) >= settings.max_sentences)
                if short and not chosen:
                    options = plan.required_tokens()
            ids = [topic_ids[t] for t in options]
            # never an empty report: [SEP] only after a first sentence
            can_end = not chosen and bool(sentences) and (plan is None or plan.can_end())
            if can_end:
                ids.append(sep_id)
            best = max(ids, key=lambda i: writer.logp[i]) if ids else None
            if chosen:
                words = writer.logp.masked_fill(decoder.not_words, -float("inf"))
                if best is None or words.max() > writer.logp[best]:
                    break
            if best is None or best == sep_id:
                return PlannedReport(sentences, missed)
            chosen.append(tok.convert_ids_to_tokens(best))
            writer.commit([best])
        topic = topic_from_tokens(chosen)
        sentence = _write_sentence(writer, decoder, topic, plan, written, settings.num_beams, end_id,
                                   min(SENTENCE_TOKENS, budget - (writer.length - start)))
        if sentence is None and plan is not None:  # no beam wrote to the topic
            writer.rollback(mark, mark_logp)
            for label in sorted(topic.positives & plan.missing):  # a required finding gets its last try
                sentence = _write_required(writer, decoder, label, plan, written, settings.num_beams, end_id,
                                           min(CONSTRAINED_TOKENS, budget - (writer.length - start) - 1))
                if sentence is None:
                    writer.rollback(mark, mark_logp)
                    missed.append(Topic(((label, True),)))
                else:
                    plan.commit(sentence.topic)
                    sentences.append(sentence)
                    written.add(_said(sentence.text))
                    mark, mark_logp = writer.length, writer.logp
            plan.commit(topic)  # dropped, and not proposed again
            dropped = 0 if sentence is not None else dropped + 1
            continue
        if sentence is None:
            break
        dropped = 0
        if plan is not None:
            plan.commit(topic)
        sentences.append(sentence)
        written.add(_said(sentence.text))
    if plan is not None:  # out of sentences or tokens: what was never tried is missed too
        missed += [Topic(((i, True),)) for i in sorted(plan.missing)]
    return PlannedReport(sentences, missed)


def _write_sentence(writer: _Writer, decoder: ReportDecoder, topic: Topic, plan: TopicPlan | None,
                    written: set, k: int, end_id: int, max_tokens: int) -> PlannedSentence | None:
    """The sentence after the committed topic tokens, committed too; None when no beam wrote to the topic (the
    caller drops the topic: a sentence that states something else, or repeats one, is never written)."""
    tok = decoder.tokenizer
    for width in [k] + ([WIDE_BEAMS] if plan is not None and WIDE_BEAMS > k else []):
        for ids, score in writer.beams(width, decoder.not_words, end_id, max_tokens):
            text = tok.decode(ids, skip_special_tokens=True).strip()
            if plan is None or (_said(text) not in written and plan.accepts(topic, text)):
                writer.commit(ids)
                return PlannedSentence(text, topic, score)
    return None


def _write_required(writer: _Writer, decoder: ReportDecoder, label: int, plan: TopicPlan, written: set, k: int,
                    end_id: int, max_tokens: int) -> PlannedSentence | None:
    """The last try at a positive finding that no beam of its topic stated: its own topic token, then a sentence
    that must hold one of the finding's statement phrases (`Writer.constrained_beams`), negation, hedge and
    clause-break words banned, and so are the words that mention a label the plan does not allow here (a
    granuloma already stated, a finding not called positive). The labeler still reads it: it must state the finding positive and nothing the
    plan does not allow (its topic is what the labeler reads). Committed when it passes; None otherwise."""
    tok = decoder.tokenizer
    if not decoder.statement_ids[label]:  # a vocabulary without its words
        return None
    banned = decoder.not_words_or_hedges.clone()
    for other, ids in decoder.mention_word_ids.items():  # the words of labels it may not state (used, or not positive)
        if other != label and not plan.admits(Topic(((other, True),)), ""):
            banned[ids] = True
    writer.commit([decoder.topic_token_ids[topic_token(label, True)]])
    for ids, score in writer.constrained_beams(max(k, 2), banned, end_id, max_tokens, decoder.statement_ids[label]):
        text = tok.decode(ids, skip_special_tokens=True).strip()
        read = sentence_topic(text)
        if _said(text) not in written and label in read.positives and plan.admits(read, text):
            writer.commit(ids)
            return PlannedSentence(text, read, score)
    return None


def _said(text: str) -> frozenset | str:
    """What a sentence says, to refuse a repeat: its entity mentions (entity, state, place; the triplet reader) or,
    when it mentions none, its words. "no acute bony abnormality ." repeats "there is no acute bony abnormality ."
    (18 of IU's 2,069 training reports repeat a sentence this way, e.g. "no pneumothorax or pleural effusion")."""
    return frozenset(sentence_mentions(text)) or text


def _repeating(seq: list[int], n: int) -> list[int]:
    """The tokens that would end an n-gram already in `seq` after its last n-1 tokens (none for n < 2)."""
    if n < 2 or len(seq) < n:
        return []
    tail = seq[len(seq) - n + 1:]
    return [seq[i + n - 1] for i in range(len(seq) - n + 1) if seq[i:i + n - 1] == tail]
