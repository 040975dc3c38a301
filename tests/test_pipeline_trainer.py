"""The training loop's recipe pieces: schedule, no-decay groups, clipping, resumable checkpoints, logging."""

from __future__ import annotations

import json
import math

import pytest
import torch
from torch.utils.data import TensorDataset

from revtaf_train.plots import moving_average, plot_run
from revtaf_train.trainer import (
    JsonlLog,
    ResumableSampler,
    TrainConfig,
    Trainer,
    build_optimizer,
    lr_at,
    no_decay,
    selection_score,
)


def test_schedule_matches_the_authors_values():
    cfg = TrainConfig.paper()
    spe = 15043  # MIMIC-CXR iterations per epoch at batch 18
    assert lr_at(0, spe, cfg) == pytest.approx(5e-7)
    assert lr_at(1000, spe, cfg) == pytest.approx(5e-7 + (5e-5 - 5e-7) * 0.5)
    assert lr_at(2000, spe, cfg) == pytest.approx(5e-5)
    assert lr_at(spe - 1, spe, cfg) == pytest.approx(5e-5)  # rest of epoch 1 is constant
    expected = {2: 3.875e-5, 3: 2.75e-5, 4: 1.625e-5, 5: 8.01e-6, 6: 5e-6}  # docs/method.md §8.2
    for epoch, lr in expected.items():
        first, last = (epoch - 1) * spe, epoch * spe - 1
        assert lr_at(first, spe, cfg) == pytest.approx(lr, rel=1e-3)
        assert lr_at(last, spe, cfg) == lr_at(first, spe, cfg)  # piecewise constant within the epoch


class Toy(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = torch.nn.Linear(6, 12)
        self.ln = torch.nn.LayerNorm(12)
        self.drop = torch.nn.Dropout(0.3)  # makes the RNG state part of what a resume must restore
        self.head = torch.nn.Linear(12, 1)
        self.register_buffer("prior", torch.ones(3))
        self.fail_at: int | None = None
        self.calls = 0

    def forward(self, batch):
        self.calls += 1
        if self.fail_at is not None and self.calls == self.fail_at:
            raise KeyboardInterrupt("simulated kill")
        x, y = batch
        pred = self.head(self.drop(torch.relu(self.ln(self.lin(x))))).squeeze(-1)
        L_mse = torch.nn.functional.mse_loss(pred, y)
        return {"loss": L_mse * 1.0, "L_mse": L_mse}


def _data(n=40):
    g = torch.Generator().manual_seed(1)
    x = torch.randn(n, 6, generator=g)
    return TensorDataset(x, x[:, :3].sum(-1))


def test_no_decay_groups_follow_the_authors_rule():
    model = Toy()
    opt = build_optimizer(model, TrainConfig())
    decayed = {id(p) for p in opt.param_groups[0]["params"]}
    names = {n for n, p in model.named_parameters() if id(p) in decayed}
    assert names == {"lin.weight", "head.weight"}
    assert opt.param_groups[1]["weight_decay"] == 0.0 and opt.param_groups[0]["weight_decay"] == 0.05
    assert no_decay("decoder.bn.weight", torch.zeros(3, 3)) and not no_decay("proj.weight", torch.zeros(3, 3))


def _cfg(**kw):
    base = dict(epochs=3, batch_size=8, lr=1e-2, min_lr=1e-3, warmup_start_lr=1e-4, warmup_steps=3,
                checkpoint_minutes=0.0)  # checkpoint after every step
    return TrainConfig(**{**base, **kw})


def _fit(tmp, fail_at=None, validate=None):
    torch.manual_seed(0)
    model = Toy()
    model.fail_at = fail_at
    trainer = Trainer(model, _data(), None, _cfg(), out=tmp, validate=validate)
    trainer.fit()
    return model, trainer


def test_killed_run_resumes_to_the_same_weights(tmp_path):
    straight, t1 = _fit(tmp_path / "a")
    with pytest.raises(KeyboardInterrupt):
        _fit(tmp_path / "b", fail_at=8)  # mid epoch 2 (5 steps per epoch)
    state = torch.load(tmp_path / "b" / "checkpoint.pt", weights_only=False)
    assert (state["epoch"], state["step_in_epoch"]) == (2, 2)
    resumed, t2 = _fit(tmp_path / "b")
    for k, v in straight.state_dict().items():
        torch.testing.assert_close(resumed.state_dict()[k], v, rtol=0, atol=0)
    assert t2.global_step == t1.global_step == 15
    events = [json.loads(x)["event"] for x in (tmp_path / "b" / "log.jsonl").read_text().splitlines()]
    assert "resume" in events and events.count("epoch") == 3


def test_gradients_are_clipped_by_value(tmp_path):
    model = Toy()
    trainer = Trainer(model, _data(), None, _cfg(clip_value=1e-3), out=tmp_path)
    x, y = _data()[:8]
    trainer.train_step((x, y * 1000))  # huge loss -> huge raw gradients
    assert max(p.grad.abs().max().item() for p in model.parameters() if p.grad is not None) <= 1e-3 * (1 + 1e-6)


def test_validation_selects_best_and_can_update_buffers(tmp_path):
    scores = iter([0.2, 0.5, 0.4])
    seen = []

    def validate(model, epoch):
        model.prior.fill_(epoch)  # e.g. the base-probability update
        seen.append(model.training)
        return {"CE_f1": next(scores)}

    model, trainer = _fit(tmp_path, validate=validate)
    assert trainer.best == 0.5 and seen == [False, False, False]
    assert [h.get("best", False) for h in trainer.history] == [True, True, False]
    assert model.prior.tolist() == [3.0, 3.0, 3.0]
    assert [round(h["val_CE_f1"], 2) for h in trainer.history] == [0.2, 0.5, 0.4]


def test_selection_can_sum_several_metrics(tmp_path):
    # epoch 2 wins on the sum although epoch 1 has the best CE_f1 and epoch 3 the best CIDEr
    rows = iter([{"CE_f1": 0.7, "CIDEr": 0.1}, {"CE_f1": 0.6, "CIDEr": 0.3}, {"CE_f1": 0.3, "CIDEr": 0.4}])
    trainer = Trainer(Toy(), _data(), None, _cfg(select_key="CE_f1+CIDEr"), out=tmp_path,
                      validate=lambda model, epoch: next(rows))
    trainer.fit()
    assert trainer.best == pytest.approx(0.9)
    assert [h.get("best", False) for h in trainer.history] == [True, True, False]
    assert selection_score({"CE_f1": 0.5}, "CE_f1+CIDEr") is None


def test_selection_skips_collapsed_epochs(tmp_path):
    # epoch 2 has the best score but wrote one report for every val study
    rows = iter([{"CE_f1": 0.5, "distinct_reports": 9}, {"CE_f1": 0.9, "distinct_reports": 1},
                 {"CE_f1": 0.6, "distinct_reports": 4}])
    trainer = Trainer(Toy(), _data(), None, _cfg(select_min_distinct=2), out=tmp_path,
                      validate=lambda model, epoch: next(rows))
    trainer.fit()
    assert trainer.best == 0.6
    assert [h.get("best", False) for h in trainer.history] == [True, False, True]


def test_too_small_dataset_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match="cannot fill one batch"):
        Trainer(Toy(), _data(5), None, _cfg(), out=tmp_path)


