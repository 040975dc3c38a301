"""LRE: hyperbolic MLP, closed-form distances vs geoopt, ranking loss, chunked retrieval."""

import geoopt
import pytest
import torch
import torch.nn.functional as F

from revtaf.model.lre import (
    HypAct,
    HypLinear,
    LearnableRetrievalEnhancer,
    ReferenceDatabase,
    label_hamming,
    poincare_dist_matrix,
    rank_loss,
)

C = 0.01


def ball_points(n, d, dtype=torch.float32, seed=0):
    """Points spread over the ball of radius 10, some close to the boundary."""
    g = torch.Generator().manual_seed(seed)
    ball = geoopt.PoincareBall(c=torch.tensor(C, dtype=dtype))
    tangent_norm = 24 * torch.rand(n, 1, generator=g, dtype=dtype)  # artanh-scale up to 24·√c = 2.4
    return ball.expmap0(F.normalize(torch.randn(n, d, generator=g, dtype=dtype), dim=-1) * tangent_norm)


@pytest.mark.parametrize("dtype,rtol", [(torch.float64, 1e-9), (torch.float32, 2e-3)])
def test_dist_matrix_agrees_with_geoopt(dtype, rtol):
    ball = geoopt.PoincareBall(c=torch.tensor(C, dtype=torch.float64))
    x, y = ball_points(7, 16, dtype=torch.float64), ball_points(11, 16, dtype=torch.float64, seed=1)
    assert x.norm(dim=-1).max() > 9.0  # the test covers near-boundary points
    ref = ball.dist(x[:, None, :], y[None, :, :])  # geoopt: 2/√c artanh(√c ‖(−x) ⊕ y‖)
    got = poincare_dist_matrix(x.to(dtype), y.to(dtype), C, dtype=dtype)
    assert got.dtype == dtype and got.shape == (7, 11)
    torch.testing.assert_close(got.double(), ref, rtol=rtol, atol=1e-4 if dtype == torch.float32 else 1e-9)
    # the norm under the artanh is geoopt's Möbius addition
    mob = ball.mobius_add(-x[:, None, :], y[None, :, :], project=False).norm(dim=-1)
    torch.testing.assert_close(torch.tanh(got.double() * C**0.5 / 2) / C**0.5, mob, rtol=rtol, atol=1e-4)


def test_dist_matrix_self_distance_and_symmetry():
    x = ball_points(5, 8)
    d = poincare_dist_matrix(x, x, C)
    assert torch.allclose(d, d.T, atol=1e-3)
    assert d.diagonal().abs().max() < 0.05  # float32 cancellation only
    assert (d + torch.eye(5) > 0).all()


def test_hyplinear_hypact_use_geoopt_and_stay_in_ball():
    torch.manual_seed(0)
    lin, act = HypLinear(6, 4, C), HypAct(C)
    with torch.no_grad():
        lin.bias.normal_()
    ball = geoopt.PoincareBall(c=C)
    x = ball.expmap0(torch.randn(3, 6) * 30)
    mv = ball.projx(ball.mobius_matvec(lin.weight, x))
    expected = ball.projx(ball.mobius_add(mv, ball.projx(ball.expmap0(lin.bias))))
    torch.testing.assert_close(lin(x), expected)
    torch.testing.assert_close(act(x), ball.projx(ball.expmap0(torch.relu(ball.logmap0(x)))))
    assert lin(x).norm(dim=-1).max() <= (1 - 4e-3) / C**0.5 + 1e-4
    # curvature stays out of the parameter list and state dict
    assert [n for n, _ in lin.named_parameters()] == ["weight", "bias"]
    assert set(lin.state_dict()) == {"weight", "bias"}


def test_lre_forward_shapes_ball_and_grad():
    torch.manual_seed(0)
    lre = LearnableRetrievalEnhancer(in_dim=75, hidden_dim=32, num_layers=2, c=C)
    assert len([m for m in lre.layers if isinstance(m, HypLinear)]) == 2
    assert lre.layers[0].weight.shape == (32, 75) and torch.all(lre.layers[0].bias == 0)
    scores = torch.randn(4, 75, requires_grad=True)
    H = lre(scores)
    assert H.shape == (4, 32) and H.dtype == torch.float32
    assert (H.norm(dim=-1) < 1 / C**0.5).all()
    rank_loss(H, torch.randint(0, 4, (4, 18)), lre.c).backward()
    assert lre.layers[0].weight.grad.abs().sum() > 0
    with pytest.raises(ValueError):
        lre(torch.randn(4, 74))


def test_label_hamming_counts_two_per_disagreeing_disease():
    a = torch.zeros(18, dtype=torch.long)
    b = a.clone()
    b[[0, 5, 17]] = torch.tensor([1, 2, 3])
    ham = label_hamming(torch.stack([a, b]))
    one_hot = F.one_hot(torch.stack([a, b]), 4).flatten(1)
    assert ham[0, 1] == 6 == (one_hot[0] ^ one_hot[1]).sum()
    assert ham[0, 0] == 0
    with pytest.raises(TypeError):
        label_hamming(torch.zeros(2, 18))
    with pytest.raises(ValueError):
        label_hamming(torch.full((2, 18), 4))


