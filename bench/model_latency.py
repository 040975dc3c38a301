"""`revtaf bench`: inference latency per stage and parameter counts of a preset, with random weights.

Random initialisation has the preset's exact shapes, so latency is what a trained model of that size costs,
with one caveat that makes the figure an upper bound: an untrained decoder never emits [SEP] early, so
generation always runs to max_new_tokens. The bank holds ~2,000 random rows (IU X-Ray's training split size).
"""

from __future__ import annotations

import io
import statistics
import time

import numpy as np
import torch
from PIL import Image

from revtaf.data.imageio import read_image
from revtaf.model.random_init import random_model

STAGES = ("decode", "entity", "retrieval", "visual", "fusion", "generation", "total")


def _png_bytes(seed: int = 0, size: int = 512) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 256, (size, size), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels, mode="L").save(buffer, format="PNG")
    return buffer.getvalue()


def bench(preset: str, runs: int = 3, print_table: bool = True, threads: int | None = None) -> dict:
    """Median per-stage latency (ms) of one study over `runs` runs (after a warm-up) + parameter counts.

    `threads` sets torch's intra-op threads for the run (default: leave as is).
    """
    if runs < 1:
        raise ValueError(f"runs must be >= 1, got {runs}")
    if threads is not None:
        torch.set_num_threads(threads)
    model = random_model(preset)
    data = _png_bytes()
    samples: dict[str, list[float]] = {s: [] for s in STAGES}
    for i in range(runs + 1):
        t = time.perf_counter()
        image = read_image(data)
        decode = 1000 * (time.perf_counter() - t)
        pred = model.predict(image)
        if i == 0:
            continue  # warm-up: first-call allocations and lazy initialisation
        samples["decode"].append(decode)
        for stage in STAGES[1:]:
            samples[stage].append(pred.timings_ms[stage] + (decode if stage == "total" else 0.0))
    result = {
        "preset": preset,
        "threads": torch.get_num_threads(),
        "runs": runs,
        "latency_ms": {s: round(statistics.median(v), 1) for s, v in samples.items()},
        "parameters": model.num_parameters(),
        "generated_tokens_max": model.cfg.generation.max_new_tokens,
    }
    if print_table:
        print(format_table(result))
    return result


def format_table(result: dict) -> str:
    lines = [f"REVTAF preset '{result['preset']}' (random init, {result['threads']} threads, "
             f"median of {result['runs']} runs, one study)", "", f"{'stage':<12}{'ms':>10}"]
    lines += [f"{stage:<12}{ms:>10.1f}" for stage, ms in result["latency_ms"].items()]
    lines += ["", f"{'component':<14}{'parameters':>14}"]
    lines += [f"{name:<14}{n:>14,}" for name, n in result["parameters"].items()]
    return "\n".join(lines)
