"""The decoder layer: R2Gen's DecoderLayer, pre-norm sublayers whose norms are all MCLNs.

  x = x + dropout(SelfAttn(MCLN_0(x, m)))
  x = x + dropout(SrcAttn(MCLN_1(x, m), encoder memory))
  x = x + dropout(FFN(MCLN_2(x, m)))
One `__call__` serves teacher forcing (all positions, causal mask) and incremental decoding
(one position, keys/values written into a cache), so both use the same parameters and math.
"""

from __future__ import annotations

from typing import Any, Optional, Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from cnx2rg_jax.models.config import ModelConfig
from cnx2rg_jax.models.layers import MultiHeadAttention, PositionwiseFeedForward
from cnx2rg_jax.models.mcln import ConditionalLayerNorm, stack_mlps, stacked_shifts

Dtype = Any
KV = Tuple[jax.Array, jax.Array]


def write_at(cache: KV, new: KV, pos: jax.Array) -> KV:
  """The self-attention cache (keys [R, H, Dh, L], values [R, H, L, Dh]: `project_kv`'s layout)
  with one position's (keys [R, H, Dh, 1], values [R, H, 1, Dh]) written at `pos` (a scalar:
  every sequence is at the same position), in place (a dynamic_update_slice, not a rewrite)."""
  keys = jax.lax.dynamic_update_slice_in_dim(cache[0], new[0].astype(cache[0].dtype), pos, axis=3)
  values = jax.lax.dynamic_update_slice_in_dim(cache[1], new[1].astype(cache[1].dtype), pos,
                                               axis=2)
  return keys, values


def self_attention_cache(rows: int, max_len: int, config: ModelConfig) -> dict:
  """One decoder layer's empty self-attention cache {'self_k': [rows, heads, d_head, max_len],
  'self_v': [rows, heads, max_len, d_head]} in the compute dtype (`write_at`'s layout)."""
  d_head = config.d_model // config.num_heads
  return {"self_k": jnp.zeros((rows, config.num_heads, d_head, max_len), config.compute_dtype),
          "self_v": jnp.zeros((rows, config.num_heads, max_len, d_head), config.compute_dtype)}


def prefix_mask(pos: jax.Array, length: int) -> jax.Array:
  """[1, 1, 1, length] bool: the sequences attend to cache rows 0..pos (prefix and itself)."""
  return (jnp.arange(length) <= pos)[None, None, None, :]


def cross_attend(attn: MultiHeadAttention, h: jax.Array, cross: KV,
                 deterministic: bool) -> jax.Array:
  """`attn` of h [R, T, d] over B examples' cross-attention keys and values (in
  `MultiHeadAttention.project_kv`'s layout) with R a multiple of B: rows b * K .. b * K + K - 1
  (beams or samples of example b, one position each) are example b's K queries, so the
  per-example keys/values are never repeated or gathered."""
  rows, studies = h.shape[0], cross[0].shape[0]
  if rows == studies:
    return attn.attend(h, cross[0], cross[1], None, deterministic)
  if h.shape[1] != 1 or rows % studies:
    raise ValueError(f"{rows} decoder rows of length {h.shape[1]} against {studies} examples' "
                     "cross-attention keys: want one position and a multiple of the examples")
  a = attn.attend(h.reshape(studies, rows // studies, -1), cross[0], cross[1], None, deterministic)
  return a.reshape(h.shape[:2] + a.shape[-1:])


class DecoderLayer(nn.Module):
  """One memory-conditioned decoder layer (residual stream float32)."""
  config: ModelConfig
  r2gen_layernorm: bool = False

  def setup(self):
    c = self.config
    dt = c.compute_dtype
    self.norm_self = ConditionalLayerNorm(c.d_model, self.r2gen_layernorm, dt)
    self.norm_src = ConditionalLayerNorm(c.d_model, self.r2gen_layernorm, dt)
    self.norm_ff = ConditionalLayerNorm(c.d_model, self.r2gen_layernorm, dt)
    self.self_attn = MultiHeadAttention(c.num_heads, c.d_model, c.dropout, dt)
    self.src_attn = MultiHeadAttention(c.num_heads, c.d_model, c.dropout, dt)
    self.ffn = PositionwiseFeedForward(c.d_model, c.d_ff, c.dropout, dt)
    self.drop = nn.Dropout(c.dropout)

  def cross_kv(self, memory_feats: jax.Array) -> KV:
    """Encoder output [B, N, d] -> cross-attention keys [B, heads, d_head, N] and values
    [B, heads, N, d_head]."""
    return self.src_attn.project_kv(memory_feats)

  def norms(self) -> Tuple[ConditionalLayerNorm, ...]:
    """The layer's MCLNs in the order `__call__` takes their MLP outputs."""
    return self.norm_self, self.norm_src, self.norm_ff

  def __call__(self, x: jax.Array, rm_out: Optional[jax.Array], cross: KV, self_mask: jax.Array,
               deterministic: bool = True, kv_cache: Optional[KV] = None,
               pos: Optional[jax.Array] = None,
               shifts: Optional[jax.Array] = None) -> Tuple[jax.Array, KV]:
    """x [R, T, d], rm_out [R, T, slots*rm_d] -> (x' [R, T, d] float32, self-attention K/V).

    `shifts` [R, T, 3, 2, d] float32: the three norms' MLP outputs, when the caller computed them
    (ReportTransformer does, for all layers at once); else they are computed here from rm_out.
    Cross-attention keys/values are per example ([B, ...], R = B or, decoding, B * K).
    Teacher forcing: kv_cache=None, the keys/values are those of the T positions and
    `self_mask` is causal. Decoding: T == 1, the new key/value is written at position `pos`
    (scalar) of `kv_cache` (keys [R, heads, d_head, L], values [R, heads, L, d_head]) and
    `self_mask` must hide positions > pos; the updated cache is returned.
    """
    if shifts is None:
      weights = [w for norm in self.norms() for w in norm.mlp_weights(rm_out.shape[-1])]
      shifts = stacked_shifts(rm_out, stack_mlps(weights), self.config.compute_dtype)
      shifts = shifts.reshape(shifts.shape[:-2] + (3, 2, shifts.shape[-1]))
    x = x.astype(jnp.float32)
    h = self.norm_self.normalize(x, shifts[..., 0, :, :])
    keys, values = self.self_attn.project_kv(h)
    if kv_cache is not None:
      keys, values = write_at(kv_cache, (keys, values), pos)
    a = self.self_attn.attend(h, keys, values, self_mask, deterministic)
    x = x + self.drop(a, deterministic=deterministic).astype(jnp.float32)
    h = self.norm_src.normalize(x, shifts[..., 1, :, :])
    a = cross_attend(self.src_attn, h, cross, deterministic)
    x = x + self.drop(a, deterministic=deterministic).astype(jnp.float32)
    h = self.norm_ff.normalize(x, shifts[..., 2, :, :])
    a = self.ffn(h, deterministic)
    x = x + self.drop(a, deterministic=deterministic).astype(jnp.float32)
    return x, (keys, values)
