"""Oversampling of rare keywords (the paper, Sect. 5.1).

"Oversampling for positive samples with a keyword count smaller than 5,000. A maximum sampling
rate of 10 times was set, and a maximum sampling number of 5,000." We read it as: a keyword with
n < min_count positive training reports is brought to min(max_rate * n, max_samples) positive
draws per epoch, by adding extra draws of its positive reports; keywords with n >= min_count, and
keywords with no positives, are left alone. A report positive for several rare keywords gets extra
draws from each of them.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from cnx2rg_jax.text import keywords as kw


@dataclasses.dataclass(frozen=True)
class OversamplingPlan:
  indices: np.ndarray  # int64: the epoch's record indices, originals first, extras after
  extra_per_keyword: dict  # keyword key -> number of extra draws added


def plan_oversampling(keyword_labels: np.ndarray, *, min_count: int, max_rate: float,
                      max_samples: int, seed: int) -> OversamplingPlan:
  """The epoch index list for a split whose labels are `keyword_labels` (int8[N, 48]).

  Extras of a keyword cycle through its positives in a seeded random order, so every positive is
  repeated equally often (to within one).
  """
  labels = np.asarray(keyword_labels)
  if labels.ndim != 2 or labels.shape[1] != kw.NUM_KEYWORDS:
    raise ValueError(f"keyword_labels must be [N, {kw.NUM_KEYWORDS}], got {labels.shape}")
  rng = np.random.default_rng([seed, 0x0E5A])
  positive = labels == kw.POSITIVE
  extras, extra_per_keyword = [], {}
  for k, key in enumerate(kw.KEYWORD_KEYS):
    pos = np.flatnonzero(positive[:, k])
    n = len(pos)
    if n == 0 or n >= min_count:
      continue
    target = int(min(max_rate * n, max(max_samples, n)))
    extra = target - n
    if extra <= 0:
      continue
    order = rng.permutation(pos)
    extras.append(np.resize(order, extra))  # cycles through `order`
    extra_per_keyword[key] = extra
  indices = np.concatenate([np.arange(len(labels))] + extras).astype(np.int64)
  return OversamplingPlan(indices, extra_per_keyword)
