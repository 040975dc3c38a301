"""UAR's Cross-modal Representation Aligner as a plug-in: its basis, its loss, and its switch."""

from __future__ import annotations

import threading
from dataclasses import replace

import pytest
import torch

from revtaf.model.config import UARConfig
from revtaf.model.revtaf import REVTAF
from revtaf.model.uar import CrossModalAligner, tir_disabled, triplet_loss
from test_revtaf import D, images, random_bank, tiny_config, tokenizer, train_batch  # noqa: F401 (fixture)


def test_the_basis_stays_orthonormal_through_training_steps():
    torch.manual_seed(0)
    cra = CrossModalAligner(UARConfig(cra_width=32, cra_basis=8), image_dim=24, text_dim=16)
    optimizer = torch.optim.AdamW(cra.parameters(), lr=5e-2)
    image, text = torch.randn(12, 24), torch.randn(12, 16)
    first = None
    for _ in range(30):
        loss = triplet_loss(*cra(image, text)[:2], margin=0.2)
        first = float(loss) if first is None else first
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        basis = cra.basis_vectors
        assert torch.allclose(basis.T @ basis, torch.eye(8), atol=1e-4)
    assert float(loss) < first  # it did train
    out, _ = cra.encode(image, 0)
    assert out.shape == (12, 32) and torch.allclose(out.norm(dim=-1), torch.ones(12), atol=1e-5)


def test_lsu_puts_both_modalities_on_one_codebook_with_a_straight_through_gradient():
    from revtaf.model.uar import LatentSpaceUnifier

    torch.manual_seed(0)
    lsu = LatentSpaceUnifier(width=8, num_codes=16)
    z = torch.randn(5, 8, requires_grad=True)
    q, index, loss = lsu(z)
    assert torch.allclose(q, lsu.codebook.weight[index]) and loss > 0  # every output is a code
    q.sum().backward()
    assert torch.equal(z.grad, torch.ones_like(z))  # straight through
    exact = lsu.codebook.weight[[3, 7]].detach()
    q, index, loss = lsu(exact)
    assert index.tolist() == [3, 7] and float(loss) == 0.0
    cra = CrossModalAligner(UARConfig(cra_width=8, cra_basis=4, lsu=True, lsu_codes=16), image_dim=24, text_dim=16)
    image_codes = cra.unifier(cra.inputs[0](torch.randn(6, 24)))[1]
    text_codes = cra.unifier(cra.inputs[1](torch.randn(6, 16)))[1]
    assert image_codes.max() < 16 and text_codes.max() < 16  # one shared token space
    assert float(cra(torch.randn(6, 24), torch.randn(6, 16))[2]) > 0
    with pytest.raises(ValueError, match="uar.lsu needs uar.cra"):
        tiny_config(uar=UARConfig(lsu=True))


def test_a_method_name_switches_on_all_of_it():
    from revtaf.model.config import with_plugins

    uar = with_plugins(tiny_config(), ["uar"])
    assert (uar.uar.cra, uar.uar.lsu, uar.uar.tir, uar.uar.two_stage, uar.tisr.enabled) == (True,) * 4 + (False,)
    assert with_plugins(tiny_config(), ["tisr"]).tisr.enabled and not with_plugins(tiny_config(), ["tisr"]).uar.cra
    assert with_plugins(tiny_config(), ["uar.cra"]).uar.tir is False  # one module stays one module
    with pytest.raises(ValueError, match="unknown plug-in 'cra'"):
        with_plugins(tiny_config(), ["cra"])


def test_triplet_loss_is_zero_only_when_the_margin_holds():
    aligned = torch.eye(4, 8)  # pair i: the same unit vector; other pairs orthogonal (similarity 0)
    assert float(triplet_loss(aligned, aligned, margin=0.5)) == 0.0
    assert float(triplet_loss(aligned, aligned, margin=1.5)) > 0  # 1 − 0 < 1.5: the margin does not hold
    shuffled = aligned[[1, 2, 3, 0]]
    assert float(triplet_loss(aligned, shuffled, margin=0.5)) > float(triplet_loss(aligned, aligned, margin=0.5))
    close = torch.nn.functional.normalize(aligned + 0.9 * aligned[[1, 0, 3, 2]], dim=-1)  # a negative at cos .67
    assert float(triplet_loss(aligned, close, margin=0.5)) > 0
    assert float(triplet_loss(aligned[:1], aligned[:1], margin=0.5)) == 0.0  # no negative in a batch of one


