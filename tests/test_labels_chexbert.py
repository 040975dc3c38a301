"""CheXbert loader round trip with a random tiny checkpoint of the real layout (never downloads)."""

import json

import numpy as np
import pytest
import torch
from transformers import BertConfig

from revtaf.labels import CheXbertLabeler
from revtaf.labels.chexbert import CheXbert, bert_base_uncased_config

VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", ".", "the", "heart", "is", "normal", "no", "effusion", "##s",
         "lungs", "are", "clear", "mild", "cardio", "##megaly", "small", "left", "pleural"]
TINY = dict(vocab_size=len(VOCAB), hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32,
            max_position_embeddings=64, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0, initializer_range=1.0)


@pytest.fixture()
def tiny_chexbert(tmp_path):
    bert_dir = tmp_path / "bert"
    bert_dir.mkdir()
    (bert_dir / "vocab.txt").write_text("\n".join(VOCAB) + "\n")
    (bert_dir / "config.json").write_text(json.dumps({"model_type": "bert", **TINY}))
    torch.manual_seed(0)
    model = CheXbert(BertConfig(**TINY)).eval()
    with torch.no_grad():  # make the heads decisive so every class shows up
        for head in model.linear_heads:
            head.weight.mul_(50)
    # As the real file: DataParallel names, wrapped in a training checkpoint.
    state = {f"module.{k}": v for k, v in model.state_dict().items()}
    torch.save({"epoch": 3, "model_state_dict": state}, tmp_path / "chexbert.pth")
    return model, tmp_path / "chexbert.pth", bert_dir


REPORTS = ["The heart is normal. No effusions.", "Mild cardiomegaly.\n\nSmall  left pleural effusion.", "", "lungs clear"]


def test_round_trip_matches_the_model(tiny_chexbert):
    model, ckpt, bert_dir = tiny_chexbert
    labeler = CheXbertLabeler(ckpt, bert_dir, batch_size=3)  # two batches, padded independently
    out = labeler(REPORTS)
    assert out.shape == (4, 14) and out.dtype == np.int8
    assert out[:, :13].max() <= 3 and set(np.unique(out[:, 13])) <= {0, 1}
    # Reference: the original model on CheXbert's own encoding, one report at a time (no padding at all).
    tok = labeler.tokenizer
    for i, report in enumerate(REPORTS):
        ids = tok.encode(" ".join(report.split()))
        if i == 2:
            assert ids == [tok.cls_token_id, tok.sep_token_id]  # empty report
        with torch.no_grad():
            logits = model(torch.tensor([ids]), torch.ones(1, len(ids), dtype=torch.long))
        assert out[i].tolist() == [int(l.argmax()) for l in logits]
    assert len({tuple(r) for r in out.tolist()}) > 1  # the heads really read the text


def test_wrong_layout_or_missing_files_raise(tiny_chexbert, tmp_path):
    model, ckpt, bert_dir = tiny_chexbert
    with pytest.raises(ValueError, match="bert_dir is required"):
        CheXbertLabeler(ckpt)
    with pytest.raises(FileNotFoundError):
        CheXbertLabeler(tmp_path / "missing.pth", bert_dir)
    bad = tmp_path / "bad.pth"
    state = {k: v for k, v in model.state_dict().items() if not k.startswith("linear_heads.13")}
    torch.save({"model_state_dict": state}, bad)
    with pytest.raises(ValueError, match="missing"):
        CheXbertLabeler(bad, bert_dir)
    torch.save(model.state_dict(), bad)
    with pytest.raises(ValueError, match="model_state_dict"):
        CheXbertLabeler(bad, bert_dir)


def test_default_config_is_bert_base_uncased():
    c = bert_base_uncased_config()
    assert (c.vocab_size, c.hidden_size, c.num_hidden_layers, c.num_attention_heads, c.intermediate_size) == (
        30522, 768, 12, 12, 3072)
