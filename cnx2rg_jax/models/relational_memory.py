"""R2Gen's relational memory (RM): a gated memory of `num_slots` rows updated once per token.

One step, with memory M [slots, d] and input y_t [d] (the position-encoded token embedding):
  Z  = M + MHA(query=M, keys/values=[M; y_t])
  Z  = Z + relu(W2 relu(W1 Z))
  i, f = split(W y_t + U tanh(M))            (input and forget gates, each [slots, d])
  M' = sigmoid(i) * tanh(Z) + sigmoid(f) * M
The output for step t is M' flattened to [slots * d]: R2Gen's RelationalMemory.forward appends
the memory *after* consuming y_t, and that is what conditions the decoder's norms at step t.
"""

from __future__ import annotations

from typing import Any, NamedTuple, Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from cnx2rg_jax.models.layers import MultiHeadAttention, dense

Dtype = Any


class TokenTerms(NamedTuple):
  """The parts of an RM step that depend on the token only (leading axes [B] or [B, T])."""
  keys: jax.Array  # the token's attention key, [..., heads, d_head]
  values: jax.Array  # its attention value, [..., heads, d_head]
  w_y: jax.Array  # W y_t, [..., 2 d] float32 (input and forget gates' token part)


def initial_memory(batch: int, num_slots: int, d_model: int) -> jax.Array:
  """[batch, slots, d] float32: eye(slots) in the first columns, zeros after (or cropped)."""
  eye = jnp.eye(num_slots, dtype=jnp.float32)
  if d_model >= num_slots:
    mem = jnp.pad(eye, ((0, 0), (0, d_model - num_slots)))
  else:
    mem = eye[:, :d_model]
  return jnp.broadcast_to(mem, (batch, num_slots, d_model))


class RelationalMemoryCell(nn.Module):
  """The single-step update M, y_t -> M'. The only place the RM equations are written.

  The terms that depend on the token alone (its attention key and value, W y_t) are computed by
  `token_terms` for a whole sequence at once, outside the time loop; `update` does the rest of
  one step. `__call__` is both for one token.
  """
  num_slots: int
  d_model: int
  num_heads: int
  dropout: float = 0.1
  dtype: Dtype = jnp.float32

  def setup(self):
    self.attn = MultiHeadAttention(self.num_heads, self.d_model, self.dropout, self.dtype,
                                   heads_first=False)
    self.mlp1 = dense(self.d_model, ("embed", "mlp"), self.dtype)
    self.mlp2 = dense(self.d_model, ("mlp", "embed"), self.dtype)
    self.w = dense(2 * self.d_model, ("embed", "mlp"), self.dtype)
    self.u = dense(2 * self.d_model, ("embed", "mlp"), self.dtype)

  def token_terms(self, y: jax.Array) -> TokenTerms:
    """y [B, T, d] -> the token-only terms of each step: keys and values [B, T, heads, d_head]
    of y_t as the attention's extra row, and W y_t [B, T, 2d] float32."""
    y = y.astype(self.dtype)
    keys, values = self.attn.project_kv(y)
    return TokenTerms(keys, values, self.w(y).astype(jnp.float32))

  def update(self, memory: jax.Array, terms: TokenTerms,
             deterministic: bool = True) -> Tuple[jax.Array, jax.Array]:
    """memory [B, slots, d] float32 and one step's `TokenTerms` (no T axis) -> (M' [B, slots, d]
    float32, M' flat [B, slots*d]); the pair lets the update be scanned (carry, output)."""
    mem = memory.astype(jnp.float32)
    m = mem.astype(self.dtype)
    mem_keys, mem_values = self.attn.project_kv(m)
    # keys/values of [M; y_t]: the memory's rows, then the token's
    keys = jnp.concatenate([mem_keys, terms.keys[:, None].astype(mem_keys.dtype)], axis=1)
    values = jnp.concatenate([mem_values, terms.values[:, None].astype(mem_values.dtype)], axis=1)
    z = mem + self.attn.attend(m, keys, values, None, deterministic).astype(jnp.float32)
    h = nn.relu(self.mlp2(nn.relu(self.mlp1(z.astype(self.dtype)))))
    z = z + h.astype(jnp.float32)
    gates = terms.w_y[:, None, :] + self.u(jnp.tanh(mem).astype(self.dtype)).astype(jnp.float32)
    input_gate, forget_gate = jnp.split(gates, 2, axis=-1)
    # The state stays float32 whatever the compute dtype: it is carried over ~100 steps.
    new = jax.nn.sigmoid(input_gate) * jnp.tanh(z) + jax.nn.sigmoid(forget_gate) * mem
    return new, new.reshape(new.shape[0], -1)

  def __call__(self, memory: jax.Array, y_t: jax.Array,
               deterministic: bool = True) -> Tuple[jax.Array, jax.Array]:
    """memory [B, slots, d] float32, y_t [B, d] -> (M' [B, slots, d] float32, M' flat)."""
    terms = jax.tree.map(lambda x: x[:, 0], self.token_terms(y_t[:, None, :]))
    return self.update(memory, terms, deterministic)


class RelationalMemory(nn.Module):
  """Runs the cell over time (scan, for training) or one step at a time (decoding).

  Both paths call the same `cell` submodule, so they share its parameters and its math.
  """
  num_slots: int
  d_model: int
  num_heads: int
  dropout: float = 0.1
  dtype: Dtype = jnp.float32

  def setup(self):
    self.cell = RelationalMemoryCell(self.num_slots, self.d_model, self.num_heads,
                                     self.dropout, self.dtype)

  def initial_state(self, batch: int) -> jax.Array:
    """The memory before the first token, [batch, slots, d] float32 (same for every example)."""
    return initial_memory(batch, self.num_slots, self.d_model)

  def step(self, memory: jax.Array, y_t: jax.Array, deterministic: bool = True) -> jax.Array:
    """One update: memory [B, slots, d], y_t [B, d] -> new memory [B, slots, d] float32."""
    new, _ = self.cell(memory, y_t, deterministic)
    return new

  def __call__(self, y: jax.Array, deterministic: bool = True) -> jax.Array:
    """y [B, T, d] -> memory outputs [B, T, slots*d] float32; output t is the state after y_t."""

    def body(cell, carry, terms_t):
      return cell.update(carry, terms_t, deterministic)

    # The token-only terms for all T at once (large matmuls); the loop does the rest.
    terms = self.cell.token_terms(y)
    scan = nn.scan(body, variable_broadcast="params",
                   split_rngs={"params": False, "dropout": True}, in_axes=1, out_axes=1)
    _, outputs = scan(self.cell, self.initial_state(y.shape[0]), terms)
    return outputs
