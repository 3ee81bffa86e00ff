"""Transformer building blocks shared by the encoder, the decoder and the relational memory.

Parameters are float32; matmuls run in the module's `dtype` (the config's compute dtype);
softmax and layer norms always run in float32.

Logical axis names of the parameters (map them to mesh axes with flax.linen's
logical_axis_rules): 'vocab', 'embed', 'joined_kv' (heads x d_head), 'mlp' (hidden width of
feed-forward and gate layers), 'visual' (patch feature width), 'rm_flat' (flattened relational
memory, slots x rm_d_model).
"""

from __future__ import annotations

import math
from typing import Any, Optional, Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

Dtype = Any

# R2Gen re-initialises every matrix of its Transformer with xavier_uniform_.
XAVIER = nn.initializers.xavier_uniform()
# torch.nn.Linear's default (kaiming_uniform with a=sqrt(5)): U(-1/sqrt(fan_in), 1/sqrt(fan_in)).
# R2Gen leaves att_embed and the logit layer at this default.
TORCH_LINEAR = nn.initializers.variance_scaling(1.0 / 3.0, "fan_in", "uniform")
LN_EPS = 1e-6


def dense(features: int, axes: Tuple[str, str], dtype: Dtype,
          kernel_init=XAVIER, bias_init=nn.initializers.zeros_init(),
          name: Optional[str] = None) -> nn.Dense:
  """A float32-parameter Dense layer computing in `dtype` whose kernel/bias carry `axes`."""
  return nn.Dense(
      features, dtype=dtype, param_dtype=jnp.float32,
      kernel_init=nn.with_logical_partitioning(kernel_init, axes),
      bias_init=nn.with_logical_partitioning(bias_init, (axes[1],)),
      name=name)


def layer_norm(x: jax.Array, scale: jax.Array, bias: jax.Array, *, r2gen: bool = False,
               eps: float = LN_EPS) -> jax.Array:
  """Normalises the last axis of `x` in float32 and returns scale * x_hat + bias (float32).

  r2gen=False: x_hat = (x - mean) / sqrt(var + eps), the biased variance (nn.LayerNorm's).
  r2gen=True: x_hat = (x - mean) / (std + eps), std the *unbiased* one (R2Gen's LayerNorm,
  torch.Tensor.std's default). `scale`/`bias` broadcast against `x` (per token for MCLN).
  """
  x = x.astype(jnp.float32)
  n = x.shape[-1]
  mean = jnp.mean(x, axis=-1, keepdims=True)
  centred = x - mean
  sq = jnp.sum(jnp.square(centred), axis=-1, keepdims=True)
  if r2gen:
    x_hat = centred / (jnp.sqrt(sq / (n - 1)) + eps)
  else:
    x_hat = centred * jax.lax.rsqrt(sq / n + eps)
  return scale.astype(jnp.float32) * x_hat + bias.astype(jnp.float32)


class LayerNorm(nn.Module):
  """Layer norm with a learnt gain and bias; output in `dtype` (statistics in float32)."""
  r2gen: bool = False
  dtype: Dtype = jnp.float32
  eps: float = LN_EPS

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    d = x.shape[-1]
    scale = self.param("scale", nn.with_logical_partitioning(nn.initializers.ones_init(),
                                                             ("embed",)), (d,), jnp.float32)
    bias = self.param("bias", nn.with_logical_partitioning(nn.initializers.zeros_init(),
                                                           ("embed",)), (d,), jnp.float32)
    return layer_norm(x, scale, bias, r2gen=self.r2gen, eps=self.eps).astype(self.dtype)


