"""Natural-language-generation metrics of generated reports, equal to pycocoevalcap's.

Reports are Chinese, so pycocoevalcap's PTBTokenizer (English rules, drops punctuation) is not
used. Every report instead goes through `tokenize_for_metrics`: `clean_report`, then the
project's jieba segmentation (the tokenizer's own), tokens joined by single spaces, with every
punctuation mark kept as a token of its own. That space-joined string is what pycocoevalcap's
scorers split on whitespace, so BLEU-1..4, METEOR, ROUGE-L and CIDEr below are exactly the
numbers that `Bleu(4)`, `Meteor()`, `Rouge()` and `Cider()` give on
{id: [tokenized prediction]} / {id: [tokenized reference]}; nothing is re-implemented.

Empty predictions. An empty prediction tokenizes to "" and is passed to the scorers as "",
unchanged, because every scorer of pycocoevalcap 1.2 accepts it and scores it zero:

* BLEU (BleuScorer): "" has length 0 and no n-grams, so it adds 0 to the corpus hypothesis
  length and to every n-gram guess/correct count, and its closest reference length (the only
  reference's length) to the corpus reference length. That is the right corpus BLEU: an empty
  output lowers the brevity penalty by its missing length and nothing else. A placeholder token
  would instead add one hypothesis token and one unigram guess, changing both the precision
  and the brevity penalty of the whole corpus, so none is used.
* ROUGE-L: "".split(" ") == [""], an empty token that matches no reference token (references
  are never empty, see below), so the LCS, the precision and the score are 0.
* CIDEr: the document frequencies come from the references only; an empty hypothesis has a zero
  vector and norm, so its similarity is 0 and the other ids are untouched.
* METEOR 1.5: the jar scores an empty hypothesis 0.0.

References must be non-empty after cleaning (ValueError otherwise): an empty reference has no
meaningful score, and ROUGE-L would match an empty prediction's "" token against it.

METEOR runs Java. Without `java` on PATH, or if the jar does not start or answer, `meteor` is
None, one warning says why, and the other metrics are still computed. The jar's subprocess is
always shut down before `nlg_scores` returns.
"""

from __future__ import annotations

import logging
import shutil
from typing import Hashable, Mapping

from pycocoevalcap.bleu.bleu import Bleu
from pycocoevalcap.cider.cider import Cider
from pycocoevalcap.meteor.meteor import Meteor
from pycocoevalcap.rouge.rouge import Rouge

from cnx2rg_jax.text.cleaning import clean_report
from cnx2rg_jax.text.segmentation import segment

logger = logging.getLogger(__name__)

METRIC_KEYS = ("bleu_1", "bleu_2", "bleu_3", "bleu_4", "meteor", "rouge_l", "cider")
JAVA_HINT = "install a Java runtime, e.g. apt-get install default-jre-headless"


def tokenize_for_metrics(text: str) -> str:
  """The form of a report that every NLG metric sees: its cleaned jieba tokens, space-joined.

  `clean_report(text)` is segmented with `segment` (the same jieba segmentation, with the
  radiology dictionary, as the report tokenizer) and the tokens are joined by single spaces.
  Punctuation marks (。，；、：？ ...) are KEPT, each a token of its own, as in the Chinese
  report-generation literature. The result has no leading, trailing or repeated spaces and no
  other whitespace, so `result.split()` and `result.split(" ")` give the tokens back; it is ""
  exactly when the cleaned report is empty. Raises ValueError for a non-str input.
  """
  return " ".join(segment(clean_report(text)))


