import pytest
import torch
import torch.nn.functional as F
from transformers import BertConfig, BertForMaskedLM

from revtaf.labels.constants import STATE_TOKENS
from revtaf.model.decoder import (
    PROMPT_LENGTH,
    DecoderConfig,
    ReportDecoder,
    encode_reports,
    finding_token_mask,
    lm_labels,
    normal_states,
    prompt_ids,
)
from revtaf.labels.chexpert import RuleLabeler
from revtaf.labels.constants import CHEXPERT_14
from revtaf.model.tokenizer import build_tokenizer

REPORTS = ["the heart is normal in size .", "the lungs are clear . no pleural effusion or pneumothorax ."]
TINY = dict(num_layers=2, hidden_size=32, num_heads=4, intermediate_size=64, max_positions=64)


@pytest.fixture(scope="module")
def tokenizer():
    corpus = REPORTS * 10 + ["heart size normal . lungs clear . no focal consolidation ."] * 10
    return build_tokenizer(corpus, vocab_size=120)


@pytest.fixture
def decoder(tokenizer):
    torch.manual_seed(0)
    return ReportDecoder(DecoderConfig(**TINY), tokenizer, memory_dim=24).eval()


def test_encode_reports_layout(tokenizer):
    states = torch.tensor([[0, 1, 2, 3] * 4 + [1, 2], [2] * 18])
    ids, mask = encode_reports(tokenizer, states, REPORTS, max_length=64)
    state_ids = tokenizer.convert_tokens_to_ids(list(STATE_TOKENS))
    assert ids[:, 0].eq(tokenizer.bos_token_id).all()
    assert ids[0, 1:PROMPT_LENGTH].tolist() == [state_ids[s] for s in states[0].tolist()]
    assert torch.equal(ids[:, :PROMPT_LENGTH], prompt_ids(tokenizer, states))
    lengths = mask.sum(1)
    for i, text in enumerate(REPORTS):
        body = ids[i, PROMPT_LENGTH : lengths[i] - 1].tolist()
        assert tokenizer.decode(body) == text
        assert ids[i, lengths[i] - 1] == tokenizer.sep_token_id
        assert ids[i, lengths[i]:].eq(tokenizer.pad_token_id).all()
    # Truncation keeps [SEP] as the last target.
    short, short_mask = encode_reports(tokenizer, states, REPORTS, max_length=PROMPT_LENGTH + 3)
    assert short.shape[1] == PROMPT_LENGTH + 3 and short[:, -1].eq(tokenizer.sep_token_id).all()
    with pytest.raises(ValueError):
        encode_reports(tokenizer, states, REPORTS[:1], max_length=64)


def test_lm_labels_ignore_prompt_and_padding(tokenizer):
    ids, mask = encode_reports(tokenizer, torch.zeros(2, 18, dtype=torch.long), REPORTS, max_length=64)
    labels = lm_labels(ids, mask)
    assert labels[:, :PROMPT_LENGTH].eq(-100).all()
    assert labels[mask == 0].eq(-100).all()
    keep = (mask == 1)
    keep[:, :PROMPT_LENGTH] = False
    assert torch.equal(labels[keep], ids[keep])


def test_loss_is_shifted_smoothed_ce_and_reaches_cross_attention(decoder, tokenizer):
    decoder.train()
    ids, mask = encode_reports(tokenizer, torch.randint(0, 4, (2, 18)), REPORTS, max_length=64)
    labels = lm_labels(ids, mask)
    memory = torch.randn(2, 49, 24, requires_grad=True)
    torch.manual_seed(1)
    loss = decoder.loss(ids, mask, memory, labels)
    torch.manual_seed(1)
    logits = decoder(ids, mask, memory)
    expected = F.cross_entropy(logits[:, :-1].transpose(1, 2), labels[:, 1:], ignore_index=-100,
                               label_smoothing=0.1)
    assert torch.isfinite(loss) and torch.allclose(loss, expected)
    loss.backward()
    assert memory.grad.abs().sum() > 0
    cross = decoder.lm.bert.encoder.layer[0].crossattention.self.key.weight
    assert cross.grad is not None and cross.grad.abs().sum() > 0
    assert decoder.memory_proj.weight.grad.abs().sum() > 0


def test_beam_search_batch_matches_single(decoder, tokenizer):
    states = torch.randint(0, 4, (2, 18), generator=torch.Generator().manual_seed(3))
    prompt = prompt_ids(tokenizer, states)
    memory = torch.randn(2, 49, 24, generator=torch.Generator().manual_seed(4))
    batch = decoder.generate(prompt, memory, num_beams=3, max_new_tokens=8, min_length=PROMPT_LENGTH)
    assert len(batch) == 2
    singles = [decoder.generate(prompt[i : i + 1], memory[i : i + 1], num_beams=3, max_new_tokens=8,
                                min_length=PROMPT_LENGTH)[0] for i in range(2)]
    assert batch == singles
    assert decoder.generate(prompt, memory, num_beams=3, max_new_tokens=8) == batch  # deterministic
    with pytest.raises(ValueError):
        decoder.generate(prompt[:, :10], memory)


