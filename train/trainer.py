"""The REVTAF training loop (docs/method.md §8.2), resumable and DDP-ready.

Recipe as in the authors' code, every item a `TrainConfig` field:
- AdamW (betas 0.9/0.999, weight decay 0.05), no decay for parameters with ndim < 2 or whose name contains
  "bias", "ln" or "bn";
- LinearWarmupCosine stepped per iteration but piecewise per epoch (epochs 1-indexed): epoch 1 warms up
  linearly from `warmup_start_lr` to `lr` over `warmup_steps` iterations then stays at `lr`; epoch e >= 2 uses
  the constant `min_lr + (lr - min_lr) * 0.5 * (1 + cos(pi * e / epochs))`;
- gradient clipping by value (0.1);
- after every epoch a validation callback (generation + CE on val, base-probability update) whose
  `select_key` metric (or sum of "+"-joined metrics) picks the best checkpoint.

Resumability: a checkpoint (model, optimizer, scheduler, RNG states, epoch, step within the epoch, best score)
is written atomically after every epoch and every `checkpoint_minutes`. The sampler's order depends only on
(seed, epoch), so a run killed mid-epoch continues with exactly the batches it had not seen yet.

Scale-out: under `torchrun` (WORLD_SIZE > 1) the model is wrapped in DistributedDataParallel (gloo on CPU,
nccl on GPU) and each rank reads its shard of the epoch permutation. Mixed precision is used on GPU only.
Rank 0 alone validates, logs and writes checkpoints.
"""

from __future__ import annotations

import json
import math
import os
import random
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import timedelta
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Dataset, DistributedSampler
from tqdm.auto import tqdm


@dataclass
class TrainConfig:
    """Optimisation hyperparameters of one REVTAF training run. Defaults = the authors' MIMIC-CXR recipe."""

    epochs: int = 6
    batch_size: int = 18
    lr: float = 5e-5
    min_lr: float = 5e-6
    warmup_start_lr: float = 5e-7
    warmup_steps: int = 2000
    weight_decay: float = 0.05
    betas: tuple[float, float] = (0.9, 0.999)
    clip_value: float = 0.1
    seed: int = 456789
    num_workers: int = 0
    checkpoint_minutes: float = 10.0
    max_steps_per_epoch: int | None = None  # smoke runs: stop each epoch early
    select_key: str = "CE_f1"  # validation metric (higher is better) that picks the best model; "A+B" sums
    select_min_distinct: int = 1  # epochs writing fewer distinct val reports (a collapsed template) are not chosen

    @classmethod
    def paper(cls) -> TrainConfig:
        return cls()

    @classmethod
    def cpu(cls) -> TrainConfig:
        """~2,069 IU training studies per epoch on two cores: a short warmup fits inside epoch 1."""
        # Selects on the sum of the figures the quality bar names, never on an epoch that writes one report for
        # all of val (why each term is there: docs/training.md, "Why the cpu recipe's settings").
        return cls(epochs=16, batch_size=16, lr=3e-4, min_lr=1e-5, warmup_start_lr=3e-6, warmup_steps=50,
                   checkpoint_minutes=5.0,
                   select_key="BLEU_1+BLEU_4+METEOR+ROUGE_L+CIDEr+CE_f1+CE_f1_abnormal+adherence_positive",
                   select_min_distinct=2)

    @classmethod
    def from_dict(cls, d: dict) -> TrainConfig:
        d = dict(d)
        if "betas" in d:
            d["betas"] = tuple(d["betas"])
        return cls(**d)

    def to_dict(self) -> dict:
        return asdict(self)


# ------------------------------------------------------------------------------------------- optimiser


def selection_score(metrics: dict, key: str, min_distinct: int = 1) -> float | None:
    """`metrics[key]`, or the sum over a "+"-joined key; None when a part is missing (no validation) or when
    the epoch wrote fewer than `min_distinct` distinct reports (a model that writes one report for every study
    is a constant generator, whatever it scores)."""
    parts = [metrics.get(k) for k in key.split("+")]
    if any(p is None for p in parts) or metrics.get("distinct_reports", min_distinct) < min_distinct:
        return None
    return float(sum(parts))


def no_decay(name: str, param: torch.Tensor) -> bool:
    """The authors' rule: biases, norms (ndim < 2) and names containing bias/ln/bn are not decayed."""
    return param.ndim < 2 or "bias" in name or "ln" in name or "bn" in name


