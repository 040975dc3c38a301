import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from revtaf.model.config import PromptConfig
from revtaf.model.disease_prompts import (
    DiseasePromptClassifier,
    cls_loss,
    initial_base_probs,
    predict_states,
    prompt_text,
    update_base_probs,
)


def small_classifier(memory_dim=32):
    torch.manual_seed(0)
    return DiseasePromptClassifier(PromptConfig(d_model=32, nhead=4, dim_feedforward=64), visual_dim=24,
                                   memory_dim=memory_dim)


def test_shapes_init_and_memory_dependence():
    clf = small_classifier(memory_dim=20).eval()
    pooled, memory = torch.randn(3, 24), torch.randn(3, 21, 20)
    logits = clf(pooled, memory)
    assert logits.shape == (3, 4, 18)
    assert clf.cls_head.weight.std().item() == pytest.approx(1e-3, rel=0.1)
    assert torch.all(clf.cls_head.bias == 0)
    # The retrieved memory changes the prediction.
    assert not torch.allclose(logits, clf(pooled, torch.randn(3, 21, 20)))
    with pytest.raises(ValueError):
        clf(pooled, memory[:2])


def test_backward_reaches_all_parameters():
    clf = small_classifier()
    loss = cls_loss(clf(torch.randn(4, 24), torch.randn(4, 21, 32)), torch.randint(0, 4, (4, 18)),
                    torch.full((18,), 0.5))
    loss.backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in clf.parameters())


def test_cls_loss_adjusts_only_positive_state():
    logits = torch.randn(2, 4, 18)
    labels = torch.randint(0, 4, (2, 18))
    base = torch.rand(18) * 0.9 + 0.05
    expected = logits.clone()
    expected[:, 1] += base.log()
    assert torch.allclose(cls_loss(logits, labels, base), F.cross_entropy(expected, labels))
    assert torch.allclose(cls_loss(logits, labels, torch.ones(18)), F.cross_entropy(logits, labels))


def test_predict_states():
    logits = torch.zeros(1, 4, 18)
    logits[0, 2, :] = 5.0
    logits[0, 1, 3] = 9.0
    probs, states = predict_states(logits)
    assert probs.shape == (1, 18, 4) and torch.allclose(probs.sum(-1), torch.ones(1, 18))
    assert states[0, 3] == 1 and (states[0, [0, 1, 2, 4]] == 2).all()


def test_update_base_probs_and_nan_guard():
    labels = torch.full((4, 14), 2)
    labels[0, 0] = labels[1, 0] = 1  # class 0: mean P(pos) = 0.6
    labels[2, 1] = 1  # class 1: 0.3
    p_pos = torch.zeros(4, 14)
    p_pos[0, 0], p_pos[1, 0], p_pos[2, 1] = 0.8, 0.4, 0.3
    prev = torch.linspace(0.1, 1.0, 18)
    new = update_base_probs(p_pos, labels, prev)
    assert torch.isfinite(new).all()
    assert new[0] == pytest.approx(1.0) and new[1] == pytest.approx(0.5)
    assert torch.allclose(new[2:14], prev[2:14])  # no positives: previous value kept
    assert torch.all(new[14:] == 1)
    # No positive anywhere: everything kept.
    assert torch.allclose(update_base_probs(p_pos, torch.zeros(4, 14), prev)[:14], prev[:14])
    with pytest.raises(ValueError):
        update_base_probs(p_pos[:, :10], labels[:, :10], prev)


def test_initial_base_probs():
    labels = torch.full((10, 18), 2)
    labels[:5, 0] = 1
    labels[:1, 1] = 1
    base = initial_base_probs(labels)
    assert base.shape == (18,)
    assert base[0] == 1.0 and base[1] == pytest.approx(0.2) and base[14:].eq(1).all()
    assert math.isfinite(base.log().sum().item())  # class without positives floored, not 0


def test_prompt_text():
    states = [0, 1, 2, 3] * 4 + [1, 1]
    assert prompt_text(states) == " ".join(["[BLA] [POS] [NEG] [UNC]"] * 4 + ["[POS] [POS]"])
    assert prompt_text(torch.tensor(states)) == prompt_text(states)
    with pytest.raises(ValueError):
        prompt_text([0] * 17)
    with pytest.raises(ValueError):
        prompt_text([4] * 18)


def test_thresholds_make_a_disease_positive_below_the_argmax():
    from revtaf.model.disease_prompts import NEVER_POSITIVE, choose_thresholds

    logits = torch.zeros(2, 4, 18)
    logits[:, 2] = 2.0  # negative is the argmax everywhere
    logits[0, 1, 3] = 1.5  # study 0: P(positive) of disease 3 is high, though still below negative
    probs, argmax_states = predict_states(logits)
    assert (argmax_states == 2).all()
    thresholds = [None] * 18
    thresholds[3] = float(probs[0, 3, 1]) - 1e-6
    _, states = predict_states(logits, thresholds)
    assert states[0, 3] == 1 and states[1, 3] == 2 and (states[:, :3] == 2).all()
    # held back by its threshold, a disease whose P(positive) beats P(negative) is left blank, not called negative
    logits[0, 1, 3] = 2.5
    probs, _ = predict_states(logits)
    thresholds[3] = float(probs[0, 3, 1]) + 1e-3
    assert probs[0, 3, 1] > probs[0, 3, 2]
    assert predict_states(logits, thresholds)[1][0, 3] == 0
    # chosen on held-out data: the threshold that separates the positives best
    p_pos = torch.rand(40, 18, generator=torch.Generator().manual_seed(0)).numpy()
    positive = p_pos > 0.7
    positive[:, 5] = False
    positive[:3, 5] = True
    positive[:, 6] = False
    chosen = choose_thresholds(p_pos, positive, min_positives=5)
    assert 0.6 < chosen[0] <= 0.75
    # a rare class gets only the cap: at most 2x its 3 positives, and never below 0.5
    assert chosen[5] >= 0.5 and (p_pos[:, 5] >= chosen[5]).sum() <= 6
    assert chosen[6] == NEVER_POSITIVE and not (p_pos[:, 6] >= chosen[6]).any()  # no positive on the split
    # a class the classifier does not separate: its F1 optimum calls many; the cap keeps it to 2x the positives
    chance = np.random.default_rng(1).random((300, 18))
    rare = np.zeros((300, 18), dtype=bool)
    rare[:6] = True
    assert (chance[:, 0] >= choose_thresholds(chance, rare, max_rate=1e9)[0]).sum() > 12
    assert (chance[:, 0] >= choose_thresholds(chance, rare)[0]).sum() <= 12
    with pytest.raises(ValueError):
        predict_states(logits, [0.5] * 3)
