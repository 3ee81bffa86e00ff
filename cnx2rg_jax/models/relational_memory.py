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

from typing import Any, Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from cnx2rg_jax.models.layers import MultiHeadAttention, dense

Dtype = Any


def initial_memory(batch: int, num_slots: int, d_model: int) -> jax.Array:
  """[batch, slots, d] float32: eye(slots) in the first columns, zeros after (or cropped)."""
  eye = jnp.eye(num_slots, dtype=jnp.float32)
  if d_model >= num_slots:
    mem = jnp.pad(eye, ((0, 0), (0, d_model - num_slots)))
  else:
    mem = eye[:, :d_model]
  return jnp.broadcast_to(mem, (batch, num_slots, d_model))


class RelationalMemoryCell(nn.Module):
  """The single-step update M, y_t -> M'. The only place the RM equations are written."""
  num_slots: int
  d_model: int
  num_heads: int
  dropout: float = 0.1
  dtype: Dtype = jnp.float32

  def setup(self):
    self.attn = MultiHeadAttention(self.num_heads, self.d_model, self.dropout, self.dtype)
    self.mlp1 = dense(self.d_model, ("embed", "mlp"), self.dtype)
    self.mlp2 = dense(self.d_model, ("mlp", "embed"), self.dtype)
    self.w = dense(2 * self.d_model, ("embed", "mlp"), self.dtype)
    self.u = dense(2 * self.d_model, ("embed", "mlp"), self.dtype)

  def __call__(self, memory: jax.Array, y_t: jax.Array,
               deterministic: bool = True) -> Tuple[jax.Array, jax.Array]:
    """memory [B, slots, d] float32, y_t [B, d] -> (M' [B, slots, d] float32, M' flat [B, slots*d]).

    Returns the new memory twice so that the cell can be scanned (carry, output) directly.
    """
    mem = memory.astype(jnp.float32)
    y = y_t[:, None, :].astype(self.dtype)
    kv = jnp.concatenate([mem.astype(self.dtype), y], axis=1)
    z = mem + self.attn(mem.astype(self.dtype), kv, None, deterministic).astype(jnp.float32)
    h = nn.relu(self.mlp2(nn.relu(self.mlp1(z.astype(self.dtype)))))
    z = z + h.astype(jnp.float32)
    gates = (self.w(y) + self.u(jnp.tanh(mem).astype(self.dtype))).astype(jnp.float32)
    input_gate, forget_gate = jnp.split(gates, 2, axis=-1)
    # The state stays float32 whatever the compute dtype: it is carried over ~100 steps.
    new = jax.nn.sigmoid(input_gate) * jnp.tanh(z) + jax.nn.sigmoid(forget_gate) * mem
    return new, new.reshape(new.shape[0], -1)


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

    def body(cell, carry, y_t):
      return cell(carry, y_t, deterministic)

    scan = nn.scan(body, variable_broadcast="params",
                   split_rngs={"params": False, "dropout": True}, in_axes=1, out_axes=1)
    _, outputs = scan(self.cell, self.initial_state(y.shape[0]), y)
    return outputs