def build_optimizer(model: torch.nn.Module, cfg: TrainConfig) -> torch.optim.AdamW:
    decay, keep = [], []
    for name, param in model.named_parameters():
        if param.requires_grad:
            (keep if no_decay(name, param) else decay).append(param)
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": keep, "weight_decay": 0.0}]
    # fused: one kernel for all parameters instead of ~10 per tensor (the per-tensor loop dominated CPU steps)
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=tuple(cfg.betas), fused=True)


def lr_at(step: int, steps_per_epoch: int, cfg: TrainConfig) -> float:
    """Learning rate at global iteration `step` (0-indexed) of the LinearWarmupCosine schedule."""
    epoch = step // steps_per_epoch + 1
    if epoch == 1:
        if step >= cfg.warmup_steps:
            return cfg.lr
        return cfg.warmup_start_lr + (cfg.lr - cfg.warmup_start_lr) * step / max(cfg.warmup_steps, 1)
    return cfg.min_lr + (cfg.lr - cfg.min_lr) * 0.5 * (1.0 + math.cos(math.pi * epoch / cfg.epochs))


def build_scheduler(optimizer, steps_per_epoch: int, cfg: TrainConfig) -> torch.optim.lr_scheduler.LambdaLR:
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_at(s, steps_per_epoch, cfg) / cfg.lr)


# ------------------------------------------------------------------------------------------- sampling


class ResumableSampler(DistributedSampler):
    """DistributedSampler (also used with one replica) that can skip the first `skip` samples of an epoch.

    The order depends only on (seed, epoch), so skipping what a killed run already consumed reproduces the
    rest of its epoch exactly. `drop_last=True` in the DataLoader keeps every rank at the same step count.
    """

    def __init__(self, dataset: Dataset, num_replicas: int = 1, rank: int = 0, seed: int = 0):
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=True, seed=seed, drop_last=True)
        self.skip = 0

    def set_epoch(self, epoch: int, skip: int = 0) -> None:
        super().set_epoch(epoch)
        self.skip = skip

    def __iter__(self):
        return iter(list(super().__iter__())[self.skip :])

    def __len__(self) -> int:
        return self.num_samples - self.skip


# ------------------------------------------------------------------------------------------- distributed


@dataclass
class Dist:
    """The process's place in a torchrun job (world 1 when launched directly)."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.world > 1:
            dist.barrier()


def init_distributed(timeout_hours: float = 6.0) -> Dist:
    """Join the torchrun process group when WORLD_SIZE > 1: nccl on GPU, gloo on CPU.

    The timeout is long because rank 0 alone runs the cached preparation stages while the others wait.
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    cuda = torch.cuda.is_available()
    device = torch.device(f"cuda:{local_rank}" if cuda else "cpu")
    if world == 1:
        return Dist(device=device)
    if cuda:
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if cuda else "gloo", timeout=timedelta(hours=timeout_hours))
    return Dist(rank=dist.get_rank(), world=world, local_rank=local_rank, device=device)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _rng_state() -> dict:
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


# ------------------------------------------------------------------------------------------- logging


class JsonlLog:
    """Append-only JSON-lines log (one event per line, with wall time); no-op on ranks other than 0."""

    def __init__(self, path: str | Path, enabled: bool = True):
        self.path = Path(path)
        self.enabled = enabled
        if enabled:
            self.path.parent.mkdir(parents=True, exist_ok=True)

    def __call__(self, event: str, **fields) -> None:
        if not self.enabled:
            return
        record = {"event": event, "time": round(time.time(), 3), **fields}
        with self.path.open("a") as f:
            f.write(json.dumps(record, default=_jsonable) + "\n")


def _jsonable(x):
    if isinstance(x, (np.floating, np.integer)):
        return x.item()
    if isinstance(x, torch.Tensor):
        return x.tolist()
    raise TypeError(f"not JSON serialisable: {type(x).__name__}")


# ------------------------------------------------------------------------------------------- the loop


