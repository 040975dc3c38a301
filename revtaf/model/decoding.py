"""A lean incremental step of the report decoder with a static KV cache, for the sentence-plan loop.

transformers' BERT forward rebuilds masks, position ids and a per-layer cache object on every call; for a
3 × 256 decoder that overhead is most of a step on a CPU. `DecoderStep` runs the same modules (so an int8 decoder
works too) on preallocated key/value buffers: the self-attention K/V grow in place in a [n, heads, max_len,
head_dim] buffer per layer, and the cross-attention K/V of the fused memory Fc are computed once per study and
shared by every beam. UAR's TIR mask, when the decoder has one and it is not switched off, is added to the
cross-attention logits as in uar.tir_attention. A test holds its logits to the BertLMHeadModel forward and the
loop's beam search to `generate`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from transformers import BertLMHeadModel


class StaticCache:
    """Self-attention K/V of every layer, [n, heads, max_len, head_dim] each, filled up to `length`."""

    def __init__(self, keys: list[torch.Tensor], values: list[torch.Tensor], length: int = 0):
        self.keys, self.values, self.length = keys, values, length

    @classmethod
    def empty(cls, lm: BertLMHeadModel, n: int, max_len: int, like: torch.Tensor) -> StaticCache:
        c = lm.config
        shape = (n, c.num_attention_heads, max_len, c.hidden_size // c.num_attention_heads)
        layers = range(c.num_hidden_layers)
        return cls([like.new_zeros(shape) for _ in layers], [like.new_zeros(shape) for _ in layers])

    def repeat(self, n: int) -> StaticCache:
        """n copies of row 0 (the beams of a sentence start from the committed state), in buffers of their own."""
        def rows(t: torch.Tensor) -> torch.Tensor:
            out = t.new_empty((n, *t.shape[1:]))
            out[:, :, : self.length] = t[:1, :, : self.length]
            return out
        return StaticCache([rows(k) for k in self.keys], [rows(v) for v in self.values], self.length)

    def select(self, rows: torch.Tensor) -> None:
        """Keep these rows, in this order (beam search's reordering), in place."""
        for buffers in (self.keys, self.values):
            for t in buffers:
                t[:, :, : self.length] = t[rows, :, : self.length]


def _tir_mask(layer, memory: torch.Tensor) -> torch.Tensor | None:
    """UAR's TIR bias of a cross-attention layer as an SDPA float mask [1, heads, 1, L], or None (no TIR, or
    switched off for this call: uar.tir_disabled)."""
    from revtaf.model.uar import TIR_OFF

    bias = getattr(layer.crossattention.self, "tir_bias", None)
    if bias is None or TIR_OFF.get():
        return None
    return bias[None, :, None, :].to(memory.dtype)


def _heads(x: torch.Tensor, h: int) -> torch.Tensor:
    """[n, t, h*d] -> [n, h, t, d]."""
    n, t, _ = x.shape
    return x.view(n, t, h, -1).transpose(1, 2)


class DecoderStep:
    """`step(ids or embeds, cache)` -> next-token logits [n, V] of the last position, the cache grown in place.

    lm: the decoder's BertLMHeadModel (eval mode); memory [1, L, H] = memory_proj(Fc) of one study."""

    def __init__(self, lm: BertLMHeadModel, memory: torch.Tensor):
        self.lm, self.bert, self.h = lm, lm.bert, lm.config.num_attention_heads
        self.layers = list(self.bert.encoder.layer)
        self.cross = [(_heads(layer.crossattention.self.key(memory), self.h),
                       _heads(layer.crossattention.self.value(memory), self.h), _tir_mask(layer, memory))
                      for layer in self.layers]
        self.token_type = self.bert.embeddings.token_type_embeddings.weight[0]

    def __call__(self, cache: StaticCache, ids: torch.Tensor | None = None,
                 embeds: torch.Tensor | None = None) -> torch.Tensor:
        emb = self.bert.embeddings
        x = emb.word_embeddings(ids) if embeds is None else embeds
        n, t = x.shape[:2]
        start = cache.length
        x = emb.LayerNorm(x + self.token_type + emb.position_embeddings.weight[start: start + t])
        # causal over the new tokens, everything before them visible
        mask = None if t == 1 else torch.ones(t, start + t, dtype=torch.bool, device=x.device).tril(start)
        for i, layer in enumerate(self.layers):
            a = layer.attention
            q = _heads(a.self.query(x), self.h)
            cache.keys[i][:n, :, start: start + t] = _heads(a.self.key(x), self.h)
            cache.values[i][:n, :, start: start + t] = _heads(a.self.value(x), self.h)
            ctx = F.scaled_dot_product_attention(q, cache.keys[i][:n, :, : start + t],
                                                 cache.values[i][:n, :, : start + t], attn_mask=mask)
            x = a.output.LayerNorm(a.output.dense(ctx.transpose(1, 2).reshape(n, t, -1)) + x)
            c = layer.crossattention
            k, v, tir = self.cross[i]
            ctx = F.scaled_dot_product_attention(_heads(c.self.query(x), self.h), k.expand(n, -1, -1, -1),
                                                 v.expand(n, -1, -1, -1), attn_mask=tir)
            x = c.output.LayerNorm(c.output.dense(ctx.transpose(1, 2).reshape(n, t, -1)) + x)
            x = layer.output.LayerNorm(layer.output.dense(layer.intermediate(x)) + x)
        cache.length = start + t
        head = self.lm.cls.predictions
        return head(x[:, -1])
