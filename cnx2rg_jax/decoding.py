"""Model-agnostic autoregressive search: beam search, greedy search and temperature sampling.

The search only sees a step function `tokens_to_logits(ids, cache) -> (logits, new_cache)`:
`ids` int32 [N] holds the last token of each of N = batch * beams sequences, `cache` is any pytree
whose leaves have leading dimension N (0-d leaves, such as a shared decode index, are passed
through untouched), and `logits` [N, V] score the NEXT token. The search repeats every cache leaf
per beam and gathers it by beam at every step, so what never changes during a search (e.g. a
model's cross-attention keys and values, one per example) belongs in the closure of
`tokens_to_logits`, not in the cache; a 0-d leaf (one step index for all rows) is never gathered.
Every search runs as ONE `jax.lax.while_loop`, so it is jit-able with the step function closed
over and the keyword arguments static, and compiles once per shape.

Conventions shared by all searches:

* Returned sequences hold the generated tokens after bos: the eos token when a sequence finished,
  then `pad_id`. A sequence that reaches `max_len` without eos is finished there, truncated
  (it has no eos); its length is `max_len`.
* Scores are float32 whatever the logits dtype: the sum of the model's log-probabilities
  (log_softmax in float32) of the generated tokens, eos included. Beam search divides that by the
  GNMT length penalty ((5 + length) / 6) ** alpha, alpha = `length_penalty` (0: no penalty).
* Ties go to the lower token id, and in beam search to the higher-ranked source beam first
  (candidates are ranked over the flattened [beam, vocab] axis by a stable top-k); a hypothesis
  that finished at an earlier step beats a new one with an equal score.

Beams are gathered with one-hot [batch, new_beam, old_beam] contractions (einsum) instead of
fancy indexing, so the state can stay sharded along batch. Float leaves are contracted in their own
dtype at HIGHEST precision, which is exact (one non-zero product per output), provided they hold
no inf/nan (0 * inf = nan). Integer and bool leaves are contracted as int32, also exact for any
int32 value; leaves of wider integer types would be truncated to 32 bits.
"""

from __future__ import annotations

from typing import Any, Callable

import flax
import jax
import jax.numpy as jnp

TokensToLogits = Callable[[jax.Array, Any], tuple[jax.Array, Any]]
NEG_INF = float("-inf")


@flax.struct.dataclass
class BeamState:
  """The while_loop carry. B = batch, K = beams (1 for greedy/sampling), L = max_len."""

  cur_index: jax.Array  # [] int32: tokens generated so far (the position written next)
  live_seqs: jax.Array  # [B, K, L] int32, pad_id beyond cur_index
  live_logprobs: jax.Array  # [B, K] float32 sum of log-probs; -inf marks an empty beam
  finished_seqs: Any  # [B, K, L] int32, best first (None for greedy/sampling)
  finished_scores: Any  # [B, K] float32 length-penalised; -inf where not finished (or None)
  finished_flags: jax.Array  # [B, K] bool: a finished hypothesis (greedy/sampling: seq is done)
  cache: Any  # leaves [B * K, ...]


def length_penalty_term(length, alpha: float):
  """The GNMT length penalty ((5 + length) / 6) ** alpha; exactly 1 for alpha == 0."""
  if alpha == 0:
    return jnp.float32(1.0)
  return ((5.0 + jnp.asarray(length, jnp.float32)) / 6.0) ** jnp.float32(alpha)


def _expand_beams(tree: Any, beam_size: int) -> Any:
  """Repeats every leaf's rows beam_size times ([B, ...] -> [B * beam_size, ...], each example's
  copies adjacent); 0-d leaves are returned unchanged."""
  def expand(x):
    x = jnp.asarray(x)
    return x if x.ndim == 0 else jnp.repeat(x, beam_size, axis=0)
  return jax.tree_util.tree_map(expand, tree)


