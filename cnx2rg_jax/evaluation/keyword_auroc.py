"""How well the keyword head (the paper's classification auxiliary task) ranks each keyword.

For every one of the 48 keywords, the head's sigmoid over a split is scored against the split's
keyword labels as a binary task: POSITIVE against NEGATED or NOT_MENTIONED. Reports labelled
UNCERTAIN for a keyword are left out of that keyword's score, as CheXpert's evaluation does. The
area under the ROC curve comes from scikit-learn; a keyword with no positive or no negative report
in the split has none (None), since no ranking can be judged there.
"""

from __future__ import annotations

from typing import Optional

import numpy as np
from sklearn.metrics import roc_auc_score

from cnx2rg_jax.text import keywords as kw


def keyword_auroc(labels: np.ndarray, probs: np.ndarray) -> dict[str, dict]:
  """labels int8 [N, 48] (kw codes), probs float [N, 48] -> {key: {"auroc", "positives",
  "negatives"}} in the order of `keywords.KEYWORDS`."""
  labels, probs = np.asarray(labels), np.asarray(probs, np.float64)
  if labels.shape != probs.shape or labels.ndim != 2 or labels.shape[1] != kw.NUM_KEYWORDS:
    raise ValueError(f"labels {labels.shape} and probabilities {probs.shape} must both be "
                     f"[N, {kw.NUM_KEYWORDS}]")
  out = {}
  for k, key in enumerate(kw.KEYWORD_KEYS):
    keep = labels[:, k] != kw.UNCERTAIN
    y = labels[keep, k] == kw.POSITIVE
    pos, neg = int(y.sum()), int((~y).sum())
    auroc: Optional[float] = None
    if pos and neg:
      auroc = float(roc_auc_score(y, probs[keep, k]))
    out[key] = {"auroc": auroc, "positives": pos, "negatives": neg}
  return out


def macro_auroc(per_keyword: dict[str, dict]) -> Optional[float]:
  """The mean AUROC over the keywords that have one (None if none has)."""
  values = [v["auroc"] for v in per_keyword.values() if v["auroc"] is not None]
  return float(np.mean(values)) if values else None
