"""Training drivers for the offline defaults of the pretrained-artifact roles (docs/method.md §13.2).

- `train_text_encoder`: the Bio_ClinicalBERT role, a compact BERT pre-trained by masked-language modelling
  on the TRAINING report sentences.
- `train_entity_model`: the MedKLIP role, trained on IU X-Ray frontal images with (entity, position,
  exist) targets extracted by rule from the TRAINING reports only (docs/method.md §13.2). Val reports are read
  only to measure existence AUROC/accuracy, never to train.

Both are resumable: a `training_state.pt` in `out_dir` is picked up and removed once the final model is saved.
"""

from __future__ import annotations

import json
import random
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader
from torchvision import transforms as T
from torchvision.transforms import v2
from tqdm.auto import tqdm
from transformers import (BertForMaskedLM, DataCollatorForLanguageModeling, PreTrainedTokenizerBase,
                          get_cosine_schedule_with_warmup)

from revtaf.data import XrayDataset, transforms
from revtaf.data.annotation import Study
from revtaf.labels import extract_triplets_batch
from revtaf.labels.constants import ENTITIES_75
from revtaf.metrics.ce import auroc
from revtaf.model.entity import EntityModel, EntityModelConfig, entity_loss, scores
from revtaf.model.text_encoder import TextEncoder, build_book_embeddings
from revtaf_train.trainer import seed_everything

STATE_FILE = "training_state.pt"


# ---------------------------------------------------------------------------------------------
# Text encoder: masked-language modelling


