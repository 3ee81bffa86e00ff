"""Minimum Bayes risk (MBR) choice of a report: `decode.method="mbr"`.

Beam search returns the model's most likely report, which is not the report the model expects to
score best. A finding the model believes at 60 % can be written in several ways (sides, zones,
wording), each less likely than the one normal sentence, so the mode leaves it out and recall
suffers. MBR decoding instead draws S reports from the model (the evidence: an unbiased sample of
what it believes) and returns the candidate with the highest mean utility against them:

  choose  argmax_c  (1/S) sum_s  F1(pairs(c), pairs(sample_s))

where pairs() are the (anatomy, lesion) pairs the clinical labeler reads and F1 is one report's
pair F1 (1 when both have no pair). The candidates are the beam's best report and the S samples.

With `decode.mbr_keyword_weight` lambda > 0 the model's keyword head (the paper's classification
module, trained on the same images) weighs in too: each candidate gains lambda times the head's
log-likelihood of the candidate's keyword labels,

  lambda * sum_k w_k [y_k log p_k + (1 - y_k) log(1 - p_k)]

with y_k = 1 when the rule labeler reads keyword k as positive in the candidate, w_k = 0 where
it reads it as uncertain (as in the keyword loss), p_k the head's probability for the image.
The head separates borderline findings better than the decoder writes them; the samples supply
reports that state those findings, and the head picks among them.
Ties (equal utility, e.g. two wordings of the same findings) go to the higher model log-probability,
then to the beam's report, then to the earlier sample, so the choice keeps the beam's wording when
the findings agree. Sampling keys come from a hash of the image's pixels
(`inference.generate.image_keys`), so the choice does not depend on the batch, the image's position
or the number of processes.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import numpy as np

from cnx2rg_jax.evaluation import clinical
from cnx2rg_jax.text.labeler import label_report
from cnx2rg_jax.text import keywords as kw

PROB_EPS = 1e-6  # head probabilities are clipped to [eps, 1 - eps] before the log


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


def keyword_targets(keywords: dict) -> tuple[np.ndarray, np.ndarray]:
  """(targets, weights), float64 [48] in KEYWORD_KEYS order, from a report's rule-labeler
  keywords (`label_report(report).keywords`): 1 where a keyword is positive; weight 0 where it
  is uncertain (the keyword loss's convention), else 1."""
  codes = np.array([keywords.get(k, kw.NOT_MENTIONED) for k in kw.KEYWORD_KEYS])
  return (codes == kw.POSITIVE).astype(np.float64), (codes != kw.UNCERTAIN).astype(np.float64)


def head_log_likelihood(targets: np.ndarray, weights: np.ndarray, probs: np.ndarray) -> float:
  """sum_k w_k [y_k log p_k + (1 - y_k) log(1 - p_k)], p clipped to [PROB_EPS, 1 - PROB_EPS]."""
  p = np.clip(np.asarray(probs, np.float64), PROB_EPS, 1 - PROB_EPS)
  return float(np.sum(weights * (targets * np.log(p) + (1 - targets) * np.log(1 - p))))


def choose(utilities: np.ndarray, scores: np.ndarray) -> int:
  """Index of the highest utility; ties (to 1e-9) go to the higher score, then the lower index."""
  utilities = np.round(np.asarray(utilities, np.float64), 9)
  scores = np.asarray(scores, np.float64)
  # lexsort sorts by the last key first; negate for descending order, index ascending last.
  order = np.lexsort((np.arange(len(utilities)), -scores, -utilities))
  return int(order[0])


class Chooser:
  """Picks each example's report from its beam report and its samples (token ids), reading
  pairs with `labeler` (any labeler `clinical.pairs_many` accepts); `keyword_weight` is lambda
  (0: plain MBR)."""

  def __init__(self, tokenizer: Any, labeler: Callable, keyword_weight: float = 0.0):
    if keyword_weight < 0:
      raise ValueError(f"keyword_weight must be >= 0, got {keyword_weight}")
    self.tokenizer, self.labeler, self.keyword_weight = tokenizer, labeler, keyword_weight

  def __call__(self, beam_ids: np.ndarray, beam_scores: np.ndarray, sample_ids: np.ndarray,
               sample_scores: np.ndarray, keyword_probs: np.ndarray | None = None
               ) -> tuple[np.ndarray, np.ndarray]:
    """beam_ids [N, L], beam_scores [N], sample_ids [N, S, L], sample_scores [N, S] and, when
    keyword_weight > 0, the head's keyword_probs [N, 48] -> (chosen ids [N, L], choice [N] int:
    0 for the beam's report, 1 + s for sample s)."""
    if self.keyword_weight > 0 and keyword_probs is None:
      raise ValueError("a keyword_weight > 0 needs the keyword head's probabilities")
    n = sample_ids.shape[0]
    cand_ids = np.concatenate([beam_ids[:, None], sample_ids], axis=1)  # [N, 1 + S, L]
    cand_scores = np.concatenate([beam_scores[:, None], sample_scores], axis=1)
    texts = [[self.tokenizer.decode(row.tolist()) for row in cands] for cands in cand_ids]
    distinct = list(dict.fromkeys(t for row in texts for t in row))
    # Each distinct text of the batch is read once: by the rule labeler when the head needs its
    # keywords or it is the utility's labeler too, by the utility's labeler otherwise.
    rule_is_utility = self.labeler is label_report
    rule = ({t: label_report(t) for t in distinct}
            if self.keyword_weight > 0 or rule_is_utility else {})
    labeler = clinical.MemoLabeler(rule.__getitem__ if rule_is_utility else self.labeler)
    labeler.label_many(distinct)
    targets = {t: keyword_targets(labels.keywords) for t, labels in rule.items()}
    choice = np.zeros((n,), np.int64)
    for i in range(n):
      pairs = [labeler(t) for t in texts[i]]
      utility = expected_utility(pairs, pairs[1:])
      if self.keyword_weight > 0:
        utility = utility + self.keyword_weight * np.array(
            [head_log_likelihood(*targets[t], keyword_probs[i]) for t in texts[i]])
      choice[i] = choose(utility, cand_scores[i])
    return cand_ids[np.arange(n), choice], choice