def test_prompt_stripped_by_token_count_and_min_length(decoder, tokenizer):
    prompt = prompt_ids(tokenizer, torch.ones(2, 18, dtype=torch.long))
    memory = torch.zeros(2, 49, 24)
    heart = tokenizer.convert_tokens_to_ids("heart")
    bias = decoder.lm.cls.predictions.bias
    with torch.no_grad():
        bias[heart] += 100.0
    out = decoder.generate(prompt, memory, num_beams=3, max_new_tokens=5, min_length=PROMPT_LENGTH)
    assert out == ["heart heart heart heart heart"] * 2
    with torch.no_grad():
        bias[tokenizer.sep_token_id] += 200.0  # now [SEP] always wins once it is allowed
    assert decoder.generate(prompt, memory, num_beams=3, max_new_tokens=5, min_length=PROMPT_LENGTH) == [""] * 2
    assert decoder.generate(prompt, memory, num_beams=3, max_new_tokens=5, min_length=PROMPT_LENGTH + 2) == (
        ["heart heart"] * 2
    )


def test_init_from_bert_directory(tokenizer, tmp_path):
    torch.manual_seed(0)
    source = BertForMaskedLM(BertConfig(vocab_size=100, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                        intermediate_size=64, max_position_embeddings=64))
    source.save_pretrained(tmp_path)
    decoder = ReportDecoder(DecoderConfig(**TINY, init_dir=str(tmp_path)), tokenizer, memory_dim=24)
    assert decoder.lm.config.is_decoder and decoder.lm.config.add_cross_attention
    assert decoder.lm.cls.predictions.decoder.weight.shape[0] == len(tokenizer)
    assert torch.equal(decoder.lm.bert.encoder.layer[1].attention.self.query.weight,
                       source.bert.encoder.layer[1].attention.self.query.weight)
    n = min(100, len(tokenizer))
    assert torch.equal(decoder.lm.bert.embeddings.word_embeddings.weight[:n],
                       source.bert.embeddings.word_embeddings.weight[:n])
    with pytest.raises(ValueError, match="hidden_size"):
        ReportDecoder(DecoderConfig(**{**TINY, "hidden_size": 64}, init_dir=str(tmp_path)), tokenizer, 24)
    with pytest.raises(FileNotFoundError):
        ReportDecoder(DecoderConfig(**TINY, init_dir=str(tmp_path / "nope")), tokenizer, 24)


def test_disease_prompt_tokens_name_their_disease(tokenizer):
    """Per-disease prompts: 72 distinct tokens, one per (disease, state); the shared layout repeats 4 ids."""
    from revtaf.model.decoder import prompt_table

    states = torch.ones(1, 18, dtype=torch.long)  # every disease positive
    shared = prompt_ids(tokenizer, states)
    named = prompt_ids(tokenizer, states, per_disease=True)
    assert shared[0, 1:].unique().numel() == 1 and named[0, 1:].unique().numel() == 18
    assert tokenizer.convert_ids_to_tokens(int(named[0, 1 + 1])) == "[cardiomegaly:POS]"  # disease 1
    assert prompt_table(tokenizer, per_disease=True).unique().numel() == 72
    ids, _ = encode_reports(tokenizer, states, REPORTS[:1], 64, per_disease=True)
    assert torch.equal(ids[:, :PROMPT_LENGTH], named)


def test_prompt_tokens_are_never_generated(tokenizer):
    torch.manual_seed(0)
    decoder = ReportDecoder(DecoderConfig(**TINY, prompt_tokens="disease"), tokenizer, memory_dim=24).eval()
    pos = tokenizer.convert_tokens_to_ids("[cardiomegaly:POS]")
    with torch.no_grad():
        decoder.lm.cls.predictions.bias[pos] += 100.0  # the most likely next token, were it allowed
    states = torch.ones(1, 18, dtype=torch.long)
    out = decoder.generate(prompt_ids(tokenizer, states, True), torch.zeros(1, 49, 24), num_beams=2,
                           max_new_tokens=4, min_length=PROMPT_LENGTH + 4)
    assert out[0].strip() and "cardiomegaly:POS" not in out[0]
    with pytest.raises(ValueError, match="prompt_tokens"):
        DecoderConfig(prompt_tokens="per-disease")