def _gather_beams(x: jax.Array, index: jax.Array) -> jax.Array:
  """out[b, n] = x[b, index[b, n]] for x [B, K_old, ...] and index [B, K_new], by a one-hot einsum
  (int32 contraction for integer/bool x, x's own dtype at HIGHEST precision for floats)."""
  if jnp.issubdtype(x.dtype, jnp.integer) or x.dtype == jnp.bool_:
    one_hot = jax.nn.one_hot(index, x.shape[1], dtype=jnp.int32)
    return jnp.einsum("bnk,bk...->bn...", one_hot, x.astype(jnp.int32)).astype(x.dtype)
  one_hot = jax.nn.one_hot(index, x.shape[1], dtype=x.dtype)
  return jnp.einsum("bnk,bk...->bn...", one_hot, x, precision=jax.lax.Precision.HIGHEST)


def _gather_cache(cache: Any, index: jax.Array) -> Any:
  """Gathers every cache leaf ([B * K_old, ...]) by beam index [B, K_new]; 0-d leaves pass."""
  batch = index.shape[0]

  def gather(x):
    if x.ndim == 0:
      return x
    y = _gather_beams(x.reshape((batch, -1) + x.shape[1:]), index)
    return y.reshape((-1,) + x.shape[1:])
  return jax.tree_util.tree_map(gather, cache)


def _init_state(init_ids, init_cache, *, beam_size: int, max_len: int, pad_id: int,
                with_pool: bool) -> BeamState:
  """The state before any step: only beam 0 of each example is live (log-prob 0), so the first
  step does not propose the same token from K identical copies."""
  batch = init_ids.shape[0]
  seqs = jnp.full((batch, beam_size, max_len), pad_id, jnp.int32)
  logprobs = jnp.where(jnp.arange(beam_size) == 0, 0.0, NEG_INF).astype(jnp.float32)
  return BeamState(
      cur_index=jnp.zeros((), jnp.int32),
      live_seqs=seqs,
      live_logprobs=jnp.broadcast_to(logprobs, (batch, beam_size)),
      finished_seqs=seqs if with_pool else None,
      finished_scores=jnp.full((batch, beam_size), NEG_INF, jnp.float32) if with_pool else None,
      finished_flags=jnp.zeros((batch, beam_size), jnp.bool_),
      cache=_expand_beams(init_cache, beam_size))


def _step_logprobs(tokens_to_logits: TokensToLogits, state: BeamState, init_ids):
  """Runs the model on each live sequence's last token (bos at step 0). Returns float32
  log-probabilities [B, K, V] for the next token and the model's new cache."""
  batch, beams, _ = state.live_seqs.shape
  t = state.cur_index
  previous = jax.lax.dynamic_index_in_dim(state.live_seqs, jnp.maximum(t - 1, 0), axis=2,
                                          keepdims=False)
  last = jnp.where(t == 0, init_ids.astype(jnp.int32)[:, None], previous)
  logits, cache = tokens_to_logits(last.reshape(batch * beams), state.cache)
  logprobs = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
  return logprobs.reshape(batch, beams, -1), cache


def _write_token(seqs: jax.Array, t, tokens: jax.Array) -> jax.Array:
  """seqs [..., L] with tokens [...] written at position t."""
  return jnp.where(jnp.arange(seqs.shape[-1]) == t, tokens[..., None], seqs)


def _trigram_blocked(seqs: jax.Array, t, vocab_size: int) -> jax.Array:
  """[N, V] bool: appending token v at position t to seqs [N, L] would repeat a trigram that
  already starts at some position j <= t - 3 (only generated tokens count, bos does not)."""
  n, length = seqs.shape
  if length < 3:
    return jnp.zeros((n, vocab_size), jnp.bool_)
  a = jax.lax.dynamic_index_in_dim(seqs, jnp.maximum(t - 2, 0), axis=1, keepdims=False)
  b = jax.lax.dynamic_index_in_dim(seqs, jnp.maximum(t - 1, 0), axis=1, keepdims=False)
  starts = jnp.arange(length - 2)
  match = (seqs[:, :-2] == a[:, None]) & (seqs[:, 1:-1] == b[:, None]) & (starts + 3 <= t)
  # The token that followed each matching bigram is blocked (a scatter-max over the vocabulary).
  follow = jnp.clip(seqs[:, 2:], 0, vocab_size - 1)
  blocked = jnp.zeros((n, vocab_size), jnp.int32)
  blocked = blocked.at[jnp.arange(n)[:, None], follow].max(match.astype(jnp.int32))
  return blocked > 0


