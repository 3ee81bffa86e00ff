"""Length-bucketed training batches: the buckets, and the loss and gradients of a cut batch
against the fully padded one."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cnx2rg_jax.models import factory
from cnx2rg_jax.models.cnx2rg import CNX2RG
from cnx2rg_jax.training import length_buckets, steps
from tests.helpers.model_configs import model_config_with


@pytest.mark.parametrize("max_tokens, n, want", [
    (100, 4, (32, 56, 80, 100)),  # 25, 50, 75 rounded up to multiples of 8
    (64, 4, (16, 32, 48, 64)),
    (24, 4, (8, 16, 24)),  # 6 and 12 both round to... 8 and 16; 18 -> 24 = max
    (100, 1, (100,)),
])
def test_bucket_lengths(max_tokens, n, want):
  assert length_buckets.bucket_lengths(max_tokens, n) == want


def test_choose_is_the_smallest_bucket_that_holds_the_batch():
  rng = np.random.default_rng(0)
  buckets = length_buckets.bucket_lengths(100, 4)
  for _ in range(200):
    lengths = rng.integers(2, 101, size=8)
    mask = (np.arange(100)[None] < lengths[:, None]).astype(np.int32)
    got = length_buckets.choose(buckets, length_buckets.needed_length(mask))
    assert got == min(b for b in buckets if b >= lengths.max())  # brute force
    cut = length_buckets.cut({"report_mask": mask, "image": np.zeros((8, 2))}, got)
    assert cut["report_mask"].sum() == mask.sum() and cut["image"].shape == (8, 2)


def test_a_cut_batch_has_the_padded_batch_loss_and_gradients():
  cfg = model_config_with(vocab_size=30, resnet_depth=18, resnet_width=4, d_model=32, d_ff=32,
                          num_heads=2, num_encoder_layers=1, num_decoder_layers=2, rm_num_slots=2,
                          rm_num_heads=2, rm_d_model=32, max_len=40, dropout=0.0,
                          visual_dropout=0.0)
  model = CNX2RG(cfg)
  variables = nn.meta.unbox(factory.random_variables(model, 32))
  rng = np.random.default_rng(1)
  T = 40
  lengths = np.array([9, 14, 5])
  tokens = rng.integers(4, 30, (3, T)).astype(np.int32)
  mask = (np.arange(T)[None] < lengths[:, None]).astype(np.int32)
  tokens = tokens * mask  # padding is PAD (0)
  batch = {"image": rng.normal(size=(3, 32, 32, 1)).astype(np.float32), "report_tokens": tokens,
           "report_mask": mask, "keyword_labels": rng.choice([-2, 0, 1], (3, 48)).astype(np.int8),
           "has_keyword_labels": np.ones((3,), bool)}
  loss = steps.loss_fn(model, 0.5)
  grad = jax.value_and_grad(loss, has_aux=True)
  length = length_buckets.choose(length_buckets.bucket_lengths(T, 4),
                                 length_buckets.needed_length(mask))
  assert length == 16
  key = jax.random.key(0)
  (full, _), g_full = grad(variables["params"], variables["batch_stats"],
                           jax.tree.map(jnp.asarray, batch), key)
  (short, _), g_short = grad(variables["params"], variables["batch_stats"],
                             jax.tree.map(jnp.asarray, length_buckets.cut(batch, length)), key)
  assert float(short) == pytest.approx(float(full), rel=1e-6)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-7),
               g_full, g_short)
