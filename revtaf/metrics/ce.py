"""Clinical efficacy (CE): agreement of CheXpert labels of generated and reference reports (docs/method.md §9.2).

Labels are the labeler's states (0 blank, 1 positive, 2 negative, 3 uncertain) for the 14 CheXpert
observations, "No Finding" included. Only state 1 counts as positive; negative, uncertain and blank are
all "not positive". Every precision, recall or F1 with a zero denominator is 0.

Three averages, the first being the headline (as PromptMRG and the REVTAF paper report it):
- example: P, R, F1 per report over its 14 flags, F1 = tp / (tp + (fp + fn) / 2), then the mean over reports;
- micro: tp, fp, fn summed over reports and classes, then P, R, F1;
- macro: P, R, F1 per class, then the mean over the 14 classes.
"""

from __future__ import annotations

import numpy as np

from revtaf.labels.constants import BLANK, CHEXPERT_14, POSITIVE, STATES

CE_PROTOCOL = (
    "CheXpert 14 observations (No Finding included), positive = state 1 only (negative/uncertain/blank = not "
    "positive); example-based P/R/F1 averaged over reports (headline, as PromptMRG/REVTAF), micro and macro "
    "beside; 0/0 = 0 everywhere"
)


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    num, den = np.asarray(num, dtype=np.float64), np.asarray(den, dtype=np.float64)
    return np.divide(num, den, out=np.zeros_like(num), where=den > 0)


