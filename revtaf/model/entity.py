"""Entity model: the MedKLIP role (docs/method.md §10.5, §6.1, §13.2).

image [B,3,224,224] ─► ResNet trunk up to layer3 (stride 16) ─► 196 tokens ─► MLP (C→C→d)
75 entity queries = Linear(text_dim→d)(disease_book) ─► pre-norm DETR decoder (self-attn over the
queries, cross-attn over the tokens, no positional encodings, final LayerNorm)
  ─► classifier Linear(d→2): existence logits [B,75,2]
  ─► cl_fc Linear(d→text_dim) · anatomy_book.T: position logits [B,75,51]
  ─► head-averaged cross-attention of the last `map_layers` layers: entity maps [B,75,14,14]

Queries. MedKLIP derives them from Bio_ClinicalBERT embeddings of 75 disease descriptions; we keep
exactly that structure (a `disease_book` buffer [75,text_dim] and `query_proj`) so a MedKLIP checkpoint
maps on 1:1 (`load_medklip`). The offline default fills the book with our text encoder's embeddings of
the entity names. With 75 ≤ text_dim linearly independent rows, Linear(text_dim→d) can still place the 75
queries anywhere, so text-derived queries lose nothing against free learned embeddings.

Score for the LRE (docs/method.md §2, "logit vs probability"): `scores()` returns softmax P(exist) in [0,1],
which is what MedKLIP's own evaluation computes from the two logits. Bounded inputs also suit the
hyperbolic MLP (c = 0.01) better than unbounded logit differences.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from revtaf.labels.constants import ANATOMIES_51, ENTITIES_75, UNSPECIFIED_POSITION
from revtaf.model.config import MEDKLIP_CONFIG, EntityModelConfig  # noqa: F401  (MEDKLIP_CONFIG re-exported)
from revtaf.model.encoder import build_visual_encoder

NUM_ENTITIES, NUM_POSITIONS = len(ENTITIES_75), len(ANATOMIES_51)


@dataclass
class EntityOutput:
    exist_logits: torch.Tensor  # [B,75,2], index 1 = "exists"
    position_logits: torch.Tensor  # [B,75,51]
    maps: torch.Tensor  # [B,75,h,w] (14×14 at 224), each map sums to 1 over h·w
    features: torch.Tensor  # [B,75,d] decoder output per entity


class EntityDecoderLayer(nn.Module):
    """Pre-norm DETR decoder layer; returns the head-averaged cross-attention [B,Q,L] too."""

    def __init__(self, d_model: int, num_heads: int, dim_feedforward: int, dropout: float):
        super().__init__()
        self.self_attn = nn.MultiheadAttention(d_model, num_heads, dropout=dropout, batch_first=True)
        self.cross_attn = nn.MultiheadAttention(d_model, num_heads, dropout=dropout, batch_first=True)
        self.linear1 = nn.Linear(d_model, dim_feedforward)
        self.linear2 = nn.Linear(dim_feedforward, d_model)
        self.norm1, self.norm2, self.norm3 = (nn.LayerNorm(d_model) for _ in range(3))
        self.dropout = nn.Dropout(dropout)

    def forward(self, queries: torch.Tensor, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """queries [B,Q,d], tokens [B,L,d] -> (queries [B,Q,d], attention [B,Q,L])."""
        x = self.norm1(queries)
        queries = queries + self.dropout(self.self_attn(x, x, x, need_weights=False)[0])
        x = self.norm2(queries)
        attended, attention = self.cross_attn(x, tokens, tokens, need_weights=True, average_attn_weights=True)
        queries = queries + self.dropout(attended)
        x = self.norm3(queries)
        queries = queries + self.dropout(self.linear2(self.dropout(F.relu(self.linear1(x)))))
        return queries, attention


class EntityDecoder(nn.Module):
    def __init__(self, cfg: EntityModelConfig):
        super().__init__()
        self.layers = nn.ModuleList(
            EntityDecoderLayer(cfg.d_model, cfg.num_heads, cfg.dim_feedforward, cfg.dropout)
            for _ in range(cfg.num_layers)
        )
        self.norm = nn.LayerNorm(cfg.d_model)

    def forward(self, queries: torch.Tensor, tokens: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """queries [B,Q,d], tokens [B,L,d] -> (normed output [B,Q,d], per-layer attention [B,Q,L])."""
        attentions = []
        for layer in self.layers:
            queries, attention = layer(queries, tokens)
            attentions.append(attention)
        return self.norm(queries), attentions


class EntityModel(nn.Module):
    """Image -> 75 entity existence logits, 51-position logits per entity and entity maps.

    `disease_book` [75,text_dim] and `anatomy_book` [51,text_dim] are frozen text embeddings kept as
    buffers (saved with our checkpoints; a MedKLIP checkpoint lacks them, see `load_medklip`).
    """

    def __init__(
        self,
        cfg: EntityModelConfig,
        disease_book: torch.Tensor,
        anatomy_book: torch.Tensor,
        backbone_weights: str | Path | None = None,
    ):
        super().__init__()
        if not 1 <= cfg.map_layers <= cfg.num_layers:
            raise ValueError(f"map_layers must be in 1..{cfg.num_layers}, got {cfg.map_layers}")
        for name, book, rows in (("disease_book", disease_book, NUM_ENTITIES), ("anatomy_book", anatomy_book, NUM_POSITIONS)):
            if tuple(book.shape) != (rows, cfg.text_dim):
                raise ValueError(f"{name} must be [{rows},{cfg.text_dim}], got {tuple(book.shape)}")
        self.cfg = cfg
        self.backbone = build_visual_encoder(cfg.backbone, backbone_weights, last_stage=3,
                                             frozen_stages=cfg.frozen_stages)
        channels = self.backbone.out_dim
        self.token_mlp = nn.Sequential(nn.Linear(channels, channels), nn.ReLU(), nn.Linear(channels, cfg.d_model))
        self.register_buffer("disease_book", disease_book.detach().float().clone())
        self.register_buffer("anatomy_book", anatomy_book.detach().float().clone())
        self.query_proj = nn.Linear(cfg.text_dim, cfg.d_model)
        self.decoder = EntityDecoder(cfg)
        self.dropout = nn.Dropout(cfg.dropout)
        self.classifier = nn.Linear(cfg.d_model, 2)
        self.cl_fc = nn.Linear(cfg.d_model, cfg.text_dim)
        for module in [self.token_mlp, self.query_proj, self.decoder, self.classifier, self.cl_fc]:
            module.apply(_init_bert_style)

    def forward(self, images: torch.Tensor) -> EntityOutput:
        """images [B,3,224,224] (ImageNet-normalised) -> EntityOutput."""
        return self.from_features(self.backbone.feature_map(images))

    def from_features(self, fmap: torch.Tensor) -> EntityOutput:
        """The entity decoder on backbone features fmap [B,C,h,w] (cached when the backbone is frozen)."""
        B, _, h, w = fmap.shape
        tokens = self.token_mlp(fmap.flatten(2).transpose(1, 2))  # [B,h·w,d]
        queries = self.query_proj(self.disease_book).unsqueeze(0).expand(B, -1, -1)  # [B,75,d]
        features, attentions = self.decoder(queries, tokens)
        features = self.dropout(features)
        # Raw dot product, as MedKLIP. [CLS] books are anisotropic (the 51 anatomy sentences share a large
        # common component, which cancels in the softmax), so the logits only separate once cl_fc grows;
        # any down-scaling here makes the position head markedly slower to train.
        position_logits = self.cl_fc(features) @ self.anatomy_book.T  # [B,75,51]
        maps = torch.stack(attentions[-self.cfg.map_layers :]).mean(0).view(B, NUM_ENTITIES, h, w)
        return EntityOutput(self.classifier(features), position_logits, maps, features)

    def save(self, directory: str | Path) -> None:
        """config.json + model.safetensors (books included)."""
        from safetensors.torch import save_file

        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        (directory / "config.json").write_text(json.dumps(asdict(self.cfg), indent=2))
        save_file({k: v.contiguous() for k, v in self.state_dict().items()}, str(directory / "model.safetensors"))

    @classmethod
    def load(cls, directory: str | Path) -> "EntityModel":
        from safetensors.torch import load_file

        directory = Path(directory)
        if not (directory / "config.json").is_file() or not (directory / "model.safetensors").is_file():
            raise FileNotFoundError(f"{directory} holds no entity model (config.json + model.safetensors)")
        cfg = EntityModelConfig(**json.loads((directory / "config.json").read_text()))
        state = load_file(str(directory / "model.safetensors"))
        model = cls(cfg, state["disease_book"], state["anatomy_book"])
        model.load_state_dict(state)
        return model


def _init_bert_style(module: nn.Module) -> None:
    """N(0, 0.02) weights and zero biases for the transformer/head layers, as MedKLIP initialises them."""
    if isinstance(module, nn.Linear):
        nn.init.normal_(module.weight, std=0.02)
        nn.init.zeros_(module.bias)
    elif isinstance(module, nn.MultiheadAttention):
        nn.init.normal_(module.in_proj_weight, std=0.02)
        nn.init.zeros_(module.in_proj_bias)


def scores(out: EntityOutput) -> torch.Tensor:
    """The LRE input: P(exist) per entity, [B,75] in [0,1] (softmax of the two logits)."""
    return out.exist_logits.softmax(-1)[..., 1]


def predict_triplets(
    out: EntityOutput, absent_position: int | None = UNSPECIFIED_POSITION
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(exist_prob [B,75], exists bool [B,75], position int64 [B,75]) for the LRP triplets (docs/method.md §6.1).

    exists = P(exist) > 0.5 (the argmax of the two logits). The position head is trained on present
    entities only, so absent ones get `absent_position` (default MedKLIP's "unspecified"); pass None to
    take the argmax for them too.
    """
    exist_prob = scores(out)
    exists = exist_prob > 0.5
    position = out.position_logits.argmax(-1)
    if absent_position is not None:
        if not 0 <= absent_position < NUM_POSITIONS:
            raise ValueError(f"absent_position must be in 0..{NUM_POSITIONS - 1} or None, got {absent_position}")
        position = torch.where(exists, position, torch.full_like(position, absent_position))
    return exist_prob, exists, position


