"""`revtaf train`: every stage from annotation.json to an evaluated, exported model, each cached and resumable.

Stages, in order (outputs under `<out>/<stage>/`; a stage is done when its `DONE.json` exists, so re-running
skips it, and the stages that train pick up their own last checkpoint when a run was killed):

1. `labels`       18 disease states of every study (the rule labeler on the cleaned report, or the annotation's
                  labels when it has them, e.g. PromptMRG's MIMIC file) and (entity, position, exist) triplets
                  of the TRAINING reports only.
2. `tokenizer`    WordPiece on the cleaned training reports + [DEC] and the 4 state tokens.
3. `text_encoder` compact BERT, masked-language modelling on training sentences (Bio_ClinicalBERT role).
4. `entity_model` MedKLIP-role model on training images with the report-derived triplets as targets.
5. `features`     from the frozen text encoder and entity model: the [75,51,2,d] triplet table; GRP sentence
                  embeddings + masks and report embeddings of the training reports; label-Hamming neighbours
                  (self and same-study excluded); entity scores / LRP positions / exists of EVERY split,
                  predicted from the image (val/test reports are never read to build model inputs).
6. `revtaf`       the full objective L_lm + 4 L_cls + 2 L_rank + 0.5 L_fcc (train/trainer.py), best by val CE-F1.
7. `bank`         the reference bank: LRE embeddings of the training studies, stored in the model.
7b. `calibrate`   per-disease P(positive) decision thresholds chosen on val, stored in the model's config.
7c. `input_check` view classifier + out-of-distribution score (train views, val threshold), beside the weights.
8. `evaluate`     val and test: metrics.json + predictions.jsonl per split (train/evaluate.py).
9. `export`       the model directory (safetensors, fp16 where lossless enough) to `--export`.

`<out>/run.json` holds the config, seed and data fingerprint; `<out>/log.jsonl` every event; `<out>/plots/`
the curves. Under torchrun only the `revtaf` stage runs on every rank; rank 0 runs the others while the other
ranks wait.
"""

from __future__ import annotations

import hashlib
import json
import sys
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import torch

from revtaf_train.trainer import Dist, JsonlLog, TrainConfig, init_distributed, seed_everything
from revtaf_train.training_set import Collate, TrainingSet

PRESETS = ("cpu", "cpu_scratch", "paper")
# Two-view training: the share of studies read without their lateral, so that a frontal-only upload is read
# as well as a study (ours; 10 of IU's 2,955 studies have no lateral, so without it the model would rarely see one)
VIEW_DROPOUT = 0.25
STAGES = ("labels", "tokenizer", "text_encoder", "entity_model", "features", "revtaf", "bank", "calibrate",
          "input_check", "evaluate", "export")


@dataclass
class PipelineConfig:
    """Everything the preparation stages need. Presets: `cpu` (2 cores, IU X-Ray) and `paper` (GPU)."""

    vocab_size: int = 3000
    text_encoder_steps: int = 3000
    text_encoder_batch: int = 64
    text_encoder_lr: float = 5e-4
    entity_epochs: int = 6
    entity_batch: int = 32
    entity_lr: float = 3e-4
    entity_max_studies: int | None = None  # train the entity model on a prefix of the training split (CPU budget)
    max_sentences: int | None = None  # GRP slots N; None = the max sentence count of the training reports
    hamming_k: int = 8
    eval_batch: int = 16
    val_max_studies: int | None = None  # per-epoch validation on a prefix of val (generation is the slow part)
    # Beam-search minimum length, the 19 prompt tokens included; None = the authors' setting for the dataset
    # (IU 60, MIMIC 100). The final model carries it in its config.
    min_length: int | None = None
    no_repeat_ngram_size: int = 0  # GenerationSettings.no_repeat_ngram_size of the final model

    @classmethod
    def cpu(cls) -> PipelineConfig:
        """Sized for ~2 h on two idle cores (measured: docs/training.md)."""
        # Each setting's reason, measured, is in docs/training.md ("Why the cpu recipe's settings"): no forced
        # length, 20 entity epochs, validation on all of val, no repeated 6-wordpiece n-gram in free decoding.
        return cls(text_encoder_steps=2000, entity_epochs=20, eval_batch=64, min_length=19, no_repeat_ngram_size=6)

    @classmethod
    def paper(cls) -> PipelineConfig:
        return cls(vocab_size=30522, text_encoder_steps=20000, entity_epochs=10)