def test_rank_loss_targets_label_nearest_sample():
    # Sample 0's label-nearest neighbour is sample 2 (1 disease apart); sample 1 is 5 apart.
    labels = torch.zeros(3, 18, dtype=torch.long)
    labels[1, :5] = 1
    labels[2, 0] = 2
    H = ball_points(3, 8)
    D = poincare_dist_matrix(H, H, C)
    # Candidates after removing the diagonal: row0 -> [1, 2], row1 -> [0, 2], row2 -> [0, 1]
    logits = -torch.stack([D[0, [1, 2]], D[1, [0, 2]], D[2, [0, 1]]])
    # row0 target: sample 2 (column 1); row1: Ham to 0 = 10, to 2 = 10 -> first index (column 0);
    # row2: Ham to 0 = 2 -> column 0
    expected = F.cross_entropy(logits, torch.tensor([1, 0, 0]))
    torch.testing.assert_close(rank_loss(H, labels, C), expected, atol=1e-3, rtol=1e-3)
    # moving sample 2 onto sample 0 lowers the loss (its positive becomes the nearest)
    H2 = H.clone()
    H2[2] = H[0] * 0.99
    assert rank_loss(H2, labels, C) < rank_loss(H, labels, C)


def test_rank_loss_multi_positive_sums_over_ties():
    labels = torch.zeros(3, 18, dtype=torch.long)  # all tied at Hamming 0
    H = ball_points(3, 8)
    D = poincare_dist_matrix(H, H, C)
    first = rank_loss(H, labels, C)
    multi = rank_loss(H, labels, C, multi_positive=True)
    assert multi < first  # every candidate is positive -> log-sum-exp over all = 0 loss
    torch.testing.assert_close(multi, torch.tensor(0.0), atol=1e-6, rtol=0)
    logits = -torch.stack([D[0, [1, 2]], D[1, [0, 2]], D[2, [0, 1]]])
    torch.testing.assert_close(first, F.cross_entropy(logits, torch.zeros(3, dtype=torch.long)), atol=1e-3, rtol=1e-3)


@pytest.mark.parametrize("multi_positive", [False, True])
def test_rank_loss_no_nan_with_identical_rows(multi_positive):
    H = ball_points(4, 8)
    H = torch.cat([H, H[:1], H[:1]]).requires_grad_(True)  # rows 0, 4, 5 coincide
    labels = torch.randint(0, 4, (6, 18), generator=torch.Generator().manual_seed(0))
    loss = rank_loss(H, labels, C, multi_positive=multi_positive)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(H.grad).all()
    Hz = torch.zeros(2, 8, requires_grad=True)  # both at the origin
    rank_loss(Hz, labels[:2], C).backward()
    assert torch.isfinite(Hz.grad).all()


def brute_force(db, queries, k, exclude=None):
    d = poincare_dist_matrix(queries, db.embeddings.float(), db.c)
    if exclude:
        for b, ex in enumerate(exclude):
            d[b, list(ex)] = float("inf")
    return d.topk(k, dim=1, largest=False)


def test_database_chunked_search_equals_brute_force():
    emb = ball_points(103, 16, seed=3)
    db = ReferenceDatabase(emb, [f"s{i}" for i in range(103)], c=C)
    q = ball_points(4, 16, seed=4)
    ref_d, ref_i = brute_force(db, q, 5)
    for chunk in (7, 50, 103, 65536):
        d, i = db.search(q, k=5, chunk_size=chunk)
        assert torch.equal(i, ref_i), chunk
        torch.testing.assert_close(d, ref_d)
    exclude = [set(ref_i[0, :2].tolist()), set(), {0, 1, 2}, set(range(100))]
    d, i = db.search(q, k=5, chunk_size=7, exclude=exclude)
    ref_d, ref_i = brute_force(db, q, 5, exclude)
    assert torch.equal(i[:, :3], ref_i[:, :3]) and torch.isinf(d[3, 3:]).all()  # only 3 rows left for query 3
    assert not set(i[0].tolist()) & exclude[0]
    with pytest.raises(ValueError):
        db.search(q, k=104)
    with pytest.raises(ValueError):
        db.search(q[:, :8])