def test_sampler_skip_continues_the_same_permutation():
    ds = _data(20)
    s = ResumableSampler(ds, seed=3)
    s.set_epoch(2)
    full = list(s)
    s.set_epoch(2, skip=7)
    assert list(s) == full[7:] and len(s) == 13
    s.set_epoch(3)
    assert list(s) != full


def test_plots_from_log(tmp_path):
    log = JsonlLog(tmp_path / "log.jsonl")
    for i in range(1, 30):
        log("step", epoch=1 + i // 10, step=i, lr=1e-4, loss=1 / i, loss_lm=0.5 / i, loss_cls=0.1, loss_rank=0.2, loss_fcc=0.3)
    for e in (1, 2):
        log("epoch", epoch=e, train_loss=1 / e, val_BLEU_4=0.05 * e, val_CE_f1=0.1 * e)
    log("component_step", stage="text_encoder", step=1, loss=3.0)
    paths = plot_run(tmp_path / "log.jsonl", tmp_path / "plots")
    assert sorted(p.name for p in paths) == ["components.png", "losses.png", "val.png"]
    assert all(p.stat().st_size > 1000 for p in paths)
    assert moving_average([1, 2, 3, 4], 2).tolist() == [1, 1.5, 2.5, 3.5]
    assert math.isclose(moving_average([5.0], 10)[0], 5.0)


def test_resume_with_fewer_epochs_uses_the_new_schedule_at_once(tmp_path):
    torch.manual_seed(0)
    model = Toy()
    model.fail_at = 7  # killed mid epoch 2 of 3
    with pytest.raises(KeyboardInterrupt):
        Trainer(model, _data(), None, _cfg(), out=tmp_path).fit()
    shorter = _cfg(epochs=2)
    trainer = Trainer(Toy(), _data(), None, shorter, out=tmp_path)
    trainer.fit()
    steps = [json.loads(x) for x in (tmp_path / "log.jsonl").read_text().splitlines()]
    resumed = [e for e in steps if e["event"] == "step"][6:]  # the steps after the resume
    assert resumed and all(e["lr"] == pytest.approx(lr_at(e["step"] - 1, 5, shorter)) for e in resumed)
    assert trainer.global_step == 10
