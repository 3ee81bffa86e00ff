"""Counting labelled pairs against a reference, and micro precision, recall and F1 of the counts.

The clinical metric (`evaluation.clinical`) counts (anatomy, lesion) pairs with these, and the
CN-RadGraph graph metric (`radgraph.metrics`) scores entities and relations with the same `prf`.

Conventions for empty denominators (`prf`):
* With no true positive, no false positive and no false negative at all, precision, recall and
  F1 are None: there is nothing to score, and neither 0 nor 1 would be honest.
* Otherwise a 0/0 ratio is 0: no predicted items gives precision 0, no reference items gives
  recall 0, and F1 is 0 when precision + recall is 0.
"""

from __future__ import annotations

from typing import Iterable

Pair = tuple[str, str]


def pair_set(pairs: Iterable) -> set[Pair]:
  """The pairs as a set of (str, str) tuples; each item must unpack into two values."""
  out = set()
  for p in pairs:
    a, l = p
    out.add((str(a), str(l)))
  return out


def clinical_counts(pred_pairs: Iterable, ref_pairs: Iterable) -> tuple[int, int, int]:
  """(tp, fp, fn) of one report's predicted pairs against its reference pairs.

  Pairs are compared as sets, so a pair stated twice counts once.
  """
  pred, ref = pair_set(pred_pairs), pair_set(ref_pairs)
  return len(pred & ref), len(pred - ref), len(ref - pred)


def prf(tp: int, fp: int, fn: int) -> dict:
  """Precision, recall and F1 of summed counts, with the module's 0/0 conventions."""
  if tp + fp + fn == 0:
    return {"precision": None, "recall": None, "f1": None}
  p = tp / (tp + fp) if tp + fp else 0.0
  r = tp / (tp + fn) if tp + fn else 0.0
  f = 2 * p * r / (p + r) if p + r else 0.0
  return {"precision": p, "recall": r, "f1": f}
