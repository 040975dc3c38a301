"""Report cleaning: the R2Gen / PromptMRG quirks that published scores depend on."""

from revtaf.data.clean import clean_report, clean_report_iu, clean_report_mimic, split_sentences


def test_iu_cleaner_lowercases_strips_punctuation_and_joins_with_spaced_periods():
    raw = "The heart is normal. No pleural effusion, pneumothorax. 2. Stable XXXX."
    assert clean_report_iu(raw) == "the heart is normal . no pleural effusion pneumothorax . stable xxxx ."


def test_enumerations_and_double_periods_follow_r2gen():
    assert clean_report_iu("1. Clear lungs.. 2. Normal heart.") == "clear lungs . normal heart ."


def test_empty_sentences_are_kept_as_in_the_original():
    # The original's empty-sentence filter is a no-op; scores in the literature include these.
    assert clean_report_iu("Clear. . Normal.") == "clear .  . normal ."


def test_mimic_cleaner_truncates_to_100_words_and_handles_newlines():
    raw = "Line one\nis here. " + " ".join(["word"] * 200)
    cleaned = clean_report_mimic(raw)
    assert cleaned.startswith("line one is here . word")
    assert len(cleaned.split()) == 100


def test_clean_report_rejects_unknown_dataset():
    import pytest

    with pytest.raises(ValueError, match="unknown dataset"):
        clean_report("x", "chexpert")


def test_split_sentences_drops_separators_and_empty_sentences():
    assert split_sentences("the heart is normal .  . no effusion .") == ["the heart is normal", "no effusion"]
