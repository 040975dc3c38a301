"""FCC loss: the paper's soft IoU (differentiable, masked) vs the official hard-threshold IoU."""

import pytest
import torch
import torch.nn.functional as F

from revtaf.model.fcc import fcc_loss

B, M, N, L, D = 2, 5, 4, 49, 16


def inputs(seed=0):
    g = torch.Generator().manual_seed(seed)
    maps_l = torch.randn(B, M, L, generator=g, requires_grad=True)
    maps_g = torch.randn(B, N, L, generator=g, requires_grad=True)
    tl = torch.randn(B, M, D, generator=g, requires_grad=True)
    tg = torch.randn(B, N, D, generator=g, requires_grad=True)
    return maps_l, maps_g, tl, tg


def test_soft_overlap_matches_hand_computation():
    maps_l, maps_g, tl, tg = inputs()
    out = fcc_loss(maps_l, maps_g, tl, tg, mode="soft")
    a = maps_l[1, 3]
    b = maps_g[1, 2]
    a = (a - a.min()) / (a.max() - a.min() + 1e-6)
    b = (b - b.min()) / (b.max() - b.min() + 1e-6)
    torch.testing.assert_close(out.overlap[1, 3, 2], torch.minimum(a, b).sum() / torch.maximum(a, b).sum())
    s = torch.sigmoid(F.cosine_similarity(tl[1, 3], tg[1, 2], dim=0))
    torch.testing.assert_close(out.similarity[1, 3, 2], s)
    torch.testing.assert_close(out.loss, (1 - out.similarity * out.overlap).mean())
    # identical maps overlap fully, whatever their scale
    same = fcc_loss(maps_l, maps_l[:, :N] * 3 + 1, tl, tg).overlap
    torch.testing.assert_close(same[:, torch.arange(N), torch.arange(N)], torch.ones(B, N), atol=1e-5, rtol=0)


def test_soft_gradient_reaches_the_maps():
    maps_l, maps_g, tl, tg = inputs()
    fcc_loss(maps_l, maps_g, tl, tg, mode="soft").loss.backward()
    assert maps_l.grad is not None and maps_l.grad.abs().sum() > 0
    assert maps_g.grad is not None and maps_g.grad.abs().sum() > 0
    assert tl.grad.abs().sum() > 0 and tg.grad.abs().sum() > 0


def test_official_has_no_gradient_to_the_maps():
    """The official ≥ 0.5 threshold cuts the graph: the maps get no gradient, only S (tl, tg) does.
    In soft mode (test above) the same maps do receive gradient."""
    maps_l, maps_g, tl, tg = inputs()
    fcc_loss(maps_l, maps_g, tl, tg, mode="official").loss.backward()
    assert maps_l.grad is None and maps_g.grad is None
    assert tl.grad.abs().sum() > 0


def test_official_binary_iou_uses_global_minmax_and_threshold():
    maps_l = torch.zeros(1, 2, 4)
    maps_g = torch.zeros(1, 1, 4)
    maps_l[0, 0] = torch.tensor([0.0, 0.0, 10.0, 10.0])  # global range [0, 10] -> bits 0011
    maps_l[0, 1] = torch.tensor([4.0, 4.0, 4.0, 4.0])  # 0.4 after the global min-max -> bits 0000
    maps_g[0, 0] = torch.tensor([1.0, 3.0, 3.0, 1.5])  # global range [1, 3] -> bits 0110
    t = torch.randn(1, 2, 8)
    out = fcc_loss(maps_l, maps_g, t, t[:, :1], mode="official", grid=2)
    torch.testing.assert_close(out.overlap, torch.tensor([[[1 / 3], [0.0]]]))
    # the soft mode normalises each map on its own: the constant map becomes all zero, overlap 0
    soft = fcc_loss(maps_l, maps_g, t, t[:, :1], mode="soft", grid=2).overlap
    assert soft[0, 1, 0] == 0 and 0 < soft[0, 0, 0] < 1


def test_official_upsamples_to_224():
    maps_l, maps_g, tl, tg = inputs()
    out = fcc_loss(maps_l, maps_g, tl, tg, mode="official", upsample=224)
    at_grid = fcc_loss(maps_l, maps_g, tl, tg, mode="official")
    assert out.overlap.shape == (B, M, N) and ((out.overlap >= 0) & (out.overlap <= 1)).all()
    assert not torch.equal(out.overlap, at_grid.overlap)  # computed on the 224² bilinear maps
    with pytest.raises(ValueError):
        fcc_loss(maps_l[..., :48], maps_g[..., :48], tl, tg, mode="official", upsample=224)