@dataclass
class RunOptions:
    """What `revtaf train` was asked for (CLI flags)."""

    data: Path
    out: Path
    preset: str = "cpu"
    dataset: str = "auto"  # iu | mimic | auto (mimic when entries carry subject_id)
    max_studies: int | None = None  # per split: a prefix of each split (smoke runs)
    epochs: int | None = None  # REVTAF epochs (and entity-model epochs when `steps` is set)
    steps: int | None = None  # per-stage iteration cap for smoke runs
    seed: int | None = None
    export: Path | None = None
    until: str | None = None  # stop after this stage
    select_key: str | None = None  # TrainConfig.select_key override
    val_studies: int | None = None  # per-epoch validation prefix; 0 = the whole val split
    plugins: tuple[str, ...] = ()  # switched on over the preset (revtaf.switches.PLUGINS, docs/plugins.md)
    views: int = 1  # films per study the model reads: 2 = frontal and lateral (VisualConfig.views)
    entity_from: Path | None = None  # a REVTAF model directory whose entity model is used as it is (not trained)


def data_fingerprint(root: Path, sizes: dict[str, int]) -> dict:
    """sha256 of annotation.json plus the split sizes actually used: ties a model to the exact data it saw."""
    digest = hashlib.sha256((root / "annotation.json").read_bytes()).hexdigest()
    return {"annotation_sha256": digest, "split_sizes": sizes, "root": str(root.resolve())}


def _save_npz(path: Path, **arrays) -> None:
    tmp = path.with_suffix(".tmp.npz")
    np.savez(tmp, **arrays)
    tmp.replace(path)


