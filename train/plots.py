"""Training curves as PNG, drawn from the run's JSONL log (matplotlib, headless).

- `losses.png`: the REVTAF loss terms per iteration (raw, faint, and a moving average), and the learning rate;
- `val.png`: the per-epoch validation metrics (NLG and CE F1) and the mean training loss;
- `components.png`: the loss of each preparation stage (text encoder, entity model) when the log has them.
"""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # no display on CI / servers
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

LOSS_KEYS = ("loss", "loss_lm", "loss_cls", "loss_rank", "loss_fcc")
VAL_KEYS = ("val_BLEU_1", "val_BLEU_4", "val_METEOR", "val_ROUGE_L", "val_CIDEr", "val_CE_f1")


def read_log(path: str | Path) -> list[dict]:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"log not found: {path}")
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def moving_average(x: np.ndarray, window: int) -> np.ndarray:
    """Trailing mean over `window` points (shorter at the start), same length as x."""
    x = np.asarray(x, dtype=float)
    if len(x) == 0:
        return x
    c = np.cumsum(np.insert(x, 0, 0.0))
    idx = np.arange(1, len(x) + 1)
    lo = np.maximum(idx - window, 0)
    return (c[idx] - c[lo]) / (idx - lo)


def plot_run(log_path: str | Path, out_dir: str | Path) -> list[Path]:
    """Write the PNGs the log has data for; returns their paths."""
    records = read_log(log_path)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []

    steps = [r for r in records if r["event"] == "step"]
    if steps:
        keys = [k for k in LOSS_KEYS if k in steps[0]]
        fig, axes = plt.subplots(1, len(keys) + 1, figsize=(3.2 * (len(keys) + 1), 3), squeeze=False)
        x = np.array([r["step"] for r in steps])
        window = max(1, len(steps) // 50)
        for ax, k in zip(axes[0], keys):
            y = np.array([r[k] for r in steps])
            ax.plot(x, y, alpha=0.25, lw=0.8)
            ax.plot(x, moving_average(y, window), lw=1.5)
            ax.set_title(k)
            ax.set_xlabel("iteration")
        axes[0][-1].plot(x, [r["lr"] for r in steps])
        axes[0][-1].set_title("learning rate")
        axes[0][-1].set_xlabel("iteration")
        fig.tight_layout()
        written.append(_save(fig, out_dir / "losses.png"))

    epochs = [r for r in records if r["event"] == "epoch"]
    if epochs:
        keys = [k for k in VAL_KEYS if any(r.get(k) is not None for r in epochs)]
        fig, axes = plt.subplots(1, 2, figsize=(9, 3.2))
        e = [r["epoch"] for r in epochs]
        for k in keys:
            axes[0].plot(e, [r.get(k, np.nan) if r.get(k) is not None else np.nan for r in epochs],
                         marker="o", label=k.removeprefix("val_"))
        axes[0].set_title("validation")
        axes[0].set_xlabel("epoch")
        if keys:
            axes[0].legend(fontsize=7)
        axes[1].plot(e, [r.get("train_loss", np.nan) for r in epochs], marker="o")
        axes[1].set_title("mean training loss")
        axes[1].set_xlabel("epoch")
        fig.tight_layout()
        written.append(_save(fig, out_dir / "val.png"))

    comps = defaultdict(list)
    for r in records:
        if r["event"] == "component_step":
            comps[r["stage"]].append(r)
    if comps:
        fig, axes = plt.subplots(1, len(comps), figsize=(4 * len(comps), 3), squeeze=False)
        for ax, (stage, rows) in zip(axes[0], sorted(comps.items())):
            y = np.array([r["loss"] for r in rows])
            ax.plot(y, alpha=0.3, lw=0.8)
            ax.plot(moving_average(y, max(1, len(y) // 50)), lw=1.5)
            ax.set_title(f"{stage} loss")
            ax.set_xlabel("iteration")
        fig.tight_layout()
        written.append(_save(fig, out_dir / "components.png"))
    return written


def _save(fig, path: Path) -> Path:
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
