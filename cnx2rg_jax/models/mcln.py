"""Memory-driven conditional layer norm (MCLN), R2Gen's ConditionalLayerNorm.

  gamma_hat = gamma + MLP_gamma(m_t),  beta_hat = beta + MLP_beta(m_t)
  MCLN(x_t) = gamma_hat * x_hat_t + beta_hat
with m_t the flattened relational memory output of the same position and
MLP = Linear(slots*rm_d -> d), ReLU, Linear(d -> d). As in R2Gen, the MLP kernels are
xavier-uniform and *all* their biases start at 0.1 (so gamma_hat != gamma at init).
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from cnx2rg_jax.models.layers import LN_EPS, dense, layer_norm

Dtype = Any
MCLN_BIAS_INIT = nn.initializers.constant(0.1)


class ConditionalMLP(nn.Module):
  """Linear(slots*rm_d -> d), ReLU, Linear(d -> d); biases start at 0.1."""
  d_model: int
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, m: jax.Array) -> jax.Array:
    h = dense(self.d_model, ("rm_flat", "mlp"), self.dtype, bias_init=MCLN_BIAS_INIT,
              name="fc1")(m.astype(self.dtype))
    return dense(self.d_model, ("mlp", "embed"), self.dtype, bias_init=MCLN_BIAS_INIT,
                 name="fc2")(nn.relu(h))


class ConditionalLayerNorm(nn.Module):
  """Layer norm whose gain and bias are shifted per token by MLPs of the memory output."""
  d_model: int
  r2gen: bool = False
  dtype: Dtype = jnp.float32
  eps: float = LN_EPS

  @nn.compact
  def __call__(self, x: jax.Array, memory: jax.Array) -> jax.Array:
    """x [B, T, d], memory [B, T, slots*rm_d] -> [B, T, d] in `dtype` (norm in float32)."""
    scale = self.param("scale", nn.with_logical_partitioning(nn.initializers.ones_init(),
                                                             ("embed",)),
                       (self.d_model,), jnp.float32)
    bias = self.param("bias", nn.with_logical_partitioning(nn.initializers.zeros_init(),
                                                           ("embed",)),
                      (self.d_model,), jnp.float32)
    gamma_hat = scale + ConditionalMLP(self.d_model, self.dtype, name="mlp_gamma")(
        memory).astype(jnp.float32)
    beta_hat = bias + ConditionalMLP(self.d_model, self.dtype, name="mlp_beta")(
        memory).astype(jnp.float32)
    return layer_norm(x, gamma_hat, beta_hat, r2gen=self.r2gen, eps=self.eps).astype(self.dtype)