def sinusoidal_positions(length: int, d_model: int) -> jax.Array:
  """[length, d_model] float32 table: sin at even features, cos at odd ones (Vaswani et al.)."""
  position = np.arange(length, dtype=np.float64)[:, None]
  div = np.exp(np.arange(0, d_model, 2, dtype=np.float64) * -(math.log(10000.0) / d_model))
  table = np.zeros((length, d_model), np.float64)
  table[:, 0::2] = np.sin(position * div)
  table[:, 1::2] = np.cos(position * div)[:, :d_model // 2]
  return jnp.asarray(table, jnp.float32)


def causal_mask(length: int) -> jax.Array:
  """[1, 1, length, length] bool mask: query i may attend to keys j <= i."""
  return jnp.tril(jnp.ones((length, length), bool))[None, None]


class MultiHeadAttention(nn.Module):
  """Scaled dot-product attention with `num_heads` heads over a model width `d_model`.

  The computation is split so that an incremental decoder can cache projected keys/values:
  `project_kv` maps inputs to keys [B, H, Dh, S] and values [B, H, S, Dh]; `attend` projects the
  queries, attends over given keys/values (optionally masked) and applies the output projection.
  `__call__(q, kv)` == `attend(q, *project_kv(kv))`. With `heads_first` (the default) the keys
  and values are kept heads first, the keys with their positions last, the layout the two
  attention products read directly: a decode cache kept as [B, S, H, Dh] was transposed whole by
  XLA:CPU at every step, and so were the cross-attention keys (about 10 ms of thread time per
  48-row decode step at length 60, measured). `heads_first=False` keeps both as [B, S, H, Dh] (the relational memory,
  which scans its per-token keys along S).

  `attend` sows its float32 softmax weights [B, heads, T, S] (before dropout) into the
  'intermediates' collection as 'attention_probs' when the caller applies with
  mutable=['intermediates']; e.g. the decoder's last cross-attention is at
  intermediates['decoder_layers_{N-1}']['src_attn']['attention_probs'].
  """
  num_heads: int
  d_model: int
  dropout: float = 0.1
  dtype: Dtype = jnp.float32
  heads_first: bool = True

  def setup(self):
    assert self.d_model % self.num_heads == 0, (self.d_model, self.num_heads)
    self.query = dense(self.d_model, ("embed", "joined_kv"), self.dtype)
    self.key = dense(self.d_model, ("embed", "joined_kv"), self.dtype)
    self.value = dense(self.d_model, ("embed", "joined_kv"), self.dtype)
    self.out = dense(self.d_model, ("joined_kv", "embed"), self.dtype)
    self.attn_dropout = nn.Dropout(self.dropout)

  def _split(self, x: jax.Array) -> jax.Array:
    return x.reshape(x.shape[:-1] + (self.num_heads, self.d_model // self.num_heads))

  def project_kv(self, kv_in: jax.Array) -> Tuple[jax.Array, jax.Array]:
    """[B, S, d] -> (keys [B, heads, d_head, S], values [B, heads, S, d_head]) in `dtype`
    (without `heads_first`: each [B, S, heads, d_head])."""
    keys, values = self._split(self.key(kv_in)), self._split(self.value(kv_in))
    if not self.heads_first:
      return keys, values
    return jnp.transpose(keys, (0, 2, 3, 1)), jnp.transpose(values, (0, 2, 1, 3))

  def attend(self, q_in: jax.Array, keys: jax.Array, values: jax.Array,
             mask: Optional[jax.Array] = None, deterministic: bool = True) -> jax.Array:
    """[B, T, d] queries over keys and values in `project_kv`'s layout -> [B, T, d].

    `mask` broadcasts to [B, H, T, S]; False entries get no attention weight.
    """
    k_spec, v_spec = ("bhdk", "bhkd") if self.heads_first else ("bkhd", "bkhd")
    q = self._split(self.query(q_in))
    d_head = q.shape[-1]
    scores = jnp.einsum(f"bqhd,{k_spec}->bhqk", q, keys,
                        preferred_element_type=jnp.float32) / math.sqrt(d_head)
    if mask is not None:
      # R2Gen fills masked scores with -1e9; any huge negative gives exactly zero weight.
      scores = jnp.where(mask, scores, -1e9)
    probs = jax.nn.softmax(scores.astype(jnp.float32), axis=-1)
    # Kept only when the caller makes 'intermediates' mutable (the report card's attention
    # maps); otherwise sow is a no-op and costs nothing in training or decoding.
    self.sow("intermediates", "attention_probs", probs)
    probs = self.attn_dropout(probs, deterministic=deterministic)
    # Heads first, then [B, T, H, Dh]: asking the product for bqhd directly made XLA:CPU pick a
    # transposed product 3x slower for a decode step's cross-attention (3 queries a study).
    ctx = jnp.einsum(f"bhqk,{v_spec}->bhqd", probs.astype(self.dtype), values.astype(self.dtype))
    ctx = jnp.transpose(ctx, (0, 2, 1, 3))
    return self.out(ctx.reshape(ctx.shape[:-2] + (self.d_model,)))

  def __call__(self, q_in: jax.Array, kv_in: jax.Array, mask: Optional[jax.Array] = None,
               deterministic: bool = True) -> jax.Array:
    keys, values = self.project_kv(kv_in)
    return self.attend(q_in, keys, values, mask, deterministic)


class PositionwiseFeedForward(nn.Module):
  """w2(dropout(relu(w1 x))), d_model -> d_ff -> d_model (R2Gen's PositionwiseFeedForward)."""
  d_model: int
  d_ff: int
  dropout: float = 0.1
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, deterministic: bool = True) -> jax.Array:
    h = nn.relu(dense(self.d_ff, ("embed", "mlp"), self.dtype, name="wi")(x))
    h = nn.Dropout(self.dropout)(h, deterministic=deterministic)
    return dense(self.d_model, ("mlp", "embed"), self.dtype, name="wo")(h)


class Embeddings(nn.Module):
  """Token lookup scaled by sqrt(d_model) plus sinusoidal positions (no dropout here).

  `positions` are int32 indices with the shape of `tokens`, each < `num_positions` (the
  length of the sinusoid table built for the call; its values do not depend on it).
  """
  vocab_size: int
  d_model: int
  dtype: Dtype = jnp.float32

  def setup(self):
    self.lut = nn.Embed(
        self.vocab_size, self.d_model, dtype=self.dtype, param_dtype=jnp.float32,
        embedding_init=nn.with_logical_partitioning(XAVIER, ("vocab", "embed")))

  def __call__(self, tokens: jax.Array, positions: jax.Array, num_positions: int) -> jax.Array:
    pe = sinusoidal_positions(num_positions, self.d_model)
    x = self.lut(tokens).astype(jnp.float32) * math.sqrt(self.d_model) + pe[positions]
    return x.astype(self.dtype)