# R2Gen's beam search takes this off the score of a beam that has just finished, and keeps
# extending it (modules/caption_model.py); see `beam_search(r2gen=True)`.
R2GEN_FINISHED_PENALTY = 1000.0


def _beam_step(state: BeamState, *, tokens_to_logits, init_ids, max_len, eos_id, alpha,
               block_trigrams, min_len, pad_id, r2gen=False) -> BeamState:
  """One beam-search step: extend, rank 2K candidates, move eos ones to the finished pool, keep
  the best K others live, and gather the cache of the surviving beams. With `r2gen`, K
  candidates only, all of them kept, those ending in eos with a score lowered by
  R2GEN_FINISHED_PENALTY."""
  batch, k = state.live_logprobs.shape
  t = state.cur_index
  logprobs, cache = _step_logprobs(tokens_to_logits, state, init_ids)
  vocab = logprobs.shape[-1]
  if min_len > 0:
    logprobs = logprobs.at[..., eos_id].set(
        jnp.where(t < min_len, NEG_INF, logprobs[..., eos_id]))
  if block_trigrams:
    blocked = _trigram_blocked(state.live_seqs.reshape(batch * k, max_len), t, vocab)
    logprobs = jnp.where(blocked.reshape(batch, k, vocab), NEG_INF, logprobs)

  # 2K candidates: at most K of them end in eos (one eos per beam), so at least K stay live.
  candidates = (state.live_logprobs[..., None] + logprobs).reshape(batch, k * vocab)
  top_logprobs, top_index = jax.lax.top_k(candidates, k if r2gen else 2 * k)
  source_beam = top_index // vocab
  tokens = top_index % vocab
  top_seqs = _write_token(_gather_beams(state.live_seqs, source_beam), t, tokens)

  # Finished candidates: eos, or anything at the last position (truncated there).
  is_eos = tokens == eos_id
  new_flags = (is_eos | (t == max_len - 1)) & (top_logprobs > NEG_INF)
  new_scores = jnp.where(new_flags, top_logprobs / length_penalty_term(t + 1, alpha), NEG_INF)
  # Old finished first, so an earlier hypothesis wins a tie against a new one.
  pool_seqs = jnp.concatenate(
      [state.finished_seqs, jnp.where(new_flags[..., None], top_seqs, pad_id)], axis=1)
  pool_scores = jnp.concatenate([state.finished_scores, new_scores], axis=1)
  pool_flags = jnp.concatenate([state.finished_flags, new_flags], axis=1)
  finished_scores, keep = jax.lax.top_k(pool_scores, k)

  if r2gen:
    # R2Gen: the K candidates are the K beams; one that ended in eos is finished above and goes
    # on with its score lowered by 1000, so it only survives where nothing better exists.
    live = jnp.broadcast_to(jnp.arange(k), (batch, k))
    live_logprobs = jnp.where(is_eos, top_logprobs - R2GEN_FINISHED_PENALTY, top_logprobs)
  else:
    # The new live set: the best K non-eos candidates (empty beams carry -inf along harmlessly).
    live_logprobs, live = jax.lax.top_k(jnp.where(is_eos, NEG_INF, top_logprobs), k)
  cache_source = jnp.take_along_axis(source_beam, live, axis=1)
  return BeamState(
      cur_index=t + 1,
      live_seqs=_gather_beams(top_seqs, live),
      live_logprobs=live_logprobs,
      finished_seqs=_gather_beams(pool_seqs, keep),
      finished_scores=finished_scores,
      finished_flags=jnp.take_along_axis(pool_flags, keep, axis=1),
      cache=_gather_cache(cache, cache_source))


