"""Tests of the R2Gen-style ReportTransformer: norms, relational memory, MCLN, decoding."""

from __future__ import annotations

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cnx2rg_jax.models.layers import LayerNorm, layer_norm
from cnx2rg_jax.models.mcln import ConditionalLayerNorm
from cnx2rg_jax.models.relational_memory import RelationalMemory
from cnx2rg_jax.models.transformer import ReportTransformer
from tests.helpers.model_configs import model_config_with

TINY = model_config_with(vocab_size=20, max_len=12, resnet_depth=18, d_model=32, d_ff=32,
                         num_heads=4, num_encoder_layers=2, num_decoder_layers=2, rm_num_slots=3,
                         rm_num_heads=4, rm_d_model=32)
B, N, T = 2, 5, 7


@pytest.fixture(scope="module")
def tiny():
  """(model, params, visual feats, tokens, jitted teacher-forced forward) of the tiny model."""
  model = ReportTransformer(TINY)
  feats = jax.random.normal(jax.random.PRNGKey(0), (B, N, TINY.d_vf))
  tokens = jax.random.randint(jax.random.PRNGKey(1), (B, T), 0, TINY.vocab_size)
  return model, random_params(model, 2, feats, tokens), feats, tokens, jitted(model)


def random_params(module, seed, *args):
  """Parameters of `module` drawn with NumPy: the tree and shapes of module.init, without its
  (slow to compile on the CPU) threefry initialisers; biases and gains are perturbed too."""
  shapes = nn.unbox(jax.eval_shape(module.init, jax.random.PRNGKey(0), *args))
  rng = np.random.default_rng(seed)

  def draw(path, leaf):
    name = jax.tree_util.keystr(path)
    if len(leaf.shape) >= 2:  # kernels, embeddings: unit-variance outputs
      x = rng.normal(size=leaf.shape) / np.sqrt(leaf.shape[-2] if "embedding" not in name else 1)
    elif "scale" in name:
      x = 1.0 + 0.1 * rng.normal(size=leaf.shape)
    else:
      x = 0.1 * rng.normal(size=leaf.shape)
    return jnp.asarray(x, leaf.dtype)

  return jax.tree_util.tree_map_with_path(draw, shapes)


def jitted(model, **kwargs):
  """model.apply compiled (op-by-op dispatch of the decoder is slow on the CPU)."""
  return jax.jit(lambda *args: model.apply(*args, **kwargs))


# ---------------------------------------------------------------- NumPy references
def np_layer_norm(x, scale, bias, r2gen, eps=1e-6):
  x = np.asarray(x, np.float64)
  mean = x.mean(-1, keepdims=True)
  if r2gen:
    return scale * (x - mean) / (x.std(-1, ddof=1, keepdims=True) + eps) + bias
  return scale * (x - mean) / np.sqrt(x.var(-1, keepdims=True) + eps) + bias


def np_dense(p, x):
  return x @ np.asarray(p["kernel"], np.float64) + np.asarray(p["bias"], np.float64)


def np_mha(p, q_in, kv_in, heads):
  """Multi-head attention, written out: q/k/v projections, per-head softmax, output."""
  b, tq, d = q_in.shape
  dh = d // heads
  split = lambda x: x.reshape(b, x.shape[1], heads, dh).transpose(0, 2, 1, 3)
  q = split(np_dense(p["query"], q_in))
  k = split(np_dense(p["key"], kv_in))
  v = split(np_dense(p["value"], kv_in))
  s = q @ k.transpose(0, 1, 3, 2) / np.sqrt(dh)
  w = np.exp(s - s.max(-1, keepdims=True))
  w /= w.sum(-1, keepdims=True)
  ctx = (w @ v).transpose(0, 2, 1, 3).reshape(b, tq, d)
  return np_dense(p["out"], ctx)


def np_rm_step(p, memory, y, heads):
  """R2Gen's RelationalMemory.forward_step in float64."""
  relu = lambda x: np.maximum(x, 0)
  sigmoid = lambda x: 1 / (1 + np.exp(-x))
  kv = np.concatenate([memory, y[:, None]], axis=1)
  z = memory + np_mha(p["attn"], memory, kv, heads)
  z = z + relu(np_dense(p["mlp2"], relu(np_dense(p["mlp1"], z))))
  gates = np_dense(p["w"], y[:, None]) + np_dense(p["u"], np.tanh(memory))
  i, f = np.split(gates, 2, axis=-1)
  return sigmoid(i) * np.tanh(z) + sigmoid(f) * memory


