"""The speed rewrites of issue 20, each against the form it replaced: 1x1 convolutions as
matrix products against lax.conv (strides, gradients, parameters), the stacked MCLN MLPs against
each norm's own MLPs, the in-place cache write against a one-hot select."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cnx2rg_jax.models import resnet
from cnx2rg_jax.models.decoder import write_at
from cnx2rg_jax.models.mcln import ConditionalLayerNorm, stack_mlps, stacked_shifts


@pytest.mark.parametrize("stride,size", [(1, 6), (2, 6), (2, 7)])
def test_pointwise_conv_equals_lax_conv(stride, size):
  """Values and gradients (input and kernel) of the product form equal nn.Conv's, same init."""
  x = jnp.asarray(np.random.default_rng(0).normal(size=(2, size, size, 5)), jnp.float32)
  fast = resnet.PointwiseConv(7, stride)
  init = nn.with_logical_partitioning(resnet._conv_init, resnet.CONV_AXES)  # pylint: disable=protected-access
  ref = nn.Conv(7, (1, 1), strides=(stride, stride), padding=((0, 0), (0, 0)), use_bias=False,
                kernel_init=init)
  params = fast.init(jax.random.key(1), x)
  ref_params = ref.init(jax.random.key(1), x)
  assert jax.tree.map(jnp.shape, params) == jax.tree.map(jnp.shape, ref_params)
  np.testing.assert_array_equal(nn.unbox(params)["params"]["kernel"],
                                nn.unbox(ref_params)["params"]["kernel"])
  assert nn.get_partition_spec(params) == nn.get_partition_spec(ref_params)
  want = ref.apply(params, x)
  np.testing.assert_allclose(fast.apply(params, x), want, rtol=1e-5, atol=1e-5)
  assert want.shape[1] == -(-size // stride)
  cotangent = jnp.asarray(np.random.default_rng(2).normal(size=want.shape), jnp.float32)

  def grads(module):
    loss = lambda p, x: jnp.sum(module.apply(p, x) * cotangent)  # noqa: E731
    return jax.grad(loss, argnums=(0, 1))(params, x)
  got, expected = grads(fast), grads(ref)
  for g, e in zip(jax.tree.leaves(got), jax.tree.leaves(expected)):
    np.testing.assert_allclose(g, e, rtol=1e-4, atol=1e-5)


def test_resnet_1x1_layers_are_products_with_convs_params():
  """The bottleneck ResNet keeps torchvision's parameter tree (the converters rely on it)."""
  variables = jax.eval_shape(resnet.ResNet(depth=50, width=8).init, jax.random.key(0),
                             jnp.zeros((1, 32, 32, 1)))
  block = nn.unbox(variables["params"])["layer2_0"]
  assert block["conv1"]["kernel"].shape == (1, 1, 32, 16)
  assert block["downsample_conv"]["kernel"].shape == (1, 1, 32, 64)
  assert block["conv2"]["kernel"].shape == (3, 3, 16, 16)


class _Norms(nn.Module):
  """Three MCLNs over the same memory output: per-norm outputs and the stacked form's."""
  stacked: bool

  @nn.compact
  def __call__(self, x, memory):
    norms = [ConditionalLayerNorm(8, r2gen=bool(i % 2), name=f"norm{i}") for i in range(3)]
    per_norm = [norm(x, memory) for norm in norms]
    mlps = stack_mlps([w for norm in norms for w in norm.mlp_weights(memory.shape[-1])],
                      self.stacked)
    shifts = stacked_shifts(memory, mlps, jnp.float32).reshape(x.shape[:2] + (3, 2, 8))
    stacked = [norm.normalize(x, shifts[..., i, :, :]) for i, norm in enumerate(norms)]
    return per_norm, stacked


@pytest.mark.parametrize("stacked", [True, False])
def test_stacked_mcln_mlps_equal_each_norms_own(stacked):
  rng = np.random.default_rng(3)
  x = jnp.asarray(rng.normal(size=(2, 4, 8)), jnp.float32)
  memory = jnp.asarray(rng.normal(size=(2, 4, 12)), jnp.float32)
  module = _Norms(stacked)
  params = module.init(jax.random.key(0), x, memory)
  # Random biases too (they start at 0.1 everywhere), so a swapped gamma/beta would show.
  params = jax.tree.map(lambda p: p + jnp.asarray(rng.normal(size=p.shape), p.dtype) * 0.1,
                        nn.unbox(params))
  per_norm, stacked = module.apply(params, x, memory)
  for a, b in zip(per_norm, stacked):
    np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-5)
  assert np.abs(np.asarray(per_norm[0]) - np.asarray(per_norm[2])).max() > 1e-2


