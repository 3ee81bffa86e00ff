"""`decoding.beam_search(r2gen=True)` against a plain-Python re-derivation of R2Gen's beam
bookkeeping (its CaptionModel.beam_search with one group, no length penalty), on toy models
whose next-token distribution depends on the last token and the position. Also: the switch
changes results where R2Gen's bookkeeping differs from ours, and the default is unchanged."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cnx2rg_jax import decoding

V, EOS, BOS, PAD = 7, 2, 1, 0
K, L = 3, 8


def _table(seed):
  """log-softmax table [L, V(last token), V(next)] with an eos that gets likelier with t."""
  rng = np.random.default_rng(seed)
  logits = rng.normal(0, 1.5, (L, V, V))
  logits[:, :, EOS] += np.linspace(-2.0, 1.5, L)[:, None]
  logits[:, :, [PAD, BOS]] = -1e9  # never proposed, as a converted R2Gen model's
  return np.asarray(jax.nn.log_softmax(jnp.asarray(logits, jnp.float32), axis=-1))


def _r2gen_reference(table, beam):
  """R2Gen's loop: each step the top `beam` of all (beam, token) extensions; those ending in
  eos (all at the last step) finish with their summed log-prob and stay beams with 1000 taken
  off; max_len steps always; the result is the first of the finished list sorted by score
  (stable, so the earlier of equal scores)."""
  seqs, sums = [[]], np.zeros(1)
  done = []
  for t in range(L):
    cand = []
    for b, (s, total) in enumerate(zip(seqs, sums)):
      last = s[-1] if s else BOS
      for v in range(V):
        cand.append((total + table[t, last, v], b, v))
    cand.sort(key=lambda c: -c[0])  # Python's sort is stable: ties keep (beam, token) order
    top = cand[:beam]
    seqs = [seqs[b] + [v] for _, b, v in top]
    sums = np.array([c[0] for c in top], np.float64)
    for i, (score, _, v) in enumerate(top):
      if v == EOS or t == L - 1:
        done.append((float(score), list(seqs[i])))
        sums[i] -= 1000.0
  done.sort(key=lambda d: -d[0])
  return done[0]


@functools.partial(jax.jit, static_argnums=1)
def _search(table, r2gen):
  def fn(ids, cache):
    t = cache["t"]
    return table[t[0], ids], {"t": t + 1}

  return decoding.beam_search(
      fn, jnp.full((1,), BOS, jnp.int32), {"t": jnp.zeros((1,), jnp.int32)}, beam_size=K,
      max_len=L, eos_id=EOS, pad_id=PAD, r2gen=r2gen)


def _ours(table, r2gen):
  ids, scores = _search(jnp.asarray(table), r2gen)
  seq = [int(x) for x in np.asarray(ids)[0, 0]]
  if EOS in seq:
    seq = seq[:seq.index(EOS) + 1]
  return float(np.asarray(scores)[0, 0]), seq


@pytest.mark.parametrize("seed", range(12))
def test_matches_r2gen_bookkeeping(seed):
  table = _table(seed)
  ref_score, ref_seq = _r2gen_reference(table.astype(np.float64), K)
  score, seq = _ours(table, r2gen=True)
  assert seq == ref_seq
  assert score == pytest.approx(ref_score, abs=1e-4)


def test_the_switch_matters_and_the_default_is_kept():
  """Over these tables, R2Gen's bookkeeping and ours disagree somewhere (an eos candidate
  costs R2Gen a live slot), and r2gen=False is our 2K-candidate search."""
  differ = 0
  for seed in range(40):
    table = _table(seed)
    differ += _ours(table, r2gen=True)[1] != _ours(table, r2gen=False)[1]
  assert differ > 0