def _coco_inputs(predictions: Mapping[Hashable, str], references: Mapping[Hashable, str]):
  """({id: [tokenized reference]}, {id: [tokenized prediction]}) in the references' id order."""
  if not isinstance(predictions, Mapping) or not isinstance(references, Mapping):
    raise ValueError("predictions and references must be dicts {id: report}")
  if not references:
    raise ValueError("no reports to score")
  if set(predictions) != set(references):
    missing = [k for k in references if k not in predictions][:5]
    extra = [k for k in predictions if k not in references][:5]
    raise ValueError(f"predictions and references have different ids (ids without a prediction:"
                     f" {missing}; ids without a reference: {extra})")
  gts, res = {}, {}
  for key in references:
    ref = tokenize_for_metrics(references[key])
    if not ref:
      raise ValueError(f"the reference of id {key!r} is empty after cleaning")
    gts[key] = [ref]
    res[key] = [tokenize_for_metrics(predictions[key])]
  return gts, res


def _close_meteor(meteor: Meteor) -> None:
  """Ends the jar's subprocess and closes its pipes (what Meteor.__del__ does, plus the pipes).

  Meteor.compute_score leaves its lock held when it raises (it does not release it in a
  `finally`), and Meteor.__del__ takes that lock, so a held lock is released here: the object is
  ours alone, and otherwise __del__ would block forever at garbage collection. Meteor.__del__
  may still run later; it is harmless on an ended process.
  """
  proc = meteor.meteor_p
  for pipe in (proc.stdin, proc.stdout, proc.stderr):
    if pipe is not None:
      try:
        pipe.close()
      except OSError:
        pass
  proc.kill()
  proc.wait()
  if meteor.lock.locked():
    meteor.lock.release()


def meteor_score(gts: dict, res: dict) -> float | None:
  """pycocoevalcap's METEOR 1.5 corpus score of already tokenized inputs, or None.

  None (with one warning naming the reason and how to fix it) when `java` is not on PATH or the
  jar fails to start or to answer. The jar's subprocess never outlives this call.
  """
  if shutil.which("java") is None:
    logger.warning("METEOR is unavailable: no `java` on PATH (%s); meteor is reported as None.",
                   JAVA_HINT)
    return None
  try:
    meteor = Meteor()
  except OSError as e:
    logger.warning("METEOR is unavailable: java failed to start (%s; %s); meteor is reported "
                   "as None.", e, JAVA_HINT)
    return None
  try:
    score, _ = meteor.compute_score(gts, res)
    return float(score)
  except (OSError, ValueError) as e:
    # A jar that died at start leaves a broken pipe (OSError) or an empty answer (ValueError).
    logger.warning("METEOR is unavailable: the METEOR 1.5 jar did not answer (%s: %s; check the "
                   "Java runtime, %s); meteor is reported as None.", type(e).__name__, e,
                   JAVA_HINT)
    return None
  finally:
    _close_meteor(meteor)


def nlg_scores(predictions: Mapping[Hashable, str], references: Mapping[Hashable, str],
               meteor: bool = True) -> dict[str, float | None]:
  """Corpus BLEU-1..4, METEOR, ROUGE-L and CIDEr of `predictions` against `references`.

  Both map the same ids to one report each (raw text; `tokenize_for_metrics` is applied here).
  Returns {"bleu_1", "bleu_2", "bleu_3", "bleu_4", "meteor", "rouge_l", "cider"}, each a plain
  float equal to pycocoevalcap 1.2's `Bleu(4)` (corpus BLEU, closest reference length),
  `Meteor()`, `Rouge()` (mean over ids) and `Cider()` (mean over ids; its document frequencies
  come from these references, so it depends on the whole set) on the tokenized reports.
  "meteor" is None when METEOR is unavailable (see `meteor_score`) or `meteor` is False.
  An empty prediction is valid and scores zero (see the module docstring for why that is exact).
  Raises ValueError when the ids differ, there are none, or a reference is empty after cleaning.
  """
  gts, res = _coco_inputs(predictions, references)
  bleu, _ = Bleu(4).compute_score(gts, res, verbose=0)
  rouge, _ = Rouge().compute_score(gts, res)
  cider, _ = Cider().compute_score(gts, res)
  out = {f"bleu_{n + 1}": float(b) for n, b in enumerate(bleu)}
  out["meteor"] = meteor_score(gts, res) if meteor else None
  out["rouge_l"] = float(rouge)
  out["cider"] = float(cider)
  return out
