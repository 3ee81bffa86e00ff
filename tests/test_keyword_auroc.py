"""The keyword head's AUROC: scikit-learn's, checked against the brute-force pair count."""

import numpy as np
import pytest

from cnx2rg_jax.evaluation import keyword_auroc
from cnx2rg_jax.text import keywords as kw


def _pairwise_auroc(y: np.ndarray, s: np.ndarray) -> float:
  """P(score of a random positive > score of a random negative), ties counting one half."""
  pos, neg = s[y], s[~y]
  wins = (pos[:, None] > neg[None, :]).sum() + 0.5 * (pos[:, None] == neg[None, :]).sum()
  return wins / (len(pos) * len(neg))


def test_matches_the_pair_count_and_skips_uncertain_and_one_sided_keywords():
  rng = np.random.default_rng(0)
  n = 60
  codes = np.array([kw.POSITIVE, kw.NEGATED, kw.UNCERTAIN, kw.NOT_MENTIONED], np.int8)
  labels = rng.choice(codes, size=(n, kw.NUM_KEYWORDS), p=[0.3, 0.2, 0.1, 0.4])
  probs = np.round(rng.random((n, kw.NUM_KEYWORDS)), 1)  # rounded: many ties
  labels[:, 0] = kw.NOT_MENTIONED  # no positives: no AUROC
  labels[:, 1] = kw.POSITIVE  # no negatives: no AUROC
  per = keyword_auroc.keyword_auroc(labels, probs)
  assert list(per) == list(kw.KEYWORD_KEYS)
  assert per[kw.KEYWORD_KEYS[0]]["auroc"] is None and per[kw.KEYWORD_KEYS[1]]["auroc"] is None
  for k, key in enumerate(kw.KEYWORD_KEYS[2:], start=2):
    keep = labels[:, k] != kw.UNCERTAIN
    y = labels[keep, k] == kw.POSITIVE
    assert per[key]["positives"] == y.sum() and per[key]["negatives"] == (~y).sum()
    assert per[key]["auroc"] == pytest.approx(_pairwise_auroc(y, probs[keep, k]), abs=1e-12)
  values = [v["auroc"] for v in per.values() if v["auroc"] is not None]
  assert keyword_auroc.macro_auroc(per) == pytest.approx(np.mean(values))


def test_a_perfect_and_a_reversed_ranking():
  labels = np.full((4, kw.NUM_KEYWORDS), kw.NOT_MENTIONED, np.int8)
  labels[:2] = kw.POSITIVE
  probs = np.tile(np.array([[0.9], [0.8], [0.2], [0.1]]), (1, kw.NUM_KEYWORDS))
  assert keyword_auroc.macro_auroc(keyword_auroc.keyword_auroc(labels, probs)) == 1.0
  assert keyword_auroc.macro_auroc(keyword_auroc.keyword_auroc(labels, 1 - probs)) == 0.0


def test_shape_errors_name_both_shapes():
  with pytest.raises(ValueError, match=r"\(3, 48\).*\(2, 48\)"):
    keyword_auroc.keyword_auroc(np.zeros((3, 48), np.int8), np.zeros((2, 48)))
