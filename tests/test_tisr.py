"""TISR as a plug-in: pseudo words in the decoder's word space, their refinement loss, and the switch."""

from __future__ import annotations

import pytest
import torch

from revtaf.model.config import TISRConfig
from revtaf.model.decoder import PROMPT_LENGTH, prompt_ids
from revtaf.model.revtaf import REVTAF
from revtaf.model.tisr import TextualInversion
from test_revtaf import D, images, random_bank, tiny_config, tokenizer, train_batch  # noqa: F401 (fixture)


def test_refinement_loss_falls_when_aligned_and_rises_when_shuffled():
    torch.manual_seed(0)
    tisr = TextualInversion(TISRConfig(num_words=4, heads=4), visual_dim=24, hidden=32, text_dim=16)
    patches, reports = torch.randn(16, 9, 24), torch.randn(16, 16)
    optimizer = torch.optim.AdamW(tisr.parameters(), lr=1e-2)
    start = float(tisr.refinement_loss(tisr(patches), reports))
    for _ in range(60):
        loss = tisr.refinement_loss(tisr(patches), reports)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        aligned = float(tisr.refinement_loss(tisr(patches), reports))
        shuffled = float(tisr.refinement_loss(tisr(patches), reports[torch.randperm(16, generator=torch.Generator().manual_seed(1))]))
    assert aligned < start and shuffled > aligned + 1.0
    assert float(tisr.refinement_loss(tisr(patches[:1]), reports[:1])) == 0.0


def test_pseudo_words_are_read_where_word_embeddings_are(tokenizer):
    torch.manual_seed(0)
    model = REVTAF(tiny_config(tisr=TISRConfig(enabled=True, num_words=3, heads=2)), tokenizer,
                   triplet_table=torch.randn(75, 51, 2, D)).eval()
    batch = train_batch(model, B=2)
    patches, _ = model.visual(batch["images"])
    words = model.tisr(patches)
    assert words.shape == (2, 3, model.decoder.lm.get_input_embeddings().embedding_dim)
    memory = torch.randn(2, patches.shape[1], 2 * D)
    ids, mask = batch["input_ids"], batch["attention_mask"]
    with torch.no_grad():
        plain, read = model.decoder(ids, mask, memory), model.decoder(ids, mask, memory, words)
    assert read.shape == plain.shape  # position t still predicts token t + 1
    assert torch.equal(read[:, : PROMPT_LENGTH - 1], plain[:, : PROMPT_LENGTH - 1])  # causal: prompt unaffected
    assert not torch.allclose(read[:, PROMPT_LENGTH:], plain[:, PROMPT_LENGTH:])
    with torch.no_grad():  # the same words fed as embeddings by hand give the same logits
        embeds = model.decoder.lm.get_input_embeddings()(ids)
        by_hand = model.decoder.lm(inputs_embeds=torch.cat([embeds[:, :PROMPT_LENGTH], words, embeds[:, PROMPT_LENGTH:]], 1),
                                   encoder_hidden_states=model.decoder.memory_proj(memory),
                                   attention_mask=torch.cat([mask[:, :PROMPT_LENGTH], torch.ones(2, 3, dtype=mask.dtype),
                                                             mask[:, PROMPT_LENGTH:]], 1)).logits
    torch.testing.assert_close(read[:, PROMPT_LENGTH:], by_hand[:, PROMPT_LENGTH + 3:])
    reports = model.decoder.generate(prompt_ids(tokenizer, batch["labels"], model.decoder.per_disease), memory,
                                     num_beams=2, max_new_tokens=5, min_length=PROMPT_LENGTH + 5, pseudo_words=words)
    assert len(reports) == 2 and all(len(r.split()) >= 1 for r in reports)


def test_tisr_switch_off_is_todays_model_and_on_trains_end_to_end(tokenizer):
    torch.manual_seed(0)
    plain = REVTAF(tiny_config(), tokenizer, triplet_table=torch.randn(75, 51, 2, D))
    assert plain.tisr is None and not any(k.startswith("tisr.") for k in plain.state_dict())
    torch.manual_seed(0)
    model = REVTAF(tiny_config(tisr=TISRConfig(enabled=True, num_words=3, heads=2)), tokenizer,
                   triplet_table=torch.randn(75, 51, 2, D))
    model.set_bank(**random_bank(30))
    model.train()
    losses = model(train_batch(model, B=3))
    assert "loss_tisr" in losses and torch.isfinite(losses["loss"])
    losses["loss"].backward()
    assert model.tisr.queries.grad.abs().sum() > 0 and model.tisr.to_text.weight.grad.abs().sum() > 0
    model.eval()
    image = images(1, seed=4)[0]
    assert model.predict(image).report.strip()
    assert model.ablations == {"grp", "lrp", "tisr"} and plain.ablations == {"grp", "lrp"}
    assert list(model.plugins) == ["TISR"]
    # the inference ablation drops the pseudo words: beam search is given none
    given = []
    generate = model.decoder.generate
    model.decoder.generate = lambda *a: given.append(a[-1]) or generate(*a)
    model.predict(image)
    ablated = model.predict(image, ablate=frozenset({"tisr"}))
    assert given[0].shape[1] == 3 and given[1] is None
    assert ablated.ablation == {"grp": True, "lrp": True, "tisr": False}
    with pytest.raises(ValueError, match="no tisr to switch off"):
        plain.predict(image, ablate=frozenset({"tisr"}))
    with pytest.raises(ValueError, match="tisr.heads"):
        tiny_config(tisr=TISRConfig(enabled=True, heads=5))