def test_cra_switch_off_is_todays_model_and_on_trains_the_visual_encoder(tokenizer):
    torch.manual_seed(0)
    plain = REVTAF(tiny_config(), tokenizer, triplet_table=torch.randn(75, 51, 2, D))
    assert plain.cra is None and not any(k.startswith("cra.") for k in plain.state_dict())
    assert tiny_config(uar=UARConfig(cra=False)).to_dict() == tiny_config().to_dict()

    torch.manual_seed(0)
    model = REVTAF(tiny_config(uar=UARConfig(cra=True, lsu=True, cra_width=16, cra_basis=4, lsu_codes=32)),
                   tokenizer, triplet_table=torch.randn(75, 51, 2, D))
    model.set_bank(**random_bank(30))
    model.train()
    losses = model(train_batch(model, B=3))
    assert set(losses) == {"loss", "loss_lm", "loss_cls", "loss_rank", "loss_fcc", "loss_prompt", "loss_cra",
                           "loss_lsu"}
    losses["loss"].backward()
    assert model.cra.modality_gate.grad.abs().sum() > 0 and model.cra.unifier.codebook.weight.grad.abs().sum() > 0
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.visual.parameters())
    assert model.num_parameters()["uar_cra"] > 0
    assert list(model.plugins) == ["UAR CRA + LSU"] and model.ablations == {"grp", "lrp"}  # nothing at inference


def test_cra_is_saved_with_the_model(tokenizer, tmp_path):
    torch.manual_seed(0)
    model = REVTAF(tiny_config(uar=UARConfig(cra=True, cra_width=16, cra_basis=4)), tokenizer,
                   triplet_table=torch.randn(75, 51, 2, D))
    model.set_bank(**random_bank(30))
    model.save_pretrained(tmp_path)
    loaded = REVTAF.from_pretrained(tmp_path)
    assert loaded.cfg.uar.cra and torch.allclose(loaded.cra.basis_vectors, model.cra.basis_vectors)
    with pytest.raises(ValueError, match="cra_basis"):
        tiny_config(uar=UARConfig(cra=True, cra_width=8, cra_basis=9))