# ---------------------------------------------------------------- tests
@pytest.mark.parametrize("r2gen", [False, True])
def test_layer_norm_variants_match_numpy(r2gen):
  rng = np.random.default_rng(0)
  x = rng.normal(size=(3, 4, 16)) * 3 + 1
  scale, bias = rng.normal(size=16), rng.normal(size=16)
  want = np_layer_norm(x, scale, bias, r2gen)
  got = layer_norm(jnp.asarray(x, jnp.float32), jnp.asarray(scale), jnp.asarray(bias),
                   r2gen=r2gen)
  np.testing.assert_allclose(np.asarray(got), want, atol=1e-5)
  module = LayerNorm(r2gen=r2gen)
  params = nn.unbox(module.init(jax.random.PRNGKey(0), x))
  got = module.apply(params, jnp.asarray(x, jnp.float32))
  np.testing.assert_allclose(np.asarray(got), np_layer_norm(x, 1.0, 0.0, r2gen), atol=1e-5)


@pytest.mark.parametrize("r2gen", [False, True])
def test_mcln_is_layer_norm_when_memory_mlps_output_zero(r2gen):
  rng = np.random.default_rng(1)
  d, rm_flat = 32, 96
  x = jnp.asarray(rng.normal(size=(B, T, d)), jnp.float32)
  memory = jnp.asarray(rng.normal(size=(B, T, rm_flat)), jnp.float32)
  mcln = ConditionalLayerNorm(d, r2gen=r2gen)
  params = nn.unbox(mcln.init(jax.random.PRNGKey(0), x, memory))
  p = params["params"]
  # R2Gen initialises every MCLN MLP bias to 0.1.
  for mlp in ("mlp_gamma", "mlp_beta"):
    for fc in ("fc1", "fc2"):
      np.testing.assert_allclose(np.asarray(p[mlp][fc]["bias"]), 0.1)
  scale = jnp.asarray(rng.normal(size=d), jnp.float32)
  bias = jnp.asarray(rng.normal(size=d), jnp.float32)
  p = {**p, "scale": scale, "bias": bias}
  for mlp in ("mlp_gamma", "mlp_beta"):
    p[mlp] = {**p[mlp], "fc2": jax.tree_util.tree_map(jnp.zeros_like, p[mlp]["fc2"])}
  got = mcln.apply({"params": p}, x, memory)
  ln = LayerNorm(r2gen=r2gen)
  want = ln.apply({"params": {"scale": scale, "bias": bias}}, x)
  np.testing.assert_allclose(np.asarray(got), np.asarray(want), atol=1e-6)
  # With the initial (non-zero) MLPs the memory does change the output.
  got_init = mcln.apply(params, x, memory)
  assert np.abs(np.asarray(got_init) - np.asarray(want)).max() > 1e-3


def test_relational_memory_matches_numpy():
  rng = np.random.default_rng(2)
  slots, d, heads = 3, 32, 4
  rm = RelationalMemory(slots, d, heads, dropout=0.1)
  y = rng.normal(size=(B, T, d))
  params = random_params(rm, 0, jnp.asarray(y, jnp.float32))
  p = jax.tree_util.tree_map(lambda a: np.asarray(a, np.float64), params["params"]["cell"])
  # Initial memory: eye(slots) padded with zeros.
  init = np.asarray(rm.apply(params, B, method=RelationalMemory.initial_state))
  want_init = np.zeros((B, slots, d))
  want_init[:, :, :slots] = np.eye(slots)
  np.testing.assert_array_equal(init, want_init)
  # One step from an arbitrary memory.
  memory = rng.normal(size=(B, slots, d))
  got = rm.apply(params, jnp.asarray(memory, jnp.float32), jnp.asarray(y[:, 0], jnp.float32),
                 method=RelationalMemory.step)
  np.testing.assert_allclose(np.asarray(got), np_rm_step(p, memory, y[:, 0], heads), atol=1e-5)
  # The scan over T steps: output t is the state after consuming y_t.
  got = np.asarray(jitted(rm)(params, jnp.asarray(y, jnp.float32)))
  assert got.shape == (B, T, slots * d)
  memory = want_init
  for t in range(T):
    memory = np_rm_step(p, memory, y[:, t], heads)
    np.testing.assert_allclose(got[:, t], memory.reshape(B, -1), atol=1e-5)