def test_int8_scan_finds_the_exact_neighbours_of_lre_embeddings():
    """The int8 index only picks a shortlist that is re-scored in float32: on LRE embeddings of entity scores (two
    of its 65,536-row chunks) it returns the exact search's neighbours and distances, exclusions included. It is
    an approximation: where a true neighbour's int8 score falls outside the shortlist, the results differ."""
    from revtaf.model.config import LREConfig

    torch.manual_seed(0)
    cfg = LREConfig()
    lre = LearnableRetrievalEnhancer(75, cfg.hidden_dim, cfg.num_layers, cfg.c).eval()
    n = 70_000
    scores = torch.rand(n, 75)
    exact_db = ReferenceDatabase.build(lre, scores, [str(i) for i in range(n)])
    with torch.no_grad():
        q = lre(torch.cat([scores[[3, 65_536, 69_999]] + 1e-3, torch.rand(13, 75)]))
    exclude = [set()] * 15 + [{int(exact_db.search(q[15:], k=1)[1][0, 0])}]
    ref_d, ref_i = exact_db.search(q, k=5, exclude=exclude)
    fast = ReferenceDatabase(exact_db.embeddings, exact_db.ids, c=exact_db.c).build_int8_index()
    d, i = fast.search(q, k=5, exclude=exclude)
    assert torch.equal(i, ref_i) and torch.equal(i[:3, 0], torch.tensor([3, 65_536, 69_999]))
    torch.testing.assert_close(d, ref_d)
    assert not set(i[15].tolist()) & exclude[15]


def test_database_build_save_load(tmp_path):
    torch.manual_seed(0)
    lre = LearnableRetrievalEnhancer(hidden_dim=16)
    scores = torch.randn(10, 75)
    db = ReferenceDatabase.build(lre, scores, [str(i) for i in range(10)], batch_size=3)
    with torch.no_grad():
        torch.testing.assert_close(db.embeddings, lre(scores))
    d, i = db.search(lre(scores[[7]]).detach(), k=1)
    assert i.item() == 7 and d.item() < 0.05
    db.save(tmp_path / "db.safetensors")
    db2 = ReferenceDatabase.load(tmp_path / "db.safetensors")
    assert db2.ids == db.ids and db2.c == C and torch.equal(db2.embeddings, db.embeddings)
    with pytest.raises(ValueError):
        ReferenceDatabase(db.embeddings, db.ids[:-1])


def test_database_mimic_size_fp16():
    """A 270,790 × 512 fp16 database (MIMIC train size) searched in bounded memory."""
    n, d = 270_790, 512
    g = torch.Generator().manual_seed(0)
    # A tiled random block plus 16 per-row random columns: every row distinct, built in a fraction of
    # the time a full random fill takes. Norms ≈ 3.9, inside the radius-10 ball.
    emb = torch.empty(n, d, dtype=torch.float16)
    emb[:, 16:] = (torch.rand(4096, d - 16, generator=g) * 0.6 - 0.3).half().repeat(n // 4096 + 1, 1)[:n]
    emb[:, :16] = (torch.rand(n, 16, generator=g) * 0.6 - 0.3).half()
    db = ReferenceDatabase(emb, [str(i) for i in range(n)], c=C)
    planted = torch.tensor([5, 131_072, 270_789])  # first chunk, chunk boundary, last row
    q = emb[planted].float() + 1e-3
    dist, idx = db.search(q, k=3)  # 5 chunks of 65,536
    assert torch.equal(idx[:, 0], planted)
    one_chunk_d, one_chunk_i = db.search(q, k=3, chunk_size=n)  # plain top-k over all rows
    assert torch.equal(idx, one_chunk_i)
    torch.testing.assert_close(dist, one_chunk_d)
    for b in range(3):  # distances are re-scored exactly (float64 reference)
        ref = poincare_dist_matrix(q[b : b + 1], emb[idx[b]], C, dtype=torch.float64)[0]
        torch.testing.assert_close(dist[b].double(), ref, rtol=1e-4, atol=1e-5)
    assert dist[0, 0] < 0.1 and (dist[:, 1] > 1).all()


def test_standardize_is_the_lre_of_z_scores_and_spreads_close_inputs():
    torch.manual_seed(0)
    plain = LearnableRetrievalEnhancer(hidden_dim=16)
    std = LearnableRetrievalEnhancer(hidden_dim=16, standardize=True)
    std.load_state_dict(plain.state_dict(), strict=False)  # same weights; the stats buffers stay unset
    with pytest.raises(RuntimeError):
        plain.set_input_stats(torch.rand(4, 75))
    # near-constant scores, as an offline entity model gives: median per-entity std 0.006 around 0.04
    scores = 0.04 + 0.006 * torch.randn(64, 75, generator=torch.Generator().manual_seed(1))
    std.set_input_stats(scores)
    z = (scores - scores.mean(0)) / scores.std(0)
    with torch.no_grad():
        torch.testing.assert_close(std(scores), plain(z))
        spread_plain = poincare_dist_matrix(plain(scores), plain(scores), C).mean()
        spread_std = poincare_dist_matrix(std(scores), std(scores), C).mean()
    assert spread_std > 20 * spread_plain  # distances the ranking loss can work with
    with pytest.raises(ValueError):
        std.set_input_stats(scores[:1])
