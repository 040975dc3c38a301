"""UAR's Cross-modal Representation Aligner (CRA), Latent Space Unifier (LSU) and Text-to-Image Refiner (TIR),
as plug-ins of REVTAF (`uar.cra`, `uar.lsu`, `uar.tir`; docs/plugins.md).

UAR (Li et al., ICCV 2023) aligns the global image and report representations through one modality-agnostic
module: features are expressed on a set of orthonormal basis vectors, weighted by a dual gate (per sample and
per modality), and pulled together by a triplet loss. The abstract fixes no sizes; ours are in docs/plugins.md.

CRA is a training signal here: the pooled visual feature and the study's own report embedding (the text
encoder's, `bank_report_emb`) pass through the aligner and the triplet loss shapes the visual encoder. At
inference nothing of it runs, so it costs no latency, and with the switch off the model is today's exactly.

TIR calibrates the decoder's text-to-image attention with a learnable mask: an additive bias on the
cross-attention logits, one value per layer, head and memory position (`tir_bias` [heads, L] on each BERT
cross-attention module), zero at the start, so a fresh TIR computes today's decoder (up to float rounding: SDPA
runs another kernel when given a mask; with the switch off nothing changes at all). It enters through an
attention function registered with transformers (`revtaf_tir`: SDPA with the bias as a float mask), which the
decoder selects only when TIR is on.
"""

from __future__ import annotations

from contextlib import contextmanager
from contextvars import ContextVar

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.parametrizations import orthogonal
from transformers import AttentionInterface
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import AttentionMaskInterface, sdpa_mask
from revtaf.model.config import UARConfig

IMAGE, TEXT = 0, 1