def _prf(tp: np.ndarray, fp: np.ndarray, fn: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    return _ratio(tp, tp + fp), _ratio(tp, tp + fn), _ratio(tp, tp + 0.5 * (fp + fn))


def _block(p, r, f) -> dict:
    return {"precision": float(p), "recall": float(r), "f1": float(f)}


def _as_states(labels, what: str, n_classes: int) -> np.ndarray:
    arr = np.asarray(labels)
    if arr.ndim != 2 or arr.shape[1] < n_classes:
        raise ValueError(f"{what} must have shape [n_reports, >={n_classes}], got {arr.shape}")
    if arr.shape[0] == 0:
        raise ValueError(f"{what} has no reports")
    if not np.issubdtype(arr.dtype, np.integer):
        raise TypeError(f"{what} must hold integer label states, got dtype {arr.dtype}")
    arr = arr[:, :n_classes]
    if arr.min() < 0 or arr.max() >= len(STATES):
        raise ValueError(f"{what} holds states outside 0..{len(STATES) - 1} ({', '.join(STATES)})")
    return arr


def ce_scores(ref_labels, hyp_labels, names: tuple[str, ...] = CHEXPERT_14) -> dict:
    """CE of hypothesis labels against reference labels.

    ref_labels, hyp_labels: int [n_reports, >=len(names)] label states; the first len(names) columns are
    scored. Returns example / micro / macro {precision, recall, f1}, per_class {name: {precision, recall,
    f1, support}} with support = reference positives, and the protocol string.
    """
    ref = _as_states(ref_labels, "ref_labels", len(names))
    hyp = _as_states(hyp_labels, "hyp_labels", len(names))
    if ref.shape[0] != hyp.shape[0]:
        raise ValueError(f"ref_labels has {ref.shape[0]} reports but hyp_labels has {hyp.shape[0]}")
    ref_pos, hyp_pos = ref == POSITIVE, hyp == POSITIVE
    tp, fp, fn = ref_pos & hyp_pos, ~ref_pos & hyp_pos, ref_pos & ~hyp_pos

    example = [m.mean() for m in _prf(tp.sum(1), fp.sum(1), fn.sum(1))]
    micro = _prf(tp.sum(), fp.sum(), fn.sum())
    per_p, per_r, per_f = _prf(tp.sum(0), fp.sum(0), fn.sum(0))
    support = ref_pos.sum(0)
    per_class = {
        name: {**_block(per_p[c], per_r[c], per_f[c]), "support": int(support[c])} for c, name in enumerate(names)
    }
    return {
        "example": _block(*example),
        "micro": _block(*micro),
        "macro": _block(per_p.mean(), per_r.mean(), per_f.mean()),
        "per_class": per_class,
        "protocol": CE_PROTOCOL,
    }


def finding_diff(ref_row, hyp_row, names: tuple[str, ...] = CHEXPERT_14) -> list[tuple[str, str, str, str]]:
    """Finding-level comparison of one report pair, for display.

    ref_row, hyp_row: int [>=len(names)] label states. Returns (name, ref_state, hyp_state, verdict) with
    state names from STATES and verdict "agreement", "false finding" (positive only in the hypothesis)
    or "missed finding" (positive only in the reference), judged by the CE rule (only positive counts).
    Observations blank on both sides are left out.
    """
    ref = _as_states(np.asarray(ref_row)[None], "ref_row", len(names))[0]
    hyp = _as_states(np.asarray(hyp_row)[None], "hyp_row", len(names))[0]
    rows = []
    for name, r, h in zip(names, ref.tolist(), hyp.tolist()):
        if r == h == BLANK:
            continue
        r_pos, h_pos = r == POSITIVE, h == POSITIVE
        verdict = "false finding" if h_pos and not r_pos else "missed finding" if r_pos and not h_pos else "agreement"
        rows.append((name, STATES[r], STATES[h], verdict))
    return rows


def example_f1(ref_labels, hyp_labels, names: tuple[str, ...] = CHEXPERT_14) -> np.ndarray:
    """Per-report example-based F1 [n] (the quantity the headline CE F1 averages)."""
    ref = _as_states(ref_labels, "ref_labels", len(names)) == POSITIVE
    hyp = _as_states(hyp_labels, "hyp_labels", len(names)) == POSITIVE
    tp, fp, fn = (ref & hyp).sum(1), (~ref & hyp).sum(1), (ref & ~hyp).sum(1)
    return _prf(tp, fp, fn)[2]


def paired_bootstrap(a: np.ndarray, b: np.ndarray, resamples: int = 2000, seed: int = 0) -> dict:
    """Mean of a − b over the same reports, with a paired-bootstrap 95 % interval (reports resampled together)."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 1 or len(a) == 0:
        raise ValueError(f"need two per-report score vectors of one length, got {a.shape} and {b.shape}")
    diff = a - b
    rng = np.random.default_rng(seed)
    means = diff[rng.integers(0, len(diff), size=(resamples, len(diff)))].mean(1)
    lo, hi = np.percentile(means, [2.5, 97.5])
    return {"difference": float(diff.mean()), "ci95": [float(lo), float(hi)], "resamples": resamples, "n": len(diff)}


def auroc(positive: np.ndarray, score: np.ndarray) -> float:
    """Area under the ROC curve (Mann-Whitney U with average ranks for ties). positive bool [n], score [n];
    NaN when one class is missing."""
    positive = np.asarray(positive, dtype=bool)
    n_pos, n_neg = positive.sum(), (~positive).sum()
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    _, inverse, counts = np.unique(score, return_inverse=True, return_counts=True)
    ranks = (np.cumsum(counts) - (counts - 1) / 2)[inverse]  # 1-based average ranks
    return float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def auroc_difference(positive: np.ndarray, a: np.ndarray, b: np.ndarray, resamples: int = 2000,
                     seed: int = 0) -> dict:
    """AUROC of scores a minus that of scores b on the same studies, with a paired-bootstrap 95 % interval
    (studies resampled together; resamples with one class only are skipped)."""
    positive = np.asarray(positive, dtype=bool)
    rng = np.random.default_rng(seed)
    diffs = []
    for _ in range(resamples):
        i = rng.integers(0, len(positive), len(positive))
        if positive[i].any() and not positive[i].all():
            diffs.append(auroc(positive[i], a[i]) - auroc(positive[i], b[i]))
    lo, hi = np.percentile(diffs, [2.5, 97.5]) if diffs else (float("nan"),) * 2
    return {"a": auroc(positive, a), "b": auroc(positive, b), "difference": auroc(positive, a) - auroc(positive, b),
            "ci95": [float(lo), float(hi)], "positives": int(positive.sum()), "n": len(positive)}
