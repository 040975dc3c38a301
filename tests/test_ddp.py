"""Two CPU processes with gloo train a tiny model for a few steps; their weights must stay identical.

This exercises the same path as `torchrun --nproc_per_node 2 -m revtaf_cli train ...`: `init_distributed`
reads the torchrun environment, the Trainer wraps the model in DistributedDataParallel and every rank reads
its own shard of the epoch permutation (so the ranks see different batches and only gradient averaging can
keep them in sync).
"""

from __future__ import annotations

import os

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch.utils.data import TensorDataset

from revtaf_train.trainer import TrainConfig, Trainer, init_distributed
from revtaf_bench.harness import free_port


class TinyModel(torch.nn.Module):
    """forward(batch) -> dict of losses, like REVTAF: a regression loss and a classification loss."""

    def __init__(self):
        super().__init__()
        self.net = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.LayerNorm(16), torch.nn.ReLU())
        self.reg = torch.nn.Linear(16, 1)
        self.cls = torch.nn.Linear(16, 3)

    def forward(self, batch):
        x, y, c = batch
        h = self.net(x)
        L_reg = torch.nn.functional.mse_loss(self.reg(h).squeeze(-1), y)
        L_cls = torch.nn.functional.cross_entropy(self.cls(h), c)
        return {"loss": L_reg + L_cls, "L_reg": L_reg, "L_cls": L_cls}


def _dataset():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(64, 8, generator=g)
    return TensorDataset(x, x.sum(-1), (x[:, 0] > 0).long() + (x[:, 1] > 0).long())


def _worker(rank: int, world: int, port: int, out: str):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), WORLD_SIZE=str(world),
                      RANK=str(rank), LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    info = init_distributed()
    # different seeds per rank: DDP must broadcast rank 0's initial weights
    torch.manual_seed(100 + rank)
    model = TinyModel()
    cfg = TrainConfig(epochs=2, batch_size=4, lr=1e-2, min_lr=1e-3, warmup_steps=2, checkpoint_minutes=1e9,
                      max_steps_per_epoch=3)
    trainer = Trainer(model, _dataset(), None, cfg, out=f"{out}/run", dist_info=info)
    trainer.fit()
    torch.save({k: v.clone() for k, v in model.state_dict().items()}, f"{out}/rank{rank}.pt")
    torch.save(list(iter(trainer.sampler)), f"{out}/indices{rank}.pt")
    dist.destroy_process_group()


def test_two_gloo_ranks_keep_identical_weights(tmp_path):
    mp.spawn(_worker, args=(2, free_port(), str(tmp_path)), nprocs=2, join=True)
    w0 = torch.load(tmp_path / "rank0.pt")
    w1 = torch.load(tmp_path / "rank1.pt")
    for k in w0:
        torch.testing.assert_close(w0[k], w1[k], rtol=0, atol=0, msg=f"{k} differs between ranks")
    # the weights moved away from the initialisation both ranks started from (rank 0's, broadcast by DDP)
    torch.manual_seed(100)
    init = TinyModel().state_dict()
    assert any(not torch.equal(init[k], w0[k]) for k in init)
    # each rank read its own half of the epoch permutation
    i0, i1 = torch.load(tmp_path / "indices0.pt"), torch.load(tmp_path / "indices1.pt")
    assert set(i0).isdisjoint(i1)
    # only rank 0 wrote the checkpoint and the log
    assert (tmp_path / "run" / "checkpoint.pt").is_file()
    assert (tmp_path / "run" / "log.jsonl").is_file()


@pytest.mark.parametrize("world", [1])
def test_init_distributed_single_process_is_a_no_op(world, monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", str(world))
    info = init_distributed()
    assert info.world == 1 and info.main and not dist.is_initialized()
