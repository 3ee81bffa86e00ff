"""cnx2rg_jax.decoding against brute-force enumeration on hand-built Markov chains.

The chains: token ids 0..V-1, a [V, V] table of next-token logits indexed by the last token; the
bos token's column is -inf, so it is never generated. Brute force enumerates every finished
sequence (ending at its first eos, or truncated at max_len) with its float64 score.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cnx2rg_jax import decoding

V, BOS, EOS, PAD = 5, 4, 3, -1


def log_softmax(x):
  x = np.asarray(x, np.float64)
  m = x.max(-1, keepdims=True)
  return x - m - np.log(np.exp(x - m).sum(-1, keepdims=True))


def random_table(seed, vocab=V, bos=BOS, scale=2.0):
  table = np.random.default_rng(seed).normal(size=(vocab, vocab)) * scale
  table[:, bos] = -np.inf
  return table.astype(np.float32)


def markov(table):
  """tokens_to_logits of a Markov chain; the cache is an untouched dummy leaf."""
  table = jnp.asarray(table)
  return lambda ids, cache: (table[ids], cache)


def markov_logprobs(table):
  lp = log_softmax(table)
  return lambda prefix: lp[prefix[-1]]


def penalty(length, alpha):
  return ((5.0 + length) / 6.0) ** alpha


def brute_force(next_logprobs, bos, max_len, *, alpha=0.0, min_len=0, keep=lambda seq: True):
  """All finished sequences with finite score, best first (ties: lexicographically smaller)."""
  out = []

  def extend(prefix, logprob):
    t = len(prefix)
    for tok, lp in enumerate(next_logprobs((bos,) + prefix)):
      if lp == -np.inf or (tok == EOS and t < min_len):
        continue
      seq = prefix + (tok,)
      if not keep(seq):
        continue
      if tok == EOS or t + 1 == max_len:
        out.append((seq, (logprob + lp) / penalty(t + 1, alpha)))
      else:
        extend(seq, logprob + lp)
  extend((), 0.0)
  out.sort(key=lambda item: (-item[1], item[0]))
  return out


def padded(seq, max_len, pad=PAD):
  return list(seq) + [pad] * (max_len - len(seq))


def assert_matches(ids, scores, expected, max_len, pad=PAD):
  """ids [K, L] / scores [K] are a best-first top-K of the brute-force results: every row is a
  valid sequence with its own brute-force score, and the scores are the K best ones. (A Markov
  chain has exact ties, e.g. 1 1 2 1 and 1 2 1 1 share their transitions, so the order within a
  tie is not compared here; test_ties_go_to_lower_token_id pins it down.)"""
  ids, scores = np.asarray(ids), np.asarray(scores)
  k = ids.shape[0]
  assert len(expected) >= k
  score_of = {tuple(padded(seq, max_len, pad)): score for seq, score in expected}
  for row, score in zip(ids.tolist(), scores):
    assert tuple(row) in score_of, row
    np.testing.assert_allclose(score, score_of[tuple(row)], atol=1e-5, rtol=0)
  assert len({tuple(row) for row in ids.tolist()}) == k
  np.testing.assert_allclose(scores, [s for _, s in expected[:k]], atol=1e-5, rtol=0)


# The searches are jitted with the table as an argument, so that tests sharing shapes and options
# share one compilation (eager calls would recompile the while_loop for every closure).
@functools.partial(jax.jit, static_argnames=("beam_size", "max_len", "length_penalty",
                                             "block_trigrams", "pad_id", "min_len"))
def _jit_beam(table, bos_ids, **kw):
  return decoding.beam_search(markov(table), bos_ids, jnp.zeros(bos_ids.shape, jnp.int32),
                              eos_id=EOS, **kw)


@functools.partial(jax.jit, static_argnames=("max_len",))
def _jit_greedy(table, bos_ids, *, max_len):
  return decoding.greedy_search(markov(table), bos_ids, jnp.zeros(bos_ids.shape), max_len=max_len,
                                eos_id=EOS, pad_id=PAD)


@functools.partial(jax.jit, static_argnames=("max_len",))
def _jit_sample(table, bos_ids, rng, temperature, *, max_len):
  return decoding.temperature_sample(markov(table), bos_ids, jnp.zeros(bos_ids.shape), rng,
                                     max_len=max_len, eos_id=EOS, temperature=temperature,
                                     pad_id=PAD)


def run_beam(table, bos_ids, **kw):
  kw.setdefault("pad_id", PAD)
  return _jit_beam(jnp.asarray(table), jnp.asarray(bos_ids, jnp.int32), **kw)


def run_greedy(table, bos_ids, max_len):
  return _jit_greedy(jnp.asarray(table), jnp.asarray(bos_ids, jnp.int32), max_len=max_len)


# Four generatable tokens, three of them non-eos: with max_len 4, at most 3**3 = 27 live prefixes,
# so beam_size 27 keeps every prefix and beam search must be exact.
EXACT_BEAM = 27


@pytest.mark.parametrize("alpha", [0.0, 1.0])
@pytest.mark.parametrize("seed", [0, 1])
def test_beam_equals_brute_force(seed, alpha):
  table, max_len = random_table(seed), 4
  bos_ids = [BOS, 1]  # two examples, different starting tokens
  ids, scores = run_beam(table, bos_ids, beam_size=EXACT_BEAM, max_len=max_len,
                         length_penalty=alpha)
  assert ids.shape == (2, EXACT_BEAM, max_len) and ids.dtype == jnp.int32
  assert scores.shape == (2, EXACT_BEAM) and scores.dtype == jnp.float32
  for b, bos in enumerate(bos_ids):
    expected = brute_force(markov_logprobs(table), bos, max_len, alpha=alpha)
    assert_matches(ids[b], scores[b], expected, max_len)


def test_beam_search_handles_bf16_logits():
  table, max_len = random_table(2), 4
  ids, scores = run_beam(jnp.asarray(table, jnp.bfloat16), [BOS], beam_size=EXACT_BEAM,
                         max_len=max_len)
  assert scores.dtype == jnp.float32
  rounded = np.asarray(jnp.asarray(table, jnp.bfloat16).astype(jnp.float32))
  expected = brute_force(markov_logprobs(rounded), BOS, max_len)
  assert_matches(ids[0], scores[0], expected, max_len)


def test_beam_beats_greedy():
  # From bos: token 0 (p .55) or 1 (p .45). After 0 everything is flat, after 1 eos is likely.
  p = np.full((V, V), 1e-6)
  p[BOS, 0], p[BOS, 1] = 0.55, 0.45
  p[0, [0, 1, 2, EOS]] = 0.25
  p[1, EOS], p[1, 0] = 0.9, 0.1
  p[2, EOS] = p[EOS, EOS] = 1.0
  table = np.log(p / p.sum(1, keepdims=True)).astype(np.float32)
  table[:, BOS] = -np.inf
  max_len = 3
  greedy_ids, greedy_score = run_greedy(table, [BOS], max_len)
  assert greedy_ids[0].tolist()[0] == 0  # greedy commits to the likelier first token ...
  ids, scores = run_beam(table, [BOS], beam_size=2, max_len=max_len)
  assert ids[0, 0].tolist() == [1, EOS, PAD]  # ... beam search finds the better sequence
  assert scores[0, 0] > greedy_score[0] + 0.5
  expected = brute_force(markov_logprobs(table), BOS, max_len)
  assert_matches(ids[0, :1], scores[0, :1], expected, max_len)


def test_ties_go_to_lower_token_id():
  # Tokens 1 and 2 are equally likely after bos and behave identically afterwards, so every
  # sequence starting with 1 ties exactly with its twin starting with 2.
  table = random_table(3)
  table[BOS, 1] = table[BOS, 2] = 5.0
  table[2] = table[1]
  max_len = 3
  ids, scores = run_beam(table, [BOS], beam_size=4, max_len=max_len)
  ids, scores = np.asarray(ids[0]), np.asarray(scores[0])
  assert ids[0, 0] == 1 and ids[1, 0] == 2
  assert ids[0, 1:].tolist() == ids[1, 1:].tolist()
  assert scores[0] == scores[1]  # bit-identical, and the lower token id is ranked first
  expected = brute_force(markov_logprobs(table), BOS, max_len)
  assert_matches(ids, scores, expected, max_len)


def test_early_finish_is_padded():
  # eos is very likely from every state: most hypotheses finish after one or two tokens.
  table = random_table(4, scale=0.5)
  table[:, EOS] += 4.0
  max_len = 4
  ids, scores = run_beam(table, [BOS, 0], beam_size=EXACT_BEAM, max_len=max_len)
  for b, bos in enumerate([BOS, 0]):
    expected = brute_force(markov_logprobs(table), bos, max_len)
    assert_matches(ids[b], scores[b], expected, max_len)
    assert ids[b, 0].tolist() == [EOS, PAD, PAD, PAD]
  ids, _ = run_beam(table, [BOS], beam_size=3, max_len=max_len, pad_id=0)  # the default pad
  assert ids[0, 0].tolist() == [EOS, 0, 0, 0]


def cache_chain(seed):
  """Logits depend on the running token sum, kept in the cache as an int and a float leaf, next to
  a 0-d step counter. Returns (tokens_to_logits, brute-force next_logprobs maker)."""
  rng = np.random.default_rng(seed)
  table = (rng.normal(size=(V, 3, V)) * 2).astype(np.float32)
  table[..., BOS] = -np.inf

  def tokens_to_logits(ids, cache):
    total = cache["sum"] + ids
    fsum = cache["fsum"] + ids.astype(jnp.float32)[:, None]
    logits = jnp.asarray(table)[ids, total % 3] + 0.5 * jnp.sin(fsum[:, :1])
    return logits, {"sum": total, "fsum": fsum, "step": cache["step"] + 1}

  def next_logprobs(start):
    def fn(prefix):
      total = start + sum(prefix)
      return log_softmax(table[prefix[-1], total % 3] + 0.5 * np.sin(float(total)))
    return fn
  return tokens_to_logits, next_logprobs


@pytest.mark.parametrize("alpha", [0.0, 0.8])
def test_cache_is_gathered_with_its_beam(alpha):
  tokens_to_logits, next_logprobs = cache_chain(5)
  starts = np.array([0, 5], np.int32)
  cache = {"sum": jnp.asarray(starts), "fsum": jnp.asarray(starts, jnp.float32)[:, None] * jnp.ones(2),
           "step": jnp.zeros((), jnp.int32)}
  max_len = 4
  search = jax.jit(functools.partial(decoding.beam_search, tokens_to_logits, beam_size=EXACT_BEAM,
                                     max_len=max_len, eos_id=EOS, length_penalty=alpha,
                                     pad_id=PAD))
  ids, scores = search(jnp.array([BOS, BOS]), cache)
  for b in range(2):
    expected = brute_force(next_logprobs(int(starts[b])), BOS, max_len, alpha=alpha)
    assert_matches(ids[b], scores[b], expected, max_len)


@pytest.mark.parametrize("seed", range(6))
def test_beam_size_one_is_greedy(seed):
  # Without eos both are the argmax path, truncated at max_len.
  table, max_len = random_table(10 + seed), 6
  no_eos = table.copy()
  no_eos[:, EOS] = -np.inf
  bos = jnp.array([BOS, 0, 1, 2])
  g_ids, g_scores = run_greedy(no_eos, bos, max_len)
  b_ids, b_scores = run_beam(no_eos, bos, beam_size=1, max_len=max_len)
  assert b_ids[:, 0].tolist() == g_ids.tolist()
  np.testing.assert_allclose(b_scores[:, 0], g_scores, atol=1e-5)
  # With eos, beam_size=1 also keeps the best eos ending seen among each step's top 2, so it
  # returns greedy's sequence or a better-scoring eos ending that branches off greedy's path.
  g_ids, g_scores = run_greedy(table, bos, max_len)
  b_ids, b_scores = run_beam(table, bos, beam_size=1, max_len=max_len)
  for b in range(4):
    beam_seq, greedy_seq = b_ids[b, 0].tolist(), g_ids[b].tolist()
    if beam_seq == greedy_seq:
      np.testing.assert_allclose(b_scores[b, 0], g_scores[b], atol=1e-5)
    else:
      n = beam_seq.index(EOS)
      assert beam_seq[:n] == greedy_seq[:n] and greedy_seq[n] != EOS
      assert b_scores[b, 0] > g_scores[b]


def has_repeated_trigram(seq):
  grams = [tuple(seq[i:i + 3]) for i in range(len(seq) - 2)]
  return len(grams) != len(set(grams))


def test_block_trigrams():
  # 0 -> 1 -> 0 -> 1 ... is by far the likeliest path, so the best sequence repeats (0, 1, 0).
  # Token 2 is never generated: with two non-eos tokens and max_len 5, 2**4 live prefixes at most.
  p = np.full((V, V), 0.02)
  p[BOS, 0] = p[0, 1] = p[1, 0] = 1.0
  table = np.log(p).astype(np.float32)
  table[:, [2, BOS]] = -np.inf
  max_len, beam = 5, 16
  ids, _ = run_beam(table, [BOS], beam_size=beam, max_len=max_len)
  assert ids[0, 0].tolist() == [0, 1, 0, 1, 0]
  ids, scores = run_beam(table, [BOS], beam_size=beam, max_len=max_len, block_trigrams=True)
  found = [[tok for tok in row if tok != PAD] for row in np.asarray(ids[0]).tolist()]
  finite = np.isfinite(np.asarray(scores[0]))
  assert not any(has_repeated_trigram(seq) for seq, ok in zip(found, finite) if ok)
  assert [0, 1, 0, 1, 0] not in found and [0, 1, 0, 1, EOS] in found
  expected = brute_force(markov_logprobs(table), BOS, max_len,
                         keep=lambda seq: not has_repeated_trigram(seq))
  n = min(beam, len(expected))
  assert_matches(ids[0, :n], scores[0, :n], expected, max_len)
  assert not finite[n:].any()


def test_min_len():
  table, max_len = random_table(20), 5
  table[:, EOS] += 3.0  # eos would otherwise end most sequences at once
  ids, scores = run_beam(table, [BOS, 2], beam_size=4, max_len=max_len, min_len=max_len)
  ids = np.asarray(ids)
  assert not (ids == EOS).any() and not (ids == PAD).any()  # all run to max_len, no eos
  assert np.isfinite(np.asarray(scores)).all()
  ids, scores = run_beam(table, [BOS], beam_size=EXACT_BEAM, max_len=4, min_len=2)
  expected = brute_force(markov_logprobs(table), BOS, 4, min_len=2)
  assert_matches(ids[0], scores[0], expected, 4)
  assert all(row.index(EOS) >= 2 for row in np.asarray(ids[0]).tolist() if EOS in row)


def test_early_stop_stops_early():
  calls = []
  table = random_table(30, scale=0.5)
  table[:, EOS] += 6.0
  inner = markov(table)

  def tokens_to_logits(ids, cache):
    jax.debug.callback(lambda: calls.append(1))
    logits, _ = inner(ids, cache)
    return logits, cache + 1

  max_len = 10
  state = decoding._beam_search_state(  # pylint: disable=protected-access
      tokens_to_logits, jnp.array([BOS, 0]), jnp.zeros(2, jnp.int32), beam_size=2,
      max_len=max_len, eos_id=EOS, pad_id=PAD)
  jax.effects_barrier()
  steps = int(state.cur_index)
  assert steps < 4 and len(calls) == steps
  assert np.asarray(state.cache).tolist() == [steps] * 4  # per-beam step counters
  assert bool(state.finished_flags.all())
  assert state.finished_seqs[0, 0].tolist() == [EOS] + [PAD] * (max_len - 1)


def test_temperature_sampling():
  table, max_len = random_table(40), 8
  bos = jnp.array([BOS, 0, 1, 2, BOS, 0, 1, 2])
  g_ids, g_scores = run_greedy(table, bos, max_len)
  sample = functools.partial(_jit_sample, jnp.asarray(table), bos, max_len=max_len)
  rng = jax.random.PRNGKey(0)
  cold = sample(rng, 1e-4)
  assert cold[0].tolist() == g_ids.tolist()
  np.testing.assert_allclose(cold[1], g_scores, atol=1e-5)
  a, b = sample(rng, 1.0), sample(rng, 1.0)
  assert a[0].tolist() == b[0].tolist() and a[1].tolist() == b[1].tolist()
  c = sample(jax.random.PRNGKey(1), 1.0)
  assert a[0].tolist() != c[0].tolist()
  # Scores are the untempered log-probs of the drawn tokens; tokens after eos are pad.
  lp = log_softmax(table)
  for row, bos_tok, score in zip(np.asarray(a[0]).tolist(), bos.tolist(), np.asarray(a[1])):
    n = row.index(EOS) + 1 if EOS in row else max_len
    assert all(tok == PAD for tok in row[n:])
    path = [bos_tok] + row[:n]
    np.testing.assert_allclose(score, sum(lp[x, y] for x, y in zip(path, path[1:])), atol=1e-5)


def test_temperature_sampling_with_a_key_per_row():
  """Row keys: a row's draws depend on its key only (not its neighbours or position), match the
  same row sampled alone, and follow softmax(logits / T) (checked on 6,000 first tokens)."""
  table, max_len = random_table(41), 6
  bos = jnp.array([BOS, 0, 1, 2, BOS, 1])
  keys = jax.random.split(jax.random.PRNGKey(3), 6)
  ids, scores = _jit_sample(jnp.asarray(table), bos, keys, 1.0, max_len=max_len)
  perm = np.array([4, 2, 0, 5, 1, 3])
  p_ids, p_scores = _jit_sample(jnp.asarray(table), bos[perm], keys[perm], 1.0, max_len=max_len)
  np.testing.assert_array_equal(np.asarray(p_ids), np.asarray(ids)[perm])
  np.testing.assert_allclose(np.asarray(p_scores), np.asarray(scores)[perm], rtol=1e-6)
  for r in range(6):
    alone, _ = _jit_sample(jnp.asarray(table), bos[r:r + 1], keys[r:r + 1], 1.0, max_len=max_len)
    np.testing.assert_array_equal(np.asarray(alone)[0], np.asarray(ids)[r])
  assert len({tuple(row) for row in np.asarray(ids).tolist()}) > 1
  with pytest.raises(ValueError, match="row keys for a batch"):
    _jit_sample(jnp.asarray(table), bos, keys[:5], 1.0, max_len=max_len)
  # The first token's frequencies over many rows (each its own key) against the distribution.
  n, temperature = 6000, 0.7
  many = _jit_sample(jnp.asarray(table), jnp.full((n,), BOS, jnp.int32),
                     jax.random.split(jax.random.PRNGKey(4), n), temperature, max_len=1)[0]
  counts = np.bincount(np.asarray(many)[:, 0], minlength=V) / n
  logits = table[BOS] / temperature
  expected = np.exp(logits - logits.max())
  expected /= expected.sum()
  np.testing.assert_allclose(counts, expected, atol=4 * np.sqrt(0.25 / n))


def test_beam_search_compiles_once():
  traces = []
  table = jnp.asarray(random_table(50))

  def tokens_to_logits(ids, cache):
    traces.append(1)  # runs only while tracing
    return table[ids], cache

  search = jax.jit(functools.partial(decoding.beam_search, tokens_to_logits, beam_size=3,
                                     max_len=6, eos_id=EOS, length_penalty=0.6,
                                     block_trigrams=True, min_len=1))
  cache = {"x": jnp.zeros((2, 3)), "n": jnp.zeros(2, jnp.int32)}
  first = search(jnp.array([BOS, 0]), cache)
  second = search(jnp.array([1, 2]), cache)
  assert len(traces) == 1
  assert first[0].shape == second[0].shape == (2, 3, 6)
