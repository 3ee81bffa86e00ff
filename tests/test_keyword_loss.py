"""The keyword auxiliary loss: the BCE re-derived in NumPy, and the switch really switches."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cnx2rg_jax.models import factory
from cnx2rg_jax.models.cnx2rg import CNX2RG
from cnx2rg_jax.text import keywords as kw
from cnx2rg_jax.training import steps
from tests.helpers.model_configs import model_config_with


def test_keyword_bce_matches_numpy_and_leaves_uncertain_and_unlabelled_out():
  rng = np.random.default_rng(0)
  logits = rng.normal(size=(5, 48)) * 3
  labels = rng.choice([kw.POSITIVE, kw.NEGATED, kw.UNCERTAIN, kw.NOT_MENTIONED], (5, 48))
  has = np.array([True, False, True, True, False])
  y = (labels == kw.POSITIVE).astype(np.float64)
  p = 1 / (1 + np.exp(-logits))
  bce = -(y * np.log(p) + (1 - y) * np.log(1 - p))
  keep = (labels != kw.UNCERTAIN) & has[:, None]
  expected = bce[keep].mean()
  got = steps.keyword_loss(jnp.asarray(logits, jnp.float32), jnp.asarray(labels, jnp.int8),
                           jnp.asarray(has))
  assert float(got) == pytest.approx(expected, rel=1e-5)
  # An unlabelled report adds nothing, whatever its codes say.
  other = labels.copy()
  other[~has] = kw.POSITIVE
  again = steps.keyword_loss(jnp.asarray(logits, jnp.float32), jnp.asarray(other, jnp.int8),
                             jnp.asarray(has))
  assert float(again) == float(got)
  none = steps.keyword_loss(jnp.asarray(logits, jnp.float32), jnp.asarray(labels, jnp.int8),
                            jnp.zeros((5,), bool))
  assert float(none) == 0.0


@pytest.mark.parametrize("weight", [0.0, 0.7])
def test_total_loss_and_the_heads_gradient(weight):
  cfg = model_config_with(vocab_size=30, resnet_depth=18, resnet_width=4, d_model=32, d_ff=32,
                          num_heads=2, num_encoder_layers=1, num_decoder_layers=1, rm_num_slots=2,
                          rm_num_heads=2, rm_d_model=32, max_len=12, dropout=0.0,
                          visual_dropout=0.0)
  model = CNX2RG(cfg)
  variables = nn.meta.unbox(factory.random_variables(model, 32))
  rng = np.random.default_rng(1)
  batch = {"image": jnp.asarray(rng.normal(size=(2, 32, 32, 1)), jnp.float32),
           "report_tokens": jnp.asarray(rng.integers(1, 30, (2, 10)), jnp.int32),
           "report_mask": jnp.ones((2, 10), jnp.int32),
           "keyword_labels": jnp.asarray(rng.choice([-2, -1, 0, 1], (2, 48)), jnp.int8),
           "has_keyword_labels": jnp.ones((2,), bool)}
  loss = steps.loss_fn(model, weight)
  key = jax.random.key(0)
  (total, (aux, _)), grads = jax.value_and_grad(loss, has_aux=True)(
      variables["params"], variables["batch_stats"], batch, key)
  assert float(total) == pytest.approx(float(aux["token_loss"] + weight * aux["keyword_loss"]),
                                       rel=1e-6)
  head = grads["keyword_head"]
  if weight == 0.0:  # off means off: the head learns nothing
    assert all(not np.any(np.asarray(g)) for g in jax.tree.leaves(head))
  else:
    assert any(np.any(np.asarray(g)) for g in jax.tree.leaves(head))
