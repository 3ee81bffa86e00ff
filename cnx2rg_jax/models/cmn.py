"""R2GenCMN (Chen et al., ACL 2021; cuhksz-nlp/R2GenCMN) as a model of this codebase:
`model.architecture = "cmn"`.

Read from R2GenCMN's modules/base_cmn.py and att_model.py:
  encode:  att_embed = Linear(d_vf -> d), ReLU, Dropout(visual_dropout); plus the cross-modal
           memory's responses (models/cmn_memory.py); plus the sinusoidal positions, Dropout
           (its src_embed is a PositionalEncoding, unlike R2Gen's identity); N pre-norm encoder
           layers (R2Gen's, models/transformer.py); a final norm.
  decode:  y = Embed(token) * sqrt(d) + PE(position), Dropout; y + the memory's responses to y;
           N standard pre-norm decoder layers (self-attention, cross-attention, feed-forward,
           plain norms: no relational memory, no MCLN); a final norm; Linear(d -> vocab).
The memory matrix and its four linear maps are shared by both modalities. Its norms are
R2Gen's LayerNorm ((x - mean) / (unbiased std + eps)) when model.r2gen_layernorm is set.

`CMNModel` is CNX2RG with this Transformer: the same ResNet, prompt fusion, keyword head and
entry points (`__call__`, `encode`, `init_cache`, `decode_step`, ...), so training, checkpoints,
the searches of models/search.py, eval, predict and the card take it unchanged.

Decoding follows ReportTransformer's protocol: `decode_constants(memory)` once per search (each
decoder layer's cross-attention keys/values per example, in `MultiHeadAttention.project_kv`'s
layout, and the memory matrix's keys/values [heads, cmm_size, d_head], the same for every
example), `init_cache` -> {'pos': int32 [], 'layers': one {'self_k' [R, heads, d_head, max_len],
'self_v' [R, heads, max_len, d_head]} per layer}, and
`decode_step(token [R], cache, constants)` with R a multiple of B (rows b * K .. b * K + K - 1
are example b's beams or samples). The new token's memory response is computed from that token
alone at each step; the memory's projections are constants, never recomputed in the loop.
"""

from __future__ import annotations

from typing import Any, Dict, Optional, Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from cnx2rg_jax.models.cmn_memory import CrossModalMemory
from cnx2rg_jax.models.cnx2rg import CNX2RG
from cnx2rg_jax.models.config import ModelConfig
from cnx2rg_jax.models.decoder import (cross_attend, prefix_mask, self_attention_cache,
                                       write_at)
from cnx2rg_jax.models.layers import (TORCH_LINEAR, Embeddings, LayerNorm, MultiHeadAttention,
                                      PositionwiseFeedForward, causal_mask, dense,
                                      sinusoidal_positions)
from cnx2rg_jax.models.transformer import EncoderLayer

Cache = Dict[str, Any]
KV = Tuple[jax.Array, jax.Array]


class CMNDecoderLayer(nn.Module):
  """The vanilla pre-norm decoder layer of R2GenCMN (residual stream float32)."""
  config: ModelConfig
  r2gen_layernorm: bool = False

  def setup(self):
    c = self.config
    dt = c.compute_dtype
    self.norm_self = LayerNorm(self.r2gen_layernorm, dt)
    self.norm_src = LayerNorm(self.r2gen_layernorm, dt)
    self.norm_ff = LayerNorm(self.r2gen_layernorm, dt)
    self.self_attn = MultiHeadAttention(c.num_heads, c.d_model, c.dropout, dt)
    self.src_attn = MultiHeadAttention(c.num_heads, c.d_model, c.dropout, dt)
    self.ffn = PositionwiseFeedForward(c.d_model, c.d_ff, c.dropout, dt)
    self.drop = nn.Dropout(c.dropout)

  def cross_kv(self, memory_feats: jax.Array) -> KV:
    return self.src_attn.project_kv(memory_feats)

  def __call__(self, x: jax.Array, cross: KV, self_mask: jax.Array, deterministic: bool = True,
               kv_cache: Optional[KV] = None, pos: Optional[jax.Array] = None
               ) -> Tuple[jax.Array, KV]:
    """As decoder.DecoderLayer without the memory condition: x [B, T, d] -> (x', self K/V)."""
    x = x.astype(jnp.float32)
    h = self.norm_self(x)
    keys, values = self.self_attn.project_kv(h)
    if kv_cache is not None:
      keys, values = write_at(kv_cache, (keys, values), pos)
    a = self.self_attn.attend(h, keys, values, self_mask, deterministic)
    x = x + self.drop(a, deterministic=deterministic).astype(jnp.float32)
    a = cross_attend(self.src_attn, self.norm_src(x), cross, deterministic)
    x = x + self.drop(a, deterministic=deterministic).astype(jnp.float32)
    a = self.ffn(self.norm_ff(x), deterministic)
    x = x + self.drop(a, deterministic=deterministic).astype(jnp.float32)
    return x, (keys, values)


