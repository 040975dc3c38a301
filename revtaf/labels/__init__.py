"""Report labels: CheXpert-style rule labeler (18 labels x 4 states), CheXbert backend, status vectors and
label-Hamming neighbours, MedKLIP-style triplets, and the check against IU X-Ray's MeSH annotations."""

from revtaf.labels.chexpert import AUXILIARY, LABEL_NAMES_18, RuleLabeler, labels_to_dict
from revtaf.labels.constants import (
    ANATOMIES_51,
    BLANK,
    CHEXPERT_14,
    ENTITIES_75,
    NEGATIVE,
    POSITIVE,
    STATE_TOKENS,
    STATES,
    UNCERTAIN,
    UNSPECIFIED_POSITION,
)
from revtaf.labels.mesh import MESH_CLASSES, format_table, label_check, mesh_classes
from revtaf.labels.status import hamming, hamming_neighbours, status_vector
from revtaf.labels.triplets import (
    ENTITY_GROUPS,
    ENTITY_LABELS,
    POSITION_LABELS,
    anatomy_sentence,
    extract_triplets,
    extract_triplets_batch,
    triplet_sentence,
)

_LABELER = RuleLabeler()


def label_reports(reports: list[str]):
    """Reports (raw or cleaned) -> int8 [n, 18] states with the rule labeler, order LABEL_NAMES_18."""
    return _LABELER(reports)


def __getattr__(name: str):
    # CheXbert needs torch + transformers; import them only when it is asked for.
    if name == "CheXbertLabeler":
        from revtaf.labels.chexbert import CheXbertLabeler

        return CheXbertLabeler
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "ANATOMIES_51", "AUXILIARY", "BLANK", "CHEXPERT_14", "ENTITIES_75", "ENTITY_GROUPS", "ENTITY_LABELS", "POSITION_LABELS", "LABEL_NAMES_18",
    "MESH_CLASSES", "NEGATIVE", "POSITIVE", "STATES", "STATE_TOKENS", "UNCERTAIN", "UNSPECIFIED_POSITION",
    "CheXbertLabeler", "RuleLabeler", "anatomy_sentence", "extract_triplets", "extract_triplets_batch",
    "format_table", "hamming", "hamming_neighbours", "label_check", "label_reports", "labels_to_dict",
    "mesh_classes", "status_vector", "triplet_sentence",
]