def test_tir_mask_starts_as_todays_decoder_and_changes_the_cross_attention(tokenizer):
    cfg = tiny_config(uar=UARConfig(tir=True))
    torch.manual_seed(0)
    plain = REVTAF(tiny_config(), tokenizer, triplet_table=torch.randn(75, 51, 2, D))
    torch.manual_seed(0)
    tir = REVTAF(cfg, tokenizer, triplet_table=torch.randn(75, 51, 2, D))
    biases = {k: v for k, v in tir.state_dict().items() if k.endswith("tir_bias")}
    assert len(biases) == cfg.decoder.num_layers and not any("tir" in k for k in plain.state_dict())
    assert tir.load_state_dict(plain.state_dict(), strict=False).missing_keys == sorted(biases)
    for model in (plain, tir):
        model.set_bank(**random_bank(30))
        model.eval()
    batch = train_batch(tir, B=2)
    memory = tir.fvtaf(*(lambda p: (p[0], tir.lrp(batch["lrp_position"], batch["lrp_exists"]),
                                    *tir.bank_grp(batch["grp_index"])))(tir.visual(batch["images"]))).fc
    assert memory.shape[1] == next(iter(biases.values())).shape[1]  # one mask entry per memory position
    args = (batch["input_ids"], batch["attention_mask"], memory)
    with torch.no_grad():
        # a zero mask computes today's decoder (up to float rounding: SDPA takes another kernel with a mask)
        torch.testing.assert_close(tir.decoder(*args), plain.decoder(*args), rtol=0, atol=1e-5)
        # ... so a mask still at zero offers no switch, and the model card says why
        assert not tir.tir_trained and tir.ablations == {"grp", "lrp"} and "zero" in tir.plugins["UAR TIR"]
        layer = tir.decoder.lm.bert.encoder.layer[0].crossattention.self
        layer.tir_bias[:, 0] = -30.0  # hide memory position 0 from every head
        assert not torch.allclose(tir.decoder(*args), plain.decoder(*args))
        # the inference ablation leaves the mask out for this thread only: today's decoder again inside the block
        with tir_disabled():
            torch.testing.assert_close(tir.decoder(*args), plain.decoder(*args), rtol=0, atol=1e-5)
            seen = []
            worker = threading.Thread(target=lambda: seen.append(tir.decoder(*args)))
            worker.start()
            worker.join()
        assert not torch.allclose(seen[0], plain.decoder(*args))  # another thread kept the mask
    assert tir.predict(images(1, seed=3)[0]).report.strip()  # beam search runs through the masked attention
    assert tir.ablations == {"grp", "lrp", "tir"} and plain.ablations == {"grp", "lrp"}
    assert tir.predict(images(1, seed=3)[0], ablate=frozenset({"tir"})).ablation == {"grp": True, "lrp": True,
                                                                                      "tir": False}
    assert tir.plugins == {"UAR TIR": "a learned mask on the decoder's cross-attention"} and plain.plugins == {}
    with pytest.raises(ValueError, match="no tir to switch off"):
        plain.predict(images(1, seed=3)[0], ablate=frozenset({"tir"}))
    with torch.no_grad():
        layer.tir_bias.zero_()
    with pytest.raises(ValueError, match="TIR mask is zero"):
        tir.predict(images(1, seed=3)[0], ablate=frozenset({"tir"}))


def test_two_stages_move_the_gradient_from_cra_to_tir(tokenizer):
    torch.manual_seed(0)
    cfg = tiny_config(uar=UARConfig(cra=True, tir=True, two_stage=True, cra_width=16, cra_basis=4))
    model = REVTAF(cfg, tokenizer, triplet_table=torch.randn(75, 51, 2, D))
    model.set_bank(**random_bank(30))
    model.train()
    tir = [p for n, p in model.decoder.named_parameters() if n.endswith("tir_bias")]

    def gradients(epoch: int) -> tuple[bool, bool, bool]:
        model.zero_grad(set_to_none=True)
        model.on_epoch_start(epoch, epochs=4)
        model(train_batch(model, B=3))["loss"].backward()
        return (model.cra.modality_gate.grad is not None, all(p.grad is not None for p in tir),
                model.classifier.parameters().__next__().grad is not None)

    assert gradients(1) == gradients(2) == (True, False, True)  # stage 1: CRA (and the rest), TIR frozen
    assert gradients(3) == gradients(4) == (False, True, True)  # stage 2: TIR (and the rest), CRA frozen
    one_stage = REVTAF(replace(cfg, uar=replace(cfg.uar, two_stage=False)), tokenizer,
                       triplet_table=torch.randn(75, 51, 2, D))
    one_stage.on_epoch_start(1, epochs=4)
    assert one_stage.cra.modality_gate.requires_grad and all(
        p.requires_grad for n, p in one_stage.decoder.named_parameters() if n.endswith("tir_bias"))



@pytest.mark.parametrize("preset", ["cpu", "paper"])
def test_both_presets_build_with_every_plugin_on(preset):
    from revtaf.switches import PLUGINS
    from revtaf.model.random_init import random_model

    model = random_model(preset, bank_size=64, plugins=PLUGINS)
    counts = model.num_parameters()
    assert counts["tisr"] > 0 and counts["uar_cra"] > 0 and model.cra.unifier is not None
    assert all(layer.crossattention.self.tir_bias.shape[1] == 49 for layer in model.decoder.lm.bert.encoder.layer)
    assert model.tisr(torch.randn(1, 49, model.visual.out_dim)).shape[-1] == model.cfg.decoder.hidden_size
