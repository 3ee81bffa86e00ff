"""Where a cached decode step's time goes, part by part (one JSON line):

    python -m cnx2rg_jax.bench.decode_parts [--batch=16] [--beam=3] [--max_len=100] [--vocab=2000]
        [--config=configs/cnx2rg.py:paper]

At the paper's dims (R2Gen's: d 512, 3 decoder layers, 3 memory slots), random weights, batch x
beam rows at one position: the relational-memory step, the MCLN MLPs of all norms, each decoder
layer's three sublayers (self-attention over a full cache with its in-place write,
cross-attention over the 49 patches' keys/values, feed-forward), the logits, the search's own
work (log-softmax, top-k over beam x vocabulary, the beams' gather of every cache leaf), and the
whole decode_step for reference. Each part is its own jitted function, timed `--repeats` times
after one warm-up call: median wall and CPU milliseconds.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

from cnx2rg_jax import config_files, decoding
from cnx2rg_jax.models import factory
from cnx2rg_jax.models.cnx2rg import CNX2RG
from cnx2rg_jax.models.decoder import cross_attend, prefix_mask, write_at
from cnx2rg_jax.models.mcln import stacked_shifts


def _ms(fn, repeats: int) -> dict:
  jax.block_until_ready(fn())
  wall, cpu = [], []
  for _ in range(repeats):
    start, start_cpu = time.perf_counter(), time.process_time()
    jax.block_until_ready(fn())
    wall.append(time.perf_counter() - start)
    cpu.append(time.process_time() - start_cpu)
  return {"wall_ms": round(1e3 * statistics.median(wall), 2),
          "cpu_ms": round(1e3 * statistics.median(cpu), 2)}


def decode_parts(config, batch: int, beam: int, max_len: int, vocab: int, repeats: int) -> dict:
  """The JSON object of the module docstring for `config`'s model (configs/cnx2rg.py:paper by
  default; changed in place: no prompts)."""
  c = config
  c.model.num_prompts, c.model.prompt_feature_dim = 0, 0
  model = CNX2RG(factory.model_config(c.model, vocab_size=vocab, max_len=max_len))
  variables = factory.random_variables(model, 224, 0)
  rng = np.random.default_rng(0)
  rows = batch * beam
  feats = jnp.asarray(rng.normal(size=(batch, 49, model.config.d_vf)), jnp.float32)
  memory = jax.jit(lambda v, f: model.apply(v, f, method=CNX2RG.encode_features))(variables, feats)
  consts = jax.jit(lambda v, m: model.apply(v, m, method=CNX2RG.decode_constants))(variables,
                                                                                     memory)
  cache = model.apply(variables, jnp.repeat(memory, beam, axis=0), max_len,
                      method=CNX2RG.init_cache)
  cache = {**cache, "pos": jnp.int32(max_len // 2)}  # a half-full cache (the mask hides the rest)
  token = jnp.asarray(rng.integers(4, vocab, rows), jnp.int32)
  d = model.config.d_model
  x = jnp.asarray(rng.normal(size=(rows, 1, d)), jnp.float32)
  rm_out = jnp.asarray(rng.normal(size=(rows, 1, model.config.rm_num_slots * d)), jnp.float32)
  shifts = jnp.asarray(rng.normal(size=(rows, 1, 3, 2, d)), jnp.float32) * 0.1
  pos = cache["pos"]

  def apply(fn, *args):
    """A thunk of the jitted `fn` (compiled once, at its first call)."""
    jitted = jax.jit(lambda v, *a: model.apply(v, *a, method=fn))
    return lambda: jitted(variables, *args)

  def thunk(fn, *args):
    jitted = jax.jit(fn)
    return lambda: jitted(*args)

  def rm_step(m, tok, rm):
    t = m.transformer
    e = t.embed(tok[:, None], jnp.broadcast_to(pos, tok.shape)[:, None], max_len)
    return t.rm.step(rm, e[:, 0])

  def sublayer(name):
    def run(m, x, shifts, layer_cache, cross):
      layer = m.transformer.decoder_layers[0]
      if name == "self_attention":
        h = layer.norm_self.normalize(x, shifts[..., 0, :, :])
        keys, values = write_at((layer_cache["self_k"], layer_cache["self_v"]),
                                layer.self_attn.project_kv(h), pos)
        return layer.self_attn.attend(h, keys, values, prefix_mask(pos, max_len)), keys, values
      if name == "cross_attention":
        h = layer.norm_src.normalize(x, shifts[..., 1, :, :])
        return cross_attend(layer.src_attn, h, cross, True)
      return layer.ffn(layer.norm_ff.normalize(x, shifts[..., 2, :, :]))
    return run

  gather_cache = decoding._gather_cache  # pylint: disable=protected-access
  logprobs = jnp.asarray(rng.normal(size=(batch, beam, vocab)), jnp.float32)
  index = jnp.asarray(rng.integers(0, beam, (batch, beam)), jnp.int32)
  layer0 = cache["layers"][0]
  parts = {
      "relational_memory_step": apply(rm_step, token, cache["rm"]),
      "mcln_mlps_all_norms": thunk(lambda r, k: stacked_shifts(r, k, model.config.compute_dtype),
                                   rm_out, consts["mcln"]),
      "layer_self_attention_with_cache_write": apply(
          sublayer("self_attention"), x, shifts, layer0, consts["cross"][0]),
      "layer_cross_attention": apply(
          sublayer("cross_attention"), x, shifts, layer0, consts["cross"][0]),
      "layer_feed_forward": apply(sublayer("ffn"), x, shifts, layer0, consts["cross"][0]),
      "logits": apply(lambda m, x: m.transformer.logit(m.transformer.decoder_norm(x)), x),
      "search_log_softmax_top_k": thunk(lambda lp: jax.lax.top_k(
          jax.nn.log_softmax(lp, axis=-1).reshape(batch, -1), 2 * beam), logprobs),
      "search_gather_cache": thunk(gather_cache, cache, index),
      "decode_step": apply(CNX2RG.decode_step, token, cache, consts),
  }
  out = {name: _ms(fn, repeats) for name, fn in parts.items()}
  return {"batch": batch, "beam": beam, "rows": rows, "max_len": max_len, "vocab": vocab,
          "decoder_layers": model.config.num_decoder_layers, "device": jax.devices()[0].device_kind,
          "note": "layer_* parts are one decoder layer's; the step runs each once per layer",
          "parts": out}


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--batch", type=int, default=16)
  p.add_argument("--beam", type=int, default=3)
  p.add_argument("--max_len", type=int, default=100)
  p.add_argument("--vocab", type=int, default=2000)
  p.add_argument("--repeats", type=int, default=10)
  p.add_argument("--config", default="configs/cnx2rg.py:paper",
                 help="the config file (and variant) of the model's dims")
  args = p.parse_args(argv)
  if min(args.batch, args.beam, args.max_len, args.repeats) < 1 or args.vocab < 5:
    print("error: --batch, --beam, --max_len and --repeats must be >= 1, --vocab >= 5",
          file=sys.stderr)
    return 2
  try:
    config = config_files.load(args.config)
  except OSError as e:
    print(f"error: --config={args.config} cannot be read ({e})", file=sys.stderr)
    return 2
  print(json.dumps(decode_parts(config, args.batch, args.beam, args.max_len, args.vocab,
                                args.repeats)))
  return 0


if __name__ == "__main__":
  sys.exit(main())