def _beam_continues(state: BeamState, *, max_len: int, alpha: float) -> jax.Array:
  """False once cur_index == max_len, or once every example has K finished hypotheses and none of
  its live beams can beat the worst of them."""
  # Log-probs only decrease; for alpha >= 0 the penalty divides by at most lp(max_len), for
  # alpha < 0 by at most lp(next length). That bounds any future score of a live beam.
  bound_length = max_len if alpha >= 0 else state.cur_index + 1
  best_live = state.live_logprobs.max(axis=1) / length_penalty_term(bound_length, alpha)
  worst_finished = state.finished_scores.min(axis=1)
  done = state.finished_flags.all(axis=1) & (best_live <= worst_finished)
  return (state.cur_index < max_len) & ~done.all()


def _beam_search_state(tokens_to_logits, init_ids, init_cache, *, beam_size, max_len, eos_id,
                       length_penalty=0.0, block_trigrams=False, pad_id=0, min_len=0,
                       r2gen=False):
  """beam_search's final BeamState (for inspection, e.g. of cur_index)."""
  if beam_size < 1 or max_len < 1:
    raise ValueError(f"beam_size and max_len must be >= 1, got {beam_size}, {max_len}")
  init_ids = jnp.asarray(init_ids, jnp.int32)
  state = _init_state(init_ids, init_cache, beam_size=beam_size, max_len=max_len, pad_id=pad_id,
                      with_pool=True)
  alpha = float(length_penalty)

  def body(s):
    return _beam_step(s, tokens_to_logits=tokens_to_logits, init_ids=init_ids, max_len=max_len,
                      eos_id=eos_id, alpha=alpha, block_trigrams=block_trigrams, min_len=min_len,
                      pad_id=pad_id, r2gen=r2gen)
  return jax.lax.while_loop(lambda s: _beam_continues(s, max_len=max_len, alpha=alpha), body,
                            state)


def beam_search(tokens_to_logits: TokensToLogits, init_ids, init_cache, *, beam_size: int,
                max_len: int, eos_id: int, length_penalty: float = 0.0,
                block_trigrams: bool = False, pad_id: int = 0,
                min_len: int = 0, r2gen: bool = False) -> tuple[jax.Array, jax.Array]:
  """Beam search from bos tokens `init_ids` int32 [batch] and a per-example `init_cache`.

  Returns (ids int32 [batch, beam_size, max_len], scores float32 [batch, beam_size]), best
  first. Each step ranks the top 2 * beam_size extensions of the live beams; those ending in eos
  (and, at position max_len - 1, all of them) join a finished pool that keeps the best beam_size
  by length-penalised score, the best beam_size others stay live. The search stops at max_len, or
  earlier once no live beam of any example can beat that example's worst finished hypothesis.
  With `block_trigrams`, a token that would repeat a trigram of its own sequence gets
  log-probability -inf; eos is forbidden at positions < `min_len` (min_len == max_len: every
  sequence runs to max_len, without eos). Slots for which no hypothesis exists (fewer than
  beam_size possible sequences) hold pad_id and score -inf.

  `r2gen=True` is R2Gen's bookkeeping (its CaptionModel.beam_search with one group): each step
  ranks only the top beam_size extensions; those ending in eos (all of them at max_len - 1)
  finish, and all beam_size stay beams for the next step, a finished one with its score lowered
  by R2GEN_FINISHED_PENALTY (so an eos candidate costs a live slot for one step). R2Gen always
  runs max_len steps; stopping early as above returns the same best hypothesis, since without a
  length penalty no later hypothesis can beat it (the earlier one wins a tie, as in R2Gen's
  stable sort of its finished list). The hypotheses after the best may differ from R2Gen's list.
  """
  state = _beam_search_state(tokens_to_logits, init_ids, init_cache, beam_size=beam_size,
                             max_len=max_len, eos_id=eos_id, length_penalty=length_penalty,
                             block_trigrams=block_trigrams, pad_id=pad_id, min_len=min_len,
                             r2gen=r2gen)
  return state.finished_seqs, state.finished_scores


