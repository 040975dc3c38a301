import json

import pytest

from revtaf.data.clean import clean_report_iu
from revtaf.labels.constants import STATE_TOKENS
from revtaf.model.tokenizer import build_tokenizer, load_tokenizer


@pytest.fixture(scope="module")
def reports(iu_root):
    train = json.loads((iu_root / "annotation.json").read_text())["train"]
    return [clean_report_iu(e["report"]) for e in train[:300]]


@pytest.fixture(scope="module")
def tokenizer(reports):
    return build_tokenizer(reports, vocab_size=1000)


def test_special_token_ids(tokenizer):
    assert tokenizer.pad_token_id == 0
    assert tokenizer.convert_tokens_to_ids(["[UNK]", "[CLS]", "[SEP]", "[MASK]"]) == [1, 2, 3, 4]
    assert tokenizer.bos_token == "[DEC]" and tokenizer.bos_token_id == 5
    assert "[DEC]" in tokenizer.all_special_tokens
    assert len(tokenizer) == 1000 + len(STATE_TOKENS) + 18 * len(STATE_TOKENS)  # + the disease-state tokens


def test_encoding_is_wrapped_in_cls_sep(tokenizer):
    ids = tokenizer("the heart is normal .")["input_ids"]
    assert ids[0] == tokenizer.cls_token_id and ids[-1] == tokenizer.sep_token_id


def test_round_trip_keeps_cleaned_spacing(tokenizer, reports):
    for text in reports[:50]:
        ids = tokenizer(text)["input_ids"]
        assert tokenizer.decode(ids, skip_special_tokens=True) == text


def test_state_tokens_are_single_regular_tokens(tokenizer):
    prompt = " ".join(STATE_TOKENS * 2) + " the lungs are clear ."
    tokens = tokenizer.tokenize(prompt)
    assert tokens[:8] == list(STATE_TOKENS) * 2
    ids = tokenizer.convert_tokens_to_ids(list(STATE_TOKENS))
    assert len(set(ids)) == 4 and tokenizer.unk_token_id not in ids
    # Regular, not special: decoding with skip_special_tokens keeps them (the prompt is stripped by count).
    decoded = tokenizer.decode(tokenizer(prompt)["input_ids"], skip_special_tokens=True)
    assert decoded.startswith(" ".join(STATE_TOKENS))
    # Lowercase look-alikes in report text are not prompt tokens.
    assert not set(tokenizer("[bla]")["input_ids"]) & set(ids)


def test_save_load_identical(tokenizer, reports, tmp_path):
    tokenizer.save_pretrained(tmp_path)
    loaded = load_tokenizer(tmp_path)
    assert len(loaded) == len(tokenizer) and loaded.bos_token_id == tokenizer.bos_token_id
    for text in reports[:20]:
        prompt = "[POS] [NEG] " + text
        assert loaded(prompt)["input_ids"] == tokenizer(prompt)["input_ids"]
        assert loaded.decode(loaded(text)["input_ids"], skip_special_tokens=True) == text


def test_load_bert_vocab_dir_adds_prompt_tokens(tmp_path):
    vocab = ["[PAD]", "[unused0]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "the", "heart", "is", "normal", "."]
    (tmp_path / "vocab.txt").write_text("\n".join(vocab) + "\n")
    (tmp_path / "tokenizer_config.json").write_text(
        json.dumps({"tokenizer_class": "BertTokenizer", "do_lower_case": True})
    )
    tok = load_tokenizer(tmp_path)
    assert tok.bos_token == "[DEC]" and tok.bos_token_id == len(vocab)
    assert tok.convert_tokens_to_ids(list(STATE_TOKENS)) == list(range(len(vocab) + 1, len(vocab) + 5))
    assert tok.decode(tok("[UNC] The heart is normal .")["input_ids"], skip_special_tokens=True) == (
        "[UNC] the heart is normal ."
    )


def test_bad_inputs(tmp_path):
    with pytest.raises(ValueError):
        build_tokenizer(["", "  "])
    with pytest.raises(ValueError):
        build_tokenizer(["the heart"], vocab_size=10)
    with pytest.raises(FileNotFoundError):
        load_tokenizer(tmp_path / "missing")