def test_teacher_forcing_is_causal(tiny):
  model, params, feats, tokens, forward = tiny
  logits = np.asarray(forward(params, feats, tokens))
  assert logits.shape == (B, T, TINY.vocab_size) and logits.dtype == np.float32
  for k in (1, 3, T - 1):
    changed = tokens.at[:, k].set((tokens[:, k] + 1) % TINY.vocab_size)
    other = np.asarray(forward(params, feats, changed))
    np.testing.assert_array_equal(other[:, :k], logits[:, :k])
    assert np.abs(other[:, k] - logits[:, k]).max() > 1e-4


def test_decode_step_matches_teacher_forcing(tiny):
  model, params, feats, tokens, forward = tiny
  want = np.asarray(forward(params, feats, tokens))
  max_len = T + 3  # spare cache rows must stay invisible

  @jax.jit
  def start(p, f):
    memory = model.apply(p, f, method=ReportTransformer.encode)
    return (model.apply(p, memory, max_len, method=ReportTransformer.init_cache),
            model.apply(p, memory, method=ReportTransformer.decode_constants))
  cache, consts = start(params, feats)
  for leaf in jax.tree_util.tree_leaves(cache):
    assert leaf.ndim == 0 or leaf.shape[0] == B
  layer0 = cache["layers"][0]
  d_head = TINY.d_model // TINY.num_heads
  assert layer0["self_k"].shape == (B, TINY.num_heads, d_head, max_len)
  assert layer0["self_v"].shape == (B, TINY.num_heads, max_len, d_head)
  assert consts["cross"][0][0].shape == (B, TINY.num_heads, d_head, N)
  assert consts["cross"][0][1].shape == (B, TINY.num_heads, N, d_head)
  assert cache["rm"].shape == (B, TINY.rm_num_slots, TINY.rm_d_model)
  assert cache["pos"].dtype == jnp.int32 and cache["pos"].shape == ()

  step = jax.jit(lambda tok, c, k: model.apply(params, tok, c, k,
                                               method=ReportTransformer.decode_step))
  got = []
  for t in range(T):
    logits_t, cache = step(tokens[:, t], cache, consts)
    got.append(np.asarray(logits_t))
  np.testing.assert_allclose(np.stack(got, axis=1), want, atol=1e-4)
  np.testing.assert_array_equal(np.asarray(cache["pos"]), T)


def test_decode_rows_share_their_examples_constants(tiny):
  """Beam search: K rows per example read that example's cross-attention keys/values (never
  repeated), and reordering rows within an example (gathering every cache leaf) is enough."""
  model, params, feats, tokens, _ = tiny
  k = 3
  memory = model.apply(params, feats, method=ReportTransformer.encode)
  consts = model.apply(params, memory, method=ReportTransformer.decode_constants)
  rows = jnp.repeat(memory, k, axis=0)  # row b * k + j: example b
  step = jax.jit(lambda tok, c, kk: model.apply(params, tok, c, kk,
                                                method=ReportTransformer.decode_step))
  shared = model.apply(params, rows, T, method=ReportTransformer.init_cache)
  repeated = shared
  repeated_consts = model.apply(params, rows, method=ReportTransformer.decode_constants)
  ids = jnp.asarray(np.random.default_rng(5).integers(0, TINY.vocab_size, (B * k, 4)), jnp.int32)
  for t in range(ids.shape[1]):
    a, shared = step(ids[:, t], shared, consts)
    b, repeated = step(ids[:, t], repeated, repeated_consts)
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-5)
  perm = jnp.asarray([2, 0, 1, 4, 5, 3])  # beams move within their example only
  swapped = jax.tree_util.tree_map(lambda x: x if x.ndim == 0 else x[perm], shared)
  nxt = jnp.arange(B * k, dtype=jnp.int32) % TINY.vocab_size
  a, _ = step(nxt, shared, consts)
  b, _ = step(nxt[perm], swapped, consts)
  np.testing.assert_allclose(np.asarray(b), np.asarray(a)[perm], atol=1e-5)


def test_dropout_training_mode(tiny):
  model, params, feats, tokens, forward = tiny
  # An rbg key: threefry dropout masks are slow to compile on the CPU.
  rngs = {"dropout": jax.random.key(3, impl="rbg")}
  train = jitted(model, deterministic=False, rngs=rngs)(params, feats, tokens)
  evaluate = forward(params, feats, tokens)
  assert np.isfinite(np.asarray(train)).all()
  assert np.abs(np.asarray(train) - np.asarray(evaluate)).max() > 1e-3