def test_soft_excludes_padded_grp_columns():
    maps_l, maps_g, tl, tg = inputs()
    mask = torch.tensor([[True, True, True, True], [True, True, False, False]])
    out = fcc_loss(maps_l, maps_g, tl, tg, grp_mask=mask)
    pair_loss = 1 - out.similarity * out.overlap
    expected = (pair_loss[0].mean() + pair_loss[1, :, :2].mean()) / 2
    torch.testing.assert_close(out.loss, expected)
    maps_g2, tg2 = maps_g.detach().clone(), tg.detach().clone()
    maps_g2[1, 2:] = 50 * torch.randn(2, L)
    tg2[1, 2:] = -tg2[1, 2:]
    torch.testing.assert_close(fcc_loss(maps_l, maps_g2, tl, tg2, grp_mask=mask).loss, out.loss)
    # an image with no valid GRP drops out of the mean; if none has one, the loss is zero
    none = fcc_loss(maps_l, maps_g, tl, tg, grp_mask=torch.zeros(B, N, dtype=torch.bool)).loss
    assert none == 0 and none.requires_grad


def test_fcc_rejects_bad_inputs():
    maps_l, maps_g, tl, tg = inputs()
    with pytest.raises(ValueError):
        fcc_loss(maps_l, maps_g, tl[:, :3], tg)
    with pytest.raises(ValueError):
        fcc_loss(maps_l, maps_g[..., :10], tl, tg)
    with pytest.raises(TypeError):
        fcc_loss(maps_l, maps_g, tl, tg, grp_mask=torch.ones(B, N))
    with pytest.raises(ValueError):
        fcc_loss(maps_l, maps_g, tl, tg, mode="hard")


def test_anchored_has_no_collapsed_minimum():
    """The soft loss is minimal when every map is one map; the anchored loss is not: its target comes from
    the frozen text embeddings, so identical maps (uniform overlap) cost more than maps that follow it."""
    g = torch.Generator().manual_seed(3)
    lrp_in, grp_in = torch.randn(1, M, D, generator=g), torch.randn(1, N, D, generator=g)
    tl, tg = torch.randn(1, M, D, generator=g), torch.randn(1, N, D, generator=g)
    same = torch.rand(1, 1, L, generator=g)
    collapsed = fcc_loss(same.expand(1, M, L), same.expand(1, N, L), tl, tg, mode="anchored",
                         anchors=(lrp_in, grp_in)).loss
    assert collapsed > 0.1
    # maps that follow the target: GRP n on its own cells, each LRP on the cells of its most similar GRP
    grp_maps = torch.zeros(1, N, L)
    for n in range(N):
        grp_maps[0, n, n * 10 : n * 10 + 10] = 1
    best = (F.normalize(lrp_in, dim=-1) @ F.normalize(grp_in, dim=-1).transpose(1, 2)).argmax(-1)[0]
    lrp_maps = grp_maps[0, best].unsqueeze(0)
    follows = fcc_loss(lrp_maps, grp_maps, tl, tg, mode="anchored", anchors=(lrp_in, grp_in)).loss
    assert follows < collapsed
    # and the soft (paper) loss prefers the collapse whatever the text says
    soft_collapsed = fcc_loss(same.expand(1, M, L), same.expand(1, N, L), tl, tg, mode="soft").loss
    assert soft_collapsed <= fcc_loss(lrp_maps, grp_maps, tl, tg, mode="soft").loss


def test_anchored_gradient_reaches_the_maps_not_the_anchors():
    maps_l, maps_g, tl, tg = inputs()
    lrp_in = torch.randn(B, M, D, requires_grad=True)
    grp_in = torch.randn(B, N, D, requires_grad=True)
    mask = torch.tensor([[True, True, False, False], [True, True, True, True]])
    out = fcc_loss(maps_l, maps_g, tl, tg, mask, mode="anchored", anchors=(lrp_in, grp_in))
    out.loss.backward()
    assert maps_l.grad.abs().sum() > 0 and maps_g.grad[0, :2].abs().sum() > 0
    assert maps_g.grad[0, 2:].abs().sum() == 0  # padded GRPs take no part
    assert lrp_in.grad is None and grp_in.grad is None
    with pytest.raises(ValueError, match="anchors"):
        fcc_loss(maps_l, maps_g, tl, tg, mode="anchored")
