"""Minimum Bayes risk (MBR) choice of a report: `decode.method="mbr"`.

Beam search returns the model's most likely report, which is not the report the model expects to
score best. A finding the model believes at 60 % can be written in several ways (sides, zones,
wording), each less likely than the one normal sentence, so the mode leaves it out and recall
suffers. MBR decoding instead draws S reports from the model (the evidence: an unbiased sample of
what it believes) and returns the candidate with the highest mean utility against them:

  choose  argmax_c  (1/S) sum_s  F1(pairs(c), pairs(sample_s))

where pairs() are the (anatomy, lesion) pairs the clinical labeler reads and F1 is one report's
pair F1 (1 when both have no pair). The candidates are the beam's best report and the S samples.
Ties (equal utility, e.g. two wordings of the same findings) go to the higher model log-probability,
then to the beam's report, then to the earlier sample, so the choice keeps the beam's wording when
the findings agree. Sampling keys come from the example's index (`models.search.sample_reports`),
so the choice does not depend on the batch or the number of processes.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import numpy as np

from cnx2rg_jax.evaluation import clinical


def pair_f1(a: set, b: set) -> float:
  """F1 of one report's pair set `a` against `b`: 2 tp / (2 tp + fp + fn); 1.0 when both are
  empty (two normal reports agree)."""
  tp = len(a & b)
  denom = 2 * tp + len(a - b) + len(b - a)
  return 1.0 if denom == 0 else 2.0 * tp / denom


def expected_utility(candidates: Sequence[set], evidence: Sequence[set]) -> np.ndarray:
  """[len(candidates)] mean pair F1 of each candidate against every evidence pair set."""
  if not evidence:
    raise ValueError("MBR needs at least one sampled report as evidence")
  return np.array([np.mean([pair_f1(c, e) for e in evidence]) for c in candidates], np.float64)


def choose(utilities: np.ndarray, scores: np.ndarray) -> int:
  """Index of the highest utility; ties (to 1e-9) go to the higher score, then the lower index."""
  utilities = np.round(np.asarray(utilities, np.float64), 9)
  scores = np.asarray(scores, np.float64)
  # lexsort sorts by the last key first; negate for descending order, index ascending last.
  order = np.lexsort((np.arange(len(utilities)), -scores, -utilities))
  return int(order[0])


class Chooser:
  """Picks each example's report from its beam report and its samples (token ids), reading
  pairs with `labeler` (any labeler `clinical.pairs_many` accepts)."""

  def __init__(self, tokenizer: Any, labeler: Callable):
    self.tokenizer, self.labeler = tokenizer, labeler

  def __call__(self, beam_ids: np.ndarray, beam_scores: np.ndarray, sample_ids: np.ndarray,
               sample_scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """beam_ids [N, L], beam_scores [N], sample_ids [N, S, L], sample_scores [N, S] ->
    (chosen ids [N, L], choice [N] int: 0 for the beam's report, 1 + s for sample s)."""
    n, s = sample_ids.shape[:2]
    cand_ids = np.concatenate([beam_ids[:, None], sample_ids], axis=1)  # [N, 1 + S, L]
    cand_scores = np.concatenate([beam_scores[:, None], sample_scores], axis=1)
    texts = [[self.tokenizer.decode(row.tolist()) for row in cands] for cands in cand_ids]
    labeler = clinical.MemoLabeler(self.labeler)  # each distinct text of the batch labelled once
    labeler.label_many([t for row in texts for t in row])
    choice = np.zeros((n,), np.int64)
    for i in range(n):
      pairs = [labeler(t) for t in texts[i]]
      choice[i] = choose(expected_utility(pairs, pairs[1:]), cand_scores[i])
    return cand_ids[np.arange(n), choice], choice
