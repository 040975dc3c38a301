"""Report cleaning exactly as the published pipelines do it, quirks included (docs/method.md §1.3).

`clean_report_iu` is R2Gen's IU X-Ray cleaner; `clean_report_mimic` is R2Gen's MIMIC-CXR cleaner as PromptMRG
uses it, truncated to 100 words. Scores are only comparable with the literature if these stay byte-exact, so
the quirks are kept on purpose:
- inside the character class, `:-\\[` is a range (0x3A-0x5B), so `< = > ? @` and A-Z are deleted too;
- empty sentences are kept (the original filter compares a string with a list and is always true);
- every "1. " is deleted, wherever it stands.
"""

from __future__ import annotations

import re

_SENTENCE_JUNK = re.compile(r"[.,?;*!%^&_+():-\[\]{}]")


def _replace_repeatedly(text: str, old: str, new: str, times: int) -> str:
    # The originals chain a fixed number of str.replace calls; a loop to a fixpoint would differ on long runs.
    for _ in range(times):
        text = text.replace(old, new)
    return text


def _strip_enumeration(text: str) -> str:
    text = text.replace("1. ", "")
    for n in range(2, 6):
        text = text.replace(f". {n}. ", ". ")
    for n in range(2, 6):
        text = text.replace(f" {n}. ", ". ")
    return text


def _clean_sentence(sentence: str) -> str:
    for ch in ('"', "/", "\\", "'"):
        sentence = sentence.replace(ch, "")
    return _SENTENCE_JUNK.sub("", sentence.strip().lower())


def _join(text: str) -> str:
    sentences = text.strip().lower().split(". ")
    return " . ".join(_clean_sentence(s) for s in sentences) + " ."


def clean_report_iu(report: str) -> str:
    """R2Gen's IU X-Ray cleaner: 'The heart is normal. No effusion.' -> 'the heart is normal . no effusion .'"""
    text = _replace_repeatedly(report, "..", ".", 3)
    return _join(_strip_enumeration(text))


def clean_report_mimic(report: str, max_words: int = 100) -> str:
    """PromptMRG's cleaner (R2Gen's MIMIC cleaner + truncation to `max_words` whitespace tokens)."""
    text = report.replace("\n", " ")
    text = _replace_repeatedly(text, "__", "_", 7)
    text = _replace_repeatedly(text, "  ", " ", 6)
    text = _replace_repeatedly(text, "..", ".", 8)
    cleaned = _join(_strip_enumeration(text))
    return " ".join(cleaned.split()[:max_words])


def clean_report(report: str, dataset: str) -> str:
    """Clean with the protocol of `dataset` ('iu' or 'mimic')."""
    if dataset == "iu":
        return clean_report_iu(report)
    if dataset == "mimic":
        return clean_report_mimic(report)
    raise ValueError(f"unknown dataset {dataset!r}: expected 'iu' or 'mimic'")


def split_sentences(cleaned: str) -> list[str]:
    """Sentences of a cleaned report, without the ' .' separators and without empty ones."""
    # The last sentence keeps the report's closing " ." after the split; strip it with the spaces.
    return [s.strip(" .") for s in cleaned.split(" . ") if s.strip(" .")]