def entity_loss(out: EntityOutput, exist: torch.Tensor, position: torch.Tensor, position_weight: float = 1.0) -> torch.Tensor:
    """Existence CE summed over the 75 entities (mean over images) + position CE averaged over present entities.

    exist [B,75] in {1,0,-1}, position [B,75] int. Unmentioned (-1) counts as absent: a report that never
    mentions a pacemaker implies there is none, and radiologists report present findings far more reliably
    than absent ones. (MedKLIP instead masks -1 out; with IU's short reports that would leave most entities
    with almost no negatives.) Summing over entities, as a multi-label loss does, keeps the existence term
    from being diluted 75-fold by the many easy absences next to the position term.
    Position: full 51-way CE (MedKLIP samples 1 positive + 7 negatives; with 51 classes the full softmax is cheap).
    """
    B = out.exist_logits.shape[0]
    if tuple(exist.shape) != (B, NUM_ENTITIES) or tuple(position.shape) != (B, NUM_ENTITIES):
        raise ValueError(f"exist and position must be [{B},{NUM_ENTITIES}], got {tuple(exist.shape)}, {tuple(position.shape)}")
    if not torch.isin(exist, torch.tensor([-1, 0, 1], device=exist.device)).all():
        raise ValueError("exist values must be in {1, 0, -1}")
    present = exist == 1
    loss = F.cross_entropy(out.exist_logits.reshape(-1, 2), present.long().reshape(-1), reduction="sum") / B
    if present.any():
        target = position[present].long()
        if target.min() < 0 or target.max() >= NUM_POSITIONS:
            raise ValueError(f"positions of present entities must be in 0..{NUM_POSITIONS - 1}")
        loss = loss + position_weight * F.cross_entropy(out.position_logits[present], target)
    return loss


