"""The error review: one review per case, ablation and model, kept in the browser; CSV / JSON export with the
model's weights hash; import that continues a review."""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

from revtaf_app.case import Case
from revtaf_app.errors import AppInputError

REVIEW_CATEGORIES = ("false finding", "missed finding", "wrong location", "wrong severity", "style", "other")
# A sentence can be wrong in these ways (a missed finding or the report's style are the case's).
SENTENCE_CATEGORIES = ("false finding", "wrong location", "wrong severity", "unsupported by its map", "other")
CATEGORIES = tuple(dict.fromkeys(REVIEW_CATEGORIES + SENTENCE_CATEGORIES))

# What a review's finding verdicts and case metrics mean, written into every exported entry.
REVIEW_PROTOCOL = ("IU X-Ray findings section, R2Gen cleaning; finding diff by the rule labeler (CheXpert-14 + 4), "
                   "CE rule: only positive counts")
UNKNOWN_MODEL = {"model_sha256": "unknown", "model_config": "unknown"}
MAX_REVIEW_FILE = 5 * 2**20  # an imported review file: thousands of reviews fit in far less


def model_identity(model) -> dict:
    """{"model_sha256", "model_config"} of a loaded model (from its manifest and run card), else "unknown"."""
    config = getattr(model, "preset", None) or "unknown"
    if getattr(model, "quantized", None):  # what was reviewed: the approximation, not the saved weights alone
        config += f" ({model.quantized} decoder)"
    return {"model_sha256": getattr(model, "weights_sha256", None) or "unknown", "model_config": config}


def review_key(record: dict) -> str:
    """One review per case, ablation and model, and one per sentence of it."""
    sentence = record.get("sentence")
    return f"{record['case']}|{record['ablation']}|{record['model_sha256']}" + (
        "" if sentence in (None, "") else f"|s{sentence}")


def save_review(store: dict, case: Case | None, categories: list[str], note: str, model: dict | None = None,
                sentence: int | None = None) -> dict:
    """A new store with the review of `case` added or replaced (one review per case, ablation and model `model`,
    a `model_identity`), or of its report's sentence `sentence` (0-based) beside the case's."""
    if case is None:
        raise AppInputError("Analyse an image first; the review is saved for the case on screen.")
    allowed = REVIEW_CATEGORIES if sentence is None else SENTENCE_CATEGORIES
    unknown = [c for c in categories or [] if c not in allowed]
    if unknown:
        what = "a case" if sentence is None else "a sentence"
        raise AppInputError(f"error categories {unknown} do not apply to {what}; choose from {', '.join(allowed)}")
    if not categories and not (note or "").strip():
        raise AppInputError("Tick at least one error category or write a note before saving.")
    sentences = case.prediction.sentences if sentence is not None else []
    if sentence is not None and not 0 <= sentence < len(sentences):
        raise AppInputError(f"The report has no sentence {sentence + 1}; choose one of its {len(sentences)}.")
    record = {
        "case": case.key,
        "study_id": case.study_id or "",
        "ablation": case.ablation,
        "sentence": "" if sentence is None else sentence + 1,  # 1-based, as the page numbers them
        "sentence_text": "" if sentence is None else sentences[sentence].text,
        "categories": [c for c in CATEGORIES if c in categories],
        "note": (note or "").strip(),
        "generated_report": case.prediction.report,
        "saved_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        **(model or UNKNOWN_MODEL),
        "protocol": REVIEW_PROTOCOL,
    }
    return {**store, review_key(record): record}


REVIEW_HEADERS = ["case", "study_id", "ablation", "sentence", "sentence_text", "categories", "note", "generated_report",
                  "saved_at", "model_sha256", "model_config", "protocol"]


def review_rows(store: dict) -> list[list]:
    return [[r.get(h, "") if h != "categories" else "; ".join(r[h]) for h in REVIEW_HEADERS] for r in store.values()]


def review_csv(store: dict) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(REVIEW_HEADERS)
    writer.writerows(review_rows(store))
    return buf.getvalue()


def review_json(store: dict) -> str:
    return json.dumps(list(store.values()), indent=2, ensure_ascii=False) + "\n"


def read_reviews(path: str | os.PathLike | None) -> list[dict]:
    """The entries of a review JSON exported by this page; AppInputError saying what is wrong with any other file."""
    if not path:
        raise AppInputError("Choose a review file (the JSON this page exports) to import.")
    path = Path(path)
    if path.stat().st_size > MAX_REVIEW_FILE:
        raise AppInputError(f"This review file is larger than {MAX_REVIEW_FILE // 2**20} MB; is it the right file?")
    try:
        records = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise AppInputError("This is not a review file: it is not JSON (use the JSON this page exports, not the CSV).") from None
    if not isinstance(records, list):
        raise AppInputError("This is not a review file: expected a list of reviews.")
    required = ("case", "ablation", "categories", "note", "saved_at")
    for i, r in enumerate(records, 1):
        if not isinstance(r, dict) or any(k not in r for k in required):
            raise AppInputError(f"Review {i} of the file lacks {', '.join(required)}: nothing was imported.")
        if not isinstance(r["categories"], list) or any(c not in CATEGORIES for c in r["categories"]):
            raise AppInputError(f"Review {i} of the file has unknown error categories: nothing was imported.")
        try:
            datetime.fromisoformat(str(r["saved_at"]))
        except ValueError:
            raise AppInputError(f"Review {i} of the file has no valid time: nothing was imported.") from None
    return [{**UNKNOWN_MODEL, "study_id": "", "sentence": "", "sentence_text": "", "generated_report": "", "protocol": "",
             **r} for r in records]


def merge_reviews(store: dict, records: list[dict]) -> tuple[dict, dict]:
    """(new store, counts) with `records` joined in: the same case, ablation and model keep the newer review.
    counts = {"added", "replaced" (an older one here), "kept" (the one here is as new or newer)}."""
    out, counts = dict(store), {"added": 0, "replaced": 0, "kept": 0}
    for record in records:
        key = review_key(record)
        here = out.get(key)
        if here is None:
            counts["added"] += 1
        elif datetime.fromisoformat(record["saved_at"]) > datetime.fromisoformat(here["saved_at"]):
            counts["replaced"] += 1
        else:
            counts["kept"] += 1
            continue
        out[key] = record
    return out, counts


def export_reviews(store: dict, directory: str | os.PathLike) -> tuple[Path, Path]:
    """Write the session's reviews as `revtaf_review.csv` and `.json` in a fresh folder under `directory`."""
    if not store:
        raise AppInputError("No review saved yet in this session.")
    out = Path(tempfile.mkdtemp(prefix="review-", dir=directory))
    csv_path, json_path = out / "revtaf_review.csv", out / "revtaf_review.json"
    csv_path.write_text(review_csv(store), encoding="utf-8")
    json_path.write_text(review_json(store), encoding="utf-8")
    return csv_path, json_path


def prune(directory: str | os.PathLike, max_age_s: float = 3600) -> None:
    """Delete exports (review files, /generate images) older than `max_age_s` from the app's own export folder
    (they are copied into Gradio's cache when served)."""
    now = time.time()
    for child in Path(directory).iterdir():
        if now - child.stat().st_mtime > max_age_s:
            shutil.rmtree(child, ignore_errors=True)
