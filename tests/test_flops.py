"""The analytic FLOP count (models/flops.py) against XLA's own count of each part, at the paper's
dims. XLA counts the lowered HLO (no compile): every matrix product and convolution (but not the
multiply-adds on padding), plus the elementwise work that the analytic count leaves out, so the
two agree to a few per cent, not exactly."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import pytest

from configs import cnx2rg
from cnx2rg_jax.models import factory, flops
from cnx2rg_jax.models.decoder import DecoderLayer
from cnx2rg_jax.models.layers import causal_mask
from cnx2rg_jax.models.relational_memory import RelationalMemoryCell
from cnx2rg_jax.models.resnet import VisualEncoder
from cnx2rg_jax.models.transformer import EncoderLayer

VOCAB = 2000


@pytest.fixture(scope="module")
def paper():
  c = cnx2rg.get_config("paper")
  model_cfg = factory.build_model(c, VOCAB).config
  return model_cfg, c.data.crop_size, c.data.max_tokens - 1


def xla_flops(module: nn.Module, *shapes, method=None) -> float:
  """XLA's FLOP count of module(*inputs) for one example (batch 1), from the lowered HLO."""
  args = [jax.ShapeDtypeStruct(s, jnp.float32) for s in shapes]
  variables = jax.eval_shape(module.init, jax.random.key(0), *args)
  fn = lambda v, *a: module.apply(v, *a, method=method)  # noqa: E731
  cost = jax.jit(fn).lower(variables, *args).cost_analysis()
  return float((cost[0] if isinstance(cost, list) else cost)["flops"])


class _Decoder(nn.Module):
  """One decoder layer over T positions, cross keys/values included."""
  config: object
  t: int

  @nn.compact
  def __call__(self, x, rm_out, memory):
    layer = DecoderLayer(self.config)
    return layer(x, rm_out, layer.cross_kv(memory), causal_mask(self.t))[0]


class _Memory(nn.Module):
  config: object

  @nn.compact
  def __call__(self, memory, y):
    c = self.config
    return RelationalMemoryCell(c.rm_num_slots, c.rm_d_model, c.rm_num_heads)(memory, y)[0]


def _close(analytic: float, xla: float, rel: float):
  assert analytic == pytest.approx(xla, rel=rel), (analytic, xla, analytic / xla)


def test_resnet101(paper):
  cfg, size, _ = paper
  _close(flops.resnet_flops(cfg.resnet_depth, cfg.resnet_width, size),
         xla_flops(VisualEncoder(cfg), (1, size, size, 1)), 0.06)  # padding: see doc


def test_encoder_layer(paper):
  cfg, size, _ = paper
  n, d = flops.visual_tokens(cfg, size), cfg.d_model
  _close(flops.encoder_layer_flops(n, d, cfg.d_ff), xla_flops(EncoderLayer(cfg), (1, n, d)), 0.02)


def test_relational_memory_step(paper):
  cfg, _, _ = paper
  s, d = cfg.rm_num_slots, cfg.rm_d_model
  _close(flops.memory_step_flops(s, d), xla_flops(_Memory(cfg), (1, s, d), (1, d)), 0.02)


def test_decoder_layer(paper):
  cfg, size, t = paper
  n, d, s = flops.visual_tokens(cfg, size), cfg.d_model, cfg.rm_num_slots
  _close(flops.decoder_layer_flops(t, n, d, cfg.d_ff, s),
         xla_flops(_Decoder(cfg, t), (1, t, d), (1, t, s * d), (1, n, d)), 0.02)


def test_the_paper_count(paper):
  cfg, size, t = paper
  parts = flops.forward_flops(cfg, size, t)
  assert parts["logits"] == 2 * t * cfg.d_model * VOCAB
  # ResNet-101 dominates; a training example costs three forward passes.
  assert parts["resnet"] > 0.5 * sum(parts.values())
  assert flops.train_flops_per_example(cfg, size, t) == 3 * sum(parts.values())