class Trainer:
    """Runs `cfg.epochs` epochs of `model(batch) -> {"loss": ..., other scalar terms}` over `train_set`.

    `validate(model, epoch) -> dict` is called on rank 0 after each epoch (the unwrapped model, in eval mode);
    it may update state inside the model (the base probabilities). Its `cfg.select_key` value picks the best
    epoch, for which `save_best(model, metrics)` is called. Checkpoints go to `out/checkpoint.pt`.
    """

    def __init__(
        self,
        model: torch.nn.Module,
        train_set: Dataset,
        collate: Callable,
        cfg: TrainConfig,
        out: str | Path,
        validate: Callable[[torch.nn.Module, int], dict] | None = None,
        save_best: Callable[[torch.nn.Module, dict], None] | None = None,
        log: JsonlLog | None = None,
        dist_info: Dist | None = None,
    ):
        self.cfg = cfg
        self.out = Path(out)
        self.dist = dist_info or Dist()
        self.model = model.to(self.dist.device)
        self.validate = validate
        self.save_best = save_best
        self.log = log or JsonlLog(self.out / "log.jsonl", enabled=self.dist.main)
        if len(train_set) < cfg.batch_size * self.dist.world:
            raise ValueError(
                f"{len(train_set)} training samples cannot fill one batch of {cfg.batch_size} on "
                f"{self.dist.world} process(es)"
            )
        self.sampler = ResumableSampler(train_set, self.dist.world, self.dist.rank, seed=cfg.seed)
        # A private generator: creating a loader iterator would otherwise draw from the global RNG, so a
        # resumed run (restored RNG, fresh iterator) would drift from the uninterrupted one.
        self.loader_rng = torch.Generator()
        self.loader = DataLoader(
            train_set, batch_size=cfg.batch_size, sampler=self.sampler, collate_fn=collate,
            num_workers=cfg.num_workers, drop_last=True, generator=self.loader_rng,
        )
        full = len(train_set) // self.dist.world // cfg.batch_size
        self.steps_per_epoch = min(full, cfg.max_steps_per_epoch) if cfg.max_steps_per_epoch else full
        self.optimizer = build_optimizer(self.model, cfg)
        self.scheduler = build_scheduler(self.optimizer, self.steps_per_epoch, cfg)
        cuda = self.dist.device.type == "cuda"
        self.amp_dtype = (torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16) if cuda else None
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp_dtype == torch.float16)
        self.ddp = (
            DistributedDataParallel(self.model, device_ids=[self.dist.device] if cuda else None,
                                    find_unused_parameters=True)
            if self.dist.world > 1 else None
        )
        self.epoch, self.step_in_epoch, self.global_step = 1, 0, 0
        self.best: float | None = None
        self.history: list[dict] = []

    # ---- checkpoints
    @property
    def checkpoint_path(self) -> Path:
        return self.out / "checkpoint.pt"

    def save_checkpoint(self) -> None:
        if not self.dist.main:
            return
        state = {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "rng": _rng_state(),
            "epoch": self.epoch,
            "step_in_epoch": self.step_in_epoch,
            "global_step": self.global_step,
            "best": self.best,
            "history": self.history,
            "config": self.cfg.to_dict(),
        }
        self.out.mkdir(parents=True, exist_ok=True)
        tmp = self.checkpoint_path.with_suffix(".tmp")
        torch.save(state, tmp)
        os.replace(tmp, self.checkpoint_path)  # atomic: a kill mid-write leaves the previous checkpoint

    def load_checkpoint(self) -> bool:
        """Restore the last checkpoint if there is one; True when resumed."""
        if not self.checkpoint_path.is_file():
            return False
        state = torch.load(self.checkpoint_path, map_location=self.dist.device, weights_only=False)
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state["scaler"])
        _set_rng_state(state["rng"])
        self.epoch, self.step_in_epoch = state["epoch"], state["step_in_epoch"]
        self.global_step, self.best, self.history = state["global_step"], state["best"], state["history"]
        # A resumed run may change the schedule (e.g. fewer epochs to finish sooner): the next step's rate
        # comes from the current config, not from the optimizer state of the killed run.
        for group in self.optimizer.param_groups:
            group["lr"] = lr_at(self.global_step, self.steps_per_epoch, self.cfg)
        self.log("resume", epoch=self.epoch, step_in_epoch=self.step_in_epoch, global_step=self.global_step)
        return True

    # ---- one step
    def _to_device(self, batch):
        if isinstance(batch, torch.Tensor):
            return batch.to(self.dist.device, non_blocking=True)
        if isinstance(batch, dict):
            return {k: self._to_device(v) for k, v in batch.items()}
        if isinstance(batch, (list, tuple)):
            return type(batch)(self._to_device(v) for v in batch)
        return batch

    def train_step(self, batch) -> dict[str, float]:
        net = self.ddp or self.model
        net.train()
        batch = self._to_device(batch)
        with torch.autocast(self.dist.device.type, dtype=self.amp_dtype, enabled=self.amp_dtype is not None):
            losses = net(batch)
        loss = losses["loss"]
        if not torch.isfinite(loss):
            raise FloatingPointError(f"non-finite loss at step {self.global_step}: { {k: float(v) for k, v in losses.items()} }")
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.unscale_(self.optimizer)
        torch.nn.utils.clip_grad_value_(self.model.parameters(), self.cfg.clip_value, foreach=True)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.scheduler.step()
        return {k: float(v.detach()) for k, v in losses.items()}

    # ---- the run
    def fit(self) -> dict:
        """Train to the end (resuming if a checkpoint exists). Returns {"best": score, "history": [...]}."""
        self.load_checkpoint()
        self.log("train_start", config=self.cfg.to_dict(), steps_per_epoch=self.steps_per_epoch,
                 world=self.dist.world, device=str(self.dist.device))
        last_save = time.monotonic()
        while self.epoch <= self.cfg.epochs:
            if hasattr(self.model, "on_epoch_start"):  # a schedule of the model's own (UAR's two stages)
                self.model.on_epoch_start(self.epoch, self.cfg.epochs)
            self.sampler.set_epoch(self.epoch, skip=self.step_in_epoch * self.cfg.batch_size)
            self.loader_rng.manual_seed(self.cfg.seed + 1000 * self.epoch + self.dist.rank)
            remaining = self.steps_per_epoch - self.step_in_epoch
            bar = tqdm(total=self.steps_per_epoch, initial=self.step_in_epoch, disable=not self.dist.main,
                       desc=f"revtaf epoch {self.epoch}/{self.cfg.epochs}", dynamic_ncols=True)
            t0 = time.monotonic()
            sums: dict[str, float] = {}
            for i, batch in enumerate(self.loader):
                if i >= remaining:
                    break
                lr = self.optimizer.param_groups[0]["lr"]  # the rate this step uses
                losses = self.train_step(batch)
                self.step_in_epoch += 1
                self.global_step += 1
                for k, v in losses.items():
                    sums[k] = sums.get(k, 0.0) + v
                self.log("step", epoch=self.epoch, step=self.global_step, lr=lr, **losses)
                bar.set_postfix(loss=f"{losses['loss']:.3f}", lr=f"{lr:.2e}")
                bar.update(1)
                if time.monotonic() - last_save > 60 * self.cfg.checkpoint_minutes:
                    self.save_checkpoint()
                    last_save = time.monotonic()
            bar.close()
            n = max(remaining, 1)
            record = {"epoch": self.epoch, "seconds": round(time.monotonic() - t0, 1),
                      **{f"train_{k}": v / n for k, v in sums.items()}}
            record.update(self._end_of_epoch())
            self.history.append(record)
            self.log("epoch", **record)
            self.epoch, self.step_in_epoch = self.epoch + 1, 0
            self.save_checkpoint()
            last_save = time.monotonic()
        self.log("train_end", best=self.best)
        return {"best": self.best, "history": self.history}

    def _end_of_epoch(self) -> dict:
        """Validate on rank 0, keep the best model, then share the updated model state with every rank."""
        metrics: dict = {}
        if self.dist.main and self.validate is not None:
            self.model.eval()
            with torch.no_grad():
                metrics = self.validate(self.model, self.epoch)
            score = selection_score(metrics, self.cfg.select_key, self.cfg.select_min_distinct)
            if score is not None and (self.best is None or score >= self.best):
                self.best = score
                metrics["best"] = True
                if self.save_best is not None:
                    self.save_best(self.model, metrics)
        if self.dist.world > 1:
            # validation may have changed buffers (base probabilities) on rank 0 only
            for buf in self.model.buffers():
                dist.broadcast(buf.data, src=0)
        return {f"val_{k}" if k != "best" else k: v for k, v in metrics.items()}
