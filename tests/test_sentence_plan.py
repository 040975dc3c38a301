"""Sentence topics and the plan a report is written to (revtaf/labels/topics.py, revtaf/model/sentence_plan.py)."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch
from transformers import DynamicCache, EncoderDecoderCache, GenerationConfig

from revtaf.data import clean_report
from revtaf.labels import LABEL_NAMES_18
from revtaf.labels.constants import BLANK, NEGATIVE, POSITIVE, UNCERTAIN
from revtaf.labels.topics import (Topic, TopicPlan, organs_called_normal, report_consistency, sentence_topic, tag_report,
                                  topic_token)
from revtaf.model.decoder import encode_planned_reports, one_finding_contrast, prompt_ids
from revtaf.model.random_init import random_model
from revtaf.model.sentence_plan import SENTENCE_NO_REPEAT, _repeating, _write, _Writer, write_planned

CARDIOMEGALY, OPACITY = LABEL_NAMES_18.index("Cardiomegaly"), LABEL_NAMES_18.index("Lung Opacity")
EFFUSION, PNEUMOTHORAX = LABEL_NAMES_18.index("Pleural Effusion"), LABEL_NAMES_18.index("Pneumothorax")
AORTA = LABEL_NAMES_18.index("Aortic Tortuosity/Atherosclerosis")


def states(**named) -> np.ndarray:
    row = np.zeros(18, dtype=np.int64)
    for name, state in named.items():
        row[LABEL_NAMES_18.index(name.replace("_", " "))] = state
    return row


def test_topics_read_each_sentence_alone(iu_root):
    from revtaf.data import load_annotation

    train = load_annotation(iu_root, "iu")["train"][:200]
    tagged = [tag_report(clean_report(s.report, "iu")) for s in train]
    assert all(text.endswith(" .") and topic.tokens for report in tagged for text, topic in report)
    # the labeler per sentence agrees with the labeler per report on what is positive
    from revtaf.labels import label_reports

    whole = label_reports([clean_report(s.report, "iu") for s in train])
    per_sentence = [{i for _, t in report for i in t.positives} for report in tagged]
    assert all({i for i in range(13) if row[i] in (POSITIVE, UNCERTAIN)} <= p for row, p in zip(whole, per_sentence))
    assert sentence_topic("no pleural effusion or pneumothorax .").tokens == [
        topic_token(PNEUMOTHORAX, False), topic_token(EFFUSION, False)]
    assert sentence_topic("the heart is mildly enlarged .") == Topic(((CARDIOMEGALY, True),))
    assert sentence_topic("possible left basilar atelectasis .").positives  # uncertain reads as a positive topic
    assert sentence_topic("no acute cardiopulmonary abnormality .").plain == "clear"
    assert sentence_topic("the lungs are clear .").plain == "lungs_clear"
    assert sentence_topic("the lungs are otherwise clear .").plain == "other"
    assert sentence_topic("the xxxx are intact .").plain == "other"


def test_plan_requires_every_positive_and_allows_only_what_the_states_say():
    plan = TopicPlan(states(Cardiomegaly=POSITIVE, Pneumothorax=NEGATIVE, Atelectasis=UNCERTAIN))
    allowed = plan.allowed_tokens()
    assert topic_token(CARDIOMEGALY, True) in allowed and topic_token(PNEUMOTHORAX, False) in allowed
    assert topic_token(EFFUSION, False) not in allowed  # blank: nothing of it is said
    assert topic_token(CARDIOMEGALY, False) not in allowed
    assert topic_token("clear") not in allowed and topic_token("lungs_clear") not in allowed  # uncertain lung finding
    assert not plan.can_end() and plan.required_tokens() == [topic_token(CARDIOMEGALY, True)]
    plan.commit(Topic(((CARDIOMEGALY, True),)))
    assert plan.can_end() and topic_token(CARDIOMEGALY, True) not in plan.allowed_tokens()  # once
    # after a first topic token only later labels may join it, and no plain topic
    joined = plan.allowed_tokens([topic_token(PNEUMOTHORAX, False)])
    assert joined == [t for t in joined if t.endswith(":pos]") or t.endswith(":neg]")]
    assert topic_token(CARDIOMEGALY, True) not in joined


def test_plan_check_refuses_other_findings_and_all_clear_beside_a_positive():
    plan = TopicPlan(states(Lung_Opacity=POSITIVE, Pneumothorax=NEGATIVE))
    opacity = Topic(((OPACITY, True),))
    assert plan.accepts(opacity, "there is patchy opacity in the right lower lobe .")
    assert not plan.accepts(opacity, "there is patchy opacity and a small pleural effusion .")  # states more
    assert not plan.accepts(opacity, "the heart is normal in size .")  # states something else
    assert not plan.accepts(Topic(plain="other"), "no acute cardiopulmonary abnormality .")
    assert not plan.accepts(Topic(plain="other"), "the lungs are clear .")


def test_plan_check_refuses_an_organ_called_normal_beside_its_finding():
    """v8 wrote "the thoracic aorta is tortuous" and then "the thoracic aorta is normal", which the labeler reads
    as no statement on tortuosity: the plan refuses the second while tortuosity is positive, not otherwise."""
    normal = "the thoracic aorta is within normal limits ."
    assert organs_called_normal(normal) == {AORTA} and organs_called_normal("normal aortic contour .") == {AORTA}
    assert not organs_called_normal("the aorta is tortuous , otherwise normal .")
    assert not organs_called_normal("the heart size is normal .")
    plan = TopicPlan(states(**{"Aortic Tortuosity/Atherosclerosis": POSITIVE}))
    assert plan.accepts(Topic(((AORTA, True),)), "the thoracic aorta is tortuous .")
    assert not plan.accepts(Topic(plain="other"), normal)
    assert TopicPlan(states()).accepts(Topic(plain="other"), normal)
    read = report_consistency("the thoracic aorta is tortuous . " + normal, findings=range(len(LABEL_NAMES_18)))
    assert read["normal_beside_positive"] and not report_consistency(normal)["normal_beside_positive"]


def test_report_consistency_flags_repeats_and_contradictions():
    read = report_consistency("there is no pneumothorax . no pleural effusion or pneumothorax . "
                              "there is a right lower lobe opacity . no acute cardiopulmonary abnormality .")
    assert read["repeated"] == [PNEUMOTHORAX] and read["clear_beside_positive"]
    fine = report_consistency("the heart is enlarged . the lungs are otherwise clear . no pneumothorax .")
    assert fine["repeated"] == [] and not fine["clear_beside_positive"] and fine["positive"] == [CARDIOMEGALY]


def test_planned_training_inputs_put_each_sentence_behind_its_topic():
    model = random_model("cpu", bank_size=32)
    tok = model.tokenizer
    tagged = [[("w1 w2 .", Topic(((CARDIOMEGALY, True),))), ("w3 .", Topic(plain="other"))],
              [("w4 w5 .", Topic(((PNEUMOTHORAX, False), (EFFUSION, False))))]]
    labels = torch.tensor(np.stack([states(Cardiomegaly=POSITIVE), states(Pneumothorax=NEGATIVE)]))
    ids, mask, finding, spans = encode_planned_reports(tok, labels, tagged, 64, per_disease=True)
    row = tok.convert_ids_to_tokens(ids[0, 19: int(mask[0].sum())].tolist())
    assert row == [topic_token(CARDIOMEGALY, True), "w1", "w2", ".", "[t:other]", "w3", ".", "[SEP]"]
    assert finding[0].tolist().count(True) == 4 and not finding[1].any()  # topic + words of the finding sentence
    contrast, focus = one_finding_contrast(labels, spans, ids.shape, seed=0)
    assert contrast[0, CARDIOMEGALY] == NEGATIVE and (contrast[0] != labels[0]).sum() == 1
    assert focus[0].tolist() == finding[0].tolist() and not focus[1].any()


def test_sentence_beam_search_is_generates():
    """Where both apply (one sentence, no plan), the loop's beam search writes what transformers' generate does."""
    model = random_model("cpu", bank_size=32)
    dec = model.decoder
    end = dec.sentence_end_id
    with torch.no_grad():
        dec.lm.cls.predictions.decoder.bias[end] += 6.0  # sentences of a few words, not only cut at the limit
    prompt = prompt_ids(model.tokenizer, torch.zeros(1, 18, dtype=torch.long), per_disease=True)
    banned = dec.not_words.nonzero().flatten().tolist()
    for seed, k in ((0, 1), (1, 3), (2, 3)):
        memory = torch.randn(1, 49, 512, generator=torch.Generator().manual_seed(seed))
        with torch.no_grad():
            ours = _Writer(dec, prompt, memory, None).beams(k, dec.not_words, end, 12)[0][0]
            # the loop's blocking of a 3-gram twice in a sentence is generate's no_repeat_ngram_size (the prompt's
            # tokens are never written, so no n-gram reaches back into it)
            config = GenerationConfig(num_beams=k, do_sample=False, max_new_tokens=12, eos_token_id=end,
                                      pad_token_id=0, suppress_tokens=banned, length_penalty=1.0,
                                      no_repeat_ngram_size=SENTENCE_NO_REPEAT)
            cache = EncoderDecoderCache(DynamicCache(config=dec.lm.config), DynamicCache(config=dec.lm.config))
            theirs = dec.lm.generate(input_ids=prompt, attention_mask=torch.ones_like(prompt), cache=cache,
                                     encoder_hidden_states=dec.memory_proj(memory), generation_config=config)
        assert ours == theirs[0, 19:].tolist()[: len(ours)] and len(theirs[0, 19:]) >= len(ours)


def test_a_plan_writes_every_positive_finding_once_and_ends():
    model = random_model("cpu", bank_size=32)
    dec = model.decoder
    with torch.no_grad():
        dec.lm.cls.predictions.decoder.bias[dec.sentence_end_id] += 6.0
    row = states(Cardiomegaly=POSITIVE, Lung_Opacity=POSITIVE, Pneumothorax=NEGATIVE)
    prompt = prompt_ids(model.tokenizer, torch.tensor(row)[None], per_disease=True)
    memory = torch.randn(1, 49, 512, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():  # the plan's own report (a random decoder's words state nothing: it may be empty)
        report = _write(dec, prompt, memory, row, model.cfg.generation)
    topics = [s.topic for s in report.sentences]
    for label in (CARDIOMEGALY, OPACITY):
        assert sum(label in t.positives for t in topics) <= 1
    stated = [i for t in topics for i, _ in t.labels]
    assert len(stated) == len(set(stated))  # no label in two sentences
    assert all(t.plain not in ("clear", "lungs_clear") for t in topics)
    assert not {i for i, _ in (x for t in topics for x in t.labels)} - {CARDIOMEGALY, OPACITY, PNEUMOTHORAX}
    # a required topic is either written or listed as missed, never both, never neither
    written = {i for t in topics for i in t.positives}
    missed = {i for t in report.missed for i in t.positives}
    assert written | missed == {CARDIOMEGALY, OPACITY} and not written & missed
    # write_planned never returns an empty report: without a passing sentence, the free one, the misses kept
    with torch.no_grad():
        shown = write_planned(dec, prompt, memory, row, model.cfg.generation)
    assert shown.sentences and shown.missed == report.missed
    free = write_planned(dec, prompt, memory, row, replace(model.cfg.generation, plan=False))
    assert free.missed == []  # nothing is checked without the plan


def test_plan_states_must_be_18():
    with pytest.raises(ValueError, match="18"):
        TopicPlan(np.zeros(14))
    assert BLANK == 0


def test_static_cache_step_is_berts_forward():
    """The loop's lean step (decoding.py) gives transformers' logits, a prompt at once or a token at a time."""
    from revtaf.model.decoding import DecoderStep, StaticCache

    model = random_model("cpu", bank_size=32)
    lm = model.decoder.lm
    memory = model.decoder.memory_proj(torch.randn(1, 49, 512, generator=torch.Generator().manual_seed(3)))
    ids = torch.cat([prompt_ids(model.tokenizer, torch.zeros(1, 18, dtype=torch.long), per_disease=True),
                     torch.randint(10, 500, (1, 6), generator=torch.Generator().manual_seed(4))], 1)
    with torch.no_grad():
        reference = lm(input_ids=ids, encoder_hidden_states=memory).logits[0, 18:]
        step, cache = DecoderStep(lm, memory), StaticCache.empty(lm, 1, 64, memory)
        ours = [step(cache, ids=ids[:, :19])[0]] + [step(cache, ids=ids[:, j:j + 1])[0] for j in range(19, ids.shape[1])]
    assert cache.length == ids.shape[1]
    assert torch.allclose(torch.stack(ours), reference, atol=1e-5)


def test_statement_phrases_state_their_label_and_nothing_else():
    """The last try's phrases: each, as "there is {phrase} .", reads as its label positive and nothing more."""
    from revtaf.labels.topics import STATEMENT_PHRASES, mention_words

    assert len(STATEMENT_PHRASES) == 17 and LABEL_NAMES_18.index("No Finding") not in STATEMENT_PHRASES
    for label, phrases in STATEMENT_PHRASES.items():
        for phrase in phrases:
            assert sentence_topic(f"there is {phrase} .") == Topic(((label, True),)), (LABEL_NAMES_18[label], phrase)
    assert "nodule" in mention_words(LABEL_NAMES_18.index("Lung Lesion"))
    assert "calcified" in mention_words(LABEL_NAMES_18.index("Granuloma"))


