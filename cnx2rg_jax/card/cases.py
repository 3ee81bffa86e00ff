"""Which cases the card shows, their clinical scores, and the split's most-confused pairs.

Per-case clinical F1 uses the run's clinical scorer (its positive (anatomy, lesion) pairs, as
the metrics do), with `clinical.prf`'s conventions; a case with no pair on either side has no F1
("nothing to score") and is left to the random draw.

Selection of `num_cases` (0 = every case of the split, in split order): a third the best by
F1 (then most true positives), a third the worst (then most errors), the rest drawn at random
with `seed` from the others; shown in that order, each labelled with why it is there.
"""

from __future__ import annotations

import collections
import dataclasses
from typing import Optional, Sequence

import numpy as np

from cnx2rg_jax.evaluation import clinical

Pair = tuple[str, str]


@dataclasses.dataclass(frozen=True)
class CaseScore:
  tp: int
  fp: int
  fn: int
  f1: Optional[float]
  missed: tuple[Pair, ...]  # reference pairs the generated report lacks
  false: tuple[Pair, ...]  # generated pairs the reference lacks


def case_scores(pred_pairs: Sequence[set], ref_pairs: Sequence[set]) -> list[CaseScore]:
  out = []
  for pred, ref in zip(pred_pairs, ref_pairs):
    tp, fp, fn = clinical.clinical_counts(pred, ref)
    out.append(CaseScore(tp, fp, fn, clinical.prf(tp, fp, fn)["f1"], tuple(sorted(ref - pred)),
                         tuple(sorted(pred - ref))))
  return out


def select_cases(scores: Sequence[CaseScore], num_cases: int, seed: int
                 ) -> list[tuple[int, str]]:
  """(row index, "best" | "worst" | "random" | "all") of the cases to show."""
  n = len(scores)
  if num_cases < 0:
    raise ValueError(f"card.num_cases={num_cases} must be >= 0 (0 shows every case)")
  if num_cases == 0 or num_cases >= n:
    return [(i, "all") for i in range(n)]
  scored = [i for i in range(n) if scores[i].f1 is not None]
  k = num_cases // 3
  best = sorted(scored, key=lambda i: (-scores[i].f1, -scores[i].tp, i))[:k]
  worst = sorted((i for i in scored if i not in set(best)),
                 key=lambda i: (scores[i].f1, -(scores[i].fp + scores[i].fn), i))[:k]
  taken = set(best) | set(worst)
  rest = [i for i in range(n) if i not in taken]
  rng = np.random.default_rng(seed)
  drawn = sorted(rng.choice(rest, size=min(num_cases - len(taken), len(rest)),
                            replace=False).tolist())
  return ([(i, "best") for i in best] + [(i, "worst") for i in worst]
          + [(i, "random") for i in drawn])


NOTHING = ("", "")  # the other side of a miss without a false finding, and vice versa


def confusion(scores: Sequence[CaseScore], ids: Sequence[str], top: int = 15
              ) -> list[dict]:
  """The most frequent (missed reference pair, false generated pair) co-occurrences over the
  split: in each case every missed pair is counted with every false pair; a miss with no false
  finding is counted against NOTHING, and a false finding with no miss likewise. Rows:
  {"missed": pair, "false": pair, "count": n, "cases": [first ids]}, most frequent first."""
  counts: collections.Counter = collections.Counter()
  examples: dict = collections.defaultdict(list)
  for s, case_id in zip(scores, ids):
    combos = ([(m, f) for m in s.missed for f in s.false] if s.missed and s.false else
              [(m, NOTHING) for m in s.missed] + [(NOTHING, f) for f in s.false])
    for combo in combos:
      counts[combo] += 1
      if len(examples[combo]) < 5:
        examples[combo].append(str(case_id))
  ranked = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:top]
  return [{"missed": m, "false": f, "count": c, "cases": examples[(m, f)]}
          for (m, f), c in ranked]