class CMNTransformer(nn.Module):
  """R2GenCMN's encoder-decoder with the cross-modal memory (see the module docstring)."""
  config: ModelConfig
  r2gen_layernorm: bool = False
  att_embed_dropout: float = 0.5

  def setup(self):
    c = self.config
    dt = c.compute_dtype
    if c.cmm_dim != c.d_model:
      raise ValueError(f"model.cmm_dim ({c.cmm_dim}) must equal model.d_model ({c.d_model}): "
                       "R2GenCMN's memory maps are d_model -> d_model")
    self.att_embed = dense(c.d_model, ("visual", "embed"), dt, kernel_init=TORCH_LINEAR)
    self.att_drop = nn.Dropout(self.att_embed_dropout)
    # R2GenCMN's MultiThreadMemory keeps its own default dropout, 0.1 (= our model.dropout default)
    self.cmn = CrossModalMemory(c.cmm_size, c.d_model, c.num_heads, c.cmn_topk, c.dropout, dt)
    self.src_drop = nn.Dropout(c.dropout)
    self.encoder_layers = [EncoderLayer(c, self.r2gen_layernorm)
                           for _ in range(c.num_encoder_layers)]
    self.encoder_norm = LayerNorm(self.r2gen_layernorm, dt)
    self.embed = Embeddings(c.vocab_size, c.d_model, dt)
    self.embed_drop = nn.Dropout(c.dropout)
    self.decoder_layers = [CMNDecoderLayer(c, self.r2gen_layernorm)
                           for _ in range(c.num_decoder_layers)]
    self.decoder_norm = LayerNorm(self.r2gen_layernorm, dt)
    self.logit = dense(c.vocab_size, ("embed", "vocab"), dt, kernel_init=TORCH_LINEAR)

  def encode(self, visual_feats: jax.Array, deterministic: bool = True) -> jax.Array:
    """visual_feats [B, N, d_vf] -> encoder memory [B, N, d_model] in the compute dtype."""
    x = nn.relu(self.att_embed(visual_feats.astype(self.config.compute_dtype)))
    x = self.att_drop(x, deterministic=deterministic)
    x = x.astype(jnp.float32) + self.cmn(x, deterministic).astype(jnp.float32)
    x = x + sinusoidal_positions(x.shape[1], self.config.d_model)[None]
    x = self.src_drop(x.astype(self.config.compute_dtype), deterministic=deterministic)
    for layer in self.encoder_layers:
      x = layer(x, deterministic)
    return self.encoder_norm(x)

  def _embed(self, tokens: jax.Array, positions: jax.Array, num_positions: int,
             deterministic: bool, memory_kv: Optional[KV] = None) -> jax.Array:
    """Position-encoded token embeddings plus their memory responses, [B, T, d] float32."""
    e = self.embed_drop(self.embed(tokens, positions, num_positions), deterministic=deterministic)
    return e.astype(jnp.float32) + self.cmn(e, deterministic, memory_kv).astype(jnp.float32)

  def _output(self, x: jax.Array) -> jax.Array:
    return self.logit(self.decoder_norm(x)).astype(jnp.float32)

  def decode_logits(self, memory_feats: jax.Array, tokens: jax.Array,
                    deterministic: bool = True) -> jax.Array:
    """Teacher-forced logits [B, T, vocab] float32 for input tokens [B, T] (causal; pads are
    not masked, which only touches positions at or after them, as in ReportTransformer)."""
    t = tokens.shape[1]
    positions = jnp.broadcast_to(jnp.arange(t)[None, :], tokens.shape)
    x = self._embed(tokens, positions, t, deterministic)
    mask = causal_mask(t)
    for layer in self.decoder_layers:
      x, _ = layer(x, layer.cross_kv(memory_feats), mask, deterministic)
    return self._output(x)

  def __call__(self, visual_feats: jax.Array, tokens: jax.Array,
               deterministic: bool = True) -> jax.Array:
    return self.decode_logits(self.encode(visual_feats, deterministic), tokens, deterministic)

  def decode_constants(self, memory_feats: jax.Array) -> Dict[str, Any]:
    """What every decode step reads and none changes (module docstring), from the encoder
    memory [B, N, d]."""
    return {"cross": tuple(layer.cross_kv(memory_feats) for layer in self.decoder_layers),
            "memory_kv": self.cmn.memory_kv()}

  def init_cache(self, memory_feats: jax.Array, max_len: int) -> Cache:
    """The decode cache before the first token, one row per example of memory_feats [B, N, d];
    `max_len` (static) bounds the steps."""
    c = self.config
    b = memory_feats.shape[0]
    layers = tuple(self_attention_cache(b, max_len, c) for _ in self.decoder_layers)
    return {"pos": jnp.zeros((), jnp.int32), "layers": layers}

  def decode_step(self, token: jax.Array, cache: Cache, constants: Dict[str, Any],
                  deterministic: bool = True) -> Tuple[jax.Array, Cache]:
    """token [R] at position cache['pos'] -> (logits [R, vocab] float32, cache'); equal to the
    teacher-forced logits there. R is a multiple of the examples of `constants`."""
    pos = cache["pos"]
    max_len = cache["layers"][0]["self_k"].shape[-1]
    positions = jnp.broadcast_to(pos, token.shape)[:, None]
    x = self._embed(token[:, None], positions, max_len, deterministic, constants["memory_kv"])
    mask = prefix_mask(pos, max_len)
    layers = []
    for layer, lc, cross in zip(self.decoder_layers, cache["layers"], constants["cross"]):
      x, (k, v) = layer(x, cross, mask, deterministic, kv_cache=(lc["self_k"], lc["self_v"]),
                        pos=pos)
      layers.append({"self_k": k, "self_v": v})
    return self._output(x)[:, 0], {"pos": pos + 1, "layers": tuple(layers)}


class CMNModel(CNX2RG):
  """CNX2RG's visual side (ResNet, prompts, keyword head) with R2GenCMN's Transformer; every
  entry point is CNX2RG's."""
  transformer_class = CMNTransformer
