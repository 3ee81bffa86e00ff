"""Memory-driven conditional layer norm (MCLN), R2Gen's ConditionalLayerNorm.

  gamma_hat = gamma + MLP_gamma(m_t),  beta_hat = beta + MLP_beta(m_t)
  MCLN(x_t) = gamma_hat * x_hat_t + beta_hat
with m_t the flattened relational memory output of the same position and
MLP = Linear(slots*rm_d -> d), ReLU, Linear(d -> d). As in R2Gen, the MLP kernels are
xavier-uniform and *all* their biases start at 0.1 (so gamma_hat != gamma at init).

Every MCLN of the decoder reads the same m_t, so the decoder runs all their MLPs together
(`stack_mlps` + `stacked_shifts`: one product for the first layers, one batched product for the
second) instead of 2 x 3 x layers small ones; `ConditionalLayerNorm.__call__` is the per-norm form.
"""

from __future__ import annotations

from typing import Any, NamedTuple, Sequence, Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from cnx2rg_jax.models.layers import LN_EPS, XAVIER, layer_norm

Dtype = Any
MCLN_BIAS_INIT = nn.initializers.constant(0.1)
MLPWeights = Tuple[jax.Array, jax.Array, jax.Array, jax.Array]  # fc1 kernel, bias, fc2 ...


class DenseWeights(nn.Module):
  """The 'kernel' [in, features] and 'bias' [features] of an nn.Dense (same names, init order and
  axes), returned instead of applied, so that several of them can be stacked into one product."""
  features: int
  axes: Tuple[str, str]

  @nn.compact
  def __call__(self, in_features: int) -> Tuple[jax.Array, jax.Array]:
    kernel = self.param("kernel", nn.with_logical_partitioning(XAVIER, self.axes),
                        (in_features, self.features), jnp.float32)
    bias = self.param("bias", nn.with_logical_partitioning(MCLN_BIAS_INIT, (self.axes[1],)),
                      (self.features,), jnp.float32)
    return kernel, bias


class ConditionalMLP(nn.Module):
  """Linear(slots*rm_d -> d), ReLU, Linear(d -> d); biases start at 0.1."""
  d_model: int
  dtype: Dtype = jnp.float32

  def setup(self):
    self.fc1 = DenseWeights(self.d_model, ("rm_flat", "mlp"))
    self.fc2 = DenseWeights(self.d_model, ("mlp", "embed"))

  def weights(self, in_features: int) -> MLPWeights:
    return self.fc1(in_features) + self.fc2(self.d_model)

  def __call__(self, m: jax.Array) -> jax.Array:
    k1, b1, k2, b2 = self.weights(m.shape[-1])
    dt = self.dtype
    h = nn.relu(m.astype(dt) @ k1.astype(dt) + b1.astype(dt))
    return h @ k2.astype(dt) + b2.astype(dt)


class StackedMLPs(NamedTuple):
  """n conditional MLPs stacked: fc1 [in, n * d] (as one product), fc2 [n, d, d], biases."""
  fc1_kernel: jax.Array
  fc1_bias: jax.Array
  fc2_kernel: jax.Array
  fc2_bias: jax.Array


def stack_mlps(weights: Sequence[MLPWeights]) -> StackedMLPs:
  """The MLPs' weights (each from `ConditionalMLP.weights`) stacked in order."""
  k1, b1, k2, b2 = zip(*weights)
  return StackedMLPs(jnp.concatenate(k1, axis=1), jnp.concatenate(b1), jnp.stack(k2),
                     jnp.stack(b2))


def stacked_shifts(memory: jax.Array, mlps: StackedMLPs, dtype: Dtype) -> jax.Array:
  """memory [..., in] -> the n MLPs' outputs [..., n, d] float32 (computed in `dtype`)."""
  n, _, d = mlps.fc2_kernel.shape
  h = memory.astype(dtype) @ mlps.fc1_kernel.astype(dtype) + mlps.fc1_bias.astype(dtype)
  h = nn.relu(h).reshape(h.shape[:-1] + (n, d))
  out = jnp.einsum("...nh,nhd->...nd", h, mlps.fc2_kernel.astype(dtype))
  return (out + mlps.fc2_bias.astype(dtype)).astype(jnp.float32)


class ConditionalLayerNorm(nn.Module):
  """Layer norm whose gain and bias are shifted per token by MLPs of the memory output."""
  d_model: int
  r2gen: bool = False
  dtype: Dtype = jnp.float32
  eps: float = LN_EPS

  def setup(self):
    init = lambda fn: nn.with_logical_partitioning(fn, ("embed",))  # noqa: E731
    self.scale = self.param("scale", init(nn.initializers.ones_init()), (self.d_model,),
                            jnp.float32)
    self.bias = self.param("bias", init(nn.initializers.zeros_init()), (self.d_model,),
                           jnp.float32)
    self.mlp_gamma = ConditionalMLP(self.d_model, self.dtype)
    self.mlp_beta = ConditionalMLP(self.d_model, self.dtype)

  def mlp_weights(self, in_features: int) -> Tuple[MLPWeights, MLPWeights]:
    """(gamma MLP's, beta MLP's) weights, in the order `normalize` takes their outputs."""
    return self.mlp_gamma.weights(in_features), self.mlp_beta.weights(in_features)

  def normalize(self, x: jax.Array, shifts: jax.Array) -> jax.Array:
    """x [B, T, d] with the MLPs' outputs shifts [B, T, 2, d] (gamma's, beta's) -> [B, T, d]."""
    return layer_norm(x, self.scale + shifts[..., 0, :], self.bias + shifts[..., 1, :],
                      r2gen=self.r2gen, eps=self.eps).astype(self.dtype)

  def __call__(self, x: jax.Array, memory: jax.Array) -> jax.Array:
    """x [B, T, d], memory [B, T, slots*rm_d] -> [B, T, d] in `dtype` (norm in float32)."""
    shifts = jnp.stack([self.mlp_gamma(memory), self.mlp_beta(memory)], axis=-2)
    return self.normalize(x, shifts.astype(jnp.float32))