class Pipeline:
    """One training run directory. `run()` executes the stages that are not done yet."""

    def __init__(self, opts: RunOptions, dist_info: Dist | None = None):
        from revtaf.data import detect_dataset, load_annotation, require_data_root

        self.opts = opts
        self.dist = dist_info or Dist()
        self.data = require_data_root(opts.data)
        self.out = Path(opts.out)
        self.dataset = detect_dataset(self.data) if opts.dataset == "auto" else opts.dataset
        splits = load_annotation(self.data, self.dataset)
        if opts.max_studies is not None:
            if opts.max_studies < 1:
                raise ValueError(f"--max-studies must be >= 1, got {opts.max_studies}")
            splits = {k: v[: opts.max_studies] for k, v in splits.items()}
        if not splits["train"]:
            raise ValueError(f"{self.data}/annotation.json has no training studies")
        self.splits = splits
        self.log = JsonlLog(self.out / "log.jsonl", enabled=self.dist.main)
        self._configure()

    # ------------------------------------------------------------------ configuration and run metadata
    def _configure(self) -> None:
        from revtaf.model.config import GenerationSettings, REVTAFConfig, with_plugins

        o = self.opts
        if o.preset not in PRESETS:
            raise ValueError(f"unknown preset {o.preset!r}: expected one of {PRESETS}")
        self.model_cfg = getattr(REVTAFConfig, o.preset)()
        self.model_cfg.dataset = self.dataset
        self.model_cfg = with_plugins(self.model_cfg, o.plugins)
        if o.views not in (1, 2):
            raise ValueError(f"--views must be 1 or 2, got {o.views}")
        if o.views == 2:  # a quarter of the studies read without their lateral (VIEW_DROPOUT)
            self.model_cfg.visual = replace(self.model_cfg.visual, views=2, view_dropout=VIEW_DROPOUT)
        recipe = "paper" if o.preset == "paper" else "cpu"  # cpu_scratch: the cpu recipe on the from-scratch model
        self.prep_cfg = getattr(PipelineConfig, recipe)()
        self.model_cfg.generation = GenerationSettings.for_dataset(self.dataset)
        if self.prep_cfg.min_length is not None:
            self.model_cfg.generation = replace(self.model_cfg.generation, min_length=self.prep_cfg.min_length)
        self.model_cfg.generation = replace(self.model_cfg.generation,
                                            no_repeat_ngram_size=self.prep_cfg.no_repeat_ngram_size)
        n_train = len(self.splits["train"])
        if n_train <= self.model_cfg.prompts.k_memory:  # smoke runs: the memory needs k < bank size
            self.model_cfg.prompts.k_memory = max(1, n_train // 2)
        self.train_cfg = getattr(TrainConfig, recipe)()
        if o.epochs is not None:
            self.train_cfg = replace(self.train_cfg, epochs=o.epochs)
        if o.seed is not None:
            self.train_cfg = replace(self.train_cfg, seed=o.seed)
        if o.steps is not None:  # smoke run: every stage capped at `steps` iterations, short generations
            self.prep_cfg = replace(self.prep_cfg, text_encoder_steps=o.steps, entity_epochs=1, val_max_studies=8)
            self.model_cfg.generation = GenerationSettings(num_beams=2, max_new_tokens=12, min_length=24)
            self.train_cfg = replace(self.train_cfg, max_steps_per_epoch=o.steps,
                                     warmup_steps=min(self.train_cfg.warmup_steps, o.steps))
        if o.select_key is not None:
            from revtaf_train.evaluate import VAL_METRICS

            unknown = [k for k in o.select_key.split("+") if k not in VAL_METRICS]
            if unknown:
                raise ValueError(f"--select-key: unknown metric {unknown[0]!r}; expected '+'-joined {VAL_METRICS}")
            self.train_cfg = replace(self.train_cfg, select_key=o.select_key)
        if o.val_studies is not None:
            if o.val_studies < 0:
                raise ValueError(f"--val-studies must be >= 0 (0 = all), got {o.val_studies}")
            self.prep_cfg = replace(self.prep_cfg, val_max_studies=o.val_studies or None)
        if n_train < self.train_cfg.batch_size * self.dist.world:
            self.train_cfg = replace(self.train_cfg, batch_size=max(2, n_train // self.dist.world))
        self.sizes = {k: len(v) for k, v in self.splits.items()}
        self.fingerprint = data_fingerprint(self.data, self.sizes)
        meta = {
            "preset": o.preset,
            "dataset": self.dataset,
            "seed": self.train_cfg.seed,
            "fingerprint": self.fingerprint,
            "pipeline": asdict(self.prep_cfg),
            "train": self.train_cfg.to_dict(),
            "model": self.model_cfg.to_dict(),
            "argv": sys.argv,
        }
        meta = json.loads(json.dumps(meta))  # tuples -> lists, as they read back from run.json
        path = self.out / "run.json"
        if path.is_file():
            old = json.loads(path.read_text())
            if old["fingerprint"]["annotation_sha256"] != self.fingerprint["annotation_sha256"] or (
                old["fingerprint"]["split_sizes"] != self.sizes
            ):
                raise ValueError(
                    f"{self.out} was started on different data ({old['fingerprint']}); use a new --out directory"
                )
            changed = sorted(
                f"{part}.{k}" for part in ("pipeline", "train", "model")
                for k in set(meta[part]) | set(old.get(part, {}))
                if meta[part].get(k) != old.get(part, {}).get(k)
            )
            if changed:  # e.g. fewer --epochs to finish sooner: allowed, and recorded
                self.log("config_changed", keys=changed)
                print(f"revtaf train: resuming with changed settings: {', '.join(changed)}", file=sys.stderr)
        if self.dist.main:
            self.out.mkdir(parents=True, exist_ok=True)
            meta["started"] = old.get("started") if path.is_file() else time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
            path.write_text(json.dumps(meta, indent=2) + "\n")
        self.meta = meta

    def dir(self, stage: str) -> Path:
        return self.out / stage

    def done(self, stage: str) -> bool:
        return (self.dir(stage) / "DONE.json").is_file()

    # ------------------------------------------------------------------ driver
    def run(self) -> dict:
        """Run the remaining stages; returns {stage: summary} of the stages run now or before."""
        if self.opts.until is not None and self.opts.until not in STAGES:
            raise ValueError(f"unknown stage {self.opts.until!r}: expected one of {STAGES}")
        summaries = {}
        for stage in STAGES:
            if stage == "export" and self.opts.export is None:
                break
            if self.done(stage):
                summaries[stage] = json.loads((self.dir(stage) / "DONE.json").read_text())
                self.log("stage_skip", stage=stage)
            elif stage == "revtaf" or self.dist.main:
                if self.dist.main:
                    print(f"revtaf train: stage {stage}", file=sys.stderr)
                self.log("stage_start", stage=stage)
                t0 = time.monotonic()
                self.dir(stage).mkdir(parents=True, exist_ok=True)
                summary = getattr(self, f"stage_{stage}")() or {}
                summary = {"seconds": round(time.monotonic() - t0, 1), **summary}
                if self.dist.main:
                    (self.dir(stage) / "DONE.json").write_text(json.dumps(summary, indent=2, default=str) + "\n")
                self.log("stage_done", stage=stage, **summary)
                summaries[stage] = summary
            self.dist.barrier()
            if stage == self.opts.until:
                break
        if self.dist.main:
            from revtaf_train.plots import plot_run

            plot_run(self.out / "log.jsonl", self.out / "plots")
        return summaries

    # ------------------------------------------------------------------ helpers shared by stages
    def clean(self, split: str) -> list[str]:
        from revtaf.data import clean_report

        return [clean_report(s.report, self.dataset) for s in self.splits[split]]

    def labels(self, split: str) -> np.ndarray:
        return np.load(self.dir("labels") / f"{split}.npy")

    def tokenizer(self):
        from revtaf.model.tokenizer import load_tokenizer

        return load_tokenizer(self.dir("tokenizer"))

    def text_encoder(self):
        from revtaf.model.text_encoder import TextEncoder

        return TextEncoder.from_pretrained_dir(self.dir("text_encoder"), self.model_cfg.text.pooling).eval()

    def entity_model(self):
        from revtaf.model.entity import EntityModel

        return EntityModel.load(self.dir("entity_model")).eval()

    def features(self, split: str) -> dict[str, np.ndarray]:
        with np.load(self.dir("features") / f"{split}.npz") as f:
            return dict(f)

    # ------------------------------------------------------------------ stages
    def stage_labels(self) -> dict:
        from revtaf.labels.chexpert import RuleLabeler
        from revtaf.labels.triplets import extract_triplets_batch

        labeler = RuleLabeler()
        counts = {}
        for split, studies in self.splits.items():
            if not studies:
                continue
            if all(s.labels is not None for s in studies):  # e.g. PromptMRG's MIMIC file (CheXbert labels)
                labels = np.asarray([s.labels for s in studies], dtype=np.int8)
            else:
                labels = np.asarray(labeler(self.clean(split)), dtype=np.int8)
            np.save(self.dir("labels") / f"{split}.npy", labels)
            counts[split] = {"studies": len(studies), "positive_per_class": (labels == 1).sum(0).tolist()}
        exist, position = extract_triplets_batch(self.clean("train"))  # TRAINING reports only
        _save_npz(self.dir("labels") / "train_triplets.npz", exist=np.asarray(exist, dtype=np.int8),
                  position=np.asarray(position, dtype=np.int16))
        counts["train_triplets_present_per_entity"] = (np.asarray(exist) == 1).sum(0).tolist()
        return counts

    def stage_tokenizer(self) -> dict:
        from revtaf.model.tokenizer import build_tokenizer

        decoder = self.model_cfg.decoder
        tok = build_tokenizer(self.clean("train"), self.prep_cfg.vocab_size,
                              disease_tokens=decoder.prompt_tokens == "disease", topic_tokens=decoder.sentence_plan)
        tok.save_pretrained(str(self.dir("tokenizer")))
        return {"vocab_size": len(tok)}

    def stage_text_encoder(self) -> dict:
        from revtaf.data import split_sentences
        from revtaf_train.components import train_text_encoder

        sentences = [s for r in self.clean("train") for s in split_sentences(r)]
        c = self.prep_cfg
        t = self.model_cfg.text
        if t.pretrained_dir is not None:  # a pretrained sentence encoder (MiniLM): used as it is, no MLM
            from revtaf.model.text_encoder import TextEncoder

            encoder = TextEncoder.from_pretrained_dir(t.pretrained_dir, t.pooling)
            if encoder.dim != t.dim:
                raise ValueError(f"{t.pretrained_dir} gives {encoder.dim}-d embeddings, the config says text.dim={t.dim}")
            encoder.save(self.dir("text_encoder"))
            return {"pretrained": t.pretrained_dir, "sentences": len(sentences)}
        train_text_encoder(sentences, self.tokenizer(), self.dir("text_encoder"), steps=c.text_encoder_steps,
                           batch_size=c.text_encoder_batch, lr=c.text_encoder_lr, seed=self.train_cfg.seed,
                           hidden=t.dim, layers=t.layers, heads=t.heads, intermediate=t.intermediate, max_len=t.max_len)
        self._log_component("text_encoder", self.dir("text_encoder") / "train_log.json", "mlm_loss")
        return {"sentences": len(sentences), "unique": len(set(sentences))}

    def stage_entity_model(self) -> dict:
        from revtaf_train.components import train_entity_model

        if self.opts.entity_from is not None:  # an earlier model's entity model, e.g. to retrain REVTAF only
            from revtaf.model.revtaf import REVTAF

            source = REVTAF.from_pretrained(self.opts.entity_from)
            if source.cfg.entity != self.model_cfg.entity:
                raise ValueError(f"{self.opts.entity_from}'s entity model is {source.cfg.entity}, "
                                 f"this run's is {self.model_cfg.entity}")
            source.entity_model.float().save(self.dir("entity_model"))
            return {"from": str(self.opts.entity_from), "weights_sha256": source.weights_sha256}
        c = self.prep_cfg
        studies = self.splits["train"][: c.entity_max_studies]
        train_entity_model(
            studies, self.data, self.model_cfg.entity, self.dir("entity_model"), epochs=c.entity_epochs,
            batch_size=min(c.entity_batch, len(studies)), lr=c.entity_lr, seed=self.train_cfg.seed,
            text_encoder=self.text_encoder(), val_studies=self.splits["val"] or None,
            # the same backbone as the visual encoder starts from the same ImageNet file
            backbone_weights=self.model_cfg.visual.weights if self.model_cfg.entity.backbone == self.model_cfg.visual.backbone else None,
        )
        self._log_component("entity_model", self.dir("entity_model") / "train_log.json", "loss")
        log = self.dir("entity_model") / "train_log.json"
        return json.loads(log.read_text()).get("summary", {}) if log.is_file() else {}

    def _log_component(self, stage: str, path: Path, key: str) -> None:
        if not path.is_file():
            return
        for row in json.loads(path.read_text()).get("log", []):
            if key in row:
                self.log("component_step", stage=stage, step=row.get("step"), loss=row[key])

    def stage_features(self) -> dict:
        from revtaf.data import XrayDataset, transforms
        from revtaf.labels.status import hamming_neighbours
        from revtaf.model.entity import predict_triplets
        from revtaf.model.reference_prompts import build_triplet_table, report_embeddings, sentence_embeddings
        from revtaf.data import split_sentences

        encoder = self.text_encoder()
        out = self.dir("features")
        torch.save(build_triplet_table(encoder), out / "triplet_table.pt")

        reports = self.clean("train")
        counts = np.array([len(split_sentences(r)) for r in reports])
        N = self.prep_cfg.max_sentences or int(counts.max())
        emb, mask = sentence_embeddings(encoder, reports, N)
        groups = [s.study_id for s in self.splits["train"]]
        neighbours = hamming_neighbours(self.labels("train"), groups, self.prep_cfg.hamming_k)
        _save_npz(out / "train_text.npz", sentence_emb=emb.numpy(), sentence_mask=mask.numpy(),
                  report_emb=report_embeddings(emb, mask).numpy(), neighbours=np.asarray(neighbours))

        entity = self.entity_model()
        for split, studies in self.splits.items():
            if not studies:
                continue
            loader = torch.utils.data.DataLoader(
                XrayDataset(studies, self.data, transforms.entity_transform()), batch_size=self.prep_cfg.eval_batch)
            rows = {"scores": [], "exists": [], "position": []}
            with torch.no_grad():
                for batch in _bar(loader, f"entity predictions ({split})"):
                    prob, exists, position = predict_triplets(entity(batch["image"]), self.model_cfg.absent_position)
                    rows["scores"].append(prob)
                    rows["exists"].append(exists)
                    rows["position"].append(position)
            _save_npz(out / f"{split}.npz", scores=torch.cat(rows["scores"]).numpy().astype(np.float32),
                      exists=torch.cat(rows["exists"]).numpy(), position=torch.cat(rows["position"]).numpy().astype(np.int16),
                      ids=np.array([s.id for s in studies]))
        return {"max_sentences": N, "sentences_p99": float(np.percentile(counts, 99)),
                "truncated_reports": int((counts > N).sum())}

    def build_model(self):
        """A fresh REVTAF with the frozen entity model, the triplet table and the training bank attached."""
        from revtaf.model.disease_prompts import initial_base_probs
        from revtaf.model.revtaf import REVTAF

        train = self.features("train")
        text = np.load(self.dir("features") / "train_text.npz")
        labels = torch.from_numpy(self.labels("train")).long()
        torch.manual_seed(self.train_cfg.seed)
        table = torch.load(self.dir("features") / "triplet_table.pt", weights_only=True)
        model = REVTAF(self.model_cfg, self.tokenizer(), table, self.entity_model())
        studies = self.splits["train"]
        model.set_bank([s.id for s in studies], torch.from_numpy(train["scores"]),
                       torch.from_numpy(text["sentence_emb"]), torch.from_numpy(text["sentence_mask"]),
                       torch.from_numpy(text["report_emb"]), labels, [s.study_id for s in studies])
        model.base_probs.copy_(initial_base_probs(labels))
        return model

    def train_set(self, tokenizer) -> tuple[TrainingSet, object]:
        text = np.load(self.dir("features") / "train_text.npz")
        with np.load(self.dir("labels") / "train_triplets.npz") as t:  # where each training report puts an entity
            report_position = np.where(t["exist"] == 1, t["position"], -1).astype(np.int64)
        decoder = self.model_cfg.decoder
        visual = self.model_cfg.visual
        ds = TrainingSet(self.splits["train"], self.data, self.features("train"), self.labels("train"),
                         self.clean("train"), text["neighbours"][:, 0], report_position, decoder.sentence_plan,
                         visual.views, visual.view_dropout)
        return ds, Collate(tokenizer, decoder.max_positions, decoder.prompt_tokens == "disease", decoder.sentence_plan)

    def stage_revtaf(self) -> dict:
        from revtaf_train.evaluate import validate_epoch
        from revtaf_train.trainer import Trainer

        model = self.build_model()
        dataset, collate = self.train_set(model.tokenizer)
        val = self.splits["val"][: self.prep_cfg.val_max_studies]
        val_labels = self.labels("val")[: len(val)] if val else None
        val_features = {k: v[: len(val)] for k, v in self.features("val").items()} if val else None

        def validate(m, epoch):
            if not val:
                return {}
            return validate_epoch(m, val, self.data, val_features, val_labels, self.dataset,
                                  batch_size=self.prep_cfg.eval_batch, log=self.log, epoch=epoch)

        def save_best(m, metrics):
            m.save_pretrained(self.dir("revtaf") / "best")
            (self.dir("revtaf") / "best" / "val_metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")

        trainer = Trainer(model, dataset, collate, self.train_cfg, self.dir("revtaf"), validate=validate,
                          save_best=save_best, log=self.log, dist_info=self.dist)
        result = trainer.fit()
        if self.dist.main and not (self.dir("revtaf") / "best").is_dir():  # no validation split: keep the last
            save_best(model, {})
        return {"best_val_" + self.train_cfg.select_key: result["best"], "epochs": len(result["history"]),
                "steps_per_epoch": trainer.steps_per_epoch,
                "seconds_per_epoch": [h["seconds"] for h in result["history"]]}

    def stage_bank(self) -> dict:
        """The final model: the best epoch, with the bank embedded by its own LRE, saved with run metadata."""
        from revtaf.model.revtaf import REVTAF

        model = REVTAF.from_pretrained(self.dir("revtaf") / "best")
        model.cfg.generation = self.model_cfg.generation  # the run's current settings (they may have changed)
        db = model.refresh_bank()
        final = self.dir("bank") / "model"
        model.save_pretrained(final)
        self.write_run_card(final)
        return {"bank_rows": len(db), "embedding_dim": int(db.embeddings.shape[1]),
                "parameters": model.num_parameters()}

    def stage_calibrate(self) -> dict:
        """Decision thresholds of the disease prompts, chosen on val (train/evaluate.calibrate_checkpoint)."""
        from revtaf_train.evaluate import calibrate_checkpoint

        if not self.splits["val"]:
            return {"positive_thresholds": None}
        thresholds = calibrate_checkpoint(self.dir("bank") / "model", self.data, "val",
                                          batch_size=self.prep_cfg.eval_batch, max_studies=self.opts.max_studies)
        return {"positive_thresholds": thresholds}

    def stage_input_check(self) -> dict:
        """The view / out-of-distribution check of the final model (train/input_check.py)."""
        from revtaf_train.input_check import fit_input_check

        return fit_input_check(self.dir("bank") / "model", self.data, self.prep_cfg.eval_batch, self.opts.max_studies)

    def write_run_card(self, directory: Path) -> None:
        """run.json (config, seed, data fingerprint) and the TrainConfig beside the weights."""
        from revtaf.integrity import read_manifest, write_manifest

        card = {k: self.meta[k] for k in ("preset", "dataset", "seed", "fingerprint", "pipeline", "train")}
        (directory / "run.json").write_text(json.dumps(card, indent=2) + "\n")
        write_manifest(directory, [*read_manifest(directory), "run.json"])  # the card is covered too

    def stage_evaluate(self) -> dict:
        from revtaf.model.revtaf import REVTAF
        from revtaf_train.evaluate import evaluate_model, headline

        model = REVTAF.from_pretrained(self.dir("bank") / "model")
        summary = {}
        # val: the prefix the per-epoch validation used (the cpu preset keeps it short); test: all of it
        limits = {"val": self.prep_cfg.val_max_studies, "test": None}
        for split, limit in limits.items():
            studies = self.splits[split][:limit]
            if not studies:
                continue
            features = {k: v[: len(studies)] for k, v in self.features(split).items()}
            metrics = evaluate_model(model, studies, self.data, self.dir("evaluate") / split,
                                     dataset=self.dataset, features=features, batch_size=self.prep_cfg.eval_batch)
            summary[split] = headline(metrics)
        return summary

    def stage_export(self) -> dict:
        """Copy the final model to `--export` in fp16 where lossless enough; report the size."""
        from revtaf.model.revtaf import REVTAF

        target = Path(self.opts.export)
        model = REVTAF.from_pretrained(self.dir("bank") / "model")
        model.save_pretrained(target, fp16=True)
        self.write_run_card(target)
        size = sum(f.stat().st_size for f in target.rglob("*") if f.is_file())
        return {"export": str(target), "megabytes": round(size / 2**20, 2)}


def _bar(iterable, desc: str):
    from tqdm.auto import tqdm

    return tqdm(iterable, desc=desc, dynamic_ncols=True)


def train_main(opts: RunOptions) -> dict:
    """Entry point of `revtaf train` (also under torchrun)."""
    info = init_distributed()
    torch.set_num_threads(max(1, torch.get_num_threads()))
    seed_everything((opts.seed or 0) + info.rank)
    return Pipeline(opts, info).run()