# ---------------------------------------------------------------------------------------------
# MedKLIP checkpoint layout (MedKLIP `model_MedKLIP.py`, wrapped in DataParallel):
#   res_features = Sequential(resnet50.children()[:-3]) -> indices 0 conv1, 1 bn1, 4..6 layer1..layer3
#   res_l1 / res_l2 = the token MLP, disease_embedding_layer = the query projection,
#   decoder = DETR TransformerDecoder (layers.i.{self_attn, multihead_attn, linear1, linear2, norm1..3}, norm),
#   classifier, cl_fc. The books are plain attributes there, so the checkpoint has none.
_MEDKLIP_PREFIXES = (  # (ours, MedKLIP)
    ("backbone.body.conv1.", "res_features.0."),
    ("backbone.body.bn1.", "res_features.1."),
    ("backbone.body.layer1.", "res_features.4."),
    ("backbone.body.layer2.", "res_features.5."),
    ("backbone.body.layer3.", "res_features.6."),
    ("token_mlp.0.", "res_l1."),
    ("token_mlp.2.", "res_l2."),
    ("query_proj.", "disease_embedding_layer."),
    ("decoder.", "decoder."),
    ("classifier.", "classifier."),
    ("cl_fc.", "cl_fc."),
)
_BOOKS = ("disease_book", "anatomy_book")


