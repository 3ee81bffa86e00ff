"""Scores a report labeler against a hand-labelled set: `python -m cnx2rg_jax.evaluation.devset`.

  python -m cnx2rg_jax.evaluation.devset --input=tests/data/real_world_reports.jsonl
  python -m cnx2rg_jax.evaluation.devset --input=... --scorer=cn_radgraph --cn_radgraph_dir=DIR

The set holds one {"id", "report", "keywords": {key: 1|0|-1}, "pairs": [[anatomy, lesion], ...]}
object a line (the label CLI's output form plus the report; other fields are ignored). Prints ONE
JSON object:

* "lesion" and "anatomy": label agreement over the (report, keyword) cells of the 24 lesion
  (anatomy) keywords, counted as the CheXpert labeler's mention evaluation counts it, one class
  at a time: for class c in positive (1), negated (0), uncertain (-1), a true positive is a cell
  both label c, a false positive a cell the labeler labels c and the set does not (another value
  or not mentioned), a false negative the reverse. "f1" is the micro F1 over the three classes
  (2 TP / (2 TP + FP + FN), summed over classes): every (report, keyword, value) triple must
  match. "per_class" holds each class's precision, recall, F1 and support.
* "pairs": micro precision, recall and F1 of the positive (anatomy, lesion) pairs, as the
  clinical metric counts them (`clinical.clinical_counts`).
* "exact_reports": reports whose lesion labels, anatomy labels and pairs all match.
With --errors it adds "errors": each report that differs, with the two readings.

A bad set file is one error paragraph naming the line, exit code 2.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Callable, Sequence

from cnx2rg_jax.evaluation import clinical
from cnx2rg_jax.jsonl import JsonLinesError, read_objects
from cnx2rg_jax.text.labeler import label_report
from cnx2rg_jax.text import keywords as kw
from cnx2rg_jax.text import report_graph
from cnx2rg_jax.text.cleaning import clean_report

CLASSES = {"positive": kw.POSITIVE, "negated": kw.NEGATED, "uncertain": kw.UNCERTAIN}
_VALUES = frozenset(CLASSES.values())


class DevsetError(JsonLinesError):
  """A line of the hand-labelled set that is not usable; the message names it."""


def read_devset(path: str) -> list[dict]:
  """The rows of a hand-labelled set: {"id", "report", "keywords", "pairs"} (pairs as tuples).

  Lines are read by cnx2rg_jax/jsonl.py's rules. Raises DevsetError naming the 1-based line
  for bad UTF-8, invalid JSON, a line that is not an object, a missing field, an unknown
  keyword, a value outside 1/0/-1, a pair that is not (anatomy, lesion) or a repeated id.
  """
  rows, seen = [], set()
  for n, obj in read_objects(path, DevsetError):
    where = f"{path}, line {n}"
    if not all(k in obj for k in ("id", "report", "keywords", "pairs")):
      raise DevsetError(f"{where}: must be an object with id, report, keywords and pairs")
    if (not isinstance(obj["report"], str) or not isinstance(obj["keywords"], dict)
        or not isinstance(obj["pairs"], list)):
      raise DevsetError(f"{where}: report must be a string, keywords an object, pairs a list")
    if obj["id"] in seen:
      raise DevsetError(f"{where}: repeats id {obj['id']!r}")
    seen.add(obj["id"])
    for key, value in obj["keywords"].items():
      if key not in kw.KEYWORD_INDEX or value not in _VALUES:
        raise DevsetError(f"{where}: keyword label {key!r}: {value!r} is not a Table 1 "
                          "keyword with a value of 1, 0 or -1")
    pairs = []
    for p in obj["pairs"]:
      if (not isinstance(p, list) or len(p) != 2 or p[0] not in kw.ANATOMY_KEYS
          or p[1] not in kw.LESION_KEYS):
        raise DevsetError(f"{where}: pair {p!r} is not [anatomy keyword, lesion keyword]")
      pairs.append(tuple(p))
    rows.append({"id": obj["id"], "report": obj["report"], "keywords": obj["keywords"],
                 "pairs": sorted(set(pairs))})
  if not rows:
    raise DevsetError(f"{path} is empty")
  return rows


def label_agreement(gold: Sequence[dict], predicted: Sequence[dict], keys: Sequence[str]
                    ) -> dict:
  """CheXpert-style agreement of keyword label dicts over `keys` (see the module docstring)."""
  counts = {name: [0, 0, 0] for name in CLASSES}  # tp, fp, fn
  for g, p in zip(gold, predicted, strict=True):
    for key in keys:
      gv, pv = g.get(key), p.get(key)
      for name, value in CLASSES.items():
        c = counts[name]
        c[0] += gv == value and pv == value
        c[1] += pv == value and gv != value
        c[2] += gv == value and pv != value
  per_class = {name: {**clinical.prf(*c), "support": c[0] + c[2]} for name, c in counts.items()}
  tp, fp, fn = (sum(c[i] for c in counts.values()) for i in range(3))
  return {**clinical.prf(tp, fp, fn), "tp": tp, "fp": fp, "fn": fn, "per_class": per_class}


def score_readings(rows: Sequence[dict], readings: Sequence[tuple[dict, list]],
                   with_errors: bool = False) -> dict:
  """Agreement of (keywords, pairs) readings with the set's rows, in the CLI's output form."""
  got_labels = [r[0] for r in readings]
  gold_labels = [row["keywords"] for row in rows]
  tp = fp = fn = exact = 0
  errors = []
  for row, (labels, pairs) in zip(rows, readings, strict=True):
    t, f_p, f_n = clinical.clinical_counts(pairs, row["pairs"])
    tp, fp, fn = tp + t, fp + f_p, fn + f_n
    same = labels == row["keywords"] and set(map(tuple, pairs)) == set(row["pairs"])
    exact += same
    if not same and with_errors:
      errors.append({"id": row["id"], "report": row["report"],
                     "keywords": _differences(row["keywords"], labels),
                     "missed_pairs": sorted(set(row["pairs"]) - set(map(tuple, pairs))),
                     "extra_pairs": sorted(set(map(tuple, pairs)) - set(row["pairs"]))})
  out = {"num_reports": len(rows),
         "lesion": label_agreement(gold_labels, got_labels, kw.LESION_KEYS),
         "anatomy": label_agreement(gold_labels, got_labels, kw.ANATOMY_KEYS),
         "pairs": {**clinical.prf(tp, fp, fn), "tp": tp, "fp": fp, "fn": fn},
         "exact_reports": exact}
  if with_errors:
    out["errors"] = errors
  return out


def _differences(gold: dict, got: dict) -> dict:
  """{key: [set's label, labeler's label]} for every keyword on which the two differ."""
  return {k: [gold.get(k), got.get(k)] for k in kw.KEYWORD_KEYS if gold.get(k) != got.get(k)}


def rule_readings(reports: Sequence[str]) -> list[tuple[dict, list]]:
  """(keywords, pairs) of the rule labeler for each report."""
  return [(out.keywords, out.pairs) for out in map(label_report, reports)]


def extractor_readings(extractor, reports: Sequence[str]) -> list[tuple[dict, list]]:
  """(keywords, pairs) that a CN-RadGraph extractor's graphs give for each report: the labels and
  pairs of `report_graph.read_graph` (its graphs have no uncertain class)."""
  out = []
  for ents, rels in extractor.extract([clean_report(r) for r in reports]):
    labels, pairs = report_graph.read_graph(ents, rels)
    out.append(({k: int(v) for k, v in zip(kw.KEYWORD_KEYS, labels) if v != kw.NOT_MENTIONED},
                pairs))
  return out


def main(argv: list[str] | None = None) -> int:
  p = argparse.ArgumentParser(prog="python -m cnx2rg_jax.evaluation.devset",
                              description="Label agreement of a scorer with a hand-labelled set.")
  p.add_argument("--input", required=True, help="the hand-labelled JSON-lines set")
  p.add_argument("--scorer", default="labeler", choices=clinical.CLINICAL_SCORERS)
  p.add_argument("--cn_radgraph_dir", default="", help="workdir of a trained CN-RadGraph")
  p.add_argument("--errors", action="store_true", help="list every report that differs")
  args = p.parse_args(argv)
  try:
    rows = read_devset(args.input)
    reader: Callable = rule_readings
    if args.scorer == "cn_radgraph":
      extractor = clinical.make_labeler(args.scorer, args.cn_radgraph_dir)
      reader = lambda reports: extractor_readings(extractor, reports)  # noqa: E731
  except (DevsetError, OSError, ValueError) as e:  # ValueError: also CheckpointError
    print(f"error: {e}", file=sys.stderr)
    return 2
  out = score_readings(rows, reader([row["report"] for row in rows]), args.errors)
  out["scorer"] = args.scorer
  sys.stdout.reconfigure(encoding="utf-8")
  print(json.dumps(out, ensure_ascii=False))
  return 0


if __name__ == "__main__":
  sys.exit(main())
