"""R2GenCMN in Flax (models/cmn.py, models/cmn_memory.py): the memory's top-k querying against a
NumPy re-derivation, cached decoding against teacher forcing and the naive re-decode, the
configs and their checks. (Parity with R2GenCMN's own torch code:
tests/test_r2gen_cmn_parity.py.)"""

from __future__ import annotations

import dataclasses
import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cnx2rg_jax import config_checks
from cnx2rg_jax.models import factory, search
from cnx2rg_jax.models.cmn import CMNModel
from cnx2rg_jax.models.cmn_memory import CrossModalMemory
from cnx2rg_jax.models.cnx2rg import CNX2RG
from configs import cnx2rg as cnx2rg_configs
from tests.helpers.model_configs import model_config_with

VOCAB = 23
TINY = model_config_with(vocab_size=VOCAB, max_len=16, num_keywords=5, resnet_depth=18,
                         resnet_width=8, d_model=16, d_ff=24, num_heads=2, num_encoder_layers=1,
                         num_decoder_layers=2, rm_num_heads=2, rm_d_model=16, architecture="cmn",
                         cmm_size=40, cmm_dim=16, cmn_topk=6)


def _memory_reference(x, p, heads, topk):
  """R2GenCMN's memory_querying_responding in NumPy (float64): per head, each query's topk best
  memory rows by scaled dot product, softmax over those, their values averaged, output map."""
  lin = lambda v, name: v @ p[name]["kernel"] + p[name]["bias"]  # noqa: E731
  m = np.asarray(p["memory"], np.float64)
  q, k, v = lin(x, "query"), lin(m, "key"), lin(m, "value")
  b, t, d = q.shape
  dh = d // heads
  out = np.zeros((b, t, heads, dh))
  for bi in range(b):
    for ti in range(t):
      for h in range(heads):
        sl = slice(h * dh, (h + 1) * dh)
        scores = k[:, sl] @ q[bi, ti, sl] / np.sqrt(dh)
        best = np.argsort(-scores)[:topk]
        w = np.exp(scores[best] - scores[best].max())
        out[bi, ti, h] = (w / w.sum()) @ v[best, sl]
  return lin(out.reshape(b, t, d), "out")


def test_memory_keeps_the_topk_rows():
  mem = CrossModalMemory(cmm_size=40, d_model=16, num_heads=2, topk=6)
  x = np.random.default_rng(0).normal(size=(2, 5, 16)).astype(np.float32)
  params = nn.unbox(mem.init(jax.random.key(1), x))["params"]
  # R2GenCMN's init: N(0, 1/cmm_dim^2)
  assert np.std(np.asarray(params["memory"])) == pytest.approx(1 / 16, rel=0.15)
  # Larger memory rows than the init gives, so that the top 6 carry visibly different weights.
  params = jax.tree.map(np.asarray, params)
  params["memory"] = np.random.default_rng(2).normal(size=(40, 16)).astype(np.float32)
  got = np.asarray(mem.apply({"params": params}, x))
  p64 = jax.tree.map(lambda a: np.asarray(a, np.float64), params)
  want = _memory_reference(x.astype(np.float64), p64, heads=2, topk=6)
  np.testing.assert_allclose(got, want, atol=2e-5)
  everything = _memory_reference(x.astype(np.float64), p64, heads=2, topk=40)
  assert np.abs(everything - want).max() > 1e-2  # the top-k cut matters at these values


@functools.lru_cache
def _model_and_variables(config=TINY, seed=0):
  model = factory.model_of(config)
  assert isinstance(model, CMNModel) and isinstance(model, CNX2RG)
  init = jax.jit(model.init)  # compiled: the eager ResNet init is slow on a CPU
  variables = nn.unbox(init(jax.random.key(seed), jnp.zeros((1, 64, 64, 1)),
                            jnp.zeros((1, 3), jnp.int32)))
  return model, variables


