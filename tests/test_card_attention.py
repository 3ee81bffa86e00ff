"""The card's attention maps against a NumPy re-derivation from the model's own weights.

A tiny CN-X2RG with two decoder layers, 64-pixel crops (a 2x2 feature map) and two learnable
prompt tokens (so the cross-attention has 4 patch keys and 2 prompt keys): the maps must be the
LAST layer's cross-attention softmax, averaged over heads, at the patch keys only, reshaped
row-major to the grid, with row k the query that wrote generated token k.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import numpy as np

from cnx2rg_jax import sharding
from cnx2rg_jax.card import attention
from cnx2rg_jax.models import factory
from tests.conftest import tiny_model_config

VOCAB = 30


def _model():
  c = tiny_model_config("/unused")
  c.data.image_size = c.data.crop_size = 64
  c.model.num_prompts = 2
  c.model.num_decoder_layers = 2
  model = factory.build_model(c, VOCAB)
  variables = nn.meta.unbox(factory.random_variables(model, 64, seed=1))
  # Random N(0, 0.02) weights attend almost uniformly; sharper queries and keys make the maps
  # differ by layer, row and patch, so the comparison below can fail.
  rng = np.random.default_rng(5)

  def healthy(path, x):  # He-scaled ResNet kernels and unit BatchNorm scales: varied features
    name = jax.tree_util.keystr(path)
    if "scale" in name:
      return np.ones(x.shape, np.float32)
    if "kernel" in name:
      fan_in = int(np.prod(x.shape[:-1]))
      return rng.normal(0, np.sqrt(2 / fan_in), x.shape).astype(np.float32)
    return x

  variables["params"]["visual"] = jax.tree_util.tree_map_with_path(
      healthy, variables["params"]["visual"])
  for layer in ("decoder_layers_0", "decoder_layers_1"):
    attn = variables["params"]["transformer"][layer]["src_attn"]
    for name in ("query", "key"):
      shape = attn[name]["kernel"].shape
      attn[name]["kernel"] = jax.numpy.asarray(rng.normal(0, 3.0, shape), np.float32)
  return c, model, variables


def _dense(p, x):
  return x @ np.asarray(p["kernel"], np.float64) + np.asarray(p["bias"], np.float64)


def test_maps_are_the_last_layers_cross_attention_over_patches():
  config, model, variables = _model()
  rng = np.random.default_rng(0)
  images = rng.normal(size=(3, 64, 64, 1)).astype(np.float32)
  ids = rng.integers(4, VOCAB, size=(3, 7)).astype(np.int32)
  ids[0, 4:] = [2, 0, 0]  # eos, then padding
  reader = attention.AttentionReader(model, variables, sharding.mesh_from_config(config.mesh),
                                     64, batch_size=2)  # 3 rows: a full batch and a padded one
  assert reader.k == 4 and reader.grid == (2, 2)
  maps, share = reader.maps(variables, images, ids)
  assert maps.shape == (3, 7, 2, 2) and share.shape == (3, 7)

  inputs = attention.decoder_inputs(ids)
  np.testing.assert_array_equal(inputs[:, 0], 1)
  np.testing.assert_array_equal(inputs[:, 1:], ids[:, :-1])
  # The decoder applies its MCLNs through `normalize` (their MLPs run together, models/mcln.py).
  capture = lambda _, method: method in ("__call__", "normalize")  # noqa: E731
  _, state = jax.jit(lambda v, x, t: model.apply(
      v, x, t, capture_intermediates=capture, mutable=["intermediates"]))(variables, images, inputs)
  inter = state["intermediates"]["transformer"]
  h = np.asarray(inter["decoder_layers_1"]["norm_src"]["normalize"][0], np.float64)  # queries in
  memory = np.asarray(inter["encoder_norm"]["__call__"][0], np.float64)  # [B, 6, d]
  assert memory.shape[1] == 6  # 4 patches + 2 prompts
  p = variables["params"]["transformer"]["decoder_layers_1"]["src_attn"]
  heads, d = config.model.num_heads, config.model.d_model
  q = _dense(p["query"], h).reshape(3, 7, heads, d // heads)
  k = _dense(p["key"], memory).reshape(3, 6, heads, d // heads)
  scores = np.einsum("bqhd,bkhd->bhqk", q, k) / np.sqrt(d // heads)
  probs = np.exp(scores - scores.max(-1, keepdims=True))
  probs /= probs.sum(-1, keepdims=True)
  mean = probs.mean(axis=1)  # [B, T, S]
  np.testing.assert_allclose(maps, mean[..., :4].reshape(3, 7, 2, 2), atol=2e-5)
  np.testing.assert_allclose(share, mean[..., :4].sum(-1), atol=2e-5)
  assert (share < 0.999).all()  # the prompts took some attention: nothing was renormalised
  # not the first layer's: its weights differ
  p0 = variables["params"]["transformer"]["decoder_layers_0"]["src_attn"]
  h0 = np.asarray(inter["decoder_layers_0"]["norm_src"]["normalize"][0], np.float64)
  s0 = np.einsum("bqhd,bkhd->bhqk", _dense(p0["query"], h0).reshape(3, 7, heads, -1),
                 _dense(p0["key"], memory).reshape(3, 6, heads, -1))
  assert np.abs(jax.nn.softmax(s0 / np.sqrt(d // heads), -1).mean(1)[..., :4]
                - mean[..., :4]).max() > 1e-2
  assert np.abs(np.diff(maps.reshape(3, 7, 4), axis=-1)).max() > 1e-2  # not uniform


def test_grid_shape_refuses_a_non_square_map():
  assert attention.grid_shape(49) == (7, 7)
  try:
    attention.grid_shape(6)
  except ValueError as e:
    assert "6 visual patches" in str(e)
  else:
    raise AssertionError("no error for 6 patches")
