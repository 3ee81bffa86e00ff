"""The demo table's baselines against brute-force references."""

import collections

import numpy as np
import pytest

from cnx2rg_jax.evaluation import baselines


def test_most_frequent_matches_a_count_and_breaks_ties_by_first_seen():
  rng = np.random.default_rng(0)
  reports = [f"报告{int(i)}" for i in rng.integers(0, 7, size=300)]
  counts = collections.Counter(reports)
  top = max(counts.values())
  first_top = [r for r in reports if counts[r] == top][0]
  assert baselines.most_frequent_report(reports) == first_top
  assert baselines.most_frequent_report(["乙", "甲", "甲", "乙"]) == "乙"
  with pytest.raises(ValueError, match="no training reports"):
    baselines.most_frequent_report([])


def _brute_force_nearest(train, query):
  out = []
  for q in query:
    best, best_sim = None, -np.inf
    for i, t in enumerate(train):
      nq, nt = np.linalg.norm(q), np.linalg.norm(t)
      sim = 0.0 if nq == 0 or nt == 0 else float(q @ t) / (nq * nt)
      if sim > best_sim + 1e-12:  # strictly better: ties keep the lower index
        best, best_sim = i, sim
    out.append(best)
  return np.asarray(out)


@pytest.mark.parametrize("chunk", [1, 7, 1024])
def test_nearest_neighbours_match_brute_force(chunk):
  rng = np.random.default_rng(1)
  train = rng.normal(size=(60, 9))
  train[5] = 0.0  # a zero row has similarity 0 with everything
  query = rng.normal(size=(25, 9))
  query[3] = 3.0 * train[17]  # a scaled copy: cosine 1 with row 17
  got = baselines.nearest_neighbours(train, query, chunk=chunk)
  np.testing.assert_array_equal(got, _brute_force_nearest(train, query))
  assert got[3] == 17


def test_nearest_neighbour_ties_go_to_the_lower_index():
  train = np.array([[1.0, 0.0], [2.0, 0.0], [0.0, 1.0]])
  assert baselines.nearest_neighbours(train, np.array([[5.0, 0.0]]))[0] == 0


def test_nearest_neighbour_reports_and_errors():
  train = np.eye(3)
  reports = ["甲", "乙", "丙"]
  assert baselines.nearest_neighbour_reports(train, reports, np.array([[0, 0.2, 1.0]])) == ["丙"]
  with pytest.raises(ValueError, match="2 training reports"):
    baselines.nearest_neighbour_reports(train, reports[:2], np.eye(3))
  with pytest.raises(ValueError, match="dims"):
    baselines.nearest_neighbours(train, np.ones((1, 4)))