class LatentSpaceUnifier(nn.Module):
    """UAR's LSU: features [B, width] of either modality -> the nearest entries of one shared codebook
    [num_codes, width] (a discrete token space both modalities share), with the straight-through gradient and
    VQ-VAE's loss ‖sg(z) − q‖² + commitment · ‖z − sg(q)‖²."""

    def __init__(self, width: int, num_codes: int = 512, commitment: float = 0.25):
        super().__init__()
        self.codebook = nn.Embedding(num_codes, width)
        nn.init.uniform_(self.codebook.weight, -1 / num_codes, 1 / num_codes)
        self.commitment = commitment

    def forward(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """z [B, width] -> (quantised [B, width] with z's gradient, code indices [B], VQ loss)."""
        codes = self.codebook.weight
        index = (z.pow(2).sum(-1, keepdim=True) - 2 * z @ codes.T + codes.pow(2).sum(-1)).argmin(-1)
        q = codes[index]
        loss = F.mse_loss(q, z.detach()) + self.commitment * F.mse_loss(z, q.detach())
        return z + (q - z).detach(), index, loss


class CrossModalAligner(nn.Module):
    """image [B, image_dim], text [B, text_dim] -> unit vectors [B, width] each, in one shared space.

    Each modality has its own input Linear to `width`; then both are projected on the shared basis
    B [width, num_basis] (orthonormal columns, kept so by torch's orthogonal parametrisation), the coefficients
    are multiplied by the dual gate sigmoid(sample gate of z) · sigmoid(modality gate), and reconstructed as
    (c ⊙ g) Bᵀ: a feature keeps only the basis directions its gates let through. With `num_codes` (UAR's LSU),
    both modalities are first quantised to one shared codebook, and forward's third output is LSU's VQ loss.
    """

    def __init__(self, config: UARConfig, image_dim: int, text_dim: int):
        """`config`: CRA's width and basis size, and LSU's codebook when `config.lsu` is on."""
        super().__init__()
        self.config = config
        width, num_basis = config.cra_width, config.cra_basis
        num_codes = config.lsu_codes if config.lsu else None
        if not 1 <= num_basis <= width:
            raise ValueError(f"num_basis must lie in 1..width ({width}), got {num_basis}")
        self.inputs = nn.ModuleList([nn.Linear(image_dim, width), nn.Linear(text_dim, width)])
        # weight [width, num_basis]. matrix_exp, not the default Householder map for a tall matrix: under AdamW
        # the Householder parametrisation collapsed the basis to zeros within one step (a test trains it).
        self.basis = orthogonal(nn.Linear(num_basis, width, bias=False), orthogonal_map="matrix_exp")
        self.sample_gate = nn.Linear(width, num_basis)
        self.modality_gate = nn.Parameter(torch.zeros(2, num_basis))  # logits; sigmoid(0) = 1/2 at the start
        self.unifier = LatentSpaceUnifier(width, num_codes) if num_codes else None

    @property
    def basis_vectors(self) -> torch.Tensor:
        """[width, num_basis], orthonormal columns."""
        return self.basis.weight

    def encode(self, x: torch.Tensor, modality: int) -> tuple[torch.Tensor, torch.Tensor]:
        """x [B, in_dim of `modality`] -> ([B, width] unit norm, LSU's VQ loss or 0)."""
        z = self.inputs[modality](x)
        vq = z.new_zeros(())
        if self.unifier is not None:
            z, _, vq = self.unifier(z)
        basis = self.basis_vectors
        gate = torch.sigmoid(self.sample_gate(z)) * torch.sigmoid(self.modality_gate[modality])
        return F.normalize((z @ basis * gate) @ basis.T, dim=-1), vq

    def forward(self, image: torch.Tensor, text: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """-> (image [B, width], text [B, width], LSU's VQ loss summed over both modalities, 0 without LSU)."""
        (image, vq_image), (text, vq_text) = self.encode(image, IMAGE), self.encode(text, TEXT)
        return image, text, vq_image + vq_text


def triplet_loss(image: torch.Tensor, text: torch.Tensor, margin: float) -> torch.Tensor:
    """Hardest-negative triplet loss in both directions (VSE++) on unit vectors image, text [B, W], pair i = i.

    mean over i of relu(margin − s_ii + max_{j≠i} s_ij) + relu(margin − s_ii + max_{j≠i} s_ji), s = cosine
    similarity: zero exactly when every matching pair beats every other pairing of its row and of its column by
    `margin`. A batch of one has no negative: 0.
    """
    if image.shape[0] < 2:
        return image.sum() * 0
    sim = image @ text.T
    pos = sim.diagonal()
    others = sim.masked_fill(torch.eye(len(sim), dtype=torch.bool, device=sim.device), float("-inf"))
    return (F.relu(margin - pos + others.max(1).values) + F.relu(margin - pos + others.max(0).values)).mean()


TIR_ATTENTION = "revtaf_tir"
# Inference ablation (`ablate={"tir"}`): the mask skipped for the calls of this thread / context only, so a
# concurrent request on the same model (the demo runs two at a time) keeps its mask.
TIR_OFF: ContextVar[bool] = ContextVar("revtaf_tir_off", default=False)


@contextmanager
def tir_disabled(off: bool = True):
    """Within the block, `tir_attention` leaves TIR's mask out (plain SDPA) when `off`."""
    token = TIR_OFF.set(off)
    try:
        yield
    finally:
        TIR_OFF.reset(token)


def tir_attention(module: nn.Module, query, key, value, attention_mask, **kwargs):
    """SDPA, plus the module's `tir_bias` [heads, L] on the logits when it has one (the cross-attention layers
    of a decoder with TIR on); every other attention call is plain SDPA."""
    bias = getattr(module, "tir_bias", None)
    if bias is not None and not TIR_OFF.get():
        if key.shape[-2] != bias.shape[-1]:
            raise ValueError(f"TIR's mask covers {bias.shape[-1]} memory positions, the memory has {key.shape[-2]}")
        mask = bias[None, :, None, :].to(query.dtype).expand(query.shape[0], -1, query.shape[-2], -1)
        if attention_mask is not None:
            mask = mask + (attention_mask if attention_mask.is_floating_point()
                           else torch.zeros_like(attention_mask, dtype=query.dtype).masked_fill(
                               ~attention_mask, torch.finfo(query.dtype).min))
        attention_mask = mask
    return sdpa_attention_forward(module, query, key, value, attention_mask, **kwargs)


AttentionInterface.register(TIR_ATTENTION, tir_attention)
AttentionMaskInterface.register(TIR_ATTENTION, sdpa_mask)  # self-attention masks built exactly as for SDPA


def add_text_to_image_refiner(lm: nn.Module, memory_length: int) -> None:
    """Give every cross-attention module of a BertLMHeadModel a zero `tir_bias` [heads, memory_length] and route
    its attention through `tir_attention`."""
    for layer in lm.bert.encoder.layer:
        attention = layer.crossattention.self
        attention.tir_bias = nn.Parameter(torch.zeros(attention.num_attention_heads, memory_length))
    lm.config._attn_implementation = TIR_ATTENTION