def train_text_encoder(
    sentences: list[str],
    tokenizer: PreTrainedTokenizerBase,
    out_dir: str | Path,
    steps: int = 3000,
    batch_size: int = 64,
    lr: float = 5e-4,
    seed: int = 0,
    mlm_probability: float = 0.15,
    checkpoint_every: int = 500,
    **compact_kwargs,
) -> TextEncoder:
    """MLM pre-training of `TextEncoder.compact(tokenizer, **compact_kwargs)` on training sentences; saved to out_dir.

    Sentences are deduplicated: IU reports repeat the same normal sentences thousands of times, and the
    encoder's job is to tell the rarer ones apart. Returns the encoder in eval mode.
    """
    if steps < 1 or batch_size < 1:
        raise ValueError(f"steps and batch_size must be >= 1, got {steps}, {batch_size}")
    unique = sorted({s.strip() for s in sentences if s and s.strip()})
    if not unique:
        raise ValueError("train_text_encoder needs at least one non-empty sentence")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    seed_everything(seed)
    encoder = TextEncoder.compact(tokenizer, **compact_kwargs)
    mlm = BertForMaskedLM(encoder.model.config)
    encoder.model = mlm.bert  # the encoder is the MLM model's trunk; the LM head is dropped at save time
    examples = [{"input_ids": ids} for ids in tokenizer(unique, truncation=True, max_length=encoder.max_len)["input_ids"]]
    collator = DataCollatorForLanguageModeling(tokenizer, mlm_probability=mlm_probability)
    optimizer = torch.optim.AdamW(mlm.parameters(), lr=lr, weight_decay=0.01)
    scheduler = get_cosine_schedule_with_warmup(optimizer, max(1, steps // 20), steps)

    start, log, order, running = 0, [], [], None
    state_path = out_dir / STATE_FILE
    if state_path.is_file():  # resume exactly: weights, optimiser, schedule, sentence order and RNG
        state = torch.load(state_path, weights_only=False)  # our own file: holds RNG states
        mlm.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        start, log, order, running = state["step"], state["log"], state["order"], state["running"]
        torch.set_rng_state(state["torch_rng"])
        random.setstate(state["py_rng"])

    mlm.train()
    bar = tqdm(range(start, steps), initial=start, total=steps, desc="text encoder MLM")
    for step in bar:
        if len(order) < batch_size:  # reshuffled epochs over the unique sentences
            order += random.sample(range(len(examples)), len(examples))
        idx, order = order[:batch_size], order[batch_size:]
        batch = collator([examples[i] for i in idx])
        loss = mlm(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], labels=batch["labels"]).loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(mlm.parameters(), 1.0)
        optimizer.step()
        scheduler.step()
        running = loss.item() if running is None else 0.98 * running + 0.02 * loss.item()
        bar.set_postfix(loss=f"{running:.3f}")
        if (step + 1) % 50 == 0 or step + 1 == steps:
            log.append({"step": step + 1, "mlm_loss": running})
        if (step + 1) % checkpoint_every == 0 and step + 1 < steps:
            torch.save(
                {"model": mlm.state_dict(), "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                 "step": step + 1, "log": log, "order": order, "running": running,
                 "torch_rng": torch.get_rng_state(), "py_rng": random.getstate()},
                state_path,
            )
    encoder.save(out_dir)
    (out_dir / "train_log.json").write_text(json.dumps({"unique_sentences": len(unique), "log": log}, indent=1))
    state_path.unlink(missing_ok=True)
    return encoder.eval()


# ---------------------------------------------------------------------------------------------
# Entity model: MedKLIP-style training on report-derived triplets


def cache_images(studies: list[Study], root: str | Path, size: int = 224) -> torch.Tensor:
    """Frontal images decoded once, resized as `entity_transform` does: uint8 [n,1,size,size].

    One channel: X-rays decode to grey replicated over RGB, and PIL's "L" of equal channels is exact,
    so `_to_input(cache)` reproduces `entity_transform` bit for bit at a third of the memory.
    """
    dataset = XrayDataset(studies, root, transform=T.Compose([T.Resize([size, size]), T.Grayscale(1), T.PILToTensor()]))
    loader = DataLoader(dataset, batch_size=64, shuffle=False)
    return torch.cat([batch["image"] for batch in tqdm(loader, desc="decoding images", leave=False)])


def _to_input(images: torch.Tensor) -> torch.Tensor:
    """uint8 [B,1,H,W] -> ImageNet-normalised float [B,3,H,W], the input `entity_transform` produces."""
    x = images.expand(-1, 3, -1, -1).float() / 255.0
    mean = torch.tensor(transforms.IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(transforms.IMAGENET_STD).view(1, 3, 1, 1)
    return (x - mean) / std


# Light, label-preserving augmentation: small rotations/shifts/zooms and exposure changes. No horizontal
# flip: left/right positions are targets.
_AUGMENT = v2.Compose([
    v2.RandomAffine(degrees=5, translate=(0.04, 0.04), scale=(0.95, 1.05)),
    v2.ColorJitter(brightness=0.15, contrast=0.15),
])


@torch.no_grad()
def frozen_features(model: EntityModel, images: torch.Tensor, batch_size: int = 64) -> torch.Tensor:
    """Backbone features of a fully frozen trunk, once: uint8 images [n,1,H,W] -> float16 [n,C,h,w]."""
    model.backbone.eval()
    chunks = [model.backbone.feature_map(_to_input(images[i : i + batch_size])).half()
              for i in tqdm(range(0, len(images), batch_size), desc="frozen backbone features", leave=False)]
    return torch.cat(chunks)


def _backbone_frozen(model: EntityModel) -> bool:
    return not any(p.requires_grad for p in model.backbone.parameters())


@torch.no_grad()
def evaluate_entity_model(
    model: EntityModel, images: torch.Tensor, exist: torch.Tensor, batch_size: int = 32, min_positives: int = 10
) -> dict:
    """Existence AUROC and accuracy (P > 0.5) on entities with >= min_positives positives and >= 1 negative.

    images uint8 [n,1,H,W], or the cached float16 features [n,C,h,w] of a frozen backbone; exist [n,75] in
    {1,0,-1} (unmentioned = absent, as in training).
    """
    model.eval()
    run = ((lambda x: model.from_features(x.float())) if images.is_floating_point()
           else (lambda x: model(_to_input(x))))
    probs = torch.cat([scores(run(images[i : i + batch_size])) for i in range(0, len(images), batch_size)])
    positive = (exist == 1).numpy()
    probs = probs.numpy()
    per_entity = {}
    for m, name in enumerate(ENTITIES_75):
        n_pos = int(positive[:, m].sum())
        if n_pos >= min_positives and n_pos < len(positive):
            per_entity[name] = {
                "positives": n_pos,
                "auroc": auroc(positive[:, m], probs[:, m]),
                "accuracy": float(((probs[:, m] > 0.5) == positive[:, m]).mean()),
            }
    def mean(key: str) -> float | None:  # None (valid JSON) when no entity qualifies
        return float(np.mean([v[key] for v in per_entity.values()])) if per_entity else None

    return {"entities": len(per_entity), "mean_auroc": mean("auroc"), "mean_accuracy": mean("accuracy"),
            "per_entity": per_entity}


def train_entity_model(
    studies: list[Study],
    root: str | Path,
    cfg: EntityModelConfig,
    out_dir: str | Path,
    epochs: int,
    batch_size: int,
    lr: float,
    seed: int,
    text_encoder: TextEncoder,
    val_studies: list[Study] | None = None,
    weight_decay: float = 1e-4,
    backbone_weights: str | Path | None = None,
) -> EntityModel:
    """Train the offline entity model on the training split; saved to out_dir (config.json + model.safetensors).

    Targets: `extract_triplets` of the TRAINING reports (studies must all be split "train"). Books: the
    text encoder's embeddings of entity names / anatomy sentences (cfg.text_dim follows the encoder).
    Each epoch ends with val existence AUROC/accuracy when val_studies are given (measurement only).
    """
    not_train = [s.id for s in studies if s.split != "train"]
    if not_train:
        raise ValueError(f"entity targets may come from training reports only; got non-train studies {not_train[:3]}")
    if not studies or epochs < 1 or batch_size < 1:
        raise ValueError("train_entity_model needs studies, epochs >= 1 and batch_size >= 1")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    seed_everything(seed)

    exist, position = (torch.as_tensor(t) for t in extract_triplets_batch([s.report for s in studies]))
    disease_book, anatomy_book = build_book_embeddings(text_encoder)
    cfg = EntityModelConfig(**{**asdict(cfg), "text_dim": text_encoder.dim})
    model = EntityModel(cfg, disease_book, anatomy_book, backbone_weights)
    images = cache_images(studies, root)
    # A frozen trunk gives the same features every epoch: compute them once and train the decoder on them
    # (no image augmentation then; the frozen ImageNet features are what generalises).
    frozen = _backbone_frozen(model)
    if frozen:
        images = frozen_features(model, images)
    val = None
    if val_studies:
        val_exist, _ = extract_triplets_batch([s.report for s in val_studies])  # measuring only
        val_images = cache_images(val_studies, root)
        val = (frozen_features(model, val_images) if frozen else val_images, torch.as_tensor(val_exist))

    # A batch of one breaks BatchNorm in training mode, so a 1-sample remainder is dropped.
    steps_per_epoch = len(studies) // batch_size + (len(studies) % batch_size > 1)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    scheduler = get_cosine_schedule_with_warmup(optimizer, max(1, steps_per_epoch // 4), epochs * steps_per_epoch)
    first_epoch, log = 0, []
    state_path = out_dir / STATE_FILE
    if state_path.is_file():
        state = torch.load(state_path, weights_only=False)  # our own file: holds the log and RNG state
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        first_epoch, log = state["epoch"], state["log"]
        torch.set_rng_state(state["torch_rng"])  # the augmentation draws

    for epoch in range(first_epoch, epochs):
        model.train()
        generator = torch.Generator().manual_seed(seed * 1000 + epoch)  # epoch-determined order survives a resume
        order = torch.randperm(len(studies), generator=generator)
        bar = tqdm(range(steps_per_epoch), desc=f"entity model epoch {epoch + 1}/{epochs}")
        total, started = 0.0, time.perf_counter()
        for step in bar:
            idx = order[step * batch_size : (step + 1) * batch_size]
            if frozen:
                out = model.from_features(images[idx].float())
            else:
                out = model(_to_input(torch.stack([_AUGMENT(img) for img in images[idx]])))
            loss = entity_loss(out, exist[idx], position[idx])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            scheduler.step()
            total += loss.item()
            bar.set_postfix(loss=f"{total / (step + 1):.4f}")
        record = {"epoch": epoch + 1, "step": (epoch + 1) * steps_per_epoch, "loss": total / steps_per_epoch,
                  "seconds": round(time.perf_counter() - started, 1)}
        if val is not None:
            metrics = evaluate_entity_model(model, *val)
            record.update(val_mean_auroc=metrics["mean_auroc"], val_mean_accuracy=metrics["mean_accuracy"],
                          val_entities=metrics["entities"], val_per_entity=metrics["per_entity"])
        tqdm.write(json.dumps({k: v for k, v in record.items() if k != "val_per_entity"}))
        log.append(record)
        torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict(), "epoch": epoch + 1, "log": log,
                    "torch_rng": torch.get_rng_state()}, state_path)
    model.save(out_dir)
    last = log[-1] if log else {}
    summary = {"epochs": epochs, "train_studies": len(studies), "final_loss": last.get("loss"),
               "seconds_per_epoch": float(np.mean([r["seconds"] for r in log])) if log else None,
               **{k: last[k] for k in ("val_mean_auroc", "val_mean_accuracy", "val_entities") if k in last}}
    (out_dir / "train_log.json").write_text(json.dumps({"config": asdict(cfg), "summary": summary, "log": log}, indent=1))
    state_path.unlink(missing_ok=True)
    return model.eval()
