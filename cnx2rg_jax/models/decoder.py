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
from cnx2rg_jax.models.mcln import ConditionalLayerNorm

Dtype = Any
KV = Tuple[jax.Array, jax.Array]


def write_at(cache: jax.Array, new: jax.Array, pos: jax.Array) -> jax.Array:
  """cache [B, L, ...] with new [B, 1, ...] written at row pos[b] of example b.

  A one-hot select costs O(L) per step, the same order as attending over the cache. A `pos`
  outside [0, L) writes nothing.
  """
  hit = jnp.arange(cache.shape[1])[None, :] == pos[:, None]  # [B, L]
  hit = hit.reshape(hit.shape + (1,) * (cache.ndim - 2))
  return jnp.where(hit, new.astype(cache.dtype), cache)


def prefix_mask(pos: jax.Array, length: int) -> jax.Array:
  """[B, 1, 1, length] bool: example b attends to cache rows 0..pos[b] (its prefix and itself)."""
  return (jnp.arange(length)[None, :] <= pos[:, None])[:, None, None, :]


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
    """Encoder output [B, N, d] -> cross-attention (keys, values), each [B, N, heads, d_head]."""
    return self.src_attn.project_kv(memory_feats)

  def __call__(self, x: jax.Array, rm_out: jax.Array, cross: KV, self_mask: jax.Array,
               deterministic: bool = True, kv_cache: Optional[KV] = None,
               pos: Optional[jax.Array] = None) -> Tuple[jax.Array, KV]:
    """x [B, T, d], rm_out [B, T, slots*rm_d] -> (x' [B, T, d] float32, self-attention K/V).

    Teacher forcing: kv_cache=None, the keys/values are those of the T positions and
    `self_mask` is causal. Decoding: T == 1, the new key/value is written at row pos[b] of
    `kv_cache` (each [B, L, heads, d_head]) and `self_mask` must hide rows > pos[b]; the
    updated cache is returned.
    """
    x = x.astype(jnp.float32)
    h = self.norm_self(x, rm_out)
    keys, values = self.self_attn.project_kv(h)
    if kv_cache is not None:
      keys = write_at(kv_cache[0], keys, pos)
      values = write_at(kv_cache[1], values, pos)
    a = self.self_attn.attend(h, keys, values, self_mask, deterministic)
    x = x + self.drop(a, deterministic=deterministic).astype(jnp.float32)
    h = self.norm_src(x, rm_out)
    a = self.src_attn.attend(h, cross[0], cross[1], None, deterministic)
    x = x + self.drop(a, deterministic=deterministic).astype(jnp.float32)
    h = self.norm_ff(x, rm_out)
    a = self.ffn(h, deterministic)
    x = x + self.drop(a, deterministic=deterministic).astype(jnp.float32)
    return x, (keys, values)