def test_constrained_beams_hold_a_phrase_before_they_end():
    """A required finding's last try: every finished beam holds one of the finding's phrases, the sentence end
    only after it, even from a decoder (random) that would not write it."""
    model = random_model("cpu", bank_size=32)
    dec = model.decoder
    end = dec.sentence_end_id
    with torch.no_grad():
        dec.lm.cls.predictions.decoder.bias[end] += 6.0  # it would end at once, phrase or not
    prompt = prompt_ids(model.tokenizer, torch.zeros(1, 18, dtype=torch.long), per_disease=True)
    # the synthetic vocabulary has no clinical words (its statement phrases are left out): placeholder phrases
    phrases = [model.tokenizer.convert_tokens_to_ids(p) for p in (["w17", "w18"], ["w400"])]
    assert dec.statement_ids[OPACITY] == []
    for seed in (0, 1):
        memory = torch.randn(1, 49, 512, generator=torch.Generator().manual_seed(seed))
        with torch.no_grad():
            beams = _Writer(dec, prompt, memory, None).constrained_beams(3, dec.not_words_or_hedges, end, 12, phrases)
        assert beams
        for ids, _ in beams:
            assert any(ids[j:j + len(p)] == p for p in phrases for j in range(len(ids) - len(p) + 1)), ids
            assert end not in ids[:-1]
            assert not dec.not_words_or_hedges[ids[:-1]].any()


