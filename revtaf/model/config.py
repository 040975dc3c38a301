"""REVTAFConfig: every architecture and objective setting of the model, saved as config.json with it.

Two presets (method.md §13.4):

`paper()`: ResNet-101 visual encoder, BERT-base decoder (12 × 768), 1024-d fusion, 768-d LRP/GRP text
embeddings (Bio_ClinicalBERT role), 512-d memory transformer, MedKLIP-sized entity model (ResNet-50).
Trained with batch 18 for 6 epochs (train/trainer.py `TrainConfig.paper`).

`cpu()`: sized so that the whole offline pipeline (text encoder, entity model, REVTAF) trains on the 2,069
IU X-Ray training studies in about two hours on two CPU cores:
- visual encoder ResNet-18 (512-d C5 features, 7×7 patches at 224 px), conv1..layer3 initialised from
  the trained entity model's trunk (no ImageNet weights offline);
- entity model ResNet-18 trunk to layer3 + 4-layer 256-d entity decoder (the EntityModelConfig defaults);
- text encoder: compact BERT, 4 layers × 256 (LRP/GRP/memory width 256);
- fusion d = 256 (Fc = 512-d), FFN 1024; memory transformer d = 256, 2 + 2 layers, 4 heads, FFN 1024;
- decoder 3 layers × 256, 4 heads, FFN 1024, 256 positions;
- LRE as in the paper (75 → 512 → 512, c = 0.01): it is tiny.

Training-loop settings (optimiser, schedule, epochs, batch) live in train/trainer.py's TrainConfig.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields, is_dataclass, replace
from pathlib import Path
from typing import get_type_hints

from revtaf.model.decoder import DecoderConfig
from revtaf.labels.constants import UNSPECIFIED_POSITION
from revtaf.model.encoder import VISUAL_ENCODERS
from revtaf.model.entity import MEDKLIP_CONFIG, EntityModelConfig
from revtaf.model.fvtaf import FusionConfig

CONFIG_FILE = "config.json"
MEMORY_SOURCES = ("lre",)


@dataclass
class VisualConfig:
    backbone: str = "resnet101"
    weights: str | None = None  # local torchvision ImageNet file, used only to initialise training
    # Without weights: start conv1..layer3 from the trained entity model's trunk (same ResNet) instead of random.
    init_from_entity: bool = False


@dataclass
class TextEncoderSpec:
    """The text encoder that produced the triplet table and the bank's sentence/report embeddings.

    It is not part of the REVTAF module (its outputs are stored in it); recorded so that a checkpoint says
    which embeddings it expects. `pretrained_dir` = a BERT-family directory (Bio_ClinicalBERT role), else the
    compact BERT of the given size trained on the report corpus.
    """

    dim: int = 768
    layers: int = 4
    heads: int = 4
    intermediate: int = 1024
    max_len: int = 128
    pretrained_dir: str | None = None


@dataclass
class LREConfig:
    in_dim: int = 75
    hidden_dim: int = 512
    num_layers: int = 2
    c: float = 0.01
    # Standardise each entity score with the bank's mean/std before the ball (not in the paper). Tried for the
    # offline entity model, whose scores differ between studies by a median std of 0.006: the rank loss still
    # stayed near ln 15 and val figures were slightly lower (docs/training.md), so no preset uses it.
    standardize: bool = False


@dataclass
class PromptConfig:
    """PromptMRG classification branch: DETR-style memory transformer over K retrieved report embeddings."""

    d_model: int = 512
    nhead: int = 8
    num_encoder_layers: int = 2
    num_decoder_layers: int = 2
    dim_feedforward: int = 2048
    dropout: float = 0.1
    k_memory: int = 21
    # Where the K memory reports come from (§13.2). "lre": the LRE's top-K bank neighbours (self and same
    # study excluded at training time); the only offline source, a CLIP-style retriever would add one.
    memory_source: str = "lre"


@dataclass
class GenerationSettings:
    """Beam search. min_length counts the 19 prompt tokens (as the official code): IU 110/60, MIMIC 150/100."""

    num_beams: int = 3
    max_new_tokens: int = 110
    min_length: int = 60

    def __post_init__(self) -> None:  # also runs on dataclasses.replace, so overrides are checked here once
        for name, low in (("num_beams", 1), ("max_new_tokens", 1), ("min_length", 0)):
            if getattr(self, name) < low:
                raise ValueError(f"{name} must be >= {low}, got {getattr(self, name)}")

    @classmethod
    def for_dataset(cls, dataset: str) -> GenerationSettings:
        if dataset not in ("iu", "mimic"):
            raise ValueError(f"unknown dataset {dataset!r}: expected 'iu' or 'mimic'")
        return cls() if dataset == "iu" else cls(max_new_tokens=150, min_length=100)


@dataclass
class LossWeights:
    """L = lm·L_lm + cls·L_cls + rank·L_rank + fcc·L_fcc (the authors' train_mimic_cxr.sh, §8.1)."""

    lm: float = 1.0
    cls: float = 4.0
    rank: float = 2.0
    fcc: float = 0.5


@dataclass
class REVTAFConfig:
    visual: VisualConfig = field(default_factory=VisualConfig)
    entity: EntityModelConfig = field(default_factory=lambda: replace(MEDKLIP_CONFIG))
    text: TextEncoderSpec = field(default_factory=TextEncoderSpec)
    lre: LREConfig = field(default_factory=LREConfig)
    fusion: FusionConfig = field(default_factory=lambda: FusionConfig(visual_dim=2048, lrp_dim=768, grp_dim=768,
                                                                      d_model=1024, dim_feedforward=4096))
    prompts: PromptConfig = field(default_factory=PromptConfig)
    decoder: DecoderConfig = field(default_factory=DecoderConfig)
    generation: GenerationSettings = field(default_factory=GenerationSettings)
    loss: LossWeights = field(default_factory=LossWeights)
    image_size: int = 224  # model input side (test/entity transforms); 224 -> 7×7 patches
    dataset: str = "iu"  # report cleaner used for the retrieved report's sentences
    max_sentences: int | None = None  # GRP slots N; set from the training reports when the bank is built
    neighbours_shown: int = 5  # retrieved studies listed per prediction (neighbours[0] gives the GRPs)
    bank_refresh_steps: int = 100  # training steps between re-embeddings of the bank by the (changing) LRE
    absent_position: int | None = UNSPECIFIED_POSITION  # absent entities' triplet position; None = argmax

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Raise ValueError when the parts disagree on a shared width or a value is out of range."""
        # fusion.visual_dim vs the backbone's width is checked when the encoder is built (REVTAF.__init__).
        checks = {
            f"visual.backbone in {sorted(VISUAL_ENCODERS)}": self.visual.backbone in VISUAL_ENCODERS,
            "fusion.lrp_dim == text.dim": self.fusion.lrp_dim == self.text.dim,
            "fusion.grp_dim == text.dim": self.fusion.grp_dim == self.text.dim,
            "entity.text_dim == text.dim": self.entity.text_dim == self.text.dim,
            "lre.in_dim == 75": self.lre.in_dim == 75,
            "prompts.memory_source known": self.prompts.memory_source in MEMORY_SOURCES,
            "dataset is iu or mimic": self.dataset in ("iu", "mimic"),
            "prompts.k_memory >= 1": self.prompts.k_memory >= 1,
            "neighbours_shown >= 1": self.neighbours_shown >= 1,
            "decoder.max_positions > 20": self.decoder.max_positions > 20,
            "image_size >= 32": self.image_size >= 32,
        }
        failed = [name for name, ok in checks.items() if not ok]
        if failed:
            raise ValueError(f"inconsistent REVTAFConfig: {', '.join(failed)}")

    # ------------------------------------------------------------------ presets
    @classmethod
    def paper(cls) -> REVTAFConfig:
        return cls()

    @classmethod
    def cpu(cls) -> REVTAFConfig:
        return cls(
            visual=VisualConfig(backbone="resnet18", init_from_entity=True),
            entity=EntityModelConfig(backbone="resnet18", text_dim=256),
            text=TextEncoderSpec(dim=256),
            fusion=FusionConfig(visual_dim=512, lrp_dim=256, grp_dim=256, d_model=256, dim_feedforward=1024),
            prompts=PromptConfig(d_model=256, nhead=4, dim_feedforward=1024),
            decoder=DecoderConfig(num_layers=3, hidden_size=256, num_heads=4, intermediate_size=1024,
                                  max_positions=256),
        )

    # ------------------------------------------------------------------ (de)serialisation
    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> REVTAFConfig:
        return _build(cls, d)

    def save(self, directory: str | Path) -> None:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        (directory / CONFIG_FILE).write_text(json.dumps(self.to_dict(), indent=2) + "\n")

    @classmethod
    def load(cls, directory: str | Path) -> REVTAFConfig:
        path = Path(directory) / CONFIG_FILE
        if not path.is_file():
            raise FileNotFoundError(f"no {CONFIG_FILE} in {directory}")
        return cls.from_dict(json.loads(path.read_text()))


def _build(cls, d: dict):
    """Rebuild a (nested) dataclass from `asdict` output; unknown keys are an error, missing ones keep defaults."""
    if not isinstance(d, dict):
        raise TypeError(f"{cls.__name__}: expected a dict, got {type(d).__name__}")
    names = {f.name for f in fields(cls)}
    unknown = sorted(set(d) - names)
    if unknown:
        raise ValueError(f"{cls.__name__}: unknown config keys {unknown}")
    hints = get_type_hints(cls)
    kwargs = {}
    for name, value in d.items():
        hint = hints[name]
        kwargs[name] = _build(hint, value) if is_dataclass(hint) else value
    return cls(**kwargs)
