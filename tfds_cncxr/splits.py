"""The 7:1:2 split of reports that come without one, by id (a release, an annotation file)."""

from __future__ import annotations

from typing import Iterable

import numpy as np

SPLIT_FRACTIONS = (0.7, 0.1)  # train, val; test takes the rest


def split_by_id(ids: Iterable[str], seed: int) -> dict[str, str]:
  """id -> "train" | "val" | "test": the distinct ids sorted, permuted with
  np.random.default_rng(seed), and cut 7:1:2 (rounded). Depends only on the set of ids and the
  seed, not on their order."""
  ids = sorted(set(ids))
  n = len(ids)
  order = np.random.default_rng(seed).permutation(n)
  n_train = round(SPLIT_FRACTIONS[0] * n)
  n_val = min(round(SPLIT_FRACTIONS[1] * n), n - n_train)
  names = ["train"] * n_train + ["val"] * n_val + ["test"] * (n - n_train - n_val)
  return {ids[int(i)]: name for i, name in zip(order, names)}
