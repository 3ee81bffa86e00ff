"""Clinical precision, recall and F1 of generated reports, from (anatomy, lesion) pairs.

The paper's rule: a true positive is an (anatomy, lesion) pair that both the reference and the
prediction state as positive; a false positive is a predicted pair the reference lacks (a wrong
lesion or a wrong site); a false negative is a reference pair the prediction misses. Counts are
summed over all reports before dividing (micro averaging), so long reports weigh more.

Conventions for empty denominators:
* If the whole corpus has no predicted and no reference pairs, precision, recall and F1 are None:
  there is nothing to score, and neither 0 nor 1 would be honest (as CheXbert's evaluation
  leaves such a class undefined). The same holds for a lesion in `per_keyword`.
* Otherwise a 0/0 ratio is 0: no predicted pairs gives precision 0, no reference pairs gives
  recall 0, and F1 is 0 when precision + recall is 0.

The labeler is pluggable: any callable taking a report string and returning either an object
with a `pairs` attribute (like `labeler.ReportLabels`) or an iterable of (anatomy, lesion) pairs.
One with a `label_many(reports)` method (a list of pair lists) is called in batches: a trained
CN-RadGraph (`radgraph.extractor.Extractor`) is such a labeler. `make_labeler` picks one by
name, as configs and the score CLI do. The pair counting (`clinical_counts`) and the
ratios (`prf`) are those of `text.pair_scores`, which the CN-RadGraph graph metric shares.
"""

from __future__ import annotations

from typing import Callable, Optional, Sequence

from cnx2rg_jax.text.labeler import label_report
from cnx2rg_jax.text import keywords as kw
from cnx2rg_jax.text.pair_scores import Pair, clinical_counts, pair_set, prf


CLINICAL_SCORERS = ("labeler", "cn_radgraph")


def make_labeler(scorer: str = "labeler", cn_radgraph_dir: str = "") -> Callable:
  """The clinical metric's labeler: "labeler" (rule-based, the default) or "cn_radgraph" (the
  CN-RadGraph model trained in `cn_radgraph_dir`: positive pairs are its DPO nodes located_at
  Anatomy nodes). Raises ValueError for an unknown name or a missing directory, and
  `radgraph.extractor.CheckpointError` for a directory without a usable model."""
  if scorer == "labeler":
    return label_report
  if scorer == "cn_radgraph":
    if not cn_radgraph_dir:
      raise ValueError("the cn_radgraph clinical scorer needs the workdir of a trained "
                       "CN-RadGraph (python launch.py --config=configs/cn_radgraph.py "
                       "--workdir=DIR)")
    # Imported here, not at the top, only to keep the scoring CLIs light: the extractor loads
    # jax and orbax, which the rule labeler never needs.
    from cnx2rg_jax.radgraph import extractor  # pylint: disable=import-outside-toplevel
    return extractor.load(cn_radgraph_dir)
  raise ValueError(f"unknown clinical scorer {scorer!r}; use one of {CLINICAL_SCORERS}")


def pairs_of(labeler: Callable, report: str) -> set[Pair]:
  """The positive pairs `labeler` reads in `report` (see the module docstring for labelers)."""
  out = labeler(report)
  return pair_set(getattr(out, "pairs", out))


def pairs_many(labeler: Callable, reports: Sequence[str]) -> list[set[Pair]]:
  """`pairs_of` for every report, in one `label_many` call where the labeler has one."""
  reports = list(reports)
  many = getattr(labeler, "label_many", None)
  if many is not None:
    return [pair_set(p) for p in many(reports)]
  return [pairs_of(labeler, r) for r in reports]


class MemoLabeler:
  """A labeler that reads each distinct report once: it remembers the pairs `labeler` gave, so
  that one evaluation (the model, both baselines against the same references, then the report
  card) labels every text once, in batches where `labeler` has `label_many`. Calls return pair
  sets, which every function here accepts."""

  def __init__(self, labeler: Callable):
    self.labeler = labeler
    self._pairs: dict[str, set[Pair]] = {}

  def label_many(self, reports: Sequence[str]) -> list[set[Pair]]:
    new = list(dict.fromkeys(r for r in reports if r not in self._pairs))
    if new:
      self._pairs.update(zip(new, pairs_many(self.labeler, new)))
    return [self._pairs[r] for r in reports]

  def __call__(self, report: str) -> set[Pair]:
    return self.label_many([report])[0]


def score_reports(predictions: Sequence[str], references: Sequence[str],
                  labeler: Callable = label_report) -> dict:
  """Micro clinical P/R/F1 of predicted reports against references, overall and per lesion.

  Returns {"clinical_precision", "clinical_recall", "clinical_f1", "tp", "fp", "fn",
  "num_reports", "per_keyword"}, where per_keyword maps every lesion keyword to
  {"precision", "recall", "f1", "support"} computed on the pairs with that lesion (support: the
  number of reference pairs with it). Raises ValueError if the two lists differ in length.
  """
  predictions, references = list(predictions), list(references)
  if len(predictions) != len(references):
    raise ValueError(f"{len(predictions)} predictions but {len(references)} references; "
                     "they must pair up one to one")
  tp = fp = fn = 0
  per = {l: [0, 0, 0] for l in kw.LESION_KEYS}
  for pred, ref in zip(pairs_many(labeler, predictions), pairs_many(labeler, references)):
    t, f_p, f_n = clinical_counts(pred, ref)
    tp, fp, fn = tp + t, fp + f_p, fn + f_n
    for which, pairs in ((0, pred & ref), (1, pred - ref), (2, ref - pred)):
      for _, lesion in pairs:
        per.setdefault(lesion, [0, 0, 0])[which] += 1  # an unknown lesion still counts
  overall = prf(tp, fp, fn)
  per_keyword = {l: {**prf(*c), "support": c[0] + c[2]} for l, c in per.items()}
  return {"clinical_precision": overall["precision"], "clinical_recall": overall["recall"],
          "clinical_f1": overall["f1"], "tp": tp, "fp": fp, "fn": fn,
          "num_reports": len(predictions), "per_keyword": per_keyword}


def clinical_f1(predictions: Sequence[str], references: Sequence[str],
                labeler: Callable = label_report) -> Optional[float]:
  """Just the micro clinical F1 of `score_reports` (None when nothing is there to score)."""
  return score_reports(predictions, references, labeler)["clinical_f1"]
