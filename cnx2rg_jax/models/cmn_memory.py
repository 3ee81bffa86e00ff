"""R2GenCMN's cross-modal memory: one learned matrix both modalities query (Chen et al., ACL 2021).

Read from cuhksz-nlp/R2GenCMN's modules/base_cmn.py (MultiThreadMemory and
memory_querying_responding). The memory is a parameter M [cmm_size, cmm_dim], drawn from
N(0, (1 / cmm_dim)^2). A feature sequence x [B, T, d] queries it with `num_heads` threads:
  q = W_q x, k = W_k M, v = W_v M               (split into heads of d / heads)
  s = q k^T / sqrt(d / heads)                   [B, heads, T, cmm_size]
  keep each query's `topk` largest scores; p = softmax over those only, then dropout
  response = W_o (p . the kept rows of v)       [B, T, d]
The caller adds the response to x (the visual tokens after att_embed; the token embeddings after
the positional encoding). A position's response depends on that position's feature alone, so
decoding computes it for the new token only. cmm_dim must equal d_model (W_k, W_v are d -> d).
"""

from __future__ import annotations

import math
from typing import Any, Optional, Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from cnx2rg_jax.models.layers import dense

Dtype = Any


class CrossModalMemory(nn.Module):
  """The shared memory matrix and its multi-thread querying and responding."""
  cmm_size: int
  d_model: int
  num_heads: int
  topk: int
  dropout: float = 0.1
  dtype: Dtype = jnp.float32

  def setup(self):
    if self.d_model % self.num_heads:
      raise ValueError(f"d_model ({self.d_model}) must be a multiple of num_heads "
                       f"({self.num_heads})")
    if not 1 <= self.topk <= self.cmm_size:
      raise ValueError(f"cmn_topk ({self.topk}) must be in [1, cmm_size={self.cmm_size}]")
    self.memory = self.param(
        "memory", nn.with_logical_partitioning(nn.initializers.normal(1.0 / self.d_model),
                                               ("memory_rows", "embed")),
        (self.cmm_size, self.d_model), jnp.float32)
    self.query = dense(self.d_model, ("embed", "joined_kv"), self.dtype)
    self.key = dense(self.d_model, ("embed", "joined_kv"), self.dtype)
    self.value = dense(self.d_model, ("embed", "joined_kv"), self.dtype)
    self.out = dense(self.d_model, ("joined_kv", "embed"), self.dtype)
    self.attn_dropout = nn.Dropout(self.dropout)

  def _heads(self, x: jax.Array) -> jax.Array:
    return x.reshape(x.shape[:-1] + (self.num_heads, self.d_model // self.num_heads))

  def memory_kv(self) -> Tuple[jax.Array, jax.Array]:
    """The memory's keys and values, each [heads, cmm_size, d_head] (the same for every example)."""
    m = self.memory.astype(self.dtype)
    return (self._heads(self.key(m)).transpose(1, 0, 2),
            self._heads(self.value(m)).transpose(1, 0, 2))

  def __call__(self, x: jax.Array, deterministic: bool = True,
               memory_kv: Optional[Tuple[jax.Array, jax.Array]] = None) -> jax.Array:
    """x [B, T, d_model] -> its memory responses [B, T, d_model] (in `dtype`); `memory_kv`:
    `memory_kv()` computed beforehand (decoding computes it once, not every step)."""
    keys, values = self.memory_kv() if memory_kv is None else memory_kv
    q = self._heads(self.query(x)).transpose(0, 2, 1, 3)  # [B, heads, T, d_head]
    scores = jnp.einsum("bhtd,hmd->bhtm", q, keys,
                        preferred_element_type=jnp.float32) / math.sqrt(q.shape[-1])
    top_scores, rows = jax.lax.top_k(scores, self.topk)  # [B, heads, T, topk]
    probs = jax.nn.softmax(top_scores, axis=-1)
    probs = self.attn_dropout(probs, deterministic=deterministic)
    heads = jnp.arange(self.num_heads)[None, :, None, None]
    picked = values[heads, rows]  # [B, heads, T, topk, d_head]: the kept rows only
    ctx = jnp.einsum("bhtk,bhtkd->bthd", probs.astype(self.dtype), picked.astype(self.dtype))
    return self.out(ctx.reshape(ctx.shape[:-2] + (self.d_model,)))
