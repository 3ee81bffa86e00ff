"""Report search with CN-X2RG: the `tokens_to_logits` functions the model-agnostic searches of
`cnx2rg_jax.decoding` consume, cached (ours) and naive (R2Gen's way), and `search_reports`.

The naive function re-runs the teacher-forced decoder (relational memory included) over the whole
prefix at every step, as R2Gen's beam search does. To keep one compiled loop it runs on the prefix
padded to the next of a few bucket lengths, so it does at most twice the work of an exact-prefix
re-decode (for prefixes longer than the first bucket). It exists as the speed and parity reference.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from cnx2rg_jax import decoding
from cnx2rg_jax.models.cnx2rg import CNX2RG
from cnx2rg_jax.text import tokenizer as tokenizer_lib

IMPLS = ("cached", "naive")


def cached_tokens_to_logits(model: CNX2RG, variables, constants):
  """The cached step; `constants` (CNX2RG.decode_constants: per-example cross-attention keys and
  values, stacked MCLN weights) are closed over, so the search never repeats or gathers them."""
  def tokens_to_logits(ids, cache):
    return model.apply(variables, ids, cache, constants, method=CNX2RG.decode_step)
  return tokens_to_logits


def naive_buckets(max_len: int) -> tuple[int, ...]:
  return tuple(sorted({b for b in (16, 32, 64) if b < max_len} | {max_len}))


def naive_tokens_to_logits(model: CNX2RG, variables, max_len: int):
  buckets = naive_buckets(max_len)

  def tokens_to_logits(ids, cache):
    pos = cache["pos"]  # all sequences advance in lockstep
    prefix = jnp.where(jnp.arange(max_len)[None, :] == pos[:, None], ids[:, None],
                       cache["prefix"])

    def run(length):
      logits = model.apply(variables, cache["memory"], prefix[:, :length],
                           method=CNX2RG.decode_logits)
      return jnp.take_along_axis(logits, pos[:, None, None], axis=1)[:, 0]

    bucket = jnp.searchsorted(jnp.asarray(buckets), pos[0] + 1)
    logits = jax.lax.switch(bucket, [functools.partial(run, b) for b in buckets])
    return logits, {"memory": cache["memory"], "prefix": prefix, "pos": pos + 1}

  return tokens_to_logits


def initial_cache(model: CNX2RG, variables, memory, impl: str, max_len: int):
  if impl == "cached":
    return model.apply(variables, memory, max_len, method=CNX2RG.init_cache)
  if impl == "naive":
    b = memory.shape[0]
    return {"memory": memory, "prefix": jnp.zeros((b, max_len), jnp.int32),
            "pos": jnp.zeros((b,), jnp.int32)}
  raise ValueError(f"unknown decode impl {impl!r}; choose one of {IMPLS}")


def _start(model: CNX2RG, variables, memory, impl: str, max_len: int, copies: int = 1):
  """(tokens_to_logits, initial cache, bos ids) of a search from encoder memory [B, N, d] with
  `copies` rows per example (row b * copies + c is example b's copy c)."""
  rows = jnp.repeat(memory, copies, axis=0) if copies > 1 else memory
  cache = initial_cache(model, variables, rows, impl, max_len)
  if impl == "cached":
    fn = cached_tokens_to_logits(
        model, variables, model.apply(variables, memory, method=CNX2RG.decode_constants))
  else:
    fn = naive_tokens_to_logits(model, variables, max_len)
  return fn, cache, jnp.full((rows.shape[0],), tokenizer_lib.BOS_ID, jnp.int32)


def search_reports(model: CNX2RG, variables, memory, *, impl: str = "cached", beam_size: int = 3,
                   max_len: int = 100, length_penalty: float = 0.0, block_trigrams: bool = False,
                   min_len: int = 0):
  """Beam search (greedy when beam_size == 1) from encoder memory [B, N, d_model], with
  R2Gen's beam bookkeeping when the model's config has r2gen_beam_search.

  Returns (ids int32 [B, max_len] of the best beam: tokens after bos, eos, then pad; scores [B]).
  Jit it with the keyword arguments static.
  """
  fn, cache, bos = _start(model, variables, memory, impl, max_len)
  if beam_size == 1:
    return decoding.greedy_search(fn, bos, cache, max_len=max_len, eos_id=tokenizer_lib.EOS_ID,
                                  pad_id=tokenizer_lib.PAD_ID)
  ids, scores = decoding.beam_search(
      fn, bos, cache, beam_size=beam_size, max_len=max_len, eos_id=tokenizer_lib.EOS_ID,
      pad_id=tokenizer_lib.PAD_ID, length_penalty=length_penalty, block_trigrams=block_trigrams,
      min_len=min_len, r2gen=model.config.r2gen_beam_search)
  return ids[:, 0], scores[:, 0]


def sample_reports(model: CNX2RG, variables, memory, row_keys, *, num_samples: int,
                   max_len: int = 100, temperature: float = 1.0, impl: str = "cached"):
  """`num_samples` reports per example by ancestral sampling, from encoder memory [B, N, d_model]
  and one key per example (`row_keys` [B]): sample s of example b draws with
  fold_in(row_keys[b], s), so it does not depend on the batch the example sits in.

  Returns (ids int32 [B, num_samples, max_len], scores float32 [B, num_samples]: summed
  log-probabilities under the untempered model). Jit it with the keyword arguments static.
  """
  b = memory.shape[0]
  keys = jax.vmap(lambda k: jax.vmap(lambda s: jax.random.fold_in(k, s))(
      jnp.arange(num_samples)))(row_keys)
  keys = keys.reshape((b * num_samples,) + keys.shape[2:])
  # Row b * S + s is example b's sample s.
  fn, cache, bos = _start(model, variables, memory, impl, max_len, copies=num_samples)
  ids, scores = decoding.temperature_sample(fn, bos, cache, keys, max_len=max_len,
                                            eos_id=tokenizer_lib.EOS_ID, temperature=temperature,
                                            pad_id=tokenizer_lib.PAD_ID)
  return ids.reshape(b, num_samples, max_len), scores.reshape(b, num_samples)
