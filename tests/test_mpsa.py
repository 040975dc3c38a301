"""MPSA: Sinkhorn marginals and masking, the non-degenerate `ot` attention vs the uniform `official` one."""

import pytest
import torch
import torch.nn.functional as F

from revtaf.model.mpsa import MPSALayer, sinkhorn

L, D = 49, 32


def random_cost(P, R, S, seed=0):
    g = torch.Generator().manual_seed(seed)
    a = F.normalize(torch.randn(P, R, 8, generator=g), dim=-1)
    b = F.normalize(torch.randn(P, S, 8, generator=g), dim=-1)
    return 1 - a @ b.transpose(1, 2)  # 1 − cosine, in [0, 2]


def test_sinkhorn_meets_marginals_and_is_not_uniform():
    cost = random_cost(3, L, 10)
    mu = torch.full((3, L), 1 / L)
    nu = torch.full((3, 10), 1 / 10)
    plan = sinkhorn(cost, mu, nu)
    assert plan.shape == (3, L, 10) and plan.dtype == torch.float32
    torch.testing.assert_close(plan.sum(2), mu, atol=1e-4, rtol=0)
    torch.testing.assert_close(plan.sum(1), nu, atol=1e-4, rtol=0)
    assert (plan - 1 / (L * 10)).abs().max() > 1e-3  # cost-dependent, far from the independent coupling
    # cheaper cells get more mass
    assert plan[cost < 0.5].mean() > plan[cost > 1.5].mean()


def test_sinkhorn_zero_mass_columns_get_exactly_zero():
    cost = random_cost(2, L, 6, seed=1)
    cost[:, :, 4:] = -5.0  # the cheapest columns: would attract all mass if they were live
    nu = torch.tensor([[0.25] * 4 + [0, 0], [0.5, 0.5, 0, 0, 0, 0]])
    mu = torch.full((2, L), 1 / L)
    plan = sinkhorn(cost, mu, nu)
    assert torch.isfinite(plan).all()
    assert torch.all(plan[0, :, 4:] == 0) and torch.all(plan[1, :, 2:] == 0)
    torch.testing.assert_close(plan.sum(1), nu, atol=1e-4, rtol=0)
    torch.testing.assert_close(plan.sum(2), mu, atol=1e-4, rtol=0)


def test_sinkhorn_gradient_is_finite_with_masked_columns():
    cost = random_cost(2, 7, 5, seed=2).requires_grad_(True)
    nu = torch.tensor([[0.5, 0.5, 0, 0, 0], [0.2] * 5])
    plan = sinkhorn(cost, torch.full((2, 7), 1 / 7), nu)
    (plan * torch.randn_like(plan)).sum().backward()
    assert torch.isfinite(cost.grad).all() and cost.grad.abs().sum() > 0
    assert torch.all(cost.grad[0, :, 2:] == 0)


def test_sinkhorn_singleton_column_is_uniform_whatever_the_cost():
    """The official code's problem shape: [L × 1], mu = 1/L, nu = 1 -> plan ≡ 1/L (§6.3)."""
    cost = random_cost(4, L, 1, seed=3) * 3
    plan = sinkhorn(cost, torch.full((4, L), 1 / L), torch.ones(4, 1))
    torch.testing.assert_close(plan, torch.full_like(plan, 1 / L), atol=1e-6, rtol=1e-5)


def test_sinkhorn_runs_in_float32_under_autocast_and_validates():
    cost = random_cost(1, 5, 3).bfloat16()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        plan = sinkhorn(cost, torch.full((1, 5), 0.2), torch.full((1, 3), 1 / 3))
    assert plan.dtype == torch.float32
    with pytest.raises(ValueError):
        sinkhorn(cost.float(), torch.full((1, 5), 0.2), torch.full((1, 3), 0.5))  # unbalanced
    with pytest.raises(ValueError):
        sinkhorn(cost.float(), torch.full((1, 5), 0.2), torch.zeros(1, 3))
    with pytest.raises(ValueError):
        sinkhorn(cost.float(), torch.full((1, 4), 0.25), torch.full((1, 3), 1 / 3))


def make_inputs(B=2, T=12, seed=0):
    g = torch.Generator().manual_seed(seed)
    img = torch.randn(B, L, D, generator=g)
    txt = torch.randn(B, T, D, generator=g)
    mask = torch.ones(B, T, dtype=torch.bool)
    mask[1, 7:] = False  # sample 1 has 7 valid texts
    return img, txt, mask


def layer(mode, seed=0):
    torch.manual_seed(seed)
    return MPSALayer(D, 4 * D, dropout=0.1, mode=mode).eval()