def _rename(key: str, pairs) -> str | None:
    for src, dst in pairs:
        if key.startswith(src):
            return dst + key[len(src) :]
    return None


def to_medklip_state_dict(model: EntityModel) -> dict[str, torch.Tensor]:
    """Our state dict in MedKLIP's checkpoint layout (`module.` prefixes, no books)."""
    out = {}
    for key, value in model.state_dict().items():
        if key in _BOOKS:
            continue
        name = _rename(key, _MEDKLIP_PREFIXES).replace(".cross_attn.", ".multihead_attn.")
        out["module." + name] = value
    return out


def from_medklip_state_dict(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """MedKLIP checkpoint keys (with or without `module.`) -> our keys; unknown keys raise KeyError."""
    inverse = [(dst, src) for src, dst in _MEDKLIP_PREFIXES]
    out, unknown = {}, []
    for key, value in state.items():
        key = key.removeprefix("module.")
        name = _rename(key, inverse)
        if name is None:
            unknown.append(key)
            continue
        out[name.replace(".multihead_attn.", ".cross_attn.")] = value
    if unknown:
        raise KeyError(f"keys not in the MedKLIP layout: {unknown[:8]}{'…' if len(unknown) > 8 else ''}")
    return out


def load_medklip(
    checkpoint_path: str | Path, disease_book: torch.Tensor, anatomy_book: torch.Tensor
) -> EntityModel:
    """A MedKLIP checkpoint (`torch.load(...)['model']`) as an EntityModel with MEDKLIP_CONFIG.

    disease_book [75,768] / anatomy_book [51,768]: Bio_ClinicalBERT [CLS] of MedKLIP's disease
    descriptions and of "It is located at <anatomy>" (see text_encoder.build_book_embeddings).
    """
    path = Path(checkpoint_path)
    if not path.is_file():
        raise FileNotFoundError(f"MedKLIP checkpoint not found: {path}")
    checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    state = checkpoint.get("model", checkpoint) if isinstance(checkpoint, dict) else None
    if not isinstance(state, dict):
        raise TypeError(f"{path} holds no MedKLIP state dict")
    model = EntityModel(MEDKLIP_CONFIG, disease_book, anatomy_book)
    ours = from_medklip_state_dict(state)
    missing, unexpected = model.load_state_dict(ours, strict=False)
    missing = [k for k in missing if k not in _BOOKS]
    if missing or unexpected:
        raise KeyError(f"MedKLIP checkpoint does not match: missing {missing[:8]}, unexpected {unexpected[:8]}")
    return model