def test_write_at_equals_a_one_hot_select():
  """The in-place write of one position into the heads-first cache (keys positions last, values
  positions third) equals a one-hot select over the positions, at every position."""
  rng = np.random.default_rng(4)
  rows, heads, d_head, length = 3, 2, 4, 6
  keys = jnp.asarray(rng.normal(size=(rows, heads, d_head, length)), jnp.float32)
  values = jnp.asarray(rng.normal(size=(rows, heads, length, d_head)), jnp.float32)
  new_k = jnp.asarray(rng.normal(size=(rows, heads, d_head, 1)), jnp.float32)
  new_v = jnp.asarray(rng.normal(size=(rows, heads, 1, d_head)), jnp.float32)
  for pos in range(length):
    hit = jnp.arange(length) == pos
    got_k, got_v = write_at((keys, values), (new_k, new_v), jnp.int32(pos))
    np.testing.assert_array_equal(got_k, jnp.where(hit[None, None, None, :], new_k, keys))
    np.testing.assert_array_equal(got_v, jnp.where(hit[None, None, :, None], new_v, values))


def test_heads_first_attention_equals_sequence_first_and_numpy():
  """The heads-first layout (decoder) and the sequence-first one (relational memory) give the
  same keys/values up to a transpose and the same attention, which equals a NumPy softmax
  attention over the same projections, masked."""
  from cnx2rg_jax.models.layers import MultiHeadAttention  # pylint: disable=import-outside-toplevel
  rng = np.random.default_rng(5)
  q_in = jnp.asarray(rng.normal(size=(2, 3, 16)), jnp.float32)
  kv_in = jnp.asarray(rng.normal(size=(2, 5, 16)), jnp.float32)
  mask = jnp.asarray(rng.random((2, 1, 3, 5)) > 0.3).at[..., 0].set(True)
  first, seq = MultiHeadAttention(4, 16, 0.0), MultiHeadAttention(4, 16, 0.0, heads_first=False)
  params = first.init(jax.random.key(0), q_in, kv_in)
  k1, v1 = first.apply(params, kv_in, method=MultiHeadAttention.project_kv)
  k2, v2 = seq.apply(params, kv_in, method=MultiHeadAttention.project_kv)
  assert k1.shape == (2, 4, 4, 5) and v1.shape == (2, 4, 5, 4) and k2.shape == (2, 5, 4, 4)
  np.testing.assert_array_equal(k1, np.transpose(k2, (0, 2, 3, 1)))
  np.testing.assert_array_equal(v1, np.transpose(v2, (0, 2, 1, 3)))
  got1 = first.apply(params, q_in, k1, v1, mask, method=MultiHeadAttention.attend)
  got2 = seq.apply(params, q_in, k2, v2, mask, method=MultiHeadAttention.attend)
  p = {k: {n: np.asarray(a, np.float64) for n, a in v.items()}
       for k, v in nn.unbox(params)["params"].items()}
  dense = lambda x, name: np.asarray(x, np.float64) @ p[name]["kernel"] + p[name]["bias"]  # noqa: E731
  split = lambda x: x.reshape(x.shape[:-1] + (4, 4)).transpose(0, 2, 1, 3)  # noqa: E731
  q, k, v = split(dense(q_in, "query")), split(dense(kv_in, "key")), split(dense(kv_in, "value"))
  scores = np.where(np.asarray(mask), q @ k.transpose(0, 1, 3, 2) / 2.0, -1e9)
  probs = np.exp(scores - scores.max(-1, keepdims=True))
  probs /= probs.sum(-1, keepdims=True)
  want = dense((probs @ v).transpose(0, 2, 1, 3).reshape(2, 3, 16), "out")
  np.testing.assert_allclose(got1, want, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(got2, want, rtol=1e-5, atol=1e-5)
