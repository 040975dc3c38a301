"""Evaluation protocol of the project (README "Evaluation protocol", docs/method.md §9): NLG scores and
clinical efficacy of generated reports against reference reports, each result carrying its protocol.

`score` cleans references AND hypotheses with the dataset's cleaner. The cleaners are idempotent on the
whitespace tokens every metric sees (checked on all 2,955 IU reports with both cleaners), though not
byte-for-byte: the IU cleaner adds a space before the final ' .' each time. So hypotheses that are already
clean (our model's output) are scored unchanged, and raw text from elsewhere is put on the same footing.
"""

from __future__ import annotations

import json
from pathlib import Path

from revtaf.data.clean import clean_report
from revtaf.metrics.ce import ce_scores, finding_diff
from revtaf.metrics.nlg import (
    NLG_METRICS,
    Meteor,
    MeteorError,
    MeteorUnavailable,
    case_scores,
    check_pairs,
    nlg_scores,
)

__all__ = [
    "NLG_METRICS", "Meteor", "MeteorError", "MeteorUnavailable",
    "case_scores", "ce_scores", "finding_diff", "nlg_scores", "score", "score_files",
]

CLEANING_PROTOCOL = {
    "iu": "R2Gen IU X-Ray cleaner (revtaf.data.clean, quirks kept) on references and hypotheses",
    "mimic": "PromptMRG cleaner (R2Gen MIMIC-CXR cleaner, first 100 words; quirks kept) on references and hypotheses",
}


def score(
    refs: dict[str, str], hyps: dict[str, str], dataset: str = "iu", labeler=None, meteor: Meteor | None = None
) -> dict:
    """All protocol scores of `hyps` against `refs` (id -> raw or clean report text, the same ids).

    labeler: callable list[str] -> int array [n, >=14] of CheXpert states in CHEXPERT_14 order; default
    revtaf.labels.chexpert.RuleLabeler(). meteor: a running `Meteor` to reuse (see nlg_scores).
    Returns BLEU_1..BLEU_4, METEOR (None without Java), ROUGE_L, CIDEr, CE {example, micro, macro,
    per_class} and protocol {nlg, ce, cleaning, labeler}.
    """
    if dataset not in CLEANING_PROTOCOL:
        raise ValueError(f"unknown dataset {dataset!r}: expected one of {sorted(CLEANING_PROTOCOL)}")
    check_pairs(refs, hyps)
    ids = list(refs)
    clean_refs = [clean_report(refs[i], dataset) for i in ids]
    clean_hyps = [clean_report(hyps[i], dataset) for i in ids]
    result = nlg_scores(dict(zip(ids, clean_refs)), dict(zip(ids, clean_hyps)), meteor)
    nlg_protocol = result.pop("protocol")

    if labeler is None:
        from revtaf.labels.chexpert import RuleLabeler  # lazy: the labeler is heavier than the metrics

        labeler = RuleLabeler()
    labels = labeler(clean_refs + clean_hyps)  # one call, so a neural labeler can batch everything
    if len(labels) != 2 * len(ids):
        raise ValueError(f"labeler returned {len(labels)} label rows for {2 * len(ids)} reports")
    ce = ce_scores(labels[: len(ids)], labels[len(ids) :])
    ce_protocol = ce.pop("protocol")

    result["CE"] = ce
    result["protocol"] = {
        "nlg": nlg_protocol,
        "ce": ce_protocol,
        "cleaning": CLEANING_PROTOCOL[dataset],
        "labeler": str(getattr(labeler, "protocol", f"{type(labeler).__module__}.{type(labeler).__qualname__}")),
    }
    return result


def _load_texts(path: str | Path, what: str) -> dict[str, str]:
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise ValueError(f"{what} file {path} is not valid JSON: {e}") from None
    if not isinstance(data, dict):
        kind = type(data).__name__
        raise ValueError(f'{what} file {path} must hold a JSON object {{"id": "report text"}}, got {kind}')
    bad = [k for k, v in data.items() if not isinstance(v, str)]
    if bad:
        raise ValueError(f"{what} file {path}: values must be report strings; not a string for id(s) {bad[:5]}")
    empty = [k for k, v in data.items() if not v.strip()]
    if empty:
        raise ValueError(f"{what} file {path}: empty report for {len(empty)} id(s), e.g. {empty[:5]}")
    return data


def score_files(
    refs_path: str | Path, hyps_path: str | Path, dataset: str = "iu", out_path: str | Path | None = None, labeler=None
) -> dict:
    """`score` on two JSON files {"id": "report text"}; writes the result as JSON to `out_path` if given."""
    result = score(_load_texts(refs_path, "references"), _load_texts(hyps_path, "hypotheses"), dataset, labeler)
    if out_path is not None:
        Path(out_path).parent.mkdir(parents=True, exist_ok=True)
        Path(out_path).write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    return result
