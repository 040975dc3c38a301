"""The training studies as REVTAF.forward reads them (`TrainingSet`) and their batches, tokenised behind their
ground-truth prompt (`Collate`)."""

from __future__ import annotations

import numpy as np
import torch


class TrainingSet(torch.utils.data.Dataset):
    """Training studies with everything REVTAF.forward needs except tokenisation (done in `Collate`).

    Item: image (train transform; [2,3,H,W] frontal and lateral for a two-view model, `view_dropout` of them
    with the frontal in the lateral's place), the frozen entity model's scores / LRP triplets for the image, the 18
    labels, the cleaned report, `grp_index` (the label-Hamming neighbour's bank row), `bank_index` (own row),
    `report_position` [75] (where the report puts each entity, −1 = nowhere; the maps' position loss) and the
    report's sentences with their topics (`sentence_plan`) or which sentences state a finding (otherwise).
    """

    def __init__(self, studies, root, features: dict, labels: np.ndarray, reports: list[str], grp_index: np.ndarray,
                 report_position: np.ndarray | None = None, sentence_plan: bool = False, views: int = 1,
                 view_dropout: float = 0.0):
        from revtaf.data import XrayDataset, transforms
        from revtaf.labels.chexpert import RuleLabeler
        from revtaf.labels.topics import tag_report

        self.images = XrayDataset(studies, root, transforms.train_transform(), views=views)
        self.view_dropout = view_dropout
        self.features, self.labels, self.reports, self.grp_index = features, labels, reports, grp_index
        self.report_position = (np.full((len(reports), 75), -1, dtype=np.int64) if report_position is None
                                else report_position)
        if sentence_plan:
            self.sentences = [tag_report(r) for r in reports]
        else:
            finding = RuleLabeler().finding_sentences
            self.sentences = [finding(r) for r in reports]  # per "."-ended sentence: states a finding

    def __len__(self) -> int:
        return len(self.reports)

    def __getitem__(self, i: int) -> dict:
        images = self.images[i]["image"]
        if images.ndim == 4 and torch.rand(()) < self.view_dropout:
            # view dropout: the study read without its lateral, as inference reads a frontal-only study (its
            # frontal in the lateral's place), so the model is good at both
            images = images[:1].expand(2, -1, -1, -1).clone()
        return {
            "images": images,
            "entity_scores": torch.from_numpy(self.features["scores"][i]),
            "lrp_position": torch.from_numpy(self.features["position"][i].astype(np.int64)),
            "lrp_exists": torch.from_numpy(self.features["exists"][i]),
            "labels": torch.from_numpy(self.labels[i].astype(np.int64)),
            "grp_index": int(self.grp_index[i]),
            "bank_index": i,
            "report": self.reports[i],
            "sentences": self.sentences[i],
            "report_position": torch.from_numpy(self.report_position[i]),
        }


class Collate:
    """Stacks a list of TrainingSet items, tokenises the reports behind their ground-truth state prompt and marks
    their finding tokens."""

    def __init__(self, tokenizer, max_length: int, per_disease: bool = False, sentence_plan: bool = False):
        self.tokenizer, self.max_length, self.per_disease = tokenizer, max_length, per_disease
        self.sentence_plan = sentence_plan

    def __call__(self, items: list[dict]) -> dict:
        from revtaf.model.decoder import (encode_planned_reports, encode_reports, finding_token_mask,
                                          one_finding_contrast)

        batch = {k: torch.stack([it[k] for it in items]) for k in
                 ("images", "entity_scores", "lrp_position", "lrp_exists", "labels", "report_position")}
        batch["grp_index"] = torch.tensor([it["grp_index"] for it in items])
        batch["bank_index"] = torch.tensor([it["bank_index"] for it in items])
        sentences = [it["sentences"] for it in items]
        if self.sentence_plan:
            ids, mask, finding, spans = encode_planned_reports(self.tokenizer, batch["labels"], sentences,
                                                               self.max_length, self.per_disease)
            # one finding flipped per study; the batch's rows seed the choice, so a study's varies by batch
            batch["contrast_states"], batch["contrast_mask"] = one_finding_contrast(
                batch["labels"], spans, ids.shape, seed=int(batch["bank_index"].sum()) * 7919 + len(items))
            batch["input_ids"], batch["attention_mask"], batch["finding_mask"] = ids, mask, finding
            return batch
        reports = [it["report"] for it in items]
        batch["input_ids"], batch["attention_mask"] = encode_reports(
            self.tokenizer, batch["labels"], reports, self.max_length, self.per_disease)
        batch["finding_mask"] = finding_token_mask(self.tokenizer, reports, sentences, batch["input_ids"].shape)
        return batch
