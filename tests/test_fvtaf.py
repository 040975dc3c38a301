"""FVTAF: shapes with 75 LRPs and masked GRPs, branch sharing and ablation, FCC wiring, q/k gradient."""

import pytest
import torch

from revtaf.model.fvtaf import FVTAF, FusionConfig

B, L, M, N = 2, 49, 75, 9
SMALL = dict(visual_dim=40, lrp_dim=24, grp_dim=16, d_model=32, dim_feedforward=64)


def make(seed=0, **kw):
    torch.manual_seed(seed)
    return FVTAF(FusionConfig(**{**SMALL, **kw})).eval()


def inputs(seed=0):
    g = torch.Generator().manual_seed(seed)
    patches = torch.randn(B, L, 40, generator=g)
    lrp = torch.randn(B, M, 24, generator=g)
    grp = torch.randn(B, N, 16, generator=g)
    mask = torch.ones(B, N, dtype=torch.bool)
    mask[1, 4:] = False
    return patches, lrp, grp, mask


@pytest.mark.parametrize("mpsa_mode", ["ot", "official"])
def test_shapes_and_global_first_concat(mpsa_mode):
    model = make(mpsa_mode=mpsa_mode)
    patches, lrp, grp, mask = inputs()
    out = model(patches, lrp, grp, mask)
    assert out.fc.shape == (B, L, 64)
    assert out.local_maps.shape == (B, M, L) and out.global_maps.shape == (B, N, L)
    assert out.tl.shape == (B, M, 32) and out.tg.shape == (B, N, 32)
    img = model.vision_proj(patches)
    layer = model.mpsa[0]
    torch.testing.assert_close(out.fc[..., :32], layer(img, model.txt_proj_global(grp), mask).fused)
    torch.testing.assert_close(out.fc[..., 32:], layer(img, model.txt_proj_local(lrp)).fused)
    if mpsa_mode == "ot":
        assert torch.all(out.global_maps[1, 4:] == 0)


def test_variable_n_and_mask():
    model = make()
    patches, lrp, grp, mask = inputs()
    for n in (1, 3, 20):
        g = torch.randn(B, n, 16)
        m = torch.ones(B, n, dtype=torch.bool)
        m[0, n // 2 + 1 :] = False
        out = model(patches, lrp, g, m)
        assert out.global_maps.shape == (B, n, L) and torch.isfinite(out.fc).all()
        assert torch.isfinite(model.loss(out, m).loss)


def test_branch_sharing_is_configurable():
    shared, separate = make(), make(share_branches=False)
    assert len(shared.mpsa) == 1 and len(separate.mpsa) == 2
    n_shared = sum(p.numel() for p in shared.parameters())
    n_layer = sum(p.numel() for p in shared.mpsa[0].parameters())
    assert sum(p.numel() for p in separate.parameters()) == n_shared + n_layer
    assert not any(k.startswith("mpsa.1.") for k in shared.state_dict())


def test_branch_ablation_keeps_fc_shape():
    model = make()
    patches, lrp, grp, mask = inputs()
    img = model.vision_proj(patches)
    no_local = model(patches, None, grp, mask)
    assert no_local.fc.shape == (B, L, 64) and no_local.local_maps is None and no_local.tl is None
    torch.testing.assert_close(no_local.fc[..., 32:], img)
    no_global = model(patches, lrp, None)
    assert no_global.global_maps is None and no_global.tg is None
    torch.testing.assert_close(no_global.fc[..., :32], img)
    for out in (no_local, no_global):
        fcc = model.loss(out, mask)
        assert fcc.loss == 0 and fcc.similarity is None
    both_off = model(patches, None, None)
    torch.testing.assert_close(both_off.fc, torch.cat([img, img], -1))


@pytest.mark.parametrize("fcc_mode", ["soft", "official"])
def test_loss_modes(fcc_mode):
    model = make(fcc_mode=fcc_mode)
    patches, lrp, grp, mask = inputs()
    out = model(patches, lrp, grp, mask)
    fcc = model.loss(out, mask)
    assert fcc.similarity.shape == (B, M, N) and fcc.overlap.shape == (B, M, N)
    assert 0 <= fcc.loss <= 1
    fcc.loss.backward()
    qk = model.mpsa[0].q_proj.weight.grad
    if fcc_mode == "soft":  # through the maps
        assert qk is not None and qk.abs().sum() > 0
    else:  # thresholded maps: FCC trains only the text projections
        assert qk is None
    assert model.txt_proj_local.weight.grad.abs().sum() > 0


@pytest.mark.parametrize("mpsa_mode", ["ot", "official"])
def test_query_key_gradient_through_fc(mpsa_mode):
    model = make(mpsa_mode=mpsa_mode)
    patches, lrp, grp, mask = inputs()
    out = model(patches, lrp, grp, mask)
    (out.fc * torch.randn_like(out.fc)).sum().backward()
    grads = [model.mpsa[0].q_proj.weight.grad, model.mpsa[0].k_proj.weight.grad]
    if mpsa_mode == "ot":
        assert all(g is not None and g.abs().sum() > 0 for g in grads)
    else:
        assert all(g is None or torch.all(g == 0) for g in grads)


@pytest.mark.parametrize("mpsa_mode,fcc_mode", [("ot", "soft"), ("official", "official")])
def test_bfloat16_autocast(mpsa_mode, fcc_mode):
    """Sinkhorn and FCC run in float32 inside autocast; an image without any valid GRP stays finite."""
    model = make(mpsa_mode=mpsa_mode, fcc_mode=fcc_mode).train()
    patches, lrp, grp, mask = inputs()
    mask[0] = False
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(patches, lrp, grp, mask)
        fcc = model.loss(out, mask)
    assert out.fc.dtype == torch.bfloat16 and fcc.loss.dtype == torch.float32
    (fcc.loss + out.fc.float().mean()).backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


def test_bad_inputs_and_config():
    model = make()
    patches, lrp, grp, mask = inputs()
    with pytest.raises(ValueError):
        model(patches[..., :10], lrp, grp, mask)
    with pytest.raises(ValueError):
        model(patches, lrp[..., :5], grp, mask)
    with pytest.raises(ValueError):
        model(patches, lrp, grp[:1], mask)
    with pytest.raises(ValueError):
        FusionConfig(mpsa_mode="sinkhorn")
    with pytest.raises(ValueError):
        FusionConfig(fcc_mode="hard")