def _sample_loop(tokens_to_logits, init_ids, init_cache, choose, *, max_len, eos_id, pad_id):
  """One sequence per example: `choose(logprobs [B, V], step) -> tokens [B]` picks each token.
  Done sequences get pad_id and add nothing to their score. Returns (ids [B, L], scores [B])."""
  if max_len < 1:
    raise ValueError(f"max_len must be >= 1, got {max_len}")
  init_ids = jnp.asarray(init_ids, jnp.int32)
  state = _init_state(init_ids, init_cache, beam_size=1, max_len=max_len, pad_id=pad_id,
                      with_pool=False)

  def body(s: BeamState) -> BeamState:
    logprobs, cache = _step_logprobs(tokens_to_logits, s, init_ids)
    logprobs = logprobs[:, 0]
    done = s.finished_flags[:, 0]
    chosen = choose(logprobs, s.cur_index).astype(jnp.int32)
    gained = jnp.take_along_axis(logprobs, chosen[:, None], axis=1)[:, 0]
    tokens = jnp.where(done, pad_id, chosen)
    return s.replace(
        cur_index=s.cur_index + 1,
        live_seqs=_write_token(s.live_seqs, s.cur_index, tokens[:, None]),
        live_logprobs=s.live_logprobs + jnp.where(done, 0.0, gained)[:, None],
        finished_flags=(done | (chosen == eos_id))[:, None],
        cache=cache)

  def cond(s: BeamState) -> jax.Array:
    return (s.cur_index < max_len) & ~s.finished_flags.all()
  state = jax.lax.while_loop(cond, body, state)
  return state.live_seqs[:, 0], state.live_logprobs[:, 0]


def greedy_search(tokens_to_logits: TokensToLogits, init_ids, init_cache, *, max_len: int,
                  eos_id: int, pad_id: int = 0) -> tuple[jax.Array, jax.Array]:
  """Always the most likely next token (the lower id on ties) until eos or max_len.

  Returns (ids int32 [batch, max_len], scores float32 [batch]: summed log-probabilities, no
  length penalty). Note it is not beam_search with beam_size=1: that one also keeps the best
  eos-ending hypothesis among the top-2 candidates of every step, so it can stop on an earlier,
  better-scoring ending than greedy's own.
  """
  return _sample_loop(tokens_to_logits, init_ids, init_cache,
                      lambda logprobs, _: jnp.argmax(logprobs, axis=-1),
                      max_len=max_len, eos_id=eos_id, pad_id=pad_id)


def temperature_sample(tokens_to_logits: TokensToLogits, init_ids, init_cache, rng, *,
                       max_len: int, eos_id: int, temperature: float = 1.0,
                       pad_id: int = 0) -> tuple[jax.Array, jax.Array]:
  """Ancestral sampling from softmax(logits / temperature) until eos or max_len; deterministic
  for a given `rng` (step t draws with fold_in(rng, t)). `temperature` may be a traced scalar.

  `rng` is one key for the whole batch, or a batch of keys, one per row (`[batch]` typed keys or
  `[batch, 2]` raw ones): then each row's draws depend on its own key only, not on the batch it
  sits in (row r, step t draws with fold_in(rng[r], t)).

  Returns (ids int32 [batch, max_len], scores float32 [batch]): scores are the summed log-probs
  of the drawn tokens under the untempered model, comparable with greedy_search's.
  """
  # A traced temperature is allowed (no recompilation per value); only a Python one is checked.
  if isinstance(temperature, (int, float)) and temperature <= 0:
    raise ValueError(f"temperature must be > 0, got {temperature}; use greedy_search for 0")
  typed = jax.dtypes.issubdtype(rng.dtype, jax.dtypes.prng_key)
  per_row = jnp.ndim(rng) == (1 if typed else 2)

  def draw(key, logprobs, step):
    return jax.random.categorical(jax.random.fold_in(key, step), logprobs / temperature, axis=-1)

  def choose(logprobs, step):
    if per_row:
      if rng.shape[0] != logprobs.shape[0]:
        raise ValueError(f"{rng.shape[0]} row keys for a batch of {logprobs.shape[0]}")
      return jax.vmap(draw, in_axes=(0, 0, None))(rng, logprobs, step)
    return draw(rng, logprobs, step)
  return _sample_loop(tokens_to_logits, init_ids, init_cache, choose, max_len=max_len,
                      eos_id=eos_id, pad_id=pad_id)