def test_bfloat16_compute_is_close_to_float32(tiny):
  model, params, feats, tokens, forward = tiny
  want = np.asarray(forward(params, feats, tokens))
  bf16 = ReportTransformer(dataclasses.replace(TINY, dtype="bfloat16"))

  @jax.jit
  def run(params, feats, tokens):
    """Teacher-forced logits, the encoder memory and the first decode step, in bfloat16."""
    logits = bf16.apply(params, feats, tokens)
    memory_feats = bf16.apply(params, feats, method=ReportTransformer.encode)
    cache = bf16.apply(params, memory_feats, T, method=ReportTransformer.init_cache)
    consts = bf16.apply(params, memory_feats, method=ReportTransformer.decode_constants)
    first, _ = bf16.apply(params, tokens[:, 0], cache, consts,
                          method=ReportTransformer.decode_step)
    return logits, memory_feats, first

  got, memory_feats, first = run(params, feats, tokens)
  got = np.asarray(got)
  assert got.dtype == np.float32 and np.isfinite(got).all()
  assert memory_feats.dtype == jnp.bfloat16
  tol = 0.02 + 0.02 * np.abs(want).max()  # bf16 keeps ~3 significant digits
  np.testing.assert_allclose(got, want, atol=tol)
  np.testing.assert_allclose(np.asarray(first), got[:, 0], atol=tol)


def r2gen_param_count(v, d_vf, d, d_ff, n_enc, n_dec, slots, d_rm):
  """Trainable parameters of R2Gen's EncoderDecoder (encoder_decoder.py, att_model.py).

  `v` is R2Gen's tgt_vocab (its len(idx2token) + 1): our vocab_size plays that role.
  """
  linear = lambda i, o: i * o + o
  layer_norm_ = 2 * d  # gamma, beta
  mha = 4 * linear(d, d)  # MultiHeadedAttention.linears: q, k, v, out
  ffn = linear(d, d_ff) + linear(d_ff, d)
  mcln = 2 * d + 2 * (linear(slots * d_rm, d) + linear(d_rm, d_rm))  # gamma, beta, 2 MLPs
  att_embed = linear(d_vf, d)
  encoder = n_enc * (mha + ffn + 2 * layer_norm_) + layer_norm_
  decoder = n_dec * (2 * mha + ffn + 3 * mcln) + layer_norm_
  tgt_embed = v * d  # Embeddings.lut; PositionalEncoding is a buffer
  rm = 4 * linear(d_rm, d_rm) + 2 * linear(d_rm, d_rm) + 2 * linear(d_rm, 2 * d_rm)
  logit = linear(d, v)
  return att_embed + encoder + decoder + tgt_embed + rm + logit


def test_paper_config_parameter_count_equals_r2gen():
  config = model_config_with(vocab_size=760)  # d 512, 3+3 layers, slots 3, ResNet-101 (d_vf 2048)
  model = ReportTransformer(config)
  feats = jax.ShapeDtypeStruct((1, 49, config.d_vf), jnp.float32)
  tokens = jax.ShapeDtypeStruct((1, 8), jnp.int32)
  shapes = jax.eval_shape(model.init, jax.random.PRNGKey(0), feats, tokens)
  ours = sum(int(np.prod(x.shape)) for x in jax.tree_util.tree_leaves(nn.unbox(shapes)))
  theirs = r2gen_param_count(760, config.d_vf, config.d_model, config.d_ff,
                             config.num_encoder_layers, config.num_decoder_layers,
                             config.rm_num_slots, config.rm_d_model)
  print(f"ReportTransformer parameters (vocab 760, paper config): {ours:,}; R2Gen: {theirs:,}")
  assert ours == theirs
  # The MCLN final-norm option adds exactly one MCLN's conditioning MLPs.
  with_mcln = ReportTransformer(config, conditional_final_norm=True)
  shapes = jax.eval_shape(with_mcln.init, jax.random.PRNGKey(0), feats, tokens)
  extra = sum(int(np.prod(x.shape)) for x in jax.tree_util.tree_leaves(nn.unbox(shapes))) - ours
  d, s = config.d_model, config.rm_num_slots
  assert extra == 2 * ((s * d * d + d) + (d * d + d))
