"""The two reference points of the demo table: reports that need no generation at all.

* most frequent: every test image gets the training split's commonest report (ties: the one
  seen first). It scores what "always write the usual report" earns.
* nearest neighbour: every test image gets the report of the training image whose features are
  closest by cosine similarity (ties: the lower training index). It scores what retrieval earns
  with the same image features the generator sees.
"""

from __future__ import annotations

import collections
from typing import Sequence

import numpy as np


def most_frequent_report(train_reports: Sequence[str]) -> str:
  """The commonest report of `train_reports`; among equally common ones, the first seen."""
  if not train_reports:
    raise ValueError("no training reports to pick the most frequent one from")
  counts = collections.Counter(train_reports)
  best = max(counts.values())
  return next(r for r in train_reports if counts[r] == best)


def _unit_rows(x: np.ndarray) -> np.ndarray:
  x = np.asarray(x, np.float64)
  norms = np.linalg.norm(x, axis=1, keepdims=True)
  return x / np.where(norms > 0, norms, 1.0)


def nearest_neighbours(train_features: np.ndarray, query_features: np.ndarray,
                       chunk: int = 1024) -> np.ndarray:
  """For each query row, the index of the training row with the highest cosine similarity.

  A zero vector has similarity 0 with everything. Ties go to the lower training index.
  """
  train_features, query_features = np.asarray(train_features), np.asarray(query_features)
  if train_features.ndim != 2 or query_features.ndim != 2:
    raise ValueError("features must be 2-D [rows, dims]")
  if train_features.shape[1] != query_features.shape[1]:
    raise ValueError(f"training features have {train_features.shape[1]} dims, queries "
                     f"{query_features.shape[1]}")
  if len(train_features) == 0:
    raise ValueError("no training features to retrieve from")
  train = _unit_rows(train_features)
  out = []
  for start in range(0, len(query_features), chunk):
    sims = _unit_rows(query_features[start:start + chunk]) @ train.T
    out.append(np.argmax(sims, axis=1))  # argmax returns the first maximum: the lower index
  return np.concatenate(out) if out else np.zeros((0,), np.int64)


def nearest_neighbour_reports(train_features: np.ndarray, train_reports: Sequence[str],
                              query_features: np.ndarray) -> list[str]:
  """The report of each query's nearest training image (see `nearest_neighbours`)."""
  if len(train_features) != len(train_reports):
    raise ValueError(f"{len(train_features)} training feature rows but {len(train_reports)} "
                     "training reports")
  return [train_reports[i] for i in nearest_neighbours(train_features, query_features)]
