"""Memory-driven conditional layer norm (MCLN), R2Gen's ConditionalLayerNorm.

  gamma_hat = gamma + MLP_gamma(m_t),  beta_hat = beta + MLP_beta(m_t)
  MCLN(x_t) = gamma_hat * x_hat_t + beta_hat
with m_t the flattened relational memory output of the same position and
MLP = Linear(slots*rm_d -> d), ReLU, Linear(d -> d). As in R2Gen, the MLP kernels are
xavier-uniform and *all* their biases start at 0.1 (so gamma_hat != gamma at init).

Every MCLN of the decoder reads the same m_t, so the decoder computes all their MLPs in one place
(`stack_mlps` + `stacked_shifts`); `ConditionalLayerNorm.__call__` is the per-norm form. On an
accelerator they run as one product for the first layers and one batched product for the second
(fewer, larger kernels). On XLA:CPU they stay separate products: measured on the 2-core CPU, one
[48, 1536] x [1536, 18 * 512] product (a decode step's) took twice the CPU time of the 18
[1536, 512] ones, and at training sizes (1,600 rows) the two forms cost the same.
"""

from __future__ import annotations

from typing import Any, NamedTuple, Optional, Sequence, Tuple

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
  """n conditional MLPs, stacked (fc1 [in, n * d], fc2 [n, d, d], biases [n * d], [n, d]) or
  kept separate (each field a tuple of the n MLPs' arrays)."""
  fc1_kernel: Any
  fc1_bias: Any
  fc2_kernel: Any
  fc2_bias: Any


def stack_by_default() -> bool:
  """Stack on accelerators, not on XLA:CPU (see the module docstring)."""
  return jax.default_backend() != "cpu"


def stack_mlps(weights: Sequence[MLPWeights], stacked: Optional[bool] = None) -> StackedMLPs:
  """The MLPs' weights (each from `ConditionalMLP.weights`), in order, stacked or kept separate
  (`stacked` None: `stack_by_default()`)."""
  k1, b1, k2, b2 = zip(*weights)
  if not (stack_by_default() if stacked is None else stacked):
    return StackedMLPs(k1, b1, k2, b2)
  return StackedMLPs(jnp.concatenate(k1, axis=1), jnp.concatenate(b1), jnp.stack(k2),
                     jnp.stack(b2))


def stacked_shifts(memory: jax.Array, mlps: StackedMLPs, dtype: Dtype) -> jax.Array:
  """memory [..., in] -> the n MLPs' outputs [..., n, d] float32 (computed in `dtype`)."""
  m = memory.astype(dtype)
  cast = lambda xs: [x.astype(dtype) for x in xs]  # noqa: E731
  if isinstance(mlps.fc1_kernel, tuple):
    out = [nn.relu(m @ k1 + b1) @ k2 + b2 for k1, b1, k2, b2 in zip(
        cast(mlps.fc1_kernel), cast(mlps.fc1_bias), cast(mlps.fc2_kernel), cast(mlps.fc2_bias))]
    return jnp.stack(out, axis=-2).astype(jnp.float32)
  n, _, d = mlps.fc2_kernel.shape
  h = m @ mlps.fc1_kernel.astype(dtype) + mlps.fc1_bias.astype(dtype)
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