def test_finding_token_mask_marks_the_finding_sentence_only(tokenizer):
    reports = ["no pleural effusion or pneumothorax . mild cardiomegaly .", "the heart is normal in size ."]
    flags = [RuleLabeler().finding_sentences(r) for r in reports]
    assert flags == [[False, True], [False]]
    states = torch.zeros(2, 18, dtype=torch.long)
    ids, _ = encode_reports(tokenizer, states, reports, max_length=64)
    mask = finding_token_mask(tokenizer, reports, flags, ids.shape)
    assert ids[0][mask[0]].tolist() == tokenizer("mild cardiomegaly .", add_special_tokens=False)["input_ids"]
    assert not mask[1].any() and not mask[:, :PROMPT_LENGTH].any()
    # truncation: the mask never reaches past the report budget (the [SEP] stays unmarked)
    short, _ = encode_reports(tokenizer, states, reports, max_length=PROMPT_LENGTH + 8)
    cut = finding_token_mask(tokenizer, reports, flags, short.shape)
    assert not cut[:, -1].any() and cut.shape == short.shape


def test_weighted_loss_reduces_to_the_plain_one_and_moves_with_weights(decoder, tokenizer):
    states = torch.zeros(2, 18, dtype=torch.long)
    ids, mask = encode_reports(tokenizer, states, REPORTS, max_length=64)
    memory = torch.randn(2, 5, 24)
    labels = lm_labels(ids, mask)
    plain = decoder.loss(ids, mask, memory, labels)
    torch.testing.assert_close(decoder.loss(ids, mask, memory, labels, torch.ones(ids.shape)), plain)
    heavy = torch.ones(ids.shape)
    heavy[0, PROMPT_LENGTH:PROMPT_LENGTH + 3] = 10.0
    assert not torch.isclose(decoder.loss(ids, mask, memory, labels, heavy), plain)


def test_normal_states_call_the_study_normal():
    states = torch.zeros(2, 18, dtype=torch.long)
    card, nf = CHEXPERT_14.index("Cardiomegaly"), CHEXPERT_14.index("No Finding")
    states[0, card], states[0, 2], states[0, 16] = 1, 3, 1
    out = normal_states(states)
    assert out[0, card] == 2 and out[0, 2] == 2 and out[0, nf] == 1 and out[0, 16] == 1  # auxiliary kept
    assert out[1, nf] == 1 and (out[1, :nf] == 0).all() and states[0, card] == 1  # input untouched


def test_prompt_contrast_teaches_the_decoder_to_read_its_prompt(tokenizer):
    """Two studies with the same image memory: the report must follow the prompt, not the image."""
    torch.manual_seed(0)
    dec = ReportDecoder(DecoderConfig(**TINY, prompt_tokens="disease"), tokenizer, memory_dim=24).eval()  # no dropout
    card, nf = CHEXPERT_14.index("Cardiomegaly"), CHEXPERT_14.index("No Finding")
    # the second study's first sentence plays its finding sentence (the tokenizer knows few words)
    texts = ["heart size normal . lungs clear .", "the lungs are clear . the heart is normal in size ."]
    states = torch.zeros(2, 18, dtype=torch.long)
    states[0, nf], states[1, card] = 1, 1
    ids, mask = encode_reports(tokenizer, states, texts, 64, per_disease=True)
    labels = lm_labels(ids, mask)
    focus = finding_token_mask(tokenizer, texts, [[False, False], [True, False]], ids.shape)
    memory = torch.randn(1, 5, 24).expand(2, 5, 24)
    normal = normal_states(states)  # the contrast: the study called normal
    assert dec.prompt_contrast(ids[:1], mask[:1], memory[:1], labels[:1], normal[:1], focus[:1], 0.5) == 0  # no focus
    start = dec.prompt_contrast(ids, mask, memory, labels, normal, focus, 0.5)
    assert 0.3 < start < 0.7  # untrained: the prompt barely matters
    opt = torch.optim.Adam(dec.parameters(), lr=3e-3)
    for _ in range(60):
        opt.zero_grad()
        loss = dec.prompt_contrast(ids, mask, memory, labels, normal, focus, 0.5)
        loss.backward()
        opt.step()
    assert dec.prompt_contrast(ids, mask, memory, labels, normal, focus, 0.5) < 0.05 * start


def test_beam_search_cache_writes_what_hfs_cache_writes(tokenizer, monkeypatch):
    """BeamSearchCache skips reordering the cross-attention keys/values: exact only if no beam ever takes over
    another study's beam. Two studies with different memories, 3 beams, full length: the same text as HF's
    EncoderDecoderCache."""
    import revtaf.model.decoder as decoder_module

    torch.manual_seed(1)
    decoder = ReportDecoder(DecoderConfig(**TINY), tokenizer, memory_dim=24).eval()
    states = torch.tensor([[1] * 18, [2] * 18])
    memory = torch.randn(2, 49, 24) * 3
    args = (prompt_ids(tokenizer, states), memory, 3, 30, PROMPT_LENGTH + 10)
    ours = decoder.generate(*args)
    monkeypatch.setattr(decoder_module, "BeamSearchCache", decoder_module.EncoderDecoderCache)
    assert decoder.generate(*args) == ours and ours[0] != ours[1]