def test_ot_layer_plan_marginals_masking_and_maps():
    img, txt, mask = make_inputs()
    out = layer("ot")(img, txt, mask)
    assert out.fused.shape == (2, L, D) and out.maps.shape == (2, 12, L) and out.plan.shape == (2, L, 12)
    torch.testing.assert_close(out.plan.sum(2), torch.full((2, L), 1 / L), atol=1e-4, rtol=0)
    nu = mask.float() / mask.sum(1, keepdim=True)
    torch.testing.assert_close(out.plan.sum(1), nu, atol=1e-4, rtol=0)
    assert torch.all(out.plan[1, :, 7:] == 0) and torch.all(out.maps[1, 7:] == 0)
    assert (out.plan[0] - 1 / (L * 12)).abs().max() > 1e-3
    # padded texts do not influence the valid sample's result at all
    txt2 = txt.clone()
    txt2[1, 7:] = 100.0
    torch.testing.assert_close(layer("ot")(img, txt2, mask).fused, out.fused)


def test_ot_layer_sample_without_valid_text_is_finite():
    img, txt, mask = make_inputs()
    mask[1] = False
    out = layer("ot")(img, txt, mask)
    assert torch.isfinite(out.fused).all() and torch.all(out.plan[1] == 0) and torch.all(out.maps[1] == 0)


def test_official_layer_is_uniform_and_patch_independent():
    img, txt, mask = make_inputs()
    mpsa = layer("official")
    out = mpsa(img, txt, mask)
    assert torch.all(out.plan == 1 / L)
    message, maps, _ = mpsa.attend(img, txt, mask)
    # every patch receives the same text vector Wproj((1/L)·Σ_t Wv txt_t)  (dropout off)
    torch.testing.assert_close(message, message[:, :1].expand_as(message))
    torch.testing.assert_close(message[:, 0], mpsa.out_proj(mpsa.v_proj(txt).sum(1) / L))
    # maps are the plain cosine similarities
    q = F.normalize(mpsa.q_proj(img), dim=-1)
    k = F.normalize(mpsa.k_proj(txt), dim=-1)
    torch.testing.assert_close(maps, k @ q.transpose(1, 2))
    # like the official code, the mask is ignored: padded texts are attended
    torch.testing.assert_close(mpsa(img, txt, None).fused, out.fused)


@pytest.mark.parametrize("mode", ["ot", "official"])
def test_query_key_gradient_only_in_ot_mode(mode):
    img, txt, mask = make_inputs()
    mpsa = layer(mode)
    out = mpsa(img, txt, mask)
    (out.fused * torch.randn_like(out.fused)).sum().backward()  # the fused path only, no map loss
    for proj in (mpsa.q_proj, mpsa.k_proj):
        grad = proj.weight.grad
        if mode == "ot":
            assert grad is not None and grad.abs().sum() > 1e-6
        else:
            assert grad is None or torch.all(grad == 0)
    assert mpsa.v_proj.weight.grad.abs().sum() > 0


def test_layer_rejects_bad_inputs():
    img, txt, mask = make_inputs()
    mpsa = layer("ot")
    with pytest.raises(TypeError):
        mpsa(img, txt, mask.long())
    with pytest.raises(ValueError):
        mpsa(img, txt[:, :, :8], mask)
    with pytest.raises(ValueError):
        mpsa(img, txt, mask[:, :5])
    with pytest.raises(ValueError):
        MPSALayer(D, D, mode="uniform")


def test_dustbin_takes_the_mass_of_a_text_no_patch_matches():
    # text 0 is far from every patch (cost 2 = anti-aligned), the others close (cost .2)
    cost = torch.full((1, L, 4), 0.2)
    cost[:, :, 0] = 2.0
    mu, nu = torch.full((1, L), 1 / L), torch.full((1, 4), 0.25)
    balanced = sinkhorn(cost, mu, nu)
    assert balanced[0, :, 0].sum() == pytest.approx(0.25, abs=1e-4)  # forced to land somewhere
    mpsa = MPSALayer(D, 4 * D, dropout=0.0, mode="ot", dustbin=True)
    plan = mpsa._with_dustbin(cost, mu, nu)
    assert plan.shape == (1, L, 4)
    assert plan[0, :, 0].sum() < 1e-3  # goes to the dustbin instead
    assert plan[0, :, 1:].sum(0).sub(0.25).abs().max() < 1e-3  # matched texts keep their mass
    assert torch.all(plan.sum(2) <= 1 / L + 1e-5)  # a patch sends at most its own mass


def test_dustbin_layer_learns_its_cost_and_is_absent_by_default():
    img, txt, mask = make_inputs()
    assert "dustbin_cost" not in layer("ot").state_dict()  # checkpoints without it keep loading
    torch.manual_seed(0)
    mpsa = MPSALayer(D, 4 * D, dropout=0.0, mode="ot", dustbin=True)
    out = mpsa(img, txt, mask)
    assert torch.all(out.plan.sum(2) <= 1 / L + 1e-5) and torch.all(out.maps[1, 7:] == 0)
    out.fused.sum().backward()
    assert mpsa.dustbin_cost.grad is not None and mpsa.dustbin_cost.grad.abs() > 0
    with pytest.raises(ValueError, match="dustbin"):
        MPSALayer(D, 4 * D, mode="official", dustbin=True)
