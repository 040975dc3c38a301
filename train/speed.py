"""`revtaf bench --train-speed`: training throughput of a preset on real images, on CPU or CUDA.

The CUDA path (bf16 autocast, the trainer's step on a GPU) is what `scripts/gpu_check.sh` times; the same
function gives the CPU figures beside it. A randomly initialised model of the preset (`random_model`: random
bank, synthetic tokenizer) is trained with the real `Trainer.train_step` (AdamW, value clipping, the
warmup-cosine schedule, bf16 autocast on CUDA) on the images and cleaned reports of an IU X-Ray folder. The
entity predictions, labels and GRP neighbours are random: a step's cost depends on shapes, not on values.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from revtaf.data import load_annotation
from revtaf.data.clean import clean_report_iu
from revtaf.model.random_init import random_model
from revtaf_train.training_set import Collate, TrainingSet
from revtaf_train.trainer import Dist, JsonlLog, TrainConfig, Trainer


def _device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError("--device cuda asked for, but torch sees no CUDA device")
    return torch.device(name)


def train_speed(preset: str, data_root: str | Path, device: str = "auto", seconds: float = 60.0,
                batch_size: int | None = None, max_steps: int | None = None, warmup_steps: int = 2,
                num_workers: int = 2, print_line: bool = True, plugins: tuple[str, ...] = ()) -> dict:
    """Train for about `seconds` (or `max_steps` steps, whichever comes first) after `warmup_steps` untimed
    steps, with the sibling methods' `plugins` switched on (revtaf.switches.PLUGINS); return the median step time,
    images/s, the device and its peak memory."""
    dev = _device(device)
    splits = load_annotation(data_root, "iu")
    studies = splits["train"] or [s for split in splits.values() for s in split]
    cfg = getattr(TrainConfig, preset)()
    cfg = replace(cfg, batch_size=batch_size or cfg.batch_size, num_workers=num_workers, checkpoint_minutes=1e9)
    if len(studies) < cfg.batch_size:
        raise ValueError(f"{data_root} has {len(studies)} studies: fewer than one batch of {cfg.batch_size}")
    model = random_model(preset, plugins=plugins)
    studies = studies[: len(model.bank_ids)]  # bank_index is the study's row: stay inside the random bank
    n, rng = len(studies), np.random.default_rng(0)
    positions = model.triplet_table.shape[1]
    features = {"scores": rng.random((n, 75), dtype=np.float32), "position": rng.integers(0, positions, (n, 75)),
                "exists": rng.random((n, 75)) < 0.3}
    plan = model.cfg.decoder.sentence_plan
    data = TrainingSet(studies, data_root, features, rng.integers(0, 4, (n, 18)),
                       [clean_report_iu(s.report) for s in studies], rng.integers(0, len(model.bank_ids), n),
                       sentence_plan=plan)
    collate = Collate(model.tokenizer, model.cfg.decoder.max_positions, model.decoder.per_disease, plan)
    with tempfile.TemporaryDirectory(prefix="revtaf-speed-") as out:
        trainer = Trainer(model, data, collate, cfg, out, log=JsonlLog(Path(out) / "log.jsonl", enabled=False),
                          dist_info=Dist(device=dev))
        step_s: list[float] = []
        batches, start = iter(trainer.loader), time.perf_counter()
        while True:
            try:
                batch = next(batches)
            except StopIteration:
                batches = iter(trainer.loader)
                continue
            t = time.perf_counter()
            trainer.train_step(batch)
            if dev.type == "cuda":
                torch.cuda.synchronize(dev)
            step_s.append(time.perf_counter() - t)
            timed = step_s[warmup_steps:]
            if (max_steps and len(timed) >= max_steps) or (timed and time.perf_counter() - start > seconds):
                break
        wall = time.perf_counter() - start
    median = statistics.median(timed)
    result = {
        "preset": preset, "plugins": list(plugins), "device": torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu",
        "threads": torch.get_num_threads(), "amp": str(trainer.amp_dtype).replace("torch.", "") if trainer.amp_dtype
        else "fp32", "batch_size": cfg.batch_size, "steps": len(timed), "warmup_steps": warmup_steps,
        "step_s": round(median, 4), "images_per_s": round(cfg.batch_size / median, 2), "wall_s": round(wall, 1),
        "peak_memory_mb": round(torch.cuda.max_memory_allocated(dev) / 2**20) if dev.type == "cuda" else None,
    }
    if print_line:
        print(format_speed(result))
    return result


def format_speed(r: dict) -> str:
    memory = f", peak GPU memory {r['peak_memory_mb']} MB" if r["peak_memory_mb"] is not None else ""
    plugins = f" with {' + '.join(r['plugins'])}" if r.get("plugins") else ""
    return (f"train-speed: preset {r['preset']}{plugins} on {r['device']} ({r['amp']}, {r['threads']} CPU threads), batch "
            f"{r['batch_size']}: {r['images_per_s']} images/s, step {1000 * r['step_s']:.0f} ms (median of "
            f"{r['steps']} steps after {r['warmup_steps']} warm-up){memory}")