def test_parameters_are_r2gencmns():
  _, variables = _model_and_variables()
  t = variables["params"]["transformer"]
  assert "rm" not in t and t["cmn"]["memory"].shape == (40, 16)
  assert set(t["decoder_layers_0"]) == {"norm_self", "norm_src", "norm_ff", "self_attn",
                                        "src_attn", "ffn"}
  assert set(t["decoder_layers_0"]["norm_self"]) == {"scale", "bias"}  # a plain norm, no MCLN
  assert "keyword_head" in variables["params"]  # the paper's head stays switchable


def test_decode_step_equals_teacher_forcing():
  model, variables = _model_and_variables()
  rng = np.random.default_rng(3)
  images = jnp.asarray(rng.normal(size=(2, 64, 64, 1)), jnp.float32)
  tokens = jnp.asarray(rng.integers(1, VOCAB, (2, 9)), jnp.int32)
  teacher = jax.jit(lambda v: model.apply(v, images, tokens)[0])
  logits = teacher(variables)
  memory = jax.jit(lambda: model.apply(variables, images, method=CNX2RG.encode)[0])()
  constants = model.apply(variables, memory, method=CNX2RG.decode_constants)
  cache = model.apply(variables, memory, 9, method=CNX2RG.init_cache)
  step = jax.jit(lambda t, c: model.apply(variables, t, c, constants, method=CNX2RG.decode_step))
  steps = []
  for i in range(9):
    out, cache = step(tokens[:, i], cache)
    steps.append(out)
  np.testing.assert_allclose(np.stack(steps, 1), logits, atol=2e-5)
  # the memory response depends on the token: a model without it gives other logits
  cut = jax.tree.map(lambda a: a, variables)  # a copy: the variables are cached
  cut["params"]["transformer"]["cmn"]["out"]["kernel"] = jnp.zeros((16, 16))
  cut["params"]["transformer"]["cmn"]["out"]["bias"] = jnp.zeros((16,))
  assert np.abs(teacher(cut) - logits).max() > 1e-3


@pytest.mark.parametrize("beam_size", [1, 3])
def test_cached_search_equals_naive_redecode(beam_size):
  model, variables = _model_and_variables()
  # encoder memory drawn directly (the ResNet of a random model maps all images alike)
  memory = jnp.asarray(np.random.default_rng(5).normal(size=(3, 4, 16)) * 3, jnp.float32)

  def run(impl):
    fn = jax.jit(lambda m: search.search_reports(model, variables, m, impl=impl,
                                                 beam_size=beam_size, max_len=12))
    return [np.asarray(a) for a in fn(memory)]

  (ids, scores), (naive_ids, naive_scores) = run("cached"), run("naive")
  np.testing.assert_array_equal(ids, naive_ids)
  np.testing.assert_allclose(scores, naive_scores, atol=1e-4)
  assert len({tuple(r) for r in ids}) > 1  # the examples lead to different reports


