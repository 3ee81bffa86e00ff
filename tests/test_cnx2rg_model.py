"""The assembled CN-X2RG model: both entry points, and cached search == naive re-decode."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cnx2rg_jax.models import factory, search
from cnx2rg_jax.models.cnx2rg import CNX2RG
from tests.helpers.model_configs import model_config_with

TINY = dict(vocab_size=23, max_len=12, resnet_depth=18, d_model=32, d_ff=32, num_heads=4,
            num_encoder_layers=2, num_decoder_layers=2, rm_num_slots=3, rm_num_heads=4,
            rm_d_model=32, dropout=0.1)


@pytest.fixture(scope="module")
def tiny():
  model = CNX2RG(model_config_with(num_prompts=2, **TINY))
  variables = factory.random_variables(model, 64, seed=1)
  # Larger weights than 0.02 so that the search has real preferences to get right.
  variables = jax.tree.map(lambda x: x * 10 if x.ndim >= 2 else x, variables)
  images = jnp.asarray(np.random.default_rng(0).normal(size=(2, 64, 64, 1)), jnp.float32)
  return model, variables, images


def test_teacher_forcing_shapes_and_keyword_logits(tiny):
  model, variables, images = tiny
  tokens = jnp.asarray(np.random.default_rng(1).integers(0, 23, (2, 7)), jnp.int32)
  logits, keyword_logits = model.apply(variables, images, tokens)
  assert logits.shape == (2, 7, 23) and keyword_logits.shape == (2, 48)
  assert logits.dtype == jnp.float32 and bool(jnp.isfinite(logits).all())
  # 64x64 -> 2x2 patches, plus 2 learnable prompts.
  memory, kw = model.apply(variables, images, method=CNX2RG.encode)
  assert memory.shape == (2, 4 + 2, 32)
  np.testing.assert_allclose(kw, keyword_logits, rtol=1e-6)


def test_incremental_decoding_equals_teacher_forcing(tiny):
  model, variables, images = tiny
  tokens = jnp.asarray(np.random.default_rng(2).integers(0, 23, (2, 9)), jnp.int32)
  memory, _ = model.apply(variables, images, method=CNX2RG.encode)
  forced = model.apply(variables, memory, tokens, method=CNX2RG.decode_logits)
  cache = model.apply(variables, memory, 12, method=CNX2RG.init_cache)
  consts = model.apply(variables, memory, method=CNX2RG.decode_constants)
  for t in range(tokens.shape[1]):
    step_logits, cache = model.apply(variables, tokens[:, t], cache, consts,
                                     method=CNX2RG.decode_step)
    np.testing.assert_allclose(step_logits, forced[:, t], atol=1e-4)


@pytest.mark.parametrize("beam_size", [1, 3])
def test_cached_search_equals_naive_redecode(tiny, beam_size):
  model, variables, images = tiny
  memory, _ = model.apply(variables, images, method=CNX2RG.encode)
  outputs = {}
  for impl in search.IMPLS:
    fn = jax.jit(functools.partial(search.search_reports, model, impl=impl,
                                   beam_size=beam_size, max_len=12))
    outputs[impl] = fn(variables, memory)
  np.testing.assert_array_equal(outputs["cached"][0], outputs["naive"][0])
  np.testing.assert_allclose(outputs["cached"][1], outputs["naive"][1], atol=1e-4)


def test_naive_buckets_cover_every_length():
  assert search.naive_buckets(100) == (16, 32, 64, 100)
  assert search.naive_buckets(12) == (12,)


def test_unknown_model_key_is_named():
  with pytest.raises(ValueError, match="d_modle"):
    factory.model_config({"d_modle": 3}, vocab_size=5, max_len=4)