def test_a_report_is_never_empty():
    """A decoder that would end at once (its [SEP] far likelier than any topic) still writes a first sentence."""
    model = random_model("cpu", bank_size=32)
    dec = model.decoder
    with torch.no_grad():
        dec.lm.cls.predictions.decoder.bias[model.tokenizer.sep_token_id] += 30.0
        dec.lm.cls.predictions.decoder.bias[dec.sentence_end_id] += 6.0
    row = states(Pneumothorax=NEGATIVE)
    prompt = prompt_ids(model.tokenizer, torch.tensor(row)[None], per_disease=True)
    memory = torch.randn(1, 49, 512, generator=torch.Generator().manual_seed(0))
    for plan in (True, False):
        with torch.no_grad():
            report = write_planned(dec, prompt, memory, row, replace(model.cfg.generation, plan=plan))
        assert report.sentences and report.text.strip(), plan


def test_no_ngram_twice_in_a_sentence_or_the_report():
    """_repeating names the tokens that would repeat an n-gram; a planned report has no 3-gram twice in a
    sentence, and none of the settings' n-gram size twice in the report."""
    assert _repeating([5, 6, 7, 5, 6], 3) == [7] and _repeating([5, 6, 7, 5], 2) == [6]
    assert _repeating([5, 6, 5], 3) == [] and _repeating([5, 5, 5], 0) == []
    model = random_model("cpu", bank_size=32)
    dec = model.decoder
    with torch.no_grad():  # a decoder that loops: a few words far likelier than the rest
        dec.lm.cls.predictions.decoder.bias[torch.arange(10, 14)] += 12.0
        dec.lm.cls.predictions.decoder.bias[dec.sentence_end_id] += 4.0
    row = states(Pneumothorax=NEGATIVE)
    prompt = prompt_ids(model.tokenizer, torch.tensor(row)[None], per_disease=True)
    memory = torch.randn(1, 49, 512, generator=torch.Generator().manual_seed(0))
    settings = replace(model.cfg.generation, plan=False, no_repeat_ngram_size=4)
    with torch.no_grad():
        report = write_planned(dec, prompt, memory, row, settings)
    def grams(ids: list[int], n: int) -> list[tuple[int, ...]]:
        return [tuple(ids[i:i + n]) for i in range(len(ids) - n + 1)]

    report_grams = []  # the 4-grams inside each sentence: none twice in the report
    for sentence in report.sentences:
        ids = model.tokenizer(sentence.text, add_special_tokens=False)["input_ids"]
        assert len(set(grams(ids, 3))) == len(grams(ids, 3)), sentence.text
        report_grams += grams(ids, 4)
    assert len(report_grams) > 4 and len(set(report_grams)) == len(report_grams), report.text