def test_configs_and_checks():
  demo = cnx2rg_configs.get_config("cmn_demo")
  config_checks.check(demo)
  ablation = cnx2rg_configs.get_config("ablation=r2gen")
  assert demo.model.architecture == "cmn" and ablation.model.architecture == "r2gen"
  # the demo comparison differs from R2Gen alone in the model and Adam's betas/eps only
  for section in ("data", "decode"):
    assert demo[section].to_dict() == ablation[section].to_dict()
  assert (demo.train.adam_b2, demo.train.adam_eps, demo.train.clip_value) == (0.98, 1e-9, 0.0)
  paper = cnx2rg_configs.get_config("cmn")
  config_checks.check(paper)
  tr = paper.train
  assert (tr.lr_visual, tr.lr_rest, tr.amsgrad, tr.lr_step_epochs, tr.lr_gamma) == \
      (5e-5, 7e-4, True, 50, 0.1)
  assert (paper.model.cmm_size, paper.model.cmm_dim, paper.model.cmn_topk) == (2048, 512, 32)
  assert paper.model.d_model == 512 and paper.train.keyword_weight == 0.0
  bad = cnx2rg_configs.get_config("cmn_demo")
  bad.model.cmm_dim = 64
  with pytest.raises(config_checks.ConfigError, match=r"model.cmm_dim=64.*model.d_model \(128\)"):
    config_checks.check(bad)
  bad = cnx2rg_configs.get_config("cmn_demo")
  bad.model.cmn_topk = 4096
  with pytest.raises(config_checks.ConfigError, match=r"model.cmn_topk=4096"):
    config_checks.check(bad)
  bad.model.cmn_topk, bad.model.architecture = 32, "r2gencmn"
  with pytest.raises(config_checks.ConfigError, match=r"model.architecture='r2gencmn'"):
    config_checks.check(bad)
  with pytest.raises(ValueError, match="model.architecture='x'"):
    factory.model_config({"architecture": "x"}, vocab_size=5, max_len=4)
  with pytest.raises(ValueError, match="cmm_dim"):
    _model_and_variables(dataclasses.replace(TINY, cmm_dim=8))


def test_flop_count_against_xla():
  """models/flops.py's R2GenCMN parts against XLA's count of the lowered HLO (batch 1)."""
  from cnx2rg_jax.models import flops  # pylint: disable=import-outside-toplevel
  from cnx2rg_jax.models.cmn import CMNTransformer  # pylint: disable=import-outside-toplevel
  cfg = dataclasses.replace(TINY, d_model=64, d_ff=64, cmm_dim=64, cmm_size=256, cmn_topk=8)
  n, t = 10, 12

  def xla(module, *shapes, method=None):
    args = [jax.ShapeDtypeStruct(s, jnp.float32) if len(s) != 2 or s[1] != t
            else jax.ShapeDtypeStruct(s, jnp.int32) for s in shapes]
    variables = jax.eval_shape(module.init, jax.random.key(0), *args)
    cost = jax.jit(lambda v, *a: module.apply(v, *a, method=method)).lower(
        variables, *args).cost_analysis()
    return float((cost[0] if isinstance(cost, list) else cost)["flops"])

  memory = CrossModalMemory(cfg.cmm_size, cfg.d_model, cfg.num_heads, cfg.cmn_topk)
  assert flops.cmn_memory_flops(n, cfg.cmm_size, 64, 8) == pytest.approx(
      xla(memory, (1, n, 64)), rel=0.03)
  parts = flops.forward_flops(cfg, 64, t)  # 64 pixels: 4 patches
  assert "relational_memory" not in parts
  want = sum(v for k, v in parts.items() if k not in ("resnet", "keyword_head"))
  # the transformer alone: visual tokens [1, 4, d_vf] and t tokens
  got = xla(CMNTransformer(cfg), (1, 4, cfg.d_vf), (1, t))
  assert want == pytest.approx(got, rel=0.05)


def test_the_cards_attention_maps_read_the_cross_attention():
  """card/attention.py reads the last decoder layer's cross-attention of a CMN model too: one
  weight per visual patch, summing to 1 (no prompt tokens)."""
  from cnx2rg_jax.card import attention  # pylint: disable=import-outside-toplevel
  model, variables = _model_and_variables()
  images = jnp.asarray(np.random.default_rng(6).normal(size=(2, 64, 64, 1)), jnp.float32)
  tokens = jnp.asarray(np.random.default_rng(7).integers(1, VOCAB, (2, 5)), jnp.int32)
  k = attention.num_patches(model, variables, 64)
  maps, share = jax.jit(attention.attention_fn(model, k))(variables, images, tokens)
  assert maps.shape == (2, 5, k) == (2, 5, 4)
  np.testing.assert_allclose(np.asarray(share), 1.0, atol=1e-5)
  assert np.asarray(maps).std() > 0  # not a uniform placeholder
